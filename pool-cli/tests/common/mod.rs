//! Helpers shared by the tests that run the `pool` binary: a `pool serve` process on a
//! free loopback port with its own store, a small HTTP/1.1 client, and polling.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helpers"
)]

pub(crate) mod client;
pub(crate) mod scripts;
pub(crate) mod server;

use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Some`, or panics with `what` after `limit`.
pub(crate) fn poll<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The `pool` binary built for these tests.
pub(crate) fn pool_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pool"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POOL_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_BACKTRACE", "0");
    command
}

/// Runs `pool ARGS` to completion, killing it if it takes more than a minute.
pub(crate) fn run_pool(args: &[&str]) -> std::process::Output {
    run_pool_with_env(args, &[])
}

/// Like [`run_pool`], with extra environment variables.
pub(crate) fn run_pool_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let child = pool_command()
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pool");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("pool output"),
        Err(_) => {
            server::signal(pid, "KILL");
            panic!("pool {args:?} did not finish within a minute");
        }
    }
}

/// The pool stored at `store`, read with `pool export`.
pub(crate) fn export(store: &str) -> pool_core::PoolSnapshot {
    let out = run_pool(&["export", "--store", store]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pool export --store {store}: {stderr}"
    );
    pool_core::PoolSnapshot::from_json(&out.stdout).expect("pool export writes a snapshot")
}

/// Who holds each project of `snapshot`: project id to (conversation, token), as text.
pub(crate) fn holders(
    snapshot: &pool_core::PoolSnapshot,
) -> std::collections::BTreeMap<String, (String, String)> {
    snapshot
        .projects
        .iter()
        .filter_map(|r| {
            let (conversation, token) = r.state.holder()?;
            Some((
                r.id.to_string(),
                (conversation.to_string(), token.to_string()),
            ))
        })
        .collect()
}
