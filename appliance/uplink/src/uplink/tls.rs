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

    let mut roots = RootCertStore::empty();
    let mut anchors = 0;
    for cert in CertificateDer::pem_slice_iter(&config.ca_pem) {
        let cert = cert.map_err(|e| tls("fleet CA")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| tls("fleet CA")(e.to_string()))?;
        anchors += 1;
    }
    if anchors == 0 {
        return Err(tls("fleet CA")("no certificate in the PEM".into()));
    }
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
