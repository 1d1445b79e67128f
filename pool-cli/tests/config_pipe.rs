//! `pool serve --config` reads its file once: a config given through a pipe
//! (`--config <(...)`, `--config /dev/stdin`) can be read only once, and reading it a
//! second time for the settings after reading it for the log filter silently dropped
//! every setting in it, the API token included.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pool_command;
use common::server::{free_port, signal};

#[test]
fn a_config_read_from_a_pipe_is_not_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/pool.db", dir.path().display());
    let listen = format!("127.0.0.1:{}", free_port());
    // Honoured, this template list stops the service before it starts; dropped, the
    // service starts on the flags' address and store.
    let mut child = pool_command()
        .args(["serve", "--config", "/dev/stdin", "--store", &store])
        .args(["--listen", &listen])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pool serve");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"templates = [\"not-a-template\"]\n")
        .expect("write the config");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll pool serve") {
            break status;
        }
        if Instant::now() > deadline {
            signal(child.id(), "KILL");
            let _ = child.wait();
            panic!("pool serve started: the settings of the piped config were dropped");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not-a-template"), "{stderr}");
}
