//! `picketctl`: see the `picket_cli` crate docs and `fleet/cli/README.md`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use picket_cli::hunt::{self, Format, HuntConfig};

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
    }
}
