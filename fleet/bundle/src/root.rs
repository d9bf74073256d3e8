//! Root metadata: the keys a device trusts (docs/BUNDLES.md §4).

use std::collections::BTreeSet;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::codec::{strictly_sorted, Reader, Writer};
use crate::error::FormatError;
use crate::keys::{self, KeyId, KeySignature, ROOT_CONTEXT};
use crate::{MAX_KEYS, MAX_REVOKED, MAX_ROOT_LEN};

const ROOT_MAGIC: [u8; 4] = *b"PKRM";
const SIGNED_ROOT_MAGIC: [u8; 4] = *b"PKRF";

/// The root of trust: who may sign roots and bundles, and how many of them
/// must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMetadata {
    /// Root version, from 1; each rotation adds exactly 1.
    pub version: u64,
    /// Expiry, Unix seconds: a device accepts no bundle after it until it
    /// installs a newer root.
    pub expires_unix: u64,
    /// Keys that sign root metadata (encoded sorted by key id).
    pub root_keys: Vec<VerifyingKey>,
    /// Distinct root keys that must sign a root.
    pub root_threshold: u32,
    /// Keys that sign bundles (encoded sorted by key id).
    pub bundle_keys: Vec<VerifyingKey>,
    /// Distinct bundle keys that must sign a bundle.
    pub bundle_threshold: u32,
    /// Keys no longer trusted in any role. A bundle signed by one is refused.
    pub revoked: BTreeSet<KeyId>,
}

impl RootMetadata {
    /// The ids of the root keys.
    #[must_use]
    pub fn root_key_ids(&self) -> Vec<KeyId> {
        self.root_keys.iter().map(KeyId::of).collect()
    }

    /// The ids of the bundle keys.
    #[must_use]
    pub fn bundle_key_ids(&self) -> Vec<KeyId> {
        self.bundle_keys.iter().map(KeyId::of).collect()
    }

    fn sorted_keys(keys: &[VerifyingKey]) -> Vec<VerifyingKey> {
        let mut keys = keys.to_vec();
        keys.sort_by_key(KeyId::of);
        keys
    }

    /// The canonical encoding (keys sorted by id).
    ///
    /// # Errors
    /// When the metadata breaks a rule of §4 (see [`RootMetadata::decode`]).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut w = Writer::default();
        w.raw(&ROOT_MAGIC);
        w.u8(crate::FORMAT_VERSION);
        w.u64(self.version);
        w.u64(self.expires_unix);
        for (keys, threshold) in [
            (&self.root_keys, self.root_threshold),
            (&self.bundle_keys, self.bundle_threshold),
        ] {
            if keys.len() > MAX_KEYS {
                return Err(FormatError::TooMany {
                    what: "keys",
                    count: keys.len(),
                    max: MAX_KEYS,
                });
            }
            w.len(keys.len());
            for k in Self::sorted_keys(keys) {
                w.raw(k.as_bytes());
            }
            w.u32(threshold);
        }
        if self.revoked.len() > MAX_REVOKED {
            return Err(FormatError::TooMany {
                what: "revoked keys",
                count: self.revoked.len(),
                max: MAX_REVOKED,
            });
        }
        w.len(self.revoked.len());
        for id in &self.revoked {
            w.raw(&id.0);
        }
        // Decoding our own output enforces every rule in one place.
        Self::decode(&w.buf)?;
        Ok(w.buf)
    }

    /// Decodes and checks root metadata: version ≥ 1; 1 ≤ threshold ≤
    /// keys for both roles; keys sorted by id, distinct, valid points;
    /// no listed key revoked.
    ///
    /// # Errors
    /// Any [`FormatError`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_ROOT_LEN {
            return Err(FormatError::TooLarge {
                what: "root metadata",
                len: bytes.len(),
                max: MAX_ROOT_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        r.header("root metadata", ROOT_MAGIC)?;
        let version = r.u64("root version")?;
        let expires_unix = r.u64("root expiry")?;
        let (root_keys, root_threshold) = read_role(&mut r, "root keys")?;
        let (bundle_keys, bundle_threshold) = read_role(&mut r, "bundle keys")?;
        let n = r.count("revoked keys", MAX_REVOKED)?;
        let mut revoked = Vec::with_capacity(n);
        for _ in 0..n {
            revoked.push(KeyId(r.array("revoked key id")?));
        }
        strictly_sorted(&revoked, "revoked keys")?;
        r.finish("root metadata")?;
        if version == 0 {
            return Err(FormatError::Invalid {
                what: "root version",
                reason: "versions start at 1",
            });
        }
        let revoked: BTreeSet<KeyId> = revoked.into_iter().collect();
        if root_keys
            .iter()
            .chain(&bundle_keys)
            .any(|k| revoked.contains(&KeyId::of(k)))
        {
            return Err(FormatError::Invalid {
                what: "root metadata",
                reason: "a revoked key is listed as a root or bundle key",
            });
        }
        Ok(RootMetadata {
            version,
            expires_unix,
            root_keys,
            root_threshold,
            bundle_keys,
            bundle_threshold,
            revoked,
        })
    }
}

fn read_role(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<(Vec<VerifyingKey>, u32), FormatError> {
    let n = r.count(what, MAX_KEYS)?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(keys::decode_public_key(r, "public key")?);
    }
    let ids: Vec<KeyId> = keys.iter().map(KeyId::of).collect();
    strictly_sorted(&ids, what)?;
    let threshold = r.u32("threshold")?;
    if threshold == 0 || threshold as usize > keys.len() {
        return Err(FormatError::Invalid {
            what,
            reason: "threshold must be between 1 and the number of keys",
        });
    }
    Ok((keys, threshold))
}

/// Root metadata bytes and the root keys' signatures over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRoot {
    /// The encoded [`RootMetadata`]: the signed bytes.
    pub metadata_bytes: Vec<u8>,
    /// Signatures over `metadata_bytes` (Ed25519ph, context `picket/root/v1`).
    pub signatures: Vec<KeySignature>,
}

impl SignedRoot {
    /// Unsigned root metadata.
    ///
    /// # Errors
    /// When the metadata breaks a rule of §4.
    pub fn new(metadata: &RootMetadata) -> Result<Self, FormatError> {
        Ok(SignedRoot {
            metadata_bytes: metadata.encode()?,
            signatures: Vec::new(),
        })
    }

    /// Adds a signature by `key`, replacing an earlier one by the same key.
    pub fn sign(&mut self, key: &SigningKey) {
        keys::add_signature(
            &mut self.signatures,
            key,
            ROOT_CONTEXT,
            &self.metadata_bytes,
        );
    }

    /// The metadata, decoded (signatures not checked).
    ///
    /// # Errors
    /// When the metadata bytes are malformed.
    pub fn metadata(&self) -> Result<RootMetadata, FormatError> {
        RootMetadata::decode(&self.metadata_bytes)
    }

    /// The distinct keys of `keys` with a valid signature (revoked keys
    /// never count).
    pub(crate) fn valid_signers(
        &self,
        keys: &[VerifyingKey],
        revoked: &BTreeSet<KeyId>,
    ) -> BTreeSet<KeyId> {
        keys::valid_signers(
            keys,
            &self.signatures,
            ROOT_CONTEXT,
            &self.metadata_bytes,
            revoked,
        )
    }

    /// The container bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&SIGNED_ROOT_MAGIC);
        w.u8(crate::FORMAT_VERSION);
        w.bytes(&self.metadata_bytes);
        keys::write_signatures(&mut w, &self.signatures);
        w.buf
    }

    /// Decodes the container; the metadata inside must be well-formed too.
    ///
    /// # Errors
    /// Any [`FormatError`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.header("signed root", SIGNED_ROOT_MAGIC)?;
        let metadata_bytes = r.bytes("root metadata", MAX_ROOT_LEN)?.to_vec();
        let signatures = keys::read_signatures(&mut r)?;
        r.finish("signed root")?;
        RootMetadata::decode(&metadata_bytes)?;
        Ok(SignedRoot {
            metadata_bytes,
            signatures,
        })
    }
}
