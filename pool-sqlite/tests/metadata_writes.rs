//! Metadata writes queued together share a transaction: each still gets a revision of
//! its own, a refused one changes nothing, and the counter survives a reopen.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::HashSet;

use pool_core::ProjectId;
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{MetadataStore, Precondition, Revision};
use serde_json::json;

fn project(i: usize) -> ProjectId {
    ProjectId::new(format!("default-{i}-0a1b2")).unwrap()
}

async fn put_all(store: &SqliteStore, writes: Vec<(usize, u32)>) -> Vec<(usize, u32, Revision)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, n) in writes {
        let store = store.clone();
        tasks.spawn(async move {
            let doc = json!({"n": n});
            let rev = store.put_metadata(&project(i), &doc, None).await.unwrap();
            (i, n, rev)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        out.push(done.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_get_distinct_revisions_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::file(dir.path().join("pool.db"));
    let store = SqliteStore::open(config.clone()).await.unwrap();
    // 50 projects, 4 writes each, all at once: they meet in shared transactions.
    let writes: Vec<(usize, u32)> = (0..200).map(|k| (k % 50, k as u32)).collect();
    let done = put_all(&store, writes).await;
    let mut seen = HashSet::new();
    for (_, _, rev) in &done {
        assert!(seen.insert(rev.clone()), "revision {rev:?} given twice");
    }
    // Each project holds one of its writes, with the revision that write was told.
    for i in 0..50 {
        let stored = store.get_metadata(&project(i)).await.unwrap().unwrap();
        let mine: Vec<_> = done.iter().filter(|(p, _, _)| *p == i).collect();
        let (_, n, _) = mine
            .iter()
            .find(|(_, _, rev)| *rev == stored.revision)
            .expect("the stored revision is one a writer was told");
        assert_eq!(stored.value, json!({"n": n}));
    }
    // A refused write in the middle of others changes nothing, and takes nothing.
    let current = store.get_metadata(&project(0)).await.unwrap().unwrap();
    let stale = Precondition::Matches(Revision::new("not-a-revision-of-this-file"));
    let (first, refused_doc) = (project(0), json!({"n": -1}));
    let (refused, others) = tokio::join!(
        store.put_metadata(&first, &refused_doc, Some(stale)),
        put_all(&store, (100..110).map(|i| (i, 0)).collect()),
    );
    assert!(refused.unwrap_err().is_conflict());
    let after = store.get_metadata(&project(0)).await.unwrap().unwrap();
    assert_eq!(after.value, current.value);
    assert_eq!(after.revision, current.revision);
    for (_, _, rev) in &others {
        assert!(seen.insert(rev.clone()), "revision {rev:?} given twice");
    }
    let matching = Precondition::Matches(after.revision.clone());
    let rev = store
        .put_metadata(&project(0), &json!({"n": 1000}), Some(matching))
        .await
        .unwrap();
    assert!(seen.insert(rev));
    // After a reopen the counter goes on from where it was.
    drop(store);
    let store = SqliteStore::open(config).await.unwrap();
    for (_, _, rev) in put_all(&store, (0..20).map(|i| (i, 1)).collect()).await {
        assert!(
            seen.insert(rev.clone()),
            "revision {rev:?} given again after a reopen"
        );
    }
}
