//! HTTPS on the backend's HTTP listener (`[http] tls`): the API, the web UI
//! and the WebSockets (the live feed and the agent streams) over TLS.
//!
//! [`server_config`] builds the rustls configuration from PEM files or from
//! a server certificate the fleet CA issues ([`FleetCa::server_cert`], kept
//! in the data directory); [`TlsListener`] is an [`axum::serve::Listener`]:
//! an accept task takes TCP connections and runs each handshake in its own
//! task, bounded by a timeout, so a client that stalls its handshake holds
//! only its own task and never the accept loop. Completed connections queue
//! in a small channel that `axum::serve` drains. ALPN offers `http/1.1`
//! only: WebSocket upgrades are HTTP/1.1 requests.
//!
//! ```no_run
//! # async fn demo(ca: &picket_backend::pki::FleetCa) -> Result<(), Box<dyn std::error::Error>> {
//! use picket_backend::config::HttpTls;
//! use picket_backend::https::{server_config, TlsListener};
//!
//! let tls = HttpTls::FleetCa { hostnames: vec!["picket.example".into()] };
//! let config = server_config(&tls, ca)?.expect("TLS is on");
//! let tcp = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! let stats = std::sync::Arc::new(picket_backend::https::HttpsStats::default());
//! let listener = TlsListener::new(tcp, config, stats, shutdown);
//! axum::serve(listener, axum::Router::new()).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpTls;
use crate::pki::{FleetCa, PkiError};

/// A TLS handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the accept loop waits beyond this.
const MAX_HANDSHAKES: usize = 1024;

/// The rustls server configuration for `[http] tls`; `None` when TLS is off.
///
/// # Errors
/// [`PkiError::Io`] for unreadable files, [`PkiError::Invalid`] for files
/// without a certificate or key, [`PkiError::Tls`] when rustls refuses the
/// pair; as [`FleetCa::server_cert`] for `fleet-ca`.
pub fn server_config(tls: &HttpTls, ca: &FleetCa) -> Result<Option<Arc<ServerConfig>>, PkiError> {
    let (chain, key) = match tls {
        HttpTls::Off => return Ok(None),
        HttpTls::Files {
            cert_file,
            key_file,
        } => (read_chain(cert_file)?, read_key(key_file)?),
        HttpTls::FleetCa { hostnames } => ca.server_cert(hostnames)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls {
            what: "protocol versions",
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls {
            what: "HTTPS certificate and key",
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(PkiError::Invalid(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| PkiError::Invalid(format!("{}: no PEM private key: {e}", path.display())))
}

/// Counters of a [`TlsListener`] (in `/metrics`).
#[derive(Debug, Default)]
pub struct HttpsStats {
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
}

impl HttpsStats {
    /// Prometheus text.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP picket_http_tls_handshakes_failed_total HTTPS handshakes that failed, by reason.\n\
             # TYPE picket_http_tls_handshakes_failed_total counter\n\
             picket_http_tls_handshakes_failed_total{{reason=\"error\"}} {}\n\
             picket_http_tls_handshakes_failed_total{{reason=\"timeout\"}} {}\n",
            self.handshake_failures.load(Ordering::Relaxed),
            self.handshake_timeouts.load(Ordering::Relaxed),
        )
    }
}

/// A TLS listener for [`axum::serve`].
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (the accept task ends on `shutdown`).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        stats: Arc<HttpsStats>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            tx,
            stats.clone(),
            shutdown,
        ));
        Self { local, ready }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stats: Arc<HttpsStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            r = tcp.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                }
                Err(_) => {
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "HTTPS handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): serve stops on the same
            // signal, so wait for it rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
