//! What saves write to the rows, and how a load treats rows it could not have written.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, PoolChanges, ProjectId, TemplateName, Timestamp,
};
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, Revision};
use rusqlite::Connection;
use tempfile::TempDir;

fn t() -> TemplateName {
    TemplateName::new("default").unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

fn pool_of(n: usize) -> Pool {
    let mut pool = Pool::new();
    for i in 0..n {
        let id = ProjectId::new(format!("default-{i:05}-0a1b2")).unwrap();
        pool.add_available(id, t(), now()).unwrap();
    }
    pool
}

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    store: SqliteStore,
    pool: Pool,
    rev: Revision,
}

/// A stored pool of `n` available projects plus two held by conversations.
async fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let store = SqliteStore::open(SqliteConfig::file(&path)).await.unwrap();
    let mut pool = pool_of(n);
    let owner = OwnerId::new("m-1").unwrap();
    pool.renew_owner(&owner, now().saturating_add(Duration::from_secs(30)));
    pool.reserve(&owner, &t(), 2, now());
    for (i, name) in ["chat-a", "chat-b"].into_iter().enumerate() {
        let c = ConversationId::new(name).unwrap();
        let token = AllocationToken::from_u64(i as u64 + 1);
        pool.allocate(&owner, &c, &t(), token, now(), Duration::from_secs(60))
            .unwrap();
    }
    let rev = store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await;
    pool.mark_saved(pool.version());
    Fixture {
        _dir: dir,
        path,
        store,
        pool,
        rev: rev.unwrap(),
    }
}

/// Counts every row written to `projects` from now on, with triggers.
fn count_row_writes(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE test_writes (n INTEGER NOT NULL);
         INSERT INTO test_writes VALUES (0);
         CREATE TRIGGER test_ins AFTER INSERT ON projects
             BEGIN UPDATE test_writes SET n = n + 1; END;
         CREATE TRIGGER test_upd AFTER UPDATE ON projects
             BEGIN UPDATE test_writes SET n = n + 1; END;
         CREATE TRIGGER test_del AFTER DELETE ON projects
             BEGIN UPDATE test_writes SET n = n + 1; END;",
    )
    .unwrap();
    conn
}

fn row_writes(conn: &Connection) -> i64 {
    conn.query_row("SELECT n FROM test_writes", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn an_incremental_save_writes_only_the_changed_rows() {
    let mut f = fixture(1_000).await;
    let counter = count_row_writes(&f.path);
    let owner = OwnerId::new("m-1").unwrap();
    f.pool.reserve(&owner, &t(), 3, now());
    let doomed = ProjectId::new("default-00999-0a1b2").unwrap();
    f.pool.quarantine(&doomed, "test", now()).unwrap();
    f.pool.remove(&doomed).unwrap();
    f.pool
        .add_available(ProjectId::new("late-1").unwrap(), t(), now())
        .unwrap();
    let changes = f.pool.unsaved();
    assert_eq!((changes.changed.len(), changes.removed.len()), (4, 1));
    let write = PoolWrite::Changes(changes);
    f.store
        .save(&write, &Precondition::Matches(f.rev.clone()))
        .await
        .unwrap();
    assert_eq!(
        row_writes(&counter),
        5,
        "3 reservations, 1 removal, 1 new project"
    );
    assert_eq!(
        f.store.load().await.unwrap().unwrap().value,
        f.pool.snapshot()
    );

    let rev = f.store.load().await.unwrap().unwrap().revision;
    f.pool.mark_saved(f.pool.version());
    let full = PoolWrite::Full(f.pool.snapshot());
    f.store
        .save(&full, &Precondition::Matches(rev))
        .await
        .unwrap();
    assert_eq!(
        row_writes(&counter),
        5 + 2 * 1_000,
        "a full save rewrites all 1,000 rows"
    );
}

#[tokio::test]
async fn a_save_never_takes_the_pool_back() {
    let f = fixture(5).await;
    let older = pool_of(5).snapshot();
    assert!(older.pool_version < f.pool.version());
    let refused = f
        .store
        .save(
            &PoolWrite::Full(older),
            &Precondition::Matches(f.rev.clone()),
        )
        .await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    let loaded = f.store.load().await.unwrap().unwrap();
    assert_eq!((loaded.value, loaded.revision), (f.pool.snapshot(), f.rev));
}

#[tokio::test]
async fn changes_need_a_stored_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::file(dir.path().join("p.db")))
        .await
        .unwrap();
    let changes = PoolWrite::Changes(pool_of(2).unsaved());
    let refused = store.save(&changes, &Precondition::CreateOnly).await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(store.load().await.unwrap().is_none());
}

/// Runs `sql` on the file, then expects the load to fail as `Corrupt` naming the file.
async fn load_fails_after(sql: &str) -> String {
    let f = fixture(20).await;
    let conn = Connection::open(&f.path).unwrap();
    let changed = conn.execute(sql, []).unwrap();
    assert_eq!(changed, 1, "{sql} changed one row");
    let err = f.store.load().await.expect_err(sql);
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{sql}: {err}");
    let shown = format!("{err} / {:?}", std::error::Error::source(&err));
    assert!(shown.contains(&f.path.display().to_string()), "{shown}");
    shown
}

/// An update of one project row.
fn on_row(id: &str, set: &str) -> String {
    format!("UPDATE projects SET {set} WHERE id = '{id}'")
}

#[tokio::test]
async fn rows_with_invalid_ids_are_corrupt() {
    let shown = load_fails_after(&on_row("default-00003-0a1b2", "id = '../x'")).await;
    assert!(shown.contains("../x"), "{shown}");
    load_fails_after(&on_row("default-00003-0a1b2", "template = 'a b'")).await;
    load_fails_after(&on_row("default-00004-0a1b2", "id = ''")).await;
}

#[tokio::test]
async fn rows_whose_columns_disagree_with_their_state_are_corrupt() {
    let shown = load_fails_after(&on_row("default-00005-0a1b2", "status = 'archived'")).await;
    assert!(shown.contains("status column"), "{shown}");
    load_fails_after("UPDATE projects SET holder = 'chat-z' WHERE holder = 'chat-a'").await;
    load_fails_after(&on_row("default-00007-0a1b2", "holder = 'chat-z'")).await;
    load_fails_after(&on_row("default-00007-0a1b2", "version = -1")).await;
    load_fails_after(&on_row("default-00007-0a1b2", "state = 42")).await;
}

#[tokio::test]
async fn rows_that_contradict_the_pool_are_corrupt() {
    let shown = load_fails_after(&on_row("default-00002-0a1b2", "version = 1000000")).await;
    assert!(shown.contains("above the pool"), "{shown}");
    let state = concat!(
        r#"{"status":"active","owner":"m-1","#,
        r#""conversation":"chat-a","token":"0000000000000009"}"#
    );
    let set = format!("holder = 'chat-a', status = 'active', state = '{state}'");
    let shown = load_fails_after(&on_row("default-00009-0a1b2", &set)).await;
    assert!(shown.contains("holding two projects"), "{shown}");
}

#[tokio::test]
async fn a_damaged_header_is_corrupt() {
    load_fails_after("UPDATE pool SET owners = 'not json'").await;
    load_fails_after("UPDATE pool SET owners = '{\"../o\":{\"lease_until\":1,\"version\":1}}'")
        .await;
    load_fails_after("UPDATE pool SET snapshot_schema = 2").await;
    load_fails_after("UPDATE pool SET owners = '{\"m-1\":{\"lease_until\":1,\"version\":99999}}'")
        .await;
}

#[tokio::test]
async fn the_base_version_of_changes_must_be_the_stored_one() {
    let mut f = fixture(5).await;
    f.pool
        .reserve(&OwnerId::new("m-1").unwrap(), &t(), 1, now());
    let changes = f.pool.unsaved();
    let ahead = PoolChanges {
        base_version: changes.base_version + 1,
        ..changes.clone()
    };
    let refused = f
        .store
        .save(
            &PoolWrite::Changes(ahead),
            &Precondition::Matches(f.rev.clone()),
        )
        .await;
    let err = refused.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains(&f.path.display().to_string()),
        "{err}"
    );
    let saved = f
        .store
        .save(&PoolWrite::Changes(changes), &Precondition::Matches(f.rev))
        .await;
    assert!(saved.is_ok());
    assert_eq!(
        f.store.load().await.unwrap().unwrap().value,
        f.pool.snapshot()
    );
}

#[tokio::test]
async fn an_in_memory_store_keeps_the_contract_within_the_process() {
    let store = SqliteStore::open(SqliteConfig::from_url("sqlite::memory:").unwrap())
        .await
        .unwrap();
    assert!(!store.capabilities().shared_between_processes);
    assert!(store.capabilities().incremental_saves);
    let mut pool = pool_of(3);
    let rev = store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await
        .unwrap();
    pool.mark_saved(pool.version());
    pool.reserve(&OwnerId::new("m").unwrap(), &t(), 2, now());
    let write = PoolWrite::Changes(pool.unsaved());
    let rev2 = store
        .save(&write, &Precondition::Matches(rev.clone()))
        .await
        .unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!((loaded.value, loaded.revision), (pool.snapshot(), rev2));
    let stale = store.save(&write, &Precondition::Matches(rev)).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
}
