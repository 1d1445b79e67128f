//! Where the blocking SQLite calls run, so none runs on an async worker thread: one writer
//! thread per store, which owns the writing connection and takes jobs from a channel in
//! order, and read connections used on tokio's blocking pool. Each job enters the span of
//! the caller that queued it, so its events are logged in the caller's context.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, mpsc};
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;
use tracing::Span;

use crate::config::SqliteConfig;
use crate::error::{OpError, SqliteError};
use crate::schema::{self, Opened};

type Job = Box<dyn FnOnce(&Connection) + Send>;

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
        let job: Job = Box::new(move |conn| {
            let _entered = span.enter();
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(f(conn));
        });
        self.jobs
            .as_ref()
            .ok_or(Stopped)?
            .send(job)
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
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
    let conn = match schema::open_writer(config) {
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
    for job in jobs {
        // A panicking job has rolled its transaction back while unwinding; its caller
        // sees the writer as stopped for that call, and later jobs still run.
        if catch_unwind(AssertUnwindSafe(|| job(&conn))).is_err() {
            let location = config.location.to_string();
            tracing::error!(location, "a job panicked on the SQLite writer thread");
        }
    }
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
