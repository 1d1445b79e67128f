//! Requests per operation, and the time a large save takes (encoding included, building
//! the snapshot not). Run with `--nocapture` to see the timings.

mod common;

use std::time::Instant;

use pool_core::{OwnerId, Timestamp};
use pool_s3::S3Store;
use pool_storage::conformance::sample_pool;
use pool_storage::{MetadataStore, PoolStore, PoolWrite, Precondition};
use serde_json::json;

/// Requests `store` sends while `f` runs.
async fn requests<T>(store: &S3Store, f: impl Future<Output = T>) -> (T, u64) {
    let before = store.requests_sent();
    let out = f.await;
    (out, store.requests_sent() - before)
}

#[tokio::test]
async fn every_operation_is_one_request() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let store = emulator.fresh_store().await;
    let (none, n) = requests(&store, store.load()).await;
    assert!(none.expect("load").is_none());
    assert_eq!(n, 1, "load of a missing pool");
    let mut pool = sample_pool(100);
    let create = PoolWrite::Full(pool.snapshot());
    let (first, n) = requests(&store, store.save(&create, &Precondition::CreateOnly)).await;
    assert_eq!(n, 1, "create");
    pool.renew_owner(
        &OwnerId::new("x").expect("valid"),
        Timestamp::from_millis(1),
    );
    let update = PoolWrite::Full(pool.snapshot());
    let first = Precondition::Matches(first.expect("create"));
    let (_, n) = requests(&store, store.save(&update, &first)).await;
    assert_eq!(n, 1, "update");
    let (conflict, n) = requests(&store, store.save(&update, &first)).await;
    assert!(conflict.expect_err("stale").is_conflict());
    assert_eq!(n, 1, "a conflict is not retried");
    let (_, n) = requests(&store, store.load()).await;
    assert_eq!(n, 1, "load");
    let id = pool.records().next().expect("a record").id.clone();
    let (_, n) = requests(&store, store.put_metadata(&id, &json!({"a": 1}), None)).await;
    assert_eq!(n, 1, "metadata put");
    let (_, n) = requests(&store, store.get_metadata(&id)).await;
    assert_eq!(n, 1, "metadata get");
}

#[tokio::test]
async fn large_saves_are_one_request_and_report_their_time() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    for (projects, label) in [(8_500, "1 MB"), (85_000, "10 MB")] {
        let store = emulator.fresh_store().await;
        let mut pool = sample_pool(projects);
        let create = PoolWrite::Full(pool.snapshot());
        let bytes = pool.snapshot().to_json().len();
        let started = Instant::now();
        let (rev, n) = requests(&store, store.save(&create, &Precondition::CreateOnly)).await;
        let mut revision = rev.expect("create");
        assert_eq!(n, 1);
        let mut saves = vec![started.elapsed()];
        for i in 0..3 {
            pool.renew_owner(
                &OwnerId::new("x").expect("valid"),
                Timestamp::from_millis(i),
            );
            let write = PoolWrite::Full(pool.snapshot());
            let started = Instant::now();
            let (rev, n) =
                requests(&store, store.save(&write, &Precondition::Matches(revision))).await;
            saves.push(started.elapsed());
            revision = rev.expect("update");
            assert_eq!(n, 1);
        }
        let started = Instant::now();
        let (loaded, n) = requests(&store, store.load()).await;
        let load = started.elapsed();
        assert_eq!(loaded.expect("load").expect("stored").revision, revision);
        assert_eq!(n, 1);
        println!(
            "{label} pool ({bytes} bytes, {projects} projects): saves {saves:?}, load {load:?}"
        );
    }
}
