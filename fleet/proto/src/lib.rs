//! Picket's fleet wire protocol, shared by appliances and the backend.
//!
//! Every message travels as one **frame**: a 9-byte header (magic, protocol
//! version, message kind, flags, payload length), the device id, a
//! [postcard] body, and an ed25519 signature over everything before it. One
//! frame is one MQTT payload; on byte streams (serial links, spool files)
//! frames simply follow each other. The full specification, with MUST/SHOULD
//! language, byte layouts, limits and the signing scheme, is `docs/WIRE.md`.
//!
//! The layers, bottom up:
//!
//! - [`types`] and [`limits`]: ids, [`BoundedStr`]/[`BoundedBytes`] (text and
//!   bytes with their `MAX_*` bound in the type), technique ids, levels.
//! - [`message`]: one type per [`MessageKind`], gathered in [`Message`].
//!   Messages borrow their text from the buffer they were decoded from, so
//!   decoding needs no heap; [`AlertBatch`] even decodes its alerts lazily.
//! - [`frame`]: [`encode_frame`] writes and signs a frame into a caller's
//!   buffer; [`Frame::decode`] splits one off a buffer (sans-IO, reporting
//!   [`Error::Incomplete`]); [`Frame::open`] verifies and decodes it.
//! - `deflate` (feature `alloc`): AlertBatch frames with [`FLAG_DEFLATE`],
//!   whose body is a DEFLATE stream. `Frame::open_owned` and
//!   `open_frame_owned` verify, then inflate (bounded by [`MAX_BODY_LEN`]),
//!   then decode into an owned `OpenedFrame`; `encode_frame_compressed_to_vec`
//!   compresses when that makes the frame smaller.
//! - [`io`]: `read_frame` and `write_frame` over [`embedded_io`] streams.
//! - [`topic`]: the MQTT topic layout under `picket/v1/devices/{device_id}/`.
//! - `identity` (feature `std`): the device key on disk, created on first
//!   start with mode 0600.
//!
//! Errors are one small `Copy` enum, [`Error`]; nothing in a decoder panics
//! or allocates, whatever the input (property-tested). The one exception to
//! "allocates" is inflating a compressed body, which only the owned path does,
//! after the signature checked out, and never beyond [`MAX_BODY_LEN`].
//!
//! # Features
//!
//! - `alloc`: [`encode_frame_to_vec`], [`AlertBatch::to_vec`] and the
//!   `deflate` module (pure-Rust `miniz_oxide`, no `std` needed).
//! - `std` (default, implies `alloc`): the `identity` module and
//!   `io::std_io` adapters.
//!
//! With `--no-default-features` the crate is `#![no_std]` without a heap;
//! such a build still parses compressed frames' headers but cannot open them
//! ([`Error::CompressedBody`]).
//!
//! # Example
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use picket_proto::{
//!     encode_frame, topic, BoundedStr, DeviceId, Frame, Heartbeat, Message, MAX_FRAME_LEN,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The device: a key (see `identity` for the stored one) and its id.
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let device = DeviceId::from_public_key(&key.verifying_key());
//!
//! let heartbeat = Message::Heartbeat(Heartbeat {
//!     seq: 1,
//!     sent_at_ms: 1_700_000_000_000,
//!     uptime_secs: 60,
//!     agent_version: BoundedStr::new("0.1.0")?,
//!     protocol_version: picket_proto::PROTOCOL_VERSION,
//!     rule_bundle_version: Some(3),
//!     spool_depth: 0,
//!     spool_bytes: 0,
//!     spool_evictions_total: 0,
//!     lost_kernel_records_total: 0,
//!     modules: heapless::Vec::new(),
//!     cpu_permille: 12,
//!     rss_bytes: 24 << 20,
//! });
//! let mut buf = [0u8; 512];
//! let len = encode_frame(&heartbeat, device, &key, &mut buf)?;
//! let topic = topic::topic(device, topic::Channel::Heartbeat);
//! assert!(topic.starts_with("picket/v1/devices/"));
//!
//! // The backend: topic -> device, device -> registered key, then verify.
//! let (from, _channel) = topic::parse(&topic).ok_or("not a picket topic")?;
//! let frame = Frame::decode_exact(&buf[..len])?;
//! let message = frame.open_for(from, &key.verifying_key())?;
//! assert_eq!(message, heartbeat);
//! assert!(len < MAX_FRAME_LEN);
//! # Ok(())
//! # }
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod batch;
#[cfg(feature = "alloc")]
pub mod deflate;
pub mod error;
pub mod frame;
#[cfg(feature = "std")]
pub mod identity;
pub mod io;
pub mod limits;
pub mod message;
pub mod topic;
pub mod types;

pub use batch::AlertBatch;
#[cfg(feature = "alloc")]
pub use deflate::{
    encode_body_frame_to_vec, encode_frame_compressed_to_vec, open_frame_owned, OpenedFrame,
    DEFAULT_DEFLATE_LEVEL,
};
pub use error::{Error, ReadError, TooLong};
#[cfg(feature = "alloc")]
pub use frame::encode_frame_to_vec;
pub use frame::{
    encode_frame, Frame, FrameHeader, DEVICE_ID_LEN, FLAG_DEFLATE, HEADER_LEN, MAGIC,
    MIN_FRAME_LEN, PROTOCOL_VERSION, SIGNATURE_CONTEXT, SIGNATURE_LEN,
};
pub use limits::*;
pub use message::{
    Alert, BundleAck, BundleAnnounce, BundleChunk, BundleState, Command, CommandAction,
    CommandReply, CommandStatus, Direction, EnrollRejection, EnrollRequest, EnrollResponse, Event,
    Field, Fields, FileAction, FileEvent, Heartbeat, Message, MessageKind, ModuleState,
    ModuleStatus, NetworkEvent, ProcessEvent, Signer, Transport,
};
pub use types::{
    AlertId, BoundedBytes, BoundedStr, CommandId, DeviceId, IpAddr, Level, ParseIdError,
    TechniqueId, TechniqueIdError,
};

// The crates in the public API, so users need not pin matching versions.
pub use ed25519_dalek;
pub use embedded_io;
pub use heapless;
