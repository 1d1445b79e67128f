//! Azurite, the Azure Storage emulator, serving the Blob API.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::cache::{InstallLock, marker_matches};
use super::supervised::Supervised;

/// The Azurite release installed. Later 3.x releases declare Node.js 21 or 22 as their
/// minimum and this machine's Node.js is 20; `--skipApiVersionCheck` lets this release
/// accept the newer API version that current SDKs send.
const VERSION: &str = "3.35.0";

/// The storage account every Azurite instance serves.
const ACCOUNT: &str = "devstoreaccount1";

/// Azurite's fixed, publicly documented account key for [`ACCOUNT`].
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A path that any running Blob service answers (with an authorization error).
pub(crate) const READY_PATH: &str = "/devstoreaccount1?comp=list";

/// Installs Azurite into `<cache>/azurite` unless that exact version is already there;
/// returns the path of `azurite-blob`.
pub(crate) fn install(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("azurite");
    let bin = dir.join("node_modules").join(".bin").join("azurite-blob");
    let marker = dir.join(".pool-installed");
    let installed = || bin.exists() && marker_matches(&marker, VERSION);
    if installed() {
        return Ok(bin);
    }
    let _lock = InstallLock::acquire(cache, "azurite")?;
    if installed() {
        return Ok(bin);
    }
    eprintln!("xtask: installing azurite@{VERSION} into {}", dir.display());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .arg(format!("azurite@{VERSION}"))
        .status()
        .context("running npm (is Node.js with npm installed?)")?;
    if !status.success() || !bin.exists() {
        bail!("npm install azurite@{VERSION} failed ({status})");
    }
    std::fs::write(&marker, VERSION).with_context(|| format!("writing {}", marker.display()))?;
    Ok(bin)
}

/// Starts the Blob service on 127.0.0.1:`port`, keeping everything in memory (Azurite
/// refuses `--location` together with `--inMemoryPersistence`, so it runs in `logs`).
pub(crate) fn spawn(bin: &Path, port: u16, logs: &Path) -> Result<Supervised> {
    let args = [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    .map(str::to_owned);
    Supervised::spawn("azurite", bin, &args, logs, logs.join("azurite.log"))
}

/// The variables that tell the tests where Azurite is, with a container for this run.
pub(crate) fn env(port: u16, container: &str) -> Vec<(String, String)> {
    [
        (
            "POOL_TEST_AZURE_ENDPOINT",
            format!("http://127.0.0.1:{port}/{ACCOUNT}"),
        ),
        ("POOL_TEST_AZURE_ACCOUNT", ACCOUNT.to_owned()),
        ("POOL_TEST_AZURE_KEY", ACCOUNT_KEY.to_owned()),
        ("POOL_TEST_AZURE_CONTAINER", container.to_owned()),
    ]
    .map(|(key, value)| (key.to_owned(), value))
    .to_vec()
}
