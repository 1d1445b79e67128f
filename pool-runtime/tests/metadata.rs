//! The metadata cache: one load per miss however many readers, TTL, cancellation.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pool_core::ProjectId;
use pool_runtime::PoolManager;
use pool_storage::{Latency, MemoryStore, MetadataStore, Op};
use serde_json::json;
use support::*;

async fn with_metadata(store: &MemoryStore, ttl: Duration) -> PoolManager {
    PoolManager::builder(Arc::new(store.clone()))
        .config(config(1))
        .metadata(Arc::new(store.clone()), ttl, 100)
        .start()
        .await
        .unwrap()
}

async fn read_50(m: &PoolManager, id: &ProjectId) -> Vec<serde_json::Value> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (m, id) = (m.clone(), id.clone());
        tasks.spawn(async move { (*m.metadata(&id).await.unwrap()).clone() });
    }
    let mut values = Vec::new();
    while let Some(v) = tasks.join_next().await {
        values.push(v.unwrap());
    }
    values
}

/// 50 concurrent cold reads, then 50 again at the TTL boundary, each load taking
/// 100 ms: exactly two loads, and every reader sees the same value.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_cause_one_load_each_ttl() {
    let store = MemoryStore::new();
    let id = ProjectId::new("horizon-617-9ca82").unwrap();
    let doc = json!({"backend": "https://example.invalid/horizon-617-9ca82"});
    store.put_metadata(&id, &doc, None).await.unwrap();
    store.set_latency(Op::GetMetadata, Latency::Fixed(Duration::from_millis(100)));
    let m = with_metadata(&store, Duration::from_secs(30)).await;
    let first = read_50(&m, &id).await;
    assert!(first.iter().all(|v| v == &doc));
    assert_eq!(store.counters().metadata_gets, 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    read_50(&m, &id).await;
    assert_eq!(
        store.counters().metadata_gets,
        1,
        "fresh entries are served from the cache"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let second = read_50(&m, &id).await;
    assert!(second.iter().all(|v| v == &doc));
    assert_eq!(store.counters().metadata_gets, 2);
    let metrics = m.metrics();
    assert_eq!(metrics.metadata_loads, 2);
    assert!(metrics.cache_hits >= 50);
}

/// A read cancelled 100 times in the middle of its load leaves the pool unchanged and
/// the cache usable.
#[tokio::test(start_paused = true)]
async fn cancelled_reads_change_nothing() {
    let store = MemoryStore::new();
    let id = ProjectId::new("p-1-00000").unwrap();
    store
        .put_metadata(&id, &json!({"n": 1}), None)
        .await
        .unwrap();
    store.set_latency(Op::GetMetadata, Latency::Fixed(Duration::from_millis(100)));
    let m = with_metadata(&store, Duration::from_secs(30)).await;
    m.flush().await.unwrap();
    let before = m.pool_snapshot();
    for _ in 0..100 {
        let read = m.metadata(&id);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), read)
                .await
                .is_err()
        );
    }
    assert_eq!(m.pool_snapshot(), before);
    assert_eq!(*m.metadata(&id).await.unwrap(), json!({"n": 1}));
    let missing = m
        .metadata(&ProjectId::new("nobody-1-00000").unwrap())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), "no_metadata");
}

/// A project this manager provisioned is handed out with the document the provisioner
/// returned, however long it waited in reserve and without reading the store; once
/// handed out, its metadata is read through the cache like any other.
#[tokio::test(start_paused = true)]
async fn provisioned_projects_come_with_their_metadata() {
    let store = MemoryStore::new();
    let mut cfg = config(5);
    cfg.templates[0].policy.max_in_flight = 5;
    let m = PoolManager::builder(Arc::new(store.clone()))
        .config(cfg)
        .provisioner(TestProvisioner::new(Duration::from_millis(10)))
        .metadata(Arc::new(store.clone()), Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap();
    reserved(&m, 5).await;
    // Far past the cache's time-to-live: what is kept with a reservation does not expire.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let mut handed = Vec::new();
    for i in 0..5 {
        let conversation = pool_core::ConversationId::new(format!("conv-{i}")).unwrap();
        let a = m
            .allocate(&conversation, &template(), pool_runtime::OnEmpty::Fail)
            .await
            .unwrap();
        let doc = a
            .metadata
            .clone()
            .expect("the document comes with the hand-out");
        assert_eq!(doc["url"], format!("https://example.invalid/{}", a.project));
        let again = m
            .allocate(&conversation, &template(), pool_runtime::OnEmpty::Fail)
            .await
            .unwrap();
        assert!(again.repeat && again.metadata.is_none());
        handed.push(a.project);
    }
    assert_eq!(store.counters().metadata_gets, 0, "no read for a hand-out");
    // A project still in reserve is read from memory too.
    reserved(&m, 5).await;
    let in_reserve = m
        .status()
        .templates
        .get(&template())
        .map(|t| t.reserved_here)
        .unwrap();
    assert_eq!(in_reserve, 5);
    let snapshot = m.pool_snapshot();
    let waiting = snapshot
        .projects
        .iter()
        .find(|r| matches!(r.state, pool_core::ProjectState::Reserved { .. }))
        .unwrap();
    let doc = m.metadata(&waiting.id).await.unwrap();
    assert_eq!(
        doc["url"],
        format!("https://example.invalid/{}", waiting.id)
    );
    assert_eq!(store.counters().metadata_gets, 0, "no read for a reserve");
    let handed_out = &handed[0];
    let doc = m.metadata(handed_out).await.unwrap();
    assert_eq!(doc["url"], format!("https://example.invalid/{handed_out}"));
    assert_eq!(
        store.counters().metadata_gets,
        1,
        "a handed-out project's metadata is read through the cache"
    );
    m.metadata(handed_out).await.unwrap();
    assert_eq!(store.counters().metadata_gets, 1);
    assert_eq!(m.metrics().metadata_loads, 1);
    m.shutdown(Duration::from_secs(5)).await;
}

/// Projects reserved without their document at hand (here: stored by an earlier run)
/// have it read ahead, once each, so their hand-outs need no read; a project whose
/// document is missing is handed out without one and not read over and over.
#[tokio::test(start_paused = true)]
async fn reserved_projects_have_their_metadata_read_ahead() {
    let store = MemoryStore::new();
    let ids = ids("earlier", 10);
    for id in &ids[..9] {
        let doc = json!({"url": format!("https://example.invalid/{id}")});
        store.put_metadata(id, &doc, None).await.unwrap();
    }
    let m = PoolManager::builder(Arc::new(store.clone()))
        .config(config(10))
        .metadata(Arc::new(store.clone()), Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap();
    m.add_projects(&template(), ids.clone()).await.unwrap();
    reserved(&m, 10).await;
    eventually(Duration::from_secs(10), || {
        store.counters().metadata_gets == 10
    })
    .await;
    // Many maintenance rounds later, nothing was read again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(store.counters().metadata_gets, 10);
    let mut with_document = 0;
    for i in 0..10 {
        let conversation = pool_core::ConversationId::new(format!("conv-{i}")).unwrap();
        let a = m
            .allocate(&conversation, &template(), pool_runtime::OnEmpty::Fail)
            .await
            .unwrap();
        match a.metadata {
            Some(doc) => {
                assert_eq!(doc["url"], format!("https://example.invalid/{}", a.project));
                with_document += 1;
            }
            None => assert_eq!(a.project, ids[9], "only the project with no document"),
        }
    }
    assert_eq!(with_document, 9);
    assert_eq!(store.counters().metadata_gets, 10, "no read for a hand-out");
    m.shutdown(Duration::from_secs(5)).await;
}

/// A document the store fails to read stops each read-ahead; the next waits a few
/// seconds instead of hammering the store, and the documents that could be read are at
/// hand.
#[tokio::test(start_paused = true)]
async fn a_failing_read_ahead_backs_off() {
    let store = MemoryStore::new();
    let ids = ids("earlier", 4);
    for id in &ids {
        store
            .put_metadata(id, &json!({"id": id.as_str()}), None)
            .await
            .unwrap();
    }
    store.fail_metadata_of(ids[0].clone());
    let m = PoolManager::builder(Arc::new(store.clone()))
        .config(config(4))
        .metadata(Arc::new(store.clone()), Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap();
    m.add_projects(&template(), ids.clone()).await.unwrap();
    reserved(&m, 4).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The first pass reads all four; each later one (every 5 s at most) only the one
    // that fails.
    let reads = store.counters().metadata_gets;
    assert!((4..=4 + 7).contains(&reads), "{reads} reads in 30 s");
    let mut with_document = 0;
    for i in 0..4 {
        let conversation = pool_core::ConversationId::new(format!("conv-{i}")).unwrap();
        let a = m
            .allocate(&conversation, &template(), pool_runtime::OnEmpty::Fail)
            .await
            .unwrap();
        if let Some(doc) = a.metadata {
            assert_eq!(doc["id"], a.project.as_str());
            with_document += 1;
        } else {
            assert_eq!(a.project, ids[0]);
        }
    }
    assert_eq!(with_document, 3);
    m.shutdown(Duration::from_secs(5)).await;
}
