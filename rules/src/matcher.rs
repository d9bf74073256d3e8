//! Compiled detection items and their evaluation against events.
//!
//! The hot path allocates nothing once warm: each field an event is asked for
//! is fetched once per event into a reusable [`Slot`] (its text and its
//! case-folded text, kept in buffers that keep their capacity), and every
//! rule that tests the field reads the slot. Needles were folded at load time,
//! so case-insensitive tests are plain byte comparisons.

use std::fmt::Write as _;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use memchr::memmem;
use regex::Regex;

use crate::cidr::Cidr;
use crate::event::{parse_number, Event, Value};
use crate::pattern::{fold_into, Glob, StrMatcher};
use crate::timestamp::{self, TimePart};

/// Index of a field name in the rule set's field table.
pub(crate) type FieldId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Lt => a < b,
            CmpOp::Lte => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Gte => a >= b,
        }
    }
}

/// One compiled rule value.
#[derive(Debug, Clone)]
pub(crate) enum Leaf {
    /// A string pattern; `cased == false` means the needle is folded and the
    /// folded field text is tested.
    Str {
        m: StrMatcher,
        cased: bool,
    },
    /// A YAML number: equal numbers, or text that reads as the same number.
    Num {
        value: f64,
        text: Box<str>,
    },
    Bool(bool),
    /// `null`: the field is missing or null.
    Null,
    Regex(Regex),
    Cmp(CmpOp, f64),
    Time(TimePart, CmpOp, f64),
    Cidr(Cidr),
}

impl Leaf {
    fn cost(&self) -> u32 {
        match self {
            Leaf::Null | Leaf::Bool(_) | Leaf::Num { .. } | Leaf::Cmp(..) => 1,
            Leaf::Str { m, .. } => match m {
                StrMatcher::Exact(_) | StrMatcher::Any => 1,
                StrMatcher::Prefix(_) | StrMatcher::Suffix(_) => 2,
                StrMatcher::Contains(_) => 4,
                StrMatcher::Glob(_) => 6,
            },
            Leaf::Cidr(_) | Leaf::Time(..) => 5,
            Leaf::Regex(_) => 10,
        }
    }

    fn matches(&self, s: &Scalar) -> bool {
        match self {
            Leaf::Null => s.kind == Kind::Null,
            _ if s.kind == Kind::Null => false,
            Leaf::Str { m, cased } => m.is_match(if *cased { &s.raw } else { &s.folded }),
            Leaf::Num { value, text } => match s.kind {
                Kind::Num => s.num == Some(*value),
                Kind::Str => s.raw.trim() == &**text || s.num == Some(*value),
                Kind::Bool | Kind::Null => false,
            },
            Leaf::Bool(b) => match s.kind {
                Kind::Bool | Kind::Str => s.folded == if *b { "true" } else { "false" },
                Kind::Num | Kind::Null => false,
            },
            Leaf::Regex(re) => re.is_match(&s.raw),
            Leaf::Cmp(op, v) => s.num.is_some_and(|n| op.holds(n, *v)),
            Leaf::Time(part, op, v) => {
                timestamp::parse(&s.raw).is_some_and(|d| op.holds(d.part(*part) as f64, *v))
            }
            Leaf::Cidr(c) => c.contains(&s.raw),
        }
    }
}

/// Case-insensitive (or case-sensitive) string leaves grouped for one pass.
#[derive(Debug, Clone)]
struct StrSet {
    cased: bool,
    any: bool,
    exact: Vec<Box<str>>,
    prefix: Vec<Box<str>>,
    suffix: Vec<Box<str>>,
    contains: Contains,
    /// The `contains` needles, kept for the prefilter.
    needles: Vec<Box<str>>,
    globs: Vec<Glob>,
}

#[derive(Debug, Clone)]
enum Contains {
    Few(Vec<memmem::Finder<'static>>),
    /// Many substrings: one Aho-Corasick pass instead of one search each.
    Many(AhoCorasick),
}

/// From this many `contains` needles on, one automaton beats separate
/// searches.
const AHO_CORASICK_MIN: usize = 4;

/// About the memory an Aho-Corasick DFA of `patterns` takes, from above:
/// one state per pattern byte (fewer when prefixes are shared), each a row
/// of 4-byte transitions, one per byte class rounded up to a power of two,
/// and twice that (aho-corasick 1.1 builds up to two rows per state: an
/// unanchored and an anchored start each reach their own copy).
pub(crate) fn dfa_size_estimate<'a>(patterns: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut seen = [false; 256];
    // the root and the automaton's dead, fail and start states
    let mut states = 4;
    let mut count = 0;
    for p in patterns {
        states += p.len();
        count += 1;
        for &b in p {
            seen[usize::from(b)] = true;
        }
    }
    let classes = seen.iter().filter(|s| **s).count() + 1;
    // plus each pattern's length and match entry, and fixed fields
    2 * states * classes.next_power_of_two() * 4 + count * 16 + 256
}

impl StrSet {
    fn new(cased: bool, matchers: Vec<StrMatcher>) -> Self {
        let mut set = StrSet {
            cased,
            any: false,
            exact: Vec::new(),
            prefix: Vec::new(),
            suffix: Vec::new(),
            contains: Contains::Few(Vec::new()),
            needles: Vec::new(),
            globs: Vec::new(),
        };
        let mut finders = Vec::new();
        for m in matchers {
            match m {
                StrMatcher::Any => set.any = true,
                StrMatcher::Exact(s) => set.exact.push(s),
                StrMatcher::Prefix(s) => set.prefix.push(s),
                StrMatcher::Suffix(s) => set.suffix.push(s),
                StrMatcher::Contains(f) => {
                    set.needles.push(String::from_utf8_lossy(f.needle()).into());
                    finders.push(*f);
                }
                StrMatcher::Glob(g) => set.globs.push(g),
            }
        }
        set.contains = if finders.len() >= AHO_CORASICK_MIN {
            // A contiguous NFA, not the crate's default DFA for small sets:
            // these run only on prefilter candidates, and across the
            // thousands of rule values DFAs cost tens of megabytes.
            match AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(finders.iter().map(memmem::Finder::needle))
            {
                Ok(ac) => Contains::Many(ac),
                Err(_) => Contains::Few(finders),
            }
        } else {
            Contains::Few(finders)
        };
        // Pushing leaves room for four elements at least; across the tens
        // of thousands of rule values that spare room is megabytes.
        if let Contains::Few(f) = &mut set.contains {
            f.shrink_to_fit();
        }
        for v in [
            &mut set.exact,
            &mut set.prefix,
            &mut set.suffix,
            &mut set.needles,
        ] {
            v.shrink_to_fit();
        }
        set.globs.shrink_to_fit();
        set
    }

    fn is_match(&self, s: &Scalar) -> bool {
        s.kind != Kind::Null && self.is_match_str(&s.raw, &s.folded)
    }

    /// Folded literals one of which the folded text of any matching value
    /// contains; `None` when some value needs no literal (`*`, `''`).
    fn literals(&self, out: &mut Vec<String>) -> Option<()> {
        if self.any {
            return None;
        }
        let globs = self.globs.iter().map(Glob::longest_literal);
        for lit in self
            .exact
            .iter()
            .chain(&self.prefix)
            .chain(&self.suffix)
            .chain(&self.needles)
            .map(|s| Some(&**s))
            .chain(globs)
        {
            let lit = lit.filter(|l| !l.is_empty())?;
            out.push(if self.cased {
                crate::pattern::fold(lit)
            } else {
                lit.to_owned()
            });
        }
        Some(())
    }

    fn is_contains_only(&self) -> bool {
        !self.any
            && self.exact.is_empty()
            && self.prefix.is_empty()
            && self.suffix.is_empty()
            && self.globs.is_empty()
            && !self.needles.iter().any(|n| n.contains('\0'))
    }

    fn is_match_str(&self, raw: &str, folded: &str) -> bool {
        let h = if self.cased { raw } else { folded };
        self.any
            || self.exact.iter().any(|e| h == &**e)
            || self.prefix.iter().any(|p| h.starts_with(&**p))
            || self.suffix.iter().any(|p| h.ends_with(&**p))
            || match &self.contains {
                Contains::Few(fs) => fs.iter().any(|f| f.find(h.as_bytes()).is_some()),
                Contains::Many(ac) => ac.is_match(h),
            }
            || self.globs.iter().any(|g| g.is_match(h))
    }
}

/// The OR-linked values of one item, string leaves grouped.
#[derive(Debug, Clone)]
pub(crate) struct AnyOf {
    sets: Vec<StrSet>,
    others: Vec<Leaf>,
}

impl AnyOf {
    pub(crate) fn new(leaves: Vec<Leaf>) -> Self {
        let mut folded = Vec::new();
        let mut cased = Vec::new();
        let mut others = Vec::new();
        for leaf in leaves {
            match leaf {
                Leaf::Str { m, cased: false } => folded.push(m),
                Leaf::Str { m, cased: true } => cased.push(m),
                other => others.push(other),
            }
        }
        others.sort_by_key(Leaf::cost);
        let mut sets = Vec::new();
        if !folded.is_empty() {
            sets.push(StrSet::new(false, folded));
        }
        if !cased.is_empty() {
            sets.push(StrSet::new(true, cased));
        }
        sets.shrink_to_fit();
        others.shrink_to_fit();
        AnyOf { sets, others }
    }

    fn matches(&self, s: &Scalar) -> bool {
        self.sets.iter().any(|set| set.is_match(s)) || self.others.iter().any(|l| l.matches(s))
    }

    /// See [`StrSet::literals`]; `None` if any value is not a string test.
    pub(crate) fn literals(&self) -> Option<Vec<String>> {
        if !self.others.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for set in &self.sets {
            set.literals(&mut out)?;
        }
        (!out.is_empty()).then_some(out)
    }

    fn matches_null_or_missing(&self) -> bool {
        self.others.iter().any(|l| matches!(l, Leaf::Null))
    }

    fn cost(&self) -> u32 {
        let sets: u32 = self
            .sets
            .iter()
            .map(|s| {
                let n = s.exact.len() + s.prefix.len() + s.suffix.len();
                let c = match &s.contains {
                    Contains::Few(f) => f.len() * 3,
                    Contains::Many(_) => 6,
                };
                u32::try_from(n + c + s.globs.len() * 6).unwrap_or(u32::MAX)
            })
            .sum();
        sets + self.others.iter().map(Leaf::cost).sum::<u32>()
    }
}

/// Where a `fieldref` value must sit in the field it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Exact,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
pub(crate) enum Pred {
    /// `|exists: true/false`.
    Exists(bool),
    /// One of the values (the default for a list).
    Any(AnyOf),
    /// Every value (`|all`), each tested separately.
    All(Vec<AnyOf>),
    /// `|neq`: the field exists and equals none of the values.
    NoneOf(AnyOf),
    /// `|fieldref`: compared with another field of the same event.
    FieldRef {
        others: Vec<FieldId>,
        all: bool,
        pos: Position,
        cased: bool,
        neq: bool,
    },
}

/// One `Field|modifiers: values` item (or a keyword list when `field` is
/// `None`).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) field: Option<FieldId>,
    /// The key as written in the rule, for reports.
    pub(crate) key: Box<str>,
    pub(crate) pred: Pred,
}

impl Item {
    /// A necessary condition for the item to hold: the folded text of the
    /// field (or, for keywords, of some value of the event) contains one of
    /// these literals. `None` when there is no such literal set.
    pub(crate) fn gate(&self) -> Option<Vec<String>> {
        match &self.pred {
            Pred::Any(any) => any.literals(),
            Pred::All(alls) => alls
                .iter()
                .filter_map(AnyOf::literals)
                .max_by_key(|lits| gate_score(lits)),
            Pred::Exists(_) | Pred::NoneOf(_) | Pred::FieldRef { .. } => None,
        }
    }

    pub(crate) fn cost(&self) -> u32 {
        let base = match &self.pred {
            Pred::Exists(_) => 0,
            Pred::Any(a) | Pred::NoneOf(a) => a.cost(),
            Pred::All(v) => v.iter().map(AnyOf::cost).sum(),
            Pred::FieldRef { .. } => 8,
        };
        // Keyword searches read the whole event: always last.
        if self.field.is_none() {
            base + 1_000
        } else {
            base
        }
    }
}

/// How selective a gate is: its shortest literal, then fewer literals.
pub(crate) fn gate_score(lits: &[String]) -> (usize, std::cmp::Reverse<usize>) {
    (
        lits.iter().map(String::len).min().unwrap_or(0),
        std::cmp::Reverse(lits.len()),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Num,
    Str,
}

/// One value of a field, with its text and folded text.
#[derive(Debug)]
struct Scalar {
    kind: Kind,
    raw: String,
    folded: String,
    num: Option<f64>,
}

impl Scalar {
    fn empty() -> Self {
        Scalar {
            kind: Kind::Null,
            raw: String::new(),
            folded: String::new(),
            num: None,
        }
    }

    fn set(&mut self, v: &Value<'_>) {
        self.raw.clear();
        self.folded.clear();
        self.num = None;
        match v {
            Value::Null | Value::List(_) => self.kind = Kind::Null,
            Value::Bool(b) => {
                self.kind = Kind::Bool;
                self.raw.push_str(if *b { "true" } else { "false" });
            }
            Value::Int(i) => {
                self.kind = Kind::Num;
                self.num = Some(*i as f64);
                let _ = write!(self.raw, "{i}");
            }
            Value::UInt(u) => {
                self.kind = Kind::Num;
                self.num = Some(*u as f64);
                let _ = write!(self.raw, "{u}");
            }
            Value::Float(f) => {
                self.kind = Kind::Num;
                self.num = Some(*f);
                let _ = write!(self.raw, "{f}");
            }
            Value::Str(s) => {
                self.kind = Kind::Str;
                self.raw.push_str(s);
                self.num = parse_number(s);
            }
        }
        if self.kind == Kind::Str {
            fold_into(&self.raw, &mut self.folded);
        } else {
            self.folded.push_str(&self.raw);
        }
    }
}

/// A field as fetched for the current event.
#[derive(Debug)]
struct Slot {
    epoch: u64,
    present: bool,
    len: usize,
    items: Vec<Scalar>,
}

impl Slot {
    fn values(&self) -> &[Scalar] {
        &self.items[..self.len]
    }
}

/// Per-thread evaluation buffers, reused across events.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    epoch: u64,
    slots: Vec<Slot>,
    keyword_epoch: u64,
    /// Every value of the event, raw and folded, each followed by a NUL,
    /// built once per event for keyword searches.
    keyword_raw: String,
    keyword_folded: String,
    keyword_spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// One value's text for [`Ctx::for_each_value_text`].
    value_text: String,
    /// Bitset of the route's rules to evaluate for this event.
    pub(crate) candidates: Vec<u64>,
}

impl Scratch {
    /// Starts a new event: every cached field becomes stale.
    pub(crate) fn next_event(&mut self, fields: usize) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.slots.len() < fields {
            self.slots.resize_with(fields, || Slot {
                epoch: 0,
                present: false,
                len: 0,
                items: Vec::new(),
            });
        }
    }
}

/// What evaluation needs: the event, the field names and the buffers.
pub(crate) struct Ctx<'a> {
    pub(crate) event: &'a dyn Event,
    pub(crate) names: &'a [Box<str>],
    pub(crate) scratch: &'a mut Scratch,
}

impl Ctx<'_> {
    fn slot(&mut self, id: FieldId) -> &Slot {
        let epoch = self.scratch.epoch;
        let slot = &mut self.scratch.slots[id as usize];
        if slot.epoch != epoch {
            slot.epoch = epoch;
            let v = self.event.field(&self.names[id as usize]);
            slot.present = v.is_some();
            slot.len = 0;
            let mut fill = |v: &Value<'_>| {
                if slot.items.len() == slot.len {
                    slot.items.push(Scalar::empty());
                }
                slot.items[slot.len].set(v);
                slot.len += 1;
            };
            match &v {
                None => {}
                Some(Value::List(items)) => items.iter().for_each(&mut fill),
                Some(other) => fill(other),
            }
        }
        slot
    }

    /// Calls `f` with the folded text of each value of a field.
    pub(crate) fn for_each_folded(&mut self, id: FieldId, f: &mut dyn FnMut(&str)) {
        let slot = self.slot(id);
        for s in slot.values() {
            if s.kind != Kind::Null {
                f(&s.folded);
            }
        }
    }

    /// Evaluates one item.
    pub(crate) fn item(&mut self, item: &Item) -> bool {
        let Some(id) = item.field else {
            return self.keywords(&item.pred);
        };
        if let Pred::FieldRef {
            others,
            all,
            pos,
            cased,
            neq,
        } = &item.pred
        {
            return self.fieldref(id, others, *all, *pos, *cased, *neq);
        }
        let slot = self.slot(id);
        match &item.pred {
            Pred::Exists(want) => slot.present == *want,
            Pred::Any(any) => {
                if slot.len == 0 {
                    any.matches_null_or_missing()
                } else {
                    slot.values().iter().any(|s| any.matches(s))
                }
            }
            Pred::All(alls) => alls.iter().all(|a| {
                if slot.len == 0 {
                    a.matches_null_or_missing()
                } else {
                    slot.values().iter().any(|s| a.matches(s))
                }
            }),
            Pred::NoneOf(any) => {
                slot.present
                    && slot.len > 0
                    && !slot.values().iter().any(|s| s.kind == Kind::Null)
                    && !slot.values().iter().any(|s| any.matches(s))
            }
            Pred::FieldRef { .. } => false,
        }
    }

    /// Calls `f` with the folded text of each value of the event that is
    /// at least `min_len` bytes long once folded, one value at a time in a
    /// reused buffer: the prefilter's keyword search, without building the
    /// joined keyword text.
    pub(crate) fn for_each_folded_value(&mut self, min_len: usize, f: &mut dyn FnMut(&str)) {
        let buf = &mut self.scratch.value_text;
        self.event.for_each_value(&mut |v| {
            buf.clear();
            match v {
                // Folding ASCII keeps the length: skip short values uncopied.
                Value::Str(s) if s.is_ascii() && s.len() < min_len => return false,
                Value::Str(s) => fold_into(s, buf),
                Value::Null | Value::List(_) => return false,
                other => {
                    let _ = write!(buf, "{other}");
                    buf.make_ascii_lowercase();
                }
            }
            if buf.len() >= min_len {
                f(buf);
            }
            false
        });
    }

    fn build_keyword_text(&mut self) {
        let sc = &mut *self.scratch;
        if sc.keyword_epoch == sc.epoch {
            return;
        }
        sc.keyword_epoch = sc.epoch;
        sc.keyword_raw.clear();
        sc.keyword_folded.clear();
        sc.keyword_spans.clear();
        let (raw, folded, spans) = (
            &mut sc.keyword_raw,
            &mut sc.keyword_folded,
            &mut sc.keyword_spans,
        );
        self.event.for_each_value(&mut |v| {
            let (r0, f0) = (raw.len(), folded.len());
            match v {
                Value::Str(s) => raw.push_str(s),
                Value::Null | Value::List(_) => return false,
                other => {
                    let _ = write!(raw, "{other}");
                }
            }
            fold_into(&raw[r0..], folded);
            spans.push((r0..raw.len(), f0..folded.len()));
            raw.push('\0');
            folded.push('\0');
            false
        });
    }

    /// A keyword matches when it matches one value of the event.
    fn keyword_any(&self, any: &AnyOf) -> bool {
        let sc = &*self.scratch;
        let spans = || {
            sc.keyword_spans
                .iter()
                .map(|(r, f)| (&sc.keyword_raw[r.clone()], &sc.keyword_folded[f.clone()]))
        };
        any.sets.iter().any(|set| {
            if set.is_contains_only() {
                // A needle never holds a NUL, so it cannot match across
                // two values: one search over the joined text suffices.
                let text = if set.cased {
                    &sc.keyword_raw
                } else {
                    &sc.keyword_folded
                };
                set.is_match_str(text, text)
            } else {
                spans().any(|(raw, folded)| set.is_match_str(raw, folded))
            }
        }) || any.others.iter().any(|l| match l {
            Leaf::Regex(re) => spans().any(|(raw, _)| re.is_match(raw)),
            _ => false,
        })
    }

    /// The first value of the event a keyword item matches (for `|all`,
    /// the values each keyword matched, joined with `, `).
    fn keyword_report(&mut self, pred: &Pred) -> Option<String> {
        self.build_keyword_text();
        let sc = &*self.scratch;
        let first = |any: &AnyOf| {
            sc.keyword_spans.iter().find_map(|(r, f)| {
                let (raw, folded) = (&sc.keyword_raw[r.clone()], &sc.keyword_folded[f.clone()]);
                let hit = any.sets.iter().any(|set| set.is_match_str(raw, folded))
                    || any
                        .others
                        .iter()
                        .any(|l| matches!(l, Leaf::Regex(re) if re.is_match(raw)));
                hit.then(|| raw.to_owned())
            })
        };
        match pred {
            Pred::Any(any) => first(any),
            Pred::All(alls) => {
                let mut seen: Vec<String> = Vec::new();
                for v in alls.iter().filter_map(first) {
                    if !seen.contains(&v) {
                        seen.push(v);
                    }
                }
                (!seen.is_empty()).then(|| seen.join(", "))
            }
            Pred::NoneOf(_) | Pred::Exists(_) | Pred::FieldRef { .. } => None,
        }
    }

    fn keywords(&mut self, pred: &Pred) -> bool {
        self.build_keyword_text();
        match pred {
            Pred::Any(any) => self.keyword_any(any),
            Pred::All(alls) => alls.iter().all(|a| self.keyword_any(a)),
            Pred::NoneOf(any) => !self.keyword_any(any),
            Pred::Exists(_) | Pred::FieldRef { .. } => false,
        }
    }

    fn fieldref(
        &mut self,
        id: FieldId,
        others: &[FieldId],
        all: bool,
        pos: Position,
        cased: bool,
        neq: bool,
    ) -> bool {
        let mut results = others.iter().map(|&other| {
            // Copy the referenced text out so both slots can be read.
            let (raw, folded) = {
                let o = self.slot(other);
                match o.values().first() {
                    Some(s) if s.kind != Kind::Null => (s.raw.clone(), s.folded.clone()),
                    _ => return false,
                }
            };
            let slot = self.slot(id);
            let Some(s) = slot.values().first().filter(|s| s.kind != Kind::Null) else {
                return false;
            };
            let (h, n) = if cased {
                (&s.raw, &raw)
            } else {
                (&s.folded, &folded)
            };
            let hit = match pos {
                Position::Exact => h == n,
                Position::Contains => h.contains(n.as_str()),
                Position::StartsWith => h.starts_with(n.as_str()),
                Position::EndsWith => h.ends_with(n.as_str()),
            };
            hit != neq
        });
        if all || neq {
            results.all(|r| r)
        } else {
            results.any(|r| r)
        }
    }

    /// The value that made a matching item match, for the alert.
    pub(crate) fn report(&mut self, item: &Item) -> Option<String> {
        let Some(id) = item.field else {
            return self.keyword_report(&item.pred);
        };
        let slot = self.slot(id);
        if !slot.present {
            return None;
        }
        let mut text = String::new();
        for (i, s) in slot.values().iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(&s.raw);
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dfa_size_estimate_is_at_least_the_built_size() {
        let sets: [&[&str]; 4] = [
            &["a", "b"],
            &["/dev/tcp/", "/dev/udp/", "curl ", "wget ", "| sh", "|bash"],
            &[
                "chmod 4777 /tmp/.scsi/dev/bin/gsh",
                "chown root:root x;",
                "ewok -t ",
                "xspy -display ",
            ],
            &[
                "\u{e9}t\u{e9}",
                "\0nul",
                "~!@#$%^&*()_+{}|:<>?",
                "0123456789abcdef",
            ],
        ];
        for set in sets {
            let dfa = AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .build(set)
                .unwrap_or_else(|e| panic!("{set:?}: {e}"));
            let estimate = dfa_size_estimate(set.iter().map(|s| s.as_bytes()));
            let built = dfa.memory_usage();
            assert!(
                estimate >= built && estimate <= built * 4 + 4096,
                "{set:?}: estimated {estimate}, built {built}"
            );
        }
    }
}
