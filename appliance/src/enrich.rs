//! Enrichment state: the process cache, user names and container ids.
//!
//! The process cache is seeded from `/proc` at start and then kept by the
//! process module's exec, fork and exit records, so parent executables and
//! command lines are known even for processes that started before picketd.
//! Exited processes stay for [`EXIT_GRACE_NS`] because records of other
//! modules can arrive after the exit record. The cache is bounded: past
//! `max_entries`, exited entries go first, then the oldest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an exited process stays in the cache.
pub const EXIT_GRACE_NS: u64 = 5_000_000_000;

/// What the cache knows about a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// Parent pid.
    pub ppid: u32,
    /// Executable.
    pub image: String,
    /// Command line.
    pub command_line: String,
    /// Working directory at exec.
    pub cwd: String,
    /// Effective uid.
    pub euid: u32,
    /// Container id.
    pub container_id: Option<String>,
    /// When it exited (boot-time ns), if it did.
    pub exited_at: Option<u64>,
    /// Insertion order, for eviction.
    pub generation: u64,
}

/// The process cache.
#[derive(Debug)]
pub struct ProcessCache {
    map: HashMap<u32, ProcInfo>,
    max_entries: usize,
    generation: u64,
    /// Entries dropped because the cache was full.
    pub evicted: u64,
}

impl ProcessCache {
    /// An empty cache of at most `max_entries`.
    pub fn new(max_entries: usize) -> Self {
        ProcessCache {
            map: HashMap::new(),
            max_entries: max_entries.max(16),
            generation: 0,
            evicted: 0,
        }
    }

    /// Seeds the cache from a procfs mount (normally `/proc`).
    pub fn seed_from_proc(&mut self, proc_root: &Path) -> usize {
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return 0;
        };
        let mut n = 0;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(info) = read_proc(proc_root, pid) {
                self.insert(pid, info);
                n += 1;
            }
        }
        n
    }

    /// Adds or replaces a process.
    pub fn insert(&mut self, pid: u32, mut info: ProcInfo) {
        if self.map.len() >= self.max_entries && !self.map.contains_key(&pid) {
            self.evict();
        }
        self.generation += 1;
        info.generation = self.generation;
        self.map.insert(pid, info);
    }

    fn evict(&mut self) {
        let victim = self
            .map
            .iter()
            .min_by_key(|(_, i)| (i.exited_at.is_none(), i.generation))
            .map(|(&p, _)| p);
        if let Some(p) = victim {
            self.map.remove(&p);
            self.evicted += 1;
        }
    }

    /// The process, if known.
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.map.get(&pid)
    }

    /// A fork: the child starts as a copy of the parent.
    pub fn fork(&mut self, parent: u32, child: u32) {
        let mut info = self.map.get(&parent).cloned().unwrap_or_default();
        info.ppid = parent;
        info.exited_at = None;
        self.insert(child, info);
    }

    /// Marks an exit; the entry is purged later.
    pub fn exit(&mut self, pid: u32, now_ns: u64) {
        if let Some(i) = self.map.get_mut(&pid) {
            i.exited_at = Some(now_ns);
        }
    }

    /// Drops entries that exited more than [`EXIT_GRACE_NS`] before `now_ns`.
    pub fn purge(&mut self, now_ns: u64) {
        self.map.retain(|_, i| {
            i.exited_at
                .is_none_or(|t| now_ns.saturating_sub(t) < EXIT_GRACE_NS)
        });
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Reads one process from procfs.
pub fn read_proc(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
    let base = proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(base.join("status")).ok()?;
    let mut ppid = 0;
    let mut euid = 0;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Uid:") {
            euid = v
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
    }
    let image = std::fs::read_link(base.join("exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
        .unwrap_or_default();
    let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
    let argv: Vec<String> = cmdline
        .split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cwd = std::fs::read_link(base.join("cwd"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let container_id = std::fs::read_to_string(base.join("cgroup"))
        .ok()
        .and_then(|c| container_id_from_cgroup(&c));
    Some(ProcInfo {
        ppid,
        image,
        command_line: argv.join(" "),
        cwd,
        euid,
        container_id,
        exited_at: None,
        generation: 0,
    })
}

/// Finds a container id (64 hex digits) in a `/proc/PID/cgroup` text, as
/// Docker, containerd, CRI-O and Podman name their cgroups
/// (`docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/kubepods/.../<id>`).
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or("");
        for seg in path.split('/').rev() {
            let seg = seg.strip_suffix(".scope").unwrap_or(seg);
            let id = seg.rsplit(['-', ':']).next().unwrap_or(seg);
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(id.to_ascii_lowercase());
            }
        }
    }
    None
}

/// uid to user name, from a passwd file, re-read when it changes (checked
/// at most once a second).
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    mtime: Option<std::time::SystemTime>,
    checked: Option<Instant>,
}

impl Users {
    /// Names from `path` (normally `/etc/passwd`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let mut u = Users {
            path: path.into(),
            names: HashMap::new(),
            mtime: None,
            checked: None,
        };
        u.refresh();
        u
    }

    fn refresh(&mut self) {
        self.checked = Some(Instant::now());
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.mtime && !self.names.is_empty() {
            return;
        }
        self.mtime = mtime;
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        self.names = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let uid = f.nth(1)?.parse().ok()?;
                Some((uid, name.to_owned()))
            })
            .collect();
    }

    /// The name of `uid`, or the number as text when it has none.
    pub fn name(&mut self, uid: u32) -> String {
        if self
            .checked
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.refresh();
        }
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id_from_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_from_cgroup(&format!("12:pids:/docker/{id}\n")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_from_cgroup(&format!(
                "0::/kubepods/besteffort/pod1/cri-containerd-{id}.scope"
            )),
            Some(id)
        );
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn cache_bounds_and_grace() {
        let mut c = ProcessCache::new(16);
        for pid in 0..16 {
            c.insert(pid, ProcInfo::default());
        }
        c.exit(3, 100);
        c.insert(100, ProcInfo::default());
        assert!(c.get(3).is_none(), "exited entries are evicted first");
        assert_eq!(c.evicted, 1);
        c.exit(4, 0);
        c.purge(EXIT_GRACE_NS - 1);
        assert!(c.get(4).is_some());
        c.purge(EXIT_GRACE_NS);
        assert!(c.get(4).is_none());
        c.fork(5, 200);
        assert_eq!(c.get(200).unwrap().ppid, 5);
    }

    #[test]
    fn seeds_from_proc() {
        let mut c = ProcessCache::new(100_000);
        assert!(c.seed_from_proc(Path::new("/proc")) > 0);
        let me = c.get(std::process::id()).unwrap();
        assert!(!me.image.is_empty());
    }

    #[test]
    fn user_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        let mut u = Users::new(&p);
        assert_eq!(u.name(0), "root");
        assert_eq!(u.name(1000), "bob");
        assert_eq!(u.name(4242), "4242");
    }
}
