//! Every refusal of docs/BUNDLES.md §5 and §6, each with its own error and
//! with the trust state unchanged afterwards; root rotation; round trips.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

use std::collections::{BTreeMap, BTreeSet};

use picket_bundle::ed25519_dalek::SigningKey;
use picket_bundle::{
    Bundle, BundleError, FieldMappingSetting, FormatError, KeyId, RootMetadata, Settings,
    SignedBundle, SignedRoot, Target, TrustStore, BUNDLE_CONTEXT,
};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// Root keys 1..=3 (threshold 2), bundle keys 10, 11, 12 (threshold
/// `bundle_threshold`), key 20 revoked.
fn root_metadata(version: u64, bundle_threshold: u32) -> RootMetadata {
    RootMetadata {
        version,
        expires_unix: NOW + 365 * DAY,
        root_keys: (1..=3).map(|n| key(n).verifying_key()).collect(),
        root_threshold: 2,
        bundle_keys: (10..=12).map(|n| key(n).verifying_key()).collect(),
        bundle_threshold,
        revoked: BTreeSet::from([KeyId::of(&key(20).verifying_key())]),
    }
}

fn signed_root(metadata: &RootMetadata, signers: &[u8]) -> SignedRoot {
    let mut root = SignedRoot::new(metadata).unwrap();
    for &n in signers {
        root.sign(&key(n));
    }
    root
}

fn store(bundle_threshold: u32) -> TrustStore {
    TrustStore::new(
        signed_root(&root_metadata(1, bundle_threshold), &[1, 2]),
        Some(5),
    )
    .unwrap()
}

fn settings() -> Settings {
    Settings {
        placeholders: BTreeMap::from([(
            "Admins".to_owned(),
            vec!["root".to_owned(), "adm*".to_owned()],
        )]),
        field_mappings: vec![FieldMappingSetting {
            product: Some("macos".into()),
            category: None,
            service: None,
            fields: BTreeMap::from([("Image".to_owned(), "process.executable".to_owned())]),
        }],
    }
}

fn bundle(version: u64, targets: Vec<Target>) -> Bundle {
    let files = BTreeMap::from([
        ("linux/a.yml".to_owned(), b"title: a\nid: a\n".to_vec()),
        ("linux/b/c.yml".to_owned(), b"title: c\n".to_vec()),
    ]);
    Bundle::new(
        version,
        NOW - DAY,
        NOW + 30 * DAY,
        targets,
        files,
        settings(),
    )
}

fn signed(version: u64, signers: &[u8]) -> SignedBundle {
    let mut s = bundle(version, vec![Target::All]).seal().unwrap();
    for &n in signers {
        s.sign(&key(n));
    }
    s
}

/// Verifies, asserting that the store is the same afterwards.
fn verify(store: &TrustStore, s: &SignedBundle) -> Result<(), BundleError> {
    verify_for(store, s, "dev-1", &["lab"])
}

fn verify_for(
    store: &TrustStore,
    s: &SignedBundle,
    device: &str,
    groups: &[&str],
) -> Result<(), BundleError> {
    // Through the file form, as a device receives it.
    let s = SignedBundle::decode(&s.encode())?;
    let before = snapshot(store);
    let result = store.verify(&s, NOW, device, groups).map(|_| ());
    assert_eq!(snapshot(store), before);
    result
}

fn snapshot(store: &TrustStore) -> (Vec<u8>, Option<u64>) {
    (store.signed_root().encode(), store.running_version())
}

#[test]
fn a_good_bundle_round_trips_and_verifies() {
    let store = store(1);
    let original = bundle(6, vec![Target::All]);
    let mut s = original.seal().unwrap();
    s.sign(&key(10));
    let decoded = SignedBundle::decode(&s.encode()).unwrap();
    assert_eq!(decoded, s);
    let v = store.verify(&decoded, NOW, "dev-1", &[]).unwrap();
    assert_eq!(v.files(), &original.files);
    assert_eq!(v.settings(), &original.settings);
    assert_eq!(v.manifest().version, 6);
    assert_eq!(v.signers(), [KeyId::of(&key(10).verifying_key())]);
    // Sealing is deterministic: same contents, same bytes.
    assert_eq!(original.seal().unwrap().payload_bytes, s.payload_bytes);
    assert_eq!(original.seal().unwrap().manifest_bytes, s.manifest_bytes);
}

#[test]
fn record_installed_moves_the_running_version_forward_only() {
    let mut store = store(1);
    let v9 = store.verify(&signed(9, &[10]), NOW, "d", &[]).unwrap();
    let v7 = store.verify(&signed(7, &[10]), NOW, "d", &[]).unwrap();
    store.record_installed(&v9);
    store.record_installed(&v7);
    assert_eq!(store.running_version(), Some(9));
    assert_eq!(
        verify(&store, &signed(9, &[10])),
        Err(BundleError::Rollback {
            version: 9,
            running: 9
        })
    );
}

#[test]
fn unsigned_is_refused() {
    assert_eq!(
        verify(&store(1), &signed(6, &[])),
        Err(BundleError::Unsigned)
    );
}

#[test]
fn unknown_key_is_refused() {
    let unknown = KeyId::of(&key(30).verifying_key());
    assert_eq!(
        verify(&store(1), &signed(6, &[30])),
        Err(BundleError::UnknownKey {
            key_id: unknown,
            valid: 0,
            threshold: 1
        })
    );
    // An extra unknown signer does not hurt once the threshold is met (a
    // bundle signed by an old and a new key works with either root).
    assert_eq!(verify(&store(1), &signed(6, &[10, 30])), Ok(()));
}

#[test]
fn revoked_key_is_refused_even_with_enough_other_signatures() {
    let revoked = KeyId::of(&key(20).verifying_key());
    assert_eq!(
        verify(&store(1), &signed(6, &[20])),
        Err(BundleError::RevokedKey { key_id: revoked })
    );
    assert_eq!(
        verify(&store(1), &signed(6, &[10, 11, 20])),
        Err(BundleError::RevokedKey { key_id: revoked })
    );
}

#[test]
fn below_threshold_is_refused() {
    assert_eq!(
        verify(&store(2), &signed(6, &[10])),
        Err(BundleError::BelowThreshold {
            valid: 1,
            threshold: 2
        })
    );
    assert_eq!(verify(&store(2), &signed(6, &[10, 12])), Ok(()));
}

#[test]
fn duplicate_signatures_by_one_key_count_once() {
    let mut s = signed(6, &[10]);
    let dup = s.signatures[0].clone();
    s.signatures.push(dup.clone());
    s.signatures.push(dup);
    assert_eq!(
        verify(&store(2), &s),
        Err(BundleError::BelowThreshold {
            valid: 1,
            threshold: 2
        })
    );
}

#[test]
fn a_signature_over_other_bytes_is_refused() {
    let other = signed(7, &[10]);
    let mut s = signed(6, &[]);
    s.signatures = other.signatures;
    assert_eq!(
        verify(&store(1), &s),
        Err(BundleError::BadSignature {
            key_id: KeyId::of(&key(10).verifying_key())
        })
    );
    // Nor does a root-context signature over the very same manifest count.
    let mut s = signed(6, &[]);
    let sig = {
        use picket_bundle::ed25519_dalek::{Digest, Sha512};
        key(10)
            .sign_prehashed(
                Sha512::new().chain_update(&s.manifest_bytes),
                Some(picket_bundle::ROOT_CONTEXT),
            )
            .unwrap()
    };
    s.signatures.push(picket_bundle::KeySignature {
        key_id: KeyId::of(&key(10).verifying_key()),
        signature: sig,
    });
    assert!(matches!(
        verify(&store(1), &s),
        Err(BundleError::BadSignature { .. })
    ));
    assert_eq!(BUNDLE_CONTEXT, b"picket/bundle/v1");
}

#[test]
fn a_tampered_manifest_is_a_bad_signature() {
    let mut s = signed(6, &[10]);
    // The version field: bytes 5..13 after magic and format version.
    s.manifest_bytes[5] ^= 1;
    assert_eq!(
        verify(&store(1), &s),
        Err(BundleError::BadSignature {
            key_id: KeyId::of(&key(10).verifying_key())
        })
    );
}

#[test]
fn a_tampered_payload_is_a_hash_mismatch() {
    let mut s = signed(6, &[10]);
    let last = s.payload_bytes.len() - 1;
    s.payload_bytes[last] ^= 0x20;
    assert!(matches!(
        verify(&store(1), &s),
        Err(BundleError::ContentHashMismatch { .. })
    ));
    let mut s = signed(6, &[10]);
    s.payload_bytes.push(0);
    assert_eq!(
        verify(&store(1), &s),
        Err(BundleError::ContentLengthMismatch {
            expected: s.payload_bytes.len() as u64 - 1,
            actual: s.payload_bytes.len() as u64
        })
    );
}

#[test]
fn an_expired_bundle_is_refused() {
    let mut b = bundle(6, vec![Target::All]);
    b.manifest.created_unix = NOW - 10 * DAY;
    b.manifest.expires_unix = NOW;
    let mut s = b.seal().unwrap();
    s.sign(&key(10));
    assert_eq!(
        verify(&store(1), &s),
        Err(BundleError::Expired {
            version: 6,
            expires_unix: NOW,
            now_unix: NOW
        })
    );
}

#[test]
fn an_expired_root_stops_bundles() {
    let mut meta = root_metadata(1, 1);
    meta.expires_unix = NOW - 1;
    let store = TrustStore::new(signed_root(&meta, &[1, 3]), None).unwrap();
    assert_eq!(
        verify(&store, &signed(6, &[10])),
        Err(BundleError::RootExpired {
            root_version: 1,
            expires_unix: NOW - 1,
            now_unix: NOW
        })
    );
}

#[test]
fn rollback_is_refused() {
    for version in [1, 4, 5] {
        assert_eq!(
            verify(&store(1), &signed(version, &[10])),
            Err(BundleError::Rollback {
                version,
                running: 5
            })
        );
    }
    assert_eq!(verify(&store(1), &signed(6, &[10])), Ok(()));
}

#[test]
fn targets_select_devices() {
    let store = store(1);
    let mut s = bundle(
        6,
        vec![Target::Group("lab".into()), Target::Device("dev-9".into())],
    )
    .seal()
    .unwrap();
    s.sign(&key(11));
    assert_eq!(verify_for(&store, &s, "dev-1", &["lab"]), Ok(()));
    assert_eq!(verify_for(&store, &s, "dev-9", &[]), Ok(()));
    assert_eq!(
        verify_for(&store, &s, "dev-2", &["prod", "edge"]),
        Err(BundleError::NotTargeted {
            version: 6,
            device_id: "dev-2".into()
        })
    );
}

#[test]
fn a_root_must_be_signed_by_its_own_threshold() {
    let meta = root_metadata(1, 1);
    for signers in [&[][..], &[1], &[1, 1], &[1, 20]] {
        assert!(matches!(
            TrustStore::new(signed_root(&meta, signers), None),
            Err(BundleError::RootNotSelfSigned {
                valid: 0 | 1,
                threshold: 2,
                ..
            })
        ));
    }
}

// ---- root rotation (§6) ----

/// Version 2: root keys 3, 4, 5 (threshold 2), bundle key 13 only, key 10 revoked.
fn rotated(version: u64) -> RootMetadata {
    RootMetadata {
        version,
        expires_unix: NOW + 365 * DAY,
        root_keys: (3..=5).map(|n| key(n).verifying_key()).collect(),
        root_threshold: 2,
        bundle_keys: vec![key(13).verifying_key()],
        bundle_threshold: 1,
        revoked: BTreeSet::from([
            KeyId::of(&key(10).verifying_key()),
            KeyId::of(&key(20).verifying_key()),
        ]),
    }
}

fn rotate(store: &mut TrustStore, new: &SignedRoot) -> Result<(), BundleError> {
    let before = snapshot(store);
    let result = store.rotate_root(new, NOW);
    if result.is_err() {
        assert_eq!(snapshot(store), before);
    }
    result
}

#[test]
fn rotation_signed_by_old_and_new_thresholds_is_installed() {
    let mut store = store(1);
    // Old threshold by 2 and 3, new threshold by 3 and 4 (3 is in both sets).
    let new = signed_root(&rotated(2), &[2, 3, 4]);
    let new = SignedRoot::decode(&new.encode()).unwrap();
    rotate(&mut store, &new).unwrap();
    assert_eq!(store.root().version, 2);
    assert_eq!(store.running_version(), Some(5));
    // Old bundle keys are gone (10 is even revoked), the new one signs.
    assert_eq!(
        verify(&store, &signed(6, &[11])),
        Err(BundleError::UnknownKey {
            key_id: KeyId::of(&key(11).verifying_key()),
            valid: 0,
            threshold: 1
        })
    );
    assert!(matches!(
        verify(&store, &signed(6, &[10])),
        Err(BundleError::RevokedKey { .. })
    ));
    assert_eq!(verify(&store, &signed(6, &[13])), Ok(()));
    // The rotated store survives a restart from what the device persists.
    let reloaded = TrustStore::new(
        SignedRoot::decode(&store.signed_root().encode()).unwrap(),
        store.running_version(),
    )
    .unwrap();
    assert_eq!(reloaded.root(), store.root());
}

#[test]
fn rotation_that_skips_a_version_is_refused() {
    let mut store = store(1);
    for version in [1, 3, 4] {
        let new = signed_root(&rotated(version), &[1, 2, 3, 4]);
        assert_eq!(
            rotate(&mut store, &new),
            Err(BundleError::RootVersion {
                current: 1,
                got: version
            })
        );
    }
}

#[test]
fn rotation_signed_only_by_old_keys_is_refused() {
    let mut store = store(1);
    let new = signed_root(&rotated(2), &[1, 2]);
    assert_eq!(
        rotate(&mut store, &new),
        Err(BundleError::RootNotSelfSigned {
            version: 2,
            valid: 0,
            threshold: 2
        })
    );
    // One new key (3 is in both sets) is not the new threshold either.
    let new = signed_root(&rotated(2), &[1, 3]);
    assert_eq!(
        rotate(&mut store, &new),
        Err(BundleError::RootNotSelfSigned {
            version: 2,
            valid: 1,
            threshold: 2
        })
    );
}

#[test]
fn rotation_signed_only_by_new_keys_is_refused() {
    let mut store = store(1);
    let new = signed_root(&rotated(2), &[4, 5]);
    assert_eq!(
        rotate(&mut store, &new),
        Err(BundleError::RootNotSignedByOld {
            valid: 0,
            threshold: 2
        })
    );
}

#[test]
fn an_expired_new_root_is_refused_and_rotations_chain() {
    let mut store = store(1);
    let mut meta = rotated(2);
    meta.expires_unix = NOW;
    assert!(matches!(
        rotate(&mut store, &signed_root(&meta, &[2, 3, 4])),
        Err(BundleError::RootExpired {
            root_version: 2,
            ..
        })
    ));
    rotate(&mut store, &signed_root(&rotated(2), &[2, 3, 4])).unwrap();
    // Version 3 is signed by the threshold of version 2's keys.
    let mut v3 = rotated(3);
    v3.root_threshold = 1;
    assert_eq!(
        rotate(&mut store, &signed_root(&v3, &[1, 2])),
        Err(BundleError::RootNotSignedByOld {
            valid: 0,
            threshold: 2
        })
    );
    rotate(&mut store, &signed_root(&v3, &[4, 5])).unwrap();
    assert_eq!(store.root().version, 3);
}

// ---- format rules when building ----

#[test]
fn building_refuses_what_a_device_would_refuse() {
    let with_file = |path: &str, len: usize| {
        let mut b = bundle(6, vec![Target::All]);
        b.files.insert(path.to_owned(), vec![b'x'; len]);
        b.seal()
    };
    for path in [
        "../x.yml",
        "/etc/x.yml",
        "a//b.yml",
        "a/./b.yml",
        "a\\b",
        "",
    ] {
        assert!(
            matches!(with_file(path, 1), Err(FormatError::BadPath { .. })),
            "{path}"
        );
    }
    assert!(matches!(
        with_file("big.yml", picket_bundle::MAX_FILE_LEN + 1),
        Err(FormatError::TooLarge { what: "file", .. })
    ));
    let mut b = bundle(6, vec![]);
    assert!(matches!(
        b.seal(),
        Err(FormatError::Invalid {
            what: "targets",
            ..
        })
    ));
    b.manifest.targets = vec![Target::All];
    b.manifest.expires_unix = b.manifest.created_unix;
    assert!(matches!(
        b.seal(),
        Err(FormatError::Invalid {
            what: "manifest",
            ..
        })
    ));
    // The total: 17 files of 1 MiB.
    let mut b = bundle(6, vec![Target::All]);
    for i in 0..17 {
        b.files
            .insert(format!("f{i:02}"), vec![0; picket_bundle::MAX_FILE_LEN]);
    }
    assert!(matches!(
        b.seal(),
        Err(FormatError::TooLarge {
            what: "payload",
            ..
        })
    ));
}

#[test]
fn root_metadata_rules() {
    let mut meta = root_metadata(1, 4);
    assert!(matches!(
        SignedRoot::new(&meta),
        Err(FormatError::Invalid {
            what: "bundle keys",
            ..
        })
    ));
    meta.bundle_threshold = 1;
    meta.revoked.insert(KeyId::of(&key(11).verifying_key()));
    assert!(matches!(
        SignedRoot::new(&meta),
        Err(FormatError::Invalid {
            what: "root metadata",
            ..
        })
    ));
    let mut meta = root_metadata(0, 1);
    assert!(SignedRoot::new(&meta).is_err());
    meta.version = 1;
    meta.root_keys.push(key(1).verifying_key());
    assert!(matches!(
        SignedRoot::new(&meta),
        Err(FormatError::NotCanonical { what: "root keys" })
    ));
}

#[test]
fn decoders_refuse_trailing_bytes_and_bad_framing() {
    let s = signed(6, &[10]);
    let mut bytes = s.encode();
    bytes.push(0);
    assert!(matches!(
        SignedBundle::decode(&bytes),
        Err(FormatError::TrailingBytes {
            what: "bundle",
            len: 1
        })
    ));
    assert!(matches!(
        SignedBundle::decode(&bytes[..bytes.len() - 2]),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        SignedBundle::decode(b"PKRF\x01"),
        Err(FormatError::BadMagic { what: "bundle" })
    ));
    assert!(matches!(
        SignedBundle::decode(b"PKBF\x02"),
        Err(FormatError::UnsupportedVersion { version: 2, .. })
    ));
    // A payload with files out of order is not canonical.
    let mut payload = s.payload_bytes.clone();
    let a = find(&payload, b"linux/a.yml");
    let b = find(&payload, b"linux/b/c.yml");
    assert!(a < b, "linux/a.yml sorts first");
    payload[a + 6] = b'z';
    assert!(matches!(
        picket_bundle::decode_payload(&payload),
        Err(FormatError::NotCanonical { what: "file paths" })
    ));
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}
