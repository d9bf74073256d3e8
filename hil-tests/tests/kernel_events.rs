//! Every event kind, produced by real probes on the real kernel: each test
//! performs the real action and asserts the exact fields of the event. One
//! picketd serves all tests of this file; each test filters to its own
//! processes, ports and paths.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::techniques::{self, nonce, Technique, Trace};
use picket_hil_tests::{pid_of, set, ty, Options, Picketd};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

struct Shared {
    d: Picketd,
    fim_file: PathBuf,
    auth_log: PathBuf,
    syslog: bool,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let fim_dir = tempfile::Builder::new()
            .prefix("picket-fim-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let fim_file = fim_dir.join("passwd");
        std::fs::write(&fim_file, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let auth_log = fim_dir.join("auth.log");
        std::fs::write(&auth_log, "").unwrap();
        // picketd serves /dev/log when no syslog daemon does (CI machines);
        // a socket nobody answers on is stale and picketd replaces it
        let syslog = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log"))
            .is_err();
        let (f, a) = (fim_file.clone(), auth_log.clone());
        let d = Picketd::start(Options {
            edit: Box::new(move |c, _| {
                set(
                    c,
                    "modules.fim.paths",
                    toml::Value::Array(vec![f.to_str().unwrap().into()]),
                );
                set(c, "modules.fim.settle_ms", 50);
                // this kernel may lack the module syscalls' tracepoints
                set(c, "modules.syscalls.raw_syscalls_fallback", true);
                set(
                    c,
                    "modules.auth.log_files",
                    toml::Value::Array(vec![a.to_str().unwrap().into()]),
                );
                set(c, "modules.auth.poll_interval_ms", 50);
                if syslog {
                    set(c, "modules.auth.syslog_socket", "/dev/log");
                }
                set(
                    c,
                    "modules.network.tcp_states",
                    toml::Value::Array(vec!["established".into(), "close".into()]),
                );
            }),
            ..Options::default()
        });
        Shared {
            d,
            fim_file,
            auth_log,
            syslog,
        }
    })
}

fn d() -> &'static Picketd {
    &shared().d
}

fn scratch() -> PathBuf {
    let p = tempfile::Builder::new()
        .prefix("picket-t-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    std::fs::canonicalize(p).unwrap()
}

fn realpath(p: &str) -> String {
    std::fs::canonicalize(p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn k<'a>(e: &'a Value, f: &str) -> &'a Value {
    &e["kind"][f]
}

/// Waits for the alert `t` must raise for `trace`, with its techniques.
fn raised(t: &Technique, trace: &Trace) -> Value {
    let a = d().wait_alert(t.rule_title, |a| t.raised(trace, a));
    assert_eq!(a["techniques"], json!(t.techniques), "{a}");
    a
}

/// Runs `script` once the daemon is up and returns the alert `t` raised.
fn raises(t: &Technique, script: impl FnOnce() -> Trace) -> Value {
    d();
    raised(t, &script())
}

#[test]
fn exec_fork_and_exit_with_full_context() {
    let d = d();
    let cwd = scratch();
    let n = format!("picket-argv-{}", nonce());
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 3", &n, "second arg"])
        .current_dir(&cwd)
        .spawn()
        .unwrap();
    let pid = u64::from(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(3));

    let exec = d.wait_event("exec", |e| ty(e) == "process_exec" && pid_of(e) == pid);
    assert_eq!(exec["module"], "process");
    assert_eq!(
        k(&exec, "argv"),
        &json!(["/bin/sh", "-c", "exit 3", n, "second arg"])
    );
    assert_eq!(k(&exec, "filename"), "/bin/sh");
    assert_eq!(k(&exec, "argv_truncated"), false);
    assert_eq!(k(&exec, "fileless"), false);
    let p = &exec["process"];
    assert_eq!(p["image"], realpath("/bin/sh"));
    assert_eq!(
        p["command_line"],
        format!("/bin/sh -c exit 3 {n} second arg")
    );
    assert_eq!(p["cwd"], cwd.to_str().unwrap());
    assert_eq!(p["ppid"], u64::from(std::process::id()));
    assert_eq!(p["uid"], 0);
    assert_eq!(p["euid"], 0);
    assert_eq!(p["user"], "root");
    assert_eq!(p["comm"], "sh");
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    assert_eq!(p["parent_image"], me.to_str().unwrap());
    assert!(p["cgroup_id"].as_u64().unwrap() > 0);

    let fork = d.wait_event("fork", |e| {
        ty(e) == "process_fork" && k(e, "child_pid") == pid
    });
    assert_eq!(pid_of(&fork), u64::from(std::process::id()));

    let exit = d.wait_event("exit", |e| ty(e) == "process_exit" && pid_of(e) == pid);
    assert_eq!(k(&exit, "code"), 3);
    assert_eq!(k(&exit, "signal"), 0);
    assert_eq!(
        exit["process"]["image"],
        realpath("/bin/sh"),
        "exit is enriched from the cache"
    );
}

#[test]
fn exec_argv_is_bounded_with_a_truncation_flag() {
    let d = d();
    let long = "a".repeat(6000);
    let mut child = Command::new("/bin/true")
        .args(["first", &long])
        .spawn()
        .unwrap();
    let pid = u64::from(child.id());
    child.wait().unwrap();
    let exec = d.wait_event("long exec", |e| ty(e) == "process_exec" && pid_of(e) == pid);
    assert_eq!(k(&exec, "argv_truncated"), true);
    let argv = k(&exec, "argv").as_array().unwrap();
    assert_eq!(argv[1], "first");
    let kept = argv[2].as_str().unwrap().len();
    assert!(
        kept > 3000 && kept < 4095,
        "kept {kept} bytes of the long argument"
    );
}

#[test]
fn file_events_with_resolved_paths() {
    use std::os::unix::fs::PermissionsExt;
    let d = d();
    let dir = scratch();
    let me = u64::from(std::process::id());
    let path = |n: &str| dir.join(n).to_string_lossy().into_owned();
    // a read-only open and a write outside the watched prefixes: never reported
    let unwatched = format!("/run/picket-unwatched-{}", nonce());
    std::fs::write(&unwatched, "x").unwrap();
    std::fs::remove_file(&unwatched).unwrap();
    std::fs::write(dir.join("readme"), "r").unwrap();
    let _ = std::fs::read(dir.join("readme")).unwrap();

    std::fs::write(dir.join("new.txt"), "1").unwrap(); // create
    std::fs::write(dir.join("new.txt"), "2").unwrap(); // write-open of an existing file
    std::fs::rename(dir.join("new.txt"), dir.join("renamed.txt")).unwrap();
    std::fs::set_permissions(
        dir.join("renamed.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(dir.join("renamed.txt"), Some(1000), Some(1001)).unwrap();
    std::fs::hard_link(dir.join("renamed.txt"), dir.join("hard")).unwrap();
    std::os::unix::fs::symlink("renamed.txt", dir.join("sym")).unwrap();
    std::fs::remove_file(dir.join("renamed.txt")).unwrap();

    let mine = |e: &Value| pid_of(e) == me;
    let created = d.wait_event("create", |e| {
        mine(e) && ty(e) == "file_create" && k(e, "path") == path("new.txt").as_str()
    });
    assert_eq!(created["module"], "file");
    let w = d.wait_event("write", |e| {
        mine(e) && ty(e) == "file_write" && k(e, "path") == path("new.txt").as_str()
    });
    assert_eq!(k(&w, "truncate"), true);
    d.wait_event("rename", |e| {
        mine(e)
            && ty(e) == "file_rename"
            && k(e, "from") == path("new.txt").as_str()
            && k(e, "to") == path("renamed.txt").as_str()
    });
    d.wait_event("chmod", |e| {
        mine(e)
            && ty(e) == "file_chmod"
            && k(e, "path") == path("renamed.txt").as_str()
            && k(e, "mode") == 0o600
    });
    d.wait_event("chown", |e| {
        mine(e)
            && ty(e) == "file_chown"
            && k(e, "path") == path("renamed.txt").as_str()
            && k(e, "uid") == 1000
            && k(e, "gid") == 1001
    });
    d.wait_event("link", |e| {
        mine(e)
            && ty(e) == "file_link"
            && k(e, "path") == path("hard").as_str()
            && k(e, "target") == path("renamed.txt").as_str()
            && k(e, "symbolic") == false
    });
    d.wait_event("symlink", |e| {
        mine(e)
            && ty(e) == "file_link"
            && k(e, "path") == path("sym").as_str()
            && k(e, "target") == "renamed.txt"
            && k(e, "symbolic") == true
    });
    d.wait_event("delete", |e| {
        mine(e) && ty(e) == "file_delete" && k(e, "path") == path("renamed.txt").as_str()
    });

    let events = d.events();
    assert!(
        !events
            .iter()
            .any(|e| k(e, "path") == path("readme").as_str() && ty(e) != "file_create"),
        "read-only open reported"
    );
    assert!(
        !events.iter().any(|e| k(e, "path") == unwatched.as_str()),
        "unwatched path reported"
    );
}

#[test]
fn relative_paths_resolve_against_cwd_and_dirfd() {
    let d = d();
    let dir = scratch();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            "cd sub && echo x > rel.txt && mv rel.txt ../moved.txt && rm ../moved.txt",
        ])
        .current_dir(&dir)
        .spawn()
        .unwrap();
    child.wait().unwrap();
    let rel = dir.join("sub/rel.txt").to_string_lossy().into_owned();
    let moved = dir.join("moved.txt").to_string_lossy().into_owned();
    let c = d.wait_event("relative create", |e| {
        ty(e) == "file_create" && k(e, "path") == rel.as_str()
    });
    assert_eq!(c["process"]["pid"], u64::from(child.id()));
    d.wait_event("rename with ..", |e| {
        ty(e) == "file_rename" && k(e, "from") == rel.as_str() && k(e, "to") == moved.as_str()
    });
    d.wait_event("rm", |e| {
        ty(e) == "file_delete" && k(e, "path") == moved.as_str()
    });
}

#[test]
fn network_connect_accept_bind_listen_v4_v6_udp_and_tcp_state() {
    let d = d();
    let me = u64::from(std::process::id());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (_server, _) = listener.accept().unwrap();

    let bind = d.wait_event("bind", |e| {
        ty(e) == "net_bind" && k(e, "net")["source_port"] == port
    });
    assert_eq!(pid_of(&bind), me);
    assert_eq!(k(&bind, "net")["source_ip"], "127.0.0.1");
    assert_eq!(k(&bind, "success"), true);
    let listen = d.wait_event("listen", |e| {
        ty(e) == "net_listen" && k(e, "net")["source_port"] == port
    });
    assert_eq!(k(&listen, "net")["protocol"], "tcp");
    let conn = d.wait_event("connect", |e| {
        ty(e) == "net_connect" && k(e, "net")["destination_port"] == port
    });
    let n = k(&conn, "net");
    assert_eq!(
        (n["protocol"].as_str(), n["family"].as_str()),
        (Some("tcp"), Some("ipv4"))
    );
    assert_eq!(
        (n["source_ip"].as_str(), n["source_port"].as_u64()),
        (Some("127.0.0.1"), Some(u64::from(cport)))
    );
    assert_eq!(n["destination_ip"], "127.0.0.1");
    assert_eq!(k(&conn, "success"), true);
    assert_eq!(pid_of(&conn), me);
    let acc = d.wait_event("accept", |e| {
        ty(e) == "net_accept" && k(e, "net")["destination_port"] == cport
    });
    assert_eq!(k(&acc, "net")["source_port"], port);
    d.wait_event("tcp established", |e| {
        ty(e) == "tcp_state"
            && k(e, "new_state") == "ESTABLISHED"
            && k(e, "net")["source_port"] == cport
            && k(e, "net")["destination_port"] == port
    });

    let l6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let p6 = l6.local_addr().unwrap().port();
    let _c6 = std::net::TcpStream::connect(("::1", p6)).unwrap();
    let c6 = d.wait_event("connect v6", |e| {
        // other processes on this machine may use the same port number over v4
        ty(e) == "net_connect"
            && k(e, "net")["destination_port"] == p6
            && k(e, "net")["family"] == "ipv6"
    });
    assert_eq!(k(&c6, "net")["family"], "ipv6");
    assert_eq!(k(&c6, "net")["destination_ip"], "::1");

    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let up = free_udp_port();
    u.connect(("127.0.0.1", up)).unwrap();
    let cu = d.wait_event("connect udp", |e| {
        ty(e) == "net_connect" && k(e, "net")["destination_port"] == up
    });
    assert_eq!(k(&cu, "net")["protocol"], "udp");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn uid_change_is_reported_with_old_and_new_ids() {
    let d = d();
    let mut cmd = Command::new("/bin/true");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = u64::from(child.id());
    child.wait().unwrap();
    let e = d.wait_event("setresuid", |e| {
        ty(e) == "privilege_change" && pid_of(e) == pid && k(e, "syscall") == "setresuid"
    });
    assert_eq!(k(&e, "args"), &json!([65534, 65534, 65534]));
    assert_eq!(k(&e, "old_uid"), 0);
    assert_eq!(k(&e, "old_euid"), 0);
    assert_eq!(k(&e, "success"), true);
    let g = d.wait_event("setresgid", |e| {
        ty(e) == "privilege_change" && pid_of(e) == pid && k(e, "syscall") == "setresgid"
    });
    assert_eq!(k(&g, "args"), &json!([65534, 65534, 65534]));
    let x = d.wait_event("exec as nobody", |e| {
        ty(e) == "process_exec" && pid_of(e) == pid
    });
    assert_eq!(x["process"]["uid"], 65534);
    assert_eq!(x["process"]["user"], "nobody");
}

#[test]
fn kernel_module_load_and_unload_attempts() {
    let d = d();
    let dir = scratch();
    let junk = dir.join("picket-junk.ko");
    let trace = techniques::module_load(&junk);
    let me = u64::from(std::process::id());
    let empty = c"";
    let name = c"picket_no_such_module";
    let image = [0u8; 64];
    // SAFETY: raw syscalls with valid pointers; both are expected to fail.
    let (r2, r3) = unsafe {
        (
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len(),
                empty.as_ptr(),
            ),
            libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK),
        )
    };
    assert!(r2 < 0 && r3 < 0, "junk must not load");
    let fin = d.wait_event("finit_module", |e| {
        pid_of(e) == me && ty(e) == "module_load" && k(e, "syscall") == "finit_module"
    });
    assert_eq!(k(&fin, "path"), junk.to_str().unwrap());
    assert_eq!(k(&fin, "success"), false);
    assert!(k(&fin, "ret").as_i64().unwrap() < 0);
    let init = d.wait_event("init_module", |e| {
        pid_of(e) == me && ty(e) == "module_load" && k(e, "syscall") == "init_module"
    });
    assert_eq!(k(&init, "len"), 64);
    let del = d.wait_event("delete_module", |e| {
        pid_of(e) == me && ty(e) == "module_unload"
    });
    assert_eq!(k(&del, "name"), "picket_no_such_module");
    assert_eq!(k(&del, "success"), false);
    let a = raised(&techniques::MODULE_LOAD, &trace);
    assert_eq!(a["event"]["kind"]["path"], junk.to_str().unwrap());
    assert_eq!(a["author"], "Picket");
}

#[test]
fn ptrace_attach_is_reported_with_its_target() {
    let d = d();
    // the attach waits until picketd saw the exec, so the target's image
    // is the sleeper
    let trace = techniques::ptrace_attach(|pid| {
        d.wait_event("sleep exec", |e| {
            ty(e) == "process_exec" && pid_of(e) == u64::from(pid)
        });
    });
    let target = trace.pid().unwrap();
    let e = d.wait_event("ptrace", |e| {
        ty(e) == "ptrace" && k(e, "target_pid") == target
    });
    assert_eq!(k(&e, "request"), "PTRACE_ATTACH");
    assert_eq!(k(&e, "success"), true);
    assert_eq!(
        k(&e, "target_image").as_str().unwrap(),
        realpath("/bin/sleep")
    );
    assert_eq!(pid_of(&e), u64::from(std::process::id()));
    raised(&techniques::PTRACE_ATTACH, &trace);
}

#[test]
fn memfd_exec_is_fileless() {
    let d = d();
    let n = format!("picket-payload-{}", nonce());
    let trace = techniques::memfd_exec(&n);
    let pid = trace.pid().unwrap();
    let m = d.wait_event("memfd_create", |e| {
        ty(e) == "memfd_create" && k(e, "name") == n.as_str()
    });
    assert_eq!(pid_of(&m), u64::from(std::process::id()));
    let x = d.wait_event("fileless exec", |e| {
        ty(e) == "process_exec" && pid_of(e) == pid
    });
    assert_eq!(k(&x, "fileless"), true);
    assert!(
        x["process"]["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/memfd:{n}")),
        "{}",
        x["process"]["image"]
    );
    raised(&techniques::MEMFD_EXEC, &trace);
}

#[test]
fn mount_is_reported() {
    let d = d();
    let dir = scratch();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let target = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
    // SAFETY: valid strings; a tmpfs on our own temp dir, unmounted right after.
    unsafe {
        assert_eq!(
            libc::mount(
                c"picket-tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null()
            ),
            0
        );
        libc::umount2(target.as_ptr(), 0);
    }
    let e = d.wait_event("mount", |e| {
        ty(e) == "mount" && k(e, "target") == mnt.to_str().unwrap()
    });
    assert_eq!(k(&e, "fstype"), "tmpfs");
    assert_eq!(k(&e, "source"), "picket-tmpfs");
    assert_eq!(k(&e, "success"), true);
}

#[test]
fn auth_log_lines_become_events() {
    let s = shared();
    let user = format!("picket-{}", nonce());
    let line = format!("Nov 28 21:00:00 gw sshd[4242]: Failed password for invalid user {user} from 192.0.2.9 port 4444 ssh2\n");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.auth_log)
        .unwrap();
    std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
    let e = s.d.wait_event("auth line", |e| {
        ty(e) == "auth" && k(e, "account") == user.as_str()
    });
    assert_eq!(k(&e, "program"), "sshd");
    assert_eq!(k(&e, "action"), "login_failed");
    assert_eq!(k(&e, "outcome"), "failure");
    assert_eq!(k(&e, "source_ip"), "192.0.2.9");
}

#[test]
fn su_session_through_the_syslog_socket() {
    let s = shared();
    if !s.syslog {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI machines have no syslog daemon: /dev/log must be free"
        );
        eprintln!("skipped: a syslog daemon owns /dev/log here");
        return;
    }
    let out = Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = s.d.wait_event("su session", |e| {
        ty(e) == "auth" && k(e, "program") == "su" && k(e, "action") == "session_open"
    });
    assert_eq!(k(&e, "account"), "nobody");
    assert_eq!(k(&e, "outcome"), "success");
}

#[test]
fn critical_file_change_raises_fim_alert() {
    let s = shared();
    let path = s.fim_file.to_str().unwrap();
    let trace = techniques::passwd_write(&s.fim_file);
    let e = s.d.wait_event("fim change", |e| {
        ty(e) == "fim_change" && k(e, "path") == path
    });
    assert_eq!(k(&e, "changes"), &json!(["content"]));
    assert_ne!(k(&e, "old_hash"), k(&e, "new_hash"));
    let a = raised(&techniques::PASSWD_WRITE, &trace);
    assert_eq!(a["level"], "high");
}

#[test]
fn reverse_shell_command_line_alerts() {
    let a = raises(&techniques::REVERSE_SHELL, techniques::reverse_shell);
    assert_eq!(a["tactics"], json!(["TA0002 Execution"]));
    assert!(a["alert_id"].as_str().unwrap().len() == 32);
}

#[test]
fn picketd_does_not_see_itself_and_exports_metrics() {
    let d = d();
    let own = u64::from(d.pid());
    // picketd writes its outputs under /tmp (watched): none of that may come back
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !d.events().iter().any(|e| pid_of(e) == own),
        "picketd's own activity was reported"
    );
    let m = d.metrics();
    for name in [
        "picket_events_published_total{module=\"process\"}",
        "picket_kernel_records_lost_total{module=\"file\"}",
        "picket_bus_depth{subscriber=\"detection\"}",
        "picket_bus_dropped_total{subscriber=\"events\"}",
        "picket_process_resident_memory_bytes",
        "picket_alerts_emitted_total",
    ] {
        assert!(m.contains(name), "{name} missing from:\n{m}");
    }
    assert!(d.metric("picket_events_published_total", "module=\"process\"") > 0.0);
}

#[test]
fn setuid_bit_raises_an_alert() {
    let a = raises(&techniques::SETUID_BINARY, || {
        techniques::setuid_binary(&scratch())
    });
    assert_eq!(a["event"]["kind"]["mode"], 0o4755);
}

#[test]
fn cron_persistence_raises_an_alert() {
    raises(&techniques::CRON_JOB, techniques::cron_job);
}

#[test]
fn systemd_unit_persistence_raises_an_alert() {
    raises(&techniques::SYSTEMD_UNIT, techniques::systemd_unit);
}

#[test]
fn history_clearing_raises_an_alert() {
    raises(&techniques::HISTORY_CLEARING, || {
        techniques::history_clearing(&scratch())
    });
}

#[test]
fn download_piped_into_a_shell_raises_an_alert() {
    let a = raises(
        &techniques::DOWNLOAD_PIPE_SHELL,
        techniques::download_pipe_shell,
    );
    assert!(
        a["event"]["process"]["command_line"]
            .as_str()
            .unwrap()
            .contains("| sh"),
        "{a}"
    );
}
