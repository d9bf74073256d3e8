//! The appliance side of rule bundles, without a broker: announcements and
//! chunks as the uplink hands them over, signed by a backend command key;
//! bundles signed under a root made here. Every refusal keeps the running set.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use picket_appliance::bundles::{BundleContext, BundleManager};
use picket_appliance::detect::{RuleSlot, BUILTIN_RULES};
use picket_bundle::ed25519_dalek::SigningKey;
use picket_bundle::{Bundle, Settings, Target};
use picket_bundle::{RootMetadata, SignedRoot};
use picket_proto::identity::DeviceIdentity;
use picket_proto::topic::Channel;
use picket_proto::{BundleAnnounce, BundleChunk, BundleState, Frame, Message};
use sha2::Digest as _;

const NOW: u64 = 1_800_000_000;

fn rule(id: &str, title: &str) -> Vec<u8> {
    format!(
        "title: {title}\nid: {id}\nstatus: test\nauthor: Picket tests\n\
         logsource: {{product: linux, category: process_creation}}\n\
         detection:\n  sel: {{Image|endswith: '/nc'}}\n  condition: sel\nlevel: high\n"
    )
    .into_bytes()
}

struct Fleet {
    root_key: SigningKey,
    bundle_key: SigningKey,
    other_key: SigningKey,
    command: SigningKey,
    device: DeviceIdentity,
    dir: tempfile::TempDir,
    root_file: std::path::PathBuf,
}

impl Fleet {
    fn new() -> Self {
        let root_key = SigningKey::from_bytes(&[1; 32]);
        let bundle_key = SigningKey::from_bytes(&[2; 32]);
        let meta = RootMetadata {
            version: 1,
            expires_unix: u64::MAX / 2,
            root_keys: vec![root_key.verifying_key()],
            root_threshold: 1,
            bundle_keys: vec![bundle_key.verifying_key()],
            bundle_threshold: 1,
            revoked: BTreeSet::new(),
        };
        let mut root = SignedRoot::new(&meta).unwrap();
        root.sign(&root_key);
        let dir = tempfile::tempdir().unwrap();
        let root_file = dir.path().join("root.pbroot");
        std::fs::write(&root_file, root.encode()).unwrap();
        Self {
            root_key,
            bundle_key,
            other_key: SigningKey::from_bytes(&[3; 32]),
            command: SigningKey::from_bytes(&[4; 32]),
            device: DeviceIdentity::from_signing_key(SigningKey::from_bytes(&[5; 32])),
            dir,
            root_file,
        }
    }

    fn bundle(&self, version: u64, files: &[(&str, Vec<u8>)], key: &SigningKey) -> Vec<u8> {
        let files: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(n, b)| ((*n).to_owned(), b.clone()))
            .collect();
        let b = Bundle::new(
            version,
            NOW - 10,
            NOW + 86_400 * 365 * 100,
            vec![Target::All],
            files,
            Settings::default(),
        );
        let mut signed = b.seal().unwrap();
        signed.sign(key);
        signed.encode()
    }

    fn manager(
        &self,
    ) -> (
        BundleManager,
        RuleSlot,
        Arc<AtomicU64>,
        tokio::sync::mpsc::Receiver<picket_uplink::Uplinked>,
    ) {
        let slot = RuleSlot::new(picket_appliance::detect::load_rules(&[], &BTreeMap::new()).rules);
        let running = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let m = BundleManager::open(
            BundleContext {
                slot: slot.clone(),
                identity: self.device.clone(),
                command_key: Some(self.command.verifying_key()),
                groups: vec![],
                dir: self.dir.path().join("bundles"),
                running: running.clone(),
                outbox: tx,
            },
            &self.root_file,
        )
        .unwrap();
        (m, slot, running, rx)
    }

    fn frame(&self, msg: &Message<'_>) -> Vec<u8> {
        picket_proto::encode_frame_to_vec(msg, self.device.device_id(), &self.command).unwrap()
    }

    /// Announces and sends `bytes` in chunks of `chunk` bytes.
    fn push(&self, m: &mut BundleManager, version: u64, bytes: &[u8], chunk: usize) {
        let announce = BundleAnnounce {
            version,
            sha256: sha2::Sha256::digest(bytes).into(),
            total_len: bytes.len() as u64,
            chunk_len: chunk as u32,
            chunk_count: bytes.len().div_ceil(chunk) as u32,
        };
        m.handle(
            Channel::BundleAnnounce,
            &self.frame(&Message::BundleAnnounce(announce)),
        );
        for (i, c) in bytes.chunks(chunk).enumerate() {
            let msg = Message::BundleChunk(BundleChunk {
                version,
                index: i as u32,
                data: picket_proto::BoundedBytes::new(c).unwrap(),
            });
            m.handle(Channel::BundleChunks, &self.frame(&msg));
        }
    }
}

fn acks(
    rx: &mut tokio::sync::mpsc::Receiver<picket_uplink::Uplinked>,
    fleet: &Fleet,
) -> Vec<(u64, BundleState, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(u) = rx.try_recv() {
        assert_eq!(u.channel, Channel::Acks);
        let f = Frame::decode_exact(&u.payload).unwrap();
        match f
            .open_for(fleet.device.device_id(), &fleet.device.verifying_key())
            .unwrap()
        {
            Message::BundleAck(a) => {
                out.push((a.version, a.state, a.error.map(|e| e.as_str().to_owned())));
            }
            m => panic!("not an ack: {m:?}"),
        }
    }
    out
}

#[test]
fn a_pushed_bundle_is_verified_compiled_swapped_persisted_and_acknowledged() {
    let fleet = Fleet::new();
    let (mut m, slot, running, mut rx) = fleet.manager();
    let v1 = fleet.bundle(
        1,
        &[(
            "a.yml",
            rule("11111111-1111-4111-8111-111111111111", "netcat"),
        )],
        &fleet.bundle_key,
    );
    fleet.push(&mut m, 1, &v1, 700);
    let states: Vec<_> = acks(&mut rx, &fleet).into_iter().map(|a| a.1).collect();
    assert_eq!(
        states,
        [
            BundleState::Downloading,
            BundleState::Verified,
            BundleState::Active
        ]
    );
    assert_eq!(m.running(), Some(1));
    assert_eq!(running.load(Ordering::Relaxed), 1);
    let (generation, rules) = slot.current();
    assert_eq!(generation, 1);
    assert_eq!(rules.len(), BUILTIN_RULES.len() + 1);

    // an offline restart runs the persisted bundle
    drop(m);
    let (m2, slot2, running2, _rx2) = fleet.manager();
    assert_eq!(m2.running(), Some(1));
    assert_eq!(running2.load(Ordering::Relaxed), 1);
    assert_eq!(slot2.current().1.len(), BUILTIN_RULES.len() + 1);
}

#[test]
fn every_bad_bundle_is_refused_with_its_error_and_the_running_set_stays() {
    let fleet = Fleet::new();
    let (mut m, slot, _running, mut rx) = fleet.manager();
    let good = |v| {
        fleet.bundle(
            v,
            &[(
                "a.yml",
                rule("11111111-1111-4111-8111-111111111111", "netcat"),
            )],
            &fleet.bundle_key,
        )
    };
    m.activate(&good(5)).unwrap();
    let before = slot.generation();

    let unknown = fleet.bundle(
        6,
        &[("a.yml", rule("11111111-1111-4111-8111-111111111111", "x"))],
        &fleet.other_key,
    );
    let broken = fleet.bundle(
        7,
        &[("bad.yml", b"title: [unclosed".to_vec())],
        &fleet.bundle_key,
    );
    let root_signed = fleet.bundle(
        8,
        &[("a.yml", rule("11111111-1111-4111-8111-111111111111", "x"))],
        &fleet.root_key,
    );
    let mut tampered = good(9);
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("older", good(4)),
        ("same", good(5)),
        ("unknown key", unknown),
        ("root key is not a bundle key", root_signed),
        ("broken rule", broken),
        ("tampered", tampered),
        ("garbage", b"not a bundle".to_vec()),
    ];
    let mut errors = BTreeSet::new();
    for (what, bytes) in cases {
        let e = m.activate(&bytes).expect_err(what);
        let e = format!("{e:#}");
        eprintln!("{what}: {e}");
        assert!(
            errors.insert(e.clone()),
            "{what}: same error as another case: {e}"
        );
        assert_eq!(m.running(), Some(5), "{what}");
        assert_eq!(slot.generation(), before, "{what}: the running set stays");
    }
    let _ = acks(&mut rx, &fleet);

    // through the downlink: a broken bundle is acknowledged as failed, with the rule named
    let broken = fleet.bundle(
        10,
        &[("bad.yml", b"title: [unclosed".to_vec())],
        &fleet.bundle_key,
    );
    fleet.push(&mut m, 10, &broken, 4096);
    let last = acks(&mut rx, &fleet).pop().unwrap();
    assert_eq!(last.1, BundleState::Failed);
    assert!(last.2.as_deref().unwrap().contains("bad.yml"), "{last:?}");
    assert_eq!(slot.generation(), before);

    // a chunk that does not match the announced hash
    let good11 = good(11);
    let announce = BundleAnnounce {
        version: 11,
        sha256: [0; 32],
        total_len: good11.len() as u64,
        chunk_len: 65_536,
        chunk_count: 1,
    };
    m.handle(
        Channel::BundleAnnounce,
        &fleet.frame(&Message::BundleAnnounce(announce)),
    );
    m.handle(
        Channel::BundleChunks,
        &fleet.frame(&Message::BundleChunk(BundleChunk {
            version: 11,
            index: 0,
            data: picket_proto::BoundedBytes::new(&good11).unwrap(),
        })),
    );
    let last = acks(&mut rx, &fleet).pop().unwrap();
    assert_eq!(last.1, BundleState::Failed);
    assert!(last.2.unwrap().contains("SHA-256"));

    // an announcement not signed by the pinned command key is ignored
    let forged = picket_proto::encode_frame_to_vec(
        &Message::BundleAnnounce(announce),
        fleet.device.device_id(),
        &fleet.other_key,
    )
    .unwrap();
    m.handle(Channel::BundleAnnounce, &forged);
    assert!(acks(&mut rx, &fleet).is_empty());
    assert_eq!(m.running(), Some(5));
}

#[test]
fn only_the_newest_announcement_is_downloaded() {
    let fleet = Fleet::new();
    let (mut m, _slot, _running, mut rx) = fleet.manager();
    let b = |v| {
        fleet.bundle(
            v,
            &[(
                "a.yml",
                rule("11111111-1111-4111-8111-111111111111", "netcat"),
            )],
            &fleet.bundle_key,
        )
    };
    // v2 announced, then v3 before v2's chunks: v2's chunks are ignored
    let (b2, b3) = (b(2), b(3));
    let ann = |v: u64, bytes: &[u8]| BundleAnnounce {
        version: v,
        sha256: sha2::Sha256::digest(bytes).into(),
        total_len: bytes.len() as u64,
        chunk_len: 65_536,
        chunk_count: 1,
    };
    m.handle(
        Channel::BundleAnnounce,
        &fleet.frame(&Message::BundleAnnounce(ann(2, &b2))),
    );
    fleet.push(&mut m, 3, &b3, 65_536);
    m.handle(
        Channel::BundleChunks,
        &fleet.frame(&Message::BundleChunk(BundleChunk {
            version: 2,
            index: 0,
            data: picket_proto::BoundedBytes::new(&b2).unwrap(),
        })),
    );
    assert_eq!(m.running(), Some(3));
    let a = acks(&mut rx, &fleet);
    assert!(
        a.iter()
            .all(|x| x.0 != 2 || x.1 == BundleState::Downloading),
        "{a:?}"
    );
}
