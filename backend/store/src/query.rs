//! What the two SQL implementations share: the alert filter → SQL builder,
//! the stored codes of enums, the technique keys and the row decoding.
//!
//! Both dialects use the same table and column names (see the crate docs),
//! so one builder writes the `WHERE` clause; only placeholders (`?N` vs
//! `$N`) and the text search differ.

use std::collections::BTreeSet;

use crate::model::{
    Alert, AlertFilter, AlertSource, AlertStatus, Cursor, Device, HeartbeatInfo, Level, NewAlert,
    PLATFORM_LINUX,
};
use crate::StoreError;

/// A bound parameter of a built query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// Which SQL the builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A built statement and its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub sql: String,
    pub params: Vec<Param>,
}

/// How the level is narrowed in one built query.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LevelCond {
    None,
    AtLeast(i16),
    Exactly(i16),
}

/// The alert columns every alert query selects, in [`RawAlert`] order.
pub(crate) const ALERT_COLUMNS: &str = "a.row, a.id, a.device_id, a.seq, a.timestamp_ms, \
     a.received_ms, a.level, a.source, a.rule_id, a.rule_title, a.techniques, a.image, \
     a.command_line, a.path, a.event, a.status, a.assignee, a.updated_ms";

/// The Postgres expression the trigram index covers (must match the
/// migration's index expression character for character).
pub(crate) const PG_SEARCH_EXPR: &str = "(coalesce(a.image, '') || E'\\x1f' || \
     coalesce(a.command_line, '') || E'\\x1f' || coalesce(a.path, ''))";

/// How SQLite evaluates a text filter (Postgres' planner picks by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextPlan {
    /// Collect the trigram index's matches, then order them: best when the
    /// needle is rare. The index covers rows up to `indexed_row` (the
    /// search watermark); rows after it are tested one by one.
    Index { indexed_row: i64 },
    /// Walk the list order and test each row: best when the needle is
    /// common (a page fills after few rows).
    Scan,
}

/// Matches the SQLite text probe counts before it switches to [`TextPlan::Scan`].
///
/// Measured (README): collecting a match costs ~10 µs, testing a row in
/// list order with `LIKE` ~0.4 µs; 3,000 balances the two at 10M alerts.
pub(crate) const TEXT_PROBE_LIMIT: i64 = 3_000;

/// The SQLite FTS5 query for a needle: one quoted phrase.
pub(crate) fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Whether the needle can use the trigram index (3+ characters).
pub(crate) fn fts_usable(text: &str) -> bool {
    text.chars().count() >= 3
}

struct Builder {
    dialect: Dialect,
    params: Vec<Param>,
    text_plan: TextPlan,
}

impl Builder {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        match self.dialect {
            Dialect::Sqlite => format!("?{}", self.params.len()),
            // Typed, so a bigint parameter can meet a smallint column.
            Dialect::Postgres => match self.params.last() {
                Some(Param::Int(_)) => format!("${}::int8", self.params.len()),
                _ => format!("${}::text", self.params.len()),
            },
        }
    }

    /// The `FROM` clause and the alias whose `timestamp_ms`/`row` order the
    /// result. With a technique filter the query is driven by the technique
    /// table's `(technique, timestamp_ms, row)` key, which is already in
    /// list order, so a page never sorts more than it returns.
    fn from(f: &AlertFilter) -> (&'static str, &'static str) {
        if f.technique.is_some() {
            ("alert_techniques t JOIN alerts a ON a.row = t.row", "t")
        } else {
            ("alerts a", "a")
        }
    }

    fn conditions(&mut self, f: &AlertFilter, level: LevelCond, o: &str) -> Vec<String> {
        let mut c = Vec::new();
        // Hunting jobs' alerts are apart from the fleet's (crate::hunt);
        // `hunt_id = ?` uses the partial index that holds only theirs.
        match f.hunt_id {
            Some(h) => {
                let p = self.bind(Param::Int(h));
                c.push(format!("a.hunt_id = {p}"));
            }
            None => c.push("a.hunt_id IS NULL".to_owned()),
        }
        if let Some(t) = &f.technique {
            let p = self.bind(Param::Text(normalize_technique(t)));
            c.push(format!("t.technique = {p}"));
        }
        if let Some(d) = &f.device_id {
            let p = self.bind(Param::Text(d.clone()));
            c.push(format!("a.device_id = {p}"));
        }
        match level {
            LevelCond::None => {}
            LevelCond::AtLeast(l) => {
                let p = self.bind(Param::Int(i64::from(l)));
                c.push(format!("a.level >= {p}"));
            }
            LevelCond::Exactly(l) => {
                let p = self.bind(Param::Int(i64::from(l)));
                c.push(format!("a.level = {p}"));
            }
        }
        if let Some(r) = &f.rule_id {
            let p = self.bind(Param::Text(r.clone()));
            c.push(format!("a.rule_id = {p}"));
        }
        if let Some(s) = f.status {
            let p = self.bind(Param::Int(i64::from(status_code(s))));
            c.push(format!("a.status = {p}"));
        }
        if let Some(s) = f.source {
            let p = self.bind(Param::Int(i64::from(source_code(s))));
            c.push(format!("a.source = {p}"));
        }
        if let Some(s) = f.since_ms {
            let p = self.bind(Param::Int(s));
            c.push(format!("{o}.timestamp_ms >= {p}"));
        }
        if let Some(u) = f.until_ms {
            let p = self.bind(Param::Int(u));
            c.push(format!("{o}.timestamp_ms < {p}"));
        }
        if let Some(text) = f.text.as_deref().filter(|t| !t.is_empty()) {
            c.push(self.text_condition(text));
        }
        c
    }

    fn text_condition(&mut self, text: &str) -> String {
        match (self.dialect, self.text_plan) {
            // The trigram tokenizer folds case and indexes every 3-character
            // window, so a quoted phrase is exactly a case-insensitive
            // substring test. Rows past the watermark are not indexed yet
            // (the background indexer lags ingest by a bounded number of
            // rows): they are tested directly, in the same snapshot.
            (Dialect::Sqlite, TextPlan::Index { indexed_row }) if fts_usable(text) => {
                let p = self.bind(Param::Text(fts_phrase(text)));
                let w = self.bind(Param::Int(indexed_row));
                // `u`, not `t`: the technique join uses `t` outside.
                let tail = self.row_test(text, "u");
                format!(
                    "a.row IN (SELECT rowid FROM alerts_fts WHERE alerts_fts MATCH {p} \
                     AND rowid <= {w} UNION ALL SELECT u.row FROM alerts u \
                     WHERE u.row > {w} AND {tail})"
                )
            }
            (Dialect::Sqlite, _) => self.row_test(text, "a"),
            (Dialect::Postgres, _) => {
                let p = self.bind(Param::Text(like_pattern(text)));
                format!("{PG_SEARCH_EXPR} ILIKE {p}")
            }
        }
    }

    /// A SQLite test of one row (alias `o`) against the needle, without
    /// the index. LIKE folds ASCII case exactly as the trigram tokenizer
    /// does and is the cheapest test; other needles go through
    /// `picket_icontains` (Unicode lower case, as the tokenizer folds).
    fn row_test(&mut self, text: &str, o: &str) -> String {
        if text.is_ascii() {
            let p = self.bind(Param::Text(like_pattern(text)));
            format!(
                "({o}.command_line LIKE {p} ESCAPE '\\' OR {o}.image LIKE {p} ESCAPE '\\' \
                 OR {o}.path LIKE {p} ESCAPE '\\')"
            )
        } else {
            let p = self.bind(Param::Text(text.to_lowercase()));
            format!("picket_icontains({p}, {o}.image, {o}.command_line, {o}.path)")
        }
    }
}

/// Whether any of `haystacks` contains `needle_lower` ignoring case
/// (Unicode lower case): the SQLite `picket_icontains` function.
pub(crate) fn icontains(needle_lower: &str, haystacks: &[Option<&str>]) -> bool {
    haystacks.iter().flatten().any(|h| {
        if h.is_ascii() && needle_lower.is_ascii() {
            h.to_ascii_lowercase().contains(needle_lower)
        } else {
            h.to_lowercase().contains(needle_lower)
        }
    })
}

/// `%needle%` with LIKE's wildcards escaped by `\`.
fn like_pattern(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('%');
    s
}

fn where_sql(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// One page query: alerts matching `f` (and `level`) after `after`, newest
/// first, at most `limit` rows.
pub(crate) fn list_query(
    dialect: Dialect,
    f: &AlertFilter,
    level: LevelCond,
    after: Option<Cursor>,
    limit: i64,
    text_plan: TextPlan,
) -> Built {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
        text_plan,
    };
    let (from, o) = Builder::from(f);
    let mut conds = b.conditions(f, level, o);
    if let Some(c) = after {
        let t = b.bind(Param::Int(c.timestamp_ms));
        let r = b.bind(Param::Int(c.row));
        conds.push(format!("({o}.timestamp_ms, {o}.row) < ({t}, {r})"));
    }
    let l = b.bind(Param::Int(limit));
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM {from}{} ORDER BY {o}.timestamp_ms DESC, {o}.row DESC LIMIT {l}",
        where_sql(&conds)
    );
    Built {
        sql,
        params: b.params,
    }
}

/// The count-per-bucket-and-level query (`bucket_ms` must be positive).
pub(crate) fn count_query(
    dialect: Dialect,
    f: &AlertFilter,
    bucket_ms: i64,
    text_plan: TextPlan,
) -> Built {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
        text_plan,
    };
    let (from, o) = Builder::from(f);
    let level = f
        .min_level
        .map_or(LevelCond::None, |l| LevelCond::AtLeast(l.as_i16()));
    let conds = b.conditions(f, level, o);
    let w = b.bind(Param::Int(bucket_ms));
    // Floor, not truncation, so buckets before 1970 start at a multiple too.
    let sql = format!(
        "SELECT {o}.timestamp_ms - ((({o}.timestamp_ms % {w}) + {w}) % {w}) AS bucket, a.level, \
         count(*) FROM {from}{} GROUP BY bucket, a.level ORDER BY bucket, a.level",
        where_sql(&conds)
    );
    Built {
        sql,
        params: b.params,
    }
}

/// The spans of the alert count rollup (`alert_rollup.span_ms`), coarsest
/// first: an hour and a minute.
pub(crate) const ROLLUP_SPANS: [i64; 2] = [3_600_000, 60_000];

/// The lowest timestamp the rollup counts: the first hour boundary above
/// `i64::MIN` (older buckets could not be named). Alerts before it (none
/// that are real) are only ever counted by a scan.
pub(crate) const ROLLUP_MIN_MS: i64 =
    i64::MIN + (ROLLUP_SPANS[0] - i64::MIN.rem_euclid(ROLLUP_SPANS[0])) % ROLLUP_SPANS[0];

/// The start of the `span_ms` bucket holding `ts` (both rollup spans
/// divide [`ROLLUP_MIN_MS`], so this cannot overflow for `ts` at or
/// above it).
fn rollup_floor(ts: i64, span_ms: i64) -> i64 {
    ts - ts.rem_euclid(span_ms)
}

/// One row of `alert_rollup`: alerts per span, bucket start, level,
/// status and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RollupKey {
    pub span_ms: i64,
    pub start_ms: i64,
    pub level: i16,
    pub status: i16,
    pub source: i16,
}

/// Changes to `alert_rollup` gathered by one transaction (inserted,
/// deleted or re-triaged alerts), applied as one write per key, in key
/// order (so concurrent Postgres writers lock the rows in one order).
#[derive(Debug, Default)]
pub(crate) struct RollupDelta(std::collections::BTreeMap<RollupKey, i64>);

impl RollupDelta {
    /// Counts `n` (negative: uncounts) alerts at `ts` in every span.
    pub(crate) fn add(&mut self, ts: i64, level: i16, status: i16, source: i16, n: i64) {
        if ts < ROLLUP_MIN_MS {
            return;
        }
        for span_ms in ROLLUP_SPANS {
            let key = RollupKey {
                span_ms,
                start_ms: rollup_floor(ts, span_ms),
                level,
                status,
                source,
            };
            *self.0.entry(key).or_insert(0) += n;
        }
    }

    /// [`RollupDelta::add`] for codes as read from a row: a damaged row
    /// (a code outside `i16`, written around the store) is not counted,
    /// as it was never counted in.
    pub(crate) fn add_stored(&mut self, ts: i64, level: i64, status: i64, source: i64, n: i64) {
        if let (Ok(level), Ok(status), Ok(source)) = (
            i16::try_from(level),
            i16::try_from(status),
            i16::try_from(source),
        ) {
            self.add(ts, level, status, source, n);
        }
    }

    /// The non-zero changes, in key order.
    pub(crate) fn changes(&self) -> Vec<(RollupKey, i64)> {
        self.0
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| (*k, *n))
            .collect()
    }
}

/// One part of an `alert_counts` answer: the parts of a plan cover the
/// filter's time range exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountPart {
    /// Sum the rollup rows of `span_ms` whose bucket starts in `[lo, hi)`
    /// (`hi` `None`: no upper bound).
    Rollup {
        span_ms: i64,
        lo: i64,
        hi: Option<i64>,
    },
    /// Count the alerts with `timestamp_ms` in `[lo, hi)` one by one.
    Scan { lo: Option<i64>, hi: Option<i64> },
}

/// How to answer `alert_counts(f, bucket_ms)`: `None` when the rollup
/// cannot (a device, rule, technique or text filter, or a bucket that is
/// not a whole number of minutes): then one scan answers. Otherwise whole
/// hours come from the hourly rollup, whole minutes at the range's edges
/// from the per-minute rollup, and only the sub-minute ends are scanned
/// (with the UI's `since = now - 24 h` that is under two minutes of
/// alerts).
pub(crate) fn count_plan(f: &AlertFilter, bucket_ms: i64) -> Option<Vec<CountPart>> {
    // The rollup counts only the fleet's alerts, never a hunting job's.
    let representable = f.device_id.is_none()
        && f.hunt_id.is_none()
        && f.rule_id.is_none()
        && f.technique.is_none()
        && f.text.as_deref().is_none_or(str::is_empty);
    let spans: Vec<i64> = ROLLUP_SPANS
        .into_iter()
        .filter(|s| bucket_ms % s == 0)
        .collect();
    if !representable || spans.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    // Below the rollup's range: a scan (of nothing, in practice), both
    // ends bounded so SQLite walks the time index.
    if f.since_ms.is_none_or(|l| l < ROLLUP_MIN_MS) {
        let hi = f.until_ms.map_or(ROLLUP_MIN_MS, |h| h.min(ROLLUP_MIN_MS));
        parts.push(CountPart::Scan {
            lo: Some(f.since_ms.unwrap_or(i64::MIN)),
            hi: Some(hi),
        });
    }
    let lo = f.since_ms.map_or(ROLLUP_MIN_MS, |l| l.max(ROLLUP_MIN_MS));
    if f.until_ms.is_none_or(|h| h > lo) {
        split_range(lo, f.until_ms, &spans, &mut parts);
    }
    Some(parts)
}

/// Covers `[lo, hi)` (`lo >= ROLLUP_MIN_MS`, `hi` `None`: unbounded) with
/// whole buckets of the first span, and the ends with the finer ones.
fn split_range(lo: i64, hi: Option<i64>, spans: &[i64], out: &mut Vec<CountPart>) {
    let Some((&span, finer)) = spans.split_first() else {
        out.push(CountPart::Scan { lo: Some(lo), hi });
        return;
    };
    let first = match lo.rem_euclid(span) {
        0 => Some(lo),
        r => lo.checked_add(span - r),
    };
    let last = hi.map(|h| rollup_floor(h, span));
    match first {
        Some(a) if last.is_none_or(|b| a < b) => {
            out.push(CountPart::Rollup {
                span_ms: span,
                lo: a,
                hi: last,
            });
            if lo < a {
                split_range(lo, Some(a), finer, out);
            }
            if let (Some(b), Some(h)) = (last, hi) {
                if b < h {
                    split_range(b, Some(h), finer, out);
                }
            }
        }
        _ => split_range(lo, hi, finer, out),
    }
}

/// The query summing one rollup part per bucket and level (`f` must be
/// one [`count_plan`] accepted).
pub(crate) fn rollup_query(
    dialect: Dialect,
    f: &AlertFilter,
    span_ms: i64,
    lo: i64,
    hi: Option<i64>,
    bucket_ms: i64,
) -> Built {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
        text_plan: TextPlan::Scan,
    };
    let mut c = Vec::new();
    let p = b.bind(Param::Int(span_ms));
    c.push(format!("span_ms = {p}"));
    let p = b.bind(Param::Int(lo));
    c.push(format!("start_ms >= {p}"));
    if let Some(hi) = hi {
        let p = b.bind(Param::Int(hi));
        c.push(format!("start_ms < {p}"));
    }
    if let Some(l) = f.min_level {
        let p = b.bind(Param::Int(i64::from(l.as_i16())));
        c.push(format!("level >= {p}"));
    }
    if let Some(s) = f.status {
        let p = b.bind(Param::Int(i64::from(status_code(s))));
        c.push(format!("status = {p}"));
    }
    if let Some(s) = f.source {
        let p = b.bind(Param::Int(i64::from(source_code(s))));
        c.push(format!("source = {p}"));
    }
    let w = b.bind(Param::Int(bucket_ms));
    let sum = match dialect {
        Dialect::Sqlite => "sum(count)",
        // sum(bigint) is numeric in Postgres.
        Dialect::Postgres => "sum(count)::int8",
    };
    let sql = format!(
        "SELECT start_ms - (((start_ms % {w}) + {w}) % {w}) AS bucket, level, {sum} \
         FROM alert_rollup{} GROUP BY bucket, level",
        where_sql(&c)
    );
    Built {
        sql,
        params: b.params,
    }
}

/// Adds up the rows of a plan's parts into buckets, by start then level.
pub(crate) fn merge_counts(
    rows: impl IntoIterator<Item = (i64, i64, i64)>,
) -> Result<Vec<crate::model::CountBucket>, StoreError> {
    let mut sums: std::collections::BTreeMap<(i64, i64), i64> = std::collections::BTreeMap::new();
    for (bucket, level, n) in rows {
        let s = sums.entry((bucket, level)).or_insert(0);
        *s = s.checked_add(n).ok_or_else(|| {
            StoreError::Backend(format!("alert_counts: bucket {bucket}: count overflows"))
        })?;
    }
    sums.into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((b, l), n)| count_bucket(b, l, n))
        .collect()
}

/// The level split a list query uses: a minimum level becomes one query
/// per level (each walks its `(level, timestamp_ms)` index in order) whose
/// pages are merged, instead of one query that would sort every match.
pub(crate) fn level_plan(f: &AlertFilter) -> Vec<LevelCond> {
    match f.min_level {
        None | Some(Level::Informational) => vec![LevelCond::None],
        Some(l) => (l.as_i16()..=Level::Critical.as_i16())
            .map(LevelCond::Exactly)
            .collect(),
    }
}

/// Merges per-level pages (each newest first) into one page of `limit`.
pub(crate) fn merge_pages(pages: Vec<Vec<(i64, Alert)>>, limit: usize) -> Vec<(i64, Alert)> {
    if pages.len() == 1 {
        return pages.into_iter().flatten().take(limit).collect();
    }
    let mut all: Vec<(i64, Alert)> = pages.into_iter().flatten().collect();
    all.sort_by_key(|(row, a)| std::cmp::Reverse((a.alert.timestamp_ms, *row)));
    all.truncate(limit);
    all
}

/// Builds the page from up to `limit + 1` rows (the extra row only says
/// that there is a next page).
pub(crate) fn into_page(mut rows: Vec<(i64, Alert)>, limit: usize) -> crate::model::AlertPage {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|(row, a)| Cursor {
            timestamp_ms: a.alert.timestamp_ms,
            row: *row,
        })
    } else {
        None
    };
    crate::model::AlertPage {
        alerts: rows.into_iter().map(|(_, a)| a).collect(),
        next,
    }
}

/// The audit log query, newest first.
pub(crate) fn audit_query(dialect: Dialect, f: &crate::model::AuditFilter, limit: i64) -> Built {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
        text_plan: TextPlan::Scan,
    };
    let mut conds = Vec::new();
    if let Some(a) = &f.actor {
        let p = b.bind(Param::Text(a.clone()));
        conds.push(format!("actor = {p}"));
    }
    if let Some(pre) = f.action_prefix.as_deref().filter(|p| !p.is_empty()) {
        // substr/length, not LIKE: LIKE would be case-insensitive in SQLite
        // and would need its wildcards escaped.
        let p = b.bind(Param::Text(pre.to_owned()));
        conds.push(format!("substr(action, 1, length({p})) = {p}"));
    }
    if let Some(id) = f.before_id {
        let p = b.bind(Param::Int(id));
        conds.push(format!("id < {p}"));
    }
    if let Some(s) = f.since_ms {
        let p = b.bind(Param::Int(s));
        conds.push(format!("at_ms >= {p}"));
    }
    let l = b.bind(Param::Int(limit));
    let sql = format!(
        "SELECT id, at_ms, actor, action, target, detail FROM audit_log{} ORDER BY id DESC LIMIT {l}",
        where_sql(&conds)
    );
    Built {
        sql,
        params: b.params,
    }
}

/// The technique filter key: trimmed, upper case.
pub(crate) fn normalize_technique(t: &str) -> String {
    t.trim().to_ascii_uppercase()
}

/// The keys an alert is findable by: each technique and each of its parents
/// (`T1059.004` → `T1059.004`, `T1059`).
pub(crate) fn technique_keys(techniques: &[String]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for t in techniques {
        let t = normalize_technique(t);
        if t.is_empty() {
            continue;
        }
        for (i, ch) in t.char_indices() {
            if ch == '.' && i > 0 {
                keys.insert(t[..i].to_owned());
            }
        }
        keys.insert(t);
    }
    keys
}

pub(crate) const fn status_code(s: AlertStatus) -> i16 {
    match s {
        AlertStatus::New => 0,
        AlertStatus::Acknowledged => 1,
        AlertStatus::Resolved => 2,
    }
}

pub(crate) const fn status_from(v: i16) -> Option<AlertStatus> {
    Some(match v {
        0 => AlertStatus::New,
        1 => AlertStatus::Acknowledged,
        2 => AlertStatus::Resolved,
        _ => return None,
    })
}

pub(crate) const fn source_code(s: AlertSource) -> i16 {
    match s {
        AlertSource::Appliance => 0,
        AlertSource::Windows => 1,
        AlertSource::Macos => 2,
        AlertSource::Upload => 3,
    }
}

pub(crate) const fn source_from(v: i16) -> Option<AlertSource> {
    Some(match v {
        0 => AlertSource::Appliance,
        1 => AlertSource::Windows,
        2 => AlertSource::Macos,
        3 => AlertSource::Upload,
        _ => return None,
    })
}

/// `u64` → stored `i64`, refusing values the column cannot hold.
pub(crate) fn to_i64(op: &str, what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{op}: {what} {v} exceeds i64")))
}

/// Stored `i64` → `u64`, refusing negative values.
pub(crate) fn to_u64(op: &str, what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Backend(format!("{op}: {what} is negative ({v})")))
}

/// An alert row as read, before its codes and JSON are checked.
#[derive(Debug)]
pub(crate) struct RawAlert {
    pub row: i64,
    pub id: String,
    pub device_id: String,
    pub seq: i64,
    pub timestamp_ms: i64,
    pub received_ms: i64,
    pub level: i64,
    pub source: i64,
    pub rule_id: String,
    pub rule_title: String,
    pub techniques: String,
    pub image: Option<String>,
    pub command_line: Option<String>,
    pub path: Option<String>,
    pub event: Result<serde_json::Value, String>,
    pub status: i64,
    pub assignee: Option<String>,
    pub updated_ms: i64,
}

impl RawAlert {
    /// Checks the row; a bad stored value is an error naming the alert.
    pub(crate) fn decode(self, op: &str) -> Result<(i64, Alert), StoreError> {
        let id = self.id;
        let bad = |what: &str| {
            StoreError::Backend(format!("{op}: alert {id} (row {}): {what}", self.row))
        };
        let level = i16::try_from(self.level)
            .ok()
            .and_then(Level::from_i16)
            .ok_or_else(|| bad(&format!("unknown level {}", self.level)))?;
        let source = i16::try_from(self.source)
            .ok()
            .and_then(source_from)
            .ok_or_else(|| bad(&format!("unknown source {}", self.source)))?;
        let status = i16::try_from(self.status)
            .ok()
            .and_then(status_from)
            .ok_or_else(|| bad(&format!("unknown status {}", self.status)))?;
        let seq =
            u64::try_from(self.seq).map_err(|_| bad(&format!("negative seq {}", self.seq)))?;
        let techniques: Vec<String> = serde_json::from_str(&self.techniques)
            .map_err(|e| bad(&format!("bad techniques JSON: {e}")))?;
        let event = self
            .event
            .map_err(|e| bad(&format!("bad event JSON: {e}")))?;
        let alert = Alert {
            alert: NewAlert {
                id: id.clone(),
                device_id: self.device_id,
                seq,
                timestamp_ms: self.timestamp_ms,
                received_ms: self.received_ms,
                level,
                source,
                rule_id: self.rule_id,
                rule_title: self.rule_title,
                techniques,
                image: self.image,
                command_line: self.command_line,
                path: self.path,
                event,
            },
            status,
            assignee: self.assignee,
            updated_ms: self.updated_ms,
        };
        Ok((self.row, alert))
    }
}

/// An alert prepared for insertion (JSON serialized, ints checked).
#[derive(Debug)]
pub(crate) struct AlertIn {
    pub id: String,
    pub device_id: String,
    pub seq: i64,
    pub timestamp_ms: i64,
    pub received_ms: i64,
    pub level: i16,
    pub source: i16,
    pub rule_id: String,
    pub rule_title: String,
    pub techniques: String,
    pub keys: BTreeSet<String>,
    pub image: Option<String>,
    pub command_line: Option<String>,
    pub path: Option<String>,
    pub event: String,
}

impl AlertIn {
    pub(crate) fn prepare(a: &NewAlert) -> Result<Self, StoreError> {
        const OP: &str = "insert_alerts";
        let json = |r: serde_json::Result<String>| {
            r.map_err(|e| {
                StoreError::Backend(format!("{OP}: alert {}: cannot serialize: {e}", a.id))
            })
        };
        Ok(Self {
            id: a.id.clone(),
            device_id: a.device_id.clone(),
            seq: to_i64(OP, &format!("alert {} seq", a.id), a.seq)?,
            timestamp_ms: a.timestamp_ms,
            received_ms: a.received_ms,
            level: a.level.as_i16(),
            source: source_code(a.source),
            rule_id: a.rule_id.clone(),
            rule_title: a.rule_title.clone(),
            techniques: json(serde_json::to_string(&a.techniques))?,
            keys: technique_keys(&a.techniques),
            image: a.image.clone(),
            command_line: a.command_line.clone(),
            path: a.path.clone(),
            event: json(serde_json::to_string(&a.event))?,
        })
    }
}

/// A device row as read.
#[derive(Debug)]
pub(crate) struct RawDevice {
    pub id: String,
    pub hostname: String,
    pub public_key: Vec<u8>,
    pub cert_serial: String,
    pub enrolled_ms: i64,
    pub revoked_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub last_alert_seq: i64,
    pub heartbeat: Option<String>,
    /// The agent's platform (`agents` table), `None` for an appliance.
    pub platform: Option<String>,
}

/// The device columns every device query selects (`FROM devices`), in
/// [`RawDevice`] order.
pub(crate) const DEVICE_COLUMNS: &str = "id, hostname, public_key, cert_serial, enrolled_ms, \
     revoked_ms, last_seen_ms, last_alert_seq, heartbeat, \
     (SELECT platform FROM agents WHERE agents.device_id = devices.id)";

impl RawDevice {
    pub(crate) fn decode(self, op: &str) -> Result<Device, StoreError> {
        let id = self.id;
        let last_alert_seq = to_u64(
            op,
            &format!("device {id} last_alert_seq"),
            self.last_alert_seq,
        )?;
        let heartbeat = self
            .heartbeat
            .map(|h| serde_json::from_str::<HeartbeatInfo>(&h))
            .transpose()
            .map_err(|e| {
                StoreError::Backend(format!("{op}: device {id}: bad heartbeat JSON: {e}"))
            })?;
        Ok(Device {
            id,
            hostname: self.hostname,
            public_key: self.public_key,
            cert_serial: self.cert_serial,
            enrolled_ms: self.enrolled_ms,
            revoked_ms: self.revoked_ms,
            last_seen_ms: self.last_seen_ms,
            last_alert_seq,
            heartbeat,
            platform: self.platform.unwrap_or_else(|| PLATFORM_LINUX.to_owned()),
        })
    }
}

/// Checks a bucket width.
pub(crate) fn check_bucket(bucket_ms: i64) -> Result<(), StoreError> {
    if bucket_ms > 0 {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "alert_counts: bucket_ms must be positive, got {bucket_ms}"
        )))
    }
}

/// A count row → bucket.
pub(crate) fn count_bucket(
    start_ms: i64,
    level: i64,
    count: i64,
) -> Result<crate::model::CountBucket, StoreError> {
    let level = i16::try_from(level)
        .ok()
        .and_then(Level::from_i16)
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "alert_counts: bucket {start_ms}: unknown level {level}"
            ))
        })?;
    Ok(crate::model::CountBucket {
        start_ms,
        level,
        count: to_u64("alert_counts", "count", count)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Store;

    /// Checks the rollup's answers for a store holding alerts around
    /// `1699999200000` (an hour edge) against a scan: 1 s buckets are
    /// never answered from the rollup, folded into the wider bucket.
    pub(crate) async fn assert_counts_match_scan(s: &dyn Store) {
        const H: i64 = 3_600_000;
        let t = 1_699_999_200_000;
        let filters = [
            AlertFilter::default(),
            AlertFilter {
                since_ms: Some(t - H - 1),
                until_ms: Some(t + 5 * H + 61_001),
                ..AlertFilter::default()
            },
            AlertFilter {
                since_ms: Some(t + 1),
                status: Some(AlertStatus::Acknowledged),
                ..AlertFilter::default()
            },
            AlertFilter {
                min_level: Some(Level::High),
                source: Some(AlertSource::Windows),
                ..AlertFilter::default()
            },
        ];
        let mut total = 0;
        for f in &filters {
            for bucket in [60_000, H, 86_400_000] {
                let got: Vec<(i64, Level, u64)> = s
                    .alert_counts(f, bucket)
                    .await
                    .expect("counts")
                    .iter()
                    .map(|c| (c.start_ms, c.level, c.count))
                    .collect();
                let mut sums = std::collections::BTreeMap::new();
                for c in s.alert_counts(f, 1_000).await.expect("scan") {
                    *sums
                        .entry((c.start_ms.div_euclid(bucket) * bucket, c.level))
                        .or_insert(0) += c.count;
                }
                let want: Vec<(i64, Level, u64)> =
                    sums.into_iter().map(|((b, l), n)| (b, l, n)).collect();
                assert_eq!(got, want, "{f:?} per {bucket} ms");
                total += got.len();
            }
        }
        assert!(total > 0, "no alerts counted");
    }

    #[test]
    fn technique_keys_include_parents() {
        let k = technique_keys(&["t1059.004".into(), "T1059".into(), " ".into()]);
        assert_eq!(
            k.into_iter().collect::<Vec<_>>(),
            vec!["T1059".to_owned(), "T1059.004".to_owned()]
        );
    }

    /// How many parts of `plan` count an alert at `ts`.
    fn times_counted(plan: &[CountPart], ts: i64) -> usize {
        plan.iter()
            .filter(|p| match **p {
                CountPart::Rollup { span_ms, lo, hi } => {
                    ts >= ROLLUP_MIN_MS && {
                        let start = rollup_floor(ts, span_ms);
                        start >= lo && hi.is_none_or(|h| start < h)
                    }
                }
                CountPart::Scan { lo, hi } => {
                    lo.is_none_or(|l| ts >= l) && hi.is_none_or(|h| ts < h)
                }
            })
            .count()
    }

    #[test]
    fn count_plans_cover_the_range_exactly_once() {
        const H: i64 = 3_600_000;
        const M: i64 = 60_000;
        let t = 1_700_000_000_000 - 1_700_000_000_000 % H;
        let edges = [
            None,
            Some(i64::MIN),
            Some(ROLLUP_MIN_MS - 1),
            Some(ROLLUP_MIN_MS),
            Some(-H - 1),
            Some(0),
            Some(t - 1),
            Some(t),
            Some(t + 1),
            Some(t + M - 1),
            Some(t + M),
            Some(t + H - 1),
            Some(t + 5 * H + 7 * M + 13),
            Some(i64::MAX - 1),
            Some(i64::MAX),
        ];
        let probes: Vec<i64> = edges
            .iter()
            .flatten()
            .flat_map(|e| [e.saturating_sub(1), *e, e.saturating_add(1)])
            .chain([t + 2 * H + 30 * M, -H + 5, 12_345])
            .collect();
        for bucket in [M, 5 * M, H, 6 * H, 31 * 86_400_000] {
            for since in edges {
                for until in edges {
                    let f = AlertFilter {
                        since_ms: since,
                        until_ms: until,
                        ..AlertFilter::default()
                    };
                    let plan = count_plan(&f, bucket).expect("representable");
                    for &ts in &probes {
                        let want = usize::from(
                            since.is_none_or(|l| ts >= l) && until.is_none_or(|h| ts < h),
                        );
                        assert_eq!(
                            times_counted(&plan, ts),
                            want,
                            "ts {ts} since {since:?} until {until:?} bucket {bucket}: {plan:?}"
                        );
                    }
                    // Rollup parts are whole buckets of their span, and
                    // their spans divide the answer's buckets.
                    for p in &plan {
                        if let CountPart::Rollup { span_ms, lo, hi } = *p {
                            assert_eq!(bucket % span_ms, 0);
                            assert_eq!(lo.rem_euclid(span_ms), 0);
                            assert!(hi.is_none_or(|h| h.rem_euclid(span_ms) == 0));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn count_plans_use_the_rollup_only_when_it_answers() {
        let base = AlertFilter {
            since_ms: Some(1_700_000_000_123),
            ..AlertFilter::default()
        };
        assert!(count_plan(&base, 3_600_000).is_some());
        assert!(count_plan(&base, 1_000).is_none());
        assert!(count_plan(&base, 90_000).is_none());
        let with = |f: AlertFilter| count_plan(&f, 3_600_000);
        assert!(with(AlertFilter {
            device_id: Some("d".into()),
            ..base.clone()
        })
        .is_none());
        assert!(with(AlertFilter {
            rule_id: Some("r".into()),
            ..base.clone()
        })
        .is_none());
        assert!(with(AlertFilter {
            technique: Some("T1059".into()),
            ..base.clone()
        })
        .is_none());
        assert!(with(AlertFilter {
            text: Some("curl".into()),
            ..base.clone()
        })
        .is_none());
        assert!(with(AlertFilter {
            text: Some(String::new()),
            min_level: Some(Level::High),
            status: Some(AlertStatus::New),
            source: Some(AlertSource::Upload),
            ..base.clone()
        })
        .is_some());
        // 24 h back from an arbitrary "now": the scans cover under two
        // minutes, the rest is read from the rollup.
        let plan = count_plan(&base, 3_600_000).expect("plan");
        let scanned: i64 = plan
            .iter()
            .map(|p| match *p {
                CountPart::Scan {
                    lo: Some(lo),
                    hi: Some(hi),
                } if lo >= ROLLUP_MIN_MS => hi - lo,
                _ => 0,
            })
            .sum();
        assert!(scanned < 120_000, "{plan:?}");
    }

    #[test]
    fn rollup_bound_matches_the_migrations() {
        // The migrations' backfill spells the bound out.
        assert_eq!(ROLLUP_MIN_MS, -9_223_372_036_854_000_000);
        assert_eq!(ROLLUP_MIN_MS.rem_euclid(ROLLUP_SPANS[0]), 0);
        assert_eq!(ROLLUP_SPANS[0] % ROLLUP_SPANS[1], 0);
    }

    #[test]
    fn rollup_deltas_cancel_and_skip_unbucketable_times() {
        let mut d = RollupDelta::default();
        d.add(3_600_000 + 61_000, 2, 0, 0, 1);
        d.add(3_600_000 + 62_000, 2, 0, 0, 1);
        d.add(3_600_000 + 62_000, 2, 0, 0, -1);
        d.add(ROLLUP_MIN_MS - 1, 2, 0, 0, 1);
        d.add_stored(0, 70_000, 0, 0, 1);
        let got: Vec<(i64, i64, i64)> = d
            .changes()
            .into_iter()
            .map(|(k, n)| (k.span_ms, k.start_ms, n))
            .collect();
        assert_eq!(got, vec![(60_000, 3_660_000, 1), (3_600_000, 3_600_000, 1)]);
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
