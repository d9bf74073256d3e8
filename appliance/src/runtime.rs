//! The runtime: modules with a lifecycle, the bus, detection and outputs,
//! wired from a [`Config`].
//!
//! ```text
//!  modules (sources)          bus                 transforms/sinks
//!  ┌──────────┐ sensor thread  ┌────────────┐ Block ┌───────────┐  alerts
//!  │ process  │─┐ (epoll over  │ per-sub-   │──────►│ detection │────────► stdout / file
//!  │ file     │─┼ rings,       │ scriber    │       └───────────┘
//!  │ network  │─┤ decode,      │ bounded    │ Drop  ┌───────────┐
//!  │ syscalls │─┘ enrich)  ───►│ queues     │──────►│ events    │────────► stdout / file
//!  │ auth     │──────────────► │            │ Drop  ┌───────────┐
//!  │ fim      │◄──── trigger ──│            │──────►│ fim       │
//!  └──────────┘                └────────────┘       └───────────┘
//! ```
//!
//! Every module implements [`Module`]: built from its config, then
//! `start`, `reload` (on SIGHUP, with the re-read config) and `stop`. A
//! module that fails to start is reported with its cause and the others run
//! on: missing BTF or a verifier rejection stops only kernel modules.

use crate::bus::{Bus, BusBuilder, Policy};
use crate::config::{Config, Sink};
use crate::detect::{self, Alert};
use crate::event::{Event, Kind};
use crate::kernel::{self, KernelError, ProbeSettings};
use crate::sensor::{self, Control, SensorHandles};
use crate::telemetry::Registry;
use anyhow::Context as _;
use picket_probes::ProbeConfig;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::watch;

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The live kernel (needs root).
    Live,
    /// A recording made by `picketd record` (no root, no eBPF).
    Replay(PathBuf),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Event source.
    pub source: Source,
    /// Write every event here, waiting rather than dropping (`picketd record`).
    pub record: Option<PathBuf>,
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Forward a replay's alerts through the uplink (`replay --forward`).
    pub forward_replay: bool,
}

/// What a run did, for tests and the replay summary.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// Events published.
    pub events: u64,
    /// Alerts written.
    pub alerts: u64,
    /// Replay lines that were not events.
    pub invalid_lines: u64,
    /// Modules that failed to start, with the cause.
    pub failed_modules: Vec<(String, String)>,
}

/// What each module is doing, as heartbeats report it.
#[derive(Debug, Clone, Default)]
pub struct ModuleBoard(Arc<std::sync::Mutex<Vec<BoardEntry>>>);

type BoardEntry = (&'static str, picket_proto::ModuleState, Option<String>);

impl ModuleBoard {
    /// Records a module's state (and the error that put it there).
    pub fn set(&self, name: &'static str, state: picket_proto::ModuleState, error: Option<String>) {
        let mut b = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match b.iter_mut().find(|e| e.0 == name) {
            Some(e) => {
                e.1 = state;
                e.2 = error;
            }
            None => b.push((name, state, error)),
        }
    }

    /// Every module's state, in start order.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(String, picket_proto::ModuleState, Option<String>)> {
        let b = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.iter()
            .map(|(n, s, e)| ((*n).to_owned(), *s, e.clone()))
            .collect()
    }
}

/// A module's context.
#[derive(Debug, Clone)]
pub struct ModuleContext {
    /// Publish here.
    pub bus: Bus,
    /// Kernel access and the sensor thread, for kernel modules.
    pub kernel: Option<Arc<KernelAccess>>,
    /// Metrics.
    pub registry: Registry,
}

/// What kernel modules need to start: BTF, tracefs, and the sensor thread.
#[derive(Debug)]
pub struct KernelAccess {
    /// Kernel BTF for CO-RE while modules start; released afterwards (the
    /// parsed vmlinux BTF is over 10 MiB) and parsed again if a reload
    /// starts a module later.
    pub btf: std::sync::Mutex<Option<Arc<aya::Btf>>>,
    /// tracefs `events` directory.
    pub tracefs_events: PathBuf,
    /// The sensor thread's control queue.
    pub sensor: std::sync::Mutex<mpsc::Sender<Control>>,
}

impl KernelAccess {
    fn btf(&self) -> anyhow::Result<Arc<aya::Btf>> {
        let mut g = self
            .btf
            .lock()
            .map_err(|_| anyhow::anyhow!("BTF lock poisoned"))?;
        if let Some(b) = g.as_ref() {
            return Ok(b.clone());
        }
        let b = Arc::new(kernel::load_btf()?);
        *g = Some(b.clone());
        Ok(b)
    }

    /// Drops the parsed BTF and gives the memory back to the system.
    pub fn release_btf(&self) {
        if let Ok(mut g) = self.btf.lock() {
            *g = None;
        }
        crate::telemetry::trim_heap();
    }

    fn send(&self, c: Control) -> anyhow::Result<()> {
        self.sensor
            .lock()
            .map_err(|_| anyhow::anyhow!("sensor control poisoned"))?
            .send(c)
            .map_err(|_| anyhow::anyhow!("sensor thread is gone"))
    }
}

/// A module's lifecycle.
pub trait Module: Send {
    /// Its name in config and metrics.
    fn name(&self) -> &'static str;
    /// Whether the config enables it.
    fn enabled(&self) -> bool;
    /// Starts it; returns a line describing what it does.
    ///
    /// # Errors
    /// Why it could not start.
    fn start(&mut self, ctx: &ModuleContext) -> anyhow::Result<String>;
    /// Applies a new config (already validated).
    ///
    /// # Errors
    /// Why it could not be applied.
    fn reload(&mut self, ctx: &ModuleContext, config: &Config) -> anyhow::Result<()>;
    /// Stops it.
    fn stop(&mut self, ctx: &ModuleContext);
}

/// A module whose source is a probe object.
struct KernelModule {
    name: &'static str,
    settings: ProbeSettings,
    enabled: bool,
    running: bool,
}

fn self_interest(config: &Config) -> Vec<(u32, u32)> {
    if config.ignore_self {
        vec![(
            std::process::id(),
            picket_probes::IGNORE_ALL | picket_probes::INTEREST_CHILDREN,
        )]
    } else {
        Vec::new()
    }
}

fn kernel_settings(name: &str, config: &Config) -> (bool, ProbeSettings) {
    let image_rules = config
        .ignore_images
        .iter()
        .map(|i| {
            (
                i.clone(),
                picket_probes::IGNORE_ALL | picket_probes::INTEREST_CHILDREN,
            )
        })
        .collect();
    let mut s = ProbeSettings {
        interest: self_interest(config),
        image_rules,
        ..ProbeSettings::default()
    };
    let enabled = match name {
        "process" => {
            s.ring_buffer_bytes = config.process.ring_buffer_bytes;
            config.process.enabled
        }
        "file" => {
            s.ring_buffer_bytes = config.file.kernel.ring_buffer_bytes;
            s.config = ProbeConfig {
                file_filter: config.file.filter,
                ..ProbeConfig::default()
            };
            s.watch_prefixes.clone_from(&config.file.watch_prefixes);
            s.ignore_prefixes.clone_from(&config.file.ignore_prefixes);
            config.file.kernel.enabled
        }
        "network" => {
            s.ring_buffer_bytes = config.network.kernel.ring_buffer_bytes;
            s.config = ProbeConfig {
                tcp_state_mask: config.network.tcp_state_mask,
                ..ProbeConfig::default()
            };
            config.network.kernel.enabled
        }
        _ => {
            s.ring_buffer_bytes = config.syscalls.ring_buffer_bytes;
            s.raw_syscalls_fallback = config.raw_syscalls_fallback;
            config.syscalls.enabled
        }
    };
    (enabled, s)
}

impl KernelModule {
    fn new(name: &'static str, config: &Config) -> Self {
        let (enabled, settings) = kernel_settings(name, config);
        KernelModule {
            name,
            settings,
            enabled,
            running: false,
        }
    }
}

impl Module for KernelModule {
    fn name(&self) -> &'static str {
        self.name
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn start(&mut self, ctx: &ModuleContext) -> anyhow::Result<String> {
        let k = ctx
            .kernel
            .as_ref()
            .context("no kernel access (BTF or tracefs missing, see above)")?;
        let object = kernel::object_for(self.name).context("no probe object")?;
        // loading (the verifier) runs here, not on the sensor thread
        let btf = k.btf()?;
        let probes = kernel::LoadedProbes::load(object, &btf, &k.tracefs_events, &self.settings)?;
        let line = format!(
            "{} hooks attached ({}){}",
            probes.attached.len(),
            probes.attached.join(", "),
            if probes.skipped.is_empty() {
                String::new()
            } else {
                format!("; not on this kernel: {}", probes.skipped.join(", "))
            }
        );
        k.send(Control::Start(Box::new(probes)))?;
        self.running = true;
        Ok(line)
    }
    fn reload(&mut self, ctx: &ModuleContext, config: &Config) -> anyhow::Result<()> {
        let (enabled, settings) = kernel_settings(self.name, config);
        self.enabled = enabled;
        self.settings = settings;
        if !self.running {
            return Ok(());
        }
        let Some(k) = &ctx.kernel else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel::<Result<(), KernelError>>();
        k.send(Control::Reload(self.name, self.settings.clone(), tx))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("sensor thread is gone"))??;
        Ok(())
    }
    fn stop(&mut self, ctx: &ModuleContext) {
        if let Some(k) = &ctx.kernel {
            let (tx, rx) = mpsc::channel();
            if k.send(Control::Stop(self.name, tx)).is_ok() {
                // detached when this returns (or the sensor thread is gone)
                let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
            }
        }
        self.running = false;
    }
}

/// The auth-log module.
struct AuthModule {
    cfg: crate::config::AuthModuleConfig,
    task: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl Module for AuthModule {
    fn name(&self) -> &'static str {
        "auth"
    }
    fn enabled(&self) -> bool {
        self.cfg.enabled
    }
    fn start(&mut self, ctx: &ModuleContext) -> anyhow::Result<String> {
        let (tx, rx) = watch::channel(false);
        let h = tokio::spawn(crate::auth::run(self.cfg.clone(), ctx.bus.clone(), rx));
        self.task = Some((tx, h));
        Ok(format!(
            "following {}{}",
            self.cfg
                .log_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.cfg
                .syslog_socket
                .as_ref()
                .map(|s| format!("; syslog socket {}", s.display()))
                .unwrap_or_default()
        ))
    }
    fn reload(&mut self, ctx: &ModuleContext, config: &Config) -> anyhow::Result<()> {
        if self.cfg != config.auth {
            self.stop(ctx);
            self.cfg = config.auth.clone();
            if self.cfg.enabled {
                self.start(ctx)?;
            }
        }
        Ok(())
    }
    fn stop(&mut self, _ctx: &ModuleContext) {
        if let Some((tx, h)) = self.task.take() {
            let _ = tx.send(true);
            h.abort();
        }
    }
}

/// The file-integrity module: it subscribes to file events (the trigger)
/// and publishes changes. The trigger queue outlives a stop, so a reload
/// can start it again.
struct FimModule {
    cfg: crate::config::FimModuleConfig,
    data_dir: PathBuf,
    trigger: Option<TriggerQueue>,
    task: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

type TriggerQueue = Arc<tokio::sync::Mutex<crate::bus::Subscription>>;

impl Module for FimModule {
    fn name(&self) -> &'static str {
        "fim"
    }
    fn enabled(&self) -> bool {
        self.cfg.enabled
    }
    fn start(&mut self, ctx: &ModuleContext) -> anyhow::Result<String> {
        let trigger = self.trigger.clone().context("FIM trigger queue missing")?;
        let (tx, rx) = watch::channel(false);
        let n = self.cfg.paths.len();
        let h = tokio::spawn(run_fim(
            self.cfg.clone(),
            self.data_dir.clone(),
            ctx.bus.clone(),
            trigger,
            rx,
        ));
        self.task = Some((tx, h));
        Ok(format!("{n} critical paths baselined"))
    }
    fn reload(&mut self, ctx: &ModuleContext, config: &Config) -> anyhow::Result<()> {
        if self.cfg != config.fim {
            let running = self.task.is_some();
            self.stop(ctx);
            self.cfg = config.fim.clone();
            if running && self.cfg.enabled {
                self.start(ctx)?;
            }
        }
        Ok(())
    }
    fn stop(&mut self, _ctx: &ModuleContext) {
        if let Some((tx, h)) = self.task.take() {
            let _ = tx.send(true);
            h.abort();
        }
    }
}

async fn run_fim(
    cfg: crate::config::FimModuleConfig,
    data_dir: PathBuf,
    bus: Bus,
    trigger: TriggerQueue,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut trigger = trigger.lock().await;
    let saved_path = data_dir.join("fim-baseline.json");
    let mut fim = crate::fim::Fim::new(cfg.paths.clone());
    let saved = crate::fim::load_baseline(&saved_path);
    let changes = fim.start(saved);
    let save = |fim: &crate::fim::Fim| {
        if let Err(e) = crate::fim::save_baseline(&saved_path, fim.baseline()) {
            tracing::warn!("FIM: cannot save baseline {}: {e}", saved_path.display());
        }
    };
    save(&fim);
    for c in changes {
        bus.publish(c.to_event()).await;
    }
    let mut rescan = tokio::time::interval(cfg.rescan_interval);
    rescan.tick().await;
    let mut due: Option<tokio::time::Instant> = None;
    let mut touched: Vec<PathBuf> = Vec::new();
    loop {
        let sleep_until = due
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.changed() => break,
            batch = trigger.recv() => {
                let Some(batch) = batch else { break };
                for ev in batch.iter() {
                    let paths: Vec<&str> = match &ev.kind {
                        Kind::FileCreate { path } | Kind::FileWrite { path, .. } | Kind::FileDelete { path, .. }
                        | Kind::FileChmod { path, .. } | Kind::FileChown { path, .. } => vec![path],
                        Kind::FileRename { from, to } => vec![from, to],
                        Kind::FileLink { path, .. } => vec![path],
                        _ => vec![],
                    };
                    for p in paths {
                        if fim.covers(p) {
                            touched.push(PathBuf::from(p));
                            due.get_or_insert_with(|| tokio::time::Instant::now() + cfg.settle);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(sleep_until), if due.is_some() => {
                due = None;
                touched.sort();
                touched.dedup();
                let changes = fim.check(Some(&touched));
                touched.clear();
                if !changes.is_empty() {
                    save(&fim);
                }
                for c in changes {
                    bus.publish(c.to_event()).await;
                }
            }
            _ = rescan.tick() => {
                let changes = fim.check(None);
                if !changes.is_empty() {
                    save(&fim);
                }
                for c in changes {
                    bus.publish(c.to_event()).await;
                }
            }
        }
    }
}

fn open_sink(sink: &Sink) -> anyhow::Result<Option<Box<dyn Write + Send>>> {
    Ok(match sink {
        Sink::None => None,
        Sink::Stdout => Some(Box::new(std::io::stdout())),
        Sink::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?;
            Some(Box::new(f))
        }
    })
}

/// Writes JSON lines from a bus queue until it closes.
fn spawn_writer(
    name: &'static str,
    mut rx: crate::bus::Subscription,
    out: Box<dyn Write + Send>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("picket-{name}"))
        .spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
            while let Some(batch) = rx.blocking_recv() {
                for ev in batch.iter() {
                    let _ = serde_json::to_writer(&mut w, ev);
                    let _ = w.write_all(b"\n");
                }
                if rx.is_empty() {
                    let _ = w.flush();
                }
            }
            let _ = w.flush();
        })
        .expect("spawn writer thread")
}

/// Runs picketd until `shutdown` is set (or, for a replay, until the
/// recording is done).
///
/// # Errors
/// Only when nothing can run: an output cannot be opened. Module failures
/// are logged and reported, not fatal.
pub async fn run(
    config: Config,
    opts: RunOptions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<RunReport> {
    let registry = Registry::default();
    let mut report = RunReport::default();
    let mut builder = BusBuilder::new(config.bus_capacity);
    let detect_rx = config
        .detection
        .then(|| builder.subscribe("detection", Policy::Block));
    let record_rx = opts
        .record
        .as_ref()
        .map(|_| builder.subscribe("record", Policy::Block));
    let events_rx =
        (config.events != Sink::None).then(|| builder.subscribe("events", Policy::Drop));
    let live = matches!(opts.source, Source::Live);
    let fim_rx = (live && config.fim.enabled).then(|| builder.subscribe("fim", Policy::Drop));
    let bus = builder.build();
    {
        let b = bus.stats();
        registry.gauge(
            "picket_bus_depth",
            "events waiting in a subscriber's queue",
            move |v| {
                for s in b.subscribers() {
                    v.push((
                        crate::telemetry::label("subscriber", s.name),
                        s.stats.depth.load(Ordering::Relaxed) as f64,
                    ));
                }
            },
        );
        let b = bus.stats();
        registry.gauge(
            "picket_bus_delivered_total",
            "events queued for a subscriber",
            move |v| {
                for s in b.subscribers() {
                    v.push((
                        crate::telemetry::label("subscriber", s.name),
                        s.stats.delivered.load(Ordering::Relaxed) as f64,
                    ));
                }
            },
        );
        let b = bus.stats();
        registry.gauge(
            "picket_bus_dropped_total",
            "events a drop-policy subscriber lost",
            move |v| {
                for s in b.subscribers() {
                    v.push((
                        crate::telemetry::label("subscriber", s.name),
                        s.stats.dropped.load(Ordering::Relaxed) as f64,
                    ));
                }
            },
        );
        registry.gauge(
            "picket_process_resident_memory_bytes",
            "resident set size of picketd",
            |v| {
                v.push((String::new(), crate::telemetry::rss_bytes() as f64));
            },
        );
    }

    // detection: a thread of its own, back-pressuring the bus
    let alerts_total = registry.counter("picket_alerts_emitted_total", "alerts written", &[]);
    // from the event's kernel timestamp to detection taking it off the bus
    let latency = Arc::new(crate::telemetry::Histogram::default());
    {
        let h = latency.clone();
        registry.gauge(
            "picket_pipeline_latency_seconds",
            "time from the kernel event to detection receiving it (estimated quantiles)",
            move |v| {
                for q in [0.5, 0.9, 0.99, 0.999] {
                    if let Some(ns) = h.quantile_ns(q) {
                        v.push((
                            crate::telemetry::label("quantile", &q.to_string()),
                            ns / 1e9,
                        ));
                    }
                }
            },
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let board = ModuleBoard::default();
    let bundle_version = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut fleet_channels = None;
    let lost_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // forwarding to the fleet: live runs only (a replay is not news)
    let uplink = match (&config.uplink, &opts.source) {
        (Some(u), source) if matches!(source, Source::Live) || opts.forward_replay => {
            let link = match (&config.bundle_root, live) {
                (Some(_), true) => {
                    let (down_tx, down_rx) = tokio::sync::mpsc::channel(256);
                    let (out_tx, out_rx) = tokio::sync::mpsc::channel(64);
                    fleet_channels = Some((down_rx, out_tx));
                    Some(picket_uplink::FleetLink {
                        downlink: down_tx,
                        outbox: out_rx,
                    })
                }
                _ => None,
            };
            crate::forward::start(
                u,
                crate::forward::heartbeat_source(
                    board.clone(),
                    lost_total.clone(),
                    bundle_version.clone(),
                ),
                link,
                stop_rx.clone(),
            )
        }
        _ => None,
    };
    let spool = uplink.as_ref().map(|(s, _)| s.clone());
    let spool_refused = registry.counter(
        "picket_alerts_spool_refused_total",
        "alerts the spool could not take (storage error or larger than the budget)",
        &[],
    );
    if let Some(sp) = &spool {
        let sp = sp.clone();
        registry.gauge(
            "picket_spool_depth",
            "alerts waiting in the spool",
            move |v| {
                let st = sp.stats();
                v.push((String::new(), st.depth as f64));
            },
        );
        let sp = spool.clone().expect("spool present");
        registry.gauge(
            "picket_spool_evictions_total",
            "alerts evicted from the full spool",
            move |v| {
                v.push((String::new(), sp.stats().evictions_total() as f64));
            },
        );
    }
    let mut rule_slot: Option<detect::RuleSlot> = None;
    let detector = match detect_rx {
        Some(mut rx) => {
            let loaded = detect::load_rules(&config.rules_dirs, &config.placeholders);
            for e in &loaded.errors {
                tracing::warn!("rule not loaded: {e}");
            }
            tracing::info!(
                "detection: {} rules loaded, {} left out",
                loaded.rules.len(),
                loaded.errors.len()
            );
            let mut out = open_sink(&config.alerts)?;
            let alerts_total = alerts_total.clone();
            let slot = detect::RuleSlot::new(loaded.rules);
            rule_slot = Some(slot.clone());
            let latency = latency.clone();
            let source_kind = opts.source.clone();
            let spool = spool.clone();
            let spool_refused = spool_refused.clone();
            let registry = registry.clone();
            Some(
                std::thread::Builder::new()
                    .name("picket-detect".into())
                    .spawn(move || {
                        let mut alerts: Vec<Alert> = Vec::new();
                        let mut w = out
                            .as_mut()
                            .map(|o| std::io::BufWriter::with_capacity(64 * 1024, o));
                        let live = matches!(source_kind, Source::Live);
                        let mut detector = detect::Detector::new(slot, registry);
                        while let Some(batch) = rx.blocking_recv() {
                            if live {
                                for ev in batch.iter() {
                                    latency.record_ns(
                                        crate::decoder::unix_ns().saturating_sub(ev.time_ns),
                                    );
                                }
                            }
                            detector.evaluate_batch(&batch, &mut alerts);
                            for a in alerts.drain(..) {
                                alerts_total.fetch_add(1, Ordering::Relaxed);
                                if let Some(sp) = &spool {
                                    if let Err(e) = crate::forward::push(sp, &a) {
                                        spool_refused.fetch_add(1, Ordering::Relaxed);
                                        tracing::warn!("alert {} not spooled: {e}", a.alert_id);
                                    }
                                }
                                if let Some(w) = w.as_mut() {
                                    let _ = serde_json::to_writer(&mut *w, &a);
                                    let _ = w.write_all(b"\n");
                                }
                            }
                            if rx.is_empty() {
                                if let Some(w) = w.as_mut() {
                                    let _ = w.flush();
                                }
                            }
                        }
                        if let Some(w) = w.as_mut() {
                            let _ = w.flush();
                        }
                    })
                    .context("spawn detection thread")?,
            )
        }
        None => None,
    };
    if let (Some((down_rx, out_tx)), Some(slot), Some(root), Some(u)) = (
        fleet_channels,
        rule_slot.clone(),
        &config.bundle_root,
        &config.uplink,
    ) {
        start_bundles(&config, u, root, slot, out_tx, down_rx, &bundle_version);
    }
    let mut writers = Vec::new();
    if let (Some(rx), Some(path)) = (record_rx, &opts.record) {
        let f = open_sink(&Sink::File(path.clone()))?.context("record file")?;
        writers.push(spawn_writer("record", rx, f));
    }
    if let Some(rx) = events_rx {
        if let Some(out) = open_sink(&config.events)? {
            writers.push(spawn_writer("events", rx, out));
        }
    }

    // metrics
    if let Some(addr) = config.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!("metrics on http://{addr}/metrics");
                tokio::spawn(crate::telemetry::serve(
                    l,
                    registry.clone(),
                    stop_rx.clone(),
                ));
            }
            Err(e) => tracing::error!("metrics: cannot listen on {addr}: {e}"),
        }
    }

    let mut sensor_thread = None;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut ctx = ModuleContext {
        bus: bus.clone(),
        kernel: None,
        registry: registry.clone(),
    };
    let mut modules: Vec<Box<dyn Module>> = Vec::new();

    match &opts.source {
        Source::Live => {
            let any_kernel = config.process.enabled
                || config.file.kernel.enabled
                || config.network.kernel.enabled
                || config.syscalls.enabled;
            if any_kernel {
                match start_sensor(&config, &bus, &registry, &stop_flag, &lost_total) {
                    Ok((access, h)) => {
                        ctx.kernel = Some(Arc::new(access));
                        sensor_thread = Some(h);
                    }
                    Err(e) => tracing::error!("kernel modules cannot run: {e:#}"),
                }
            }
            for name in ["process", "file", "network", "syscalls"] {
                modules.push(Box::new(KernelModule::new(name, &config)));
            }
            modules.push(Box::new(AuthModule {
                cfg: config.auth.clone(),
                task: None,
            }));
            modules.push(Box::new(FimModule {
                cfg: config.fim.clone(),
                data_dir: config.data_dir.clone(),
                trigger: fim_rx.map(|r| Arc::new(tokio::sync::Mutex::new(r))),
                task: None,
            }));
            if config.fim.enabled || config.auth.syslog_socket.is_some() {
                if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
                    tracing::error!("cannot create data_dir {}: {e}", config.data_dir.display());
                }
            }
            for m in &mut modules {
                if !m.enabled() {
                    tracing::info!(module = m.name(), "disabled");
                    board.set(m.name(), picket_proto::ModuleState::Disabled, None);
                    continue;
                }
                board.set(m.name(), picket_proto::ModuleState::Starting, None);
                match m.start(&ctx) {
                    Ok(what) => {
                        tracing::info!(module = m.name(), "started: {what}");
                        board.set(m.name(), picket_proto::ModuleState::Running, None);
                    }
                    Err(e) => {
                        tracing::error!(module = m.name(), "failed to start: {e:#}");
                        board.set(
                            m.name(),
                            picket_proto::ModuleState::Failed,
                            Some(format!("{e:#}")),
                        );
                        report
                            .failed_modules
                            .push((m.name().to_owned(), format!("{e:#}")));
                    }
                }
            }
            if let Some(k) = &ctx.kernel {
                k.release_btf();
            }
            wait_for_shutdown(
                &mut shutdown,
                &opts,
                &mut modules,
                &ctx,
                &board,
                rule_slot.as_ref(),
                &bundle_version,
            )
            .await;
        }
        Source::Replay(path) => {
            report.invalid_lines = replay(path, &bus).await?;
        }
    }

    // shut down: modules, sensor (detaches every program), then the queues drain
    for m in &mut modules {
        m.stop(&ctx);
    }
    stop_flag.store(true, Ordering::Relaxed);
    if let Some(h) = sensor_thread {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    report.events = bus.published();
    drop(ctx);
    drop(modules);
    drop(bus);
    if let Some(d) = detector {
        let _ = tokio::task::spawn_blocking(move || d.join()).await;
    }
    // every alert is in the spool now; make it durable, then let the
    // uplink finish what is in flight
    if let Some(sp) = &spool {
        if let Err(e) = sp.flush() {
            tracing::error!("spool flush at shutdown: {e}");
        }
    }
    if let (Some(sp), Source::Replay(_)) = (&spool, &opts.source) {
        // `replay --forward`: the alerts are the point; wait (or a signal)
        // until the broker has acknowledged every one.
        drain_replay(sp, &mut shutdown).await;
    }
    let _ = stop_tx.send(true);
    if let Some((_, task)) = uplink {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    for w in writers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    report.alerts = alerts_total.load(Ordering::Relaxed);
    Ok(report)
}

fn start_bundles(
    config: &Config,
    u: &crate::config::UplinkSettings,
    root: &std::path::Path,
    slot: detect::RuleSlot,
    outbox: tokio::sync::mpsc::Sender<picket_uplink::Uplinked>,
    downlink: tokio::sync::mpsc::Receiver<picket_uplink::Downlink>,
    running: &Arc<std::sync::atomic::AtomicU64>,
) {
    let identity = match picket_proto::identity::DeviceIdentity::load(&u.identity_file) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("rule bundles off: device identity: {e}");
            return;
        }
    };
    let pinned = u.identity_file.with_file_name("fleet-command.pub");
    let command_key = std::fs::read_to_string(&pinned)
        .ok()
        .and_then(|h| hex::decode(h.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| picket_proto::ed25519_dalek::VerifyingKey::from_bytes(&b).ok());
    if command_key.is_none() {
        tracing::warn!(
            "no backend command key at {}: bundle announcements will be refused (run picketd enroll)",
            pinned.display()
        );
    }
    let ctx = crate::bundles::BundleContext {
        slot,
        identity,
        command_key,
        groups: config.groups.clone(),
        dir: config.data_dir.join("bundles"),
        running: running.clone(),
        outbox,
    };
    match crate::bundles::BundleManager::open(ctx, root) {
        Ok(m) => {
            tokio::spawn(m.run(downlink));
        }
        Err(e) => tracing::error!("rule bundles off: {e:#}"),
    }
}

async fn drain_replay(spool: &picket_uplink::Spool, shutdown: &mut watch::Receiver<bool>) {
    let mut announced = false;
    loop {
        let depth = spool.stats().depth;
        if depth == 0 {
            return;
        }
        if !announced {
            tracing::info!("replay done; waiting for the uplink to send {depth} spooled alerts");
            announced = true;
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

type SensorStart = (KernelAccess, std::thread::JoinHandle<()>);

fn start_sensor(
    config: &Config,
    bus: &Bus,
    registry: &Registry,
    stop: &Arc<AtomicBool>,
    lost_total: &Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<SensorStart> {
    let btf = kernel::load_btf()?;
    let events =
        kernel::ensure_tracefs().context("no tracefs: cannot find or mount /sys/kernel/tracing")?;
    let features = kernel::probe_features(&btf, &events);
    for (kind, r) in &features.results {
        match r {
            Ok(()) => tracing::info!("kernel feature {kind}: available"),
            Err(e) => tracing::info!("kernel feature {kind}: unavailable ({e}); using tracepoints"),
        }
    }
    tracing::info!(
        "kernel feature kprobe: {}; probes are tracepoint-based and need neither kprobes nor fentry",
        if features.kprobes { "available" } else { "unavailable" }
    );
    let decoder = crate::decoder::Decoder::new(crate::decoder::PathFilter {
        enabled: config.file.filter,
        watch: config.file.watch_prefixes.clone(),
        ignore: config.file.ignore_prefixes.clone(),
    });
    let (tx, rx) = mpsc::channel();
    let handles = SensorHandles {
        registry: registry.clone(),
        coalesce: config.coalesce,
        stop: stop.clone(),
        lost_total: lost_total.clone(),
    };
    let bus = bus.clone();
    let h = std::thread::Builder::new()
        .name("picket-sensor".into())
        .spawn(move || {
            sensor::run(&bus, decoder, &handles, &rx);
        })?;
    let access = KernelAccess {
        btf: std::sync::Mutex::new(Some(Arc::new(btf))),
        tracefs_events: events,
        sensor: std::sync::Mutex::new(tx),
    };
    Ok((access, h))
}

async fn wait_for_shutdown(
    shutdown: &mut watch::Receiver<bool>,
    opts: &RunOptions,
    modules: &mut [Box<dyn Module>],
    ctx: &ModuleContext,
    board: &ModuleBoard,
    rule_slot: Option<&detect::RuleSlot>,
    bundle_active: &std::sync::atomic::AtomicU64,
) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                let Some(path) = &opts.config_path else {
                    tracing::warn!("SIGHUP: no config file to re-read");
                    continue;
                };
                match Config::load(path) {
                    Ok(c) => {
                        if let Some(slot) = rule_slot.filter(|_| bundle_active.load(Ordering::Relaxed) == 0) {
                            let loaded = detect::load_rules(&c.rules_dirs, &c.placeholders);
                            for e in &loaded.errors {
                                tracing::warn!("rule not loaded: {e}");
                            }
                            let n = loaded.rules.len();
                            let generation = slot.replace(loaded.rules);
                            tracing::info!(generation, "detection: {n} rules loaded, {} left out", loaded.errors.len());
                        }
                        for m in modules.iter_mut() {
                            let was = m.enabled();
                            if let Err(e) = m.reload(ctx, &c) {
                                tracing::error!(module = m.name(), "reload failed: {e:#}");
                                board.set(m.name(), picket_proto::ModuleState::Degraded, Some(format!("reload failed: {e:#}")));
                            }
                            match (was, m.enabled()) {
                                (false, true) => match m.start(ctx) {
                                    Ok(w) => {
                                        tracing::info!(module = m.name(), "started: {w}");
                                        board.set(m.name(), picket_proto::ModuleState::Running, None);
                                    }
                                    Err(e) => {
                                        tracing::error!(module = m.name(), "failed to start: {e:#}");
                                        board.set(m.name(), picket_proto::ModuleState::Failed, Some(format!("{e:#}")));
                                    }
                                },
                                (true, false) => {
                                    m.stop(ctx);
                                    tracing::info!(module = m.name(), "stopped");
                                    board.set(m.name(), picket_proto::ModuleState::Disabled, None);
                                }
                                _ => {}
                            }
                        }
                        if let Some(k) = &ctx.kernel {
                            k.release_btf();
                        }
                        tracing::info!("configuration reloaded from {}", path.display());
                    }
                    Err(e) => tracing::error!("SIGHUP: keeping the running config: {e}"),
                }
            }
        }
    }
}

/// Feeds a recording through the bus; returns the number of bad lines
/// (each logged with its line number and skipped).
async fn replay(path: &std::path::Path, bus: &Bus) -> anyhow::Result<u64> {
    use tokio::io::AsyncBufReadExt;
    let f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open recording {}", path.display()))?;
    let mut lines = tokio::io::BufReader::new(f).lines();
    let mut n = 0u64;
    let mut bad = 0u64;
    let mut batch = Vec::with_capacity(crate::bus::MAX_BATCH);
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading {}", path.display()))?
    {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(ev) => {
                batch.push(ev);
                if batch.len() >= crate::bus::MAX_BATCH {
                    bus.publish_batch(std::mem::take(&mut batch)).await;
                }
            }
            Err(e) => {
                bad += 1;
                tracing::error!("{}:{n}: not an event: {e}", path.display());
            }
        }
    }
    bus.publish_batch(batch).await;
    Ok(bad)
}
