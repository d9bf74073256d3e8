//! Finding the files to scan and loading the rules.

use std::io::Read;
use std::path::{Path, PathBuf};

use picket_rules::{EngineConfig, RuleError, RuleSet};

use super::{HuntError, Problem};

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputKind {
    /// A Windows event log (`.evtx`).
    Evtx,
    /// One JSON object per line.
    JsonLines,
}

/// One file to scan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Input {
    /// The path, as given or as found below a given directory.
    pub path: PathBuf,
    /// How to read it.
    pub kind: InputKind,
}

const EVTX_MAGIC: &[u8; 8] = b"ElfFile\0";

/// Expands the command line's paths into files (see the module docs for
/// which files a directory contributes), sorted and without duplicates.
/// Paths that do not exist or cannot be listed are returned as problems.
#[must_use]
pub fn collect_inputs(paths: &[PathBuf]) -> (Vec<Input>, Vec<Problem>) {
    let mut inputs = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => walk(path, &mut inputs, &mut problems),
            Ok(_) => inputs.push(Input {
                path: path.clone(),
                kind: sniff(path),
            }),
            Err(e) => problems.push(Problem::file(path, format!("cannot read: {e}"))),
        }
    }
    inputs.sort();
    inputs.dedup_by(|a, b| a.path == b.path);
    (inputs, problems)
}

fn walk(dir: &Path, inputs: &mut Vec<Input>, problems: &mut Vec<Problem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return problems.push(Problem::file(dir, format!("cannot list: {e}"))),
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                problems.push(Problem::file(dir, format!("cannot list: {e}")));
                continue;
            }
        };
        // Follows symlinks, like a shell glob would.
        if path.is_dir() {
            walk(&path, inputs, problems);
            continue;
        }
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("evtx") => InputKind::Evtx,
            Some(ext)
                if ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("ndjson") =>
            {
                InputKind::JsonLines
            }
            _ => continue,
        };
        inputs.push(Input { path, kind });
    }
}

/// A file named on the command line: EVTX by extension or magic, else JSON
/// lines. An unreadable file is sniffed as JSON lines and reported when it
/// is opened.
fn sniff(path: &Path) -> InputKind {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("evtx"))
    {
        return InputKind::Evtx;
    }
    let mut magic = [0u8; 8];
    let is_evtx = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == EVTX_MAGIC);
    if is_evtx {
        InputKind::Evtx
    } else {
        InputKind::JsonLines
    }
}

/// The rules of all `--rules` paths as one set.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoadedRules {
    /// The rules that compiled.
    pub rules: RuleSet,
    /// Rules left out, each with its file, rule and place.
    pub errors: Vec<RuleError>,
    /// Rule files that could not be read.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
    /// Rule files found.
    pub files: usize,
}

/// Loads every `.yml`/`.yaml` file below each path (or the path itself when
/// it is a file) into one rule set. A bad rule is reported in
/// [`LoadedRules::errors`] and the rest load.
///
/// # Errors
/// When a path does not exist or a directory cannot be listed.
pub fn load_rules(paths: &[PathBuf], config: &EngineConfig) -> Result<LoadedRules, HuntError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| HuntError::RulesPath {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            yaml_files(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    let mut sources = Vec::with_capacity(files.len());
    let mut unreadable = Vec::new();
    for path in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((path.clone(), text)),
            Err(e) => unreadable.push((path.clone(), e)),
        }
    }
    let loaded = RuleSet::from_sources(sources, config);
    Ok(LoadedRules {
        rules: loaded.rules,
        errors: loaded.errors,
        unreadable,
        files: files.len(),
    })
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), HuntError> {
    let err = |source| HuntError::RulesPath {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
        {
            out.push(path);
        }
    }
    Ok(())
}
