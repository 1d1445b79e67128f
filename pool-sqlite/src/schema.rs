//! The table layout, its forward migrations, and the checks that run before anything is
//! written to a file.
//!
//! A file is inspected with reads only: SQLite's own header (is it a database at all), the
//! application id and `user_version` (is it ours, and not from a newer release), and, for
//! an existing pool, `PRAGMA quick_check` (is every page sound). Only a file that passes is
//! switched to WAL and migrated, so a refused file is left byte for byte as it was.

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::config::{Durability, Location, SqliteConfig};
use crate::error::SqliteError;
use crate::txn::{Txn, retry_busy};

/// Marks a database as this store's (`PRAGMA application_id`); the bytes spell "Pool".
pub(crate) const APPLICATION_ID: i32 = 0x506f_6f6c;

/// Each step takes the schema from the version of its index to the next one; the
/// schema version (`PRAGMA user_version`) of a file is the number of steps applied.
pub(crate) const MIGRATIONS: &[&str] = &[V1];

/// The first layout: one row per project, the pool header, metadata documents, and the
/// revision counter every write takes the next value of.
const V1: &str = "
CREATE TABLE store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    last_revision INTEGER NOT NULL
);
INSERT INTO store (id, store_id, last_revision) VALUES (1, lower(hex(randomblob(8))), 0);
CREATE TABLE pool (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    snapshot_schema INTEGER NOT NULL,
    pool_version INTEGER NOT NULL,
    owners TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE projects (
    id TEXT PRIMARY KEY NOT NULL,
    template TEXT NOT NULL,
    status TEXT NOT NULL,
    holder TEXT,
    version INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    state TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX projects_by_status ON projects (template, status);
CREATE INDEX projects_by_holder ON projects (holder) WHERE holder IS NOT NULL;
CREATE TABLE metadata (
    project TEXT PRIMARY KEY NOT NULL,
    document BLOB NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The schema version this release writes.
pub(crate) fn current_version() -> i64 {
    version_of(MIGRATIONS)
}

fn version_of(steps: &[&str]) -> i64 {
    i64::try_from(steps.len()).unwrap_or(i64::MAX)
}

/// What a freshly opened writer connection knows about its file.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Random per file, so revisions of a re-created file never repeat an old one.
    pub(crate) store_id: String,
}

/// Opens the connection that writes, checks the file and brings its schema up to date.
pub(crate) fn open_writer(config: &SqliteConfig) -> Result<(Connection, Opened), SqliteError> {
    let location = config.location.to_string();
    let conn = connect(config, true).map_err(|e| classify(&location, e))?;
    let found = inspect(&conn, config).map_err(|e| classify(&location, e))?;
    refuse_unless_ours(&found, &location)?;
    if config.verify_on_open && found.user_version > 0 {
        verify(&conn, &location)?;
    }
    configure(&conn, config).map_err(|e| classify(&location, e))?;
    let deadline = config.busy_deadline;
    let from = retry_busy(deadline, || migrate(&conn, MIGRATIONS)).map_err(|e| match e {
        MigrateError::Newer(found) => newer(&location, found),
        MigrateError::Sql(e) => classify(&location, e),
    })?;
    log_migration(&location, from);
    let store_id = conn
        .query_row("SELECT store_id FROM store WHERE id = 1", [], |r| r.get(0))
        .map_err(|e| classify(&location, e))?;
    Ok((conn, Opened { store_id }))
}

/// Opens a read-only connection to a file the writer has already checked.
pub(crate) fn open_reader(config: &SqliteConfig) -> rusqlite::Result<Connection> {
    let conn = connect(config, false)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn connect(config: &SqliteConfig, create: bool) -> rusqlite::Result<Connection> {
    let conn = match &config.location {
        Location::Memory => Connection::open_in_memory()?,
        Location::File(path) => {
            let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            if create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(path, flags)?
        }
    };
    conn.busy_timeout(config.busy_timeout)?;
    Ok(conn)
}

struct Found {
    application_id: i32,
    user_version: i64,
    tables: i64,
}

/// Reads what identifies the file; SQLite reads the header page here, so a file that is
/// not a database fails now, before anything is written.
fn inspect(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<Found> {
    retry_busy(config.busy_deadline, || {
        let application_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let user_version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok(Found {
            application_id,
            user_version,
            tables,
        })
    })
}

fn refuse_unless_ours(found: &Found, location: &str) -> Result<(), SqliteError> {
    let fresh = found.application_id == 0 && found.user_version == 0 && found.tables == 0;
    if found.application_id != APPLICATION_ID && !fresh {
        let application_id = found.application_id;
        return Err(SqliteError::ForeignDatabase {
            location: location.to_owned(),
            application_id,
        });
    }
    if found.user_version > current_version() {
        return Err(newer(location, found.user_version));
    }
    Ok(())
}

fn newer(location: &str, found: i64) -> SqliteError {
    let supported = current_version();
    SqliteError::NewerSchema {
        location: location.to_owned(),
        found,
        supported,
    }
}

/// Checks every page; any finding makes the file [`SqliteError::Damaged`].
fn verify(conn: &Connection, location: &str) -> Result<(), SqliteError> {
    let mut findings = Vec::new();
    let checked = conn.pragma_query(None, "quick_check", |row| {
        findings.push(row.get::<_, String>(0)?);
        Ok(())
    });
    checked.map_err(|e| classify(location, e))?;
    if findings.len() == 1 && findings[0] == "ok" {
        return Ok(());
    }
    let detail = findings.into_iter().take(3).collect::<Vec<_>>().join("; ");
    Err(SqliteError::Damaged {
        location: location.to_owned(),
        detail,
    })
}

/// WAL (files only) and the durability asked for. Both are safe on a file that passed
/// [`inspect`].
fn configure(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    if let Location::File(_) = config.location {
        retry_busy(config.busy_deadline, || {
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get::<_, String>(0))
        })?;
    }
    let synchronous = match config.durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    conn.pragma_update(None, "synchronous", synchronous)
}

/// Why a migration did not run.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The file's schema is newer than `steps` knows (another process got there first).
    Newer(i64),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl crate::txn::Busy for MigrateError {
    fn is_busy(&self) -> bool {
        matches!(self, Self::Sql(e) if crate::error::is_busy(e))
    }
}

/// Applies the steps the file lacks in one write transaction; returns the version found.
/// Another process opening the same file at once waits for the lock and then finds
/// nothing left to do.
pub(crate) fn migrate(conn: &Connection, steps: &[&str]) -> Result<i64, MigrateError> {
    let txn = Txn::immediate(conn)?;
    let from: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let to = version_of(steps);
    if from > to {
        return Err(MigrateError::Newer(from));
    }
    if from == to {
        return Ok(from);
    }
    for step in steps
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
    {
        conn.execute_batch(step)?;
    }
    conn.pragma_update(None, "user_version", to)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    txn.commit()?;
    Ok(from)
}

fn log_migration(location: &str, from: i64) {
    let to = current_version();
    if from == 0 {
        tracing::info!(location, schema_version = to, "created a pool database");
    } else if from < to {
        tracing::info!(location, from, to, "migrated the pool database schema");
    }
}

/// The open error for a SQLite failure while opening.
fn classify(location: &str, e: rusqlite::Error) -> SqliteError {
    let location = location.to_owned();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => SqliteError::NotADatabase { location },
        Some(ErrorCode::DatabaseCorrupt) => SqliteError::Damaged {
            location,
            detail: e.to_string(),
        },
        _ => SqliteError::Open {
            location,
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_run_forward_from_the_stored_version_and_keep_data() {
        let conn = Connection::open_in_memory().unwrap();
        let v1 = "CREATE TABLE t (a INTEGER NOT NULL);";
        let v2 = "ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'two';";
        assert_eq!(migrate(&conn, &[v1]).unwrap(), 0);
        conn.execute("INSERT INTO t (a) VALUES (7)", []).unwrap();
        assert_eq!(migrate(&conn, &[v1, v2]).unwrap(), 1);
        assert_eq!(user_version(&conn), 2);
        let row: (i64, String) = conn
            .query_row("SELECT a, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, (7, "two".to_owned()));
        assert_eq!(migrate(&conn, &[v1, v2]).unwrap(), 2, "nothing left to do");
        let app: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
    }

    #[test]
    fn a_failing_step_leaves_the_schema_where_it_was() {
        let conn = Connection::open_in_memory().unwrap();
        let v1 = "CREATE TABLE t (a INTEGER);";
        migrate(&conn, &[v1]).unwrap();
        let broken = "CREATE TABLE u (a INTEGER); THIS IS NOT SQL;";
        assert!(matches!(
            migrate(&conn, &[v1, broken]),
            Err(MigrateError::Sql(_))
        ));
        assert_eq!(user_version(&conn), 1);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'u'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the half-applied step was rolled back");
    }

    #[test]
    fn a_newer_file_is_not_migrated() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        assert!(matches!(
            migrate(&conn, MIGRATIONS),
            Err(MigrateError::Newer(5))
        ));
        assert_eq!(user_version(&conn), 5);
    }

    #[test]
    fn the_current_layout_applies_cleanly() {
        let (conn, opened) = open_writer(&SqliteConfig::memory()).unwrap();
        assert_eq!(user_version(&conn), current_version());
        assert_eq!(opened.store_id.len(), 16);
        assert!(opened.store_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
