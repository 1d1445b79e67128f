//! `cargo xtask crash`: the kill -9 scenario of `pool-cli/tests/crash.rs`, many times.
//!
//! The scenario lives in that test; this command runs it with `POOL_CRASH_RUNS` set, shows
//! its output, and repeats its one-line summary at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::cargo::{Steps, cargo};

/// Runs when `--runs` is not given.
const DEFAULT_RUNS: u64 = 200;
/// The line the test prints after its runs.
const SUMMARY_PREFIX: &str = "crash summary:";

/// Options of `cargo xtask crash`.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    runs: u64,
    seed: Option<u64>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            runs: DEFAULT_RUNS,
            seed: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64> {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                value
                    .parse()
                    .with_context(|| format!("{name} {value}: not a number"))
            };
            match arg.as_str() {
                "--runs" => options.runs = number("--runs")?,
                "--seed" => options.seed = Some(number("--seed")?),
                other => bail!("unknown option `{other}` for `crash`"),
            }
        }
        if options.runs == 0 {
            bail!("--runs must be at least 1");
        }
        Ok(options)
    }
}

/// Runs the crash scenario `--runs` times (200 by default), from `--seed` if given.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let mut test = cargo([
        "test",
        "-p",
        "pool-cli",
        "--test",
        "crash",
        "--",
        "--nocapture",
    ]);
    test.env("POOL_CRASH_RUNS", options.runs.to_string());
    if let Some(seed) = options.seed {
        test.env("POOL_CRASH_SEED", seed.to_string());
    }
    let mut steps = Steps::default();
    let what = format!("{} kill -9 runs of pool-cli/tests/crash.rs", options.runs);
    let result = steps.timed("crash", &what, || run_and_summarise(&mut test));
    steps.print_summary();
    let summary = result?;
    eprintln!("\nxtask: {summary}");
    Ok(())
}

/// Runs the test, echoing its standard output; returns its summary line.
fn run_and_summarise(test: &mut std::process::Command) -> Result<String> {
    let mut child = test
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut summary = None;
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout().lock();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the test output")?;
            if let Some(found) = summary_in(&line) {
                summary = Some(found.to_owned());
            }
            writeln!(out, "{line}")?;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    match (status.success(), summary) {
        (true, Some(summary)) => Ok(summary),
        (false, Some(summary)) => bail!("the crash test failed: {summary}"),
        (_, None) => bail!("the crash test printed no summary (exit {status})"),
    }
}

/// The summary in a line of test output; libtest may print it after other text.
fn summary_in(line: &str) -> Option<&str> {
    line.find(SUMMARY_PREFIX).map(|at| &line[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_runs_and_seed() {
        let defaults = Options {
            runs: DEFAULT_RUNS,
            seed: None,
        };
        assert_eq!(parse(&[]).unwrap(), defaults);
        let options = parse(&["--runs", "5", "--seed", "42"]).unwrap();
        assert_eq!(
            options,
            Options {
                runs: 5,
                seed: Some(42)
            }
        );
        assert!(parse(&["--runs"]).is_err());
        assert!(parse(&["--runs", "many"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }

    #[test]
    fn finds_the_summary_line() {
        let line = "test kill_9 ... crash summary: runs 2 kills 2 violations 0";
        assert_eq!(
            summary_in(line),
            Some("crash summary: runs 2 kills 2 violations 0")
        );
        assert_eq!(summary_in("running 1 test"), None);
    }
}
