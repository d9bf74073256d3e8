//! Rule bundles from push to devices, against an in-process backend (embedded
//! broker behind the mTLS front) and simulated appliances that speak the
//! bundle protocol over real MQTT connections: staged rollouts, thresholds
//! that pause them, abort, and a device offline across three pushes.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

#[path = "ingest_support/mod.rs"]
mod support;

#[path = "bundle_support/mod.rs"]
mod bundles;

use std::time::Duration;

use bundles::{rollout_order, FleetKeys, SimDevice};
use picket_api::{Fleet as _, FleetError};
use picket_bundle::Target;
use picket_store::model::AuditFilter;
use picket_store::rollout::{RolloutAction, RolloutSpec, RolloutState, ThresholdAction};
use support::{wait_for, wait_for_async, Backend};

async fn fleet_of(b: &Backend, n: u8, fail: impl Fn(usize, &str) -> bool) -> Vec<SimDevice> {
    let mut devices = Vec::new();
    for i in 0..n {
        devices.push(b.enroll(i + 1).await);
    }
    let ids: Vec<String> = devices.iter().map(|d| d.id.to_string()).collect();
    let order = rollout_order(&ids);
    let addr = b.started.mqtt.unwrap();
    let key = b.started.fleet.command_public_key();
    let mut sims = Vec::new();
    for d in devices {
        let id = d.id.to_string();
        let rank = order.iter().position(|x| *x == id).unwrap();
        sims.push(SimDevice::connect(d, addr, key, fail(rank, &id)).await);
    }
    sims
}

async fn state_of(b: &Backend, id: i64) -> RolloutState {
    b.started
        .fleet
        .rollout_progress(id)
        .await
        .unwrap()
        .rollout
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_rollout_over_100_devices_pauses_itself_when_failures_are_injected() {
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    keys.install(b.dir.path());
    // every fourth device in rollout order refuses the bundle
    let sims = fleet_of(&b, 100, |rank, _| rank % 4 == 0).await;
    let fleet = &b.started.fleet;
    let pushed = fleet
        .push_bundle(&keys.bundle(5, &["a", "b"], vec![Target::All]), "op")
        .await
        .unwrap();
    assert_eq!(pushed.rules.len(), 2);
    let r = fleet
        .start_rollout(
            5,
            RolloutSpec {
                stages: vec![10, 50, 100],
                min_finished: 5,
                max_failure_percent: 10.0,
                ..RolloutSpec::default()
            },
            "op",
        )
        .await
        .unwrap();
    wait_for_async(
        "the rollout to pause itself",
        Duration::from_secs(60),
        || async { state_of(&b, r.id).await == RolloutState::Paused },
    )
    .await;
    let p = fleet.rollout_progress(r.id).await.unwrap();
    assert_eq!(p.targeted, 100);
    assert_eq!(p.stage_sizes, vec![10, 50, 100]);
    assert_eq!(p.assigned, 10, "no device beyond the first stage was told");
    assert_eq!(p.rollout.status.stage, 0);
    let reason = p.rollout.status.reason.clone().unwrap();
    assert!(reason.contains("failed"), "{reason}");
    assert!(p
        .failures
        .iter()
        .all(|f| f.error.as_deref().unwrap().contains("injected failure")));
    // only the first stage heard of it
    let told = sims
        .iter()
        .filter(|s| s.log().announced.contains(&5))
        .count();
    assert_eq!(told, 10);
    // the pause is in the audit log, by the controller
    let audit = b
        .started
        .store
        .audit_log(&AuditFilter::default(), 50)
        .await
        .unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "rollout.pause" && e.actor == "rollout"));

    // a paused rollout assigns nothing more, even after a while
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fleet.rollout_progress(r.id).await.unwrap().assigned, 10);

    // abort: devices that did not activate it get the announcement cleared
    let aborted = fleet
        .rollout_action(r.id, RolloutAction::Abort, "op")
        .await
        .unwrap();
    assert_eq!(aborted.state, RolloutState::Aborted);
    let failed: Vec<&SimDevice> = sims.iter().filter(|s| !s.log().failed.is_empty()).collect();
    assert!(!failed.is_empty());
    wait_for_async(
        "the cleared announcements",
        Duration::from_secs(10),
        || async { failed.iter().all(|s| s.log().announced.last() == Some(&0)) },
    )
    .await;
    let actives = sims.iter().filter(|s| s.log().activated == vec![5]).count();
    assert_eq!(actives + failed.len(), 10);
    assert!(matches!(
        fleet
            .rollout_action(r.id, RolloutAction::Resume, "op")
            .await,
        Err(FleetError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_rollout_goes_through_every_stage_and_completes() {
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    keys.install(b.dir.path());
    let sims = fleet_of(&b, 20, |_, _| false).await;
    // An enrolled Windows agent is a device too, but not one bundles are for.
    let store = &b.started.store;
    store
        .insert_device(picket_store::model::NewDevice {
            id: "ab".repeat(16),
            hostname: "ws-01".into(),
            public_key: Vec::new(),
            cert_serial: String::new(),
            agent_version: "1.0.0".into(),
            enrolled_ms: 1,
        })
        .await
        .unwrap();
    store
        .insert_agent(&picket_store::model::AgentRecord {
            device_id: "ab".repeat(16),
            platform: "windows".into(),
            secret_hash: "00".repeat(32),
            created_ms: 1,
        })
        .await
        .unwrap();
    let fleet = &b.started.fleet;
    fleet
        .push_bundle(&keys.bundle(2, &["a"], vec![Target::All]), "op")
        .await
        .unwrap();
    let r = fleet
        .start_rollout(
            2,
            RolloutSpec {
                stages: vec![10, 50, 100],
                ..RolloutSpec::default()
            },
            "op",
        )
        .await
        .unwrap();
    wait_for_async(
        "the rollout to complete",
        Duration::from_secs(60),
        || async { state_of(&b, r.id).await == RolloutState::Completed },
    )
    .await;
    let p = fleet.rollout_progress(r.id).await.unwrap();
    assert_eq!(p.states.get("active"), Some(&20));
    assert_eq!(p.targeted, 20, "the agent is not targeted");
    let actions: Vec<&str> = p
        .rollout
        .status
        .history
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(actions, ["created", "stage", "stage", "completed"]);
    for s in &sims {
        let log = s.log();
        assert_eq!(log.activated, vec![2]);
        assert_eq!(log.chunk_versions.len(), 1);
    }
    // what every device acknowledged is stored
    let states = b.started.store.bundle_states(Some(2), None).await.unwrap();
    assert_eq!(states.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_across_three_pushes_receives_only_the_newest() {
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    keys.install(b.dir.path());
    let online = fleet_of(&b, 2, |_, _| false).await;
    let offline = b.enroll(77).await;
    let fleet = &b.started.fleet;
    for v in [10, 11, 12] {
        fleet
            .push_bundle(&keys.bundle(v, &["a"], vec![Target::All]), "op")
            .await
            .unwrap();
        let r = fleet
            .start_rollout(v, RolloutSpec::default(), "op")
            .await
            .unwrap();
        // the rollout covers the offline device too: it never completes
        wait_for_async(
            "the online devices to activate",
            Duration::from_secs(30),
            || async {
                let p = fleet.rollout_progress(r.id).await.unwrap();
                p.states.get("active") == Some(&2)
            },
        )
        .await;
    }
    for s in &online {
        assert_eq!(s.log().activated, vec![10, 11, 12]);
    }
    let rollouts = b.started.store.rollouts().await.unwrap();
    assert_eq!(
        rollouts.iter().map(|r| r.state).collect::<Vec<_>>(),
        [
            RolloutState::Running,
            RolloutState::Superseded,
            RolloutState::Superseded
        ]
    );

    // it comes back
    let sim = SimDevice::connect(
        offline,
        b.started.mqtt.unwrap(),
        fleet.command_public_key(),
        false,
    )
    .await;
    wait_for_async(
        "the offline device to activate",
        Duration::from_secs(30),
        || async { sim.log().activated == vec![12] },
    )
    .await;
    let log = sim.log();
    assert_eq!(log.announced, vec![12], "only the newest announcement");
    assert_eq!(
        log.chunk_versions.into_iter().collect::<Vec<_>>(),
        vec![12],
        "only the newest bundle's chunks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_flood_after_activation_pauses_the_rollout() {
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    keys.install(b.dir.path());
    let sims = fleet_of(&b, 10, |_, _| false).await;
    let fleet = &b.started.fleet;
    fleet
        .push_bundle(&keys.bundle(3, &["noisy"], vec![Target::All]), "op")
        .await
        .unwrap();
    let r = fleet
        .start_rollout(
            3,
            RolloutSpec {
                stages: vec![50, 100],
                auto_promote: false,
                min_alerts: 50,
                max_alert_rate_ratio: Some(5.0),
                on_threshold: ThresholdAction::Pause,
                ..RolloutSpec::default()
            },
            "op",
        )
        .await
        .unwrap();
    wait_for_async(
        "the first stage to activate",
        Duration::from_secs(30),
        || async {
            fleet
                .rollout_progress(r.id)
                .await
                .unwrap()
                .states
                .get("active")
                == Some(&5)
        },
    )
    .await;
    // the devices running it raise 40 alerts each, the others 1 each
    let addr = b.started.mqtt.unwrap();
    for (i, s) in sims.iter().enumerate() {
        let n = if s.log().activated == vec![3] { 40 } else { 1 };
        let p = s.device.connect(addr).await;
        p.publish(
            &s.device.topic(picket_proto::topic::Channel::Alerts),
            rumqttc::QoS::AtLeastOnce,
            s.device.batch(1 + i as u64 * 1000, n),
        )
        .await;
        // `publish` only queues the packet: dropping the publisher before
        // the broker acknowledged it could lose the batch (seen under load).
        wait_for(
            "the alert batch acknowledged",
            Duration::from_secs(20),
            || p.acked.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        )
        .await;
    }
    wait_for_async("the alert-rate pause", Duration::from_secs(30), || async {
        state_of(&b, r.id).await == RolloutState::Paused
    })
    .await;
    let p = fleet.rollout_progress(r.id).await.unwrap();
    let reason = p.rollout.status.reason.unwrap();
    assert!(reason.contains("alert rate"), "{reason}");
    let rate = p.alert_rate.unwrap();
    assert!(rate.activated_alerts >= 50, "{rate:?}");
    assert!(rate.ratio.unwrap() > 5.0);
    assert_eq!(p.assigned, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_each_with_its_error() {
    let b = Backend::start(|_| {}).await;
    let keys = FleetKeys::new();
    let fleet = &b.started.fleet;
    let good = keys.bundle(4, &["a"], vec![Target::All]);
    // no fleet root yet
    let e = fleet.push_bundle(&good, "op").await.unwrap_err();
    assert!(
        matches!(&e, FleetError::Unavailable(m) if m.contains("root")),
        "{e:?}"
    );
    keys.install(b.dir.path());

    let unsigned = keys.bundle_signed_by(4, &["a"], vec![Target::All], &[]);
    let stranger = picket_bundle::ed25519_dalek::SigningKey::from_bytes(&[13; 32]);
    let unknown = keys.bundle_signed_by(4, &["a"], vec![Target::All], &[&stranger]);
    let mut tampered = good.clone();
    let last = tampered.len() - 100;
    tampered[last] ^= 1;
    for (what, bytes) in [
        ("unsigned", unsigned),
        ("unknown key", unknown),
        ("tampered", tampered),
        ("garbage", b"not a bundle".to_vec()),
    ] {
        let e = fleet.push_bundle(&bytes, "op").await.unwrap_err();
        assert!(matches!(e, FleetError::BadRequest(_)), "{what}: {e:?}");
    }
    fleet.push_bundle(&good, "op").await.unwrap();
    let older = keys.bundle(3, &["a"], vec![Target::All]);
    assert!(matches!(
        fleet.push_bundle(&older, "op").await,
        Err(FleetError::Conflict(_))
    ));
    assert!(matches!(
        fleet.push_bundle(&good, "op").await,
        Err(FleetError::Conflict(_))
    ));
    // rollouts: unknown version, bad stages
    assert!(matches!(
        fleet.start_rollout(9, RolloutSpec::default(), "op").await,
        Err(FleetError::NotFound(_))
    ));
    let bad = RolloutSpec {
        stages: vec![50, 10, 100],
        ..RolloutSpec::default()
    };
    assert!(matches!(
        fleet.start_rollout(4, bad, "op").await,
        Err(FleetError::BadRequest(m)) if m.contains("ascending")
    ));
    assert_eq!(b.started.store.bundles().await.unwrap().len(), 1);
}
