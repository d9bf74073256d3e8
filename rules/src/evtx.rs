//! EVTX files to Sigma matches: the one path from a Windows event log file
//! to rule matches, shared by `picketctl hunt` and the backend's hunting
//! jobs (feature `evtx`), so both report the same matches for a file.
//!
//! A file is read chunk by chunk (64 KiB each, after a 4 KiB header) with
//! the `evtx` crate; [`scan_chunk`] parses one chunk, renders each record
//! as JSON, normalizes it with [`windows::normalize_evtx`], routes and
//! evaluates it with a [`windows::Router`], and hands each record that
//! matched to the caller with its [`RecordMeta`]. Chunks need nothing from
//! each other, so callers fan them out over threads. [`truncation`] tells
//! whether a file was cut short (the parser itself stops quietly at the
//! last whole chunk).
//!
//! ```no_run
//! use std::sync::Arc;
//! use picket_rules::{evtx::scan_chunk, windows::Router, EngineConfig, RuleSet};
//!
//! let rules = RuleSet::from_sources(Vec::<(std::path::PathBuf, String)>::new(), &EngineConfig::new()).rules;
//! let router = Router::new(&rules);
//! let settings = Arc::new(evtx::ParserSettings::new());
//! let mut parser = evtx::EvtxParser::from_path("Security.evtx").expect("an EVTX file");
//! for chunk in parser.chunks() {
//!     let scanned = scan_chunk(&router, chunk.expect("readable"), &settings, |meta, _fields, matches| {
//!         for m in matches.drain(..) {
//!             println!("{} {} {}", meta.record_id, meta.timestamp, m.rule.title);
//!         }
//!     });
//!     println!("{} records, {} problems", scanned.records, scanned.problems.len());
//! }
//! ```

use std::sync::Arc;

use ::evtx::{EvtxChunkData, ParserSettings};
use serde_json::{Map, Value as Json};

use crate::windows;
use crate::Match;

/// Bytes of one EVTX chunk.
pub const CHUNK_BYTES: u64 = 65_536;
/// Bytes of the EVTX file header.
pub const HEADER_BYTES: u64 = 4096;
/// The first bytes of every EVTX file.
pub const MAGIC: &[u8; 8] = b"ElfFile\0";

/// What the timeline shows about a record that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// The rendered `EventRecordID` (the record's id in the log it was
    /// written to), else the record header's number.
    pub record_id: u64,
    /// `System/TimeCreated/@SystemTime` as the log wrote it, else the
    /// record header's time (RFC 3339).
    pub timestamp: String,
    /// [`Self::timestamp`] in milliseconds since the Unix epoch (UTC), or
    /// the record header's time when it does not read as
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    pub timestamp_ms: i64,
    /// `Computer`.
    pub computer: String,
    /// `Channel`.
    pub channel: String,
    /// `EventID`.
    pub event_id: String,
}

/// A record or chunk that could not be read; the scan goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProblem {
    /// 0 for the chunk itself, else the 1-based index of the record in
    /// the chunk.
    pub record_index: u64,
    /// The record id, when the record was rendered.
    pub record_id: Option<u64>,
    /// Why.
    pub reason: String,
}

/// What [`scan_chunk`] did with one chunk.
#[derive(Debug, Default)]
pub struct ChunkScan {
    /// Event records evaluated.
    pub records: u64,
    /// Records (or the chunk) skipped, in record order.
    pub problems: Vec<ChunkProblem>,
}

/// Parses one chunk and evaluates each of its records; `on_match` gets
/// each record that matched at least one rule: its meta, its normalized
/// fields and the matches (it may drain them; the vector is reused for the
/// next record).
pub fn scan_chunk(
    router: &windows::Router<'_>,
    mut data: EvtxChunkData,
    settings: &Arc<ParserSettings>,
    mut on_match: impl FnMut(&RecordMeta, &Map<String, Json>, &mut Vec<Match>),
) -> ChunkScan {
    let mut scan = ChunkScan::default();
    let mut chunk = match data.parse(Arc::clone(settings)) {
        Ok(chunk) => chunk,
        Err(e) => {
            scan.problems.push(ChunkProblem {
                record_index: 0,
                record_id: None,
                reason: e.to_string(),
            });
            return scan;
        }
    };
    let mut out: Vec<Match> = Vec::new();
    for (index, record) in chunk.iter().enumerate() {
        let record = match record.and_then(::evtx::EvtxRecord::into_json_value) {
            Ok(record) => record,
            Err(e) => {
                scan.problems.push(ChunkProblem {
                    record_index: index as u64 + 1,
                    record_id: None,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let Some(flat) = windows::normalize_evtx(&record.data) else {
            scan.problems.push(ChunkProblem {
                record_index: index as u64 + 1,
                record_id: Some(record.event_record_id),
                reason: "not an event record (no `Event` element)".into(),
            });
            continue;
        };
        scan.records += 1;
        out.clear();
        if router.evaluate(&flat, &mut out) == 0 {
            continue;
        }
        let timestamp = record
            .data
            .pointer("/Event/System/TimeCreated/#attributes/SystemTime")
            .map_or_else(|| record.timestamp.to_string(), text);
        // The rendered `EventRecordID` is the record's id in the log it was
        // written to; the record header's number differs in exported or
        // filtered logs, and analysts (and the oracle) use the rendered one.
        let record_id = record
            .data
            .pointer("/Event/System/EventRecordID")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .unwrap_or(record.event_record_id);
        let timestamp_ms =
            system_time_ms(&timestamp).unwrap_or_else(|| record.timestamp.as_millisecond());
        let meta = RecordMeta {
            record_id,
            timestamp,
            timestamp_ms,
            computer: flat.get("Computer").map(text).unwrap_or_default(),
            channel: flat.get("Channel").map(text).unwrap_or_default(),
            event_id: flat.get("EventID").map(text).unwrap_or_default(),
        };
        on_match(&meta, &flat, &mut out);
    }
    scan
}

/// Whether a file of `size` bytes whose header declares `declared_chunks`
/// was cut short (a copy interrupted, a log grabbed while written): the
/// reason, or `None` when it holds every chunk whole.
#[must_use]
pub fn truncation(size: u64, declared_chunks: u64) -> Option<String> {
    let body = size.saturating_sub(HEADER_BYTES);
    let (whole, rest) = (body / CHUNK_BYTES, body % CHUNK_BYTES);
    (rest != 0 || declared_chunks > whole).then(|| {
        format!(
            "truncated: the header declares {declared_chunks} chunks, the file holds {whole} whole \
             chunks and {rest} bytes more; records past the last whole chunk are lost"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (how EVTX renders `SystemTime`) in
/// milliseconds since the Unix epoch; the fraction is truncated.
#[must_use]
pub fn system_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let rest = &b[19..];
    let (frac, zone) = match rest.first() {
        Some(b'.') => {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            (&rest[1..=n], &rest[1 + n..])
        }
        _ => (&rest[..0], rest),
    };
    if zone != b"Z" {
        return None;
    }
    let ms = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0i64, |a, c| a * 10 + i64::from(c - b'0'));
    // Days from 1970-01-01 (the era-based civil-to-days conversion).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// A JSON value as timeline text: strings without quotes, others as JSON.
#[must_use]
pub fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_reads_as_utc_milliseconds() {
        assert_eq!(system_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            system_time_ms("2019-05-18T17:16:18.8331713Z"),
            Some(1_558_199_778_833)
        );
        assert_eq!(
            system_time_ms("2000-02-29T23:59:59.5Z"),
            Some(951_868_799_500)
        );
        assert_eq!(system_time_ms("1969-12-31T23:59:59.999Z"), Some(-1));
        for bad in [
            "",
            "2019-05-18 17:16:18Z",
            "2019-05-18T17:16:18+02:00",
            "2019-13-01T00:00:00Z",
            "2019-05-18T17:16:18.Z1",
        ] {
            assert_eq!(system_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncation_needs_whole_chunks() {
        assert_eq!(truncation(HEADER_BYTES + 2 * CHUNK_BYTES, 2), None);
        let cut = truncation(HEADER_BYTES + CHUNK_BYTES + 10, 2).unwrap_or_default();
        assert!(cut.contains("declares 2 chunks"), "{cut}");
        assert!(cut.contains("1 whole chunks and 10 bytes"), "{cut}");
        assert!(truncation(HEADER_BYTES + CHUNK_BYTES, 3).is_some());
    }
}
