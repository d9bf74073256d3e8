//! `picketctl bundle build`: rules and settings into an unsigned bundle,
//! only when every rule compiles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use picket_bundle::keys::hex;
use picket_bundle::{Bundle, FieldMappingSetting, Settings, Target};
use picket_rules::{EngineConfig, FieldMapping, RuleLogSource, RuleSet, RULE_EXTENSIONS};
use serde::Serialize;

use super::BundleCmdError;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Rule directories (or files); paths in the bundle are relative to them.
    pub rules: Vec<PathBuf>,
    /// Bundle version.
    pub version: u64,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// Validity from creation, in seconds.
    pub valid_secs: u64,
    /// Targets (at least one).
    pub targets: Vec<Target>,
    /// Placeholder `(name, value)` pairs; repeated names add values.
    pub placeholders: Vec<(String, String)>,
    /// Output file.
    pub out: PathBuf,
}

/// What was built, and how long each stage took.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// The output file.
    pub out: PathBuf,
    /// Bundle version.
    pub version: u64,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// Targets as `all`, `group:NAME`, `device:ID`.
    pub targets: Vec<String>,
    /// Rule files in the bundle.
    pub files: usize,
    /// Rules the engine compiled (a file may hold several documents).
    pub rules: usize,
    /// Payload bytes (settings and files).
    pub payload_bytes: usize,
    /// `.pbundle` file bytes (unsigned).
    pub file_bytes: usize,
    /// SHA-256 of the payload, hex.
    pub content_hash: String,
    /// Reading the rule files, milliseconds.
    pub read_ms: f64,
    /// Compiling every rule, milliseconds.
    pub compile_ms: f64,
    /// Encoding, hashing and writing, milliseconds.
    pub seal_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Builds the bundle and writes it to `config.out` (unsigned).
///
/// # Errors
/// [`BundleCmdError::BrokenRules`] naming every rule that does not compile,
/// and I/O, path and format errors.
pub fn build(config: &BuildConfig) -> Result<BuildReport, BundleCmdError> {
    let start = Instant::now();
    let mut files = BTreeMap::new();
    let mut sources = Vec::new();
    for base in &config.rules {
        for (path, rel) in rule_files(base)? {
            let text = std::fs::read_to_string(&path).map_err(|source| BundleCmdError::Io {
                path: path.clone(),
                source,
            })?;
            if files.insert(rel, text.clone().into_bytes()).is_some() {
                return Err(BundleCmdError::RulePath {
                    path,
                    reason: "the same relative path is under two --rules directories",
                });
            }
            sources.push((path, text));
        }
    }
    if files.is_empty() {
        return Err(BundleCmdError::NoRules(config.rules.clone()));
    }
    let read = start.elapsed();

    let settings = settings(&config.placeholders);
    let start = Instant::now();
    let loaded = RuleSet::from_sources(sources, &engine_config(&settings));
    if !loaded.errors.is_empty() {
        return Err(BundleCmdError::BrokenRules {
            errors: loaded.errors.iter().map(ToString::to_string).collect(),
        });
    }
    let compile = start.elapsed();

    let start = Instant::now();
    let rules = loaded.rules.len();
    let file_count = files.len();
    let bundle = Bundle::new(
        config.version,
        config.created_unix,
        config.created_unix.saturating_add(config.valid_secs),
        config.targets.clone(),
        files,
        settings,
    );
    let sealed = bundle.seal().map_err(|source| BundleCmdError::Format {
        path: config.out.clone(),
        source,
    })?;
    let bytes = sealed.encode();
    std::fs::write(&config.out, &bytes).map_err(|source| BundleCmdError::Io {
        path: config.out.clone(),
        source,
    })?;
    let manifest = sealed
        .unverified_manifest()
        .map_err(|source| BundleCmdError::Format {
            path: config.out.clone(),
            source,
        })?;
    Ok(BuildReport {
        out: config.out.clone(),
        version: manifest.version,
        expires_unix: manifest.expires_unix,
        targets: manifest.targets.iter().map(ToString::to_string).collect(),
        files: file_count,
        rules,
        payload_bytes: sealed.payload_bytes.len(),
        file_bytes: bytes.len(),
        content_hash: hex(&manifest.content_hash),
        read_ms: ms(read),
        compile_ms: ms(compile),
        seal_ms: ms(start.elapsed()),
    })
}

/// Rule files under `base` with their `/`-separated paths relative to it
/// (a file given directly is stored under its file name).
fn rule_files(base: &Path) -> Result<Vec<(PathBuf, String)>, BundleCmdError> {
    let meta = std::fs::metadata(base).map_err(|source| BundleCmdError::Io {
        path: base.to_owned(),
        source,
    })?;
    let (root, paths) = if meta.is_dir() {
        let paths = picket_rules::files_with_extensions(base, &RULE_EXTENSIONS).map_err(|e| {
            BundleCmdError::Io {
                path: base.to_owned(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        (base, paths)
    } else {
        (
            base.parent().unwrap_or(Path::new("")),
            vec![base.to_owned()],
        )
    };
    paths
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Option<Vec<&str>> =
                rel.components().map(|c| c.as_os_str().to_str()).collect();
            match parts {
                Some(parts) => Ok((path.clone(), parts.join("/"))),
                None => Err(BundleCmdError::RulePath {
                    path,
                    reason: "path is not UTF-8",
                }),
            }
        })
        .collect()
}

fn settings(placeholders: &[(String, String)]) -> Settings {
    let mut settings = Settings::default();
    for (name, value) in placeholders {
        settings
            .placeholders
            .entry(name.clone())
            .or_default()
            .push(value.clone());
    }
    settings
}

/// The engine configuration a bundle's settings stand for: what `build`
/// compiles with, and what a device must compile the bundle with.
#[must_use]
pub fn engine_config(settings: &Settings) -> EngineConfig {
    let mut config = EngineConfig::new();
    for (name, values) in &settings.placeholders {
        config = config.with_placeholder(name, values.iter().cloned());
    }
    for m in &settings.field_mappings {
        config = config.with_field_mapping(mapping(m));
    }
    config
}

fn mapping(m: &FieldMappingSetting) -> FieldMapping {
    FieldMapping::new(
        RuleLogSource {
            product: m.product.clone(),
            category: m.category.clone(),
            service: m.service.clone(),
        },
        m.fields.iter().map(|(k, v)| (k.clone(), v.clone())),
    )
}
