//! Endpoint agent formats mapped to Sigma: the foundation of the backend's
//! Windows and macOS agent streams.
//!
//! # Architecture
//!
//! ```text
//!  one JSON line ──► parse_line ──► detect ──► Format::{Evtx, Winlogbeat, Eslogger, EcsMacos}
//!  (≤ MAX_LINE_BYTES)   │ AgentError        │ AgentError::UnknownFormat
//!                       ▼                   ▼
//!               windows::from_evtx ─┐   macos::from_eslogger ─┐
//!               windows::from_winlogbeat ┤   macos::from_ecs ──────┤
//!                  (normalize_evtx, route)│                       │
//!                                         ▼                       ▼
//!                         Mapped { format, sources: Vec<LogSource>, aliases, fields }
//!                                              │ impl picket_rules::Event
//!                                              ▼
//!                         Mapped::evaluate(&RuleSet, &mut Vec<Match>)
//! ```
//!
//! * **Sans-IO**: the crate maps one line at a time and owns no socket, file
//!   or clock; the stream endpoint reads lines, calls [`map_line`] and
//!   evaluates. Every failure is an [`AgentError`] naming what was wrong;
//!   nothing panics on input.
//! * **Detection** looks at top-level keys only (see [`detect`]); a client
//!   may also name its format and call [`map_json_as`].
//! * **Sigma names at the event**, not in the rules: every format produces
//!   a flat map whose keys are the Sigma field names (`Image`,
//!   `CommandLine`, `ParentImage`, `User`, `TargetFilename`, ...), so one
//!   [`picket_rules::RuleSet`] loaded with [`EngineConfig::new`]
//!   (no field mappings) serves all agents. Windows events keep their native
//!   names: the evtx field map is exactly the one `picketctl hunt` builds.
//! * **Windows** goes through `picketctl hunt`'s code path, not a copy of
//!   it: [`picket_rules::windows::normalize_evtx`], the logsources of
//!   [`picket_rules::windows::route`] and, on the events that need them
//!   (Security 4688, Defender detections), its field renames
//!   ([`picket_rules::windows::Aliased`]: `Image` is looked up as
//!   `NewProcessName` on a 4688). A Winlogbeat document becomes the same map
//!   as the evtx record it was read from, so an EVTX file streamed by an
//!   agent raises exactly the alerts `picketctl hunt` reports on it.
//!
//! The field-by-field tables are in `docs/AGENT-FORMATS.md`.
//!
//! # Example
//!
//! ```
//! use picket_agents::{map_line, Format};
//! use picket_rules::{EngineConfig, RuleSet};
//!
//! let rule = "title: osascript -e\nlogsource: {product: macos, category: process_creation}\n\
//!             detection:\n  s:\n    Image|endswith: /osascript\n    CommandLine|contains: ' -e '\n  condition: s\n";
//! let rules = RuleSet::from_sources([("r.yml", rule)], &EngineConfig::new()).rules;
//!
//! let line = br#"{"schema_version":1,"event_type":9,
//!   "process":{"executable":{"path":"/bin/zsh"},"ppid":1,"audit_token":{"pid":500,"euid":501}},
//!   "event":{"exec":{"target":{"executable":{"path":"/usr/bin/osascript"},"ppid":500,
//!     "audit_token":{"pid":501,"euid":501}},"args":["osascript","-e","display dialog \"hi\""]}}}"#;
//! let event = map_line(line).unwrap();
//! assert_eq!(event.format, Format::Eslogger);
//! assert_eq!(event.fields["ParentImage"], "/bin/zsh");
//! let mut alerts = Vec::new();
//! assert_eq!(event.evaluate(&rules, &mut alerts), 1);
//!
//! assert!(map_line(b"{\"hello\": 1}").is_err());
//! ```

mod error;
mod macos;
mod windows;

use std::fmt;
use std::str::FromStr;

use picket_rules::windows::{Aliased, Aliases};
use picket_rules::{Event, LogSource, Match, RuleSet, Value};
use serde_json::{Map, Value as Json};

pub use error::AgentError;

#[cfg(doc)]
use picket_rules::EngineConfig;

/// The longest line accepted, in bytes. Real records are far below it (an
/// eslogger exec with its environment is a few tens of KiB; a Windows
/// record at most its 64 KiB EVTX limit rendered as JSON); a longer line is
/// refused before it is parsed, so a client cannot make the backend hold
/// unbounded JSON trees.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The formats endpoint collectors produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// An EVTX record as the `evtx` crate renders it to JSON
    /// (`{"Event": {"System": ..., "EventData": ...}}`; `evtx_dump -o jsonl`).
    Evtx,
    /// Elastic Winlogbeat (ECS) documents (`winlog.channel`,
    /// `winlog.event_id`, `winlog.event_data`, ...).
    Winlogbeat,
    /// Apple's `eslogger` JSON (`event_type`, `process`, `event.<kind>`).
    Eslogger,
    /// Elastic Endpoint ECS documents from macOS (`process.executable`,
    /// `event.category`, ...), bare or as an Elasticsearch hit (`_source`).
    EcsMacos,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 4] = [
        Format::Evtx,
        Format::Winlogbeat,
        Format::Eslogger,
        Format::EcsMacos,
    ];

    /// The format's name on the wire and in docs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Format::Evtx => "evtx",
            Format::Winlogbeat => "winlogbeat",
            Format::Eslogger => "eslogger",
            Format::EcsMacos => "ecs-macos",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = AgentError;
    fn from_str(s: &str) -> Result<Self, AgentError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| AgentError::UnknownFormat {
                keys: format!("(format name {s:?})"),
            })
    }
}

/// One agent event with Sigma field names and the logsources whose rules
/// see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The format it came in.
    pub format: Format,
    /// Its logsources (Sysmon registry events and eslogger renames have
    /// two); every rule of any of them sees the event.
    pub sources: Vec<LogSource>,
    /// Rule field → event field renames rules see this event through
    /// ([`picket_rules::windows::route`]'s, e.g. `Image` → `NewProcessName`
    /// on Security 4688); empty for macOS events.
    pub aliases: Aliases,
    /// Field name → value (Sigma names; Windows events keep their native
    /// names, reached under Sigma names through `aliases`).
    pub fields: Map<String, Json>,
}

impl Mapped {
    /// Evaluates the rules of this event's logsources, appending one match
    /// per matching rule; returns the number appended.
    pub fn evaluate(&self, rules: &RuleSet, out: &mut Vec<Match>) -> usize {
        let event = Aliased {
            event: &self.fields,
            aliases: self.aliases,
        };
        rules.evaluate_sources(&self.sources, &event, out)
    }

    /// A text field under its Sigma name (through the aliases), `None`
    /// when absent, empty or not a string.
    #[must_use]
    pub fn text(&self, name: &str) -> Option<&str> {
        picket_rules::windows::sigma_text(&self.fields, self.aliases, name)
    }
}

impl Event for Mapped {
    /// Through the aliases first, as rules see the event (the lookup of
    /// [`Aliased`], which [`Mapped::evaluate`] uses).
    fn field(&self, name: &str) -> Option<Value<'_>> {
        if let Some((_, to)) = self.aliases.iter().find(|(from, _)| *from == name) {
            if let Some(v) = self.fields.field(to) {
                return Some(v);
            }
        }
        self.fields.field(name)
    }

    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        self.fields.for_each_value(visit);
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Parses one line (length-checked, then JSON) into an object.
///
/// # Errors
///
/// [`AgentError::LineTooLong`], [`AgentError::Empty`], [`AgentError::Json`]
/// or [`AgentError::NotAnObject`].
pub fn parse_line(line: &[u8]) -> Result<Json, AgentError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(AgentError::LineTooLong {
            len: line.len(),
            max: MAX_LINE_BYTES,
        });
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(AgentError::Empty);
    }
    let v: Json = serde_json::from_slice(line).map_err(|e| AgentError::Json {
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(AgentError::NotAnObject { found: kind(&v) })
    }
}

/// The document an Elasticsearch hit wraps (`{"_index", "_source": {...}}`),
/// or the value itself.
fn unwrap_source(v: &Json) -> &Json {
    match v.get("_source") {
        Some(inner @ Json::Object(_)) => inner,
        _ => v,
    }
}

/// Which format a JSON object is in, from its top-level keys (after
/// unwrapping an Elasticsearch `_source`), first match wins:
///
/// 1. `Event` object → [`Format::Evtx`];
/// 2. `winlog` object → [`Format::Winlogbeat`];
/// 3. `event` and `process` objects with `event_type` or `schema_version`
///    → [`Format::Eslogger`];
/// 4. `event` object with `ecs`, `@timestamp`, `process` or `file`, and a
///    `host.os` (if any) that is macOS → [`Format::EcsMacos`].
///
/// # Errors
///
/// [`AgentError::NotAnObject`], [`AgentError::UnsupportedOs`] for ECS from
/// another OS, [`AgentError::UnknownFormat`] otherwise.
pub fn detect(v: &Json) -> Result<Format, AgentError> {
    let v = unwrap_source(v);
    let Json::Object(map) = v else {
        return Err(AgentError::NotAnObject { found: kind(v) });
    };
    let is_obj = |k: &str| map.get(k).is_some_and(Json::is_object);
    if is_obj("Event") {
        return Ok(Format::Evtx);
    }
    if is_obj("winlog") {
        return Ok(Format::Winlogbeat);
    }
    if is_obj("event")
        && is_obj("process")
        && (map.contains_key("event_type") || map.contains_key("schema_version"))
    {
        return Ok(Format::Eslogger);
    }
    if is_obj("event")
        && (is_obj("ecs") || map.contains_key("@timestamp") || is_obj("process") || is_obj("file"))
    {
        let os = map.get("host").and_then(|h| h.get("os"));
        let name = ["family", "platform", "type"]
            .iter()
            .find_map(|k| os.and_then(|o| o.get(*k)).and_then(Json::as_str));
        return match name {
            None => Ok(Format::EcsMacos),
            Some(n) if n.eq_ignore_ascii_case("macos") || n.eq_ignore_ascii_case("darwin") => {
                Ok(Format::EcsMacos)
            }
            Some(n) => Err(AgentError::UnsupportedOs { os: n.to_owned() }),
        };
    }
    let mut keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
    if map.len() > keys.len() {
        keys.push("...");
    }
    Err(AgentError::UnknownFormat {
        keys: if keys.is_empty() {
            "none".into()
        } else {
            keys.join(", ")
        },
    })
}

/// Maps a parsed object in a known format.
///
/// # Errors
///
/// [`AgentError::MissingField`] naming the field the format needs.
pub fn map_json_as(format: Format, v: &Json) -> Result<Mapped, AgentError> {
    let v = unwrap_source(v);
    match format {
        Format::Evtx => windows::from_evtx(v),
        Format::Winlogbeat => match v {
            Json::Object(map) => windows::from_winlogbeat(map),
            other => Err(AgentError::NotAnObject { found: kind(other) }),
        },
        Format::Eslogger => macos::from_eslogger(v),
        Format::EcsMacos => macos::from_ecs(v),
    }
}

/// Detects the format of a parsed object and maps it.
///
/// # Errors
///
/// As [`detect`] and [`map_json_as`].
pub fn map_json(v: &Json) -> Result<Mapped, AgentError> {
    map_json_as(detect(v)?, v)
}

/// Parses, detects and maps one line.
///
/// # Errors
///
/// As [`parse_line`], [`detect`] and [`map_json_as`].
pub fn map_line(line: &[u8]) -> Result<Mapped, AgentError> {
    map_json(&parse_line(line)?)
}
