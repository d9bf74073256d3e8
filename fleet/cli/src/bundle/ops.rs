//! `keygen`, `root init|sign|rotate|verify`, `bundle sign|verify`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use picket_bundle::ed25519_dalek::{SigningKey, VerifyingKey};
use picket_bundle::keys::{self, hex};
use picket_bundle::{KeyId, RootMetadata, SignedBundle, SignedRoot, TrustStore};
use serde::Serialize;

use super::BundleCmdError;

/// A new key pair.
#[derive(Debug, Clone, Serialize)]
pub struct KeygenReport {
    /// The secret key file.
    pub secret_key: PathBuf,
    /// The public key file.
    pub public_key: PathBuf,
    /// The key id.
    pub key_id: String,
}

/// Writes a new secret key to `out` (0600) and its public key to `out.pub`.
///
/// # Errors
/// When either file exists or cannot be written.
pub fn keygen(out: &Path) -> Result<KeygenReport, BundleCmdError> {
    let key = keys::generate_key()?;
    keys::write_key_pair(out, &key)?;
    Ok(KeygenReport {
        secret_key: out.to_owned(),
        public_key: keys::public_key_path(out),
        key_id: KeyId::of(&key.verifying_key()).to_string(),
    })
}

/// Root metadata from the command line.
#[derive(Debug, Clone)]
pub struct RootConfig {
    /// Secret root keys: listed in the root AND signing it now.
    pub keys: Vec<PathBuf>,
    /// Public root keys that will sign later (`root sign`).
    pub root_pubs: Vec<PathBuf>,
    /// Root threshold.
    pub threshold: u32,
    /// Public bundle keys.
    pub bundle_keys: Vec<PathBuf>,
    /// Bundle threshold.
    pub bundle_threshold: u32,
    /// Revoked key ids (hex).
    pub revoked: Vec<KeyId>,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// Output file.
    pub out: PathBuf,
}

/// A root written or checked.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    /// The root file.
    pub path: PathBuf,
    /// Root version.
    pub version: u64,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// Root key ids.
    pub root_keys: Vec<String>,
    /// Root threshold.
    pub root_threshold: u32,
    /// Bundle key ids.
    pub bundle_keys: Vec<String>,
    /// Bundle threshold.
    pub bundle_threshold: u32,
    /// Revoked key ids.
    pub revoked: Vec<String>,
    /// Key ids that signed the file (signatures not checked here, except by
    /// `root verify`).
    pub signed_by: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleCmdError + '_ {
    move |source| BundleCmdError::Io {
        path: path.to_owned(),
        source,
    }
}

fn format_err(path: &Path) -> impl FnOnce(picket_bundle::FormatError) -> BundleCmdError + '_ {
    move |source| BundleCmdError::Format {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BundleCmdError> {
    std::fs::read(path).map_err(io_err(path))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BundleCmdError> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// Reads a signed root file.
///
/// # Errors
/// I/O and format errors.
pub fn read_root(path: &Path) -> Result<SignedRoot, BundleCmdError> {
    SignedRoot::decode(&read(path)?).map_err(format_err(path))
}

fn read_bundle(path: &Path) -> Result<SignedBundle, BundleCmdError> {
    SignedBundle::decode(&read(path)?).map_err(format_err(path))
}

/// Reads secret key files (`picketctl keygen`).
///
/// # Errors
/// A file that cannot be read or is not a key.
pub fn read_secret_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, BundleCmdError> {
    secret_keys(paths)
}

fn secret_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, BundleCmdError> {
    paths
        .iter()
        .map(|p| keys::read_secret_key(p).map_err(Into::into))
        .collect()
}

fn public_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, BundleCmdError> {
    paths
        .iter()
        .map(|p| keys::read_public_key(p).map_err(Into::into))
        .collect()
}

fn ids(keys: &[KeyId]) -> Vec<String> {
    keys.iter().map(ToString::to_string).collect()
}

fn report(path: &Path, root: &SignedRoot) -> Result<RootReport, BundleCmdError> {
    let m = root.metadata().map_err(format_err(path))?;
    Ok(RootReport {
        path: path.to_owned(),
        version: m.version,
        expires_unix: m.expires_unix,
        root_keys: ids(&m.root_key_ids()),
        root_threshold: m.root_threshold,
        bundle_keys: ids(&m.bundle_key_ids()),
        bundle_threshold: m.bundle_threshold,
        revoked: m.revoked.iter().map(ToString::to_string).collect(),
        signed_by: root
            .signatures
            .iter()
            .map(|s| s.key_id.to_string())
            .collect(),
    })
}

fn metadata(
    config: &RootConfig,
    version: u64,
) -> Result<(RootMetadata, Vec<SigningKey>), BundleCmdError> {
    let signers = secret_keys(&config.keys)?;
    let mut root_keys: Vec<VerifyingKey> = signers.iter().map(SigningKey::verifying_key).collect();
    root_keys.extend(public_keys(&config.root_pubs)?);
    root_keys.sort_by_key(KeyId::of);
    root_keys.dedup();
    let mut bundle_keys = public_keys(&config.bundle_keys)?;
    bundle_keys.sort_by_key(KeyId::of);
    bundle_keys.dedup();
    let meta = RootMetadata {
        version,
        expires_unix: config.expires_unix,
        root_keys,
        root_threshold: config.threshold,
        bundle_keys,
        bundle_threshold: config.bundle_threshold,
        revoked: config.revoked.iter().copied().collect::<BTreeSet<_>>(),
    };
    Ok((meta, signers))
}

/// Writes root metadata version 1, signed by every `--key`.
///
/// # Errors
/// Key, format and I/O errors.
pub fn root_init(config: &RootConfig) -> Result<RootReport, BundleCmdError> {
    let (meta, signers) = metadata(config, 1)?;
    let mut root = SignedRoot::new(&meta).map_err(format_err(&config.out))?;
    for key in &signers {
        root.sign(key);
    }
    write(&config.out, &root.encode())?;
    report(&config.out, &root)
}

/// Writes root metadata version `old + 1`, signed by every `--key` (new
/// root keys) and every `old_keys` (current root keys).
///
/// # Errors
/// Key, format and I/O errors.
pub fn root_rotate(
    old: &Path,
    old_keys: &[PathBuf],
    config: &RootConfig,
) -> Result<RootReport, BundleCmdError> {
    let current = read_root(old)?.metadata().map_err(format_err(old))?;
    let version = current
        .version
        .checked_add(1)
        .ok_or_else(|| BundleCmdError::Usage("root version overflow".into()))?;
    let (meta, signers) = metadata(config, version)?;
    let mut root = SignedRoot::new(&meta).map_err(format_err(&config.out))?;
    for key in signers.iter().chain(&secret_keys(old_keys)?) {
        root.sign(key);
    }
    write(&config.out, &root.encode())?;
    report(&config.out, &root)
}

/// Adds signatures to a root file.
///
/// # Errors
/// Key, format and I/O errors.
pub fn root_sign(keys: &[PathBuf], input: &Path, out: &Path) -> Result<RootReport, BundleCmdError> {
    let mut root = read_root(input)?;
    for key in secret_keys(keys)? {
        root.sign(&key);
    }
    write(out, &root.encode())?;
    report(out, &root)
}

/// Checks that `trusted` is signed by its threshold and that each of
/// `updates`, in order, is a valid rotation from the one before.
///
/// # Errors
/// [`BundleCmdError::Refused`] naming the file and the reason.
pub fn root_verify(
    trusted: &Path,
    updates: &[PathBuf],
    now_unix: u64,
) -> Result<RootReport, BundleCmdError> {
    let store = trust_store(trusted, updates, None, now_unix)?;
    let last = updates.last().map_or(trusted, PathBuf::as_path);
    report(last, store.signed_root())
}

fn trust_store(
    trusted: &Path,
    updates: &[PathBuf],
    running: Option<u64>,
    now_unix: u64,
) -> Result<TrustStore, BundleCmdError> {
    let mut store = TrustStore::new(read_root(trusted)?, running).map_err(|source| {
        BundleCmdError::Refused {
            path: trusted.to_owned(),
            source,
        }
    })?;
    for path in updates {
        store
            .rotate_root(&read_root(path)?, now_unix)
            .map_err(|source| BundleCmdError::Refused {
                path: path.clone(),
                source,
            })?;
    }
    Ok(store)
}

/// Signatures on a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct SignReport {
    /// The signed file.
    pub out: PathBuf,
    /// Bundle version.
    pub version: u64,
    /// Key ids of all signatures now on the bundle.
    pub signed_by: Vec<String>,
}

/// Adds a signature by each key to a bundle.
///
/// # Errors
/// Key, format and I/O errors.
pub fn sign_bundle(
    keys: &[PathBuf],
    input: &Path,
    out: &Path,
) -> Result<SignReport, BundleCmdError> {
    let mut bundle = read_bundle(input)?;
    let manifest = bundle.unverified_manifest().map_err(format_err(input))?;
    for key in secret_keys(keys)? {
        bundle.sign(&key);
    }
    write(out, &bundle.encode())?;
    Ok(SignReport {
        out: out.to_owned(),
        version: manifest.version,
        signed_by: bundle
            .signatures
            .iter()
            .map(|s| s.key_id.to_string())
            .collect(),
    })
}

/// What to verify a bundle against.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The trusted root.
    pub root: PathBuf,
    /// Root rotations to apply first, in order.
    pub root_updates: Vec<PathBuf>,
    /// The bundle file.
    pub input: PathBuf,
    /// The device (and its groups) to check the targets for; `None`: any.
    pub device: Option<(String, Vec<String>)>,
    /// The version the device runs.
    pub running_version: Option<u64>,
    /// The time to check expiry at.
    pub now_unix: u64,
}

/// A bundle that passed.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The bundle file.
    pub path: PathBuf,
    /// Bundle version.
    pub version: u64,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// Targets.
    pub targets: Vec<String>,
    /// Rule files.
    pub files: usize,
    /// SHA-256 of the payload, hex.
    pub content_hash: String,
    /// Keys whose signatures counted.
    pub signers: Vec<String>,
    /// Root version verified against.
    pub root_version: u64,
}

/// Runs the device's checks on a bundle.
///
/// # Errors
/// [`BundleCmdError::Refused`] with the specific reason.
pub fn verify_bundle(config: &VerifyConfig) -> Result<VerifyReport, BundleCmdError> {
    let store = trust_store(
        &config.root,
        &config.root_updates,
        config.running_version,
        config.now_unix,
    )?;
    let bundle = read_bundle(&config.input).map_err(|e| match e {
        BundleCmdError::Format { path, source } => BundleCmdError::Refused {
            path,
            source: source.into(),
        },
        other => other,
    })?;
    let result = match &config.device {
        Some((id, groups)) => {
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            store.verify(&bundle, config.now_unix, id, &groups)
        }
        None => store.verify_any_target(&bundle, config.now_unix),
    };
    let verified = result.map_err(|source| BundleCmdError::Refused {
        path: config.input.clone(),
        source,
    })?;
    let m = verified.manifest();
    Ok(VerifyReport {
        path: config.input.clone(),
        version: m.version,
        expires_unix: m.expires_unix,
        targets: m.targets.iter().map(ToString::to_string).collect(),
        files: verified.files().len(),
        content_hash: hex(&m.content_hash),
        signers: ids(verified.signers()),
        root_version: store.root().version,
    })
}
