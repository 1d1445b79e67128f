//! A manager that dies without shutting down, and several managers on one store.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pool_core::{ConversationId, OwnerId, ProjectState};
use pool_runtime::{ManagerConfig, OnEmpty, PoolManager};
use pool_storage::{Latency, MemoryStore, Op};
use support::*;

fn conv(i: usize) -> ConversationId {
    ConversationId::new(format!("conv-{i}")).unwrap()
}

fn owned(name: &str, reserve: usize) -> ManagerConfig {
    let mut cfg = config(reserve);
    cfg.owner = Some(OwnerId::new(name).unwrap());
    cfg.owner_lease = Duration::from_secs(30);
    cfg.heartbeat_interval = Duration::from_secs(5);
    cfg
}

/// Manager A hands out 3 projects whose saves finish and 5 whose saves never do, then
/// dies. Manager B on the same store returns the 3 unchanged, quarantines A's unused and
/// unsaved reservations once A's lease runs out, and gives the 5 fresh projects.
#[tokio::test(start_paused = true)]
async fn a_dead_managers_unsaved_hand_outs_are_quarantined_not_reissued() {
    let store = MemoryStore::new();
    let a = manager_with(&store, owned("manager-a", 10), 20).await;
    reserved(&a, 10).await;
    let mut stored_handouts = HashMap::new();
    for i in 0..3 {
        let got = a
            .allocate(&conv(i), &template(), OnEmpty::Fail)
            .await
            .unwrap();
        stored_handouts.insert(i, got.project);
    }
    a.flush().await.unwrap();
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_secs(3600)));
    let mut lost_handouts = HashMap::new();
    for i in 3..8 {
        let got = a
            .allocate(&conv(i), &template(), OnEmpty::Fail)
            .await
            .unwrap();
        lost_handouts.insert(i, got.project);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    store.clear_faults();

    let b = PoolManager::builder(Arc::new(store.clone()))
        .config(owned("manager-b", 5))
        .start();
    let b = b.await.unwrap();
    for (i, p) in &stored_handouts {
        let again = b
            .allocate(&conv(*i), &template(), OnEmpty::Fail)
            .await
            .unwrap();
        assert_eq!(&again.project, p);
        assert!(again.repeat);
    }
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(b.metrics().quarantined, 7);
    for (i, old) in &lost_handouts {
        let fresh = b
            .allocate(&conv(*i), &template(), OnEmpty::Fail)
            .await
            .unwrap();
        assert_ne!(&fresh.project, old);
        assert!(fresh.warm && !fresh.repeat);
    }
    b.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    holders(&snap);
    for old in lost_handouts.values() {
        let rec = snap.projects.iter().find(|r| &r.id == old).unwrap();
        assert!(
            matches!(rec.state, ProjectState::Quarantined { .. }),
            "{old}: {:?}",
            rec.state
        );
    }
    assert!(
        !snap
            .owners
            .contains_key(&OwnerId::new("manager-a").unwrap())
    );
    b.shutdown(Duration::from_secs(5)).await;
}

/// Two managers share one store and allocate 400 conversations between them: their
/// conditional saves conflict and are rebased, every hand-out is stored, and no
/// project is held twice.
#[tokio::test(start_paused = true)]
async fn two_managers_on_one_store_never_hand_out_a_project_twice() {
    let store = MemoryStore::new();
    store.set_latency(
        Op::Save,
        Latency::Uniform(Duration::from_millis(1), Duration::from_millis(8)),
    );
    let a = manager_with(&store, owned("manager-a", 150), 400).await;
    let b = PoolManager::builder(Arc::new(store.clone()))
        .config(owned("manager-b", 150))
        .start();
    let b = b.await.unwrap();
    reserved(&a, 150).await;
    reserved(&b, 150).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let m = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let r = m
                .allocate(&conv(i), &template(), OnEmpty::Wait(Duration::from_secs(5)))
                .await;
            (i, r.map(|a| a.project))
        });
    }
    let mut answered = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (i, r) = r.unwrap();
        if let Ok(p) = r {
            answered.insert(conv(i).to_string(), p);
        }
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    let held = holders(&snap);
    for (c, p) in &answered {
        assert_eq!(held.get(c), Some(p), "{c}");
    }
    assert!(
        answered.len() >= 300,
        "only {} of 400 served",
        answered.len()
    );
    let conflicts = a.metrics().conflicts + b.metrics().conflicts;
    assert!(conflicts > 0, "two writers never conflicted");
    assert_eq!(a.status().health, pool_runtime::Health::Healthy);
    assert_eq!(b.status().health, pool_runtime::Health::Healthy);
}

/// Two managers creating the pool at the same moment: one creates, the other adopts.
#[tokio::test(start_paused = true)]
async fn two_managers_starting_together_share_one_pool() {
    let store = MemoryStore::new();
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_millis(10)));
    let sa = Arc::new(store.clone());
    let sb = Arc::new(store.clone());
    let (a, b) = tokio::join!(
        PoolManager::builder(sa)
            .config(owned("manager-a", 1))
            .start(),
        PoolManager::builder(sb)
            .config(owned("manager-b", 1))
            .start(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let snap = stored(&store).await;
    assert_eq!(snap.owners.len(), 2, "{:?}", snap.owners);
    assert!(
        store.counters().saves_conflicted >= 1,
        "the second create must have conflicted"
    );
}

/// A manager restarted under the same owner id after a crash does not hand out what its
/// earlier run reserved: those may have been handed out without the hand-out stored.
#[tokio::test(start_paused = true)]
async fn a_restart_under_the_same_owner_quarantines_its_old_reservations() {
    let store = MemoryStore::new();
    let first = manager_with(&store, owned("manager-a", 4), 8).await;
    reserved(&first, 4).await;
    store.set_latency(Op::Save, Latency::Fixed(Duration::from_secs(3600)));
    let unsaved = first
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(first);
    store.clear_faults();
    let restarted = tokio::time::Instant::now();
    let again = PoolManager::builder(Arc::new(store.clone()))
        .config(owned("manager-a", 4))
        .start();
    let again = again.await.unwrap();
    assert!(
        restarted.elapsed() >= Duration::from_secs(25),
        "the restart must wait out the earlier run's live lease, waited {:?}",
        restarted.elapsed()
    );
    assert_eq!(again.metrics().quarantined, 4);
    let other = again
        .allocate(&conv(2), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    assert_ne!(other.project, unsaved.project);
    let fresh = again
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    assert_ne!(fresh.project, unsaved.project);
    again.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    let rec = snap
        .projects
        .iter()
        .find(|r| r.id == unsaved.project)
        .unwrap();
    assert!(matches!(rec.state, ProjectState::Quarantined { .. }));
}

/// A manager whose saves keep failing stops handing out before its stored lease could
/// run out, since another manager would then quarantine what it hands out.
#[tokio::test(start_paused = true)]
async fn no_hand_out_once_the_stored_lease_runs_short() {
    let store = MemoryStore::new();
    let mut cfg = owned("manager-a", 10);
    cfg.owner_lease = Duration::from_secs(8);
    cfg.max_unsaved_age = Duration::from_secs(3600);
    let m = manager_with(&store, cfg, 10).await;
    reserved(&m, 10).await;
    store.set_down(true);
    m.allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (c2, t) = (conv(2), template());
    let late = tokio::time::timeout(Duration::from_secs(2), m.allocate(&c2, &t, OnEmpty::Fail));
    assert!(
        late.await.is_err(),
        "handed out on a lease that may have run out"
    );
    store.set_down(false);
    let after = m
        .allocate(&conv(2), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    assert!(!after.repeat);
    m.flush().await.unwrap();
    check(&stored(&store).await);
}

/// Managers sharing a store each keep their own target ready.
#[tokio::test(start_paused = true)]
async fn each_manager_keeps_its_own_target() {
    let store = MemoryStore::new();
    let p = TestProvisioner::new(Duration::from_millis(200));
    let start = |name: &'static str| {
        PoolManager::builder(Arc::new(store.clone()))
            .config(owned(name, 5))
            .provisioner(p.clone())
            .start()
    };
    let a = start("manager-a").await.unwrap();
    let b = start("manager-b").await.unwrap();
    reserved(&a, 5).await;
    reserved(&b, 5).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.started(), 10);
    assert!(
        a.allocate(&conv(1), &template(), OnEmpty::Fail)
            .await
            .unwrap()
            .warm
    );
    assert!(
        b.allocate(&conv(2), &template(), OnEmpty::Fail)
            .await
            .unwrap()
            .warm
    );
}

/// One manager's view of a shared store that can be cut off, as a network partition
/// would.
#[derive(Debug)]
struct Partitioned {
    inner: MemoryStore,
    cut: std::sync::atomic::AtomicBool,
}

impl Partitioned {
    fn check(&self) -> Result<(), pool_storage::StoreError> {
        if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            let kind = pool_storage::ErrorKind::Unavailable;
            return Err(pool_storage::StoreError::new(
                kind,
                "partitioned",
                "cut off",
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl pool_storage::PoolStore for Partitioned {
    fn capabilities(&self) -> pool_storage::Capabilities {
        self.inner.capabilities()
    }
    async fn load(
        &self,
    ) -> Result<Option<pool_storage::Versioned<pool_core::PoolSnapshot>>, pool_storage::StoreError>
    {
        self.check()?;
        self.inner.load().await
    }
    async fn save(
        &self,
        w: &pool_storage::PoolWrite,
        p: &pool_storage::Precondition,
    ) -> Result<pool_storage::Revision, pool_storage::StoreError> {
        self.check()?;
        self.inner.save(w, p).await
    }
}

/// A manager cut off from the store long enough for another to declare it dead learns so
/// at its next save: it halts, and callers waiting on it are answered at once instead of
/// hanging.
#[tokio::test(start_paused = true)]
async fn a_manager_declared_dead_halts_and_answers_its_waiters() {
    let store = MemoryStore::new();
    let gate = Arc::new(Partitioned {
        inner: store.clone(),
        cut: std::sync::atomic::AtomicBool::new(false),
    });
    let mut cfg = owned("manager-a", 2);
    cfg.owner_lease = Duration::from_secs(6);
    let a = PoolManager::builder(gate.clone())
        .config(cfg)
        .start()
        .await
        .unwrap();
    a.add_projects(&template(), ids("p", 2)).await.unwrap();
    reserved(&a, 2).await;
    let mut cfg_b = owned("manager-b", 0);
    cfg_b.owner_lease = Duration::from_secs(6);
    let b = PoolManager::builder(Arc::new(store.clone()))
        .config(cfg_b)
        .start()
        .await
        .unwrap();
    gate.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let early = a
        .allocate(&conv(1), &template(), OnEmpty::Fail)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiter = {
        let a = a.clone();
        let wait = OnEmpty::Wait(Duration::from_secs(600));
        tokio::spawn(async move { a.allocate(&conv(2), &template(), wait).await })
    };
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        !waiter.is_finished(),
        "no hand-out on a lease that may have run out"
    );
    assert_eq!(
        b.metrics().quarantined,
        2,
        "b declared a dead and quarantined its buffer"
    );
    gate.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    let answered = tokio::time::timeout(Duration::from_secs(30), waiter).await;
    let err = answered
        .expect("the waiter was answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "halted", "{err}");
    let again = a
        .allocate(&conv(3), &template(), OnEmpty::Fail)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "halted");
    assert!(matches!(
        a.status().health,
        pool_runtime::Health::Halted { .. }
    ));
    b.flush().await.unwrap();
    let snap = stored(&store).await;
    check(&snap);
    let rec = snap
        .projects
        .iter()
        .find(|r| r.id == early.project)
        .unwrap();
    assert!(
        matches!(rec.state, ProjectState::Quarantined { .. }),
        "{:?}",
        rec.state
    );
}
