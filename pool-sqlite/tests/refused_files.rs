//! Files the store must refuse, with a typed error naming them, without writing to them:
//! not a database, another application's database, damaged, from a newer release.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::{Path, PathBuf};

use pool_core::{Pool, ProjectId, TemplateName, Timestamp};
use pool_sqlite::{SqliteConfig, SqliteError, SqliteStore};
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, StoreError};
use rusqlite::Connection;
use tempfile::TempDir;

fn pool_of(n: usize) -> Pool {
    let mut pool = Pool::new();
    let t = TemplateName::new("default").unwrap();
    for i in 0..n {
        let id = ProjectId::new(format!("default-{i:05}-0a1b2")).unwrap();
        pool.add_available(id, t.clone(), Timestamp::from_millis(1))
            .unwrap();
    }
    pool
}

/// A closed pool database of `n` projects.
async fn stored_pool(n: usize) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let store = SqliteStore::open(SqliteConfig::file(&path)).await.unwrap();
    let write = PoolWrite::Full(pool_of(n).snapshot());
    store.save(&write, &Precondition::CreateOnly).await.unwrap();
    drop(store);
    assert!(
        !wal(&path).exists(),
        "closing the store checkpointed the WAL"
    );
    (dir, path)
}

fn wal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Opens `path` twice, expecting a refusal that names it, and checks that the file was
/// not written; returns the refusal.
async fn refused(path: &Path) -> SqliteError {
    let before = fs::read(path).unwrap();
    let as_store: StoreError = SqliteStore::open(config_of(path))
        .await
        .expect_err("the file must be refused")
        .into();
    assert_eq!(as_store.kind(), ErrorKind::Corrupt);
    let source = std::error::Error::source(&as_store).expect("the open error as the source");
    assert!(source.downcast_ref::<SqliteError>().is_some());
    let err = SqliteStore::open(config_of(path))
        .await
        .expect_err("still refused");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err} names the file"
    );
    assert_eq!(
        fs::read(path).unwrap(),
        before,
        "the refused file was not written"
    );
    err
}

fn config_of(path: &Path) -> SqliteConfig {
    SqliteConfig::file(path)
}

#[tokio::test]
async fn a_text_file_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    fs::write(&path, "these are my notes, not a database\n".repeat(40)).unwrap();
    let err = refused(&path).await;
    assert!(matches!(err, SqliteError::NotADatabase { .. }), "{err:?}");
}

#[tokio::test]
async fn another_applications_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
        .unwrap();
    drop(conn);
    let err = refused(&path).await;
    assert!(
        matches!(
            err,
            SqliteError::ForeignDatabase {
                application_id: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let (_dir, path) = stored_pool(10).await;
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = refused(&path).await;
    assert!(
        matches!(
            err,
            SqliteError::NewerSchema {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Overwrites the pages in the middle of the file with a pattern.
fn damage_middle_pages(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let page = 4096;
    assert!(
        bytes.len() > 20 * page,
        "a file of many pages ({} bytes)",
        bytes.len()
    );
    let start = (bytes.len() / page / 2) * page;
    for b in &mut bytes[start..start + 4 * page] {
        *b = 0xA5;
    }
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn damaged_pages_are_refused_at_open() {
    let (_dir, path) = stored_pool(5_000).await;
    damage_middle_pages(&path);
    let err = refused(&path).await;
    assert!(matches!(err, SqliteError::Damaged { .. }), "{err:?}");
}

#[tokio::test]
async fn damaged_pages_fail_the_load_when_open_does_not_check() {
    let (_dir, path) = stored_pool(5_000).await;
    damage_middle_pages(&path);
    let config = SqliteConfig {
        verify_on_open: false,
        ..config_of(&path)
    };
    let store = SqliteStore::open(config)
        .await
        .expect("opening reads only the first pages");
    let err = store.load().await.expect_err("a load over damaged pages");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_truncated_file_is_refused() {
    let (_dir, path) = stored_pool(5_000).await;
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = refused(&path).await;
    assert!(matches!(err, SqliteError::Damaged { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_directory_is_an_open_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("pool.db");
    let err = SqliteStore::open(config_of(&path))
        .await
        .expect_err("no directory");
    assert!(matches!(err, SqliteError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_good_file_reopens_with_its_pool_and_fresh_revisions() {
    let (_dir, path) = stored_pool(3).await;
    let store = SqliteStore::open(config_of(&path)).await.unwrap();
    let loaded = store.load().await.unwrap().expect("the stored pool");
    assert_eq!(loaded.value, pool_of(3).snapshot());
    let mut pool = Pool::from_snapshot(loaded.value).unwrap();
    pool.add_available(
        ProjectId::new("late-1").unwrap(),
        TemplateName::new("default").unwrap(),
        Timestamp::from_millis(2),
    )
    .unwrap();
    let write = PoolWrite::Changes(pool.unsaved());
    let rev = store
        .save(&write, &Precondition::Matches(loaded.revision.clone()))
        .await
        .unwrap();
    assert_ne!(rev, loaded.revision);
    assert_eq!(store.load().await.unwrap().unwrap().value, pool.snapshot());
}
