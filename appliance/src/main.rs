//! picketd: parses the command line, loads the config, sets up logging and
//! hands over to [`picket_appliance::runtime::run`].

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use picket_appliance::config::{Config, LogFormat, DEFAULT_CONFIG};
use picket_appliance::runtime::{self, RunOptions, Source};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "picketd",
    version,
    about = "Picket's eBPF sensor for Linux gateways"
)]
struct Cli {
    /// Configuration file (TOML). Without it the built-in default is used.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Sigma rule directory, replacing `detection.rules_dirs` (repeatable).
    #[arg(long, global = true)]
    rules: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the live system (needs root); the default.
    Run,
    /// Print the default configuration.
    GenerateConfig,
    /// Validate a configuration file and exit.
    CheckConfig,
    /// Watch the live system and write every normalized event to FILE as JSON lines.
    Record {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Feed a recording through detection (no root, no eBPF).
    Replay {
        /// A file written by `picketd record`.
        file: PathBuf,
        /// Also forward the alerts to the fleet ([uplink] must be enabled),
        /// and wait until the spool has sent them before exiting.
        #[arg(long)]
        forward: bool,
    },
    /// Join the fleet: exchange a one-time token for a device certificate,
    /// written where [uplink] expects it.
    Enroll {
        /// The backend's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// The one-time enrollment token an operator created.
        #[arg(
            long,
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// Read the token from this file instead (keeps it out of the
        /// process list; first-boot enrollment uses it).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The fleet CA, to verify an https:// backend.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Host name for the fleet inventory (default: this host's).
        #[arg(long)]
        hostname: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("picketd: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<std::process::ExitCode> {
    picket_appliance::telemetry::limit_malloc_arenas();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::GenerateConfig = command {
        print!("{DEFAULT_CONFIG}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default_config(),
    };
    if let Command::CheckConfig = command {
        println!(
            "{}: ok",
            cli.config
                .as_ref()
                .map_or("built-in default".into(), |p| p.display().to_string())
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Enroll {
        url,
        token,
        token_file,
        ca_file,
        hostname,
    } = &command
    {
        let token = match (token, token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_owned(),
            (None, None) => anyhow::bail!("give --token or --token-file"),
        };
        let Some(settings) = &config.uplink else {
            anyhow::bail!(
                "enrollment writes the files [uplink] names: set [uplink] enabled = true (with broker, ca_file, cert_file, key_file, identity_file) first"
            );
        };
        let hostname = hostname.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into())
        });
        let done = picket_appliance::enroll::enroll(
            settings,
            &picket_appliance::enroll::EnrollOptions {
                url: url.clone(),
                token,
                ca_file: ca_file.clone(),
                hostname,
            },
        )?;
        println!("enrolled as device {}", done.device_id);
        for f in &done.files {
            println!("wrote {}", f.display());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if !cli.rules.is_empty() {
        config.rules_dirs.clone_from(&cli.rules);
    }
    init_logging(&config);
    let forward = matches!(command, Command::Replay { forward: true, .. });
    let (source, record) = match command {
        Command::Record { out } => (Source::Live, Some(out)),
        Command::Replay { file, .. } => (Source::Replay(file), None),
        _ => (Source::Live, None),
    };
    let opts = RunOptions {
        source,
        record,
        config_path: cli.config.clone(),
        forward_replay: forward,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
            // a shutdown that hangs must not keep probes attached forever
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(20));
                eprintln!("picketd: shutdown did not finish in 20 s; exiting");
                std::process::exit(3);
            });
        });
        runtime::run(config, opts, rx).await
    })?;
    tracing::info!(
        events = report.events,
        alerts = report.alerts,
        invalid_lines = report.invalid_lines,
        "done"
    );
    Ok(if report.invalid_lines > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}
