//! Errors of the `keygen`, `root` and `bundle` subcommands.

use std::path::PathBuf;

use picket_bundle::{BundleError, FormatError, KeyError};

/// Why a `keygen`, `root` or `bundle` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleCmdError {
    /// A key file could not be written or read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bundle or root file is malformed, or what was asked for would be.
    #[error("{}: {source}", path.display())]
    Format {
        /// The file read or written.
        path: PathBuf,
        /// The rule broken.
        #[source]
        source: FormatError,
    },
    /// Verification refused the bundle or the root update.
    #[error("{}: refused: {source}", path.display())]
    Refused {
        /// The bundle or root file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: BundleError,
    },
    /// Rules that do not compile; the bundle is not built.
    #[error("{} rule file(s) do not compile:\n{}", errors.len(), errors.join("\n"))]
    BrokenRules {
        /// One line per rule: file, rule, place, error.
        errors: Vec<String>,
    },
    /// No rule file under the `--rules` paths.
    #[error("no rule files (*.yml, *.yaml) under {0:?}")]
    NoRules(Vec<PathBuf>),
    /// A rule file's path cannot be a bundle path (not UTF-8), or two
    /// `--rules` directories hold the same relative path.
    #[error("rule file {}: {reason}", path.display())]
    RulePath {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A bad command-line value (a threshold above the key count, ...).
    #[error("{0}")]
    Usage(String),
    /// The backend could not be reached or its answer was unreadable.
    #[error("backend {url}: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The backend refused the request; `message` is its error text.
    #[error("backend refused {what} ({status}): {message}")]
    Backend {
        /// What was asked (`POST /api/v1/bundles`).
        what: String,
        /// HTTP status.
        status: u16,
        /// The backend's `error` message.
        message: String,
    },
}

impl BundleCmdError {
    /// The refusal reason's variant name (`ContentHashMismatch`, ...) for
    /// `--json` output, or `None` for other errors.
    #[must_use]
    pub fn refusal_kind(&self) -> Option<String> {
        match self {
            BundleCmdError::Refused { source, .. } => {
                let debug = format!("{source:?}");
                let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
                Some(debug[..end].to_owned())
            }
            _ => None,
        }
    }
}
