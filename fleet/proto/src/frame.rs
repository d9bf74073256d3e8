//! Frames: the signed envelope every message travels in (docs/WIRE.md §Frame).
//!
//! ```text
//! offset  size  field
//! 0       2     magic "PW" (0x50 0x57)
//! 2       1     protocol version (1)
//! 3       1     message kind
//! 4       1     flags: 0, or FLAG_DEFLATE on an AlertBatch
//! 5       4     payload length N, u32 little-endian (device id + body + signature)
//! 9       16    device id
//! 25      N-80  body (postcard)
//! 9+N-64  64    ed25519 signature (Ed25519ph, context "picket/wire/v1")
//! ```
//!
//! The signature covers every byte before it, header included.
//!
//! A frame with [`FLAG_DEFLATE`] carries the raw DEFLATE stream of its body;
//! the borrowing [`Frame::open`] refuses it with [`Error::CompressedBody`],
//! and `Frame::open_owned` (feature `alloc`, module `deflate`) verifies,
//! then inflates.

use ed25519_dalek::{Digest, Sha512, Signature, SigningKey, VerifyingKey};

use crate::limits::{MAX_BODY_LEN, MAX_FRAME_LEN};
use crate::{DeviceId, Error, Message, MessageKind};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"PW";
/// The protocol version this crate writes and reads.
pub const PROTOCOL_VERSION: u8 = 1;
/// Frame header length: magic, version, kind, flags, payload length.
pub const HEADER_LEN: usize = 9;
/// Device id length inside the payload.
pub const DEVICE_ID_LEN: usize = 16;
/// Signature length at the end of the payload.
pub const SIGNATURE_LEN: usize = 64;
/// Smallest frame: header, device id, empty body, signature.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + DEVICE_ID_LEN + SIGNATURE_LEN;
/// Frame flag bit 0: the body is the raw DEFLATE (RFC 1951) stream of the
/// postcard body (docs/WIRE.md §1.1). Version 1 allows it on
/// [`MessageKind::AlertBatch`] frames only; every other flag bit, and this one
/// on any other kind, is refused as [`Error::UnsupportedFlags`].
pub const FLAG_DEFLATE: u8 = 0x01;
/// RFC 8032 Ed25519ph context: separates these signatures from any other use
/// of the same key (TLS client authentication, a later protocol version).
pub const SIGNATURE_CONTEXT: &[u8] = b"picket/wire/v1";

const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message kind.
    pub kind: MessageKind,
    /// Flags: 0, or [`FLAG_DEFLATE`] on an AlertBatch.
    pub flags: u8,
    /// Payload length (device id, body, signature).
    pub payload_len: usize,
}

impl FrameHeader {
    /// Parses and checks the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// Checks run in wire order (magic, version, kind, flags, length), so a
    /// frame from a newer protocol is reported as a version problem, not as an
    /// unknown kind.
    ///
    /// # Errors
    /// [`Error::Incomplete`] when `buf` is shorter than a header, otherwise
    /// the first problem found.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(Error::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        };
        if h[..2] != MAGIC {
            return Err(Error::BadMagic {
                found: [h[0], h[1]],
            });
        }
        if h[2] != PROTOCOL_VERSION {
            return Err(Error::UnsupportedVersion { found: h[2] });
        }
        let kind = MessageKind::from_u8(h[3])?;
        if !flags_allowed(kind, h[4]) {
            return Err(Error::UnsupportedFlags { found: h[4] });
        }
        let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
        let payload_len = usize::try_from(len).unwrap_or(usize::MAX);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::FrameTooLarge {
                len: payload_len.saturating_add(HEADER_LEN),
                max: MAX_FRAME_LEN,
            });
        }
        if payload_len < DEVICE_ID_LEN + SIGNATURE_LEN {
            return Err(Error::FrameTooShort { len: payload_len });
        }
        Ok(Self {
            kind,
            flags: h[4],
            payload_len,
        })
    }

    /// Whole frame length, header included.
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Whether the body is DEFLATE-compressed ([`FLAG_DEFLATE`]).
    #[must_use]
    pub const fn is_compressed(&self) -> bool {
        self.flags & FLAG_DEFLATE != 0
    }
}

/// The flag combinations version 1 defines (docs/WIRE.md §1.1).
fn flags_allowed(kind: MessageKind, flags: u8) -> bool {
    flags == 0 || (flags == FLAG_DEFLATE && kind == MessageKind::AlertBatch)
}

/// A decoded, not yet verified frame borrowing from its buffer.
///
/// Use [`Frame::open`] (verify, then decode) on anything that came over the
/// network. [`Frame::message_unverified`] exists for the one case that needs
/// the body first: an enrollment request carries the key it is signed with.
///
/// A compressed frame ([`Frame::is_compressed`]) has no borrowed message to
/// give: `open` and `message_unverified` refuse it with
/// [`Error::CompressedBody`], and `Frame::open_owned` (feature `alloc`)
/// verifies, inflates and decodes it into an owned
/// `OpenedFrame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    kind: MessageKind,
    flags: u8,
    device_id: DeviceId,
    body: &'a [u8],
    signed: &'a [u8],
    signature: Signature,
}

impl<'a> Frame<'a> {
    /// Decodes the frame at the start of `buf`, returning it and its length.
    ///
    /// # Errors
    /// [`Error::Incomplete`] when `buf` holds only part of a frame; header
    /// errors as in [`FrameHeader::parse`].
    pub fn decode(buf: &'a [u8]) -> Result<(Self, usize), Error> {
        let header = FrameHeader::parse(buf)?;
        let len = header.frame_len();
        let Some(frame) = buf.get(..len) else {
            return Err(Error::Incomplete {
                needed: len - buf.len(),
            });
        };
        let (signed, sig) = frame.split_at(len - SIGNATURE_LEN);
        let mut device_id = [0u8; DEVICE_ID_LEN];
        device_id.copy_from_slice(&signed[HEADER_LEN..HEADER_LEN + DEVICE_ID_LEN]);
        let mut sig_bytes = [0u8; SIGNATURE_LEN];
        sig_bytes.copy_from_slice(sig);
        Ok((
            Self {
                kind: header.kind,
                flags: header.flags,
                device_id: DeviceId(device_id),
                body: &signed[HEADER_LEN + DEVICE_ID_LEN..],
                signed,
                signature: Signature::from_bytes(&sig_bytes),
            },
            len,
        ))
    }

    /// Decodes a buffer that must hold exactly one frame (one MQTT payload).
    ///
    /// # Errors
    /// As [`Frame::decode`], plus [`Error::TrailingBytes`].
    pub fn decode_exact(buf: &'a [u8]) -> Result<Self, Error> {
        let (frame, len) = Self::decode(buf)?;
        if len == buf.len() {
            Ok(frame)
        } else {
            Err(Error::TrailingBytes { kind: frame.kind })
        }
    }

    /// Message kind from the header.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Device id the frame claims (the sender for device kinds, the target
    /// for backend kinds). Not authenticated until verified.
    #[must_use]
    pub const fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The header's flags: 0, or [`FLAG_DEFLATE`] on an AlertBatch.
    #[must_use]
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the body is DEFLATE-compressed ([`FLAG_DEFLATE`]).
    #[must_use]
    pub const fn is_compressed(&self) -> bool {
        self.flags & FLAG_DEFLATE != 0
    }

    /// The body as sent: postcard, or its DEFLATE stream when
    /// [`Frame::is_compressed`].
    #[must_use]
    pub const fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The signature.
    #[must_use]
    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the signature under `key`.
    ///
    /// # Errors
    /// [`Error::BadSignature`] when it does not match.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Error> {
        key.verify_prehashed_strict(
            Sha512::new().chain_update(self.signed),
            Some(SIGNATURE_CONTEXT),
            &self.signature,
        )
        .map_err(|_| Error::BadSignature {
            device_id: self.device_id,
        })
    }

    /// Verifies under `key`, then decodes the message.
    ///
    /// # Errors
    /// [`Error::CompressedBody`] for a compressed frame (use
    /// `Frame::open_owned`), [`Error::BadSignature`], or a body error from
    /// [`Message::decode_body`].
    pub fn open(&self, key: &VerifyingKey) -> Result<Message<'a>, Error> {
        self.require_plain()?;
        self.verify(key)?;
        Message::decode_body(self.kind, self.body)
    }

    /// Like [`Frame::open`], but first requires the frame to name `expected`
    /// (for example the device in the topic it arrived on).
    ///
    /// # Errors
    /// [`Error::DeviceMismatch`], then as [`Frame::open`].
    pub fn open_for(&self, expected: DeviceId, key: &VerifyingKey) -> Result<Message<'a>, Error> {
        if self.device_id != expected {
            return Err(Error::DeviceMismatch {
                expected,
                found: self.device_id,
            });
        }
        self.open(key)
    }

    /// Decodes the message without checking the signature. Only for
    /// enrollment requests, whose key is inside the body; verify afterwards.
    ///
    /// # Errors
    /// [`Error::CompressedBody`] for a compressed frame, or a body error from
    /// [`Message::decode_body`].
    pub fn message_unverified(&self) -> Result<Message<'a>, Error> {
        self.require_plain()?;
        Message::decode_body(self.kind, self.body)
    }

    // Decoding a DEFLATE stream as postcard would yield garbage or a
    // misleading `MalformedBody`; say what the caller has to do instead.
    const fn require_plain(&self) -> Result<(), Error> {
        if self.is_compressed() {
            Err(Error::CompressedBody { kind: self.kind })
        } else {
            Ok(())
        }
    }
}

/// Encodes `message` as a frame naming `device_id`, signed with `key`, into
/// `out`; returns the frame length.
///
/// Needs no heap: the body is written in place and hashed for the signature.
///
/// # Errors
/// [`Error::FrameTooLarge`] when the frame would exceed [`MAX_FRAME_LEN`],
/// [`Error::BufferTooSmall`] when `out` is too small for it.
pub fn encode_frame(
    message: &Message<'_>,
    device_id: DeviceId,
    key: &SigningKey,
    out: &mut [u8],
) -> Result<usize, Error> {
    if out.len() < MIN_FRAME_LEN {
        return Err(Error::BufferTooSmall);
    }
    let room = (out.len() - MIN_FRAME_LEN).min(MAX_BODY_LEN);
    let body_len = match message.encode_body(&mut out[BODY_START..BODY_START + room]) {
        Ok(n) => n,
        Err(Error::BufferTooSmall) if room == MAX_BODY_LEN => {
            return Err(Error::FrameTooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN,
            });
        }
        Err(e) => return Err(e),
    };
    seal(out, message.kind(), 0, device_id, body_len, key)
}

/// Offset of the body in a frame.
pub(crate) const BODY_START: usize = HEADER_LEN + DEVICE_ID_LEN;

/// Completes a frame whose body (`body_len` bytes) is already in place at
/// [`BODY_START`] in `out`: writes header and device id, then signs. Returns
/// the frame length.
pub(crate) fn seal(
    out: &mut [u8],
    kind: MessageKind,
    flags: u8,
    device_id: DeviceId,
    body_len: usize,
    key: &SigningKey,
) -> Result<usize, Error> {
    let signed_len = BODY_START + body_len;
    let Some(out) = out.get_mut(..signed_len + SIGNATURE_LEN) else {
        return Err(Error::BufferTooSmall);
    };
    let payload_len = signed_len + SIGNATURE_LEN - HEADER_LEN;
    let len_bytes = u32::try_from(payload_len)
        .map_err(|_| Error::BufferTooSmall)?
        .to_le_bytes();
    out[..2].copy_from_slice(&MAGIC);
    out[2] = PROTOCOL_VERSION;
    out[3] = kind.as_u8();
    out[4] = flags;
    out[5..HEADER_LEN].copy_from_slice(&len_bytes);
    out[HEADER_LEN..BODY_START].copy_from_slice(device_id.as_bytes());
    let signature = key
        .sign_prehashed(
            Sha512::new().chain_update(&out[..signed_len]),
            Some(SIGNATURE_CONTEXT),
        )
        .map_err(|_| Error::Signing)?;
    out[signed_len..].copy_from_slice(&signature.to_bytes());
    Ok(signed_len + SIGNATURE_LEN)
}

/// [`encode_frame`] into a new `Vec` sized to the frame.
///
/// # Errors
/// [`Error::FrameTooLarge`] when the frame would exceed [`MAX_FRAME_LEN`].
#[cfg(feature = "alloc")]
pub fn encode_frame_to_vec(
    message: &Message<'_>,
    device_id: DeviceId,
    key: &SigningKey,
) -> Result<alloc::vec::Vec<u8>, Error> {
    // Start small and grow: most frames (heartbeats, acks) are a few hundred
    // bytes, and zeroing MAX_FRAME_LEN for each would dominate their cost.
    let mut size = 1024;
    loop {
        let mut buf = alloc::vec![0u8; size];
        match encode_frame(message, device_id, key, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Error::BufferTooSmall) if size < MAX_FRAME_LEN => {
                size = (size * 4).min(MAX_FRAME_LEN);
            }
            Err(e) => return Err(e),
        }
    }
}
