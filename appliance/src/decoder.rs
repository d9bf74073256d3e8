//! Turns probe records into normalized events (sans I/O).
//!
//! The decoder owns the enrichment state ([`ProcessCache`], [`Users`]) and
//! pairs entry records with their exit records by thread id: path, privilege
//! and kernel syscalls are captured at entry (their arguments are only
//! readable then) and judged by their result. It has no sockets, clocks or
//! rings inside; the sensor thread feeds it, and tests feed it records built
//! with [`picket_probes::RecordBuilder`].

use crate::enrich::{container_id_from_cgroup, ProcInfo, ProcessCache, Users};
use crate::event::{command_line, Endpoints, Event, Kind, Process};
use picket_probes::{Body, Header, Op, Record};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};

/// How long an entry record waits for its exit record before it is
/// reported with an unknown result (the task was killed mid-syscall).
pub const PENDING_TIMEOUT_NS: u64 = 2_000_000_000;

/// The user-space half of the file module's path filter, for paths the
/// kernel could not judge (`..` in them).
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    /// Filter at all.
    pub enabled: bool,
    /// Watched prefixes.
    pub watch: Vec<String>,
    /// Ignored prefixes.
    pub ignore: Vec<String>,
}

impl PathFilter {
    /// Whether a normalized path is reported.
    pub fn wants(&self, path: &str) -> bool {
        if !self.enabled {
            return true;
        }
        if self.ignore.iter().any(|p| path.starts_with(p.as_str())) {
            return false;
        }
        self.watch.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// Lexically normalizes an absolute path (`.` and `..` removed).
pub fn normalize(path: &str) -> String {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out.to_string_lossy().into_owned()
}

struct Pending {
    module: &'static str,
    record: Record,
}

/// Decoder state.
pub struct Decoder {
    /// Processes.
    pub cache: ProcessCache,
    users: Users,
    filter: PathFilter,
    pending: HashMap<u32, Pending>,
    boot_to_unix_ns: i128,
    cgroups: HashMap<u64, Option<String>>,
    proc_root: PathBuf,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Nanoseconds of `CLOCK_BOOTTIME` now.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Nanoseconds since the Unix epoch now.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn ip(family: u16, a: &[u8; 16]) -> (String, &'static str) {
    if family == 10 {
        let v6 = Ipv6Addr::from(*a);
        if let Some(v4) = v6.to_ipv4_mapped() {
            return (v4.to_string(), "ipv4");
        }
        (v6.to_string(), "ipv6")
    } else {
        (Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(), "ipv4")
    }
}

fn proto(p: u16) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "raw",
    }
}

fn ptrace_request(r: i64) -> String {
    match r {
        0 => "PTRACE_TRACEME".into(),
        4 => "PTRACE_POKETEXT".into(),
        5 => "PTRACE_POKEDATA".into(),
        6 => "PTRACE_POKEUSER".into(),
        13 => "PTRACE_SETREGS".into(),
        16 => "PTRACE_ATTACH".into(),
        0x4206 => "PTRACE_SEIZE".into(),
        other => format!("PTRACE_{other}"),
    }
}

fn op_name(op: Option<Op>) -> &'static str {
    match op {
        Some(Op::Setuid) => "setuid",
        Some(Op::Setgid) => "setgid",
        Some(Op::Setreuid) => "setreuid",
        Some(Op::Setregid) => "setregid",
        Some(Op::Setresuid) => "setresuid",
        Some(Op::Setresgid) => "setresgid",
        Some(Op::Setfsuid) => "setfsuid",
        Some(Op::Setfsgid) => "setfsgid",
        Some(Op::InitModule) => "init_module",
        Some(Op::FinitModule) => "finit_module",
        Some(Op::DeleteModule) => "delete_module",
        _ => "unknown",
    }
}

fn arg(v: u32) -> Option<u32> {
    (v != u32::MAX).then_some(v)
}

impl Decoder {
    /// A decoder seeded from `/proc` and `/etc/passwd`.
    pub fn new(filter: PathFilter) -> Self {
        Self::with_roots(filter, Path::new("/proc"), Path::new("/etc/passwd"), true)
    }

    /// A decoder with explicit procfs and passwd locations; `seed` reads
    /// the existing processes.
    pub fn with_roots(filter: PathFilter, proc_root: &Path, passwd: &Path, seed: bool) -> Self {
        let mut cache = ProcessCache::new(65_536);
        if seed {
            cache.seed_from_proc(proc_root);
        }
        let boot_to_unix_ns = i128::from(unix_ns()) - i128::from(boottime_ns());
        Decoder {
            cache,
            users: Users::new(passwd),
            filter,
            pending: HashMap::new(),
            boot_to_unix_ns,
            cgroups: HashMap::new(),
            proc_root: proc_root.to_owned(),
        }
    }

    fn wall(&self, ts: u64) -> u64 {
        u64::try_from(i128::from(ts) + self.boot_to_unix_ns).unwrap_or(0)
    }

    fn container(&mut self, h: &Header) -> Option<String> {
        if let Some(c) = self.cgroups.get(&h.cgroup_id) {
            return c.clone();
        }
        let c = std::fs::read_to_string(self.proc_root.join(h.pid.to_string()).join("cgroup"))
            .ok()
            .and_then(|t| container_id_from_cgroup(&t));
        if self.cgroups.len() > 4096 {
            self.cgroups.clear();
        }
        self.cgroups.insert(h.cgroup_id, c.clone());
        c
    }

    fn process(&mut self, h: &Header) -> Process {
        if self.cache.get(h.pid).is_none() {
            // started before the cache was seeded, or its exec was lost
            if let Some(info) = crate::enrich::read_proc(&self.proc_root, h.pid) {
                self.cache.insert(h.pid, info);
            }
        }
        let user = Some(self.users.name(h.euid));
        let me = self.cache.get(h.pid).cloned().unwrap_or_default();
        let parent = self.cache.get(h.ppid).cloned();
        let parent_user = parent.as_ref().map(|p| p.euid).map(|u| self.users.name(u));
        let parent = parent.unwrap_or_default();
        Process {
            pid: h.pid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            euid: h.euid,
            egid: h.egid,
            auid: (h.auid != u32::MAX).then_some(h.auid),
            user,
            comm: h.comm.clone(),
            image: me.image,
            command_line: me.command_line,
            cwd: me.cwd,
            parent_image: parent.image,
            parent_command_line: parent.command_line,
            parent_user,
            cgroup_id: h.cgroup_id,
            container_id: me.container_id,
        }
    }

    fn event(&mut self, module: &'static str, h: &Header, kind: Kind) -> Event {
        Event {
            time_ns: self.wall(h.ts_ns),
            module: module.to_owned(),
            process: self.process(h),
            kind,
        }
    }

    /// Decodes one record of `module`; pushes the events it completes.
    pub fn push(&mut self, module: &'static str, rec: Record, out: &mut Vec<Event>) {
        let h = &rec.header;
        match &rec.body {
            Body::Exec {
                filename,
                exe,
                argv,
                cwd,
                exe_nlink,
                ..
            } => {
                let image = if exe.is_empty() {
                    filename.clone()
                } else {
                    exe.clone()
                };
                let container_id = self.container(h);
                let info = ProcInfo {
                    ppid: h.ppid,
                    image: image.clone(),
                    command_line: command_line(argv),
                    cwd: cwd.clone(),
                    euid: h.euid,
                    container_id,
                    exited_at: None,
                    generation: 0,
                };
                self.cache.insert(h.pid, info);
                let fileless = *exe_nlink == 0 || image.starts_with("/memfd:");
                let kind = Kind::ProcessExec {
                    filename: filename.clone(),
                    argv: argv.clone(),
                    argv_truncated: h.flags & picket_probes::F_TRUNCATED != 0,
                    fileless,
                };
                let ev = self.event(module, h, kind);
                out.push(ev);
            }
            Body::Fork { child_pid } => {
                self.cache.fork(h.pid, *child_pid);
                let ev = self.event(
                    module,
                    h,
                    Kind::ProcessFork {
                        child_pid: *child_pid,
                    },
                );
                out.push(ev);
            }
            Body::Exit { exit_code } => {
                let kind = Kind::ProcessExit {
                    code: (exit_code >> 8) & 0xff,
                    signal: exit_code & 0x7f,
                };
                let ev = self.event(module, h, kind);
                self.cache.exit(h.pid, h.ts_ns);
                out.push(ev);
            }
            Body::FileOpen {
                path, flags, fmode, ..
            } => {
                // FMODE_CREATED has been 0x100000 since it was added (4.19)
                let kind = if fmode & 0x10_0000 != 0 {
                    Kind::FileCreate { path: path.clone() }
                } else {
                    Kind::FileWrite {
                        path: path.clone(),
                        truncate: flags & 0o1000 != 0,
                    }
                };
                let ev = self.event(module, h, kind);
                out.push(ev);
            }
            Body::Net {
                op,
                family,
                protocol,
                laddr,
                lport,
                raddr,
                rport,
                ret,
                backlog,
                ..
            } => {
                let (sip, fam) = ip(*family, laddr);
                let (dip, _) = ip(*family, raddr);
                let net = Endpoints {
                    protocol: proto(*protocol).into(),
                    family: fam.into(),
                    source_ip: sip,
                    source_port: *lport,
                    destination_ip: dip,
                    destination_port: *rport,
                };
                // EINPROGRESS: a non-blocking connect under way
                let ok = *ret >= 0 || *ret == -115;
                let kind = match op {
                    Some(Op::Connect) => Kind::NetConnect { net, success: ok },
                    Some(Op::Accept) => Kind::NetAccept { net },
                    Some(Op::Bind) => Kind::NetBind { net, success: ok },
                    Some(Op::Listen) if *ret == 0 => Kind::NetListen {
                        net,
                        backlog: *backlog,
                    },
                    _ => return,
                };
                let ev = self.event(module, h, kind);
                out.push(ev);
            }
            Body::TcpState {
                oldstate,
                newstate,
                family,
                saddr,
                sport,
                daddr,
                dport,
                ..
            } => {
                let name = |s: u16| {
                    crate::config::TCP_STATES
                        .get(usize::from(s).wrapping_sub(1))
                        .map_or_else(|| s.to_string(), |n| n.to_ascii_uppercase())
                };
                let (sip, fam) = ip(*family, saddr);
                let (dip, _) = ip(*family, daddr);
                let kind = Kind::TcpState {
                    net: Endpoints {
                        protocol: "tcp".into(),
                        family: fam.into(),
                        source_ip: sip,
                        source_port: *sport,
                        destination_ip: dip,
                        destination_port: *dport,
                    },
                    old_state: name(*oldstate),
                    new_state: name(*newstate),
                };
                let ev = self.event(module, h, kind);
                out.push(ev);
            }
            Body::SysExit { ret, .. } => {
                if let Some(p) = self.pending.remove(&h.tid) {
                    self.complete(p, Some(*ret), out);
                }
            }
            Body::PathOp { .. }
            | Body::Priv { .. }
            | Body::Ptrace { .. }
            | Body::Memfd { .. }
            | Body::Mount { .. }
            | Body::Module { .. } => {
                let tid = h.tid;
                if let Some(prev) = self.pending.insert(
                    tid,
                    Pending {
                        module,
                        record: rec,
                    },
                ) {
                    // its exit never came (a lost record): report it unjudged
                    self.complete(prev, None, out);
                }
            }
            _ => {}
        }
    }

    /// Reports entry records whose exit did not come in time, and re-reads
    /// the wall clock's offset from boot time (gateways without an RTC set
    /// their clock by NTP well after picketd started; NTP also slews it).
    pub fn expire(&mut self, now_boot_ns: u64, out: &mut Vec<Event>) {
        self.boot_to_unix_ns = i128::from(unix_ns()) - i128::from(boottime_ns());
        let stale: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now_boot_ns.saturating_sub(p.record.header.ts_ns) > PENDING_TIMEOUT_NS)
            .map(|(&t, _)| t)
            .collect();
        for t in stale {
            if let Some(p) = self.pending.remove(&t) {
                self.complete(p, None, out);
            }
        }
        self.cache.purge(now_boot_ns);
    }

    /// Entry records waiting for their exit.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn complete(&mut self, p: Pending, ret: Option<i64>, out: &mut Vec<Event>) {
        let h = &p.record.header;
        let r = ret.unwrap_or(0);
        let ok = ret.is_none_or(|r| r >= 0);
        let kind = match p.record.body {
            Body::PathOp {
                op,
                mode,
                uid,
                gid,
                path,
                path2,
                flags,
                ..
            } => {
                if !ok {
                    return; // a failed file operation changed nothing
                }
                let unnormalized = h.flags & picket_probes::F_UNNORMALIZED != 0;
                let path = if unnormalized { normalize(&path) } else { path };
                let path2 = if unnormalized && op != Some(Op::Symlink) {
                    normalize(&path2)
                } else {
                    path2
                };
                if unnormalized && !self.filter.wants(&path) && !self.filter.wants(&path2) {
                    return;
                }
                match op {
                    Some(Op::Unlink) => Kind::FileDelete {
                        path,
                        directory: false,
                    },
                    Some(Op::Rmdir) => Kind::FileDelete {
                        path,
                        directory: true,
                    },
                    Some(Op::Rename) => Kind::FileRename {
                        from: path,
                        to: path2,
                    },
                    Some(Op::Chmod) => Kind::FileChmod { path, mode },
                    Some(Op::Chown) => Kind::FileChown {
                        path,
                        uid: arg(uid),
                        gid: arg(gid),
                    },
                    Some(Op::Link) => Kind::FileLink {
                        path: path2,
                        target: path,
                        symbolic: false,
                    },
                    Some(Op::Symlink) => Kind::FileLink {
                        path,
                        target: path2,
                        symbolic: true,
                    },
                    _ => {
                        let _ = flags;
                        return;
                    }
                }
            }
            Body::Priv { op, args } => Kind::PrivilegeChange {
                syscall: op_name(op).into(),
                args: args.iter().map(|&a| arg(a)).collect(),
                old_uid: h.uid,
                old_euid: h.euid,
                old_gid: h.gid,
                success: ok,
                ret: r,
            },
            Body::Ptrace {
                request,
                target_pid,
                ..
            } => Kind::Ptrace {
                request: ptrace_request(request),
                target_pid,
                target_image: self
                    .cache
                    .get(target_pid)
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                success: ok,
                ret: r,
            },
            Body::Memfd { name, flags } => Kind::MemfdCreate {
                name,
                flags,
                ret: r,
            },
            Body::Mount {
                source,
                target,
                fstype,
                flags,
            } => Kind::Mount {
                source,
                target,
                fstype,
                flags,
                success: ok,
                ret: r,
            },
            Body::Module {
                op: Some(Op::DeleteModule),
                name,
                ..
            } => Kind::ModuleUnload {
                name,
                success: ok,
                ret: r,
            },
            Body::Module { op, name, len, .. } => Kind::ModuleLoad {
                syscall: op_name(op).into(),
                path: if op == Some(Op::FinitModule) {
                    name
                } else {
                    String::new()
                },
                len,
                success: ok,
                ret: r,
            },
            _ => return,
        };
        let h = p.record.header.clone();
        let ev = self.event(p.module, &h, kind);
        out.push(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_probes::{decode, RecordBuilder};

    fn dec() -> Decoder {
        // one passwd file per decoder: tests run in parallel
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        Decoder::with_roots(
            PathFilter {
                enabled: true,
                watch: vec!["/etc/".into()],
                ignore: vec![],
            },
            Path::new("/nonexistent-proc"),
            &passwd,
            false,
        )
    }

    #[test]
    fn exec_then_child_event_is_enriched() {
        let mut d = dec();
        let mut out = Vec::new();
        let exec = RecordBuilder::new(1, 100, 100)
            .header_u32(24, 1)
            .string(0, b"/bin/sh")
            .string(4, b"/usr/bin/dash")
            .string(8, b"sh\0-c\0id\0")
            .string(12, b"/root")
            .body_u32(20, 1)
            .build();
        d.push("process", decode(&exec).unwrap(), &mut out);
        let fork = RecordBuilder::new(2, 100, 100).body_u32(0, 101).build();
        d.push("process", decode(&fork).unwrap(), &mut out);
        let open = RecordBuilder::new(4, 101, 101)
            .header_u32(24, 100)
            .string(0, b"/etc/passwd")
            .body_u32(8, 0x10_0000)
            .build();
        d.push("file", decode(&open).unwrap(), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].process.image, "/usr/bin/dash");
        assert_eq!(out[0].process.command_line, "sh -c id");
        assert_eq!(out[0].process.user.as_deref(), Some("root"));
        assert!(matches!(&out[2].kind, Kind::FileCreate { path } if path == "/etc/passwd"));
        assert_eq!(out[2].process.parent_image, "/usr/bin/dash");
        assert_eq!(
            out[2].process.image, "/usr/bin/dash",
            "forked child inherits image"
        );
    }

    #[test]
    fn entry_exit_pairs_and_failures() {
        let mut d = dec();
        let mut out = Vec::new();
        // unlink that failed: no event
        let ent = RecordBuilder::new(5, 7, 8)
            .body_u32(0, 1)
            .string(24, b"/etc/x")
            .build();
        d.push("file", decode(&ent).unwrap(), &mut out);
        let ex = RecordBuilder::new(6, 7, 8)
            .body_u32(0, 1)
            .body_u64(8, (-2i64).cast_unsigned())
            .build();
        d.push("file", decode(&ex).unwrap(), &mut out);
        assert!(out.is_empty());
        // rename that worked, with `..` normalized
        let ent = RecordBuilder::new(5, 7, 8)
            .header_u32(0, 5 | (u32::from(picket_probes::F_UNNORMALIZED) << 16))
            .body_u32(0, 3)
            .string(24, b"/tmp/../etc/a")
            .string(28, b"/etc/b")
            .build();
        d.push("file", decode(&ent).unwrap(), &mut out);
        let ex = RecordBuilder::new(6, 7, 8).body_u32(0, 3).build();
        d.push("file", decode(&ex).unwrap(), &mut out);
        assert!(
            matches!(&out[0].kind, Kind::FileRename { from, to } if from == "/etc/a" && to == "/etc/b")
        );
        // setuid that failed is still reported
        let ent = RecordBuilder::new(9, 7, 9)
            .body_u32(0, 20)
            .body_u32(8, 0)
            .body_u32(12, u32::MAX)
            .build();
        d.push("syscalls", decode(&ent).unwrap(), &mut out);
        assert_eq!(d.pending(), 1);
        let ex = RecordBuilder::new(6, 7, 9)
            .body_u32(0, 20)
            .body_u64(8, (-1i64).cast_unsigned())
            .build();
        d.push("syscalls", decode(&ex).unwrap(), &mut out);
        assert!(
            matches!(&out[1].kind, Kind::PrivilegeChange { success: false, args, .. } if args[1].is_none())
        );
        // an entry whose exit never comes expires
        let ent = RecordBuilder::new(11, 7, 10).string(0, b"payload").build();
        d.push("syscalls", decode(&ent).unwrap(), &mut out);
        d.expire(PENDING_TIMEOUT_NS + 1, &mut out);
        assert!(matches!(&out[2].kind, Kind::MemfdCreate { name, .. } if name == "payload"));
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("/tmp/../etc/./passwd"), "/etc/passwd");
        assert_eq!(normalize("/../../x"), "/x");
    }
}
