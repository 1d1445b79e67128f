//! `pool`: a warm project pool manager. See `pool --help`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pool_cli::admin::{self, ExportArgs, ImportArgs, StatusArgs};
use pool_cli::replay::{self, ReplayArgs};
use pool_cli::serve;
use pool_cli::settings::{self, ServeArgs};
use tracing_subscriber::EnvFilter;

/// Hands each new conversation a pre-provisioned project in microseconds, and keeps the
/// pool stored, warm and recovered.
#[derive(Parser, Debug)]
#[command(name = "pool", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info` or `pool_runtime=debug`; `pool serve` also reads it from
    /// its config file [default: info].
    #[arg(long, global = true, env = "POOL_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the pool over HTTP (JSON API, metrics, health).
    Serve(Box<ServeArgs>),
    /// Print counts per state and template of a stored pool.
    Status(StatusArgs),
    /// Write a stored pool as a JSON snapshot.
    Export(ExportArgs),
    /// Store a JSON snapshot into an empty store (a migration between backends).
    Import(ImportArgs),
    /// Replay an arrival trace against a simulated, real-time or running pool, and size it.
    Replay(Box<ReplayArgs>),
}

/// Parses the log filter `log`. One that names no directive (`""`, `","`) is refused
/// like any invalid one: parsed as is it turns every line off, errors included, without
/// a word, and an empty `POOL_LOG` would silently override the config file's filter.
/// `off` turns logging off.
fn log_filter(log: &str) -> anyhow::Result<EnvFilter> {
    let invalid = || format!("the log filter {log:?} is not valid");
    if log.split(',').all(|directive| directive.trim().is_empty()) {
        anyhow::bail!(
            "{}: it names nothing to log (`off` turns logging off)",
            invalid()
        );
    }
    EnvFilter::try_new(log).with_context(invalid)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let from_file = match (&cli.log, &cli.command) {
        (None, Command::Serve(args)) => match &args.config {
            Some(path) => settings::log_filter_in(path)?,
            None => None,
        },
        _ => None,
    };
    // A replay drives a whole pool: its per-save info lines would drown the report.
    let quiet = matches!(cli.command, Command::Replay(_));
    let log = cli
        .log
        .or(from_file)
        .unwrap_or_else(|| if quiet { "warn" } else { "info" }.to_owned());
    let filter = log_filter(&log)?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (standard error closed, a full pipe) is
        // dropped; reporting that on the same broken stream would panic the task that
        // logged, and with it the saver or the maintainer.
        .log_internal_errors(false)
        .init();
    if let Command::Replay(args) = cli.command {
        // The replay runs its own runtime (a paused clock for simulated time).
        return Ok(replay::run(*args)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Status(args) => admin::status(args).await,
            Command::Export(args) => admin::export(args).await,
            Command::Import(args) => admin::import(args).await,
            Command::Replay(_) => unreachable!("replay returned above"),
        }
    })
}
