//! `picketctl hunt`: a whole Sigma rule set over EVTX and JSON-lines files.
//!
//! # Inputs
//!
//! A `PATH` that is a directory is walked recursively for `*.evtx` (EVTX)
//! and `*.jsonl` / `*.ndjson` (JSON lines) files. A `PATH` that is a file is
//! scanned whatever its name: as EVTX if it ends in `.evtx` or starts with
//! the EVTX magic (`ElfFile\0`), as JSON lines otherwise.
//!
//! # Routing JSON lines (which rules see a line)
//!
//! Each non-empty line must be one JSON object. Its logsource comes from the
//! first of these that applies:
//!
//! 1. **`_product`, `_category`, `_service`** (any of them present, strings):
//!    the logsource is those three (`_product` defaults to `--product`). This
//!    is the convention of the oracle's `jsonl` mode
//!    (`shared/tools/sigma-oracle/README.md`: flat events with Sigma field
//!    names and a `_category` field, the product given on the command line).
//!    The three keys are removed before evaluation, so keyword rules do not
//!    see them. Underscored names, because plain `category` or `product` are
//!    ordinary field names in many event schemas.
//! 2. **An `Event` object** (an EVTX record as JSON, as `evtx_dump -o jsonl`
//!    writes it): normalized with [`picket_rules::windows::normalize_evtx`]
//!    and routed like an EVTX record.
//! 3. **`Channel` and `EventID`** (an already normalized Windows event):
//!    routed like an EVTX record ([`picket_rules::windows::Router`]).
//! 4. Otherwise, with `--product P`: logsource `product: P` only (rules that
//!    name a category or service do not see the line).
//! 5. Otherwise the line is counted as *unrouted* (in the summary); no rule
//!    sees it.
//!
//! The timeline's `record_id` of a JSON line is its 1-based line number.
//!
//! # Errors
//!
//! A file that cannot be opened or is not EVTX, a chunk that cannot be read
//! or parsed, a record that cannot be rendered and a line that is not a JSON
//! object each become a [`Problem`] (path, place, reason); the scan goes on.
//! Only rule paths that cannot be read at all and output failures are
//! errors ([`HuntError`]).

mod config;
mod error;
mod inputs;
mod scan;
mod timeline;

pub use config::{parse_placeholder, Format, HuntConfig};
pub use error::HuntError;
pub use inputs::{collect_inputs, load_rules, Input, InputKind, LoadedRules};
pub use scan::{hunt, run, scan, Hit, Problem, ScanOptions, ScanReport};
pub use timeline::{csv_field, summary, write_csv, write_jsonl};
