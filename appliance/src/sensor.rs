//! The sensor thread: drains every kernel module's ring buffer, decodes,
//! enriches and publishes.
//!
//! One plain OS thread waits on all rings with epoll. On each wake-up it
//! drains the process module's ring first (so an exec is in the process
//! cache before the file and network records of the same process are
//! decoded), then the others. Publishing waits on back-pressured
//! subscribers, which is how a slow detector turns into counted kernel-side
//! losses instead of unbounded memory. The thread owns the loaded probes:
//! module start, stop and reload are messages to it, and when it ends every
//! program is detached.

use crate::bus::Bus;
use crate::decoder::{boottime_ns, Decoder};
use crate::kernel::{KernelError, LoadedProbes, ProbeSettings};
use crate::telemetry::{Counter, Registry};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A request to the sensor thread.
#[derive(Debug)]
pub enum Control {
    /// Start draining a module whose probes the caller loaded and attached
    /// (loading runs the verifier, which takes seconds; it must not stall
    /// the rings of modules already running).
    Start(Box<LoadedProbes>),
    /// Stop (detach) a module; the reply comes once its probes are detached.
    Stop(&'static str, mpsc::Sender<()>),
    /// Rewrite a running module's settings maps.
    Reload(
        &'static str,
        ProbeSettings,
        mpsc::Sender<Result<(), KernelError>>,
    ),
}

struct ModuleState {
    probes: LoadedProbes,
    published: Counter,
    invalid: Counter,
    lost: Arc<AtomicU64>,
}

/// Shared handles the sensor reports through.
#[derive(Debug, Clone)]
pub struct SensorHandles {
    /// Metric registry.
    pub registry: Registry,
    /// Pause after a drain that found records (see `bus.coalesce_us`).
    pub coalesce: Duration,
    /// Set to stop the thread.
    pub stop: Arc<AtomicBool>,
    /// Records lost by every module together since picketd started
    /// (reported in heartbeats).
    pub lost_total: Arc<AtomicU64>,
}

/// Runs the sensor loop until `handles.stop` is set.
///
/// # Panics
/// Never on input: records that fail to decode are counted and skipped.
pub fn run(
    bus: &Bus,
    mut decoder: Decoder,
    handles: &SensorHandles,
    control: &mpsc::Receiver<Control>,
) {
    // SAFETY: epoll_create1 has no pointer arguments.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        tracing::error!("epoll_create1 failed: {}", std::io::Error::last_os_error());
        return;
    }
    let mut modules: Vec<ModuleState> = Vec::new();
    let mut events = Vec::with_capacity(256);
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 8];
    let mut last_housekeeping = std::time::Instant::now();
    let registry = &handles.registry;
    let ring_latency = Arc::new(crate::telemetry::Histogram::default());
    {
        let h = ring_latency.clone();
        registry.gauge(
            "picket_ring_latency_seconds",
            "time from the probe writing a record to the sensor reading it (estimated quantiles)",
            move |v| {
                for q in [0.5, 0.99] {
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

    while !handles.stop.load(Ordering::Relaxed) {
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Start(probes) => {
                    let name = probes.module;
                    modules.retain(|m| m.probes.module != name);
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: 0,
                    };
                    // SAFETY: valid epoll fd, ring fd and event pointer.
                    unsafe {
                        libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, probes.ring_fd(), &raw mut ev)
                    };
                    let lost = Arc::new(AtomicU64::new(0));
                    let lost_gauge = lost.clone();
                    registry.gauge(
                        "picket_kernel_records_lost_total",
                        "records a probe could not write because its ring buffer was full",
                        move |v| {
                            v.push((
                                crate::telemetry::label("module", name),
                                lost_gauge.load(Ordering::Relaxed) as f64,
                            ));
                        },
                    );
                    modules.push(ModuleState {
                        probes: *probes,
                        published: registry.counter(
                            "picket_events_published_total",
                            "events a module put on the bus",
                            &[("module", name)],
                        ),
                        invalid: registry.counter(
                            "picket_records_invalid_total",
                            "kernel records user space could not decode",
                            &[("module", name)],
                        ),
                        lost,
                    });
                    // the process ring is drained first
                    modules.sort_by_key(|m| m.probes.module != "process");
                }
                Control::Stop(name, reply) => {
                    if let Some(m) = modules.iter().find(|m| m.probes.module == name) {
                        let now = m.probes.lost();
                        let before = m.lost.swap(now, Ordering::Relaxed);
                        handles
                            .lost_total
                            .fetch_add(now.saturating_sub(before), Ordering::Relaxed);
                        // SAFETY: valid epoll fd and ring fd.
                        unsafe {
                            libc::epoll_ctl(
                                epfd,
                                libc::EPOLL_CTL_DEL,
                                m.probes.ring_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                    modules.retain(|m| m.probes.module != name);
                    let _ = reply.send(());
                }
                Control::Reload(name, settings, reply) => {
                    let r = match modules.iter_mut().find(|m| m.probes.module == name) {
                        Some(m) => m.probes.reload(&settings),
                        None => Ok(()),
                    };
                    let _ = reply.send(r);
                }
            }
        }

        let timeout_ms = if modules.is_empty() { 50 } else { 100 };
        // SAFETY: `ready` is a valid buffer of 8 events.
        let n = unsafe { libc::epoll_wait(epfd, ready.as_mut_ptr(), 8, timeout_ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::error!("epoll_wait: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(100));
        }
        let read = drain_all(&mut modules, &mut decoder, &mut events, bus, &ring_latency);
        if read > 0 && !handles.coalesce.is_zero() {
            std::thread::sleep(handles.coalesce);
        }

        if last_housekeeping.elapsed() >= Duration::from_millis(100) {
            last_housekeeping = std::time::Instant::now();
            decoder.expire(boottime_ns(), &mut events);
            publish(bus, &mut events, None);
            for m in &modules {
                let now = m.probes.lost();
                let before = m.lost.swap(now, Ordering::Relaxed);
                if now > before {
                    handles
                        .lost_total
                        .fetch_add(now - before, Ordering::Relaxed);
                    tracing::warn!(
                        module = m.probes.module,
                        lost = now - before,
                        total = now,
                        "kernel ring buffer full: records lost (raise ring_buffer_bytes, or filter more)"
                    );
                }
            }
        }
    }
    // what is already in the rings still counts
    drain_all(&mut modules, &mut decoder, &mut events, bus, &ring_latency);
    for m in &modules {
        let now = m.probes.lost();
        let before = m.lost.swap(now, Ordering::Relaxed);
        handles
            .lost_total
            .fetch_add(now.saturating_sub(before), Ordering::Relaxed);
    }
    drop(modules);
    // SAFETY: closing our own fd.
    unsafe { libc::close(epfd) };
}

fn drain_all(
    modules: &mut [ModuleState],
    decoder: &mut Decoder,
    events: &mut Vec<crate::event::Event>,
    bus: &Bus,
    ring_latency: &crate::telemetry::Histogram,
) -> usize {
    let mut read = 0;
    for m in modules.iter_mut() {
        let name = m.probes.module;
        let mut batch = 0;
        let ring = m.probes.ring();
        while let Some(item) = ring.next() {
            match picket_probes::decode(&item) {
                Ok(rec) => {
                    ring_latency.record_ns(boottime_ns().saturating_sub(rec.header.ts_ns));
                    decoder.push(name, rec, events);
                }
                Err(e) => {
                    m.invalid.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(module = name, "invalid record: {e}");
                }
            }
            drop(item);
            batch += 1;
            read += 1;
            // bound the latency of other rings under a flood
            if batch >= 4096 {
                break;
            }
            if events.len() >= crate::bus::MAX_BATCH {
                publish(bus, events, Some(&m.published));
            }
        }
        publish(bus, events, Some(&m.published));
    }
    read
}

fn publish(bus: &Bus, events: &mut Vec<crate::event::Event>, counter: Option<&Counter>) {
    if let Some(c) = counter {
        c.fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    if !events.is_empty() {
        bus.publish_batch_blocking(std::mem::take(events));
    }
}
