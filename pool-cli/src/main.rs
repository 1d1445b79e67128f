//! `pool`: a warm project pool manager. See `pool --help`.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use pool_cli::admin::{self, ExportArgs, ImportArgs, StatusArgs};
use pool_cli::serve;
use pool_cli::settings::ServeArgs;
use tracing_subscriber::EnvFilter;

/// Hands each new conversation a pre-provisioned project in microseconds, and keeps the
/// pool stored, warm and recovered.
#[derive(Parser, Debug)]
#[command(name = "pool", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info` or `pool_runtime=debug` [env: POOL_LOG].
    #[arg(long, global = true, env = "POOL_LOG", default_value = "info")]
    log: String,
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Status(args) => admin::status(args).await,
            Command::Export(args) => admin::export(args).await,
            Command::Import(args) => admin::import(args).await,
        }
    })
}
