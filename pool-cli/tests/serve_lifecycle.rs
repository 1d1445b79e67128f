//! How `pool serve` stops: SIGTERM and SIGINT stop accepting, store everything answered
//! and exit 0 within the shutdown timeout; and how managers sharing a store keep their
//! leases alive.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::scripts::{self, Provision};
use common::server::Server;
use common::{export, holders};
use pool_core::ProjectState;

#[test]
fn sigterm_stores_every_answered_allocation_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A long gathering delay keeps the hand-outs unsaved until the signal.
    let args = [
        "--templates",
        "default=30",
        "--provision-delay",
        "5ms",
        "--save-delay",
        "3s",
    ];
    let mut s = Server::start(dir.path(), &args);
    s.wait_warm("default", 30);
    let answered: Vec<(String, String, String)> = (0..25)
        .map(|i| {
            let conversation = format!("chat-{i}");
            let a = s.allocate(&conversation, "");
            let project = a["project_id"].as_str().expect("id").to_owned();
            (
                conversation,
                project,
                a["token"].as_str().expect("token").to_owned(),
            )
        })
        .collect();
    let unsaved = s.pool_status()["unsaved_changes"]
        .as_u64()
        .expect("unsaved");
    assert!(
        unsaved > 0,
        "the hand-outs were saved before the signal; nothing to flush"
    );

    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    assert!(
        TcpStream::connect(s.addr).is_err(),
        "still accepting after exit"
    );
    assert!(
        s.log_text().contains("pool stored; exiting"),
        "{}",
        s.log_text()
    );

    let snapshot = export(&s.store);
    let held = holders(&snapshot);
    for (conversation, project, token) in &answered {
        let holder = held.get(project).cloned();
        assert_eq!(
            holder,
            Some((conversation.clone(), token.clone())),
            "{project}"
        );
    }
    assert!(snapshot.owners.is_empty(), "the manager did not sign off");
    let reserved = snapshot
        .projects
        .iter()
        .filter(|r| matches!(r.state, ProjectState::Reserved { .. }));
    assert_eq!(reserved.count(), 0, "unused reservations were not returned");
}

#[test]
fn sigint_stops_the_same_way() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "--templates",
        "default=2",
        "--provision-delay",
        "5ms",
        "--save-delay",
        "3s",
    ];
    let mut s = Server::start(dir.path(), &args);
    s.wait_warm("default", 2);
    let a = s.allocate("chat-int", "");
    s.signal("INT");
    assert_eq!(
        s.wait_exit(Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        s.log_text()
    );
    let project = a["project_id"].as_str().expect("id");
    let holder = holders(&export(&s.store)).get(project).cloned();
    let token = a["token"].as_str().expect("token").to_owned();
    assert_eq!(holder, Some(("chat-int".to_owned(), token)));
}

#[test]
fn it_stops_accepting_before_it_has_finished_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A provision that hangs until its timeout keeps the manager busy after the signal.
    let spec = scripts::exec_provisioner(dir.path(), Provision::Hang, 0);
    let args = [
        "--provisioner",
        &spec,
        "--templates",
        "default=1",
        "--provision-timeout",
        "2s",
    ];
    let mut s = Server::start(dir.path(), &args);
    common::poll(Duration::from_secs(10), "a provision in flight", || {
        let status = s.pool_status();
        (status["templates"]["default"]["provisioning"] == 1).then_some(())
    });
    s.signal("TERM");
    common::poll(Duration::from_secs(5), "the listener to close", || {
        TcpStream::connect(s.addr).is_err().then_some(())
    });
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    let log = s.log_text();
    let closed = log
        .find("stopped accepting requests")
        .expect("closing logged");
    let stored = log.find("pool stored; exiting").expect("exit logged");
    assert!(closed < stored, "{log}");
}

#[test]
fn a_waiting_caller_cannot_hold_up_the_shutdown_past_its_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = scripts::exec_provisioner(dir.path(), Provision::Fail, 0);
    let args = [
        "--provisioner",
        &spec,
        "--templates",
        "default=0",
        "--shutdown-timeout",
        "1s",
    ];
    let mut s = Server::start(dir.path(), &args);
    let addr = s.addr;
    let waiter = std::thread::spawn(move || {
        let body = br#"{"on_empty": "wait", "wait_ms": 60000}"#;
        common::client::request(
            addr,
            "POST",
            "/v1/conversations/w-1/project",
            &[],
            Some(body),
        )
    });
    common::poll(Duration::from_secs(10), "the caller to wait", || {
        (s.pool_status()["templates"]["default"]["waiting"] == 1).then_some(())
    });
    let signalled = Instant::now();
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(20));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let answer = waiter.join().expect("waiter thread");
    assert!(answer.is_err() || answer.is_ok_and(|r| r.status != 200));
}

#[test]
fn managers_sharing_a_store_keep_short_leases_alive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = |owner| {
        let lease = [
            "--owner-lease",
            "1s",
            "--provision-delay",
            "5ms",
            "--save-delay",
            "5ms",
        ];
        let mut a: Vec<&str> = lease.to_vec();
        a.extend(["--owner", owner, "--templates", "default=3"]);
        a
    };
    let alpha = Server::start(dir.path(), &args("alpha"));
    alpha.wait_warm("default", 3);
    let beta = Server::start(dir.path(), &args("beta"));
    // Outlive both leases several times over: renewals must keep them alive.
    std::thread::sleep(Duration::from_secs(3));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..3 {
        let a = alpha.allocate(&format!("alpha-{i}"), "");
        assert_eq!(a["warm"], true, "{a}");
        assert!(
            seen.insert(a["project_id"].as_str().expect("id").to_owned()),
            "handed out twice: {a}"
        );
    }
    for i in 0..3 {
        let a = beta.allocate(&format!("beta-{i}"), r#"{"on_empty": "wait"}"#);
        assert!(
            seen.insert(a["project_id"].as_str().expect("id").to_owned()),
            "handed out twice: {a}"
        );
    }
    for server in [&alpha, &beta] {
        let status = server.pool_status();
        assert_eq!(status["health"]["status"], "healthy", "{status}");
        assert_eq!(
            status["metrics"]["quarantined"], 0,
            "a live manager was presumed dead"
        );
        let counts = &status["templates"]["default"]["counts"];
        assert_eq!(counts["quarantined"], 0, "{counts}");
    }
    for mut server in [alpha, beta] {
        server.signal("TERM");
        let status = server.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{}", server.log_text());
    }
    let held = holders(&export(&format!(
        "sqlite://{}/pool.db",
        dir.path().display()
    )));
    let conversations: std::collections::BTreeSet<&str> =
        held.values().map(|(c, _)| c.as_str()).collect();
    assert_eq!(conversations.len(), 6, "{held:?}");
    assert!(held.keys().all(|p| seen.contains(p)), "{held:?} {seen:?}");
}

/// Standard error closed under a running service (its log reader went away): log lines
/// are dropped, and the service goes on storing what it hands out and stops cleanly.
#[test]
fn a_closed_log_stream_does_not_stop_saves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], common::server::free_port()));
    let store = format!("sqlite://{}/pool.db", dir.path().display());
    /// Kills the service if the test fails before stopping it.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = common::pool_command()
        .args(["serve", "--listen", &addr.to_string(), "--store", &store])
        .args(["--provision-delay", "10ms", "--save-delay", "5ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pool serve");
    let mut child = KillOnDrop(child);
    let ready = || {
        let r = common::client::request(addr, "GET", "/readyz", &[], None);
        r.ok().filter(|r| r.status == 200)
    };
    common::poll(Duration::from_secs(30), "the service is ready", ready);
    // Every later log write now fails with a broken pipe.
    drop(child.0.stderr.take());
    let mut held = Vec::new();
    for i in 0..5 {
        let path = format!("/v1/conversations/closed-log-{i}/project");
        let body = br#"{"on_empty": "wait"}"#;
        let r = common::client::request(addr, "POST", &path, &[], Some(body)).expect("allocate");
        assert_eq!(r.status, 200, "{}", r.text());
        held.push(
            r.json()["project_id"]
                .as_str()
                .expect("a project")
                .to_owned(),
        );
    }
    let status = || {
        let r = common::client::request(addr, "GET", "/v1/pool", &[], None).ok()?;
        let v = r.json();
        (v["unsaved_changes"] == 0 && v["saved_version"] == v["version"]).then_some(v)
    };
    let v = common::poll(Duration::from_secs(30), "every hand-out stored", status);
    assert_eq!(v["health"]["status"], "healthy", "{v}");
    common::server::signal(child.0.id(), "TERM");
    let exit = child.0.wait().expect("wait for the service");
    assert!(exit.success(), "stopped with {exit}");
    let stored = holders(&export(&store));
    for (i, project) in held.iter().enumerate() {
        let holder = stored.get(project).map(|(c, _)| c.as_str());
        assert_eq!(holder, Some(format!("closed-log-{i}").as_str()));
    }
}
