//! Transactions and the retry on a busy database.
//!
//! Every read-then-write runs in a `BEGIN IMMEDIATE` transaction: it takes the write lock
//! before it reads, so the precondition it checks cannot change before it commits, and it
//! never has to upgrade a read lock (which SQLite may refuse without waiting). A lock held
//! by another connection is waited for by SQLite's busy timeout, and past that by
//! [`retry_busy`], so a caller sees a busy database only as a `Timeout` after the
//! configured deadline.

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{OpError, is_busy};

/// A failure that may be SQLite reporting a lock held elsewhere.
pub(crate) trait Busy {
    /// Whether retrying later can succeed because only a lock was in the way.
    fn is_busy(&self) -> bool;
}

impl Busy for rusqlite::Error {
    fn is_busy(&self) -> bool {
        is_busy(self)
    }
}

impl Busy for OpError {
    fn is_busy(&self) -> bool {
        OpError::is_busy(self)
    }
}

/// Runs `f` until it succeeds, fails for a reason other than a lock, or `deadline` has
/// passed; waits between attempts with a growing, capped pause.
pub(crate) fn retry_busy<T, E: Busy>(
    deadline: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    for attempt in 1u32.. {
        match f() {
            Err(e) if e.is_busy() && start.elapsed() < deadline => {
                let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::debug!(attempt, waited_ms, "database busy; retrying");
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// An open transaction, rolled back when dropped uncommitted.
pub(crate) struct Txn<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Txn<'c> {
    /// Begins a write transaction, taking the write lock now.
    pub(crate) fn immediate(conn: &'c Connection) -> rusqlite::Result<Self> {
        Self::begin(conn, "BEGIN IMMEDIATE")
    }

    /// Begins a read transaction: every read in it sees one committed state.
    pub(crate) fn read(conn: &'c Connection) -> rusqlite::Result<Self> {
        Self::begin(conn, "BEGIN")
    }

    fn begin(conn: &'c Connection, sql: &str) -> rusqlite::Result<Self> {
        conn.execute_batch(sql)?;
        Ok(Self { conn, open: true })
    }

    /// Commits; on failure the transaction is still open and is rolled back on drop.
    pub(crate) fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None)
    }

    #[test]
    fn busy_failures_are_retried_until_success() {
        let mut calls = 0;
        let got = retry_busy(Duration::from_secs(5), || {
            calls += 1;
            if calls < 4 { Err(busy()) } else { Ok(calls) }
        });
        assert_eq!(got.unwrap(), 4);
    }

    #[test]
    fn other_failures_and_the_deadline_end_the_retries() {
        let mut calls = 0;
        let got: Result<(), _> = retry_busy(Duration::from_secs(5), || {
            calls += 1;
            Err(rusqlite::Error::QueryReturnedNoRows)
        });
        assert!(got.is_err());
        assert_eq!(calls, 1);
        let start = Instant::now();
        let got: Result<(), _> = retry_busy(Duration::from_millis(30), || Err(busy()));
        assert!(got.unwrap_err().is_busy());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_dropped_transaction_rolls_back() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER)").unwrap();
        {
            let _txn = Txn::immediate(&conn).unwrap();
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
        let txn = Txn::immediate(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        txn.commit().unwrap();
        let sum: i64 = conn
            .query_row("SELECT sum(a) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sum, 2);
        assert!(conn.is_autocommit());
    }
}
