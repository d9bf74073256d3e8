//! Ingest: device traffic from MQTT into the store.
//!
//! ```text
//! rumqttc poll loop ──alerts──► verify tasks (≤ queue_batches at once) ──► writer ──► Store::insert_alerts
//!   (plain to the embedded        topic → device → registered key,           coalesces batches     │  then PUBACK
//!    broker's loopback port,      open_frame_owned (signature, inflate,      per transaction,      ▼
//!    or mTLS + $share to an       decode), → NewAlert                        de-dups by id       LiveEvent::Alert
//!    external broker)      ──heartbeats──► heartbeat tasks ──► Store::record_heartbeat ──► LiveEvent::Device
//! ```
//!
//! Every QoS 1 publish is acknowledged to the broker only once it is stored
//! (manual acks) or refused, so an alert the broker handed over is never
//! acknowledged before it is durable. A payload is checked against the key of
//! the device its topic names (a device cannot publish in another's name,
//! whichever broker carries it); anything refused is counted by reason in
//! `picket_ingest_refused_total{reason}`, logged (rate-limited) with device
//! and reason, and affects nothing else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_api::LiveEvent;
use picket_proto::ed25519_dalek::VerifyingKey;
use picket_proto::topic::{self, Channel};
use picket_proto::{DeviceId, Event, Message};
use picket_store::model::{
    Alert as StoredAlert, AlertSource, AlertStatus, HeartbeatInfo, HeartbeatOutcome, Level,
    ModuleStatus, NewAlert,
};
use picket_store::Store;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use crate::config::IngestConfig;

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- telemetry

/// Why a payload was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The topic is not a device channel this backend ingests.
    Topic,
    /// The device id is not enrolled.
    UnknownDevice,
    /// The device is revoked.
    Revoked,
    /// The frame names another device than the topic.
    DeviceMismatch,
    /// The signature does not verify under the device's key.
    BadSignature,
    /// The frame's kind is not the topic's.
    WrongKind,
    /// Larger than a frame may be (or inflates beyond the limit).
    Oversized,
    /// Not a well-formed frame or body.
    Malformed,
    /// A heartbeat not newer than the device's last recorded one (a
    /// replay, see `HeartbeatInfo::is_newer_than`).
    Replayed,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 9] = [
        Self::Topic,
        Self::UnknownDevice,
        Self::Revoked,
        Self::DeviceMismatch,
        Self::BadSignature,
        Self::WrongKind,
        Self::Oversized,
        Self::Malformed,
        Self::Replayed,
    ];

    /// The metric label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::UnknownDevice => "unknown_device",
            Self::Revoked => "revoked",
            Self::DeviceMismatch => "device_mismatch",
            Self::BadSignature => "bad_signature",
            Self::WrongKind => "wrong_kind",
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::Replayed => "replayed",
        }
    }

    fn from_proto(e: picket_proto::Error) -> Self {
        use picket_proto::Error as E;
        match e {
            E::FrameTooLarge { .. } | E::InflatedTooLarge { .. } => Self::Oversized,
            E::BadSignature { .. } => Self::BadSignature,
            E::DeviceMismatch { .. } => Self::DeviceMismatch,
            _ => Self::Malformed,
        }
    }
}

/// Ingest counters (`picket_ingest_*`), shared with `/metrics`.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Publishes received from the broker.
    pub messages_received: AtomicU64,
    /// Alert batches that verified.
    pub batches_accepted: AtomicU64,
    /// Alerts stored (new).
    pub alerts_stored: AtomicU64,
    /// Alerts skipped as already stored (redeliveries, replays).
    pub alerts_duplicate: AtomicU64,
    /// Heartbeats stored.
    pub heartbeats_stored: AtomicU64,
    /// Database transactions of alerts.
    pub commits: AtomicU64,
    /// Failed database operations (retried).
    pub store_errors: AtomicU64,
    /// Broker connection losses.
    pub disconnects: AtomicU64,
    /// Refusals by [`Refusal`] (index in [`Refusal::ALL`]).
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Whether the subscriber is connected and subscribed.
    pub connected: AtomicBool,
    /// Heartbeat processing lag (receive → stored), last value, µs.
    pub heartbeat_lag_us: AtomicU64,
    /// Longest heartbeat lag since start, µs.
    pub heartbeat_lag_max_us: AtomicU64,
    last_log: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl IngestMetrics {
    /// Refusals counted for `reason`.
    #[must_use]
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// All refusals.
    #[must_use]
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Counts and logs (at most one line per reason per second, with the
    /// number suppressed in between) a refused payload.
    pub fn emit_refused(&self, reason: Refusal, device: Option<DeviceId>, detail: &str) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        let mut log = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let entry = log
            .entry(reason.label())
            .or_insert((now - Duration::from_secs(2), 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            let suppressed = entry.1;
            *entry = (now, 0);
            drop(log);
            let device = device.map(|d| d.to_string());
            tracing::warn!(
                reason = reason.label(),
                device = device.as_deref().unwrap_or("-"),
                suppressed,
                "{detail}"
            );
        } else {
            entry.1 += 1;
        }
    }

    /// Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let g = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        c(
            &mut out,
            "picket_ingest_messages_received_total",
            "MQTT publishes received.",
            l(&self.messages_received),
        );
        c(
            &mut out,
            "picket_ingest_batches_accepted_total",
            "Alert batches that verified.",
            l(&self.batches_accepted),
        );
        c(
            &mut out,
            "picket_ingest_alerts_stored_total",
            "New alerts stored.",
            l(&self.alerts_stored),
        );
        c(
            &mut out,
            "picket_ingest_alerts_duplicated_total",
            "Alerts skipped because their id was already stored.",
            l(&self.alerts_duplicate),
        );
        c(
            &mut out,
            "picket_ingest_heartbeats_stored_total",
            "Heartbeats stored.",
            l(&self.heartbeats_stored),
        );
        c(
            &mut out,
            "picket_ingest_commits_completed_total",
            "Alert transactions committed.",
            l(&self.commits),
        );
        c(
            &mut out,
            "picket_ingest_store_errors_total",
            "Failed store operations.",
            l(&self.store_errors),
        );
        c(
            &mut out,
            "picket_ingest_broker_disconnected_total",
            "Broker connection losses.",
            l(&self.disconnects),
        );
        let _ = writeln!(
            out,
            "# HELP picket_ingest_refused_total Payloads refused, by reason.\n\
             # TYPE picket_ingest_refused_total counter"
        );
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "picket_ingest_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refused(r)
            );
        }
        g(
            &mut out,
            "picket_ingest_connected",
            "1 when ingest is subscribed to its broker.",
            u64::from(self.connected.load(Ordering::Relaxed)),
        );
        g(
            &mut out,
            "picket_ingest_heartbeat_lag_microseconds",
            "Receive-to-stored time of the last heartbeat.",
            l(&self.heartbeat_lag_us),
        );
        out
    }
}

// ----------------------------------------------------------------- registry

#[derive(Debug)]
enum Known {
    Active(VerifyingKey),
    Revoked,
    // Not enrolled when last asked; asked again after NEGATIVE_TTL.
    Unknown(Instant),
}

#[derive(Debug)]
struct DeviceState {
    known: Known,
    online: bool,
    last_seen: Option<Instant>,
    last_touch_ms: i64,
    max_seq: u64,
}

/// What ingest knows of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Enrolled: payloads must verify under this key.
    Active(VerifyingKey),
    /// Revoked: refused.
    Revoked,
    /// Not enrolled: refused.
    Unknown,
}

const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// Enrolled devices' keys, revocations and online state, loaded from the
/// store and refreshed on a miss.
#[derive(Debug)]
pub struct DeviceRegistry {
    store: Arc<dyn Store>,
    devices: Mutex<HashMap<DeviceId, DeviceState>>,
}

impl DeviceRegistry {
    /// Loads every device from the store.
    ///
    /// # Errors
    /// The store's error.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, picket_store::StoreError> {
        let mut devices = HashMap::new();
        for d in store.devices().await? {
            let Ok(id) = d.id.parse::<DeviceId>() else {
                continue;
            };
            devices.insert(id, state_of(&d));
        }
        Ok(Self {
            store,
            devices: Mutex::new(devices),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, DeviceState>> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The device's standing; asks the store on a miss.
    pub async fn lookup(&self, id: DeviceId) -> Lookup {
        {
            let map = self.lock();
            match map.get(&id).map(|s| &s.known) {
                Some(Known::Active(k)) => return Lookup::Active(*k),
                Some(Known::Revoked) => return Lookup::Revoked,
                Some(Known::Unknown(at)) if at.elapsed() < NEGATIVE_TTL => return Lookup::Unknown,
                _ => {}
            }
        }
        let fetched = self.store.device(&id.to_string()).await;
        let mut map = self.lock();
        match fetched {
            Ok(Some(d)) => {
                let st = state_of(&d);
                let out = match st.known {
                    Known::Active(k) => Lookup::Active(k),
                    Known::Revoked => Lookup::Revoked,
                    Known::Unknown(_) => Lookup::Unknown,
                };
                map.insert(id, st);
                out
            }
            Ok(None) => {
                map.entry(id)
                    .or_insert_with(|| DeviceState {
                        known: Known::Unknown(Instant::now()),
                        online: false,
                        last_seen: None,
                        last_touch_ms: 0,
                        max_seq: 0,
                    })
                    .known = Known::Unknown(Instant::now());
                Lookup::Unknown
            }
            Err(e) => {
                tracing::warn!(device = %id, error = %e, "device lookup failed");
                Lookup::Unknown
            }
        }
    }

    /// Marks a device revoked (payloads refused from now on).
    pub fn revoke(&self, id: DeviceId) {
        let mut map = self.lock();
        if let Some(s) = map.get_mut(&id) {
            s.known = Known::Revoked;
            s.online = false;
        } else {
            map.insert(
                id,
                DeviceState {
                    known: Known::Revoked,
                    online: false,
                    last_seen: None,
                    last_touch_ms: 0,
                    max_seq: 0,
                },
            );
        }
    }

    /// Forgets a "not enrolled" answer (the device just enrolled).
    pub fn forget_unknown(&self, id: DeviceId) {
        let mut map = self.lock();
        if matches!(map.get(&id).map(|s| &s.known), Some(Known::Unknown(_))) {
            map.remove(&id);
        }
    }

    /// Records traffic from a device: returns whether it came online and
    /// whether its `last_seen_ms` should be written to the store now.
    fn seen(&self, id: DeviceId, now_ms: i64) -> (bool, bool) {
        let mut map = self.lock();
        let Some(s) = map.get_mut(&id) else {
            return (false, false);
        };
        s.last_seen = Some(Instant::now());
        let came_online = !s.online;
        s.online = true;
        // Once per few seconds is enough for `last_seen_ms`; heartbeats and
        // transitions write it anyway.
        let touch = came_online || now_ms - s.last_touch_ms >= 5_000;
        if touch {
            s.last_touch_ms = now_ms;
        }
        (came_online, touch)
    }

    /// Raises the device's highest stored sequence number; returns the old one.
    fn bump_seq(&self, id: DeviceId, seq: u64) -> u64 {
        let mut map = self.lock();
        map.get_mut(&id).map_or(0, |s| {
            let old = s.max_seq;
            s.max_seq = s.max_seq.max(seq);
            old
        })
    }

    fn max_seq(&self, id: DeviceId) -> u64 {
        self.lock().get(&id).map_or(0, |s| s.max_seq)
    }

    /// Devices silent for `offline_after` that were online: now offline.
    fn sweep(&self, offline_after: Duration) -> Vec<DeviceId> {
        let mut map = self.lock();
        let mut out = Vec::new();
        for (id, s) in map.iter_mut() {
            if s.online && s.last_seen.is_none_or(|t| t.elapsed() >= offline_after) {
                s.online = false;
                out.push(*id);
            }
        }
        out
    }

    /// Devices online now.
    #[must_use]
    pub fn online_count(&self) -> usize {
        self.lock().values().filter(|s| s.online).count()
    }

    /// Whether a device is online.
    #[must_use]
    pub fn is_online(&self, id: DeviceId) -> bool {
        self.lock().get(&id).is_some_and(|s| s.online)
    }
}

fn state_of(d: &picket_store::model::Device) -> DeviceState {
    let key = <[u8; 32]>::try_from(d.public_key.as_slice())
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok());
    let known = match (d.revoked_ms, key) {
        (Some(_), _) => Known::Revoked,
        (None, Some(k)) => Known::Active(k),
        (None, None) => Known::Unknown(Instant::now()),
    };
    DeviceState {
        known,
        online: false,
        last_seen: None,
        last_touch_ms: 0,
        max_seq: d.last_alert_seq,
    }
}

// --------------------------------------------------------------- conversion

fn level(l: picket_proto::Level) -> Level {
    match l {
        picket_proto::Level::Informational => Level::Informational,
        picket_proto::Level::Low => Level::Low,
        picket_proto::Level::Medium => Level::Medium,
        picket_proto::Level::High => Level::High,
        picket_proto::Level::Critical => Level::Critical,
    }
}

fn ip(ip: picket_proto::IpAddr) -> String {
    std::net::IpAddr::from(ip).to_string()
}

fn fields_json(fields: &picket_proto::Fields<'_>) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .map(|f| (f.key.as_str().to_owned(), f.value.as_str().into()))
        .collect()
}

fn is_author_key(k: &str) -> bool {
    k.eq_ignore_ascii_case("rule_author")
        || k.eq_ignore_ascii_case("ruleauthor")
        || k.eq_ignore_ascii_case("author")
}

/// A wire alert as the store keeps it: searchable columns pulled out of the
/// event, the whole event as JSON (extra fields included), `rule_author`
/// lifted to the top when the event carries one.
#[must_use]
pub fn to_new_alert(a: &picket_proto::Alert<'_>, device: &str, received_ms: i64) -> NewAlert {
    use serde_json::{json, Value};
    let opt = |s: Option<picket_proto::BoundedStr<'_, { picket_proto::MAX_PATH_LEN }>>| {
        s.map(|s| s.as_str().to_owned())
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (image, command_line, path, mut event, extra) = match &a.event {
        Event::Process(p) => (
            nonempty(p.image.as_str()),
            nonempty(p.command_line.as_str()),
            None,
            json!({
                "type": "process",
                "pid": p.pid, "ppid": p.ppid, "uid": p.uid, "gid": p.gid,
                "image": p.image.as_str(),
                "command_line": p.command_line.as_str(),
                "parent_image": opt(p.parent_image),
                "parent_command_line": p.parent_command_line.map(|s| s.as_str()),
                "cwd": opt(p.cwd),
                "user": p.user.map(|s| s.as_str()),
            }),
            &p.extra,
        ),
        Event::File(f) => (
            nonempty(f.image.as_str()),
            None,
            nonempty(f.path.as_str()),
            json!({
                "type": "file",
                "pid": f.pid, "uid": f.uid,
                "image": f.image.as_str(),
                "action": format!("{:?}", f.action).to_lowercase(),
                "path": f.path.as_str(),
                "target_path": opt(f.target_path),
            }),
            &f.extra,
        ),
        Event::Network(n) => (
            nonempty(n.image.as_str()),
            None,
            None,
            json!({
                "type": "network",
                "pid": n.pid, "uid": n.uid,
                "image": n.image.as_str(),
                "transport": match n.transport {
                    picket_proto::Transport::Tcp => "tcp".to_owned(),
                    picket_proto::Transport::Udp => "udp".to_owned(),
                    picket_proto::Transport::Icmp => "icmp".to_owned(),
                    picket_proto::Transport::Other(p) => format!("ip{p}"),
                },
                "direction": match n.direction {
                    picket_proto::Direction::Outbound => "outbound",
                    picket_proto::Direction::Inbound => "inbound",
                },
                "src_ip": ip(n.src_ip), "src_port": n.src_port,
                "dst_ip": ip(n.dst_ip), "dst_port": n.dst_port,
                "dst_host": n.dst_host.map(|s| s.as_str()),
            }),
            &n.extra,
        ),
        Event::Fields(f) => {
            let get = |keys: &[&str]| {
                f.iter()
                    .find(|x| keys.iter().any(|k| x.key.as_str().eq_ignore_ascii_case(k)))
                    .map(|x| x.value.as_str().to_owned())
            };
            (
                get(&["Image", "image"]),
                get(&["CommandLine", "command_line"]),
                get(&["TargetFilename", "path", "FilePath"]),
                json!({ "type": "fields" }),
                f,
            )
        }
    };
    if let Value::Object(obj) = &mut event {
        let fields = fields_json(extra);
        if let Some(author) = extra.iter().find(|f| is_author_key(f.key.as_str())) {
            obj.insert("rule_author".into(), author.value.as_str().into());
        }
        let key = if matches!(a.event, Event::Fields(_)) {
            "fields"
        } else {
            "extra"
        };
        obj.insert(key.into(), Value::Object(fields));
    }
    NewAlert {
        id: a.id.to_string(),
        device_id: device.to_owned(),
        seq: a.seq,
        timestamp_ms: i64::try_from(a.timestamp_ms).unwrap_or(i64::MAX),
        received_ms,
        level: level(a.level),
        source: AlertSource::Appliance,
        rule_id: a.rule_id.as_str().to_owned(),
        rule_title: a.rule_title.as_str().to_owned(),
        techniques: a.techniques.iter().map(ToString::to_string).collect(),
        image,
        command_line,
        path,
        event,
    }
}

fn heartbeat_info(h: &picket_proto::Heartbeat<'_>, received_ms: i64) -> HeartbeatInfo {
    HeartbeatInfo {
        seq: h.seq,
        sent_at_ms: i64::try_from(h.sent_at_ms).unwrap_or(i64::MAX),
        received_ms,
        uptime_secs: h.uptime_secs,
        agent_version: h.agent_version.as_str().to_owned(),
        rule_bundle_version: h.rule_bundle_version,
        spool_depth: h.spool_depth,
        spool_bytes: h.spool_bytes,
        spool_evictions_total: h.spool_evictions_total,
        lost_kernel_records_total: h.lost_kernel_records_total,
        modules: h
            .modules
            .iter()
            .map(|m| ModuleStatus {
                name: m.name.as_str().to_owned(),
                state: format!("{:?}", m.state).to_lowercase(),
                error: m.error.map(|e| e.as_str().to_owned()),
            })
            .collect(),
        cpu_permille: h.cpu_permille,
        rss_bytes: h.rss_bytes,
    }
}

// ---------------------------------------------------------------- the check

/// A payload that verified.
#[derive(Debug)]
pub enum Verified {
    /// Alerts (converted).
    Alerts {
        /// The sender.
        device: DeviceId,
        /// Its alerts.
        alerts: Vec<NewAlert>,
    },
    /// A heartbeat.
    Heartbeat {
        /// The sender.
        device: DeviceId,
        /// Its figures.
        info: HeartbeatInfo,
    },
}

/// Checks one MQTT payload: topic, device standing, size, kind, signature
/// under the device's registered key, body. Never panics.
///
/// # Errors
/// The [`Refusal`] with a detail message, and the device when known.
pub async fn check(
    registry: &DeviceRegistry,
    topic_name: &str,
    payload: &[u8],
    received_ms: i64,
) -> Result<Verified, (Refusal, Option<DeviceId>, String)> {
    let Some((device, channel)) = topic::parse(topic_name) else {
        return Err((Refusal::Topic, None, format!("topic {topic_name:?}")));
    };
    if !matches!(channel, Channel::Alerts | Channel::Heartbeat) {
        return Err((
            Refusal::Topic,
            Some(device),
            format!("channel {}", channel.suffix()),
        ));
    }
    let key = match registry.lookup(device).await {
        Lookup::Active(k) => k,
        Lookup::Revoked => return Err((Refusal::Revoked, Some(device), "device revoked".into())),
        Lookup::Unknown => {
            return Err((
                Refusal::UnknownDevice,
                Some(device),
                "device not enrolled".into(),
            ))
        }
    };
    if payload.len() > picket_proto::MAX_FRAME_LEN {
        return Err((
            Refusal::Oversized,
            Some(device),
            format!("payload of {} bytes", payload.len()),
        ));
    }
    let header = picket_proto::FrameHeader::parse(payload)
        .map_err(|e| (Refusal::from_proto(e), Some(device), e.to_string()))?;
    if header.kind != channel.kind() {
        return Err((
            Refusal::WrongKind,
            Some(device),
            format!("{:?} frame on the {} topic", header.kind, channel.suffix()),
        ));
    }
    let opened = picket_proto::open_frame_owned(payload, device, &key)
        .map_err(|e| (Refusal::from_proto(e), Some(device), e.to_string()))?;
    let message = opened
        .message()
        .map_err(|e| (Refusal::Malformed, Some(device), e.to_string()))?;
    let device_hex = device.to_string();
    match message {
        Message::AlertBatch(batch) => Ok(Verified::Alerts {
            device,
            alerts: batch
                .iter()
                .map(|a| to_new_alert(&a, &device_hex, received_ms))
                .collect(),
        }),
        Message::Heartbeat(h) => Ok(Verified::Heartbeat {
            device,
            info: heartbeat_info(&h, received_ms),
        }),
        _ => Err((
            Refusal::WrongKind,
            Some(device),
            format!("{:?} frame", opened.kind()),
        )),
    }
}

// ----------------------------------------------------------- the pipeline

/// Where ingest subscribes.
#[derive(Debug, Clone)]
pub struct IngestSource {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (mTLS) settings; `None` for the embedded broker's loopback port.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// MQTT client id.
    pub client_id: String,
    /// Keep the session across reconnects (external brokers).
    pub persistent_session: bool,
    /// `$share/<group>/` prefix for the subscriptions.
    pub share_group: Option<String>,
    /// Largest packet accepted.
    pub max_packet_bytes: usize,
}

impl IngestSource {
    /// The subscriptions: alerts at QoS 1, heartbeats at QoS 0.
    #[must_use]
    pub fn filters(&self) -> Vec<(String, QoS)> {
        [Channel::Alerts, Channel::Heartbeat]
            .into_iter()
            .map(|c| {
                let f = c.filter_all_devices();
                let f = match &self.share_group {
                    Some(g) => format!("$share/{g}/{f}"),
                    None => f.to_string(),
                };
                let qos = if c.qos() == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                (f, qos)
            })
            .collect()
    }
}

/// What ingest shares with the rest of the backend.
#[derive(Debug, Clone)]
pub struct IngestContext {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Device keys and states.
    pub registry: Arc<DeviceRegistry>,
    /// Live events for WebSocket clients.
    pub live: broadcast::Sender<LiveEvent>,
    /// Counters.
    pub metrics: Arc<IngestMetrics>,
}

struct Accepted {
    device: DeviceId,
    alerts: Vec<NewAlert>,
    ack: Option<AckTicket>,
}

/// A QoS 1 publish to acknowledge once handled: its place in arrival order
/// within one broker connection (`generation`).
#[derive(Debug)]
struct AckTicket {
    generation: u64,
    seq: u64,
    publish: Publish,
}

/// Releases acknowledgements in arrival order. rumqttd refuses out-of-order
/// PUBACKs (its outgoing queue must be acked head first, or the slot is never
/// freed and delivery stalls at 100 in flight), while verification and the
/// writer finish publishes in any order.
#[derive(Debug)]
struct AckOrder {
    generation: u64,
    next: u64,
    done: std::collections::BTreeMap<u64, Publish>,
    tx: mpsc::UnboundedSender<Publish>,
}

#[derive(Debug, Clone)]
struct Acker(Arc<Mutex<AckOrder>>);

impl Acker {
    fn new(tx: mpsc::UnboundedSender<Publish>) -> Self {
        Self(Arc::new(Mutex::new(AckOrder {
            generation: 0,
            next: 0,
            done: std::collections::BTreeMap::new(),
            tx,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckOrder> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new broker connection: earlier publishes are not acked any more.
    fn reset(&self) -> u64 {
        let mut g = self.lock();
        g.generation += 1;
        g.next = 0;
        g.done.clear();
        g.generation
    }

    fn complete(&self, t: AckTicket) {
        let mut g = self.lock();
        if t.generation != g.generation {
            return;
        }
        g.done.insert(t.seq, t.publish);
        loop {
            let next = g.next;
            let Some(p) = g.done.remove(&next) else { break };
            g.next += 1;
            // Sent under the lock, so the channel sees arrival order.
            let _ = g.tx.send(p);
        }
    }
}

/// Runs ingest until `shutdown` turns true: the MQTT subscriber, the
/// verifiers, the writer, and the offline checker.
pub async fn run(
    ctx: IngestContext,
    source: IngestSource,
    config: IngestConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(source.client_id.clone(), source.host.clone(), source.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(!source.persistent_session)
        .set_manual_acks(true)
        .set_max_packet_size(source.max_packet_bytes, source.max_packet_bytes)
        .set_request_channel_capacity(4096)
        .set_inflight(1024);
    if let Some(tls) = &source.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Publish>();
    let acker = Acker::new(ack_tx);
    let ack_task = {
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(p) = ack_rx.recv().await {
                let _ = client.ack(&p).await;
            }
        })
    };
    let (tx, rx) = mpsc::channel::<Accepted>(config.queue_batches);
    let writer = tokio::spawn(writer(
        ctx.clone(),
        acker.clone(),
        rx,
        config.clone(),
        shutdown.clone(),
    ));
    let checker = tokio::spawn(offline_checker(
        ctx.clone(),
        config.offline_after,
        shutdown.clone(),
    ));
    let permits = Arc::new(Semaphore::new(config.queue_batches));
    let filters = source.filters();
    let mut backoff = Duration::from_millis(100);
    let mut generation = acker.reset();
    let mut next_seq = 0u64;
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                generation = acker.reset();
                next_seq = 0;
                let subs = filters
                    .iter()
                    .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), *q));
                if let Err(e) = client.subscribe_many(subs).await {
                    tracing::warn!(error = %e, "ingest subscribe failed");
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                ctx.metrics.connected.store(true, Ordering::Relaxed);
                tracing::info!(broker = %format!("{}:{}", source.host, source.port), "ingest subscribed");
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                ctx.metrics
                    .messages_received
                    .fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let ticket = (p.qos != QoS::AtMostOnce).then(|| {
                    next_seq += 1;
                    (generation, next_seq - 1)
                });
                let ctx = ctx.clone();
                let tx = tx.clone();
                let acker = acker.clone();
                tokio::spawn(async move {
                    handle_publish(&ctx, &acker, &tx, p, ticket).await;
                    drop(permit);
                });
            }
            Ok(_) => {}
            Err(e) => {
                ctx.metrics.connected.store(false, Ordering::Relaxed);
                ctx.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "ingest broker connection lost");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    ctx.metrics.connected.store(false, Ordering::Relaxed);
    let _ = client.try_disconnect();
    drop(tx);
    let _ = writer.await;
    checker.abort();
    ack_task.abort();
}

async fn handle_publish(
    ctx: &IngestContext,
    acker: &Acker,
    tx: &mpsc::Sender<Accepted>,
    p: Publish,
    ticket: Option<(u64, u64)>,
) {
    let received_ms = now_ms();
    let started = Instant::now();
    let result = check(&ctx.registry, &p.topic, &p.payload, received_ms).await;
    let ack = ticket.map(|(generation, seq)| AckTicket {
        generation,
        seq,
        publish: p,
    });
    match result {
        Ok(Verified::Alerts { device, alerts }) => {
            ctx.metrics.batches_accepted.fetch_add(1, Ordering::Relaxed);
            // The writer acks after the commit.
            let _ = tx
                .send(Accepted {
                    device,
                    alerts,
                    ack,
                })
                .await;
        }
        Ok(Verified::Heartbeat { device, info }) => {
            if let Some(t) = ack {
                acker.complete(t);
            }
            heartbeat(ctx, device, info, started).await;
        }
        Err((reason, device, detail)) => {
            ctx.metrics.emit_refused(reason, device, &detail);
            if let Some(t) = ack {
                acker.complete(t);
            }
        }
    }
}

async fn heartbeat(ctx: &IngestContext, device: DeviceId, info: HeartbeatInfo, started: Instant) {
    let id = device.to_string();
    let at = info.received_ms;
    let (seq, sent_at_ms, uptime_secs) = (info.seq, info.sent_at_ms, info.uptime_secs);
    match ctx.store.record_heartbeat(&id, info).await {
        Ok(HeartbeatOutcome::Recorded) => {}
        // A replay changes nothing: not the inventory, not the online state.
        Ok(HeartbeatOutcome::Stale(last)) => {
            ctx.metrics.emit_refused(
                Refusal::Replayed,
                Some(device),
                &format!(
                    "heartbeat seq {seq} (sent at {sent_at_ms}, uptime {uptime_secs} s) is not \
                     newer than the last recorded one, seq {} (sent at {}, uptime {} s)",
                    last.seq, last.sent_at_ms, last.uptime_secs
                ),
            );
            return;
        }
        Err(e) => {
            ctx.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %id, error = %e, "storing heartbeat failed");
            return;
        }
    }
    ctx.metrics
        .heartbeats_stored
        .fetch_add(1, Ordering::Relaxed);
    let lag = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    ctx.metrics.heartbeat_lag_us.store(lag, Ordering::Relaxed);
    ctx.metrics
        .heartbeat_lag_max_us
        .fetch_max(lag, Ordering::Relaxed);
    let (came_online, _) = ctx.registry.seen(device, at);
    if ctx.live.receiver_count() > 0 {
        let change = if came_online { "online" } else { "heartbeat" };
        broadcast_device(ctx, &id, true, change).await;
    }
}

async fn broadcast_device(ctx: &IngestContext, id: &str, online: bool, change: &'static str) {
    if let Ok(Some(device)) = ctx.store.device(id).await {
        let _ = ctx.live.send(LiveEvent::Device {
            device: Box::new(device),
            online,
            change,
        });
    }
}

/// Recently stored alert ids, oldest forgotten first.
#[derive(Debug)]
struct DedupCache {
    set: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    cap: usize,
}

impl DedupCache {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::with_capacity(cap.min(1 << 20)),
            order: VecDeque::with_capacity(cap.min(1 << 20)),
            cap,
        }
    }

    fn contains(&self, id: &[u8; 16]) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: [u8; 16]) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

fn id_bytes(hex: &str) -> [u8; 16] {
    hex.parse::<picket_proto::AlertId>()
        .map_or([0; 16], |a| a.0)
}

async fn writer(
    ctx: IngestContext,
    acker: Acker,
    mut rx: mpsc::Receiver<Accepted>,
    config: IngestConfig,
    shutdown: watch::Receiver<bool>,
) {
    let mut cache = DedupCache::new(config.dedup_cache_alerts);
    let mut pending: Vec<NewAlert> = Vec::with_capacity(config.commit_max_alerts + 256);
    let mut pending_ids: HashSet<[u8; 16]> = HashSet::new();
    let mut acks: Vec<AckTicket> = Vec::new();
    let mut devices: HashMap<DeviceId, u64> = HashMap::new();
    loop {
        // Wait for the first batch, then gather more until the transaction
        // is full or the interval is over.
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + config.commit_interval;
        let mut next = Some(first);
        loop {
            if let Some(a) = next.take() {
                let max = a.alerts.iter().map(|x| x.seq).max().unwrap_or(0);
                let e = devices.entry(a.device).or_insert(0);
                *e = (*e).max(max);
                for alert in a.alerts {
                    let id = id_bytes(&alert.id);
                    if cache.contains(&id) || !pending_ids.insert(id) {
                        ctx.metrics.alerts_duplicate.fetch_add(1, Ordering::Relaxed);
                    } else {
                        pending.push(alert);
                    }
                }
                acks.extend(a.ack);
            }
            if pending.len() >= config.commit_max_alerts {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(a)) => next = Some(a),
                Ok(None) | Err(_) => break,
            }
        }
        commit(&ctx, &mut pending, &mut cache, &devices, &shutdown).await;
        pending_ids.clear();
        for t in acks.drain(..) {
            acker.complete(t);
        }
        let now = now_ms();
        for (device, _) in devices.drain() {
            let (came_online, touch) = ctx.registry.seen(device, now);
            if touch {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let id = device.to_string();
                    if let Err(e) = ctx.store.touch_device(&id, now).await {
                        tracing::debug!(device = %id, error = %e, "touch failed");
                    }
                    if came_online && ctx.live.receiver_count() > 0 {
                        broadcast_device(&ctx, &id, true, "online").await;
                    }
                });
            }
        }
    }
}

async fn commit(
    ctx: &IngestContext,
    pending: &mut Vec<NewAlert>,
    cache: &mut DedupCache,
    devices: &HashMap<DeviceId, u64>,
    shutdown: &watch::Receiver<bool>,
) {
    if pending.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    let report = loop {
        match ctx.store.insert_alerts(pending).await {
            Ok(r) => break r,
            Err(e) => {
                ctx.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, alerts = pending.len(), retry_in = ?backoff, "storing alerts failed");
                if *shutdown.borrow() {
                    pending.clear();
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    ctx.metrics.commits.fetch_add(1, Ordering::Relaxed);
    ctx.metrics
        .alerts_stored
        .fetch_add(report.inserted, Ordering::Relaxed);
    ctx.metrics
        .alerts_duplicate
        .fetch_add(report.duplicates, Ordering::Relaxed);
    // Which alerts were new: all of them when the store skipped none. When
    // it skipped some (redeliveries older than the in-memory cache), those
    // at or below the device's highest stored sequence number are taken as
    // the old ones — exact for in-order delivery, which the spool provides.
    let old_max: HashMap<DeviceId, u64> = devices
        .keys()
        .map(|d| (*d, ctx.registry.max_seq(*d)))
        .collect();
    for (d, max) in devices {
        ctx.registry.bump_seq(*d, *max);
    }
    let broadcast = ctx.live.receiver_count() > 0;
    for alert in pending.drain(..) {
        cache.insert(id_bytes(&alert.id));
        if !broadcast {
            continue;
        }
        if report.duplicates > 0 {
            let dev = alert.device_id.parse::<DeviceId>().ok();
            if dev
                .and_then(|d| old_max.get(&d))
                .is_some_and(|m| alert.seq <= *m)
            {
                continue;
            }
        }
        let updated_ms = alert.received_ms;
        let _ = ctx.live.send(LiveEvent::Alert(Box::new(StoredAlert {
            alert,
            status: AlertStatus::New,
            assignee: None,
            updated_ms,
        })));
    }
}

async fn offline_checker(
    ctx: IngestContext,
    offline_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let tick = (offline_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(tick) => {}
        }
        for device in ctx.registry.sweep(offline_after) {
            let id = device.to_string();
            tracing::info!(device = %id, "device offline");
            broadcast_device(&ctx, &id, false, "offline").await;
        }
    }
}
