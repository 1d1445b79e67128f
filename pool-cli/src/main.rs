//! `pool`: a warm project pool manager. See `pool --help`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pool_cli::admin::{self, ExportArgs, ImportArgs, StatusArgs};
use pool_cli::replay::{self, ReplayArgs};
use pool_cli::serve;
use pool_cli::settings::{ServeArgs, Settings};
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
    // `pool serve` resolves its settings before logging starts, since its config file
    // may set the log filter; the file is read once, as it may be a pipe.
    let serve_settings = match &cli.command {
        Command::Serve(args) => Some(Settings::resolve(args)?),
        _ => None,
    };
    let from_file = serve_settings.as_ref().and_then(|s| s.log.clone());
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
            Command::Serve(_) => match serve_settings {
                Some(settings) => serve::run(settings).await,
                None => unreachable!("serve's settings are resolved above"),
            },
            Command::Status(args) => admin::status(args).await,
            Command::Export(args) => admin::export(args).await,
            Command::Import(args) => admin::import(args).await,
            Command::Replay(_) => unreachable!("replay returned above"),
        }
    })
}
