//! Keeping the pool warm: replenishment, failing provisioners, waiting callers, leases.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pool_core::ConversationId;
use pool_runtime::{Circuit, ManagerError, OnEmpty, PoolManager, Provisioner};
use pool_storage::MemoryStore;
use support::*;

fn conv(i: usize) -> ConversationId {
    ConversationId::new(format!("conv-{i}")).unwrap()
}

async fn start(
    store: &MemoryStore,
    cfg: pool_runtime::ManagerConfig,
    p: Arc<dyn Provisioner>,
) -> PoolManager {
    let meta = Arc::new(store.clone());
    PoolManager::builder(Arc::new(store.clone()))
        .config(cfg)
        .provisioner(p)
        .metadata(meta, Duration::from_secs(30), 1_000)
        .start()
        .await
        .unwrap()
}

/// Target 25, provisions take 2 s, up to 10 at once: exactly 25 provisions, and never
/// more than 25 ready or in flight.
#[tokio::test(start_paused = true)]
async fn fills_to_target_with_exactly_target_provisions() {
    let store = MemoryStore::new();
    let mut cfg = config(25);
    cfg.templates[0].policy.max_in_flight = 10;
    let p = TestProvisioner::new(Duration::from_secs(2));
    let m = start(&store, cfg, p.clone()).await;
    let mut peak = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = m.status();
        let t = &s.templates[&template()];
        peak = peak.max(t.counts.available + t.counts.reserved + t.provisioning);
    }
    assert_eq!(p.started(), 25);
    assert_eq!(m.metrics().provisions_started, 25);
    assert!(peak <= 25, "{peak} ready or in flight");
    let s = m.status();
    assert_eq!(s.templates[&template()].reserved_here, 25);
    assert_eq!(s.unsaved_changes, 0);
    let a = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    assert!(a.warm);
    let metadata = m.metadata(&a.project).await.unwrap();
    assert_eq!(
        metadata["url"],
        format!("https://example.invalid/{}", a.project)
    );
    m.shutdown(Duration::from_secs(5)).await;
}

/// A provisioner that always fails: attempts are bounded by the backoff and the circuit,
/// the circuit shows open, and hand-outs of what is left go on.
#[tokio::test(start_paused = true)]
async fn a_failing_provisioner_opens_the_circuit_and_hand_outs_continue() {
    let store = MemoryStore::new();
    let cfg = config(5);
    let p = TestProvisioner::failing(Duration::from_millis(100));
    let m = start(&store, cfg, p.clone()).await;
    m.add_projects(&template(), ids("left", 3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let s = m.status();
    assert_eq!(s.templates[&template()].circuit, Circuit::Open);
    // 2 ready of a target of 5 leave room for 2 at once; 1 s, 2 s, 4 s backoff, then the
    // circuit opens after 5 failures and one probe runs a minute.
    let attempts = p.started();
    assert!(
        (5..=6 + 600 / 60 + 2).contains(&attempts),
        "{attempts} attempts in 10 minutes"
    );
    assert_eq!(s.metrics.provisions_failed as usize, attempts);
    for i in 0..3 {
        m.allocate(&conv(i), &template(), OnEmpty::Fail)
            .await
            .unwrap();
    }
    let err = m
        .allocate(&conv(9), &template(), OnEmpty::Fail)
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::PoolEmpty { .. }), "{err}");
    m.shutdown(Duration::from_secs(5)).await;
}

/// Twice the pool size arrives at once with the wait policy. The warm half is served at
/// once; the rest in arrival order as projects are provisioned, or told they timed out;
/// nobody is served twice and a caller that gave up holds nothing.
#[tokio::test(start_paused = true)]
async fn a_burst_is_served_in_arrival_order_or_times_out() {
    let store = MemoryStore::new();
    let mut cfg = config(10);
    cfg.templates[0].policy.max_in_flight = 1;
    let p = TestProvisioner::new(Duration::from_millis(500));
    let m = start(&store, cfg, p.clone()).await;
    reserved(&m, 10).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let m = m.clone();
        let limit = if i < 16 {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(1_200)
        };
        tasks.spawn(async move {
            (
                i,
                m.allocate(&conv(i), &template(), OnEmpty::Wait(limit))
                    .await,
            )
        });
        tokio::task::yield_now().await;
    }
    let mut served = Vec::new();
    let mut timed_out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (i, Ok(a)) => served.push((i, a)),
            (i, Err(ManagerError::WaitTimedOut { .. })) => timed_out.push(i),
            (i, Err(e)) => panic!("caller {i}: {e}"),
        }
    }
    served.sort_by_key(|(i, _)| *i);
    assert_eq!(served.len() + timed_out.len(), 20);
    assert!(served.iter().filter(|(i, _)| *i < 10).all(|(_, a)| a.warm));
    let late: Vec<usize> = served
        .iter()
        .filter(|(i, _)| *i >= 10)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        late,
        (10..16).collect::<Vec<_>>(),
        "waiters with a long deadline are all served"
    );
    timed_out.sort();
    assert_eq!(timed_out, (16..20).collect::<Vec<_>>());
    let minted = |a: &pool_runtime::Allocated| -> usize {
        a.project
            .as_str()
            .split('-')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let order: Vec<usize> = served
        .iter()
        .filter(|(i, _)| *i >= 10)
        .map(|(_, a)| minted(a))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not first come first served: {order:?}"
    );
    let distinct: HashSet<_> = served.iter().map(|(_, a)| a.project.clone()).collect();
    assert_eq!(distinct.len(), served.len());
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    let held = holders(&snap);
    for i in &timed_out {
        assert!(
            !held.contains_key(conv(*i).as_str()),
            "caller {i} gave up but holds a project"
        );
    }
    check(&snap);
    m.shutdown(Duration::from_secs(5)).await;
}

/// An allocation not marked active within its lease is archived and recycled, never
/// handed to anyone again; its conversation gets a fresh project when it asks again.
#[tokio::test(start_paused = true)]
async fn an_unused_allocation_is_reclaimed_after_its_lease() {
    let store = MemoryStore::new();
    let mut cfg = config(3);
    cfg.allocation_lease = Duration::from_secs(60);
    let p = TestProvisioner::new(Duration::from_millis(10));
    let m = start(&store, cfg, p.clone()).await;
    reserved(&m, 3).await;
    let idle = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    let busy = m
        .allocate(&conv(2), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    m.mark_active(&busy.project, busy.token).await.unwrap();
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert_eq!(m.metrics().reclaimed, 1);
    let again = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    assert_ne!(again.project, idle.project);
    assert!(!again.repeat);
    let stale = m.mark_active(&idle.project, idle.token).await.unwrap_err();
    assert!(
        stale.code() == "invalid_transition" || stale.code() == "unknown_project",
        "{stale}"
    );
    assert_eq!(
        m.allocate(&conv(2), &template(), OnEmpty::Fail)
            .await
            .unwrap()
            .project,
        busy.project
    );
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    assert!(
        snap.projects.iter().all(|r| r.id != idle.project),
        "reclaimed project was recycled"
    );
    assert!(p.recycled.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    m.shutdown(Duration::from_secs(5)).await;
}

/// The cold policy provisions for this caller.
#[tokio::test(start_paused = true)]
async fn the_cold_policy_provisions_for_the_caller() {
    let store = MemoryStore::new();
    let mut cfg = config(0);
    cfg.templates[0].policy.target = 0;
    let p = TestProvisioner::new(Duration::from_secs(3));
    let m = start(&store, cfg, p.clone()).await;
    let failed = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap_err();
    assert_eq!(failed.code(), "pool_empty");
    let started = tokio::time::Instant::now();
    let a = m
        .allocate(&conv(1), &template(), OnEmpty::Cold)
        .await
        .unwrap();
    assert!(!a.warm);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(p.started(), 1);
    m.flush().await.unwrap();
    assert_eq!(holders(&stored(&store).await)[conv(1).as_str()], a.project);
    m.shutdown(Duration::from_secs(5)).await;
}

/// Callers waiting for a project are told at once when the manager shuts down.
#[tokio::test(start_paused = true)]
async fn shutdown_answers_waiting_callers() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(1), 0).await;
    let waiter = {
        let m = m.clone();
        tokio::spawn(async move {
            m.allocate(
                &conv(1),
                &template(),
                OnEmpty::Wait(Duration::from_secs(600)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    assert!(m.shutdown(Duration::from_secs(5)).await.clean);
    let answer = waiter.await.unwrap().unwrap_err();
    assert_eq!(answer.code(), "shutting_down");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Two requests of one conversation wait (a client retry); both are served, then the
/// first goes away before it reads its answer. The project stays with the conversation,
/// since the second request was told it holds it.
#[tokio::test(start_paused = true)]
async fn a_caller_giving_up_keeps_a_project_another_request_was_told_of() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(2), 0).await;
    let (c, t) = (conv(1), template());
    let wait = OnEmpty::Wait(Duration::from_secs(10));
    let mut first = Box::pin(m.allocate(&c, &t, wait));
    assert!(
        tokio::time::timeout(Duration::ZERO, first.as_mut())
            .await
            .is_err()
    );
    let mut second = Box::pin(m.allocate(&c, &t, wait));
    assert!(
        tokio::time::timeout(Duration::ZERO, second.as_mut())
            .await
            .is_err()
    );
    assert_eq!(m.status().templates[&t].waiting, 2);
    m.add_projects(&t, ids("p", 2)).await.unwrap();
    eventually(Duration::from_secs(5), || {
        m.status().templates[&t].waiting == 0
    })
    .await;
    drop(first);
    let held = second.await.unwrap();
    for i in 2..4 {
        let other = m.allocate(&conv(i), &t, OnEmpty::Fail).await;
        assert!(other.is_err() || other.unwrap().project != held.project);
    }
    assert_eq!(
        m.allocate(&c, &t, OnEmpty::Fail).await.unwrap().project,
        held.project
    );
}
