//! The stored JSON format, pinned by a golden file, and how loading fails on documents
//! that are not a snapshot this release wrote: by a typed error, never a panic and never
//! an empty pool.
//!
//! Regenerate the golden file after an intended format change with
//! `UPDATE_GOLDEN=1 cargo test -p pool-core --test snapshot_format`; a format change that
//! old stored pools cannot be read with also needs a new schema version.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;

use common::{LEASE, at, conv, owner, pid, tok, tpl};
use pool_core::{Pool, PoolSnapshot, SCHEMA_VERSION, SnapshotError, StateKind};
use proptest::prelude::*;
use serde_json::{Value, json};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/snapshot_v1.json")
}

/// A pool with one project in every state and one live owner, built through the
/// operations so that the golden file also pins what they record.
fn every_state() -> Pool {
    let mut pool = Pool::new();
    let (t, gpu) = (tpl("default"), tpl("gpu"));
    let a = owner("manager-a");
    pool.renew_owner(&a, at(1_700_000_030_000));
    let now = at(1_700_000_000_000);
    for id in [
        "avail-1",
        "resv-1",
        "alloc-1",
        "active-1",
        "archived-1",
        "expired-1",
        "quar-1",
    ] {
        pool.add_available(pid(id), t.clone(), now).unwrap();
    }
    pool.add_provisioning(pid("prov-1"), gpu.clone(), now)
        .unwrap();
    pool.add_provisioning(pid("failed-1"), gpu, now).unwrap();
    for id in [
        "active-1",
        "alloc-1",
        "archived-1",
        "expired-1",
        "quar-1",
        "resv-1",
    ] {
        pool.reserve_project(&a, &pid(id), now).unwrap();
    }
    let later = at(1_700_000_001_000);
    let hand_out = |pool: &mut Pool, id: &str, chat: &str, token: u64| {
        pool.allocate_project(&a, &conv(chat), &pid(id), tok(token), later, LEASE)
            .unwrap();
    };
    hand_out(&mut pool, "alloc-1", "chat-alloc", 0x0123_4567_89ab_cdef);
    hand_out(&mut pool, "active-1", "chat-active", 2);
    hand_out(&mut pool, "archived-1", "chat-archived", 3);
    hand_out(&mut pool, "expired-1", "chat-expired", u64::MAX);
    pool.mark_active(&pid("active-1"), tok(2), later).unwrap();
    pool.archive(&pid("archived-1"), tok(3), later).unwrap();
    pool.reclaim(&pid("expired-1"), at(1_700_000_061_000))
        .unwrap();
    pool.quarantine(&pid("quar-1"), "owner lease expired", later)
        .unwrap();
    pool.fail_provisioning(&pid("failed-1"), "quota \"gpu\" exceeded", later)
        .unwrap();
    pool
}

fn load(bytes: &[u8]) -> Result<Pool, SnapshotError> {
    Pool::from_snapshot(PoolSnapshot::from_json(bytes)?)
}

fn golden_value() -> Value {
    serde_json::from_slice(&every_state().snapshot().to_json()).unwrap()
}

fn load_value(v: &Value) -> Result<Pool, SnapshotError> {
    load(&serde_json::to_vec(v).unwrap())
}

fn is_corrupt(r: Result<Pool, SnapshotError>) -> bool {
    matches!(r, Err(SnapshotError::Corrupt(_)))
}

fn is_inconsistent(r: Result<Pool, SnapshotError>) -> bool {
    matches!(r, Err(SnapshotError::Inconsistent(_)))
}

#[test]
fn the_pool_covers_every_state() {
    let pool = every_state();
    let mut kinds: Vec<StateKind> = pool.records().map(|r| r.state.kind()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, pool_core::ALL_KINDS.to_vec());
    assert_eq!(pool.owners().len(), 1);
    pool.check_invariants().unwrap();
}

#[test]
fn the_snapshot_format_matches_the_golden_file() {
    let pretty = every_state().snapshot().to_json_pretty();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        // Written aside and renamed, so the test reading the file never sees half of it.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &pretty).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eprintln!("wrote {}", path.display());
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display());
    });
    assert!(
        golden == pretty,
        "the snapshot format changed (rerun with UPDATE_GOLDEN=1 if intended)\n\
         --- golden\n{}\n--- now\n{}",
        String::from_utf8_lossy(&golden),
        String::from_utf8_lossy(&pretty),
    );
}

#[test]
fn the_golden_file_loads_back_to_the_same_pool() {
    let golden = std::fs::read(golden_path()).unwrap();
    let snapshot = PoolSnapshot::from_json(&golden).unwrap();
    assert_eq!(snapshot.schema_version, SCHEMA_VERSION);
    assert_eq!(snapshot, every_state().snapshot());
    let pool = Pool::from_snapshot(snapshot.clone()).unwrap();
    pool.check_invariants().unwrap();
    assert_eq!(pool.snapshot(), snapshot);
    assert_eq!(pool.saved_version(), snapshot.pool_version);
    assert_eq!(pool.holder_of(&conv("chat-active")).unwrap().token, tok(2));
    assert_eq!(
        PoolSnapshot::from_json(&snapshot.to_json()).unwrap(),
        snapshot
    );
}

#[test]
fn chosen_details_of_the_format() {
    let v = golden_value();
    assert_eq!(v["schema_version"], json!(1));
    assert_eq!(
        v["owners"]["manager-a"]["lease_until"],
        json!(1_700_000_030_000u64)
    );
    let alloc = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "alloc-1")
        .unwrap();
    assert_eq!(alloc["state"]["status"], json!("allocated"));
    assert_eq!(
        alloc["state"]["token"],
        json!("0123456789abcdef"),
        "tokens are 16 hex digits"
    );
    let ids: Vec<&str> = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "projects are stored sorted by id");
}

#[test]
fn an_unknown_schema_version_is_refused_by_name() {
    for found in [0u32, 2, 99, u32::MAX] {
        let mut v = golden_value();
        v["schema_version"] = json!(found);
        let err = load_value(&v).unwrap_err();
        assert_eq!(
            err,
            SnapshotError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION
            }
        );
        // A newer schema is refused before its (unknown) body is looked at.
        let bare = json!({"schema_version": found, "something": "new"});
        assert!(matches!(
            load_value(&bare),
            Err(SnapshotError::UnsupportedSchema { .. })
        ));
    }
    let snapshot = PoolSnapshot {
        schema_version: 7,
        ..every_state().snapshot()
    };
    let err = Pool::from_snapshot(snapshot).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::UnsupportedSchema {
            found: 7,
            supported: SCHEMA_VERSION
        }
    );
}

#[test]
fn garbage_is_corrupt() {
    let cases: [&[u8]; 12] = [
        b"",
        b"   ",
        b"not json",
        b"{",
        b"[]",
        b"[1]",
        b"null",
        b"42",
        b"\xff\xfe\x00",
        b"{}",
        b"{\"schema_version\":\"1\"}",
        b"{\"schema_version\":-1}",
    ];
    for bytes in cases {
        let got = load(bytes);
        assert!(
            is_corrupt(got.clone()),
            "{:?} gave {got:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn missing_fields_are_corrupt() {
    for field in ["pool_version", "owners", "projects"] {
        let mut v = golden_value();
        v.as_object_mut().unwrap().remove(field);
        assert!(is_corrupt(load_value(&v)), "without {field}");
    }
    for field in ["id", "template", "state", "version", "changed_at"] {
        let mut v = golden_value();
        v["projects"][0].as_object_mut().unwrap().remove(field);
        assert!(is_corrupt(load_value(&v)), "project without {field}");
    }
    let alloc = |v: &mut Value| -> usize {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["id"] == "alloc-1")
            .unwrap()
    };
    for field in ["status", "owner", "conversation", "token", "lease_until"] {
        let mut v = golden_value();
        let i = alloc(&mut v);
        v["projects"][i]["state"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        assert!(
            is_corrupt(load_value(&v)),
            "allocated state without {field}"
        );
    }
    let mut v = golden_value();
    v["owners"]["manager-a"]
        .as_object_mut()
        .unwrap()
        .remove("lease_until");
    assert!(is_corrupt(load_value(&v)), "owner lease without its time");
}

#[test]
fn invalid_values_are_corrupt() {
    let edits: [(&str, Edit); 15] = [
        ("escaping project id", |v| {
            v["projects"][0]["id"] = json!("../etc")
        }),
        ("empty template", |v| {
            v["projects"][0]["template"] = json!("")
        }),
        ("template with a slash", |v| {
            v["projects"][0]["template"] = json!("a/b")
        }),
        ("unknown status", |v| {
            v["projects"][0]["state"] = json!({"status": "exploded"})
        }),
        ("negative version", |v| {
            v["projects"][0]["version"] = json!(-1)
        }),
        ("fractional time", |v| {
            v["projects"][0]["changed_at"] = json!(1.5)
        }),
        ("pool version as text", |v| v["pool_version"] = json!("9")),
        ("projects as a map", |v| v["projects"] = json!({})),
        ("owner id with a space", |v| {
            let lease = v["owners"]["manager-a"].clone();
            v["owners"] = json!({ "manager a": lease });
        }),
        ("short token", |v| set_alloc(v, "token", json!("abc"))),
        ("token with a sign", |v| {
            set_alloc(v, "token", json!("+000000000000001"))
        }),
        ("token as a number", |v| set_alloc(v, "token", json!(7))),
        ("conversation id with a newline", |v| {
            set_alloc(v, "conversation", json!("a\nb"))
        }),
        ("empty owner", |v| set_alloc(v, "owner", json!(""))),
        ("overlong project id", |v| {
            v["projects"][0]["id"] = json!("p".repeat(129))
        }),
    ];
    for (what, edit) in edits {
        let mut v = golden_value();
        edit(&mut v);
        let got = load_value(&v);
        assert!(is_corrupt(got.clone()), "{what}: {got:?}");
    }
}

/// A change made to a good document.
type Edit = fn(&mut Value);

fn set_alloc(v: &mut Value, field: &str, value: Value) {
    let projects = v["projects"].as_array_mut().unwrap();
    let p = projects.iter_mut().find(|p| p["id"] == "alloc-1").unwrap();
    p["state"][field] = value;
}

#[test]
fn contradictory_records_are_inconsistent() {
    let mut dup = golden_value();
    let first = dup["projects"][0].clone();
    dup["projects"].as_array_mut().unwrap().push(first);
    assert!(is_inconsistent(load_value(&dup)), "a project listed twice");

    let mut twice = golden_value();
    let projects = twice["projects"].as_array_mut().unwrap();
    let active = projects.iter_mut().find(|p| p["id"] == "active-1").unwrap();
    active["state"]["conversation"] = json!("chat-alloc");
    assert!(
        is_inconsistent(load_value(&twice)),
        "a conversation holding two projects"
    );

    let mut newer = golden_value();
    newer["projects"][0]["version"] = json!(newer["pool_version"].as_u64().unwrap() + 1);
    assert!(
        is_inconsistent(load_value(&newer)),
        "a record newer than the pool"
    );

    let mut lease = golden_value();
    lease["owners"]["manager-a"]["version"] = json!(lease["pool_version"].as_u64().unwrap() + 1);
    assert!(
        is_inconsistent(load_value(&lease)),
        "an owner newer than the pool"
    );
}

#[test]
fn every_truncation_of_the_golden_file_is_refused() {
    let golden = every_state().snapshot().to_json_pretty();
    let end = golden.iter().rposition(|b| *b == b'}').unwrap();
    for len in 0..=end {
        let got = load(&golden[..len]);
        assert!(is_corrupt(got.clone()), "{len} bytes gave {got:?}");
    }
    assert!(load(&golden).is_ok());
}

#[test]
fn an_empty_pool_round_trips_and_is_the_only_empty_load() {
    let empty = Pool::new().snapshot();
    let json = String::from_utf8(empty.to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"schema_version":1,"pool_version":0,"owners":{},"projects":[]}"#
    );
    let pool = load(json.as_bytes()).unwrap();
    assert!(pool.is_empty());
}

/// One byte of a document overwritten: where, and with what.
fn byte_edit() -> impl Strategy<Value = (prop::sample::Index, u8)> {
    (any::<prop::sample::Index>(), any::<u8>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// A damaged document never panics the loader; whatever loads is a consistent pool.
    #[test]
    fn damaged_documents_never_panic(edits in prop::collection::vec(byte_edit(), 1..4)) {
        let mut bytes = every_state().snapshot().to_json();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        match load(&bytes) {
            Ok(pool) => {
                prop_assert!(pool.check_invariants().is_ok());
                prop_assert_eq!(pool.len(), 9, "a damaged document lost projects");
            }
            Err(
                SnapshotError::Corrupt(_)
                | SnapshotError::Inconsistent(_)
                | SnapshotError::UnsupportedSchema { .. },
            ) => {}
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }
}

#[test]
fn documents_written_before_owner_runs_were_told_apart_still_load() {
    let now = String::from_utf8(every_state().snapshot().to_json_pretty()).unwrap();
    let older = now.replace(",\n      \"incarnation\": 0", "");
    assert_ne!(older, now, "the golden owner lease carries an incarnation");
    let loaded = PoolSnapshot::from_json(older.as_bytes()).unwrap();
    assert_eq!(loaded, every_state().snapshot());
}
