//! Alert batch frames: built from spool records without re-encoding, optionally
//! deflate-compressed, signed with the device key; and the matching decoder.
//!
//! # Compression
//!
//! Protocol v1 defines frame flag bit 0, [`FLAG_DEFLATE`], on AlertBatch
//! frames (docs/WIRE.md §1.1): the body is the raw DEFLATE stream of the
//! postcard body, the signature covers the compressed bytes (receivers verify
//! before inflating), the inflated body is bounded by `MAX_BODY_LEN`, and a
//! sender falls back to a plain frame when compression does not shrink it.
//! `picket-proto` implements all of it; this module splices the body from
//! spool records and hands it to [`picket_proto::encode_body_frame_to_vec`],
//! and [`open_alert_batch`] is [`picket_proto::open_frame_owned`] narrowed to
//! alert batches. [`Compression::None`] produces plain frames only.

use picket_proto::identity::DeviceIdentity;
use picket_proto::{
    ed25519_dalek, AlertBatch, DeviceId, MessageKind, OpenedFrame, DEVICE_ID_LEN, HEADER_LEN,
    MAX_ALERTS_PER_BATCH, MAX_BODY_LEN, MAX_FRAME_LEN, SIGNATURE_LEN,
};

use crate::spool::{put_varint, write_wire_alert, Record};

/// Frame flag: the body is DEFLATE-compressed (defined by `picket-proto`).
pub use picket_proto::FLAG_DEFLATE;

/// Whether alert batches are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Plain frames only (flags 0).
    None,
    /// DEFLATE at this level (1 fastest ..= 9 smallest; 6 is a good default),
    /// when it makes the frame smaller.
    Deflate {
        /// miniz level.
        level: u8,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Self::Deflate {
            level: picket_proto::DEFAULT_DEFLATE_LEVEL,
        }
    }
}

/// Why a batch could not be encoded or a frame could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A wire-protocol error (header, signature, inflating, body).
    #[error(transparent)]
    Proto(#[from] picket_proto::Error),
    /// More alerts than `MAX_ALERTS_PER_BATCH`.
    #[error("{count} alerts exceed the batch limit of {max}")]
    TooManyAlerts {
        /// Alerts given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The postcard body of an alert batch of `records`, without re-encoding them.
///
/// # Errors
/// [`CodecError::TooManyAlerts`], or `FrameTooLarge` when the body exceeds
/// `MAX_BODY_LEN`.
pub fn batch_body(records: &[Record]) -> Result<Vec<u8>, CodecError> {
    if records.len() > MAX_ALERTS_PER_BATCH {
        return Err(CodecError::TooManyAlerts {
            count: records.len(),
            max: MAX_ALERTS_PER_BATCH,
        });
    }
    let mut body =
        Vec::with_capacity(records.iter().map(Record::wire_len_bound).sum::<usize>() + 3);
    put_varint(&mut body, records.len() as u64);
    for r in records {
        write_wire_alert(&mut body, r);
    }
    if body.len() > MAX_BODY_LEN {
        return Err(picket_proto::Error::FrameTooLarge {
            len: body.len() + HEADER_LEN + DEVICE_ID_LEN + SIGNATURE_LEN,
            max: MAX_FRAME_LEN,
        }
        .into());
    }
    Ok(body)
}

/// Encodes and signs an AlertBatch frame of `records`.
///
/// # Errors
/// As [`batch_body`].
pub fn encode_alert_batch(
    records: &[Record],
    identity: &DeviceIdentity,
    compression: Compression,
) -> Result<Vec<u8>, CodecError> {
    let body = batch_body(records)?;
    let level = match compression {
        Compression::Deflate { level } => Some(level.clamp(1, 9)),
        Compression::None => None,
    };
    Ok(picket_proto::encode_body_frame_to_vec(
        MessageKind::AlertBatch,
        &body,
        identity.device_id(),
        identity.signing_key(),
        level,
    )?)
}

/// An opened, verified alert batch frame: owns the (inflated) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBatch {
    frame: OpenedFrame,
}

impl OpenedBatch {
    /// The alerts (already checked to decode).
    ///
    /// # Errors
    /// None in practice: the body was checked by [`open_alert_batch`].
    pub fn batch(&self) -> Result<AlertBatch<'_>, picket_proto::Error> {
        AlertBatch::decode(self.frame.body())
    }

    /// Whether the frame carried [`FLAG_DEFLATE`].
    #[must_use]
    pub fn was_compressed(&self) -> bool {
        self.frame.was_compressed()
    }

    /// The postcard body.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        self.frame.body()
    }
}

/// Opens one MQTT payload as an AlertBatch frame from `expected`, signed by
/// `key`: plain frames and [`FLAG_DEFLATE`] frames. Verifies before it
/// inflates; never panics.
///
/// # Errors
/// [`CodecError::Proto`]: header, device, signature, inflate
/// (`BadDeflate`, `InflatedTooLarge`) and body errors; a frame of another
/// kind is refused as `MalformedBody`.
pub fn open_alert_batch(
    frame: &[u8],
    expected: DeviceId,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<OpenedBatch, CodecError> {
    let frame = picket_proto::open_frame_owned(frame, expected, key)?;
    if frame.kind() != MessageKind::AlertBatch {
        return Err(picket_proto::Error::MalformedBody { kind: frame.kind() }.into());
    }
    Ok(OpenedBatch { frame })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use picket_proto::ed25519_dalek::SigningKey;
    use picket_proto::{encode_frame_to_vec, Frame, Message};
    use proptest::prelude::*;

    fn identity() -> DeviceIdentity {
        DeviceIdentity::from_signing_key(SigningKey::from_bytes(&[9; 32]))
    }

    fn records(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let s = sample::process_alert(i, sample::id_for(3, i));
                Record {
                    seq: i + 1,
                    id: s.id,
                    level: s.level,
                    timestamp_ms: s.timestamp_ms,
                    payload: s.payload().unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn uncompressed_frames_are_byte_identical_to_the_proto_encoder() {
        let id = identity();
        let recs = records(20);
        let ours = encode_alert_batch(&recs, &id, Compression::None).unwrap();
        let samples: Vec<_> = (0..20u64)
            .map(|i| sample::process_alert(i, sample::id_for(3, i)))
            .collect();
        let alerts: Vec<_> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut a = s.alert();
                a.seq = i as u64 + 1;
                a
            })
            .collect();
        let msg = Message::AlertBatch(AlertBatch::new(&alerts).unwrap());
        let theirs = encode_frame_to_vec(&msg, id.device_id(), id.signing_key()).unwrap();
        assert_eq!(ours, theirs);
        // And picket-proto opens it.
        let f = Frame::decode_exact(&ours).unwrap();
        assert_eq!(
            f.open_for(id.device_id(), &id.verifying_key()).unwrap(),
            msg
        );
    }

    #[test]
    fn compressed_frames_round_trip_and_are_smaller() {
        let id = identity();
        let recs = records(256);
        let plain = encode_alert_batch(&recs, &id, Compression::None).unwrap();
        let packed = encode_alert_batch(&recs, &id, Compression::default()).unwrap();
        assert_eq!(packed[4], FLAG_DEFLATE);
        assert!(
            packed.len() * 2 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let opened = open_alert_batch(&packed, id.device_id(), &id.verifying_key()).unwrap();
        assert!(opened.was_compressed());
        let seqs: Vec<u64> = opened.batch().unwrap().iter().map(|a| a.seq).collect();
        assert_eq!(seqs, (1..=256).collect::<Vec<_>>());
        // picket-proto reads the header, and its borrowing path sends the
        // caller to the owned one rather than decode a DEFLATE stream.
        let f = Frame::decode_exact(&packed).unwrap();
        assert!(f.is_compressed());
        assert_eq!(
            f.open_for(id.device_id(), &id.verifying_key()),
            Err(picket_proto::Error::CompressedBody {
                kind: MessageKind::AlertBatch
            })
        );
    }

    #[test]
    fn small_batches_that_do_not_shrink_go_plain() {
        let id = identity();
        let recs = records(1);
        let plain = encode_alert_batch(&recs, &id, Compression::None).unwrap();
        let packed = encode_alert_batch(&recs, &id, Compression::default()).unwrap();
        assert!(packed.len() <= plain.len());
        if packed[4] == 0 {
            assert_eq!(packed, plain);
        }
        let opened = open_alert_batch(&plain, id.device_id(), &id.verifying_key()).unwrap();
        assert!(!opened.was_compressed());
        assert_eq!(opened.batch().unwrap().len(), 1);
    }

    #[test]
    fn other_kinds_are_refused() {
        let id = identity();
        let hb = Message::Heartbeat(picket_proto::Heartbeat {
            seq: 1,
            sent_at_ms: 0,
            uptime_secs: 0,
            agent_version: picket_proto::BoundedStr::new("0").unwrap(),
            protocol_version: 1,
            rule_bundle_version: None,
            spool_depth: 0,
            spool_bytes: 0,
            spool_evictions_total: 0,
            lost_kernel_records_total: 0,
            modules: picket_proto::heapless::Vec::new(),
            cpu_permille: 0,
            rss_bytes: 0,
        });
        let f = encode_frame_to_vec(&hb, id.device_id(), id.signing_key()).unwrap();
        assert_eq!(
            open_alert_batch(&f, id.device_id(), &id.verifying_key()),
            Err(CodecError::Proto(picket_proto::Error::MalformedBody {
                kind: MessageKind::Heartbeat
            }))
        );
    }

    #[test]
    fn tampering_and_wrong_devices_are_refused() {
        let id = identity();
        let other = DeviceIdentity::from_signing_key(SigningKey::from_bytes(&[8; 32]));
        let packed = encode_alert_batch(&records(10), &id, Compression::default()).unwrap();
        let mut bad = packed.clone();
        let n = bad.len();
        bad[n / 2] ^= 1;
        assert!(matches!(
            open_alert_batch(&bad, id.device_id(), &id.verifying_key()),
            Err(CodecError::Proto(picket_proto::Error::BadSignature { .. }))
        ));
        assert!(matches!(
            open_alert_batch(&packed, other.device_id(), &other.verifying_key()),
            Err(CodecError::Proto(
                picket_proto::Error::DeviceMismatch { .. }
            ))
        ));
        assert!(matches!(
            open_alert_batch(&packed, id.device_id(), &other.verifying_key()),
            Err(CodecError::Proto(picket_proto::Error::BadSignature { .. }))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let id = identity();
            let _ = open_alert_batch(&bytes, id.device_id(), &id.verifying_key());
        }

        #[test]
        fn mutated_frames_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
            compressed in any::<bool>(),
        ) {
            let id = identity();
            let c = if compressed { Compression::default() } else { Compression::None };
            let mut f = encode_alert_batch(&records(5), &id, c).unwrap();
            for (at, x) in flips {
                let n = f.len();
                f[at % n] ^= x;
            }
            f.truncate(cut % (f.len() + 1));
            let _ = open_alert_batch(&f, id.device_id(), &id.verifying_key());
        }
    }
}
