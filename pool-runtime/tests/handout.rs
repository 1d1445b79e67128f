//! Hand-outs under concurrency, repetition and cancellation.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use pool_core::ConversationId;
use pool_runtime::{Durability, ManagerError, OnEmpty};
use pool_storage::{Latency, MemoryStore, Op, PoolStore};
use rand::{Rng, SeedableRng};
use support::*;

fn conv(i: usize) -> ConversationId {
    ConversationId::new(format!("conv-{i}")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_warm_project_goes_to_exactly_one_of_64_callers() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(1), 1).await;
    reserved(&m, 1).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(50)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let m = m.clone();
        tasks.spawn(async move { m.allocate(&conv(i), &template(), OnEmpty::Fail).await });
    }
    let (mut ok, mut empty) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(a) => {
                assert!(a.warm);
                ok += 1;
            }
            Err(ManagerError::PoolEmpty { .. }) => empty += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, empty), (1, 63));
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    assert_eq!(holders(&snap).len(), 1);
    assert_eq!(m.metrics().stockouts, 63);
}

#[tokio::test(start_paused = true)]
async fn the_same_conversation_asking_100_times_gets_one_project_and_token() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(5), 5).await;
    reserved(&m, 5).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(20)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let m = m.clone();
        tasks.spawn(async move {
            m.allocate(&conv(7), &template(), OnEmpty::Fail)
                .await
                .unwrap()
        });
    }
    let mut got = HashSet::new();
    let mut repeats = 0;
    while let Some(r) = tasks.join_next().await {
        let a = r.unwrap();
        repeats += usize::from(a.repeat);
        got.insert((a.project, a.token));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(repeats, 99);
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    assert_eq!(states(&snap)["allocated"], 1);
    assert_eq!(states(&snap)["reserved"], 4);
}

/// Pool of 5; 1,000 allocations each cut off by a timeout of 0-2 ms while saves take
/// 1 ms, in durable mode so that many are cut off while waiting for their save.
#[tokio::test(start_paused = true)]
async fn cancelled_allocations_leave_no_half_allocated_project() {
    let store = MemoryStore::new();
    let mut cfg = config(5);
    cfg.durability = Durability::Durable;
    let m = manager_with(&store, cfg, 5).await;
    reserved(&m, 5).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(1)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut answered = Vec::new();
    for i in 0..1_000 {
        let limit = Duration::from_micros(rng.random_range(0..=2_000));
        let on_empty = if i % 2 == 0 {
            OnEmpty::Wait(Duration::from_millis(3))
        } else {
            OnEmpty::Fail
        };
        let (c, t) = (conv(i), template());
        let call = m.allocate(&c, &t, on_empty);
        if let Ok(Ok(a)) = tokio::time::timeout(limit, call).await {
            answered.push((conv(i).to_string(), a.project));
        }
    }
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    let s = states(&snap);
    let count = |k: &str| s.get(k).copied().unwrap_or(0);
    assert_eq!(
        count("available") + count("reserved") + count("allocated"),
        5,
        "{s:?}"
    );
    let held = holders(&snap);
    assert_eq!(held.len(), count("allocated"));
    for (c, p) in &answered {
        assert_eq!(
            held.get(c),
            Some(p),
            "answered allocation of {c} is not stored"
        );
    }
}

/// Saves take random times (one of them 300 ms, the next 10 ms, and so on); whatever the
/// order in which they would finish, the store only ever moves forward and ends at the
/// newest version.
#[tokio::test(start_paused = true)]
async fn saves_never_go_back_over_1000_latency_seeds() {
    for seed in 0..1_000u64 {
        let store = MemoryStore::new();
        let m = manager_with(&store, config(3), 3).await;
        reserved(&m, 3).await;
        store.seed(seed);
        store.script_latency(
            Op::Save,
            [Duration::from_millis(300), Duration::from_millis(10)],
        );
        store.set_latency(
            Op::Save,
            Latency::Uniform(Duration::ZERO, Duration::from_millis(300)),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for i in 0..3 {
            m.allocate(&conv(i), &template(), OnEmpty::Fail)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        }
        m.flush().await.unwrap();
        let versions = store.saved_versions();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: {versions:?}"
        );
        let snap = stored(&store).await;
        assert_eq!(snap.pool_version, m.status().version, "seed {seed}");
        assert_eq!(holders(&snap).len(), 3, "seed {seed}");
        check(&snap);
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_dropped_request_futures_are_all_stored() {
    let store = MemoryStore::new();
    let mut cfg = config(10_000);
    cfg.max_unsaved = 2_000;
    let m = manager_with(&store, cfg, 10_000).await;
    reserved(&m, 10_000).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(2)));
    let mut expected = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let (c, t) = (conv(i), template());
        let fut = Box::pin(m.allocate(&c, &t, OnEmpty::Fail));
        let a = fut.await.unwrap();
        expected.push((conv(i).to_string(), a.project));
    }
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    let held = holders(&snap);
    assert_eq!(held.len(), 10_000);
    for (c, p) in expected {
        assert_eq!(held[&c], p);
    }
    let writes = store.counters().saves_succeeded;
    assert!(
        writes < 10_000,
        "{writes} writes for 10,000 hand-outs: not coalesced"
    );
    assert!(store.load().await.unwrap().is_some());
}
