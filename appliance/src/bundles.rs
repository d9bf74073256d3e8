//! Signed rule bundles from the fleet (docs/BUNDLES.md), on the appliance.
//!
//! ```text
//! uplink downlink ──► announce (retained) ─► download chunks ─► SHA-256 = announce?
//!                                                   │
//!   ack Downloading / Verified / Active / Failed ◄──┤
//!                                                   ▼
//!          TrustStore::verify (root keys, threshold, expiry, rollback, hash, target)
//!                                                   ▼
//!          compile every rule (one broken rule refuses the bundle, old set kept)
//!                                                   ▼
//!          persist data_dir/bundles/active.* (write, fsync, rename) ─► RuleSlot::replace
//! ```
//!
//! - Announcements and chunks are frames signed by the backend's command
//!   key, pinned at enrollment (`fleet-command.pub` beside the identity);
//!   the bundle itself is then checked against the trusted root, so neither
//!   the broker nor the backend alone can change what a device detects.
//! - Only the newest announcement matters: a newer one abandons a download
//!   in progress; one not newer than the running version is acknowledged as
//!   what runs and otherwise ignored.
//! - The active bundle is persisted before it is swapped in, so an offline
//!   restart runs the last good bundle. At restart it is verified again
//!   against the root as of the time it was activated (its expiry does not
//!   stop a device that stays offline from detecting).
//! - A bundle replaces the `rules_dirs` rules; built-in rules stay unless the
//!   bundle carries a rule with the same id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use picket_bundle::{SignedBundle, SignedRoot, TrustStore};
use picket_proto::identity::DeviceIdentity;
use picket_proto::topic::Channel;
use picket_proto::{BoundedStr, BundleAck, BundleAnnounce, BundleState, Frame, Message};
use picket_rules::RuleSet;
use sha2::Digest as _;

use crate::detect::RuleSlot;

/// Largest bundle a device downloads.
pub const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// What the manager needs from the rest of picketd.
#[derive(Debug)]
pub struct BundleContext {
    /// The detection thread's rule slot.
    pub slot: RuleSlot,
    /// The device identity (signs acknowledgements).
    pub identity: DeviceIdentity,
    /// The backend's command key, pinned at enrollment.
    pub command_key: Option<picket_proto::ed25519_dalek::VerifyingKey>,
    /// Groups this device belongs to.
    pub groups: Vec<String>,
    /// Where the active bundle is kept.
    pub dir: PathBuf,
    /// The running bundle version (0: none), for heartbeats.
    pub running: Arc<AtomicU64>,
    /// Acknowledgements go here.
    pub outbox: tokio::sync::mpsc::Sender<picket_uplink::Uplinked>,
}

#[derive(Debug)]
struct Download {
    announce: BundleAnnounce,
    chunks: Vec<Option<Vec<u8>>>,
    received: u32,
    /// When the last chunk (or the announcement) arrived.
    last_progress: std::time::Instant,
}

impl Download {
    /// Chunks held from index 0 without a gap: what the backend resends from.
    fn contiguous(&self) -> u32 {
        u32::try_from(self.chunks.iter().take_while(|c| c.is_some()).count()).unwrap_or(u32::MAX)
    }
}

/// A download without a new chunk for this long asks again.
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// The appliance side of rule bundles; see the module doc.
#[derive(Debug)]
pub struct BundleManager {
    ctx: BundleContext,
    root: SignedRoot,
    trust: TrustStore,
    download: Option<Download>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compiles a bundle's rule files (with the built-in rules) under its
/// settings; every broken rule is an error and nothing is returned.
///
/// # Errors
/// One line per rule that does not compile, naming its file.
pub fn compile(
    files: &BTreeMap<String, Vec<u8>>,
    placeholders: &BTreeMap<String, Vec<String>>,
) -> Result<RuleSet, Vec<String>> {
    let mut sources: Vec<(PathBuf, String)> = crate::detect::BUILTIN_RULES
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    let mut errors = Vec::new();
    for (name, bytes) in files {
        if !picket_rules::RULE_EXTENSIONS
            .iter()
            .any(|e| name.ends_with(&format!(".{e}")))
        {
            continue;
        }
        match String::from_utf8(bytes.clone()) {
            Ok(t) => sources.push((PathBuf::from(format!("bundle/{name}")), t)),
            Err(_) => errors.push(format!("bundle/{name}: not UTF-8")),
        }
    }
    let loaded = crate::detect::compile_sources(sources, placeholders, &mut errors);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

impl BundleManager {
    /// Loads the trusted root and, if there is one, the persisted active
    /// bundle (swapping it in).
    ///
    /// # Errors
    /// The root cannot be read or is not valid root metadata. A persisted
    /// bundle that no longer verifies is logged and set aside, not fatal.
    pub fn open(ctx: BundleContext, root_file: &Path) -> anyhow::Result<Self> {
        let root_bytes = std::fs::read(root_file)
            .with_context(|| format!("bundle root {}", root_file.display()))?;
        let root = SignedRoot::decode(&root_bytes)
            .with_context(|| format!("bundle root {}", root_file.display()))?;
        let trust = TrustStore::new(root.clone(), None)
            .with_context(|| format!("bundle root {}", root_file.display()))?;
        std::fs::create_dir_all(&ctx.dir)
            .with_context(|| format!("cannot create {}", ctx.dir.display()))?;
        let mut m = Self {
            ctx,
            root,
            trust,
            download: None,
        };
        match m.restore() {
            Ok(Some(v)) => tracing::info!(version = v, "running the persisted rule bundle"),
            Ok(None) => {}
            Err(e) => {
                let aside = m.ctx.dir.join("active.pbundle.refused");
                let _ = std::fs::rename(m.ctx.dir.join("active.pbundle"), &aside);
                tracing::error!(
                    "persisted rule bundle refused ({e:#}); moved to {}; running the configured rules",
                    aside.display()
                );
            }
        }
        Ok(m)
    }

    fn restore(&mut self) -> anyhow::Result<Option<u64>> {
        let path = self.ctx.dir.join("active.pbundle");
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let at: u64 = std::fs::read_to_string(self.ctx.dir.join("active.at"))
            .context("active.at")?
            .trim()
            .parse()
            .context("active.at")?;
        let signed = SignedBundle::decode(&bytes)?;
        let groups: Vec<&str> = self.ctx.groups.iter().map(String::as_str).collect();
        let verified = self.trust.verify(
            &signed,
            at,
            &self.ctx.identity.device_id().to_string(),
            &groups,
        )?;
        let version = verified.manifest().version;
        let rules = compile(verified.files(), &verified.settings().placeholders)
            .map_err(|e| anyhow::anyhow!(e.join("; ")))?;
        self.install(version, rules)?;
        Ok(Some(version))
    }

    fn install(&mut self, version: u64, rules: RuleSet) -> anyhow::Result<()> {
        let n = rules.len();
        let generation = self.ctx.slot.replace(rules);
        self.trust = TrustStore::new(self.root.clone(), Some(version))?;
        self.ctx.running.store(version, Ordering::Relaxed);
        tracing::info!(version, generation, rules = n, "rule bundle active");
        Ok(())
    }

    /// The running bundle version.
    #[must_use]
    pub fn running(&self) -> Option<u64> {
        self.trust.running_version()
    }

    /// Handles one frame from the backend. Never fails: a bad frame is
    /// logged (and, for a bundle, acknowledged as failed).
    pub fn handle(&mut self, channel: Channel, payload: &[u8]) {
        let Some(key) = self.ctx.command_key else {
            tracing::warn!(
                "a bundle frame arrived, but no backend command key is pinned (enroll first)"
            );
            return;
        };
        if payload.is_empty() {
            // a cleared retained announcement: nothing is announced (any more)
            tracing::debug!(?channel, "empty bundle frame (announcement cleared)");
            return;
        }
        let device = self.ctx.identity.device_id();
        let frame = match Frame::decode_exact(payload) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(?channel, "bundle frame refused: {e}");
                return;
            }
        };
        match frame.open_for(device, &key) {
            Ok(Message::BundleAnnounce(a)) if channel == Channel::BundleAnnounce => {
                self.on_announce(a);
            }
            Ok(Message::BundleChunk(c)) if channel == Channel::BundleChunks => {
                self.on_chunk(c.version, c.index, c.data.as_bytes());
            }
            Ok(_) => {
                tracing::warn!(?channel, kind = ?frame.kind(), "unexpected frame on a bundle topic");
            }
            Err(e) => tracing::warn!(?channel, "bundle frame refused: {e}"),
        }
    }

    fn on_announce(&mut self, a: BundleAnnounce) {
        if self.running().is_some_and(|r| a.version <= r) {
            // what runs is what the backend should know
            if self.running() == Some(a.version) {
                self.ack(a.version, BundleState::Active, 0, None);
            }
            return;
        }
        if let Some(d) = self
            .download
            .as_mut()
            .filter(|d| d.announce.version == a.version)
        {
            // announced again (a reconnect): ask for what is missing
            d.last_progress = std::time::Instant::now();
            let from = d.contiguous();
            self.ack(a.version, BundleState::Downloading, from, None);
            return;
        }
        let max_chunks = MAX_BUNDLE_BYTES / u64::from(a.chunk_len.max(1)) + 1;
        if a.total_len > MAX_BUNDLE_BYTES
            || a.chunk_count == 0
            || u64::from(a.chunk_count) > max_chunks
            || u64::from(a.chunk_len) * u64::from(a.chunk_count) < a.total_len
        {
            self.fail(
                a.version,
                format!(
                    "announcement refused: {} bytes in {} chunks of {} (limit {MAX_BUNDLE_BYTES} bytes)",
                    a.total_len, a.chunk_count, a.chunk_len
                ),
            );
            return;
        }
        tracing::info!(
            version = a.version,
            bytes = a.total_len,
            chunks = a.chunk_count,
            "rule bundle announced"
        );
        self.download = Some(Download {
            announce: a,
            chunks: vec![None; a.chunk_count as usize],
            received: 0,
            last_progress: std::time::Instant::now(),
        });
        self.ack(a.version, BundleState::Downloading, 0, None);
    }

    fn on_chunk(&mut self, version: u64, index: u32, data: &[u8]) {
        let Some(d) = self.download.as_mut() else {
            return;
        };
        if d.announce.version != version {
            return;
        }
        let Some(slot) = d.chunks.get_mut(index as usize) else {
            let v = d.announce.version;
            self.fail(v, format!("chunk {index} is beyond the announced count"));
            return;
        };
        if slot.is_none() {
            *slot = Some(data.to_vec());
            d.received += 1;
            d.last_progress = std::time::Instant::now();
        }
        if d.received < d.announce.chunk_count {
            return;
        }
        let Some(d) = self.download.take() else {
            return;
        };
        let bytes: Vec<u8> = d.chunks.into_iter().flatten().flatten().collect();
        let v = d.announce.version;
        if bytes.len() as u64 != d.announce.total_len
            || sha2::Sha256::digest(&bytes).as_slice() != d.announce.sha256
        {
            self.fail(
                v,
                "downloaded bundle does not match the announced length and SHA-256".into(),
            );
            return;
        }
        match self.activate(&bytes) {
            Ok(version) => self.ack(version, BundleState::Active, d.received, None),
            Err(e) => self.fail(v, format!("{e:#}")),
        }
    }

    /// Verifies, compiles, persists and swaps in a bundle file; the old set
    /// keeps running on any error.
    ///
    /// # Errors
    /// The verification error (docs/BUNDLES.md §5), the rules that do not
    /// compile, or the persistence failure.
    pub fn activate(&mut self, bytes: &[u8]) -> anyhow::Result<u64> {
        let signed = SignedBundle::decode(bytes)?;
        let now = now_unix();
        let groups: Vec<&str> = self.ctx.groups.iter().map(String::as_str).collect();
        let verified = self.trust.verify(
            &signed,
            now,
            &self.ctx.identity.device_id().to_string(),
            &groups,
        )?;
        let version = verified.manifest().version;
        self.ack(version, BundleState::Verified, 0, None);
        let rules = compile(verified.files(), &verified.settings().placeholders)
            .map_err(|e| anyhow::anyhow!("rules that do not compile: {}", e.join("; ")))?;
        // durable before it runs: a restart must come back to this set
        write_durably(&self.ctx.dir.join("active.at"), now.to_string().as_bytes())?;
        write_durably(&self.ctx.dir.join("active.pbundle"), bytes)?;
        self.install(version, rules)?;
        Ok(version)
    }

    fn fail(&mut self, version: u64, error: String) {
        tracing::error!(
            version,
            "rule bundle refused: {error}; the running rules stay"
        );
        self.ack(version, BundleState::Failed, 0, Some(&error));
    }

    fn ack(&self, version: u64, state: BundleState, chunks_received: u32, error: Option<&str>) {
        let msg = Message::BundleAck(BundleAck {
            version,
            state,
            chunks_received,
            error: error.map(BoundedStr::truncated),
        });
        let id = &self.ctx.identity;
        match picket_proto::encode_frame_to_vec(&msg, id.device_id(), id.signing_key()) {
            Ok(frame) => {
                if self
                    .ctx
                    .outbox
                    .try_send(picket_uplink::Uplinked {
                        channel: Channel::Acks,
                        payload: frame,
                    })
                    .is_err()
                {
                    tracing::warn!(
                        version,
                        ?state,
                        "bundle acknowledgement dropped (uplink busy)"
                    );
                }
            }
            Err(e) => tracing::error!("cannot encode a bundle acknowledgement: {e}"),
        }
    }

    /// Runs until `downlink` closes: every bundle frame the uplink hands over.
    pub async fn run(mut self, mut downlink: tokio::sync::mpsc::Receiver<picket_uplink::Downlink>) {
        let mut check = tokio::time::interval(STALL_AFTER / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let d = tokio::select! {
                d = downlink.recv() => d,
                _ = check.tick() => {
                    self.retry_stalled();
                    continue;
                }
            };
            let Some(d) = d else { return };
            match d.channel {
                Channel::BundleAnnounce | Channel::BundleChunks => {
                    // verification and compiling are CPU work: off the runtime's workers
                    tokio::task::block_in_place(|| self.handle(d.channel, &d.payload));
                }
                Channel::Commands => tracing::debug!("command frames are not handled yet"),
                _ => {}
            }
        }
    }

    /// A download that stalled (chunks lost with a connection) asks the
    /// backend again for the chunks from the first one missing.
    fn retry_stalled(&mut self) {
        let Some(d) = self.download.as_mut() else {
            return;
        };
        if d.last_progress.elapsed() < STALL_AFTER {
            return;
        }
        d.last_progress = std::time::Instant::now();
        let (version, from) = (d.announce.version, d.contiguous());
        tracing::info!(version, from, "bundle download stalled; asking again");
        self.ack(version, BundleState::Downloading, from, None);
    }
}

fn write_durably(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
