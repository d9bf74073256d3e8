//! Hunting jobs: uploaded EVTX files the backend runs its rule set over.
//!
//! - [`Hunt`]: one job (`hunts` table): its state, totals and progress.
//! - [`HuntFile`]: one uploaded file of a job (`hunt_files`): name, size,
//!   SHA-256, state, records, matches and, for a file that could not be
//!   read, the parser's error.
//! - The matches are ordinary alerts with `hunt_id` set
//!   ([`HuntStore::insert_hunt_alerts`]). They stay out of the fleet's
//!   alert list and counts unless asked for
//!   ([`crate::model::AlertFilter::hunt_id`]), are not counted in
//!   `alert_rollup`, are not subject to retention (their event times are
//!   those of old logs) and go when their job is deleted
//!   ([`HuntStore::delete_hunt`]).
//!
//! The job logic (the worker, the files on disk) lives in the backend; the
//! store keeps the records.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Alert, NewAlert};
use crate::{InsertReport, StoreError};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HuntState {
    /// Waiting for a worker.
    Queued,
    /// A worker is scanning its files.
    Running,
    /// Every file was scanned (some may have failed: see the files).
    Done,
    /// The job could not run (see `error`).
    Failed,
    /// Cancelled by a user; what was found so far is kept.
    Cancelled,
}

/// Where one file of a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HuntFileState {
    /// Not scanned yet.
    Queued,
    /// Being scanned.
    Running,
    /// Scanned (`error` may still note skipped chunks or records).
    Done,
    /// Not an EVTX file or unreadable: skipped, `error` says why.
    Failed,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),* }) => {
        impl $t {
            /// The stored and serialized name.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }

            /// The value a stored name stands for.
            #[must_use]
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}

text_enum!(HuntState { Queued = "queued", Running = "running", Done = "done", Failed = "failed", Cancelled = "cancelled" });
text_enum!(HuntFileState { Queued = "queued", Running = "running", Done = "done", Failed = "failed" });

impl HuntState {
    /// Whether the job will not change any more.
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// One hunting job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunt {
    /// Assigned by the store.
    pub id: i64,
    /// Given at upload.
    pub name: String,
    /// The user who uploaded it.
    pub created_by: String,
    /// When.
    pub created_ms: i64,
    /// Where it stands.
    pub state: HuntState,
    /// When a worker started it (last start, after a restart).
    pub started_ms: Option<i64>,
    /// When it finished.
    pub finished_ms: Option<i64>,
    /// Files uploaded.
    pub files_total: u64,
    /// Files scanned or failed.
    pub files_done: u64,
    /// Bytes uploaded.
    pub bytes_total: u64,
    /// Bytes scanned (a failed file counts whole).
    pub bytes_done: u64,
    /// Event records evaluated so far.
    pub records_done: u64,
    /// Matches (alerts) so far.
    pub matches: u64,
    /// Why the job failed or was re-queued.
    pub error: Option<String>,
}

/// One file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntFile {
    /// Position in the upload (0-based); its name on disk.
    pub index: u32,
    /// The name it was uploaded with.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Where it stands.
    pub state: HuntFileState,
    /// Event records evaluated.
    pub records: u64,
    /// Matches.
    pub matches: u64,
    /// Why it failed, or what was skipped inside it.
    pub error: Option<String>,
}

/// A job with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntDetail {
    /// The job.
    #[serde(flatten)]
    pub hunt: Hunt,
    /// Its files, in upload order.
    pub files: Vec<HuntFile>,
}

/// A file of a new job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHuntFile {
    /// The name it was uploaded with.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A job to create (state `queued`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHunt {
    /// Its name.
    pub name: String,
    /// Who uploads it.
    pub created_by: String,
    /// When.
    pub created_ms: i64,
    /// Its files, in upload order.
    pub files: Vec<NewHuntFile>,
}

/// Hunting jobs; a supertrait of [`crate::Store`], so every store has them.
#[async_trait]
pub trait HuntStore: Send + Sync {
    /// Creates a queued job with its files.
    async fn create_hunt(&self, hunt: &NewHunt) -> Result<HuntDetail, StoreError>;
    /// Every job, newest first.
    async fn hunts(&self) -> Result<Vec<Hunt>, StoreError>;
    /// One job with its files.
    async fn hunt(&self, id: i64) -> Result<Option<HuntDetail>, StoreError>;
    /// Writes a job's state, progress and error (the worker's progress).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the job was deleted.
    async fn update_hunt(&self, hunt: &Hunt) -> Result<(), StoreError>;
    /// Writes one file's state, counts and error.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the job was deleted.
    async fn update_hunt_file(&self, hunt_id: i64, file: &HuntFile) -> Result<(), StoreError>;
    /// Stores matches of a job as alerts with `hunt_id` set, one
    /// transaction; ids already stored are skipped (a job re-run after a
    /// restart gives the same ids). They are not counted in the rollup and
    /// do not touch device sequence numbers.
    async fn insert_hunt_alerts(
        &self,
        hunt_id: i64,
        alerts: &[NewAlert],
    ) -> Result<InsertReport, StoreError>;
    /// A job's alerts in event-time order (`timestamp_ms`, then row),
    /// skipping `offset`, at most `limit`.
    async fn hunt_alerts(
        &self,
        hunt_id: i64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError>;
    /// Deletes a job, its files' records and its alerts (with their notes,
    /// technique keys and search entries). `false` when there was none.
    async fn delete_hunt(&self, id: i64) -> Result<bool, StoreError>;
}
