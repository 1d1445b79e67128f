//! Running cargo as numbered steps, with headers, timings and a closing summary.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root: the parent of this crate's folder.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command run from the workspace root, using the cargo that runs xtask.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace_root());
    command
}

/// Test counts summed over every `test result:` line of a `cargo test` run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TestCounts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one libtest summary line such as
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    pub(crate) fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// The outcome of one step, kept for the summary.
struct StepRecord {
    name: String,
    elapsed: Duration,
    ok: bool,
}

/// Runs steps in order, printing a header before and a timing after each.
#[derive(Default)]
pub(crate) struct Steps {
    records: Vec<StepRecord>,
}

impl Steps {
    /// Runs `command` as the step `name`; fails when it exits unsuccessfully.
    pub(crate) fn run(&mut self, name: &str, command: &mut Command) -> Result<()> {
        self.timed(name, &describe(command), || {
            let status = command
                .status()
                .with_context(|| format!("could not start `{}`", describe(command)))?;
            if !status.success() {
                bail!(
                    "step `{name}` failed: `{}` exited with {status}",
                    describe(command)
                );
            }
            Ok(())
        })
    }

    /// Runs a `cargo test` command as the step `name`, echoing its standard output and
    /// summing the test counts it reports.
    pub(crate) fn run_tests(&mut self, name: &str, command: &mut Command) -> Result<TestCounts> {
        self.timed(name, &describe(command), || {
            let mut child = command
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("could not start `{}`", describe(command)))?;
            let mut counts = TestCounts::default();
            if let Some(stdout) = child.stdout.take() {
                let mut out = std::io::stdout().lock();
                for line in BufReader::new(stdout).lines() {
                    let line = line.context("reading the test output")?;
                    counts.add_line(&line);
                    writeln!(out, "{line}")?;
                }
            }
            let status = child.wait().context("waiting for cargo test")?;
            if !status.success() {
                bail!(
                    "step `{name}` failed: `{}` exited with {status}",
                    describe(command)
                );
            }
            Ok(counts)
        })
    }

    /// Runs `work` as the step `name`, with `what` shown in its header.
    pub(crate) fn timed<T>(
        &mut self,
        name: &str,
        what: &str,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        eprintln!(
            "\n==> xtask step {}: {name}: {what}",
            self.records.len() + 1
        );
        let started = Instant::now();
        let result = work();
        let elapsed = started.elapsed();
        let ok = result.is_ok();
        let verdict = if ok { "ok" } else { "FAILED" };
        eprintln!("<== {name}: {verdict} in {:.1}s", elapsed.as_secs_f64());
        self.records.push(StepRecord {
            name: name.to_owned(),
            elapsed,
            ok,
        });
        result
    }

    /// Prints one line per step that ran, with its verdict and duration.
    pub(crate) fn print_summary(&self) {
        eprintln!("\nxtask summary:");
        for record in &self.records {
            let verdict = if record.ok { "ok" } else { "FAILED" };
            eprintln!(
                "  {:<12} {:<6} {:>7.1}s",
                record.name,
                verdict,
                record.elapsed.as_secs_f64()
            );
        }
    }
}

/// The command line of `command`, with the environment it adds, for headers and errors.
fn describe(command: &Command) -> String {
    let mut parts: Vec<String> = command
        .get_envs()
        .filter(|(key, _)| !key.to_string_lossy().starts_with("POOL_TEST_"))
        .filter_map(|(key, value)| {
            let value = value?;
            Some(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ))
        })
        .collect();
    let program = Path::new(command.get_program());
    let program = program.file_name().unwrap_or(program.as_os_str());
    parts.push(program.to_string_lossy().into_owned());
    parts.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summary_lines() {
        let mut counts = TestCounts::default();
        counts.add_line(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.01s",
        );
        counts.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured");
        counts.add_line("running 5 tests");
        assert_eq!(
            counts,
            TestCounts {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn describes_a_command_with_its_added_environment() {
        let mut command = Command::new("/usr/bin/cargo");
        command
            .args(["doc", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        command.env("POOL_TEST_AZURE_KEY", "secret");
        assert_eq!(
            describe(&command),
            "RUSTDOCFLAGS=-D warnings cargo doc --no-deps"
        );
    }
}
