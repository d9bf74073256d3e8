//! Signed rule bundles: the format, the TUF-style root of trust, and the
//! checks a device runs before it installs a bundle. The specification is
//! `docs/BUNDLES.md`; section numbers below refer to it.
//!
//! # Architecture
//!
//! ```text
//!  operator (picketctl)                              device
//!  ───────────────────                               ──────
//!  rules/*.yml + settings ─► Bundle::seal            TrustStore { SignedRoot (verified),
//!     payload = PKBP(settings, files) (canonical)                 running_version }
//!     manifest = PKBM(version, times, targets,              │
//!                     content_len, SHA-256(payload))        │ verify(signed, now, device, groups)
//!  SignedBundle::sign ×k  (Ed25519ph over manifest,         ▼
//!     context "picket/bundle/v1")              1 signatures: unsigned / revoked / bad /
//!  .pbundle = PKBF(manifest, payload, sigs) ──►  unknown / below threshold (§5)
//!                                              2 manifest: root expiry, bundle expiry,
//!  root keys (k-of-n) sign RootMetadata          rollback, targets
//!     (root keys + threshold, bundle keys +    3 payload: length, SHA-256, decode
//!      threshold, revoked ids, version, expiry)   ▼
//!  .proot = PKRF(metadata, sigs) ──────────────► VerifiedBundle ─► install ─► record_installed
//!                                              rotate_root(new): version + 1, signed by
//!                                              k old root keys AND k' new root keys (§6)
//! ```
//!
//! The signatures cover the manifest only; the manifest binds the payload
//! by its length and SHA-256 (as TUF targets metadata binds target files).
//! So a changed manifest is a [`BundleError::BadSignature`] and a changed
//! payload a [`BundleError::ContentHashMismatch`] (or length mismatch):
//! the two never blur. Decoders accept exactly one encoding of each value
//! (sorted, no duplicates, no trailing bytes), so the payload bytes are
//! the canonical serialization the hash is taken over.
//!
//! Everything here is sans-IO except the key files in [`keys`]: times are
//! Unix seconds passed in, and the device persists
//! [`TrustStore::signed_root`] and [`TrustStore::running_version`] itself.
//!
//! # Example
//!
//! ```
//! use std::collections::{BTreeMap, BTreeSet};
//! use picket_bundle::{
//!     ed25519_dalek::SigningKey, Bundle, BundleError, RootMetadata, Settings, SignedBundle,
//!     SignedRoot, Target, TrustStore,
//! };
//!
//! let root_key = SigningKey::from_bytes(&[1; 32]);
//! let bundle_key = SigningKey::from_bytes(&[2; 32]);
//! let mut root = SignedRoot::new(&RootMetadata {
//!     version: 1,
//!     expires_unix: 2_000_000_000,
//!     root_keys: vec![root_key.verifying_key()],
//!     root_threshold: 1,
//!     bundle_keys: vec![bundle_key.verifying_key()],
//!     bundle_threshold: 1,
//!     revoked: BTreeSet::new(),
//! })?;
//! root.sign(&root_key);
//! let mut store = TrustStore::new(root, None)?;
//!
//! let files = BTreeMap::from([("linux/whoami.yml".to_owned(), b"title: w".to_vec())]);
//! let bundle = Bundle::new(7, 1_700_000_000, 1_900_000_000, vec![Target::All], files,
//!                          Settings::default());
//! let mut signed = bundle.seal()?;
//! signed.sign(&bundle_key);
//! let bytes = signed.encode(); // the .pbundle file
//!
//! let received = SignedBundle::decode(&bytes)?;
//! let verified = store.verify(&received, 1_800_000_000, "dev-1", &["lab"])?;
//! assert_eq!(verified.files().len(), 1);
//! store.record_installed(&verified);
//!
//! // The same bundle again is a rollback.
//! assert!(matches!(
//!     store.verify(&received, 1_800_000_000, "dev-1", &[]),
//!     Err(BundleError::Rollback { version: 7, running: 7 })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bundle;
mod codec;
mod error;
pub mod keys;
mod root;
mod trust;

pub use bundle::{
    decode_payload, Bundle, FieldMappingSetting, Manifest, Settings, SignedBundle, Target,
};
pub use ed25519_dalek;
pub use error::{BundleError, FormatError, KeyError};
pub use keys::{KeyId, KeySignature, BUNDLE_CONTEXT, ROOT_CONTEXT};
pub use root::{RootMetadata, SignedRoot};
pub use trust::{TrustStore, VerifiedBundle};

/// The format version byte of every container (§2).
pub const FORMAT_VERSION: u8 = 1;

/// Largest payload (settings and files, encoded): 16 MiB.
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;
/// Largest single file: 1 MiB.
pub const MAX_FILE_LEN: usize = 1 << 20;
/// Most files in a bundle.
pub const MAX_FILES: usize = 8192;
/// Longest file path, in bytes.
pub const MAX_PATH_LEN: usize = 255;
/// Longest name (target, placeholder, field, logsource selector), in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest placeholder value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most placeholders.
pub const MAX_PLACEHOLDERS: usize = 256;
/// Most values of one placeholder.
pub const MAX_PLACEHOLDER_VALUES: usize = 1024;
/// Most field mappings.
pub const MAX_MAPPINGS: usize = 64;
/// Most fields in one mapping.
pub const MAX_MAPPING_FIELDS: usize = 1024;
/// Most targets.
pub const MAX_TARGETS: usize = 1024;
/// Largest encoded manifest: 64 KiB.
pub const MAX_MANIFEST_LEN: usize = 64 << 10;
/// Most signatures on a bundle or a root.
pub const MAX_SIGNATURES: usize = 32;
/// Most keys in one role of a root.
pub const MAX_KEYS: usize = 32;
/// Most revoked key ids in a root.
pub const MAX_REVOKED: usize = 1024;
/// Largest encoded root metadata: 64 KiB.
pub const MAX_ROOT_LEN: usize = 64 << 10;
