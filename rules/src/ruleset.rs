//! Loading a rule set, routing events to rules by logsource, evaluating.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, Span};

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::EngineConfig;
use crate::correlation::{self, CorrelationDef, CorrelationLimits, Correlator};
use crate::error::{ErrorKind, LoadError, Place, RuleError};
use crate::event::Event;
use crate::fxhash::FxHashMap;
use crate::matcher::{Ctx, FieldId, Scratch};
use crate::rule::{self, CompiledRule, FieldTable, RuleInfo, RuleLogSource};

/// Where an event comes from. A rule sees an event only if each of the
/// rule's `product`, `category` and `service` that is set equals the event's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LogSource {
    /// `linux`, `windows`, `macos`, ...
    pub product: Option<String>,
    /// `process_creation`, `network_connection`, ...
    pub category: Option<String>,
    /// `sysmon`, `security`, `auditd`, ...
    pub service: Option<String>,
}

impl LogSource {
    /// A logsource from its three parts.
    #[must_use]
    pub fn new(product: Option<&str>, category: Option<&str>, service: Option<&str>) -> Self {
        LogSource {
            product: product.map(str::to_owned),
            category: category.map(str::to_owned),
            service: service.map(str::to_owned),
        }
    }

    /// `product` and `category`, no service: the shape of the Linux
    /// sensor's events (`LogSource::category("linux", "process_creation")`).
    #[must_use]
    pub fn category(product: &str, category: &str) -> Self {
        Self::new(Some(product), Some(category), None)
    }
}

/// One field that contributed to a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedField {
    /// The field name as the rule wrote it.
    pub name: String,
    /// The event's value, as text (list elements joined with `, `).
    pub value: String,
}

/// A rule that matched an event.
#[derive(Debug, Clone)]
pub struct Match {
    /// The rule: id, title, level, status, author, tags, ATT&CK ids.
    pub rule: Arc<RuleInfo>,
    /// The fields of the rule's (non-negated) selections that matched.
    pub fields: Vec<MatchedField>,
}

/// The outcome of a load: the rules that compiled and one error per rule
/// that did not.
#[derive(Debug)]
#[non_exhaustive]
pub struct Loaded {
    /// The usable rules.
    pub rules: RuleSet,
    /// Rules left out, each with file, rule and place.
    pub errors: Vec<RuleError>,
}

const NONE: u32 = u32::MAX;

/// Largest literal set of one field that the prefilter compiles to a DFA.
const DFA_MAX_PATTERNS: usize = 400;

/// Largest prefilter DFA (by [`crate::matcher::dfa_size_estimate`]); a literal
/// set that could make a larger one gets a contiguous NFA.
const DFA_MAX_BYTES: usize = 1024 * 1024;

/// A compiled, immutable set of rules. Share it between threads with `Arc`;
/// evaluation takes `&self`.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    fields: FieldTable,
    /// Logsource strings to small ids for the routing index.
    names: FxHashMap<Box<str>, u32>,
    /// (product, category, service) of rules → rule indices.
    index: HashMap<[u32; 3], Vec<u32>>,
    /// Bit per rule: no prefilter literal, always evaluated.
    ungated: Vec<u64>,
    /// The prefilter, one literal set per gated field (slot 0: the
    /// keyword text, slot `f + 1`: field `f`), shared by every route.
    prefilter: Vec<FieldGate>,
    /// Correlation rules, evaluated by a [`Correlator`].
    correlations: Vec<Arc<CorrelationDef>>,
    /// Prefilter automata built so far, shared by the routes.
    automata: RwLock<FxHashMap<AutomatonKey, Option<Arc<Automaton>>>>,
    /// Routes built so far, keyed by interned logsources (names the set
    /// does not know collapse into one id, so the cache stays bounded).
    routes: RwLock<FxHashMap<Vec<[u32; 3]>, Arc<Route>>>,
    /// Identifies the set a [`Route`] was built for.
    id: u64,
}

static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// The rules an event of some logsource(s) is evaluated against, with a
/// prefilter: for every rule with a necessary literal condition ("the folded
/// `CommandLine` contains one of `/dev/tcp/`, ..."), one Aho-Corasick
/// automaton per field finds in one pass which rules can possibly match;
/// only those, and the rules without such a condition, are evaluated. The
/// automata belong to the rule set (one per field, over all its rules) and
/// are shared by every route; a route is a bitset of its rules and the list
/// of fields to scan.
///
/// [`RuleSet::evaluate`] builds and caches routes itself; a caller with a
/// fixed logsource can hold one from [`RuleSet::route`] and call
/// [`RuleSet::evaluate_route`] to skip the cache lookup.
#[derive(Debug)]
pub struct Route {
    set_id: u64,
    len: usize,
    /// Bit per rule of the set: on this route.
    member: Vec<u64>,
    /// Bit per rule of the set: on this route and evaluated whatever the
    /// prefilter says.
    ungated: Vec<u64>,
    /// The prefilter automata to run.
    gates: Vec<Arc<Automaton>>,
}

impl Route {
    /// The number of rules on this route.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no rule applies.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The prefilter literals of one field over the whole set.
#[derive(Debug)]
struct FieldGate {
    /// `None`: the keyword text (all values of the event).
    field: Option<FieldId>,
    literals: Vec<Box<str>>,
    /// Literal `p` unlocks the rules `unlocks[starts[p]..starts[p + 1]]`.
    starts: Vec<u32>,
    unlocks: Vec<u32>,
}

impl FieldGate {
    fn unlocked(&self, literal: usize) -> &[u32] {
        &self.unlocks[self.starts[literal] as usize..self.starts[literal + 1] as usize]
    }
}

/// An automaton over some literals of one prefilter slot, shared by the
/// routes that need the same literals.
#[derive(Debug)]
struct Automaton {
    slot: u32,
    ac: AhoCorasick,
    /// The shortest pattern: shorter texts are not searched.
    min_len: usize,
    /// For a few patterns, a SIMD (Teddy) searcher that replaces `ac`.
    packed: Option<Packed>,
    /// Automaton pattern → literal of the slot; empty when the automaton
    /// holds all of the slot's literals in order.
    literal_of: Vec<u32>,
}

/// A leftmost-longest packed searcher restarted one byte after each match
/// start finds, at every position where some pattern starts, the longest
/// one there; every other pattern starting there is a prefix of it, so
/// reporting those prefixes too gives every pattern that occurs, as an
/// overlapping search would, at a fraction of its cost.
#[derive(Debug)]
struct Packed {
    searcher: packed::Searcher,
    /// Per pattern, the other patterns that are prefixes of it.
    prefixes: Vec<Vec<u32>>,
}

/// Up to this many patterns, try a packed searcher (Teddy's own limit).
const PACKED_MAX_PATTERNS: usize = 64;

impl Packed {
    fn new(patterns: &[&[u8]]) -> Option<Packed> {
        if patterns.len() > PACKED_MAX_PATTERNS {
            return None;
        }
        let mut config = packed::Config::new();
        config.match_kind(packed::MatchKind::LeftmostLongest);
        let mut builder = config.builder();
        builder.extend(patterns);
        let searcher = builder.build()?;
        let prefixes = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..patterns.len())
                    .filter(|&j| j != i && p.starts_with(patterns[j]))
                    .map(|j| u32::try_from(j).expect("at most 64 patterns"))
                    .collect()
            })
            .collect();
        Some(Packed { searcher, prefixes })
    }
}

impl Automaton {
    /// Calls `f` with every pattern that occurs in `text` (a pattern may be
    /// reported more than once).
    fn each_pattern(&self, text: &[u8], f: &mut impl FnMut(usize)) {
        if text.len() < self.min_len {
            return;
        }
        match &self.packed {
            Some(p) => {
                let mut at = 0;
                while let Some(m) = p.searcher.find_in(text, Span::from(at..text.len())) {
                    let id = m.pattern().as_usize();
                    f(id);
                    for &q in &p.prefixes[id] {
                        f(q as usize);
                    }
                    at = m.start() + 1;
                }
            }
            None => {
                for m in self.ac.find_overlapping_iter(text) {
                    f(m.pattern().as_usize());
                }
            }
        }
    }
}

/// Cache key of an [`Automaton`]: the slot and its literals (empty: all).
type AutomatonKey = (u32, Vec<u32>);

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl RuleSet {
    /// Loads every `.yml`/`.yaml` file below `dir` (sorted, recursively).
    ///
    /// # Errors
    /// Only when a directory cannot be listed; bad rules and unreadable
    /// files are reported in [`Loaded::errors`].
    pub fn from_dir(dir: impl AsRef<Path>, config: &EngineConfig) -> Result<Loaded, LoadError> {
        let files = files_with_extensions(dir.as_ref(), &RULE_EXTENSIONS)?;
        let mut b = Builder::new(config);
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => b.add(&path, &text),
                Err(e) => b.errors.push(RuleError {
                    path,
                    id: None,
                    title: None,
                    place: Place::Document,
                    kind: ErrorKind::Io(e.to_string()),
                }),
            }
        }
        Ok(b.finish())
    }

    /// Loads rules from `(path, YAML text)` pairs; the path is only used in
    /// errors and in [`RuleInfo::path`].
    pub fn from_sources<I, P, T>(sources: I, config: &EngineConfig) -> Loaded
    where
        I: IntoIterator<Item = (P, T)>,
        P: Into<PathBuf>,
        T: AsRef<str>,
    {
        let mut b = Builder::new(config);
        for (path, text) in sources {
            b.add(&path.into(), text.as_ref());
        }
        b.finish()
    }

    /// The number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set has no rules.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A correlator for this set's correlation rules (one per event stream).
    #[must_use]
    pub fn correlator(&self, limits: CorrelationLimits) -> Correlator {
        Correlator::new(self.correlations.clone(), limits)
    }

    /// The correlation rules' metadata.
    pub fn correlation_rules(&self) -> impl Iterator<Item = &Arc<RuleInfo>> {
        self.correlations.iter().map(|c| &c.info)
    }

    /// The rules' metadata.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleInfo>> {
        self.rules.iter().map(|r| &r.info)
    }

    /// Evaluates every rule of `source` against `event`, appending one
    /// [`Match`] per matching rule to `out`. Returns the number appended.
    ///
    /// Allocation-free unless a rule matches (the per-thread field cache
    /// keeps its buffers between calls).
    pub fn evaluate<E: Event + ?Sized>(
        &self,
        source: &LogSource,
        event: &E,
        out: &mut Vec<Match>,
    ) -> usize {
        self.evaluate_sources(std::slice::from_ref(source), event, out)
    }

    /// Like [`RuleSet::evaluate`] for an event that belongs to several
    /// logsources at once (a Sysmon event 12 is both `registry_event` and
    /// `registry_add`); each rule is evaluated at most once.
    pub fn evaluate_sources<E: Event + ?Sized>(
        &self,
        sources: &[LogSource],
        event: &E,
        out: &mut Vec<Match>,
    ) -> usize {
        let event: &dyn Event = &event;
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run(sources, event, &mut scratch, out),
            // Re-entered from inside an Event implementation: use a fresh
            // scratch rather than fail.
            Err(_) => self.run(sources, event, &mut Scratch::default(), out),
        })
    }

    fn run(
        &self,
        sources: &[LogSource],
        event: &dyn Event,
        scratch: &mut Scratch,
        out: &mut Vec<Match>,
    ) -> usize {
        let route = self.route(sources);
        self.run_route(&route, event, scratch, out)
    }

    /// The route (rules and prefilter) for events of `sources`, built once
    /// and cached.
    pub fn route(&self, sources: &[LogSource]) -> Arc<Route> {
        // Look up without allocating: most events have one or two sources.
        let mut small = [[0u32; 3]; 4];
        if sources.len() <= small.len() {
            for (slot, src) in small.iter_mut().zip(sources) {
                *slot = self.key(src);
            }
            let key = &small[..sources.len()];
            if let Some(r) = self
                .routes
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
            {
                return Arc::clone(r);
            }
        }
        let key: Vec<[u32; 3]> = sources.iter().map(|s| self.key(s)).collect();
        let route = Arc::new(self.build_route(sources));
        Arc::clone(
            self.routes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_insert(route),
        )
    }

    /// Evaluates the rules of a route from [`RuleSet::route`] (a route of
    /// another set matches nothing).
    pub fn evaluate_route<E: Event + ?Sized>(
        &self,
        route: &Route,
        event: &E,
        out: &mut Vec<Match>,
    ) -> usize {
        if route.set_id != self.id {
            return 0;
        }
        let event: &dyn Event = &event;
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run_route(route, event, &mut scratch, out),
            Err(_) => self.run_route(route, event, &mut Scratch::default(), out),
        })
    }

    fn key(&self, src: &LogSource) -> [u32; 3] {
        let id = |v: &Option<String>| match v {
            None => NONE,
            Some(s) => self.names.get(s.as_str()).copied().unwrap_or(NONE - 1),
        };
        [id(&src.product), id(&src.category), id(&src.service)]
    }

    fn build_route(&self, sources: &[LogSource]) -> Route {
        let mut rules = Vec::new();
        for src in sources {
            self.route_into(src, &mut rules);
        }
        rules.sort_unstable();
        rules.dedup();
        let mut member = vec![0u64; self.rules.len().div_ceil(64)];
        for &r in &rules {
            member[r as usize / 64] |= 1 << (r % 64);
        }
        let mut ungated: Vec<u64> = member
            .iter()
            .zip(&self.ungated)
            .map(|(m, u)| m & u)
            .collect();
        let on_route = |r: &u32| member[*r as usize / 64] & (1 << (r % 64)) != 0;
        let mut gates = Vec::new();
        for (slot, gate) in self.prefilter.iter().enumerate() {
            let slot = u32::try_from(slot).expect("fewer than 2^32 fields");
            let mut wanted: Vec<u32> = (0..gate.literals.len())
                .filter(|&p| gate.unlocked(p).iter().any(on_route))
                .map(|p| u32::try_from(p).expect("fewer than 2^32 literals"))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            // A route that needs most of a field's literals shares the
            // automaton of all of them (extra hits are masked out when
            // evaluating); one that needs few gets a smaller, faster one,
            // shared with the routes that need the same few.
            if wanted.len() * 2 >= gate.literals.len() {
                wanted.clear();
            }
            match self.automaton(slot, wanted.clone()) {
                Some(ac) => gates.push(ac),
                None => {
                    let lits: Vec<usize> = if wanted.is_empty() {
                        (0..gate.literals.len()).collect()
                    } else {
                        wanted.iter().map(|&p| p as usize).collect()
                    };
                    for p in lits {
                        for &r in gate.unlocked(p).iter().filter(|r| on_route(r)) {
                            ungated[r as usize / 64] |= 1 << (r % 64);
                        }
                    }
                }
            }
        }
        Route {
            set_id: self.id,
            len: rules.len(),
            member,
            ungated,
            gates,
        }
    }

    /// The automaton over `literals` (empty: all) of prefilter `slot`,
    /// built once; `None` if it could not be built.
    fn automaton(&self, slot: u32, literals: Vec<u32>) -> Option<Arc<Automaton>> {
        let key = (slot, literals);
        if let Some(hit) = self
            .automata
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return hit.clone();
        }
        let gate = &self.prefilter[slot as usize];
        let (slot, literal_of) = key;
        let patterns: Vec<&[u8]> = if literal_of.is_empty() {
            gate.literals.iter().map(|l| l.as_bytes()).collect()
        } else {
            literal_of
                .iter()
                .map(|&p| gate.literals[p as usize].as_bytes())
                .collect()
        };
        // A DFA searches fastest, but its size grows with the patterns:
        // over the thousands of Windows CommandLine literals it costs
        // seconds to build and ~150 MB; large sets get a contiguous NFA, and
        // so does a set whose DFA could grow past DFA_MAX_BYTES (the Linux
        // keyword literals: 145 of them make a 1.4 MB DFA).
        let kind = if patterns.len() <= DFA_MAX_PATTERNS
            && crate::matcher::dfa_size_estimate(patterns.iter().copied()) <= DFA_MAX_BYTES
        {
            AhoCorasickKind::DFA
        } else {
            AhoCorasickKind::ContiguousNFA
        };
        let min_len = patterns.iter().map(|p| p.len()).min().unwrap_or(0);
        let packed = Packed::new(&patterns);
        let built = AhoCorasick::builder()
            .kind(Some(kind))
            .build(patterns)
            .ok()
            .map(|ac| {
                Arc::new(Automaton {
                    slot,
                    ac,
                    min_len,
                    packed,
                    literal_of: literal_of.clone(),
                })
            });
        self.automata
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((slot, literal_of))
            .or_insert(built)
            .clone()
    }

    fn run_route(
        &self,
        route: &Route,
        event: &dyn Event,
        scratch: &mut Scratch,
        out: &mut Vec<Match>,
    ) -> usize {
        scratch.next_event(self.fields.names.len());
        let mut bits = std::mem::take(&mut scratch.candidates);
        bits.clear();
        bits.extend_from_slice(&route.ungated);
        let mut ctx = Ctx {
            event,
            names: &self.fields.names,
            scratch,
        };
        for auto in &route.gates {
            let gate = &self.prefilter[auto.slot as usize];
            // Rules of other routes are unlocked too and masked out below:
            // cheaper than testing membership per hit.
            let mut unlock = |text: &str| {
                auto.each_pattern(text.as_bytes(), &mut |p| {
                    let literal = auto.literal_of.get(p).map_or(p, |&l| l as usize);
                    for &r in gate.unlocked(literal) {
                        bits[r as usize / 64] |= 1 << (r % 64);
                    }
                });
            };
            match gate.field {
                Some(f) => ctx.for_each_folded(f, &mut unlock),
                // Value by value (a keyword matches within one value): no
                // joined copy of the event unless a keyword rule is a
                // candidate.
                None => ctx.for_each_folded_value(auto.min_len, &mut unlock),
            }
        }
        let before = out.len();
        for (w, (&word, &member)) in bits.iter().zip(&route.member).enumerate() {
            let mut word = word & member;
            while word != 0 {
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                let rule = &self.rules[w * 64 + bit];
                if rule.matches(&mut ctx) {
                    let mut fields = Vec::new();
                    rule.matched_fields(&mut ctx, &mut fields);
                    out.push(Match {
                        rule: Arc::clone(&rule.info),
                        fields: fields
                            .into_iter()
                            .map(|(name, value)| MatchedField { name, value })
                            .collect(),
                    });
                }
            }
        }
        ctx.scratch.candidates = bits;
        out.len() - before
    }

    /// Appends the indices of the rules that apply to `src`.
    fn route_into(&self, src: &LogSource, out: &mut Vec<u32>) {
        let ids = |v: &Option<String>| -> [u32; 2] {
            match v {
                None => [NONE, NONE],
                Some(s) => [
                    self.names.get(s.as_str()).copied().unwrap_or(NONE - 1),
                    NONE,
                ],
            }
        };
        let (p, c, s) = (ids(&src.product), ids(&src.category), ids(&src.service));
        let dims = |a: [u32; 2]| if a[0] == NONE { 1 } else { 2 };
        for &pi in &p[..dims(p)] {
            for &ci in &c[..dims(c)] {
                for &si in &s[..dims(s)] {
                    if let Some(list) = self.index.get(&[pi, ci, si]) {
                        out.extend_from_slice(list);
                    }
                }
            }
        }
    }

    /// The rules that an event of `source` is evaluated against.
    pub fn rules_for(&self, source: &LogSource) -> impl Iterator<Item = &Arc<RuleInfo>> {
        let mut idx = Vec::new();
        self.route_into(source, &mut idx);
        idx.sort_unstable();
        idx.into_iter().map(|i| &self.rules[i as usize].info)
    }
}

/// Every file below `dir` (recursively) whose extension is one of `exts`,
/// sorted: the walk [`RuleSet::from_dir`] uses for `.yml`/`.yaml`, shared
/// with tools that gather rules or logs the same way.
///
/// # Errors
/// [`LoadError::Dir`] naming the directory that could not be listed.
pub fn files_with_extensions(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, LoadError> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
        let err = |source| LoadError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            if path.is_dir() {
                walk(&path, exts, out)?;
            } else if path
                .extension()
                .is_some_and(|e| exts.iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, exts, &mut out)?;
    out.sort();
    Ok(out)
}

/// The rule file extensions.
pub const RULE_EXTENSIONS: [&str; 2] = ["yml", "yaml"];

struct Builder<'a> {
    config: &'a EngineConfig,
    rules: Vec<CompiledRule>,
    fields: FieldTable,
    errors: Vec<RuleError>,
    /// Filter and correlation documents, resolved once every rule is in.
    filters: Vec<(PathBuf, yaml_rust2::yaml::Hash)>,
    correlations: Vec<(PathBuf, yaml_rust2::yaml::Hash)>,
}

impl<'a> Builder<'a> {
    fn new(config: &'a EngineConfig) -> Self {
        Builder {
            config,
            rules: Vec::new(),
            fields: FieldTable::default(),
            errors: Vec::new(),
            filters: Vec::new(),
            correlations: Vec::new(),
        }
    }

    fn add(&mut self, path: &Path, text: &str) {
        let docs = match YamlLoader::load_from_str(text) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(RuleError {
                    path: path.to_path_buf(),
                    id: None,
                    title: None,
                    place: Place::Document,
                    kind: ErrorKind::Yaml(e.to_string()),
                });
                return;
            }
        };
        // Sigma v1 rule collections: `action: global` documents are merged
        // into every following document, `action: reset` drops them.
        let mut global: Option<yaml_rust2::yaml::Hash> = None;
        for doc in docs {
            let Yaml::Hash(mut map) = doc else {
                if !matches!(doc, Yaml::Null) {
                    self.error(
                        path,
                        None,
                        Place::Document,
                        ErrorKind::BadValue("a rule must be a YAML map".into()),
                    );
                }
                continue;
            };
            match rule::get(&map, "action")
                .and_then(rule::yaml_str)
                .as_deref()
            {
                Some("global") => {
                    map.remove(&Yaml::String("action".into()));
                    global = Some(map);
                    continue;
                }
                Some("reset") => {
                    global = None;
                    continue;
                }
                _ => {}
            }
            if let Some(g) = &global {
                map = merge(g.clone(), map);
            }
            self.add_doc(path, &map);
        }
    }

    fn error(
        &mut self,
        path: &Path,
        doc: Option<&yaml_rust2::yaml::Hash>,
        place: Place,
        kind: ErrorKind,
    ) {
        let s = |k: &str| doc.and_then(|d| rule::get(d, k)).and_then(rule::yaml_str);
        self.errors.push(RuleError {
            path: path.to_path_buf(),
            id: s("id"),
            title: s("title"),
            place,
            kind,
        });
    }

    fn add_doc(&mut self, path: &Path, doc: &yaml_rust2::yaml::Hash) {
        if rule::get(doc, "correlation").is_some() {
            self.correlations.push((path.to_path_buf(), doc.clone()));
            return;
        }
        if rule::get(doc, "filter").is_some() && rule::get(doc, "detection").is_none() {
            self.filters.push((path.to_path_buf(), doc.clone()));
            return;
        }
        let info = match rule::parse_info(doc, path) {
            Ok(i) => i,
            Err((place, kind)) => return self.error(path, Some(doc), place, kind),
        };
        match rule::compile(doc, info, self.config, &mut self.fields) {
            Ok(r) => self.rules.push(r),
            Err((place, kind)) => self.error(path, Some(doc), place, kind),
        }
    }

    /// Filter rules (Sigma filters specification): the filter's condition is
    /// ANDed to the condition of each rule it names (all rules of its
    /// logsource when it names none), as pySigma does. See the crate docs
    /// for why this reading and not the specification example's.
    fn resolve_filters(&mut self) {
        for (path, doc) in std::mem::take(&mut self.filters) {
            let info = match rule::parse_info(&doc, &path) {
                Ok(i) => i,
                Err((place, kind)) => {
                    self.error(&path, Some(&doc), place, kind);
                    continue;
                }
            };
            let Some(yaml_rust2::Yaml::Hash(filter)) = rule::get(&doc, "filter") else {
                self.error(
                    &path,
                    Some(&doc),
                    Place::Filter,
                    ErrorKind::BadValue("`filter` must be a map".into()),
                );
                continue;
            };
            let targets: Vec<String> = match rule::get(filter, "rules") {
                Some(yaml_rust2::Yaml::Array(v)) => v.iter().filter_map(rule::yaml_str).collect(),
                Some(other) => rule::yaml_str(other).into_iter().collect(),
                None => Vec::new(),
            };
            let mut detection = filter.clone();
            detection.remove(&yaml_rust2::Yaml::String("rules".into()));
            let ls = info.logsource.clone();
            let compiled =
                match rule::compile_detection(&detection, info, self.config, &mut self.fields) {
                    Ok(c) => Arc::new(c),
                    Err((_, kind)) => {
                        self.error(&path, Some(&doc), Place::Filter, kind);
                        continue;
                    }
                };
            let known = |r: &CompiledRule, t: &str| {
                r.info.id.as_deref() == Some(t) || r.info.name.as_deref() == Some(t)
            };
            if let Some(missing) = targets
                .iter()
                .find(|t| !self.rules.iter().any(|r| known(r, t)))
            {
                let kind = ErrorKind::UnknownReference(missing.clone());
                self.error(&path, Some(&doc), Place::Filter, kind);
                continue;
            }
            for r in &mut self.rules {
                let named = targets.is_empty() || targets.iter().any(|t| known(r, t));
                if named && logsource_covers(&ls, &r.info.logsource) {
                    r.filters.push(Arc::clone(&compiled));
                }
            }
        }
    }

    fn resolve_correlations(&mut self) -> Vec<Arc<CorrelationDef>> {
        let mut defs = Vec::new();
        for (path, doc) in std::mem::take(&mut self.correlations) {
            let info = match rule::parse_info(&doc, &path) {
                Ok(i) => i,
                Err((place, kind)) => {
                    self.error(&path, Some(&doc), place, kind);
                    continue;
                }
            };
            match correlation::parse(&doc, info) {
                Ok(def) => defs.push((path, doc, def)),
                Err(kind) => self.error(&path, Some(&doc), Place::Correlation, kind),
            }
        }
        let mut known: HashSet<String> = HashSet::new();
        for r in &self.rules {
            known.extend(r.info.id.iter().chain(r.info.name.iter()).cloned());
        }
        for (_, _, d) in &defs {
            known.extend(d.info.id.iter().chain(d.info.name.iter()).cloned());
        }
        let mut out = Vec::new();
        for (path, doc, def) in defs {
            if let Some(missing) = def.rules.iter().find(|r| !known.contains(*r)) {
                let kind = ErrorKind::UnknownReference(missing.clone());
                self.error(&path, Some(&doc), Place::Correlation, kind);
                continue;
            }
            out.push(Arc::new(def));
        }
        out
    }

    /// The rules without a prefilter literal (bitset) and, per gated
    /// field, the literals and the rules each one unlocks.
    fn prefilter(&self) -> (Vec<u64>, Vec<FieldGate>) {
        let n = self.rules.len();
        let mut ungated = vec![0u64; n.div_ceil(64)];
        // Per slot: literal → index, and (literal index, rule) pairs.
        type Literals = (HashMap<String, u32>, Vec<Box<str>>, Vec<(u32, u32)>);
        let mut per_slot: Vec<Literals> = Vec::new();
        per_slot.resize_with(self.fields.names.len() + 1, Default::default);
        for (i, r) in self.rules.iter().enumerate() {
            let i32 = u32::try_from(i).expect("fewer than 2^32 rules");
            let gate = if self.config.no_prefilter {
                None
            } else {
                r.gate()
            };
            let Some(gate) = gate else {
                ungated[i / 64] |= 1 << (i % 64);
                continue;
            };
            for (field, lit) in gate {
                let slot = field.map_or(0, |f| f as usize + 1);
                let (ids, lits, pairs) = &mut per_slot[slot];
                let next = u32::try_from(lits.len()).expect("fewer than 2^32 literals");
                let idx = *ids.entry(lit).or_insert_with_key(|lit| {
                    lits.push(lit.as_str().into());
                    next
                });
                pairs.push((idx, i32));
            }
        }
        let mut gates = Vec::new();
        for (slot, (_, literals, mut pairs)) in per_slot.into_iter().enumerate() {
            if literals.is_empty() {
                continue;
            }
            pairs.sort_unstable();
            pairs.dedup();
            let mut starts = Vec::with_capacity(literals.len() + 1);
            let mut unlocks = Vec::with_capacity(pairs.len());
            for (lit, rule) in pairs {
                while starts.len() <= lit as usize {
                    starts.push(u32::try_from(unlocks.len()).expect("fewer than 2^32 pairs"));
                }
                unlocks.push(rule);
            }
            while starts.len() <= literals.len() {
                starts.push(u32::try_from(unlocks.len()).expect("fewer than 2^32 pairs"));
            }
            gates.push(FieldGate {
                field: slot
                    .checked_sub(1)
                    .map(|f| u32::try_from(f).expect("fewer than 2^32 fields")),
                literals,
                starts,
                unlocks,
            });
        }
        (ungated, gates)
    }

    fn finish(mut self) -> Loaded {
        self.resolve_filters();
        let correlations = self.resolve_correlations();
        let mut names: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut intern = |s: &Option<String>| -> u32 {
            match s {
                None => NONE,
                Some(s) => {
                    let next = u32::try_from(names.len()).expect("fewer than 2^32 logsource names");
                    *names.entry(s.as_str().into()).or_insert(next)
                }
            }
        };
        let (ungated, prefilter) = self.prefilter();
        let mut index: HashMap<[u32; 3], Vec<u32>> = HashMap::new();
        for (i, r) in self.rules.iter().enumerate() {
            let RuleLogSource {
                product,
                category,
                service,
            } = &r.info.logsource;
            let key = [intern(product), intern(category), intern(service)];
            index
                .entry(key)
                .or_default()
                .push(u32::try_from(i).expect("fewer than 2^32 rules"));
        }
        Loaded {
            rules: RuleSet {
                rules: self.rules,
                fields: self.fields,
                names,
                index,
                ungated,
                prefilter,
                correlations,
                automata: RwLock::new(FxHashMap::default()),
                routes: RwLock::new(FxHashMap::default()),
                id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            },
            errors: self.errors,
        }
    }
}

/// Whether a filter of logsource `filter` applies to a rule of logsource
/// `rule`: every field the filter sets is the rule's.
fn logsource_covers(filter: &RuleLogSource, rule: &RuleLogSource) -> bool {
    let ok = |f: &Option<String>, r: &Option<String>| f.is_none() || f == r;
    ok(&filter.product, &rule.product)
        && ok(&filter.category, &rule.category)
        && ok(&filter.service, &rule.service)
}

/// Deep merge for `action: global`: maps merge key by key, anything else in
/// `over` replaces `base`.
fn merge(mut base: yaml_rust2::yaml::Hash, over: yaml_rust2::yaml::Hash) -> yaml_rust2::yaml::Hash {
    for (k, v) in over {
        let merged = match (base.remove(&k), v) {
            (Some(Yaml::Hash(b)), Yaml::Hash(o)) => Yaml::Hash(merge(b, o)),
            (_, v) => v,
        };
        base.insert(k, merged);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The packed search (leftmost-longest, restarted after each match
    /// start, prefixes added) must report exactly the patterns that occur.
    fn check_packed(patterns: &[&[u8]], text: &[u8]) -> Result<(), TestCaseError> {
        let Some(p) = Packed::new(patterns) else {
            return Ok(()); // no SIMD here: the automaton is used instead
        };
        let auto = Automaton {
            slot: 0,
            ac: AhoCorasick::new(patterns).expect("small automaton"),
            min_len: patterns.iter().map(|p| p.len()).min().unwrap_or(0),
            packed: Some(p),
            literal_of: Vec::new(),
        };
        let mut found = std::collections::BTreeSet::new();
        auto.each_pattern(text, &mut |i| {
            found.insert(i);
        });
        let want: std::collections::BTreeSet<usize> = (0..patterns.len())
            .filter(|&i| text.windows(patterns[i].len()).any(|w| w == patterns[i]))
            .collect();
        prop_assert_eq!(found, want);
        Ok(())
    }

    #[test]
    fn packed_reports_overlapping_and_nested_patterns() {
        let pats: [&[u8]; 5] = [b"ab", b"abc", b"bcd", b"c", b"abcdef"];
        check_packed(&pats, b"xxabcdefxx").unwrap();
        check_packed(&pats, b"abcab").unwrap();
        check_packed(&pats, b"zzz").unwrap();
    }

    proptest! {
        #[test]
        fn packed_finds_what_occurs(
            pats in prop::collection::btree_set("[abc]{1,4}", 1..20),
            text in "[abcd]{0,80}",
        ) {
            let pats: Vec<&[u8]> = pats.iter().map(String::as_bytes).collect();
            check_packed(&pats, text.as_bytes())?;
        }
    }
}
