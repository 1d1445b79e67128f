//! How records and the pool header are laid out in rows, and the checks that what is read
//! back is a pool this store could have written.
//!
//! A project row keeps its id, template, version and change time as columns, its state as
//! JSON, and two columns derived from the state (`status`, `holder`) that the indexes use.
//! Reading a row validates every id, decodes the state and checks the derived columns
//! against it; loading a pool also checks what [`pool_core::Pool::from_snapshot`] checks
//! (no record newer than the pool, no conversation holding two projects, no owner newer
//! than the pool), so a damaged row is a `Corrupt` error, never a silently different pool.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pool_core::{
    ConversationId, OwnerId, OwnerLease, ProjectId, ProjectRecord, ProjectState, SCHEMA_VERSION,
    TemplateName, Timestamp,
};
use pool_storage::{ErrorKind, Revision, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{BACKEND, OpError};

/// The project columns, in the order [`decode_project`] reads them.
pub(crate) const PROJECT_COLUMNS: &str = "id, template, status, holder, version, changed_at, state";

/// What every operation on one database needs to know.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The file (or `sqlite::memory:`), for messages.
    pub(crate) location: String,
    /// Random per database; the first part of every revision.
    pub(crate) store_id: String,
    /// How long to keep retrying a busy database.
    pub(crate) busy_deadline: Duration,
}

impl Ctx {
    /// The revision string of counter value `n`.
    pub(crate) fn revision(&self, n: u64) -> Revision {
        Revision::new(format!("{}.{n}", self.store_id))
    }

    /// A `Corrupt` error about `what` in this database.
    pub(crate) fn corrupt(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            ErrorKind::Corrupt,
            BACKEND,
            format!("{what} in {}", self.location),
        )
    }

    /// An `InvalidInput` error: the request does not fit what is stored.
    pub(crate) fn invalid(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            ErrorKind::InvalidInput,
            BACKEND,
            format!("{what} ({})", self.location),
        )
    }
}

/// The pool header row.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) snapshot_schema: u32,
    pub(crate) pool_version: u64,
    pub(crate) owners: BTreeMap<OwnerId, OwnerLease>,
    pub(crate) revision: u64,
}

/// The stored header, or `None` when no pool has been stored.
pub(crate) fn read_header(conn: &Connection, ctx: &Ctx) -> Result<Option<Header>, OpError> {
    let sql = "SELECT snapshot_schema, pool_version, owners, revision FROM pool WHERE id = 1";
    let row = conn
        .prepare_cached(sql)?
        .query_row([], |r| {
            let owners: Vec<u8> = r.get_ref(2)?.as_bytes()?.to_vec();
            Ok((r.get(0)?, r.get(1)?, owners, r.get(3)?))
        })
        .optional()?;
    let Some((snapshot_schema, pool_version, owners, revision)) = row else {
        return Ok(None);
    };
    let owners = serde_json::from_slice(&owners)
        .map_err(|e| ctx.corrupt("the pool header's owners").with_source(e))?;
    Ok(Some(Header {
        snapshot_schema,
        pool_version,
        owners,
        revision,
    }))
}

/// Stores the header under the next revision, which it returns.
pub(crate) fn write_header(
    conn: &Connection,
    pool_version: u64,
    owners: &BTreeMap<OwnerId, OwnerLease>,
) -> Result<u64, OpError> {
    let revision = next_revision(conn)?;
    let owners = serde_json::to_string(owners).map_err(|e| {
        StoreError::new(ErrorKind::InvalidInput, BACKEND, "encoding owners").with_source(e)
    })?;
    let sql = "INSERT OR REPLACE INTO pool (id, snapshot_schema, pool_version, owners, revision) \
               VALUES (1, ?1, ?2, ?3, ?4)";
    conn.prepare_cached(sql)?
        .execute(params![SCHEMA_VERSION, pool_version, owners, revision])?;
    Ok(revision)
}

/// The revision counter as the writes of one shared transaction use it: read from the
/// file when the first of them needs a revision, advanced in memory, and written back
/// once before the commit. A write that is rolled back leaves a gap, never a repeat.
#[derive(Debug, Default)]
pub(crate) struct Revisions {
    last: Option<u64>,
}

impl Revisions {
    /// The next revision.
    pub(crate) fn next(&mut self, conn: &Connection) -> rusqlite::Result<u64> {
        let last = match self.last {
            Some(n) => n,
            None => {
                let sql = "SELECT last_revision FROM store WHERE id = 1";
                conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?
            }
        };
        self.last = Some(last + 1);
        Ok(last + 1)
    }

    /// Stores the counter, if any revision was taken.
    pub(crate) fn write_back(&self, conn: &Connection) -> rusqlite::Result<()> {
        if let Some(n) = self.last {
            let sql = "UPDATE store SET last_revision = ?1 WHERE id = 1";
            conn.prepare_cached(sql)?.execute([n])?;
        }
        Ok(())
    }
}

/// Takes the next value of the revision counter, which only ever grows.
pub(crate) fn next_revision(conn: &Connection) -> rusqlite::Result<u64> {
    let sql = "UPDATE store SET last_revision = last_revision + 1 WHERE id = 1 \
               RETURNING last_revision";
    conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
}

/// How a record is written: a plain insert (the id must be new) or an insert-or-update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Insert,
    Upsert,
}

/// Writes one record; returns the bytes of column data written, for statistics.
pub(crate) fn put_project(
    conn: &Connection,
    rec: &ProjectRecord,
    put: Put,
) -> Result<usize, OpError> {
    const INSERT: &str = "INSERT INTO projects (id, template, status, holder, version, \
                          changed_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    const UPSERT: &str = "INSERT INTO projects (id, template, status, holder, version, \
                          changed_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                          ON CONFLICT (id) DO UPDATE SET template = excluded.template, \
                          status = excluded.status, holder = excluded.holder, \
                          version = excluded.version, changed_at = excluded.changed_at, \
                          state = excluded.state";
    let state = serde_json::to_string(&rec.state).map_err(|e| {
        StoreError::new(ErrorKind::InvalidInput, BACKEND, "encoding a project state").with_source(e)
    })?;
    let status = rec.state.kind().to_string();
    let holder = rec.state.holder().map(|(c, _)| c.as_str());
    let sql = if put == Put::Insert { INSERT } else { UPSERT };
    conn.prepare_cached(sql)?.execute(params![
        rec.id.as_str(),
        rec.template.as_str(),
        status,
        holder,
        rec.version,
        rec.changed_at.as_millis(),
        state,
    ])?;
    let bytes = rec.id.as_str().len() + rec.template.as_str().len() + status.len();
    Ok(bytes + holder.map_or(0, str::len) + 16 + state.len())
}

/// Reads one project row (selected with [`PROJECT_COLUMNS`]), checking it.
pub(crate) fn decode_project(row: &Row<'_>, ctx: &Ctx) -> Result<ProjectRecord, OpError> {
    let id_text: String = row.get(0)?;
    let what = || format!("project row {id_text:?}");
    let bad = |e: pool_core::IdError| ctx.corrupt(what()).with_source(e);
    let id = ProjectId::new(id_text.as_str()).map_err(bad)?;
    let template = TemplateName::new(row.get::<_, String>(1)?).map_err(bad)?;
    let status: String = row.get(2)?;
    let holder: Option<String> = row.get(3)?;
    let version: u64 = row.get(4)?;
    let changed_at = Timestamp::from_millis(row.get(5)?);
    let state_bytes = row.get_ref(6)?.as_bytes();
    let state_bytes = state_bytes.map_err(|e| ctx.corrupt(what()).with_source(e))?;
    let state: ProjectState = serde_json::from_slice(state_bytes).map_err(|e| {
        ctx.corrupt(format!("the state of {}", what()))
            .with_source(e)
    })?;
    if status != state.kind().to_string() {
        let msg = format!(
            "{}: status column {status:?} but state {}",
            what(),
            state.kind()
        );
        return Err(ctx.corrupt(msg).into());
    }
    if holder.as_deref() != state.holder().map(|(c, _)| c.as_str()) {
        return Err(ctx
            .corrupt(format!(
                "{}: holder column disagrees with its state",
                what()
            ))
            .into());
    }
    Ok(ProjectRecord {
        id,
        template,
        state,
        version,
        changed_at,
    })
}

/// The checks a loaded pool must pass, made row by row as the rows stream in.
pub(crate) struct Consistency {
    pool_version: u64,
    holders: HashSet<ConversationId>,
}

impl Consistency {
    /// Checks for a pool stored at `header`'s version, starting with the header itself.
    pub(crate) fn new(header: &Header, ctx: &Ctx) -> Result<Self, StoreError> {
        if header.snapshot_schema != SCHEMA_VERSION {
            let msg = format!(
                "the pool header's snapshot schema {} (this release reads {SCHEMA_VERSION})",
                header.snapshot_schema
            );
            return Err(ctx.corrupt(msg));
        }
        let pool_version = header.pool_version;
        if let Some((owner, _)) = header.owners.iter().find(|(_, l)| l.version > pool_version) {
            return Err(ctx.corrupt(format!("owner {owner} newer than the pool")));
        }
        Ok(Self {
            pool_version,
            holders: HashSet::new(),
        })
    }

    /// Checks one record against the pool and the records seen before it.
    pub(crate) fn check(&mut self, rec: &ProjectRecord, ctx: &Ctx) -> Result<(), StoreError> {
        if rec.version > self.pool_version {
            let msg = format!(
                "project {} at version {} above the pool's {}",
                rec.id, rec.version, self.pool_version
            );
            return Err(ctx.corrupt(msg));
        }
        if let Some((conversation, _)) = rec.state.holder() {
            if !self.holders.insert(conversation.clone()) {
                return Err(
                    ctx.corrupt(format!("conversation {conversation} holding two projects"))
                );
            }
        }
        Ok(())
    }
}
