//! The operator's side of rule bundles: `picketctl` making keys and the
//! trusted root, building, signing and pushing bundles to a real backend and
//! reading rollout status, as docs/BUNDLES.md §9 describes. Commands run on
//! the host, or inside the backend's network namespace.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `picketctl` binary: `$PICKETCTL`, or this workspace's build output.
pub fn picketctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PICKETCTL") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/picketctl");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p picket-cli --bin picketctl` first",
        bin.display()
    );
    bin
}

/// A Sigma rule on failed SSH logins (the auth log), titled `title`.
pub fn failed_login_rule(title: &str, id: &str) -> String {
    format!(
        "title: {title}\nid: {id}\nstatus: test\nauthor: Picket HIL tests\n\
         logsource: {{product: linux, service: sshd}}\n\
         detection:\n  sel: {{Outcome: failure}}\n  condition: sel\nlevel: medium\n"
    )
}

/// An operator's working directory (keys, root, bundles) and session.
#[derive(Debug)]
pub struct Ops {
    /// Keys, the root and built bundles.
    pub dir: PathBuf,
    /// The backend's base URL.
    pub url: String,
    /// A file holding the API bearer token.
    pub token: PathBuf,
    netns: Option<String>,
}

impl Ops {
    /// Works in `dir` against the backend at `url` with `bearer`; commands
    /// run in network namespace `netns` when given.
    pub fn new(dir: &Path, url: &str, bearer: &str, netns: Option<&str>) -> Ops {
        std::fs::create_dir_all(dir).unwrap();
        let token = dir.join("api.token");
        std::fs::write(&token, bearer).unwrap();
        Ops {
            dir: dir.to_owned(),
            url: url.to_owned(),
            token,
            netns: netns.map(str::to_owned),
        }
    }

    /// A path in the working directory, as a string.
    pub fn p(&self, f: &str) -> String {
        self.dir.join(f).to_str().unwrap().to_owned()
    }

    /// Runs picketctl: `(success, stdout, stderr)`.
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let run = || Command::new(picketctl_bin()).args(args).output().unwrap();
        let out = match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, run),
            None => run(),
        };
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs picketctl and returns its stdout; panics when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.run(args);
        assert!(success, "picketctl {args:?} failed: {stderr}{stdout}");
        stdout
    }

    /// Makes the root and bundle keys (`root.key`, `bundle.key`) and the
    /// trusted root `root.pbroot` (one signature of each, a year), and
    /// returns the root's path: the backend's `bundle-root.pbroot` and each
    /// device's `detection.bundle_root` are copies of it.
    pub fn init_root(&self) -> PathBuf {
        self.ok(&["keygen", "--out", &self.p("root.key")]);
        self.ok(&["keygen", "--out", &self.p("bundle.key")]);
        self.ok(&[
            "root",
            "init",
            "--key",
            &self.p("root.key"),
            "--threshold",
            "1",
            "--bundle-key",
            &self.p("bundle.key.pub"),
            "--bundle-threshold",
            "1",
            "--expires-days",
            "365",
            "--out",
            &self.p("root.pbroot"),
        ]);
        self.dir.join("root.pbroot")
    }

    /// Builds and signs bundle `version` of `rules` (file name, YAML),
    /// valid for 30 days; returns the `.pbundle` path.
    pub fn bundle(&self, version: u64, rules: &[(&str, &str)]) -> String {
        let dir = self.dir.join(format!("rules-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, yaml) in rules {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
        let out = self.p(&format!("b{version}.pbundle"));
        let v = version.to_string();
        self.ok(&[
            "bundle",
            "build",
            "--rules",
            dir.to_str().unwrap(),
            "--version",
            &v,
            "--expires-days",
            "30",
            "--out",
            &out,
        ]);
        self.ok(&[
            "bundle",
            "sign",
            "--key",
            &self.p("bundle.key"),
            "--in",
            &out,
            "--out",
            &out,
        ]);
        out
    }

    /// `picketctl bundle push FILE EXTRA... --json`: pushes and starts the
    /// rollout.
    pub fn push(&self, file: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "bundle",
            "push",
            file,
            "--url",
            &self.url,
            "--token-file",
            self.token.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// `picketctl rollout status --json`: the newest rollout.
    pub fn status(&self) -> Value {
        let out = self.ok(&[
            "rollout",
            "status",
            "--url",
            &self.url,
            "--token-file",
            self.token.to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    }
}
