//! Hunting jobs, the backend half: uploaded EVTX files scanned with the
//! agent rule set (`[agents] rules_dirs`) in the background; the API side
//! is `picket_api`'s `hunts` module, the records `picket_store::hunt`.
//!
//! ```text
//!  POST /api/v1/hunts ─► upload folder (streamed, hashed) ─► Hunts::create: folder → data_dir/hunts/<id>/,
//!                                                            job `queued` in the store, worker woken
//!  worker (one per `[hunts] concurrent_jobs`, on the blocking pool)
//!    claims the oldest queued job → `running`
//!    per file: magic check (`ElfFile\0`) → evtx parser → batches of 16 chunks
//!      parsed and evaluated in parallel on the hunt pool (`[hunts] threads`)
//!      with picket_rules::evtx::scan_chunk (the path `picketctl hunt` uses)
//!    matches → alerts (source `upload`, hunt_id set) in batches of 1,000
//!    progress (files, records, bytes, matches) → store + LiveEvent::Hunt,
//!      at most every 250 ms; each file's row when it finishes (and when it
//!      starts, for files of more than one batch)
//!    → `done` (or `cancelled`)
//! ```
//!
//! **Files.** A file that does not start with the EVTX magic or whose
//! header the parser refuses is `failed` with the reason and skipped; so is
//! one in which no record could be read. Chunks and records that cannot be
//! parsed inside an otherwise readable file are skipped and counted in the
//! file's `error` (the first reason is kept); a file cut short says so.
//!
//! **Alert ids** are a hash of (job, file index, record id, rule id, rule
//! file), so a job that runs again stores nothing twice.
//!
//! **Restarts.** A job found `running` at start was interrupted: it is
//! re-queued (progress reset, `error` saying why) and runs again from the
//! start; the alerts it had stored are skipped as duplicates. Upload
//! folders left by interrupted uploads are removed at start.
//!
//! **Cancel and delete.** Cancelling a queued job marks it `cancelled`; a
//! running one stops after its current batch of chunks (what it found is
//! kept). Deleting cancels first, then removes the job's records, alerts
//! and files.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use picket_api::{FleetError, HuntUpload, HuntUploads, LiveEvent};
use picket_rules::evtx::{scan_chunk, truncation, CHUNK_BYTES, HEADER_BYTES, MAGIC};
use picket_rules::{windows, Match, RuleSet};
use picket_store::hunt::{
    Hunt, HuntDetail, HuntFile, HuntFileState, HuntState, NewHunt, NewHuntFile,
};
use picket_store::model::{AlertSource, NewAlert};
use picket_store::{Store, StoreError};
use rayon::prelude::*;
use serde_json::{json, Map, Value as Json};
use sha2::Digest as _;
use tokio::sync::{broadcast, watch, Notify};

use crate::agents::level;
use crate::config::HuntsConfig;
use crate::ingest::now_ms;

/// EVTX chunks read from a file before they are parsed in parallel.
const BATCH_CHUNKS: usize = 16;
/// Alerts stored per transaction.
const ALERT_BATCH: usize = 1000;
/// Progress is written (and broadcast) at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long cancel and delete wait for a running job to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A running job's controls.
#[derive(Debug)]
struct Control {
    cancel: AtomicBool,
    finished: watch::Sender<bool>,
}

/// The hunting jobs of this backend.
#[derive(Debug)]
pub struct Hunts {
    store: Arc<dyn Store>,
    rules: Arc<RuleSet>,
    dir: PathBuf,
    config: HuntsConfig,
    live: broadcast::Sender<LiveEvent>,
    pool: rayon::ThreadPool,
    running: Mutex<HashMap<i64, Arc<Control>>>,
    /// Serializes claiming a job with cancelling and deleting one.
    claim: tokio::sync::Mutex<()>,
    wake: Notify,
    stopping: AtomicBool,
}

fn internal(what: &str) -> impl Fn(StoreError) -> FleetError + '_ {
    move |e| FleetError::Internal(format!("{what}: {e}"))
}

impl Hunts {
    /// Jobs whose files live in `dir` (`data_dir/hunts`), scanned with
    /// `rules`.
    ///
    /// # Errors
    /// When `dir` cannot be created or the thread pool cannot start.
    pub fn new(
        store: Arc<dyn Store>,
        rules: Arc<RuleSet>,
        dir: PathBuf,
        config: HuntsConfig,
        live: broadcast::Sender<LiveEvent>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("picket-hunt-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            store,
            rules,
            dir,
            config,
            live,
            pool,
            running: Mutex::new(HashMap::new()),
            claim: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Re-queues jobs a previous run left `running`, removes stale upload
    /// folders, then runs `[hunts] concurrent_jobs` workers until
    /// `shutdown` (a running job stops after its batch and stays
    /// `running`, so the next start re-queues it).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "hunting jobs: recovery failed");
        }
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.config.concurrent_jobs {
            let me = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { me.worker(shutdown).await });
        }
        let _ = shutdown.wait_for(|s| *s).await;
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        while workers.join_next().await.is_some() {}
    }

    async fn recover(&self) -> Result<(), StoreError> {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".upload-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        for h in self.store.hunts().await? {
            if h.state != HuntState::Running {
                continue;
            }
            let Some(d) = self.store.hunt(h.id).await? else {
                continue;
            };
            let mut hunt = d.hunt;
            hunt.state = HuntState::Queued;
            hunt.files_done = 0;
            hunt.bytes_done = 0;
            hunt.records_done = 0;
            hunt.matches = 0;
            hunt.error = Some("re-queued: the backend stopped while the job ran".into());
            for mut f in d.files {
                f.state = HuntFileState::Queued;
                f.records = 0;
                f.matches = 0;
                f.error = None;
                self.store.update_hunt_file(hunt.id, &f).await?;
            }
            self.store.update_hunt(&hunt).await?;
            tracing::warn!(
                hunt = hunt.id,
                "hunting job interrupted by a restart: re-queued"
            );
        }
        Ok(())
    }

    async fn worker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let notified = self.wake.notified();
            match self.claim_next().await {
                Ok(Some((detail, control))) => {
                    let id = detail.hunt.id;
                    let me = self.clone();
                    let c = control.clone();
                    let handle = tokio::runtime::Handle::current();
                    let result =
                        tokio::task::spawn_blocking(move || me.run_job(&handle, detail, &c)).await;
                    if let Err(e) = result {
                        tracing::error!(hunt = id, error = %e, "hunting job task failed");
                    }
                    self.running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    let _ = control.finished.send(true);
                }
                Ok(None) => {
                    tokio::select! {
                        () = notified => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "hunting jobs: cannot read the queue");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// The oldest queued job, now `running`.
    async fn claim_next(&self) -> Result<Option<(HuntDetail, Arc<Control>)>, StoreError> {
        let _claim = self.claim.lock().await;
        let Some(next) = self
            .store
            .hunts()
            .await?
            .into_iter()
            .filter(|h| h.state == HuntState::Queued)
            .min_by_key(|h| h.id)
        else {
            return Ok(None);
        };
        let Some(mut detail) = self.store.hunt(next.id).await? else {
            return Ok(None);
        };
        detail.hunt.state = HuntState::Running;
        detail.hunt.started_ms = Some(now_ms());
        self.store.update_hunt(&detail.hunt).await?;
        let _ = self
            .live
            .send(LiveEvent::Hunt(Box::new(detail.hunt.clone())));
        let control = Arc::new(Control {
            cancel: AtomicBool::new(false),
            finished: watch::channel(false).0,
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(detail.hunt.id, control.clone());
        Ok(Some((detail, control)))
    }

    fn job_dir(&self, id: i64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Runs one job to its end (blocking: call on the blocking pool).
    fn run_job(&self, rt: &tokio::runtime::Handle, detail: HuntDetail, control: &Control) {
        let id = detail.hunt.id;
        let mut job = Job {
            hunts: self,
            rt,
            hunt: detail.hunt,
            last_flush: Instant::now(),
            pending: Vec::new(),
        };
        let mut stopped = false;
        for mut file in detail.files {
            if control.cancel.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
                stopped = true;
                break;
            }
            let path = self.job_dir(id).join(file.index.to_string());
            match job.file(&path, &mut file, control) {
                Ok(true) => {}
                Ok(false) => {
                    stopped = true;
                    break;
                }
                Err(e) => {
                    job.hunt.state = HuntState::Failed;
                    job.hunt.error = Some(format!("storage failed: {e}"));
                    tracing::error!(hunt = id, error = %e, "hunting job failed");
                    break;
                }
            }
        }
        if self.stopping.load(Ordering::SeqCst) && !control.cancel.load(Ordering::SeqCst) {
            // Left `running`: the next start re-queues it.
            let _ = job.flush(true);
            return;
        }
        if job.hunt.state != HuntState::Failed {
            job.hunt.state = if stopped {
                HuntState::Cancelled
            } else {
                HuntState::Done
            };
        }
        job.hunt.finished_ms = Some(now_ms());
        match job.flush(true) {
            Ok(()) => tracing::info!(
                hunt = id,
                state = job.hunt.state.as_str(),
                records = job.hunt.records_done,
                matches = job.hunt.matches,
                "hunting job finished"
            ),
            Err(e) => tracing::warn!(hunt = id, error = %e, "hunting job: final state not stored"),
        }
    }

    /// Cancels a running job and waits until it stopped.
    async fn stop(&self, id: i64) {
        let control = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(c) = control {
            let mut finished = c.finished.subscribe();
            c.cancel.store(true, Ordering::SeqCst);
            if tokio::time::timeout(STOP_WAIT, finished.wait_for(|f| *f))
                .await
                .is_err()
            {
                tracing::warn!(hunt = id, "hunting job did not stop in time");
            }
        }
    }

    /// Where uploads go.
    #[must_use]
    pub fn uploads(&self) -> HuntUploads {
        HuntUploads {
            staging_dir: self.dir.clone(),
            max_upload_bytes: self.config.max_upload_bytes,
        }
    }

    /// Takes over an upload folder and queues its job.
    ///
    /// # Errors
    /// [`FleetError::Internal`] when the store or the file system fails.
    pub async fn create(
        &self,
        name: &str,
        folder: &Path,
        files: Vec<HuntUpload>,
        actor: &str,
    ) -> Result<HuntDetail, FleetError> {
        let detail = self
            .store
            .create_hunt(&NewHunt {
                name: name.to_owned(),
                created_by: actor.to_owned(),
                created_ms: now_ms(),
                files: files
                    .iter()
                    .map(|f| NewHuntFile {
                        name: f.name.clone(),
                        size: f.size,
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
            })
            .await
            .map_err(internal("creating the job"))?;
        let id = detail.hunt.id;
        if let Err(e) = std::fs::rename(folder, self.job_dir(id)) {
            let _ = self.store.delete_hunt(id).await;
            return Err(FleetError::Internal(format!(
                "moving the upload {} to {}: {e}",
                folder.display(),
                self.job_dir(id).display()
            )));
        }
        let _ = self
            .live
            .send(LiveEvent::Hunt(Box::new(detail.hunt.clone())));
        self.wake.notify_one();
        Ok(detail)
    }

    async fn get(&self, id: i64) -> Result<Hunt, FleetError> {
        self.store
            .hunt(id)
            .await
            .map_err(internal("reading the job"))?
            .map(|d| d.hunt)
            .ok_or_else(|| FleetError::NotFound(format!("hunt {id} not found")))
    }

    /// Cancels a queued or running job.
    ///
    /// # Errors
    /// [`FleetError::NotFound`], [`FleetError::Conflict`] when it has
    /// finished, [`FleetError::Internal`] when the store fails.
    pub async fn cancel(&self, id: i64) -> Result<Hunt, FleetError> {
        {
            let _claim = self.claim.lock().await;
            let mut hunt = self.get(id).await?;
            match hunt.state {
                HuntState::Queued => {
                    hunt.state = HuntState::Cancelled;
                    hunt.finished_ms = Some(now_ms());
                    self.store
                        .update_hunt(&hunt)
                        .await
                        .map_err(internal("cancelling the job"))?;
                    let _ = self.live.send(LiveEvent::Hunt(Box::new(hunt.clone())));
                    return Ok(hunt);
                }
                HuntState::Running => {}
                s => {
                    return Err(FleetError::Conflict(format!(
                        "hunt {id} has finished ({})",
                        s.as_str()
                    )))
                }
            }
        }
        self.stop(id).await;
        self.get(id).await
    }

    /// Deletes a job (stopping it first), its records, alerts and files.
    ///
    /// # Errors
    /// [`FleetError::NotFound`], [`FleetError::Internal`] when the store
    /// fails.
    pub async fn delete(&self, id: i64) -> Result<Hunt, FleetError> {
        let hunt = self.get(id).await?;
        // A worker may claim the job between the stop and the lock: then
        // stop it again.
        let mut tries = 0;
        let _claim = loop {
            self.stop(id).await;
            let claim = self.claim.lock().await;
            let running = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&id);
            if !running {
                break claim;
            }
            tries += 1;
            if tries == 3 {
                return Err(FleetError::Unavailable(format!(
                    "hunt {id} does not stop; try again later"
                )));
            }
        };
        if !self
            .store
            .delete_hunt(id)
            .await
            .map_err(internal("deleting the job"))?
        {
            return Err(FleetError::NotFound(format!("hunt {id} not found")));
        }
        let dir = self.job_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a job's files");
            }
        }
        Ok(hunt)
    }
}

/// One job being run (on a blocking thread).
struct Job<'a> {
    hunts: &'a Hunts,
    rt: &'a tokio::runtime::Handle,
    hunt: Hunt,
    last_flush: Instant,
    pending: Vec<NewAlert>,
}

/// What scanning a batch of chunks gave.
#[derive(Default)]
struct BatchOut {
    records: u64,
    alerts: Vec<NewAlert>,
    problems: Vec<String>,
}

impl Job<'_> {
    fn store_alerts(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let r = self
            .rt
            .block_on(self.hunts.store.insert_hunt_alerts(self.hunt.id, &batch))?;
        // Duplicates are this job's own matches stored before a restart.
        self.hunt.matches += r.inserted + r.duplicates;
        Ok(())
    }

    /// Stores pending alerts and, when due (or `force`), the progress.
    fn flush(&mut self, force: bool) -> Result<(), StoreError> {
        if force || self.pending.len() >= ALERT_BATCH {
            self.store_alerts()?;
        }
        if force || self.last_flush.elapsed() >= PROGRESS_EVERY {
            self.store_alerts()?;
            self.rt.block_on(self.hunts.store.update_hunt(&self.hunt))?;
            let _ = self
                .hunts
                .live
                .send(LiveEvent::Hunt(Box::new(self.hunt.clone())));
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    fn save_file(&self, file: &HuntFile) -> Result<(), StoreError> {
        self.rt
            .block_on(self.hunts.store.update_hunt_file(self.hunt.id, file))
    }

    /// Scans one file; `Ok(false)` when the job was cancelled or the
    /// backend stops.
    fn file(
        &mut self,
        path: &Path,
        file: &mut HuntFile,
        control: &Control,
    ) -> Result<bool, StoreError> {
        let bytes_before = self.hunt.bytes_done;
        let matches_before = self.hunt.matches;
        file.state = HuntFileState::Running;
        // Progress is written at most every PROGRESS_EVERY: a file scanned
        // within one batch is only written when it is finished.
        if file.size > HEADER_BYTES + BATCH_CHUNKS as u64 * CHUNK_BYTES {
            self.save_file(file)?;
        }
        let outcome = self.scan(path, file, control);
        let finished = match outcome {
            Scan::Failed(reason) => {
                file.state = HuntFileState::Failed;
                file.error = Some(reason);
                true
            }
            Scan::Done { problems, first } => {
                self.store_alerts()?;
                file.state = if file.records == 0 && problems > 0 {
                    HuntFileState::Failed
                } else {
                    HuntFileState::Done
                };
                file.error = first.map(|f| {
                    if problems > 1 {
                        format!("{problems} problems, the first: {f}")
                    } else {
                        f
                    }
                });
                true
            }
            Scan::Stopped => {
                self.store_alerts()?;
                false
            }
            Scan::Store(e) => return Err(e),
        };
        file.matches = self.hunt.matches - matches_before;
        if finished {
            self.hunt.files_done += 1;
            self.hunt.bytes_done = bytes_before + file.size;
        }
        self.save_file(file)?;
        self.flush(false)?;
        Ok(finished)
    }

    fn scan(&mut self, path: &Path, file: &mut HuntFile, control: &Control) -> Scan {
        let mut magic = [0u8; 8];
        let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
        if let Err(e) = read {
            return Scan::Failed(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "not an EVTX file: shorter than the EVTX magic".into()
            } else {
                format!("cannot read the uploaded file: {e}")
            });
        }
        if &magic != MAGIC {
            return Scan::Failed(
                "not an EVTX file: it does not start with the EVTX magic `ElfFile\\0`".into(),
            );
        }
        let mut parser = match evtx::EvtxParser::from_path(path) {
            Ok(p) => p,
            Err(e) => return Scan::Failed(format!("not a readable EVTX file: {e}")),
        };
        let mut problems = 0u64;
        let mut first: Option<String> = None;
        let mut note = |reason: String, problems: &mut u64| {
            *problems += 1;
            if first.is_none() {
                first = Some(reason);
            }
        };
        if let Some(t) = truncation(file.size, u64::from(parser.header().chunk_count)) {
            note(t, &mut problems);
        }
        let settings = Arc::new(evtx::ParserSettings::new());
        let rules = self.hunts.rules.clone();
        let router = windows::Router::new(&rules);
        let base = self.hunt.bytes_done;
        let mut done_bytes = HEADER_BYTES.min(file.size);
        let mut chunks = parser.chunks();
        let mut ordinal = 0u64;
        let (hunt_id, index, name) = (self.hunt.id, file.index, file.name.clone());
        loop {
            if control.cancel.load(Ordering::SeqCst) || self.hunts.stopping.load(Ordering::SeqCst) {
                return Scan::Stopped;
            }
            let batch: Vec<(u64, Result<evtx::EvtxChunkData, String>)> = chunks
                .by_ref()
                .take(BATCH_CHUNKS)
                .map(|c| {
                    ordinal += 1;
                    (ordinal, c.map_err(|e| e.to_string()))
                })
                .collect();
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let received = now_ms();
            let outs: Vec<BatchOut> = self.hunts.pool.install(|| {
                batch
                    .into_par_iter()
                    .map(|(ordinal, chunk)| {
                        let mut out = BatchOut::default();
                        match chunk {
                            Err(reason) => out.problems.push(format!("chunk {ordinal}: {reason}")),
                            Ok(data) => {
                                let scanned = scan_chunk(
                                    &router,
                                    data,
                                    &settings,
                                    |meta, fields, matches| {
                                        for m in matches.drain(..) {
                                            out.alerts.push(alert(
                                                hunt_id, index, &name, meta, fields, &m, received,
                                            ));
                                        }
                                    },
                                );
                                out.records = scanned.records;
                                for p in scanned.problems {
                                    out.problems.push(match (p.record_index, p.record_id) {
                                        (0, _) => format!("chunk {ordinal}: {}", p.reason),
                                        (_, Some(id)) => format!("record {id}: {}", p.reason),
                                        (i, None) => format!(
                                            "chunk {ordinal}, record #{i} of the chunk: {}",
                                            p.reason
                                        ),
                                    });
                                }
                            }
                        }
                        out
                    })
                    .collect()
            });
            for out in outs {
                file.records += out.records;
                self.hunt.records_done += out.records;
                self.pending.extend(out.alerts);
                for p in out.problems {
                    note(p, &mut problems);
                }
            }
            done_bytes = (done_bytes + n * CHUNK_BYTES).min(file.size);
            self.hunt.bytes_done = base + done_bytes;
            if let Err(e) = self.flush(false) {
                return Scan::Store(e);
            }
        }
        Scan::Done { problems, first }
    }
}

enum Scan {
    Failed(String),
    Done {
        problems: u64,
        first: Option<String>,
    },
    Stopped,
    Store(StoreError),
}

/// The alert of one match: its id is a hash of where it was found, so a
/// re-run stores nothing twice.
fn alert(
    hunt_id: i64,
    file_index: u32,
    file_name: &str,
    meta: &picket_rules::evtx::RecordMeta,
    fields: &Map<String, Json>,
    m: &Match,
    received_ms: i64,
) -> NewAlert {
    let rule = &m.rule;
    let rule_id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
    // Under their Sigma names, as the rules saw the event.
    let aliases = picket_rules::windows::route(fields).aliases;
    let text =
        |name: &str| picket_rules::windows::sigma_text(fields, aliases, name).map(str::to_owned);
    let mut h = sha2::Sha256::new();
    h.update(format!(
        "hunt\0{hunt_id}\0{file_index}\0{}\0{rule_id}\0{}",
        meta.record_id,
        rule.path.display()
    ));
    let id = crate::hex(&h.finalize()[..16]);
    NewAlert {
        id,
        // Uploaded logs come from no enrolled device.
        device_id: String::new(),
        seq: 0,
        timestamp_ms: meta.timestamp_ms,
        received_ms,
        level: level(rule.level),
        source: AlertSource::Upload,
        rule_id,
        rule_title: rule.title.clone(),
        techniques: rule.techniques.clone(),
        image: text("Image"),
        command_line: text("CommandLine"),
        path: text("TargetFilename"),
        event: json!({
            "format": "evtx",
            "hunt_id": hunt_id,
            "file": file_name,
            "record_id": meta.record_id,
            "timestamp": meta.timestamp,
            "computer": meta.computer,
            "channel": meta.channel,
            "event_id": meta.event_id,
            "rule_author": rule.author,
            "fields": fields,
        }),
    }
}
