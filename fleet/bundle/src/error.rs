//! Errors. [`FormatError`] says why bytes are not a well-formed container
//! (or why a bundle being built would not be one); [`BundleError`] says why
//! a device refuses a bundle or a root update; [`KeyError`] covers key
//! files. Each refusal of docs/BUNDLES.md §5 has its own variant.

use std::path::PathBuf;

use crate::KeyId;

/// Bytes that break a rule of the format (docs/BUNDLES.md §2–§3), or a
/// bundle or root that would. Small and never boxed: decoders return it on
/// arbitrary input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ends inside `what`.
    #[error("truncated {what}")]
    Truncated {
        /// The part being read.
        what: &'static str,
    },
    /// The container does not start with its magic number.
    #[error("{what}: bad magic number (not a Picket {what})")]
    BadMagic {
        /// The container.
        what: &'static str,
    },
    /// A format version this build does not know.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// The container.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A byte string (a file, a name, a whole section) is over its limit.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The item.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many items of one kind.
    #[error("{count} {what}, over the limit of {max}")]
    TooMany {
        /// The kind of item.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Text that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The item.
        what: &'static str,
    },
    /// An enum tag with no meaning.
    #[error("{what}: invalid tag {tag}")]
    InvalidTag {
        /// The item.
        what: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// Bytes after the end of a container.
    #[error("{len} trailing bytes after the {what}")]
    TrailingBytes {
        /// The container.
        what: &'static str,
        /// How many bytes are left.
        len: usize,
    },
    /// Items out of canonical order, or duplicated.
    #[error("{what} are not in canonical order (sorted, no duplicates)")]
    NotCanonical {
        /// The items.
        what: &'static str,
    },
    /// A file path a device must not write (absolute, `..`, empty part, ...).
    #[error("bad file path {path:?}: {reason}")]
    BadPath {
        /// The path (lossy if it was not UTF-8).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value out of its range (a threshold of 0, more than the keys, ...).
    #[error("{what}: {reason}")]
    Invalid {
        /// The item.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a bundle or a root update was refused. The trust state is unchanged
/// after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bytes are not a well-formed container.
    #[error("malformed: {0}")]
    Malformed(#[from] FormatError),
    /// The bundle carries no signature.
    #[error("bundle is unsigned")]
    Unsigned,
    /// A signature by a key the root revoked (refused even when enough other
    /// keys signed: a revoked key in use is a sign of compromise).
    #[error("bundle is signed by revoked key {key_id}")]
    RevokedKey {
        /// The revoked key.
        key_id: KeyId,
    },
    /// A signature by a bundle key that does not verify: the manifest was
    /// changed after signing, or the signature was made over other bytes.
    #[error("bad signature by key {key_id} (manifest altered or signed over other bytes)")]
    BadSignature {
        /// The key.
        key_id: KeyId,
    },
    /// Not enough valid signatures, and some were by keys the root does not
    /// list as bundle keys.
    #[error("bundle is signed by unknown key {key_id} ({valid} valid of {threshold} needed)")]
    UnknownKey {
        /// The first unknown key.
        key_id: KeyId,
        /// Distinct bundle keys with a valid signature.
        valid: usize,
        /// Signatures the root requires.
        threshold: usize,
    },
    /// Valid signatures by fewer distinct bundle keys than the threshold.
    #[error("bundle has {valid} valid signature(s), the root requires {threshold}")]
    BelowThreshold {
        /// Distinct bundle keys with a valid signature.
        valid: usize,
        /// Signatures the root requires.
        threshold: usize,
    },
    /// The bundle's expiry time has passed.
    #[error("bundle version {version} expired at {expires_unix} (now {now_unix})")]
    Expired {
        /// The bundle version.
        version: u64,
        /// Its expiry (Unix seconds).
        expires_unix: u64,
        /// The device's time.
        now_unix: u64,
    },
    /// The trusted root metadata has expired: no bundle is accepted until a
    /// new root is installed.
    #[error("root metadata version {root_version} expired at {expires_unix} (now {now_unix})")]
    RootExpired {
        /// The root version.
        root_version: u64,
        /// Its expiry (Unix seconds).
        expires_unix: u64,
        /// The device's time.
        now_unix: u64,
    },
    /// The bundle is not newer than the one the device runs.
    #[error("rollback: bundle version {version} is not newer than running version {running}")]
    Rollback {
        /// The bundle version.
        version: u64,
        /// The running version.
        running: u64,
    },
    /// The bundle's targets include neither all devices, nor one of the
    /// device's groups, nor the device.
    #[error("bundle version {version} does not target device {device_id}")]
    NotTargeted {
        /// The bundle version.
        version: u64,
        /// The device.
        device_id: String,
    },
    /// The payload's length differs from the manifest's.
    #[error("payload is {actual} bytes, the manifest says {expected}")]
    ContentLengthMismatch {
        /// The manifest's length.
        expected: u64,
        /// The payload's length.
        actual: u64,
    },
    /// The payload's SHA-256 differs from the manifest's content hash.
    #[error("content hash mismatch: manifest says {expected}, payload hashes to {actual}")]
    ContentHashMismatch {
        /// The manifest's hash (hex).
        expected: String,
        /// The payload's hash (hex).
        actual: String,
    },
    /// A root whose version is not exactly the trusted version + 1.
    #[error("root version {got} cannot follow trusted version {current} (must be {current} + 1)")]
    RootVersion {
        /// The trusted root's version.
        current: u64,
        /// The new root's version.
        got: u64,
    },
    /// A new root not signed by a threshold of the current root's keys.
    #[error("new root is signed by {valid} of the current root keys, {threshold} required")]
    RootNotSignedByOld {
        /// Distinct current root keys with a valid signature.
        valid: usize,
        /// The current root threshold.
        threshold: usize,
    },
    /// A root not signed by a threshold of its own keys (a new root in a
    /// rotation, or the initial root of a trust store).
    #[error("root version {version} is signed by {valid} of its own keys, {threshold} required")]
    RootNotSelfSigned {
        /// The root's version.
        version: u64,
        /// Distinct keys of its own with a valid signature.
        valid: usize,
        /// Its threshold.
        threshold: usize,
    },
}

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret key file that others than its owner may access.
    #[error(
        "secret key file {p} has mode {mode:03o}; it must be accessible by its owner only \
         (chmod 600 {p})",
        p = path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key in the expected form.
    #[error("{} is not {expected}", path.display())]
    InvalidKeyFile {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// The operating system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}
