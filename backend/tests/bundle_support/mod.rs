//! Simulated appliances for the rollout tests and the push benchmark: each
//! is an enrolled device with its own MQTT connection (mTLS through the
//! front) that does what picketd's bundle manager does on the wire: on a
//! retained announcement newer than what it runs it acknowledges
//! `Downloading`, collects the chunks (every frame checked against the
//! backend's command key), checks length and SHA-256, and acknowledges
//! `Active` — or `Failed` when the test injects a failure.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, reason = "test harness")]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picket_bundle::ed25519_dalek::SigningKey;
use picket_bundle::{Bundle, RootMetadata, Settings, SignedRoot, Target};
use picket_proto::topic::Channel;
use picket_proto::{BoundedStr, BundleAck, BundleState, Frame, Message};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use sha2::Digest as _;

use crate::support::TestDevice;

/// The fleet's root key and one bundle-signing key.
pub struct FleetKeys {
    pub root: SigningKey,
    pub bundle: SigningKey,
    pub signed_root: SignedRoot,
}

impl FleetKeys {
    pub fn new() -> Self {
        let root = SigningKey::from_bytes(&[91; 32]);
        let bundle = SigningKey::from_bytes(&[92; 32]);
        let mut signed_root = SignedRoot::new(&RootMetadata {
            version: 1,
            expires_unix: 4_000_000_000,
            root_keys: vec![root.verifying_key()],
            root_threshold: 1,
            bundle_keys: vec![bundle.verifying_key()],
            bundle_threshold: 1,
            revoked: BTreeSet::new(),
        })
        .unwrap();
        signed_root.sign(&root);
        Self {
            root,
            bundle,
            signed_root,
        }
    }

    /// Writes the root where the backend looks for it.
    pub fn install(&self, data_dir: &std::path::Path) {
        std::fs::write(
            data_dir.join("bundle-root.pbroot"),
            self.signed_root.encode(),
        )
        .unwrap();
    }

    /// A signed bundle of `version` with one rule per title, for `targets`.
    pub fn bundle(&self, version: u64, titles: &[&str], targets: Vec<Target>) -> Vec<u8> {
        self.bundle_signed_by(version, titles, targets, &[&self.bundle])
    }

    pub fn bundle_signed_by(
        &self,
        version: u64,
        titles: &[&str],
        targets: Vec<Target>,
        keys: &[&SigningKey],
    ) -> Vec<u8> {
        let files = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("rules/r{i}.yml"), rule(t, version, i).into_bytes()))
            .collect();
        Self::seal(version, files, targets, keys)
    }

    /// `files` sealed as bundle `version` for all devices, signed by the
    /// bundle key.
    pub fn signed_files(
        &self,
        version: u64,
        files: std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Vec<u8> {
        Self::seal(version, files, vec![Target::All], &[&self.bundle])
    }

    fn seal(
        version: u64,
        files: std::collections::BTreeMap<String, Vec<u8>>,
        targets: Vec<Target>,
        keys: &[&SigningKey],
    ) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut sealed = Bundle::new(
            version,
            now,
            now + 86_400,
            targets,
            files,
            Settings::default(),
        )
        .seal()
        .unwrap();
        for k in keys {
            sealed.sign(k);
        }
        sealed.encode()
    }
}

pub fn rule(title: &str, version: u64, i: usize) -> String {
    format!(
        "title: {title}\nid: 6f1c0000-0000-4000-8000-{version:06}{i:06}\nstatus: test\n\
         author: Picket tests\nlogsource: {{product: linux, service: sshd}}\n\
         detection:\n  sel: {{Outcome: failure}}\n  condition: sel\nlevel: medium\n\
         tags: [attack.credential_access, attack.t1110]\n"
    )
}

/// What a simulated device saw and did.
#[derive(Debug, Default, Clone)]
pub struct SimLog {
    /// Versions announced to it, in order (0: a cleared announcement).
    pub announced: Vec<u64>,
    /// Versions it received chunks of.
    pub chunk_versions: BTreeSet<u64>,
    /// Versions it activated, in order.
    pub activated: Vec<u64>,
    /// Versions it refused.
    pub failed: Vec<u64>,
}

/// One simulated appliance.
pub struct SimDevice {
    pub device: TestDevice,
    pub client: AsyncClient,
    pub log: Arc<Mutex<SimLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Download {
    version: u64,
    sha256: [u8; 32],
    total: u64,
    chunks: Vec<Option<Vec<u8>>>,
}

impl SimDevice {
    /// Connects over mTLS to the front at `addr`; `fail` makes it refuse
    /// every bundle (an injected failure).
    pub async fn connect(
        device: TestDevice,
        addr: std::net::SocketAddr,
        command_key: [u8; 32],
        fail: bool,
    ) -> Self {
        let command = picket_proto::ed25519_dalek::VerifyingKey::from_bytes(&command_key).unwrap();
        let mut o = MqttOptions::new(
            format!("sim-{}", device.id),
            addr.ip().to_string(),
            addr.port(),
        );
        o.set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_clean_session(true);
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(device.tls()),
        ));
        let (client, mut ev) = AsyncClient::new(o, 64);
        let log = Arc::new(Mutex::new(SimLog::default()));
        let (c, l, d) = (client.clone(), log.clone(), device.clone());
        let (announce, chunks) = (
            d.topic(Channel::BundleAnnounce),
            d.topic(Channel::BundleChunks),
        );
        let task = tokio::spawn(async move {
            let mut running = 0_u64;
            let mut download: Option<Download> = None;
            loop {
                let p = match ev.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        c.subscribe(announce.clone(), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                        c.subscribe(chunks.clone(), QoS::AtLeastOnce).await.unwrap();
                        continue;
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => p,
                    Ok(_) => continue,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if p.payload.is_empty() {
                    l.lock().unwrap().announced.push(0);
                    continue;
                }
                let payload = p.payload.to_vec();
                let frame = Frame::decode_exact(&payload).unwrap();
                let opened = frame.open_for(d.id, &command).unwrap();
                match opened {
                    Message::BundleAnnounce(a) => {
                        l.lock().unwrap().announced.push(a.version);
                        if a.version <= running {
                            continue;
                        }
                        download = Some(Download {
                            version: a.version,
                            sha256: a.sha256,
                            total: a.total_len,
                            chunks: vec![None; a.chunk_count as usize],
                        });
                        ack(&c, &d, a.version, BundleState::Downloading, None).await;
                    }
                    Message::BundleChunk(ch) => {
                        l.lock().unwrap().chunk_versions.insert(ch.version);
                        let Some(dl) = download.as_mut().filter(|x| x.version == ch.version) else {
                            continue;
                        };
                        if let Some(slot) = dl.chunks.get_mut(ch.index as usize) {
                            *slot = Some(ch.data.as_bytes().to_vec());
                        }
                        if dl.chunks.iter().any(Option::is_none) {
                            continue;
                        }
                        let dl = download.take().unwrap();
                        let bytes: Vec<u8> = dl.chunks.into_iter().flatten().flatten().collect();
                        let ok = bytes.len() as u64 == dl.total
                            && sha2::Sha256::digest(&bytes).as_slice() == dl.sha256;
                        assert!(ok, "bundle {} arrived corrupted", dl.version);
                        if fail {
                            l.lock().unwrap().failed.push(dl.version);
                            ack(
                                &c,
                                &d,
                                dl.version,
                                BundleState::Failed,
                                Some("rules/r0.yml: injected failure"),
                            )
                            .await;
                        } else {
                            running = dl.version;
                            l.lock().unwrap().activated.push(dl.version);
                            ack(&c, &d, dl.version, BundleState::Active, None).await;
                        }
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        });
        Self {
            device,
            client,
            log,
            task,
        }
    }

    pub fn log(&self) -> SimLog {
        self.log.lock().unwrap().clone()
    }
}

async fn ack(
    c: &AsyncClient,
    d: &TestDevice,
    version: u64,
    state: BundleState,
    error: Option<&str>,
) {
    let msg = Message::BundleAck(BundleAck {
        version,
        state,
        chunks_received: 0,
        error: error.map(BoundedStr::truncated),
    });
    let frame = picket_proto::encode_frame_to_vec(&msg, d.id, &d.key).unwrap();
    c.publish(d.topic(Channel::Acks), QoS::AtLeastOnce, false, frame)
        .await
        .unwrap();
}

/// Device ids in rollout order (SHA-256 of the id, as the controller sorts).
pub fn rollout_order(ids: &[String]) -> Vec<String> {
    let mut v: Vec<([u8; 32], String)> = ids
        .iter()
        .map(|d| (sha2::Sha256::digest(d.as_bytes()).into(), d.clone()))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, d)| d).collect()
}
