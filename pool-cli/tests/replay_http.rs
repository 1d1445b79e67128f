//! `pool replay --url` against a real `pool serve`: every scheduled request is answered
//! and counted, warm or not, errors by their code.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a fresh connection; the body, if the status is 200.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn serve(templates: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pool"))
        .args(["serve", "--store", "memory://", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--templates", templates, "--provision-delay", "1ms"])
        .args(["--max-in-flight", "64"])
        .env_remove("POOL_API_TOKEN")
        .env("POOL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Reserved and stored: a reservation not yet stored is not handed out warm.
        let filled = get(port, "/v1/pool").and_then(|b| {
            let v: Value = serde_json::from_str(&b).ok()?;
            let reserved = v["templates"]["default"]["reserved_here"].as_u64()?;
            Some((reserved, v["unsaved_changes"].as_u64()?))
        });
        if filled.is_some_and(|(n, unsaved)| n >= 300 && unsaved == 0) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "pool serve did not fill its pool"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn replay(port: u16, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pool"))
        .args(["replay", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--json", "--concurrency", "4"])
        .args(extra)
        .env_remove("POOL_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_load_run_answers_every_arrival_and_counts_errors_by_code() {
    let server = serve("default=300,empty=0");
    let v = replay(server.port, &["--rate", "400", "--duration", "500ms"]);
    assert_eq!(v["mode"], "http");
    assert_eq!(v["arrivals"], 200);
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert_eq!(
        v["warm"], 200,
        "a pool of 300 serves 200 arrivals warm: {v}"
    );
    assert_eq!(v["stockouts"], 0);
    assert!(
        v["provisions"].as_u64().unwrap() > 0,
        "hand-outs are replaced: {v}"
    );
    assert!(v["store_writes"].as_u64().unwrap() > 0);
    assert!(v["achieved_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us_p50"].as_f64().unwrap() > 0.0);
    let lag = |q: &str| v[format!("generator_lag_us_{q}")].as_f64().unwrap();
    assert!(0.0 <= lag("p50") && lag("p50") <= lag("p99"), "{v}");

    let v = replay(
        server.port,
        &[
            "--rate",
            "100",
            "--duration",
            "500ms",
            "--template",
            "empty",
            "--on-empty",
            "fail",
        ],
    );
    assert_eq!(v["arrivals"], 50);
    assert_eq!(v["warm"], 0);
    assert_eq!(v["stockouts"], 50);
    assert_eq!(v["errors"], serde_json::json!({"pool_empty": 50}), "{v}");
}

#[test]
fn an_unreachable_service_is_a_clear_error() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_pool"))
        .args(["replay", "--rate", "10", "--duration", "1s", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading the pool status") && err.contains(&port.to_string()),
        "{err}"
    );
}
