//! How many HTTP requests each operation costs on Azurite, and how long saves of 1 MB and
//! 10 MB pools take (printed; run with `--nocapture` to see the figures).

mod common;

use std::time::{Duration, Instant};

use pool_azure::AzureStore;
use pool_core::{OwnerId, Pool, ProjectId, Timestamp};
use pool_storage::conformance::sample_pool;
use pool_storage::{MetadataStore, PoolStore, PoolWrite, Precondition, Revision};
use serde_json::json;

/// Runs `op` and returns its result with the requests it sent.
async fn counted<T>(store: &AzureStore, op: impl Future<Output = T>) -> (T, u64) {
    let before = store.requests_sent();
    let value = op.await;
    (value, store.requests_sent() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip() {
    let Some(azurite) = common::azurite() else {
        return;
    };
    let store = azurite.store(&common::random_prefix("round-trips")).await;
    let pool = sample_pool(10);
    let write = PoolWrite::Full(pool.snapshot());

    let (missing, n) = counted(&store, store.load()).await;
    assert!(missing.unwrap().is_none());
    assert_eq!(n, 1, "load of a missing pool");
    let (rev, n) = counted(&store, store.save(&write, &Precondition::CreateOnly)).await;
    let rev = rev.unwrap();
    assert_eq!(n, 1, "create");
    let (loaded, n) = counted(&store, store.load()).await;
    assert_eq!(loaded.unwrap().unwrap().revision, rev);
    assert_eq!(n, 1, "load");
    let (next, n) = counted(
        &store,
        store.save(&write, &Precondition::Matches(rev.clone())),
    )
    .await;
    next.unwrap();
    assert_eq!(n, 1, "conditional update");
    let (stale, n) = counted(&store, store.save(&write, &Precondition::Matches(rev))).await;
    assert!(stale.unwrap_err().is_conflict());
    assert_eq!(n, 1, "refused update");

    let id = ProjectId::new("default-1-0a1b2").unwrap();
    let doc = json!({"url": "https://example.invalid"});
    let (_, n) = counted(&store, store.put_metadata(&id, &doc, None)).await;
    assert_eq!(n, 1, "metadata put");
    let (got, n) = counted(&store, store.get_metadata(&id)).await;
    assert_eq!(got.unwrap().unwrap().value, doc);
    assert_eq!(n, 1, "metadata get");
    let (_, n) = counted(&store, store.delete_metadata(&id)).await;
    assert_eq!(n, 1, "metadata delete");
}

/// A pool of about `mb` megabytes of JSON.
fn pool_of_megabytes(mb: usize) -> Pool {
    // A sample record takes a little over 120 bytes of JSON.
    let pool = sample_pool(mb * 8_700);
    let size = pool.snapshot().to_json().len();
    assert!(size >= mb << 20, "{size} bytes");
    pool
}

async fn time_saves(store: &AzureStore, mut pool: Pool, saves: u32) -> (Duration, Duration) {
    let mut rev: Option<Revision> = None;
    let mut saving = Duration::ZERO;
    for i in 0..saves {
        pool.renew_owner(
            &OwnerId::new("timing").expect("valid"),
            Timestamp::from_millis(u64::from(i)),
        );
        let write = PoolWrite::Full(pool.snapshot());
        let precondition = rev.map_or(Precondition::CreateOnly, Precondition::Matches);
        let started = Instant::now();
        let (saved, n) = counted(store, store.save(&write, &precondition)).await;
        saving += started.elapsed();
        rev = Some(saved.expect("save"));
        assert_eq!(n, 1, "a save of {} bytes is one request", write_len(&write));
    }
    let started = Instant::now();
    let (loaded, n) = counted(store, store.load()).await;
    let loading = started.elapsed();
    let loaded = loaded.expect("load").expect("a pool");
    assert_eq!(Some(loaded.revision), rev);
    assert_eq!(n, 1, "a large load is one request");
    (saving / saves, loading)
}

fn write_len(write: &PoolWrite) -> usize {
    match write {
        PoolWrite::Full(s) => s.to_json().len(),
        PoolWrite::Changes(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pools_save_in_one_request() {
    let Some(azurite) = common::azurite() else {
        return;
    };
    for mb in [1, 10] {
        let store = azurite.store(&common::random_prefix("timing")).await;
        let (save, load) = time_saves(&store, pool_of_megabytes(mb), 5).await;
        println!("{mb} MB pool on Azurite: save {save:?} (mean of 5), load {load:?}");
    }
}
