//! The fleet CA: creation and reload, refusal of damaged files, device
//! certificates that rustls accepts for an ed25519 client, CSR checks,
//! revocation and the CRL, the server certificate cache.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use picket_backend::pki::{
    device_id_of_cert, serial_of_cert, FleetCa, PkiError, Revocations, CA_CERT_FILE, CA_KEY_FILE,
    COMMAND_KEY_FILE,
};
use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::DeviceId;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::CertificateError;

const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn device(seed: u8) -> (SigningKey, DeviceId) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = DeviceId::from_public_key(&key.verifying_key());
    (key, id)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_then_reload_gives_the_same_ca_and_command_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = FleetCa::load_or_create(&data).unwrap();
    assert_eq!(mode(&data.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&data.join(COMMAND_KEY_FILE)), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    let again = FleetCa::load_or_create(&data).unwrap();
    assert_eq!(again.ca_der(), ca.ca_der());
    assert_eq!(again.command_public_key(), ca.command_public_key());
    assert_eq!(
        again.command_key().to_bytes(),
        ca.command_key().to_bytes(),
        "the command key must survive a restart"
    );
    // Debug never shows key material.
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn damaged_ca_files_are_clear_errors_and_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    FleetCa::load_or_create(dir.path()).unwrap();
    let ca_pem_before = fs::read(dir.path().join(CA_CERT_FILE)).unwrap();

    for file in [CA_KEY_FILE, COMMAND_KEY_FILE, CA_CERT_FILE] {
        let path = dir.path().join(file);
        let good = fs::read(&path).unwrap();
        fs::write(
            &path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = FleetCa::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(&err, PkiError::Corrupt { path: p, .. } if *p == path),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(file), "{err}");
        fs::write(&path, good).unwrap();
    }

    // A CA key that belongs to another CA.
    let other = tempfile::tempdir().unwrap();
    FleetCa::load_or_create(other.path()).unwrap();
    let key_path = dir.path().join(CA_KEY_FILE);
    let good_key = fs::read(&key_path).unwrap();
    fs::write(&key_path, fs::read(other.path().join(CA_KEY_FILE)).unwrap()).unwrap();
    let err = FleetCa::load_or_create(dir.path()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    fs::write(&key_path, &good_key).unwrap();

    // A key others may read.
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = FleetCa::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(err, PkiError::InsecurePermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();

    // A missing key is never regenerated.
    fs::remove_file(&key_path).unwrap();
    let err = FleetCa::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PkiError::Incomplete { missing, .. } if *missing == key_path),
        "{err:?}"
    );
    assert!(!key_path.exists());
    assert_eq!(
        fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
        ca_pem_before
    );

    fs::write(&key_path, &good_key).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    FleetCa::load_or_create(dir.path()).unwrap();
}

#[test]
fn device_certificate_verifies_for_an_ed25519_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let (key, id) = device(3);
    let cert = ca
        .issue_device_cert(&id, key.verifying_key().as_bytes(), None)
        .unwrap();
    assert_eq!(device_id_of_cert(&cert.der), Some(id));
    assert_eq!(
        serial_of_cert(&cert.der).as_deref(),
        Some(cert.serial_hex.as_str())
    );
    let year = cert
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        year.as_secs() > 364 * 86_400 && year.as_secs() <= 365 * 86_400,
        "{year:?}"
    );

    // rustls' own webpki verifier (inside ours) accepts it...
    let revocations = Revocations::new();
    let verifier = ca.client_verifier(&revocations, true).unwrap();
    verifier
        .verify_client_cert(&cert.der, &[], UnixTime::now())
        .unwrap();
    // ...and a rustls client can use the device key for it.
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(key.as_bytes());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![cert.der.clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into()),
    )
    .unwrap();

    // A certificate from another CA is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other = FleetCa::load_or_create(other_dir.path()).unwrap();
    let foreign = other
        .issue_device_cert(&id, key.verifying_key().as_bytes(), None)
        .unwrap();
    assert!(verifier
        .verify_client_cert(&foreign.der, &[], UnixTime::now())
        .is_err());

    // Serials are unique.
    let again = ca
        .issue_device_cert(&id, key.verifying_key().as_bytes(), None)
        .unwrap();
    assert_ne!(again.serial_hex, cert.serial_hex);
}

#[test]
fn csr_with_another_key_and_wrong_device_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let (key, id) = device(4);
    let public = key.verifying_key().to_bytes();

    // A CSR signed by the device's own key is accepted.
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(key.as_bytes());
    let own = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let csr = params.serialize_request(&own).unwrap();
    let cert = ca.issue_device_cert(&id, &public, Some(csr.der())).unwrap();
    // The CN is the device id whatever the CSR asked for.
    assert_eq!(device_id_of_cert(&cert.der), Some(id));

    // A CSR for another key.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = params.serialize_request(&other).unwrap();
    let err = ca
        .issue_device_cert(&id, &public, Some(csr.der()))
        .unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");

    // Garbage as a CSR.
    let err = ca
        .issue_device_cert(&id, &public, Some(b"not a csr"))
        .unwrap_err();
    assert!(matches!(err, PkiError::InvalidCsr { .. }), "{err:?}");

    // A key that does not derive the device id.
    let (_, other_id) = device(5);
    let err = ca.issue_device_cert(&other_id, &public, None).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn revoked_serials_and_devices_are_refused_and_listed_in_the_crl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let revocations = Revocations::new();
    let verifier = ca.client_verifier(&revocations, true).unwrap();
    let (key_a, a) = device(6);
    let (key_b, b) = device(7);
    let cert_a = ca
        .issue_device_cert(&a, key_a.verifying_key().as_bytes(), None)
        .unwrap();
    let cert_b = ca
        .issue_device_cert(&b, key_b.verifying_key().as_bytes(), None)
        .unwrap();
    let newer_b = ca
        .issue_device_cert(&b, key_b.verifying_key().as_bytes(), None)
        .unwrap();

    revocations.revoke(
        a,
        Some(&cert_a.serial_hex.to_uppercase()),
        1_700_000_000_000,
    );
    let err = verifier
        .verify_client_cert(&cert_a.der, &[], UnixTime::now())
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    verifier
        .verify_client_cert(&cert_b.der, &[], UnixTime::now())
        .unwrap();

    // Revoking b by its stored serial also refuses a certificate re-issued since.
    revocations.revoke(b, Some(&cert_b.serial_hex), 1_700_000_000_000);
    assert!(verifier
        .verify_client_cert(&newer_b.der, &[], UnixTime::now())
        .is_err());

    let path = ca.write_crl(&revocations).unwrap();
    let pem = fs::read_to_string(path).unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let der = ca.crl_der(&revocations).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.ca_der()).unwrap();
    crl.verify_signature(ca_cert.public_key()).unwrap();
    let mut listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| {
            r.raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .collect();
    listed.sort();
    let mut expected = vec![cert_a.serial_hex.clone(), cert_b.serial_hex.clone()];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn server_certificate_is_cached_and_reissued_when_names_change() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let names = vec!["broker.example".to_owned(), "127.0.0.1".to_owned()];
    let (chain, _key) = ca.server_cert(&names).unwrap();
    let (again, _) = ca.server_cert(&names).unwrap();
    assert_eq!(chain, again);

    // A restart reuses the certificate on disk.
    let reloaded = FleetCa::load_or_create(dir.path()).unwrap();
    let (from_disk, _) = reloaded
        .server_cert(&["127.0.0.1".to_owned(), "Broker.Example".to_owned()])
        .unwrap();
    assert_eq!(from_disk, chain);

    let (renamed, _) = reloaded.server_cert(&["mqtt.example".to_owned()]).unwrap();
    assert_ne!(renamed, chain);
    assert!(ca.server_cert(&[]).is_err());

    let (_, leaf) = x509_parser::parse_x509_certificate(&renamed[0]).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.ca_der()).unwrap();
    leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
}

#[test]
fn broker_files_and_backend_client_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let out = dir.path().join("mosquitto");
    ca.export_broker_files(&out, &["broker.example".to_owned()], &Revocations::new())
        .unwrap();
    for f in ["ca.pem", "server.pem", "server.key", "crl.pem"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert_eq!(mode(&out.join("server.key")), 0o600);
    assert_eq!(fs::read_to_string(out.join("ca.pem")).unwrap(), ca.ca_pem());
    use rustls::pki_types::pem::PemObject as _;
    let server = CertificateDer::from_pem_file(out.join("server.pem")).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&server).unwrap();
    assert!(leaf.subject_alternative_name().unwrap().is_some());

    ca.client_config_for_backend().unwrap();
    // Cached: a second call reuses the files.
    let cert1 = fs::read(dir.path().join("backend-client.pem")).unwrap();
    ca.client_config_for_backend().unwrap();
    assert_eq!(
        fs::read(dir.path().join("backend-client.pem")).unwrap(),
        cert1
    );
}
