//! Starting manager processes, collecting what they report, killing one, and reading
//! what they stored.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pool_core::Pool;
use pool_storage::PoolStore;
use serde_json::Value;

use crate::common;
use crate::manager::Plan;

/// Set in a manager process's environment.
pub(crate) const MANAGER: &str = "POOL_S3_MANAGER_PROCESS";

/// What a manager process printed.
pub(crate) struct Report {
    pub(crate) owner: String,
    /// Acknowledged hand-outs: (conversation, project).
    pub(crate) handouts: Vec<(String, String)>,
    /// Closing figures; `Null` for a killed process.
    pub(crate) stats: Value,
}

impl Report {
    pub(crate) fn stat(&self, path: &[&str]) -> u64 {
        let value = path.iter().fold(&self.stats, |v, k| &v[*k]);
        value
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no {path:?} in {}", self.owner, self.stats))
    }
}

/// A manager process and the lines it printed.
pub(crate) struct Running {
    owner: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts this test binary as a manager process following `plan`.
    pub(crate) fn start(plan: &Plan) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .env(MANAGER, "1")
            .envs(plan.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("manager process starts");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            owner: plan.owner.clone(),
            child,
            lines,
        }
    }

    /// Waits for the process to end by itself.
    pub(crate) fn finish(mut self) -> Report {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{} exited with {status}", self.owner);
        report(&self.owner, self.lines.iter())
    }

    /// Sends SIGKILL once the process has acknowledged `n` hand-outs.
    pub(crate) fn kill_after(mut self, n: usize) -> Report {
        let mut lines = Vec::new();
        while lines
            .iter()
            .filter(|l: &&String| l.starts_with("HANDOUT "))
            .count()
            < n
        {
            let line = self.lines.recv_timeout(Duration::from_secs(120));
            lines.push(line.unwrap_or_else(|_| panic!("{} stalled after {lines:?}", self.owner)));
        }
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        lines.extend(self.lines.iter());
        report(&self.owner, lines.into_iter())
    }
}

fn report(owner: &str, lines: impl Iterator<Item = String>) -> Report {
    let mut report = Report {
        owner: owner.to_owned(),
        handouts: Vec::new(),
        stats: Value::Null,
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix("HANDOUT ") {
            let (conversation, project) = rest.split_once(' ').expect("two fields");
            report
                .handouts
                .push((conversation.to_owned(), project.to_owned()));
        } else if let Some(stats) = line.strip_prefix("STATS ") {
            report.stats = serde_json::from_str(stats).expect("json figures");
        }
    }
    report
}

/// The pool stored under `prefix`, checked for consistency.
pub(crate) fn stored_pool(emulator: &common::Emulator, prefix: &str) -> Pool {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let snapshot = runtime.block_on(async {
        let store = emulator.store_at(prefix).await;
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
