//! `cargo xtask emulators`: run Azurite and moto for tests started by hand.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::emulator::Emulators;

/// Options of `cargo xtask emulators`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    ignore_stdin: bool,
    env_file: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--ignore-stdin" => options.ignore_stdin = true,
                "--env-file" => {
                    let path = args.next().context("--env-file needs a path")?;
                    options.env_file = Some(PathBuf::from(path));
                }
                other => bail!("unknown option `{other}` for `emulators`"),
            }
        }
        Ok(options)
    }
}

/// Starts both emulators, prints their variables, and waits; stopping xtask in any way
/// (Ctrl-C, closing standard input, `kill`) stops the emulators too.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let emulators = Emulators::start()?;
    let exports = emulators.export_lines();
    if let Some(path) = &options.env_file {
        std::fs::write(path, &exports).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote the variables to {}", path.display());
    }
    eprintln!("xtask: logs in {}", emulators.log_dir().display());
    print!("{exports}");
    if options.ignore_stdin {
        eprintln!("xtask: emulators running; stop them with Ctrl-C or by killing this process");
        loop {
            std::thread::park();
        }
    }
    eprintln!("xtask: emulators running; stop them with Ctrl-C or by closing standard input");
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
        .context("reading standard input")?;
    eprintln!("xtask: standard input closed; stopping (use --ignore-stdin to run until killed)");
    drop(emulators);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_options() {
        let args = ["--ignore-stdin", "--env-file", "/tmp/e"].map(str::to_owned);
        let options = Options::parse(&args).unwrap();
        assert!(options.ignore_stdin);
        assert_eq!(options.env_file, Some(PathBuf::from("/tmp/e")));
        assert!(Options::parse(&["--env-file".to_owned()]).is_err());
    }
}
