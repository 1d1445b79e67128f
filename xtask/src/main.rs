//! Project automation, run as `cargo xtask <command>`.
//!
//! Each subcommand lives in its own module with a `run(args)` entry point; add a new one
//! by adding a module and one arm to the match in [`main`].

mod bench;
mod cargo;
mod crash;
mod emulator;
mod emulators;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test        fmt check, clippy, rustdoc, then every test of the workspace with the
              storage emulators (Azurite, moto) running
              options: --skip-lints     skip fmt, clippy and rustdoc
                       --no-emulators   do not start the emulators (their tests skip)
                       -- <args>        extra arguments for `cargo test`
  emulators   start Azurite and moto, print the `export` lines, and keep them running
              until Ctrl-C or until standard input closes
              options: --ignore-stdin   run until killed instead of until stdin closes
                       --env-file PATH  also write the export lines to PATH
  bench       cargo bench --workspace [-- <args>]
  crash       kill -9 `pool serve` at random moments, restart it, check that no project
              is held twice (the scenario of pool-cli/tests/crash.rs)
              options: --runs N   how many runs (default 200)
                       --seed N   the first run's seed (default random)
  help        print this text";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "test" => test::run(&rest),
        "emulators" => emulators::run(&rest),
        "bench" => bench::run(&rest),
        "crash" => crash::run(&rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
