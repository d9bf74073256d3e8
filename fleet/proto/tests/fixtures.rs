//! Frozen fixtures: `fixtures/v1/` holds one signed frame per message kind,
//! and every one must always decode, verify and equal its sample.
//!
//! The files are written only when asked:
//! `PICKET_BLESS=1 cargo test -p picket-proto --test fixtures`. Never bless to
//! make a failure go away: a v1 fixture that stops decoding means the wire
//! format broke.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use std::path::PathBuf;

use common::{device_id, fixture_name, key_for, samples};
use picket_proto::{encode_frame_to_vec, Frame, MessageKind};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

fn blessing() -> bool {
    std::env::var_os("PICKET_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn v1_fixtures_decode_verify_and_match() {
    let samples = samples();
    if blessing() {
        for msg in &samples {
            let frame = encode_frame_to_vec(msg, device_id(), &key_for(msg.kind())).unwrap();
            std::fs::write(dir().join(fixture_name(msg.kind())), frame).unwrap();
        }
    }
    for msg in &samples {
        let path = dir().join(fixture_name(msg.kind()));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (missing fixture?)", path.display()));
        let frame = Frame::decode_exact(&bytes).unwrap();
        let decoded = frame
            .open_for(device_id(), &key_for(frame.kind()).verifying_key())
            .unwrap();
        assert_eq!(&decoded, msg, "{}", path.display());
        // The encoder still produces the frozen bytes exactly.
        let fresh = encode_frame_to_vec(msg, device_id(), &key_for(msg.kind())).unwrap();
        assert_eq!(
            fresh,
            bytes,
            "{} no longer matches the encoder",
            path.display()
        );
    }
    // One test, not two: a parallel test could look before blessing wrote.
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    for kind in MessageKind::ALL {
        let name = fixture_name(kind);
        assert!(dir().join(&name).is_file(), "{name} missing");
        assert!(readme.contains(&name), "README.md does not name {name}");
    }
}
