//! Where the blocking SQLite calls run, so none runs on an async worker thread: one writer
//! thread per store, which owns the writing connection and takes jobs from a channel in
//! order, and read connections used on tokio's blocking pool. Each job enters the span of
//! the caller that queued it, so its events are logged in the caller's context.
//!
//! Small independent writes (a project's metadata document) are *parts*: the writer runs
//! every part queued at the moment it looks in one transaction, each inside a savepoint of
//! its own, and answers their callers once that transaction has committed. A part that
//! fails is rolled back to its savepoint alone. So a burst of provisioned projects costs
//! one commit (one `fsync` on a file) rather than one each, and no caller hears "stored"
//! before its write is.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, mpsc};
use std::thread;

use pool_storage::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;
use tracing::Span;

use crate::codec::Revisions;
use crate::config::SqliteConfig;
use crate::error::{BACKEND, OpError, SqliteError, sql_kind};
use crate::schema::{self, Opened};
use crate::txn::{Txn, retry_busy};

/// Parts the writer puts in one transaction, at most.
const MAX_GROUP: usize = 512;

enum Job {
    /// Runs on its own and opens whatever transactions it needs.
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Runs inside a transaction shared with the parts queued beside it.
    Part(Box<dyn Part>),
}

/// One write of a shared transaction.
trait Part: Send {
    /// Runs the write inside the open transaction, taking revisions from `revisions`;
    /// `false` if it failed (its error is kept for [`Part::finish`]).
    fn run(&mut self, conn: &Connection, revisions: &mut Revisions) -> bool;
    /// Answers the caller: the write's own result if the transaction committed, else
    /// why the transaction did not.
    fn finish(self: Box<Self>, ended: Result<(), &GroupFailure>);
}

/// Why a shared transaction did not commit.
struct GroupFailure {
    location: String,
    what: &'static str,
    error: rusqlite::Error,
}

impl GroupFailure {
    fn to_op_error(&self) -> OpError {
        let message = format!("{} on {}: {}", self.what, self.location, self.error);
        OpError::Store(StoreError::new(sql_kind(&self.error), BACKEND, message))
    }
}

struct Pending<T, F> {
    write: Option<F>,
    result: Option<Result<T, OpError>>,
    reply: oneshot::Sender<Result<T, OpError>>,
    span: Span,
}

impl<T, F> Part for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &mut Revisions) -> Result<T, OpError> + Send,
{
    fn run(&mut self, conn: &Connection, revisions: &mut Revisions) -> bool {
        let _entered = self.span.enter();
        let Some(write) = self.write.take() else {
            return false;
        };
        let result = write(conn, revisions);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, ended: Result<(), &GroupFailure>) {
        let answer = match (self.result, ended) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(failure)) => Err(failure.to_op_error()),
            (None, Ok(())) => return,
        };
        // The caller may have gone away; the work is done either way.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread was gone before it answered (it failed to open, or a job panicked).
#[derive(Debug)]
pub(crate) struct Stopped;

/// The writer thread and the channel to it. Dropping it lets the thread finish the jobs
/// already queued, close the database (checkpointing the WAL), and waits for that.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// The writer thread's answer to opening the database.
pub(crate) type Ready = oneshot::Receiver<Result<Opened, SqliteError>>;

impl Writer {
    /// Starts the thread, which opens and prepares the database and then reports on
    /// the returned receiver.
    pub(crate) fn start(config: SqliteConfig) -> Result<(Self, Ready), SqliteError> {
        let location = config.location.to_string();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("pool-sqlite-writer".into())
            .spawn(move || serve(&config, ready_tx, jobs_rx))
            .map_err(|e| SqliteError::open(&location, e))?;
        Ok((
            Self {
                jobs: Some(jobs_tx),
                thread: Some(thread),
            },
            ready_rx,
        ))
    }

    /// Runs `f` on the writer thread, after every job queued before it.
    ///
    /// If the returned future is dropped after the job was queued, the job still runs.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        let span = Span::current();
        let job = Job::Alone(Box::new(move |conn: &mut Connection| {
            let _entered = span.enter();
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(f(conn));
        }));
        self.send(job)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Runs `f` on the writer thread inside a write transaction it may share with other
    /// parts queued at the same time; answers once that transaction has committed. `f`
    /// must not begin or end a transaction itself, and takes revisions from the
    /// [`Revisions`] it is given, not from the file's counter directly.
    ///
    /// If the returned future is dropped after the part was queued, the write still runs.
    pub(crate) async fn part<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Revisions) -> Result<T, OpError> + Send + 'static,
    ) -> Result<Result<T, OpError>, Stopped> {
        let (reply, answer) = oneshot::channel();
        let part = Pending {
            write: Some(f),
            result: None,
            reply,
            span: Span::current(),
        };
        self.send(Job::Part(Box::new(part)))?;
        answer.await.map_err(|_| Stopped)
    }

    fn send(&self, job: Job) -> Result<(), Stopped> {
        let jobs = self.jobs.as_ref().ok_or(Stopped)?;
        jobs.send(job).map_err(|_| Stopped)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

fn serve(
    config: &SqliteConfig,
    ready: oneshot::Sender<Result<Opened, SqliteError>>,
    jobs: mpsc::Receiver<Job>,
) {
    let mut conn = match schema::open_writer(config) {
        Ok((conn, opened)) => {
            if ready.send(Ok(opened)).is_err() {
                return;
            }
            conn
        }
        Err(e) => {
            // Nobody waiting means nobody to tell.
            let _ = ready.send(Err(e));
            return;
        }
    };
    let location = config.location.to_string();
    let mut next = jobs.recv().ok();
    while let Some(job) = next.take() {
        let ran = match job {
            Job::Alone(f) => catch_unwind(AssertUnwindSafe(|| f(&mut conn))),
            Job::Part(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(Job::Part(p)) => group.push(p),
                        Ok(alone) => {
                            next = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                catch_unwind(AssertUnwindSafe(|| {
                    run_group(&conn, config, &location, group);
                }))
            }
        };
        // A panicking job has rolled its transaction back while unwinding; its caller
        // sees the writer as stopped for that call, and later jobs still run.
        if ran.is_err() {
            tracing::error!(location, "a job panicked on the SQLite writer thread");
        }
        if next.is_none() {
            next = jobs.recv().ok();
        }
    }
}

/// Runs one statement through the connection's statement cache.
fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Keeps a part's writes (`succeeded`) or undoes them, and ends its savepoint.
fn close_savepoint(conn: &Connection, succeeded: bool) -> rusqlite::Result<()> {
    if !succeeded {
        statement(conn, "ROLLBACK TO part")?;
    }
    statement(conn, "RELEASE part")
}

/// Runs `group` in one transaction, each part in a savepoint, and answers every part.
fn run_group(conn: &Connection, config: &SqliteConfig, location: &str, group: Vec<Box<dyn Part>>) {
    let failure = |what, error| GroupFailure {
        location: location.to_owned(),
        what,
        error,
    };
    let txn = match retry_busy(config.busy_deadline, || Txn::immediate(conn)) {
        Ok(txn) => txn,
        Err(e) => {
            let failed = failure("beginning a write", e);
            group.into_iter().for_each(|p| p.finish(Err(&failed)));
            return;
        }
    };
    let mut revisions = Revisions::default();
    let mut ran = Vec::with_capacity(group.len());
    let mut broken = None;
    for mut part in group {
        if broken.is_some() {
            ran.push(part);
            continue;
        }
        if let Err(e) = statement(conn, "SAVEPOINT part") {
            broken = Some(failure("opening a savepoint", e));
            ran.push(part);
            continue;
        }
        let succeeded = part.run(conn, &mut revisions);
        // SQLite may have rolled the whole transaction back on a severe error (a full
        // disk, an I/O error); then nothing of the group is stored.
        if conn.is_autocommit() {
            broken = Some(failure(
                "a write (the transaction was rolled back)",
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    None,
                ),
            ));
        } else if let Err(e) = close_savepoint(conn, succeeded) {
            broken = Some(failure("closing a savepoint", e));
        }
        ran.push(part);
    }
    if broken.is_none() {
        if let Err(e) = revisions.write_back(conn) {
            broken = Some(failure("storing the revision counter", e));
        }
    }
    let ended = match broken {
        Some(failed) => {
            drop(txn);
            Err(failed)
        }
        None => txn.commit().map_err(|e| failure("committing writes", e)),
    };
    let ended = ended.as_ref().map(|_| ());
    ran.into_iter().for_each(|p| p.finish(ended));
}
/// Idle read connections of a file database, opened on demand.
pub(crate) struct Readers {
    config: SqliteConfig,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(config: SqliteConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle read connection (or a new one); blocks.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => schema::open_reader(&self.config)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.max_idle_readers {
            idle.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rusqlite::params;

    use super::*;

    /// A writer on a fresh database with a table `t`, whose commits are counted.
    async fn writer() -> (Writer, Arc<AtomicUsize>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::file(dir.path().join("pool.db"));
        let (writer, ready) = Writer::start(config).unwrap();
        ready.await.unwrap().unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = commits.clone();
        let (done, setup) = oneshot::channel();
        let job = Job::Alone(Box::new(move |conn: &mut Connection| {
            conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
                .unwrap();
            let hook = move || {
                counter.fetch_add(1, Ordering::SeqCst);
                false
            };
            conn.commit_hook(Some(hook)).unwrap();
            let _ = done.send(());
        }));
        writer.send(job).unwrap();
        setup.await.unwrap();
        (writer, commits, dir)
    }

    /// Holds the writer thread until the returned sender is dropped, so that parts queued
    /// meanwhile are waiting together when it looks.
    fn hold(writer: &Writer) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let job = Job::Alone(Box::new(move |_| {
            let _ = held.recv();
        }));
        writer.send(job).unwrap();
        release
    }

    type Write = fn(&Connection, &mut Revisions) -> Result<i64, OpError>;

    fn insert(
        k: i64,
        v: &str,
    ) -> impl FnOnce(&Connection, &mut Revisions) -> Result<i64, OpError> + use<> {
        let v = v.to_owned();
        move |conn, _| {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, v])?;
            Ok(k)
        }
    }

    async fn rows(writer: &Writer) -> Vec<(i64, String)> {
        writer
            .call(|conn| {
                let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
                rows.collect::<Result<Vec<_>, _>>().unwrap()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn parts_queued_together_share_one_commit() {
        let (writer, commits, _dir) = writer().await;
        let before = commits.load(Ordering::SeqCst);
        let writer = Arc::new(writer);
        let release = hold(&writer);
        let parts: Vec<_> = (0..100)
            .map(|k| {
                let w = writer.clone();
                tokio::spawn(async move { w.part(insert(k, "x")).await })
            })
            .collect();
        // Every part reaches the queue while the writer is held.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(release);
        let mut keys = Vec::new();
        for part in parts {
            keys.push(part.await.unwrap().unwrap().unwrap());
        }
        keys.sort_unstable();
        assert_eq!(keys, (0..100).collect::<Vec<_>>());
        assert_eq!(commits.load(Ordering::SeqCst) - before, 1);
        assert_eq!(rows(&writer).await.len(), 100);
    }

    #[tokio::test]
    async fn a_failing_part_is_rolled_back_alone() {
        let (writer, commits, _dir) = writer().await;
        let before = commits.load(Ordering::SeqCst);
        let release = hold(&writer);
        let failing: Write = |conn, _| {
            conn.execute("INSERT INTO t (k, v) VALUES (7, 'partial')", [])?;
            // A duplicate key: the part fails after writing a row of its own.
            conn.execute("INSERT INTO t (k, v) VALUES (1, 'again')", [])?;
            Ok(7)
        };
        let (a, b, c, ()) = tokio::join!(
            writer.part(insert(1, "one")),
            writer.part(failing),
            writer.part(insert(2, "two")),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                drop(release);
            }
        );
        assert_eq!(a.unwrap().unwrap(), 1);
        assert!(matches!(b.unwrap(), Err(OpError::Sql(_))));
        assert_eq!(c.unwrap().unwrap(), 2);
        assert_eq!(commits.load(Ordering::SeqCst) - before, 1);
        let expected = vec![(1, "one".to_owned()), (2, "two".to_owned())];
        assert_eq!(rows(&writer).await, expected);
    }

    #[tokio::test]
    async fn a_job_of_its_own_ends_a_group_and_runs_in_order() {
        let (writer, _commits, _dir) = writer().await;
        let release = hold(&writer);
        let read_back = writer.call(|conn| {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        });
        let (first, seen, second, ()) = tokio::join!(
            writer.part(insert(1, "before")),
            read_back,
            writer.part(insert(2, "after")),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                drop(release);
            }
        );
        first.unwrap().unwrap();
        second.unwrap().unwrap();
        // The read was queued between the two parts: it sees the first and not the second.
        assert_eq!(seen.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_group_that_cannot_commit_fails_every_part() {
        let (writer, _commits, _dir) = writer().await;
        // A deferred foreign key is checked at commit: the group's commit fails.
        writer
            .call(|conn| {
                conn.execute_batch(
                    "PRAGMA foreign_keys = ON;
                     CREATE TABLE parent (id INTEGER PRIMARY KEY);
                     CREATE TABLE child (p INTEGER REFERENCES parent(id)
                                         DEFERRABLE INITIALLY DEFERRED);",
                )
                .unwrap();
            })
            .await
            .unwrap();
        let release = hold(&writer);
        let orphan: Write = |conn, _| {
            conn.execute("INSERT INTO child (p) VALUES (42)", [])?;
            Ok(42)
        };
        let (a, b, ()) = tokio::join!(writer.part(insert(1, "one")), writer.part(orphan), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(release);
        });
        for answer in [a.unwrap(), b.unwrap()] {
            match answer {
                Err(OpError::Store(e)) => assert!(e.to_string().contains("committing"), "{e}"),
                other => panic!("expected a failed commit, got {other:?}"),
            }
        }
        assert!(rows(&writer).await.is_empty());
        // The writer goes on: the next part commits.
        assert_eq!(writer.part(insert(3, "three")).await.unwrap().unwrap(), 3);
    }
}
