//! `cargo xtask test`: lints, docs, then every test with the emulators running.

use anyhow::{Result, bail};

use crate::cargo::{Steps, cargo};
use crate::emulator::Emulators;

/// Options of `cargo xtask test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    skip_lints: bool,
    no_emulators: bool,
    test_args: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--skip-lints" => options.skip_lints = true,
                "--no-emulators" => options.no_emulators = true,
                "--" => options.test_args.extend(args.by_ref().cloned()),
                other => bail!("unknown option `{other}` for `test`"),
            }
        }
        Ok(options)
    }
}

/// Runs the whole check; the tests are built before the emulators start, and the
/// emulators are stopped whether or not a step fails.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let mut steps = Steps::default();
    let result = run_steps(&options, &mut steps);
    steps.print_summary();
    result
}

fn run_steps(options: &Options, steps: &mut Steps) -> Result<()> {
    if !options.skip_lints {
        steps.run("fmt", &mut cargo(["fmt", "--all", "--", "--check"]))?;
        let clippy = ["clippy", "--workspace", "--all-targets", "--all-features"];
        steps.run("clippy", cargo(clippy).args(["--", "-D", "warnings"]))?;
        let doc = ["doc", "--workspace", "--no-deps", "--all-features"];
        steps.run("doc", cargo(doc).env("RUSTDOCFLAGS", "-D warnings"))?;
    }
    let cargo_args = options.test_args.iter().take_while(|arg| *arg != "--");
    let build = ["test", "--workspace", "--all-features", "--no-run"];
    steps.run("build", cargo(build).args(cargo_args))?;
    let emulators = if options.no_emulators {
        eprintln!("\nxtask: --no-emulators: tests that need Azurite or moto will skip");
        None
    } else {
        Some(steps.timed(
            "emulators",
            "install if needed, start, wait",
            Emulators::start,
        )?)
    };
    // Every crate's tests run even when one fails, so one failure hides nothing.
    let mut test = cargo(["test", "--workspace", "--all-features", "--no-fail-fast"]);
    test.args(&options.test_args);
    if let Some(emulators) = &emulators {
        test.envs(emulators.env().iter().map(|(key, value)| (key, value)));
    }
    let counts = steps.run_tests("test", &mut test)?;
    drop(emulators);
    eprintln!(
        "\nxtask: tests: {} passed, {} failed, {} ignored",
        counts.passed, counts.failed, counts.ignored
    );
    if counts.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_flags_and_passes_the_rest_to_cargo_test() {
        let options = parse(&["--no-emulators", "--skip-lints", "--", "-p", "pool-core"]).unwrap();
        assert_eq!(
            options,
            Options {
                skip_lints: true,
                no_emulators: true,
                test_args: vec!["-p".to_owned(), "pool-core".to_owned()],
            }
        );
        assert_eq!(parse(&[]).unwrap(), Options::default());
        assert!(parse(&["--fast"]).is_err());
    }
}
