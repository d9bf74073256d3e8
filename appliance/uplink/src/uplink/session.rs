//! The uplink session as a sans-IO state machine: no sockets, clocks or disks
//! inside. The driver ([`super::run`]) feeds it the time, what the spool has
//! ready and what the MQTT client reported, and does what [`Action`] says.
//!
//! - **Batching**: a batch is sent when `batch_max_alerts` records are ready,
//!   or when the oldest ready record has waited `batch_delay`.
//! - **In-flight window**: at most `inflight_batches` publishes await their
//!   PUBACK; more wait.
//! - **Acks**: a PUBACK names a packet id; the client reports the packet id
//!   of each publish in send order ([`Session::on_publish_sent`]), so each
//!   PUBACK maps back to the ticket of the batch it acknowledges.
//! - **Resend**: on a disconnect everything in flight is forgotten; the driver
//!   rewinds the spool, which hands the unacked records out again, in order,
//!   on the next connection. A PUBACK that never came means a resend, never a
//!   loss.
//! - **Back-off**: reconnect attempts wait `min(max, initial * 2^n)` with
//!   equal jitter (a uniformly random delay in the upper half of that), so a
//!   fleet that lost its broker does not come back in lockstep. The attempt
//!   counter resets after a PUBACK or after a connection that stayed up
//!   longer than the maximum back-off.
//! - **Ack timeout**: a publish without a PUBACK for `ack_timeout` forces a
//!   reconnection (a half-open connection that keep-alive has not caught yet).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The session's tunables (see [`crate::UplinkConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Records per batch at most.
    pub batch_max_alerts: usize,
    /// Longest wait for a batch to fill.
    pub batch_delay: Duration,
    /// Publishes awaiting a PUBACK at most.
    pub inflight_batches: usize,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Heartbeat period while connected.
    pub heartbeat_interval: Duration,
    /// Longest wait for a PUBACK before reconnecting.
    pub ack_timeout: Duration,
}

/// Identifies a sent batch until its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What the driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a connection; report [`Session::on_connected`] or
    /// [`Session::on_disconnected`].
    Connect,
    /// Take a batch from the spool and publish it; report
    /// [`Session::on_batch_sent`] (or [`Session::on_nothing_ready`]).
    SendBatch,
    /// Publish a heartbeat.
    SendHeartbeat,
    /// Drop the connection (ack timeout); then report
    /// [`Session::on_disconnected`].
    Reconnect,
    /// Wait for an input, or until this instant.
    Wait(Option<Instant>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down { retry_at: Instant },
    Connecting,
    Up { since: Instant },
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    ticket: Ticket,
    pkid: Option<u16>,
    sent_at: Instant,
}

/// The uplink session state machine.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    link: Link,
    inflight: VecDeque<InFlight>,
    next_ticket: u64,
    ready_since: Option<Instant>,
    next_heartbeat: Option<Instant>,
    attempt: u32,
    rng: u64,
}

impl Session {
    /// A session that connects at once; `seed` drives the back-off jitter.
    #[must_use]
    pub fn new(cfg: SessionConfig, now: Instant, seed: u64) -> Self {
        Self {
            cfg,
            link: Link::Down { retry_at: now },
            inflight: VecDeque::new(),
            next_ticket: 0,
            ready_since: None,
            next_heartbeat: None,
            attempt: 0,
            rng: seed,
        }
    }

    /// The next thing to do, given that the spool has up to `ready` records
    /// not yet taken (an upper bound is fine: a short batch is harmless).
    pub fn poll(&mut self, now: Instant, ready: u64) -> Action {
        match self.link {
            Link::Down { retry_at } if now >= retry_at => {
                self.link = Link::Connecting;
                Action::Connect
            }
            Link::Down { retry_at } => Action::Wait(Some(retry_at)),
            Link::Connecting => Action::Wait(None),
            Link::Up { .. } => self.poll_up(now, ready),
        }
    }

    fn poll_up(&mut self, now: Instant, ready: u64) -> Action {
        let ack_deadline = self
            .inflight
            .front()
            .map(|f| f.sent_at + self.cfg.ack_timeout);
        if ack_deadline.is_some_and(|d| now >= d) {
            return Action::Reconnect;
        }
        let heartbeat = *self.next_heartbeat.get_or_insert(now);
        if now >= heartbeat {
            self.next_heartbeat = Some(now + self.cfg.heartbeat_interval);
            return Action::SendHeartbeat;
        }
        let mut deadline = min_some(ack_deadline, Some(heartbeat));
        if ready == 0 {
            self.ready_since = None;
        } else if self.inflight.len() < self.cfg.inflight_batches {
            let since = *self.ready_since.get_or_insert(now);
            let due = since + self.cfg.batch_delay;
            if ready >= self.cfg.batch_max_alerts as u64 || now >= due {
                return Action::SendBatch;
            }
            deadline = min_some(deadline, Some(due));
        }
        Action::Wait(deadline)
    }

    /// The connection is up (CONNACK received).
    pub fn on_connected(&mut self, now: Instant) {
        self.link = Link::Up { since: now };
        self.inflight.clear();
        self.ready_since = None;
        // A heartbeat right away tells the backend the device is back.
        self.next_heartbeat = Some(now);
    }

    /// The connection is gone (or could not be made). Everything in flight is
    /// forgotten; the driver must rewind the spool. Returns the delay before
    /// the next attempt.
    pub fn on_disconnected(&mut self, now: Instant) -> Duration {
        if let Link::Up { since } = self.link {
            if now.saturating_duration_since(since) > self.cfg.backoff_max {
                self.attempt = 0;
            }
        }
        let delay = self.backoff_delay();
        self.attempt = self.attempt.saturating_add(1);
        self.link = Link::Down {
            retry_at: now + delay,
        };
        self.inflight.clear();
        self.ready_since = None;
        self.next_heartbeat = None;
        delay
    }

    /// The driver took a batch and handed it to the client: returns its ticket.
    pub fn on_batch_sent(&mut self, now: Instant) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.inflight.push_back(InFlight {
            ticket,
            pkid: None,
            sent_at: now,
        });
        self.ready_since = None;
        ticket
    }

    /// The driver found nothing to take after all (the hint overcounted).
    pub fn on_nothing_ready(&mut self) {
        self.ready_since = None;
    }

    /// The client sent a QoS 1 publish with packet id `pkid` (reported in
    /// the order the batches were handed to it).
    pub fn on_publish_sent(&mut self, pkid: u16) {
        if pkid == 0 {
            // QoS 0 (heartbeats) carry no packet id.
            return;
        }
        if let Some(f) = self.inflight.iter_mut().find(|f| f.pkid.is_none()) {
            f.pkid = Some(pkid);
        }
    }

    /// A PUBACK arrived: returns the ticket of the batch it acknowledges.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Ticket> {
        let at = self.inflight.iter().position(|f| f.pkid == Some(pkid))?;
        self.attempt = 0;
        self.inflight.remove(at).map(|f| f.ticket)
    }

    /// Whether the link is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Whether the link is down (waiting to reconnect).
    #[must_use]
    pub fn is_down(&self) -> bool {
        matches!(self.link, Link::Down { .. })
    }

    /// Publishes awaiting a PUBACK.
    #[must_use]
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    fn backoff_delay(&mut self) -> Duration {
        let exp = self
            .cfg
            .backoff_initial
            .saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.cfg.backoff_max);
        // Equal jitter: uniform in [ceiling / 2, ceiling].
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let r = self.next_random();
        half + Duration::from_nanos(if span == 0 { 0 } else { r % (span + 1) })
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: plenty for jitter, and deterministic under test.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn min_some(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> SessionConfig {
        SessionConfig {
            batch_max_alerts: 10,
            batch_delay: Duration::from_millis(500),
            inflight_batches: 2,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(20),
        }
    }

    fn connected(t0: Instant) -> Session {
        let mut s = Session::new(cfg(), t0, 1);
        assert_eq!(s.poll(t0, 0), Action::Connect);
        assert_eq!(s.poll(t0, 0), Action::Wait(None));
        s.on_connected(t0);
        assert_eq!(s.poll(t0, 0), Action::SendHeartbeat);
        s
    }

    #[test]
    fn batches_by_count_and_by_delay() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        // A full batch goes at once.
        assert_eq!(s.poll(t0, 10), Action::SendBatch);
        s.on_batch_sent(t0);
        // A partial one waits for the delay.
        assert_eq!(
            s.poll(t0, 3),
            Action::Wait(Some(t0 + Duration::from_millis(500)))
        );
        let later = t0 + Duration::from_millis(499);
        assert!(matches!(s.poll(later, 3), Action::Wait(_)));
        assert_eq!(
            s.poll(t0 + Duration::from_millis(500), 3),
            Action::SendBatch
        );
    }

    #[test]
    fn window_limits_inflight_and_pubacks_free_it() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        let a = s.on_batch_sent(t0);
        s.on_publish_sent(0); // a heartbeat in between
        s.on_publish_sent(1);
        let b = s.on_batch_sent(t0);
        s.on_publish_sent(2);
        assert!(matches!(s.poll(t0, 100), Action::Wait(_)), "window full");
        assert_eq!(s.on_puback(2), Some(b));
        assert_eq!(s.on_puback(2), None, "duplicate puback");
        assert_eq!(s.poll(t0, 100), Action::SendBatch);
        assert_eq!(s.on_puback(1), Some(a));
    }

    #[test]
    fn disconnect_forgets_inflight_and_backs_off_with_jitter() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        s.on_batch_sent(t0);
        s.on_publish_sent(1);
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..12 {
            let d = s.on_disconnected(now);
            delays.push(d);
            assert_eq!(s.inflight(), 0);
            assert_eq!(s.poll(now, 5), Action::Wait(Some(now + d)));
            now += d;
            assert_eq!(s.poll(now, 5), Action::Connect);
        }
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(
            delays[11] >= Duration::from_secs(5),
            "capped, then jittered in the upper half"
        );
        // A PUBACK resets the back-off.
        s.on_connected(now);
        s.on_batch_sent(now);
        s.on_publish_sent(7);
        s.on_puback(7);
        assert!(s.on_disconnected(now) <= Duration::from_millis(100));
    }

    #[test]
    fn ack_timeout_forces_a_reconnect() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        s.on_batch_sent(t0);
        s.on_publish_sent(1);
        assert_eq!(s.poll(t0 + Duration::from_secs(20), 0), Action::Reconnect);
    }

    #[test]
    fn heartbeats_are_periodic_while_connected() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        assert_eq!(
            s.poll(t0, 0),
            Action::Wait(Some(t0 + Duration::from_secs(30)))
        );
        assert_eq!(
            s.poll(t0 + Duration::from_secs(30), 0),
            Action::SendHeartbeat
        );
    }

    #[derive(Debug, Clone)]
    enum Input {
        Tick(u16),
        Ready(u16),
        Puback(u8),
        Disconnect,
    }

    proptest! {
        /// Whatever happens, the window holds, every PUBACK maps to at most one
        /// ticket, and a ticket is never acked twice or after a disconnect.
        #[test]
        fn invariants_hold(inputs in proptest::collection::vec(prop_oneof![
            (0u16..2000).prop_map(Input::Tick),
            (0u16..30).prop_map(Input::Ready),
            (1u8..8).prop_map(Input::Puback),
            Just(Input::Disconnect),
        ], 1..200)) {
            let t0 = Instant::now();
            let mut s = Session::new(cfg(), t0, 42);
            let mut now = t0;
            let mut ready = 0u64;
            let mut pkid = 0u16;
            let mut live: std::collections::HashSet<Ticket> = Default::default();
            let mut acked: std::collections::HashSet<Ticket> = Default::default();
            for input in inputs {
                match input {
                    Input::Tick(ms) => now += Duration::from_millis(u64::from(ms)),
                    Input::Ready(n) => ready = u64::from(n),
                    Input::Puback(p) => {
                        if let Some(t) = s.on_puback(u16::from(p)) {
                            prop_assert!(live.remove(&t));
                            prop_assert!(acked.insert(t));
                        }
                    }
                    Input::Disconnect => {
                        s.on_disconnected(now);
                        live.clear();
                    }
                }
                match s.poll(now, ready) {
                    Action::Connect => s.on_connected(now),
                    Action::SendBatch => {
                        let t = s.on_batch_sent(now);
                        pkid = pkid % 7 + 1;
                        s.on_publish_sent(pkid);
                        live.insert(t);
                        ready = ready.saturating_sub(10);
                    }
                    Action::Reconnect => {
                        s.on_disconnected(now);
                        live.clear();
                    }
                    Action::SendHeartbeat | Action::Wait(_) => {}
                }
                prop_assert!(s.inflight() <= cfg().inflight_batches);
                prop_assert_eq!(s.inflight(), live.len());
            }
        }
    }
}
