//! Loading a rule set, routing events to rules by logsource, evaluating.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::EngineConfig;
use crate::correlation::{self, CorrelationDef, CorrelationLimits, Correlator};
use crate::error::{ErrorKind, LoadError, Place, RuleError};
use crate::event::Event;
use crate::fxhash::FxHashMap;
use crate::matcher::{Ctx, FieldId, Scratch};
use crate::rule::{self, CompiledRule, FieldTable, Gate, RuleInfo, RuleLogSource};

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
    /// Each rule's prefilter gate (see [`Route`]).
    gates: Vec<Option<Gate>>,
    /// Correlation rules, evaluated by a [`Correlator`].
    correlations: Vec<Arc<CorrelationDef>>,
    /// Routes built so far, keyed by interned logsources (names the set
    /// does not know collapse into one id, so the cache stays bounded).
    routes: RwLock<FxHashMap<Vec<[u32; 3]>, Arc<Route>>>,
    /// Prefilter automata by literal list, shared by the routes.
    automata: Mutex<HashMap<Vec<String>, AhoCorasick>>,
    /// Identifies the set a [`Route`] was built for.
    id: u64,
}

static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// The rules an event of some logsource(s) is evaluated against, with a
/// prefilter: for every rule with a necessary literal condition ("the folded
/// `CommandLine` contains one of `/dev/tcp/`, ..."), one Aho-Corasick
/// automaton per field finds in one pass which rules can possibly match;
/// only those, and the rules without such a condition, are evaluated.
///
/// [`RuleSet::evaluate`] builds and caches routes itself; a caller with a
/// fixed logsource can hold one from [`RuleSet::route`] and call
/// [`RuleSet::evaluate_route`] to skip the cache lookup.
#[derive(Debug)]
pub struct Route {
    set_id: u64,
    rules: Vec<u32>,
    /// Bit per position in `rules`: evaluated whatever the prefilter says.
    ungated: Vec<u64>,
    gates: Vec<FieldGate>,
}

impl Route {
    /// The number of rules on this route.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule applies.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[derive(Debug)]
struct FieldGate {
    /// `None`: the keyword text (all values of the event).
    field: Option<FieldId>,
    ac: AhoCorasick,
    /// Per automaton pattern, the positions (in `Route::rules`) it unlocks.
    unlocks: Vec<Vec<u32>>,
}

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
        let mut ungated = vec![0u64; rules.len().div_ceil(64)];
        // Per field: literal → automaton pattern, the literals, and the rule
        // positions each pattern unlocks.
        type Patterns = (HashMap<String, usize>, Vec<String>, Vec<Vec<u32>>);
        let mut per_field: HashMap<Option<FieldId>, Patterns> = HashMap::new();
        for (pos, &r) in rules.iter().enumerate() {
            let pos32 = u32::try_from(pos).expect("fewer than 2^32 rules");
            match &self.gates[r as usize] {
                None => ungated[pos / 64] |= 1 << (pos % 64),
                Some(gate) => {
                    for (field, lit) in gate {
                        let (ids, lits, unlocks) = per_field.entry(*field).or_default();
                        let idx = *ids.entry(lit.clone()).or_insert_with(|| {
                            lits.push(lit.clone());
                            unlocks.push(Vec::new());
                            lits.len() - 1
                        });
                        if unlocks[idx].last() != Some(&pos32) {
                            unlocks[idx].push(pos32);
                        }
                    }
                }
            }
        }
        let mut fields: Vec<_> = per_field.into_iter().collect();
        fields.sort_by_key(|(f, _)| f.map_or(-1, i64::from));
        let mut gates = Vec::new();
        for (field, (_, lits, unlocks)) in fields {
            match self.automaton(lits) {
                Ok(ac) => gates.push(FieldGate { field, ac, unlocks }),
                Err(_) => {
                    // No automaton: evaluate those rules unconditionally.
                    for p in unlocks.into_iter().flatten() {
                        ungated[p as usize / 64] |= 1 << (p % 64);
                    }
                }
            }
        }
        Route {
            set_id: self.id,
            rules,
            ungated,
            gates,
        }
    }

    /// The prefilter automaton of a literal list. Routes share one per list
    /// (`AhoCorasick` clones share it): the rules that name only a product
    /// (the Linux set's keyword rules) are on every route, and without this
    /// each route built its own copy of their automaton.
    fn automaton(&self, lits: Vec<String>) -> Result<AhoCorasick, aho_corasick::BuildError> {
        let mut cache = self.automata.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ac) = cache.get(&lits) {
            return Ok(ac.clone());
        }
        // A DFA searches fastest, but its size grows with the patterns:
        // over the thousands of Windows process_creation literals it costs
        // seconds to build and ~100 MB. Large sets get the crate's own
        // choice (a contiguous NFA), and so does a set whose DFA could grow
        // past DFA_MAX_BYTES (the Linux keyword literals: 145 of them made
        // a 1.4 MB DFA, once per route; a 3 MB estimate).
        let dfa = lits.len() <= DFA_MAX_PATTERNS
            && crate::matcher::dfa_size_estimate(lits.iter().map(String::as_bytes))
                <= DFA_MAX_BYTES;
        let ac = AhoCorasick::builder()
            .kind(dfa.then_some(AhoCorasickKind::DFA))
            .build(&lits)?;
        cache.insert(lits, ac.clone());
        Ok(ac)
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
        for gate in &route.gates {
            let mut unlock = |text: &str| {
                for m in gate.ac.find_overlapping_iter(text) {
                    for &p in &gate.unlocks[m.pattern().as_usize()] {
                        bits[p as usize / 64] |= 1 << (p % 64);
                    }
                }
            };
            match gate.field {
                Some(f) => ctx.for_each_folded(f, &mut unlock),
                None => unlock(ctx.keyword_text()),
            }
        }
        let before = out.len();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                let rule = &self.rules[route.rules[w * 64 + bit] as usize];
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
        let gates = if self.config.no_prefilter {
            vec![None; self.rules.len()]
        } else {
            self.rules.iter().map(CompiledRule::gate).collect()
        };
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
                gates,
                correlations,
                routes: RwLock::new(FxHashMap::default()),
                automata: Mutex::new(HashMap::new()),
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
