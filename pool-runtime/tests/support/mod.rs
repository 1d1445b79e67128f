//! Helpers shared by the runtime's scenario tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)] // each test file uses a different part

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pool_core::{Pool, PoolSnapshot, ProjectId, ProjectState, TemplateName};
use pool_runtime::{
    ManagerConfig, PoolManager, ProvisionError, Provisioned, Provisioner, TemplateConfig,
};
use pool_storage::{MemoryStore, PoolStore};

pub fn template() -> TemplateName {
    TemplateName::new("default").unwrap()
}

pub fn ids(prefix: &str, n: usize) -> Vec<ProjectId> {
    (0..n)
        .map(|i| ProjectId::new(format!("{prefix}-{i}-00000")).unwrap())
        .collect()
}

/// A configuration serving `default`, keeping `reserve` projects reserved.
pub fn config(reserve: usize) -> ManagerConfig {
    let mut t = TemplateConfig::new(template(), reserve);
    t.policy.max_in_flight = 4;
    ManagerConfig {
        templates: vec![t],
        save_delay: Duration::from_millis(5),
        ..ManagerConfig::default()
    }
}

/// A manager over `store` with `n` projects added and `reserve` of them reserved.
pub async fn manager_with(store: &MemoryStore, cfg: ManagerConfig, n: usize) -> PoolManager {
    let m = PoolManager::builder(Arc::new(store.clone()))
        .config(cfg)
        .start()
        .await
        .unwrap();
    if n > 0 {
        m.add_projects(&template(), ids("p", n)).await.unwrap();
    }
    let want = m
        .status()
        .templates
        .get(&template())
        .map_or(0, |t| t.counts.total());
    assert_eq!(want, n);
    m
}

/// Waits (on tokio's clock) until `f` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the manager has `n` stored reservations of `default`.
pub async fn reserved(m: &PoolManager, n: usize) {
    eventually(Duration::from_secs(30), || {
        let s = m.status();
        let t = &s.templates[&template()];
        t.reserved_here >= n && s.unsaved_changes == 0
    })
    .await;
}

/// The pool as stored.
pub async fn stored(store: &dyn PoolStore) -> PoolSnapshot {
    store.load().await.unwrap().unwrap().value
}

/// Checks the pool's invariants on a stored snapshot: it loads, its indexes agree, no
/// conversation holds two projects.
pub fn check(snapshot: &PoolSnapshot) -> Pool {
    let pool = Pool::from_snapshot(snapshot.clone()).expect("a consistent snapshot");
    pool.check_invariants().expect("invariants hold");
    pool
}

/// Projects per state name in a snapshot.
pub fn states(snapshot: &PoolSnapshot) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in &snapshot.projects {
        *m.entry(r.state.kind().to_string()).or_default() += 1;
    }
    m
}

/// Conversation -> project for every held project of a snapshot.
pub fn holders(snapshot: &PoolSnapshot) -> HashMap<String, ProjectId> {
    let mut m = HashMap::new();
    for r in &snapshot.projects {
        if let Some((c, _)) = r.state.holder() {
            let prev = m.insert(c.to_string(), r.id.clone());
            assert!(prev.is_none(), "conversation {c} holds two projects");
        }
        if let ProjectState::Allocated { .. } | ProjectState::Active { .. } = r.state {
            assert!(r.state.holder().is_some());
        }
    }
    m
}

/// A provisioner that mints ids after a fixed delay (on tokio's clock), optionally
/// failing every time.
#[derive(Debug)]
pub struct TestProvisioner {
    pub delay: Duration,
    pub fail: bool,
    pub started: AtomicUsize,
    pub recycled: AtomicUsize,
    next: AtomicUsize,
}

impl TestProvisioner {
    pub fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            fail: false,
            started: AtomicUsize::new(0),
            recycled: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        })
    }

    pub fn failing(delay: Duration) -> Arc<Self> {
        let mut p = Self::new(delay);
        Arc::get_mut(&mut p).unwrap().fail = true;
        p
    }

    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provisioner for TestProvisioner {
    async fn provision(&self, template: &TemplateName) -> Result<Provisioned, ProvisionError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if self.fail {
            return Err(ProvisionError("the cloud said no".into()));
        }
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let id = ProjectId::new(format!("{template}-{n}-0abcd")).unwrap();
        let metadata = serde_json::json!({ "url": format!("https://example.invalid/{id}") });
        Ok(Provisioned { id, metadata })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        self.recycled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
