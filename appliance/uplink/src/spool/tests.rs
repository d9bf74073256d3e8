//! Model-based tests: the sled spool against an in-memory model, with
//! crash-and-reopen steps (style §15).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use picket_proto::Level;
use proptest::prelude::*;

use super::*;
use crate::sample;

#[derive(Debug, Clone)]
enum Op {
    Push { level: u8, variant: u16 },
    Take { n: usize },
    AckOldest,
    Rewind,
    Flush,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..5, any::<u16>()).prop_map(|(level, variant)| Op::Push { level, variant }),
        3 => (1usize..20).prop_map(|n| Op::Take { n }),
        3 => Just(Op::AckOldest),
        1 => Just(Op::Rewind),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
    ]
}

/// What the model keeps per record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct M {
    level: usize,
    id: AlertId,
    payload: Vec<u8>,
    cost: u64,
}

#[derive(Debug, Default, Clone)]
struct Model {
    records: BTreeMap<u64, M>,
    next_seq: u64,
    evictions: [u64; 5],
    cursor: u64,
    durable: u64,
    budget: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.records.values().map(|m| m.cost).sum()
    }

    /// The documented policy, written as plainly as possible.
    fn push(&mut self, m: M) -> (u64, bool, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let total = self.bytes();
        if total + m.cost <= self.budget {
            self.records.insert(seq, m);
            return (seq, true, 0);
        }
        let reclaimable: u64 = self
            .records
            .values()
            .filter(|r| r.level <= m.level)
            .map(|r| r.cost)
            .sum();
        if self.budget - (total - reclaimable) < m.cost {
            self.evictions[m.level] += 1;
            return (seq, false, 0);
        }
        let mut victims: Vec<(usize, u64)> = self
            .records
            .iter()
            .filter(|(_, r)| r.level <= m.level)
            .map(|(s, r)| (r.level, *s))
            .collect();
        victims.sort_unstable();
        let mut evicted = 0;
        for (l, s) in victims {
            if self.bytes() + m.cost <= self.budget {
                break;
            }
            self.records.remove(&s);
            self.evictions[l] += 1;
            evicted += 1;
        }
        self.records.insert(seq, m);
        (seq, true, evicted)
    }

    fn take(&mut self, n: usize) -> Vec<u64> {
        if self.cursor >= self.durable {
            return Vec::new();
        }
        let out: Vec<u64> = self
            .records
            .range(self.cursor + 1..=self.durable)
            .take(n)
            .map(|(s, _)| *s)
            .collect();
        self.cursor = if out.len() < n {
            self.cursor.max(self.durable)
        } else {
            out.last().copied().unwrap_or(self.cursor)
        };
        out
    }
}

fn config(dir: &std::path::Path, budget: u64) -> SpoolConfig {
    // A flush interval longer than any test: durability only by `Flush`.
    SpoolConfig::new(dir.join("spool"), budget)
        .flush(FlushPolicy::Interval(Duration::from_secs(3600)))
}

fn config_at(path: &std::path::Path, budget: u64) -> SpoolConfig {
    SpoolConfig::new(path, budget).flush(FlushPolicy::Interval(Duration::from_secs(3600)))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else if let Ok(bytes) = std::fs::read(&p) {
            std::fs::write(&dest, bytes).unwrap();
        }
    }
}

fn payloads() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            sample::process_alert(i, sample::id_for(0, i))
                .payload()
                .unwrap()
        })
        .collect();
    // Two ~16 KiB alerts: enough of them fill sled's write buffers, so that
    // crash images catch background writes, torn or not.
    for fill in [b'a', b'b'] {
        let value = String::from_utf8(vec![fill; 1024]).unwrap();
        let mut fields = picket_proto::heapless::Vec::new();
        for _ in 0..16 {
            fields
                .push(picket_proto::Field {
                    key: picket_proto::BoundedStr::new("k").unwrap(),
                    value: picket_proto::BoundedStr::new(&value).unwrap(),
                })
                .unwrap();
        }
        let sample = sample::process_alert(0, sample::id_for(0, 0));
        let big = picket_proto::Alert {
            event: picket_proto::Event::Fields(fields),
            ..sample.alert()
        };
        v.push(encode_alert_payload(&big).unwrap());
    }
    v
}

fn check(spool: &Spool, model: &Model) {
    let stats = spool.stats();
    assert_eq!(stats.depth, model.records.len() as u64, "depth");
    assert_eq!(stats.bytes, model.bytes(), "bytes");
    assert!(stats.bytes <= model.budget, "budget");
    assert_eq!(stats.evictions_by_level, model.evictions, "evictions");
    assert_eq!(stats.next_seq, model.next_seq, "next_seq");
    assert_eq!(stats.durable_seq, model.durable, "durable");
    let mut by_level = [0u64; 5];
    for m in model.records.values() {
        by_level[m.level] += 1;
    }
    assert_eq!(stats.depth_by_level, by_level);
}

/// Everything in the spool, read with a fresh cursor, then the cursor restored
/// by a rewind (callers only use this right after a reopen).
fn contents(spool: &Spool) -> BTreeMap<u64, M> {
    spool.rewind();
    let b = spool.take(usize::MAX, usize::MAX).unwrap();
    spool.rewind();
    b.records()
        .iter()
        .map(|r| {
            (
                r.seq,
                M {
                    level: level_index(r.level),
                    id: r.id,
                    payload: r.payload.clone(),
                    cost: r.cost(),
                },
            )
        })
        .collect()
}

fn run(ops: &[Op], budget: u64) {
    let dir = tempfile::tempdir().unwrap();
    let payloads = payloads();
    let mut spool = Spool::open_with(config(dir.path(), budget)).unwrap();
    let mut model = Model {
        next_seq: 1,
        budget,
        ..Model::default()
    };
    let mut taken: VecDeque<Batch> = VecDeque::new();
    // Model states since the last flush: a crash may leave any of them.
    let mut history: Vec<Model> = vec![model.clone()];
    let mut path = dir.path().join("spool");
    let mut crashes = 0;
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Push { level, variant } => {
                let payload = &payloads[usize::from(variant) % payloads.len()];
                let id = sample::id_for(7, i as u64);
                let level = level_from(level);
                let m = M {
                    level: level_index(level),
                    id,
                    payload: payload.clone(),
                    cost: cost_of(payload.len()),
                };
                let new = NewAlert {
                    id,
                    level,
                    timestamp_ms: 5,
                    payload,
                };
                if m.cost > budget {
                    assert!(matches!(
                        spool.push(new),
                        Err(SpoolError::ExceedsBudget { .. })
                    ));
                    continue;
                }
                let expected = model.push(m);
                let got = spool.push(new).unwrap();
                assert_eq!((got.seq, got.stored, got.evicted), expected, "push {i}");
            }
            Op::Take { n } => {
                let expected = model.take(n);
                let got = spool.take(n, usize::MAX).unwrap();
                let seqs: Vec<u64> = got.records().iter().map(|r| r.seq).collect();
                assert_eq!(seqs, expected, "take {i}");
                for r in got.records() {
                    let m = &model.records[&r.seq];
                    assert_eq!((r.id, &r.payload), (m.id, &m.payload));
                }
                if !got.is_empty() {
                    taken.push_back(got);
                }
            }
            Op::AckOldest => {
                if let Some(b) = taken.pop_front() {
                    spool.ack(&b).unwrap();
                    for r in b.records() {
                        model.records.remove(&r.seq);
                    }
                }
            }
            Op::Rewind => {
                spool.rewind();
                model.cursor = 0;
            }
            Op::Flush => {
                spool.flush().unwrap();
                model.durable = model.next_seq - 1;
                history.clear();
            }
            Op::Crash => {
                // What a kill -9 leaves: the files as they are now, unflushed
                // buffers lost, a background write possibly torn. The copy is
                // that image; the original is abandoned.
                crashes += 1;
                let image = dir.path().join(format!("crash{crashes}"));
                copy_dir(&path, &image);
                drop(spool);
                spool = Spool::open_with(config_at(&image, budget)).unwrap();
                path = image;
                let got = contents(&spool);
                let stats = spool.stats();
                let matched = history
                    .iter()
                    .rev()
                    .find(|m| {
                        m.records == got
                            && m.next_seq == stats.next_seq
                            && m.evictions == stats.evictions_by_level
                    })
                    .cloned();
                let Some(m) = matched else {
                    panic!(
                        "op {i}: state after crash is no prefix since the last flush: \
                         {} records, next_seq {}, evictions {:?}; history next_seqs {:?}",
                        got.len(),
                        stats.next_seq,
                        stats.evictions_by_level,
                        history.iter().map(|m| m.next_seq).collect::<Vec<_>>()
                    );
                };
                model = m;
                model.cursor = 0;
                model.durable = model.next_seq - 1;
                taken.clear();
                history.clear();
            }
            Op::Reopen => {
                // Dropping without an explicit flush: what sled persisted on
                // its way down must be exactly the model (a prefix of the
                // operations that includes all of them, since drop flushes).
                drop(spool);
                spool = Spool::open_with(config_at(&path, budget)).unwrap();
                assert_eq!(spool.recovery().corrupt_records, 0);
                model.cursor = 0;
                model.durable = model.next_seq - 1;
                taken.clear();
                assert_eq!(contents(&spool), model.records, "contents after reopen");
                history.clear();
            }
        }
        check(&spool, &model);
        history.push(model.clone());
    }
}

fn level_from(l: u8) -> Level {
    record::level_from_index(l % 5).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn spool_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        // Roomy: eviction is rare.
        run(&ops, 1 << 20);
    }

    #[test]
    fn spool_matches_model_under_pressure(ops in proptest::collection::vec(op(), 1..200), slots in 2u64..12) {
        // A budget of a few alerts: eviction on most pushes.
        run(&ops, slots * 260);
    }
}

#[test]
fn sequence_numbers_survive_acks_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample::process_alert(1, sample::id_for(1, 1))
        .payload()
        .unwrap();
    let s = sample::process_alert(1, sample::id_for(1, 1));
    {
        let spool = Spool::open_with(config(dir.path(), 1 << 20)).unwrap();
        for _ in 0..10 {
            spool.push(s.new_alert(&p)).unwrap();
        }
        spool.flush().unwrap();
        let b = spool.take(100, usize::MAX).unwrap();
        assert_eq!(b.len(), 10);
        spool.ack(&b).unwrap();
        assert_eq!(spool.stats().depth, 0);
    }
    let spool = Spool::open_with(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(spool.push(s.new_alert(&p)).unwrap().seq, 11);
}

#[test]
fn refuses_bad_payloads_and_oversized_records() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_with(config(dir.path(), 1000)).unwrap();
    let s = sample::process_alert(1, sample::id_for(1, 1));
    assert!(matches!(
        spool.push(s.new_alert(b"\xff\xff\xff")),
        Err(SpoolError::InvalidPayload(_))
    ));
    let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        spool.push(s.new_alert(&big)),
        Err(SpoolError::PayloadTooLarge { .. })
    ));
    let tiny = Spool::open_with(config(&dir.path().join("t"), 100)).unwrap();
    let p = s.payload().unwrap();
    assert!(matches!(
        tiny.push(s.new_alert(&p)),
        Err(SpoolError::ExceedsBudget { .. })
    ));
    assert_eq!(
        spool.stats().next_seq,
        1,
        "refused pushes use no sequence number"
    );
}

#[test]
fn batches_respect_the_wire_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_with(config(dir.path(), 1 << 20)).unwrap();
    let s = sample::process_alert(1, sample::id_for(1, 1));
    let p = s.payload().unwrap();
    for _ in 0..10 {
        spool.push(s.new_alert(&p)).unwrap();
    }
    spool.flush().unwrap();
    let one = p.len() + 37;
    assert_eq!(spool.take(100, one * 3 + 1).unwrap().len(), 3);
    // A single record larger than the limit is still taken alone.
    assert_eq!(spool.take(100, 1).unwrap().len(), 1);
    assert_eq!(spool.take(100, usize::MAX).unwrap().len(), 6);
}

#[test]
fn a_push_after_a_quiet_interval_is_flushed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_with(config(dir.path(), 1 << 20)).unwrap();
    let p = sample::process_alert(1, sample::id_for(1, 1))
        .payload()
        .unwrap();
    let s = sample::process_alert(1, sample::id_for(1, 1));
    let durable = spool.subscribe();
    // within the (hour-long) interval of the last flush: it waits for the tick
    spool.push(s.new_alert(&p)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(*durable.borrow(), 0, "flushed before its interval");
    // the last flush an interval ago: the next push wakes the flusher
    spool
        .inner
        .kick
        .last_flush_ms
        .store(-3_600_001, Ordering::Relaxed);
    let seq = spool.push(s.new_alert(&p)).unwrap().seq;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while *durable.borrow() < seq {
        assert!(
            std::time::Instant::now() < deadline,
            "the push did not wake the flusher"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
