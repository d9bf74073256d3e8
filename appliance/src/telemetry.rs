//! Metrics in the Prometheus text format, and logging set-up.
//!
//! Metric names follow `picket_<noun>_<verb>_total` for counters. Counters
//! are registered once at start (`Registry::counter`) and then bumped
//! through a shared atomic, so the hot path never takes a lock; gauges are
//! read when scraped.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `picket_events_published_total` | `module` | events a module put on the bus |
//! | `picket_kernel_records_lost_total` | `module` | records a probe could not write (ring full) |
//! | `picket_records_invalid_total` | `module` | records user space could not decode |
//! | `picket_bus_delivered_total` | `subscriber` | events queued for a subscriber |
//! | `picket_bus_dropped_total` | `subscriber` | events a drop-policy subscriber lost |
//! | `picket_bus_depth` | `subscriber` | events waiting |
//! | `picket_alerts_emitted_total` | | alerts written |
//! | `picket_rules_evaluated_total` | `generation` | events evaluated by each rule set (0: loaded at start; +1 per SIGHUP or bundle swap) |
//! | `picket_module_up` | `module` | 1 when running |
//! | `picket_process_resident_memory_bytes` | | RSS of picketd |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A shared counter.
pub type Counter = Arc<AtomicU64>;

type GaugeFn = Box<dyn Fn(&mut Vec<(String, f64)>) + Send + Sync>;

struct Family {
    name: String,
    help: String,
    kind: &'static str,
    series: Vec<(String, Counter)>,
    gauge: Option<GaugeFn>,
}

/// The metric registry.
#[derive(Default, Clone)]
pub struct Registry {
    families: Arc<Mutex<Vec<Family>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

impl Registry {
    /// Registers (or finds) a counter series.
    pub fn counter(&self, name: &str, help: &str, label_pairs: &[(&str, &str)]) -> Counter {
        let mut fams = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let l = labels(label_pairs);
        if let Some(f) = fams.iter_mut().find(|f| f.name == name) {
            if let Some((_, c)) = f.series.iter().find(|(k, _)| *k == l) {
                return c.clone();
            }
            let c = Counter::default();
            f.series.push((l, c.clone()));
            return c;
        }
        let c = Counter::default();
        fams.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: "counter",
            series: vec![(l, c.clone())],
            gauge: None,
        });
        c
    }

    /// Registers a gauge family computed at scrape time; the closure pushes
    /// `(labels, value)` pairs (labels as rendered by the caller, e.g. `{subscriber="x"}`).
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        f: impl Fn(&mut Vec<(String, f64)>) + Send + Sync + 'static,
    ) {
        let mut fams = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fams.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: "gauge",
            series: Vec::new(),
            gauge: Some(Box::new(f)),
        });
    }

    /// The current value of a counter series, for tests and reports.
    pub fn value(&self, name: &str, label_pairs: &[(&str, &str)]) -> Option<u64> {
        let fams = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let l = labels(label_pairs);
        fams.iter()
            .find(|f| f.name == name)
            .and_then(|f| f.series.iter().find(|(k, _)| *k == l))
            .map(|(_, c)| c.load(Ordering::Relaxed))
    }

    /// Renders every family in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let fams = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for f in fams.iter() {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for (l, c) in &f.series {
                let _ = writeln!(out, "{}{} {}", f.name, l, c.load(Ordering::Relaxed));
            }
            if let Some(g) = &f.gauge {
                let mut v = Vec::new();
                g(&mut v);
                for (l, x) in v {
                    let _ = writeln!(out, "{}{} {}", f.name, l, x);
                }
            }
        }
        out
    }
}

/// A latency histogram with log-spaced buckets (about 12% apart) from 1 µs
/// to about 100 s; lock-free to record, quantiles estimated at the bucket's
/// upper bound when scraped.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
}

const HIST_BUCKETS: usize = 160;
const HIST_GROWTH: f64 = 1.122;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        let us = (ns as f64 / 1000.0).max(1.0);
        ((us.ln() / HIST_GROWTH.ln()) as usize).min(HIST_BUCKETS - 1)
    }

    fn upper_ns(i: usize) -> f64 {
        HIST_GROWTH.powi(i32::try_from(i + 1).unwrap_or(i32::MAX)) * 1000.0
    }

    /// Records one observation.
    pub fn record_ns(&self, ns: u64) {
        self.buckets[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The q-quantile (0..=1) in nanoseconds, or `None` when empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Some(Self::upper_ns(i));
            }
        }
        Some(Self::upper_ns(HIST_BUCKETS - 1))
    }
}

/// Renders a label set for gauge closures.
pub fn label(k: &str, v: &str) -> String {
    labels(&[(k, v)])
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    // statm: size resident shared ... in pages
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page_size())
}

/// Returns freed heap memory to the system (glibc keeps it otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits glibc to two malloc arenas: picketd has a handful of threads, and
/// one arena per thread (glibc's default, up to 8 per core) multiplies idle
/// memory for no gain on a 2-core gateway.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt has no preconditions; called before threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((mut sock, _)) = conn else { continue };
        let registry = registry.clone();
        tokio::spawn(async move {
            // read the whole request head: closing with unread bytes makes
            // the kernel answer with a reset, which loses the response
            let mut buf = Vec::with_capacity(1024);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", registry.render())
            } else if req.starts_with("GET /healthz") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let r = Registry::default();
        let c = r.counter("picket_x_total", "x", &[("module", "file")]);
        c.fetch_add(3, Ordering::Relaxed);
        let same = r.counter("picket_x_total", "x", &[("module", "file")]);
        same.fetch_add(1, Ordering::Relaxed);
        r.gauge("picket_depth", "d", |v| {
            v.push((label("subscriber", "det\"x"), 2.0));
        });
        let text = r.render();
        assert!(text.contains("picket_x_total{module=\"file\"} 4"), "{text}");
        assert!(
            text.contains("picket_depth{subscriber=\"det\\\"x\"} 2"),
            "{text}"
        );
        assert_eq!(r.value("picket_x_total", &[("module", "file")]), Some(4));
        assert!(rss_bytes() > 0);
    }

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert!(h.quantile_ns(0.5).is_none());
        for _ in 0..99 {
            h.record_ns(10_000);
        }
        h.record_ns(5_000_000);
        let p50 = h.quantile_ns(0.5).unwrap();
        let p99 = h.quantile_ns(0.99).unwrap();
        let p999 = h.quantile_ns(0.999).unwrap();
        assert!((10_000.0..11_300.0).contains(&p50), "{p50}");
        assert!((10_000.0..11_300.0).contains(&p99), "{p99}");
        assert!((5_000_000.0..5_700_000.0).contains(&p999), "{p999}");
    }
}
