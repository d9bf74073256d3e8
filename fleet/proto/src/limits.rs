//! Every bound the protocol puts on a variable-length field.
//!
//! Decoders refuse a value over its bound instead of truncating it, so a peer
//! can never make the other side allocate or copy more than these numbers
//! allow. Encoders get the same bounds from [`BoundedStr::new`](crate::BoundedStr::new)
//! and [`BoundedBytes::new`](crate::BoundedBytes::new). Changing any of them is
//! a protocol change (docs/WIRE.md §Limits).

/// Largest frame, header and signature included (128 KiB).
///
/// The uplink sets its MQTT maximum packet size from this.
pub const MAX_FRAME_LEN: usize = 128 * 1024;
/// Largest postcard-encoded message body inside a frame.
pub const MAX_BODY_LEN: usize =
    MAX_FRAME_LEN - crate::HEADER_LEN - crate::DEVICE_ID_LEN - crate::SIGNATURE_LEN;

/// Alerts in one batch.
pub const MAX_ALERTS_PER_BATCH: usize = 256;
/// Rule id (a Sigma rule's UUID or a local name), bytes.
pub const MAX_RULE_ID_LEN: usize = 64;
/// Rule title, bytes.
pub const MAX_RULE_TITLE_LEN: usize = 256;
/// ATT&CK techniques attached to one alert.
pub const MAX_TECHNIQUES: usize = 8;
/// A file system path (executable, file, working directory), bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// A process command line, bytes. Longer ones are truncated by the sensor
/// with [`BoundedStr::truncated`](crate::BoundedStr::truncated).
pub const MAX_COMMAND_LINE_LEN: usize = 4096;
/// A user or group name, bytes.
pub const MAX_USER_LEN: usize = 64;
/// A DNS host name, bytes (RFC 1035's limit).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Extra key/value fields on one event, and arguments of one command.
pub const MAX_EVENT_FIELDS: usize = 16;
/// Key of an extra field, bytes.
pub const MAX_FIELD_KEY_LEN: usize = 64;
/// Value of an extra field, bytes.
pub const MAX_FIELD_VALUE_LEN: usize = 1024;

/// A version string (agent version), bytes.
pub const MAX_VERSION_LEN: usize = 32;
/// Modules reported in one heartbeat.
pub const MAX_MODULES: usize = 16;
/// A module name, bytes.
pub const MAX_MODULE_NAME_LEN: usize = 32;
/// Human-readable error or status text, bytes.
pub const MAX_ERROR_TEXT_LEN: usize = 512;

/// An enrollment token, bytes.
pub const MAX_TOKEN_LEN: usize = 128;
/// A DER certificate signing request, bytes.
pub const MAX_CSR_LEN: usize = 4096;
/// A DER certificate (device certificate or fleet CA), bytes.
pub const MAX_CERT_LEN: usize = 8192;

/// Data in one rule-bundle chunk, bytes.
pub const MAX_BUNDLE_CHUNK_LEN: usize = 64 * 1024;
/// Name of a custom command, bytes.
pub const MAX_COMMAND_NAME_LEN: usize = 64;
/// Output attached to a command reply, bytes.
pub const MAX_REPLY_OUTPUT_LEN: usize = 16 * 1024;

/// Longest topic this crate builds (`picket/v1/devices/<32 hex>/bundles/announce`).
pub const MAX_TOPIC_LEN: usize = 96;
