//! The timeline (CSV or JSON lines) and the summary.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use super::{Hit, ScanReport};

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 13] = [
    "timestamp",
    "computer",
    "channel",
    "event_id",
    "level",
    "rule_title",
    "rule_id",
    "author",
    "tags",
    "file",
    "record_id",
    "rule_file",
    "matched",
];

/// One CSV field per RFC 4180: quoted (with `"` doubled) when it holds a
/// comma, a quote, a CR or a LF; as is otherwise.
#[must_use]
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

fn matched_text(hit: &Hit) -> String {
    let mut s = String::new();
    for (i, f) in hit.fields.iter().enumerate() {
        if i > 0 {
            s.push_str(" | ");
        }
        let _ = write!(s, "{}: {}", f.name, f.value);
    }
    s
}

/// Writes the hits as CSV with a header row, CRLF-free (`\n` line ends).
/// `tags` are joined with `;`, `matched` is `Field: value | Field: value`.
///
/// # Errors
/// When writing fails.
pub fn write_csv(out: &mut dyn Write, hits: &[Hit]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    writeln!(w, "{}", CSV_HEADER.join(","))?;
    let mut line = String::new();
    for hit in hits {
        line.clear();
        let rule = &hit.rule;
        let record_id = hit.record_id.to_string();
        let file = hit.file.display().to_string();
        let rule_file = rule.path.display().to_string();
        let fields: [&str; 13] = [
            &hit.timestamp,
            &hit.computer,
            &hit.channel,
            &hit.event_id,
            rule.level.map_or("", |l| l.as_str()),
            &rule.title,
            rule.id.as_deref().unwrap_or(""),
            rule.author.as_deref().unwrap_or(""),
            &rule.tags.join(";"),
            &file,
            &record_id,
            &rule_file,
            &matched_text(hit),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&csv_field(f));
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()
}

#[derive(Serialize)]
struct JsonHit<'a> {
    timestamp: &'a str,
    computer: &'a str,
    channel: &'a str,
    event_id: &'a str,
    level: Option<&'static str>,
    rule_title: &'a str,
    rule_id: Option<&'a str>,
    author: Option<&'a str>,
    tags: &'a [String],
    techniques: &'a [String],
    file: Cow<'a, str>,
    record_id: u64,
    rule_file: Cow<'a, str>,
    matched: Vec<JsonField<'a>>,
}

#[derive(Serialize)]
struct JsonField<'a> {
    field: &'a str,
    value: &'a str,
}

/// Writes one JSON object per hit, keys in a fixed order.
///
/// # Errors
/// When writing fails.
pub fn write_jsonl(out: &mut dyn Write, hits: &[Hit]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    for hit in hits {
        let rule = &hit.rule;
        let row = JsonHit {
            timestamp: &hit.timestamp,
            computer: &hit.computer,
            channel: &hit.channel,
            event_id: &hit.event_id,
            level: rule.level.map(picket_rules::Level::as_str),
            rule_title: &rule.title,
            rule_id: rule.id.as_deref(),
            author: rule.author.as_deref(),
            tags: &rule.tags,
            techniques: &rule.techniques,
            file: hit.file.to_string_lossy(),
            record_id: hit.record_id,
            rule_file: rule.path.to_string_lossy(),
            matched: hit
                .fields
                .iter()
                .map(|f| JsonField {
                    field: &f.name,
                    value: &f.value,
                })
                .collect(),
        };
        serde_json::to_writer(&mut w, &row)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The summary printed on stderr: counts, rate, matches by level and by
/// rule (most matches first).
#[must_use]
pub fn summary(report: &ScanReport, threads: usize) -> String {
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        report.records as f64 / secs
    } else {
        0.0
    };
    let record_problems = report
        .problems
        .iter()
        .filter(|p| !p.is_file_skipped())
        .count() as u64
        + report.problems_not_listed;
    let mut by_rule: BTreeMap<(&str, &str), (usize, &str)> = BTreeMap::new();
    let mut by_level: BTreeMap<u8, usize> = BTreeMap::new();
    for hit in &report.hits {
        let level = hit.rule.level.map_or("", |l| l.as_str());
        let rank = match level {
            "critical" => 0,
            "high" => 1,
            "medium" => 2,
            "low" => 3,
            "informational" => 4,
            _ => 5,
        };
        *by_level.entry(rank).or_default() += 1;
        let entry = by_rule
            .entry((hit.rule.id.as_deref().unwrap_or(""), &hit.rule.title))
            .or_insert((0, level));
        entry.0 += 1;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\npicketctl hunt: {} files ({} skipped), {} events ({} corrupt records/lines skipped, {} unrouted lines), \
         {secs:.2}s on {threads} threads ({rate:.0} events/s); {} matches of {} rules",
        report.files,
        report.files_skipped,
        report.records,
        record_problems,
        report.unrouted,
        report.hits.len(),
        by_rule.len(),
    );
    if let Some(c) = report.correlation {
        let _ = writeln!(
            s,
            "correlations: {} fired; {} events with matches had no readable time and were not counted; \
             {} groups evicted and {} events dropped at the memory caps",
            report.correlation_hits, report.untimed, c.groups_evicted, c.events_dropped,
        );
    }
    let _ = writeln!(s, "by level:");
    let names = [
        "critical",
        "high",
        "medium",
        "low",
        "informational",
        "(none)",
    ];
    for (rank, n) in &by_level {
        let _ = writeln!(s, "  {:<14}{n:>8}", names[usize::from(*rank)]);
    }
    let mut rules: Vec<_> = by_rule.into_iter().collect();
    rules.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    let _ = writeln!(s, "by rule (matches, level, title, id):");
    for ((id, title), (n, level)) in rules {
        let _ = writeln!(s, "  {n:>8}  {level:<14}{title}  ({id})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\r"), "\"cr\r\"");
        assert_eq!(csv_field(""), "");
    }
}
