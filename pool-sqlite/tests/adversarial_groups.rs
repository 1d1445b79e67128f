//! Metadata writes that share one transaction, pushed where they could go wrong: writers
//! racing from two stores on one file, jobs of their own queued between parts, refused
//! and failing parts, triggers that undo the whole transaction, callers that go away,
//! and a file locked past the busy deadline. Nobody may be told "stored" for a write
//! that is not in the file, and no revision may be given twice.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use pool_core::{Pool, ProjectId, TemplateName, Timestamp};
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{ErrorKind, MetadataStore, PoolStore, PoolWrite, Precondition, Revision};
use serde_json::json;
use tempfile::TempDir;

fn project(name: &str, i: usize) -> ProjectId {
    ProjectId::new(format!("{name}-{i}-0a1b2")).unwrap()
}

fn template() -> TemplateName {
    TemplateName::new("default").unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

/// The counter value of a revision (`<store id>.<n>`).
fn number(rev: &Revision) -> u64 {
    let (_, n) = rev.as_str().rsplit_once('.').unwrap();
    n.parse().unwrap()
}

/// A store on a fresh file that holds an empty pool (a transaction needs one).
async fn open_with_pool() -> (TempDir, SqliteConfig, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::file(dir.path().join("pool.db"));
    let store = SqliteStore::open(config.clone()).await.unwrap();
    let empty = PoolWrite::Full(Pool::new().snapshot());
    store.save(&empty, &Precondition::CreateOnly).await.unwrap();
    (dir, config, store)
}

/// Occupies `store`'s writer thread, and the file's write lock, for `hold`: a
/// transaction that reads nothing and changes nothing. Jobs queued meanwhile wait
/// together.
async fn hold(store: &SqliteStore, hold: Duration) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    let handle = tokio::spawn(async move {
        store
            .transact(vec![], move |_| std::thread::sleep(hold))
            .await
            .unwrap();
    });
    // The transaction is queued (and started) before anything else.
    tokio::time::sleep(Duration::from_millis(20)).await;
    handle
}

fn raw(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("pool.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

async fn put(
    store: &SqliteStore,
    id: ProjectId,
    doc: serde_json::Value,
    pre: Option<Precondition>,
) -> Result<Revision, pool_storage::StoreError> {
    store.put_metadata(&id, &doc, pre).await
}

/// A pool save and a transaction queued between metadata writes run between them: each
/// sees the writes queued before it and none queued after, which the shared revision
/// counter shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_between_parts_run_in_queue_order() {
    let (_dir, _config, store) = open_with_pool().await;
    let loaded = store.load().await.unwrap().unwrap();
    let mut pool = Pool::from_snapshot(loaded.value).unwrap();
    pool.add_available(project("saved", 0), template(), now())
        .unwrap();
    let write = PoolWrite::Full(pool.snapshot());
    let pre = Precondition::Matches(loaded.revision);
    let held = hold(&store, Duration::from_millis(200)).await;
    let (a, b, save, c, txn, d) = tokio::join!(
        put(&store, project("m", 0), json!({"n": 0}), None),
        put(&store, project("m", 1), json!({"n": 1}), None),
        store.save(&write, &pre),
        put(&store, project("m", 2), json!({"n": 2}), None),
        store.transact(vec![], |pool: &mut Pool| {
            pool.add_available(project("txn", 0), template(), now())
                .unwrap();
        }),
        put(&store, project("m", 3), json!({"n": 3}), None),
    );
    held.await.unwrap();
    let order = [
        number(&a.unwrap()),
        number(&b.unwrap()),
        number(&save.unwrap()),
        number(&c.unwrap()),
        number(&txn.unwrap().revision),
        number(&d.unwrap()),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "revisions out of queue order: {order:?}"
    );
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(number(&stored.revision), order[4]);
    assert_eq!(stored.value.projects.len(), 2);
}

/// Two create-only writes of one document in one shared transaction: the second sees
/// the first and is refused; a write conditional on a revision given earlier in the
/// same transaction is refused once another write replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_see_earlier_parts_of_the_same_transaction() {
    let (_dir, _config, store) = open_with_pool().await;
    let (x, y) = (project("x", 0), project("y", 0));
    let held = hold(&store, Duration::from_millis(150)).await;
    let (first, second, other) = tokio::join!(
        put(
            &store,
            x.clone(),
            json!({"v": 1}),
            Some(Precondition::CreateOnly)
        ),
        put(
            &store,
            x.clone(),
            json!({"v": 2}),
            Some(Precondition::CreateOnly)
        ),
        put(
            &store,
            y.clone(),
            json!({"v": 1}),
            Some(Precondition::CreateOnly)
        ),
    );
    held.await.unwrap();
    let first = first.unwrap();
    assert!(second.unwrap_err().is_conflict());
    let other = other.unwrap();
    assert_ne!(first, other);
    let stored = store.get_metadata(&x).await.unwrap().unwrap();
    assert_eq!(
        (stored.value, stored.revision.clone()),
        (json!({"v": 1}), first.clone())
    );

    // Both conditional on the stored revision, in one transaction: only one may win.
    let held = hold(&store, Duration::from_millis(150)).await;
    let pre = || Some(Precondition::Matches(first.clone()));
    let (a, b) = tokio::join!(
        put(&store, x.clone(), json!({"v": "a"}), pre()),
        put(&store, x.clone(), json!({"v": "b"}), pre()),
    );
    held.await.unwrap();
    let a = a.unwrap();
    assert!(b.unwrap_err().is_conflict());
    let stored = store.get_metadata(&x).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.revision), (json!({"v": "a"}), a));
}

/// Two stores on one file, writing the same documents from many tasks at once while
/// transactions add projects: every revision told is distinct, each document holds the
/// write with the highest revision among those told for it, and the counter goes on
/// past all of them after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_never_give_a_revision_twice() {
    let (_dir, config, first) = open_with_pool().await;
    let second = SqliteStore::open(config.clone()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..400usize {
        let store = if k % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.spawn(async move {
            let doc = project("doc", k % 25);
            let rev = put(&store, doc.clone(), json!({"k": k}), None)
                .await
                .unwrap();
            (Some((doc, k)), rev)
        });
        if k % 20 == 0 {
            let store = if k % 40 == 0 {
                second.clone()
            } else {
                first.clone()
            };
            tasks.spawn(async move {
                let id = project("added", k);
                let done = store
                    .transact(vec![], move |pool: &mut Pool| {
                        pool.add_available(id, template(), now()).unwrap();
                    })
                    .await
                    .unwrap();
                (None, done.revision)
            });
        }
    }
    let mut told = HashSet::new();
    let mut highest: HashMap<ProjectId, (u64, usize)> = HashMap::new();
    let prefix = |r: &Revision| r.as_str().rsplit_once('.').unwrap().0.to_owned();
    let mut prefixes = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (write, rev) = done.unwrap();
        prefixes.insert(prefix(&rev));
        assert!(told.insert(number(&rev)), "revision {rev} told twice");
        if let Some((doc, k)) = write {
            let best = highest.entry(doc).or_insert((0, usize::MAX));
            if number(&rev) > best.0 {
                *best = (number(&rev), k);
            }
        }
    }
    assert_eq!(prefixes.len(), 1, "both stores name revisions alike");
    for (doc, (n, k)) in &highest {
        for store in [&first, &second] {
            let stored = store.get_metadata(doc).await.unwrap().unwrap();
            assert_eq!(number(&stored.revision), *n, "{doc}: not the latest write");
            assert_eq!(stored.value, json!({"k": k}));
        }
    }
    assert_eq!(
        first.load().await.unwrap().unwrap().value.projects.len(),
        20
    );
    let top = *told.iter().max().unwrap();
    drop((first, second));
    let reopened = SqliteStore::open(config).await.unwrap();
    let rev = put(&reopened, project("doc", 0), json!({}), None)
        .await
        .unwrap();
    assert!(
        number(&rev) > top,
        "{rev} after a reopen, {top} given before"
    );
}

/// Awaited writes of one document, alternating between two stores on one file and a
/// reopen: each revision is higher than the one before, and a write conditional on a
/// revision the other store replaced is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_documents_revisions_only_grow_across_stores_and_reopens() {
    let (_dir, config, mut a) = open_with_pool().await;
    let mut b = SqliteStore::open(config.clone()).await.unwrap();
    let doc = project("one", 0);
    let mut last = 0;
    let mut last_rev: Option<Revision> = None;
    for round in 0..30u32 {
        if round % 10 == 9 {
            drop((a, b));
            a = SqliteStore::open(config.clone()).await.unwrap();
            b = SqliteStore::open(config.clone()).await.unwrap();
        }
        let (writer, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let pre = last_rev.clone().map(Precondition::Matches);
        let rev = put(writer, doc.clone(), json!({"round": round}), pre)
            .await
            .unwrap();
        assert!(number(&rev) > last, "round {round}: {rev} after {last}");
        last = number(&rev);
        let stored = other.get_metadata(&doc).await.unwrap().unwrap();
        assert_eq!(
            (stored.value, &stored.revision),
            (json!({"round": round}), &rev)
        );
        if let Some(stale) = last_rev.replace(rev) {
            let refused = put(
                other,
                doc.clone(),
                json!({}),
                Some(Precondition::Matches(stale)),
            )
            .await;
            assert!(refused.unwrap_err().is_conflict());
        }
    }
}

/// A trigger that raises ROLLBACK undoes the whole shared transaction from inside one
/// part: every caller of that transaction hears a failure (none hears "stored" for a
/// write the rollback undid), nothing of it is in the file, and later writes go on.
/// A trigger that aborts one statement fails that part alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_rolls_back_the_transaction_fails_the_whole_group() {
    let (dir, _config, store) = open_with_pool().await;
    let conn = raw(dir.path());
    conn.execute_batch(
        "CREATE TRIGGER undo_all BEFORE INSERT ON metadata
             WHEN NEW.project LIKE 'rollback-%'
             BEGIN SELECT RAISE(ROLLBACK, 'refused by a trigger'); END;
         CREATE TRIGGER undo_one BEFORE INSERT ON metadata
             WHEN NEW.project LIKE 'abort-%'
             BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END;",
    )
    .unwrap();
    let before = put(&store, project("before", 0), json!({}), None)
        .await
        .unwrap();
    let held = hold(&store, Duration::from_millis(150)).await;
    let (a, undo, c) = tokio::join!(
        put(&store, project("a", 0), json!({}), None),
        put(&store, project("rollback", 0), json!({}), None),
        put(&store, project("c", 0), json!({}), None),
    );
    held.await.unwrap();
    for (name, answer) in [("a", a), ("rollback", undo), ("c", c)] {
        assert!(answer.is_err(), "{name} was told {answer:?}");
        let stored = store.get_metadata(&project(name, 0)).await.unwrap();
        assert!(stored.is_none(), "{name} is stored after a rollback");
    }

    let held = hold(&store, Duration::from_millis(150)).await;
    let (a, one, c) = tokio::join!(
        put(&store, project("a", 1), json!({}), None),
        put(&store, project("abort", 1), json!({}), None),
        put(&store, project("c", 1), json!({}), None),
    );
    held.await.unwrap();
    assert!(one.is_err());
    assert!(
        store
            .get_metadata(&project("abort", 1))
            .await
            .unwrap()
            .is_none()
    );
    let (a, c) = (a.unwrap(), c.unwrap());
    assert!(number(&before) < number(&a) && number(&a) < number(&c));
    for (name, rev) in [("a", a), ("c", c)] {
        let stored = store
            .get_metadata(&project(name, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.revision, rev);
    }
}

/// The revision counter itself cannot be stored (a trigger refuses it): the writes that
/// took revisions are not stored and every caller hears so; once the trigger is gone,
/// the next write gets a revision never told before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_cannot_be_stored_fails_every_part() {
    let (dir, _config, store) = open_with_pool().await;
    let told = put(&store, project("before", 0), json!({}), None)
        .await
        .unwrap();
    let conn = raw(dir.path());
    conn.execute_batch(
        "CREATE TRIGGER frozen BEFORE UPDATE ON store
             BEGIN SELECT RAISE(ABORT, 'the counter is frozen'); END;",
    )
    .unwrap();
    let before = project("before", 0);
    let held = hold(&store, Duration::from_millis(150)).await;
    let (a, b, gone) = tokio::join!(
        put(&store, project("a", 0), json!({}), None),
        put(&store, project("b", 0), json!({}), None),
        store.delete_metadata(&before),
    );
    held.await.unwrap();
    assert!(a.is_err() && b.is_err() && gone.is_err());
    for name in ["a", "b"] {
        assert!(
            store
                .get_metadata(&project(name, 0))
                .await
                .unwrap()
                .is_none()
        );
    }
    let kept = store.get_metadata(&project("before", 0)).await.unwrap();
    assert_eq!(
        kept.unwrap().revision,
        told,
        "the delete was undone with the rest"
    );
    conn.execute_batch("DROP TRIGGER frozen").unwrap();
    let next = put(&store, project("a", 0), json!({}), None).await.unwrap();
    assert_eq!(number(&next), number(&told) + 1);
}

/// Callers that stop waiting once their write is queued: every write is still stored,
/// each with a revision of its own, nothing hangs, and the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_callers_went_away_are_still_stored() {
    let (_dir, config, store) = open_with_pool().await;
    let held = hold(&store, Duration::from_millis(200)).await;
    for i in 0..100 {
        let doc = json!({"i": i});
        // Polled once (which queues the part), then dropped.
        let id = project("gone", i);
        let write = store.put_metadata(&id, &doc, None);
        let gave_up = tokio::time::timeout(Duration::ZERO, write).await;
        assert!(gave_up.is_err(), "the writer is held: no answer yet");
    }
    let last = put(&store, project("last", 0), json!({}), None)
        .await
        .unwrap();
    held.await.unwrap();
    let mut revisions = HashSet::new();
    for i in 0..100 {
        let stored = store
            .get_metadata(&project("gone", i))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.value, json!({"i": i}));
        assert!(number(&stored.revision) < number(&last));
        assert!(revisions.insert(stored.revision));
    }
    let closing = tokio::task::spawn_blocking(move || drop(store));
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the store closes")
        .unwrap();
    let reopened = SqliteStore::open(config).await.unwrap();
    assert!(
        reopened
            .get_metadata(&project("gone", 99))
            .await
            .unwrap()
            .is_some()
    );
}

/// Another store holds the file's write lock past this store's busy deadline: every
/// write of the waiting group fails with a temporary error and none of them is in the
/// file afterwards; the next write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_take_the_lock_stores_nothing() {
    let (_dir, config, holder) = open_with_pool().await;
    let mut impatient = config.clone();
    impatient.busy_timeout = Duration::from_millis(20);
    impatient.busy_deadline = Duration::from_millis(200);
    let store = SqliteStore::open(impatient).await.unwrap();
    let held = hold(&holder, Duration::from_millis(1500)).await;
    let (a, b) = tokio::join!(
        put(&store, project("a", 0), json!({}), None),
        put(&store, project("b", 0), json!({}), None),
    );
    for answer in [a, b] {
        let e = answer.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.is_temporary());
    }
    held.await.unwrap();
    for name in ["a", "b"] {
        assert!(
            store
                .get_metadata(&project(name, 0))
                .await
                .unwrap()
                .is_none()
        );
    }
    put(&store, project("a", 0), json!({}), None).await.unwrap();
}

const FULL_DISK_CHILD: &str = "POOL_SQLITE_FULL_DISK_DIR";

/// The disk fills up: commits fail (here, the process may not grow a file past 200 kB).
/// Every write is answered, each caller told "stored" finds its document in the file
/// (read back by this process, with no limit), and each told otherwise does not. The
/// writes run in a child process started under `prlimit`.
#[test]
fn commits_on_a_full_disk_answer_every_caller_truthfully() {
    if let Some(dir) = std::env::var_os(FULL_DISK_CHILD) {
        return fill_the_disk(Path::new(&dir));
    }
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("prlimit (util-linux) is not installed: the full-disk case did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // A write past the limit fails with EFBIG instead of killing the process.
    let script = "trap '' XFSZ; exec prlimit --fsize=200000 \"$0\" \"$@\"";
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .arg(&exe)
        .args([
            "--exact",
            "commits_on_a_full_disk_answer_every_caller_truthfully",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_DISK_CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let told: Vec<(ProjectId, bool)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TOLD "))
        .map(|l| {
            let (id, ok) = l.split_once(' ').unwrap();
            (ProjectId::new(id).unwrap(), ok == "stored")
        })
        .collect();
    let stored_count = told.iter().filter(|(_, ok)| *ok).count();
    assert!(
        stored_count > 0 && stored_count < told.len(),
        "{stored_count} of {}",
        told.len()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(SqliteConfig::file(dir.path().join("pool.db")))
            .await
            .unwrap();
        for (id, ok) in &told {
            let found = store.get_metadata(id).await.unwrap().is_some();
            assert_eq!(
                found, *ok,
                "{id}: told stored = {ok}, in the file = {found}"
            );
        }
    });
}

/// The child's part: groups of writes until the file cannot grow, each answer printed.
fn fill_the_disk(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(SqliteConfig::file(dir.join("pool.db")))
            .await
            .unwrap();
        let mut revisions = HashSet::new();
        let filler = "x".repeat(3000);
        for round in 0..40 {
            let mut group = tokio::task::JoinSet::new();
            for j in 0..5 {
                let (store, doc) = (store.clone(), json!({ "filler": filler }));
                let id = project("full", round * 5 + j);
                group.spawn(async move { (id.clone(), put(&store, id, doc, None).await) });
            }
            while let Some(done) = group.join_next().await {
                let (id, answer) = done.unwrap();
                match answer {
                    Ok(rev) => {
                        assert!(revisions.insert(rev));
                        println!("TOLD {id} stored");
                    }
                    Err(e) => {
                        assert!(e.is_temporary(), "{e}");
                        println!("TOLD {id} failed");
                    }
                }
            }
        }
    });
}
