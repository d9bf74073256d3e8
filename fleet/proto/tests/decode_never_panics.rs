//! Arbitrary bytes into every decoder: errors, never panics (issue 4, test 6).
//! Compressed frames (`FLAG_DEFLATE`) included: arbitrary headers with the
//! flag, garbage and mutated DEFLATE streams behind valid signatures, and
//! deflate bombs beyond `MAX_BODY_LEN`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use picket_proto::io::std_io;
use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, open_frame_owned, AlertBatch, Error,
    Frame, FrameHeader, Message, MessageKind, OpenedFrame, FLAG_DEFLATE, MAGIC, MAX_BODY_LEN,
    PROTOCOL_VERSION,
};
use proptest::prelude::*;

/// One valid frame per kind, then a compressed AlertBatch.
fn valid_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| {
        let mut frames: Vec<_> = common::samples()
            .iter()
            .map(|m| {
                encode_frame_to_vec(m, common::device_id(), &common::key_for(m.kind())).unwrap()
            })
            .collect();
        let batch = Message::AlertBatch(AlertBatch::new(common::deflate_fixture_alerts()).unwrap());
        let packed =
            encode_frame_compressed_to_vec(&batch, common::device_id(), &common::device_key(), 6)
                .unwrap();
        assert_eq!(packed[4], FLAG_DEFLATE);
        frames.push(packed);
        frames
    })
}

/// The raw DEFLATE body of the compressed valid frame.
fn valid_stream() -> &'static [u8] {
    let f = valid_frames().last().unwrap();
    &f[25..f.len() - 64]
}

/// Signs `body` as a compressed AlertBatch of the sample device and opens it.
fn open_signed(body: &[u8]) -> Result<OpenedFrame, Error> {
    let key = common::device_key();
    let f = common::sign_raw(MessageKind::AlertBatch.as_u8(), FLAG_DEFLATE, body, &key);
    let opened = open_frame_owned(&f, common::device_id(), &key.verifying_key());
    if let Ok(o) = &opened {
        // An opened frame's message always decodes, and its batch iterates fully.
        assert_eq!(o.kind(), MessageKind::AlertBatch);
        if let Message::AlertBatch(batch) = o.message().unwrap() {
            assert_eq!(batch.iter().count(), batch.len());
        }
        assert!(o.body().len() <= MAX_BODY_LEN);
    }
    opened
}

fn exercise(bytes: &[u8]) {
    let _ = FrameHeader::parse(bytes);
    // No signature checks here: at debug speed they would dominate the run,
    // and `signatures.rs` covers them.
    if let Ok((frame, _)) = Frame::decode(bytes) {
        match frame.message_unverified() {
            Ok(Message::AlertBatch(batch)) => assert_eq!(batch.iter().count(), batch.len()),
            Err(Error::CompressedBody { kind }) => {
                assert!(frame.is_compressed());
                assert_eq!(kind, MessageKind::AlertBatch);
            }
            _ => {}
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

    /// Arbitrary bodies behind a valid header reach the body decoders; with
    /// the DEFLATE flag (or undefined ones) they reach the flag checks.
    #[test]
    fn arbitrary_bodies_behind_a_valid_header(
        kind in 0u8..=10,
        flags in prop_oneof![3 => Just(0u8), 2 => Just(FLAG_DEFLATE), 1 => any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let payload_len = u32::try_from(16 + body.len() + 64).unwrap();
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&[PROTOCOL_VERSION, kind, flags]);
        f.extend_from_slice(&payload_len.to_le_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f.extend_from_slice(&body);
        f.extend_from_slice(&[0u8; 64]);
        exercise(&f);
    }

    /// Valid frames with a few bytes changed, cut or extended.
    #[test]
    fn mutated_valid_frames(
        which in 0usize..10,
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

// Signing and verifying cost tens of milliseconds per case at debug speed, so
// these run fewer cases than the unsigned ones above.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A valid signature over arbitrary bytes as a DEFLATE stream: the
    /// inflater and the batch decoder behind the signature check.
    #[test]
    fn signed_garbage_streams(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = open_signed(&body);
    }

    /// A valid signature over a valid stream with a few bytes changed, cut or
    /// extended: streams that get far into the inflater before going wrong.
    #[test]
    fn signed_mutated_streams(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut s = valid_stream().to_vec();
        for (at, byte) in edits {
            let i = at.index(s.len());
            s[i] ^= byte;
        }
        s.truncate(cut.index(s.len() + 1));
        s.extend_from_slice(&tail);
        let _ = open_signed(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Signed deflate bombs: a few hundred bytes that inflate to anything up
    /// to four times the limit. Beyond `MAX_BODY_LEN` is always refused as
    /// such; up to it, the body reaches the batch decoder.
    #[test]
    fn signed_deflate_bombs(len in (MAX_BODY_LEN - 64)..(4 * MAX_BODY_LEN), byte in any::<u8>()) {
        let packed = miniz_oxide::deflate::compress_to_vec(&vec![byte; len], 6);
        let result = open_signed(&packed);
        if len > MAX_BODY_LEN {
            prop_assert_eq!(
                result,
                Err(Error::InflatedTooLarge { kind: MessageKind::AlertBatch, max: MAX_BODY_LEN })
            );
        } else {
            let inflated = !matches!(result, Err(Error::InflatedTooLarge { .. } | Error::BadDeflate { .. }));
            prop_assert!(inflated, "{:?}", result);
        }
    }
}
