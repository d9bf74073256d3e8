//! Load errors. A bad rule produces one [`RuleError`] and is left out of the
//! set; it never stops the rest of the set from loading.

use std::fmt;
use std::path::PathBuf;

/// Where in a rule an error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// The YAML document as a whole (syntax, or a document that is not a map).
    Document,
    /// A top-level metadata key (`title`, `id`, `level`, ...).
    Metadata {
        /// The key.
        key: String,
    },
    /// The `logsource` section.
    Logsource,
    /// One search identifier of the `detection` section, and optionally the
    /// item (`Field|mod1|mod2`) inside it.
    Detection {
        /// The search identifier (`selection`, `filter_main_x`, ...).
        identifier: String,
        /// The item key, when the error is about one item.
        item: Option<String>,
    },
    /// One condition; `index` counts from 0 when the condition is a list.
    Condition {
        /// The position in the condition list.
        index: usize,
    },
    /// The `correlation` section of a correlation rule.
    Correlation,
    /// The `filter` section of a filter rule.
    Filter,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Document => f.write_str("document"),
            Place::Metadata { key } => write!(f, "`{key}`"),
            Place::Logsource => f.write_str("logsource"),
            Place::Detection {
                identifier,
                item: None,
            } => write!(f, "detection `{identifier}`"),
            Place::Detection {
                identifier,
                item: Some(item),
            } => {
                write!(f, "detection `{identifier}`, item `{item}`")
            }
            Place::Condition { index } => write!(f, "condition #{index}"),
            Place::Correlation => f.write_str("correlation"),
            Place::Filter => f.write_str("filter"),
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file is not valid YAML.
    #[error("malformed YAML: {0}")]
    Yaml(String),
    /// A required key is missing.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A key has a value of the wrong shape.
    #[error("bad value: {0}")]
    BadValue(String),
    /// A modifier that Sigma v2.1 does not define.
    #[error("unknown modifier `{0}`")]
    UnknownModifier(String),
    /// Modifiers that cannot be combined, or a modifier applied to a value it
    /// cannot take.
    #[error("invalid modifier use: {0}")]
    BadModifier(String),
    /// A `re` value that does not compile.
    #[error("bad regular expression `{pattern}`: {message}")]
    BadRegex {
        /// The expression.
        pattern: String,
        /// The regex compiler's message.
        message: String,
    },
    /// A condition that does not parse.
    #[error("bad condition: {0}")]
    BadCondition(String),
    /// A condition names an identifier the detection does not define.
    #[error("condition refers to undefined identifier `{0}`")]
    UnknownIdentifier(String),
    /// `1 of pattern` where nothing matches the pattern.
    #[error("condition pattern `{0}` matches no search identifier")]
    EmptyPattern(String),
    /// An `expand` placeholder for which the engine config has no values.
    #[error("placeholder `%{0}%` has no configured values")]
    UnconfiguredPlaceholder(String),
    /// A correlation or filter rule refers to a rule that is not in the set.
    #[error("unknown rule reference `{0}`")]
    UnknownReference(String),
    /// A construct the engine deliberately does not evaluate.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(String),
}

/// One rule that could not be loaded: the file, the rule and the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: rule {}: {place}: {kind}", path.display(), RuleName(id.as_deref(), title.as_deref()))]
#[non_exhaustive]
pub struct RuleError {
    /// The file the rule came from (as given to the loader).
    pub path: PathBuf,
    /// The rule's `id`, when it could be read.
    pub id: Option<String>,
    /// The rule's `title`, when it could be read.
    pub title: Option<String>,
    /// Where in the rule.
    pub place: Place,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl RuleError {
    /// Whether the only problem is an `expand` placeholder with no configured
    /// value, the one acceptable reason to reject a SigmaHQ rule.
    #[must_use]
    pub fn is_unconfigured_placeholder(&self) -> bool {
        matches!(self.kind, ErrorKind::UnconfiguredPlaceholder(_))
    }
}

struct RuleName<'a>(Option<&'a str>, Option<&'a str>);

impl fmt::Display for RuleName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(id), Some(t)) => write!(f, "{id} ({t:?})"),
            (Some(id), None) => f.write_str(id),
            (None, Some(t)) => write!(f, "{t:?}"),
            (None, None) => f.write_str("<unnamed>"),
        }
    }
}

/// An error that stops a whole load (as opposed to one rule).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A rule directory could not be listed.
    #[error("cannot read rule directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
