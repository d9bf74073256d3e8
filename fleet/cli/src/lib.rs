//! `picketctl`: Picket's command-line tool. `keygen`, `root` and `bundle`
//! (module [`bundle`]) make, sign and check signed rule bundles
//! (`docs/BUNDLES.md`). `hunt` scans Windows event logs (EVTX) and JSON-lines event files
//! with a whole Sigma rule set, the job Hayabusa and Chainsaw do, using the
//! same engine ([`picket_rules`]) that runs on the appliances and at the
//! backend.
//!
//! # Architecture
//!
//! ```text
//!  --rules DIR… ──► hunt::load_rules ──► RuleSet (+ load errors: file, rule, place)
//!                                          │ shared by & with every worker
//!  PATH…  ──► hunt::collect_inputs ──► [Input { path, kind: Evtx | JsonLines }] (sorted)
//!                                          │
//!               rayon pool of --threads N  ▼
//!   files in parallel (par_iter) ─┬─ EVTX: the parser reads chunks (64 KiB) in batches;
//!                                 │        each batch's chunks are parsed, normalized
//!                                 │        (windows::normalize_evtx), routed and evaluated
//!                                 │        (windows::Router) in parallel
//!                                 └─ JSON lines: lines read in batches; each batch's lines
//!                                          parsed, routed (see `hunt` docs) and evaluated
//!                                          in parallel
//!                                          ▼
//!            per file: Vec<Hit> in record order + Vec<Problem> (file skipped, chunk
//!            or record or line unreadable) ──► merged, sorted by (file, record id,
//!            rule id) ──► timeline (CSV or JSON lines) on stdout, summary on stderr
//! ```
//!
//! The output does not depend on the thread count: work is split along file
//! and chunk boundaries, every result keeps its file and record id, and the
//! timeline is sorted at the end. A corrupt file, chunk, record or line is a
//! [`hunt::Problem`], never an error that stops the scan.
//!
//! The library does everything; `src/main.rs` only parses the command line
//! and prints. Tests call the library directly or run the binary.
//!
//! # Example
//!
//! ```
//! use picket_cli::hunt::{self, Input, InputKind, ScanOptions};
//! use picket_rules::{EngineConfig, RuleSet};
//!
//! let rule = "title: Whoami\nid: w-1\nlevel: low\nauthor: me\n\
//!             logsource: {product: linux, category: process_creation}\n\
//!             detection:\n    s:\n        CommandLine|contains: whoami\n    condition: s\n";
//! let rules = RuleSet::from_sources([("w.yml", rule)], &EngineConfig::new()).rules;
//!
//! let dir = std::env::temp_dir().join(format!("picketctl-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let file = dir.join("events.jsonl");
//! std::fs::write(&file, concat!(
//!     r#"{"_product": "linux", "_category": "process_creation", "CommandLine": "whoami"}"#, "\n",
//!     "not json\n",
//! )).unwrap();
//!
//! let inputs = [Input { path: file.clone(), kind: InputKind::JsonLines }];
//! let report = hunt::scan(&rules, &inputs, &ScanOptions::default(), None);
//! assert_eq!(report.hits.len(), 1);
//! assert_eq!(report.hits[0].record_id, 1); // line number
//! assert_eq!(report.problems.len(), 1);    // line 2 is reported and skipped
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod agent;
pub mod bundle;
pub mod hunt;
