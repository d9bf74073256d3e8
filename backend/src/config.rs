//! Configuration in two stages: [`RawConfig`] is what the TOML file says
//! (serde, `deny_unknown_fields`, every option optional with the defaults of
//! `default_config.toml`), [`Config`] is the checked, typed form `run` uses
//! (real `Duration`s, tagged alternatives, resolved paths).
//!
//! Loading never panics; every problem names the option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The embedded default configuration (printed by `generate-config`).
pub const DEFAULT_CONFIG: &str = include_str!("../default_config.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped options.
    #[error("config {origin}: {message}")]
    Parse {
        /// The file, or `default`.
        origin: String,
        /// The parser's message (names the option and line).
        message: String,
    },
    /// An option has a value outside its range.
    #[error("config option {option}: {reason}")]
    Invalid {
        /// Dotted option name (`ingest.commit_max_alerts`).
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

// ---------------------------------------------------------------- raw stage

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    database: Option<RawDatabase>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    bundles: RawBundles,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    agents: RawAgents,
    #[serde(default)]
    hunts: RawHunts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<SocketAddr>,
    session_ttl_secs: Option<u64>,
    tls: Option<RawHttpTls>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_hostnames: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawHttpTls {
    Off,
    Files,
    FleetCa,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
enum RawMqtt {
    Embedded {
        listen: Option<SocketAddr>,
        hostnames: Option<Vec<String>>,
        max_connections: Option<usize>,
        max_packet_bytes: Option<usize>,
    },
    External {
        host: String,
        port: Option<u16>,
        tls: Option<bool>,
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        share_group: Option<String>,
        client_id: Option<String>,
        max_packet_bytes: Option<usize>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawDatabase {
    Sqlite { path: Option<PathBuf> },
    Postgres { url: String, schema: Option<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age_days: Option<u64>,
    max_alerts: Option<u64>,
    interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundles {
    root_file: Option<PathBuf>,
    controller: Option<bool>,
    tick_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHunts {
    max_upload_bytes: Option<u64>,
    concurrent_jobs: Option<usize>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    rules_dirs: Option<Vec<PathBuf>>,
    idle_timeout_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
    max_streams: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    offline_after_secs: Option<u64>,
    commit_max_alerts: Option<usize>,
    commit_interval_ms: Option<u64>,
    queue_batches: Option<usize>,
    dedup_cache_alerts: Option<usize>,
}

// -------------------------------------------------------------- typed stage

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked configuration `run` takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database, fleet CA, command key, crl.pem.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// Where device traffic comes from.
    pub mqtt: MqttConfig,
    /// Storage.
    pub database: DatabaseConfig,
    /// Alert retention.
    pub retention: RetentionConfig,
    /// Ingest tuning.
    pub ingest: IngestConfig,
    /// Rule bundles and rollouts.
    pub bundles: BundlesConfig,
    /// Windows/macOS agent streams.
    pub agents: AgentsConfig,
    /// Hunting jobs over uploaded EVTX files.
    pub hunts: HuntsConfig,
}

/// Hunting jobs (`POST /api/v1/hunts`): uploaded EVTX files scanned with
/// the agent rule set, files kept in `data_dir/hunts/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntsConfig {
    /// The most bytes one upload may carry (413 beyond).
    pub max_upload_bytes: u64,
    /// Jobs run at once.
    pub concurrent_jobs: usize,
    /// Threads that parse and evaluate chunks (shared by the jobs).
    pub threads: usize,
}

impl Default for HuntsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 1 << 30,
            concurrent_jobs: 1,
            threads: 2,
        }
    }
}

/// Windows/macOS agent streams (`GET /api/v1/agents/stream`).
#[derive(Debug, Clone)]
pub struct AgentsConfig {
    /// Folders (searched recursively for `.yml`/`.yaml`) and files of Sigma
    /// rules evaluated on agent events, loaded at start; relative paths are
    /// under `data_dir`. Empty (the default): lines are mapped and checked
    /// but raise no alerts.
    pub rules_dirs: Vec<PathBuf>,
    /// A stream that sends nothing for this long is closed (default 120 s).
    pub idle_timeout: Duration,
    /// A stream whose answer cannot be written within this is closed
    /// (default 30 s).
    pub write_timeout: Duration,
    /// Concurrent agent streams; more are refused with 503 (default 10,000).
    pub max_streams: usize,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        let limits = picket_api::AgentStreamLimits::default();
        Self {
            rules_dirs: Vec::new(),
            idle_timeout: limits.idle_timeout,
            write_timeout: limits.write_timeout,
            max_streams: limits.max_streams,
        }
    }
}

/// Rule bundles and rollouts.
#[derive(Debug, Clone)]
pub struct BundlesConfig {
    /// The fleet's root metadata; pushed bundles must verify against it.
    pub root_file: PathBuf,
    /// Run the rollout controller in this process.
    pub controller: bool,
    /// How often rollouts are evaluated.
    pub tick: Duration,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// tracing filter directive.
    pub filter: String,
}

/// The HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (port 0: any free port, reported by `Started`).
    pub listen: SocketAddr,
    /// Login session lifetime.
    pub session_ttl: Duration,
    /// Plain HTTP or HTTPS (API, UI and WebSockets alike).
    pub tls: HttpTls,
}

/// Whether and how the HTTP listener speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HttpTls {
    /// Plain HTTP (the default, on loopback).
    #[default]
    Off,
    /// A certificate chain and key from PEM files (any PKI).
    Files {
        /// Certificate chain, leaf first.
        cert_file: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key_file: PathBuf,
    },
    /// A server certificate the fleet CA issues for `hostnames` (kept in the
    /// data directory, renewed 30 days before it expires): HTTPS with no
    /// outside PKI; clients trust the fleet CA (`ca.pem`).
    FleetCa {
        /// DNS names or IP addresses in the certificate.
        hostnames: Vec<String>,
    },
}

/// Where device traffic comes from.
#[derive(Debug, Clone)]
pub enum MqttConfig {
    /// The backend's own broker behind its mTLS front.
    Embedded(EmbeddedMqtt),
    /// An external broker.
    External(ExternalMqtt),
}

/// The embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedMqtt {
    /// Public mTLS listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Names in the server certificate.
    pub hostnames: Vec<String>,
    /// Concurrent device connections.
    pub max_connections: usize,
    /// Largest MQTT packet.
    pub max_packet_bytes: usize,
}

/// An external broker.
#[derive(Debug, Clone)]
pub struct ExternalMqtt {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS settings; `None` for plaintext (loopback test brokers only).
    pub tls: Option<ExternalTls>,
    /// Shared-subscription group; `None` subscribes without `$share`.
    pub share_group: Option<String>,
    /// MQTT client id; `None` derives a unique one.
    pub client_id: Option<String>,
    /// Largest MQTT packet.
    pub max_packet_bytes: usize,
}

/// How the backend authenticates to an external broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalTls {
    /// The fleet CA as trust anchor and a client certificate the fleet CA
    /// issues to the backend (kept in the data directory).
    FleetIssued,
    /// PEM files.
    Files {
        /// Trust anchors for the broker's certificate.
        ca_file: PathBuf,
        /// Client certificate chain.
        cert_file: PathBuf,
        /// Client key.
        key_file: PathBuf,
    },
}

/// Storage.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// SQLite file.
    Sqlite {
        /// The database file (resolved against `data_dir`).
        path: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema for the tables (`None`: the server's default search path).
        schema: Option<String>,
    },
}

/// Alert retention.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Delete alerts older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many alerts.
    pub max_alerts: Option<u64>,
    /// How often retention runs.
    pub interval: Duration,
}

/// Ingest tuning.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Offline after this long without traffic.
    pub offline_after: Duration,
    /// Alerts per database transaction, at most.
    pub commit_max_alerts: usize,
    /// Longest wait for a transaction to fill.
    pub commit_interval: Duration,
    /// Verified batches waiting for the database.
    pub queue_batches: usize,
    /// Alert ids remembered for de-duplication.
    pub dedup_cache_alerts: usize,
}

impl Default for Config {
    /// The embedded default (what runs without a config file).
    fn default() -> Self {
        // The embedded default is checked by a unit test, so this cannot fail
        // in a released build; fall back to a hand-built value regardless.
        Self::from_toml(DEFAULT_CONFIG, "default").unwrap_or_else(|_| {
            RawConfig::default()
                .validate()
                .unwrap_or_else(|_| unreachable_default())
        })
    }
}

#[expect(clippy::panic, reason = "the defaults are covered by a unit test")]
fn unreachable_default() -> Config {
    panic!("built-in configuration defaults are invalid")
}

impl Config {
    /// Parses and checks TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    /// Loads a file; `None` means the embedded default.
    ///
    /// # Errors
    /// [`ConfigError::Read`], then as [`Config::from_toml`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_toml(DEFAULT_CONFIG, "default"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, &p.display().to_string())
            }
        }
    }

    /// A configuration for tests and benchmarks: everything embedded in
    /// `data_dir`, every listener on `127.0.0.1:0`.
    #[must_use]
    pub fn ephemeral(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            database: DatabaseConfig::Sqlite {
                path: data_dir.join("picket.db"),
            },
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..Self::default().http
            },
            mqtt: MqttConfig::Embedded(EmbeddedMqtt {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                hostnames: vec!["localhost".into(), "127.0.0.1".into()],
                max_connections: 12_000,
                max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            }),
            bundles: BundlesConfig {
                root_file: data_dir.join("bundle-root.pbroot"),
                tick: Duration::from_millis(200),
                ..Self::default().bundles
            },
            ..Self::default()
        }
    }
}

/// A frame (128 KiB at most) plus room for the topic and MQTT header.
pub const DEFAULT_MAX_PACKET_BYTES: usize = picket_proto::MAX_FRAME_LEN + 4096;

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

/// `None` stays `None`; a zero is refused.
fn positive<T: Default + PartialEq>(
    option: &'static str,
    v: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match v {
        Some(v) if v == T::default() => Err(invalid(option, "must be at least 1")),
        v => Ok(v),
    }
}

fn nonzero_secs(option: &'static str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(invalid(option, "must be at least 1"));
    }
    Ok(Duration::from_secs(v))
}

fn packet_bytes(option: &'static str, v: Option<usize>) -> Result<usize, ConfigError> {
    let v = v.unwrap_or(DEFAULT_MAX_PACKET_BYTES);
    if v < picket_proto::MAX_FRAME_LEN + 256 {
        return Err(invalid(
            option,
            format!(
                "{v} is below the largest frame ({} bytes) plus topic",
                picket_proto::MAX_FRAME_LEN
            ),
        ));
    }
    if v > 16 << 20 {
        return Err(invalid(option, format!("{v} is above 16 MiB")));
    }
    Ok(v)
}

/// `[http] tls*`: `tls` defaults to `files` when a certificate file is
/// named, else `off`.
fn http_tls(raw: &RawHttp, data_dir: &Path) -> Result<HttpTls, ConfigError> {
    let under = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            data_dir.join(p)
        }
    };
    let files = raw.tls_cert_file.is_some() || raw.tls_key_file.is_some();
    let mode = raw.tls.unwrap_or(if files {
        RawHttpTls::Files
    } else {
        RawHttpTls::Off
    });
    if mode != RawHttpTls::FleetCa && raw.tls_hostnames.is_some() {
        return Err(invalid("http.tls_hostnames", "needs tls = \"fleet-ca\""));
    }
    match mode {
        RawHttpTls::Off if files => Err(invalid(
            "http.tls_cert_file",
            "tls_cert_file/tls_key_file need tls = \"files\"",
        )),
        RawHttpTls::Off => Ok(HttpTls::Off),
        RawHttpTls::Files => match (&raw.tls_cert_file, &raw.tls_key_file) {
            (Some(c), Some(k)) => Ok(HttpTls::Files {
                cert_file: under(c),
                key_file: under(k),
            }),
            _ => Err(invalid(
                "http.tls_cert_file",
                "tls = \"files\" needs both tls_cert_file and tls_key_file",
            )),
        },
        RawHttpTls::FleetCa if files => Err(invalid(
            "http.tls_cert_file",
            "tls = \"fleet-ca\" issues its own certificate: remove tls_cert_file/tls_key_file",
        )),
        RawHttpTls::FleetCa => {
            let hostnames = raw
                .tls_hostnames
                .clone()
                .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()]);
            if hostnames.is_empty() {
                return Err(invalid("http.tls_hostnames", "must name at least one host"));
            }
            Ok(HttpTls::FleetCa { hostnames })
        }
    }
}

impl RawConfig {
    /// Checks every option and resolves defaults.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad option.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./picket-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let log = LogConfig {
            format: self.log.format.unwrap_or(LogFormat::Text),
            filter: self.log.filter.unwrap_or_else(|| "info".into()),
        };
        let http = HttpConfig {
            listen: self
                .http
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            session_ttl: nonzero_secs(
                "http.session_ttl_secs",
                self.http.session_ttl_secs.unwrap_or(43_200),
            )?,
            tls: http_tls(&self.http, &data_dir)?,
        };
        let mqtt = match self.mqtt {
            None => MqttConfig::Embedded(EmbeddedMqtt {
                listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
                hostnames: vec!["localhost".into(), "127.0.0.1".into()],
                max_connections: 12_000,
                max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            }),
            Some(RawMqtt::Embedded {
                listen,
                hostnames,
                max_connections,
                max_packet_bytes,
            }) => {
                let hostnames =
                    hostnames.unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()]);
                if hostnames.is_empty() || hostnames.iter().any(String::is_empty) {
                    return Err(invalid(
                        "mqtt.hostnames",
                        "needs at least one non-empty name",
                    ));
                }
                let max_connections = max_connections.unwrap_or(12_000);
                if !(1..=1_000_000).contains(&max_connections) {
                    return Err(invalid("mqtt.max_connections", "must be 1..=1000000"));
                }
                MqttConfig::Embedded(EmbeddedMqtt {
                    listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8883))),
                    hostnames,
                    max_connections,
                    max_packet_bytes: packet_bytes("mqtt.max_packet_bytes", max_packet_bytes)?,
                })
            }
            Some(RawMqtt::External {
                host,
                port,
                tls,
                ca_file,
                cert_file,
                key_file,
                share_group,
                client_id,
                max_packet_bytes,
            }) => {
                if host.is_empty() {
                    return Err(invalid("mqtt.host", "must not be empty"));
                }
                let tls_on = tls.unwrap_or(true);
                let tls = match (tls_on, ca_file, cert_file, key_file) {
                    (false, None, None, None) => None,
                    (false, ..) => {
                        return Err(invalid(
                            "mqtt.tls",
                            "ca_file/cert_file/key_file need tls = true",
                        ))
                    }
                    (true, None, None, None) => Some(ExternalTls::FleetIssued),
                    (true, Some(ca_file), Some(cert_file), Some(key_file)) => {
                        Some(ExternalTls::Files {
                            ca_file,
                            cert_file,
                            key_file,
                        })
                    }
                    (true, ..) => {
                        return Err(invalid(
                            "mqtt.ca_file",
                            "give all of ca_file, cert_file and key_file, or none \
                             (then the fleet CA issues the backend's certificate)",
                        ))
                    }
                };
                let share_group = match share_group {
                    None => Some("picket-ingest".to_owned()),
                    Some(g) if g.is_empty() => None,
                    Some(g) => {
                        if g.contains(['/', '+', '#']) {
                            return Err(invalid(
                                "mqtt.share_group",
                                "must not contain '/', '+' or '#'",
                            ));
                        }
                        Some(g)
                    }
                };
                MqttConfig::External(ExternalMqtt {
                    host,
                    port: port.unwrap_or(if tls_on { 8883 } else { 1883 }),
                    tls,
                    share_group,
                    client_id,
                    max_packet_bytes: packet_bytes("mqtt.max_packet_bytes", max_packet_bytes)?,
                })
            }
        };
        let database = match self.database {
            None => DatabaseConfig::Sqlite {
                path: data_dir.join("picket.db"),
            },
            Some(RawDatabase::Sqlite { path }) => DatabaseConfig::Sqlite {
                path: data_dir.join(path.unwrap_or_else(|| PathBuf::from("picket.db"))),
            },
            Some(RawDatabase::Postgres { url, schema }) => {
                if let Some(s) = &schema {
                    if s.is_empty()
                        || !s
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        return Err(invalid(
                            "database.schema",
                            "lowercase letters, digits and '_' only",
                        ));
                    }
                }
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(invalid(
                        "database.url",
                        "must start with postgres:// or postgresql://",
                    ));
                }
                DatabaseConfig::Postgres { url, schema }
            }
        };
        let retention = RetentionConfig {
            max_age: match self.retention.max_age_days.unwrap_or(90) {
                0 => None,
                d => Some(Duration::from_secs(d.saturating_mul(86_400))),
            },
            max_alerts: match self.retention.max_alerts.unwrap_or(50_000_000) {
                0 => None,
                n => Some(n),
            },
            interval: nonzero_secs(
                "retention.interval_secs",
                self.retention.interval_secs.unwrap_or(3600),
            )?,
        };
        let i = self.ingest;
        let commit_max_alerts = i.commit_max_alerts.unwrap_or(8192);
        if !(1..=1_000_000).contains(&commit_max_alerts) {
            return Err(invalid("ingest.commit_max_alerts", "must be 1..=1000000"));
        }
        let commit_interval_ms = i.commit_interval_ms.unwrap_or(20);
        if commit_interval_ms > 10_000 {
            return Err(invalid(
                "ingest.commit_interval_ms",
                "must be at most 10000",
            ));
        }
        let queue_batches = i.queue_batches.unwrap_or(512);
        if queue_batches == 0 {
            return Err(invalid("ingest.queue_batches", "must be at least 1"));
        }
        let ingest = IngestConfig {
            offline_after: nonzero_secs(
                "ingest.offline_after_secs",
                i.offline_after_secs.unwrap_or(180),
            )?,
            commit_max_alerts,
            commit_interval: Duration::from_millis(commit_interval_ms),
            queue_batches,
            dedup_cache_alerts: i.dedup_cache_alerts.unwrap_or(1_000_000),
        };
        let b = self.bundles;
        let tick_ms = b.tick_ms.unwrap_or(1000);
        if !(10..=60_000).contains(&tick_ms) {
            return Err(invalid("bundles.tick_ms", "must be 10..=60000"));
        }
        let root_file = b
            .root_file
            .unwrap_or_else(|| PathBuf::from("bundle-root.pbroot"));
        let bundles = BundlesConfig {
            root_file: if root_file.is_absolute() {
                root_file
            } else {
                data_dir.join(root_file)
            },
            controller: b.controller.unwrap_or(true),
            tick: Duration::from_millis(tick_ms),
        };
        let defaults = AgentsConfig::default();
        let max_streams = self.agents.max_streams.unwrap_or(defaults.max_streams);
        if max_streams == 0 {
            return Err(invalid("agents.max_streams", "must be at least 1"));
        }
        let agents = AgentsConfig {
            idle_timeout: self
                .agents
                .idle_timeout_secs
                .map_or(Ok(defaults.idle_timeout), |v| {
                    nonzero_secs("agents.idle_timeout_secs", v)
                })?,
            write_timeout: self
                .agents
                .write_timeout_secs
                .map_or(Ok(defaults.write_timeout), |v| {
                    nonzero_secs("agents.write_timeout_secs", v)
                })?,
            max_streams,
            rules_dirs: self
                .agents
                .rules_dirs
                .unwrap_or_default()
                .into_iter()
                .map(|p| if p.is_absolute() { p } else { data_dir.join(p) })
                .collect(),
        };
        let d = HuntsConfig::default();
        let hunts = HuntsConfig {
            max_upload_bytes: positive("hunts.max_upload_bytes", self.hunts.max_upload_bytes)?
                .unwrap_or(d.max_upload_bytes),
            concurrent_jobs: positive("hunts.concurrent_jobs", self.hunts.concurrent_jobs)?
                .unwrap_or(d.concurrent_jobs),
            threads: positive("hunts.threads", self.hunts.threads)?.unwrap_or(d.threads),
        };
        Ok(Config {
            data_dir,
            log,
            http,
            mqtt,
            database,
            retention,
            ingest,
            bundles,
            agents,
            hunts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_is_all_embedded() {
        let c = Config::from_toml(DEFAULT_CONFIG, "default").expect("default config");
        assert!(matches!(c.mqtt, MqttConfig::Embedded(_)));
        assert!(matches!(c.database, DatabaseConfig::Sqlite { .. }));
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.ingest.offline_after, Duration::from_secs(180));
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::from_toml("", "empty").expect("empty config");
        assert!(matches!(c.mqtt, MqttConfig::Embedded(_)));
        assert_eq!(c.data_dir, PathBuf::from("./picket-data"));
    }

    #[test]
    fn unknown_options_are_refused() {
        let e = Config::from_toml("[ingest]\ncommit_max = 3\n", "t").expect_err("unknown");
        assert!(e.to_string().contains("commit_max"), "{e}");
    }

    #[test]
    fn external_defaults_to_fleet_issued_tls_and_share_group() {
        let c = Config::from_toml("[mqtt]\nmode = \"external\"\nhost = \"b\"\n", "t")
            .expect("external");
        let MqttConfig::External(x) = c.mqtt else {
            unreachable!("external config")
        };
        assert_eq!(x.tls, Some(ExternalTls::FleetIssued));
        assert_eq!(x.share_group.as_deref(), Some("picket-ingest"));
        assert_eq!(x.port, 8883);
    }

    #[test]
    fn partial_tls_files_are_refused() {
        let e = Config::from_toml(
            "[mqtt]\nmode = \"external\"\nhost = \"b\"\nca_file = \"/x\"\n",
            "t",
        )
        .expect_err("partial");
        assert!(e.to_string().contains("mqtt.ca_file"), "{e}");
    }

    #[test]
    fn http_tls_modes() {
        let c = Config::from_toml("", "t").expect("default");
        assert_eq!(c.http.tls, HttpTls::Off);
        let c = Config::from_toml(
            "data_dir = \"/d\"\n[http]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"\n",
            "t",
        )
        .expect("files");
        assert_eq!(
            c.http.tls,
            HttpTls::Files {
                cert_file: PathBuf::from("/d/c.pem"),
                key_file: PathBuf::from("/k.pem"),
            }
        );
        let c = Config::from_toml(
            "[http]\ntls = \"fleet-ca\"\ntls_hostnames = [\"picket.example\"]\n",
            "t",
        )
        .expect("fleet-ca");
        assert_eq!(
            c.http.tls,
            HttpTls::FleetCa {
                hostnames: vec!["picket.example".into()]
            }
        );
        for bad in [
            "[http]\ntls_cert_file = \"c.pem\"\n",
            "[http]\ntls = \"off\"\ntls_key_file = \"k\"\ntls_cert_file = \"c\"\n",
            "[http]\ntls = \"fleet-ca\"\ntls_hostnames = []\n",
            "[http]\ntls_hostnames = [\"a\"]\n",
        ] {
            let e = Config::from_toml(bad, "t").expect_err(bad);
            assert!(e.to_string().contains("http.tls"), "{bad}: {e}");
        }
        let e = Config::from_toml("[http]\ntls = \"yes\"\n", "t").expect_err("mode");
        assert!(e.to_string().contains("tls"), "{e}");
    }

    #[test]
    fn agent_stream_limits() {
        let c = Config::from_toml(
            "[agents]\nidle_timeout_secs = 5\nwrite_timeout_secs = 2\nmax_streams = 3\n",
            "t",
        )
        .expect("agents");
        assert_eq!(c.agents.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.agents.write_timeout, Duration::from_secs(2));
        assert_eq!(c.agents.max_streams, 3);
        let d = Config::from_toml("", "t").expect("default");
        assert_eq!(d.agents.idle_timeout, Duration::from_secs(120));
        for bad in ["max_streams = 0", "idle_timeout_secs = 0"] {
            let e = Config::from_toml(&format!("[agents]\n{bad}\n"), "t").expect_err(bad);
            assert!(e.to_string().contains("agents."), "{e}");
        }
    }

    #[test]
    fn postgres_needs_a_postgres_url() {
        let e = Config::from_toml(
            "[database]\nkind = \"postgres\"\nurl = \"mysql://x\"\n",
            "t",
        )
        .expect_err("url");
        assert!(e.to_string().contains("database.url"), "{e}");
    }
}
