//! Frozen fixtures: `fixtures/v1/` holds one signed frame per message kind,
//! plus a compressed AlertBatch (`FLAG_DEFLATE`), and every one must always
//! decode, verify and equal its sample.
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

use common::{
    deflate_fixture_alerts, device_id, device_key, fixture_name, key_for, samples, DEFLATE_FIXTURE,
    DEFLATE_FIXTURE_LEVEL,
};
use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, open_frame_owned, AlertBatch, Frame,
    Message, MessageKind, FLAG_DEFLATE,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

fn blessing() -> bool {
    std::env::var_os("PICKET_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn v1_fixtures_decode_verify_and_match() {
    let samples = samples();
    let batch = Message::AlertBatch(AlertBatch::new(deflate_fixture_alerts()).unwrap());
    if blessing() {
        for msg in &samples {
            let frame = encode_frame_to_vec(msg, device_id(), &key_for(msg.kind())).unwrap();
            std::fs::write(dir().join(fixture_name(msg.kind())), frame).unwrap();
        }
        let packed = encode_frame_compressed_to_vec(
            &batch,
            device_id(),
            &device_key(),
            DEFLATE_FIXTURE_LEVEL,
        )
        .unwrap();
        std::fs::write(dir().join(DEFLATE_FIXTURE), packed).unwrap();
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
    // The compressed fixture.
    let path = dir().join(DEFLATE_FIXTURE);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (missing fixture?)", path.display()));
    let frame = Frame::decode_exact(&bytes).unwrap();
    assert_eq!(frame.kind(), MessageKind::AlertBatch);
    assert_eq!(frame.flags(), FLAG_DEFLATE);
    let opened = open_frame_owned(&bytes, device_id(), &device_key().verifying_key()).unwrap();
    assert!(opened.was_compressed());
    assert_eq!(opened.message().unwrap(), batch, "{}", path.display());
    let Message::AlertBatch(alerts) = opened.message().unwrap() else {
        panic!("{} is not an alert batch", path.display());
    };
    let seqs: Vec<u64> = alerts.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1_000..1_008).collect::<Vec<_>>());
    // What is frozen is that this file opens to this batch, and that its
    // inflated body is the plain encoder's body. DEFLATE output is not
    // canonical (another miniz_oxide release may pick other matches), so the
    // compressed bytes are not compared with a fresh encoding.
    let plain = encode_frame_to_vec(&batch, device_id(), &device_key()).unwrap();
    assert_eq!(opened.body(), &plain[25..plain.len() - 64]);
    assert!(bytes.len() < plain.len());
    // One test, not two: a parallel test could look before blessing wrote.
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let names = MessageKind::ALL.map(fixture_name);
    for name in names.iter().map(String::as_str).chain([DEFLATE_FIXTURE]) {
        assert!(dir().join(name).is_file(), "{name} missing");
        assert!(readme.contains(name), "README.md does not name {name}");
    }
}
