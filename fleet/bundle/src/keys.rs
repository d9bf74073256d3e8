//! Key ids, the two signature contexts, and key files.
//!
//! A secret key file is the 48-byte PKCS#8 v1 DER form of RFC 8410 (the
//! same form as the device identity key of `picket-proto`, readable by
//! `openssl pkey -inform DER`), mode 0600; its public key file (`FILE.pub`)
//! is the 32-byte public key as 64 lowercase hex digits and a newline.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Digest as _, Sha512, Signature, SigningKey, VerifyingKey};
use sha2::Sha256;

use crate::codec::{Reader, Writer};
use crate::error::{FormatError, KeyError};
use crate::MAX_SIGNATURES;

/// RFC 8032 Ed25519ph context of bundle signatures (over the manifest bytes).
pub const BUNDLE_CONTEXT: &[u8] = b"picket/bundle/v1";
/// RFC 8032 Ed25519ph context of root signatures (over the root metadata
/// bytes). Distinct from [`BUNDLE_CONTEXT`], so a signature made for one
/// role can never be replayed in the other, even by a key holding both.
pub const ROOT_CONTEXT: &[u8] = b"picket/root/v1";

/// RFC 8410 §7 PKCS#8 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A key's id: the first 16 bytes of SHA-256 of its 32-byte public key,
/// written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The id of a public key.
    #[must_use]
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = unhex(s).ok_or(FormatError::Invalid {
            what: "key id",
            reason: "not 32 hex digits",
        })?;
        let id = bytes.try_into().map_err(|_| FormatError::Invalid {
            what: "key id",
            reason: "not 32 hex digits",
        })?;
        Ok(KeyId(id))
    }
}

/// One signature and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    /// The signer.
    pub key_id: KeyId,
    /// The Ed25519ph signature.
    pub signature: Signature,
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

pub(crate) fn sign(key: &SigningKey, context: &[u8], message: &[u8]) -> KeySignature {
    // Ed25519ph only fails for a context over 255 bytes; both are constants.
    let signature = key
        .sign_prehashed(Sha512::new().chain_update(message), Some(context))
        .unwrap_or_else(|_| Signature::from_bytes(&[0; 64]));
    KeySignature {
        key_id: KeyId::of(&key.verifying_key()),
        signature,
    }
}

pub(crate) fn verify(
    key: &VerifyingKey,
    context: &[u8],
    message: &[u8],
    signature: &Signature,
) -> bool {
    key.verify_prehashed_strict(
        Sha512::new().chain_update(message),
        Some(context),
        signature,
    )
    .is_ok()
}

/// Adds `key`'s signature, replacing an earlier one by the same key.
pub(crate) fn add_signature(
    sigs: &mut Vec<KeySignature>,
    key: &SigningKey,
    context: &[u8],
    message: &[u8],
) {
    let sig = sign(key, context, message);
    sigs.retain(|s| s.key_id != sig.key_id);
    sigs.push(sig);
    sigs.sort_by_key(|s| s.key_id);
}

/// The distinct keys of `keys` whose signature in `sigs` verifies. A key
/// that signed twice counts once.
pub(crate) fn valid_signers(
    keys: &[VerifyingKey],
    sigs: &[KeySignature],
    context: &[u8],
    message: &[u8],
    revoked: &BTreeSet<KeyId>,
) -> BTreeSet<KeyId> {
    let mut valid = BTreeSet::new();
    for sig in sigs {
        if revoked.contains(&sig.key_id) || valid.contains(&sig.key_id) {
            continue;
        }
        if let Some(key) = keys.iter().find(|k| KeyId::of(k) == sig.key_id) {
            if verify(key, context, message, &sig.signature) {
                valid.insert(sig.key_id);
            }
        }
    }
    valid
}

pub(crate) fn write_signatures(w: &mut Writer, sigs: &[KeySignature]) {
    w.len(sigs.len());
    for s in sigs {
        w.raw(&s.key_id.0);
        w.raw(&s.signature.to_bytes());
    }
}

pub(crate) fn read_signatures(r: &mut Reader<'_>) -> Result<Vec<KeySignature>, FormatError> {
    let n = r.count("signatures", MAX_SIGNATURES)?;
    let mut sigs = Vec::with_capacity(n);
    for _ in 0..n {
        let key_id = KeyId(r.array("signature key id")?);
        let signature = Signature::from_bytes(&r.array("signature")?);
        sigs.push(KeySignature { key_id, signature });
    }
    Ok(sigs)
}

pub(crate) fn decode_public_key(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<VerifyingKey, FormatError> {
    VerifyingKey::from_bytes(&r.array(what)?).map_err(|_| FormatError::Invalid {
        what,
        reason: "not an Ed25519 public key",
    })
}

/// A new secret key from the operating system's random source.
///
/// # Errors
/// [`KeyError::Random`] when no randomness is available.
pub fn generate_key() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to `path` (mode 0600, PKCS#8) and its public key to
/// `path.pub`. Neither file may exist already: keys are never overwritten.
///
/// # Errors
/// [`KeyError::Io`]; its kind is `AlreadyExists` when a file exists.
pub fn write_key_pair(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let pub_path = public_key_path(path);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    if pub_path.exists() {
        return Err(io(&pub_path)(std::io::ErrorKind::AlreadyExists.into()));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(&PKCS8_PREFIX).map_err(io(path))?;
    file.write_all(key.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    let text = format!("{}\n", hex(key.verifying_key().as_bytes()));
    let mut pub_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&pub_path)
        .map_err(io(&pub_path))?;
    pub_file.write_all(text.as_bytes()).map_err(io(&pub_path))?;
    Ok(())
}

/// `path` with `.pub` appended.
#[must_use]
pub fn public_key_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

/// Reads a secret key file; refuses one that group or others may access.
///
/// # Errors
/// [`KeyError::InsecurePermissions`], [`KeyError::InvalidKeyFile`], [`KeyError::Io`].
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(io)?;
    let seed = bytes
        .strip_prefix(&PKCS8_PREFIX)
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| KeyError::InvalidKeyFile {
            path: path.to_owned(),
            expected: "a 48-byte Ed25519 PKCS#8 secret key",
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key file (64 hex digits).
///
/// # Errors
/// [`KeyError::InvalidKeyFile`], [`KeyError::Io`].
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    unhex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| KeyError::InvalidKeyFile {
            path: path.to_owned(),
            expected: "an Ed25519 public key (64 hex digits)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_round_trips_through_text() {
        let key = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let id = KeyId::of(&key);
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("zz".parse::<KeyId>().is_err());
    }

    #[test]
    fn contexts_separate_roles() {
        let key = SigningKey::from_bytes(&[2; 32]);
        let sig = sign(&key, BUNDLE_CONTEXT, b"m");
        assert!(verify(
            &key.verifying_key(),
            BUNDLE_CONTEXT,
            b"m",
            &sig.signature
        ));
        assert!(!verify(
            &key.verifying_key(),
            ROOT_CONTEXT,
            b"m",
            &sig.signature
        ));
        assert!(!verify(
            &key.verifying_key(),
            BUNDLE_CONTEXT,
            b"n",
            &sig.signature
        ));
    }

    #[test]
    fn key_files_round_trip_and_refuse_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate_key().unwrap();
        write_key_pair(&path, &key).unwrap();
        assert_eq!(read_secret_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(
            read_public_key(&public_key_path(&path)).unwrap(),
            key.verifying_key()
        );
        assert!(matches!(
            write_key_pair(&path, &key),
            Err(KeyError::Io { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret_key(&path),
            Err(KeyError::InsecurePermissions { mode: 0o644, .. })
        ));
        assert!(matches!(
            read_public_key(&path),
            Err(KeyError::InvalidKeyFile { .. } | KeyError::Io { .. })
        ));
    }
}
