//! The uplink: a thin rumqttc event loop around the sans-IO [`Session`].
//!
//! One task owns the session, the spool cursor and the in-flight batches; a
//! second task per connection polls rumqttc's `EventLoop` and forwards its
//! events over a channel (rumqttc's `poll` must not be cancelled mid-way, so
//! it is never raced in a `select!`). Each connection gets a fresh
//! `EventLoop`: rumqttc's own retransmission queue is never used, because
//! after a restart it would be empty anyway — the spool is the source of
//! truth, and [`Spool::rewind`] on every connection resends what was not
//! acknowledged.
//!
//! MQTT 3.1.1 (rumqttc's `v4` client): it is the mature half of rumqttc,
//! both Mosquitto and rumqttd speak it, and nothing here needs MQTT 5 —
//! the maximum packet size is enforced on both sides by configuration,
//! de-duplication is by alert id, and the session is clean
//! (`clean_session = true`, the device id as client id): the spool, not the
//! broker, keeps what is undelivered, and the device subscribes again on
//! every connection, so a broker never replays to it what it missed while
//! offline — a rule-bundle announcement is retained, and the device gets
//! the newest one alone.

pub mod codec;
pub mod config;
pub mod session;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use picket_proto::topic::{self, Channel};
use picket_proto::{
    encode_frame_to_vec, BoundedStr, Heartbeat, Message, ModuleStatus, MAX_MODULES, MIN_FRAME_LEN,
    PROTOCOL_VERSION,
};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::spool::{Batch, Spool, SpoolError, SpoolStats};
pub use codec::Compression;
pub use config::{ConfigError, HeartbeatExtras, HeartbeatSource, UplinkConfig};
pub use session::{Action, Session, SessionConfig, Ticket};

/// Why the uplink stopped on its own. Network trouble never stops it (it
/// backs off and retries); a spool that fails on disk does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool failed to read or delete records.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Uplink counters (all monotonic except `connected` and `inflight_batches`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Whether a broker connection is up.
    pub connected: bool,
    /// CONNACKs received.
    pub connects_total: u64,
    /// Connections lost or refused (TLS failures included).
    pub connection_errors_total: u64,
    /// Alert batches published (resends included).
    pub batches_sent_total: u64,
    /// Alert batches acknowledged by the broker.
    pub batches_acked_total: u64,
    /// Alerts acknowledged by the broker (and deleted from the spool).
    pub alerts_acked_total: u64,
    /// Alert frame bytes published (MQTT payloads).
    pub frame_bytes_sent_total: u64,
    /// Alerts in published batches (resends included).
    pub alerts_sent_total: u64,
    /// Heartbeats published.
    pub heartbeats_sent_total: u64,
    /// Batches awaiting a PUBACK.
    pub inflight_batches: u64,
    /// Alerts dropped because even alone they exceed `max_packet_bytes`
    /// (possible only when it is set below a full frame).
    pub oversized_alerts_dropped_total: u64,
    /// Bundle and command frames handed to the appliance.
    pub downlink_received_total: u64,
    /// Downlink frames the appliance's queue had no room for, and
    /// acknowledgements or replies that could not be published.
    pub fleet_dropped_total: u64,
    /// The last connection error, for diagnostics.
    pub last_error: Option<String>,
}

/// Spool and uplink figures together, for heartbeats and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The spool's counters.
    pub spool: SpoolStats,
    /// The uplink's counters.
    pub uplink: UplinkStats,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    connects: AtomicU64,
    errors: AtomicU64,
    batches_sent: AtomicU64,
    batches_acked: AtomicU64,
    alerts_acked: AtomicU64,
    frame_bytes: AtomicU64,
    alerts_sent: AtomicU64,
    heartbeats: AtomicU64,
    inflight: AtomicU64,
    oversized_dropped: AtomicU64,
    downlink_received: AtomicU64,
    fleet_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A handle to read the figures while [`Uplink::run`] runs.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    spool: Spool,
    counters: Arc<Counters>,
}

impl StatsHandle {
    /// A snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            spool: self.spool.stats(),
            uplink: UplinkStats {
                connected: c.connected.load(Ordering::Relaxed),
                connects_total: get(&c.connects),
                connection_errors_total: get(&c.errors),
                batches_sent_total: get(&c.batches_sent),
                batches_acked_total: get(&c.batches_acked),
                alerts_acked_total: get(&c.alerts_acked),
                frame_bytes_sent_total: get(&c.frame_bytes),
                alerts_sent_total: get(&c.alerts_sent),
                heartbeats_sent_total: get(&c.heartbeats),
                inflight_batches: get(&c.inflight),
                oversized_alerts_dropped_total: get(&c.oversized_dropped),
                downlink_received_total: get(&c.downlink_received),
                fleet_dropped_total: get(&c.fleet_dropped),
                last_error: c
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            },
        }
    }
}

/// The uplink, built from its config and the spool it drains.
#[derive(Debug)]
pub struct Uplink {
    config: UplinkConfig,
    spool: Spool,
    tls: Arc<rustls::ClientConfig>,
    counters: Arc<Counters>,
    fleet: Option<FleetLink>,
}

/// A frame the backend sent to this device (bundle announcements and
/// chunks, commands), handed over undecoded: the receiver verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    /// Which topic it came on.
    pub channel: Channel,
    /// The frame.
    pub payload: Vec<u8>,
}

/// A frame this device sends that does not belong in the spool (bundle
/// acknowledgements, command replies): published at QoS 1 while connected,
/// dropped while not (their senders repeat state, not history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplinked {
    /// [`Channel::Acks`] or [`Channel::Replies`].
    pub channel: Channel,
    /// The frame, signed by the device.
    pub payload: Vec<u8>,
}

/// The two directions of fleet traffic besides alerts and heartbeats.
#[derive(Debug)]
pub struct FleetLink {
    /// Where downlink frames go (bounded; a full queue drops and counts).
    pub downlink: mpsc::Sender<Downlink>,
    /// Frames to publish.
    pub outbox: mpsc::Receiver<Uplinked>,
}

/// Validates `config` and runs the uplink until `shutdown` completes.
///
/// # Errors
/// As [`Uplink::new`] and [`Uplink::run`].
pub async fn run(
    config: UplinkConfig,
    spool: Spool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UplinkError> {
    Uplink::new(config, spool)?.run(shutdown).await
}

struct Connection {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Uplink {
    /// Checks the config and builds the TLS client configuration.
    ///
    /// # Errors
    /// [`UplinkError::Config`].
    pub fn new(config: UplinkConfig, spool: Spool) -> Result<Self, UplinkError> {
        config.validate()?;
        let tls = tls::client_config(&config)?;
        Ok(Self {
            config,
            spool,
            tls,
            counters: Arc::default(),
            fleet: None,
        })
    }

    /// Subscribes to the device's bundle and command topics and publishes
    /// acknowledgements and replies through `link`.
    #[must_use]
    pub fn with_fleet_link(mut self, link: FleetLink) -> Self {
        self.fleet = Some(link);
        self
    }

    /// A handle to the figures.
    #[must_use]
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            spool: self.spool.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Delivers spooled alerts until `shutdown` completes; reconnects with
    /// back-off on any network or TLS failure.
    ///
    /// # Errors
    /// [`UplinkError::Spool`] when the spool fails on disk.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), UplinkError> {
        tokio::pin!(shutdown);
        let (downlink, mut outbox) = match self.fleet.take() {
            Some(l) => (Some(l.downlink), Some(l.outbox)),
            None => (None, None),
        };
        let downlink_topics: Vec<(String, Channel)> = if downlink.is_some() {
            [
                Channel::BundleAnnounce,
                Channel::BundleChunks,
                Channel::Commands,
            ]
            .into_iter()
            .map(|ch| {
                (
                    topic::topic(self.config.identity.device_id(), ch).to_string(),
                    ch,
                )
            })
            .collect()
        } else {
            Vec::new()
        };
        let device = self.config.identity.device_id();
        let alerts_topic = topic::topic(device, Channel::Alerts).to_string();
        let heartbeat_topic = topic::topic(device, Channel::Heartbeat).to_string();
        let started = Instant::now();
        let mut seed = [0u8; 8];
        // Without randomness the jitter is merely predictable.
        let _ = getrandom::fill(&mut seed);
        let mut session = Session::new(
            self.config.session(),
            started,
            u64::from_le_bytes(seed)
                ^ u64::from_le_bytes(device.0[..8].try_into().unwrap_or([0; 8])),
        );
        let mut durable = self.spool.subscribe();
        let mut conn: Option<Connection> = None;
        let mut batches: HashMap<Ticket, Batch> = HashMap::new();
        let mut heartbeat_seq = 0u64;
        // Body budget of one batch: the frame limit less envelope and count.
        let max_wire = self.config.max_frame_len() - MIN_FRAME_LEN - 10;
        let c = &self.counters;

        let result = loop {
            let now = Instant::now();
            let action = session.poll(now, self.spool.ready_hint());
            match action {
                Action::Connect => {
                    tracing::debug!(host = %self.config.broker_host, port = self.config.broker_port, "connecting");
                    conn = Some(self.connect());
                }
                Action::Reconnect => {
                    tracing::warn!("no PUBACK within the ack timeout; reconnecting");
                    conn = None;
                    self.disconnected(&mut session, &mut batches, "ack timeout".into());
                }
                Action::SendHeartbeat => {
                    if let Some(cn) = &conn {
                        heartbeat_seq += 1;
                        match self.heartbeat(heartbeat_seq, started) {
                            Ok(frame) => {
                                if cn
                                    .client
                                    .try_publish(&heartbeat_topic, QoS::AtMostOnce, false, frame)
                                    .is_ok()
                                {
                                    c.heartbeats.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "cannot encode a heartbeat"),
                        }
                    }
                }
                Action::SendBatch => {
                    let Some(cn) = &conn else { continue };
                    let batch = match self.spool.take(self.config.batch_max_alerts, max_wire) {
                        Ok(b) => b,
                        Err(e) => break Err(e.into()),
                    };
                    if batch.is_empty() {
                        session.on_nothing_ready();
                        continue;
                    }
                    let frame = match codec::encode_alert_batch(
                        batch.records(),
                        &self.config.identity,
                        self.config.compression,
                    ) {
                        Ok(f) => f,
                        Err(e) => {
                            // Cannot happen for records the spool accepted;
                            // never let one block the queue.
                            tracing::error!(error = %e, n = batch.len(), "cannot encode a batch; dropping it");
                            if let Err(e) = self.spool.ack(&batch) {
                                break Err(e.into());
                            }
                            continue;
                        }
                    };
                    if frame.len() > self.config.max_frame_len() {
                        // Only a lone alert can overflow (batches are cut by
                        // size), and only under a reduced max_packet_bytes:
                        // it can never be sent, so it must not block the queue.
                        tracing::error!(
                            len = frame.len(),
                            max = self.config.max_frame_len(),
                            seq = batch.records().first().map(|r| r.seq),
                            "alert larger than max_packet_bytes allows; dropping it"
                        );
                        c.oversized_dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        if let Err(e) = self.spool.ack(&batch) {
                            break Err(e.into());
                        }
                        continue;
                    }
                    let (n, len) = (batch.len() as u64, frame.len() as u64);
                    match cn
                        .client
                        .try_publish(&alerts_topic, QoS::AtLeastOnce, false, frame)
                    {
                        Ok(()) => {
                            let ticket = session.on_batch_sent(now);
                            batches.insert(ticket, batch);
                            c.batches_sent.fetch_add(1, Ordering::Relaxed);
                            c.alerts_sent.fetch_add(n, Ordering::Relaxed);
                            c.frame_bytes.fetch_add(len, Ordering::Relaxed);
                            c.inflight
                                .store(session.inflight() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // The request queue is sized for the window, so
                            // this means the event loop is gone.
                            conn = None;
                            self.disconnected(&mut session, &mut batches, e.to_string());
                        }
                    }
                }
                Action::Wait(deadline) => {
                    let sleep = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    let event = async {
                        match conn.as_mut() {
                            Some(cn) => cn.events.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    let outgoing = async {
                        match outbox.as_mut() {
                            Some(o) => o.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = &mut shutdown => break Ok(()),
                        () = sleep => {}
                        changed = durable.changed() => {
                            if changed.is_err() {
                                // The spool is gone: nothing more to send.
                                break Ok(());
                            }
                        }
                        out = outgoing => match (out, &conn) {
                            (Some(o), Some(cn)) if c.connected.load(Ordering::Relaxed) => {
                                let t = topic::topic(device, o.channel).to_string();
                                if cn.client.try_publish(&t, QoS::AtLeastOnce, false, o.payload).is_err() {
                                    c.fleet_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            (Some(_), _) => {
                                c.fleet_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            // the sender is gone: nothing more will come
                            (None, _) => outbox = None,
                        },
                        ev = event => {
                            let ev = ev.unwrap_or(Err(ConnectionError::RequestsDone));
                            if let Ok(Event::Incoming(Packet::ConnAck(_))) = &ev {
                                if let Some(cn) = &conn {
                                    // one SUBSCRIBE for every downlink topic: the
                                    // broker sets them up together, so once the
                                    // retained announcement arrives, commands do too
                                    if !downlink_topics.is_empty() {
                                        let filters = downlink_topics.iter().map(|(t, _)| {
                                            rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)
                                        });
                                        if let Err(e) = cn.client.try_subscribe_many(filters) {
                                            tracing::warn!(error = %e, "downlink subscribe failed");
                                        }
                                    }
                                }
                            }
                            if let Ok(Event::Incoming(Packet::Publish(p))) = &ev {
                                if let (Some(tx), Some((_, ch))) = (
                                    &downlink,
                                    downlink_topics.iter().find(|(t, _)| *t == p.topic),
                                ) {
                                    let d = Downlink { channel: *ch, payload: p.payload.to_vec() };
                                    if tx.try_send(d).is_err() {
                                        c.fleet_dropped.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        c.downlink_received.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            if let Err(e) = self.on_event(ev, &mut session, &mut batches) {
                                break Err(e);
                            }
                            if session.is_down() {
                                conn = None;
                            }
                        }
                    }
                }
            }
        };
        if let Some(cn) = conn.take() {
            let _ = cn.client.try_disconnect();
            // Give the DISCONNECT a moment to leave; PUBACKs that arrive now
            // still delete their records.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            let mut cn = cn;
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, cn.events.recv()).await {
                let done = ev.is_err();
                let _ = self.on_event(ev, &mut session, &mut batches);
                if done {
                    break;
                }
            }
        }
        c.connected.store(false, Ordering::Relaxed);
        if let Err(e) = self.spool.flush() {
            tracing::error!(error = %e, "spool flush at uplink shutdown failed");
        }
        result
    }

    fn on_event(
        &self,
        ev: Result<Event, ConnectionError>,
        session: &mut Session,
        batches: &mut HashMap<Ticket, Batch>,
    ) -> Result<(), UplinkError> {
        let c = &self.counters;
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                session.on_connected(Instant::now());
                batches.clear();
                self.spool.rewind();
                c.connects.fetch_add(1, Ordering::Relaxed);
                c.connected.store(true, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.on_publish_sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(batch) = session.on_puback(ack.pkid).and_then(|t| batches.remove(&t)) {
                    self.spool.ack(&batch)?;
                    c.batches_acked.fetch_add(1, Ordering::Relaxed);
                    c.alerts_acked
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    c.inflight
                        .store(session.inflight() as u64, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::Disconnect)) => {
                self.disconnected(session, batches, "broker sent DISCONNECT".into());
            }
            Ok(_) => {}
            Err(e) => self.disconnected(session, batches, e.to_string()),
        }
        Ok(())
    }

    fn disconnected(
        &self,
        session: &mut Session,
        batches: &mut HashMap<Ticket, Batch>,
        error: String,
    ) {
        let delay = session.on_disconnected(Instant::now());
        batches.clear();
        self.spool.rewind();
        let c = &self.counters;
        c.errors.fetch_add(1, Ordering::Relaxed);
        c.connected.store(false, Ordering::Relaxed);
        c.inflight.store(0, Ordering::Relaxed);
        tracing::warn!(%error, retry_in = ?delay, "broker connection lost or refused");
        *c.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    fn connect(&self) -> Connection {
        let cfg = &self.config;
        let mut options = MqttOptions::new(
            cfg.identity.device_id().to_string(),
            cfg.broker_host.clone(),
            cfg.broker_port,
        );
        options
            .set_keep_alive(cfg.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes)
            // Packet ids cycle through 1..inflight; twice the window leaves
            // room for a broker that acks out of order.
            .set_inflight(u16::try_from(cfg.inflight_batches * 2 + 2).unwrap_or(u16::MAX))
            .set_request_channel_capacity(cfg.inflight_batches + 8)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls.clone(),
            )));
        let (client, mut eventloop) = AsyncClient::new(options, cfg.inflight_batches + 8);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(cfg.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(net);
        let (tx, events) = mpsc::channel(64);
        let task = tokio::spawn(poll_events(eventloop, tx));
        Connection {
            client,
            events,
            task,
        }
    }

    fn heartbeat(&self, seq: u64, started: Instant) -> Result<Vec<u8>, picket_proto::Error> {
        let extras = self
            .config
            .heartbeat_source
            .as_ref()
            .map(|f| f())
            .unwrap_or_default();
        let spool = self.spool.stats();
        let mut modules = picket_proto::heapless::Vec::<ModuleStatus<'_>, MAX_MODULES>::new();
        for (name, state, error) in extras.modules.iter().take(MAX_MODULES) {
            let _ = modules.push(ModuleStatus {
                name: BoundedStr::truncated(name),
                state: *state,
                error: error.as_deref().map(BoundedStr::truncated),
            });
        }
        let hb = Heartbeat {
            seq,
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            uptime_secs: started.elapsed().as_secs(),
            agent_version: BoundedStr::truncated(&self.config.agent_version),
            protocol_version: PROTOCOL_VERSION,
            rule_bundle_version: extras.rule_bundle_version,
            spool_depth: spool.depth,
            // WIRE.md §4.2: bytes on disk; the logical size if sled cannot say.
            spool_bytes: self.spool.disk_bytes().unwrap_or(spool.bytes),
            spool_evictions_total: spool.evictions_total(),
            lost_kernel_records_total: extras.lost_kernel_records_total,
            modules,
            cpu_permille: extras.cpu_permille,
            rss_bytes: extras.rss_bytes.unwrap_or_else(own_rss_bytes),
        };
        let id = &self.config.identity;
        let frame = encode_frame_to_vec(&Message::Heartbeat(hb), id.device_id(), id.signing_key());
        frame
    }
}

async fn poll_events(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, ConnectionError>>) {
    loop {
        let ev = eventloop.poll().await;
        let failed = ev.is_err();
        if tx.send(ev).await.is_err() || failed {
            // Polling again would make rumqttc reconnect on its own; the
            // session decides when to reconnect.
            return;
        }
    }
}

/// This process's resident set size (`VmRSS` in `/proc/self/status`; 0
/// where there is no procfs).
#[must_use]
pub fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_rss_is_measured() {
        assert!(super::own_rss_bytes() > 1 << 20);
    }
}
