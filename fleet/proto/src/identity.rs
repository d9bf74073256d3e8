//! The device identity key on disk (`std` only).
//!
//! The key is an ed25519 key stored as a 48-byte PKCS#8 v1 DER document
//! (RFC 8410), the form rustls accepts, so the same file can later serve as
//! the mTLS client key. Ed25519ph signatures with this crate's context cannot
//! be confused with TLS 1.3 `CertificateVerify` signatures (RFC 8032 §5.1,
//! `dom2` prefix), so sharing the key is safe.
//!
//! The file must be readable by its owner only: [`DeviceIdentity::load`]
//! refuses a file with any group or other permission bit, as ssh does.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::prelude::rust_2021::*;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::DeviceId;

/// RFC 8410 §7 PKCS#8 prefix for an Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const KEY_FILE_LEN: usize = PKCS8_PREFIX.len() + 32;

/// Why the identity could not be created, stored or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("device key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The key file can be read by others than its owner.
    #[error(
        "device key file {p} has mode {mode:03o}; it must be readable by its owner only \
         (chmod 600 {p})",
        p = path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold an Ed25519 PKCS#8 key.
    #[error("device key file {} is not a 48-byte Ed25519 PKCS#8 key", path.display())]
    InvalidKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("no randomness for a new device key: {0}")]
    Random(String),
}

/// A device's signing key and the id derived from it.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    key: SigningKey,
    device_id: DeviceId,
}

impl DeviceIdentity {
    /// A new identity from the operating system's random source.
    ///
    /// # Errors
    /// [`IdentityError::Random`] when randomness is unavailable.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// The identity of an existing key.
    #[must_use]
    pub fn from_signing_key(key: SigningKey) -> Self {
        let device_id = DeviceId::from_public_key(&key.verifying_key());
        Self { key, device_id }
    }

    /// Loads the key at `path`, or on first start generates one and stores it there.
    ///
    /// # Errors
    /// As [`DeviceIdentity::load`] and [`DeviceIdentity::store`].
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                match identity.store(path) {
                    Ok(()) => Ok(identity),
                    // Another process stored one first: use that one.
                    Err(IdentityError::Io { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        Self::load(path)
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Loads the key at `path`.
    ///
    /// # Errors
    /// [`IdentityError::InsecurePermissions`] when group or others may access
    /// the file, [`IdentityError::InvalidKeyFile`] when it is not a key,
    /// [`IdentityError::Io`] when it cannot be read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = fs::read(path).map_err(io_err)?;
        let invalid = || IdentityError::InvalidKeyFile {
            path: path.to_owned(),
        };
        if bytes.len() != KEY_FILE_LEN || bytes[..PKCS8_PREFIX.len()] != PKCS8_PREFIX {
            return Err(invalid());
        }
        let seed: [u8; 32] = bytes[PKCS8_PREFIX.len()..]
            .try_into()
            .map_err(|_| invalid())?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// Stores the key at `path` with mode 0600, atomically: the file appears
    /// complete or not at all, and an existing file is never replaced.
    ///
    /// # Errors
    /// [`IdentityError::Io`]; its kind is `AlreadyExists` when `path` exists.
    pub fn store(&self, path: &Path) -> Result<(), IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&PKCS8_PREFIX)?;
            file.write_all(self.key.as_bytes())?;
            file.sync_all()?;
            // A hard link, not a rename: it fails instead of replacing a key
            // another process stored meanwhile.
            fs::hard_link(&tmp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        let _ = fs::remove_file(&tmp);
        result.map_err(io_err)
    }

    /// The device id.
    #[must_use]
    pub const fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The signing key, for [`encode_frame`](crate::encode_frame).
    #[must_use]
    pub const fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key, for the enrollment request.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}
