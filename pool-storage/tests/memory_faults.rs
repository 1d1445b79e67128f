//! The in-memory store's fault injection, as the runtime's tests rely on it: latency on
//! tokio's paused clock (exact elapsed times), injected errors by operation, by project and
//! for the whole store, exact counters, the history of stored versions, and cancellation.
//! Ends with a mock scripting a call sequence.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use mockall::Sequence;
use pool_core::{Pool, PoolSnapshot, ProjectId, TemplateName, Timestamp};
use pool_storage::{
    Counters, ErrorKind, Latency, MemoryStore, MetadataStore, MockPoolStore, Op, PoolStore,
    PoolWrite, Precondition, Revision, StoreError,
};
use serde_json::json;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn pid(s: &str) -> ProjectId {
    ProjectId::new(s).unwrap()
}

/// A pool holding the named available projects.
fn pool_with(ids: &[&str]) -> Pool {
    let mut pool = Pool::new();
    let t = TemplateName::new("t").unwrap();
    for id in ids {
        pool.add_available(pid(id), t.clone(), Timestamp::from_millis(1))
            .unwrap();
    }
    pool
}

/// A store holding `pool` (marked saved), and the stored revision.
async fn stored(pool: &mut Pool) -> (MemoryStore, Revision) {
    let store = MemoryStore::new();
    let write = PoolWrite::Full(pool.snapshot());
    let rev = store.save(&write, &Precondition::CreateOnly).await.unwrap();
    pool.mark_saved(pool.version());
    (store, rev)
}

fn full(pool: &Pool) -> PoolWrite {
    PoolWrite::Full(pool.snapshot())
}

fn changes(pool: &Pool) -> PoolWrite {
    PoolWrite::Changes(pool.unsaved())
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>) -> (ErrorKind, bool) {
    let e = r.unwrap_err();
    assert_eq!(e.backend(), "memory");
    (e.kind(), e.is_temporary())
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_delays_only_the_operation_named() {
    let store = MemoryStore::new();
    store.set_latency(Op::Save, Latency::Fixed(250 * MS));
    store.set_latency(Op::GetMetadata, Latency::Fixed(MS * 7));
    let pool = pool_with(&["a"]);
    let (loaded, took) = timed(store.load()).await;
    assert_eq!((loaded.unwrap(), took), (None, Duration::ZERO));
    let (saved, took) = timed(store.save(&full(&pool), &Precondition::CreateOnly)).await;
    saved.unwrap();
    assert_eq!(took, 250 * MS);
    let (got, took) = timed(store.get_metadata(&pid("a"))).await;
    assert_eq!((got.unwrap(), took), (None, 7 * MS));
    let (_, took) = timed(store.put_metadata(&pid("a"), &json!({}), None)).await;
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn latency_overlaps_for_concurrent_operations() {
    let store = MemoryStore::new();
    store.set_latency(Op::Load, Latency::Fixed(100 * MS));
    let start = Instant::now();
    let (a, b, c) = tokio::join!(store.load(), store.load(), store.load());
    assert!(a.unwrap().is_none() && b.unwrap().is_none() && c.unwrap().is_none());
    assert_eq!(
        start.elapsed(),
        100 * MS,
        "three loads in parallel take one latency"
    );
    assert_eq!(store.counters().loads, 3);
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_stays_in_bounds_and_repeats_from_a_seed() {
    let store = MemoryStore::new();
    store.set_latency(Op::Load, Latency::Uniform(10 * MS, 50 * MS));
    let draw = |store: MemoryStore| async move {
        let mut took = Vec::new();
        for _ in 0..30 {
            took.push(timed(store.load()).await.1);
        }
        took
    };
    store.seed(42);
    let first = draw(store.clone()).await;
    store.seed(42);
    let again = draw(store.clone()).await;
    assert_eq!(first, again, "the same seed gives the same latencies");
    // The timer wheel counts whole milliseconds, so a draw may end up to 1 ms later.
    for d in &first {
        assert!(*d >= 10 * MS && *d <= 51 * MS, "{d:?} outside 10..=50 ms");
    }
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(
        distinct.len() > 10,
        "only {} distinct latencies in 30 draws",
        distinct.len()
    );
    store.seed(7);
    assert_ne!(
        draw(store.clone()).await,
        first,
        "another seed gives other latencies"
    );

    store.set_latency(Op::Load, Latency::Uniform(20 * MS, 20 * MS));
    assert_eq!(
        timed(store.load()).await.1,
        20 * MS,
        "equal bounds are a fixed latency"
    );
}

#[tokio::test(start_paused = true)]
async fn scripted_latency_comes_first_then_the_set_one() {
    let store = MemoryStore::new();
    let mut pool = pool_with(&["a"]);
    store
        .save(&full(&pool), &Precondition::CreateOnly)
        .await
        .unwrap();
    pool.mark_saved(pool.version());
    store.script_latency(Op::Save, [100 * MS, 5 * MS, Duration::ZERO, 40 * MS]);
    store.set_latency(Op::Save, Latency::Fixed(MS));
    let mut took = Vec::new();
    for _ in 0..6 {
        let rev = store.load().await.unwrap().unwrap().revision;
        let write = full(&pool);
        took.push(
            timed(store.save(&write, &Precondition::Matches(rev)))
                .await
                .1,
        );
    }
    assert_eq!(took, [100 * MS, 5 * MS, Duration::ZERO, 40 * MS, MS, MS]);
    assert_eq!(
        timed(store.load()).await.1,
        Duration::ZERO,
        "loads were not scripted"
    );
}

#[tokio::test]
async fn fail_next_fails_only_the_kind_named_then_recovers() {
    let mut pool = pool_with(&["a"]);
    let (store, rev) = stored(&mut pool).await;
    store.fail_next(Some(Op::Save), 2, ErrorKind::Timeout);
    store.load().await.unwrap();
    store.get_metadata(&pid("a")).await.unwrap();
    let write = full(&pool);
    let again = Precondition::Matches(rev);
    assert_eq!(
        kind(store.save(&write, &again).await),
        (ErrorKind::Timeout, true)
    );
    assert_eq!(
        kind(store.save(&write, &again).await),
        (ErrorKind::Timeout, true)
    );
    store.save(&write, &again).await.unwrap();

    store.fail_next(None, 1, ErrorKind::PermissionDenied);
    let first = store.get_metadata(&pid("a")).await;
    assert_eq!(
        kind(first),
        (ErrorKind::PermissionDenied, false),
        "any kind takes it"
    );
    store.load().await.unwrap();
    let c = store.counters();
    assert_eq!(
        (c.saves_attempted, c.saves_failed, c.saves_succeeded),
        (4, 2, 2)
    );
    assert_eq!((c.loads, c.metadata_gets), (2, 2));
}

#[tokio::test]
async fn failures_queued_for_different_kinds_wait_for_their_own() {
    let store = MemoryStore::new();
    store.fail_next(Some(Op::PutMetadata), 1, ErrorKind::Unavailable);
    store.fail_next(Some(Op::Load), 1, ErrorKind::Corrupt);
    store.get_metadata(&pid("a")).await.unwrap();
    assert_eq!(kind(store.load().await), (ErrorKind::Corrupt, false));
    store.load().await.unwrap();
    let put = store.put_metadata(&pid("a"), &json!(1), None).await;
    assert_eq!(kind(put), (ErrorKind::Unavailable, true));
    store
        .put_metadata(&pid("a"), &json!(1), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn saves_touching_a_project_fail_a_set_number_of_times() {
    let mut pool = pool_with(&["a", "b"]);
    let (store, mut rev) = stored(&mut pool).await;
    store.fail_saves_touching(pid("a"), true, Some(2));

    // A save of changes that leave `a` alone goes through and uses up nothing.
    pool.add_available(
        pid("c"),
        TemplateName::new("t").unwrap(),
        Timestamp::from_millis(2),
    )
    .unwrap();
    rev = store
        .save(&changes(&pool), &Precondition::Matches(rev))
        .await
        .unwrap();
    pool.mark_saved(pool.version());

    // A full write carries every project, `a` included.
    let write = full(&pool);
    let again = Precondition::Matches(rev);
    assert_eq!(
        kind(store.save(&write, &again).await),
        (ErrorKind::Unavailable, true)
    );
    assert_eq!(
        kind(store.save(&write, &again).await),
        (ErrorKind::Unavailable, true)
    );
    store.save(&write, &again).await.unwrap();
    assert_eq!(store.counters().saves_failed, 2);
    assert_eq!(store.saved_versions(), vec![2, 3, 3]);
}

#[tokio::test]
async fn saves_touching_a_project_can_fail_for_good() {
    let mut pool = pool_with(&["a", "b"]);
    let (store, mut rev) = stored(&mut pool).await;
    store.fail_saves_touching(pid("a"), false, None);
    for _ in 0..5 {
        let refused = store
            .save(&full(&pool), &Precondition::Matches(rev.clone()))
            .await;
        assert_eq!(kind(refused), (ErrorKind::InvalidInput, false));
    }
    let t = TemplateName::new("t").unwrap();
    pool.add_available(pid("c"), t, Timestamp::from_millis(2))
        .unwrap();
    rev = store
        .save(&changes(&pool), &Precondition::Matches(rev))
        .await
        .unwrap();
    pool.mark_saved(pool.version());
    pool.quarantine(&pid("a"), "bad", Timestamp::from_millis(3))
        .unwrap();
    let refused = store
        .save(&changes(&pool), &Precondition::Matches(rev))
        .await;
    assert_eq!(kind(refused), (ErrorKind::InvalidInput, false));
    let c = store.counters();
    assert_eq!(
        (c.saves_attempted, c.saves_succeeded, c.saves_failed),
        (8, 2, 6)
    );
    store.clear_faults();
    let rev = store.load().await.unwrap().unwrap().revision;
    store
        .save(&changes(&pool), &Precondition::Matches(rev))
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap().unwrap().value, pool.snapshot());
}

#[tokio::test]
async fn one_metadata_document_can_fail_while_the_others_work() {
    let store = MemoryStore::new();
    store.fail_metadata_of(pid("bad"));
    let doc = json!({"url": "https://example.invalid"});
    let put = store.put_metadata(&pid("bad"), &doc, None).await;
    assert_eq!(kind(put), (ErrorKind::PermissionDenied, false));
    assert_eq!(
        kind(store.get_metadata(&pid("bad")).await),
        (ErrorKind::PermissionDenied, false)
    );
    assert_eq!(
        kind(store.delete_metadata(&pid("bad")).await),
        (ErrorKind::PermissionDenied, false)
    );
    store.put_metadata(&pid("good"), &doc, None).await.unwrap();
    assert_eq!(
        store
            .get_metadata(&pid("good"))
            .await
            .unwrap()
            .unwrap()
            .value,
        doc
    );
    assert!(
        store.load().await.unwrap().is_none(),
        "the pool is not affected"
    );
    let c = store.counters();
    assert_eq!((c.metadata_puts, c.metadata_gets), (2, 2));
}

#[tokio::test]
async fn a_store_that_is_down_refuses_everything_until_it_is_back() {
    let mut pool = pool_with(&["a"]);
    let (store, rev) = stored(&mut pool).await;
    store
        .put_metadata(&pid("a"), &json!(1), None)
        .await
        .unwrap();
    store.set_down(true);
    let write = full(&pool);
    let again = Precondition::Matches(rev.clone());
    let unavailable = (ErrorKind::Unavailable, true);
    assert_eq!(kind(store.load().await), unavailable);
    assert_eq!(kind(store.save(&write, &again).await), unavailable);
    assert_eq!(kind(store.get_metadata(&pid("a")).await), unavailable);
    assert_eq!(
        kind(store.put_metadata(&pid("a"), &json!(2), None).await),
        unavailable
    );
    assert_eq!(kind(store.delete_metadata(&pid("a")).await), unavailable);
    store.set_down(false);
    assert_eq!(
        store.load().await.unwrap().unwrap().revision,
        rev,
        "nothing was stored"
    );
    assert_eq!(
        store.get_metadata(&pid("a")).await.unwrap().unwrap().value,
        json!(1)
    );
    store.save(&write, &again).await.unwrap();
    assert_eq!(store.saved_versions(), vec![1, 1]);
}

#[tokio::test]
async fn counters_count_every_attempt_and_each_outcome_once() {
    let mut pool = pool_with(&["a"]);
    let (store, rev) = stored(&mut pool).await;
    let write = full(&pool);
    store
        .save(&write, &Precondition::CreateOnly)
        .await
        .unwrap_err();
    store
        .save(&write, &Precondition::Matches(Revision::new("old")))
        .await
        .unwrap_err();
    store.fail_next(Some(Op::Save), 1, ErrorKind::Other);
    store
        .save(&write, &Precondition::Matches(rev.clone()))
        .await
        .unwrap_err();
    store
        .save(&write, &Precondition::Matches(rev))
        .await
        .unwrap();
    store.load().await.unwrap();
    store
        .put_metadata(&pid("a"), &json!(1), Some(Precondition::CreateOnly))
        .await
        .unwrap();
    store
        .put_metadata(&pid("a"), &json!(1), Some(Precondition::CreateOnly))
        .await
        .unwrap_err();
    store.get_metadata(&pid("a")).await.unwrap();
    store.delete_metadata(&pid("a")).await.unwrap();
    let expected = Counters {
        loads: 1,
        saves_attempted: 5,
        saves_succeeded: 2,
        saves_conflicted: 2,
        saves_failed: 1,
        metadata_gets: 1,
        metadata_puts: 2,
    };
    assert_eq!(store.counters(), expected);
}

#[tokio::test]
async fn saved_versions_list_what_was_stored_in_order() {
    let mut pool = pool_with(&["a"]);
    let (store, rev) = stored(&mut pool).await;
    pool.add_available(
        pid("b"),
        TemplateName::new("t").unwrap(),
        Timestamp::from_millis(2),
    )
    .unwrap();
    let rev = store
        .save(&changes(&pool), &Precondition::Matches(rev))
        .await
        .unwrap();
    pool.mark_saved(pool.version());
    pool.quarantine(&pid("a"), "x", Timestamp::from_millis(3))
        .unwrap();
    let stale = store.save(&full(&pool), &Precondition::CreateOnly).await;
    assert!(stale.unwrap_err().is_conflict());
    store.fail_next(Some(Op::Save), 1, ErrorKind::Unavailable);
    store
        .save(&full(&pool), &Precondition::Matches(rev.clone()))
        .await
        .unwrap_err();
    store
        .save(&full(&pool), &Precondition::Matches(rev))
        .await
        .unwrap();
    assert_eq!(
        store.saved_versions(),
        vec![1, 2, 3],
        "refused and failed saves are not listed"
    );
    let loaded: PoolSnapshot = store.load().await.unwrap().unwrap().value;
    assert_eq!(loaded, pool.snapshot());
}

#[tokio::test(start_paused = true)]
async fn a_save_dropped_while_in_flight_stores_nothing() {
    let mut pool = pool_with(&["a"]);
    let (store, rev) = stored(&mut pool).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_secs(1)));
    pool.quarantine(&pid("a"), "x", Timestamp::from_millis(2))
        .unwrap();
    let write = changes(&pool);
    let again = Precondition::Matches(rev.clone());
    let cut = tokio::time::timeout(500 * MS, store.save(&write, &again)).await;
    assert!(cut.is_err(), "the save was still sleeping when dropped");

    let spawned = {
        let (store, write, again) = (store.clone(), write.clone(), again.clone());
        tokio::spawn(async move { store.save(&write, &again).await })
    };
    tokio::time::sleep(300 * MS).await;
    spawned.abort();
    assert!(spawned.await.unwrap_err().is_cancelled());

    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = store.load().await.unwrap().unwrap();
    assert_eq!(
        now.revision, rev,
        "a cancelled save changed the stored pool"
    );
    assert_eq!(store.saved_versions(), vec![1]);
    let c = store.counters();
    assert_eq!((c.saves_attempted, c.saves_succeeded), (3, 1));
    assert_eq!(
        (c.saves_failed, c.saves_conflicted),
        (0, 0),
        "a cancelled save has no outcome"
    );
    let (saved, took) = timed(store.save(&write, &again)).await;
    saved.unwrap();
    assert_eq!(took, Duration::from_secs(1));
}

#[tokio::test]
async fn a_mock_store_answers_a_scripted_sequence() {
    let mut mock = MockPoolStore::new();
    let mut seq = Sequence::new();
    mock.expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Ok(None));
    mock.expect_save()
        .withf(|w, p| w.pool_version() == 1 && *p == Precondition::CreateOnly)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Revision::new("r1")));
    mock.expect_save()
        .withf(|_, p| *p == Precondition::Matches(Revision::new("r1")))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(StoreError::conflict("mock", "lost the race")));
    let store: Arc<dyn PoolStore> = Arc::new(mock);

    let mut pool = pool_with(&["a"]);
    assert!(store.load().await.unwrap().is_none());
    let rev = store
        .save(&full(&pool), &Precondition::CreateOnly)
        .await
        .unwrap();
    assert_eq!(rev, Revision::new("r1"));
    pool.add_available(
        pid("b"),
        TemplateName::new("t").unwrap(),
        Timestamp::from_millis(2),
    )
    .unwrap();
    let lost = store
        .save(&full(&pool), &Precondition::Matches(rev))
        .await
        .unwrap_err();
    assert!(lost.is_conflict() && !lost.is_temporary());
}
