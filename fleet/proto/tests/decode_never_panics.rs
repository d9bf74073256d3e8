//! Arbitrary bytes into every decoder: errors, never panics (issue 4, test 6).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use picket_proto::io::std_io;
use picket_proto::{
    encode_frame_to_vec, AlertBatch, Frame, FrameHeader, Message, MessageKind, MAGIC,
    PROTOCOL_VERSION,
};
use proptest::prelude::*;

fn valid_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| {
        common::samples()
            .iter()
            .map(|m| {
                encode_frame_to_vec(m, common::device_id(), &common::key_for(m.kind())).unwrap()
            })
            .collect()
    })
}

fn exercise(bytes: &[u8]) {
    let _ = FrameHeader::parse(bytes);
    // No signature checks here: at debug speed they would dominate the run,
    // and `signatures.rs` covers them.
    if let Ok((frame, _)) = Frame::decode(bytes) {
        if let Ok(Message::AlertBatch(batch)) = frame.message_unverified() {
            assert_eq!(batch.iter().count(), batch.len());
        }
    }
    let _ = Frame::decode_exact(bytes);
    for kind in MessageKind::ALL {
        if let Ok(Message::AlertBatch(batch)) = Message::decode_body(kind, bytes) {
            assert_eq!(batch.iter().count(), batch.len());
        }
    }
    let _ = AlertBatch::decode(bytes);
    let mut buf = vec![0u8; 4096];
    let mut reader = std::io::Cursor::new(bytes);
    while let Ok(Some(_)) = std_io::read_frame(&mut reader, &mut buf) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    /// Arbitrary bodies behind a valid header reach the body decoders.
    #[test]
    fn arbitrary_bodies_behind_a_valid_header(
        kind in 0u8..=10,
        body in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let payload_len = u32::try_from(16 + body.len() + 64).unwrap();
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&[PROTOCOL_VERSION, kind, 0]);
        f.extend_from_slice(&payload_len.to_le_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f.extend_from_slice(&body);
        f.extend_from_slice(&[0u8; 64]);
        exercise(&f);
    }

    /// Valid frames with a few bytes changed, cut or extended.
    #[test]
    fn mutated_valid_frames(
        which in 0usize..9,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = valid_frames()[which].clone();
        for (at, byte) in edits {
            let i = at.index(f.len());
            f[i] = byte;
        }
        exercise(&f);
        let cut = cut.index(f.len());
        exercise(&f[..cut]);
        // The body alone, with a few bytes changed, through every body decoder.
        let body = &f[25.min(f.len())..f.len().saturating_sub(64).max(25.min(f.len()))];
        exercise(body);
    }
}
