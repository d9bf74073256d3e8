//! picketd's configuration: TOML, read in two stages.
//!
//! A raw serde layer (`deny_unknown_fields` everywhere) catches unknown keys
//! and wrong types with the key's dotted path; [`Config::validate`] then
//! turns values into typed settings and rejects bad ones, again naming the
//! key. Loading never panics. Option names carry their units (`_bytes`,
//! `_secs`, `_ms`). The embedded default ([`DEFAULT_CONFIG`]) is what
//! `picketd generate-config` prints, and a test checks it validates.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configuration, with comments.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("config key `{key}`: {message}")]
    Parse {
        /// Dotted path of the key (`.` for the document).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- raw layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: RawDaemon,
    bus: RawBus,
    metrics: RawMetrics,
    output: RawOutput,
    detection: RawDetection,
    modules: RawModules,
    uplink: RawUplink,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    enabled: bool,
    broker: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    identity_file: PathBuf,
    spool_dir: PathBuf,
    spool_budget_bytes: u64,
    batch_delay_ms: u64,
    heartbeat_interval_secs: u64,
    keep_alive_secs: u64,
    compression: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    data_dir: PathBuf,
    ignore_self: bool,
    log_format: LogFormat,
    log_level: String,
    ignore_images: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    capacity: usize,
    coalesce_us: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: bool,
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    alerts: String,
    events: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    enabled: bool,
    rules_dirs: Vec<PathBuf>,
    bundle_root: PathBuf,
    groups: Vec<String>,
    placeholders: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModules {
    process: RawKernelModule,
    file: RawFileModule,
    network: RawNetworkModule,
    syscalls: RawSyscallsModule,
    auth: RawAuthModule,
    fim: RawFimModule,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernelModule {
    enabled: bool,
    ring_buffer_bytes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyscallsModule {
    enabled: bool,
    ring_buffer_bytes: u32,
    raw_syscalls_fallback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileModule {
    enabled: bool,
    ring_buffer_bytes: u32,
    filter: bool,
    watch_prefixes: Vec<String>,
    ignore_prefixes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworkModule {
    enabled: bool,
    ring_buffer_bytes: u32,
    tcp_states: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthModule {
    enabled: bool,
    log_files: Vec<PathBuf>,
    syslog_socket: Option<PathBuf>,
    poll_interval_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFimModule {
    enabled: bool,
    paths: Vec<PathBuf>,
    settle_ms: u64,
    rescan_interval_secs: u64,
}

// -------------------------------------------------------------- typed layer

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a stream of JSON lines goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Nowhere.
    None,
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// Settings of a kernel-backed module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelModuleConfig {
    /// Load and attach its probes.
    pub enabled: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
}

/// Settings of the file module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileModuleConfig {
    /// Common settings.
    pub kernel: KernelModuleConfig,
    /// Report only paths under `watch_prefixes`.
    pub filter: bool,
    /// Watched path prefixes.
    pub watch_prefixes: Vec<String>,
    /// Ignored path prefixes (win over watched ones).
    pub ignore_prefixes: Vec<String>,
}

/// Settings of the network module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkModuleConfig {
    /// Common settings.
    pub kernel: KernelModuleConfig,
    /// Bit n: report transitions into TCP state n.
    pub tcp_state_mask: u32,
}

/// Settings of the auth module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthModuleConfig {
    /// Run it.
    pub enabled: bool,
    /// Log files to follow (missing ones are waited for).
    pub log_files: Vec<PathBuf>,
    /// A syslog datagram socket to serve, for systems without a syslog daemon.
    pub syslog_socket: Option<PathBuf>,
    /// How often followed files are checked for new lines.
    pub poll_interval: Duration,
}

/// Settings of the file-integrity module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FimModuleConfig {
    /// Run it.
    pub enabled: bool,
    /// Critical files.
    pub paths: Vec<PathBuf>,
    /// Wait after a change event before re-hashing (writes finish).
    pub settle: Duration,
    /// Full re-check period, for changes no event announced.
    pub rescan_interval: Duration,
}

/// Where and how alerts go to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSettings {
    /// Broker host name or address.
    pub broker_host: String,
    /// Broker TLS port.
    pub broker_port: u16,
    /// Fleet CA (PEM): the only trust anchor for the broker's certificate.
    pub ca_file: PathBuf,
    /// Device certificate (PEM).
    pub cert_file: PathBuf,
    /// Device TLS key (PEM).
    pub key_file: PathBuf,
    /// Ed25519 signing identity, created on first start with mode 0600.
    pub identity_file: PathBuf,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Disk budget of the spool.
    pub spool_budget_bytes: u64,
    /// Longest wait to fill a batch.
    pub batch_delay: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// MQTT keep-alive: how soon a dead link is noticed.
    pub keep_alive: Duration,
    /// DEFLATE-compressed alert batches (`FLAG_DEFLATE`, docs/WIRE.md §1.1).
    pub compression: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory.
    pub data_dir: PathBuf,
    /// Drop picketd's own activity in the kernel.
    pub ignore_self: bool,
    /// Executables whose activity (and their children's) is dropped in the kernel.
    pub ignore_images: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// tracing filter directive.
    pub log_level: String,
    /// Per-subscriber queue length of the event bus.
    pub bus_capacity: usize,
    /// How long the sensor lets records gather in the rings after a drain.
    pub coalesce: Duration,
    /// Prometheus endpoint, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Alert output.
    pub alerts: Sink,
    /// Event output.
    pub events: Sink,
    /// Evaluate rules.
    pub detection: bool,
    /// Sigma rule directories.
    pub rules_dirs: Vec<PathBuf>,
    /// Values for Sigma `%placeholder%`s.
    pub placeholders: std::collections::BTreeMap<String, Vec<String>>,
    /// Trusted root metadata for signed rule bundles; `None`: bundles off.
    pub bundle_root: Option<PathBuf>,
    /// Groups this device belongs to, for bundle targets.
    pub groups: Vec<String>,
    /// Process module.
    pub process: KernelModuleConfig,
    /// File module.
    pub file: FileModuleConfig,
    /// Network module.
    pub network: NetworkModuleConfig,
    /// Privilege/kernel syscalls module.
    pub syscalls: KernelModuleConfig,
    /// Watch module syscalls through `raw_syscalls` on kernels without
    /// their tracepoints.
    pub raw_syscalls_fallback: bool,
    /// Auth log module.
    pub auth: AuthModuleConfig,
    /// File integrity module.
    pub fim: FimModuleConfig,
    /// Forwarding to the fleet, if enabled.
    pub uplink: Option<UplinkSettings>,
}

/// TCP state names as the kernel numbers them.
pub const TCP_STATES: [&str; 12] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "new_syn_recv",
];

fn parse_sink(key: &str, v: &str) -> Result<Sink, ConfigError> {
    match v {
        "none" => Ok(Sink::None),
        "stdout" => Ok(Sink::Stdout),
        p if p.starts_with('/') => Ok(Sink::File(PathBuf::from(p))),
        other => Err(invalid(
            key,
            format!("`{other}` is not `none`, `stdout` or an absolute file path"),
        )),
    }
}

fn kernel(key: &str, enabled: bool, ring: u32) -> Result<KernelModuleConfig, ConfigError> {
    if !ring.is_power_of_two() || !(4096..=(1 << 30)).contains(&ring) {
        return Err(invalid(
            &format!("{key}.ring_buffer_bytes"),
            format!("{ring} is not a power of two between 4096 and 1073741824"),
        ));
    }
    Ok(KernelModuleConfig {
        enabled,
        ring_buffer_bytes: ring,
    })
}

fn prefixes(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (i, p) in list.iter().enumerate() {
        if !p.starts_with('/') || p.len() >= picket_probes::PREFIX_MAX {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!(
                    "`{p}` must be an absolute path shorter than {} bytes",
                    picket_probes::PREFIX_MAX
                ),
            ));
        }
    }
    Ok(list)
}

impl Config {
    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key at fault.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Parse {
                key,
                message: inner.message().trim().to_owned(),
            }
        })?;
        Self::validate(raw)
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file or the key at fault.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The embedded default.
    ///
    /// # Panics
    /// Never: a test checks the embedded default validates.
    pub fn default_config() -> Config {
        Self::from_toml(DEFAULT_CONFIG).expect("embedded default config is valid")
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        if !raw.daemon.data_dir.is_absolute() {
            return Err(invalid("daemon.data_dir", "must be an absolute path"));
        }
        if tracing_subscriber::EnvFilter::try_new(&raw.daemon.log_level).is_err() {
            return Err(invalid(
                "daemon.log_level",
                format!(
                    "`{}` is not a log filter (e.g. `info`, `picketd=debug`)",
                    raw.daemon.log_level
                ),
            ));
        }
        for (i, img) in raw.daemon.ignore_images.iter().enumerate() {
            if picket_probes::image_key(img).is_none() || !img.starts_with('/') {
                return Err(invalid(
                    &format!("daemon.ignore_images[{i}]"),
                    format!(
                        "`{img}` must be an absolute path shorter than {} bytes",
                        picket_probes::IMAGE_MAX
                    ),
                ));
            }
        }
        if raw.bus.capacity == 0 || raw.bus.capacity > 1 << 20 {
            return Err(invalid("bus.capacity", "must be between 1 and 1048576"));
        }
        if raw.bus.coalesce_us > 100_000 {
            return Err(invalid("bus.coalesce_us", "must be at most 100000 (0.1 s)"));
        }
        let metrics_listen =
            if raw.metrics.enabled {
                Some(raw.metrics.listen.parse::<SocketAddr>().map_err(|e| {
                    invalid("metrics.listen", format!("`{}`: {e}", raw.metrics.listen))
                })?)
            } else {
                None
            };
        let alerts = parse_sink("output.alerts", &raw.output.alerts)?;
        let events = parse_sink("output.events", &raw.output.events)?;
        for (i, d) in raw.detection.rules_dirs.iter().enumerate() {
            if d.as_os_str().is_empty() {
                return Err(invalid(&format!("detection.rules_dirs[{i}]"), "empty path"));
            }
        }
        let bundle_root = if raw.detection.bundle_root.as_os_str().is_empty() {
            None
        } else if raw.detection.bundle_root.is_absolute() {
            Some(raw.detection.bundle_root.clone())
        } else {
            return Err(invalid("detection.bundle_root", "must be an absolute path"));
        };
        if let Some(g) = raw
            .detection
            .groups
            .iter()
            .find(|g| g.is_empty() || g.len() > 64)
        {
            return Err(invalid(
                "detection.groups",
                format!("group name {g:?} must be 1 to 64 characters"),
            ));
        }
        let m = raw.modules;
        let process = kernel(
            "modules.process",
            m.process.enabled,
            m.process.ring_buffer_bytes,
        )?;
        let syscalls = kernel(
            "modules.syscalls",
            m.syscalls.enabled,
            m.syscalls.ring_buffer_bytes,
        )?;
        let file = FileModuleConfig {
            kernel: kernel("modules.file", m.file.enabled, m.file.ring_buffer_bytes)?,
            filter: m.file.filter,
            watch_prefixes: prefixes("modules.file.watch_prefixes", m.file.watch_prefixes)?,
            ignore_prefixes: prefixes("modules.file.ignore_prefixes", m.file.ignore_prefixes)?,
        };
        let mut tcp_state_mask = 0u32;
        for (i, s) in m.network.tcp_states.iter().enumerate() {
            let pos = TCP_STATES.iter().position(|t| t == s).ok_or_else(|| {
                invalid(
                    &format!("modules.network.tcp_states[{i}]"),
                    format!("`{s}` is not one of {}", TCP_STATES.join(", ")),
                )
            })?;
            tcp_state_mask |= 1 << (pos + 1);
        }
        let network = NetworkModuleConfig {
            kernel: kernel(
                "modules.network",
                m.network.enabled,
                m.network.ring_buffer_bytes,
            )?,
            tcp_state_mask,
        };
        if m.auth.poll_interval_ms == 0 || m.auth.poll_interval_ms > 60_000 {
            return Err(invalid(
                "modules.auth.poll_interval_ms",
                "must be between 1 and 60000",
            ));
        }
        let auth = AuthModuleConfig {
            enabled: m.auth.enabled,
            log_files: m.auth.log_files,
            syslog_socket: m.auth.syslog_socket.filter(|p| !p.as_os_str().is_empty()),
            poll_interval: Duration::from_millis(m.auth.poll_interval_ms),
        };
        for (i, p) in m.fim.paths.iter().enumerate() {
            if !p.is_absolute() {
                return Err(invalid(
                    &format!("modules.fim.paths[{i}]"),
                    "must be an absolute path",
                ));
            }
        }
        if m.fim.rescan_interval_secs == 0 {
            return Err(invalid(
                "modules.fim.rescan_interval_secs",
                "must be at least 1",
            ));
        }
        let fim = FimModuleConfig {
            enabled: m.fim.enabled,
            paths: m.fim.paths,
            settle: Duration::from_millis(m.fim.settle_ms),
            rescan_interval: Duration::from_secs(m.fim.rescan_interval_secs),
        };
        let u = raw.uplink;
        let uplink = if u.enabled {
            let (host, port) = u
                .broker
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_matches(['[', ']']).to_owned(),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    invalid("uplink.broker", format!("`{}` is not HOST:PORT", u.broker))
                })?;
            for (key, p) in [
                ("uplink.ca_file", &u.ca_file),
                ("uplink.cert_file", &u.cert_file),
                ("uplink.key_file", &u.key_file),
                ("uplink.identity_file", &u.identity_file),
                ("uplink.spool_dir", &u.spool_dir),
            ] {
                if !p.is_absolute() {
                    return Err(invalid(key, "must be an absolute path"));
                }
            }
            if u.spool_budget_bytes < 1 << 20 {
                return Err(invalid(
                    "uplink.spool_budget_bytes",
                    "must be at least 1048576",
                ));
            }
            if u.batch_delay_ms == 0 || u.batch_delay_ms > 60_000 {
                return Err(invalid(
                    "uplink.batch_delay_ms",
                    "must be between 1 and 60000",
                ));
            }
            if u.heartbeat_interval_secs == 0 {
                return Err(invalid(
                    "uplink.heartbeat_interval_secs",
                    "must be at least 1",
                ));
            }
            // MQTT carries the keep-alive in 16 bits; below 5 s a busy
            // link's own latency could pass for a dead one.
            if !(5..=65_535).contains(&u.keep_alive_secs) {
                return Err(invalid(
                    "uplink.keep_alive_secs",
                    "must be between 5 and 65535",
                ));
            }
            Some(UplinkSettings {
                broker_host: host,
                broker_port: port,
                ca_file: u.ca_file,
                cert_file: u.cert_file,
                key_file: u.key_file,
                identity_file: u.identity_file,
                spool_dir: u.spool_dir,
                spool_budget_bytes: u.spool_budget_bytes,
                batch_delay: Duration::from_millis(u.batch_delay_ms),
                heartbeat_interval: Duration::from_secs(u.heartbeat_interval_secs),
                keep_alive: Duration::from_secs(u.keep_alive_secs),
                compression: u.compression,
            })
        } else {
            None
        };
        Ok(Config {
            uplink,
            data_dir: raw.daemon.data_dir,
            ignore_self: raw.daemon.ignore_self,
            ignore_images: raw.daemon.ignore_images,
            log_format: raw.daemon.log_format,
            log_level: raw.daemon.log_level,
            bus_capacity: raw.bus.capacity,
            coalesce: Duration::from_micros(raw.bus.coalesce_us),
            metrics_listen,
            alerts,
            events,
            detection: raw.detection.enabled,
            rules_dirs: raw.detection.rules_dirs,
            placeholders: raw.detection.placeholders,
            bundle_root,
            groups: raw.detection.groups,
            process,
            file,
            network,
            syscalls,
            raw_syscalls_fallback: m.syscalls.raw_syscalls_fallback,
            auth,
            fim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_validates() {
        let c = Config::default_config();
        assert!(c.process.enabled && c.file.kernel.enabled);
        assert!(c.file.watch_prefixes.iter().any(|p| p == "/etc/"));
        assert_ne!(c.network.tcp_state_mask, 0);
    }

    fn with(from: &str, to: &str) -> Result<Config, ConfigError> {
        assert!(DEFAULT_CONFIG.contains(from), "{from}");
        Config::from_toml(&DEFAULT_CONFIG.replacen(from, to, 1))
    }

    #[test]
    fn unknown_key_is_named() {
        let e = with("[modules.file]\n", "[modules.file]\nwatch_prefix = []\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("modules.file"), "{msg}");
        assert!(msg.contains("watch_prefix"), "{msg}");
        let e = Config::from_toml(&format!("{DEFAULT_CONFIG}\n[nonsense]\nx = 1\n")).unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
    }

    #[test]
    fn unknown_module_is_named() {
        let e = Config::from_toml(&format!(
            "{DEFAULT_CONFIG}\n[modules.kernel_magic]\nenabled = true\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("kernel_magic"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = with("capacity = 8192", "capacity = 0").unwrap_err();
        assert!(e.to_string().contains("bus.capacity"), "{e}");
        let e = with("capacity = 8192", "capacity = \"many\"").unwrap_err();
        assert!(e.to_string().contains("bus.capacity"), "{e}");
        let e = with("ring_buffer_bytes = 1048576", "ring_buffer_bytes = 1000").unwrap_err();
        assert!(
            e.to_string().contains("modules.process.ring_buffer_bytes"),
            "{e}"
        );
        let e = with("\"established\",", "\"establishd\",").unwrap_err();
        assert!(
            e.to_string().contains("modules.network.tcp_states[0]"),
            "{e}"
        );
        let e = with("alerts = \"stdout\"", "alerts = \"printer\"").unwrap_err();
        assert!(e.to_string().contains("output.alerts"), "{e}");
        let e = with("\"/etc/\",", "\"etc/\",").unwrap_err();
        assert!(
            e.to_string().contains("modules.file.watch_prefixes[0]"),
            "{e}"
        );
        let e = with(
            "enabled = false\nbroker = \"127.0.0.1:8883\"",
            "enabled = true\nbroker = \"127.0.0.1\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("uplink.broker"), "{e}");
        let c = with(
            "enabled = false\nbroker = \"127.0.0.1:8883\"",
            "enabled = true\nbroker = \"[::1]:8883\"",
        )
        .unwrap();
        let u = c.uplink.unwrap();
        assert_eq!((u.broker_host.as_str(), u.broker_port), ("::1", 8883));
        assert!(u.compression, "alert batches are compressed by default");
        assert_eq!(u.keep_alive, std::time::Duration::from_secs(30));
        assert!(DEFAULT_CONFIG.contains("keep_alive_secs = 30"));
        let e = Config::from_toml(
            &DEFAULT_CONFIG
                .replacen("enabled = false\nbroker", "enabled = true\nbroker", 1)
                .replacen("keep_alive_secs = 30", "keep_alive_secs = 4", 1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("uplink.keep_alive_secs"), "{e}");
        let e = Config::from_toml("this is not toml").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    }
}
