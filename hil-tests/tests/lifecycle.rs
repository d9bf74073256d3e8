//! picketd's lifecycle on the real kernel: shutdown and crashes leave
//! nothing attached; missing BTF and a verifier rejection are clear errors
//! that leave the other modules running; a live recording replays to the
//! same alerts; a flood's losses are counted, never silent.
//!
//! Tests here start and stop their own daemons and look at every BPF program
//! on the machine, so they take turns.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::{picket_programs, pid_of, set, ty, wait_for, Options, Picketd};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn no_programs_left() {
    let left = wait_for("programs detached", Duration::from_secs(10), || {
        let p = picket_programs();
        p.is_empty().then_some(p)
    });
    assert!(left.is_empty());
    let pinned: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("pk"))
                .collect()
        })
        .unwrap_or_default();
    assert!(pinned.is_empty(), "pinned leftovers: {pinned:?}");
}

#[test]
fn graceful_shutdown_detaches_every_program() {
    let _t = turn();
    let mut d = Picketd::start(Options::default());
    let attached = picket_programs();
    assert!(
        attached.len() > 50,
        "expected the probes attached, found {attached:?}"
    );
    let st = d.stop();
    assert!(st.success(), "exit status {st}\n{}", d.log_text());
    no_programs_left();
    assert!(d.log_text().contains("shutting down"));
}

#[test]
fn kill_9_leaves_nothing_attached() {
    let _t = turn();
    let mut d = Picketd::start(Options::default());
    assert!(!picket_programs().is_empty());
    d.signal(libc::SIGKILL);
    d.wait_exit();
    no_programs_left();
}

#[test]
fn missing_btf_is_a_clear_error_and_other_modules_run() {
    let _t = turn();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let auth = dir.path().join("auth.log");
    std::fs::write(&auth, "").unwrap();
    let a = auth.clone();
    let d = Picketd::start(Options {
        env: vec![("PICKET_BTF_PATH".into(), "/nonexistent/vmlinux".into())],
        edit: Box::new(move |c, _| {
            set(
                c,
                "modules.auth.log_files",
                toml::Value::Array(vec![a.to_str().unwrap().into()]),
            );
            set(c, "modules.auth.poll_interval_ms", 50);
        }),
        ..Options::default()
    });
    let log = d.log_text();
    assert!(
        log.contains("kernel BTF not readable at /nonexistent/vmlinux"),
        "{log}"
    );
    assert!(log.contains("CONFIG_DEBUG_INFO_BTF"), "{log}");
    let failed: Vec<String> = d
        .log_lines()
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("failed to start"))
        })
        .filter_map(|l| l["fields"]["module"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(failed, ["process", "file", "network", "syscalls"]);
    assert!(
        picket_programs().is_empty(),
        "nothing may be loaded without BTF"
    );
    // the auth module is unaffected
    std::fs::write(
        &auth,
        "Nov 28 21:00:00 gw sshd[7]: Invalid user mallory from 192.0.2.1 port 1\n",
    )
    .unwrap();
    d.wait_event("auth event without BTF", |e| {
        ty(e) == "auth" && e["kind"]["account"] == "mallory"
    });
}

#[test]
fn verifier_rejection_names_the_program_and_others_run() {
    let _t = turn();
    let bad =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../probes/bpf/test/verifier_reject.bpf.o");
    let d = Picketd::start(Options {
        env: vec![("PICKET_OBJECT_PROCESS".into(), bad.to_str().unwrap().into())],
        ..Options::default()
    });
    let log = d.log_text();
    let line = d
        .log_lines()
        .into_iter()
        .find(|l| {
            l["fields"]["module"] == "process"
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("failed to start"))
        })
        .unwrap_or_else(|| panic!("no failure reported:\n{log}"));
    let msg = line["fields"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the verifier rejected program pk_bad_exec"),
        "{msg}"
    );
    assert!(msg.contains("verifier log"), "{msg}");
    assert!(
        msg.contains("invalid access to map value") || msg.contains("R0 min value"),
        "{msg}"
    );
    // the file module still reports
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let f = dir.path().canonicalize().unwrap().join("still-watching");
    std::fs::write(&f, "x").unwrap();
    d.wait_event("file event beside a failed module", |e| {
        ty(e) == "file_create" && e["kind"]["path"] == f.to_str().unwrap()
    });
}

#[test]
fn live_recording_replays_to_the_same_alerts() {
    let _t = turn();
    let port = picket_hil_tests::free_port(); // nothing listens there
    let rec_dir = tempfile::tempdir_in("/tmp").unwrap();
    let rec = rec_dir.path().join("rec.jsonl");
    let mut d = Picketd::start(Options {
        args: vec![
            "record".into(),
            "--out".into(),
            rec.to_str().unwrap().into(),
        ],
        ..Options::default()
    });
    let mut child = Command::new("/bin/bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port} || true")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid2 = u64::from(child.id());
    child.wait().unwrap();
    let live2 = d.wait_alert("recorded alert", |a| a["event"]["process"]["pid"] == pid2);
    assert_eq!(
        live2["rule_title"],
        "Shell Redirected to a Network Socket via /dev/tcp"
    );
    d.stop();
    let recorded = picket_hil_tests::read_jsonl(&rec);
    assert!(
        recorded
            .iter()
            .any(|e| pid_of(e) == pid2 && ty(e) == "process_exec"),
        "the exec is in the recording"
    );

    // replay without the kernel: same alert for that event
    let out = rec_dir.path().join("replayed-alerts.jsonl");
    let cfg = rec_dir.path().join("replay.toml");
    let mut t: toml::Table = picket_appliance::config::DEFAULT_CONFIG.parse().unwrap();
    set(&mut t, "output.alerts", out.to_str().unwrap());
    set(&mut t, "metrics.enabled", false);
    set(&mut t, "detection.rules_dirs", toml::Value::Array(vec![]));
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let st = Command::new(picket_hil_tests::picketd_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "replay",
            rec.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let replayed = picket_hil_tests::read_jsonl(&out);
    let same: Vec<_> = replayed
        .iter()
        .filter(|a| a["event"]["process"]["pid"] == pid2)
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["rule_id"], live2["rule_id"]);
    assert_eq!(same[0]["event"], live2["event"]);
}

#[test]
fn flood_losses_are_counted_not_silent() {
    let _t = turn();
    // a one-page ring for the file module: a burst must overflow it
    let d = Picketd::start(Options {
        edit: Box::new(|c, _| {
            set(c, "modules.file.ring_buffer_bytes", 4096);
            set(c, "detection.enabled", false);
        }),
        ..Options::default()
    });
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = dir.path().canonicalize().unwrap();
    let n = 20_000;
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in 0..n / 2 {
                    std::fs::write(root.join(format!("f{t}-{i}")), b"x").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let prefix = root.to_str().unwrap().to_owned();
    // wait until the events writer's queue has drained (twice in a row);
    // background activity may keep the published count moving forever
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut empty = 0;
    while std::time::Instant::now() < deadline && empty < 2 {
        std::thread::sleep(Duration::from_millis(300));
        if d.metric("picket_bus_depth", "subscriber=\"events\"") == 0.0 {
            empty += 1;
        } else {
            empty = 0;
        }
    }
    let seen = d
        .events()
        .iter()
        .filter(|e| {
            ty(e) == "file_create"
                && e["kind"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&prefix))
        })
        .count() as f64;
    let lost_kernel = d.metric("picket_kernel_records_lost_total", "module=\"file\"");
    let dropped_user = d.metric("picket_bus_dropped_total", "subscriber=\"events\"");
    eprintln!("flood: {n} creates, {seen} seen, {lost_kernel} lost in the kernel, {dropped_user} dropped in user space");
    assert!(
        lost_kernel > 0.0,
        "a 4 KiB ring cannot hold a 20,000-file burst"
    );
    assert!(
        seen + lost_kernel + dropped_user >= f64::from(n),
        "every record is delivered or counted"
    );
    assert!(seen > 0.0);
    let log = d.log_text();
    assert!(
        log.contains("kernel ring buffer full: records lost"),
        "losses are logged"
    );
}

#[test]
fn sighup_reload_stops_and_restarts_a_module_with_new_settings() {
    let _t = turn();
    let d = Picketd::start(Options::default());
    let cfg_path = d.dir.path().join("picketd.toml");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = dir.path().canonicalize().unwrap();
    let touch = |name: &str| {
        let p = root.join(name);
        std::fs::write(&p, "x").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let created = |p: &str| {
        let p = p.to_owned();
        move |e: &serde_json::Value| ty(e) == "file_create" && e["kind"]["path"] == p.as_str()
    };
    let p1 = touch("before");
    d.wait_event("file event before reload", created(&p1));

    // 1. the file module off: its probes are detached, other modules run on
    let mut t: toml::Table = original.parse().unwrap();
    set(&mut t, "modules.file.enabled", false);
    std::fs::write(&cfg_path, toml::to_string(&t).unwrap()).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("file module stopped", Duration::from_secs(10), || {
        d.log_lines()
            .iter()
            .any(|l| l["fields"]["module"] == "file" && l["fields"]["message"] == "stopped")
            .then_some(())
    });
    let p2 = touch("while-off");
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pid = u64::from(child.id());
    child.wait().unwrap();
    d.wait_event("process events still flow", |e| {
        ty(e) == "process_exec" && pid_of(e) == pid
    });
    assert!(
        !d.events().iter().any(created(&p2)),
        "the file module was stopped"
    );

    // 2. back on, with /tmp no longer watched: the new prefix map applies
    let mut t: toml::Table = original.parse().unwrap();
    let watch: Vec<toml::Value> = ["/etc/", root.to_str().unwrap()]
        .iter()
        .map(|p| {
            toml::Value::String(if p.ends_with('/') {
                (*p).to_owned()
            } else {
                format!("{p}/")
            })
        })
        .collect();
    set(
        &mut t,
        "modules.file.watch_prefixes",
        toml::Value::Array(watch),
    );
    std::fs::write(&cfg_path, toml::to_string(&t).unwrap()).unwrap();
    d.signal(libc::SIGHUP);
    let mut i = 0;
    wait_for("file module restarted", Duration::from_secs(30), || {
        // the module attaches a moment after the signal: keep creating files
        i += 1;
        let p = touch(&format!("after-{i}"));
        std::thread::sleep(Duration::from_millis(100));
        d.events().iter().any(created(&p)).then_some(())
    });
    let elsewhere = tempfile::tempdir_in("/tmp").unwrap();
    let other = elsewhere
        .path()
        .canonicalize()
        .unwrap()
        .join("unwatched-now");
    std::fs::write(&other, "x").unwrap();
    let p4 = touch("marker");
    d.wait_event("marker after the unwatched write", created(&p4));
    assert!(
        !d.events()
            .iter()
            .any(|e| e["kind"]["path"] == other.to_str().unwrap()),
        "the reloaded prefix map no longer watches all of /tmp"
    );
}
