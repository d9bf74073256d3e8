//! The embedded broker's mTLS front: TLS 1.3 on the public MQTT port, bytes
//! proxied to the broker's plaintext loopback port.
//!
//! The embedded broker (rumqttd) knows nothing about TLS or devices; this
//! front is where a connection becomes a device. Each accepted connection:
//!
//! 1. completes a TLS 1.3 handshake with the [`rustls::ServerConfig`] from
//!    [`FleetCa::server_config`](crate::pki::FleetCa::server_config) (a
//!    fleet-CA client certificate required, revoked ones refused), within
//!    [`TlsFrontOptions::handshake_timeout`];
//! 2. is mapped to the device in its certificate's CN and registered, so
//!    [`TlsFront::disconnect`] can drop every live connection of a revoked
//!    device at once;
//! 3. is proxied byte for byte to the broker with
//!    [`tokio::io::copy_bidirectional_with_sizes`], until either side closes,
//!    the device is disconnected, or the front shuts down.
//!
//! One task per connection, no thread: 10,000 devices cost 10,000 small
//! tasks (two 4 KiB proxy buffers and the rustls state each). A client that
//! stalls its handshake (slow loris) only holds its own task until the
//! timeout. Handshake failures are counted by reason ([`TlsFrontStats`]) and
//! logged at debug; nothing a client sends can stop the accept loop.
//!
//! ```no_run
//! # async fn demo(ca: picket_backend::pki::FleetCa) -> Result<(), Box<dyn std::error::Error>> {
//! use picket_backend::{pki::Revocations, tls_front::TlsFront};
//!
//! let revocations = Revocations::new();
//! let config = ca.server_config(&["broker.example".to_owned()], &revocations)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8883").await?;
//! let broker = "127.0.0.1:1883".parse()?;
//! let front = TlsFront::new(config, broker, revocations);
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn({
//!     let front = front.clone();
//!     async move { front.serve(listener, shutdown).await }
//! });
//! // Later, on revocation: drop the device's live connections.
//! # let device = picket_proto::DeviceId::default();
//! front.disconnect(&device);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use picket_proto::DeviceId;
use rustls::{CertificateError, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::pki::{device_id_of_cert, Revocations};

/// Tunables of a [`TlsFront`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFrontOptions {
    /// A TLS handshake must complete within this (default 10 s).
    pub handshake_timeout: Duration,
    /// Connecting to the broker must complete within this (default 5 s).
    pub upstream_connect_timeout: Duration,
    /// Connections (handshaking or proxied) beyond this are closed at once
    /// (default 50,000).
    pub max_connections: u64,
    /// Proxy buffer per direction and connection (default 4 KiB; MQTT
    /// packets from appliances are small, and 10,000 connections add up).
    pub buffer_bytes: usize,
}

impl Default for TlsFrontOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(5),
            max_connections: 50_000,
            buffer_bytes: 4096,
        }
    }
}

/// Why a connection was refused before it reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to the fleet CA, is expired, or is
    /// not for client authentication.
    BadCertificate,
    /// The certificate or its device is revoked.
    Revoked,
    /// The handshake did not complete in time.
    Timeout,
    /// Another TLS failure (the client refused our certificate, bad
    /// messages, no common protocol version).
    Protocol,
    /// The connection failed during the handshake (reset, closed).
    Io,
    /// Too many connections ([`TlsFrontOptions::max_connections`]).
    OverCapacity,
}

impl Refusal {
    /// The reason's metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::Revoked => "revoked",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Io => "io",
            Self::OverCapacity => "over_capacity",
        }
    }

    /// Every reason.
    pub const ALL: [Self; 7] = [
        Self::NoCertificate,
        Self::BadCertificate,
        Self::Revoked,
        Self::Timeout,
        Self::Protocol,
        Self::Io,
        Self::OverCapacity,
    ];

    fn classify(e: &io::Error) -> Self {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented) => Self::NoCertificate,
            Some(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => Self::Revoked,
            Some(rustls::Error::InvalidCertificate(_)) => Self::BadCertificate,
            Some(_) => Self::Protocol,
            None if e.kind() == io::ErrorKind::InvalidData => Self::Protocol,
            None => Self::Io,
        }
    }
}

/// A snapshot of the front's counters, for metrics
/// (`picket_tls_front_<name>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsFrontStats {
    /// TCP connections accepted.
    pub accepted_total: u64,
    /// Handshakes completed (connections that reached the broker or tried to).
    pub handshakes_total: u64,
    /// Refused: no client certificate.
    pub refused_no_certificate_total: u64,
    /// Refused: certificate invalid for the fleet CA.
    pub refused_bad_certificate_total: u64,
    /// Refused: revoked certificate or device.
    pub refused_revoked_total: u64,
    /// Refused: handshake timeout.
    pub refused_timeout_total: u64,
    /// Refused: other TLS failures.
    pub refused_protocol_total: u64,
    /// Refused: I/O failure during the handshake.
    pub refused_io_total: u64,
    /// Refused: over the connection limit.
    pub refused_over_capacity_total: u64,
    /// The broker could not be reached for a verified connection.
    pub upstream_errors_total: u64,
    /// Live connections dropped by [`TlsFront::disconnect`].
    pub disconnected_total: u64,
    /// Connections in the TLS handshake now.
    pub handshaking: u64,
    /// Connections being proxied now.
    pub active: u64,
}

impl TlsFrontStats {
    /// Refused connections, all reasons.
    #[must_use]
    pub const fn refused_total(&self) -> u64 {
        self.refused_no_certificate_total
            + self.refused_bad_certificate_total
            + self.refused_revoked_total
            + self.refused_timeout_total
            + self.refused_protocol_total
            + self.refused_io_total
            + self.refused_over_capacity_total
    }

    /// Refused connections for one reason.
    #[must_use]
    pub const fn refused(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::NoCertificate => self.refused_no_certificate_total,
            Refusal::BadCertificate => self.refused_bad_certificate_total,
            Refusal::Revoked => self.refused_revoked_total,
            Refusal::Timeout => self.refused_timeout_total,
            Refusal::Protocol => self.refused_protocol_total,
            Refusal::Io => self.refused_io_total,
            Refusal::OverCapacity => self.refused_over_capacity_total,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    handshakes: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    upstream_errors: AtomicU64,
    disconnected: AtomicU64,
    handshaking: AtomicU64,
    active: AtomicU64,
}

impl Counters {
    fn refuse(&self, reason: Refusal, peer: SocketAddr, detail: &dyn fmt::Display) {
        let i = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, reason = reason.as_str(), %detail, "TLS connection refused");
    }
}

/// Increments a gauge and decrements it when dropped.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn new(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type Registry = HashMap<DeviceId, HashMap<u64, CancellationToken>>;

struct Shared {
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    revocations: Revocations,
    options: TlsFrontOptions,
    counters: Counters,
    connections: Mutex<Registry>,
    next_id: AtomicU64,
}

/// The mTLS front. Clones share one front (counters, live connections).
#[derive(Clone)]
pub struct TlsFront {
    shared: Arc<Shared>,
}

impl fmt::Debug for TlsFront {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFront")
            .field("upstream", &self.shared.upstream)
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TlsFront {
    /// A front proxying to `upstream` (the broker's loopback address), with
    /// default options. `revocations` is checked again once a connection is
    /// registered, closing the window between a handshake and a concurrent
    /// [`TlsFront::disconnect`].
    #[must_use]
    pub fn new(
        server_config: Arc<ServerConfig>,
        upstream: SocketAddr,
        revocations: Revocations,
    ) -> Self {
        Self::with_options(
            server_config,
            upstream,
            revocations,
            TlsFrontOptions::default(),
        )
    }

    /// [`TlsFront::new`] with explicit options.
    #[must_use]
    pub fn with_options(
        server_config: Arc<ServerConfig>,
        upstream: SocketAddr,
        revocations: Revocations,
        options: TlsFrontOptions,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                acceptor: TlsAcceptor::from(server_config),
                upstream,
                revocations,
                options,
                counters: Counters::default(),
                connections: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Accepts connections on `listener` until `shutdown` turns true (or its
    /// sender is dropped); then stops accepting and closes every live connection.
    pub async fn serve(&self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let root = CancellationToken::new();
        let mut stop = pin!(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let c = &self.shared.counters;
                    c.accepted.fetch_add(1, Ordering::Relaxed);
                    let open =
                        c.handshaking.load(Ordering::Relaxed) + c.active.load(Ordering::Relaxed);
                    if open >= self.shared.options.max_connections {
                        c.refuse(Refusal::OverCapacity, peer, &"connection limit reached");
                        continue;
                    }
                    let shared = self.shared.clone();
                    let root = root.clone();
                    tokio::spawn(async move { handle(&shared, tcp, peer, &root).await });
                }
                Err(e) => {
                    // Out of descriptors or a transient network error: back
                    // off a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a TLS connection failed");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        root.cancel();
        tracing::info!("TLS front stopped");
    }

    /// Drops every live connection of `device`; returns how many.
    pub fn disconnect(&self, device: &DeviceId) -> usize {
        let tokens = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device)
            .unwrap_or_default();
        for token in tokens.values() {
            token.cancel();
        }
        let n = tokens.len();
        self.shared
            .counters
            .disconnected
            .fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(%device, connections = n, "device disconnected");
        }
        n
    }

    /// Live connections of `device`.
    #[must_use]
    pub fn connections_of(&self, device: &DeviceId) -> usize {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .map_or(0, HashMap::len)
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> TlsFrontStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let refused = |r: Refusal| {
            let i = Refusal::ALL.iter().position(|x| *x == r).unwrap_or(0);
            get(&c.refused[i])
        };
        TlsFrontStats {
            accepted_total: get(&c.accepted),
            handshakes_total: get(&c.handshakes),
            refused_no_certificate_total: refused(Refusal::NoCertificate),
            refused_bad_certificate_total: refused(Refusal::BadCertificate),
            refused_revoked_total: refused(Refusal::Revoked),
            refused_timeout_total: refused(Refusal::Timeout),
            refused_protocol_total: refused(Refusal::Protocol),
            refused_io_total: refused(Refusal::Io),
            refused_over_capacity_total: refused(Refusal::OverCapacity),
            upstream_errors_total: get(&c.upstream_errors),
            disconnected_total: get(&c.disconnected),
            handshaking: get(&c.handshaking),
            active: get(&c.active),
        }
    }

    /// The counters in Prometheus text format.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        use fmt::Write as _;
        let s = self.stats();
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE picket_tls_front_accepted_total counter");
        let _ = writeln!(out, "picket_tls_front_accepted_total {}", s.accepted_total);
        let _ = writeln!(out, "# TYPE picket_tls_front_handshakes_total counter");
        let _ = writeln!(
            out,
            "picket_tls_front_handshakes_total {}",
            s.handshakes_total
        );
        let _ = writeln!(out, "# TYPE picket_tls_front_refused_total counter");
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "picket_tls_front_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                s.refused(r)
            );
        }
        let _ = writeln!(out, "# TYPE picket_tls_front_upstream_errors_total counter");
        let _ = writeln!(
            out,
            "picket_tls_front_upstream_errors_total {}",
            s.upstream_errors_total
        );
        let _ = writeln!(out, "# TYPE picket_tls_front_disconnected_total counter");
        let _ = writeln!(
            out,
            "picket_tls_front_disconnected_total {}",
            s.disconnected_total
        );
        let _ = writeln!(out, "# TYPE picket_tls_front_handshaking gauge");
        let _ = writeln!(out, "picket_tls_front_handshaking {}", s.handshaking);
        let _ = writeln!(out, "# TYPE picket_tls_front_active gauge");
        let _ = writeln!(out, "picket_tls_front_active {}", s.active);
        out
    }
}

/// Removes a connection from the registry when it ends.
struct Registration<'a> {
    shared: &'a Shared,
    device: DeviceId,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = map.get_mut(&self.device) {
            conns.remove(&self.id);
            if conns.is_empty() {
                map.remove(&self.device);
            }
        }
    }
}

async fn handle(shared: &Shared, tcp: TcpStream, peer: SocketAddr, root: &CancellationToken) {
    let counters = &shared.counters;
    let handshaking = Gauge::new(&counters.handshaking);
    let _ = tcp.set_nodelay(true);
    let accept = tokio::time::timeout(
        shared.options.handshake_timeout,
        shared.acceptor.accept(tcp),
    );
    let mut tls = tokio::select! {
        () = root.cancelled() => return,
        r = accept => match r {
            Err(_) => {
                counters.refuse(Refusal::Timeout, peer, &"handshake timed out");
                return;
            }
            Ok(Err(e)) => {
                counters.refuse(Refusal::classify(&e), peer, &e);
                return;
            }
            Ok(Ok(tls)) => tls,
        },
    };
    drop(handshaking);
    counters.handshakes.fetch_add(1, Ordering::Relaxed);

    let device = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| device_id_of_cert(cert));
    let token = root.child_token();
    let _registration = device.map(|device| {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(device)
            .or_default()
            .insert(id, token.clone());
        Registration { shared, device, id }
    });
    // A revocation between the verifier's check and the registration above
    // would have missed this connection in `disconnect`: look again.
    if device.is_some_and(|d| shared.revocations.is_revoked_device(&d)) {
        counters.refuse(Refusal::Revoked, peer, &"revoked during the handshake");
        return;
    }
    let _active = Gauge::new(&counters.active);

    let connect = tokio::time::timeout(
        shared.options.upstream_connect_timeout,
        TcpStream::connect(shared.upstream),
    );
    let mut upstream = tokio::select! {
        () = token.cancelled() => return,
        r = connect => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(upstream = %shared.upstream, error = %e, "broker unreachable");
                return;
            }
            Err(_) => {
                counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(upstream = %shared.upstream, "broker connect timed out");
                return;
            }
        },
    };
    let _ = upstream.set_nodelay(true);
    let size = shared.options.buffer_bytes.max(512);
    tokio::select! {
        () = token.cancelled() => {
            tracing::debug!(%peer, ?device, "connection closed by disconnect or shutdown");
        }
        r = tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut upstream, size, size) => {
            match r {
                Ok((up, down)) => tracing::debug!(%peer, ?device, up, down, "connection closed"),
                Err(e) => tracing::debug!(%peer, ?device, error = %e, "connection failed"),
            }
        }
    }
}
