//! A stand-in for picketd's alert path: pushes a synthetic stream of alerts
//! into a spool while the uplink delivers them, then waits until the spool
//! is empty. The crash test `kill -9`s it at random moments and restarts it.
//!
//! It resumes where the spool says the stream stopped: alert `i` of stream
//! `S` always has id `id_for(S, i)` and gets sequence number `i + 1`, so a
//! restart regenerates exactly the alerts a crash lost before they were durable.
//!
//! Prints on stdout: `resume <next_seq>` at start, `durable <seq>` whenever
//! the durable watermark moves, `pushed` when the stream is in, and `done`
//! when the spool is empty.
//!
//! ```text
//! picket-uplink-producer --spool DIR --host 127.0.0.1 --port 8883 --ca ca.pem \
//!     --cert device.pem --key device.key --device-key id.key --count 100000 [--stream 1]
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use picket_proto::identity::DeviceIdentity;
use picket_uplink::{sample, Spool, SpoolConfig, UplinkConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        args.insert(name.to_owned(), value);
    }
    let arg = |name: &str| {
        args.get(name)
            .cloned()
            .ok_or_else(|| format!("missing --{name}"))
    };
    let count: u64 = arg("count")?.parse()?;
    let stream: u64 = args.get("stream").map_or(Ok(1), |s| s.parse())?;
    let budget: u64 = args.get("budget").map_or(Ok(1 << 30), |s| s.parse())?;

    let spool = Spool::open_with(SpoolConfig::new(PathBuf::from(arg("spool")?), budget))?;
    let identity = DeviceIdentity::load_or_generate(&PathBuf::from(arg("device-key")?))?;
    let mut config = UplinkConfig::new(
        arg("host")?,
        arg("port")?.parse()?,
        std::fs::read(arg("ca")?)?,
        std::fs::read(arg("cert")?)?,
        std::fs::read(arg("key")?)?,
        identity,
    );
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config.batch_delay = Duration::from_millis(50);

    let next_seq = spool.stats().next_seq;
    let mut out = std::io::stdout().lock();
    writeln!(out, "resume {next_seq}")?;
    drop(out);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let uplink = picket_uplink::Uplink::new(config, spool.clone())?;
    let mut durable = spool.subscribe();
    let uplink_thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let watcher = tokio::spawn(async move {
                while durable.changed().await.is_ok() {
                    let seq = *durable.borrow_and_update();
                    println!("durable {seq}");
                }
            });
            let result = uplink.run(std::future::pending::<()>()).await;
            watcher.abort();
            result
        })
    });

    for i in next_seq.saturating_sub(1)..count {
        let s = sample::process_alert(i, sample::id_for(stream, i));
        let payload = s.payload()?;
        let pushed = spool.push(s.new_alert(&payload))?;
        if pushed.seq != i + 1 {
            return Err(format!("alert {i} got seq {}, expected {}", pushed.seq, i + 1).into());
        }
    }
    spool.flush()?;
    println!("pushed");
    while spool.stats().depth > 0 {
        if uplink_thread.is_finished() {
            return Err("uplink stopped".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    spool.flush()?;
    println!("done");
    Ok(())
}
