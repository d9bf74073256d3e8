//! The bundle: manifest, payload (settings and files), and the signed
//! container (docs/BUNDLES.md §2–§3).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use crate::codec::{strictly_sorted, Reader, Writer};
use crate::error::FormatError;
use crate::keys::{self, KeySignature, BUNDLE_CONTEXT};
use crate::{
    MAX_FILES, MAX_FILE_LEN, MAX_MANIFEST_LEN, MAX_MAPPINGS, MAX_MAPPING_FIELDS, MAX_NAME_LEN,
    MAX_PATH_LEN, MAX_PAYLOAD_LEN, MAX_PLACEHOLDERS, MAX_PLACEHOLDER_VALUES, MAX_TARGETS,
    MAX_VALUE_LEN,
};

const FILE_MAGIC: [u8; 4] = *b"PKBF";
const MANIFEST_MAGIC: [u8; 4] = *b"PKBM";
const PAYLOAD_MAGIC: [u8; 4] = *b"PKBP";

/// Which devices a bundle is for. Ordered as encoded: `All` < groups < devices.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Every device.
    All,
    /// The devices in a group.
    Group(String),
    /// One device, by id.
    Device(String),
}

impl Target {
    /// Whether a device with this id and these groups is targeted.
    #[must_use]
    pub fn includes(&self, device_id: &str, groups: &[&str]) -> bool {
        match self {
            Target::All => true,
            Target::Group(g) => groups.contains(&g.as_str()),
            Target::Device(d) => d == device_id,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Group(g) => write!(f, "group:{g}"),
            Target::Device(d) => write!(f, "device:{d}"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = FormatError;

    /// `all`, `group:NAME` or `device:ID`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let target = match s.split_once(':') {
            None if s == "all" => Target::All,
            Some(("group", name)) => Target::Group(name.to_owned()),
            Some(("device", id)) => Target::Device(id.to_owned()),
            _ => {
                return Err(FormatError::Invalid {
                    what: "target",
                    reason: "expected all, group:NAME or device:ID",
                })
            }
        };
        check_name(&target, "target")?;
        Ok(target)
    }
}

fn check_name(target: &Target, what: &'static str) -> Result<(), FormatError> {
    match target {
        Target::All => Ok(()),
        Target::Group(n) | Target::Device(n) if n.is_empty() => Err(FormatError::Invalid {
            what,
            reason: "empty name",
        }),
        Target::Group(n) | Target::Device(n) if n.len() > MAX_NAME_LEN => {
            Err(FormatError::TooLarge {
                what,
                len: n.len(),
                max: MAX_NAME_LEN,
            })
        }
        _ => Ok(()),
    }
}

/// What the signatures cover: version, validity, targets, and the length
/// and SHA-256 of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Bundle version; a device only accepts a bundle newer than its own.
    pub version: u64,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// Expiry time, Unix seconds; a device refuses the bundle from then on.
    pub expires_unix: u64,
    /// Which devices the bundle is for (at least one; sorted, no duplicates).
    pub targets: Vec<Target>,
    /// Payload length in bytes.
    pub content_len: u64,
    /// SHA-256 of the payload bytes (the canonical encoding of settings and files).
    pub content_hash: [u8; 32],
}

impl Manifest {
    /// Whether the targets include a device with this id and these groups.
    #[must_use]
    pub fn targets_device(&self, device_id: &str, groups: &[&str]) -> bool {
        self.targets.iter().any(|t| t.includes(device_id, groups))
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&MANIFEST_MAGIC);
        w.u8(crate::FORMAT_VERSION);
        w.u64(self.version);
        w.u64(self.created_unix);
        w.u64(self.expires_unix);
        w.len(self.targets.len());
        for t in &self.targets {
            match t {
                Target::All => w.u8(0),
                Target::Group(g) => {
                    w.u8(1);
                    w.str(g);
                }
                Target::Device(d) => {
                    w.u8(2);
                    w.str(d);
                }
            }
        }
        w.u64(self.content_len);
        w.raw(&self.content_hash);
        w.buf
    }

    /// Decodes and checks manifest bytes.
    ///
    /// # Errors
    /// Any [`FormatError`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(FormatError::TooLarge {
                what: "manifest",
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        r.header("manifest", MANIFEST_MAGIC)?;
        let version = r.u64("manifest version")?;
        let created_unix = r.u64("creation time")?;
        let expires_unix = r.u64("expiry time")?;
        let n = r.count("targets", MAX_TARGETS)?;
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            let target = match r.u8("target")? {
                0 => Target::All,
                1 => Target::Group(r.str("target group", MAX_NAME_LEN)?.to_owned()),
                2 => Target::Device(r.str("target device", MAX_NAME_LEN)?.to_owned()),
                tag => {
                    return Err(FormatError::InvalidTag {
                        what: "target",
                        tag,
                    })
                }
            };
            check_name(&target, "target")?;
            targets.push(target);
        }
        let content_len = r.u64("content length")?;
        let content_hash = r.array("content hash")?;
        r.finish("manifest")?;
        let manifest = Manifest {
            version,
            created_unix,
            expires_unix,
            targets,
            content_len,
            content_hash,
        };
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.targets.is_empty() {
            return Err(FormatError::Invalid {
                what: "targets",
                reason: "a bundle must target at least one device, group or all",
            });
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(FormatError::TooMany {
                what: "targets",
                count: self.targets.len(),
                max: MAX_TARGETS,
            });
        }
        for t in &self.targets {
            check_name(t, "target")?;
        }
        strictly_sorted(&self.targets, "targets")?;
        if self.expires_unix <= self.created_unix {
            return Err(FormatError::Invalid {
                what: "manifest",
                reason: "expiry time is not after creation time",
            });
        }
        Ok(())
    }
}

/// A field mapping for the rules of some logsources (the engine's
/// `FieldMapping`): each selector field that is set must equal the rule's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMappingSetting {
    /// Logsource product, or any.
    pub product: Option<String>,
    /// Logsource category, or any.
    pub category: Option<String>,
    /// Logsource service, or any.
    pub service: Option<String>,
    /// Rule field name → event field name.
    pub fields: BTreeMap<String, String>,
}

/// Engine settings the rules were compiled with, and that the device must
/// compile them with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Values of Sigma `expand` placeholders, by name without `%`.
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Field mappings, applied in order.
    pub field_mappings: Vec<FieldMappingSetting>,
}

/// A bundle's contents and manifest. [`Bundle::seal`] fills in the
/// manifest's content length and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// Rule files: relative `/`-separated path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Engine settings.
    pub settings: Settings,
}

impl Bundle {
    /// A bundle whose content hash [`Bundle::seal`] will fill in.
    #[must_use]
    pub fn new(
        version: u64,
        created_unix: u64,
        expires_unix: u64,
        mut targets: Vec<Target>,
        files: BTreeMap<String, Vec<u8>>,
        settings: Settings,
    ) -> Self {
        targets.sort();
        targets.dedup();
        Bundle {
            manifest: Manifest {
                version,
                created_unix,
                expires_unix,
                targets,
                content_len: 0,
                content_hash: [0; 32],
            },
            files,
            settings,
        }
    }

    /// Encodes the payload, sets the manifest's content length and hash,
    /// and returns the unsigned container. Everything a device would refuse
    /// as malformed is refused here.
    ///
    /// # Errors
    /// A [`FormatError`] naming the limit or rule broken.
    pub fn seal(&self) -> Result<SignedBundle, FormatError> {
        let payload = encode_payload(&self.settings, &self.files)?;
        let mut manifest = self.manifest.clone();
        manifest.content_len = payload.len() as u64;
        manifest.content_hash = sha256(&payload);
        manifest.check()?;
        let manifest_bytes = manifest.encode();
        Manifest::decode(&manifest_bytes)?;
        Ok(SignedBundle {
            manifest_bytes,
            payload_bytes: payload,
            signatures: Vec::new(),
        })
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn check_path(path: &str) -> Result<(), FormatError> {
    let bad = |reason| {
        Err(FormatError::BadPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err(FormatError::TooLarge {
            what: "file path",
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        return bad("backslash or NUL");
    }
    if path.chars().any(char::is_control) {
        return bad("control character");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("empty component"),
            "." | ".." => return bad("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), FormatError> {
    if len > max {
        Err(FormatError::TooLarge { what, len, max })
    } else {
        Ok(())
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), FormatError> {
    if count > max {
        Err(FormatError::TooMany { what, count, max })
    } else {
        Ok(())
    }
}

fn encode_payload(
    settings: &Settings,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, FormatError> {
    // Limits are checked before encoding, so a length never exceeds u32.
    check_count(
        "placeholders",
        settings.placeholders.len(),
        MAX_PLACEHOLDERS,
    )?;
    check_count(
        "field mappings",
        settings.field_mappings.len(),
        MAX_MAPPINGS,
    )?;
    check_count("files", files.len(), MAX_FILES)?;
    let mut total = 0usize;
    for (name, values) in &settings.placeholders {
        check_len("placeholder name", name.len(), MAX_NAME_LEN)?;
        check_count("placeholder values", values.len(), MAX_PLACEHOLDER_VALUES)?;
        for v in values {
            check_len("placeholder value", v.len(), MAX_VALUE_LEN)?;
        }
    }
    for m in &settings.field_mappings {
        check_count("mapped fields", m.fields.len(), MAX_MAPPING_FIELDS)?;
        for s in [&m.product, &m.category, &m.service].into_iter().flatten() {
            check_len("mapping selector", s.len(), MAX_NAME_LEN)?;
        }
        for (k, v) in &m.fields {
            check_len("field name", k.len(), MAX_NAME_LEN)?;
            check_len("field name", v.len(), MAX_NAME_LEN)?;
        }
    }
    for (path, data) in files {
        check_path(path)?;
        check_len("file", data.len(), MAX_FILE_LEN)?;
        total = total.saturating_add(data.len());
        check_len("payload", total, MAX_PAYLOAD_LEN)?;
    }

    let mut w = Writer::default();
    w.raw(&PAYLOAD_MAGIC);
    w.u8(crate::FORMAT_VERSION);
    w.len(settings.placeholders.len());
    for (name, values) in &settings.placeholders {
        w.str(name);
        w.len(values.len());
        for v in values {
            w.str(v);
        }
    }
    w.len(settings.field_mappings.len());
    for m in &settings.field_mappings {
        w.opt_str(m.product.as_deref());
        w.opt_str(m.category.as_deref());
        w.opt_str(m.service.as_deref());
        w.len(m.fields.len());
        for (k, v) in &m.fields {
            w.str(k);
            w.str(v);
        }
    }
    w.len(files.len());
    for (path, data) in files {
        w.str(path);
        w.bytes(data);
    }
    check_len("payload", w.buf.len(), MAX_PAYLOAD_LEN)?;
    // Decoding our own output enforces every remaining rule in one place.
    decode_payload(&w.buf)?;
    Ok(w.buf)
}

/// Decodes and checks payload bytes into settings and files.
///
/// # Errors
/// Any [`FormatError`]; never panics.
pub fn decode_payload(bytes: &[u8]) -> Result<(Settings, BTreeMap<String, Vec<u8>>), FormatError> {
    check_len("payload", bytes.len(), MAX_PAYLOAD_LEN)?;
    let mut r = Reader::new(bytes);
    r.header("payload", PAYLOAD_MAGIC)?;
    let mut settings = Settings::default();
    let n = r.count("placeholders", MAX_PLACEHOLDERS)?;
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let name = r.str("placeholder name", MAX_NAME_LEN)?;
        if last.is_some_and(|l| l >= name) {
            return Err(FormatError::NotCanonical {
                what: "placeholder names",
            });
        }
        last = Some(name);
        let k = r.count("placeholder values", MAX_PLACEHOLDER_VALUES)?;
        let mut values = Vec::with_capacity(k);
        for _ in 0..k {
            values.push(r.str("placeholder value", MAX_VALUE_LEN)?.to_owned());
        }
        settings.placeholders.insert(name.to_owned(), values);
    }
    let n = r.count("field mappings", MAX_MAPPINGS)?;
    for _ in 0..n {
        let product = r
            .opt_str("mapping product", MAX_NAME_LEN)?
            .map(str::to_owned);
        let category = r
            .opt_str("mapping category", MAX_NAME_LEN)?
            .map(str::to_owned);
        let service = r
            .opt_str("mapping service", MAX_NAME_LEN)?
            .map(str::to_owned);
        let k = r.count("mapped fields", MAX_MAPPING_FIELDS)?;
        let mut fields = BTreeMap::new();
        let mut last: Option<&str> = None;
        for _ in 0..k {
            let from = r.str("field name", MAX_NAME_LEN)?;
            let to = r.str("field name", MAX_NAME_LEN)?;
            if last.is_some_and(|l| l >= from) {
                return Err(FormatError::NotCanonical {
                    what: "mapped fields",
                });
            }
            last = Some(from);
            fields.insert(from.to_owned(), to.to_owned());
        }
        settings.field_mappings.push(FieldMappingSetting {
            product,
            category,
            service,
            fields,
        });
    }
    let n = r.count("files", MAX_FILES)?;
    let mut files = BTreeMap::new();
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let path = r.str("file path", MAX_PATH_LEN)?;
        check_path(path)?;
        if last.is_some_and(|l| l >= path) {
            return Err(FormatError::NotCanonical { what: "file paths" });
        }
        last = Some(path);
        let data = r.bytes("file", MAX_FILE_LEN)?;
        files.insert(path.to_owned(), data.to_vec());
    }
    r.finish("payload")?;
    Ok((settings, files))
}

/// The `.pbundle` file: manifest bytes, payload bytes, signatures over the
/// manifest. Nothing in it is trusted until
/// [`TrustStore::verify`](crate::TrustStore::verify) says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBundle {
    /// The encoded [`Manifest`]: the signed bytes.
    pub manifest_bytes: Vec<u8>,
    /// The encoded settings and files, bound to the manifest by its hash.
    pub payload_bytes: Vec<u8>,
    /// Signatures over `manifest_bytes` (Ed25519ph, context `picket/bundle/v1`).
    pub signatures: Vec<KeySignature>,
}

impl SignedBundle {
    /// Adds a signature by `key`, replacing an earlier one by the same key.
    pub fn sign(&mut self, key: &SigningKey) {
        keys::add_signature(
            &mut self.signatures,
            key,
            BUNDLE_CONTEXT,
            &self.manifest_bytes,
        );
    }

    /// The manifest, decoded but NOT verified: for display only.
    ///
    /// # Errors
    /// When the manifest bytes are malformed.
    pub fn unverified_manifest(&self) -> Result<Manifest, FormatError> {
        Manifest::decode(&self.manifest_bytes)
    }

    /// The container bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&FILE_MAGIC);
        w.u8(crate::FORMAT_VERSION);
        w.bytes(&self.manifest_bytes);
        w.bytes(&self.payload_bytes);
        keys::write_signatures(&mut w, &self.signatures);
        w.buf
    }

    /// Splits container bytes into manifest, payload and signatures,
    /// checking only the framing and the size limits.
    ///
    /// # Errors
    /// Any [`FormatError`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.header("bundle", FILE_MAGIC)?;
        let manifest_bytes = r.bytes("manifest", MAX_MANIFEST_LEN)?.to_vec();
        let payload_bytes = r.bytes("payload", MAX_PAYLOAD_LEN)?.to_vec();
        let signatures = keys::read_signatures(&mut r)?;
        r.finish("bundle")?;
        Ok(SignedBundle {
            manifest_bytes,
            payload_bytes,
            signatures,
        })
    }
}
