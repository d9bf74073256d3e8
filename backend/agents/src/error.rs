//! What can be wrong with one line from an agent.

use crate::Format;

/// Why a line could not be mapped. Each variant names what was wrong so that
/// the stream endpoint can send it back to the agent as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentError {
    /// The line is longer than [`crate::MAX_LINE_BYTES`]; it was not parsed.
    #[error("line of {len} bytes is longer than the limit of {max} bytes")]
    LineTooLong {
        /// Length of the line.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The line is empty or only whitespace.
    #[error("empty line")]
    Empty,
    /// The line is not valid JSON.
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    Json {
        /// 1-based line of the error inside the input.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's description.
        reason: String,
    },
    /// The JSON is valid but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// `array`, `string`, `number`, `bool` or `null`.
        found: &'static str,
    },
    /// No format's signature keys are present.
    #[error("unknown format: no evtx `Event`, Winlogbeat `winlog`, eslogger `event_type`/`event`/`process` or ECS `event`/`process`|`file` keys (top-level keys: {keys})")]
    UnknownFormat {
        /// The first top-level keys, for the message.
        keys: String,
    },
    /// An ECS event from another operating system than macOS.
    #[error("ECS event from host.os {os:?}: only macOS ECS events are supported (Windows events: send Winlogbeat or evtx JSON)")]
    UnsupportedOs {
        /// `host.os.family` / `host.os.platform` / `host.os.type`.
        os: String,
    },
    /// A field the format requires is missing or has the wrong type.
    #[error("{format} event: field `{field}` is missing or not {expected}")]
    MissingField {
        /// The detected format.
        format: Format,
        /// Dotted path of the field in the input.
        field: &'static str,
        /// What it should have been (`a string`, `an integer`, `an object`).
        expected: &'static str,
    },
}

impl AgentError {
    /// A short fixed name of the kind of error, for metrics labels and
    /// agents that sort refusals (`unknown_format`, `malformed_json`, ...).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::LineTooLong { .. } => "line_too_long",
            AgentError::Empty => "empty",
            AgentError::Json { .. } => "malformed_json",
            AgentError::NotAnObject { .. } => "not_an_object",
            AgentError::UnknownFormat { .. } => "unknown_format",
            AgentError::UnsupportedOs { .. } => "unsupported_os",
            AgentError::MissingField { .. } => "missing_field",
        }
    }

    pub(crate) fn missing(format: Format, field: &'static str, expected: &'static str) -> Self {
        AgentError::MissingField {
            format,
            field,
            expected,
        }
    }
}
