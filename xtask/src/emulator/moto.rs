//! The moto server, a local S3 emulator, in its own Python virtual environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cache::{InstallLock, marker_matches};
use super::supervised::Supervised;

/// What pip installs: the S3 part of moto 5 and the web framework its server needs.
const PACKAGES: [&str; 3] = ["moto[s3]>=5,<6", "flask", "flask-cors"];

/// A path the server answers once it is up (the bucket list).
pub(crate) const READY_PATH: &str = "/";

/// Installs moto into the virtual environment `<cache>/moto-venv` unless it is complete
/// there; returns the path of `moto_server`.
pub(crate) fn install(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("moto-venv");
    let bin = venv.join("bin").join("moto_server");
    let marker = venv.join(".pool-installed");
    let wanted = PACKAGES.join(" ");
    let installed = || bin.exists() && marker_matches(&marker, &wanted);
    if installed() {
        return Ok(bin);
    }
    let _lock = InstallLock::acquire(cache, "moto")?;
    if installed() {
        return Ok(bin);
    }
    eprintln!("xtask: installing {wanted} into {}", venv.display());
    let pip = venv.join("bin").join("pip");
    if !pip.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    let mut install = Command::new(&pip);
    install
        .args(["install", "--disable-pip-version-check", "--quiet"])
        .args(PACKAGES);
    run(&mut install, "pip install moto")?;
    if !bin.exists() {
        bail!("pip installed moto but {} is missing", bin.display());
    }
    std::fs::write(&marker, &wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(bin)
}

/// Runs an installation command, failing with `what` in the message.
fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// A launcher that runs moto's server with one request at a time inside moto, so that a
/// conditional PUT checks its precondition and stores the object in one step, as S3
/// does. `moto_server` alone lets two concurrent create-only PUTs of one key both win.
const SERIALIZED_LAUNCHER: &str = include_str!("moto_serialized.py");

/// Starts the server on 127.0.0.1:`port`, through the launcher, with the Python of the
/// virtual environment that holds `moto_server` (`bin`).
pub(crate) fn spawn(bin: &Path, port: u16, logs: &Path) -> Result<Supervised> {
    let launcher = logs.join("moto_serialized.py");
    std::fs::write(&launcher, SERIALIZED_LAUNCHER)
        .with_context(|| format!("writing {}", launcher.display()))?;
    let python = bin.with_file_name("python3");
    let args = [
        &launcher.to_string_lossy(),
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]
    .map(|arg| arg.to_string());
    Supervised::spawn("moto", &python, &args, logs, logs.join("moto.log"))
}

/// The variables that tell the tests where moto is, with a bucket for this run.
pub(crate) fn env(port: u16, bucket: &str) -> Vec<(String, String)> {
    [
        ("POOL_TEST_S3_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("POOL_TEST_S3_REGION", "us-east-1".to_owned()),
        ("POOL_TEST_S3_ACCESS_KEY", "testing".to_owned()),
        ("POOL_TEST_S3_SECRET_KEY", "testing".to_owned()),
        ("POOL_TEST_S3_BUCKET", bucket.to_owned()),
    ]
    .map(|(key, value)| (key.to_owned(), value))
    .to_vec()
}
