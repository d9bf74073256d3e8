//! The spool's on-disk record and metadata encodings.
//!
//! A record value is self-describing (magic, lengths, CRC), so that records can
//! be checked one by one on open and, should sled itself refuse to open,
//! salvaged by scanning the raw files for them ([`super::salvage`]).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "PkR1"
//! 4       4     payload length P, u32 LE
//! 8       8     seq, u64 LE
//! 16      8     timestamp_ms, u64 LE
//! 24      1     level 0..=4
//! 25      16    alert id
//! 41      P     payload (the alert's postcard fields after `level`)
//! 41+P    4     CRC-32 (IEEE) of bytes 0 .. 41+P
//! ```
//!
//! The sled key of a record is `[level, seq as u64 BE]`, so that each level is
//! one key range in sequence order (eviction takes the first key of the lowest
//! non-empty level; delivery merges the five ranges by sequence).

use picket_proto::{AlertId, Level};

/// Magic opening every record value.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"PkR1";
/// Magic opening the sequence-floor metadata value.
pub(crate) const FLOOR_MAGIC: [u8; 4] = *b"PkS1";
/// Bytes of a record value around its payload.
pub(crate) const RECORD_OVERHEAD: usize = 41 + 4;
/// Length of a record key.
pub(crate) const KEY_LEN: usize = 9;
/// First byte of every metadata key; record keys start with a level (0..=4).
pub(crate) const META_PREFIX: u8 = 0xff;
/// Key of the sequence floor: every sequence number below it was used once.
pub(crate) const FLOOR_KEY: [u8; 2] = [META_PREFIX, b's'];
/// Key of the eviction counters (magic, five u64 LE, one per level, then a CRC).
pub(crate) const EVICTIONS_KEY: [u8; 2] = [META_PREFIX, b'e'];
/// Magic opening the eviction counters.
pub(crate) const EVICTIONS_MAGIC: [u8; 4] = *b"PkE1";
/// Key of the counter of records found corrupt and dropped (magic, u64 LE, CRC).
pub(crate) const CORRUPT_KEY: [u8; 2] = [META_PREFIX, b'c'];
/// Magic opening the corrupt-record counter.
pub(crate) const CORRUPT_MAGIC: [u8; 4] = *b"PkC1";

/// Largest payload the spool accepts: one alert must fit in one frame body
/// next to the batch count and its own id, seq, timestamp and level.
pub const MAX_PAYLOAD_LEN: usize = picket_proto::MAX_BODY_LEN - 64;

/// Number of alert levels.
pub(crate) const LEVELS: usize = 5;

/// One spooled alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Per-device sequence number, assigned by the spool on push.
    pub seq: u64,
    /// The alert's unique id.
    pub id: AlertId,
    /// Severity, the eviction order.
    pub level: Level,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The alert's postcard fields after `level` (see [`crate::spool`]).
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes this record counts against the disk budget: key plus value.
    #[must_use]
    pub fn cost(&self) -> u64 {
        cost_of(self.payload.len())
    }

    /// An upper bound of the record's size inside an alert batch body.
    #[must_use]
    pub fn wire_len_bound(&self) -> usize {
        // id, two varints of at most 10 bytes each, level.
        16 + 10 + 10 + 1 + self.payload.len()
    }
}

/// Budget cost of a record with a payload of `payload_len` bytes.
#[must_use]
pub(crate) fn cost_of(payload_len: usize) -> u64 {
    (KEY_LEN + RECORD_OVERHEAD + payload_len) as u64
}

/// Level as its wire number.
pub(crate) fn level_index(level: Level) -> usize {
    match level {
        Level::Informational => 0,
        Level::Low => 1,
        Level::Medium => 2,
        Level::High => 3,
        Level::Critical => 4,
    }
}

/// The level of a wire number.
pub(crate) fn level_from_index(i: u8) -> Option<Level> {
    Some(match i {
        0 => Level::Informational,
        1 => Level::Low,
        2 => Level::Medium,
        3 => Level::High,
        4 => Level::Critical,
        _ => return None,
    })
}

/// The sled key of a record.
pub(crate) fn key(level: usize, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    // Levels are 0..=4, so the cast cannot truncate.
    k[0] = level as u8;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a record key; `None` for metadata or malformed keys.
pub(crate) fn parse_key(k: &[u8]) -> Option<(usize, u64)> {
    let (&level, seq) = k.split_first()?;
    if usize::from(level) >= LEVELS || seq.len() != 8 {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(seq);
    Some((usize::from(level), u64::from_be_bytes(b)))
}

/// Encodes a record value.
pub(crate) fn encode(
    seq: u64,
    id: &AlertId,
    level: usize,
    timestamp_ms: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_OVERHEAD + payload.len());
    v.extend_from_slice(&RECORD_MAGIC);
    // The caller checked payload.len() <= MAX_PAYLOAD_LEN, far below u32::MAX.
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&timestamp_ms.to_le_bytes());
    v.push(level as u8);
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Why a stored value is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Fewer bytes than the header or the declared payload.
    Truncated,
    /// Not a record (bad magic) or an impossible field.
    Malformed,
    /// The checksum does not match.
    Checksum,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decodes the record at the start of `buf`, returning it and its length.
pub(crate) fn decode_prefix(buf: &[u8]) -> Result<(Record, usize), RecordError> {
    if buf.len() < RECORD_OVERHEAD {
        return Err(RecordError::Truncated);
    }
    if buf[..4] != RECORD_MAGIC {
        return Err(RecordError::Malformed);
    }
    let payload_len = u32_at(buf, 4) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(RecordError::Malformed);
    }
    let total = RECORD_OVERHEAD + payload_len;
    if buf.len() < total {
        return Err(RecordError::Truncated);
    }
    let body = &buf[..total - 4];
    if crc32fast::hash(body) != u32_at(buf, total - 4) {
        return Err(RecordError::Checksum);
    }
    let level = level_from_index(buf[24]).ok_or(RecordError::Malformed)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[25..41]);
    Ok((
        Record {
            seq: u64_at(buf, 8),
            id: AlertId(id),
            level,
            timestamp_ms: u64_at(buf, 16),
            payload: buf[41..total - 4].to_vec(),
        },
        total,
    ))
}

/// Decodes a whole value that must hold exactly one record.
pub(crate) fn decode(value: &[u8]) -> Result<Record, RecordError> {
    let (record, len) = decode_prefix(value)?;
    if len == value.len() {
        Ok(record)
    } else {
        Err(RecordError::Malformed)
    }
}

/// Encodes a checksummed u64 metadata value (sequence floor).
pub(crate) fn encode_floor(floor: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&FLOOR_MAGIC);
    v.extend_from_slice(&floor.to_le_bytes());
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes a sequence-floor value at the start of `buf`.
pub(crate) fn decode_floor(buf: &[u8]) -> Option<u64> {
    if buf.len() < 16 || buf[..4] != FLOOR_MAGIC {
        return None;
    }
    if crc32fast::hash(&buf[..12]) != u32_at(buf, 12) {
        return None;
    }
    Some(u64_at(buf, 4))
}

/// Encodes a checksummed list of u64 counters after `magic`.
pub(crate) fn encode_counters(magic: [u8; 4], values: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(values.len() * 8 + 8);
    v.extend_from_slice(&magic);
    for x in values {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes `N` checksummed counters after `magic` at the start of `buf`;
/// `None` when damaged.
pub(crate) fn decode_counters<const N: usize>(magic: [u8; 4], buf: &[u8]) -> Option<[u64; N]> {
    let len = 4 + N * 8;
    if buf.len() < len + 4 || buf[..4] != magic || crc32fast::hash(&buf[..len]) != u32_at(buf, len)
    {
        return None;
    }
    let mut out = [0u64; N];
    for (i, x) in out.iter_mut().enumerate() {
        *x = u64_at(buf, 4 + i * 8);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let v = encode(7, &AlertId([3; 16]), 2, 99, b"hello");
        let r = decode(&v).unwrap();
        assert_eq!(r.seq, 7);
        assert_eq!(r.level, Level::Medium);
        assert_eq!(r.timestamp_ms, 99);
        assert_eq!(r.payload, b"hello");
        assert_eq!(v.len() as u64 + KEY_LEN as u64, r.cost());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let v = encode(7, &AlertId([3; 16]), 2, 99, b"hello world");
        for i in 0..v.len() * 8 {
            let mut w = v.clone();
            w[i / 8] ^= 1 << (i % 8);
            assert!(decode(&w).is_err(), "bit {i}");
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = decode_prefix(&bytes);
            let _ = decode_floor(&bytes);
            let _ = decode_counters::<5>(EVICTIONS_MAGIC, &bytes);
            let _ = parse_key(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_damaged_records(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..200,
            flip in proptest::option::of((0usize..200, any::<u8>())),
        ) {
            let mut v = encode(1, &AlertId([1; 16]), 4, 2, &payload);
            if let Some((at, x)) = flip {
                let n = v.len();
                v[at % n] ^= x;
            }
            v.truncate(cut.min(v.len()));
            let _ = decode(&v);
        }
    }
}
