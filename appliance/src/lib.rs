//! `picketd`: Picket's modular eBPF sensor for Linux gateways.
//!
//! # Architecture
//!
//! ```text
//!  kernel: tracepoint probes (picket-probes), one object + ring per module
//!     │  filtered in the kernel: module switch, per-process interest map,
//!     │  write-intent opens, watched path prefixes, TCP state mask
//!     ▼
//!  sensor thread ─ epoll over rings ─► decoder (records → events; process
//!     │                                 cache, users, containers, entry/exit
//!     │                                 pairing)                [decoder]
//!     ▼
//!  bus: one bounded queue per subscriber, Block or Drop policy      [bus]
//!     ├─► detection thread: Sigma rules (picket-rules) ─► alerts  [detect]
//!     ├─► events writer / recorder (JSON lines)
//!     └─► FIM trigger ─► re-hash critical files ─► fim_change events [fim]
//!  auth module: auth log files / syslog socket ─► auth events      [auth]
//! ```
//!
//! - [`config`]: TOML in two stages; `picketd generate-config` prints the default.
//! - [`kernel`]: the only code that touches bpf(2), tracefs and BTF.
//! - [`sensor`]: the thread that owns the loaded probes and drains their rings.
//! - [`decoder`]: sans-IO record → event translation and enrichment.
//! - [`bundles`]: signed rule bundles from the fleet: verify, compile,
//!   persist, swap, acknowledge.
//! - [`enroll`]: `picketd enroll`, joining the fleet with a one-time token.
//! - [`event`]: the normalized event and its Sigma field mapping.
//! - [`runtime`]: modules with a lifecycle (start, reload on SIGHUP, stop)
//!   wired into the bus; live or replayed sources.
//! - [`telemetry`]: Prometheus metrics.
//!
//! Without root or eBPF the same pipeline runs on a recording:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use picket_appliance::{config::Config, runtime};
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! let opts = runtime::RunOptions {
//!     source: runtime::Source::Replay("events.jsonl".into()),
//!     record: None,
//!     config_path: None,
//!     forward_replay: false,
//! };
//! let report = runtime::run(Config::default_config(), opts, shutdown).await?;
//! println!("{} events, {} alerts", report.events, report.alerts);
//! # Ok(()) }
//! ```

pub mod auth;
pub mod bundles;
pub mod bus;
pub mod config;
pub mod decoder;
pub mod detect;
pub mod enrich;
pub mod enroll;
pub mod event;
pub mod fim;
pub mod forward;
pub mod kernel;
pub mod runtime;
pub mod sensor;
pub mod telemetry;
