//! The scan: files in parallel, EVTX chunks and JSON-lines batches in
//! parallel within a file, results merged in a fixed order.

use std::fmt;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evtx::{EvtxChunkData, EvtxParser, ParserSettings};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use picket_rules::evtx::system_time_ms;
use picket_rules::evtx::{
    text, CHUNK_BYTES as EVTX_CHUNK_BYTES, HEADER_BYTES as EVTX_HEADER_BYTES,
};
use picket_rules::{
    windows, CorrelationLimits, CorrelationMatch, CorrelationStats, LogSource, Match, MatchedField,
    RuleInfo, RuleSet,
};
use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use super::{
    collect_inputs, load_rules, summary, write_csv, write_jsonl, Format, HuntConfig, HuntError,
    Input, InputKind,
};

/// One rule matching one event: a row of the timeline.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The file, as given or found.
    pub file: PathBuf,
    /// `EventRecordID` for EVTX, the 1-based line number for JSON lines.
    pub record_id: u64,
    /// The event's time as the log wrote it (EVTX `SystemTime`; for JSON
    /// lines the first of `@timestamp`, `timestamp`, `UtcTime`,
    /// `TimeCreated`, `EventTime`), empty when unknown.
    pub timestamp: String,
    /// `Computer` (or `host.name`, `hostname` for JSON lines).
    pub computer: String,
    /// Windows `Channel`, empty for other events.
    pub channel: String,
    /// Windows `EventID`, empty for other events.
    pub event_id: String,
    /// The rule (id, title, level, author, tags, ...).
    pub rule: Arc<RuleInfo>,
    /// The fields of the rule's selections that matched.
    pub fields: Vec<MatchedField>,
}

impl Hit {
    /// The timeline order: file, record id, rule id (then title and rule
    /// file, for rules without or with duplicate ids).
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        (
            &self.file,
            self.record_id,
            &self.rule.id,
            &self.rule.title,
            &self.rule.path,
        )
            .cmp(&(
                &other.file,
                other.record_id,
                &other.rule.id,
                &other.rule.title,
                &other.rule.path,
            ))
    }
}

/// Something in the input that was skipped; the scan went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Where in it (`chunk 3`, `record 1207`, `line 12`); `None`: the whole
    /// file was skipped.
    pub place: Option<String>,
    /// Why.
    pub reason: String,
    /// Orders problems of one file (chunk, then record or line).
    position: (u64, u64),
}

impl Problem {
    pub(crate) fn file(path: &Path, reason: String) -> Self {
        Problem {
            path: path.to_owned(),
            place: None,
            reason,
            position: (0, 0),
        }
    }

    fn at(path: &Path, place: String, position: (u64, u64), reason: String) -> Self {
        Problem {
            path: path.to_owned(),
            place: Some(place),
            reason,
            position,
        }
    }

    /// Whether the whole file was skipped.
    #[must_use]
    pub fn is_file_skipped(&self) -> bool {
        self.place.is_none()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            None => write!(f, "{}: skipped: {}", self.path.display(), self.reason),
            Some(place) => write!(
                f,
                "{}: {place}: skipped: {}",
                self.path.display(),
                self.reason
            ),
        }
    }
}

/// Tuning of a scan; the defaults suit the command line.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Product of JSON lines that do not say theirs (see the module docs).
    pub product: Option<String>,
    /// EVTX chunks (64 KiB each) read from a file before they are parsed
    /// in parallel. Bounds memory per file being scanned.
    pub evtx_batch_chunks: usize,
    /// JSON lines read from a file before they are evaluated in parallel.
    pub jsonl_batch_lines: usize,
    /// Problems kept per file; more are only counted (a binary file read as
    /// JSON lines would otherwise report every line).
    pub max_problems_per_file: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            product: None,
            evtx_batch_chunks: 16,
            jsonl_batch_lines: 4096,
            max_problems_per_file: 100,
        }
    }
}

/// What a scan found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ScanReport {
    /// The matches, sorted by file, record id and rule id.
    pub hits: Vec<Hit>,
    /// What was skipped, sorted by file and place.
    pub problems: Vec<Problem>,
    /// Problems past [`ScanOptions::max_problems_per_file`], only counted.
    pub problems_not_listed: u64,
    /// Files opened.
    pub files: usize,
    /// Files skipped as a whole.
    pub files_skipped: usize,
    /// Events evaluated (EVTX records and JSON lines).
    pub records: u64,
    /// JSON lines no rule could see (no logsource, see the module docs).
    pub unrouted: u64,
    /// Wall time of the scan (not counting rule loading).
    pub elapsed: Duration,
    /// Correlation rules that fired (rows of `hits` whose rule is a
    /// correlation).
    pub correlation_hits: u64,
    /// Events with matches that had no readable time, so correlation rules
    /// could not count them (their own matches are in `hits`).
    pub untimed: u64,
    /// The correlator's counters (groups and events dropped at its memory
    /// caps) when the rule set has correlation rules.
    pub correlation: Option<CorrelationStats>,
}

/// An event with matches, kept for the correlation pass (only when the
/// rule set has correlation rules).
#[derive(Debug)]
struct Pending {
    ts_ms: i64,
    file: PathBuf,
    record_id: u64,
    meta: Meta,
    fields: Map<String, Json>,
    matches: Vec<Match>,
}

#[derive(Debug, Default)]
struct Outcome {
    hits: Vec<Hit>,
    pending: Vec<Pending>,
    untimed: u64,
    problems: Vec<Problem>,
    problems_not_listed: u64,
    records: u64,
    unrouted: u64,
    file_skipped: bool,
}

impl Outcome {
    fn merge(&mut self, other: Outcome, max_problems: usize) {
        self.hits.extend(other.hits);
        self.pending.extend(other.pending);
        self.untimed += other.untimed;
        self.records += other.records;
        self.unrouted += other.unrouted;
        self.problems_not_listed += other.problems_not_listed;
        for p in other.problems {
            if self.problems.len() < max_problems {
                self.problems.push(p);
            } else {
                self.problems_not_listed += 1;
            }
        }
    }

    fn skipped(path: &Path, reason: String) -> Self {
        Outcome {
            problems: vec![Problem::file(path, reason)],
            file_skipped: true,
            ..Outcome::default()
        }
    }
}

/// Scans the inputs with the rules on the current rayon pool (run it inside
/// `ThreadPool::install` to choose the threads). The report does not depend
/// on the number of threads.
#[must_use]
pub fn scan(
    rules: &RuleSet,
    inputs: &[Input],
    options: &ScanOptions,
    progress: Option<&ProgressBar>,
) -> ScanReport {
    let start = Instant::now();
    let router = windows::Router::new(rules);
    let ctx = Ctx {
        rules,
        router: &router,
        options,
        progress,
        correlate: rules.correlation_rules().next().is_some(),
    };
    let outcomes: Vec<Outcome> = inputs
        .par_iter()
        .map(|input| match input.kind {
            InputKind::Evtx => ctx.evtx_file(&input.path),
            InputKind::JsonLines => ctx.jsonl_file(&input.path),
        })
        .collect();
    let mut report = ScanReport {
        files: inputs.len(),
        ..ScanReport::default()
    };
    let mut pending = Vec::new();
    for outcome in outcomes {
        pending.extend(outcome.pending);
        report.untimed += outcome.untimed;
        report.files_skipped += usize::from(outcome.file_skipped);
        report.records += outcome.records;
        report.unrouted += outcome.unrouted;
        report.problems_not_listed += outcome.problems_not_listed;
        report.hits.extend(outcome.hits);
        report.problems.extend(outcome.problems);
    }
    if ctx.correlate {
        correlate(rules, pending, &mut report);
    }
    report.hits.sort_by(Hit::order);
    report
        .problems
        .sort_by(|a, b| (&a.path, a.position).cmp(&(&b.path, b.position)));
    report.elapsed = start.elapsed();
    report
}

struct Ctx<'a> {
    rules: &'a RuleSet,
    router: &'a windows::Router<'a>,
    options: &'a ScanOptions,
    progress: Option<&'a ProgressBar>,
    /// The rule set has correlation rules: events with matches are kept
    /// for [`correlate`] instead of becoming hits at once.
    correlate: bool,
}

impl Ctx<'_> {
    fn advance(&self, bytes: u64) {
        if let Some(p) = self.progress {
            p.inc(bytes);
        }
    }

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    fn evtx_file(&self, path: &Path) -> Outcome {
        let size = Self::file_size(path);
        let mut parser = match EvtxParser::from_path(path) {
            Ok(parser) => parser,
            Err(e) => {
                self.advance(size);
                return Outcome::skipped(path, format!("not a readable EVTX file: {e}"));
            }
        };
        let settings = Arc::new(ParserSettings::new());
        let mut outcome = Outcome::default();
        // The parser stops quietly at the last whole chunk; a file cut short
        // (a copy interrupted, a log grabbed while written) must be said.
        let declared = u64::from(parser.header().chunk_count);
        if let Some(reason) = picket_rules::evtx::truncation(size, declared) {
            outcome.problems.push(Problem::at(
                path,
                "end of file".into(),
                (u64::MAX, 0),
                reason,
            ));
        }
        let mut chunks = parser.chunks();
        let mut ordinal = 0u64;
        self.advance(EVTX_HEADER_BYTES.min(size));
        loop {
            // Reading is sequential (one file handle); parsing, normalizing
            // and evaluating a chunk needs nothing from the others, so a
            // batch of chunks fans out over the pool.
            let batch: Vec<(u64, Result<EvtxChunkData, String>)> = chunks
                .by_ref()
                .take(self.options.evtx_batch_chunks.max(1))
                .map(|chunk| {
                    ordinal += 1;
                    (ordinal, chunk.map_err(|e| e.to_string()))
                })
                .collect();
            if batch.is_empty() {
                break;
            }
            let results: Vec<Outcome> = batch
                .into_par_iter()
                .map(|(ordinal, chunk)| {
                    let result = match chunk {
                        Ok(chunk) => self.evtx_chunk(path, ordinal, chunk, &settings),
                        Err(reason) => Outcome {
                            problems: vec![Problem::at(
                                path,
                                format!("chunk (read #{ordinal})"),
                                (ordinal, 0),
                                reason,
                            )],
                            ..Outcome::default()
                        },
                    };
                    self.advance(EVTX_CHUNK_BYTES);
                    result
                })
                .collect();
            for result in results {
                outcome.merge(result, self.options.max_problems_per_file);
            }
        }
        outcome
    }

    fn evtx_chunk(
        &self,
        path: &Path,
        ordinal: u64,
        data: EvtxChunkData,
        settings: &Arc<ParserSettings>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let scanned =
            picket_rules::evtx::scan_chunk(self.router, data, settings, |m, flat, out| {
                let meta = Meta {
                    timestamp: m.timestamp.clone(),
                    computer: m.computer.clone(),
                    channel: m.channel.clone(),
                    event_id: m.event_id.clone(),
                };
                if self.correlate && !out.is_empty() {
                    outcome.pending.push(Pending {
                        ts_ms: m.timestamp_ms,
                        file: path.to_owned(),
                        record_id: m.record_id,
                        meta,
                        fields: flat.clone(),
                        matches: std::mem::take(out),
                    });
                } else {
                    push_hits(&mut outcome.hits, path, m.record_id, &meta, out);
                }
            });
        outcome.records = scanned.records;
        for p in scanned.problems {
            let place = match (p.record_index, p.record_id) {
                (0, _) => format!("chunk (read #{ordinal})"),
                (_, Some(id)) => format!("record {id}"),
                (i, None) => format!("chunk (read #{ordinal}), record #{i} of the chunk"),
            };
            outcome.problems.push(Problem::at(
                path,
                place,
                (ordinal, p.record_index),
                p.reason,
            ));
        }
        outcome
    }

    fn jsonl_file(&self, path: &Path) -> Outcome {
        let size = Self::file_size(path);
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) => {
                self.advance(size);
                return Outcome::skipped(path, format!("cannot open: {e}"));
            }
        };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut outcome = Outcome::default();
        let mut line_no = 0u64;
        let mut done = false;
        while !done {
            let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut bytes = 0u64;
            while batch.len() < self.options.jsonl_batch_lines.max(1) {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        line_no += 1;
                        bytes += n as u64;
                        batch.push((line_no, line));
                    }
                    Err(e) => {
                        outcome.problems.push(Problem::at(
                            path,
                            format!("after line {line_no}"),
                            (line_no + 1, 0),
                            format!("read error, rest of file skipped: {e}"),
                        ));
                        done = true;
                        break;
                    }
                }
            }
            let results: Vec<Outcome> = batch
                .par_iter()
                .map(|(no, line)| self.json_line(path, *no, line))
                .collect();
            for result in results {
                outcome.merge(result, self.options.max_problems_per_file);
            }
            self.advance(bytes);
        }
        outcome
    }

    fn json_line(&self, path: &Path, no: u64, line: &[u8]) -> Outcome {
        let mut outcome = Outcome::default();
        if line.iter().all(u8::is_ascii_whitespace) {
            return outcome;
        }
        let problem = |reason: String| Problem::at(path, format!("line {no}"), (no, 0), reason);
        let map = match serde_json::from_slice::<Json>(line) {
            Ok(Json::Object(map)) => map,
            Ok(_) => {
                outcome.problems.push(problem("not a JSON object".into()));
                return outcome;
            }
            Err(e) => {
                outcome
                    .problems
                    .push(problem(format!("malformed JSON: {e}")));
                return outcome;
            }
        };
        let mut out = Vec::new();
        let Some((meta, fields)) = self.evaluate_line(map, &mut out) else {
            outcome.unrouted += 1;
            outcome.records += 1;
            return outcome;
        };
        outcome.records += 1;
        match system_time_ms(&meta.timestamp) {
            Some(ts_ms) if self.correlate && !out.is_empty() => {
                outcome.pending.push(Pending {
                    ts_ms,
                    file: path.to_owned(),
                    record_id: no,
                    meta,
                    fields,
                    matches: out,
                });
            }
            ts => {
                if self.correlate && !out.is_empty() && ts.is_none() {
                    outcome.untimed += 1;
                }
                push_hits(&mut outcome.hits, path, no, &meta, &mut out);
            }
        }
        outcome
    }

    /// Routes one JSON-lines event (the order is in the module docs) and
    /// evaluates it; `None` when it has no logsource. Returns what the
    /// timeline shows of it and the fields the rules saw.
    fn evaluate_line(
        &self,
        mut map: Map<String, Json>,
        out: &mut Vec<Match>,
    ) -> Option<(Meta, Map<String, Json>)> {
        let has_logsource = ["_product", "_category", "_service"]
            .iter()
            .any(|k| map.contains_key(*k));
        if has_logsource {
            let mut take = |k: &str| match map.remove(k) {
                Some(Json::String(s)) => Some(s),
                _ => None,
            };
            let product = take("_product").or_else(|| self.options.product.clone());
            let category = take("_category");
            let service = take("_service");
            let source =
                LogSource::new(product.as_deref(), category.as_deref(), service.as_deref());
            self.rules.evaluate(&source, &map, out);
            return Some((Meta::of_json(&map), map));
        }
        if let Some(event) = map.get("Event").filter(|e| e.is_object()) {
            let timestamp = event
                .pointer("/System/TimeCreated/#attributes/SystemTime")
                .map(text);
            let flat = windows::normalize_evtx(&Json::Object(map))?;
            self.router.evaluate(&flat, out);
            let mut meta = Meta::of_json(&flat);
            meta.timestamp = timestamp.unwrap_or_default();
            return Some((meta, flat));
        }
        if map.contains_key("Channel") && map.contains_key("EventID") {
            self.router.evaluate(&map, out);
            return Some((Meta::of_json(&map), map));
        }
        let product = self.options.product.as_deref()?;
        self.rules
            .evaluate(&LogSource::new(Some(product), None, None), &map, out);
        Some((Meta::of_json(&map), map))
    }
}

/// The correlation pass: the events with matches in time order (then file
/// and record, so the result does not depend on the threads) through one
/// [`picket_rules::Correlator`]. Each event's remaining matches become hits
/// (`generate: false` drops those of rules only a correlation should
/// show), and each correlation that fires becomes a hit on the event that
/// made it fire; a window that closes only at the end of the scan (an
/// upper-bounded condition) is put on the last event.
fn correlate(rules: &RuleSet, mut pending: Vec<Pending>, report: &mut ScanReport) {
    pending.sort_by(|a, b| (a.ts_ms, &a.file, a.record_id).cmp(&(b.ts_ms, &b.file, b.record_id)));
    let mut correlator = rules.correlator(CorrelationLimits::default());
    let mut fired = Vec::new();
    let mut events = pending.into_iter().peekable();
    while let Some(mut p) = events.next() {
        correlator.process(p.ts_ms, &p.fields, &mut p.matches, &mut fired);
        push_hits(
            &mut report.hits,
            &p.file,
            p.record_id,
            &p.meta,
            &mut p.matches,
        );
        for m in fired.drain(..) {
            report.hits.push(correlation_hit(&p, m));
            report.correlation_hits += 1;
        }
        if events.peek().is_none() {
            correlator.advance(i64::MAX, &mut fired);
            for m in fired.drain(..) {
                report.hits.push(correlation_hit(&p, m));
                report.correlation_hits += 1;
            }
        }
    }
    report.correlation = Some(correlator.stats());
}

/// A fired correlation as a timeline row: the group's values and the
/// measured value as its fields.
fn correlation_hit(at: &Pending, m: CorrelationMatch) -> Hit {
    let mut fields: Vec<MatchedField> = m
        .group
        .into_iter()
        .map(|(name, value)| MatchedField { name, value })
        .collect();
    fields.push(MatchedField {
        name: "correlation_value".into(),
        value: m.value.to_string(),
    });
    Hit {
        file: at.file.clone(),
        record_id: at.record_id,
        timestamp: at.meta.timestamp.clone(),
        computer: at.meta.computer.clone(),
        channel: at.meta.channel.clone(),
        event_id: at.meta.event_id.clone(),
        rule: m.rule,
        fields,
    }
}

/// What the timeline shows about the event of a hit.
#[derive(Debug)]
struct Meta {
    timestamp: String,
    computer: String,
    channel: String,
    event_id: String,
}

impl Meta {
    fn of_json(map: &Map<String, Json>) -> Self {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| map.get(*n).filter(|v| !v.is_null()))
                .map(text)
                .unwrap_or_default()
        };
        let host = map.get("host").and_then(|h| match h {
            Json::Object(h) => h.get("name").or_else(|| h.get("hostname")).map(text),
            Json::String(s) => Some(s.clone()),
            _ => None,
        });
        let computer = first(&["Computer", "hostname"]);
        Meta {
            timestamp: first(&[
                "@timestamp",
                "timestamp",
                "UtcTime",
                "TimeCreated",
                "EventTime",
            ]),
            computer: if computer.is_empty() {
                host.unwrap_or_default()
            } else {
                computer
            },
            channel: first(&["Channel"]),
            event_id: first(&["EventID"]),
        }
    }
}

fn push_hits(hits: &mut Vec<Hit>, path: &Path, record_id: u64, meta: &Meta, out: &mut Vec<Match>) {
    for m in out.drain(..) {
        hits.push(Hit {
            file: path.to_owned(),
            record_id,
            timestamp: meta.timestamp.clone(),
            computer: meta.computer.clone(),
            channel: meta.channel.clone(),
            event_id: meta.event_id.clone(),
            rule: m.rule,
            fields: m.fields,
        });
    }
}

/// Scans with already loaded rules and writes the timeline to `out` and the
/// problems and summary to `err`, on a pool of `config.thread_count()`
/// threads.
///
/// # Errors
/// When the pool cannot start or the output cannot be written.
pub fn hunt(
    config: &HuntConfig,
    rules: &RuleSet,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ScanReport, HuntError> {
    let threads = config.thread_count();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("picketctl-hunt-{i}"))
        .build()
        .map_err(|e| HuntError::ThreadPool {
            threads,
            reason: e.to_string(),
        })?;
    let (inputs, input_problems) = collect_inputs(&config.paths);
    let progress = progress_bar(config, &inputs);
    let options = ScanOptions {
        product: config.product.clone(),
        ..ScanOptions::default()
    };
    let mut report = pool.install(|| scan(rules, &inputs, &options, progress.as_ref()));
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    report.files_skipped += input_problems.len();
    report.problems.splice(0..0, input_problems);
    match config.format {
        Format::Csv => write_csv(out, &report.hits)?,
        Format::JsonLines => write_jsonl(out, &report.hits)?,
    }
    out.flush()?;
    for problem in &report.problems {
        writeln!(err, "picketctl: {problem}")?;
    }
    if report.problems_not_listed > 0 {
        writeln!(
            err,
            "picketctl: {} more problems not listed",
            report.problems_not_listed
        )?;
    }
    err.write_all(summary(&report, threads).as_bytes())?;
    Ok(report)
}

/// Loads the rules (printing each rule that fails with its file, rule and
/// place to `err`), then [`hunt`]s.
///
/// # Errors
/// When a rules path cannot be read, no rule loads, or [`hunt`] fails.
pub fn run(
    config: &HuntConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ScanReport, HuntError> {
    let start = Instant::now();
    let loaded = load_rules(&config.rules, &config.engine_config())?;
    for (path, e) in &loaded.unreadable {
        writeln!(
            err,
            "picketctl: rule file {}: unreadable: {e}",
            path.display()
        )?;
    }
    for e in &loaded.errors {
        writeln!(err, "picketctl: rule not loaded: {e}")?;
    }
    writeln!(
        err,
        "picketctl: {} rules loaded from {} files ({} rules not loaded, {} files unreadable) in {:.2}s",
        loaded.rules.len(),
        loaded.files,
        loaded.errors.len(),
        loaded.unreadable.len(),
        start.elapsed().as_secs_f64()
    )?;
    if loaded.rules.is_empty() {
        return Err(HuntError::NoRules(config.rules.clone()));
    }
    hunt(config, &loaded.rules, out, err)
}

/// A byte-count progress bar on stderr, only when stderr is a terminal (a
/// bar written into a redirected log is noise); stdout may be redirected,
/// which is how a timeline is usually saved.
fn progress_bar(config: &HuntConfig, inputs: &[Input]) -> Option<ProgressBar> {
    if !config.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = inputs
        .iter()
        .map(|i| std::fs::metadata(&i.path).map_or(0, |m| m.len()))
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
