//! One manager process: a `PoolManager` over an `AzureStore`, allocating its share of the
//! conversations and reporting every acknowledged hand-out on stdout as it happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pool_azure::AzureStore;
use pool_core::{ConversationId, OwnerId, PoolSnapshot, ProjectId, TemplateName};
use pool_runtime::{
    ManagerConfig, OnEmpty, PoolManager, ProvisionError, Provisioned, Provisioner, TemplateConfig,
};
use pool_storage::{
    Capabilities, PoolStore, PoolWrite, Precondition, Revision, StoreError, Versioned,
};
use serde_json::json;

use crate::common;

/// What a child is asked to do, passed in environment variables.
pub(crate) struct Spec {
    pub(crate) prefix: String,
    pub(crate) owner: String,
    pub(crate) conversations: usize,
    pub(crate) pace: Duration,
    pub(crate) start_at_ms: u64,
    pub(crate) owner_lease: Duration,
    /// Conversations to allocate once every other manager is gone.
    pub(crate) after_quarantine: usize,
}

impl Spec {
    /// The environment variables that describe this spec to a child.
    pub(crate) fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CHILD_PREFIX", self.prefix.clone()),
            ("CHILD_OWNER", self.owner.clone()),
            ("CHILD_CONVERSATIONS", self.conversations.to_string()),
            ("CHILD_PACE_MS", self.pace.as_millis().to_string()),
            ("CHILD_START_AT_MS", self.start_at_ms.to_string()),
            (
                "CHILD_OWNER_LEASE_MS",
                self.owner_lease.as_millis().to_string(),
            ),
            ("CHILD_AFTER_QUARANTINE", self.after_quarantine.to_string()),
        ]
    }

    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
        let num = |name: &str| var(name).parse::<u64>().expect("a number");
        Self {
            prefix: var("CHILD_PREFIX"),
            owner: var("CHILD_OWNER"),
            conversations: usize::try_from(num("CHILD_CONVERSATIONS")).expect("small"),
            pace: Duration::from_millis(num("CHILD_PACE_MS")),
            start_at_ms: num("CHILD_START_AT_MS"),
            owner_lease: Duration::from_millis(num("CHILD_OWNER_LEASE_MS")),
            after_quarantine: usize::try_from(num("CHILD_AFTER_QUARANTINE")).expect("small"),
        }
    }
}

/// Milliseconds since the Unix epoch, the clock both processes share.
pub(crate) fn wall_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("small")
}

/// A pool store that counts what the Azure store answered.
#[derive(Debug)]
struct Observed {
    inner: AzureStore,
    creates_won: AtomicU64,
    creates_lost: AtomicU64,
    conflicts: AtomicU64,
    saves: AtomicU64,
}

#[async_trait]
impl PoolStore for Observed {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        self.inner.load().await
    }

    async fn save(&self, write: &PoolWrite, pre: &Precondition) -> Result<Revision, StoreError> {
        let result = self.inner.save(write, pre).await;
        let create = *pre == Precondition::CreateOnly;
        let counter = match (&result, create) {
            (Ok(_), true) => &self.creates_won,
            (Ok(_), false) => &self.saves,
            (Err(e), true) if e.is_conflict() => &self.creates_lost,
            (Err(e), false) if e.is_conflict() => &self.conflicts,
            (Err(_), _) => return result,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Mints project ids unique to this owner.
#[derive(Debug)]
struct Minting {
    owner: String,
    next: AtomicU64,
}

#[async_trait]
impl Provisioner for Minting {
    async fn provision(&self, _template: &TemplateName) -> Result<Provisioned, ProvisionError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = ProjectId::new(format!("{}-{n}-p", self.owner)).expect("valid id");
        Ok(Provisioned {
            metadata: json!({ "id": id.as_str() }),
            id,
        })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        Ok(())
    }
}

fn manager_config(spec: &Spec) -> ManagerConfig {
    let template = TemplateName::new("default").expect("valid");
    let mut t = TemplateConfig::new(template, 40);
    t.policy.max_in_flight = 8;
    ManagerConfig {
        owner: Some(OwnerId::new(spec.owner.clone()).expect("valid owner")),
        templates: vec![t],
        owner_lease: spec.owner_lease,
        heartbeat_interval: spec.owner_lease / 4,
        save_delay: Duration::from_millis(20),
        maintain_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(20),
        ..ManagerConfig::default()
    }
}

/// Allocates `{owner}-{label}-{i}` for `i` in `0..n`, four at a time, printing each
/// acknowledged hand-out at once.
async fn allocate_all(manager: &PoolManager, spec: &Spec, label: &str, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (manager, next) = (manager.clone(), next.clone());
        let (owner, label, pace) = (spec.owner.clone(), label.to_owned(), spec.pace);
        tasks.spawn(async move {
            let template = TemplateName::new("default").expect("valid");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let conv = ConversationId::new(format!("{owner}-{label}-{i}")).expect("valid");
                let got =
                    manager.allocate(&conv, &template, OnEmpty::Wait(Duration::from_secs(60)));
                let got = got.await.expect("allocation");
                println!("ALLOC {conv} {}", got.project);
                tokio::time::sleep(pace).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("allocation task");
    }
}

/// Waits until every other manager is gone from the pool (its lease ran out and its
/// reservations were quarantined), as far as this manager has seen and stored.
async fn wait_until_alone(manager: &PoolManager) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while manager
        .pool_snapshot()
        .owners
        .keys()
        .any(|o| o != manager.owner())
    {
        assert!(
            Instant::now() < deadline,
            "other managers still listed after a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.flush().await.expect("flush");
}

/// The child's whole life: wait for the agreed start, start, allocate, report, stop.
pub(crate) async fn run() {
    let spec = Spec::from_env();
    let azurite = common::azurite().expect("the parent checked for Azurite");
    let inner = AzureStore::new(azurite.config(&spec.prefix)).expect("store");
    let store = Arc::new(Observed {
        inner: inner.clone(),
        creates_won: AtomicU64::new(0),
        creates_lost: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        saves: AtomicU64::new(0),
    });
    let wait = spec.start_at_ms.saturating_sub(wall_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let provisioner = Arc::new(Minting {
        owner: spec.owner.clone(),
        next: AtomicU64::new(0),
    });
    let manager = PoolManager::builder(store.clone())
        .config(manager_config(&spec))
        .provisioner(provisioner)
        .start()
        .await
        .expect("manager starts");
    println!("READY");
    let started = Instant::now();
    allocate_all(&manager, &spec, "conv", spec.conversations).await;
    let allocating_ms = started.elapsed().as_millis();
    if spec.after_quarantine > 0 {
        wait_until_alone(&manager).await;
        allocate_all(&manager, &spec, "late", spec.after_quarantine).await;
    }
    let report = manager.shutdown(Duration::from_secs(60)).await;
    let stats = json!({
        "allocating_ms": allocating_ms,
        "creates_won": store.creates_won.load(Ordering::Relaxed),
        "creates_lost": store.creates_lost.load(Ordering::Relaxed),
        "store_conflicts": store.conflicts.load(Ordering::Relaxed),
        "store_saves": store.saves.load(Ordering::Relaxed),
        "requests": inner.requests_sent(),
        "clean": report.clean,
        "metrics": manager.metrics(),
    });
    println!("STATS {stats}");
}
