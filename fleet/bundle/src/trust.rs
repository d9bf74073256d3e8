//! The device side: a trusted root, the running bundle version, and the
//! checks of docs/BUNDLES.md §5 and §6. Sans-IO: the caller passes the
//! time and persists [`TrustStore::signed_root`] and
//! [`TrustStore::running_version`].

use std::collections::BTreeMap;

use crate::bundle::{decode_payload, sha256, Bundle, Manifest, Settings, SignedBundle};
use crate::error::BundleError;
use crate::keys::{self, hex, KeyId, BUNDLE_CONTEXT};
use crate::root::{RootMetadata, SignedRoot};

/// What a device trusts: a verified root and the version of the bundle it
/// runs. Every method that refuses leaves it unchanged.
#[derive(Debug, Clone)]
pub struct TrustStore {
    root: SignedRoot,
    metadata: RootMetadata,
    running_version: Option<u64>,
}

/// A bundle that passed every check, and who signed it. Only
/// [`TrustStore::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    bundle: Bundle,
    signers: Vec<KeyId>,
}

impl VerifiedBundle {
    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.bundle.manifest
    }

    /// The rule files.
    #[must_use]
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.bundle.files
    }

    /// The engine settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.bundle.settings
    }

    /// The bundle keys whose signatures counted, sorted.
    #[must_use]
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// The whole bundle.
    #[must_use]
    pub fn into_bundle(self) -> Bundle {
        self.bundle
    }
}

impl TrustStore {
    /// A store trusting `root` (shipped with the firmware, or loaded from
    /// where the device persisted it), which must be signed by a threshold
    /// of its own root keys. Its expiry is not checked here: an expired
    /// root can still be rotated, it only stops bundles (§5 step 5).
    ///
    /// # Errors
    /// [`BundleError::Malformed`], [`BundleError::RootNotSelfSigned`].
    pub fn new(root: SignedRoot, running_version: Option<u64>) -> Result<Self, BundleError> {
        let metadata = root.metadata()?;
        check_self_signed(&root, &metadata)?;
        Ok(TrustStore {
            root,
            metadata,
            running_version,
        })
    }

    /// The trusted root metadata.
    #[must_use]
    pub fn root(&self) -> &RootMetadata {
        &self.metadata
    }

    /// The trusted signed root, as the device persists it.
    #[must_use]
    pub fn signed_root(&self) -> &SignedRoot {
        &self.root
    }

    /// The version of the bundle the device runs, if any.
    #[must_use]
    pub fn running_version(&self) -> Option<u64> {
        self.running_version
    }

    /// Checks a bundle for this device, in the order of docs/BUNDLES.md §5;
    /// the first failing check decides the error.
    ///
    /// # Errors
    /// One [`BundleError`] variant per reason to refuse.
    pub fn verify(
        &self,
        signed: &SignedBundle,
        now_unix: u64,
        device_id: &str,
        groups: &[&str],
    ) -> Result<VerifiedBundle, BundleError> {
        self.verify_inner(signed, now_unix, Some((device_id, groups)))
    }

    /// [`TrustStore::verify`] without the target check, for operator tools
    /// that check a bundle for the whole fleet. Devices use `verify`.
    ///
    /// # Errors
    /// As [`TrustStore::verify`], except [`BundleError::NotTargeted`].
    pub fn verify_any_target(
        &self,
        signed: &SignedBundle,
        now_unix: u64,
    ) -> Result<VerifiedBundle, BundleError> {
        self.verify_inner(signed, now_unix, None)
    }

    fn verify_inner(
        &self,
        signed: &SignedBundle,
        now_unix: u64,
        device: Option<(&str, &[&str])>,
    ) -> Result<VerifiedBundle, BundleError> {
        let signers = self.check_signatures(signed)?;
        let manifest = Manifest::decode(&signed.manifest_bytes)?;
        if now_unix >= self.metadata.expires_unix {
            return Err(BundleError::RootExpired {
                root_version: self.metadata.version,
                expires_unix: self.metadata.expires_unix,
                now_unix,
            });
        }
        if now_unix >= manifest.expires_unix {
            return Err(BundleError::Expired {
                version: manifest.version,
                expires_unix: manifest.expires_unix,
                now_unix,
            });
        }
        if let Some(running) = self.running_version {
            if manifest.version <= running {
                return Err(BundleError::Rollback {
                    version: manifest.version,
                    running,
                });
            }
        }
        if let Some((device_id, groups)) = device {
            if !manifest.targets_device(device_id, groups) {
                return Err(BundleError::NotTargeted {
                    version: manifest.version,
                    device_id: device_id.to_owned(),
                });
            }
        }
        let actual_len = signed.payload_bytes.len() as u64;
        if actual_len != manifest.content_len {
            return Err(BundleError::ContentLengthMismatch {
                expected: manifest.content_len,
                actual: actual_len,
            });
        }
        let actual = sha256(&signed.payload_bytes);
        if actual != manifest.content_hash {
            return Err(BundleError::ContentHashMismatch {
                expected: hex(&manifest.content_hash),
                actual: hex(&actual),
            });
        }
        let (settings, files) = decode_payload(&signed.payload_bytes)?;
        Ok(VerifiedBundle {
            bundle: Bundle {
                manifest,
                files,
                settings,
            },
            signers,
        })
    }

    /// §5 steps 2–4: the signature checks.
    fn check_signatures(&self, signed: &SignedBundle) -> Result<Vec<KeyId>, BundleError> {
        if signed.signatures.is_empty() {
            return Err(BundleError::Unsigned);
        }
        if let Some(s) = signed
            .signatures
            .iter()
            .find(|s| self.metadata.revoked.contains(&s.key_id))
        {
            return Err(BundleError::RevokedKey { key_id: s.key_id });
        }
        let mut valid = std::collections::BTreeSet::new();
        let mut unknown = None;
        for sig in &signed.signatures {
            let Some(key) = self
                .metadata
                .bundle_keys
                .iter()
                .find(|k| KeyId::of(k) == sig.key_id)
            else {
                unknown = unknown.or(Some(sig.key_id));
                continue;
            };
            if !keys::verify(key, BUNDLE_CONTEXT, &signed.manifest_bytes, &sig.signature) {
                return Err(BundleError::BadSignature { key_id: sig.key_id });
            }
            valid.insert(sig.key_id);
        }
        let threshold = self.metadata.bundle_threshold as usize;
        if valid.len() >= threshold {
            return Ok(valid.into_iter().collect());
        }
        match unknown {
            Some(key_id) => Err(BundleError::UnknownKey {
                key_id,
                valid: valid.len(),
                threshold,
            }),
            None => Err(BundleError::BelowThreshold {
                valid: valid.len(),
                threshold,
            }),
        }
    }

    /// Records that the device now runs `bundle` (after installing it), so
    /// that it and older bundles are refused from now on. Never lowers the
    /// running version.
    pub fn record_installed(&mut self, bundle: &VerifiedBundle) {
        let v = bundle.manifest().version;
        self.running_version = Some(self.running_version.map_or(v, |r| r.max(v)));
    }

    /// Replaces the trusted root with `new` (§6): its version must be the
    /// current one + 1, and it must be signed by a threshold of the current
    /// root keys and a threshold of its own root keys, and not be expired.
    /// A device that missed rotations applies each one in order.
    ///
    /// # Errors
    /// [`BundleError::Malformed`], [`BundleError::RootVersion`],
    /// [`BundleError::RootNotSignedByOld`], [`BundleError::RootNotSelfSigned`],
    /// [`BundleError::RootExpired`].
    pub fn rotate_root(&mut self, new: &SignedRoot, now_unix: u64) -> Result<(), BundleError> {
        let metadata = new.metadata()?;
        let current = self.metadata.version;
        if current.checked_add(1) != Some(metadata.version) {
            return Err(BundleError::RootVersion {
                current,
                got: metadata.version,
            });
        }
        let old_valid = new
            .valid_signers(&self.metadata.root_keys, &self.metadata.revoked)
            .len();
        let old_threshold = self.metadata.root_threshold as usize;
        if old_valid < old_threshold {
            return Err(BundleError::RootNotSignedByOld {
                valid: old_valid,
                threshold: old_threshold,
            });
        }
        check_self_signed(new, &metadata)?;
        if now_unix >= metadata.expires_unix {
            return Err(BundleError::RootExpired {
                root_version: metadata.version,
                expires_unix: metadata.expires_unix,
                now_unix,
            });
        }
        self.root = new.clone();
        self.metadata = metadata;
        Ok(())
    }
}

fn check_self_signed(root: &SignedRoot, metadata: &RootMetadata) -> Result<(), BundleError> {
    let valid = root
        .valid_signers(&metadata.root_keys, &metadata.revoked)
        .len();
    let threshold = metadata.root_threshold as usize;
    if valid < threshold {
        return Err(BundleError::RootNotSelfSigned {
            version: metadata.version,
            valid,
            threshold,
        });
    }
    Ok(())
}
