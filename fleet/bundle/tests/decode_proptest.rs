//! Decoders on arbitrary bytes return an error and never panic; any
//! single-byte change to a signed bundle file is refused; bundles round-trip.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use picket_bundle::ed25519_dalek::SigningKey;
use picket_bundle::{
    decode_payload, Bundle, Manifest, RootMetadata, Settings, SignedBundle, SignedRoot, Target,
    TrustStore,
};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

/// Built once: ed25519 in a debug build is slow enough to dominate.
fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(make_store)
}

fn make_store() -> TrustStore {
    let root_key = SigningKey::from_bytes(&[1; 32]);
    let mut root = SignedRoot::new(&RootMetadata {
        version: 1,
        expires_unix: NOW + 1000,
        root_keys: vec![root_key.verifying_key()],
        root_threshold: 1,
        bundle_keys: vec![SigningKey::from_bytes(&[2; 32]).verifying_key()],
        bundle_threshold: 1,
        revoked: BTreeSet::new(),
    })
    .unwrap();
    root.sign(&root_key);
    TrustStore::new(root, None).unwrap()
}

fn good_file() -> Vec<u8> {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(make_good_file).clone()
}

fn make_good_file() -> Vec<u8> {
    let files = BTreeMap::from([
        ("a.yml".to_owned(), b"title: a".to_vec()),
        ("b/c.yml".to_owned(), b"title: c".to_vec()),
    ]);
    let mut s = Bundle::new(
        3,
        NOW - 10,
        NOW + 10,
        vec![Target::All],
        files,
        Settings::default(),
    )
    .seal()
    .unwrap();
    s.sign(&SigningKey::from_bytes(&[2; 32]));
    s.encode()
}

/// Arbitrary bytes, sometimes behind a valid magic and version so the
/// decoders get past their first check.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop::sample::select(vec![
        &b""[..],
        b"PKBF\x01",
        b"PKBM\x01",
        b"PKBP\x01",
        b"PKRM\x01",
        b"PKRF\x01",
    ]);
    (magic, prop::collection::vec(any::<u8>(), 0..512)).prop_map(|(m, rest)| {
        let mut v = m.to_vec();
        v.extend(rest);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decoders_never_panic(bytes in input()) {
        let _ = Manifest::decode(&bytes);
        let _ = decode_payload(&bytes);
        let _ = RootMetadata::decode(&bytes);
        if let Ok(root) = SignedRoot::decode(&bytes) {
            let _ = TrustStore::new(root, None);
        }
        if let Ok(signed) = SignedBundle::decode(&bytes) {
            prop_assert!(store().verify(&signed, NOW, "d", &[]).is_err());
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_single_byte_change_is_refused(pos in any::<prop::sample::Index>(), xor in 1u8..) {
        let mut bytes = good_file();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        let refused = match SignedBundle::decode(&bytes) {
            Err(_) => true,
            Ok(signed) => store().verify(&signed, NOW, "d", &[]).is_err(),
        };
        prop_assert!(refused, "byte {} ^ {:#x} accepted", i, xor);
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn bundles_round_trip(
        files in prop::collection::btree_map("[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,2}", prop::collection::vec(any::<u8>(), 0..64), 0..8),
        placeholders in prop::collection::btree_map("[A-Za-z]{1,10}", prop::collection::vec("[ -~]{0,12}", 0..4), 0..4),
        version in 1u64..,
        groups in prop::collection::vec("[a-z]{1,6}", 1..4),
    ) {
        // Paths such as `a/..` are refused by design; keep the valid ones.
        let files: BTreeMap<_, _> = files
            .into_iter()
            .filter(|(p, _)| p.split('/').all(|c| c != "." && c != ".."))
            .collect();
        let settings = Settings { placeholders, field_mappings: Vec::new() };
        let targets = groups.into_iter().map(Target::Group).collect();
        let bundle = Bundle::new(version, 1, NOW + 10, targets, files, settings);
        let mut signed = bundle.seal().unwrap();
        signed.sign(&SigningKey::from_bytes(&[2; 32]));
        let decoded = SignedBundle::decode(&signed.encode()).unwrap();
        prop_assert_eq!(&decoded, &signed);
        let (settings, files) = decode_payload(&decoded.payload_bytes).unwrap();
        prop_assert_eq!(&settings, &bundle.settings);
        prop_assert_eq!(&files, &bundle.files);
        let manifest = decoded.unverified_manifest().unwrap();
        prop_assert_eq!(manifest.targets, bundle.manifest.targets);
    }
}
