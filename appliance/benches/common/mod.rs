//! What the appliance's benchmarks share: the demo recording mixed with
//! auth lines, reading a folder of rules as a bundle's files, and
//! compiling them as picketd installs a bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use picket_appliance::event::Event;
use picket_rules::RuleSet;

/// The demo recording (`appliance/demo/attacks.jsonl`: process, file and
/// network events of the attack script) with an sshd/sudo auth line after
/// every three kernel events.
pub fn demo_events() -> Vec<Event> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/attacks.jsonl");
    let auth = [
        "Nov 28 21:00:01 gw sshd[813]: Failed password for invalid user admin from 198.51.100.2 port 4242 ssh2",
        "Nov 28 21:00:02 gw sshd[814]: Accepted publickey for ops from 192.0.2.7 port 51514 ssh2: ED25519 SHA256:x",
        "Nov 28 21:00:03 gw sudo:      ops : TTY=pts/0 ; PWD=/home/ops ; USER=root ; COMMAND=/usr/bin/id",
        "Nov 28 21:00:04 gw sshd[815]: pam_unix(sshd:session): session opened for user ops(uid=1000) by (uid=0)",
    ];
    let mut out = Vec::new();
    let text = std::fs::read_to_string(&demo).unwrap();
    for (i, l) in text.lines().enumerate() {
        out.push(serde_json::from_str(l).unwrap());
        if i % 3 == 2 {
            let line = auth[(i / 3) % auth.len()];
            out.push(picket_appliance::auth::parse_line(line).unwrap().to_event());
        }
    }
    out
}

/// Every rule file under `dir`, by its path inside `dir`, as a bundle
/// carries them.
pub fn rule_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for p in picket_rules::files_with_extensions(dir, &picket_rules::RULE_EXTENSIONS).unwrap() {
        let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(&p).unwrap());
    }
    files
}

/// The set a bundle of `files` would install (plus the built-in rules);
/// where a bundle would be refused for rules that do not compile, the set
/// of those that do, with the others named on stderr.
pub fn compile(files: &BTreeMap<String, Vec<u8>>) -> RuleSet {
    match picket_appliance::bundles::compile(files, &BTreeMap::new()) {
        Ok(r) => r,
        Err(errors) => {
            let mut ignored = Vec::new();
            let sources = picket_appliance::detect::BUILTIN_RULES
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .chain(
                    files
                        .iter()
                        .map(|(n, b)| (PathBuf::from(n), String::from_utf8_lossy(b).into_owned())),
                )
                .collect();
            let r =
                picket_appliance::detect::compile_sources(sources, &BTreeMap::new(), &mut ignored);
            eprintln!("{} rules left out: {}", errors.len(), errors.join("; "));
            r
        }
    }
}
