//! Test 4: corrupt and truncated spool files are recovered as documented in
//! `picket_uplink::spool` (valid records kept, bad ones dropped and counted,
//! an unreadable database quarantined and salvaged); opening never panics.

use std::fs::OpenOptions;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use picket_uplink::sample;
use picket_uplink::{FlushPolicy, Spool, SpoolConfig};

const N: u64 = 2_000;

fn config(path: &Path) -> SpoolConfig {
    SpoolConfig::new(path, 1 << 30)
}

/// A spool with alerts 0..N of stream 4 (seq = index + 1), flushed and closed.
fn fill(path: &Path) {
    let spool = Spool::open_with(config(path)).unwrap();
    for i in 0..N {
        let s = sample::process_alert(i, sample::id_for(4, i));
        let p = s.payload().unwrap();
        spool.push(s.new_alert(&p)).unwrap();
    }
    spool.flush().unwrap();
}

/// Every record in the spool is one that was pushed, intact; returns their seqs.
fn check_records(spool: &Spool) -> Vec<u64> {
    spool.rewind();
    let batch = spool.take(usize::MAX, usize::MAX).unwrap();
    spool.rewind();
    let mut seqs = Vec::new();
    for r in batch.records() {
        let i = r.seq - 1;
        let s = sample::process_alert(i, sample::id_for(4, i));
        assert_eq!(r.id, s.id, "seq {}", r.seq);
        assert_eq!(r.payload, s.payload().unwrap(), "seq {}", r.seq);
        assert_eq!(r.level, s.level);
        seqs.push(r.seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(spool.stats().depth, seqs.len() as u64);
    seqs
}

fn largest_file(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in walk(dir) {
        let len = std::fs::metadata(&e).unwrap().len();
        if best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, e));
        }
    }
    best.unwrap().1
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn corrupt_record_values_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    fill(&path);
    {
        // Damage three records behind the spool's back (a bit flip that sled's
        // own checksums did not see, e.g. in memory before it was written).
        let db = sled::open(&path).unwrap();
        for seq in [10u64, 500, 1999] {
            let mut k = vec![];
            for level in 0u8..5 {
                let mut key = vec![level];
                key.extend_from_slice(&seq.to_be_bytes());
                if db.get(&key).unwrap().is_some() {
                    k = key;
                }
            }
            let mut v = db.get(&k).unwrap().unwrap().to_vec();
            let n = v.len();
            v[n / 2] ^= 0x40;
            db.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }
    let spool = Spool::open_with(config(&path)).unwrap();
    let report = spool.recovery().clone();
    assert_eq!(report.corrupt_records, 3);
    assert_eq!(report.records_kept, N - 3);
    assert_eq!(report.quarantined, None);
    assert_eq!(spool.stats().corrupt_records_total, 3);
    let seqs = check_records(&spool);
    assert_eq!(seqs.len() as u64, N - 3);
    assert!(!seqs.contains(&500));
    // Sequence numbers of dropped records are not reused.
    let s = sample::process_alert(N, sample::id_for(4, N));
    let p = s.payload().unwrap();
    assert_eq!(spool.push(s.new_alert(&p)).unwrap().seq, N + 1);
    drop(spool);
    // The counter is persistent.
    let spool = Spool::open_with(config(&path)).unwrap();
    assert_eq!(spool.stats().corrupt_records_total, 3);
    assert_eq!(spool.recovery().corrupt_records, 0);
}

#[test]
fn truncated_database_files_open_with_a_valid_subset() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    fill(&pristine);
    let big = largest_file(&pristine);
    let rel = big.strip_prefix(&pristine).unwrap().to_owned();
    let len = std::fs::metadata(&big).unwrap().len();
    for (i, frac) in [0.0, 0.1, 0.5, 0.9, 0.999].into_iter().enumerate() {
        let copy = dir.path().join(format!("copy{i}"));
        copy_dir(&pristine, &copy);
        let f = OpenOptions::new()
            .write(true)
            .open(copy.join(&rel))
            .unwrap();
        f.set_len((len as f64 * frac) as u64).unwrap();
        drop(f);
        let spool = Spool::open_with(config(&copy)).unwrap();
        let seqs = check_records(&spool);
        let report = spool.recovery().clone();
        eprintln!(
            "truncated to {frac}: kept {} of {N}, {report:?}",
            seqs.len()
        );
        // Whatever survived, sequence numbers are never reused, and a loss
        // is reported, never silent.
        assert_eq!(spool.stats().next_seq, N + 1);
        if (seqs.len() as u64) < N {
            assert!(
                report.log_cut_detected || report.quarantined.is_some(),
                "{report:?}"
            );
        }
    }
}

#[test]
fn overwritten_bytes_open_with_a_valid_subset() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    fill(&pristine);
    for (i, file) in walk(&pristine).into_iter().enumerate() {
        let rel = file.strip_prefix(&pristine).unwrap().to_owned();
        let len = std::fs::metadata(&file).unwrap().len();
        for (j, at) in [0, len / 3, len / 2, len.saturating_sub(64)]
            .into_iter()
            .enumerate()
        {
            let copy = dir.path().join(format!("copy{i}-{j}"));
            copy_dir(&pristine, &copy);
            let mut f = OpenOptions::new()
                .write(true)
                .open(copy.join(&rel))
                .unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xA5; 48]).unwrap();
            drop(f);
            let spool = Spool::open_with(config(&copy)).unwrap();
            let seqs = check_records(&spool);
            let report = spool.recovery().clone();
            eprintln!(
                "{} @ {at}: kept {} of {N}, {report:?}",
                rel.display(),
                seqs.len()
            );
            assert_eq!(spool.stats().next_seq, N + 1, "{report:?}");
            if (seqs.len() as u64) < N {
                assert!(
                    report.log_cut_detected || report.quarantined.is_some(),
                    "{report:?}"
                );
                let lost = report.lost_seqs.clone().unwrap_or(0..0);
                for seq in 1..=N {
                    assert!(
                        seqs.contains(&seq) || lost.contains(&seq),
                        "seq {seq} lost unreported"
                    );
                }
            }
        }
    }
}

#[test]
fn an_unreadable_database_is_quarantined_and_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    fill(&path);
    // Trash sled's config file: sled refuses to open the directory at all.
    let conf = path.join("conf");
    assert!(conf.exists());
    std::fs::write(&conf, b"this is not a sled config").unwrap();
    let spool = Spool::open_with(config(&path)).unwrap();
    let report = spool.recovery().clone();
    eprintln!("{report:?}");
    assert!(report.quarantined.is_some(), "{report:?}");
    assert_eq!(report.salvaged_records, N);
    assert_eq!(check_records(&spool).len() as u64, N);
    assert_eq!(spool.stats().next_seq, N + 1);
    assert!(
        !report.quarantined.unwrap().exists(),
        "quarantine deleted after salvage"
    );
}

#[test]
fn a_spool_path_that_is_a_file_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    std::fs::write(&path, b"garbage").unwrap();
    let spool = Spool::open_with(config(&path)).unwrap();
    assert_eq!(spool.stats().depth, 0);
}

#[test]
fn crash_images_taken_mid_write_open_with_a_valid_subset() {
    // Copies of the files taken while a writer pushes and flushes are what a
    // power cut can leave: torn, partially written buffers.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let spool = Spool::open_with(
        config(&live).flush(FlushPolicy::Interval(std::time::Duration::from_millis(5))),
    )
    .unwrap();
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let s = sample::process_alert(i, sample::id_for(4, i));
                let p = s.payload().unwrap();
                spool.push(s.new_alert(&p)).unwrap();
                if i % 300 == 299 {
                    let b = spool.take(100, usize::MAX).unwrap();
                    spool.ack(&b).unwrap();
                }
            }
        })
    };
    let mut images = 0;
    while !writer.is_finished() || images < 3 {
        let copy = dir.path().join(format!("image{images}"));
        copy_dir(&live, &copy);
        images += 1;
        let opened = Spool::open_with(config(&copy)).unwrap();
        let seqs = check_records(&opened);
        eprintln!(
            "image {images}: {} records, {:?}",
            seqs.len(),
            opened.recovery()
        );
        if images > 40 {
            break;
        }
    }
    writer.join().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            // A file can vanish or change under a live database; copy what is there.
            if let Ok(bytes) = std::fs::read(&p) {
                std::fs::write(&dest, bytes).unwrap();
            }
        }
    }
}

mod arbitrary_files {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Arbitrary bytes in place of sled's files and the manifest: opening
        /// never panics and never fails, and a spool always comes out usable.
        #[test]
        fn opening_arbitrary_files_never_fails(
            conf in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
            db in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4096)),
            manifest in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("spool");
            std::fs::create_dir_all(&path).unwrap();
            for (name, bytes) in [("conf", conf), ("db", db), ("picket-spool.manifest", manifest)] {
                if let Some(bytes) = bytes {
                    std::fs::write(path.join(name), bytes).unwrap();
                }
            }
            let spool = Spool::open_with(config(&path)).unwrap();
            let s = sample::process_alert(0, sample::id_for(4, 0));
            let p = s.payload().unwrap();
            spool.push(s.new_alert(&p)).unwrap();
            spool.flush().unwrap();
            let _ = check_records(&spool);
        }
    }
}
