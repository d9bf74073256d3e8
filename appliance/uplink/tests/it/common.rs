//! Test harness: a certificate authority made with rcgen, a real Mosquitto
//! started on free ports with a TLS listener, and a verifying subscriber.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use picket_proto::identity::DeviceIdentity;
use picket_proto::topic::{self, Channel};
use picket_proto::{AlertId, DeviceId, Frame, Message};
use picket_uplink::uplink::codec::open_alert_batch;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Waits for `cond` with a deadline; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async [`wait_until`].
pub async fn wait_until_async(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Certificates for one test: a fleet CA, a server, a device, and an
/// unrelated ("rogue") CA with its own server certificate.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub dir: PathBuf,
    pub ca_pem: String,
    pub device_cert_pem: String,
    pub device_key_pem: String,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ca = make_ca("Picket test fleet CA");
        let rogue = make_ca("Rogue CA");
        let server = |issuer: &CertifiedIssuer<'_, KeyPair>, name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            (
                p.signed_by(&key, issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (server_pem, server_key) = server(&ca, "broker");
        let (rogue_server_pem, rogue_server_key) = server(&rogue, "broker");
        let device_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "device");
        let device_cert_pem = p.signed_by(&device_key, &ca).unwrap().pem();
        let write = |name: &str, s: &str| std::fs::write(dir.join(name), s).unwrap();
        write("ca.pem", &ca.pem());
        write("server.pem", &server_pem);
        write("server.key", &server_key);
        write("rogue-server.pem", &rogue_server_pem);
        write("rogue-server.key", &rogue_server_key);
        write("device.pem", &device_cert_pem);
        write("device.key", &device_key.serialize_pem());
        Self {
            dir: dir.to_owned(),
            ca_pem: ca.pem(),
            device_cert_pem,
            device_key_pem: device_key.serialize_pem(),
            ca,
        }
    }

    /// A client certificate from the fleet CA for `key`: (cert PEM, key PEM).
    pub fn issue_client(&self, key: &KeyPair, name: &str) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        (
            p.signed_by(key, &self.ca).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, key).unwrap()
}

/// Which server certificate the broker presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    Fleet,
    Rogue,
}

/// A Mosquitto process: a TLS listener for devices (client certificates
/// required) and a plain one on loopback for the test's subscriber.
pub struct Broker {
    pub tls_port: u16,
    pub plain_port: u16,
    conf: PathBuf,
    child: Option<Child>,
    pub dir: PathBuf,
}

impl Broker {
    pub fn start(pki: &Pki, dir: &Path, cert: ServerCert) -> Self {
        Self::start_on(pki, dir, cert, free_port(), free_port())
    }

    pub fn start_on(
        pki: &Pki,
        dir: &Path,
        cert: ServerCert,
        tls_port: u16,
        plain_port: u16,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let (cert_file, key_file) = match cert {
            ServerCert::Fleet => ("server.pem", "server.key"),
            ServerCert::Rogue => ("rogue-server.pem", "rogue-server.key"),
        };
        let p = |f: &str| pki.dir.join(f).display().to_string();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings true\n\
                 user root\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 log_dest file {dir}/mosquitto.log\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 max_queued_messages 1000000\n\
                 max_inflight_messages 100\n\
                 max_packet_size 262144\n\
                 listener {tls_port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\n\
                 tls_version tlsv1.3\n\
                 listener {plain_port} 127.0.0.1\n\
                 allow_anonymous true\n",
                dir = dir.display(),
                ca = p("ca.pem"),
                cert = p(cert_file),
                key = p(key_file),
            ),
        )
        .unwrap();
        let mut b = Self {
            tls_port,
            plain_port,
            conf,
            child: None,
            dir: dir.to_owned(),
        };
        b.restart();
        b
    }

    /// Starts the process again with the same config, ports and persistence.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let (a, b) = (self.tls_port, self.plain_port);
        let log = self.dir.join("mosquitto.log");
        wait_until("mosquitto listening", Duration::from_secs(10), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "mosquitto exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", a)).is_ok()
                && TcpStream::connect(("127.0.0.1", b)).is_ok()
        });
    }

    /// Stops it gracefully (SIGTERM: mosquitto saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill -TERM` from the command line keeps the tests free of libc.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the subscriber saw, in arrival order.
#[derive(Default, Debug)]
pub struct Received {
    /// (seq, id) of every alert, duplicates included.
    pub alerts: Vec<(u64, AlertId)>,
    /// Frames that did not open (bad signature, wrong device...).
    pub refused: u64,
    /// Heartbeats: (seq, spool_depth, spool_evictions_total).
    pub heartbeats: Vec<(u64, u64, u64)>,
    pub compressed_frames: u64,
    pub frames: u64,
    /// The newest heartbeat's module states and lost kernel records.
    pub last_modules: Vec<(String, picket_proto::ModuleState)>,
    pub last_lost_kernel_records: u64,
    /// The key/value fields of alerts whose event is a field list, by id.
    pub fields: HashMap<AlertId, Vec<(String, String)>>,
    /// Distinct alert ids, kept up to date for cheap polling.
    pub ids: std::collections::HashSet<AlertId>,
}

impl Received {
    /// Distinct ids and the seq of their first arrival, checking that one seq
    /// never carries two ids.
    pub fn dedup(&self) -> (Vec<(u64, AlertId)>, usize) {
        let mut seen: HashMap<AlertId, u64> = HashMap::new();
        let mut by_seq: HashMap<u64, AlertId> = HashMap::new();
        let mut first = Vec::new();
        let mut dups = 0;
        for &(seq, id) in &self.alerts {
            if let Some(&other) = by_seq.get(&seq) {
                assert_eq!(other, id, "sequence number {seq} reused for another alert");
            }
            by_seq.insert(seq, id);
            if seen.insert(id, seq).is_none() {
                first.push((seq, id));
            } else {
                dups += 1;
            }
        }
        (first, dups)
    }
}

/// A subscriber on the plain listener that verifies every frame of `device`.
pub struct Subscriber {
    pub received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects with a persistent session under `client_id`, subscribes to
    /// the device's alerts and heartbeats, and waits for the SUBACK.
    pub async fn start(port: u16, client_id: &str, device: &DeviceIdentity) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(262_144, 262_144);
        let (client, mut eventloop) = AsyncClient::new(o, 16);
        let id = device.device_id();
        let key = device.verifying_key();
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
        let mut subacked_tx = Some(subacked_tx);
        client
            .subscribe(topic::topic(id, Channel::Alerts).as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        client
            .subscribe(
                topic::topic(id, Channel::Heartbeat).as_str(),
                QoS::AtMostOnce,
            )
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == 2 {
                            if let Some(tx) = subacked_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut r = r.lock().unwrap();
                        record(&mut r, &p.topic, &p.payload, id, &key);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subacked_rx)
            .await
            .expect("SUBACK in time")
            .unwrap();
        Self { received, task }
    }

    pub fn distinct(&self) -> usize {
        self.received.lock().unwrap().ids.len()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(
    r: &mut Received,
    topic_name: &str,
    payload: &[u8],
    id: DeviceId,
    key: &picket_proto::ed25519_dalek::VerifyingKey,
) {
    match topic::parse(topic_name) {
        Some((dev, Channel::Alerts)) if dev == id => match open_alert_batch(payload, id, key) {
            Ok(opened) => {
                r.frames += 1;
                r.compressed_frames += u64::from(opened.was_compressed());
                for a in &opened.batch().unwrap() {
                    r.alerts.push((a.seq, a.id));
                    r.ids.insert(a.id);
                    if let picket_proto::Event::Fields(f) = &a.event {
                        r.fields.insert(
                            a.id,
                            f.iter()
                                .map(|f| (f.key.as_str().to_owned(), f.value.as_str().to_owned()))
                                .collect(),
                        );
                    }
                }
            }
            Err(_) => r.refused += 1,
        },
        Some((dev, Channel::Heartbeat)) if dev == id => {
            match Frame::decode_exact(payload).and_then(|f| f.open_for(id, key)) {
                Ok(Message::Heartbeat(hb)) => {
                    r.heartbeats
                        .push((hb.seq, hb.spool_depth, hb.spool_evictions_total));
                    r.last_modules = hb
                        .modules
                        .iter()
                        .map(|m| (m.name.as_str().to_owned(), m.state))
                        .collect();
                    r.last_lost_kernel_records = hb.lost_kernel_records_total;
                }
                _ => r.refused += 1,
            }
        }
        _ => r.refused += 1,
    }
}

/// A device identity stored in `dir` (mode 0600), as picketd keeps it.
pub fn device_identity(dir: &Path) -> DeviceIdentity {
    DeviceIdentity::load_or_generate(&dir.join("device.key25519")).unwrap()
}

/// An uplink config for `broker` with quick back-off for tests.
pub fn uplink_config(
    pki: &Pki,
    port: u16,
    identity: DeviceIdentity,
) -> picket_uplink::UplinkConfig {
    let mut c = picket_uplink::UplinkConfig::new(
        "127.0.0.1",
        port,
        pki.ca_pem.clone(),
        pki.device_cert_pem.clone(),
        pki.device_key_pem.clone(),
        identity,
    );
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.batch_delay = Duration::from_millis(50);
    c.connect_timeout = Duration::from_secs(5);
    c
}
