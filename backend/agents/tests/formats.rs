//! (b) eslogger events written from Apple's documented schema, (c) Winlogbeat
//! against evtx JSON, (d) bad input.

mod common;

use picket_agents::{
    detect, map_json, map_json_as, map_line, parse_line, AgentError, Format, Mapped, MAX_LINE_BYTES,
};
use picket_rules::{Event, LogSource, RuleSet};
use serde_json::{json, Value};

use common::winlogbeat_of;

fn titles(ev: &Mapped, rules: &RuleSet) -> Vec<String> {
    let mut out = Vec::new();
    ev.evaluate(rules, &mut out);
    let mut t: Vec<String> = out.iter().map(|m| m.rule.title.clone()).collect();
    t.sort();
    t
}

fn text(ev: &Mapped, field: &str) -> Option<String> {
    ev.field(field).map(|v| v.to_string())
}

// ---------------------------------------------------------------- eslogger

/// An `es_process_t` as eslogger serializes it (`eslogger(1)`; the
/// EndpointSecurity `ESMessage.h` fields, `audit_token` expanded).
fn es_process(path: &str, pid: i64, ppid: i64, signing_id: &str) -> Value {
    json!({
        "audit_token": {"asid": 100_006, "auid": 501, "egid": 20, "euid": 501,
                        "pid": pid, "pidversion": 7, "rgid": 20, "ruid": 501},
        "parent_audit_token": {"pid": ppid, "euid": 501},
        "responsible_audit_token": {"pid": ppid, "euid": 501},
        "ppid": ppid, "original_ppid": ppid, "group_id": pid, "session_id": 1,
        "is_platform_binary": true, "is_es_client": false,
        "signing_id": signing_id, "team_id": null,
        "codesigning_flags": 570_522_385, "cdhash": "0a1b2c",
        "start_time": "2026-11-29T03:00:00.000000Z",
        "tty": null,
        "executable": {"path": path, "path_truncated": false,
                       "stat": {"st_mode": 33261, "st_uid": 0}}
    })
}

/// The `es_message_t` envelope.
fn es_message(event_type: i64, process: Value, event: Value) -> Value {
    json!({
        "schema_version": 1, "version": 7, "mach_time": 1_234_567,
        "time": "2026-11-29T03:00:01.000000000Z",
        "seq_num": 1, "global_seq_num": 10,
        "event_type": event_type, "action_type": 1,
        "action": {"result": {"result_type": 0, "result": {"auth": 0}}},
        "thread": {"thread_id": 4242},
        "process": process,
        "event": event
    })
}

/// `ES_EVENT_TYPE_NOTIFY_*` numbers from `ESTypes.h`.
const NOTIFY_EXEC: i64 = 9;
const NOTIFY_CREATE: i64 = 13;
const NOTIFY_RENAME: i64 = 25;
const NOTIFY_UNLINK: i64 = 32;

fn es_exec(args: &[&str], image: &str) -> Value {
    let zsh = es_process("/bin/zsh", 700, 600, "com.apple.zsh");
    es_message(
        NOTIFY_EXEC,
        zsh,
        json!({"exec": {
            "target": es_process(image, 700, 600, "com.apple.osascript"),
            "args": args,
            "env": ["HOME=/Users/alice", "SHELL=/bin/zsh"],
            "cwd": {"path": "/Users/alice", "path_truncated": false},
            "script": null, "image_cputype": 16_777_228, "image_cpusubtype": 2,
            "last_fd": 2, "fds": []
        }}),
    )
}

/// An `es_file_t`.
fn es_file(path: &str) -> Value {
    json!({"path": path, "path_truncated": false, "stat": {"st_mode": 33188}})
}

#[test]
fn eslogger_exec_of_osascript_maps_and_fires() {
    let line = es_exec(
        &["osascript", "-e", "display dialog \"Enter your password to update\" default answer \"\" with hidden answer"],
        "/usr/bin/osascript",
    )
    .to_string();
    let ev = map_line(line.as_bytes()).expect("maps");
    assert_eq!(ev.format, Format::Eslogger);
    assert_eq!(
        ev.sources,
        [LogSource::category("macos", "process_creation")]
    );
    assert_eq!(text(&ev, "Image").as_deref(), Some("/usr/bin/osascript"));
    assert_eq!(
        text(&ev, "CommandLine").as_deref(),
        Some("osascript -e display dialog \"Enter your password to update\" default answer \"\" with hidden answer")
    );
    assert_eq!(text(&ev, "ParentImage").as_deref(), Some("/bin/zsh"));
    assert_eq!(text(&ev, "ProcessId").as_deref(), Some("700"));
    assert_eq!(text(&ev, "ParentProcessId").as_deref(), Some("600"));
    assert_eq!(
        text(&ev, "CurrentDirectory").as_deref(),
        Some("/Users/alice")
    );
    assert_eq!(text(&ev, "UserId").as_deref(), Some("501"));
    assert_eq!(
        text(&ev, "SigningId").as_deref(),
        Some("com.apple.osascript")
    );
    assert_eq!(text(&ev, "PlatformBinary").as_deref(), Some("true"));
    assert_eq!(text(&ev, "EventType").as_deref(), Some("exec"));
    // ES has uids, not names: no `User`.
    assert_eq!(ev.field("User"), None);

    let Some(shared) = common::shared_dir() else {
        return;
    };
    let rules = common::sigmahq_rules(&shared, "macos");
    assert_eq!(
        titles(&ev, &rules),
        [
            "GUI Input Capture - macOS",
            "MacOS Scripting Interpreter AppleScript"
        ]
    );
}

#[test]
fn eslogger_launchctl_load_fires_the_launchctl_rule() {
    let line = es_exec(
        &[
            "launchctl",
            "load",
            "-w",
            "/Users/alice/Library/LaunchAgents/com.evil.plist",
        ],
        "/bin/launchctl",
    );
    let ev = map_json(&line).expect("maps");
    assert_eq!(
        text(&ev, "CommandLine").as_deref(),
        Some("launchctl load -w /Users/alice/Library/LaunchAgents/com.evil.plist")
    );
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let rules = common::sigmahq_rules(&shared, "macos");
    assert_eq!(
        titles(&ev, &rules),
        ["Launch Agent/Daemon Execution Via Launchctl"]
    );
}

#[test]
fn eslogger_file_events_map_to_target_filename() {
    let curl = es_process("/usr/bin/curl", 800, 700, "com.apple.curl");
    // create, destination_type 1: a new file (dir + filename).
    let create_new = es_message(
        NOTIFY_CREATE,
        curl.clone(),
        json!({"create": {"destination_type": 1, "destination": {"new_path": {
            "dir": es_file("/Users/alice/Library/LaunchAgents"),
            "filename": "com.evil.agent.plist", "mode": 420}}}}),
    );
    let ev = map_json(&create_new).expect("maps");
    assert_eq!(ev.sources, [LogSource::category("macos", "file_event")]);
    assert_eq!(
        text(&ev, "TargetFilename").as_deref(),
        Some("/Users/alice/Library/LaunchAgents/com.evil.agent.plist")
    );
    assert_eq!(text(&ev, "Image").as_deref(), Some("/usr/bin/curl"));
    assert_eq!(text(&ev, "ProcessId").as_deref(), Some("800"));

    // create, destination_type 0: an existing file.
    let create_existing = es_message(
        NOTIFY_CREATE,
        curl.clone(),
        json!({"create": {"destination_type": 0, "destination": {
            "existing_file": es_file("/Library/StartupItems/evil/StartupParameters.plist")}}}),
    );
    let startup = map_json(&create_existing).expect("maps");
    assert_eq!(
        text(&startup, "TargetFilename").as_deref(),
        Some("/Library/StartupItems/evil/StartupParameters.plist")
    );

    // rename into place: file_event and file_rename.
    let rename = es_message(
        NOTIFY_RENAME,
        curl.clone(),
        json!({"rename": {"source": es_file("/tmp/x.plist"), "destination_type": 1,
            "destination": {"new_path": {"dir": es_file("/etc/emond.d/rules/"),
                                          "filename": "evil.plist"}}}}),
    );
    let renamed = map_json(&rename).expect("maps");
    assert_eq!(
        renamed.sources,
        [
            LogSource::category("macos", "file_event"),
            LogSource::category("macos", "file_rename")
        ]
    );
    assert_eq!(
        text(&renamed, "SourceFilename").as_deref(),
        Some("/tmp/x.plist")
    );
    assert_eq!(
        text(&renamed, "TargetFilename").as_deref(),
        Some("/etc/emond.d/rules/evil.plist")
    );

    let unlink = es_message(
        NOTIFY_UNLINK,
        curl,
        json!({"unlink": {"target": es_file("/var/log/system.log"),
                          "parent_dir": es_file("/var/log")}}),
    );
    let unlinked = map_json(&unlink).expect("maps");
    assert_eq!(
        unlinked.sources,
        [LogSource::category("macos", "file_delete")]
    );
    assert_eq!(
        text(&unlinked, "TargetFilename").as_deref(),
        Some("/var/log/system.log")
    );

    let Some(shared) = common::shared_dir() else {
        return;
    };
    let rules = common::sigmahq_rules(&shared, "macos");
    // SigmaHQ has no macOS file_event rule for LaunchAgents (its launch
    // agent rules are process_creation ones); the file is mapped, nothing fires.
    assert!(titles(&ev, &rules).is_empty());
    assert_eq!(
        titles(&startup, &rules),
        ["Startup Item File Created - MacOS"]
    );
    assert_eq!(titles(&renamed, &rules), ["MacOS Emond Launch Daemon"]);
    assert!(titles(&unlinked, &rules).is_empty());
}

#[test]
fn eslogger_other_kinds_keep_the_actor() {
    let fork = es_message(
        11,
        es_process("/bin/zsh", 600, 1, "com.apple.zsh"),
        json!({"fork": {"child": es_process("/bin/zsh", 700, 600, "com.apple.zsh")}}),
    );
    let ev = map_json(&fork).expect("maps");
    assert_eq!(ev.sources, [LogSource::new(Some("macos"), None, None)]);
    assert_eq!(text(&ev, "ProcessId").as_deref(), Some("700"));
    assert_eq!(text(&ev, "ParentProcessId").as_deref(), Some("600"));

    let exit = es_message(
        15,
        es_process("/bin/ls", 701, 600, "com.apple.ls"),
        json!({"exit": {"stat": 0}}),
    );
    let ev = map_json(&exit).expect("maps");
    assert_eq!(
        ev.sources,
        [LogSource::category("macos", "process_termination")]
    );
    assert_eq!(text(&ev, "Image").as_deref(), Some("/bin/ls"));
    assert_eq!(text(&ev, "ExitStatus").as_deref(), Some("0"));

    let open = es_message(
        10,
        es_process("/usr/bin/sqlite3", 702, 600, "com.apple.sqlite3"),
        json!({"open": {"fflag": 1, "file": es_file("/Library/Application Support/com.apple.TCC/TCC.db")}}),
    );
    let ev = map_json(&open).expect("maps");
    assert_eq!(ev.sources, [LogSource::category("macos", "file_access")]);
    assert_eq!(
        text(&ev, "TargetFilename").as_deref(),
        Some("/Library/Application Support/com.apple.TCC/TCC.db")
    );
}

// ---------------------------------------------------- Winlogbeat vs evtx

/// Sysmon event 1 as the `evtx` crate renders it.
fn evtx_sysmon_1() -> Value {
    json!({"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {
            "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon",
                                         "Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},
            "EventID": 1, "Version": 5, "Level": 4, "Task": 1,
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "ws01.corp.example",
            "EventRecordID": 4711
        },
        "EventData": {
            "RuleName": "-", "UtcTime": "2026-11-29 03:00:00.000",
            "ProcessGuid": "{a1b2c3d4-0000-0000-0000-000000000001}", "ProcessId": 4321,
            "Image": "C:\\Windows\\System32\\whoami.exe",
            "FileVersion": "10.0.19041.1", "Description": "whoami - displays logged on user information",
            "Product": "Microsoft® Windows® Operating System", "Company": "Microsoft Corporation",
            "OriginalFileName": "whoami.exe",
            "CommandLine": "whoami /priv", "CurrentDirectory": "C:\\Users\\alice\\",
            "User": "CORP\\alice", "LogonId": "0x3e7", "TerminalSessionId": 1,
            "IntegrityLevel": "High", "Hashes": "SHA256=00",
            "ParentProcessGuid": "{a1b2c3d4-0000-0000-0000-000000000000}", "ParentProcessId": 1234,
            "ParentImage": "C:\\Windows\\System32\\cmd.exe",
            "ParentCommandLine": "\"C:\\Windows\\system32\\cmd.exe\"", "ParentUser": "CORP\\alice"
        }
    }})
}

/// Security 4688 as the `evtx` crate renders it (EventID with its
/// Qualifiers attribute, as Security records carry).
fn evtx_security_4688() -> Value {
    json!({"Event": {
        "System": {
            "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
            "EventID": {"#attributes": {"Qualifiers": 0}, "#text": 4688},
            "Channel": "Security", "Computer": "ws01.corp.example"
        },
        "EventData": {
            "SubjectUserSid": "S-1-5-21-1-2-3-1001", "SubjectUserName": "alice",
            "SubjectDomainName": "CORP", "SubjectLogonId": "0x3e7",
            "NewProcessId": "0x10e1", "NewProcessName": "C:\\Windows\\System32\\whoami.exe",
            "TokenElevationType": "%%1937", "ProcessId": "0x4d2",
            "CommandLine": "whoami /priv", "TargetUserSid": "S-1-0-0",
            "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
            "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
            "MandatoryLabel": "S-1-16-12288"
        }
    }})
}

/// The fields as rules compare them (text): Winlogbeat ships every value as
/// a string where evtx keeps numbers; the engine compares their text.
fn as_text(ev: &Mapped) -> Vec<(String, String)> {
    ev.fields
        .keys()
        .map(|k| {
            (
                k.clone(),
                ev.field(k).map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn winlogbeat_maps_like_evtx_json() {
    let rules = common::shared_dir().map(|s| common::sigmahq_rules(&s, "windows/process_creation"));
    for record in [evtx_sysmon_1(), evtx_security_4688()] {
        let from_evtx = map_line(record.to_string().as_bytes()).expect("evtx maps");
        let beat = winlogbeat_of(&record);
        let from_beat = map_line(beat.to_string().as_bytes()).expect("winlogbeat maps");
        assert_eq!(from_evtx.format, Format::Evtx);
        assert_eq!(from_beat.format, Format::Winlogbeat);
        assert_eq!(as_text(&from_evtx), as_text(&from_beat));
        assert_eq!(from_evtx.sources, from_beat.sources);
        // The Sigma process_creation fields, whatever the channel (on 4688
        // through hunt's renames).
        for ev in [&from_evtx, &from_beat] {
            assert_eq!(
                text(ev, "Image").as_deref(),
                Some("C:\\Windows\\System32\\whoami.exe")
            );
            assert_eq!(text(ev, "CommandLine").as_deref(), Some("whoami /priv"));
            assert_eq!(
                text(ev, "ParentImage").as_deref(),
                Some("C:\\Windows\\System32\\cmd.exe")
            );
        }
        assert_eq!(from_evtx.aliases, from_beat.aliases);
        if let Some(rules) = &rules {
            let want = titles(&from_evtx, rules);
            assert!(
                want.iter()
                    .any(|t| t == "Security Privileges Enumeration Via Whoami.EXE"),
                "{want:?}"
            );
            assert_eq!(titles(&from_beat, rules), want);
        }
    }
    let sysmon = map_json(&evtx_sysmon_1()).expect("maps");
    assert_eq!(
        sysmon.sources,
        [LogSource::new(
            Some("windows"),
            Some("process_creation"),
            Some("sysmon")
        )]
    );
    let sec = map_json(&evtx_security_4688()).expect("maps");
    assert_eq!(
        sec.sources,
        [LogSource::new(
            Some("windows"),
            Some("process_creation"),
            Some("security")
        )]
    );
    // 4688 keeps its own names (what `picketctl hunt` stores and Security
    // rules ask for); rules reach them under the renames of hunt's router
    // (pySigma's windows-audit pipeline): Image, ParentImage, LogonId.
    assert!(!sec.fields.contains_key("Image"));
    assert_eq!(
        text(&sec, "Image").as_deref(),
        Some("C:\\Windows\\System32\\whoami.exe")
    );
    assert_eq!(sec.text("Image"), Some("C:\\Windows\\System32\\whoami.exe"));
    assert_eq!(text(&sec, "ParentImage"), text(&sec, "ParentProcessName"));
    assert_eq!(text(&sec, "LogonId").as_deref(), Some("0x3e7"));
    // Not renamed by that pipeline, so not by Picket either: 4688's
    // SubjectUserName is the creator's account, not the new process's.
    assert_eq!(text(&sec, "User"), None);
    assert_eq!(text(&sec, "IntegrityLevel"), None);
    assert_eq!(text(&sec, "EventID").as_deref(), Some("4688"));
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_input_is_a_clear_error() {
    // Malformed JSON: where and why.
    let e = map_line(b"{\"Event\": {\"System\": ").expect_err("malformed");
    assert!(
        matches!(
            e,
            AgentError::Json {
                line: 1,
                column: 21,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("malformed JSON at line 1 column 21: "),
        "{e}"
    );
    assert_eq!(map_line(b"  \n"), Err(AgentError::Empty));
    assert_eq!(
        map_line(b"[1, 2]"),
        Err(AgentError::NotAnObject { found: "array" })
    );
    assert_eq!(
        map_line(b"\"text\""),
        Err(AgentError::NotAnObject { found: "string" })
    );

    // Unknown format: the keys it had.
    let e = map_line(br#"{"msg": "hello", "level": 3}"#).expect_err("unknown");
    assert_eq!(
        e,
        AgentError::UnknownFormat {
            keys: "msg, level".into()
        }
    );
    assert!(e.to_string().contains("top-level keys: msg, level"), "{e}");
    assert_eq!(
        map_line(b"{}"),
        Err(AgentError::UnknownFormat {
            keys: "none".into()
        })
    );
    assert_eq!("syslog".parse::<Format>().map_err(|e| e.to_string()).unwrap_err(),
        "unknown format: no evtx `Event`, Winlogbeat `winlog`, eslogger `event_type`/`event`/`process` or ECS `event`/`process`|`file` keys (top-level keys: (format name \"syslog\"))");
    for f in Format::ALL {
        assert_eq!(f.name().parse::<Format>(), Ok(f));
    }
    // ECS from Linux or Windows is not macOS ECS.
    let linux = json!({"@timestamp": "x", "event": {"category": ["process"]},
                       "host": {"os": {"family": "debian"}}, "process": {"executable": "/bin/sh"}});
    assert_eq!(
        detect(&linux),
        Err(AgentError::UnsupportedOs {
            os: "debian".into()
        })
    );

    // Missing required fields, each named with its format.
    let missing = |v: Value| map_json(&v).expect_err("missing field");
    assert_eq!(
        missing(json!({"Event": {"System": {"Channel": "Security"}}})),
        AgentError::MissingField {
            format: Format::Evtx,
            field: "Event.System.EventID",
            expected: "an integer"
        }
    );
    assert_eq!(
        missing(json!({"Event": {"System": {"EventID": 1}}})),
        AgentError::MissingField {
            format: Format::Evtx,
            field: "Event.System.Channel",
            expected: "a string"
        }
    );
    assert_eq!(
        missing(json!({"winlog": {"channel": "Security", "event_id": "four"}})),
        AgentError::MissingField {
            format: Format::Winlogbeat,
            field: "winlog.event_id",
            expected: "an integer"
        }
    );
    assert_eq!(
        missing(json!({"winlog": {"event_id": 4688}})),
        AgentError::MissingField {
            format: Format::Winlogbeat,
            field: "winlog.channel",
            expected: "a string"
        }
    );
    let no_target = es_message(
        NOTIFY_EXEC,
        es_process("/bin/zsh", 1, 0, "x"),
        json!({"exec": {"args": []}}),
    );
    assert_eq!(
        missing(no_target),
        AgentError::MissingField {
            format: Format::Eslogger,
            field: "event.exec.target",
            expected: "an object"
        }
    );
    let no_path = es_message(NOTIFY_EXEC, json!({"ppid": 1}), json!({"exec": {}}));
    let e = missing(no_path);
    assert_eq!(
        e,
        AgentError::MissingField {
            format: Format::Eslogger,
            field: "process.executable.path",
            expected: "a string"
        }
    );
    assert_eq!(
        e.to_string(),
        "eslogger event: field `process.executable.path` is missing or not a string"
    );
    let no_dest = es_message(
        NOTIFY_CREATE,
        es_process("/bin/zsh", 1, 0, "x"),
        json!({"create": {"destination_type": 1}}),
    );
    assert!(matches!(
        missing(no_dest),
        AgentError::MissingField {
            field: "event.create.destination",
            ..
        }
    ));
    let empty_event = es_message(NOTIFY_EXEC, es_process("/bin/zsh", 1, 0, "x"), json!({}));
    assert!(matches!(
        missing(empty_event),
        AgentError::MissingField { field: "event", .. }
    ));
    assert_eq!(
        missing(
            json!({"@timestamp": "x", "event": {"category": ["process"], "type": ["start"]}, "process": {"pid": 1}})
        ),
        AgentError::MissingField {
            format: Format::EcsMacos,
            field: "process.executable",
            expected: "a string"
        }
    );
    assert_eq!(
        missing(json!({"@timestamp": "x", "event": {"category": ["file"]}, "file": {"name": "a"}})),
        AgentError::MissingField {
            format: Format::EcsMacos,
            field: "file.path",
            expected: "a string"
        }
    );
    // A format forced on the wrong document.
    assert!(matches!(
        map_json_as(Format::Winlogbeat, &json!({"Event": {}})),
        Err(AgentError::MissingField {
            field: "winlog",
            ..
        })
    ));

    // Oversized: refused before parsing, whatever it holds.
    let mut long = br#"{"msg": ""#.to_vec();
    long.resize(MAX_LINE_BYTES + 1 - 2, b'a');
    long.extend_from_slice(b"\"}");
    assert_eq!(long.len(), MAX_LINE_BYTES + 1);
    assert_eq!(
        parse_line(&long),
        Err(AgentError::LineTooLong {
            len: MAX_LINE_BYTES + 1,
            max: MAX_LINE_BYTES
        })
    );
    assert_eq!(
        map_line(&long).expect_err("long").to_string(),
        format!(
            "line of {} bytes is longer than the limit of {MAX_LINE_BYTES} bytes",
            MAX_LINE_BYTES + 1
        )
    );
    // At the limit it is parsed (and is simply of no known format).
    long.truncate(MAX_LINE_BYTES - 2);
    long.extend_from_slice(b"\"}");
    assert!(matches!(
        map_line(&long),
        Err(AgentError::UnknownFormat { .. })
    ));
}

#[test]
fn garbage_never_panics() {
    // Every prefix of real lines of each format: each maps or is an error.
    let lines = [
        evtx_sysmon_1().to_string(),
        winlogbeat_of(&evtx_security_4688()).to_string(),
        es_exec(&["osascript", "-e", "x"], "/usr/bin/osascript").to_string(),
        json!({"_source": {"@timestamp": "x", "event": {"category": ["file"], "type": ["creation"]},
               "file": {"path": "/tmp/a"}, "process": {"executable": "/bin/cp"}}}).to_string(),
    ];
    for line in &lines {
        assert!(map_line(line.as_bytes()).is_ok(), "{line}");
        for cut in 0..line.len() {
            let _ = map_line(&line.as_bytes()[..cut]);
        }
    }
}
