//! Annotated byte vectors: the exact body bytes of each message kind
//! (docs/WIRE.md §Bodies). Postcard: integers are LEB128 varints, strings and
//! byte strings are a varint length then the bytes, `Option` is 00 or 01 + value,
//! enum variants are a varint index, fixed arrays are raw bytes.
//!
//! If one of these fails, the wire format changed: that needs a new protocol
//! version, not a new vector.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use common::{device_id, device_key, samples};
use picket_proto::{encode_frame_to_vec, AlertBatch, Message, MessageKind};

fn body(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = msg.encode_body(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn check(kind: MessageKind, expected: &[u8]) {
    let msg = samples().into_iter().find(|m| m.kind() == kind).unwrap();
    assert_eq!(body(&msg), expected, "{kind:?} body changed");
    assert_eq!(Message::decode_body(kind, expected).unwrap(), msg);
}

#[rustfmt::skip]
#[test]
fn heartbeat() {
    check(MessageKind::Heartbeat, &[
        0x2a,                                // seq 42
        0x80, 0xf8, 0xa5, 0xf9, 0xc1, 0x32,  // sent_at_ms 1_735_689_600_000
        0x90, 0x1c,                          // uptime_secs 3600
        0x05, b'0', b'.', b'1', b'.', b'0',  // agent_version "0.1.0"
        0x01,                                // protocol_version 1
        0x01, 0x07,                          // rule_bundle_version Some(7)
        0x0c,                                // spool_depth 12
        0x80, 0x20,                          // spool_bytes 4096
        0x00,                                // spool_evictions_total 0
        0x03,                                // lost_kernel_records_total 3
        0x02,                                // modules: 2
        0x07, b'p', b'r', b'o', b'c', b'e', b's', b's', //   name "process"
        0x02,                                //   state Running
        0x00,                                //   error None
        0x07, b'n', b'e', b't', b'w', b'o', b'r', b'k', //   name "network"
        0x03,                                //   state Degraded
        0x01, 0x06, b'n', b'o', b' ', b'B', b'T', b'F', //   error Some("no BTF")
        0x19,                                // cpu_permille 25
        0x80, 0x80, 0x80, 0x0f,              // rss_bytes 31_457_280
    ]);
}

#[rustfmt::skip]
#[test]
fn enroll_request() {
    let mut expected = vec![
        0x08, b't', b'o', b'k', b'-', b'3', b'f', b'9', b'a', // token "tok-3f9a"
    ];
    expected.extend_from_slice(&device_key().verifying_key().to_bytes()); // public_key, 32 raw bytes
    expected.extend_from_slice(&[
        0x00,                                // csr_der None
        0x05, b'g', b'w', b'-', b'0', b'1',  // hostname "gw-01"
        0x05, b'0', b'.', b'1', b'.', b'0',  // agent_version "0.1.0"
    ]);
    check(MessageKind::EnrollRequest, &expected);
}

#[rustfmt::skip]
#[test]
fn enroll_response() {
    check(MessageKind::EnrollResponse, &[
        0x00,                                // variant Accepted
        0x05, 0x30, 0x03, 0x02, 0x01, 0x01,  // certificate_der (5 bytes)
        0x05, 0x30, 0x03, 0x02, 0x01, 0x02,  // ca_certificate_der (5 bytes)
    ]);
    let rejected: &[u8] = &[
        0x01,                                // variant Rejected
        0x01,                                // reason ExpiredToken
        0x0d, b't', b'o', b'k', b'e', b'n', b' ', b'e', b'x', b'p', b'i', b'r', b'e', b'd',
    ];
    assert_eq!(body(&common::enroll_rejected()), rejected);
    assert_eq!(
        Message::decode_body(MessageKind::EnrollResponse, rejected).unwrap(),
        common::enroll_rejected()
    );
}

#[rustfmt::skip]
#[test]
fn bundle_announce() {
    let mut expected = vec![0x07];           // version 7
    expected.extend_from_slice(&[0xab; 32]); // sha256, 32 raw bytes
    expected.extend_from_slice(&[
        0xa0, 0x8d, 0x06,                    // total_len 100_000
        0x80, 0x80, 0x04,                    // chunk_len 65_536
        0x02,                                // chunk_count 2
    ]);
    check(MessageKind::BundleAnnounce, &expected);
}

#[rustfmt::skip]
#[test]
fn bundle_chunk() {
    check(MessageKind::BundleChunk, &[
        0x07,                                // version 7
        0x01,                                // index 1
        0x08, b'r', b'u', b'l', b'e', b's', b'.', b'.', b'.', // data (8 bytes)
    ]);
}

#[rustfmt::skip]
#[test]
fn bundle_ack() {
    check(MessageKind::BundleAck, &[
        0x07,                                // version 7
        0x04,                                // state Failed
        0x02,                                // chunks_received 2
        0x01, 0x0d, b'h', b'a', b's', b'h', b' ', b'm', b'i', b's', b'm', b'a', b't', b'c', b'h',
                                             // error Some("hash mismatch")
    ]);
}

#[rustfmt::skip]
#[test]
fn command() {
    let mut expected = vec![0x33; 16];       // id, 16 raw bytes
    expected.extend_from_slice(&[
        0x80, 0xf8, 0xa5, 0xf9, 0xc1, 0x32,  // issued_at_ms 1_735_689_600_000
        0xe0, 0x9f, 0xb8, 0xf9, 0xc1, 0x32,  // expires_at_ms 1_735_689_900_000
        0x04,                                // action SetLogFilter
        0x0c, b'p', b'i', b'c', b'k', b'e', b't', b'=', b'd', b'e', b'b', b'u', b'g',
    ]);
    check(MessageKind::Command, &expected);
}

#[rustfmt::skip]
#[test]
fn command_reply() {
    let mut expected = vec![0x33; 16];       // id, 16 raw bytes
    expected.extend_from_slice(&[
        0x01,                                // status Succeeded
        0x00,                                // message None
        0x01, 0x02, b'o', b'k',              // output Some(b"ok")
    ]);
    check(MessageKind::CommandReply, &expected);
}

#[rustfmt::skip]
#[test]
fn alert_batch_with_a_key_value_event() {
    let alerts = &common::alerts()[1..];
    let mut expected = vec![
        0x01,                                // alert count 1
    ];
    expected.extend_from_slice(&alerts[0].id.0); // id, 16 raw bytes
    expected.extend_from_slice(&[
        0xe9, 0x07,                          // seq 1001
        0xdc, 0x83, 0xa6, 0xf9, 0xc1, 0x32,  // timestamp_ms 1_735_689_601_500
        0x03,                                // level High
        0x24,                                // rule_id: 36 bytes
    ]);
    expected.extend_from_slice(b"6b2b3f5f-9a1e-4b7c-8d3e-2f1a0c9e7d41");
    expected.push(0x17);                     // rule_title: 23 bytes
    expected.extend_from_slice(b"Download piped to shell");
    expected.extend_from_slice(&[
        0x02,                                // techniques: 2
        0xa3, 0x08, 0x04,                    //   T1059.004 (1059, 4)
        0xd1, 0x08, 0x00,                    //   T1105 (1105, 0)
        0x03,                                // event: variant Fields
        0x01,                                //   1 field
        0x0e,                                //   key: 14 bytes
    ]);
    expected.extend_from_slice(b"TargetFilename");
    expected.push(0x0d);                     //   value: 13 bytes
    expected.extend_from_slice(b"/etc/cron.d/x");

    let msg = Message::AlertBatch(AlertBatch::new(alerts).unwrap());
    assert_eq!(body(&msg), expected);
    assert_eq!(Message::decode_body(MessageKind::AlertBatch, &expected).unwrap(), msg);
}

#[rustfmt::skip]
#[test]
fn heartbeat_frame_layout() {
    let msg = samples().into_iter().find(|m| m.kind() == MessageKind::Heartbeat).unwrap();
    let frame = encode_frame_to_vec(&msg, device_id(), &device_key()).unwrap();
    let body = body(&msg);
    let mut expected = vec![
        b'P', b'W',                          // magic
        0x01,                                // protocol version 1
        0x02,                                // kind Heartbeat
        0x00,                                // flags
        0x88, 0x00, 0x00, 0x00,              // payload length 136 = 16 + 56 + 64, LE
    ];
    expected.extend_from_slice(&[            // device id cc1c08bf46a10af8bc20ab2ee4c71b2f
        0xcc, 0x1c, 0x08, 0xbf, 0x46, 0xa1, 0x0a, 0xf8,
        0xbc, 0x20, 0xab, 0x2e, 0xe4, 0xc7, 0x1b, 0x2f,
    ]);
    expected.extend_from_slice(&body);       // body, 56 bytes (see `heartbeat`)
    expected.extend_from_slice(&[            // Ed25519ph signature (deterministic)
        0x88, 0x53, 0x64, 0xd4, 0x27, 0x7a, 0x84, 0x0c, 0x29, 0x0b, 0x99, 0xee, 0x1a, 0xa0, 0x9a, 0x8d,
        0xd4, 0x9a, 0xe5, 0xe0, 0x13, 0xe4, 0x3c, 0x0a, 0xaf, 0x89, 0xa7, 0xc8, 0x40, 0xd0, 0xa4, 0x93,
        0xa4, 0x0c, 0x1f, 0xa1, 0x10, 0x74, 0xee, 0x91, 0x32, 0xd6, 0x09, 0xe3, 0x3e, 0xc8, 0xb2, 0xa8,
        0x0e, 0x5e, 0xfa, 0xdb, 0xb8, 0x09, 0x2c, 0x91, 0x31, 0x69, 0xe4, 0xd8, 0x3c, 0x9c, 0x29, 0x05,
    ]);
    assert_eq!(frame, expected);
    assert_eq!(device_id().to_string(), "cc1c08bf46a10af8bc20ab2ee4c71b2f");
}

#[rustfmt::skip]
#[test]
fn alert_batch_deflate_frame_layout() {
    // The compressed fixture (WIRE.md §1.1), read with nothing but miniz_oxide
    // and ed25519-dalek, so this checks the layout, not the crate against itself.
    use ed25519_dalek::{Digest, Sha512, Signature};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(common::DEFLATE_FIXTURE);
    let frame = std::fs::read(path).unwrap();
    let mut header = vec![
        b'P', b'W',                          // magic
        0x01,                                // protocol version 1
        0x01,                                // kind AlertBatch
        0x01,                                // flags: FLAG_DEFLATE
        0xf7, 0x01, 0x00, 0x00,              // payload length 503 = 16 + 423 + 64, LE
    ];
    header.extend_from_slice(device_id().as_bytes()); // device id
    assert_eq!(&frame[..25], header.as_slice());
    assert_eq!(frame.len(), 9 + 503);
    let (signed, sig) = frame.split_at(frame.len() - 64);
    // body: 423 bytes of raw DEFLATE (no zlib header), inflating to the
    // postcard body of the batch (count 8, then the alerts)
    let packed = &signed[25..];
    let inflated = miniz_oxide::inflate::decompress_to_vec(packed).unwrap();
    let batch = Message::AlertBatch(AlertBatch::new(common::deflate_fixture_alerts()).unwrap());
    assert_eq!(inflated, body(&batch));
    assert_eq!(inflated[0], 0x08);           // alert count 8
    assert_eq!(inflated.len(), 1841);
    // signature: Ed25519ph over header, device id and the *compressed* body
    device_key()
        .verifying_key()
        .verify_prehashed_strict(
            Sha512::new().chain_update(signed),
            Some(picket_proto::SIGNATURE_CONTEXT),
            &Signature::from_slice(sig).unwrap(),
        )
        .unwrap();
}
