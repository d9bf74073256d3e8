//! Errors that stop a hunt (everything else is a [`super::Problem`]).

use std::path::PathBuf;

/// Why `hunt` could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HuntError {
    /// A `--rules` path could not be read or listed.
    #[error("rules path {path}: {source}")]
    RulesPath {
        /// The path given (or the directory below it that failed).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not one rule loaded, so there is nothing to hunt with.
    #[error("no rule could be loaded from {0:?}")]
    NoRules(Vec<PathBuf>),
    /// The worker thread pool could not be started.
    #[error("cannot start {threads} worker threads: {reason}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// The cause.
        reason: String,
    },
    /// Writing the timeline or the summary failed (a closed pipe, a full disk).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}
