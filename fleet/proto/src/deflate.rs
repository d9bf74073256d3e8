//! Compressed frames (docs/WIRE.md §1.1): [`FLAG_DEFLATE`] on AlertBatch
//! frames, the owned path that opens them, and the encoder that makes them.
//!
//! - The body of a compressed frame is the raw DEFLATE (RFC 1951) stream of
//!   the postcard body: no zlib or gzip wrapper, nothing after its final block.
//! - The signature covers the frame as sent, compressed bytes included, so a
//!   receiver verifies **before** inflating: an unauthenticated peer can never
//!   make it inflate anything.
//! - The inflated body is bounded by [`MAX_BODY_LEN`] like any body, so a
//!   compressed batch is limited exactly as a plain one; a stream that inflates
//!   beyond it is refused ([`Error::InflatedTooLarge`]) after at most that
//!   many bytes were produced.
//! - A sender falls back to a plain (flags 0) frame when compression does not
//!   make the body smaller.
//!
//! Plain frames keep the zero-copy path ([`Frame::open`]); a compressed frame
//! has no borrowed message to give, so it is opened into an [`OpenedFrame`]
//! that owns the inflated body. [`open_frame_owned`] takes either form.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use picket_proto::{
//!     deflate::{encode_frame_compressed_to_vec, open_frame_owned, DEFAULT_DEFLATE_LEVEL},
//!     Alert, AlertBatch, AlertId, BoundedStr, DeviceId, Event, Frame, Level, Message,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let device = DeviceId::from_public_key(&key.verifying_key());
//! let alerts: Vec<Alert<'_>> = (0..50)
//!     .map(|seq| Alert {
//!         id: AlertId([seq as u8; 16]),
//!         seq,
//!         timestamp_ms: 1_700_000_000_000 + seq,
//!         level: Level::High,
//!         rule_id: BoundedStr::new("shell-from-curl").unwrap(),
//!         rule_title: BoundedStr::new("Download piped to shell").unwrap(),
//!         techniques: heapless::Vec::new(),
//!         event: Event::Fields(heapless::Vec::new()),
//!     })
//!     .collect();
//! let batch = Message::AlertBatch(AlertBatch::new(&alerts)?);
//!
//! let frame = encode_frame_compressed_to_vec(&batch, device, &key, DEFAULT_DEFLATE_LEVEL)?;
//! assert!(Frame::decode_exact(&frame)?.is_compressed());
//!
//! // The receiver: verify, then inflate, then decode.
//! let opened = open_frame_owned(&frame, device, &key.verifying_key())?;
//! assert!(opened.was_compressed());
//! assert_eq!(opened.message()?, batch);
//! # Ok(())
//! # }
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;

use ed25519_dalek::{SigningKey, VerifyingKey};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::frame::{seal, BODY_START};
use crate::limits::{MAX_BODY_LEN, MAX_FRAME_LEN};
use crate::{DeviceId, Error, Frame, Message, MessageKind, FLAG_DEFLATE, MIN_FRAME_LEN};

/// miniz_oxide's default level: a good balance of speed and size for batches.
pub const DEFAULT_DEFLATE_LEVEL: u8 = 6;

/// A verified frame that owns its body, inflated when it was compressed.
///
/// The body was checked to decode when the frame was opened, so
/// [`OpenedFrame::message`] only fails if that check is somehow wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFrame {
    kind: MessageKind,
    device_id: DeviceId,
    body: Vec<u8>,
    compressed: bool,
}

impl OpenedFrame {
    /// The message, borrowing from the owned body.
    ///
    /// # Errors
    /// None in practice: the body was decoded once when the frame was opened.
    pub fn message(&self) -> Result<Message<'_>, Error> {
        Message::decode_body(self.kind, &self.body)
    }

    /// Message kind from the header.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The device id the frame names (verified with it).
    #[must_use]
    pub const fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// Whether the frame carried [`FLAG_DEFLATE`].
    #[must_use]
    pub const fn was_compressed(&self) -> bool {
        self.compressed
    }

    /// The postcard body (inflated).
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The postcard body, by value.
    #[must_use]
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

impl Frame<'_> {
    /// Verifies under `key`, inflates a compressed body (at most
    /// [`MAX_BODY_LEN`] bytes), then checks that the body decodes. Plain
    /// frames work too (their body is copied), so a receiver can use this for
    /// every frame.
    ///
    /// # Errors
    /// [`Error::BadSignature`] first; then [`Error::BadDeflate`] or
    /// [`Error::InflatedTooLarge`]; then a body error from
    /// [`Message::decode_body`].
    pub fn open_owned(&self, key: &VerifyingKey) -> Result<OpenedFrame, Error> {
        self.verify(key)?;
        let compressed = self.is_compressed();
        let body = if compressed {
            inflate(self.kind(), self.body())?
        } else {
            self.body().to_vec()
        };
        Message::decode_body(self.kind(), &body)?;
        Ok(OpenedFrame {
            kind: self.kind(),
            device_id: self.device_id(),
            body,
            compressed,
        })
    }

    /// Like [`Frame::open_owned`], but first requires the frame to name
    /// `expected` (for example the device in the topic it arrived on).
    ///
    /// # Errors
    /// [`Error::DeviceMismatch`], then as [`Frame::open_owned`].
    pub fn open_owned_for(
        &self,
        expected: DeviceId,
        key: &VerifyingKey,
    ) -> Result<OpenedFrame, Error> {
        if self.device_id() != expected {
            return Err(Error::DeviceMismatch {
                expected,
                found: self.device_id(),
            });
        }
        self.open_owned(key)
    }
}

/// Opens one MQTT payload, plain or compressed: exactly one frame, naming
/// `expected`, signed by `key`. Verifies before it inflates; never panics.
///
/// # Errors
/// Header errors as in [`Frame::decode_exact`], then as
/// [`Frame::open_owned_for`].
pub fn open_frame_owned(
    frame: &[u8],
    expected: DeviceId,
    key: &VerifyingKey,
) -> Result<OpenedFrame, Error> {
    Frame::decode_exact(frame)?.open_owned_for(expected, key)
}

/// Inflates a compressed body: one complete raw DEFLATE stream, nothing after
/// it, at most [`MAX_BODY_LEN`] bytes out.
fn inflate(kind: MessageKind, mut input: &[u8]) -> Result<Vec<u8>, Error> {
    // One byte of room beyond the limit tells "exactly MAX_BODY_LEN" (fine)
    // from "more" (refused) without trusting how the inflater reports a full
    // buffer.
    const CAP: usize = MAX_BODY_LEN + 1;
    let bad = Error::BadDeflate { kind };
    let too_large = Error::InflatedTooLarge {
        kind,
        max: MAX_BODY_LEN,
    };
    // Batches compress about 4-8 times; start there and double, so a small
    // frame never costs a MAX_BODY_LEN allocation.
    let mut out = alloc::vec![0u8; input.len().saturating_mul(8).clamp(1024, CAP)];
    let mut state = Box::<DecompressorOxide>::default();
    let mut pos = 0;
    loop {
        let (status, read, written) = decompress(
            &mut state,
            input,
            &mut out,
            pos,
            inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        pos = pos.saturating_add(written);
        input = input.get(read..).ok_or(bad)?;
        if pos > MAX_BODY_LEN {
            return Err(too_large);
        }
        match status {
            TINFLStatus::Done if input.is_empty() => {
                out.truncate(pos);
                return Ok(out);
            }
            TINFLStatus::HasMoreOutput if out.len() < CAP => {
                let grown = out.len().saturating_mul(2).min(CAP);
                out.resize(grown, 0);
            }
            TINFLStatus::HasMoreOutput => return Err(too_large),
            // Done with bytes left over, truncated or invalid data.
            _ => return Err(bad),
        }
    }
}

/// [`encode_frame_to_vec`](crate::encode_frame_to_vec), but an AlertBatch
/// body is DEFLATE-compressed at `level` ([`FLAG_DEFLATE`]) when that makes
/// it smaller. Other kinds, and batches that do not shrink, are plain frames
/// (flags 0), byte for byte what `encode_frame_to_vec` writes.
///
/// `level` is miniz_oxide's: 0 (store) to 10 (slowest), clamped;
/// [`DEFAULT_DEFLATE_LEVEL`] suits batches.
///
/// # Errors
/// [`Error::FrameTooLarge`] when the uncompressed body exceeds
/// [`MAX_BODY_LEN`]: compression does not raise the limit.
pub fn encode_frame_compressed_to_vec(
    message: &Message<'_>,
    device_id: DeviceId,
    key: &SigningKey,
    level: u8,
) -> Result<Vec<u8>, Error> {
    let body = encode_body_to_vec(message)?;
    encode_body_frame_to_vec(message.kind(), &body, device_id, key, Some(level))
}

/// Frames and signs an already encoded postcard body of a `kind` message, for
/// senders that build bodies themselves (the uplink splices spooled alerts
/// into a batch without decoding them). With `deflate_level`, compresses as
/// [`encode_frame_compressed_to_vec`] does; without, writes a plain frame.
///
/// The body is framed as is: the caller vouches that it decodes as `kind`.
///
/// # Errors
/// [`Error::FrameTooLarge`] when `body` exceeds [`MAX_BODY_LEN`].
pub fn encode_body_frame_to_vec(
    kind: MessageKind,
    body: &[u8],
    device_id: DeviceId,
    key: &SigningKey,
    deflate_level: Option<u8>,
) -> Result<Vec<u8>, Error> {
    if body.len() > MAX_BODY_LEN {
        return Err(Error::FrameTooLarge {
            len: body.len().saturating_add(MIN_FRAME_LEN),
            max: MAX_FRAME_LEN,
        });
    }
    let packed = match deflate_level {
        Some(level) if kind == MessageKind::AlertBatch => {
            Some(miniz_oxide::deflate::compress_to_vec(body, level.min(10)))
        }
        _ => None,
    };
    let (flags, wire_body) = match &packed {
        Some(p) if p.len() < body.len() => (FLAG_DEFLATE, p.as_slice()),
        _ => (0, body),
    };
    let mut frame = alloc::vec![0u8; MIN_FRAME_LEN + wire_body.len()];
    frame[BODY_START..BODY_START + wire_body.len()].copy_from_slice(wire_body);
    let len = seal(&mut frame, kind, flags, device_id, wire_body.len(), key)?;
    frame.truncate(len);
    Ok(frame)
}

/// The postcard body of `message` in a `Vec` sized to it.
fn encode_body_to_vec(message: &Message<'_>) -> Result<Vec<u8>, Error> {
    let mut size = 1024;
    loop {
        let mut buf = alloc::vec![0u8; size];
        match message.encode_body(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Error::BufferTooSmall) if size < MAX_BODY_LEN => {
                size = size.saturating_mul(4).min(MAX_BODY_LEN);
            }
            Err(Error::BufferTooSmall) => {
                return Err(Error::FrameTooLarge {
                    len: MAX_FRAME_LEN + 1,
                    max: MAX_FRAME_LEN,
                });
            }
            Err(e) => return Err(e),
        }
    }
}
