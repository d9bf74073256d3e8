//! Alert batch frames: built from spool records without re-encoding, optionally
//! deflate-compressed, signed with the device key; and the matching decoder.
//!
//! # Compression (a proposed WIRE.md revision)
//!
//! docs/WIRE.md §1 reserves flag bits for "a later revision (for example
//! payload compression)". This crate uses bit 0, [`FLAG_DEFLATE`], on
//! AlertBatch frames only:
//!
//! - the frame body is the raw DEFLATE (RFC 1951) stream of the postcard body;
//! - the signature covers the frame as sent (the compressed bytes), so a
//!   receiver verifies **before** inflating, and an unauthenticated peer can
//!   never make it inflate anything;
//! - the inflated body MUST NOT exceed `MAX_BODY_LEN` (a receiver inflates
//!   with that limit and refuses more), so a batch is bounded exactly as an
//!   uncompressed one;
//! - a sender falls back to an uncompressed (flags 0) frame when compression
//!   does not make it smaller.
//!
//! `picket-proto` v1 receivers refuse the flag (`UnsupportedFlags`), as the
//! spec intends; [`open_alert_batch`] is the receiver side until the proto
//! crate adopts it. [`Compression::None`] produces plain v1 frames.

use ed25519_dalek::{Digest as _, Sha512, Signature};
use picket_proto::identity::DeviceIdentity;
use picket_proto::{
    ed25519_dalek, AlertBatch, DeviceId, Frame, FrameHeader, Message, MessageKind, DEVICE_ID_LEN,
    HEADER_LEN, MAGIC, MAX_ALERTS_PER_BATCH, MAX_BODY_LEN, MAX_FRAME_LEN, PROTOCOL_VERSION,
    SIGNATURE_CONTEXT, SIGNATURE_LEN,
};

use crate::spool::{put_varint, write_wire_alert, Record};

/// Frame flag: the body is DEFLATE-compressed (see the module doc).
pub const FLAG_DEFLATE: u8 = 0x01;

/// Whether alert batches are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Plain v1 frames (flags 0), for backends that do not accept
    /// [`FLAG_DEFLATE`] yet.
    None,
    /// DEFLATE at this level (1 fastest ..= 9 smallest; 6 is a good default).
    Deflate {
        /// miniz level.
        level: u8,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Self::Deflate { level: 6 }
    }
}

/// Why a batch could not be encoded or a frame could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A wire-protocol error (header, signature, body).
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
    /// The (inflated) body exceeds `MAX_BODY_LEN`, or the compressed stream
    /// is invalid.
    #[error("compressed body is invalid or inflates beyond {max} bytes")]
    Inflate {
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
    let (flags, body) = match compression {
        Compression::Deflate { level } => {
            let packed = miniz_oxide::deflate::compress_to_vec(&body, level.clamp(1, 9));
            if packed.len() < body.len() {
                (FLAG_DEFLATE, packed)
            } else {
                (0, body)
            }
        }
        Compression::None => (0, body),
    };
    Ok(sign_frame(
        MessageKind::AlertBatch,
        flags,
        identity.device_id(),
        &body,
        identity,
    ))
}

/// Writes a frame around `body` and signs it (docs/WIRE.md §1, §6).
fn sign_frame(
    kind: MessageKind,
    flags: u8,
    device: DeviceId,
    body: &[u8],
    identity: &DeviceIdentity,
) -> Vec<u8> {
    let payload_len = DEVICE_ID_LEN + body.len() + SIGNATURE_LEN;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload_len);
    frame.extend_from_slice(&MAGIC);
    frame.push(PROTOCOL_VERSION);
    frame.push(kind.as_u8());
    frame.push(flags);
    // Bodies are bounded by MAX_BODY_LEN, far below u32::MAX.
    frame.extend_from_slice(&(payload_len as u32).to_le_bytes());
    frame.extend_from_slice(device.as_bytes());
    frame.extend_from_slice(body);
    let signature = identity
        .signing_key()
        .sign_prehashed(Sha512::new().chain_update(&frame), Some(SIGNATURE_CONTEXT))
        // Only fails for a context over 255 bytes; ours is a 14-byte constant.
        .map_or([0u8; SIGNATURE_LEN], |s| s.to_bytes());
    frame.extend_from_slice(&signature);
    frame
}

/// An opened, verified alert batch frame: owns the (inflated) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBatch {
    body: Vec<u8>,
    compressed: bool,
}

impl OpenedBatch {
    /// The alerts (already checked to decode).
    ///
    /// # Errors
    /// None in practice: the body was checked by [`open_alert_batch`].
    pub fn batch(&self) -> Result<AlertBatch<'_>, picket_proto::Error> {
        AlertBatch::decode(&self.body)
    }

    /// Whether the frame carried [`FLAG_DEFLATE`].
    #[must_use]
    pub fn was_compressed(&self) -> bool {
        self.compressed
    }

    /// The postcard body.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Opens one MQTT payload as an AlertBatch frame from `expected`, signed by
/// `key`: plain v1 frames and [`FLAG_DEFLATE`] frames. Verifies before it
/// inflates; never panics.
///
/// # Errors
/// [`CodecError::Proto`] for header, device, signature and body errors (a
/// frame of another kind is `UnknownKind`-free but refused as
/// `MalformedBody`), [`CodecError::Inflate`] for a bad compressed stream.
pub fn open_alert_batch(
    frame: &[u8],
    expected: DeviceId,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<OpenedBatch, CodecError> {
    let Some(header) = frame.get(..HEADER_LEN) else {
        return Err(picket_proto::Error::Incomplete {
            needed: HEADER_LEN - frame.len(),
        }
        .into());
    };
    let flags = header[4];
    if flags & !FLAG_DEFLATE != 0 || (flags == FLAG_DEFLATE && header[3] != 1) {
        // Everything but our one flag on alert batches: the proto's verdict.
        FrameHeader::parse(header)?;
        return Err(picket_proto::Error::UnsupportedFlags { found: flags }.into());
    }
    if flags == 0 {
        let f = Frame::decode_exact(frame)?;
        return match f.open_for(expected, key)? {
            Message::AlertBatch(_) => Ok(OpenedBatch {
                body: f.body().to_vec(),
                compressed: false,
            }),
            _ => Err(wrong_kind(f.kind()).into()),
        };
    }
    // The same header checks as v1, with our flag masked out.
    let mut plain = [0u8; HEADER_LEN];
    plain.copy_from_slice(header);
    plain[4] = 0;
    let parsed = FrameHeader::parse(&plain)?;
    if parsed.frame_len() != frame.len() {
        return Err(if frame.len() < parsed.frame_len() {
            picket_proto::Error::Incomplete {
                needed: parsed.frame_len() - frame.len(),
            }
        } else {
            picket_proto::Error::TrailingBytes { kind: parsed.kind }
        }
        .into());
    }
    let (signed, sig) = frame.split_at(frame.len() - SIGNATURE_LEN);
    let mut device = [0u8; DEVICE_ID_LEN];
    device.copy_from_slice(&signed[HEADER_LEN..HEADER_LEN + DEVICE_ID_LEN]);
    let device = DeviceId(device);
    if device != expected {
        return Err(picket_proto::Error::DeviceMismatch {
            expected,
            found: device,
        }
        .into());
    }
    let mut sig_bytes = [0u8; SIGNATURE_LEN];
    sig_bytes.copy_from_slice(sig);
    key.verify_prehashed_strict(
        Sha512::new().chain_update(signed),
        Some(SIGNATURE_CONTEXT),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| picket_proto::Error::BadSignature { device_id: device })?;
    let packed = &signed[HEADER_LEN + DEVICE_ID_LEN..];
    let body = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, MAX_BODY_LEN)
        .map_err(|_| CodecError::Inflate { max: MAX_BODY_LEN })?;
    AlertBatch::decode(&body)?;
    Ok(OpenedBatch {
        body,
        compressed: true,
    })
}

fn wrong_kind(kind: MessageKind) -> picket_proto::Error {
    picket_proto::Error::MalformedBody { kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use picket_proto::ed25519_dalek::SigningKey;
    use picket_proto::encode_frame_to_vec;
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
        // The proto refuses the flag cleanly, as WIRE.md §1 says old receivers must.
        assert_eq!(
            Frame::decode_exact(&packed).unwrap_err(),
            picket_proto::Error::UnsupportedFlags { found: 1 }
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

    #[test]
    fn a_signed_deflate_bomb_is_refused() {
        // Even a validly signed frame may not inflate beyond MAX_BODY_LEN.
        let id = identity();
        let zeros = vec![0u8; MAX_BODY_LEN + 1000];
        let packed = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        let frame = sign_frame(
            MessageKind::AlertBatch,
            FLAG_DEFLATE,
            id.device_id(),
            &packed,
            &id,
        );
        assert_eq!(
            open_alert_batch(&frame, id.device_id(), &id.verifying_key()),
            Err(CodecError::Inflate { max: MAX_BODY_LEN })
        );
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

        #[test]
        fn signed_garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), flags in 0u8..2) {
            // Valid signature, arbitrary (compressed or plain) body: exercises
            // the inflater and the batch decoder behind the signature check.
            let id = identity();
            let f = sign_frame(MessageKind::AlertBatch, flags, id.device_id(), &body, &id);
            let _ = open_alert_batch(&f, id.device_id(), &id.verifying_key());
        }
    }
}
