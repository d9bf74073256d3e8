//! Alerts to the fleet: each alert detection emits is pushed into the
//! on-disk spool (`picket-uplink`), and the uplink task sends the spool's
//! contents to the MQTT broker over mutual TLS.
//!
//! Detection never waits for the network: a push is a local sled write. If
//! the spool cannot be opened, forwarding is off and detection goes on; the
//! cause is logged.

use crate::config::UplinkSettings;
use crate::detect::Alert;
use crate::event::Kind;
use picket_proto::heapless;
use picket_proto::{
    AlertId, BoundedStr, Direction, Event as WireEvent, FileAction, FileEvent, IpAddr, Level,
    NetworkEvent, ProcessEvent, TechniqueId, Transport,
};

fn level(s: &str) -> Level {
    match s {
        "critical" => Level::Critical,
        "high" => Level::High,
        "medium" => Level::Medium,
        "low" => Level::Low,
        _ => Level::Informational,
    }
}

fn ip(s: &str) -> IpAddr {
    match s.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => IpAddr::V4(a.octets()),
        Ok(std::net::IpAddr::V6(a)) => IpAddr::V6(a.octets()),
        Err(_) => IpAddr::V4([0; 4]),
    }
}

fn opt<const N: usize>(s: &str) -> Option<BoundedStr<'_, N>> {
    (!s.is_empty()).then(|| BoundedStr::truncated(s))
}

/// The id of an alert as the wire carries it (its 32 hex digits).
fn alert_id(a: &Alert) -> AlertId {
    a.alert_id.parse().unwrap_or(AlertId([0; 16]))
}

/// Pushes one alert into the spool.
///
/// # Errors
/// The spool's refusal (budget, storage), for the caller to count and log.
pub fn push(
    spool: &picket_uplink::Spool,
    a: &Alert,
) -> Result<picket_uplink::Pushed, picket_uplink::SpoolError> {
    let e = &a.event;
    let p = &e.process;
    let techniques = a
        .techniques
        .iter()
        .filter_map(|t| t.parse::<TechniqueId>().ok())
        .collect();
    let event = match &e.kind {
        Kind::ProcessExec { .. } => WireEvent::Process(ProcessEvent {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            image: BoundedStr::truncated(&p.image),
            command_line: BoundedStr::truncated(&p.command_line),
            parent_image: opt(&p.parent_image),
            parent_command_line: opt(&p.parent_command_line),
            cwd: opt(&p.cwd),
            user: p.user.as_deref().and_then(opt),
            extra: heapless::Vec::new(),
        }),
        Kind::FileCreate { path }
        | Kind::FileWrite { path, .. }
        | Kind::FileDelete { path, .. }
        | Kind::FileChmod { path, .. }
        | Kind::FileChown { path, .. }
        | Kind::FileLink { path, .. } => WireEvent::File(FileEvent {
            pid: p.pid,
            uid: p.uid,
            image: BoundedStr::truncated(&p.image),
            action: match &e.kind {
                Kind::FileCreate { .. } | Kind::FileLink { .. } => FileAction::Create,
                Kind::FileDelete { .. } => FileAction::Delete,
                Kind::FileChmod { .. } | Kind::FileChown { .. } => FileAction::Chmod,
                _ => FileAction::Write,
            },
            path: BoundedStr::truncated(path),
            target_path: None,
            extra: heapless::Vec::new(),
        }),
        Kind::FileRename { from, to } => WireEvent::File(FileEvent {
            pid: p.pid,
            uid: p.uid,
            image: BoundedStr::truncated(&p.image),
            action: FileAction::Rename,
            path: BoundedStr::truncated(from),
            target_path: opt(to),
            extra: heapless::Vec::new(),
        }),
        Kind::NetConnect { net, .. }
        | Kind::NetAccept { net }
        | Kind::NetBind { net, .. }
        | Kind::NetListen { net, .. }
        | Kind::TcpState { net, .. } => WireEvent::Network(NetworkEvent {
            pid: p.pid,
            uid: p.uid,
            image: BoundedStr::truncated(&p.image),
            transport: match net.protocol.as_str() {
                "tcp" => Transport::Tcp,
                "udp" => Transport::Udp,
                _ => Transport::Other(0),
            },
            direction: if matches!(e.kind, Kind::NetConnect { .. }) {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            src_ip: ip(&net.source_ip),
            src_port: net.source_port,
            dst_ip: ip(&net.destination_ip),
            dst_port: net.destination_port,
            dst_host: None,
            extra: heapless::Vec::new(),
        }),
        _ => {
            let mut fields = heapless::Vec::new();
            for (k, v) in [
                ("EventType", e.type_name()),
                ("Image", p.image.as_str()),
                ("CommandLine", p.command_line.as_str()),
            ] {
                if !v.is_empty() {
                    let _ = fields.push(picket_proto::Field {
                        key: BoundedStr::truncated(k),
                        value: BoundedStr::truncated(v),
                    });
                }
            }
            WireEvent::Fields(fields)
        }
    };
    let wire = picket_proto::Alert {
        id: alert_id(a),
        seq: 0,
        timestamp_ms: a.time_ns / 1_000_000,
        level: level(&a.level),
        rule_id: BoundedStr::truncated(&a.rule_id),
        rule_title: BoundedStr::truncated(&a.rule_title),
        techniques,
        event,
    };
    spool.push_alert(&wire)
}

/// Opens the spool and starts the uplink task; `None` (logged) when it cannot.
pub fn start(
    s: &UplinkSettings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<(picket_uplink::Spool, tokio::task::JoinHandle<()>)> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let files = (|| -> Result<_, String> {
        Ok((read(&s.ca_file)?, read(&s.cert_file)?, read(&s.key_file)?))
    })();
    let (ca, cert, key) = match files {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("uplink off: cannot read {e}");
            return None;
        }
    };
    if let Some(parent) = s.identity_file.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            tracing::error!("uplink off: cannot create {}: {e}", parent.display());
            return None;
        }
    }
    let identity = match picket_proto::identity::DeviceIdentity::load_or_generate(&s.identity_file)
    {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(
                "uplink off: device identity {}: {e}",
                s.identity_file.display()
            );
            return None;
        }
    };
    let spool = match picket_uplink::Spool::open(&s.spool_dir, s.spool_budget_bytes) {
        Ok(sp) => sp,
        Err(e) => {
            tracing::error!("uplink off: spool {}: {e}", s.spool_dir.display());
            return None;
        }
    };
    tracing::info!(
        "uplink to {}:{} as device {}, spool {} ({} bytes budget)",
        s.broker_host,
        s.broker_port,
        identity.device_id(),
        s.spool_dir.display(),
        s.spool_budget_bytes
    );
    let mut cfg = picket_uplink::UplinkConfig::new(
        s.broker_host.clone(),
        s.broker_port,
        ca,
        cert,
        key,
        identity,
    );
    cfg.batch_delay = s.batch_delay;
    cfg.heartbeat_interval = s.heartbeat_interval;
    if !s.compression {
        cfg.compression = picket_uplink::Compression::None;
    }
    let sp = spool.clone();
    let mut stop = shutdown;
    let task = tokio::spawn(async move {
        let done = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = picket_uplink::run(cfg, sp, done).await {
            tracing::error!("uplink stopped: {e}");
        }
    });
    Some((spool, task))
}
