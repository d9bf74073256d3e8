//! Loading a rule set, routing events to rules by logsource, evaluating.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::EngineConfig;
use crate::error::{ErrorKind, LoadError, Place, RuleError};
use crate::event::Event;
use crate::matcher::{Ctx, Scratch};
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

/// A compiled, immutable set of rules. Share it between threads with `Arc`;
/// evaluation takes `&self`.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    fields: FieldTable,
    /// Logsource strings to small ids for the routing index.
    names: HashMap<Box<str>, u32>,
    /// (product, category, service) of rules → rule indices.
    index: HashMap<[u32; 3], Vec<u32>>,
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
        let mut files = Vec::new();
        collect_yaml(dir.as_ref(), &mut files)?;
        files.sort();
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
        scratch.next_event(self.fields.names.len());
        let mut candidates = std::mem::take(&mut scratch.candidates);
        candidates.clear();
        for src in sources {
            self.route_into(src, &mut candidates);
        }
        if sources.len() > 1 {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let mut ctx = Ctx {
            event,
            names: &self.fields.names,
            scratch,
        };
        let before = out.len();
        for &i in &candidates {
            let rule = &self.rules[i as usize];
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
        ctx.scratch.candidates = candidates;
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

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| LoadError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

struct Builder<'a> {
    config: &'a EngineConfig,
    rules: Vec<CompiledRule>,
    fields: FieldTable,
    errors: Vec<RuleError>,
}

impl<'a> Builder<'a> {
    fn new(config: &'a EngineConfig) -> Self {
        Builder {
            config,
            rules: Vec::new(),
            fields: FieldTable::default(),
            errors: Vec::new(),
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
            self.error(
                path,
                Some(doc),
                Place::Correlation,
                ErrorKind::Unsupported("correlation rules are not evaluated yet".into()),
            );
            return;
        }
        if rule::get(doc, "filter").is_some() && rule::get(doc, "detection").is_none() {
            self.error(
                path,
                Some(doc),
                Place::Filter,
                ErrorKind::Unsupported("filter rules are not evaluated yet".into()),
            );
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

    fn finish(self) -> Loaded {
        let mut names: HashMap<Box<str>, u32> = HashMap::new();
        let mut intern = |s: &Option<String>| -> u32 {
            match s {
                None => NONE,
                Some(s) => {
                    let next = u32::try_from(names.len()).expect("fewer than 2^32 logsource names");
                    *names.entry(s.as_str().into()).or_insert(next)
                }
            }
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
            },
            errors: self.errors,
        }
    }
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
