//! `picketctl keygen`, `root` and `bundle` end to end, through the binary:
//! three SigmaHQ Linux rules (copied at test time) built, signed and
//! verified; a broken rule named by `bundle build`; a tampered bundle
//! refused with the hash error; a root rotation.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Three SigmaHQ Linux rules from the shared corpus, or `None` (after
/// saying so) when it is missing outside CI.
fn linux_rules() -> Option<Vec<PathBuf>> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sigmahq/rules/linux");
    if !dir.is_dir() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "shared rules folder {} is missing (CI=true)",
            dir.display()
        );
        println!("SKIPPED: shared rules folder {} is missing", dir.display());
        return None;
    }
    let files = picket_rules::files_with_extensions(&dir, &["yml"]).unwrap();
    assert!(files.len() >= 3);
    Some(files.into_iter().take(3).collect())
}

fn picketctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_picketctl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("picketctl runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = picketctl(dir, args);
    assert!(
        out.status.success(),
        "picketctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fail(dir: &Path, args: &[&str]) -> String {
    let out = picketctl(dir, args);
    assert_eq!(out.status.code(), Some(1), "picketctl {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// A temp dir with keys r1, r2 (root), b1, b2 (bundle), a 2-of-2 root,
/// rules/ holding three valid rules, and an unsigned bundle built from them.
fn setup() -> Option<tempfile::TempDir> {
    let rules = linux_rules()?;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("rules/linux")).unwrap();
    for rule in &rules {
        std::fs::copy(rule, d.join("rules/linux").join(rule.file_name().unwrap())).unwrap();
    }
    for k in ["r1", "r2", "b1", "b2"] {
        ok(d, &["keygen", "--out", k]);
    }
    let root = ok(
        d,
        &[
            "root",
            "init",
            "--key",
            "r1",
            "--key",
            "r2",
            "--threshold",
            "2",
            "--bundle-key",
            "b1.pub",
            "--bundle-key",
            "b2.pub",
            "--bundle-threshold",
            "2",
            "--expires-days",
            "365",
            "--out",
            "root.proot",
            "--json",
        ],
    );
    let root: serde_json::Value = serde_json::from_str(&root).unwrap();
    assert_eq!(root["version"], 1);
    assert_eq!(root["signed_by"].as_array().unwrap().len(), 2);
    ok(
        d,
        &[
            "bundle",
            "build",
            "--rules",
            "rules",
            "--version",
            "3",
            "--expires-days",
            "30",
            "--target",
            "group:lab",
            "--target",
            "device:dev-7",
            "--out",
            "b.pbundle",
        ],
    );
    Some(tmp)
}

#[test]
fn keygen_writes_a_private_key_and_its_public_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&ok(tmp.path(), &["keygen", "--out", "k", "--json"])).unwrap();
    assert_eq!(out["key_id"].as_str().unwrap().len(), 32);
    let mode = std::fs::metadata(tmp.path().join("k"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("k.pub"))
            .unwrap()
            .len(),
        65
    );
    // Never overwrites.
    fail(tmp.path(), &["keygen", "--out", "k"]);
}

#[test]
fn build_sign_verify() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    fn verify<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec![
            "bundle",
            "verify",
            "--root",
            "root.proot",
            "--in",
            "b.pbundle",
        ];
        all.extend_from_slice(args);
        all
    }
    // Unsigned, then one of two signatures.
    assert!(fail(d, &verify(&[])).contains("unsigned"));
    ok(
        d,
        &[
            "bundle",
            "sign",
            "--key",
            "b1",
            "--in",
            "b.pbundle",
            "--out",
            "b.pbundle",
        ],
    );
    let json = String::from_utf8(picketctl(d, &verify(&["--json"])).stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["refusal"], "BelowThreshold");
    // Signing twice with the same key does not help.
    ok(
        d,
        &[
            "bundle",
            "sign",
            "--key",
            "b1",
            "--in",
            "b.pbundle",
            "--out",
            "b.pbundle",
        ],
    );
    assert!(fail(d, &verify(&[])).contains("1 valid signature(s), the root requires 2"));
    ok(
        d,
        &[
            "bundle",
            "sign",
            "--key",
            "b2",
            "--in",
            "b.pbundle",
            "--out",
            "b.pbundle",
        ],
    );

    let v: serde_json::Value = serde_json::from_str(&ok(d, &verify(&["--json"]))).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["version"], 3);
    assert_eq!(v["files"], 3);
    assert_eq!(v["signers"].as_array().unwrap().len(), 2);
    ok(d, &verify(&["--device", "dev-1", "--group", "lab"]));
    ok(d, &verify(&["--device", "dev-7"]));
    assert!(fail(d, &verify(&["--device", "dev-1"])).contains("does not target device dev-1"));
    assert!(fail(d, &verify(&["--running-version", "3"])).contains("rollback"));
    ok(d, &verify(&["--running-version", "2"]));
    let late = (picket_cli::bundle::now_unix() + 31 * 86_400).to_string();
    assert!(fail(d, &verify(&["--now", &late])).contains("expired"));
}

#[test]
fn a_broken_rule_stops_the_build_and_is_named() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    std::fs::write(
        d.join("rules/linux/zz_broken.yml"),
        "title: Broken\nid: broken-1\nlogsource: {product: linux}\n\
         detection:\n    sel:\n        Image|nosuchmodifier: x\n    condition: sel\n",
    )
    .unwrap();
    let err = fail(
        d,
        &[
            "bundle",
            "build",
            "--rules",
            "rules",
            "--version",
            "4",
            "--expires-days",
            "1",
            "--out",
            "broken.pbundle",
        ],
    );
    assert!(err.contains("zz_broken.yml"), "{err}");
    assert!(err.contains("broken-1"), "{err}");
    assert!(err.contains("nosuchmodifier"), "{err}");
    assert!(!d.join("broken.pbundle").exists());
}

#[test]
fn a_tampered_bundle_fails_with_the_hash_error() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    ok(
        d,
        &[
            "bundle",
            "sign",
            "--key",
            "b1",
            "--key",
            "b2",
            "--in",
            "b.pbundle",
            "--out",
            "b.pbundle",
        ],
    );
    let mut bytes = std::fs::read(d.join("b.pbundle")).unwrap();
    // Change one character of a rule: `title:` is in the payload only.
    let at = bytes.windows(6).rposition(|w| w == b"title:").unwrap();
    bytes[at] = b'T';
    std::fs::write(d.join("t.pbundle"), &bytes).unwrap();
    let out = picketctl(
        d,
        &[
            "bundle",
            "verify",
            "--root",
            "root.proot",
            "--in",
            "t.pbundle",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["refusal"], "ContentHashMismatch");
    assert!(String::from_utf8_lossy(&out.stderr).contains("content hash mismatch"));
}

#[test]
fn root_rotation_through_the_cli() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    for k in ["r3", "b3"] {
        ok(d, &["keygen", "--out", k]);
    }
    let rotate = |old: &[&str], out: &str| {
        let mut args = vec![
            "root",
            "rotate",
            "--root",
            "root.proot",
            "--key",
            "r3",
            "--threshold",
            "1",
            "--bundle-key",
            "b3.pub",
            "--bundle-threshold",
            "1",
            "--expires-days",
            "30",
            "--out",
            out,
        ];
        for k in old {
            args.extend(["--old-key", k]);
        }
        ok(d, &args);
    };
    // Signed by the new key only: the old threshold (2) is not met.
    rotate(&[], "new-only.proot");
    let err = fail(
        d,
        &[
            "root",
            "verify",
            "--root",
            "root.proot",
            "--update",
            "new-only.proot",
        ],
    );
    assert!(
        err.contains("0 of the current root keys, 2 required"),
        "{err}"
    );
    // One old signature is added later with `root sign`.
    rotate(&["r1"], "v2.proot");
    fail(
        d,
        &[
            "root",
            "verify",
            "--root",
            "root.proot",
            "--update",
            "v2.proot",
        ],
    );
    ok(
        d,
        &[
            "root", "sign", "--key", "r2", "--in", "v2.proot", "--out", "v2.proot",
        ],
    );
    ok(
        d,
        &[
            "root",
            "verify",
            "--root",
            "root.proot",
            "--update",
            "v2.proot",
        ],
    );
    // Bundles signed by the new bundle key verify under the rotated root.
    ok(
        d,
        &[
            "bundle",
            "sign",
            "--key",
            "b3",
            "--in",
            "b.pbundle",
            "--out",
            "b3.pbundle",
        ],
    );
    ok(
        d,
        &[
            "bundle",
            "verify",
            "--root",
            "root.proot",
            "--root-update",
            "v2.proot",
            "--in",
            "b3.pbundle",
        ],
    );
    assert!(fail(
        d,
        &[
            "bundle",
            "verify",
            "--root",
            "root.proot",
            "--in",
            "b3.pbundle"
        ]
    )
    .contains("unknown key"));
}
