//! The embedded default backend of the project pool: both storage traits over one SQLite
//! file, with no server and no system library to install (SQLite is compiled in).
//!
//! [`SqliteStore`] keeps each project as a row, the pool's version and owners in a header
//! row, and each project's metadata document in a table of its own. A save of the changes
//! since the stored version ([`PoolWrite::Changes`](pool_storage::PoolWrite)) writes only
//! the changed rows and the header, in one `BEGIN IMMEDIATE` transaction that also checks
//! the caller's precondition; so saving after one hand-out costs a few rows, not a
//! rewrite of a pool of 100,000 projects. Every write takes the next value of a counter
//! stored in the file, so a revision never repeats.
//!
//! The decision a reader may question: all writes of a store run on one dedicated thread
//! rather than on tokio's blocking pool. SQLite admits one writer at a time anyway; one
//! thread keeps this process's writes in the order they were asked for, keeps the writing
//! connection's prepared statements warm, and never parks blocking-pool threads on a lock.
//! It also lets metadata writes queued together share one transaction (each in a
//! savepoint of its own, each answered after the commit), so provisioning a burst of
//! projects costs one commit, not one per project.
//! Loads use separate read connections on the blocking pool, which WAL lets run during a
//! write. Between processes, SQLite's busy timeout and a retry loop wait out the other
//! writer, so callers never see "database is locked", only a `Timeout` after
//! [`SqliteConfig::busy_deadline`].
//!
//! A file is checked before anything is written to it: one that is not a SQLite database,
//! belongs to another application, is damaged, or has a schema from a newer release is
//! refused with a [`SqliteError`] naming it. Older schemas are migrated forward.
//!
//! | type | role |
//! | --- | --- |
//! | [`SqliteConfig`] | where the file is (also from a `sqlite://` URL) and how it is opened |
//! | [`SqliteStore`] | the store; [`SqliteStore::transact`] changes a few rows in place |
//! | [`SqliteError`] | why a URL or a file was refused |
//!
//! This crate has no cargo features.
//!
//! ```
//! use pool_core::{Pool, ProjectId, TemplateName, Timestamp};
//! use pool_sqlite::{SqliteConfig, SqliteStore};
//! use pool_storage::{PoolStore, PoolWrite, Precondition};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}/pool.db", dir.path().display());
//! let store = SqliteStore::open(SqliteConfig::from_url(&url)?).await?;
//!
//! let mut pool = Pool::new();
//! let rev = store.save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly).await?;
//! pool.mark_saved(pool.version());
//!
//! let id = ProjectId::new("default-1-9ca82")?;
//! pool.add_available(id, TemplateName::new("default")?, Timestamp::from_millis(1))?;
//! let changes = PoolWrite::Changes(pool.unsaved());
//! let rev = store.save(&changes, &Precondition::Matches(rev)).await?;
//!
//! let loaded = store.load().await?.expect("a stored pool");
//! assert_eq!((loaded.value, loaded.revision), (pool.snapshot(), rev));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod codec;
mod config;
mod error;
mod ops;
mod schema;
mod store;
mod transact;
mod txn;
mod worker;

pub use config::{Durability, Location, SqliteConfig};
pub use error::SqliteError;
pub use store::SqliteStore;
pub use transact::Select;
