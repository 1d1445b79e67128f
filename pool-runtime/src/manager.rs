//! The [`PoolManager`]: its start, its request-path operations and its shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, ProjectId, StateCounts, TemplateName,
};
use pool_storage::{Metadata, MetadataStore, PoolStore, PoolWrite, Precondition, Revision};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cache::MetadataCache;
use crate::clock::Clock;
use crate::config::{Durability, ManagerConfig};
use crate::error::ManagerError;
use crate::maintainer;
use crate::metrics::{Metrics, MetricsSnapshot, add_duration, bump};
use crate::persister::{self, SaveMode};
use crate::provision::{Circuit, Provisioner};
use crate::shared::{Durable, Health, Shared, State};

/// What to do when no warm project is ready for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEmpty {
    /// Fail at once with [`ManagerError::PoolEmpty`].
    #[default]
    Fail,
    /// Wait up to this long, in arrival order, for the next project that becomes ready.
    Wait(Duration),
    /// Provision a project for this caller and wait for it.
    Cold,
}

/// A project handed to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The project.
    pub project: ProjectId,
    /// Its template.
    pub template: TemplateName,
    /// The token that proves the holder to [`PoolManager::mark_active`] and
    /// [`PoolManager::archive`].
    pub token: AllocationToken,
    /// Handed out from the warm buffer without waiting for storage or provisioning.
    pub warm: bool,
    /// The conversation already held this project (a repeated request).
    pub repeat: bool,
    /// The project's metadata document, when the manager had it at hand (it provisioned
    /// the project and kept the document while the project waited in reserve). `None`
    /// means: read it with [`PoolManager::metadata`].
    pub metadata: Option<Arc<Metadata>>,
}

/// One template's part of a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateStatus {
    /// Projects per state, across all managers.
    pub counts: StateCounts,
    /// Projects this manager has reserved and not handed out.
    pub reserved_here: usize,
    /// Provisions this manager is running.
    pub provisioning: usize,
    /// Callers waiting for a project.
    pub waiting: usize,
    /// The provisioning circuit breaker.
    pub circuit: Circuit,
}

/// A manager's view of the pool and of its own health.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// This manager's owner id.
    pub owner: OwnerId,
    /// The pool version in memory.
    pub version: u64,
    /// The highest version stored.
    pub saved_version: u64,
    /// Changes made since the last save.
    pub unsaved_changes: u64,
    /// Time since the last successful save, if there was one (milliseconds in JSON).
    #[serde(rename = "last_save_age_ms", serialize_with = "millis")]
    pub last_save_age: Option<Duration>,
    /// Whether saves succeed.
    pub health: Health,
    /// Per template.
    pub templates: BTreeMap<TemplateName, TemplateStatus>,
    /// The manager's counters.
    pub metrics: MetricsSnapshot,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3).round()),
        None => s.serialize_none(),
    }
}

/// What [`PoolManager::shutdown`] achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Everything acknowledged was stored.
    pub clean: bool,
    /// Projects whose latest change was not stored by the deadline.
    pub unsaved: Vec<ProjectId>,
    /// Projects whose change the store refused for good.
    pub set_aside: Vec<ProjectId>,
}

/// Builds and starts a [`PoolManager`].
#[derive(Debug)]
pub struct ManagerBuilder {
    store: Arc<dyn PoolStore>,
    config: ManagerConfig,
    provisioner: Option<Arc<dyn Provisioner>>,
    metadata: Option<Arc<dyn MetadataStore>>,
    metadata_ttl: Duration,
    metadata_capacity: u64,
}

impl ManagerBuilder {
    /// A manager over `store` with the default configuration.
    pub fn new(store: Arc<dyn PoolStore>) -> Self {
        Self {
            store,
            config: ManagerConfig::default(),
            provisioner: None,
            metadata: None,
            metadata_ttl: Duration::from_secs(30),
            metadata_capacity: 100_000,
        }
    }

    /// Sets the configuration.
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the provisioner that creates and recycles projects.
    pub fn provisioner(mut self, provisioner: Arc<dyn Provisioner>) -> Self {
        self.provisioner = Some(provisioner);
        self
    }

    /// Sets the metadata store, read through a cache with `ttl`, holding at most
    /// `capacity` documents.
    pub fn metadata(mut self, store: Arc<dyn MetadataStore>, ttl: Duration, capacity: u64) -> Self {
        self.metadata = Some(store);
        self.metadata_ttl = ttl;
        self.metadata_capacity = capacity;
        self
    }

    /// Loads the pool (creating it if no manager has), registers this manager as an
    /// owner, and starts the background tasks.
    pub async fn start(self) -> Result<PoolManager, ManagerError> {
        let owner = self.config.owner.clone().unwrap_or_else(random_owner);
        let (pool, revision) = loop {
            let (pool, revision) = load_or_create(&*self.store, &owner).await?;
            match live_lease_left(&pool, &owner) {
                None => break (pool, revision),
                Some(left) => {
                    info!(owner = %owner, wait_ms = left.as_millis() as u64, "this owner id still holds a live lease; waiting for it to run out");
                    tokio::time::sleep(left).await;
                }
            }
        };
        let incremental = self.store.capabilities().incremental_saves;
        let stored_version = pool.saved_version();
        let (durable, _) = watch::channel(Durable {
            saved: stored_version,
            closed: false,
        });
        let state = State::new(pool, revision);
        let cache = self
            .metadata
            .map(|m| MetadataCache::new(m, self.metadata_ttl, self.metadata_capacity));
        let shared = Arc::new(Shared {
            store: self.store,
            config: self.config,
            owner,
            clock: Clock::new(),
            incremental,
            state: Mutex::new(state),
            metrics: Metrics::default(),
            wake: Notify::new(),
            durable,
            save_lock: tokio::sync::Mutex::new(()),
            saver_running: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            maintain: Notify::new(),
            maintenance_due: AtomicBool::new(false),
            tasks: Mutex::new(JoinSet::new()),
            provisioner: self.provisioner,
            cache,
        });
        let saver = tokio::spawn(persister::run(shared.clone()));
        let version = register(&shared);
        shared.spawn(maintainer::run(shared.clone()));
        let manager = PoolManager {
            inner: Arc::new(Inner {
                shared,
                saver: Mutex::new(Some(saver)),
            }),
        };
        manager.inner.shared.wait_saved(version).await?;
        Ok(manager)
    }
}

/// How long the stored lease of `owner` still runs, if it is live: another process with
/// the same owner id may still be handing out its reservations.
fn live_lease_left(pool: &Pool, owner: &OwnerId) -> Option<Duration> {
    let lease = pool.owners().get(owner)?;
    let now = Clock::new().now();
    (lease.lease_until > now)
        .then(|| lease.lease_until.saturating_since(now) + Duration::from_millis(50))
}

fn random_owner() -> OwnerId {
    let n: u32 = rand::rng().random();
    OwnerId::new(format!("manager-{n:08x}")).unwrap_or_else(|_| unreachable!("hex is a valid id"))
}

/// Registers this manager's lease; returns the version that makes it durable.
///
/// Reservations already stored under this owner id belong to an earlier run of it that
/// did not shut down cleanly: any of them may have been handed out without the hand-out
/// being stored, so they are quarantined rather than handed out again.
fn register(shared: &Shared) -> u64 {
    let mut st = shared.lock();
    let before = st.pool.version();
    let now = shared.now();
    let stale = st.pool.quarantine_owner(
        &shared.owner,
        "reserved by an earlier run of this manager",
        now,
    );
    if !stale.is_empty() {
        for _ in &stale {
            bump(&shared.metrics.quarantined);
        }
        warn!(owner = %shared.owner, project_ids = ?stale, "an earlier run of this manager left reservations; quarantined them");
    }
    let until = now.saturating_add(shared.config.owner_lease);
    st.pool
        .register_owner(&shared.owner, until, rand::rng().random());
    shared.changed(&mut st, before);
    st.pool.version()
}

async fn load_or_create(
    store: &dyn PoolStore,
    owner: &OwnerId,
) -> Result<(Pool, Option<Revision>), ManagerError> {
    if let Some(v) = store.load().await? {
        let pool = Pool::from_snapshot(v.value)?;
        info!(owner = %owner, version = pool.version(), project_count = pool.len(), "pool loaded");
        return Ok((pool, Some(v.revision)));
    }
    let pool = Pool::new();
    match store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await
    {
        Ok(rev) => {
            info!(owner = %owner, "pool created");
            Ok((pool, Some(rev)))
        }
        Err(e) if e.is_conflict() => {
            let v = store.load().await?.ok_or(ManagerError::Store(e))?;
            info!(owner = %owner, "another manager created the pool first; adopting it");
            Ok((Pool::from_snapshot(v.value)?, Some(v.revision)))
        }
        Err(e) => Err(e.into()),
    }
}

struct Inner {
    shared: Arc<Shared>,
    saver: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn take_saver(&self) -> Option<JoinHandle<()>> {
        self.saver.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for Inner {
    /// Dropping the last handle without [`PoolManager::shutdown`] stops every background
    /// task where it stands, as a crash would.
    fn drop(&mut self) {
        self.shared.lock_tasks().abort_all();
        if let Some(saver) = self.take_saver() {
            saver.abort();
        }
    }
}

/// Hands warm projects to conversations without waiting on storage, and keeps the pool
/// stored, warm and recovered. Cheap to clone; all clones share one manager.
#[derive(Clone)]
pub struct PoolManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolManager")
            .field("owner", &self.inner.shared.owner)
            .finish()
    }
}

enum Step {
    Done(pool_core::Allocation, u64, Option<Arc<Metadata>>),
    WaitSaved(u64),
    Empty,
}

impl PoolManager {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn PoolStore>) -> ManagerBuilder {
        ManagerBuilder::new(store)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// This manager's owner id.
    pub fn owner(&self) -> &OwnerId {
        &self.shared().owner
    }

    /// Hands a project of `template` to `conversation`.
    ///
    /// With a durably reserved project at hand this takes a lock and returns: no I/O.
    /// Asking again for the same conversation returns the same project and token.
    /// Dropping the future at any point leaves no project half-allocated: either the
    /// conversation holds a project (and gets it back when it asks again) or nothing
    /// changed.
    pub async fn allocate(
        &self,
        conversation: &ConversationId,
        template: &TemplateName,
        on_empty: OnEmpty,
    ) -> Result<Allocated, ManagerError> {
        let sh = self.shared();
        if sh.is_stopping() {
            return Err(ManagerError::ShuttingDown);
        }
        if sh.config.template(template).is_none() {
            return Err(ManagerError::UnknownTemplate(template.clone()));
        }
        let started = Instant::now();
        let mut waited = false;
        loop {
            match self.try_handout(conversation, template, waited)? {
                Step::Done(a, version, m) => {
                    return self.finish(a, version, m, waited, started).await;
                }
                Step::WaitSaved(version) => {
                    waited = true;
                    sh.wait_saved(version).await?;
                }
                Step::Empty => break,
            }
        }
        bump(&sh.metrics.stockouts);
        match on_empty {
            OnEmpty::Fail => Err(ManagerError::PoolEmpty {
                template: template.clone(),
            }),
            OnEmpty::Wait(limit) => {
                self.wait_for_project(conversation, template, limit, started)
                    .await
            }
            OnEmpty::Cold => self.allocate_cold(conversation, template, started).await,
        }
    }

    /// One pass of the hand-out under the lock.
    fn try_handout(
        &self,
        conversation: &ConversationId,
        template: &TemplateName,
        reserved_once: bool,
    ) -> Result<Step, ManagerError> {
        let sh = self.shared();
        let mut st = sh.lock();
        if let Some(reason) = &st.halted {
            return Err(ManagerError::Halted {
                reason: reason.clone(),
            });
        }
        if let Some(a) = st.pool.holder_of(conversation) {
            st.undelivered.remove(&a.project);
            return Ok(Step::Done(a, 0, None));
        }
        if st.unsaved_changes() >= sh.config.max_unsaved as u64
            || Shared::unsaved_age(&st) >= sh.config.max_unsaved_age
        {
            bump(&sh.metrics.backpressure_waits);
            return Ok(Step::WaitSaved(st.pool.version()));
        }
        if !st.lease_is_safe(sh.now(), sh.config.owner_lease) {
            // Renewing the lease needs a save; wait for it rather than hand out a
            // project another manager may be about to quarantine.
            return Ok(Step::WaitSaved(
                st.pool.version().max(st.pool.saved_version() + 1),
            ));
        }
        let stored = st.pool.saved_version();
        if let Some(id) = st.pool.first_reserved(&sh.owner, template, stored).cloned() {
            let before = st.pool.version();
            let token = AllocationToken::from_u64(rand::rng().random());
            let a = st.pool.allocate_project(
                &sh.owner,
                conversation,
                &id,
                token,
                sh.now(),
                sh.config.allocation_lease,
            )?;
            sh.changed(&mut st, before);
            sh.maintenance_due.store(true, Ordering::Release);
            let metadata = st.take_kept_metadata(&id);
            return Ok(Step::Done(a, st.pool.version(), metadata));
        }
        if st.pool.reserved_count(&sh.owner, template) > 0 {
            return Ok(Step::WaitSaved(st.pool.version()));
        }
        let available = st.pool.counts(template).available;
        if available > 0 && !reserved_once {
            let batch = sh.config.template(template).map_or(1, |t| t.reserve.max(1));
            let before = st.pool.version();
            st.pool.reserve(&sh.owner, template, batch, sh.now());
            sh.changed(&mut st, before);
            return Ok(Step::WaitSaved(st.pool.version()));
        }
        Ok(Step::Empty)
    }

    async fn finish(
        &self,
        a: pool_core::Allocation,
        version: u64,
        metadata: Option<Arc<Metadata>>,
        waited: bool,
        started: Instant,
    ) -> Result<Allocated, ManagerError> {
        let sh = self.shared();
        if !a.fresh {
            bump(&sh.metrics.handouts_repeat);
            return Ok(allocated(a, false, None));
        }
        if metadata.is_some() {
            bump(&sh.metrics.cache_hits);
        }
        if waited {
            bump(&sh.metrics.handouts_cold);
            bump(&sh.metrics.waits);
            add_duration(&sh.metrics.wait_micros, started.elapsed());
        } else {
            bump(&sh.metrics.handouts_warm);
        }
        if sh.config.durability == Durability::Durable {
            sh.wait_saved(version).await?;
            self.check_still_held(&a)?;
        }
        Ok(allocated(a, !waited, metadata))
    }

    fn check_still_held(&self, a: &pool_core::Allocation) -> Result<(), ManagerError> {
        let st = self.shared().lock();
        if st.poisoned.contains_key(&a.project) {
            return Err(ManagerError::NotStored {
                project: a.project.clone(),
            });
        }
        let held = st
            .pool
            .get(&a.project)
            .and_then(|r| r.state.holder().map(|(_, t)| t));
        if held == Some(a.token) {
            return Ok(());
        }
        let reason = format!(
            "allocation of {} was taken over by another manager",
            a.project
        );
        Err(ManagerError::Halted { reason })
    }

    async fn wait_for_project(
        &self,
        conversation: &ConversationId,
        template: &TemplateName,
        limit: Duration,
        started: Instant,
    ) -> Result<Allocated, ManagerError> {
        let sh = &self.inner.shared;
        let (ticket, rx) = sh.lock().waiters.push(template, conversation.clone());
        sh.maintain.notify_one();
        let mut guard = crate::waiters::WaitGuard::new(sh.clone(), template.clone(), ticket, rx);
        let outcome = tokio::time::timeout(limit, guard.recv()).await;
        let a = match outcome {
            Ok(Some(a)) => a,
            Ok(None) => return Err(sh.stopped_error()),
            Err(_) => match guard.give_up() {
                Some(a) => a,
                None => {
                    return Err(ManagerError::WaitTimedOut {
                        template: template.clone(),
                        waited: limit,
                    });
                }
            },
        };
        let (version, metadata) = {
            let mut st = sh.lock();
            let metadata = a.fresh.then(|| st.take_kept_metadata(&a.project)).flatten();
            (st.pool.version(), metadata)
        };
        self.finish(a, version, metadata, true, started).await
    }

    async fn allocate_cold(
        &self,
        conversation: &ConversationId,
        template: &TemplateName,
        started: Instant,
    ) -> Result<Allocated, ManagerError> {
        let sh = &self.inner.shared;
        let project = maintainer::provision_for_caller(sh, template).await?;
        loop {
            match self.take_provisioned(conversation, &project)? {
                Step::Done(a, version, m) => {
                    return self.finish(a, version, m, true, started).await;
                }
                Step::WaitSaved(version) => sh.wait_saved(version).await?,
                Step::Empty => {
                    return Err(ManagerError::PoolEmpty {
                        template: template.clone(),
                    });
                }
            }
        }
    }

    /// Hands the project provisioned for this caller over once its reservation is stored.
    fn take_provisioned(
        &self,
        conversation: &ConversationId,
        project: &ProjectId,
    ) -> Result<Step, ManagerError> {
        let sh = self.shared();
        let mut st = sh.lock();
        if let Some(a) = st.pool.holder_of(conversation) {
            st.undelivered.remove(&a.project);
            return Ok(Step::Done(a, 0, None));
        }
        let Some(rec) = st.pool.get(project) else {
            return Ok(Step::Empty);
        };
        if rec.version > st.pool.saved_version() {
            return Ok(Step::WaitSaved(st.pool.version()));
        }
        let before = st.pool.version();
        let token = AllocationToken::from_u64(rand::rng().random());
        let (now, lease) = (sh.now(), sh.config.allocation_lease);
        let a = st
            .pool
            .allocate_project(&sh.owner, conversation, project, token, now, lease)?;
        sh.changed(&mut st, before);
        let metadata = st.take_kept_metadata(project);
        Ok(Step::Done(a, st.pool.version(), metadata))
    }

    /// Marks a held project active; `token` must be the holder's.
    pub async fn mark_active(
        &self,
        project: &ProjectId,
        token: AllocationToken,
    ) -> Result<(), ManagerError> {
        let version = self.change(|pool, now| pool.mark_active(project, token, now))?;
        if self.shared().config.durability == Durability::Durable {
            self.shared().wait_saved(version).await?;
        }
        Ok(())
    }

    /// Archives a held project (it is never handed out again); `token` must be the
    /// holder's. Returns once the archive is stored.
    pub async fn archive(
        &self,
        project: &ProjectId,
        token: AllocationToken,
    ) -> Result<(), ManagerError> {
        let version = self.change(|pool, now| pool.archive(project, token, now))?;
        self.shared().maintain.notify_one();
        self.shared().wait_saved(version).await
    }

    fn change(
        &self,
        f: impl FnOnce(&mut Pool, pool_core::Timestamp) -> Result<(), pool_core::PoolError>,
    ) -> Result<u64, ManagerError> {
        let sh = self.shared();
        if sh.is_stopping() {
            return Err(ManagerError::ShuttingDown);
        }
        let mut st = sh.lock();
        let before = st.pool.version();
        f(&mut st.pool, sh.now())?;
        sh.changed(&mut st, before);
        Ok(st.pool.version())
    }

    /// Adds ready projects by hand (for callers that provision outside the manager) and
    /// waits until they are stored.
    pub async fn add_projects(
        &self,
        template: &TemplateName,
        ids: Vec<ProjectId>,
    ) -> Result<(), ManagerError> {
        let sh = self.shared();
        let version = {
            let mut st = sh.lock();
            let before = st.pool.version();
            let now = sh.now();
            for id in ids {
                st.pool.add_available(id, template.clone(), now)?;
            }
            sh.changed(&mut st, before);
            st.pool.version()
        };
        sh.maintain.notify_one();
        sh.wait_saved(version).await
    }

    /// A project's metadata: from memory while this manager holds the project in
    /// reserve, else through the cache.
    pub async fn metadata(&self, project: &ProjectId) -> Result<Arc<Metadata>, ManagerError> {
        let sh = self.shared();
        let cache = sh
            .cache
            .as_ref()
            .ok_or_else(|| ManagerError::NoMetadata(project.clone()))?;
        let kept = {
            // A document kept for a project that has since left this manager's reserve
            // (taken over, released at shutdown) may be stale until the maintainer
            // forgets it, which a halted manager never does.
            let st = sh.lock();
            st.pool
                .is_reserved_by(project, &sh.owner)
                .then(|| st.reserve_metadata.get(project).cloned())
                .flatten()
        };
        if let Some(m) = kept {
            bump(&sh.metrics.cache_hits);
            return Ok(m);
        }
        cache.get(project, &sh.metrics).await
    }

    /// The pool's counts and this manager's health.
    pub fn status(&self) -> Status {
        let sh = self.shared();
        let st = sh.lock();
        let mut templates = BTreeMap::new();
        let names = st.pool.counts_by_template().keys().cloned();
        for name in names.chain(sh.config.templates.iter().map(|t| t.name.clone())) {
            let ts = TemplateStatus {
                counts: st.pool.counts(&name),
                reserved_here: st.pool.reserved_count(&sh.owner, &name),
                provisioning: st.provisioning.in_flight(&name),
                waiting: st.waiters.len(&name),
                circuit: st.provisioning.circuit(&name),
            };
            templates.insert(name, ts);
        }
        let mut health = st.health();
        if health == Health::Healthy
            && !sh.saver_running.load(Ordering::Acquire)
            && !sh.is_stopping()
        {
            let reason = "the background saver stopped; changes are stored only by a flush \
                          or at shutdown";
            health = Health::Degraded {
                reason: reason.into(),
            };
        }
        Status {
            owner: sh.owner.clone(),
            version: st.pool.version(),
            saved_version: st.pool.saved_version(),
            unsaved_changes: st.unsaved_changes(),
            last_save_age: st.last_save.map(|t| t.elapsed()),
            health,
            templates,
            metrics: sh.metrics.snapshot(),
        }
    }

    /// The manager's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared().metrics.snapshot()
    }

    /// A copy of the pool as this manager sees it.
    pub fn pool_snapshot(&self) -> pool_core::PoolSnapshot {
        self.shared().lock().pool.snapshot()
    }

    /// Waits until every change made so far is stored. If the background saver is not
    /// running, saves inline and says so.
    pub async fn flush(&self) -> Result<(), ManagerError> {
        let sh = &self.inner.shared;
        let version = sh.lock().pool.version();
        if sh.saver_running.load(Ordering::Acquire) {
            return sh.wait_saved(version).await;
        }
        warn!(
            version,
            "background saver is not running; falling back to an inline save"
        );
        persister::save_all(sh, SaveMode::Inline).await;
        let st = sh.lock();
        if st.pool.saved_version() >= version {
            return Ok(());
        }
        let reason = st
            .failing
            .clone()
            .unwrap_or_else(|| "inline save did not complete".into());
        Err(ManagerError::Halted { reason })
    }

    /// Stops taking work, returns this manager's unused reservations to the pool, stores
    /// everything, and stops the background tasks; gives up at `deadline` and reports
    /// what could not be stored.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let sh = &self.inner.shared;
        sh.stopping.store(true, Ordering::Release);
        sh.lock().waiters.clear();
        sh.maintain.notify_one();
        let drained = tokio::time::timeout(deadline, self.drain()).await.is_ok();
        if !drained {
            warn!(
                ?deadline,
                "shutdown deadline passed before everything was stored"
            );
        }
        sh.lock_tasks().abort_all();
        let saver = self.inner.take_saver();
        if let Some(saver) = saver {
            saver.abort();
        }
        persister::close(sh);
        let st = sh.lock();
        let pending = st.pool.unsaved();
        let mut unsaved: Vec<ProjectId> = pending.changed.into_iter().map(|r| r.id).collect();
        unsaved.extend(pending.removed);
        let set_aside: Vec<ProjectId> = st.poisoned.keys().cloned().collect();
        let clean = drained && st.unsaved() == 0 && set_aside.is_empty();
        info!(
            clean,
            unsaved = unsaved.len(),
            set_aside = set_aside.len(),
            "pool manager stopped"
        );
        ShutdownReport {
            clean,
            unsaved,
            set_aside,
        }
    }

    async fn drain(&self) {
        let sh = &self.inner.shared;
        // Provisions in flight are abandoned: waiting for them could take minutes, and
        // their projects are not in the pool yet.
        let abandoned = sh.provisions_in_flight();
        if abandoned > 0 {
            warn!(abandoned, "shutdown stops provisions in flight");
        }
        sh.lock_tasks().abort_all();
        sh.join_tasks().await;
        {
            let mut st = sh.lock();
            let before = st.pool.version();
            let released = st.pool.release_owner(&sh.owner, sh.now());
            if !released.is_empty() {
                info!(
                    count = released.len(),
                    "returned unused reservations to the pool"
                );
            }
            sh.changed(&mut st, before);
        }
        let version = sh.lock().pool.version();
        let stored = if sh.saver_running.load(Ordering::Acquire) {
            sh.wait_saved(version).await.is_ok()
        } else {
            // The saver already ended, having had nothing left to save: this last save
            // is the planned final one, not a fallback.
            persister::save_all(sh, SaveMode::Inline).await;
            sh.lock().pool.saved_version() >= version
        };
        if !stored {
            error!("final save did not complete");
            return;
        }
        sh.wake.notify_one();
        let saver = self.inner.take_saver();
        if let Some(saver) = saver {
            if let Err(e) = saver.await {
                error!(error = %e, "background saver ended abnormally");
            }
        }
    }
}

fn allocated(a: pool_core::Allocation, warm: bool, metadata: Option<Arc<Metadata>>) -> Allocated {
    Allocated {
        project: a.project,
        template: a.template,
        token: a.token,
        warm,
        repeat: !a.fresh,
        metadata,
    }
}
