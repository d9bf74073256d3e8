//! The rustls client configuration: TLS 1.3 only, the fleet CA pinned as the
//! only trust anchor, and the device's client certificate (mTLS).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::{ConfigError, UplinkConfig};

/// Builds the client TLS configuration from `config`'s PEM inputs.
///
/// # Errors
/// [`ConfigError::Tls`] naming the input that is unusable.
pub fn client_config(config: &UplinkConfig) -> Result<Arc<ClientConfig>, ConfigError> {
    let tls = |what: &'static str| move |e: String| ConfigError::Tls { what, reason: e };

    let roots = fleet_roots(&config.ca_pem)?;
    let chain = CertificateDer::pem_slice_iter(&config.client_cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("client certificate")(e.to_string()))?;
    if chain.is_empty() {
        return Err(tls("client certificate")(
            "no certificate in the PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&config.client_key_pem)
        .map_err(|e| tls("client key")(e.to_string()))?;

    // ring only: pure Rust and assembly, no C toolchain for aws-lc.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls("protocol versions")(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls("client certificate and key")(e.to_string()))?;
    Ok(Arc::new(client))
}

/// A TLS 1.3 client that trusts only the fleet CA in `ca_pem` and presents
/// no certificate: for talking to the backend's HTTPS API before the device
/// has one (enrollment).
///
/// # Errors
/// [`ConfigError::Tls`] when the PEM holds no usable CA certificate.
pub fn client_config_server_only(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, ConfigError> {
    let roots = fleet_roots(ca_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConfigError::Tls {
            what: "protocol versions",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}

fn fleet_roots(ca_pem: &[u8]) -> Result<RootCertStore, ConfigError> {
    let err = |e: String| ConfigError::Tls {
        what: "fleet CA",
        reason: e,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the PEM".into()));
    }
    Ok(roots)
}
