//! The device key file: created once with 0600, reloaded to the same id,
//! refused when others can read it or when it is not a key.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

use std::os::unix::fs::PermissionsExt as _;

use picket_proto::identity::{DeviceIdentity, IdentityError};

#[test]
fn first_start_creates_a_private_key_that_later_starts_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    let first = DeviceIdentity::load_or_generate(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 48);
    let again = DeviceIdentity::load_or_generate(&path).unwrap();
    assert_eq!(first.device_id(), again.device_id());
    assert_eq!(first.verifying_key(), again.verifying_key());
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn two_generated_identities_differ() {
    let a = DeviceIdentity::generate().unwrap();
    let b = DeviceIdentity::generate().unwrap();
    assert_ne!(a.device_id(), b.device_id());
}

#[test]
fn a_readable_key_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    DeviceIdentity::load_or_generate(&path).unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = DeviceIdentity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::InsecurePermissions { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("chmod 600") && text.contains("device.key"),
            "{text}"
        );
        // load_or_generate must not replace it either.
        assert!(DeviceIdentity::load_or_generate(&path).is_err());
    }
}

#[test]
fn store_never_replaces_an_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    let first = DeviceIdentity::load_or_generate(&path).unwrap();
    let err = DeviceIdentity::generate()
        .unwrap()
        .store(&path)
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err:?}"
    );
    assert_eq!(
        DeviceIdentity::load(&path).unwrap().device_id(),
        first.device_id()
    );
}

#[test]
fn a_file_that_is_not_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    std::fs::write(&path, b"not a key").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = DeviceIdentity::load(&path).unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidKeyFile { .. }),
        "{err:?}"
    );
}
