//! The event bus: every module publishes, every stage subscribes.
//!
//! Each subscriber has its own bounded queue and a policy for a full queue:
//!
//! - [`Policy::Block`]: the publisher waits. Detection subscribes this way,
//!   so a slow detector slows the sensor thread, the kernel ring buffers fill
//!   and the kernel counts what it could not write: loss is explicit and
//!   counted at exactly one place, never silent.
//! - [`Policy::Drop`]: the events are dropped for this subscriber only and
//!   its drop counter goes up (outputs and recorders that must not stall
//!   detection).
//!
//! Events travel in batches (one per ring drain, at most [`MAX_BATCH`]
//! events), so a burst costs one queue operation and at most one thread
//! wake-up per batch rather than per event. Queues are sized in events:
//! a subscriber holds at most `capacity` events (rounded up to whole
//! batches), and depth, deliveries and drops are counted in events.
//!
//! Pulsar shares one 1,000-event broadcast channel between all modules and
//! logs a warning when a receiver lags; here each subscriber's depth,
//! deliveries and drops are separate metrics.

use crate::event::Event;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most events in one batch.
pub const MAX_BATCH: usize = 64;

/// A batch of events, shared by all subscribers.
pub type Batch = Arc<Vec<Event>>;

/// What a full subscriber queue does to the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait for room (back-pressure).
    Block,
    /// Drop for this subscriber and count it.
    Drop,
}

/// Counters of one subscriber, in events.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    /// Events queued for it.
    pub delivered: AtomicU64,
    /// Events dropped because its queue was full.
    pub dropped: AtomicU64,
    /// Events waiting in its queue.
    pub depth: AtomicUsize,
}

#[derive(Debug)]
struct Subscriber {
    name: &'static str,
    policy: Policy,
    tx: mpsc::Sender<Batch>,
    stats: Arc<SubscriberStats>,
}

/// The receiving side of one subscriber.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Batch>,
    stats: Arc<SubscriberStats>,
}

impl Subscription {
    fn took(&self, b: Option<Batch>) -> Option<Batch> {
        if let Some(b) = &b {
            self.stats.depth.fetch_sub(b.len(), Ordering::Relaxed);
        }
        b
    }

    /// The next batch; `None` once every publisher is gone.
    pub async fn recv(&mut self) -> Option<Batch> {
        let b = self.rx.recv().await;
        self.took(b)
    }

    /// The next batch, from a plain thread.
    pub fn blocking_recv(&mut self) -> Option<Batch> {
        let b = self.rx.blocking_recv();
        self.took(b)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// A subscriber's view for metrics.
#[derive(Debug, Clone)]
pub struct SubscriberInfo {
    /// Name.
    pub name: &'static str,
    /// Counters.
    pub stats: Arc<SubscriberStats>,
}

/// Builds a bus; subscribers are fixed once it is built.
#[derive(Debug)]
pub struct BusBuilder {
    batches: usize,
    subscribers: Vec<Subscriber>,
}

impl BusBuilder {
    /// Queues of about `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        BusBuilder {
            batches: capacity.div_ceil(MAX_BATCH).max(2),
            subscribers: Vec::new(),
        }
    }

    /// Adds a subscriber and returns its queue.
    pub fn subscribe(&mut self, name: &'static str, policy: Policy) -> Subscription {
        let (tx, rx) = mpsc::channel(self.batches);
        let stats = Arc::new(SubscriberStats::default());
        self.subscribers.push(Subscriber {
            name,
            policy,
            tx,
            stats: stats.clone(),
        });
        Subscription { rx, stats }
    }

    /// The bus.
    pub fn build(self) -> Bus {
        Bus {
            inner: Arc::new(self.subscribers),
            published: Arc::default(),
        }
    }
}

/// The publishing side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    inner: Arc<Vec<Subscriber>>,
    published: Arc<AtomicU64>,
}

impl Bus {
    /// Publishes one event from async code.
    pub async fn publish(&self, event: Event) {
        self.publish_batch(vec![event]).await;
    }

    /// Publishes a batch from async code.
    pub async fn publish_batch(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch = Arc::new(events);
        self.published
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for s in self.inner.iter() {
            match s.policy {
                Policy::Block => {
                    s.stats.depth.fetch_add(batch.len(), Ordering::Relaxed);
                    if s.tx.send(batch.clone()).await.is_ok() {
                        s.stats
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    } else {
                        s.stats.depth.fetch_sub(batch.len(), Ordering::Relaxed);
                    }
                }
                Policy::Drop => s.try_deliver(&batch),
            }
        }
    }

    /// Publishes a batch from a plain thread (the sensor), waiting on
    /// blocking subscribers. Must not be called from inside the async runtime.
    pub fn publish_batch_blocking(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch = Arc::new(events);
        self.published
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for s in self.inner.iter() {
            match s.policy {
                Policy::Block => {
                    s.stats.depth.fetch_add(batch.len(), Ordering::Relaxed);
                    if s.tx.blocking_send(batch.clone()).is_ok() {
                        s.stats
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    } else {
                        s.stats.depth.fetch_sub(batch.len(), Ordering::Relaxed);
                    }
                }
                Policy::Drop => s.try_deliver(&batch),
            }
        }
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// A handle for metrics that does not keep the bus open: queues close
    /// (and their consumers finish) when the last [`Bus`] is dropped, even
    /// while a metrics gauge still holds this.
    pub fn stats(&self) -> BusStats {
        BusStats(Arc::downgrade(&self.inner))
    }

    /// Per-subscriber counters.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        subscriber_info(&self.inner)
    }
}

/// See [`Bus::stats`].
#[derive(Debug, Clone)]
pub struct BusStats(std::sync::Weak<Vec<Subscriber>>);

impl BusStats {
    /// Per-subscriber counters; empty once the bus is gone.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.0
            .upgrade()
            .map(|s| subscriber_info(&s))
            .unwrap_or_default()
    }
}

fn subscriber_info(subs: &[Subscriber]) -> Vec<SubscriberInfo> {
    subs.iter()
        .map(|s| SubscriberInfo {
            name: s.name,
            stats: s.stats.clone(),
        })
        .collect()
}

impl Subscriber {
    fn try_deliver(&self, batch: &Batch) {
        let n = batch.len();
        self.stats.depth.fetch_add(n, Ordering::Relaxed);
        match self.tx.try_send(batch.clone()) {
            Ok(()) => {
                self.stats.delivered.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.depth.fetch_sub(n, Ordering::Relaxed);
                self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
            // a stopped subscriber is not a loss to report
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.depth.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Process};

    fn ev(n: u32) -> Event {
        Event {
            time_ns: 0,
            module: "test".into(),
            process: Process {
                pid: n,
                ..Process::default()
            },
            kind: Kind::ProcessFork { child_pid: n },
        }
    }

    #[tokio::test]
    async fn drop_policy_counts_and_block_policy_waits() {
        // two batches of room per subscriber
        let mut b = BusBuilder::new(2 * MAX_BATCH);
        let mut slow = b.subscribe("slow", Policy::Drop);
        let mut det = b.subscribe("detect", Policy::Block);
        let bus = b.build();
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(batch) = det.recv().await {
                got.extend(batch.iter().map(|e| e.process.pid));
                if got.len() == 6 {
                    break;
                }
            }
            got
        });
        for i in 0..5 {
            bus.publish(ev(i)).await;
        }
        bus.publish_batch(vec![]).await;
        bus.publish_batch(vec![ev(5)]).await;
        assert_eq!(
            consumer.await.unwrap(),
            vec![0, 1, 2, 3, 4, 5],
            "nothing lost under back-pressure"
        );
        let info = bus.subscribers();
        let slow_info = info.iter().find(|s| s.name == "slow").unwrap();
        assert_eq!(slow_info.stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(slow_info.stats.dropped.load(Ordering::Relaxed), 4);
        assert_eq!(slow_info.stats.depth.load(Ordering::Relaxed), 2);
        assert_eq!(slow.recv().await.unwrap()[0].process.pid, 0);
        assert_eq!(slow_info.stats.depth.load(Ordering::Relaxed), 1);
        assert_eq!(bus.published(), 6);
    }
}
