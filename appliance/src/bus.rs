//! The event bus: every module publishes, every stage subscribes.
//!
//! Each subscriber has its own bounded queue and a policy for a full queue:
//!
//! - [`Policy::Block`]: the publisher waits. Detection subscribes this way,
//!   so a slow detector slows the sensor thread, the kernel ring buffers fill
//!   and the kernel counts what it could not write: loss is explicit and
//!   counted at exactly one place, never silent.
//! - [`Policy::Drop`]: the event is dropped for this subscriber only and its
//!   drop counter goes up (outputs and recorders that must not stall
//!   detection).
//!
//! Pulsar shares one 1,000-event broadcast channel between all modules and
//! logs a warning when a receiver lags; here each subscriber's depth,
//! deliveries and drops are separate metrics.

use crate::event::Event;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a full subscriber queue does to the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait for room (back-pressure).
    Block,
    /// Drop for this subscriber and count it.
    Drop,
}

/// Counters of one subscriber.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    /// Events queued for it.
    pub delivered: AtomicU64,
    /// Events dropped because its queue was full.
    pub dropped: AtomicU64,
}

#[derive(Debug)]
struct Subscriber {
    name: &'static str,
    policy: Policy,
    tx: mpsc::Sender<Arc<Event>>,
    stats: Arc<SubscriberStats>,
    capacity: usize,
}

/// A subscriber's view for metrics.
#[derive(Debug, Clone)]
pub struct SubscriberInfo {
    /// Name.
    pub name: &'static str,
    /// Events waiting in its queue.
    pub depth: usize,
    /// Counters.
    pub stats: Arc<SubscriberStats>,
}

/// Builds a bus; subscribers are fixed once it is built.
#[derive(Debug)]
pub struct BusBuilder {
    capacity: usize,
    subscribers: Vec<Subscriber>,
}

impl BusBuilder {
    /// Queues of `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        BusBuilder {
            capacity: capacity.max(1),
            subscribers: Vec::new(),
        }
    }

    /// Adds a subscriber and returns its queue.
    pub fn subscribe(&mut self, name: &'static str, policy: Policy) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.subscribers.push(Subscriber {
            name,
            policy,
            tx,
            stats: Arc::default(),
            capacity: self.capacity,
        });
        rx
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
    /// Publishes from async code.
    pub async fn publish(&self, event: Event) {
        let event = Arc::new(event);
        self.published.fetch_add(1, Ordering::Relaxed);
        for s in self.inner.iter() {
            match s.policy {
                Policy::Block => {
                    if s.tx.send(event.clone()).await.is_ok() {
                        s.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Policy::Drop => s.try_deliver(&event),
            }
        }
    }

    /// Publishes from a plain thread (the sensor), waiting on blocking
    /// subscribers. Must not be called from inside the async runtime.
    pub fn publish_blocking(&self, event: Event) {
        let event = Arc::new(event);
        self.published.fetch_add(1, Ordering::Relaxed);
        for s in self.inner.iter() {
            match s.policy {
                Policy::Block => {
                    if s.tx.blocking_send(event.clone()).is_ok() {
                        s.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Policy::Drop => s.try_deliver(&event),
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

    /// Per-subscriber depth and counters.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        subscriber_info(&self.inner)
    }
}

/// See [`Bus::stats`].
#[derive(Debug, Clone)]
pub struct BusStats(std::sync::Weak<Vec<Subscriber>>);

impl BusStats {
    /// Per-subscriber depth and counters; empty once the bus is gone.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.0
            .upgrade()
            .map(|s| subscriber_info(&s))
            .unwrap_or_default()
    }
}

fn subscriber_info(subs: &[Subscriber]) -> Vec<SubscriberInfo> {
    {
        subs.iter()
            .map(|s| SubscriberInfo {
                name: s.name,
                depth: s.capacity - s.tx.capacity(),
                stats: s.stats.clone(),
            })
            .collect()
    }
}

impl Subscriber {
    fn try_deliver(&self, event: &Arc<Event>) {
        match self.tx.try_send(event.clone()) {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // a stopped subscriber is not a loss to report
            Err(mpsc::error::TrySendError::Closed(_)) => {}
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
        let mut b = BusBuilder::new(2);
        let mut slow = b.subscribe("slow", Policy::Drop);
        let mut det = b.subscribe("detect", Policy::Block);
        let bus = b.build();
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(e) = det.recv().await {
                got.push(e.process.pid);
                if got.len() == 5 {
                    break;
                }
            }
            got
        });
        for i in 0..5 {
            bus.publish(ev(i)).await;
        }
        assert_eq!(
            consumer.await.unwrap(),
            vec![0, 1, 2, 3, 4],
            "nothing lost under back-pressure"
        );
        let info = bus.subscribers();
        let slow_info = info.iter().find(|s| s.name == "slow").unwrap();
        assert_eq!(slow_info.stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(slow_info.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(slow_info.depth, 2);
        assert_eq!(slow.recv().await.unwrap().process.pid, 0);
        assert_eq!(bus.published(), 5);
    }
}
