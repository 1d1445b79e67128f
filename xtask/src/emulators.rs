//! `cargo xtask emulators`: run Azurite and moto for tests started by hand.

use std::path::{Path, PathBuf};

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
    if let Some(path) = &options.env_file {
        remove_if_present(path)?;
    }
    let emulators = Emulators::start()?;
    let exports = emulators.export_lines();
    if let Some(path) = &options.env_file {
        write_whole(path, &exports)?;
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

/// Removes a variables file left by an earlier run, so a script waiting for the file
/// never reads stale ports.
fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to `path` through a rename, so readers see all of it or nothing.
fn write_whole(path: &Path, text: &str) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
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

    #[test]
    fn the_variables_file_is_replaced_whole() {
        let path = std::env::temp_dir().join(format!("xtask-env-{}", std::process::id()));
        write_whole(&path, "export A='1'\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "export A='1'\n");
        remove_if_present(&path).unwrap();
        assert!(!path.exists());
        remove_if_present(&path).unwrap();
    }
}
