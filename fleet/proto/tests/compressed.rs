//! Compressed AlertBatch frames (docs/WIRE.md §1.1): which headers carry the
//! flag, verify-then-inflate, the inflate limit, the encoder's fallback, and
//! the borrowing API refusing what it cannot decode in place.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use common::{backend_key, device_id, device_key, process_alert, samples, sign_raw};
use picket_proto::io::std_io;
use picket_proto::{
    encode_body_frame_to_vec, encode_frame_compressed_to_vec, encode_frame_to_vec,
    open_frame_owned, AlertBatch, Error, Frame, FrameHeader, Message, MessageKind,
    DEFAULT_DEFLATE_LEVEL, FLAG_DEFLATE, MAX_BODY_LEN,
};

const BATCH: u8 = MessageKind::AlertBatch.as_u8();

fn batch_of(n: u64) -> Vec<picket_proto::Alert<'static>> {
    (0..n).map(process_alert).collect()
}

fn compressed_frame(n: u64) -> Vec<u8> {
    let alerts = batch_of(n);
    let msg = Message::AlertBatch(AlertBatch::new(&alerts).unwrap());
    encode_frame_compressed_to_vec(&msg, device_id(), &device_key(), DEFAULT_DEFLATE_LEVEL).unwrap()
}

#[test]
fn the_flag_is_accepted_on_alert_batches_only() {
    let f = compressed_frame(20);
    let header = FrameHeader::parse(&f).unwrap();
    assert_eq!(header.flags, FLAG_DEFLATE);
    assert!(header.is_compressed());

    for kind in MessageKind::ALL {
        let mut h = f[..9].to_vec();
        h[3] = kind.as_u8();
        let parsed = FrameHeader::parse(&h);
        if kind == MessageKind::AlertBatch {
            assert!(parsed.is_ok());
        } else {
            assert_eq!(
                parsed,
                Err(Error::UnsupportedFlags { found: 1 }),
                "{kind:?}"
            );
        }
    }
    // Every other bit stays undefined, alone or with bit 0.
    for flags in 2..=u8::MAX {
        let mut h = f[..9].to_vec();
        h[4] = flags;
        assert_eq!(
            FrameHeader::parse(&h),
            Err(Error::UnsupportedFlags { found: flags })
        );
    }
}

#[test]
fn header_checks_keep_their_order() {
    let f = compressed_frame(5);
    let mut h = f[..9].to_vec();
    // A bad version wins over the flag, a bad kind too.
    h[2] = 2;
    h[4] = 0xff;
    assert_eq!(
        FrameHeader::parse(&h),
        Err(Error::UnsupportedVersion { found: 2 })
    );
    h[2] = 1;
    h[3] = 0;
    assert_eq!(FrameHeader::parse(&h), Err(Error::UnknownKind { found: 0 }));
    // Flags are checked before the length.
    h[3] = BATCH;
    h[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        FrameHeader::parse(&h),
        Err(Error::UnsupportedFlags { found: 0xff })
    );
    h[4] = FLAG_DEFLATE;
    assert!(matches!(
        FrameHeader::parse(&h),
        Err(Error::FrameTooLarge { .. })
    ));
}

#[test]
fn compressed_batches_round_trip_and_are_smaller() {
    let alerts = batch_of(100);
    let msg = Message::AlertBatch(AlertBatch::new(&alerts).unwrap());
    let plain = encode_frame_to_vec(&msg, device_id(), &device_key()).unwrap();
    let packed =
        encode_frame_compressed_to_vec(&msg, device_id(), &device_key(), DEFAULT_DEFLATE_LEVEL)
            .unwrap();
    assert!(
        packed.len() * 4 < plain.len(),
        "{} vs {}",
        packed.len(),
        plain.len()
    );

    let frame = Frame::decode_exact(&packed).unwrap();
    assert!(frame.is_compressed());
    assert_eq!(frame.flags(), FLAG_DEFLATE);
    let key = device_key().verifying_key();
    let opened = frame.open_owned_for(device_id(), &key).unwrap();
    assert!(opened.was_compressed());
    assert_eq!(opened.kind(), MessageKind::AlertBatch);
    assert_eq!(opened.device_id(), device_id());
    assert_eq!(opened.message().unwrap(), msg);
    assert_eq!(opened.body(), &plain[25..plain.len() - 64]);
    assert_eq!(
        open_frame_owned(&packed, device_id(), &key).unwrap(),
        opened
    );
}

#[test]
fn the_owned_path_opens_plain_frames_too() {
    for msg in samples() {
        let key = common::key_for(msg.kind());
        let f = encode_frame_to_vec(&msg, device_id(), &key).unwrap();
        let opened = open_frame_owned(&f, device_id(), &key.verifying_key()).unwrap();
        assert!(!opened.was_compressed());
        assert_eq!(opened.message().unwrap(), msg);
    }
}

#[test]
fn the_borrowing_api_refuses_compressed_bodies_clearly() {
    let packed = compressed_frame(10);
    let frame = Frame::decode_exact(&packed).unwrap();
    let key = device_key().verifying_key();
    let refused = Error::CompressedBody {
        kind: MessageKind::AlertBatch,
    };
    assert_eq!(frame.open(&key), Err(refused));
    assert_eq!(frame.open_for(device_id(), &key), Err(refused));
    assert_eq!(frame.message_unverified(), Err(refused));
    // ...but the signature itself is fine.
    frame.verify(&key).unwrap();
    assert!(refused.to_string().contains("open_owned"), "{refused}");
}

#[test]
fn the_encoder_falls_back_to_plain_frames() {
    // One alert with incompressible ids: DEFLATE does not pay off.
    let key = device_key();
    let one = [process_alert(0)];
    let msg = Message::AlertBatch(AlertBatch::new(&one).unwrap());
    let plain = encode_frame_to_vec(&msg, device_id(), &key).unwrap();
    let empty = Message::AlertBatch(AlertBatch::new(&[]).unwrap());
    let empty_plain = encode_frame_to_vec(&empty, device_id(), &key).unwrap();
    assert_eq!(
        encode_frame_compressed_to_vec(&empty, device_id(), &key, 6).unwrap(),
        empty_plain
    );
    // Level 0 stores: never smaller, so always plain.
    assert_eq!(
        encode_frame_compressed_to_vec(&msg, device_id(), &key, 0).unwrap(),
        plain
    );
    // Other kinds are never compressed, whatever the level.
    for msg in samples().iter().skip(1) {
        let key = common::key_for(msg.kind());
        assert_eq!(
            encode_frame_compressed_to_vec(msg, device_id(), &key, 9).unwrap(),
            encode_frame_to_vec(msg, device_id(), &key).unwrap(),
            "{:?}",
            msg.kind()
        );
    }
    // A pre-encoded body without a level is framed exactly as the encoder does.
    let body = &plain[25..plain.len() - 64];
    assert_eq!(
        encode_body_frame_to_vec(MessageKind::AlertBatch, body, device_id(), &key, None).unwrap(),
        plain
    );
    let too_big = vec![0u8; MAX_BODY_LEN + 1];
    assert!(matches!(
        encode_body_frame_to_vec(
            MessageKind::AlertBatch,
            &too_big,
            device_id(),
            &key,
            Some(6)
        ),
        Err(Error::FrameTooLarge { .. })
    ));
}

#[test]
fn the_signature_is_checked_before_inflating() {
    // Garbage that is not DEFLATE, under a wrong signature: the signature
    // error proves nothing was inflated.
    let mut f = sign_raw(BATCH, FLAG_DEFLATE, &[0xff; 40], &device_key());
    let n = f.len();
    f[n - 1] ^= 1;
    assert!(matches!(
        open_frame_owned(&f, device_id(), &device_key().verifying_key()),
        Err(Error::BadSignature { .. })
    ));
    // Signed by another key, or naming another device.
    let f = compressed_frame(5);
    assert!(matches!(
        open_frame_owned(&f, device_id(), &backend_key().verifying_key()),
        Err(Error::BadSignature { .. })
    ));
    let other = picket_proto::DeviceId([0; 16]);
    assert!(matches!(
        open_frame_owned(&f, other, &device_key().verifying_key()),
        Err(Error::DeviceMismatch { .. })
    ));
    // A flipped byte anywhere is refused (a sample: at debug speed one check
    // per byte would take seconds; `signatures.rs` flips every byte).
    let key = device_key().verifying_key();
    for i in (0..f.len()).step_by(9).chain([4, f.len() - 1]) {
        let mut t = f.clone();
        t[i] ^= 0x01;
        assert!(open_frame_owned(&t, device_id(), &key).is_err(), "byte {i}");
    }
}

#[test]
fn bad_streams_are_refused_after_a_good_signature() {
    let key = device_key();
    let open = |body: &[u8]| {
        let f = sign_raw(BATCH, FLAG_DEFLATE, body, &key);
        open_frame_owned(&f, device_id(), &key.verifying_key())
    };
    let bad = Err(Error::BadDeflate {
        kind: MessageKind::AlertBatch,
    });
    assert_eq!(open(&[]), bad);
    assert_eq!(open(&[0xff; 64]), bad);
    // A valid stream, truncated, or followed by a byte.
    let good = miniz_oxide::deflate::compress_to_vec(&[0x00], 6);
    assert!(open(&good).is_ok(), "an empty batch");
    assert_eq!(open(&good[..good.len() - 1]), bad);
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(open(&trailing), bad);
    // zlib-wrapped is not raw DEFLATE.
    assert!(open(&miniz_oxide::deflate::compress_to_vec_zlib(&[0x00], 6)).is_err());
    // A valid stream of a body that is not a batch.
    assert_eq!(
        open(&miniz_oxide::deflate::compress_to_vec(&[0x05], 6)),
        Err(Error::MalformedBody {
            kind: MessageKind::AlertBatch
        })
    );
}

#[test]
fn a_signed_deflate_bomb_is_refused_at_the_limit() {
    let key = device_key();
    let open = |len: usize| {
        let packed = miniz_oxide::deflate::compress_to_vec(&vec![0u8; len], 10);
        // DEFLATE reaches about 1000:1 on zeros: small frames, big bodies.
        assert!(packed.len() < 16 * 1024, "{}", packed.len());
        let f = sign_raw(BATCH, FLAG_DEFLATE, &packed, &key);
        open_frame_owned(&f, device_id(), &key.verifying_key())
    };
    let limit = Error::InflatedTooLarge {
        kind: MessageKind::AlertBatch,
        max: MAX_BODY_LEN,
    };
    let too_large = Err(limit);
    assert_eq!(open(MAX_BODY_LEN + 1), too_large);
    assert_eq!(open(64 * MAX_BODY_LEN), too_large);
    // Exactly the limit inflates, and reaches the batch decoder: zeros are an
    // empty batch and trailing bytes.
    assert_eq!(
        open(MAX_BODY_LEN),
        Err(Error::TrailingBytes {
            kind: MessageKind::AlertBatch
        })
    );
    assert!(limit.to_string().contains("MAX_BODY_LEN"), "{limit}");
}

#[test]
fn stream_readers_pass_compressed_frames_on() {
    let packed = compressed_frame(30);
    let plain = encode_frame_to_vec(&samples()[1], device_id(), &device_key()).unwrap();
    let stream = [packed.clone(), plain, packed.clone()].concat();
    let mut reader = std::io::Cursor::new(stream);
    let mut buf = vec![0u8; 4096];
    let mut flags = Vec::new();
    while let Some(frame) = std_io::read_frame(&mut reader, &mut buf).unwrap() {
        flags.push(frame.flags());
        frame
            .open_owned(&device_key().verifying_key())
            .unwrap()
            .message()
            .unwrap();
    }
    assert_eq!(flags, [FLAG_DEFLATE, 0, FLAG_DEFLATE]);
}
