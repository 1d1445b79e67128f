//! The storage emulators the backend tests run against: Azurite and the moto S3 server.
//!
//! [`Emulators::start`] installs both into the cache folder when needed, starts them on
//! free ports of 127.0.0.1, waits until each answers HTTP, and names a container and a
//! bucket unique to this run. Dropping the value stops both; see [`supervised`] for how
//! they are stopped even when xtask itself is killed.

mod azurite;
mod cache;
mod moto;
mod probe;
mod supervised;

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use supervised::Supervised;

/// Log folders are named `<prefix><pid>-<run id>` in the temporary folder.
const LOG_DIR_PREFIX: &str = "pool-emulators-";

/// How long an emulator may take from start to its first HTTP answer.
const START_LIMIT: Duration = Duration::from_secs(90);

/// Both emulators, running; dropping this stops them and removes their logs.
pub(crate) struct Emulators {
    processes: Vec<Supervised>,
    env: Vec<(String, String)>,
    logs: PathBuf,
}

impl Emulators {
    /// Installs (if needed) and starts both emulators, returning once both answer.
    pub(crate) fn start() -> Result<Self> {
        let cache = cache::cache_dir()?;
        let started = Instant::now();
        let azurite_bin = azurite::install(&cache)?;
        let moto_bin = moto::install(&cache)?;
        eprintln!(
            "xtask: emulators installed in {} ({:.1}s)",
            cache.display(),
            started.elapsed().as_secs_f64()
        );

        remove_stale_log_dirs(&std::env::temp_dir());
        let logs =
            std::env::temp_dir().join(format!("{LOG_DIR_PREFIX}{}-{}", process::id(), run_id()));
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let mut emulators = Self {
            processes: Vec::new(),
            env: Vec::new(),
            logs,
        };
        let ports = probe::free_ports(2)?;
        let (azurite_port, moto_port) = (ports[0], ports[1]);

        let started = Instant::now();
        emulators
            .processes
            .push(azurite::spawn(&azurite_bin, azurite_port, &emulators.logs)?);
        emulators
            .processes
            .push(moto::spawn(&moto_bin, moto_port, &emulators.logs)?);
        let targets = [
            (azurite_port, azurite::READY_PATH),
            (moto_port, moto::READY_PATH),
        ];
        for (process, (port, path)) in emulators.processes.iter_mut().zip(targets) {
            let status = probe::wait_ready(process, port, path, START_LIMIT)?;
            eprintln!(
                "xtask: {} answers on 127.0.0.1:{port} (HTTP {status}) after {:.1}s",
                process.name(),
                started.elapsed().as_secs_f64()
            );
        }

        let name = format!("pooltest-{}", run_id());
        emulators.env.extend(azurite::env(azurite_port, &name));
        emulators.env.extend(moto::env(moto_port, &name));
        Ok(emulators)
    }

    /// The `POOL_TEST_*` variables the emulator tests read.
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The variables as shell `export` lines.
    pub(crate) fn export_lines(&self) -> String {
        self.env
            .iter()
            .map(|(key, value)| format!("export {key}='{value}'\n"))
            .collect()
    }

    /// The folder holding the emulators' logs while they run.
    pub(crate) fn log_dir(&self) -> &PathBuf {
        &self.logs
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        self.processes.clear();
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// Removes the log folders of xtask runs that were killed before they could clean up
/// (their process no longer exists).
fn remove_stale_log_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(LOG_DIR_PREFIX)
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        let alive = Path::new("/proc").join(owner.0).exists();
        if owner.0.parse::<u32>().is_ok() && !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Sixteen random hex digits, distinct for every call.
fn run_id() -> String {
    let seed = (process::id(), std::time::SystemTime::now());
    format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new().hash_one(seed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_valid_bucket_and_container_suffixes() {
        let first = run_id();
        assert_eq!(first.len(), 16);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(first, run_id());
        assert!(format!("pooltest-{first}").len() <= 63);
    }

    #[test]
    fn only_log_folders_of_dead_runs_are_removed() {
        let temp = std::env::temp_dir().join(format!("xtask-stale-{}", process::id()));
        let dead = temp.join(format!("{LOG_DIR_PREFIX}999999999-abc"));
        let alive = temp.join(format!("{LOG_DIR_PREFIX}{}-abc", process::id()));
        let other = temp.join("pool-emulators-notapid");
        for dir in [&dead, &alive, &other] {
            std::fs::create_dir_all(dir).unwrap();
        }
        remove_stale_log_dirs(&temp);
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(other.exists());
        std::fs::remove_dir_all(temp).unwrap();
    }
}
