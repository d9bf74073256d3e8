//! Correlation rules (Sigma correlation specification, v2.1 types):
//! `event_count`, `value_count`, `temporal`, `temporal_ordered`,
//! `value_sum`, `value_avg`, `value_percentile`.
//!
//! The [`Correlator`] is a sans-IO state machine: the caller evaluates an
//! event with [`crate::RuleSet::evaluate`], then hands the event, its time
//! and the matches to [`Correlator::process`]. It holds no clock; time only
//! moves with the timestamps it is given ([`Correlator::advance`] moves it
//! without an event).
//!
//! # Semantics (choices the specification leaves open)
//! - **Windows** are per group (the values of `group-by`, aliases applied)
//!   and slide: an event at time `t` sees the group's events in
//!   `(t - timespan, t]`; an event exactly `timespan` older has left.
//! - Conditions are checked on every event of the group and fire as soon as
//!   they hold, except **upper bounds on growing measures**: `lt`, `lte`,
//!   `eq` or a range on `event_count`, `value_count` or `value_sum` can only
//!   be decided when a window is complete, so they are checked when the
//!   window that started at the group's first event closes (on a later event
//!   of the group, or on [`Correlator::advance`]). Either way the group then
//!   starts afresh, so one burst fires once.
//! - `value_count` counts distinct values of `field` (events without it do
//!   not count); `value_sum` and `value_avg` use the numeric values of
//!   `field`; `value_percentile` is the share (0–100) of the group's window
//!   events whose `field` equals the current event's: a rarity measure
//!   (`lte: 1` = a value seen in at most 1% of the group's events).
//! - `temporal` fires when the number of referenced rules seen in the window
//!   satisfies the condition (default: all of them); `temporal_ordered`
//!   additionally needs them in the listed order (non-decreasing times).
//! - `generate: false` (the default) keeps the referenced rules' own matches
//!   out of the output unless another correlation referencing them says
//!   `generate: true` (this holds for intermediate correlations of a chain
//!   too); rules that no correlation references are unaffected.
//! - **Bounded state**: at most `max_groups` groups over all correlations and
//!   `max_events_per_group` events per group. At the cap, expired groups are
//!   dropped, then the least recently updated tenth; dropped groups and
//!   events are counted in [`CorrelationStats`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::error::ErrorKind;
use crate::event::{Event, Value};
use crate::rule::{get, yaml_str, RuleInfo};
use crate::ruleset::Match;

/// The seven correlation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorrelationType {
    /// Number of events.
    EventCount,
    /// Number of distinct values of a field.
    ValueCount,
    /// All (or N of) the referenced rules, in any order.
    Temporal,
    /// All (or N of) the referenced rules, in the listed order.
    TemporalOrdered,
    /// Sum of a numeric field.
    ValueSum,
    /// Average of a numeric field.
    ValueAvg,
    /// Share of the group's events with the current event's field value.
    ValuePercentile,
}

impl CorrelationType {
    fn parse(s: &str) -> Result<Self, ErrorKind> {
        Ok(match s {
            "event_count" => Self::EventCount,
            "value_count" => Self::ValueCount,
            "temporal" => Self::Temporal,
            "temporal_ordered" => Self::TemporalOrdered,
            "value_sum" => Self::ValueSum,
            "value_avg" => Self::ValueAvg,
            "value_percentile" => Self::ValuePercentile,
            other => {
                return Err(ErrorKind::BadValue(format!(
                    "unknown correlation type `{other}`"
                )))
            }
        })
    }

    fn needs_field(self) -> bool {
        matches!(
            self,
            Self::ValueCount | Self::ValueSum | Self::ValueAvg | Self::ValuePercentile
        )
    }

    fn is_temporal(self) -> bool {
        matches!(self, Self::Temporal | Self::TemporalOrdered)
    }

    /// Whether the measure only grows as events arrive (so an upper bound
    /// can only be decided when the window is complete).
    fn is_monotonic(self) -> bool {
        matches!(self, Self::EventCount | Self::ValueCount | Self::ValueSum)
    }
}

/// `condition:` of a correlation: all given bounds must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    /// `gt`
    pub gt: Option<f64>,
    /// `gte`
    pub gte: Option<f64>,
    /// `lt`
    pub lt: Option<f64>,
    /// `lte`
    pub lte: Option<f64>,
    /// `eq`
    pub eq: Option<f64>,
}

impl Bounds {
    fn holds(&self, v: f64) -> bool {
        self.gt.is_none_or(|b| v > b)
            && self.gte.is_none_or(|b| v >= b)
            && self.lt.is_none_or(|b| v < b)
            && self.lte.is_none_or(|b| v <= b)
            && self.eq.is_none_or(|b| v == b)
    }

    fn has_upper(&self) -> bool {
        self.lt.is_some() || self.lte.is_some() || self.eq.is_some()
    }

    fn is_empty(&self) -> bool {
        *self == Bounds::default()
    }
}

/// A loaded correlation rule.
#[derive(Debug, Clone)]
pub(crate) struct CorrelationDef {
    pub(crate) info: Arc<RuleInfo>,
    pub(crate) kind: CorrelationType,
    /// References as written (rule id or name).
    pub(crate) rules: Vec<String>,
    pub(crate) group_by: Vec<String>,
    /// alias → (rule name or id → field)
    pub(crate) aliases: HashMap<String, HashMap<String, String>>,
    pub(crate) timespan_ms: i64,
    pub(crate) bounds: Bounds,
    pub(crate) field: Option<String>,
    pub(crate) generate: bool,
}

/// Reads `10s`, `5m`, `1h`, `2d` (and `1w`).
fn parse_timespan(s: &str) -> Result<i64, ErrorKind> {
    let bad = || ErrorKind::BadValue(format!("bad timespan `{s}` (want e.g. 30s, 5m, 1h, 1d)"));
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses the `correlation:` section.
pub(crate) fn parse(
    doc: &yaml_rust2::yaml::Hash,
    info: RuleInfo,
) -> Result<CorrelationDef, ErrorKind> {
    use yaml_rust2::Yaml;
    let Some(Yaml::Hash(c)) = get(doc, "correlation") else {
        return Err(ErrorKind::BadValue("`correlation` must be a map".into()));
    };
    let kind = CorrelationType::parse(
        &get(c, "type")
            .and_then(yaml_str)
            .ok_or(ErrorKind::Missing("correlation.type"))?,
    )?;
    let list = |k: &str| -> Vec<String> {
        match get(c, k) {
            Some(Yaml::Array(v)) => v.iter().filter_map(yaml_str).collect(),
            Some(other) => yaml_str(other).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let rules = list("rules");
    if rules.is_empty() {
        return Err(ErrorKind::Missing("correlation.rules"));
    }
    let group_by = list("group-by");
    let timespan_ms = parse_timespan(
        &get(c, "timespan")
            .and_then(yaml_str)
            .ok_or(ErrorKind::Missing("correlation.timespan"))?,
    )?;
    let mut aliases: HashMap<String, HashMap<String, String>> = HashMap::new();
    if let Some(Yaml::Hash(a)) = get(c, "aliases") {
        for (alias, map) in a {
            let (Some(alias), Yaml::Hash(map)) = (yaml_str(alias), map) else {
                return Err(ErrorKind::BadValue(
                    "`aliases` maps an alias to {rule: field}".into(),
                ));
            };
            let entry = aliases.entry(alias).or_default();
            for (rule, field) in map {
                if let (Some(r), Some(f)) = (yaml_str(rule), yaml_str(field)) {
                    entry.insert(r, f);
                }
            }
        }
    }
    let mut bounds = Bounds::default();
    let mut field = None;
    match get(c, "condition") {
        Some(Yaml::Hash(cond)) => {
            for (k, v) in cond {
                let key = yaml_str(k).unwrap_or_default();
                if key == "field" {
                    field = yaml_str(v);
                    continue;
                }
                let n = match v {
                    Yaml::Integer(i) => *i as f64,
                    Yaml::Real(s) => s
                        .parse()
                        .map_err(|_| ErrorKind::BadValue(format!("`{s}` is not a number")))?,
                    _ => {
                        return Err(ErrorKind::BadValue(format!(
                            "condition `{key}` needs a number"
                        )))
                    }
                };
                let slot = match key.as_str() {
                    "gt" => &mut bounds.gt,
                    "gte" => &mut bounds.gte,
                    "lt" => &mut bounds.lt,
                    "lte" => &mut bounds.lte,
                    "eq" => &mut bounds.eq,
                    other => {
                        return Err(ErrorKind::BadValue(format!("unknown condition `{other}`")))
                    }
                };
                *slot = Some(n);
            }
        }
        None => {}
        Some(_) => return Err(ErrorKind::BadValue("`condition` must be a map".into())),
    }
    if kind.needs_field() && field.is_none() {
        return Err(ErrorKind::Missing("correlation.condition.field"));
    }
    if bounds.is_empty() {
        if kind.is_temporal() {
            bounds.gte = Some(rules.len() as f64);
        } else {
            return Err(ErrorKind::Missing("correlation.condition"));
        }
    }
    let generate = matches!(
        get(c, "generate").or_else(|| get(doc, "generate")),
        Some(Yaml::Boolean(true))
    );
    Ok(CorrelationDef {
        info: Arc::new(info),
        kind,
        rules,
        group_by,
        aliases,
        timespan_ms,
        bounds,
        field,
        generate,
    })
}

/// Limits on the correlator's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorrelationLimits {
    /// Groups kept over all correlation rules.
    pub max_groups: usize,
    /// Events kept per group (older ones are dropped first).
    pub max_events_per_group: usize,
}

impl Default for CorrelationLimits {
    fn default() -> Self {
        CorrelationLimits {
            max_groups: 100_000,
            max_events_per_group: 10_000,
        }
    }
}

impl CorrelationLimits {
    /// Limits with the given caps (each at least 1).
    #[must_use]
    pub fn new(max_groups: usize, max_events_per_group: usize) -> Self {
        CorrelationLimits {
            max_groups: max_groups.max(1),
            max_events_per_group: max_events_per_group.max(1),
        }
    }
}

/// Counters of state dropped to stay within [`CorrelationLimits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorrelationStats {
    /// Groups evicted before their window ended.
    pub groups_evicted: u64,
    /// Events dropped from full groups.
    pub events_dropped: u64,
    /// Groups currently held.
    pub groups: usize,
}

/// A correlation rule that fired.
#[derive(Debug, Clone)]
pub struct CorrelationMatch {
    /// The correlation rule.
    pub rule: Arc<RuleInfo>,
    /// Its type.
    pub kind: CorrelationType,
    /// `group-by` names and the group's values.
    pub group: Vec<(String, String)>,
    /// The measured value (count, distinct count, sum, average, share, or
    /// number of rules seen).
    pub value: f64,
    /// Time of the first event counted.
    pub first_ms: i64,
    /// Time of the last event counted.
    pub last_ms: i64,
}

/// One event of a group: time, which referenced rule, field value.
#[derive(Debug, Clone)]
struct Entry {
    ts: i64,
    rule: usize,
    value: Option<String>,
    number: Option<f64>,
}

#[derive(Debug, Default)]
struct Group {
    entries: VecDeque<Entry>,
    last_update: i64,
    /// Start of the tumbling window for upper-bounded conditions.
    start: Option<i64>,
}

/// Correlation state for one rule set. Not thread-safe by design: one
/// correlator per event stream (or per shard of streams keyed by group).
#[derive(Debug)]
pub struct Correlator {
    defs: Vec<Arc<CorrelationDef>>,
    /// Rule id or name → (correlation index, position in its `rules`).
    refs: HashMap<String, Vec<(usize, usize)>>,
    /// Rule ids/names whose own matches are kept out of the output.
    suppressed: HashSet<String>,
    groups: HashMap<(usize, Vec<String>), Group>,
    limits: CorrelationLimits,
    stats: CorrelationStats,
    now: i64,
    next_sweep: i64,
}

/// How often (in event time) expired groups are swept.
const SWEEP_INTERVAL_MS: i64 = 1_000;

impl Correlator {
    pub(crate) fn new(defs: Vec<Arc<CorrelationDef>>, limits: CorrelationLimits) -> Self {
        let mut refs: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut generate: HashMap<String, bool> = HashMap::new();
        for (ci, def) in defs.iter().enumerate() {
            for (pos, r) in def.rules.iter().enumerate() {
                refs.entry(r.clone()).or_default().push((ci, pos));
                let g = generate.entry(r.clone()).or_insert(false);
                *g |= def.generate;
            }
        }
        let suppressed = generate
            .into_iter()
            .filter(|(_, g)| !g)
            .map(|(r, _)| r)
            .collect();
        Correlator {
            defs,
            refs,
            suppressed,
            groups: HashMap::new(),
            limits,
            stats: CorrelationStats::default(),
            now: i64::MIN,
            next_sweep: i64::MIN,
        }
    }

    /// Counters of dropped state.
    #[must_use]
    pub fn stats(&self) -> CorrelationStats {
        CorrelationStats {
            groups: self.groups.len(),
            ..self.stats
        }
    }

    /// Feeds one event (at `ts_ms`, milliseconds since the epoch) with the
    /// matches [`crate::RuleSet::evaluate`] found for it. Appends fired
    /// correlations to `out`, and removes from `matches` the matches of rules
    /// referenced only with `generate: false`.
    pub fn process<E: Event + ?Sized>(
        &mut self,
        ts_ms: i64,
        event: &E,
        matches: &mut Vec<Match>,
        out: &mut Vec<CorrelationMatch>,
    ) {
        self.advance(ts_ms, out);
        // Work list of (rule id or name) that matched this event; chained
        // correlations add their own ids as they fire.
        let mut work: Vec<Vec<String>> = matches.iter().map(|m| keys(&m.rule)).collect();
        matches.retain(|m| !keys(&m.rule).iter().any(|k| self.suppressed.contains(k)));
        let mut fired_now: HashSet<usize> = HashSet::new();
        while let Some(names) = work.pop() {
            let mut hits: Vec<(usize, usize)> = Vec::new();
            for n in &names {
                if let Some(v) = self.refs.get(n) {
                    hits.extend(v.iter().copied());
                }
            }
            hits.sort_unstable();
            hits.dedup();
            for (ci, pos) in hits {
                if let Some(m) = self.update(ci, pos, &names, ts_ms, event) {
                    let ids = keys(&m.rule);
                    let shown = !ids.iter().any(|k| self.suppressed.contains(k));
                    if fired_now.insert(ci) {
                        work.push(ids);
                    }
                    // An intermediate correlation referenced with
                    // `generate: false` feeds its parent but is not shown.
                    if shown {
                        out.push(m);
                    }
                }
            }
        }
    }

    /// Moves time to `now_ms` without an event: closes the windows of
    /// upper-bounded conditions that ended, and drops expired groups.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<CorrelationMatch>) {
        if now_ms <= self.now {
            return;
        }
        self.now = now_ms;
        // Sweeping visits every group: do it at most once per interval.
        // A window that ends between sweeps is closed by the next event of
        // its group or by the next sweep, with the same result.
        if now_ms < self.next_sweep {
            return;
        }
        self.next_sweep = now_ms.saturating_add(SWEEP_INTERVAL_MS);
        let defs = &self.defs;
        self.groups.retain(|(ci, key), g| {
            let def = &defs[*ci];
            if deferred(def) {
                if let Some(start) = g.start {
                    if now_ms >= start + def.timespan_ms {
                        if let Some(m) = close_window(def, key, g, start) {
                            out.push(m);
                        }
                        return false;
                    }
                }
                true
            } else {
                g.last_update > now_ms - def.timespan_ms
            }
        });
    }

    fn update<E: Event + ?Sized>(
        &mut self,
        ci: usize,
        pos: usize,
        names: &[String],
        ts: i64,
        event: &E,
    ) -> Option<CorrelationMatch> {
        let def = Arc::clone(&self.defs[ci]);
        let key: Vec<String> = def
            .group_by
            .iter()
            .map(|g| {
                let field = def
                    .aliases
                    .get(g)
                    .and_then(|per_rule| names.iter().find_map(|n| per_rule.get(n)))
                    .map_or(g.as_str(), String::as_str);
                event.field(field).map(|v| text(&v)).unwrap_or_default()
            })
            .collect();
        let (value, number) = match &def.field {
            Some(f) => match event.field(f) {
                Some(v) => (Some(text(&v)), v.as_f64()),
                None => (None, None),
            },
            None => (None, None),
        };
        let gk = (ci, key);
        if !self.groups.contains_key(&gk) {
            self.make_room();
        }
        let group = self.groups.entry(gk.clone()).or_default();
        group.last_update = group.last_update.max(ts);
        let upper = deferred(&def);
        let mut closed = None;
        if upper {
            match group.start {
                Some(start) if ts >= start + def.timespan_ms => {
                    // This event belongs to the next window: decide the
                    // finished one first.
                    closed = close_window(&def, &gk.1, group, start);
                    group.entries.clear();
                    group.start = Some(ts);
                }
                Some(_) => {}
                None => group.start = Some(ts),
            }
        } else {
            // Slide: keep (ts - timespan, ts].
            while group
                .entries
                .front()
                .is_some_and(|e| e.ts <= ts - def.timespan_ms)
            {
                group.entries.pop_front();
            }
        }
        let entry = Entry {
            ts,
            rule: pos,
            value,
            number,
        };
        // Keep entries in time order even if events arrive out of order.
        let at = group.entries.partition_point(|e| e.ts <= ts);
        group.entries.insert(at, entry);
        if group.entries.len() > self.limits.max_events_per_group {
            group.entries.pop_front();
            self.stats.events_dropped += 1;
        }
        if upper {
            return closed;
        }
        let current = group.entries.get(at).and_then(|e| e.value.clone());
        let v = measure(&def, group, current.as_deref())?;
        if def.bounds.holds(v) {
            let m = fired(&def, &gk.1, group, v);
            self.groups.remove(&gk);
            return Some(m);
        }
        None
    }

    /// At the group cap: drop expired groups, then the least recently
    /// updated tenth.
    fn make_room(&mut self) {
        if self.groups.len() < self.limits.max_groups {
            return;
        }
        let now = self.now;
        let defs = &self.defs;
        let before = self.groups.len();
        self.groups
            .retain(|(ci, _), g| g.last_update > now - defs[*ci].timespan_ms);
        let mut evicted = before - self.groups.len();
        if self.groups.len() >= self.limits.max_groups {
            let mut ages: Vec<i64> = self.groups.values().map(|g| g.last_update).collect();
            let k = (self.limits.max_groups / 10).max(1).min(ages.len() - 1);
            let (_, &mut cut, _) = ages.select_nth_unstable(k);
            let before = self.groups.len();
            self.groups.retain(|_, g| g.last_update > cut);
            evicted += before - self.groups.len();
        }
        self.stats.groups_evicted += evicted as u64;
    }
}

/// Whether the condition is decided at the end of a (tumbling) window
/// rather than on each event.
fn deferred(def: &CorrelationDef) -> bool {
    def.bounds.has_upper() && def.kind.is_monotonic()
}

fn keys(info: &RuleInfo) -> Vec<String> {
    info.id.iter().chain(info.name.iter()).cloned().collect()
}

fn text(v: &Value<'_>) -> String {
    v.to_string()
}

/// The measured value of a group, `None` when there is nothing to measure.
fn measure(def: &CorrelationDef, g: &Group, current: Option<&str>) -> Option<f64> {
    let n = g.entries.len();
    match def.kind {
        CorrelationType::EventCount => Some(n as f64),
        CorrelationType::ValueCount => {
            let distinct: HashSet<&str> = g
                .entries
                .iter()
                .filter_map(|e| e.value.as_deref())
                .collect();
            Some(distinct.len() as f64)
        }
        CorrelationType::ValueSum => Some(g.entries.iter().filter_map(|e| e.number).sum()),
        CorrelationType::ValueAvg => {
            let nums: Vec<f64> = g.entries.iter().filter_map(|e| e.number).collect();
            (!nums.is_empty()).then(|| nums.iter().sum::<f64>() / nums.len() as f64)
        }
        CorrelationType::ValuePercentile => {
            let cur = current?;
            let same = g
                .entries
                .iter()
                .filter(|e| e.value.as_deref() == Some(cur))
                .count();
            Some(100.0 * same as f64 / n as f64)
        }
        CorrelationType::Temporal => {
            let seen: HashSet<usize> = g.entries.iter().map(|e| e.rule).collect();
            Some(seen.len() as f64)
        }
        CorrelationType::TemporalOrdered => Some(ordered_prefix(def.rules.len(), g) as f64),
    }
}

/// How many of the rules, in order, appear with non-decreasing times.
fn ordered_prefix(rules: usize, g: &Group) -> usize {
    let mut next = 0;
    for e in &g.entries {
        if next < rules && e.rule == next {
            next += 1;
        }
    }
    next
}

fn fired(def: &CorrelationDef, key: &[String], g: &Group, v: f64) -> CorrelationMatch {
    CorrelationMatch {
        rule: Arc::clone(&def.info),
        kind: def.kind,
        group: def
            .group_by
            .iter()
            .cloned()
            .zip(key.iter().cloned())
            .collect(),
        value: v,
        first_ms: g.entries.front().map_or(0, |e| e.ts),
        last_ms: g.entries.back().map_or(0, |e| e.ts),
    }
}

/// Decides an upper-bounded condition over the window `[start, start + span)`.
fn close_window(
    def: &CorrelationDef,
    key: &[String],
    g: &mut Group,
    start: i64,
) -> Option<CorrelationMatch> {
    g.entries.retain(|e| e.ts < start + def.timespan_ms);
    let current = g.entries.back().and_then(|e| e.value.clone());
    let v = measure(def, g, current.as_deref())?;
    def.bounds.holds(v).then(|| fired(def, key, g, v))
}
