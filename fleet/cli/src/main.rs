//! `picketctl`: see the `picket_cli` crate docs and `fleet/cli/README.md`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use picket_bundle::{KeyId, Target};
use picket_cli::bundle::{self as bundles, BundleCmdError};
use picket_cli::hunt::{self, Format, HuntConfig};
use serde::Serialize;

/// Picket's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "picketctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan EVTX and JSON-lines files with a Sigma rule set and print a
    /// timeline of the matches (CSV, or JSON lines with --jsonl) on stdout
    /// and a summary on stderr. Exit code 0 when the scan finished, even if
    /// files, records or lines were skipped (each is reported on stderr);
    /// 1 when it could not run (no rules, unreadable rules path, output
    /// error); 2 for usage errors.
    Hunt {
        /// Rule file or directory (recursive); repeat for more.
        #[arg(long = "rules", value_name = "DIR", required = true)]
        rules: Vec<PathBuf>,
        /// Print the timeline as JSON lines instead of CSV.
        #[arg(long)]
        jsonl: bool,
        /// Worker threads (default: one per core).
        #[arg(long, value_name = "N")]
        threads: Option<NonZeroUsize>,
        /// A value for an `expand` placeholder (`%NAME%`); repeat for more
        /// values or names.
        #[arg(long = "placeholder", value_name = "NAME=VALUE", value_parser = hunt::parse_placeholder)]
        placeholders: Vec<(String, String)>,
        /// Product of JSON lines without `_product` (e.g. `linux`).
        #[arg(long, value_name = "PRODUCT")]
        product: Option<String>,
        /// Never draw the progress bar (it is only drawn when stderr is a
        /// terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// EVTX files, JSON-lines files, or directories holding them.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write a new ed25519 secret key to KEY (mode 0600) and its public key
    /// to KEY.pub. Never overwrites.
    Keygen {
        /// The secret key file.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Root metadata: the keys devices trust (docs/BUNDLES.md §4).
    #[command(subcommand)]
    Root(RootCommand),
    /// Signed rule bundles (docs/BUNDLES.md).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Staged rollouts of pushed bundles at the backend.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Send events to the backend's agent stream as an enrolled Windows or
    /// macOS agent (docs/AGENT-STREAM.md): EVTX files (records rendered to
    /// JSON as `hunt` does), JSON-lines files, folders of them, or `-` for
    /// JSON lines on stdin. Prints the alerts the backend raised on stdout
    /// (file, record id, rule) and refused lines and a summary on stderr.
    /// Exit code 0 when everything was sent (even if lines were refused),
    /// 1 when the stream could not run.
    Stream {
        /// Backend base URL (http:// or https://; the stream is ws:// or wss://).
        #[arg(long, env = "PICKET_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Trust anchors (PEM) for an https:// backend, e.g. the fleet CA's
        /// ca.pem (default: the webpki roots).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// File holding the agent secret (`picketctl agent enroll`).
        #[arg(long, value_name = "FILE")]
        agent_secret_file: PathBuf,
        /// How files are read: by content (auto), or all as evtx or jsonl.
        #[arg(long, default_value = "auto", value_parser = ["auto", "evtx", "jsonl"])]
        format: String,
        /// Lines per WebSocket message at most.
        #[arg(long, value_name = "N", default_value_t = 500)]
        batch_lines: usize,
        /// Print the alerts as JSON lines.
        #[arg(long)]
        jsonl: bool,
        /// EVTX or JSON-lines files, folders of them, or `-` (stdin).
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Windows/macOS agents.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Enroll an agent with a one-time enrollment token and write its
    /// secret to a new file (mode 0600).
    Enroll {
        /// Backend base URL (http:// or https://).
        #[arg(long, env = "PICKET_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Trust anchors (PEM) for an https:// backend, e.g. the fleet CA's
        /// ca.pem (default: the webpki roots).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// The enrollment token (`POST /api/v1/enrollment-tokens`).
        #[arg(long)]
        token: String,
        /// The agent's host name.
        #[arg(long)]
        hostname: String,
        /// `windows` or `macos`.
        #[arg(long, value_parser = ["windows", "macos"])]
        platform: String,
        /// The agent's version.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        agent_version: String,
        /// Where to write the secret (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn run_stream(config: &picket_cli::agent::StreamConfig, jsonl: bool) -> ExitCode {
    let report = match picket_cli::agent::stream(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("picketctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for a in &report.alerts {
        let line = if jsonl {
            serde_json::to_string(a).unwrap_or_default()
        } else {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                a.file, a.record_id, a.level, a.rule_id, a.rule_title
            )
        };
        if std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    for e in &report.errors {
        eprintln!(
            "picketctl stream: {} record {}: {}",
            e.file, e.record_id, e.error
        );
    }
    eprintln!(
        "picketctl stream: {} lines in {} messages, {} alerts, {} lines or records refused",
        report.lines,
        report.messages,
        report.alerts.len(),
        report.errors.len()
    );
    ExitCode::SUCCESS
}

/// Where the backend is (every remote command).
#[derive(Debug, Args)]
struct BackendArgs {
    /// Backend base URL.
    #[arg(long, env = "PICKET_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// File holding an API token (`picket-backend create-token`).
    #[arg(long, env = "PICKET_TOKEN_FILE", value_name = "FILE")]
    token_file: PathBuf,
    /// CA certificate (PEM) of an https:// backend (default: web PKI roots).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the backend's answer as JSON.
    #[arg(long)]
    json: bool,
}

impl BackendArgs {
    fn remote(&self) -> Result<bundles::Remote, BundleCmdError> {
        bundles::Remote::new(&self.url, &self.token_file, self.ca_file.clone())
    }
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// A rollout's stage, device states, failure rate and reason (default:
    /// the newest rollout).
    Status {
        /// Rollout id.
        id: Option<i64>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Stop assigning devices; resume or promote to go on.
    Pause {
        /// Rollout id.
        id: i64,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Go on after a pause.
    Resume {
        /// Rollout id.
        id: i64,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Assign the next stage now.
    Promote {
        /// Rollout id.
        id: i64,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Stop for good: devices that have not activated the bundle keep their
    /// previous one.
    Abort {
        /// Rollout id.
        id: i64,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Undo a rollout on every device: abort it if open, then push the
    /// rules of an earlier bundle again as a new version (devices refuse
    /// older versions) and roll that out to all targeted devices at once.
    Rollback {
        /// Rollout id.
        id: i64,
        /// The bundle version whose rules to restore (default: the newest
        /// older than the rollout's).
        #[arg(long, value_name = "V")]
        to: Option<u64>,
        /// Bundle secret key; repeat to reach the threshold.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// Days until the new bundle expires.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        expires_days: u64,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RootCommand {
    /// Write root metadata version 1, signed by every --key.
    Init {
        #[command(flatten)]
        root: RootArgs,
    },
    /// Add signatures (one per --key) to a root file.
    Sign {
        /// Root secret key; repeat for more.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// The root file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write it (may be the same file).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the next root version (current + 1), signed by every --key (new
    /// root keys) and every --old-key (current root keys).
    Rotate {
        /// The current root file.
        #[arg(long = "root", value_name = "FILE")]
        current: PathBuf,
        /// A current root secret key that signs the rotation; repeat for more.
        #[arg(long = "old-key", value_name = "KEY")]
        old_keys: Vec<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Check a root file, and rotations from it applied in order. Exit 1
    /// with the reason when one is refused.
    Verify {
        /// The trusted root file.
        #[arg(long = "root", value_name = "FILE")]
        root: PathBuf,
        /// A rotation to apply; repeat, in version order.
        #[arg(long = "update", value_name = "FILE")]
        updates: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct RootArgs {
    /// Root secret key: listed in the root, and signs it now; repeat for more.
    #[arg(long = "key", value_name = "KEY")]
    keys: Vec<PathBuf>,
    /// Root public key (KEY.pub) that signs later with `root sign`; repeat.
    #[arg(long = "root-pub", value_name = "KEY.pub")]
    root_pubs: Vec<PathBuf>,
    /// Root signatures a root needs (k of n).
    #[arg(long, value_name = "K")]
    threshold: u32,
    /// Bundle-signing public key (KEY.pub); repeat for more.
    #[arg(long = "bundle-key", value_name = "KEY.pub", required = true)]
    bundle_keys: Vec<PathBuf>,
    /// Bundle signatures a bundle needs.
    #[arg(long, value_name = "M")]
    bundle_threshold: u32,
    /// A revoked key id (32 hex digits); repeat for more.
    #[arg(long = "revoke", value_name = "KEYID")]
    revoked: Vec<KeyId>,
    /// Days until the root expires.
    #[arg(long, value_name = "DAYS")]
    expires_days: u64,
    /// The root file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl RootArgs {
    fn config(&self) -> bundles::RootConfig {
        bundles::RootConfig {
            keys: self.keys.clone(),
            root_pubs: self.root_pubs.clone(),
            threshold: self.threshold,
            bundle_keys: self.bundle_keys.clone(),
            bundle_threshold: self.bundle_threshold,
            revoked: self.revoked.clone(),
            expires_unix: bundles::now_unix().saturating_add(bundles::days(self.expires_days)),
            out: self.out.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Compile every rule under --rules with the engine and, only if all
    /// compile, write an unsigned bundle. Exit 1 naming each broken rule.
    Build {
        /// Rule directory (recursive) or file; repeat for more.
        #[arg(long = "rules", value_name = "DIR", required = true)]
        rules: Vec<PathBuf>,
        /// Bundle version (must exceed what devices run).
        #[arg(long, value_name = "V")]
        version: u64,
        /// Days until the bundle expires.
        #[arg(long, value_name = "DAYS")]
        expires_days: u64,
        /// `all`, `group:NAME` or `device:ID`; repeat for more (default all).
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<Target>,
        /// A value for an `expand` placeholder; repeat for more.
        #[arg(long = "placeholder", value_name = "NAME=VALUE", value_parser = hunt::parse_placeholder)]
        placeholders: Vec<(String, String)>,
        /// The bundle file to write (`*.pbundle`).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print how long reading, compiling and sealing took, and the sizes.
        #[arg(long)]
        timings: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a signature by each --key (multiple signers reach a threshold).
    Sign {
        /// Bundle secret key; repeat for more.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// The bundle file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write it (may be the same file).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Push a signed bundle to the backend (which checks it against the
    /// fleet root) and, unless --no-rollout, start a staged rollout of it.
    Push {
        /// The signed bundle file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Cumulative percentages of the targeted devices, ending at 100.
        #[arg(long, value_delimiter = ',', default_value = "100")]
        stages: Vec<u8>,
        /// Wait for `rollout promote` between stages.
        #[arg(long)]
        manual: bool,
        /// Failed devices (percent of finished) that stop the rollout...
        #[arg(long, default_value_t = 10.0)]
        max_failure_percent: f64,
        /// ...once at least this many devices finished.
        #[arg(long, default_value_t = 5)]
        min_finished: u32,
        /// Abort instead of pausing when a threshold is crossed.
        #[arg(long)]
        abort_on_threshold: bool,
        /// Only store the bundle.
        #[arg(long)]
        no_rollout: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Run a device's checks on a bundle; exit 1 with the specific reason
    /// when it would be refused.
    Verify {
        /// The trusted root file.
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// A root rotation to apply first; repeat, in version order.
        #[arg(long = "root-update", value_name = "FILE")]
        root_updates: Vec<PathBuf>,
        /// The bundle file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Check the targets for this device id (default: skip that check).
        #[arg(long, value_name = "ID")]
        device: Option<String>,
        /// A group of --device; repeat for more.
        #[arg(long = "group", value_name = "NAME", requires = "device")]
        groups: Vec<String>,
        /// The bundle version the device runs (rollback check).
        #[arg(long, value_name = "V")]
        running_version: Option<u64>,
        /// Check expiry at this Unix time instead of now.
        #[arg(long, value_name = "UNIX_SECS")]
        now: Option<u64>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a result as JSON or text; errors go to stderr (and, with
/// `--json`, as `{"ok": false, ...}` on stdout too).
fn finish<T: Serialize>(
    result: Result<T, BundleCmdError>,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> ExitCode {
    match result {
        Ok(report) => {
            if json {
                let mut value = serde_json::to_value(&report).unwrap_or_default();
                if let Some(map) = value.as_object_mut() {
                    map.insert("ok".into(), true.into());
                }
                println!("{value}");
            } else {
                println!("{}", text(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let value = serde_json::json!({
                    "ok": false,
                    "error": e.to_string(),
                    "refusal": e.refusal_kind(),
                });
                println!("{value}");
            }
            eprintln!("picketctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root_text(r: &bundles::RootReport) -> String {
    format!(
        "{}: root version {}, expires {}, root keys {}/{} {:?}, bundle keys {}/{} {:?}, \
         revoked {:?}, signed by {:?}",
        r.path.display(),
        r.version,
        r.expires_unix,
        r.root_threshold,
        r.root_keys.len(),
        r.root_keys,
        r.bundle_threshold,
        r.bundle_keys.len(),
        r.bundle_keys,
        r.revoked,
        r.signed_by
    )
}

fn run_root(command: RootCommand) -> ExitCode {
    match command {
        RootCommand::Init { root } => {
            finish(bundles::root_init(&root.config()), root.json, root_text)
        }
        RootCommand::Sign {
            keys,
            input,
            out,
            json,
        } => finish(bundles::root_sign(&keys, &input, &out), json, root_text),
        RootCommand::Rotate {
            current,
            old_keys,
            root,
        } => finish(
            bundles::root_rotate(&current, &old_keys, &root.config()),
            root.json,
            root_text,
        ),
        RootCommand::Verify {
            root,
            updates,
            json,
        } => finish(
            bundles::root_verify(&root, &updates, bundles::now_unix()),
            json,
            |r| format!("OK {}", root_text(r)),
        ),
    }
}

fn run_bundle(command: BundleCommand) -> ExitCode {
    match command {
        BundleCommand::Build {
            rules,
            version,
            expires_days,
            targets,
            placeholders,
            out,
            timings,
            json,
        } => {
            let config = bundles::BuildConfig {
                rules,
                version,
                created_unix: bundles::now_unix(),
                valid_secs: bundles::days(expires_days),
                targets: if targets.is_empty() {
                    vec![Target::All]
                } else {
                    targets
                },
                placeholders,
                out,
            };
            finish(bundles::build(&config), json, |r| {
                let mut text = format!(
                    "{}: bundle version {}, {} files, {} rules, {} bytes (unsigned), \
                     content hash {}, targets {}",
                    r.out.display(),
                    r.version,
                    r.files,
                    r.rules,
                    r.file_bytes,
                    r.content_hash,
                    r.targets.join(" ")
                );
                if timings {
                    text.push_str(&format!(
                        "\ntimings: read {:.1} ms, compile {:.1} ms, seal {:.1} ms; \
                         payload {} bytes",
                        r.read_ms, r.compile_ms, r.seal_ms, r.payload_bytes
                    ));
                }
                text
            })
        }
        BundleCommand::Sign {
            keys,
            input,
            out,
            json,
        } => finish(bundles::sign_bundle(&keys, &input, &out), json, |r| {
            format!(
                "{}: bundle version {}, signed by {}",
                r.out.display(),
                r.version,
                r.signed_by.join(" ")
            )
        }),
        BundleCommand::Push {
            file,
            stages,
            manual,
            max_failure_percent,
            min_finished,
            abort_on_threshold,
            no_rollout,
            backend,
        } => {
            let spec = (!no_rollout).then(|| {
                serde_json::json!({
                    "stages": stages,
                    "auto_promote": !manual,
                    "max_failure_percent": max_failure_percent,
                    "min_finished": min_finished,
                    "on_threshold": if abort_on_threshold { "abort" } else { "pause" },
                })
            });
            remote_finish(
                &backend,
                |r| r.push(&file, spec.as_ref()),
                |v| {
                    let b = &v["bundle"];
                    let mut out = format!(
                        "pushed bundle {} ({} bytes, {} rules, sha256 {})",
                        b["version"],
                        b["size"],
                        b["rules"].as_array().map_or(0, Vec::len),
                        b["sha256"].as_str().unwrap_or("?")
                    );
                    if v.get("rollout").is_some() {
                        out.push_str(&format!(
                            "; rollout {} started ({})",
                            v["rollout"]["id"],
                            v["rollout"]["state"].as_str().unwrap_or("?")
                        ));
                    }
                    out
                },
            )
        }
        BundleCommand::Verify {
            root,
            root_updates,
            input,
            device,
            groups,
            running_version,
            now,
            json,
        } => {
            let config = bundles::VerifyConfig {
                root,
                root_updates,
                input,
                device: device.map(|d| (d, groups)),
                running_version,
                now_unix: now.unwrap_or_else(bundles::now_unix),
            };
            finish(bundles::verify_bundle(&config), json, |r| {
                format!(
                    "OK {}: bundle version {}, {} files, targets {}, signed by {} \
                     (root version {})",
                    r.path.display(),
                    r.version,
                    r.files,
                    r.targets.join(" "),
                    r.signers.join(" "),
                    r.root_version
                )
            })
        }
    }
}

fn remote_finish(
    backend: &BackendArgs,
    call: impl FnOnce(&bundles::Remote) -> Result<serde_json::Value, BundleCmdError>,
    text: impl FnOnce(&serde_json::Value) -> String,
) -> ExitCode {
    finish(backend.remote().and_then(|r| call(&r)), backend.json, text)
}

fn run_rollout(command: RolloutCommand) -> ExitCode {
    let (backend, id, action) = match &command {
        RolloutCommand::Status { id, backend } => {
            return remote_finish(backend, |r| r.status(*id), bundles::progress_text)
        }
        RolloutCommand::Pause { id, backend } => (backend, *id, "pause"),
        RolloutCommand::Resume { id, backend } => (backend, *id, "resume"),
        RolloutCommand::Promote { id, backend } => (backend, *id, "promote"),
        RolloutCommand::Abort { id, backend } => (backend, *id, "abort"),
        RolloutCommand::Rollback {
            id,
            to,
            keys,
            expires_days,
            backend,
        } => {
            return remote_finish(
                backend,
                |r| {
                    let keys = bundles::read_secret_keys(keys)?;
                    r.rollback(*id, *to, &keys, bundles::days(*expires_days))
                },
                |v| {
                    format!(
                        "rolled back bundle {}: the rules of bundle {} are bundle {} now, \
                         rollout {} to every device",
                        v["rolled_back"],
                        v["content_of"],
                        v["bundle"]["version"],
                        v["rollout"]["id"]
                    )
                },
            )
        }
    };
    remote_finish(
        backend,
        |r| r.act(id, action),
        |v| {
            format!(
                "rollout {} of bundle {}: {} (stage {})",
                v["id"],
                v["version"],
                v["state"].as_str().unwrap_or("?"),
                v["status"]["stage"].as_u64().unwrap_or(0) + 1
            )
        },
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Hunt {
            rules,
            jsonl,
            threads,
            placeholders,
            product,
            no_progress,
            paths,
        } => {
            let config = HuntConfig {
                rules,
                paths,
                format: if jsonl {
                    Format::JsonLines
                } else {
                    Format::Csv
                },
                threads,
                placeholders,
                product,
                progress: !no_progress,
            };
            let stdout = std::io::stdout();
            // stderr stays unlocked: the progress bar draws on it from the
            // worker threads while the scan runs.
            match hunt::run(&config, &mut stdout.lock(), &mut std::io::stderr()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("picketctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen { out, json } => finish(bundles::keygen(&out), json, |r| {
            format!(
                "wrote {} and {} (key id {})",
                r.secret_key.display(),
                r.public_key.display(),
                r.key_id
            )
        }),
        Command::Root(command) => run_root(command),
        Command::Bundle(command) => run_bundle(command),
        Command::Rollout(command) => run_rollout(command),
        Command::Stream {
            url,
            ca_file,
            agent_secret_file,
            format,
            batch_lines,
            jsonl,
            paths,
        } => {
            let config = picket_cli::agent::StreamConfig {
                url,
                ca_file,
                secret_file: agent_secret_file,
                format: match format.as_str() {
                    "evtx" => picket_cli::agent::InputFormat::Evtx,
                    "jsonl" => picket_cli::agent::InputFormat::JsonLines,
                    _ => picket_cli::agent::InputFormat::Auto,
                },
                paths,
                batch_lines,
                batch_bytes: 2 << 20,
            };
            run_stream(&config, jsonl)
        }
        Command::Agent(AgentCommand::Enroll {
            url,
            ca_file,
            token,
            hostname,
            platform,
            agent_version,
            out,
        }) => match picket_cli::agent::enroll(
            &url,
            &token,
            &hostname,
            &platform,
            &agent_version,
            &out,
            ca_file.as_deref(),
        ) {
            Ok(e) => {
                println!(
                    "enrolled {} agent {}; secret in {}",
                    e.platform,
                    e.device_id,
                    e.secret_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("picketctl: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
