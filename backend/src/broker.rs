//! The embedded MQTT broker: rumqttd listening in plaintext on a loopback
//! port, in its own threads. Devices never reach it directly: the PKI's
//! `TlsFront` terminates mTLS on the public port and proxies the bytes here,
//! and ingest subscribes here over plain TCP.
//!
//! rumqttd binds its listener itself and cannot be handed one, so the port is
//! chosen by binding `127.0.0.1:0`, reading the port and releasing it; the
//! broker is then probed until it accepts. rumqttd has no shutdown: its
//! threads live as long as the process (the loopback port stays bound), which
//! is what a service wants and what tests tolerate.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::config::EmbeddedMqtt;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No free loopback port, or the broker thread could not be spawned.
    #[error("embedded broker: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not accept connections on its loopback port in time.
    #[error("embedded broker did not start listening on {addr} within {waited:?}")]
    NotListening {
        /// The loopback address.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Its plaintext loopback listener (for TlsFront and ingest).
    pub loopback: SocketAddr,
}

/// Router and listener settings for `cfg`: connection limits for the
/// configured fleet size, payloads up to `max_packet_bytes`.
#[must_use]
pub fn rumqttd_config(cfg: &EmbeddedMqtt, loopback: SocketAddr) -> rumqttd::Config {
    use std::collections::HashMap;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 30_000,
        max_payload_size: cfg.max_packet_bytes,
        // Incoming QoS1 publishes in flight per connection.
        max_inflight_count: 512,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "picket-loopback".into(),
        listen: loopback,
        tls: None,
        // rumqttd sleeps this long after each accept; 10,000 devices
        // reconnecting at once must not queue behind it.
        next_connection_delay_ms: 0,
        connections,
    };
    let router = rumqttd::RouterConfig {
        // Devices plus ingest (and a few spare for replicas and tools).
        max_connections: cfg.max_connections + 16,
        max_outgoing_packet_count: 512,
        // The per-filter commit log holds messages until every subscriber
        // read them; 4 x 32 MiB buffers seconds of full-rate traffic while
        // bounding memory.
        max_segment_size: 32 << 20,
        max_segment_count: 4,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::default(),
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// Starts rumqttd on a free loopback port and waits until it accepts.
///
/// # Errors
/// [`BrokerError`] when no port is free, the thread cannot start or the
/// broker does not listen within 10 s.
pub fn start(cfg: &EmbeddedMqtt) -> Result<EmbeddedBroker, BrokerError> {
    let loopback = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = rumqttd_config(cfg, loopback);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    let waited = Duration::from_secs(10);
    let deadline = Instant::now() + waited;
    loop {
        if TcpStream::connect_timeout(&loopback, Duration::from_millis(200)).is_ok() {
            tracing::info!(%loopback, "embedded broker listening");
            return Ok(EmbeddedBroker { loopback });
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening {
                addr: loopback,
                waited,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Raises `RLIMIT_NOFILE` (each device costs up to three descriptors: its
/// TLS socket and both ends of the loopback one): to at least 65,536 when
/// the process may raise its hard limit (root, `CAP_SYS_RESOURCE`), else the
/// soft limit to the hard one. Returns the new soft limit.
///
/// # Errors
/// The OS error from `getrlimit`/`setrlimit`.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    const WANT: libc::rlim_t = 1 << 16;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let set = |cur: libc::rlim_t, max: libc::rlim_t| {
        let want = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: `want` is a valid rlimit; the call only reads it.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 }
    };
    if lim.rlim_max < WANT && set(WANT, WANT) {
        return Ok(WANT);
    }
    if lim.rlim_cur < lim.rlim_max {
        if !set(lim.rlim_max, lim.rlim_max) {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}
