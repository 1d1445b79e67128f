//! Several OS processes on one database file: conditional saves racing across processes,
//! and a writer killed with SIGKILL in the middle of its write loop.
//!
//! This test binary has its own `main`: started with `POOL_SQLITE_CHILD` set, it is a
//! child writer that takes commands on stdin and answers on stdout; otherwise it runs the
//! scenarios, which start children by re-executing this same binary.
#![allow(
    clippy::unwrap_used,
    reason = "built without the test harness, so without cfg(test); a failed step panics"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pool_core::{Pool, ProjectId, TemplateName, Timestamp};
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{PoolStore, PoolWrite, Precondition, Revision};

const CHILD_ENV: &str = "POOL_SQLITE_CHILD";
const DB_ENV: &str = "POOL_SQLITE_DB";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child::run();
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: [(&str, fn()); 3] = [
        (
            "saves_racing_from_two_processes_conflict_exactly_once",
            racing_saves_conflict_once,
        ),
        (
            "two_processes_hammering_one_file_lose_nothing",
            hammering_loses_nothing,
        ),
        (
            "a_writer_killed_mid_loop_leaves_its_last_commit",
            killed_writer_leaves_last_commit,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let outcome = std::panic::catch_unwind(scenario);
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_ok() {
            passed += 1
        } else {
            failed += 1
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn template() -> TemplateName {
    TemplateName::new("default").unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates the file with an empty pool at version 0.
fn create_pool(path: &Path) {
    runtime().block_on(async {
        let store = SqliteStore::open(SqliteConfig::file(path)).await.unwrap();
        let empty = PoolWrite::Full(Pool::new().snapshot());
        store.save(&empty, &Precondition::CreateOnly).await.unwrap();
    });
}

fn load(path: &Path) -> (Pool, Revision) {
    runtime().block_on(async {
        let store = SqliteStore::open(SqliteConfig::file(path)).await.unwrap();
        let stored = store.load().await.unwrap().expect("a stored pool");
        let pool = Pool::from_snapshot(stored.value).expect("a consistent pool");
        pool.check_invariants().expect("the pool's invariants");
        (pool, stored.revision)
    })
}

/// A child writer process and the lines it answers with.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Writer {
    fn start(path: &Path) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .env(CHILD_ENV, "1")
            .env(DB_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn answer(&self) -> String {
        self.lines
            .recv_timeout(ANSWER_TIMEOUT)
            .expect("the child answers in time")
    }

    fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.answer()
    }

    fn quit(mut self) {
        self.send("quit");
        let status = wait_bounded(&mut self.child);
        assert!(status.success(), "the child exited with {status}");
    }
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > ANSWER_TIMEOUT {
            child.kill().unwrap();
            panic!("the child did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Both children load the same revision, then both save at once: one must store its
/// write and the other must be told `Conflict`, every round.
fn racing_saves_conflict_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    create_pool(&path);
    let (mut a, mut b) = (Writer::start(&path), Writer::start(&path));
    let mut winners = Vec::new();
    for round in 0..40 {
        assert!(a.ask("load").starts_with("loaded "));
        assert!(b.ask("load").starts_with("loaded "));
        a.send(&format!("add a-{round}"));
        b.send(&format!("add b-{round}"));
        let answers = [a.answer(), b.answer()];
        let oks: Vec<usize> = (0..2).filter(|i| answers[*i].starts_with("ok ")).collect();
        let conflicts = answers.iter().filter(|s| *s == "conflict").count();
        assert_eq!((oks.len(), conflicts), (1, 1), "round {round}: {answers:?}");
        winners.push(format!("{}-{round}", ["a", "b"][oks[0]]));
    }
    a.quit();
    b.quit();
    let (pool, _) = load(&path);
    let stored: HashSet<String> = pool.records().map(|r| r.id.to_string()).collect();
    assert_eq!(
        stored,
        winners.into_iter().collect(),
        "exactly the winners are stored"
    );
    assert_eq!(pool.version(), 40);
}

/// Both children add projects as fast as they can, retrying on `Conflict`: every write
/// acknowledged is stored, and nothing else is.
fn hammering_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    create_pool(&path);
    let (mut a, mut b) = (Writer::start(&path), Writer::start(&path));
    const EACH: usize = 150;
    a.send(&format!("hammer a {EACH}"));
    b.send(&format!("hammer b {EACH}"));
    let mut acked = HashSet::new();
    let mut conflicts = 0;
    for w in [&a, &b] {
        loop {
            let line = w.answer();
            let mut words = line.split(' ');
            match words.next() {
                Some("ok") => assert!(acked.insert(words.next().unwrap().to_owned()), "{line}"),
                Some("conflict") => conflicts += 1,
                Some("done") => break,
                _ => panic!("unexpected answer {line:?}"),
            }
        }
    }
    a.quit();
    b.quit();
    assert_eq!(acked.len(), 2 * EACH);
    let (pool, _) = load(&path);
    let stored: HashSet<String> = pool.records().map(|r| r.id.to_string()).collect();
    assert_eq!(
        stored, acked,
        "every acknowledged write and nothing else ({conflicts} conflicts)"
    );
    assert_eq!(pool.version(), 2 * EACH as u64);
}

/// A child writes batches in a loop and reports each commit; it is killed with SIGKILL
/// at varying moments. After each kill the file opens, its last reported commit (or the
/// one after, committed but not yet reported) loads cleanly, and SQLite finds no damage.
fn killed_writer_leaves_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    create_pool(&path);
    for round in 0..4u64 {
        let mut w = Writer::start(&path);
        w.send(&format!("loop r{round}"));
        let mut last = None;
        for _ in 0..(10 + 7 * round) {
            last = Some(w.answer());
        }
        std::thread::sleep(Duration::from_millis(3 * round));
        w.child.kill().unwrap();
        let status = wait_bounded(&mut w.child);
        assert!(!status.success(), "the child was killed");
        // The dead child's pipe is closed: read what it printed before it died.
        while let Ok(line) = w.lines.recv_timeout(ANSWER_TIMEOUT) {
            last = Some(line);
        }
        let last = last.expect("at least one commit");
        let mut words = last.split(' ');
        assert_eq!(words.next(), Some("committed"), "{last}");
        let version: u64 = words.next().unwrap().parse().unwrap();
        let revision = Revision::new(words.next().unwrap());
        check_after_kill(&path, version, &revision);
    }
}

const BATCH: u64 = 200;

fn check_after_kill(path: &Path, reported: u64, revision: &Revision) {
    let (pool, stored_revision) = load(path);
    assert!(
        pool.version() == reported || pool.version() == reported + BATCH,
        "stored version {} after the last reported commit {reported}",
        pool.version()
    );
    if pool.version() == reported {
        assert_eq!(
            &stored_revision, revision,
            "the last reported commit is what is stored"
        );
    }
    assert_eq!(
        pool.len() as u64,
        pool.version(),
        "each project added is one version"
    );
    let conn = rusqlite::Connection::open(path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

mod child {
    //! The child writer: commands on stdin, one answer line each on stdout.

    use super::*;

    pub(super) fn run() {
        let path = std::env::var_os(DB_ENV).expect("the database path");
        let rt = runtime();
        let store = rt
            .block_on(SqliteStore::open(SqliteConfig::file(&path)))
            .unwrap();
        let mut held: Option<(Pool, Revision)> = None;
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["load"] => {
                    let (pool, rev) = rt.block_on(load_from(&store));
                    say(&format!("loaded {}", pool.version()));
                    held = Some((pool, rev));
                }
                ["add", id] => {
                    let (pool, rev) = held.take().expect("a load before an add");
                    let outcome = rt.block_on(add(&store, pool, rev, &[id.to_string()]));
                    say(&outcome.map_or("conflict".to_owned(), |(_, rev)| format!("ok {rev}")));
                }
                ["hammer", prefix, n] => rt.block_on(hammer(&store, prefix, n.parse().unwrap())),
                ["loop", prefix] => rt.block_on(write_forever(&store, prefix)),
                ["quit"] => return,
                _ => panic!("unknown command {line:?}"),
            }
        }
    }

    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }

    async fn load_from(store: &SqliteStore) -> (Pool, Revision) {
        let stored = store.load().await.unwrap().expect("a stored pool");
        (Pool::from_snapshot(stored.value).unwrap(), stored.revision)
    }

    /// Adds `ids` and saves conditionally; `None` on a conflict, a panic on anything else.
    async fn add(
        store: &SqliteStore,
        mut pool: Pool,
        rev: Revision,
        ids: &[String],
    ) -> Option<(Pool, Revision)> {
        for id in ids {
            let id = ProjectId::new(id.as_str()).unwrap();
            pool.add_available(id, template(), Timestamp::from_millis(1))
                .unwrap();
        }
        let write = PoolWrite::Changes(pool.unsaved());
        match store.save(&write, &Precondition::Matches(rev)).await {
            Ok(rev) => {
                pool.mark_saved(pool.version());
                Some((pool, rev))
            }
            Err(e) if e.is_conflict() => None,
            Err(e) => panic!("a save failed with something other than a conflict: {e}"),
        }
    }

    async fn hammer(store: &SqliteStore, prefix: &str, n: usize) {
        let mut conflicts = 0;
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            loop {
                let (pool, rev) = load_from(store).await;
                match add(store, pool, rev, std::slice::from_ref(&id)).await {
                    Some(_) => break,
                    None => {
                        conflicts += 1;
                        say(&format!("conflict {id}"));
                    }
                }
            }
            say(&format!("ok {id}"));
        }
        say(&format!("done {conflicts}"));
    }

    async fn write_forever(store: &SqliteStore, prefix: &str) -> ! {
        let (mut pool, mut rev) = load_from(store).await;
        for batch in 0.. {
            let ids: Vec<String> = (0..BATCH)
                .map(|i| format!("{prefix}-{batch}-{i}"))
                .collect();
            let saved = add(store, pool, rev, &ids).await.expect("the only writer");
            (pool, rev) = saved;
            say(&format!("committed {} {rev}", pool.version()));
        }
        unreachable!("the loop above runs until the process is killed")
    }
}
