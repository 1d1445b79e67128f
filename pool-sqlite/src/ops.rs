//! The store's operations as plain blocking functions on a connection. The async store
//! runs them on its writer thread or on the blocking pool.

use pool_core::{PoolChanges, PoolSnapshot, ProjectId, SCHEMA_VERSION};
use pool_storage::{Metadata, PoolWrite, Precondition, Revision, StoreError, Versioned};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::{
    Consistency, Ctx, Header, PROJECT_COLUMNS, Put, Revisions, decode_project, put_project,
    read_header, write_header,
};
use crate::error::{BACKEND, OpError};
use crate::txn::{Txn, retry_busy};

/// Runs `f` in a write transaction, retrying while the write lock is held elsewhere.
/// `f` runs once: only taking the lock is retried.
pub(crate) fn write<T>(
    conn: &Connection,
    ctx: &Ctx,
    f: impl FnOnce(&Connection) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let txn = retry_busy(ctx.busy_deadline, || Txn::immediate(conn))?;
    let value = f(conn)?;
    txn.commit()?;
    Ok(value)
}

/// The stored pool, read in one transaction so header and rows agree.
pub(crate) fn load(
    conn: &Connection,
    ctx: &Ctx,
) -> Result<Option<Versioned<PoolSnapshot>>, OpError> {
    retry_busy(ctx.busy_deadline, || {
        let _txn = Txn::read(conn)?;
        let Some(header) = read_header(conn, ctx)? else {
            return Ok(None);
        };
        let projects = read_projects(conn, ctx, &header)?;
        let revision = ctx.revision(header.revision);
        let snapshot = PoolSnapshot {
            schema_version: SCHEMA_VERSION,
            pool_version: header.pool_version,
            owners: header.owners,
            projects,
        };
        Ok(Some(Versioned {
            value: snapshot,
            revision,
        }))
    })
}

fn read_projects(
    conn: &Connection,
    ctx: &Ctx,
    header: &Header,
) -> Result<Vec<pool_core::ProjectRecord>, OpError> {
    let mut check = Consistency::new(header, ctx)?;
    let count: usize = conn.query_row("SELECT count(*) FROM projects", [], |r| r.get(0))?;
    let mut projects = Vec::with_capacity(count);
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let rec = decode_project(row, ctx)?;
        check.check(&rec, ctx)?;
        projects.push(rec);
    }
    Ok(projects)
}

/// What a committed save wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) revision: Revision,
    pub(crate) rows: usize,
    pub(crate) bytes: usize,
}

/// Stores `w` if `pre` holds, in one write transaction.
pub(crate) fn save(
    conn: &Connection,
    ctx: &Ctx,
    w: &PoolWrite,
    pre: &Precondition,
) -> Result<Saved, OpError> {
    write(conn, ctx, |conn| {
        let header = read_header(conn, ctx)?;
        check_precondition(ctx, header.as_ref().map(|h| h.revision), pre, "the pool")?;
        if let Some(h) = &header {
            check_no_regression(ctx, h, w.pool_version())?;
        }
        let (rows, bytes, owners) = match w {
            PoolWrite::Full(s) => (s.projects.len(), write_full(conn, ctx, s)?, &s.owners),
            PoolWrite::Changes(c) => {
                let rows = c.changed.len() + c.removed.len();
                (
                    rows,
                    write_changes(conn, ctx, header.as_ref(), c)?,
                    &c.owners,
                )
            }
        };
        let revision = ctx.revision(write_header(conn, w.pool_version(), owners)?);
        Ok(Saved {
            revision,
            rows,
            bytes,
        })
    })
}

/// Fails with `Conflict` unless `pre` holds for a document whose stored revision counter
/// is `current` (`None`: not stored).
pub(crate) fn check_precondition(
    ctx: &Ctx,
    current: Option<u64>,
    pre: &Precondition,
    what: &str,
) -> Result<(), StoreError> {
    let holds = match (pre, current) {
        (Precondition::CreateOnly, current) => current.is_none(),
        (Precondition::Matches(r), Some(n)) => *r == ctx.revision(n),
        (Precondition::Matches(_), None) => false,
    };
    if holds {
        return Ok(());
    }
    let stored = current.map_or_else(|| "nothing".to_owned(), |n| ctx.revision(n).to_string());
    let msg = format!(
        "write of {what} in {} expected {pre:?}; stored is {stored}",
        ctx.location
    );
    Err(StoreError::conflict(BACKEND, msg))
}

fn check_no_regression(ctx: &Ctx, header: &Header, version: u64) -> Result<(), StoreError> {
    if version >= header.pool_version {
        return Ok(());
    }
    let stored = header.pool_version;
    Err(ctx.invalid(format!(
        "a write of pool version {version} over stored version {stored}"
    )))
}

fn write_full(conn: &Connection, ctx: &Ctx, s: &PoolSnapshot) -> Result<usize, OpError> {
    if s.schema_version != SCHEMA_VERSION {
        let found = s.schema_version;
        return Err(ctx.invalid(format!("a snapshot of schema {found}")).into());
    }
    conn.execute("DELETE FROM projects", [])?;
    let mut bytes = 0;
    for rec in &s.projects {
        bytes += put_project(conn, rec, Put::Insert)?;
    }
    Ok(bytes)
}

fn write_changes(
    conn: &Connection,
    ctx: &Ctx,
    header: Option<&Header>,
    c: &PoolChanges,
) -> Result<usize, OpError> {
    let Some(header) = header else {
        return Err(ctx
            .invalid("incremental changes with no stored pool to apply them to")
            .into());
    };
    if c.base_version != header.pool_version {
        let (base, stored) = (c.base_version, header.pool_version);
        let msg = format!("changes based on pool version {base} while {stored} is stored");
        return Err(ctx.invalid(msg).into());
    }
    delete_projects(conn, &c.removed)?;
    let mut bytes = 0;
    for rec in &c.changed {
        bytes += put_project(conn, rec, Put::Upsert)?;
    }
    Ok(bytes)
}

pub(crate) fn delete_projects(conn: &Connection, ids: &[ProjectId]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM projects WHERE id = ?1")?;
    for id in ids {
        stmt.execute([id.as_str()])?;
    }
    Ok(())
}

/// A project's metadata document and its revision.
pub(crate) fn get_metadata(
    conn: &Connection,
    ctx: &Ctx,
    project: &ProjectId,
) -> Result<Option<Versioned<Metadata>>, OpError> {
    let sql = "SELECT document, revision FROM metadata WHERE project = ?1";
    let row = retry_busy(ctx.busy_deadline, || {
        let mut stmt = conn.prepare_cached(sql)?;
        stmt.query_row([project.as_str()], |r| {
            Ok((r.get_ref(0)?.as_bytes()?.to_vec(), r.get(1)?))
        })
        .optional()
    })?;
    let Some((bytes, revision)) = row else {
        return Ok(None);
    };
    let location = metadata_location(ctx, project);
    let value = pool_storage::decode_metadata(BACKEND, &location, &bytes)?;
    Ok(Some(Versioned {
        value,
        revision: ctx.revision(revision),
    }))
}

/// Stores a project's metadata document if `pre` holds (always, with `None`). Runs inside
/// a write transaction the caller opened; a refused write changes nothing.
pub(crate) fn put_metadata(
    conn: &Connection,
    ctx: &Ctx,
    revisions: &mut Revisions,
    project: &ProjectId,
    bytes: &[u8],
    pre: Option<&Precondition>,
) -> Result<Revision, OpError> {
    if let Some(pre) = pre {
        let sql = "SELECT revision FROM metadata WHERE project = ?1";
        let current = conn
            .prepare_cached(sql)?
            .query_row([project.as_str()], |r| r.get(0));
        let current: Option<u64> = current.optional()?;
        check_precondition(ctx, current, pre, &metadata_location(ctx, project))?;
    }
    let revision = revisions.next(conn)?;
    let sql = "INSERT OR REPLACE INTO metadata (project, document, revision) \
               VALUES (?1, ?2, ?3)";
    conn.prepare_cached(sql)?
        .execute(params![project.as_str(), bytes, revision])?;
    Ok(ctx.revision(revision))
}

/// Removes a project's metadata document, if there is one. Runs inside a write
/// transaction the caller opened.
pub(crate) fn delete_metadata(conn: &Connection, project: &ProjectId) -> Result<(), OpError> {
    let mut stmt = conn.prepare_cached("DELETE FROM metadata WHERE project = ?1")?;
    stmt.execute([project.as_str()])?;
    Ok(())
}

/// Where a project's metadata lives, for messages.
pub(crate) fn metadata_location(ctx: &Ctx, project: &ProjectId) -> String {
    format!("{} (metadata of {project})", ctx.location)
}
