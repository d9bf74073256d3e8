//! The spool: a sled-backed durable queue of alerts waiting for the broker.
//!
//! Detection pushes alerts ([`Spool::push`], which never touches the
//! network); the uplink takes them in sequence order ([`Spool::take`]),
//! publishes them, and deletes them only when the broker acknowledges the
//! batch ([`Spool::ack`] after the PUBACK). Records of a batch that was never
//! acknowledged are taken again after [`Spool::rewind`], which the uplink calls
//! on every (re)connection. The spool, not the MQTT client's memory, is the
//! source of truth.
//!
//! # What a record holds
//!
//! Metadata — a per-device sequence number assigned on push, the 16-byte
//! alert id, the level (0 informational ..= 4 critical) and the event time —
//! plus an opaque payload: the alert's postcard fields *after* `level`
//! (`rule_id`, `rule_title`, `techniques`, `event`; docs/WIRE.md §4.1). The
//! uplink rebuilds the wire alert by writing `id seq timestamp level` in front
//! of it, without re-encoding anything. [`Spool::push`] checks that the result
//! decodes as an alert, so a bad payload is refused at the door rather than
//! found by the backend; [`Spool::push_alert`] does the split for a typed
//! [`Alert`].
//!
//! # Invariants
//!
//! 1. **Sequence numbers are strictly increasing and never reused**, across
//!    restarts: a push takes `next_seq`, and `next_seq` is recovered on open as
//!    one past the larger of the highest stored sequence number and the
//!    persisted *floor*. The floor is written before (ack) or atomically with
//!    (eviction) every deletion, so a deletion is never durable without it.
//! 2. **A record is deleted only by [`Spool::ack`] (after the PUBACK of the
//!    batch that carried it), by budget eviction, or because it is corrupt** —
//!    and the last two are counted, persistently, per level.
//! 3. **Only durable records are handed to the uplink**: [`Spool::take`]
//!    returns records up to the durable watermark ([`Spool::durable_seq`]).
//!    So a record the backend has seen can never vanish in a crash and have its
//!    sequence number handed to another alert.
//! 4. **Records are taken in sequence order**, each once between two rewinds.
//! 5. **The budget holds**: the sum of the records' costs (key plus value
//!    bytes, [`Record::cost`]) never exceeds `budget_bytes`.
//!
//! # Eviction
//!
//! When a push would exceed the budget, records are evicted in the order
//! *lowest level first, oldest (lowest sequence number) first within a level*,
//! until the new record fits. A new alert never evicts an alert of a higher
//! level: if the records at its own level or below cannot make enough room, the
//! new alert itself is the one dropped (it still consumes a sequence number,
//! so the backend sees the gap). Every evicted or dropped alert adds one to the
//! eviction counter of its level ([`SpoolStats::evictions_by_level`]), which
//! is persisted with the deletion in one atomic sled batch and reported in
//! heartbeats. Records in flight can be evicted; their ack is then a no-op.
//!
//! # Flush policy and what a power cut can lose
//!
//! sled keeps writes in memory buffers until a flush, which writes and
//! `fsync`s them. With [`FlushPolicy::Interval`] (the default, 100 ms) a
//! background thread flushes when something changed; [`FlushPolicy::EveryPush`]
//! flushes inside every push (safest, slowest). After each flush the manifest
//! (see Recovery) is rewritten and `fdatasync`ed, and the durable watermark
//! advances to every sequence number pushed before the flush started.
//!
//! A power cut or `kill -9`:
//! - **can lose** alerts pushed after the last completed flush (at most one
//!   flush interval of them, plus the flush in progress). Those were never
//!   sent, so their sequence numbers may be reused by the next run.
//! - **can lose** acks and evictions after the last flush: acked alerts are
//!   then sent again (the backend de-duplicates on the alert id) and evicted
//!   ones come back and are evicted again; eviction counters roll back with
//!   them, consistently.
//! - **cannot lose** a durable alert that was not acked, nor reorder alerts,
//!   nor reuse the sequence number of anything that left the device.
//!
//! What the file system does with an `fsync` is trusted (sled relies on it);
//! a disk that lies about `fsync` can lose more.
//!
//! # Recovery
//!
//! Opening never panics and does not fail on bad data:
//! - every record is checked on open (CRC-32, key/value agreement); a bad one
//!   is deleted and counted ([`RecoveryReport::corrupt_records`],
//!   [`SpoolStats::corrupt_records_total`]); the others are kept;
//! - if sled cannot open its files at all (a damaged config or header, the
//!   path is a file, or a panic inside sled), the directory is moved aside to
//!   `<path>.corrupt`, a fresh spool is created and every record whose own
//!   checksum is intact is salvaged from the raw files
//!   ([`RecoveryReport::quarantined`], [`RecoveryReport::salvaged_records`]).
//!   Salvage can bring back alerts that were already acked (the backend
//!   de-duplicates them) and keeps the sequence floor and counters it finds.
//!   The quarantined copy is deleted once salvage is complete.
//! - A torn tail (a crash in the middle of a write) is handled by sled's own
//!   recovery, which stops at the last complete write; nothing durable is
//!   lost, because the durable watermark only moves after a complete flush.
//! - **A damaged or missing entry inside sled's log** (a truncated file, bytes
//!   overwritten in the middle): sled opens, but silently discards every write
//!   after the damage. A manifest file beside sled's files, rewritten after
//!   every flush with the durable `next_seq` and counters, exposes this: the
//!   spool reports it ([`RecoveryReport::log_cut_detected`],
//!   [`RecoveryReport::lost_seqs`]), salvages whatever intact records of that
//!   range are still in the raw files, and restores the sequence floor and
//!   eviction counters from the manifest, so sequence numbers are never
//!   reused and the backend sees the loss as a gap. **Records sled discarded
//!   and overwrote are lost**: this is the one case where durable alerts can
//!   be lost, and it is reported, never silent.
//! - I/O errors that are not about the data (permission denied, the lock held
//!   by another process, a full disk) are returned as [`SpoolError`].
//!
//! The protection against panics inside sled relies on unwinding; a build with
//! `panic = "abort"` would lose it.
//!
//! # Budget and disk use
//!
//! The budget counts logical bytes. sled is log-structured, so the files can
//! take more than the live data (measured in the README); pick the budget
//! with that factor in mind. [`Spool::disk_bytes`] reports the real footprint.

mod manifest;
mod record;
mod salvage;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use picket_proto::{Alert, AlertId, Level};
use tokio::sync::watch;

use manifest::{Manifest, ManifestFile};

use record::{
    cost_of, key, level_index, parse_key, CORRUPT_KEY, CORRUPT_MAGIC, EVICTIONS_KEY,
    EVICTIONS_MAGIC, FLOOR_KEY, KEY_LEN, LEVELS,
};
pub use record::{Record, MAX_PAYLOAD_LEN};

/// When the spool makes its writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Group commit: a background thread flushes (and `fsync`s) at this
    /// interval whenever something changed, and at once when a push finds
    /// the last flush longer ago than the interval (an alert after a quiet
    /// spell is durable, and so sent, without waiting for the tick). At most
    /// one flush per interval either way. A power cut loses at most the
    /// alerts pushed during the last interval.
    Interval(Duration),
    /// Flush inside every push: nothing acknowledged by `push` is lost, at
    /// the cost of one `fsync` per alert. Acks are flushed every second.
    EveryPush,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self::Interval(Duration::from_millis(100))
    }
}

/// How to open a spool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// Largest sum of record costs kept; see the module doc on eviction.
    pub budget_bytes: u64,
    /// When writes become durable.
    pub flush: FlushPolicy,
    /// sled's page cache, bytes (sled's own default is 1 GiB; ours is small,
    /// because the spool lives on disk, not in memory).
    pub cache_bytes: u64,
}

impl SpoolConfig {
    /// A config with the default flush policy and an 8 MiB cache.
    pub fn new(path: impl Into<PathBuf>, budget_bytes: u64) -> Self {
        Self {
            path: path.into(),
            budget_bytes,
            flush: FlushPolicy::default(),
            cache_bytes: 8 << 20,
        }
    }

    /// Sets the flush policy.
    #[must_use]
    pub fn flush(mut self, flush: FlushPolicy) -> Self {
        self.flush = flush;
        self
    }

    /// Sets sled's cache size.
    #[must_use]
    pub fn cache_bytes(mut self, cache_bytes: u64) -> Self {
        self.cache_bytes = cache_bytes;
        self
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The database could not be read or written (not a data problem:
    /// permissions, the lock held by another process, a full disk).
    #[error("spool {}: {source}", path.display())]
    Storage {
        /// The spool directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// Moving a corrupt spool aside or salvaging it failed.
    #[error("spool {}: recovering a corrupt spool failed: {source}", path.display())]
    Recovery {
        /// The spool directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    #[error("alert payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// One record would not fit in the whole budget.
    #[error("alert of {cost} bytes exceeds the spool budget of {budget_bytes} bytes")]
    ExceedsBudget {
        /// The record's cost.
        cost: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// The payload does not complete an alert (see the module doc).
    #[error("alert payload does not decode as the fields of an alert: {0}")]
    InvalidPayload(picket_proto::Error),
}

/// An alert to push.
#[derive(Debug, Clone, Copy)]
pub struct NewAlert<'a> {
    /// The alert's unique id.
    pub id: AlertId,
    /// Severity.
    pub level: Level,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The alert's postcard fields after `level` ([`encode_alert_payload`]).
    pub payload: &'a [u8],
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The sequence number the alert got.
    pub seq: u64,
    /// Whether it was stored; `false` when the budget was full of alerts of
    /// higher levels, so the new alert itself was evicted (and counted).
    pub stored: bool,
    /// Older alerts evicted to make room for it.
    pub evicted: u64,
}

/// Records taken for one publish, in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    records: Vec<Record>,
}

impl Batch {
    /// The records.
    #[must_use]
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A snapshot of the spool's counters, for heartbeats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Records stored (heartbeat `spool_depth`).
    pub depth: u64,
    /// Sum of their costs: the figure the budget bounds. (Heartbeats report
    /// the on-disk size as `spool_bytes`, [`Spool::disk_bytes`].)
    pub bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// Records stored, by level.
    pub depth_by_level: [u64; 5],
    /// Alerts evicted or dropped for the budget over the spool's life, by level.
    pub evictions_by_level: [u64; 5],
    /// Records found corrupt and dropped over the spool's life.
    pub corrupt_records_total: u64,
    /// The sequence number the next push gets.
    pub next_seq: u64,
    /// Every sequence number up to this one is durable.
    pub durable_seq: u64,
}

impl SpoolStats {
    /// All evictions (heartbeat `spool_evictions_total`).
    #[must_use]
    pub fn evictions_total(&self) -> u64 {
        self.evictions_by_level.iter().sum()
    }
}

/// What opening the spool found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Valid records found.
    pub records_kept: u64,
    /// Records found corrupt on this open and dropped.
    pub corrupt_records: u64,
    /// Where the unreadable database was moved before salvage (deleted once
    /// salvage completed); `None` when sled opened it.
    pub quarantined: Option<PathBuf>,
    /// Why sled could not open it.
    pub quarantine_reason: Option<String>,
    /// sled opened, but its recovered state was older than the manifest:
    /// its log had been cut at a damaged or missing entry (sled does that
    /// silently). Records after the cut that are still in the raw files are
    /// salvaged; the rest are lost.
    pub log_cut_detected: bool,
    /// After a log cut: the sequence numbers `start..end` whose records may
    /// be lost (some may have been delivered already). They are never reused,
    /// so the backend sees them as a gap.
    pub lost_seqs: Option<std::ops::Range<u64>>,
    /// Records salvaged from raw files (after a quarantine or a log cut).
    pub salvaged_records: u64,
    /// Records evicted on open because salvage brought the spool over budget.
    pub evicted_on_open: u64,
}

/// The durable alert queue. Cheap to clone; clones share one database.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    path: PathBuf,
    config: SpoolConfig,
    state: Arc<Mutex<State>>,
    durable: watch::Sender<u64>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// When the flusher last flushed, and whether a push asked it to now.
    kick: Arc<Kick>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    manifest: Arc<Mutex<Option<ManifestFile>>>,
    recovery: RecoveryReport,
}

/// A push wakes the flusher early when the last flush is older than the
/// interval (see [`FlushPolicy::Interval`]).
#[derive(Debug)]
struct Kick {
    base: std::time::Instant,
    /// Milliseconds after `base` of the last flush (0: the spool opened).
    last_flush_ms: std::sync::atomic::AtomicI64,
    requested: std::sync::atomic::AtomicBool,
}

impl Kick {
    fn new() -> Self {
        Self {
            base: std::time::Instant::now(),
            last_flush_ms: std::sync::atomic::AtomicI64::new(0),
            requested: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    next_seq: u64,
    count: [u64; LEVELS],
    bytes: [u64; LEVELS],
    evictions: [u64; LEVELS],
    corrupt_total: u64,
    /// Highest sequence number handed out by `take` since the last rewind.
    cursor: u64,
    dirty: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Length of `x` as a LEB128 varint.
fn varint_len(mut x: u64) -> usize {
    let mut n = 1;
    while x >= 0x80 {
        x >>= 7;
        n += 1;
    }
    n
}

/// Appends `x` as a LEB128 varint (postcard's integer encoding).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Writes the wire encoding of `record` as an alert (docs/WIRE.md §4.1).
pub(crate) fn write_wire_alert(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(r.id.as_bytes());
    put_varint(out, r.seq);
    put_varint(out, r.timestamp_ms);
    // Levels 0..=4 are one-byte varints.
    out.push(level_index(r.level) as u8);
    out.extend_from_slice(&r.payload);
}

/// Splits an alert's postcard encoding and returns the payload the spool
/// stores: everything after `level`. The alert's own `seq` is ignored (the
/// spool assigns one).
///
/// # Errors
/// [`SpoolError::InvalidPayload`] when the alert cannot be encoded.
pub fn encode_alert_payload(alert: &Alert<'_>) -> Result<Vec<u8>, SpoolError> {
    let full = postcard::to_allocvec(alert)
        .map_err(|_| SpoolError::InvalidPayload(picket_proto::Error::BufferTooSmall))?;
    let head = 16 + varint_len(alert.seq) + varint_len(alert.timestamp_ms) + 1;
    Ok(full.get(head..).unwrap_or_default().to_vec())
}

/// Checks that `payload` completes an alert.
fn check_payload(alert: &NewAlert<'_>) -> Result<(), SpoolError> {
    let invalid = SpoolError::InvalidPayload(picket_proto::Error::MalformedBody {
        kind: picket_proto::MessageKind::AlertBatch,
    });
    let mut buf = Vec::with_capacity(alert.payload.len() + 40);
    write_wire_alert(
        &mut buf,
        &Record {
            seq: 0,
            id: alert.id,
            level: alert.level,
            timestamp_ms: alert.timestamp_ms,
            payload: alert.payload.to_vec(),
        },
    );
    let complete = matches!(
        postcard::take_from_bytes::<Alert<'_>>(&buf),
        Ok((_, rest)) if rest.is_empty()
    );
    if complete {
        Ok(())
    } else {
        Err(invalid)
    }
}

enum OpenFailure {
    /// Not a data problem: report it.
    Io(sled::Error),
    /// The data is unreadable: quarantine and salvage.
    Corrupt(String),
}

impl Spool {
    /// Opens (or creates) the spool at `path` with the default flush policy.
    ///
    /// # Errors
    /// [`SpoolError::Storage`] for I/O problems that are not about the data;
    /// corrupt data is recovered, see the module doc.
    pub fn open(path: impl Into<PathBuf>, budget_bytes: u64) -> Result<Self, SpoolError> {
        Self::open_with(SpoolConfig::new(path, budget_bytes))
    }

    /// Opens (or creates) the spool described by `config`.
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub fn open_with(config: SpoolConfig) -> Result<Self, SpoolError> {
        let path = config.path.clone();
        let storage = |source| SpoolError::Storage {
            path: path.clone(),
            source,
        };
        let recovery_err = |source| SpoolError::Recovery {
            path: path.clone(),
            source,
        };
        let mut recovery = RecoveryReport::default();
        let opened = if path.exists() && !path.is_dir() {
            Err(OpenFailure::Corrupt(
                "the spool path is not a directory".into(),
            ))
        } else {
            Self::try_open(&config)
        };
        let (db, mut state, kept, corrupt) = match opened {
            Ok(opened) => opened,
            Err(OpenFailure::Io(e)) => return Err(storage(e)),
            Err(OpenFailure::Corrupt(reason)) => {
                tracing::error!(path = %path.display(), %reason, "spool unreadable; salvaging its records");
                let (db, salvaged, quarantine) = salvage::quarantine_and_salvage(&config, &reason)?;
                recovery.quarantined = Some(quarantine);
                recovery.quarantine_reason = Some(reason);
                recovery.salvaged_records = salvaged;
                let (state, kept, corrupt) = scan(&db).map_err(storage)?;
                (db, state, kept, corrupt)
            }
        };
        recovery.records_kept = kept;
        recovery.corrupt_records = corrupt;
        if corrupt > 0 {
            tracing::warn!(path = %path.display(), corrupt, kept, "dropped corrupt spool records");
        }
        let (manifest, last) = match ManifestFile::open(&path) {
            Ok((file, last)) => (Some(file), last),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the spool manifest; log cuts will go unnoticed");
                (None, None)
            }
        };
        if let Some(m) = last.filter(|m| m.next_seq > state.next_seq) {
            tracing::error!(
                path = %path.display(),
                recovered_next_seq = state.next_seq,
                durable_next_seq = m.next_seq,
                "sled recovered an older state than was durable: its log was cut; salvaging"
            );
            recovery.log_cut_detected = true;
            recovery.salvaged_records +=
                salvage::salvage_tail(&path, &db, state.next_seq, &m).map_err(recovery_err)?;
            let recovered_next = state.next_seq;
            let (s, kept, _) = scan(&db).map_err(storage)?;
            state = s;
            recovery.records_kept = kept;
            recovery.lost_seqs = Some(recovered_next..m.next_seq);
        }
        recovery.evicted_on_open =
            evict_to_budget(&db, &mut state, config.budget_bytes).map_err(storage)?;
        let durable_seq = state.next_seq.saturating_sub(1);
        let spool = Self::start(db, config, state, durable_seq, recovery, manifest);
        // Everything found on disk is durable, and the manifest says so.
        spool.flush()?;
        Ok(spool)
    }

    fn start(
        db: sled::Db,
        config: SpoolConfig,
        state: State,
        durable_seq: u64,
        recovery: RecoveryReport,
        manifest: Option<ManifestFile>,
    ) -> Self {
        let (durable, _) = watch::channel(durable_seq);
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let kick = Arc::new(Kick::new());
        let manifest = Arc::new(Mutex::new(manifest));
        let interval = match config.flush {
            FlushPolicy::Interval(d) => d.max(Duration::from_millis(1)),
            FlushPolicy::EveryPush => Duration::from_secs(1),
        };
        let flusher = {
            let (db, state, stop, durable, manifest, kick) = (
                db.clone(),
                state.clone(),
                stop.clone(),
                durable.clone(),
                manifest.clone(),
                kick.clone(),
            );
            std::thread::Builder::new()
                .name("picket-spool-flush".into())
                .spawn(move || {
                    let durability = Durability {
                        db: &db,
                        state: &state,
                        durable: &durable,
                        manifest: &manifest,
                    };
                    flusher(&durability, &stop, &kick, interval);
                })
                .ok()
        };
        if flusher.is_none() {
            tracing::error!("cannot start the spool flush thread; flushing on every push");
        }
        let config = if flusher.is_none() {
            SpoolConfig {
                flush: FlushPolicy::EveryPush,
                ..config
            }
        } else {
            config
        };
        Self {
            inner: Arc::new(Inner {
                db,
                path: config.path.clone(),
                config,
                state,
                durable,
                stop,
                kick,
                flusher: Mutex::new(flusher),
                manifest,
                recovery,
            }),
        }
    }

    /// Opens sled and checks every record, turning panics and corruption
    /// into [`OpenFailure::Corrupt`].
    fn try_open(config: &SpoolConfig) -> Result<(sled::Db, State, u64, u64), OpenFailure> {
        match catch_unwind(AssertUnwindSafe(|| {
            let db = open_db(&config.path, config.cache_bytes)?;
            let (state, kept, corrupt) = scan(&db)?;
            Ok((db, state, kept, corrupt))
        })) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_owned());
                Err(OpenFailure::Corrupt(format!("sled panicked: {msg}")))
            }
        }
    }

    /// Appends an alert; never waits for the network (it waits for the disk
    /// only with [`FlushPolicy::EveryPush`]).
    ///
    /// # Errors
    /// [`SpoolError::PayloadTooLarge`], [`SpoolError::InvalidPayload`],
    /// [`SpoolError::ExceedsBudget`], or [`SpoolError::Storage`].
    pub fn push(&self, alert: NewAlert<'_>) -> Result<Pushed, SpoolError> {
        if alert.payload.len() > MAX_PAYLOAD_LEN {
            return Err(SpoolError::PayloadTooLarge {
                len: alert.payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let cost = cost_of(alert.payload.len());
        let budget = self.inner.config.budget_bytes;
        if cost > budget {
            return Err(SpoolError::ExceedsBudget {
                cost,
                budget_bytes: budget,
            });
        }
        check_payload(&alert)?;
        let level = level_index(alert.level);
        let mut st = lock(&self.inner.state);
        let seq = st.next_seq;
        let mut next = st.clone();
        next.next_seq = seq + 1;
        next.dirty = true;
        let mut batch = sled::Batch::default();
        let mut evicted = 0u64;
        let mut stored = true;
        let total: u64 = st.bytes.iter().sum();
        if total + cost > budget {
            let reclaimable: u64 = st.bytes[..=level].iter().sum();
            if budget - (total - reclaimable) < cost {
                // Only higher levels could make room: the new alert goes.
                stored = false;
                next.evictions[level] += 1;
            } else {
                evicted = evict_oldest(
                    &self.inner.db,
                    &mut next,
                    &mut batch,
                    level,
                    total + cost - budget,
                )
                .map_err(|e| self.storage(e))?;
            }
            batch.insert(
                &EVICTIONS_KEY,
                record::encode_counters(EVICTIONS_MAGIC, &next.evictions),
            );
            // Atomic with the deletions: the evicted (or dropped) sequence
            // numbers stay used after a restart.
            batch.insert(&FLOOR_KEY, record::encode_floor(next.next_seq));
        }
        let value = stored
            .then(|| record::encode(seq, &alert.id, level, alert.timestamp_ms, alert.payload));
        if stored {
            next.count[level] += 1;
            next.bytes[level] += cost;
        }
        let db = &self.inner.db;
        match value {
            // The common case: one key, atomic by itself. sled's batches take
            // a global write lock and are several times slower.
            Some(v) if evicted == 0 => db.insert(key(level, seq), v).map(drop),
            Some(v) => {
                batch.insert(&key(level, seq), v);
                db.apply_batch(batch)
            }
            None => db.apply_batch(batch),
        }
        .map_err(|e| self.storage(e))?;
        *st = next;
        if evicted > 0 || !stored {
            tracing::warn!(
                seq,
                level,
                evicted,
                stored,
                "spool budget full: evicted alerts (lowest level, oldest first)"
            );
        }
        match self.inner.config.flush {
            FlushPolicy::EveryPush => {
                drop(st);
                self.inner
                    .durability()
                    .flush()
                    .map_err(|e| self.storage(e))?;
            }
            FlushPolicy::Interval(d) => {
                drop(st);
                let k = &self.inner.kick;
                let since = k
                    .now_ms()
                    .saturating_sub(k.last_flush_ms.load(Ordering::Relaxed));
                if u128::try_from(since).unwrap_or(0) >= d.as_millis()
                    && !k.requested.swap(true, Ordering::AcqRel)
                {
                    // under the flusher's lock: its wait cannot miss this
                    let (stopped, cv) = &*self.inner.stop;
                    let _g = lock(stopped);
                    cv.notify_all();
                }
            }
        }
        Ok(Pushed {
            seq,
            stored,
            evicted,
        })
    }

    /// Pushes a typed alert (its `seq` is ignored; the spool assigns one).
    ///
    /// # Errors
    /// As [`Spool::push`].
    pub fn push_alert(&self, alert: &Alert<'_>) -> Result<Pushed, SpoolError> {
        let payload = encode_alert_payload(alert)?;
        self.push(NewAlert {
            id: alert.id,
            level: alert.level,
            timestamp_ms: alert.timestamp_ms,
            payload: &payload,
        })
    }

    /// Takes the next durable records not taken since the last rewind, in
    /// sequence order: at most `max_records`, and at most `max_wire_bytes` of
    /// [`Record::wire_len_bound`] (but always one record when any is ready).
    ///
    /// # Errors
    /// [`SpoolError::Storage`].
    pub fn take(&self, max_records: usize, max_wire_bytes: usize) -> Result<Batch, SpoolError> {
        let from = lock(&self.inner.state).cursor + 1;
        let durable = *self.inner.durable.borrow();
        let mut batch = Batch::default();
        if from > durable || max_records == 0 {
            return Ok(batch);
        }
        let db = &self.inner.db;
        let mut iters: Vec<_> = (0..LEVELS)
            .map(|l| db.range(key(l, from)..=key(l, durable)).peekable())
            .collect();
        let mut wire = 0usize;
        let mut exhausted = true;
        loop {
            // The smallest next sequence number over the five level ranges.
            let mut best: Option<(usize, u64)> = None;
            for (l, it) in iters.iter_mut().enumerate() {
                match it.peek() {
                    Some(Ok((k, _))) => {
                        if let Some((_, seq)) = parse_key(k) {
                            if best.is_none_or(|(_, s)| seq < s) {
                                best = Some((l, seq));
                            }
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(Err(e)) = it.next() {
                            return Err(self.storage(e));
                        }
                    }
                    None => {}
                }
            }
            let Some((l, _)) = best else { break };
            let Some(Ok((k, v))) = iters[l].next() else {
                break;
            };
            match record::decode(&v) {
                Ok(r) if parse_key(&k) == Some((level_index(r.level), r.seq)) => {
                    let w = r.wire_len_bound();
                    if !batch.records.is_empty()
                        && (batch.records.len() >= max_records || wire + w > max_wire_bytes)
                    {
                        exhausted = false;
                        break;
                    }
                    wire += w;
                    batch.records.push(r);
                }
                _ => self.drop_corrupt(&k, v.len())?,
            }
        }
        let mut st = lock(&self.inner.state);
        st.cursor = if exhausted {
            st.cursor.max(durable)
        } else {
            batch
                .records
                .last()
                .map_or(st.cursor, |r| st.cursor.max(r.seq))
        };
        Ok(batch)
    }

    fn drop_corrupt(&self, k: &[u8], value_len: usize) -> Result<(), SpoolError> {
        let mut st = lock(&self.inner.state);
        if self
            .inner
            .db
            .remove(k)
            .map_err(|e| self.storage(e))?
            .is_some()
        {
            if let Some((l, _)) = parse_key(k) {
                st.count[l] = st.count[l].saturating_sub(1);
                st.bytes[l] = st.bytes[l].saturating_sub((k.len() + value_len) as u64);
            }
            st.corrupt_total += 1;
            st.dirty = true;
            self.inner
                .db
                .insert(
                    CORRUPT_KEY,
                    record::encode_counters(CORRUPT_MAGIC, &[st.corrupt_total]),
                )
                .map_err(|e| self.storage(e))?;
            tracing::warn!(key = ?k, "dropped a corrupt spool record");
        }
        Ok(())
    }

    /// Deletes the records of `batch`: call it after the broker's PUBACK for
    /// the publish that carried them. Records already evicted are skipped.
    ///
    /// # Errors
    /// [`SpoolError::Storage`].
    pub fn ack(&self, batch: &Batch) -> Result<(), SpoolError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let db = &self.inner.db;
        let mut st = lock(&self.inner.state);
        // The floor first: sled persists writes in order, so no deletion can
        // be durable without it (invariant 1).
        db.insert(FLOOR_KEY, record::encode_floor(st.next_seq))
            .map_err(|e| self.storage(e))?;
        for r in &batch.records {
            let l = level_index(r.level);
            let k = key(l, r.seq);
            if let Some(v) = db.remove(k).map_err(|e| self.storage(e))? {
                st.count[l] = st.count[l].saturating_sub(1);
                st.bytes[l] = st.bytes[l].saturating_sub((KEY_LEN + v.len()) as u64);
            }
        }
        st.dirty = true;
        Ok(())
    }

    /// Makes every record not acked eligible for [`Spool::take`] again, from
    /// the oldest. The uplink calls it on every (re)connection.
    pub fn rewind(&self) {
        lock(&self.inner.state).cursor = 0;
    }

    /// Flushes now; returns the durable watermark.
    ///
    /// # Errors
    /// [`SpoolError::Storage`].
    pub fn flush(&self) -> Result<u64, SpoolError> {
        self.inner.durability().flush().map_err(|e| self.storage(e))
    }

    /// Every sequence number up to this one is durable.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// A receiver of the durable watermark: it changes when new records
    /// become durable (and so can be taken).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// Whether records not yet taken may be ready, and how many at most
    /// (an upper bound: gaps left by acks and evictions are counted).
    #[must_use]
    pub fn ready_hint(&self) -> u64 {
        let cursor = lock(&self.inner.state).cursor;
        self.durable_seq().saturating_sub(cursor)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.inner.state);
        SpoolStats {
            depth: st.count.iter().sum(),
            bytes: st.bytes.iter().sum(),
            budget_bytes: self.inner.config.budget_bytes,
            depth_by_level: st.count,
            evictions_by_level: st.evictions,
            corrupt_records_total: st.corrupt_total,
            next_seq: st.next_seq,
            durable_seq: self.durable_seq(),
        }
    }

    /// What opening found (corrupt records, salvage).
    #[must_use]
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The database's footprint on disk, bytes.
    ///
    /// # Errors
    /// [`SpoolError::Storage`].
    pub fn disk_bytes(&self) -> Result<u64, SpoolError> {
        self.inner.db.size_on_disk().map_err(|e| self.storage(e))
    }

    /// The spool directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn storage(&self, source: sled::Error) -> SpoolError {
        SpoolError::Storage {
            path: self.inner.path.clone(),
            source,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let (stopped, cv) = &*self.stop;
            *lock(stopped) = true;
            cv.notify_all();
        }
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
        if let Err(e) = self.durability().flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final spool flush failed");
        }
    }
}

impl Inner {
    fn durability(&self) -> Durability<'_> {
        Durability {
            db: &self.db,
            state: &self.state,
            durable: &self.durable,
            manifest: &self.manifest,
        }
    }
}

/// What a flush touches; shared by the spool and its flush thread.
struct Durability<'a> {
    db: &'a sled::Db,
    state: &'a Mutex<State>,
    durable: &'a watch::Sender<u64>,
    manifest: &'a Mutex<Option<ManifestFile>>,
}

impl Durability<'_> {
    /// Flushes sled, then records in the manifest what is now durable, then
    /// moves the durable watermark.
    fn flush(&self) -> Result<u64, sled::Error> {
        let snapshot = {
            let mut st = lock(self.state);
            st.dirty = false;
            Manifest {
                next_seq: st.next_seq,
                evictions: st.evictions,
                corrupt_total: st.corrupt_total,
            }
        };
        if let Err(e) = self.db.flush() {
            lock(self.state).dirty = true;
            return Err(e);
        }
        if let Some(file) = lock(self.manifest).as_mut() {
            if let Err(e) = file.write(&snapshot) {
                tracing::error!(error = %e, "cannot write the spool manifest");
            }
        }
        let upto = snapshot.next_seq.saturating_sub(1);
        self.durable.send_if_modified(|d| {
            let changed = *d < upto;
            *d = (*d).max(upto);
            changed
        });
        Ok(*self.durable.borrow())
    }
}

fn flusher(
    durability: &Durability<'_>,
    stop: &(Mutex<bool>, Condvar),
    kick: &Kick,
    interval: Duration,
) {
    let (stopped, cv) = stop;
    loop {
        {
            let guard = lock(stopped);
            let (guard, _) = cv
                .wait_timeout_while(guard, interval, |s| {
                    !*s && !kick.requested.load(Ordering::Acquire)
                })
                .unwrap_or_else(PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        kick.requested.store(false, Ordering::Release);
        if lock(durability.state).dirty {
            if let Err(e) = durability.flush() {
                tracing::error!(error = %e, "spool flush failed; retrying");
            }
            kick.last_flush_ms.store(kick.now_ms(), Ordering::Relaxed);
        }
    }
}

/// Adds to `batch` the removal of the oldest records of the lowest levels
/// (up to `max_level`) until `need` bytes are freed, and counts them in `st`;
/// returns how many. The one eviction order of the spool: a push that needs
/// room and a reopen over budget both use it.
fn evict_oldest(
    db: &sled::Db,
    st: &mut State,
    batch: &mut sled::Batch,
    max_level: usize,
    mut need: u64,
) -> Result<u64, sled::Error> {
    let mut evicted = 0;
    for l in 0..=max_level {
        for item in db.range(key(l, 0)..=key(l, u64::MAX)) {
            let (k, v) = item?;
            let c = (k.len() + v.len()) as u64;
            batch.remove(k);
            st.count[l] -= 1;
            st.bytes[l] -= c;
            st.evictions[l] += 1;
            evicted += 1;
            need = need.saturating_sub(c);
            if need == 0 {
                return Ok(evicted);
            }
        }
    }
    Ok(evicted)
}

/// Evicts (lowest level, oldest first) until the records fit `budget`;
/// used after a salvage brought back more than fits.
fn evict_to_budget(db: &sled::Db, st: &mut State, budget: u64) -> Result<u64, sled::Error> {
    let over = st.bytes.iter().sum::<u64>().saturating_sub(budget);
    if over == 0 {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    let evicted = evict_oldest(db, st, &mut batch, LEVELS - 1, over)?;
    batch.insert(
        &EVICTIONS_KEY,
        record::encode_counters(EVICTIONS_MAGIC, &st.evictions),
    );
    batch.insert(&FLOOR_KEY, record::encode_floor(st.next_seq));
    db.apply_batch(batch)?;
    tracing::warn!(evicted, "salvaged spool over budget: evicted alerts");
    Ok(evicted)
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    // sled releases its file lock from a background thread shortly after the
    // last handle is dropped; a reopen in the same process (or right after a
    // restart) waits for that rather than failing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open();
        match result {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn classify(e: sled::Error) -> OpenFailure {
    match e {
        sled::Error::Io(io) => {
            use std::io::ErrorKind as K;
            match io.kind() {
                // Bad bytes read back surface as these from sled's decoders.
                K::InvalidData | K::UnexpectedEof | K::InvalidInput => {
                    OpenFailure::Corrupt(io.to_string())
                }
                _ => OpenFailure::Io(sled::Error::Io(io)),
            }
        }
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
            OpenFailure::Corrupt(e.to_string())
        }
        sled::Error::Unsupported(_) => OpenFailure::Corrupt(e.to_string()),
        other => OpenFailure::Io(other),
    }
}

/// Checks every record, drops bad ones, and rebuilds the in-memory state.
fn scan(db: &sled::Db) -> Result<(State, u64, u64), sled::Error> {
    let mut st = State::default();
    let mut bad = Vec::new();
    let mut max_seq = 0u64;
    let mut floor = 1u64;
    for item in db.iter() {
        let (k, v) = item?;
        if k.first() == Some(&record::META_PREFIX) {
            match &*k {
                k if k == FLOOR_KEY => {
                    if let Some(f) = record::decode_floor(&v) {
                        floor = floor.max(f);
                    }
                }
                k if k == EVICTIONS_KEY => {
                    if let Some(e) = record::decode_counters::<LEVELS>(EVICTIONS_MAGIC, &v) {
                        st.evictions = e;
                    }
                }
                k if k == CORRUPT_KEY => {
                    if let Some([c]) = record::decode_counters::<1>(CORRUPT_MAGIC, &v) {
                        st.corrupt_total = c;
                    }
                }
                _ => {}
            }
            continue;
        }
        match (parse_key(&k), record::decode(&v)) {
            (Some((l, seq)), Ok(r)) if level_index(r.level) == l && r.seq == seq => {
                st.count[l] += 1;
                st.bytes[l] += (k.len() + v.len()) as u64;
                max_seq = max_seq.max(seq);
            }
            _ => bad.push(k),
        }
    }
    let corrupt = bad.len() as u64;
    if corrupt > 0 {
        // Deleted records may still hold sequence numbers the backend saw.
        for k in &bad {
            if let Some((_, seq)) = parse_key(k) {
                max_seq = max_seq.max(seq);
            }
            db.remove(k)?;
        }
        st.corrupt_total += corrupt;
        db.insert(
            CORRUPT_KEY,
            record::encode_counters(CORRUPT_MAGIC, &[st.corrupt_total]),
        )?;
    }
    st.next_seq = floor.max(max_seq + 1);
    let kept = st.count.iter().sum();
    Ok((st, kept, corrupt))
}

#[cfg(test)]
mod tests;
