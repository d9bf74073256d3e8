//! Sigma detection rules: metadata, and compilation of the `detection`
//! section into matchers.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use yaml_rust2::Yaml;

use crate::attack::{self, Tactic};
use crate::cidr::Cidr;
use crate::condition::{self, Cond, Quantifier};
use crate::config::EngineConfig;
use crate::error::{ErrorKind, Place};
use crate::matcher::{gate_score, AnyOf, CmpOp, Ctx, FieldId, Item, Leaf, Position, Pred};
use crate::modifier::{self, Modifier, Transformed};
use crate::pattern::{Pattern, StrMatcher};
use crate::timestamp::TimePart;

/// A rule's `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `informational`
    Informational,
    /// `low`
    Low,
    /// `medium`
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl Level {
    /// The Sigma spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl FromStr for Level {
    type Err = ErrorKind;
    fn from_str(s: &str) -> Result<Self, ErrorKind> {
        Ok(match s {
            "informational" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            other => return Err(ErrorKind::BadValue(format!("unknown level `{other}`"))),
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `stable`
    Stable,
    /// `test`
    Test,
    /// `experimental`
    Experimental,
    /// `deprecated`
    Deprecated,
    /// `unsupported`
    Unsupported,
}

impl Status {
    /// The Sigma spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stable => "stable",
            Status::Test => "test",
            Status::Experimental => "experimental",
            Status::Deprecated => "deprecated",
            Status::Unsupported => "unsupported",
        }
    }
}

impl FromStr for Status {
    type Err = ErrorKind;
    fn from_str(s: &str) -> Result<Self, ErrorKind> {
        Ok(match s {
            "stable" => Status::Stable,
            "test" => Status::Test,
            "experimental" => Status::Experimental,
            "deprecated" => Status::Deprecated,
            "unsupported" => Status::Unsupported,
            other => return Err(ErrorKind::BadValue(format!("unknown status `{other}`"))),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `logsource` of a rule. A rule sees an event only if every field it
/// sets equals the event's (see [`crate::LogSource`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleLogSource {
    /// `product`, e.g. `windows`, `linux`.
    pub product: Option<String>,
    /// `category`, e.g. `process_creation`.
    pub category: Option<String>,
    /// `service`, e.g. `sysmon`, `security`.
    pub service: Option<String>,
}

/// Everything about a rule that an alert shows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuleInfo {
    /// `id` (a UUID in SigmaHQ).
    pub id: Option<String>,
    /// `title`.
    pub title: String,
    /// `status`.
    pub status: Option<Status>,
    /// `level`.
    pub level: Option<Level>,
    /// `author`: the Detection Rule License requires showing it with every
    /// match.
    pub author: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `tags`, as written.
    pub tags: Vec<String>,
    /// ATT&CK technique ids from the tags (`attack.t1059.004` → `T1059.004`).
    pub techniques: Vec<String>,
    /// ATT&CK tactics from the tags (`attack.execution`).
    pub tactics: Vec<Tactic>,
    /// `references`.
    pub references: Vec<String>,
    /// `falsepositives`.
    pub falsepositives: Vec<String>,
    /// `date`.
    pub date: Option<String>,
    /// `modified`.
    pub modified: Option<String>,
    /// `logsource`.
    pub logsource: RuleLogSource,
    /// `name` (used by correlation rules to refer to a rule).
    pub name: Option<String>,
    /// The file the rule was loaded from.
    pub path: PathBuf,
}

/// A condition compiled against the detection's identifiers.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Det(usize),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    AtLeast(usize, Vec<Node>),
}

/// One search identifier: OR of groups, each an AND of items.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    groups: Vec<Vec<Item>>,
}

/// Pairs of (field, or `None` for "any value"; folded literal).
pub(crate) type Gate = Vec<(Option<FieldId>, String)>;

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) info: Arc<RuleInfo>,
    dets: Vec<Detection>,
    cond: Node,
    /// Detections that occur in the condition under an even number of `not`:
    /// their matching items are the "fields that matched" of an alert.
    positive: Vec<bool>,
    /// Filter rules applied to this rule: each one's condition must also
    /// hold (pySigma's meaning, see the crate docs).
    pub(crate) filters: Vec<Arc<CompiledRule>>,
}

impl CompiledRule {
    pub(crate) fn matches(&self, ctx: &mut Ctx<'_>) -> bool {
        self.node(&self.cond, ctx) && self.filters.iter().all(|f| f.node(&f.cond, ctx))
    }

    fn node(&self, n: &Node, ctx: &mut Ctx<'_>) -> bool {
        match n {
            Node::Det(i) => self.det(*i, ctx),
            Node::Not(inner) => !self.node(inner, ctx),
            Node::And(v) => v.iter().all(|n| self.node(n, ctx)),
            Node::Or(v) => v.iter().any(|n| self.node(n, ctx)),
            Node::AtLeast(k, v) => {
                let mut hits = 0;
                for n in v {
                    if self.node(n, ctx) {
                        hits += 1;
                        if hits >= *k {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }

    fn det(&self, i: usize, ctx: &mut Ctx<'_>) -> bool {
        self.dets[i]
            .groups
            .iter()
            .any(|g| g.iter().all(|item| ctx.item(item)))
    }

    /// A necessary condition for the rule to match, for the prefilter: the
    /// folded text of one of these fields (`None`: of some value of the
    /// event) contains the paired literal. `None` when the rule has no such
    /// condition (it is then always evaluated).
    pub(crate) fn gate(&self) -> Option<Gate> {
        self.node_gate(&self.cond)
    }

    fn node_gate(&self, n: &Node) -> Option<Gate> {
        match n {
            Node::Det(i) => {
                let mut out = Vec::new();
                for group in &self.dets[*i].groups {
                    let (field, lits) = group
                        .iter()
                        .filter_map(|item| item.gate().map(|l| (item.field, l)))
                        .max_by_key(|(_, l)| gate_score(l))?;
                    out.extend(lits.into_iter().map(|l| (field, l)));
                }
                Some(out)
            }
            Node::Not(_) => None,
            Node::And(v) => v.iter().filter_map(|n| self.node_gate(n)).max_by_key(|g| {
                let lits: Vec<String> = g.iter().map(|(_, l)| l.clone()).collect();
                gate_score(&lits)
            }),
            Node::Or(v) | Node::AtLeast(_, v) => {
                let mut out = Vec::new();
                for n in v {
                    out.extend(self.node_gate(n)?);
                }
                Some(out)
            }
        }
    }

    /// The fields of positive detections whose items matched.
    pub(crate) fn matched_fields(&self, ctx: &mut Ctx<'_>, out: &mut Vec<(String, String)>) {
        for (i, det) in self.dets.iter().enumerate() {
            if !self.positive[i] {
                continue;
            }
            for group in &det.groups {
                if !group.iter().all(|item| ctx.item(item)) {
                    continue;
                }
                for item in group {
                    // Keyword items have no field: they report the value
                    // that contained the keyword, under `keywords`.
                    let name = match item.key.split('|').next() {
                        Some("") | None => "keywords",
                        Some(field) => field,
                    };
                    if let Some(v) = ctx.report(item) {
                        if !out.iter().any(|(n, _)| n == name) {
                            out.push((name.to_owned(), v));
                        }
                    }
                }
            }
        }
    }
}

/// Interns field names so items refer to fields by index.
#[derive(Debug, Default, Clone)]
pub(crate) struct FieldTable {
    ids: HashMap<Box<str>, FieldId>,
    pub(crate) names: Vec<Box<str>>,
}

impl FieldTable {
    pub(crate) fn intern(&mut self, name: &str) -> FieldId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = FieldId::try_from(self.names.len()).expect("fewer than 2^32 distinct fields");
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }
}

/// A YAML scalar of a detection value.
#[derive(Debug, Clone, PartialEq)]
enum RawValue {
    Str(String),
    Int(i64),
    Float(f64, String),
    Bool(bool),
    Null,
}

impl RawValue {
    fn from_yaml(y: &Yaml) -> Result<Self, ErrorKind> {
        Ok(match y {
            Yaml::String(s) => RawValue::Str(s.clone()),
            Yaml::Integer(i) => RawValue::Int(*i),
            Yaml::Real(s) => RawValue::Float(s.parse().unwrap_or(f64::NAN), s.clone()),
            Yaml::Boolean(b) => RawValue::Bool(*b),
            Yaml::Null => RawValue::Null,
            _ => return Err(ErrorKind::BadValue("expected a scalar value".into())),
        })
    }

    fn text(&self) -> Option<String> {
        match self {
            RawValue::Str(s) => Some(s.clone()),
            RawValue::Int(i) => Some(i.to_string()),
            RawValue::Float(_, s) => Some(s.clone()),
            RawValue::Bool(b) => Some(b.to_string()),
            RawValue::Null => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            RawValue::Int(i) => Some(*i as f64),
            RawValue::Float(f, _) => Some(*f),
            RawValue::Str(s) => crate::event::parse_number(s),
            RawValue::Bool(_) | RawValue::Null => None,
        }
    }
}

pub(crate) fn yaml_str(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn get<'a>(map: &'a yaml_rust2::yaml::Hash, key: &str) -> Option<&'a Yaml> {
    map.get(&Yaml::String(key.to_owned()))
}

fn string_list(y: Option<&Yaml>) -> Vec<String> {
    match y {
        Some(Yaml::Array(items)) => items.iter().filter_map(yaml_str).collect(),
        Some(other) => yaml_str(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Reads the metadata of a detection (or correlation/filter) document.
pub(crate) fn parse_info(
    doc: &yaml_rust2::yaml::Hash,
    path: &std::path::Path,
) -> Result<RuleInfo, (Place, ErrorKind)> {
    let meta = |k: &str| Place::Metadata { key: k.to_owned() };
    let title = get(doc, "title")
        .and_then(yaml_str)
        .ok_or((meta("title"), ErrorKind::Missing("title")))?;
    let opt = |k: &str| get(doc, k).and_then(yaml_str);
    let level = opt("level")
        .map(|s| s.parse::<Level>())
        .transpose()
        .map_err(|e| (meta("level"), e))?;
    let status = opt("status")
        .map(|s| s.parse::<Status>())
        .transpose()
        .map_err(|e| (meta("status"), e))?;
    let tags = string_list(get(doc, "tags"));
    let (techniques, tactics) = attack::parse_tags(&tags);
    let logsource = match get(doc, "logsource") {
        Some(Yaml::Hash(ls)) => RuleLogSource {
            product: get(ls, "product").and_then(yaml_str),
            category: get(ls, "category").and_then(yaml_str),
            service: get(ls, "service").and_then(yaml_str),
        },
        None => RuleLogSource::default(),
        Some(_) => {
            return Err((
                Place::Logsource,
                ErrorKind::BadValue("`logsource` must be a map".into()),
            ))
        }
    };
    Ok(RuleInfo {
        id: opt("id"),
        title,
        status,
        level,
        author: opt("author"),
        description: opt("description"),
        tags,
        techniques,
        tactics,
        references: string_list(get(doc, "references")),
        falsepositives: string_list(get(doc, "falsepositives")),
        date: opt("date"),
        modified: opt("modified"),
        logsource,
        name: opt("name"),
        path: path.to_path_buf(),
    })
}

/// Compiles the `detection` section of a rule document.
pub(crate) fn compile(
    doc: &yaml_rust2::yaml::Hash,
    info: RuleInfo,
    cfg: &EngineConfig,
    fields: &mut FieldTable,
) -> Result<CompiledRule, (Place, ErrorKind)> {
    let Some(Yaml::Hash(detection)) = get(doc, "detection") else {
        return Err((
            Place::Metadata {
                key: "detection".into(),
            },
            ErrorKind::Missing("detection"),
        ));
    };
    compile_detection(detection, info, cfg, fields)
}

/// Compiles a detection map (identifiers and `condition`).
pub(crate) fn compile_detection(
    detection: &yaml_rust2::yaml::Hash,
    info: RuleInfo,
    cfg: &EngineConfig,
    fields: &mut FieldTable,
) -> Result<CompiledRule, (Place, ErrorKind)> {
    let mapping = cfg.mapping_for(&info.logsource);
    let mut c = Compiler {
        cfg,
        fields,
        mapping,
    };
    let mut names = Vec::new();
    let mut dets = Vec::new();
    let mut conditions = Vec::new();
    for (k, v) in detection {
        let Some(name) = yaml_str(k) else {
            return Err((
                Place::Document,
                ErrorKind::BadValue("non-string detection key".into()),
            ));
        };
        match name.as_str() {
            "condition" => {
                conditions = match v {
                    Yaml::Array(items) => items.iter().filter_map(yaml_str).collect(),
                    other => yaml_str(other).into_iter().collect(),
                };
            }
            // Sigma v1 aggregation window; correlation rules replace it.
            "timeframe" => {}
            _ => {
                let det = c.detection(&name, v)?;
                names.push(name);
                dets.push(det);
            }
        }
    }
    if conditions.is_empty() {
        return Err((
            Place::Condition { index: 0 },
            ErrorKind::Missing("condition"),
        ));
    }
    let mut nodes = Vec::new();
    for (index, text) in conditions.iter().enumerate() {
        let place = || Place::Condition { index };
        let cond = condition::parse(text).map_err(|e| (place(), e))?;
        nodes.push(resolve(&cond, &names).map_err(|e| (place(), e))?);
    }
    let cond = if nodes.len() == 1 {
        nodes.remove(0)
    } else {
        Node::Or(nodes)
    };
    let mut positive = vec![false; dets.len()];
    mark_positive(&cond, false, &mut positive);
    Ok(CompiledRule {
        info: Arc::new(info),
        dets,
        cond,
        positive,
        filters: Vec::new(),
    })
}

fn mark_positive(n: &Node, negated: bool, out: &mut [bool]) {
    match n {
        Node::Det(i) => {
            if !negated {
                out[*i] = true;
            }
        }
        Node::Not(inner) => mark_positive(inner, !negated, out),
        Node::And(v) | Node::Or(v) | Node::AtLeast(_, v) => {
            v.iter().for_each(|n| mark_positive(n, negated, out));
        }
    }
}

fn resolve(c: &Cond, names: &[String]) -> Result<Node, ErrorKind> {
    Ok(match c {
        Cond::Ident(name) => match names.iter().position(|n| n == name) {
            Some(i) => Node::Det(i),
            None => return Err(ErrorKind::UnknownIdentifier(name.clone())),
        },
        Cond::Not(inner) => Node::Not(Box::new(resolve(inner, names)?)),
        Cond::And(v) => Node::And(
            v.iter()
                .map(|c| resolve(c, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(v) => Node::Or(
            v.iter()
                .map(|c| resolve(c, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Of(q, pattern) => {
            let matched: Vec<Node> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| match pattern {
                    // `them` skips identifiers starting with `_` (spec v2.1,
                    // "Condition").
                    None => !n.starts_with('_'),
                    Some(p) => condition::ident_pattern_matches(p, n),
                })
                .map(|(i, _)| Node::Det(i))
                .collect();
            if matched.is_empty() {
                return Err(ErrorKind::EmptyPattern(
                    pattern.clone().unwrap_or_else(|| "them".into()),
                ));
            }
            match q {
                Quantifier::All => Node::And(matched),
                Quantifier::AtLeast(1) => Node::Or(matched),
                Quantifier::AtLeast(k) => Node::AtLeast(*k, matched),
            }
        }
    })
}

struct Compiler<'a> {
    cfg: &'a EngineConfig,
    fields: &'a mut FieldTable,
    mapping: HashMap<String, String>,
}

impl Compiler<'_> {
    fn field_id(&mut self, name: &str) -> FieldId {
        let mapped = self.mapping.get(name).map_or(name, String::as_str);
        let mapped = mapped.to_owned();
        self.fields.intern(&mapped)
    }

    fn detection(&mut self, name: &str, v: &Yaml) -> Result<Detection, (Place, ErrorKind)> {
        let place = |item: Option<&str>| Place::Detection {
            identifier: name.to_owned(),
            item: item.map(str::to_owned),
        };
        let mut groups = Vec::new();
        match v {
            Yaml::Hash(map) => groups.push(self.map_group(map, &place)?),
            Yaml::Array(list) => {
                let mut keywords = Vec::new();
                for el in list {
                    match el {
                        Yaml::Hash(map) => groups.push(self.map_group(map, &place)?),
                        Yaml::Array(_) => {
                            return Err((
                                place(None),
                                ErrorKind::BadValue("nested list in a detection".into()),
                            ))
                        }
                        scalar => keywords.push(scalar.clone()),
                    }
                }
                if !keywords.is_empty() {
                    let item = self
                        .item("", &Yaml::Array(keywords))
                        .map_err(|e| (place(None), e))?;
                    groups.push(vec![item]);
                }
            }
            Yaml::Null => return Err((place(None), ErrorKind::BadValue("empty detection".into()))),
            scalar => {
                let item = self.item("", scalar).map_err(|e| (place(None), e))?;
                groups.push(vec![item]);
            }
        }
        if groups.is_empty() {
            return Err((place(None), ErrorKind::BadValue("empty detection".into())));
        }
        groups.shrink_to_fit();
        Ok(Detection { groups })
    }

    fn map_group(
        &mut self,
        map: &yaml_rust2::yaml::Hash,
        place: &dyn Fn(Option<&str>) -> Place,
    ) -> Result<Vec<Item>, (Place, ErrorKind)> {
        let mut items = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key = yaml_str(k).ok_or_else(|| {
                (
                    place(None),
                    ErrorKind::BadValue("non-string field name".into()),
                )
            })?;
            items.push(self.item(&key, v).map_err(|e| (place(Some(&key)), e))?);
        }
        // Cheap, selective tests first: most events fail a rule on its
        // first item.
        items.sort_by_key(Item::cost);
        Ok(items)
    }

    fn item(&mut self, key: &str, value: &Yaml) -> Result<Item, ErrorKind> {
        let mut split = key.split('|');
        let field_name = split.next().unwrap_or_default();
        let mods = split.map(Modifier::parse).collect::<Result<Vec<_>, _>>()?;
        let field = (!field_name.is_empty()).then(|| self.field_id(field_name));
        let values: Vec<RawValue> = match value {
            Yaml::Array(items) => items
                .iter()
                .map(RawValue::from_yaml)
                .collect::<Result<_, _>>()?,
            other => vec![RawValue::from_yaml(other)?],
        };
        if values.is_empty() {
            return Err(ErrorKind::BadValue("empty value list".into()));
        }
        let pred = self.pred(field.is_none(), &mods, &values)?;
        Ok(Item {
            field,
            key: key.into(),
            pred,
        })
    }

    fn pred(
        &mut self,
        keyword: bool,
        mods: &[Modifier],
        values: &[RawValue],
    ) -> Result<Pred, ErrorKind> {
        let has = |m: Modifier| mods.contains(&m);
        let all = has(Modifier::All);
        let neq = has(Modifier::Neq);
        let cased = has(Modifier::Cased);
        let bad = |s: &str| Err(ErrorKind::BadModifier(s.to_owned()));

        if has(Modifier::Exists) {
            if mods.len() != 1 {
                return bad("`exists` cannot be combined with other modifiers");
            }
            return match values {
                [RawValue::Bool(b)] => Ok(Pred::Exists(*b)),
                _ => bad("`exists` takes `true` or `false`"),
            };
        }
        let position = {
            let p: Vec<Position> = mods
                .iter()
                .filter_map(|m| match m {
                    Modifier::Contains => Some(Position::Contains),
                    Modifier::StartsWith => Some(Position::StartsWith),
                    Modifier::EndsWith => Some(Position::EndsWith),
                    _ => None,
                })
                .collect();
            if p.len() > 1 {
                return bad("only one of `contains`, `startswith`, `endswith` may be used");
            }
            p.first().copied()
        };
        if has(Modifier::FieldRef) {
            if keyword {
                return bad("`fieldref` needs a field");
            }
            let mut others = Vec::new();
            for v in values {
                let name = v
                    .text()
                    .ok_or_else(|| ErrorKind::BadValue("`fieldref` needs a field name".into()))?;
                others.push(self.field_id(&name));
            }
            return Ok(Pred::FieldRef {
                others,
                all,
                pos: position.unwrap_or(Position::Exact),
                cased,
                neq,
            });
        }
        let re_flags: String = mods
            .iter()
            .filter_map(|m| match m {
                Modifier::ReI => Some('i'),
                Modifier::ReM => Some('m'),
                Modifier::ReS => Some('s'),
                _ => None,
            })
            .collect();
        let is_re = has(Modifier::Re);
        if !re_flags.is_empty() && !is_re {
            return bad("`i`, `m` and `s` only apply to `re`");
        }
        let cmp = {
            let c: Vec<CmpOp> = mods
                .iter()
                .filter_map(|m| match m {
                    Modifier::Lt => Some(CmpOp::Lt),
                    Modifier::Lte => Some(CmpOp::Lte),
                    Modifier::Gt => Some(CmpOp::Gt),
                    Modifier::Gte => Some(CmpOp::Gte),
                    _ => None,
                })
                .collect();
            if c.len() > 1 {
                return bad("only one of `lt`, `lte`, `gt`, `gte` may be used");
            }
            c.first().copied()
        };
        let time = mods.iter().find_map(|m| match m {
            Modifier::Minute => Some(TimePart::Minute),
            Modifier::Hour => Some(TimePart::Hour),
            Modifier::Day => Some(TimePart::Day),
            Modifier::Week => Some(TimePart::Week),
            Modifier::Month => Some(TimePart::Month),
            Modifier::Year => Some(TimePart::Year),
            _ => None,
        });
        let is_cidr = has(Modifier::Cidr);
        let transforms: Vec<Modifier> = mods
            .iter()
            .copied()
            .filter(|m| {
                matches!(
                    m,
                    Modifier::Windash
                        | Modifier::Base64
                        | Modifier::Base64Offset
                        | Modifier::Utf16Le
                        | Modifier::Utf16Be
                        | Modifier::Utf16
                )
            })
            .collect();
        let kinds = usize::from(is_re)
            + usize::from(is_cidr)
            + usize::from(cmp.is_some() || time.is_some());
        if kinds > 1 {
            return bad("`re`, `cidr` and the numeric or time modifiers exclude each other");
        }
        if kinds == 1 && (position.is_some() || !transforms.is_empty()) {
            return bad("`re`, `cidr`, numeric and time modifiers take plain values");
        }
        let expand = has(Modifier::Expand);

        let mut per_value: Vec<Vec<Leaf>> = Vec::with_capacity(values.len());
        for v in values {
            let mut leaves = Vec::new();
            if *v == RawValue::Null {
                leaves.push(Leaf::Null);
            } else if is_re {
                let text = v.text().unwrap_or_default();
                let flags = if re_flags.is_empty() {
                    String::new()
                } else {
                    format!("(?{re_flags})")
                };
                let re = regex::Regex::new(&format!("{flags}{text}")).map_err(|e| {
                    ErrorKind::BadRegex {
                        pattern: text.clone(),
                        message: e.to_string(),
                    }
                })?;
                leaves.push(Leaf::Regex(re));
            } else if is_cidr {
                leaves.push(Leaf::Cidr(Cidr::parse(&v.text().unwrap_or_default())?));
            } else if let Some(part) = time {
                let n = v
                    .number()
                    .ok_or_else(|| ErrorKind::BadValue("time modifiers need a number".into()))?;
                leaves.push(Leaf::Time(part, cmp.unwrap_or(CmpOp::Eq), n));
            } else if let Some(op) = cmp {
                let n = v
                    .number()
                    .ok_or_else(|| ErrorKind::BadValue("numeric modifiers need a number".into()))?;
                leaves.push(Leaf::Cmp(op, n));
            } else if let (RawValue::Bool(b), None, true, false) =
                (v, position, transforms.is_empty(), keyword)
            {
                leaves.push(Leaf::Bool(*b));
            } else if let (RawValue::Int(_) | RawValue::Float(..), None, true, false) =
                (v, position, transforms.is_empty(), keyword)
            {
                leaves.push(Leaf::Num {
                    value: v.number().unwrap_or(f64::NAN),
                    text: v.text().unwrap_or_default().into(),
                });
            } else {
                let text = v.text().unwrap_or_default();
                let raws = if expand {
                    modifier::expand(&text, &self.cfg.placeholders)?
                } else {
                    vec![text]
                };
                let mut tv: Vec<Transformed> = raws
                    .iter()
                    .map(|r| Transformed::Pattern(Pattern::parse(r)))
                    .collect();
                for m in &transforms {
                    tv = modifier::transform(*m, tv)?;
                }
                for t in tv {
                    let mut p = t.into_pattern()?;
                    p = match position {
                        Some(Position::Contains) => p.contains(),
                        Some(Position::StartsWith) => p.starts_with(),
                        Some(Position::EndsWith) => p.ends_with(),
                        // A keyword is searched for anywhere in a value.
                        Some(Position::Exact) | None if keyword => p.contains(),
                        Some(Position::Exact) | None => p,
                    };
                    leaves.push(Leaf::Str {
                        m: StrMatcher::new(&p, cased),
                        cased,
                    });
                }
            }
            per_value.push(leaves);
        }
        Ok(if neq {
            Pred::NoneOf(AnyOf::new(per_value.into_iter().flatten().collect()))
        } else if all {
            Pred::All(per_value.into_iter().map(AnyOf::new).collect())
        } else {
            Pred::Any(AnyOf::new(per_value.into_iter().flatten().collect()))
        })
    }
}
