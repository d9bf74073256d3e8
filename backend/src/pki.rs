//! The fleet PKI: the CA that issues device and broker certificates, the
//! backend's command key, revocation, and the rustls configurations built
//! from them.
//!
//! # Files in the data directory
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `ca.pem` | fleet CA certificate (devices pin it) | 0644 |
//! | `ca.key` | fleet CA key, PKCS#8 PEM | 0600 |
//! | `command.key` | ed25519 command key, PKCS#8 v1 PEM (RFC 8410) | 0600 |
//! | `server.pem`, `server.key` | broker/API TLS server certificate, re-issued as needed | 0644 / 0600 |
//! | `backend-client.pem`, `backend-client.key` | the backend's own client certificate (external brokers) | 0644 / 0600 |
//! | `crl.pem` | CRL of revoked device certificates ([`FleetCa::write_crl`]) | 0644 |
//!
//! The CA and the command key are created together on first start and never
//! again: a backend that finds only some of them, or finds one unreadable,
//! refuses to start with an error naming the file ([`PkiError`]). Silently
//! making a new CA would orphan every enrolled device, and a new command key
//! would make every device refuse the backend's frames.
//!
//! # Algorithms
//!
//! The CA and the server certificate use **ECDSA P-256**. Ed25519 would do for
//! rustls, but P-256 is what every TLS stack an operator might put in front
//! (Mosquitto on an older OpenSSL, load balancers, mbedTLS) can verify, and
//! the CA's algorithm is fixed for the life of the fleet. Device certificates
//! certify the device's own **ed25519** identity key (the key it signs frames
//! with, docs/WIRE.md §6), signed by the P-256 CA. The command key is ed25519
//! because frames are ed25519-signed.
//!
//! # Lifetimes
//!
//! - CA: 20 years ([`CA_VALIDITY`]).
//! - Device certificates: 1 year ([`DEVICE_CERT_VALIDITY`]); a device renews
//!   by enrolling again with the same key and a new token, which re-issues.
//! - Server certificate: 90 days ([`SERVER_CERT_VALIDITY`]); [`FleetCa::server_cert`]
//!   re-issues it when fewer than 30 days remain or the host names changed.
//!
//! # Revocation
//!
//! [`Revocations`] is the live set of revoked devices and certificate
//! serials, shared (cheap clones) between the enrollment path, the API's
//! revoke action and the TLS verifiers [`FleetCa::server_config`] builds. The
//! verifier consults it on every handshake, so a revocation takes effect for
//! the next connection without rebuilding any configuration; live
//! connections are dropped by [`crate::tls_front::TlsFront`]. Devices are
//! refused by serial *and* by device id (the certificate's CN), so a
//! certificate re-issued to a device after the store recorded its serial is
//! refused too. External brokers get the same list as a CRL
//! ([`FleetCa::crl_pem`]).
//!
//! # Example
//!
//! ```
//! use picket_backend::pki::{FleetCa, Revocations};
//! use picket_proto::{ed25519_dalek::SigningKey, DeviceId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let ca = FleetCa::load_or_create(dir.path())?;
//! let device_key = SigningKey::from_bytes(&[7; 32]);
//! let device = DeviceId::from_public_key(&device_key.verifying_key());
//! let cert = ca.issue_device_cert(&device, device_key.verifying_key().as_bytes(), None)?;
//!
//! let revocations = Revocations::new();
//! let config = ca.server_config(&["broker.example".to_owned()], &revocations)?;
//! assert_eq!(config.alpn_protocols.len(), 0);
//! revocations.revoke(device, Some(&cert.serial_hex), 0);
//! assert!(revocations.is_revoked_device(&device));
//! // A restart loads the same CA.
//! let again = FleetCa::load_or_create(dir.path())?;
//! assert_eq!(again.ca_der(), ca.ca_der());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use picket_proto::ed25519_dalek::{SigningKey, VerifyingKey};
use picket_proto::DeviceId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SerialNumber, SignatureAlgorithm,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use time::OffsetDateTime;

/// The fleet CA certificate file.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The fleet CA key file.
pub const CA_KEY_FILE: &str = "ca.key";
/// The command key file.
pub const COMMAND_KEY_FILE: &str = "command.key";
/// The TLS server certificate file.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The TLS server key file.
pub const SERVER_KEY_FILE: &str = "server.key";
/// The backend's client certificate file (for an external broker).
pub const BACKEND_CLIENT_CERT_FILE: &str = "backend-client.pem";
/// The backend's client key file.
pub const BACKEND_CLIENT_KEY_FILE: &str = "backend-client.key";
/// The CRL file.
pub const CRL_FILE: &str = "crl.pem";

/// How long the fleet CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// How long a device certificate is valid.
pub const DEVICE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// How long a server (and backend client) certificate is valid.
pub const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// A server certificate with less than this left is re-issued.
pub const SERVER_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How long a CRL is valid (`nextUpdate`); [`FleetCa::write_crl`] must run
/// again before then (the backend rewrites it at start and on every revocation).
pub const CRL_VALIDITY: Duration = Duration::from_secs(30 * 86_400);
/// Certificates start this long before their issue time, for clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The common name of the backend's own client certificate.
pub const BACKEND_CLIENT_CN: &str = "picket-backend";

/// RFC 8410 §7 PKCS#8 v1 prefix of an Ed25519 private key (as in
/// `picket_proto::identity`); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file exists but does not hold what it should.
    #[error(
        "{} is unusable: {reason}; restore it from a backup (the backend never replaces \
         the fleet CA or command key: a new one would orphan every enrolled device)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file can be read by others than its owner.
    #[error(
        "key file {p} has mode {mode:03o}; it must be readable by its owner only (chmod 600 {p})",
        p = path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Part of the CA material is present and part is missing.
    #[error(
        "{} is missing but {} exists; restore the missing file from a backup, or move the \
         data directory's CA files away to start a new fleet",
        missing.display(), present.display()
    )]
    Incomplete {
        /// A file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The public key is not a valid ed25519 key, or does not belong to the
    /// device id, or a CSR carries another key.
    #[error("device {device_id}: {reason}")]
    KeyMismatch {
        /// The device.
        device_id: DeviceId,
        /// What did not match.
        reason: String,
    },
    /// A certificate signing request is malformed or its signature is wrong.
    #[error("device {device_id}: invalid CSR: {reason}")]
    InvalidCsr {
        /// The device.
        device_id: DeviceId,
        /// Why.
        reason: String,
    },
    /// Making a key, certificate or CRL failed.
    #[error("generating {what}: {reason}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The request cannot be served (no host names for a server certificate).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A rustls configuration could not be built.
    #[error("TLS configuration ({what}): {reason}")]
    Tls {
        /// Which part.
        what: &'static str,
        /// The rustls error.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn generate_err<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> PkiError {
    move |e| PkiError::Generate {
        what,
        reason: e.to_string(),
    }
}

fn tls_err<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> PkiError {
    move |e| PkiError::Tls {
        what,
        reason: e.to_string(),
    }
}

/// A certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// Its serial number, lowercase hex (as stored in `Device::cert_serial`).
    pub serial_hex: String,
    /// End of validity.
    pub not_after: SystemTime,
}

/// The revoked devices and certificate serials, shared by every TLS
/// verifier built with it. Clones share one set.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    inner: Arc<RwLock<RevokedSet>>,
}

#[derive(Debug, Default)]
struct RevokedSet {
    devices: BTreeSet<DeviceId>,
    /// Serial (lowercase hex) to revocation time (ms since the Unix epoch).
    serials: BTreeMap<String, i64>,
}

impl Revocations {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of the revoked devices among `devices` (the store's list at start).
    /// Devices whose id is not 32 hex digits are skipped.
    #[must_use]
    pub fn from_devices(devices: &[picket_store::model::Device]) -> Self {
        let set = Self::new();
        for d in devices {
            if let (Some(at), Ok(id)) = (d.revoked_ms, d.id.parse::<DeviceId>()) {
                set.revoke(id, Some(&d.cert_serial), at);
            }
        }
        set
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevokedSet> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Revokes a device and, when known, its certificate serial (hex).
    pub fn revoke(&self, device: DeviceId, serial_hex: Option<&str>, at_ms: i64) {
        let mut set = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        set.devices.insert(device);
        if let Some(serial) = serial_hex.map(normalize_serial).filter(|s| !s.is_empty()) {
            set.serials.entry(serial).or_insert(at_ms);
        }
    }

    /// Whether the device is revoked.
    #[must_use]
    pub fn is_revoked_device(&self, device: &DeviceId) -> bool {
        self.read().devices.contains(device)
    }

    /// Whether the serial (hex, any case, `:` separators allowed) is revoked.
    #[must_use]
    pub fn is_revoked_serial(&self, serial_hex: &str) -> bool {
        self.read()
            .serials
            .contains_key(&normalize_serial(serial_hex))
    }

    /// Whether a certificate (DER) is revoked, by serial or by its device id.
    /// A certificate that does not parse counts as revoked.
    #[must_use]
    pub fn is_revoked_cert(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return true;
        };
        let serial = hex(cert.raw_serial());
        let device = common_name(&cert).and_then(|cn| cn.parse::<DeviceId>().ok());
        let set = self.read();
        set.serials.contains_key(&serial) || device.is_some_and(|d| set.devices.contains(&d))
    }

    /// The revoked serials and when they were revoked (ms), by serial.
    #[must_use]
    pub fn serials(&self) -> Vec<(String, i64)> {
        self.read()
            .serials
            .iter()
            .map(|(s, at)| (s.clone(), *at))
            .collect()
    }

    /// Number of revoked devices.
    #[must_use]
    pub fn device_count(&self) -> usize {
        self.read().devices.len()
    }
}

fn normalize_serial(s: &str) -> String {
    let digits: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // DER integers may carry a leading zero byte; compare without it.
    let trimmed = digits.trim_start_matches("00");
    if trimmed.is_empty() {
        digits
    } else {
        trimmed.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    normalize_serial(&crate::hex(bytes))
}

fn common_name<'a>(cert: &'a x509_parser::certificate::X509Certificate<'_>) -> Option<&'a str> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
}

/// The device id in a device certificate's subject CN, if it is one.
#[must_use]
pub fn device_id_of_cert(der: &[u8]) -> Option<DeviceId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    common_name(&cert)?.parse().ok()
}

/// The serial number of a certificate, lowercase hex.
#[must_use]
pub fn serial_of_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex(cert.raw_serial()))
}

/// A foreign ed25519 public key, for rcgen to certify.
struct Ed25519Public([u8; 32]);

impl PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

#[derive(Debug, Clone)]
struct ServerCert {
    hostnames: Vec<String>,
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    not_after: i64,
}

/// The fleet CA and the backend's command key.
pub struct FleetCa {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    command_key: SigningKey,
    /// Serializes issuing and caching the server certificate.
    server: Mutex<Option<ServerCert>>,
    /// Serializes issuing the backend client certificate.
    backend_client: Mutex<()>,
}

impl fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("FleetCa")
            .field("dir", &self.dir)
            .field("command_public_key", &hex(&self.command_public_key()))
            .finish_non_exhaustive()
    }
}

impl FleetCa {
    /// Loads the CA and command key from `dir`, or on first start (none of
    /// the files exist) creates them, and `dir` itself with mode 0700.
    ///
    /// # Errors
    /// [`PkiError::Incomplete`] when only some of the files exist,
    /// [`PkiError::Corrupt`] naming a file that does not parse or whose key
    /// does not match the certificate, [`PkiError::InsecurePermissions`] for a
    /// key file others may read, [`PkiError::Io`] for I/O failures.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let files = [CA_CERT_FILE, CA_KEY_FILE, COMMAND_KEY_FILE].map(|f| dir.join(f));
        let exists = files
            .iter()
            .map(|p| match fs::symlink_metadata(p) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err(p)(e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if exists.iter().all(|e| !e) {
            Self::create(dir)?;
        } else if let Some(missing) = exists.iter().position(|e| !e) {
            let present = exists.iter().position(|e| *e).unwrap_or(0);
            return Err(PkiError::Incomplete {
                present: files[present].clone(),
                missing: files[missing].clone(),
            });
        }
        Self::load(dir)
    }

    fn create(dir: &Path) -> Result<(), PkiError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(generate_err("fleet CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Picket fleet CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Picket");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(generate_err("fleet CA certificate"))?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(generate_err("command key"))?;
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let command_pem = pem_encode("PRIVATE KEY", &pkcs8);

        // Keys first, the certificate last: a crash in between leaves an
        // `Incomplete` error naming ca.pem rather than a CA nobody can use.
        write_file(
            &dir.join(COMMAND_KEY_FILE),
            command_pem.as_bytes(),
            0o600,
            false,
        )?;
        write_file(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
            false,
        )?;
        write_file(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644, false)?;
        tracing::info!(dir = %dir.display(), "created a new fleet CA and command key");
        Ok(())
    }

    fn load(dir: &Path) -> Result<Self, PkiError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let command_path = dir.join(COMMAND_KEY_FILE);
        let corrupt = |path: &Path, reason: String| PkiError::Corrupt {
            path: path.to_owned(),
            reason,
        };

        let ca_pem = read_text(&ca_path)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| corrupt(&ca_path, format!("no PEM certificate ({e})")))?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| corrupt(&ca_path, format!("not an X.509 certificate ({e})")))?;
        if !ca_cert.is_ca() {
            return Err(corrupt(&ca_path, "not a CA certificate".into()));
        }

        let key_pem = read_key_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| corrupt(&key_path, format!("not a PKCS#8 key ({e})")))?;
        if key.public_key_raw() != ca_cert.public_key().subject_public_key.as_ref() {
            return Err(corrupt(
                &key_path,
                format!(
                    "its key does not match the certificate in {}",
                    ca_path.display()
                ),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| corrupt(&ca_path, format!("unusable as an issuer ({e})")))?;

        let command_pem = read_key_text(&command_path)?;
        let command_der = PrivatePkcs8KeyDer::from_pem_slice(command_pem.as_bytes())
            .map_err(|e| corrupt(&command_path, format!("no PEM private key ({e})")))?;
        let bytes = command_der.secret_pkcs8_der();
        let seed: [u8; 32] = bytes
            .strip_prefix(&ED25519_PKCS8_PREFIX[..])
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| corrupt(&command_path, "not a 48-byte Ed25519 PKCS#8 key".into()))?;

        Ok(Self {
            dir: dir.to_owned(),
            ca_der: ca_der.into_owned(),
            ca_pem,
            issuer,
            command_key: SigningKey::from_bytes(&seed),
            server: Mutex::new(None),
            backend_client: Mutex::new(()),
        })
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, DER.
    #[must_use]
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA certificate, PEM (what devices pin).
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The command key: signs EnrollResponse frames, bundles and commands.
    #[must_use]
    pub fn command_key(&self) -> &SigningKey {
        &self.command_key
    }

    /// The command key's public half (devices pin it).
    #[must_use]
    pub fn command_public_key(&self) -> [u8; 32] {
        self.command_key.verifying_key().to_bytes()
    }

    /// Issues a client certificate (1 year, [`DEVICE_CERT_VALIDITY`]) for a
    /// device's ed25519 identity key, CN = the device id in hex.
    ///
    /// A CSR, when given, must be validly signed and carry `public_key`; its
    /// requested subject and extensions are ignored, because the CN is what
    /// maps a TLS connection to a device.
    ///
    /// # Errors
    /// [`PkiError::KeyMismatch`] when `public_key` is not a valid ed25519 key,
    /// does not derive `device_id`, or differs from the CSR's key;
    /// [`PkiError::InvalidCsr`]; [`PkiError::Generate`].
    pub fn issue_device_cert(
        &self,
        device_id: &DeviceId,
        public_key: &[u8; 32],
        csr_der: Option<&[u8]>,
    ) -> Result<IssuedCert, PkiError> {
        let mismatch = |reason: String| PkiError::KeyMismatch {
            device_id: *device_id,
            reason,
        };
        let verifying = VerifyingKey::from_bytes(public_key)
            .map_err(|_| mismatch("the public key is not a valid ed25519 key".into()))?;
        if verifying.is_weak() {
            return Err(mismatch(
                "the public key is a small-order ed25519 key".into(),
            ));
        }
        let derived = DeviceId::from_public_key(&verifying);
        if derived != *device_id {
            return Err(mismatch(format!(
                "the public key belongs to device {derived}"
            )));
        }
        if let Some(csr) = csr_der {
            let csr =
                CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
                    .map_err(|e| PkiError::InvalidCsr {
                        device_id: *device_id,
                        reason: e.to_string(),
                    })?;
            let csr_key = &csr.public_key;
            if csr_key.algorithm() != &rcgen::PKCS_ED25519 || csr_key.der_bytes() != public_key {
                return Err(mismatch(
                    "the CSR's public key differs from the request's".into(),
                ));
            }
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, device_id.to_string());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Picket fleet device");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let serial = random_serial()?;
        let serial_hex = hex(&serial.to_bytes());
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + DEVICE_CERT_VALIDITY;
        let cert = params
            .signed_by(&Ed25519Public(*public_key), &self.issuer)
            .map_err(generate_err("device certificate"))?;
        Ok(IssuedCert {
            der: cert.der().clone(),
            serial_hex,
            not_after: SystemTime::from(params.not_after),
        })
    }

    /// The TLS server certificate chain and key for `hostnames` (DNS names or
    /// IP addresses), cached in the data directory and re-issued when the
    /// names change, fewer than 30 days remain, or it was not issued by this CA.
    ///
    /// # Errors
    /// [`PkiError::Invalid`] for no or invalid host names, [`PkiError::Io`],
    /// [`PkiError::Generate`].
    pub fn server_cert(
        &self,
        hostnames: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let wanted = normalized_names(hostnames)?;
        let mut cached = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let fresh = |c: &ServerCert| {
            c.hostnames == wanted
                && c.not_after - now
                    > i64::try_from(SERVER_CERT_RENEW_BEFORE.as_secs()).unwrap_or(0)
        };
        if cached.as_ref().is_none_or(|c| !fresh(c)) {
            *cached = None;
            let cert_path = self.dir.join(SERVER_CERT_FILE);
            let key_path = self.dir.join(SERVER_KEY_FILE);
            if let Some(on_disk) = self.read_leaf(&cert_path, &key_path) {
                if fresh(&on_disk) {
                    *cached = Some(on_disk);
                }
            }
            if cached.is_none() {
                let issued = self.issue_leaf(&wanted, None, ExtendedKeyUsagePurpose::ServerAuth)?;
                write_file(&key_path, issued.key_pem.as_bytes(), 0o600, true)?;
                write_file(&cert_path, pem_chain(&issued.chain).as_bytes(), 0o644, true)?;
                tracing::info!(hostnames = ?wanted, "issued a new TLS server certificate");
                *cached = Some(issued);
            }
        }
        let c = cached
            .as_ref()
            .ok_or_else(|| PkiError::Invalid("no server certificate".into()))?;
        let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
            .map_err(generate_err("server key"))?;
        Ok((c.chain.clone(), key))
    }

    /// Reads a cached leaf certificate and key; `None` when missing,
    /// unreadable or not issued by this CA (it is then re-issued).
    fn read_leaf(&self, cert_path: &Path, key_path: &Path) -> Option<ServerCert> {
        let cert_pem = fs::read(cert_path).ok()?;
        let key_pem = fs::read_to_string(key_path).ok()?;
        let der = CertificateDer::from_pem_slice(&cert_pem).ok()?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        let (_, ca) = x509_parser::parse_x509_certificate(&self.ca_der).ok()?;
        cert.verify_signature(Some(ca.public_key())).ok()?;
        let mut hostnames = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        hostnames.push((*d).to_owned());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                        let ip = match ip.len() {
                            4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).ok()?),
                            16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).ok()?),
                            _ => return None,
                        };
                        hostnames.push(ip.to_string());
                    }
                    _ => {}
                }
            }
        }
        hostnames.sort();
        hostnames.dedup();
        let not_after = cert.validity().not_after.timestamp();
        Some(ServerCert {
            hostnames,
            chain: vec![der.into_owned()],
            key_pem,
            not_after,
        })
    }

    fn issue_leaf(
        &self,
        hostnames: &[String],
        common_name: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<ServerCert, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(generate_err("TLS key"))?;
        let mut params = CertificateParams::new(hostnames.to_vec())
            .map_err(|e| PkiError::Invalid(format!("host names {hostnames:?}: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = common_name
            .or_else(|| hostnames.first().map(String::as_str))
            .unwrap_or("picket");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_CERT_VALIDITY;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_err("TLS certificate"))?;
        Ok(ServerCert {
            hostnames: hostnames.to_vec(),
            chain: vec![cert.der().clone()],
            key_pem: key.serialize_pem(),
            not_after: params.not_after.unix_timestamp(),
        })
    }

    /// The CRL of `revocations`' serials, signed by the CA, as DER.
    ///
    /// # Errors
    /// [`PkiError::Generate`].
    pub fn crl_der(&self, revocations: &Revocations) -> Result<Vec<u8>, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revocations
            .serials()
            .into_iter()
            .filter_map(|(serial, at_ms)| {
                let bytes = unhex(&serial)?;
                let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
                    .unwrap_or(now);
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: at.min(now),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        // The CRL number must increase with each CRL: the issue time does.
        let number = u64::try_from(now.unix_timestamp())
            .unwrap_or(0)
            .to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(generate_err("CRL"))?;
        Ok(crl.der().to_vec())
    }

    /// [`FleetCa::crl_der`] as PEM (Mosquitto's `crlfile`).
    ///
    /// # Errors
    /// As [`FleetCa::crl_der`].
    pub fn crl_pem(&self, revocations: &Revocations) -> Result<String, PkiError> {
        Ok(pem_encode("X509 CRL", &self.crl_der(revocations)?))
    }

    /// Writes [`FleetCa::crl_pem`] to `<data>/crl.pem` (atomically), returning the path.
    ///
    /// # Errors
    /// As [`FleetCa::crl_der`], and [`PkiError::Io`].
    pub fn write_crl(&self, revocations: &Revocations) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(CRL_FILE);
        write_file(&path, self.crl_pem(revocations)?.as_bytes(), 0o644, true)?;
        Ok(path)
    }

    /// The client certificate verifier: chains to the fleet CA (webpki, with
    /// the `clientAuth` usage), then refuses revoked serials and devices from
    /// the live `revocations`. `mandatory = false` also admits clients without
    /// a certificate (the HTTPS API, where enrollment happens).
    ///
    /// # Errors
    /// [`PkiError::Tls`].
    pub fn client_verifier(
        &self,
        revocations: &Revocations,
        mandatory: bool,
    ) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(tls_err("fleet CA"))?;
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        if !mandatory {
            builder = builder.allow_unauthenticated();
        }
        let inner = builder.build().map_err(tls_err("client verifier"))?;
        Ok(Arc::new(RevocationCheckingVerifier {
            inner,
            revocations: revocations.clone(),
        }))
    }

    /// The broker's TLS server configuration: TLS 1.3 only, a client
    /// certificate from the fleet CA required, revoked ones refused.
    ///
    /// # Errors
    /// As [`FleetCa::server_cert`], and [`PkiError::Tls`].
    pub fn server_config(
        &self,
        hostnames: &[String],
        revocations: &Revocations,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        self.build_server_config(hostnames, revocations, true)
    }

    /// The HTTPS API's TLS server configuration: as
    /// [`FleetCa::server_config`], but a client certificate is optional
    /// (enrollment happens before a device has one). A presented certificate
    /// is still verified and refused when revoked.
    ///
    /// # Errors
    /// As [`FleetCa::server_config`].
    pub fn api_server_config(
        &self,
        hostnames: &[String],
        revocations: &Revocations,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        self.build_server_config(hostnames, revocations, false)
    }

    fn build_server_config(
        &self,
        hostnames: &[String],
        revocations: &Revocations,
        mandatory: bool,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        let (chain, key) = self.server_cert(hostnames)?;
        let verifier = self.client_verifier(revocations, mandatory)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err("protocol versions"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err("server certificate"))?;
        Ok(Arc::new(config))
    }

    /// A client configuration for the backend itself, to reach an external
    /// broker with mTLS: trusts the fleet CA only, presents a certificate
    /// with CN [`BACKEND_CLIENT_CN`] (cached in the data directory, re-issued
    /// when fewer than 30 days remain).
    ///
    /// # Errors
    /// [`PkiError::Io`], [`PkiError::Generate`], [`PkiError::Tls`].
    pub fn client_config_for_backend(&self) -> Result<Arc<ClientConfig>, PkiError> {
        let _guard = self
            .backend_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cert_path = self.dir.join(BACKEND_CLIENT_CERT_FILE);
        let key_path = self.dir.join(BACKEND_CLIENT_KEY_FILE);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let renew = i64::try_from(SERVER_CERT_RENEW_BEFORE.as_secs()).unwrap_or(0);
        let leaf = match self.read_leaf(&cert_path, &key_path) {
            Some(c) if c.not_after - now > renew => c,
            _ => {
                let c = self.issue_leaf(
                    &[],
                    Some(BACKEND_CLIENT_CN),
                    ExtendedKeyUsagePurpose::ClientAuth,
                )?;
                write_file(&key_path, c.key_pem.as_bytes(), 0o600, true)?;
                write_file(&cert_path, pem_chain(&c.chain).as_bytes(), 0o644, true)?;
                c
            }
        };
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
            .map_err(generate_err("backend client key"))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(tls_err("fleet CA"))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err("protocol versions"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(leaf.chain, key)
            .map_err(tls_err("backend client certificate"))?;
        Ok(Arc::new(config))
    }

    /// Writes what an external broker (Mosquitto) needs into `out_dir`:
    /// `ca.pem` (`cafile`), `server.pem` (`certfile`), `server.key`
    /// (`keyfile`, mode 0600) and `crl.pem` (`crlfile`).
    ///
    /// # Errors
    /// As [`FleetCa::server_cert`] and [`FleetCa::crl_der`], and [`PkiError::Io`].
    pub fn export_broker_files(
        &self,
        out_dir: &Path,
        hostnames: &[String],
        revocations: &Revocations,
    ) -> Result<(), PkiError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out_dir)
            .map_err(io_err(out_dir))?;
        let (chain, key) = self.server_cert(hostnames)?;
        let key_pem = pem_encode("PRIVATE KEY", key.secret_der());
        write_file(&out_dir.join("ca.pem"), self.ca_pem.as_bytes(), 0o644, true)?;
        write_file(
            &out_dir.join("server.pem"),
            pem_chain(&chain).as_bytes(),
            0o644,
            true,
        )?;
        write_file(&out_dir.join("server.key"), key_pem.as_bytes(), 0o600, true)?;
        write_file(
            &out_dir.join("crl.pem"),
            self.crl_pem(revocations)?.as_bytes(),
            0o644,
            true,
        )?;
        Ok(())
    }
}

/// The crypto provider: ring only (no C toolchain for aws-lc).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Wraps the webpki verifier with the live revocation check.
#[derive(Debug)]
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.revocations.is_revoked_cert(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Host names as the cache compares them: IP addresses normalized, sorted, deduplicated.
fn normalized_names(hostnames: &[String]) -> Result<Vec<String>, PkiError> {
    let mut names: Vec<String> = hostnames
        .iter()
        .map(|h| {
            let h = h.trim();
            h.parse::<std::net::IpAddr>()
                .map_or_else(|_| h.to_ascii_lowercase(), |ip| ip.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(PkiError::Invalid(
            "a server certificate needs at least one host name".into(),
        ));
    }
    Ok(names)
}

/// A positive 16-byte serial whose DER encoding is exactly these bytes
/// (high bit clear, first byte non-zero), so hex round-trips unchanged.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(generate_err("serial number"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect()
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    String::from_utf8(bytes).map_err(|_| PkiError::Corrupt {
        path: path.to_owned(),
        reason: "not a text (PEM) file".into(),
    })
}

/// Reads a key file, refusing one others may read (as ssh does).
fn read_key_text(path: &Path) -> Result<String, PkiError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    read_text(path)
}

/// Writes `bytes` to `path` with `mode`, atomically: the file appears complete
/// or not at all. With `replace = false` an existing file is never replaced
/// (the CA files: a concurrent first start keeps the first one's CA).
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        for len in 1..10 {
            let data: Vec<u8> = (0..len).map(|i: u8| i.wrapping_mul(37)).collect();
            let pem = pem_encode("CERTIFICATE", &data);
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
            assert_eq!(&parsed[..], &data[..]);
        }
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("00:AB:cd"), "abcd");
        assert_eq!(hex(&[0, 0x7f]), "7f");
        assert_eq!(unhex("abc"), Some(vec![0x0a, 0xbc]));
    }
}
