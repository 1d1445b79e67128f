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
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use supervised::Supervised;

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

        let logs = std::env::temp_dir().join(format!("pool-emulators-{}", run_id()));
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

/// Sixteen random hex digits, distinct for every call.
fn run_id() -> String {
    let seed = (std::process::id(), std::time::SystemTime::now());
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
}
