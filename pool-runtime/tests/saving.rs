//! The saver under failing and slow stores, and shutdown.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pool_core::{ConversationId, PoolSnapshot, ProjectState};
use pool_runtime::{Durability, Health, OnEmpty, PoolManager};
use pool_storage::{
    Capabilities, ErrorKind, Latency, MemoryStore, Op, PoolStore, PoolWrite, Precondition,
    Revision, StoreError, Versioned,
};
use support::*;

fn conv(i: usize) -> ConversationId {
    ConversationId::new(format!("conv-{i}")).unwrap()
}

/// Saves touching one of 100 projects fail for good; saves touching five others fail
/// three times each and then succeed.
#[tokio::test(start_paused = true)]
async fn a_permanently_refused_change_is_set_aside_and_the_rest_stored() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(100), 100).await;
    reserved(&m, 100).await;
    let mut handed = Vec::new();
    for i in 0..100 {
        handed.push(
            m.allocate(&conv(i), &template(), OnEmpty::Fail)
                .await
                .unwrap()
                .project,
        );
    }
    let poison = handed[37].clone();
    store.fail_saves_touching(poison.clone(), false, None);
    for p in &handed[40..45] {
        store.fail_saves_touching(p.clone(), true, Some(3));
    }
    m.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    for (i, p) in handed.iter().enumerate() {
        let rec = snap.projects.iter().find(|r| &r.id == p).unwrap();
        let allocated = matches!(rec.state, ProjectState::Allocated { .. });
        assert_eq!(allocated, p != &poison, "project {i} {p}: {:?}", rec.state);
    }
    let status = m.status();
    assert_eq!(status.metrics.save_failures, 1);
    assert!(status.metrics.save_retries >= 1);
    assert!(
        matches!(status.health, Health::Degraded { .. }),
        "{:?}",
        status.health
    );
    let report = m.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.set_aside, vec![poison]);
    assert!(!report.clean);
}

/// 100 archives (durable operations) queued against a 50 ms store, then shutdown at
/// once: every archive is stored before shutdown returns.
#[tokio::test(start_paused = true)]
async fn shutdown_stores_every_queued_durable_operation() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(100), 100).await;
    reserved(&m, 100).await;
    let mut held = Vec::new();
    for i in 0..100 {
        held.push(
            m.allocate(&conv(i), &template(), OnEmpty::Fail)
                .await
                .unwrap(),
        );
    }
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(50)));
    let mut archives = tokio::task::JoinSet::new();
    for a in held {
        let m = m.clone();
        archives.spawn(async move { m.archive(&a.project, a.token).await });
    }
    eventually(Duration::from_secs(1), || {
        m.status().templates[&template()].counts.archived == 100
    })
    .await;
    assert!(
        m.status().unsaved_changes > 0,
        "the archives are still waiting for their save"
    );
    let report = m.shutdown(Duration::from_secs(10)).await;
    assert!(report.clean, "{report:?}");
    let snap = stored(&store).await;
    check(&snap);
    assert_eq!(states(&snap)["archived"], 100);
    while let Some(r) = archives.join_next().await {
        r.unwrap().unwrap();
    }
}

/// The store is down for 60 s while 10 hand-outs a second arrive: unsaved changes never
/// pass the cap, and everything acknowledged is stored once the store is back.
#[tokio::test(start_paused = true)]
async fn a_down_store_applies_backpressure_and_loses_nothing() {
    let store = MemoryStore::new();
    let mut cfg = config(1_000);
    cfg.max_unsaved = 25;
    cfg.max_unsaved_age = Duration::from_secs(3600);
    let m = manager_with(&store, cfg, 1_000).await;
    reserved(&m, 1_000).await;
    store.set_down(true);
    let mut calls = tokio::task::JoinSet::new();
    let mut max_unsaved = 0;
    for i in 0..600 {
        let m2 = m.clone();
        calls.spawn(async move {
            let a = m2
                .allocate(&conv(i), &template(), OnEmpty::Fail)
                .await
                .unwrap();
            (conv(i).to_string(), a.project)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_unsaved = max_unsaved.max(m.status().unsaved_changes);
    }
    assert!(max_unsaved <= 25, "unsaved changes reached {max_unsaved}");
    assert!(matches!(m.status().health, Health::Degraded { .. }));
    store.set_down(false);
    let mut answered = Vec::new();
    while let Some(r) = calls.join_next().await {
        answered.push(r.unwrap());
    }
    m.flush().await.unwrap();
    let held = holders(&stored(&store).await);
    assert_eq!(answered.len(), 600);
    for (c, p) in answered {
        assert_eq!(held.get(&c), Some(&p));
    }
    assert_eq!(m.status().health, Health::Healthy);
    assert!(m.metrics().backpressure_waits > 0);
}

/// Temporary failures are retried with backoff until they pass.
#[tokio::test(start_paused = true)]
async fn temporary_failures_are_retried_until_stored() {
    let store = MemoryStore::new();
    let m = manager_with(&store, config(3), 3).await;
    reserved(&m, 3).await;
    store.fail_next(Some(Op::Save), 4, ErrorKind::Unavailable);
    let a = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    m.flush().await.unwrap();
    assert_eq!(
        holders(&stored(&store).await)[&conv(1).to_string()],
        a.project
    );
    assert_eq!(m.metrics().save_retries, 4);
    assert_eq!(m.metrics().save_failures, 0);
}

/// In durable mode a hand-out returns only once it is stored, and callers waiting at
/// the same time share writes.
#[tokio::test(start_paused = true)]
async fn durable_hand_outs_are_stored_when_answered_and_share_writes() {
    let store = MemoryStore::new();
    let mut cfg = config(64);
    cfg.durability = Durability::Durable;
    let m = manager_with(&store, cfg, 64).await;
    reserved(&m, 64).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(20)));
    let before = store.counters().saves_succeeded;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let m = m.clone();
        tasks.spawn(async move {
            m.allocate(&conv(i), &template(), OnEmpty::Fail)
                .await
                .unwrap()
        });
    }
    let store2 = store.clone();
    while let Some(r) = tasks.join_next().await {
        let a = r.unwrap();
        let snap = stored(&store2).await;
        let rec = snap.projects.iter().find(|p| p.id == a.project).unwrap();
        assert!(rec.state.holder().is_some(), "answered before stored");
    }
    let writes = store.counters().saves_succeeded - before;
    assert!(
        writes <= 3,
        "{writes} writes for 64 concurrent durable hand-outs"
    );
}

/// A store whose next save panics once armed: a buggy backend that kills the saver.
#[derive(Debug)]
struct PanickyStore {
    inner: MemoryStore,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl PoolStore for PanickyStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        self.inner.load().await
    }
    async fn save(&self, w: &PoolWrite, p: &Precondition) -> Result<Revision, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("backend bug");
        }
        self.inner.save(w, p).await
    }
}

/// With the saver gone (its store panicked), hand-outs go on and a flush saves inline.
#[tokio::test(start_paused = true)]
async fn flush_falls_back_to_an_inline_save_when_the_saver_is_gone() {
    let memory = MemoryStore::new();
    let store = Arc::new(PanickyStore {
        inner: memory.clone(),
        armed: AtomicBool::new(false),
    });
    let m = PoolManager::builder(store.clone())
        .config(config(3))
        .start()
        .await
        .unwrap();
    m.add_projects(&template(), ids("p", 3)).await.unwrap();
    reserved(&m, 3).await;
    store.armed.store(true, Ordering::SeqCst);
    let a = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || {
        memory.counters().saves_attempted > 0 && {
            let s = m.status();
            s.unsaved_changes > 0 && s.metrics.saves > 0
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    match m.status().health {
        Health::Degraded { reason } => assert!(reason.contains("saver stopped"), "{reason}"),
        other => panic!("a manager without its saver reports {other:?}"),
    }
    let b = m
        .allocate(&conv(2), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    m.flush().await.unwrap();
    assert_eq!(m.metrics().inline_saves, 1);
    let held = holders(&stored(&memory).await);
    assert_eq!(held[&conv(1).to_string()], a.project);
    assert_eq!(held[&conv(2).to_string()], b.project);
    let report = m.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean, "{report:?}");
}

/// In durable mode, a hand-out the store refuses for good is not acknowledged.
#[tokio::test(start_paused = true)]
async fn a_durable_hand_out_the_store_refuses_is_not_acknowledged() {
    let store = MemoryStore::new();
    let mut cfg = config(2);
    cfg.durability = Durability::Durable;
    let m = manager_with(&store, cfg, 2).await;
    reserved(&m, 2).await;
    for p in ids("p", 2) {
        store.fail_saves_touching(p, false, None);
    }
    let err = m
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_stored", "{err}");
    assert!(holders(&stored(&store).await).is_empty());
}
