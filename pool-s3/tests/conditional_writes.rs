//! Conditional writes as S3 does them: ETags are content hashes, creates race, and a
//! retried write whose first answer was lost is recognised as its own.

mod common;

use std::sync::Arc;

use common::fault_proxy::{Fault, FaultProxy};
use pool_core::{OwnerId, Pool, PoolSnapshot, Timestamp};
use pool_s3::{RetrySettings, S3Store};
use pool_storage::conformance::sample_pool;
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, Revision};
use tokio::sync::Barrier;

fn at_version(pool: &Pool, version: u64) -> PoolWrite {
    PoolWrite::Full(PoolSnapshot {
        pool_version: version,
        ..pool.snapshot()
    })
}

#[tokio::test]
async fn a_new_pool_version_of_the_same_records_gets_a_new_etag() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let store = emulator.fresh_store().await;
    let pool = sample_pool(50);
    let v = pool.version();
    let first = store
        .save(&at_version(&pool, v), &Precondition::CreateOnly)
        .await
        .expect("create");

    // Identical bytes elsewhere get the identical ETag: it is a hash of the content.
    let elsewhere = emulator.fresh_store().await;
    let twin = elsewhere
        .save(&at_version(&pool, v), &Precondition::CreateOnly)
        .await;
    assert_eq!(twin.expect("create elsewhere"), first);

    // The same records at the next pool version differ in bytes, so in ETag.
    let next = at_version(&pool, v + 1);
    let second = store
        .save(&next, &Precondition::Matches(first.clone()))
        .await
        .expect("update");
    assert_ne!(
        second, first,
        "the pool version must change the stored bytes"
    );

    let stale = store
        .save(&at_version(&pool, v + 2), &Precondition::Matches(first))
        .await;
    assert_eq!(
        stale.expect_err("If-Match on the old ETag").kind(),
        ErrorKind::Conflict
    );
    let stored = store.load().await.expect("load").expect("a pool");
    assert_eq!(
        (stored.revision, stored.value.pool_version),
        (second, v + 1)
    );
}

#[tokio::test]
async fn if_match_on_a_missing_pool_conflicts_and_creates_nothing() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let store = emulator.fresh_store().await;
    let write = PoolWrite::Full(sample_pool(1).snapshot());
    let guess = Precondition::Matches(Revision::new("\"d41d8cd98f00b204e9800998ecf8427e\""));
    let err = store
        .save(&write, &guess)
        .await
        .expect_err("nothing to match");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(store.load().await.expect("load").is_none());
}

/// A pool that only `owner` has touched, so two creators write different documents.
fn pool_of(owner: &str) -> PoolWrite {
    let mut pool = sample_pool(20);
    pool.renew_owner(
        &OwnerId::new(owner).expect("valid"),
        Timestamp::from_millis(7),
    );
    PoolWrite::Full(pool.snapshot())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_creating_the_pool_at_once_exactly_one_wins() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    for round in 0..20 {
        let prefix = common::random_prefix();
        let a = emulator.store_at(&prefix).await;
        let b = S3Store::connect(&emulator.config(&prefix))
            .await
            .expect("second client");
        let barrier = Arc::new(Barrier::new(2));
        let race = |store: S3Store, owner: &'static str| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let write = pool_of(owner);
                barrier.wait().await;
                (store.save(&write, &Precondition::CreateOnly).await, write)
            })
        };
        let (ra, rb) = (race(a.clone(), "creator-a"), race(b, "creator-b"));
        let (ra, rb) = (ra.await.expect("task a"), rb.await.expect("task b"));
        let (winner, loser) = match (&ra.0, &rb.0) {
            (Ok(_), Err(_)) => (ra, rb),
            (Err(_), Ok(_)) => (rb, ra),
            _ => panic!(
                "round {round}: expected one winner, got {:?} and {:?}",
                ra.0, rb.0
            ),
        };
        let err = loser.0.expect_err("loser");
        assert_eq!(err.kind(), ErrorKind::Conflict, "round {round}: {err}");
        let stored = a.load().await.expect("load").expect("a pool");
        let PoolWrite::Full(expected) = winner.1 else {
            unreachable!("built as Full")
        };
        assert_eq!(
            stored.value, expected,
            "round {round}: the winner's pool is stored"
        );
        assert_eq!(Some(stored.revision), winner.0.ok(), "round {round}");
    }
}

async fn behind_proxy(emulator: &common::Emulator, proxy: &FaultProxy, prefix: &str) -> S3Store {
    let fast_retries = RetrySettings {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(50),
    };
    let config = emulator
        .config(prefix)
        .with_endpoint(proxy.endpoint())
        .expect("endpoint");
    S3Store::connect(&config.with_retry(fast_retries))
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_recognised_on_retry() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let direct = emulator.fresh_store().await;
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let store = behind_proxy(&emulator, &proxy, direct.config().prefix()).await;
    let mut pool = sample_pool(5);

    proxy.inject([Fault::DropResponse]);
    let created = store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await;
    let created = created.expect("the lost create is found in place");
    assert_eq!(proxy.requests(), 3, "PUT (answer lost), PUT (412), HEAD");

    pool.renew_owner(
        &OwnerId::new("later").expect("valid"),
        Timestamp::from_millis(3),
    );
    proxy.inject([Fault::DropResponse]);
    let write = PoolWrite::Full(pool.snapshot());
    let updated = store
        .save(&write, &Precondition::Matches(created.clone()))
        .await;
    let updated = updated.expect("the lost update is found in place");
    assert_ne!(updated, created);
    let stored = direct.load().await.expect("load").expect("a pool");
    assert_eq!((stored.value, stored.revision), (pool.snapshot(), updated));
}

#[tokio::test]
async fn a_retried_write_that_meets_another_document_still_conflicts() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let direct = emulator.fresh_store().await;
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let store = behind_proxy(&emulator, &proxy, direct.config().prefix()).await;
    direct
        .save(&pool_of("first"), &Precondition::CreateOnly)
        .await
        .expect("create");

    proxy.inject([Fault::SlowDown]);
    let err = store
        .save(&pool_of("second"), &Precondition::CreateOnly)
        .await;
    let err = err.expect_err("someone else's pool is stored");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        proxy.requests(),
        3,
        "PUT (503), PUT (412), HEAD (another ETag)"
    );
    let PoolWrite::Full(first) = pool_of("first") else {
        unreachable!("built as Full")
    };
    assert_eq!(
        direct.load().await.expect("load").expect("a pool").value,
        first
    );
}
