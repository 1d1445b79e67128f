//! The storage conformance suite against real database files, one per scenario.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pool_core::ProjectId;
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::conformance::{Harness, Stores};
use rusqlite::{Connection, params};
use tempfile::TempDir;

/// What a scenario's stores need to stay alive, and where their file is.
struct Raw {
    _dir: TempDir,
    path: std::path::PathBuf,
}

fn raw(stores: &Stores) -> &Raw {
    stores
        .raw
        .downcast_ref()
        .expect("the sqlite harness's raw handle")
}

/// A connection of the test's own, beside the store's.
fn side_connection(stores: &Stores) -> Connection {
    let conn = Connection::open(&raw(stores).path).expect("open the file directly");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

struct Files;

#[async_trait]
impl Harness for Files {
    async fn fresh(&self) -> Stores {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("pool.db");
        let store = SqliteStore::open(SqliteConfig::file(&path))
            .await
            .expect("open");
        let raw: Arc<dyn Any + Send + Sync> = Arc::new(Raw { _dir: dir, path });
        Stores {
            pool: Arc::new(store.clone()),
            metadata: Arc::new(store),
            raw,
        }
    }

    /// Plants the bytes where the first project's encoded state is stored.
    async fn write_raw_pool(&self, stores: &Stores, bytes: &[u8]) {
        let conn = side_connection(stores);
        let sql = "UPDATE projects SET state = ?1 WHERE id = (SELECT min(id) FROM projects)";
        let changed = conn.execute(sql, params![bytes]).expect("plant bytes");
        assert_eq!(changed, 1, "a stored project to plant the bytes in");
    }

    async fn write_raw_metadata(&self, stores: &Stores, project: &ProjectId, bytes: &[u8]) {
        let conn = side_connection(stores);
        let sql = "INSERT OR REPLACE INTO metadata (project, document, revision) \
                   VALUES (?1, ?2, (SELECT last_revision + 1 FROM store))";
        conn.execute(sql, params![project.as_str(), bytes])
            .expect("plant bytes");
        conn.execute("UPDATE store SET last_revision = last_revision + 1", [])
            .expect("bump");
    }
}

pool_storage::conformance_tests!(Some(Files));
