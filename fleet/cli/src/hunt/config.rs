//! What a hunt is asked to do, as parsed from the command line.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use picket_rules::EngineConfig;

/// Timeline format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// RFC 4180 CSV with a header row (the default).
    #[default]
    Csv,
    /// One JSON object per match (`--jsonl`).
    JsonLines,
}

/// A validated `picketctl hunt` invocation.
#[derive(Debug, Clone, Default)]
pub struct HuntConfig {
    /// Rule files or directories (`--rules`, repeatable).
    pub rules: Vec<PathBuf>,
    /// Files or directories to scan.
    pub paths: Vec<PathBuf>,
    /// Timeline format.
    pub format: Format,
    /// Worker threads; `None`: one per core.
    pub threads: Option<NonZeroUsize>,
    /// `expand` placeholder values, `(name, value)`, a name may repeat.
    pub placeholders: Vec<(String, String)>,
    /// Product of JSON lines that do not say theirs (`--product`).
    pub product: Option<String>,
    /// Draw a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
}

impl HuntConfig {
    /// The engine configuration: placeholder values grouped by name.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, value) in &self.placeholders {
            grouped.entry(name).or_default().push(value);
        }
        grouped
            .into_iter()
            .fold(EngineConfig::new(), |config, (name, values)| {
                config.with_placeholder(name, values)
            })
    }

    /// Worker threads to start.
    #[must_use]
    pub fn thread_count(&self) -> usize {
        self.threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }
}

/// Parses `NAME=VALUE` (`%NAME%=VALUE` also accepted) for `--placeholder`.
///
/// # Errors
/// When there is no `=` or the name is empty.
pub fn parse_placeholder(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let name = name.trim().trim_matches('%');
    if name.is_empty() {
        return Err(format!("`{text}` has an empty placeholder name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_parse_and_group() {
        assert_eq!(
            parse_placeholder("%Admins%=adm*").unwrap(),
            ("Admins".into(), "adm*".into())
        );
        assert_eq!(
            parse_placeholder("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(parse_placeholder("novalue").is_err());
        assert!(parse_placeholder("=x").is_err());
        let config = HuntConfig {
            placeholders: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
            ..HuntConfig::default()
        };
        assert_eq!(config.engine_config().placeholders["A"], ["1", "2"]);
    }
}
