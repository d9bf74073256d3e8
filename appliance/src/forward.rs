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
    let mut kind_json = match &e.kind {
        Kind::ProcessExec { .. } => None,
        _ => serde_json::to_value(&e.kind).ok(),
    };
    if let Some(serde_json::Value::Object(kind)) = &mut kind_json {
        for v in kind.values_mut() {
            match v {
                serde_json::Value::Number(n) => *v = serde_json::Value::String(n.to_string()),
                serde_json::Value::Bool(b) => *v = serde_json::Value::String(b.to_string()),
                _ => {}
            }
        }
    }
    // SigmaHQ rules are under the DRL 1.1: every view of a match names the
    // rule's author, so the author travels with the alert.
    let mut extra: picket_proto::Fields<'_> = heapless::Vec::new();
    if !a.author.is_empty() {
        let _ = extra.push(picket_proto::Field {
            key: BoundedStr::truncated("RuleAuthor"),
            value: BoundedStr::truncated(&a.author),
        });
    }
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
            extra: extra.clone(),
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
            extra: extra.clone(),
        }),
        Kind::FileRename { from, to } => WireEvent::File(FileEvent {
            pid: p.pid,
            uid: p.uid,
            image: BoundedStr::truncated(&p.image),
            action: FileAction::Rename,
            path: BoundedStr::truncated(from),
            target_path: opt(to),
            extra: extra.clone(),
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
            extra: extra.clone(),
        }),
        _ => {
            // Every other kind travels as its own fields (type first), as
            // the alert JSON shows them: nothing the analyst needs is lost.
            let mut pairs: Vec<(&str, &str)> = vec![
                ("EventType", e.type_name()),
                ("Image", p.image.as_str()),
                ("CommandLine", p.command_line.as_str()),
            ];
            if let Some(serde_json::Value::Object(kind)) = &kind_json {
                for (k, v) in kind {
                    if let (serde_json::Value::String(s), false) = (v, k == "type") {
                        pairs.push((k, s));
                    }
                }
            }
            let mut fields = extra.clone();
            for (k, v) in pairs {
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

/// The appliance's part of each heartbeat: module states, lost kernel
/// records and CPU use since the previous heartbeat (from `/proc/self/stat`).
pub fn heartbeat_source(
    board: crate::runtime::ModuleBoard,
    lost_total: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bundle_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> picket_uplink::HeartbeatSource {
    let last = std::sync::Mutex::new((std::time::Instant::now(), cpu_ticks().unwrap_or(0)));
    std::sync::Arc::new(move || {
        let now = std::time::Instant::now();
        let ticks = cpu_ticks();
        let mut cpu_permille = 0;
        if let (Some(t), Ok(mut l)) = (ticks, last.lock()) {
            let secs = now.duration_since(l.0).as_secs_f64();
            if secs > 0.0 {
                // CLK_TCK is 100 on every Linux ABI picketd targets.
                let used = t.saturating_sub(l.1) as f64 / 100.0;
                cpu_permille = ((used / secs) * 1000.0)
                    .round()
                    .clamp(0.0, f64::from(u32::MAX)) as u32;
            }
            *l = (now, t);
        }
        picket_uplink::HeartbeatExtras {
            rule_bundle_version: Some(bundle_version.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|v| *v != 0),
            lost_kernel_records_total: lost_total.load(std::sync::atomic::Ordering::Relaxed),
            modules: board.snapshot(),
            cpu_permille,
            rss_bytes: None,
        }
    })
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the command name may hold spaces and parentheses: fields start after the last ')'
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ').skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Opens the spool and starts the uplink task; `None` (logged) when it cannot.
pub fn start(
    s: &UplinkSettings,
    heartbeat: picket_uplink::HeartbeatSource,
    fleet: Option<picket_uplink::FleetLink>,
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
    cfg.keep_alive = s.keep_alive;
    cfg.heartbeat_source = Some(heartbeat);
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
        let uplink = match picket_uplink::Uplink::new(cfg, sp) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("uplink off: {e}");
                return;
            }
        };
        let uplink = match fleet {
            Some(link) => uplink.with_fleet_link(link),
            None => uplink,
        };
        if let Err(e) = uplink.run(done).await {
            tracing::error!("uplink stopped: {e}");
        }
    });
    Some((spool, task))
}
