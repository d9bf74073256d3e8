//! What the appliance's benchmarks share: reading a folder of rules as a
//! bundle's files and compiling them as picketd installs a bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use picket_rules::RuleSet;

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
