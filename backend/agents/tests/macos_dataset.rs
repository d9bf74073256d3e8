//! (a) Every file of the shared macOS ECS dataset
//! (`shared/data/macos-attack-dataset`, Elastic Endpoint 7.10 documents as
//! exported from Kibana) mapped by `picket-agents` and evaluated against the
//! SigmaHQ macOS rules, loaded with no field mappings.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use picket_agents::{map_json, AgentError, Format};
use serde_json::Value;

/// The documents of one dataset file: concatenated pretty-printed hits, or
/// an Elasticsearch search response (`hits.hits[]`), or an EQL search
/// response (`hits.events[]`).
fn documents(text: &str) -> Result<Vec<Value>, serde_json::Error> {
    let mut docs = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let v = v?;
        let hits = v.get("hits");
        match hits.and_then(|h| h.get("hits").or_else(|| h.get("events"))) {
            Some(Value::Array(hits)) => docs.extend(hits.iter().cloned()),
            _ => docs.push(v),
        }
    }
    Ok(docs)
}

#[derive(Default, Debug)]
struct Outcome {
    /// File → JSON error, for files that are not valid JSON.
    malformed: BTreeMap<String, String>,
    /// Events mapped, per Sigma category.
    per_category: BTreeMap<String, usize>,
    /// Documents that did not map, with the error.
    refused: Vec<(String, AgentError)>,
    /// Rule title → dataset file names it fired on (one per event).
    fired: BTreeMap<String, Vec<String>>,
}

fn run(shared: &Path) -> Outcome {
    let rules = common::sigmahq_rules(shared, "macos");
    let dir = shared.join("data/macos-attack-dataset");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dataset")
        .map(|d| d.expect("entry").path())
        .filter(|p| p.is_dir())
        .flat_map(|d| std::fs::read_dir(d).expect("tactic folder"))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 66, "every dataset file (README.md aside)");
    let mut o = Outcome::default();
    let mut out = Vec::new();
    for f in &files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).expect("readable");
        let docs = match documents(&text) {
            Ok(docs) => docs,
            Err(e) => {
                o.malformed.insert(name, e.to_string());
                continue;
            }
        };
        for doc in docs {
            let ev = match map_json(&doc) {
                Ok(ev) => ev,
                Err(e) => {
                    o.refused.push((name.clone(), e));
                    continue;
                }
            };
            assert_eq!(ev.format, Format::EcsMacos, "{name}");
            let cat = ev.sources[0].category.clone().unwrap_or_else(|| "-".into());
            *o.per_category.entry(cat).or_default() += 1;
            out.clear();
            ev.evaluate(&rules, &mut out);
            for m in &out {
                o.fired
                    .entry(m.rule.title.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    o
}

/// Rule title → (dataset file, events it fired on), the whole expected
/// outcome. Why each fires (the dataset's own file names give the ATT&CK
/// technique that was played):
const EXPECTED: &[(&str, &[(&str, usize)])] = &[
    // T1115: `osascript -e 'the clipboard'` piped to pbpaste.
    (
        "Clipboard Access Via OSAScript",
        &[("collection_clipboard_osascript_pbpast.json", 1)],
    ),
    // T1136.001: `dscl . -create /Users/...` and `IsHidden` on the same account.
    (
        "Creation Of A Local User Account",
        &[("persistence_create_local_account_hidden_logon.json", 1)],
    ),
    (
        "Hidden User Creation",
        &[("persistence_create_local_account_hidden_logon.json", 1)],
    ),
    // T1555.001: `security dump-keychain -d`.
    (
        "Credentials from Password Stores - Keychain",
        &[("credaccess_keychain_dumping_security.json", 1)],
    ),
    // T1056.002: `osascript -e 'display dialog ... default answer ... hidden answer'`.
    (
        "GUI Input Capture - macOS",
        &[("credaccess_phish_input_capture_applescript.json", 1)],
    ),
    // T1553.001: `xattr -d com.apple.quarantine`.
    (
        "Gatekeeper Bypass via Xattr",
        &[("evasion_deletion_quarantine_xattr.json", 1)],
    ),
    // T1059.002 / T1059.007: `osascript -l JavaScript -e eval(...)` (Apfell).
    (
        "JXA In-memory Execution Via OSAScript",
        &[("execution_scripting_jxa_osascript_apfell_dwnld.json", 1)],
    ),
    // T1087.001: `dscl . list /Users` (also run by the login-hook script).
    (
        "Local System Accounts Discovery - MacOs",
        &[
            ("discovery_users_and_groups_dscl.json", 1),
            ("persistence_login_hook_process_execution.json", 1),
        ],
    ),
    // T1546.014: five file events under /etc/emond.d/rules/*.plist and
    // /private/var/db/emondClients (an EQL `hits.events` response).
    (
        "MacOS Emond Launch Daemon",
        &[("persistence_emond_rules_filemod.json", 5)],
    ),
    // T1059.002: every `osascript -e` / `.scpt` execution in the dataset.
    (
        "MacOS Scripting Interpreter AppleScript",
        &[
            ("collection_clipboard_osascript_pbpast.json", 1),
            ("credaccess_phish_input_capture_applescript.json", 1),
            ("execution_pkg_preinstall_shell_script_file_proc.json", 1),
            ("execution_scripting_jxa_osascript_apfell_dwnld.json", 1),
            ("privesc_runas_admin_applescript.json", 1),
        ],
    ),
    // T1078.003: `dsenableroot`.
    (
        "Root Account Enable Via Dsenableroot",
        &[("privesc_execution_enable_root_account.json", 1)],
    ),
    // T1053.003: `crontab` with a file argument.
    (
        "Scheduled Cron Task/Job - MacOs",
        &[("persistence_crontab_creation.json", 1)],
    ),
    // T1113: `screencapture`.
    (
        "Screen Capture - macOS",
        &[("collection_screencapture_command_proc_file.json", 1)],
    ),
    // T1518.001: `ps`/`grep` for Little Snitch.
    (
        "Security Software Discovery - MacOs",
        &[("discovery_security_sw_little_snitch.json", 1)],
    ),
    // T1036.006: emond runs a script whose name ends in a space.
    (
        "Space After Filename - macOS",
        &[("persistence_emond_process_execution.json", 1)],
    ),
    // T1552.003: `cat ~/.bash_history`.
    (
        "Suspicious History File Operations",
        &[("collection_discovery_bash_history_procexec.json", 1)],
    ),
    // T1016: `networksetup` (web proxy set to localhost; VPN listing).
    (
        "System Network Discovery - macOS",
        &[
            ("evasion_credaccess_set_webproxy_to_localhost.json", 1),
            ("lateral_movement_vpn_connection_cmdline.json", 1),
        ],
    ),
    // T1098: `dseditgroup -o edit -a ... -t user admin`.
    (
        "User Added To Admin Group Via DseditGroup",
        &[("privesc_user_added_to_admin_group.json", 1)],
    ),
];

/// Dataset files that are not valid JSON (truncated or hand-edited exports),
/// with where serde_json stops reading the stream of documents. Given a
/// whole file as one line, the agents' parser must refuse it as malformed
/// JSON at that place, or earlier for a file of several documents (a line
/// holds one).
const MALFORMED: &[(&str, usize, usize)] = &[
    ("credaccess_browsers_cookies_access.json", 128, 8),
    ("credaccess_cookies_crimes_chrome_debugging.json", 124, 8),
    ("discovery_system_profile_sw_vers.json", 131, 1),
    (
        "evasion_execution_electron_tcc_bypass_nodejs_childproc_osascript_apfell.json",
        22,
        17,
    ),
    (
        "evasion_susp_zip_file_launchagent_for_office_sandbox_evasion.json",
        2,
        4,
    ),
    ("execution_automator_workflow_template_jxa.json", 123, 2),
    ("execution_scripting_python.json", 148, 17),
    ("lateral_movement_ssh_from_python_procexec.json", 28, 4),
    (
        "persistence_execution_hidden_loginitem_creation_osascript.json",
        17,
        17,
    ),
];

#[test]
fn sigmahq_macos_rules_fire_on_the_dataset() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let o = run(&shared);
    println!("malformed: {:#?}", o.malformed);
    println!("refused: {:#?}", o.refused);
    println!("per category: {:?}", o.per_category);
    for (rule, files) in &o.fired {
        println!("{rule}: {files:?}");
    }
    // 57 readable files, 95 events, all mapped: 69 process starts, 5 process
    // ends, 21 file events.
    assert!(o.refused.is_empty(), "{:?}", o.refused);
    let cats: Vec<(&str, usize)> = o
        .per_category
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        cats,
        [
            ("file_event", 21),
            ("process_creation", 69),
            ("process_termination", 5)
        ]
    );

    let got: Vec<(String, Vec<(String, usize)>)> = o
        .fired
        .iter()
        .map(|(rule, files)| {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for f in files {
                *per.entry(f.clone()).or_default() += 1;
            }
            (rule.clone(), per.into_iter().collect())
        })
        .collect();
    let mut want: Vec<(String, Vec<(String, usize)>)> = EXPECTED
        .iter()
        .map(|(rule, files)| {
            (
                (*rule).to_owned(),
                files.iter().map(|(f, n)| ((*f).to_owned(), *n)).collect(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    // The launchctl file sets an environment variable (`launchctl setenv`);
    // SigmaHQ's launchctl rule asks for submit/load/start, so it stays quiet.
    assert!(!o
        .fired
        .contains_key("Launch Agent/Daemon Execution Via Launchctl"));

    let malformed: Vec<&str> = o.malformed.keys().map(String::as_str).collect();
    let want: Vec<&str> = MALFORMED.iter().map(|(f, _, _)| *f).collect();
    assert_eq!(malformed, want, "{:#?}", o.malformed);
}

#[test]
fn malformed_dataset_files_are_json_errors_at_their_place() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let dir = shared.join("data/macos-attack-dataset");
    for (file, line, column) in MALFORMED {
        let path = std::fs::read_dir(&dir)
            .expect("dataset")
            .map(|d| d.expect("entry").path().join(file))
            .find(|p| p.is_file())
            .expect("file in a tactic folder");
        let bytes = std::fs::read(&path).expect("readable");
        match picket_agents::parse_line(&bytes) {
            Err(
                e @ AgentError::Json {
                    line: l, column: c, ..
                },
            ) => {
                assert!((l, c) <= (*line, *column), "{file}: {e}");
                assert!(e
                    .to_string()
                    .starts_with(&format!("malformed JSON at line {l} column {c}: ")));
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}
