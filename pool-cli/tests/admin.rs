//! `pool status`, `pool export` and `pool import` on SQLite stores: counts, a migration
//! into an empty store, the refusal to overwrite, refused snapshot files and store URLs.

#![allow(
    unexpected_cfgs,
    reason = "the `azure` and `s3` features arrive with their backends"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::Server;
use common::{export, holders, run_pool};
use pool_core::PoolSnapshot;
use serde_json::{Value, json};

const STATES: [&str; 8] = [
    "provisioning",
    "available",
    "reserved",
    "allocated",
    "active",
    "archived",
    "quarantined",
    "failed",
];

fn url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}/{name}", dir.display())
}

/// A stored pool after a clean stop: `default` has 3 available, 1 allocated (chat-1)
/// and 1 active (chat-2); `web` has 2 available and 1 allocated (chat-3).
fn populated(dir: &Path) -> String {
    let store = url(dir, "first.db");
    let args = [
        "--store",
        &store,
        "--templates",
        "default=3,web=2",
        "--provision-delay",
        "5ms",
    ];
    let mut s = Server::start(dir, &args);
    s.wait_warm("default", 3);
    s.wait_warm("web", 2);
    s.allocate("chat-1", "");
    let a = s.allocate("chat-2", "");
    let body = json!({ "token": a["token"] }).to_string();
    let active = format!(
        "/v1/projects/{}/active",
        a["project_id"].as_str().expect("id")
    );
    assert_eq!(s.post(&active, &body).status, 200);
    s.allocate("chat-3", r#"{"template": "web"}"#);
    s.wait_warm("default", 3);
    s.wait_warm("web", 2);
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        s.log_text()
    );
    store
}

fn succeed(args: &[&str]) -> (String, String) {
    let out = run_pool(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "pool {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn fail(args: &[&str]) -> String {
    let out = run_pool(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pool {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn status_prints_counts_per_state_and_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = populated(dir.path());
    let snapshot = export(&store);

    let (table, _) = succeed(&["status", "--store", &store]);
    let lines: Vec<&str> = table.lines().collect();
    let summary = format!(
        "store {store}  version {}  projects 8  owners 0",
        snapshot.pool_version
    );
    assert_eq!(lines[0], summary, "{table}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header[0], "template");
    assert_eq!(header[1..], STATES, "{table}");
    let row = |name: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.starts_with(name)).expect("a row");
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    assert_eq!(
        row("default "),
        ["0", "3", "0", "1", "1", "0", "0", "0"],
        "{table}"
    );
    assert_eq!(
        row("web "),
        ["0", "2", "0", "1", "0", "0", "0", "0"],
        "{table}"
    );

    let (json_text, _) = succeed(&["status", "--json", "--store", &store]);
    let v: Value = serde_json::from_str(&json_text).expect("status --json is JSON");
    assert_eq!(v["projects"], 8);
    assert_eq!(v["version"], snapshot.pool_version);
    assert_eq!(v["owners"], json!({}));
    let counts = |t: &str| -> Vec<u64> {
        STATES
            .iter()
            .map(|s| v["templates"][t][s].as_u64().expect("a count"))
            .collect()
    };
    assert_eq!(counts("default"), [0, 3, 0, 1, 1, 0, 0, 0]);
    assert_eq!(counts("web"), [0, 2, 0, 1, 0, 0, 0, 0]);
}

#[test]
fn export_then_import_into_an_empty_store_migrates_the_pool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = populated(dir.path());
    let file = dir.path().join("pool.json");
    let file_arg = file.display().to_string();
    let (_, said) = succeed(&["export", "--store", &store, "-o", &file_arg]);
    let original = PoolSnapshot::from_json(&std::fs::read(&file).expect("read the export"))
        .expect("the export is a snapshot");
    let said_export = format!("exported 8 projects at version {}", original.pool_version);
    assert!(said.contains(&said_export), "{said}");
    let (stdout, _) = succeed(&["export", "--store", &store]);
    assert_eq!(
        stdout.trim_end().as_bytes(),
        std::fs::read(&file).expect("read").trim_ascii_end()
    );

    let second = url(dir.path(), "second.db");
    let (_, said) = succeed(&["import", &file_arg, "--store", &second]);
    assert!(
        said.contains(&format!(
            "imported 8 projects at version {}",
            original.pool_version
        )),
        "{said}"
    );
    assert_eq!(export(&second), original);
    let documents = |bytes: &[u8]| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(bytes).expect("json")["project_metadata"]
            .clone()
    };
    let carried = documents(&std::fs::read(&file).expect("read the export"));
    assert_eq!(
        carried.as_object().map(|m| m.len()),
        Some(8),
        "every project's metadata is exported"
    );
    let (again, _) = succeed(&["export", "--store", &second]);
    assert_eq!(
        documents(again.as_bytes()),
        carried,
        "the metadata arrived in the new store"
    );
    let (a, _) = succeed(&["status", "--json", "--store", &store]);
    let (b, _) = succeed(&["status", "--json", "--store", &second]);
    assert_eq!(a.replace(&store, ""), b.replace(&second, ""));

    // A server on the new store knows who holds what.
    let args = [
        "--store",
        &second,
        "--templates",
        "default=3,web=2",
        "--provision-delay",
        "5ms",
    ];
    let s = Server::start(dir.path(), &args);
    let held = holders(&original);
    let (project, (_, token)) = held
        .iter()
        .find(|(_, (c, _))| c == "chat-1")
        .expect("chat-1 holds one");
    let again = s.allocate("chat-1", "");
    assert_eq!(
        (again["project_id"].as_str(), again["token"].as_str()),
        (Some(project.as_str()), Some(token.as_str()))
    );
}

#[test]
fn import_into_a_stored_pool_needs_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = populated(dir.path());
    let file = dir.path().join("pool.json");
    let file_arg = file.display().to_string();
    succeed(&["export", "--store", &store, "-o", &file_arg]);
    let source = export(&store);

    // The target holds a different pool: one written by a short server run.
    let target = url(dir.path(), "target.db");
    let args = [
        "--store",
        &target,
        "--templates",
        "other=1",
        "--provision-delay",
        "5ms",
    ];
    let mut s = Server::start(dir.path(), &args);
    s.wait_warm("other", 1);
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let before = export(&target);

    let refused = fail(&["import", &file_arg, "--store", &target]);
    assert!(refused.contains("already holds a pool"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    assert_eq!(
        export(&target),
        before,
        "a refused import changed the store"
    );

    succeed(&["import", &file_arg, "--store", &target, "--force"]);
    let after = export(&target);
    assert_eq!(after.projects, source.projects);
    assert_eq!(after.owners, source.owners);
    assert!(
        after.pool_version > before.pool_version,
        "the version went back"
    );
    assert!(after.pool_version >= source.pool_version);
}

#[test]
fn corrupt_and_unknown_snapshots_are_refused_before_the_store_is_touched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = populated(dir.path());
    let (good, _) = succeed(&["export", "--store", &store]);
    let mut newer: Value = serde_json::from_str(&good).expect("JSON");
    newer["schema_version"] = json!(99);
    let mut doubled: Value = serde_json::from_str(&good).expect("JSON");
    let first = doubled["projects"][0].clone();
    doubled["projects"]
        .as_array_mut()
        .expect("projects")
        .push(first);
    let cases: [(&str, String, &str); 7] = [
        ("empty", String::new(), "not a pool snapshot"),
        (
            "garbage",
            "this is not a snapshot".into(),
            "not a pool snapshot",
        ),
        (
            "half",
            good[..good.len() / 2].to_owned(),
            "not a pool snapshot",
        ),
        ("object", "{}".into(), "not a pool snapshot"),
        ("array", "[1, 2, 3]".into(), "not a pool snapshot"),
        (
            "newer",
            newer.to_string(),
            "schema version 99 is not supported",
        ),
        ("doubled", doubled.to_string(), "consistent"),
    ];
    for (name, content, reason) in cases {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, content).expect("write the file");
        let target = url(dir.path(), &format!("{name}.db"));
        let err = fail(&["import", &file.display().to_string(), "--store", &target]);
        assert!(err.contains(reason), "{name}: {err}");
        assert!(
            err.contains(&file.display().to_string()),
            "{name} names no file: {err}"
        );
        assert!(
            !dir.path().join(format!("{name}.db")).exists(),
            "{name}: store created"
        );
    }
    let missing = dir.path().join("missing.json").display().to_string();
    let err = fail(&["import", &missing, "--store", &url(dir.path(), "m.db")]);
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn reading_a_store_without_a_pool_or_with_a_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = url(dir.path(), "missing.db");
    for command in ["status", "export"] {
        let err = fail(&[command, "--store", &missing]);
        assert!(err.contains("no pool database at"), "{err}");
        assert!(err.contains("missing.db"), "{err}");
    }
    assert!(
        !dir.path().join("missing.db").exists(),
        "reading a store creates no file"
    );
    let config = pool_sqlite::SqliteConfig::file(dir.path().join("empty.db"));
    drop(pool_sqlite::SqliteStore::open_blocking(config).expect("an empty database"));
    let empty = url(dir.path(), "empty.db");
    for command in ["status", "export"] {
        let err = fail(&[command, "--store", &empty]);
        assert!(
            err.contains(&format!("no pool is stored at {empty}")),
            "{err}"
        );
    }
    let foreign = dir.path().join("notes.db");
    std::fs::write(&foreign, "plain text, not a database\n".repeat(100)).expect("write");
    let err = fail(&["status", "--store", &url(dir.path(), "notes.db")]);
    assert!(err.contains("notes.db"), "{err}");
    let untouched = std::fs::read_to_string(&foreign).expect("read");
    assert!(
        untouched.starts_with("plain text"),
        "the foreign file was changed"
    );
}

#[test]
fn unknown_store_schemes_are_named() {
    for command in ["status", "export"] {
        let err = fail(&[command, "--store", "ftp://example.invalid/pool"]);
        assert!(err.contains("names no known backend"), "{err}");
        assert!(
            err.contains("sqlite://"),
            "the known schemes are listed: {err}"
        );
    }
    let err = fail(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "ftp://example.invalid/p",
    ]);
    assert!(err.contains("names no known backend"), "{err}");
}

/// Backends left out of the build say which feature adds them. (Only built without that
/// feature: with it, these URLs would name real services.)
#[allow(
    unexpected_cfgs,
    reason = "the backend features are added by their own crates"
)]
#[cfg(not(any(feature = "azure", feature = "s3")))]
#[test]
fn backends_left_out_of_the_build_name_their_feature() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.json");
    std::fs::write(
        &file,
        r#"{"schema_version":1,"pool_version":1,"owners":{},"projects":[]}"#,
    )
    .expect("write");
    let file = file.display().to_string();
    for (store, feature) in [
        ("azure://account/container", "azure"),
        ("s3://bucket/prefix", "s3"),
    ] {
        let wanted = format!("enable the `{feature}` feature");
        for args in [
            vec!["status", "--store", store],
            vec!["export", "--store", store],
            vec!["import", &file, "--store", store],
        ] {
            let err = fail(&args);
            assert!(err.contains(&wanted), "{args:?}: {err}");
        }
    }
}
