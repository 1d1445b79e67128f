//! A `pool serve` process on a free loopback port, stopped when dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{self, Response};
use super::{poll, pool_command};

/// How long a server may take to answer `/readyz` after starting.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running `pool serve`.
pub(crate) struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its store URL.
    pub(crate) store: String,
    /// Its log (standard output and error).
    pub(crate) log: PathBuf,
    token: Option<String>,
}

/// Sends signal `name` (`TERM`, `INT`, `KILL`) to process `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

/// A port on 127.0.0.1 that nothing listens on (at the moment of asking).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn arg_after<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| *a == flag).map(|i| args[i + 1])
}

impl Server {
    /// Starts `pool serve ARGS` with its log and (unless ARGS name one) its SQLite store
    /// in `dir`, and waits until it is ready.
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(dir, args, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub(crate) fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        for attempt in 1..=5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let listen = ["--listen".to_owned(), addr.to_string()];
            let store = format!("sqlite://{}/pool.db", dir.display());
            let mut all: Vec<&str> = listen.iter().map(String::as_str).collect();
            if arg_after(args, "--store").is_none() {
                all.extend(["--store", &store]);
            }
            all.extend(args);
            match Self::try_start(dir, &all, env, addr) {
                Ok(server) => return server,
                // Another process took the port between choosing and binding it.
                Err(log) if log.contains("Address already in use") && attempt < 5 => {}
                Err(log) => panic!("pool serve {args:?} did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts `pool serve ARGS` with nothing added: the address comes from `--listen`
    /// or `POOL_LISTEN`, and the store is the default one (in `dir`) unless named.
    pub(crate) fn start_bare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let from_env = env
            .iter()
            .find(|(k, _)| *k == "POOL_LISTEN")
            .map(|(_, v)| *v);
        let listen = arg_after(args, "--listen")
            .or(from_env)
            .expect("an address");
        let addr = listen.parse().expect("a socket address");
        Self::try_start(dir, args, env, addr).unwrap_or_else(|log| panic!("{log}"))
    }

    fn try_start(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        addr: SocketAddr,
    ) -> Result<Self, String> {
        let from_env = env
            .iter()
            .find(|(k, _)| *k == "POOL_STORE")
            .map(|(_, v)| *v);
        let store = arg_after(args, "--store").or(from_env).map_or_else(
            || format!("sqlite://{}/pool.db", dir.display()),
            str::to_owned,
        );
        let log = dir.join(format!("serve-{}.log", addr.port()));
        let out = File::create(&log).expect("create the log");
        let err = out.try_clone().expect("clone the log");
        let child = pool_command()
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start pool serve");
        let mut server = Self {
            child: Some(child),
            addr,
            store,
            log,
            token: arg_after(args, "--api-token").map(str::to_owned),
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = server.child_mut().try_wait().expect("poll the server") {
                return Err(format!("exited with {status}:\n{}", server.log_text()));
            }
            let ready = client::request(addr, "GET", "/readyz", &[], None);
            if ready.is_ok_and(|r| r.status == 200) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {START_LIMIT:?}:\n{}",
                    server.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process")
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server process").id()
    }

    /// Everything the server logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a request without adding the bearer token.
    pub(crate) fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        client::request(self.addr, method, path, headers, body)
    }

    /// Sends a request with the server's bearer token, if it has one.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        self.raw(method, path, &headers, body)
    }

    /// GET `path`; panics when the connection fails.
    pub(crate) fn get(&self, path: &str) -> Response {
        self.send("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_text()))
    }

    /// POST `body` to `path`; panics when the connection fails.
    pub(crate) fn post(&self, path: &str, body: &str) -> Response {
        self.send("POST", path, Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log_text()))
    }

    /// Allocates a project for `conversation`; panics unless the answer is 200.
    pub(crate) fn allocate(&self, conversation: &str, body: &str) -> Value {
        let r = self.post(&format!("/v1/conversations/{conversation}/project"), body);
        assert_eq!(r.status, 200, "allocate {conversation}: {}", r.text());
        r.json()
    }

    /// `GET /v1/pool`.
    pub(crate) fn pool_status(&self) -> Value {
        let r = self.get("/v1/pool");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Waits until this server holds at least `n` stored reservations of `template`, so
    /// the next `n` allocations are warm.
    pub(crate) fn wait_warm(&self, template: &str, n: u64) {
        poll(Duration::from_secs(30), "a warm pool", || {
            let s = self.pool_status();
            let here = s["templates"][template]["reserved_here"].as_u64()?;
            (here >= n && s["unsaved_changes"] == 0).then_some(())
        });
    }

    /// The value of an unlabelled metric in `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Sends signal `name` to the server.
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits for the server to exit; panics (after killing it) past `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child_mut().kill();
                panic!("server did not exit within {limit:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the server and reaps it.
    pub(crate) fn kill(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of pool serve on {} ---\n{}",
                self.addr,
                self.log_text()
            );
        }
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
