//! Starting manager processes, reading their reports, killing them, and reading what they
//! stored.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pool_core::{Pool, ProjectId, TemplateName, Timestamp};
use pool_storage::{PoolStore, PoolWrite, Precondition};
use serde_json::Value;

use crate::child::{Spec, wall_ms};
use crate::common;

/// The variable that makes the test binary a manager process.
pub(crate) const CHILD: &str = "POOL_AZURE_CHILD";

/// What a manager process reported.
pub(crate) struct Report {
    pub(crate) owner: String,
    /// Acknowledged hand-outs: (conversation, project).
    pub(crate) handouts: Vec<(String, String)>,
    /// Its closing statistics (empty when it was killed).
    pub(crate) stats: Value,
}

impl Report {
    /// A numeric statistic.
    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no {name} in {}", self.owner, self.stats))
    }
}

/// A running manager process and the lines it has printed so far.
pub(crate) struct Running {
    owner: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts the test binary as a manager process for `spec`.
    pub(crate) fn start(spec: &Spec) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .env(CHILD, "1")
            .envs(spec.to_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("manager process starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let owner = spec.owner.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{owner}] {line}");
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            owner: spec.owner.clone(),
            child,
            lines,
        }
    }

    /// Waits for the process to finish on its own and returns its report.
    pub(crate) fn wait(mut self) -> Report {
        let status = self.child.wait().expect("wait for manager process");
        assert!(status.success(), "{} exited with {status}", self.owner);
        let lines: Vec<String> = self.lines.iter().collect();
        report(&self.owner, lines.into_iter())
    }

    /// Kills the process with SIGKILL once it has acknowledged `n` hand-outs; returns
    /// what it acknowledged until then.
    pub(crate) fn kill_after_handouts(mut self, n: usize) -> Report {
        let mut seen = Vec::new();
        while seen
            .iter()
            .filter(|l: &&String| l.starts_with("ALLOC "))
            .count()
            < n
        {
            let line = self.lines.recv_timeout(Duration::from_secs(120));
            seen.push(line.unwrap_or_else(|_| panic!("{} stalled: {seen:?}", self.owner)));
        }
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        seen.extend(self.lines.iter());
        report(&self.owner, seen.into_iter())
    }
}

impl Drop for Running {
    /// A scenario that fails leaves no manager process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn report(owner: &str, lines: impl Iterator<Item = String>) -> Report {
    let mut r = Report {
        owner: owner.to_owned(),
        handouts: Vec::new(),
        stats: Value::Null,
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix("ALLOC ") {
            let (conv, project) = rest.split_once(' ').expect("ALLOC conversation project");
            r.handouts.push((conv.to_owned(), project.to_owned()));
        } else if let Some(json) = line.strip_prefix("STATS ") {
            r.stats = serde_json::from_str(json).expect("STATS json");
        }
    }
    r
}

/// Stores a pool of `n` ready projects under `prefix`.
pub(crate) fn stock_pool(azurite: &common::Azurite, prefix: &str, n: usize) {
    let mut pool = Pool::new();
    let template = TemplateName::new("default").expect("valid");
    let now = Timestamp::from_millis(wall_ms());
    for i in 0..n {
        let id = ProjectId::new(format!("stock-{i}-s")).expect("valid");
        pool.add_available(id, template.clone(), now)
            .expect("new id");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = azurite.store(prefix).await;
        let write = PoolWrite::Full(pool.snapshot());
        store
            .save(&write, &Precondition::CreateOnly)
            .await
            .expect("stocked pool");
    });
}

/// The pool stored under `prefix`, checked for consistency.
pub(crate) fn stored_pool(azurite: &common::Azurite, prefix: &str) -> Pool {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let snapshot = rt.block_on(async {
        let store = azurite.store(prefix).await;
        store
            .load()
            .await
            .expect("load")
            .expect("a stored pool")
            .value
    });
    let pool = Pool::from_snapshot(snapshot).expect("a consistent pool");
    pool.check_invariants().expect("pool invariants");
    pool
}

/// Round trips, throughput and conflicts of a shared run.
pub(crate) fn print_figures(reports: &[&Report]) {
    let sum = |name: &str| reports.iter().map(|r| r.stat(name)).sum::<u64>();
    let metric = |name: &str| {
        reports
            .iter()
            .map(|r| r.stats["metrics"][name].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let allocations: u64 = reports.iter().map(|r| r.handouts.len() as u64).sum();
    let slowest_ms = reports
        .iter()
        .map(|r| r.stat("allocating_ms"))
        .max()
        .unwrap_or(1)
        .max(1);
    let requests = sum("requests");
    let saves = metric("saves");
    println!(
        "  allocations {allocations} in {slowest_ms} ms: {:.0}/s across both managers",
        allocations as f64 * 1000.0 / slowest_ms as f64
    );
    println!(
        "  HTTP requests {requests}: {:.3} per allocation, {:.2} per stored save ({saves} saves)",
        requests as f64 / allocations as f64,
        requests as f64 / saves.max(1) as f64
    );
    println!(
        "  conflicts {} ({:.1} per 1,000 allocations)",
        metric("conflicts"),
        metric("conflicts") as f64 * 1000.0 / allocations as f64
    );
}
