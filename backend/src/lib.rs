//! The Picket fleet backend: broker, enrollment, ingest, storage and API in
//! one process.
//!
//! ```text
//!  appliances ══ MQTT over mTLS ══► TlsFront (public port; fleet CA client certs, revocation)
//!                                      │ plaintext, loopback
//!                                      ▼
//!                                  rumqttd (embedded broker, own threads)     or  external broker
//!                                      │ picket/v1/devices/+/{alerts,heartbeat}    ($share/<group>/…, mTLS)
//!                                      ▼
//!                                  ingest: topic → device → its key → verify, inflate, decode
//!                                      │ coalesced transactions, de-dup by alert id, ack after commit
//!                                      ▼
//!                                  Store (SQLite in data_dir, or PostgreSQL) ──► retention task
//!                                      │
//!          live broadcast (LiveEvent) ─┴─► API (axum): REST, /api/v1/stream WebSocket, /metrics
//! ```
//!
//! - [`config`]: two-stage configuration (`default_config.toml` embedded).
//! - [`broker`]: the embedded rumqttd on a loopback port.
//! - [`ingest`]: the MQTT subscriber, verification, batching into the store.
//! - [`fleet`]: [`picket_api::Fleet`] for the running backend (enroll,
//!   revoke, metrics, readiness).
//! - [`hunts`]: hunting jobs, uploaded EVTX files scanned in the
//!   background with the agent rule set.
//! - `pki`, `enroll`, `tls_front`: the fleet CA, enrollment, the mTLS front.
//! - `https`: TLS on the HTTP listener (`[http] tls`: PEM files or a
//!   fleet-CA server certificate).
//!
//! [`run`] wires them and serves until its shutdown signal:
//!
//! ```no_run
//! # async fn demo() -> Result<(), picket_backend::BackendError> {
//! let config = picket_backend::config::Config::ephemeral(std::path::Path::new("/tmp/picket"));
//! let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
//! let (started_tx, started) = tokio::sync::oneshot::channel();
//! let backend = tokio::spawn(picket_backend::run_with(config, shutdown, Some(started_tx)));
//! let started = started.await.expect("backend started");
//! println!("API on {}, MQTT on {:?}", started.http, started.mqtt);
//! shutdown_tx.send(true).ok();
//! backend.await.expect("join")?;
//! # Ok(()) }
//! ```

pub mod agents;
pub mod broker;
pub mod config;
pub mod fleet;
pub mod hunts;
pub mod ingest;
pub mod rollout;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use picket_api::{ApiConfig, ApiContext, LiveEvent};
use picket_store::Store;
use tokio::sync::{broadcast, oneshot, watch};

use crate::config::{Config, DatabaseConfig, ExternalTls, MqttConfig};
use crate::fleet::BackendFleet;
use crate::ingest::{DeviceRegistry, IngestContext, IngestMetrics, IngestSource};

/// Why the backend could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The database could not be opened or read.
    #[error("database: {0}")]
    Store(#[from] picket_store::StoreError),
    /// The fleet CA or TLS setup failed.
    #[error("pki: {0}")]
    Pki(#[from] pki::PkiError),
    /// The embedded broker failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// A listener could not be bound, or a file could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What failed (`http listen 0.0.0.0:8080`).
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS settings for an external broker are unusable.
    #[error("external broker TLS: {0}")]
    Tls(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let what = what.into();
    move |source| BackendError::Io { what, source }
}

/// Where a started backend listens.
#[derive(Debug, Clone)]
pub struct Started {
    /// The HTTP API.
    pub http: SocketAddr,
    /// The public MQTT (mTLS) port of the embedded broker; `None` with an
    /// external broker.
    pub mqtt: Option<SocketAddr>,
    /// The embedded broker's plaintext loopback port (tests, benchmarks).
    pub broker_loopback: Option<SocketAddr>,
    /// Fleet actions (enroll, revoke) as the API sees them.
    pub fleet: Arc<BackendFleet>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The live event channel.
    pub live: broadcast::Sender<LiveEvent>,
}

/// Runs the backend until `shutdown` turns true.
///
/// # Errors
/// [`BackendError`] when something cannot start.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), BackendError> {
    run_with(config, shutdown, None).await
}

/// Opens the configured store.
///
/// # Errors
/// The store's error.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, BackendError> {
    Ok(match &config.database {
        DatabaseConfig::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            }
            Arc::new(picket_store::sqlite::SqliteStore::open(path)?)
        }
        DatabaseConfig::Postgres { url, schema: None } => {
            Arc::new(picket_store::postgres::PgStore::connect(url).await?)
        }
        DatabaseConfig::Postgres {
            url,
            schema: Some(schema),
        } => Arc::new(picket_store::postgres::PgStore::connect_with_schema(url, schema).await?),
    })
}

/// Random 64-bit hex (client ids).
fn random_hex() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex(&b)
}

/// Lower-case hex of `bytes` (ids, digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A stable client id for this replica (kept in the data directory), so its
/// persistent session on an external broker survives restarts.
fn replica_client_id(data_dir: &std::path::Path) -> Result<String, BackendError> {
    let path = data_dir.join("ingest-client-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_owned());
        }
    }
    let id = format!("picket-ingest-{}", random_hex());
    std::fs::write(&path, &id).map_err(io(format!("write {}", path.display())))?;
    Ok(id)
}

fn external_tls(
    tls: &ExternalTls,
    ca: &pki::FleetCa,
) -> Result<Arc<rustls::ClientConfig>, BackendError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    match tls {
        ExternalTls::FleetIssued => Ok(ca.client_config_for_backend()?),
        ExternalTls::Files {
            ca_file,
            cert_file,
            key_file,
        } => {
            let read =
                |p: &std::path::Path| std::fs::read(p).map_err(io(format!("read {}", p.display())));
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read(ca_file)?) {
                let c = c.map_err(|e| BackendError::Tls(format!("{}: {e}", ca_file.display())))?;
                roots
                    .add(c)
                    .map_err(|e| BackendError::Tls(format!("{}: {e}", ca_file.display())))?;
            }
            let chain = CertificateDer::pem_slice_iter(&read(cert_file)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::Tls(format!("{}: {e}", cert_file.display())))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
                .map_err(|e| BackendError::Tls(format!("{}: {e}", key_file.display())))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| BackendError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|e| BackendError::Tls(e.to_string()))?;
            Ok(Arc::new(config))
        }
    }
}

/// [`run`], reporting the bound addresses on `started` once everything
/// listens (tests and benchmarks bind port 0).
///
/// # Errors
/// [`BackendError`] when something cannot start.
#[expect(clippy::too_many_lines, reason = "the wiring reads best in one place")]
pub async fn run_with(
    config: Config,
    shutdown: watch::Receiver<bool>,
    started: Option<oneshot::Sender<Started>>,
) -> Result<(), BackendError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("create data_dir {}", config.data_dir.display())))?;
    let store = open_store(&config).await?;
    let ca = Arc::new(pki::FleetCa::load_or_create(&config.data_dir)?);
    let devices = store.devices().await?;
    let revocations = pki::Revocations::from_devices(&devices);
    ca.write_crl(&revocations)?;
    let registry = Arc::new(DeviceRegistry::load(store.clone()).await?);
    let metrics = Arc::new(IngestMetrics::default());
    let (live, _) = broadcast::channel::<LiveEvent>(4096);

    let mut tasks = tokio::task::JoinSet::new();
    let (mqtt_public, loopback, front, source) = match &config.mqtt {
        MqttConfig::Embedded(m) => {
            match broker::raise_nofile_limit() {
                Ok(n) => tracing::debug!(nofile = n, "descriptor limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the descriptor limit"),
            }
            let b = broker::start(m)?;
            let server = ca.server_config(&m.hostnames, &revocations)?;
            let listener = tokio::net::TcpListener::bind(m.listen)
                .await
                .map_err(io(format!("mqtt listen {}", m.listen)))?;
            let public = listener
                .local_addr()
                .map_err(io(format!("mqtt listen {}", m.listen)))?;
            let front = tls_front::TlsFront::with_options(
                server,
                b.loopback,
                revocations.clone(),
                tls_front::TlsFrontOptions {
                    max_connections: m.max_connections as u64,
                    ..tls_front::TlsFrontOptions::default()
                },
            );
            {
                let front = front.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move { front.serve(listener, shutdown).await });
            }
            tracing::info!(%public, loopback = %b.loopback, "embedded broker behind the mTLS front");
            let source = IngestSource {
                host: b.loopback.ip().to_string(),
                port: b.loopback.port(),
                tls: None,
                client_id: format!("picket-ingest-{}", random_hex()),
                persistent_session: false,
                share_group: None,
                max_packet_bytes: m.max_packet_bytes,
            };
            (Some(public), Some(b.loopback), Some(front), source)
        }
        MqttConfig::External(x) => {
            let tls = x.tls.as_ref().map(|t| external_tls(t, &ca)).transpose()?;
            let client_id = match &x.client_id {
                Some(c) => c.clone(),
                None => replica_client_id(&config.data_dir)?,
            };
            let source = IngestSource {
                host: x.host.clone(),
                port: x.port,
                tls,
                client_id,
                persistent_session: true,
                share_group: x.share_group.clone(),
                max_packet_bytes: x.max_packet_bytes,
            };
            (None, None, None, source)
        }
    };

    let rollouts = if config.bundles.controller {
        let (engine, engine_tasks) = rollout::RolloutEngine::open(
            store.clone(),
            registry.clone(),
            ca.command_key().clone(),
            config.bundles.root_file.clone(),
        )
        .await?;
        tasks.spawn(engine.clone().run(
            engine_tasks,
            source.clone(),
            config.bundles.tick,
            live.subscribe(),
            shutdown.clone(),
        ));
        Some(engine)
    } else {
        None
    };
    let https = https::server_config(&config.http.tls, &ca)?;
    let https_stats = https
        .as_ref()
        .map(|_| Arc::new(https::HttpsStats::default()));
    let agent_streams = agents::AgentStreams::new(
        agents::load_rules(&config.agents.rules_dirs),
        store.clone(),
        live.clone(),
    );
    let hunts = Arc::new(
        hunts::Hunts::new(
            store.clone(),
            agent_streams.rules(),
            config.data_dir.join("hunts"),
            config.hunts.clone(),
            live.clone(),
        )
        .map_err(io("start hunting jobs"))?,
    );
    tasks.spawn(hunts.clone().run(shutdown.clone()));
    let fleet = Arc::new(
        BackendFleet::new(
            store.clone(),
            ca.clone(),
            revocations.clone(),
            registry.clone(),
            metrics.clone(),
            front,
            live.clone(),
        )
        .with_rollouts(rollouts)
        .with_https(https_stats.clone())
        .with_agents(Some(agent_streams))
        .with_hunts(Some(hunts)),
    );

    let ingest_ctx = IngestContext {
        store: store.clone(),
        registry,
        live: live.clone(),
        metrics,
    };
    tasks.spawn(ingest::run(
        ingest_ctx,
        source,
        config.ingest.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(retention(store.clone(), config.clone(), shutdown.clone()));

    let api = picket_api::router_with_ui(
        ApiContext {
            store: store.clone(),
            fleet: fleet.clone(),
            live: live.clone(),
            config: ApiConfig {
                session_ttl: config.http.session_ttl,
                offline_after: config.ingest.offline_after,
                agent_streams: picket_api::AgentStreamLimits {
                    idle_timeout: config.agents.idle_timeout,
                    write_timeout: config.agents.write_timeout,
                    max_streams: config.agents.max_streams,
                },
                ..ApiConfig::default()
            },
        },
        picket_ui::router(),
    );
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(io(format!("http listen {}", config.http.listen)))?;
    let http_addr = http
        .local_addr()
        .map_err(io(format!("http listen {}", config.http.listen)))?;
    tracing::info!(%http_addr, tls = https.is_some(), "API listening");
    {
        let mut stop = shutdown.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match (https, https_stats) {
            (Some(tls), Some(stats)) => {
                let listener = https::TlsListener::new(http, tls, stats, shutdown.clone());
                tasks.spawn(async move {
                    let serve = axum::serve(listener, api).with_graceful_shutdown(stopped);
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "API server failed");
                    }
                });
            }
            _ => {
                tasks.spawn(async move {
                    let serve = axum::serve(http, api).with_graceful_shutdown(stopped);
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "API server failed");
                    }
                });
            }
        }
    }

    if let Some(tx) = started {
        let _ = tx.send(Started {
            http: http_addr,
            mqtt: mqtt_public,
            broker_loopback: loopback,
            fleet,
            store,
            live,
        });
    }
    let mut shutdown = shutdown;
    let _ = shutdown.wait_for(|s| *s).await;
    // Give the tasks a moment to finish their transaction and say goodbye.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tracing::info!("backend stopped");
    Ok(())
}

async fn retention(store: Arc<dyn Store>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let r = config.retention;
    if r.max_age.is_none() && r.max_alerts.is_none() {
        return;
    }
    let max_age_ms = r
        .max_age
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    loop {
        match store
            .apply_retention(ingest::now_ms(), max_age_ms, r.max_alerts)
            .await
        {
            Ok(rep) if rep.expired + rep.trimmed > 0 => {
                tracing::info!(
                    expired = rep.expired,
                    trimmed = rep.trimmed,
                    "retention removed alerts"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(r.interval) => {}
        }
    }
}
pub mod enroll;
pub mod https;
pub mod pki;
pub mod tls_front;
