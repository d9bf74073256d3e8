//! Offline-first alert delivery for picketd: a durable spool on the
//! appliance's disk and an MQTT uplink that drains it to the fleet broker.
//!
//! ```text
//!  detection ──push()──▶ Spool (sled, disk budget) ──take()/ack()──▶ Uplink ──MQTT/TLS 1.3──▶ broker
//!   (never waits          │ durable watermark: only                 │ Session (sans-IO):
//!    for the network)     │ fsync'ed records are sent               │ batching, window, acks,
//!                         │ evicts lowest level, oldest             │ back-off, resend on reconnect
//!                         │ first; counts it                        │ rumqttc event loop (thin)
//! ```
//!
//! - [`spool`]: the durable queue. Detection calls [`Spool::push`], which
//!   writes to sled and returns; it never touches the network. Its module doc
//!   states the invariants, the flush policy, what a power cut can lose, the
//!   eviction order and how corrupt files are recovered.
//! - [`uplink`]: [`run`] drives a sans-IO [`uplink::Session`] (batching by
//!   count and delay, in-flight window, PUBACK → spool ack, jittered
//!   exponential back-off, rewind-and-resend after reconnect) around a thin
//!   rumqttc loop: TLS 1.3 only, the fleet CA pinned, a client certificate,
//!   a persistent session, an explicit maximum packet size, QoS 1
//!   publishes of signed, deflate-compressed `picket-proto` alert batches to
//!   the device's alerts topic, and QoS 0 heartbeats with the spool's depth,
//!   bytes and evictions.
//! - [`uplink::codec`]: batch frames built from spool records without
//!   re-encoding, compressed with the protocol's DEFLATE flag (docs/WIRE.md
//!   §1.1, implemented by `picket-proto`), and the matching decoder for the
//!   receiving side.
//! - [`sample`]: typical alerts, for tests, benchmarks and the demo producer.
//!
//! Delivery is at least once: an alert is deleted only after the broker's
//! PUBACK for the batch that carried it, and a batch that was not acknowledged
//! is sent again after a reconnect, so the backend de-duplicates on the
//! alert id (docs/WIRE.md §4.1). Sequence numbers are per device, strictly
//! increasing and never reused; a gap means an eviction.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use picket_proto::identity::DeviceIdentity;
//! use picket_uplink::{sample, Spool, UplinkConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // On start: the spool (1 GiB budget) and the device identity.
//! let spool = Spool::open("/var/lib/picket/spool", 1 << 30)?;
//! if spool.recovery().quarantined.is_some() || spool.recovery().corrupt_records > 0 {
//!     eprintln!("spool recovered: {:?}", spool.recovery());
//! }
//! let identity = DeviceIdentity::load_or_generate("/var/lib/picket/device.key".as_ref())?;
//!
//! // The uplink runs as its own task until shutdown.
//! let mut config = UplinkConfig::new(
//!     "fleet.example.net",
//!     8883,
//!     std::fs::read("/etc/picket/fleet-ca.pem")?,
//!     std::fs::read("/etc/picket/device.pem")?,
//!     std::fs::read("/etc/picket/device-key.pem")?,
//!     identity,
//! );
//! config.batch_delay = Duration::from_millis(500);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let uplink = picket_uplink::Uplink::new(config, spool.clone())?;
//! let stats = uplink.stats_handle();
//! let task = tokio::spawn(uplink.run(async {
//!     let _ = stopped.await;
//! }));
//!
//! // Detection: push and move on, whatever the network does.
//! let alert = sample::process_alert(0, sample::random_id());
//! let pushed = spool.push_alert(&alert.alert())?;
//! println!("alert spooled as seq {}", pushed.seq);
//!
//! // Metrics and heartbeats read the same figures.
//! println!("{:?}", stats.snapshot());
//!
//! let _ = stop.send(());
//! task.await??;
//! # Ok(())
//! # }
//! ```
//!
//! The spool on its own, with nothing but a directory:
//!
//! ```
//! use picket_uplink::{sample, Spool};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let spool = Spool::open(dir.path().join("spool"), 1 << 20)?;
//! let s = sample::process_alert(1, sample::random_id());
//! let first = spool.push_alert(&s.alert())?;
//! spool.push_alert(&s.alert())?;
//! spool.flush()?; // the uplink only ever sends durable records
//!
//! let batch = spool.take(256, usize::MAX)?; // in sequence order
//! assert_eq!(batch.records()[0].seq, first.seq);
//! // ... publish, wait for the PUBACK, then:
//! spool.ack(&batch)?;
//! assert_eq!(spool.stats().depth, 0);
//! # Ok(())
//! # }
//! ```

pub mod sample;
pub mod spool;
pub mod uplink;
pub use uplink::tls;

pub use spool::{
    Batch, FlushPolicy, NewAlert, Pushed, Record, RecoveryReport, Spool, SpoolConfig, SpoolError,
    SpoolStats,
};
pub use uplink::{
    run, Compression, ConfigError, Downlink, FleetLink, HeartbeatExtras, HeartbeatSource, Stats,
    StatsHandle, Uplink, UplinkConfig, UplinkError, UplinkStats, Uplinked,
};
