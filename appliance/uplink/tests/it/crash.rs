//! Test 2: `kill -9` of the producer at random moments during a 100,000-alert
//! stream, restarted each time: every alert the spool had accepted (made
//! durable) arrives, exactly once after de-duplication, in order.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use picket_uplink::sample;

use crate::common::{device_identity, wait_until_async, Broker, Pki, ServerCert, Subscriber};

const ALERTS: u64 = 100_000;
const KILLS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_stream_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let identity = device_identity(dir.path());
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    let sub = Subscriber::start(broker.plain_port, "backend", &identity).await;

    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = u64::from_le_bytes(seed);
    eprintln!("crash test seed {rng:#x}");
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Kill points on the durable watermark, plus one while draining.
    let mut kills: Vec<u64> = (0..KILLS - 1)
        .map(|_| 2_000 + next() % (ALERTS - 4_000))
        .collect();
    kills.sort_unstable();
    let mut kill_while_draining = true;

    let bin = env!("CARGO_BIN_EXE_picket-uplink-producer");
    let p = |f: &str| pki.dir.join(f);
    let mut max_durable = 0u64;
    let mut runs = 0;
    let started = Instant::now();
    loop {
        runs += 1;
        assert!(runs <= KILLS + 3, "too many runs");
        let mut child = Command::new(bin)
            .args(["--spool"])
            .arg(dir.path().join("spool"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &broker.tls_port.to_string(),
            ])
            .arg("--ca")
            .arg(p("ca.pem"))
            .arg("--cert")
            .arg(p("device.pem"))
            .arg("--key")
            .arg(p("device.key"))
            .arg("--device-key")
            .arg(dir.path().join("device.key25519"))
            .args(["--count", &ALERTS.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut child = KillOnDrop(child);
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut finished = false;
        let mut killed = false;
        let deadline = Instant::now() + Duration::from_secs(150);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let (word, n) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match word {
                "resume" => {
                    let next_seq: u64 = n.parse().unwrap();
                    assert!(
                        next_seq > max_durable,
                        "restart resumed at {next_seq}, but {max_durable} was durable"
                    );
                }
                "durable" => {
                    max_durable = max_durable.max(n.parse().unwrap());
                    if kills.first().is_some_and(|k| max_durable >= *k) {
                        kills.remove(0);
                        child.0.kill().unwrap();
                        killed = true;
                        break;
                    }
                }
                "pushed" if kills.is_empty() && kill_while_draining => {
                    kill_while_draining = false;
                    child.0.kill().unwrap();
                    killed = true;
                    break;
                }
                "done" => {
                    finished = true;
                    break;
                }
                _ => {}
            }
        }
        let status = child.0.wait().unwrap();
        reader.join().unwrap();
        if finished {
            assert!(status.success(), "producer failed: {status}");
            break;
        }
        assert!(killed, "producer neither finished nor was killed: {status}");
        eprintln!(
            "run {runs}: killed with {max_durable} durable after {:?}",
            started.elapsed()
        );
    }

    wait_until_async("all alerts delivered", Duration::from_secs(60), || {
        sub.distinct() as u64 == ALERTS
    })
    .await;
    let r = sub.received.lock().unwrap();
    // `dedup` also asserts that no sequence number carried two alerts.
    let (first, dups) = r.dedup();
    let seqs: Vec<u64> = first.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=ALERTS).collect::<Vec<_>>(), "all, in order");
    for (seq, id) in &first {
        assert_eq!(*id, sample::id_for(1, seq - 1));
    }
    assert_eq!(r.refused, 0);
    eprintln!(
        "{runs} runs, {} kills, {ALERTS} alerts delivered, {dups} duplicates, {:?}",
        runs - 1,
        started.elapsed()
    );
}

/// Kills the producer if the test fails while it runs.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
