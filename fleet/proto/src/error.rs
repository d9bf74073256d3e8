//! The crate's errors: one small `Copy` enum for everything a frame can do
//! wrong, so the hot path never allocates or boxes.

use crate::{DeviceId, MessageKind};

/// Why a frame or message could not be encoded, decoded or verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the frame does; `needed` more bytes at least.
    #[error("incomplete frame: at least {needed} more bytes needed")]
    Incomplete {
        /// Bytes missing from the buffer.
        needed: usize,
    },
    /// The first two bytes are not [`MAGIC`](crate::MAGIC): not a Picket frame.
    #[error("not a picket frame (bad magic {found:02x?})")]
    BadMagic {
        /// The two bytes found instead.
        found: [u8; 2],
    },
    /// The frame carries a protocol version this crate does not speak.
    #[error("unsupported protocol version {found} (this build speaks {supported})", supported = crate::PROTOCOL_VERSION)]
    UnsupportedVersion {
        /// Version byte found in the header.
        found: u8,
    },
    /// The frame's message kind is not one this version defines.
    #[error("unknown message kind {found}")]
    UnknownKind {
        /// Kind byte found in the header.
        found: u8,
    },
    /// Flag bits this version does not define are set, or
    /// [`FLAG_DEFLATE`](crate::FLAG_DEFLATE) on a kind other than AlertBatch.
    #[error("unsupported frame flags {found:#04x} (version 1 allows only 0x01 DEFLATE, on AlertBatch frames)")]
    UnsupportedFlags {
        /// Flags byte found in the header.
        found: u8,
    },
    /// The declared or produced frame is larger than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Frame length, header included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared payload cannot even hold the device id and signature.
    #[error("frame payload of {len} bytes is shorter than device id and signature")]
    FrameTooShort {
        /// Declared payload length.
        len: usize,
    },
    /// Bytes follow the end of a frame or of a message body.
    #[error("trailing bytes after the {kind:?} message")]
    TrailingBytes {
        /// What was being decoded.
        kind: MessageKind,
    },
    /// The body does not decode as the message kind the header names, or a
    /// field exceeds its `MAX_*` limit.
    #[error("malformed {kind:?} body (invalid encoding or a field over its limit)")]
    MalformedBody {
        /// Kind named in the header.
        kind: MessageKind,
    },
    /// The output buffer is too small for the encoded frame.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The signature does not match the frame under the given key.
    #[error("signature verification failed for device {device_id}")]
    BadSignature {
        /// Device id the frame claims.
        device_id: DeviceId,
    },
    /// The frame is signed for another device than the one expected (for
    /// example the device named by the topic it arrived on).
    #[error("frame is for device {found}, expected {expected}")]
    DeviceMismatch {
        /// The device the caller expected.
        expected: DeviceId,
        /// The device the frame names.
        found: DeviceId,
    },
    /// The frame's body is DEFLATE-compressed, so it cannot be decoded in
    /// place: open it with `Frame::open_owned` or `open_frame_owned`
    /// (feature `alloc`), which verify, inflate, then decode.
    #[error("the {kind:?} body is DEFLATE-compressed: open it with Frame::open_owned / open_frame_owned (feature alloc)")]
    CompressedBody {
        /// Kind named in the header.
        kind: MessageKind,
    },
    /// A compressed body is not one complete raw DEFLATE (RFC 1951) stream
    /// (invalid or truncated data, or bytes after its final block).
    #[error("compressed {kind:?} body is not a valid DEFLATE stream")]
    BadDeflate {
        /// Kind named in the header.
        kind: MessageKind,
    },
    /// A compressed body inflates beyond
    /// [`MAX_BODY_LEN`](crate::MAX_BODY_LEN), the bound on every body.
    #[error("compressed {kind:?} body inflates beyond MAX_BODY_LEN ({max} bytes)")]
    InflatedTooLarge {
        /// Kind named in the header.
        kind: MessageKind,
        /// The limit, `MAX_BODY_LEN`.
        max: usize,
    },
    /// The signing key refused to sign (cannot happen with this crate's context).
    #[error("signing failed")]
    Signing,
}

/// A value is longer than the `MAX_*` limit of the field it is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value of {len} bytes exceeds the limit of {max}")]
pub struct TooLong {
    /// Length of the value.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// Why [`read_frame`](crate::io::read_frame) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError<E: core::fmt::Debug> {
    /// The underlying reader failed.
    #[error("i/o error: {0:?}")]
    Io(E),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    UnexpectedEof,
    /// The bytes read are not a valid frame.
    #[error(transparent)]
    Frame(#[from] Error),
}
