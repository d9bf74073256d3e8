//! What the two SQL implementations share: the alert filter → SQL builder,
//! the stored codes of enums, the technique keys and the row decoding.
//!
//! Both dialects use the same table and column names (see the crate docs),
//! so one builder writes the `WHERE` clause; only placeholders (`?N` vs
//! `$N`) and the text search differ.

use std::collections::BTreeSet;

use crate::model::{
    Alert, AlertFilter, AlertSource, AlertStatus, Cursor, Device, HeartbeatInfo, Level, NewAlert,
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
}

/// The device columns every device query selects, in [`RawDevice`] order.
pub(crate) const DEVICE_COLUMNS: &str = "id, hostname, public_key, cert_serial, enrolled_ms, \
     revoked_ms, last_seen_ms, last_alert_seq, heartbeat";

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
mod tests {
    use super::*;

    #[test]
    fn technique_keys_include_parents() {
        let k = technique_keys(&["t1059.004".into(), "T1059".into(), " ".into()]);
        assert_eq!(
            k.into_iter().collect::<Vec<_>>(),
            vec!["T1059".to_owned(), "T1059.004".to_owned()]
        );
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
