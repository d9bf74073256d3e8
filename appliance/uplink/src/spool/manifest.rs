//! The manifest: a small file beside sled's, rewritten after every flush with
//! what that flush made durable (the next sequence number and the counters).
//!
//! sled recovers a damaged log by cutting it at the first bad entry, without
//! an error: everything written after that point is gone from its view. A
//! recovered state older than the manifest reveals such a cut, and the spool
//! then salvages the lost records from the raw files. The manifest also keeps
//! sequence numbers from ever going backwards, whatever sled recovered.
//!
//! Two fixed slots, written alternately with a generation number and a CRC,
//! so a torn write of one slot leaves the other intact.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::record::LEVELS;

/// The manifest's file name inside the spool directory.
pub(crate) const FILE_NAME: &str = "picket-spool.manifest";
const MAGIC: [u8; 4] = *b"PkM1";
const BODY: usize = 4 + 8 + 8 + LEVELS * 8 + 8;
const SLOT: u64 = 96;

/// What one flush made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Manifest {
    pub(crate) next_seq: u64,
    pub(crate) evictions: [u64; LEVELS],
    pub(crate) corrupt_total: u64,
}

#[derive(Debug)]
pub(crate) struct ManifestFile {
    file: File,
    generation: u64,
}

fn encode(generation: u64, m: &Manifest) -> Vec<u8> {
    let mut v = Vec::with_capacity(BODY + 4);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&generation.to_le_bytes());
    v.extend_from_slice(&m.next_seq.to_le_bytes());
    for e in m.evictions {
        v.extend_from_slice(&e.to_le_bytes());
    }
    v.extend_from_slice(&m.corrupt_total.to_le_bytes());
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes one slot; `None` when empty or damaged.
pub(crate) fn decode(slot: &[u8]) -> Option<(u64, Manifest)> {
    if slot.len() < BODY + 4 || slot[..4] != MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&slot[BODY..BODY + 4]);
    if crc32fast::hash(&slot[..BODY]) != u32::from_le_bytes(crc) {
        return None;
    }
    let mut evictions = [0u64; LEVELS];
    for (i, e) in evictions.iter_mut().enumerate() {
        *e = u64_at(slot, 20 + i * 8);
    }
    Some((
        u64_at(slot, 4),
        Manifest {
            next_seq: u64_at(slot, 12),
            evictions,
            corrupt_total: u64_at(slot, 20 + LEVELS * 8),
        },
    ))
}

/// Reads the newest valid slot of the manifest in `dir`, if any.
pub(crate) fn read(dir: &Path) -> Option<(u64, Manifest)> {
    let bytes = std::fs::read(dir.join(FILE_NAME)).ok()?;
    let slot = |i: u64| {
        let at = usize::try_from(i * SLOT).ok()?;
        decode(bytes.get(at..)?)
    };
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

impl ManifestFile {
    /// Opens (or creates) the manifest in `dir`; returns it and its newest
    /// valid content.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Option<Manifest>)> {
        let current = read(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE_NAME))?;
        Ok((
            Self {
                file,
                generation: current.map_or(0, |(g, _)| g),
            },
            current.map(|(_, m)| m),
        ))
    }

    /// Writes `m` into the older slot and syncs it.
    pub(crate) fn write(&mut self, m: &Manifest) -> io::Result<()> {
        let generation = self.generation + 1;
        self.file
            .write_all_at(&encode(generation, m), (generation % 2) * SLOT)?;
        self.file.sync_data()?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn newest_valid_slot_wins_and_torn_slots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, m) = ManifestFile::open(dir.path()).unwrap();
        assert_eq!(m, None);
        for n in 1..=5 {
            f.write(&Manifest {
                next_seq: n,
                ..Manifest::default()
            })
            .unwrap();
        }
        assert_eq!(read(dir.path()).unwrap().1.next_seq, 5);
        // Tear the newest slot (generation 5, slot 1): the older one remains.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT as usize + 20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap().1.next_seq, 4);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
