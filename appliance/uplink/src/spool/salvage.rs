//! Salvage of a spool sled cannot open: move it aside, scan its raw files for
//! self-checking record values, and load those into a fresh database.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use super::record::{
    self, key, level_index, Record, CORRUPT_KEY, CORRUPT_MAGIC, EVICTIONS_KEY, EVICTIONS_MAGIC,
    FLOOR_KEY, FLOOR_MAGIC, LEVELS, MAX_PAYLOAD_LEN, RECORD_MAGIC, RECORD_OVERHEAD,
};
use super::{open_db, SpoolConfig, SpoolError};

/// What the raw scan found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) records: BTreeMap<u64, Record>,
    pub(crate) floor: u64,
    pub(crate) evictions: [u64; LEVELS],
    pub(crate) corrupt: u64,
}

const CHUNK: usize = 4 << 20;
/// Bytes carried from one chunk to the next so that a value straddling the
/// boundary is still seen whole.
const CARRY: usize = RECORD_OVERHEAD + MAX_PAYLOAD_LEN;

/// Moves the unreadable database aside, creates a fresh one, and loads every
/// intact record found in the old files. Returns the new database, how many
/// records were salvaged, and where the old one was put (deleted on success).
pub(crate) fn quarantine_and_salvage(
    config: &SpoolConfig,
    reason: &str,
) -> Result<(sled::Db, u64, PathBuf), SpoolError> {
    let path = &config.path;
    let recovery = |source| SpoolError::Recovery {
        path: path.clone(),
        source,
    };
    let storage = |source| SpoolError::Storage {
        path: path.clone(),
        source,
    };
    let mut quarantine = path.as_os_str().to_owned();
    quarantine.push(".corrupt");
    let quarantine = PathBuf::from(quarantine);
    remove_any(&quarantine).map_err(recovery)?;
    fs::rename(path, &quarantine).map_err(recovery)?;
    let mut found = Found::default();
    scan_tree(&quarantine, &mut found).map_err(recovery)?;
    if let Some((_, m)) = manifest::read(&quarantine) {
        merge_manifest(&mut found, &m);
    }
    let salvaged = found.records.len() as u64;
    tracing::warn!(
        quarantine = %quarantine.display(),
        reason,
        salvaged,
        "spool quarantined; salvaged records with intact checksums"
    );
    let db = open_db(path, config.cache_bytes).map_err(storage)?;
    restore(&db, &found).map_err(storage)?;
    if let Err(e) = remove_any(&quarantine) {
        tracing::warn!(quarantine = %quarantine.display(), error = %e, "cannot delete the quarantined spool");
    }
    Ok((db, salvaged, quarantine))
}

/// sled cut its log: loads the intact records with `seq >= from_seq` found in
/// the raw files of `dir` (the ones written after the cut) into `db`.
pub(crate) fn salvage_tail(
    dir: &Path,
    db: &sled::Db,
    from_seq: u64,
    m: &Manifest,
) -> io::Result<u64> {
    let mut found = Found::default();
    scan_tree(dir, &mut found)?;
    found.records = found.records.split_off(&from_seq);
    merge_manifest(&mut found, m);
    restore(db, &found).map_err(io::Error::other)?;
    Ok(found.records.len() as u64)
}

fn merge_manifest(found: &mut Found, m: &Manifest) {
    found.floor = found.floor.max(m.next_seq);
    for (a, b) in found.evictions.iter_mut().zip(m.evictions) {
        *a = (*a).max(b);
    }
    found.corrupt = found.corrupt.max(m.corrupt_total);
}

/// Writes the found records and counters into `db` (counters only ever go
/// up, the floor never down) and flushes.
fn restore(db: &sled::Db, found: &Found) -> Result<(), sled::Error> {
    let max_seq = found.records.keys().next_back().copied().unwrap_or(0);
    let mut floor = found.floor.max(max_seq + 1);
    let mut evictions = found.evictions;
    let mut corrupt = found.corrupt;
    if let Some(f) = db.get(FLOOR_KEY)?.and_then(|v| record::decode_floor(&v)) {
        floor = floor.max(f);
    }
    if let Some(e) = db
        .get(EVICTIONS_KEY)?
        .and_then(|v| record::decode_counters::<LEVELS>(EVICTIONS_MAGIC, &v))
    {
        for (a, b) in evictions.iter_mut().zip(e) {
            *a = (*a).max(b);
        }
    }
    if let Some([c]) = db
        .get(CORRUPT_KEY)?
        .and_then(|v| record::decode_counters::<1>(CORRUPT_MAGIC, &v))
    {
        corrupt = corrupt.max(c);
    }
    let mut batch = sled::Batch::default();
    for r in found.records.values() {
        let l = level_index(r.level);
        batch.insert(
            &key(l, r.seq),
            record::encode(r.seq, &r.id, l, r.timestamp_ms, &r.payload),
        );
    }
    batch.insert(&FLOOR_KEY, record::encode_floor(floor));
    batch.insert(
        &EVICTIONS_KEY,
        record::encode_counters(EVICTIONS_MAGIC, &evictions),
    );
    batch.insert(
        &CORRUPT_KEY,
        record::encode_counters(CORRUPT_MAGIC, &[corrupt]),
    );
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn scan_tree(p: &Path, found: &mut Found) -> io::Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if meta.is_dir() {
        for entry in fs::read_dir(p)? {
            scan_tree(&entry?.path(), found)?;
        }
    } else if meta.is_file() {
        scan_file(p, found)?;
    }
    Ok(())
}

fn scan_file(p: &Path, found: &mut Found) -> io::Result<()> {
    let mut file = fs::File::open(p)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + CARRY);
    loop {
        let start = buf.len();
        buf.resize(start + CHUNK, 0);
        let n = read_full(&mut file, &mut buf[start..])?;
        buf.truncate(start + n);
        let eof = n == 0;
        // Values starting in the carried tail are scanned with the next chunk.
        let limit = if eof {
            buf.len()
        } else {
            buf.len().saturating_sub(CARRY)
        };
        let resume = scan_bytes(&buf, limit, found);
        if eof {
            return Ok(());
        }
        buf.drain(..resume.min(buf.len()));
    }
}

fn read_full(file: &mut fs::File, out: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < out.len() {
        match file.read(&mut out[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Scans candidate starts before `limit`; returns where the next scan resumes.
pub(crate) fn scan_bytes(buf: &[u8], limit: usize, found: &mut Found) -> usize {
    let mut i = 0;
    while i < limit {
        let Some(off) = buf[i..limit].iter().position(|&b| b == b'P') else {
            return limit;
        };
        i += off;
        let rest = &buf[i..];
        if rest.starts_with(&RECORD_MAGIC) {
            match record::decode_prefix(rest) {
                Ok((r, len)) => {
                    // A later copy of a sequence number is a later write.
                    found.records.insert(r.seq, r);
                    i += len;
                    continue;
                }
                Err(_) => found.corrupt += 1,
            }
        } else if rest.starts_with(&FLOOR_MAGIC) {
            if let Some(f) = record::decode_floor(rest) {
                found.floor = found.floor.max(f);
            }
        } else if rest.starts_with(&EVICTIONS_MAGIC) {
            if let Some(e) = record::decode_counters::<LEVELS>(EVICTIONS_MAGIC, rest) {
                for (a, b) in found.evictions.iter_mut().zip(e) {
                    *a = (*a).max(b);
                }
            }
        } else if rest.starts_with(&CORRUPT_MAGIC) {
            if let Some([c]) = record::decode_counters::<1>(CORRUPT_MAGIC, rest) {
                found.corrupt = found.corrupt.max(c);
            }
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::AlertId;
    use proptest::prelude::*;

    #[test]
    fn finds_records_among_garbage() {
        let mut buf = b"garbage PkR1 P".to_vec();
        buf.extend(record::encode(5, &AlertId([1; 16]), 3, 7, b"x"));
        buf.extend(b"PkR1\xff\xff");
        buf.extend(record::encode(9, &AlertId([2; 16]), 0, 7, b"yy"));
        let mut found = Found::default();
        scan_bytes(&buf, buf.len(), &mut found);
        assert_eq!(found.records.keys().copied().collect::<Vec<_>>(), [5, 9]);
    }

    proptest! {
        #[test]
        fn scanner_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..600) {
            let mut found = Found::default();
            let limit = limit.min(bytes.len());
            let _ = scan_bytes(&bytes, limit, &mut found);
        }
    }
}
