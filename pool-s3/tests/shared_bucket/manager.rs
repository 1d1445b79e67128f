//! One manager process: a `PoolManager` over an `S3Store`, allocating its conversations
//! and printing each acknowledged hand-out the moment it is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pool_core::{ConversationId, OwnerId, PoolSnapshot, ProjectId, TemplateName};
use pool_runtime::{
    ManagerConfig, OnEmpty, PoolManager, ProvisionError, Provisioned, Provisioner, TemplateConfig,
};
use pool_s3::S3Store;
use pool_storage::Versioned;
use pool_storage::{Capabilities, PoolStore, PoolWrite, Precondition, Revision, StoreError};
use serde_json::json;

use crate::common;

/// What one manager process does; handed over in environment variables.
pub(crate) struct Plan {
    pub(crate) prefix: String,
    pub(crate) owner: String,
    pub(crate) conversations: usize,
    /// A pause after each hand-out, to stretch a run out.
    pub(crate) pause: Duration,
    /// Wall-clock start, so that processes start together.
    pub(crate) start_at_ms: u64,
    pub(crate) owner_lease: Duration,
    /// Conversations to allocate after every other manager has left the pool.
    pub(crate) when_alone: usize,
}

const VARS: [&str; 7] = [
    "S3_MANAGER_PREFIX",
    "S3_MANAGER_OWNER",
    "S3_MANAGER_CONVERSATIONS",
    "S3_MANAGER_PAUSE_MS",
    "S3_MANAGER_START_AT_MS",
    "S3_MANAGER_LEASE_MS",
    "S3_MANAGER_WHEN_ALONE",
];

impl Plan {
    pub(crate) fn env(&self) -> [(&'static str, String); 7] {
        let ms = |d: Duration| d.as_millis().to_string();
        let values = [
            self.prefix.clone(),
            self.owner.clone(),
            self.conversations.to_string(),
            ms(self.pause),
            self.start_at_ms.to_string(),
            ms(self.owner_lease),
            self.when_alone.to_string(),
        ];
        let mut pairs = values.into_iter().zip(VARS).map(|(v, k)| (k, v));
        std::array::from_fn(|_| pairs.next().expect("seven values"))
    }

    fn from_env() -> Self {
        let [prefix, owner, conversations, pause, start, lease, alone] =
            VARS.map(|k| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set")));
        let n = |v: String| v.parse::<u64>().expect("a number");
        let ms = |v: String| Duration::from_millis(n(v));
        Self {
            prefix,
            owner,
            conversations: usize::try_from(n(conversations)).expect("small"),
            pause: ms(pause),
            start_at_ms: n(start),
            owner_lease: ms(lease),
            when_alone: usize::try_from(n(alone)).expect("small"),
        }
    }
}

/// Milliseconds since the Unix epoch: the clock the processes share.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("small")
}

/// The S3 store, counting how its saves ended.
#[derive(Debug)]
struct Counting {
    inner: S3Store,
    creates_won: AtomicU64,
    creates_lost: AtomicU64,
    conflicts: AtomicU64,
}

#[async_trait]
impl PoolStore for Counting {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        self.inner.load().await
    }

    async fn save(&self, write: &PoolWrite, pre: &Precondition) -> Result<Revision, StoreError> {
        let result = self.inner.save(write, pre).await;
        let create = matches!(pre, Precondition::CreateOnly);
        let counter = match &result {
            Ok(_) if create => &self.creates_won,
            Err(e) if e.is_conflict() && create => &self.creates_lost,
            Err(e) if e.is_conflict() => &self.conflicts,
            _ => return result,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Makes project ids no other owner makes.
#[derive(Debug)]
struct OwnIds {
    owner: String,
    next: AtomicU64,
}

#[async_trait]
impl Provisioner for OwnIds {
    async fn provision(&self, _: &TemplateName) -> Result<Provisioned, ProvisionError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = ProjectId::new(format!("{}-{n}", self.owner)).expect("valid id");
        Ok(Provisioned {
            metadata: json!({ "project": id.as_str() }),
            id,
        })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        Ok(())
    }
}

fn template() -> TemplateName {
    TemplateName::new("default").expect("valid")
}

fn config(plan: &Plan) -> ManagerConfig {
    let mut warm = TemplateConfig::new(template(), 40);
    warm.policy.max_in_flight = 8;
    ManagerConfig {
        owner: Some(OwnerId::new(plan.owner.clone()).expect("valid owner")),
        templates: vec![warm],
        owner_lease: plan.owner_lease,
        heartbeat_interval: plan.owner_lease / 4,
        save_delay: Duration::from_millis(20),
        maintain_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(20),
        ..ManagerConfig::default()
    }
}

/// Allocates `{owner}-{label}-{i}` for `i` in `0..n` from four tasks, printing
/// `HANDOUT conversation project` for each.
async fn allocate(manager: &PoolManager, plan: &Plan, label: &str, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (manager, next, pause) = (manager.clone(), next.clone(), plan.pause);
        let prefix = format!("{}-{label}", plan.owner);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let conversation = ConversationId::new(format!("{prefix}-{i}")).expect("valid");
                let wait = OnEmpty::Wait(Duration::from_secs(60));
                let got = manager.allocate(&conversation, &template(), wait).await;
                println!(
                    "HANDOUT {conversation} {}",
                    got.expect("allocation").project
                );
                tokio::time::sleep(pause).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("allocating task");
    }
}

/// Waits until this manager's pool lists no other owner (their leases ran out and their
/// reservations were quarantined), and that is stored.
async fn until_alone(manager: &PoolManager) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while manager
        .pool_snapshot()
        .owners
        .keys()
        .any(|o| o != manager.owner())
    {
        assert!(
            Instant::now() < deadline,
            "other owners still listed after a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.flush().await.expect("flush");
}

/// A manager process from start to shutdown.
pub(crate) async fn run() {
    let plan = Plan::from_env();
    let emulator = common::emulator().expect("the parent found the emulator");
    let inner = emulator.store_at(&plan.prefix).await;
    let store = Arc::new(Counting {
        inner: inner.clone(),
        creates_won: AtomicU64::new(0),
        creates_lost: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
    });
    let ids = Arc::new(OwnIds {
        owner: plan.owner.clone(),
        next: AtomicU64::new(0),
    });
    tokio::time::sleep(Duration::from_millis(
        plan.start_at_ms.saturating_sub(now_ms()),
    ))
    .await;
    let manager = PoolManager::builder(store.clone())
        .config(config(&plan))
        .provisioner(ids)
        .start()
        .await
        .expect("manager starts");
    let requests_at_start = inner.requests_sent();
    let started = Instant::now();
    allocate(&manager, &plan, "conv", plan.conversations).await;
    let allocating_ms = started.elapsed().as_millis();
    let requests_allocating = inner.requests_sent() - requests_at_start;
    if plan.when_alone > 0 {
        until_alone(&manager).await;
        allocate(&manager, &plan, "late", plan.when_alone).await;
    }
    let report = manager.shutdown(Duration::from_secs(60)).await;
    let stats = json!({
        "allocating_ms": allocating_ms,
        "requests_allocating": requests_allocating,
        "creates_won": store.creates_won.load(Ordering::Relaxed),
        "creates_lost": store.creates_lost.load(Ordering::Relaxed),
        "store_conflicts": store.conflicts.load(Ordering::Relaxed),
        "clean": report.clean,
        "metrics": manager.metrics(),
    });
    println!("STATS {stats}");
}
