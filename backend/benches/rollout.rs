//! Push to 95 % of a fleet: N simulated appliances (default 1,000), each
//! enrolled and connected over mTLS through the front to the embedded
//! broker, speaking the bundle protocol (retained announcement, chunks on
//! request, every frame's signature checked, SHA-256 of the whole file,
//! acknowledgements). Measures from `push_bundle` + `start_rollout` (one
//! stage, 100 %) until 50 %, 95 % and 100 % of the devices report `active`,
//! for a one-rule bundle (one chunk: the protocol's round trips alone, the
//! baseline) and for the whole SigmaHQ Linux rule set (several chunks per
//! device), in the same run. The devices run in the same process, on the
//! same two cores as the backend.
//!
//! `cargo bench -p picket-backend --bench rollout`
//! Env: PICKET_BENCH_DEVICES (1000).
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/ingest_support/mod.rs"]
mod support;

#[path = "../tests/bundle_support/mod.rs"]
mod bundles;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bundles::{FleetKeys, SimDevice};
use picket_api::Fleet as _;
use picket_store::rollout::RolloutSpec;
use support::Backend;

fn sigmahq_linux() -> BTreeMap<String, Vec<u8>> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigmahq/rules/linux");
    let mut files = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml") {
                let rel = p.strip_prefix(&base).unwrap().to_str().unwrap().to_owned();
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

async fn run(b: &Backend, sims: &[SimDevice], label: &str, version: u64, bytes: Vec<u8>) {
    let n = sims.len();
    let fleet = &b.started.fleet;
    let size = bytes.len();
    let start = Instant::now();
    fleet.push_bundle(&bytes, "bench").await.unwrap();
    let r = fleet
        .start_rollout(version, RolloutSpec::default(), "bench")
        .await
        .unwrap();
    let mut marks = Vec::new();
    for pct in [50_usize, 95, 100] {
        let want = (n * pct).div_ceil(100);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let active = sims
                .iter()
                .filter(|s| s.log().activated.last() == Some(&version))
                .count();
            if active >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: only {active}/{n} active"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        marks.push((pct, start.elapsed()));
    }
    // the backend has recorded every acknowledgement
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet
        .rollout_progress(r.id)
        .await
        .unwrap()
        .states
        .get("active")
        != Some(&(n as u64))
    {
        assert!(
            Instant::now() < deadline,
            "{label}: backend missed acknowledgements"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chunks = size.div_ceil(picket_proto::MAX_BUNDLE_CHUNK_LEN);
    print!("{label}: {size} bytes ({chunks} chunk(s)) to {n} devices:");
    for (pct, t) in &marks {
        print!("  {pct} % active {:.2} s", t.as_secs_f64());
    }
    println!("  ({:.1} MB sent)", (size * n) as f64 / 1e6);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let devices: usize = std::env::var("PICKET_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    keys.install(b.dir.path());
    let addr = b.started.mqtt.unwrap();
    let command = b.started.fleet.command_public_key();
    let t = Instant::now();
    let mut sims = Vec::with_capacity(devices);
    for i in 0..devices {
        let mut seed = [0_u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let d = b
            .enroll_key(picket_proto::ed25519_dalek::SigningKey::from_bytes(&seed))
            .await;
        sims.push(SimDevice::connect(d, addr, command, false).await);
        if i % 200 == 199 {
            // let the wave's handshakes finish
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // every device connected and subscribed: its retained-announce topic is live
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "{devices} devices enrolled and connected in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let one_rule = {
        let mut f = BTreeMap::new();
        f.insert(
            "r.yml".to_owned(),
            bundles::rule("one rule", 1, 0).into_bytes(),
        );
        f
    };
    run(
        &b,
        &sims,
        "baseline, one rule",
        1,
        keys.signed_files(1, one_rule),
    )
    .await;
    let linux = sigmahq_linux();
    let rules = linux.len();
    run(
        &b,
        &sims,
        &format!("SigmaHQ Linux, {rules} rule files"),
        2,
        keys.signed_files(2, linux),
    )
    .await;
}
