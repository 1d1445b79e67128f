//! Read-modify-write of a few rows in one SQLite transaction.
//!
//! A manager that keeps the whole pool in memory saves through the conditional
//! [`PoolStore::save`](pool_storage::PoolStore::save). A caller that does not, such as a
//! command-line tool handing out one project, can instead read just the rows it needs,
//! change them with the [`Pool`] operations, and write the result back, all under the
//! database's write lock: such a transaction never conflicts, it waits its turn.

use std::collections::{BTreeMap, HashSet};

use pool_core::{
    ConversationId, Pool, PoolSnapshot, ProjectId, ProjectRecord, SCHEMA_VERSION, StateKind,
    TemplateName,
};
use pool_storage::Versioned;
use rusqlite::{Connection, ToSql};

use crate::codec::{
    Ctx, PROJECT_COLUMNS, Put, decode_project, put_project, read_header, write_header,
};
use crate::error::OpError;
use crate::ops::{delete_projects, write};

/// Which stored projects a [`SqliteStore::transact`](crate::SqliteStore::transact) reads
/// into its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Select {
    /// These projects, those of them that are stored.
    Ids(Vec<ProjectId>),
    /// Up to `limit` projects of `template` in state `kind`, lowest ids first.
    InState {
        /// Their template.
        template: TemplateName,
        /// Their state.
        kind: StateKind,
        /// The most to read.
        limit: usize,
    },
    /// The project `conversation` holds, if any.
    HeldBy(ConversationId),
}

/// Reads the selected rows and the pool header into a [`Pool`], runs `f` on it, and
/// stores whatever `f` changed, in one write transaction. Returns `f`'s value and the
/// pool's revision afterwards (unchanged when `f` changed nothing).
pub(crate) fn transact<T>(
    conn: &Connection,
    ctx: &Ctx,
    select: &[Select],
    f: impl FnOnce(&mut Pool) -> T,
) -> Result<Versioned<T>, OpError> {
    write(conn, ctx, |conn| {
        let Some(header) = read_header(conn, ctx)? else {
            return Err(ctx.invalid("a transaction with no stored pool").into());
        };
        let records = read_selected(conn, ctx, select)?;
        let loaded: HashSet<ProjectId> = records.keys().cloned().collect();
        let snapshot = PoolSnapshot {
            schema_version: SCHEMA_VERSION,
            pool_version: header.pool_version,
            owners: header.owners,
            projects: records.into_values().collect(),
        };
        let mut pool = Pool::from_snapshot(snapshot).map_err(|e| {
            ctx.corrupt("the rows read for a transaction")
                .with_source(e)
        })?;
        let value = f(&mut pool);
        if pool.version() == header.pool_version {
            return Ok(Versioned {
                value,
                revision: ctx.revision(header.revision),
            });
        }
        let changes = pool.unsaved();
        delete_projects(conn, &changes.removed)?;
        for rec in &changes.changed {
            let put = if loaded.contains(&rec.id) {
                Put::Upsert
            } else {
                Put::Insert
            };
            put_project(conn, rec, put).map_err(|e| match e {
                OpError::Sql(e) if is_constraint(&e) => ctx
                    .invalid(format!(
                        "adding project {}, which is already stored",
                        rec.id
                    ))
                    .into(),
                other => other,
            })?;
        }
        check_single_holders(conn, ctx, &changes.changed)?;
        let revision = write_header(conn, pool.version(), pool.owners())?;
        Ok(Versioned {
            value,
            revision: ctx.revision(revision),
        })
    })
}

/// A transaction sees only some rows, so it checks that no conversation it handed a
/// project to holds another one among the rows it did not read.
fn check_single_holders(
    conn: &Connection,
    ctx: &Ctx,
    changed: &[ProjectRecord],
) -> Result<(), OpError> {
    let mut stmt = conn.prepare_cached("SELECT count(*) FROM projects WHERE holder = ?1")?;
    for (conversation, _) in changed.iter().filter_map(|r| r.state.holder()) {
        let held: u64 = stmt.query_row([conversation.as_str()], |r| r.get(0))?;
        if held > 1 {
            let msg = format!("handing conversation {conversation} a second project");
            return Err(ctx.invalid(msg).into());
        }
    }
    Ok(())
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

fn read_selected(
    conn: &Connection,
    ctx: &Ctx,
    select: &[Select],
) -> Result<BTreeMap<ProjectId, ProjectRecord>, OpError> {
    let mut records = BTreeMap::new();
    for (filter, args) in select.iter().flat_map(queries) {
        query(conn, ctx, filter, &args, &mut records)?;
    }
    Ok(records)
}

type Args = Vec<Box<dyn ToSql>>;

/// The `WHERE` clauses (and their arguments) that read one selection.
fn queries(select: &Select) -> Vec<(&'static str, Args)> {
    let text = |s: &str| -> Box<dyn ToSql> { Box::new(s.to_owned()) };
    match select {
        Select::Ids(ids) => ids
            .iter()
            .map(|id| ("id = ?1", vec![text(id.as_str())]))
            .collect(),
        Select::InState {
            template,
            kind,
            limit,
        } => {
            let limit: Box<dyn ToSql> = Box::new(i64::try_from(*limit).unwrap_or(i64::MAX));
            let args = vec![text(template.as_str()), text(&kind.to_string()), limit];
            vec![("template = ?1 AND status = ?2 ORDER BY id LIMIT ?3", args)]
        }
        Select::HeldBy(c) => vec![("holder = ?1", vec![text(c.as_str())])],
    }
}

fn query(
    conn: &Connection,
    ctx: &Ctx,
    filter: &str,
    args: &[Box<dyn ToSql>],
    into: &mut BTreeMap<ProjectId, ProjectRecord>,
) -> Result<(), OpError> {
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(row) = rows.next()? {
        let rec = decode_project(row, ctx)?;
        into.insert(rec.id.clone(), rec);
    }
    Ok(())
}
