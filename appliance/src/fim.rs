//! File integrity monitoring of critical paths.
//!
//! At start every configured path is hashed (SHA-256) with its mode, owner
//! and size; a directory contributes each regular file directly inside it.
//! The baseline lives in memory and in `DATA_DIR/fim-baseline.json`, so a
//! change made while picketd was down is reported at the next start.
//! Re-checks are triggered by the file module's events that touch a watched
//! path (after `settle_ms`, so the writer has finished), and by a periodic
//! full rescan for kernels or paths the probes do not cover. A change is
//! published as a `fim_change` event, which the built-in rule turns into an
//! alert.

use crate::event::{Event, Kind, Process};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What is known about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// SHA-256, hex.
    pub sha256: String,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
}

/// Files larger than this are hashed by metadata only (a 64 MiB `/etc/hosts`
/// is itself the anomaly, and hashing it must not stall the sensor).
pub const MAX_HASH_BYTES: u64 = 64 << 20;

fn state_of(path: &Path) -> Option<FileState> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let sha256 = if meta.len() <= MAX_HASH_BYTES {
        let bytes = std::fs::read(path).ok()?;
        hex::encode(Sha256::digest(&bytes))
    } else {
        format!("size-only:{}", meta.len())
    };
    Some(FileState {
        sha256,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
    })
}

/// The monitored set and its baseline.
#[derive(Debug, Default)]
pub struct Fim {
    roots: Vec<PathBuf>,
    baseline: BTreeMap<PathBuf, FileState>,
}

impl Fim {
    /// A monitor of `roots` with an empty baseline.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Fim {
            roots,
            baseline: BTreeMap::new(),
        }
    }

    /// Whether `path` is monitored (a root, or a file directly in a root directory).
    pub fn covers(&self, path: &str) -> bool {
        let p = Path::new(path);
        self.roots
            .iter()
            .any(|r| p == r || p.parent() == Some(r.as_path()))
    }

    fn current(&self) -> BTreeMap<PathBuf, FileState> {
        let mut out = BTreeMap::new();
        for r in &self.roots {
            if r.is_dir() {
                if let Ok(rd) = std::fs::read_dir(r) {
                    for e in rd.flatten() {
                        let p = e.path();
                        if let Some(s) = state_of(&p) {
                            out.insert(p, s);
                        }
                    }
                }
            } else if let Some(s) = state_of(r) {
                out.insert(r.clone(), s);
            }
        }
        out
    }

    /// Takes the baseline (or restores a saved one) and returns the changes
    /// since the saved one.
    pub fn start(&mut self, saved: Option<BTreeMap<PathBuf, FileState>>) -> Vec<Change> {
        let now = self.current();
        let changes = match saved {
            Some(old) => diff(&old, &now),
            None => Vec::new(),
        };
        self.baseline = now;
        changes
    }

    /// Re-checks `paths` (or everything, when `None`) against the baseline.
    pub fn check(&mut self, paths: Option<&[PathBuf]>) -> Vec<Change> {
        let now = self.current();
        let changes: Vec<Change> = diff(&self.baseline, &now)
            .into_iter()
            .filter(|c| paths.is_none_or(|ps| ps.contains(&c.path)))
            .collect();
        for c in &changes {
            match now.get(&c.path) {
                Some(s) => self.baseline.insert(c.path.clone(), s.clone()),
                None => self.baseline.remove(&c.path),
            };
        }
        changes
    }

    /// The baseline, for saving.
    pub fn baseline(&self) -> &BTreeMap<PathBuf, FileState> {
        &self.baseline
    }
}

/// One detected change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// File.
    pub path: PathBuf,
    /// Before.
    pub old: Option<FileState>,
    /// After.
    pub new: Option<FileState>,
}

impl Change {
    /// What changed, in words.
    pub fn what(&self) -> Vec<String> {
        match (&self.old, &self.new) {
            (None, Some(_)) => vec!["created".into()],
            (Some(_), None) => vec!["deleted".into()],
            (Some(a), Some(b)) => {
                let mut v = Vec::new();
                if a.sha256 != b.sha256 {
                    v.push("content".into());
                }
                if a.mode != b.mode {
                    v.push("mode".into());
                }
                if a.uid != b.uid || a.gid != b.gid {
                    v.push("owner".into());
                }
                v
            }
            (None, None) => Vec::new(),
        }
    }

    /// The change as an event.
    pub fn to_event(&self) -> Event {
        Event {
            time_ns: crate::decoder::unix_ns(),
            module: "fim".into(),
            process: Process::default(),
            kind: Kind::FimChange {
                path: self.path.to_string_lossy().into_owned(),
                old_hash: self
                    .old
                    .as_ref()
                    .map(|s| s.sha256.clone())
                    .unwrap_or_default(),
                new_hash: self
                    .new
                    .as_ref()
                    .map(|s| s.sha256.clone())
                    .unwrap_or_default(),
                changes: self.what(),
            },
        }
    }
}

fn diff(old: &BTreeMap<PathBuf, FileState>, new: &BTreeMap<PathBuf, FileState>) -> Vec<Change> {
    let mut out = Vec::new();
    for (p, o) in old {
        match new.get(p) {
            Some(n) if n == o => {}
            n => out.push(Change {
                path: p.clone(),
                old: Some(o.clone()),
                new: n.cloned(),
            }),
        }
    }
    for (p, n) in new {
        if !old.contains_key(p) {
            out.push(Change {
                path: p.clone(),
                old: None,
                new: Some(n.clone()),
            });
        }
    }
    out
}

/// Loads a saved baseline; a missing or corrupt file is `None` (the
/// corruption is logged, and a fresh baseline replaces it).
pub fn load_baseline(path: &Path) -> Option<BTreeMap<PathBuf, FileState>> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(
                "FIM baseline {} is unreadable ({e}); taking a new one",
                path.display()
            );
            None
        }
    }
}

/// Saves the baseline atomically (write then rename).
pub fn save_baseline(path: &Path, b: &BTreeMap<PathBuf, FileState>) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(b).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn detects_content_mode_create_delete() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("passwd");
        let cron = d.path().join("cron.d");
        std::fs::create_dir(&cron).unwrap();
        std::fs::write(&f, "root:x:0:0\n").unwrap();
        let mut fim = Fim::new(vec![f.clone(), cron.clone()]);
        assert!(fim.start(None).is_empty());
        assert!(fim.covers(f.to_str().unwrap()));
        assert!(fim.covers(cron.join("job").to_str().unwrap()));
        assert!(!fim.covers(d.path().join("other").to_str().unwrap()));

        std::fs::write(&f, "root:x:0:0\nevil:x:0:0\n").unwrap();
        let c = fim.check(Some(std::slice::from_ref(&f)));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].what(), vec!["content"]);
        assert!(fim.check(None).is_empty(), "baseline moved on");

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(cron.join("job"), "* * * * * root sh\n").unwrap();
        let mut c = fim.check(None);
        c.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].what(), vec!["created"]);
        assert_eq!(c[1].what(), vec!["mode"]);

        std::fs::remove_file(&f).unwrap();
        let c = fim.check(None);
        assert_eq!(c[0].what(), vec!["deleted"]);
        let ev = c[0].to_event();
        assert_eq!(ev.type_name(), "fim_change");
    }

    #[test]
    fn baseline_survives_restart_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("shadow");
        std::fs::write(&f, "a").unwrap();
        let saved = d.path().join("fim-baseline.json");
        let mut fim = Fim::new(vec![f.clone()]);
        fim.start(None);
        save_baseline(&saved, fim.baseline()).unwrap();
        std::fs::write(&f, "b").unwrap(); // changed while "down"
        let mut fim2 = Fim::new(vec![f.clone()]);
        let c = fim2.start(load_baseline(&saved));
        assert_eq!(c.len(), 1);
        std::fs::write(&saved, "{not json").unwrap();
        assert!(load_baseline(&saved).is_none());
    }
}
