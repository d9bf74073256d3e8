//! `picket-backend`: parses the command line, loads the configuration,
//! starts logging and calls the library (see `picket_backend::run`).

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use picket_backend::config::{Config, LogFormat, MqttConfig, DEFAULT_CONFIG};

#[derive(Debug, Parser)]
#[command(name = "picket-backend", version, about = "Picket fleet backend")]
struct Cli {
    /// Configuration file (TOML); without it the embedded default is used.
    #[arg(long, short, global = true, env = "PICKET_BACKEND_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the backend (the default).
    Run,
    /// Prints the default configuration.
    GenerateConfig,
    /// Creates an admin user; the password comes from PICKET_ADMIN_PASSWORD
    /// or standard input.
    CreateAdmin {
        /// User name.
        #[arg(long)]
        name: String,
    },
    /// Creates a one-time enrollment token and prints it.
    CreateToken {
        /// Operator's label for the token.
        #[arg(long)]
        label: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Writes CA, server certificate, key and CRL for an external broker
    /// (Mosquitto: cafile, certfile, keyfile, crlfile).
    ExportBrokerFiles {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Broker host names (default: the config's embedded hostnames, or
        /// the external host).
        #[arg(long)]
        hostname: Vec<String>,
    },
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rumqttd logs every accepted connection at info.
    let filter = filter.add_directive(
        "rumqttd=warn"
            .parse()
            .unwrap_or_else(|_| tracing_subscriber::filter::Directive::from(tracing::Level::WARN)),
    );
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal(tx: tokio::sync::watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    let _ = tx.send(true);
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("PICKET_ADMIN_PASSWORD") {
        return Ok(p);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

fn random_token() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::GenerateConfig => {
            print!("{DEFAULT_CONFIG}");
        }
        Command::Run => {
            init_logging(&config);
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(shutdown_signal(tx));
            picket_backend::run(config, rx).await?;
        }
        Command::CreateAdmin { name } => {
            std::fs::create_dir_all(&config.data_dir)?;
            let store = picket_backend::open_store(&config).await?;
            let password = read_password()?;
            let user = picket_api::create_user(
                store.as_ref(),
                &name,
                &password,
                picket_store::model::Role::Admin,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created admin user {}", user.name);
        }
        Command::CreateToken { label, ttl_secs } => {
            std::fs::create_dir_all(&config.data_dir)?;
            let store = picket_backend::open_store(&config).await?;
            let token = random_token()?;
            let now = picket_backend::ingest::now_ms();
            let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            store
                .create_token(
                    &picket_store::token_hash(&token),
                    &label,
                    "cli",
                    now,
                    now.saturating_add(ttl_ms),
                )
                .await?;
            println!("{token}");
        }
        Command::ExportBrokerFiles { out, hostname } => {
            std::fs::create_dir_all(&config.data_dir)?;
            let store = picket_backend::open_store(&config).await?;
            let ca = picket_backend::pki::FleetCa::load_or_create(&config.data_dir)?;
            let revocations =
                picket_backend::pki::Revocations::from_devices(&store.devices().await?);
            let hostnames = if hostname.is_empty() {
                match &config.mqtt {
                    MqttConfig::Embedded(m) => m.hostnames.clone(),
                    MqttConfig::External(x) => vec![x.host.clone()],
                }
            } else {
                hostname
            };
            ca.export_broker_files(&out, &hostnames, &revocations)?;
            println!(
                "wrote ca.pem, server.pem, server.key, crl.pem to {}\n\
                 mosquitto: cafile/certfile/keyfile/crlfile, require_certificate true, \
                 tls_version tlsv1.3",
                out.display()
            );
        }
    }
    Ok(())
}
