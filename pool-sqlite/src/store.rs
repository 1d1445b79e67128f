//! [`SqliteStore`]: both storage traits over one database.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use pool_core::{Pool, PoolSnapshot, ProjectId};
use pool_storage::{
    Capabilities, ErrorKind, Metadata, MetadataStore, PoolStore, PoolWrite, Precondition, Revision,
    StoreError, Versioned,
};
use rusqlite::Connection;
use tracing::Span;

use crate::codec::{Ctx, Revisions};
use crate::config::{Location, SqliteConfig};
use crate::error::{BACKEND, OpError, SqliteError};
use crate::ops;
use crate::schema::Opened;
use crate::transact::{Select, transact};
use crate::worker::{Readers, Stopped, Writer};

/// A pool store and metadata store in one SQLite database.
///
/// Clones share the database connections. Writes run in order on the store's own writer
/// thread; loads run on tokio's blocking pool over separate read connections (WAL lets
/// them proceed while a write is in progress). Several stores, in one process or many, may
/// open the same file: SQLite's locks serialise their writes and the conditional save
/// tells each about the others' writes.
///
/// Dropping the last clone waits for queued writes to finish and closes the database.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Ctx>,
    memory: bool,
    readers: Option<Readers>,
    // Dropped last: it waits for the writer thread to close the database.
    writer: Writer,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.ctx.location)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database `config` names, checks it and migrates its
    /// schema forward. A file that is not a pool database, is damaged, or comes from a
    /// newer release is refused and left untouched. The blocking work runs on the store's
    /// writer thread.
    pub async fn open(config: SqliteConfig) -> Result<Self, SqliteError> {
        let (writer, ready) = Writer::start(config.clone())?;
        let opened = ready.await;
        Self::assemble(config, writer, opened.ok())
    }

    /// [`SqliteStore::open`] for code outside an async runtime.
    ///
    /// # Panics
    ///
    /// When called from within an async runtime; use [`SqliteStore::open`] there.
    pub fn open_blocking(config: SqliteConfig) -> Result<Self, SqliteError> {
        let (writer, ready) = Writer::start(config.clone())?;
        let opened = ready.blocking_recv();
        Self::assemble(config, writer, opened.ok())
    }

    fn assemble(
        config: SqliteConfig,
        writer: Writer,
        opened: Option<Result<Opened, SqliteError>>,
    ) -> Result<Self, SqliteError> {
        let location = config.location.to_string();
        let stopped = || SqliteError::open(&location, "the writer thread stopped while opening");
        let opened = opened.ok_or_else(stopped)??;
        let memory = config.location == Location::Memory;
        let ctx = Ctx {
            location,
            store_id: opened.store_id,
            busy_deadline: config.busy_deadline,
        };
        let readers = (!memory).then(|| Readers::new(config));
        Ok(Self {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                memory,
                readers,
                writer,
            }),
        })
    }

    /// The file this store keeps its data in (or `sqlite::memory:`).
    pub fn location(&self) -> &str {
        &self.inner.ctx.location
    }

    /// Reads the pool header and the `select`ed rows into a [`Pool`], runs `f` on it, and
    /// stores what `f` changed, all in one write transaction; returns `f`'s value and the
    /// pool's revision afterwards.
    ///
    /// Unlike a load followed by a conditional save, this never conflicts: it holds the
    /// database's write lock from the read to the commit, so concurrent transactions (in
    /// this process or others) run one after the other. `f` sees only the selected
    /// projects and every owner; a project it adds must not be stored already, and it
    /// must not hand a conversation a second project, or nothing is stored and the call
    /// fails with `InvalidInput`. If `f` changes nothing, nothing is written.
    ///
    /// Fails with `InvalidInput` when no pool is stored.
    pub async fn transact<T, F>(
        &self,
        select: Vec<Select>,
        f: F,
    ) -> Result<Versioned<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Pool) -> T + Send + 'static,
    {
        let result = self
            .write(move |conn, ctx| transact(conn, ctx, &select, f))
            .await;
        result.map_err(|e| e.into_store(|| format!("a transaction on {}", self.location())))
    }

    /// Runs `f` on the writer thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Ctx) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let ctx = self.inner.ctx.clone();
        let answer = self.inner.writer.call(move |conn| f(conn, &ctx)).await;
        answer.unwrap_or_else(|Stopped| Err(self.stopped()))
    }

    /// Runs `f` on the writer thread in a write transaction it may share with other
    /// small writes queued at the same time (see the `worker` module); answers once the
    /// transaction has committed.
    async fn part<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Ctx, &mut Revisions) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let ctx = self.inner.ctx.clone();
        let answer = self
            .inner
            .writer
            .part(move |conn, revisions| f(conn, &ctx, revisions))
            .await;
        answer.unwrap_or_else(|Stopped| Err(self.stopped()))
    }

    /// Runs `f` on a read connection on the blocking pool; on the writer thread for an
    /// in-memory database (which has a single connection) or outside a tokio runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Ctx) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        if self.inner.readers.is_none() || tokio::runtime::Handle::try_current().is_err() {
            return self.write(f).await;
        }
        let inner = self.inner.clone();
        let span = Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            match &inner.readers {
                Some(readers) => readers.with(|conn| f(conn, &inner.ctx)),
                None => Err(OpError::Store(stopped(&inner.ctx))),
            }
        });
        task.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> OpError {
        OpError::Store(stopped(&self.inner.ctx))
    }
}

fn stopped(ctx: &Ctx) -> StoreError {
    let msg = format!(
        "the operation on {} stopped before it answered",
        ctx.location
    );
    StoreError::new(ErrorKind::Other, BACKEND, msg)
}

#[async_trait]
impl PoolStore for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: BACKEND,
            incremental_saves: true,
            shared_between_processes: !self.inner.memory,
            max_document_bytes: None,
        }
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        let loaded = self
            .read(|conn, ctx| {
                let loaded = ops::load(conn, ctx);
                log_loaded(&loaded);
                loaded
            })
            .await;
        loaded.map_err(|e| e.into_store(|| format!("loading the pool from {}", self.location())))
    }

    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        let (w, pre) = (write.clone(), precondition.clone());
        let result = self
            .write(move |conn, ctx| {
                let saved = ops::save(conn, ctx, &w, &pre);
                log_save(&w, &saved);
                saved
            })
            .await;
        let saved =
            result.map_err(|e| e.into_store(|| format!("saving the pool to {}", self.location())));
        saved.map(|s| s.revision)
    }
}

fn log_loaded(loaded: &Result<Option<Versioned<PoolSnapshot>>, OpError>) {
    if let Ok(Some(v)) = loaded {
        let (projects, pool_version) = (v.value.projects.len(), v.value.pool_version);
        tracing::debug!(projects, pool_version, revision = %v.revision, "loaded the pool");
    }
}

fn log_save(write: &PoolWrite, saved: &Result<ops::Saved, OpError>) {
    let kind = match write {
        PoolWrite::Full(_) => "full",
        PoolWrite::Changes(_) => "changes",
    };
    let pool_version = write.pool_version();
    match saved {
        Ok(s) => tracing::debug!(
            kind,
            pool_version,
            rows = s.rows,
            bytes = s.bytes,
            revision = %s.revision,
            "saved the pool"
        ),
        Err(OpError::Store(e)) if e.is_conflict() => {
            tracing::debug!(kind, pool_version, "save refused: the stored pool changed")
        }
        Err(_) => {}
    }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError> {
        let id = project.clone();
        let got = self
            .read(move |conn, ctx| ops::get_metadata(conn, ctx, &id))
            .await;
        got.map_err(|e| e.into_store(|| format!("reading {}", self.metadata_location(project))))
    }

    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError> {
        let bytes = serde_json::to_vec(metadata).map_err(|e| {
            StoreError::new(ErrorKind::InvalidInput, BACKEND, "encoding metadata").with_source(e)
        })?;
        let id = project.clone();
        let put = self
            .part(move |conn, ctx, revisions| {
                ops::put_metadata(conn, ctx, revisions, &id, &bytes, precondition.as_ref())
            })
            .await;
        put.map_err(|e| e.into_store(|| format!("writing {}", self.metadata_location(project))))
    }

    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError> {
        let id = project.clone();
        let deleted = self
            .part(move |conn, _, _| ops::delete_metadata(conn, &id))
            .await;
        deleted
            .map_err(|e| e.into_store(|| format!("deleting {}", self.metadata_location(project))))
    }

    fn metadata_location(&self, project: &ProjectId) -> String {
        ops::metadata_location(&self.inner.ctx, project)
    }
}
