//! The metadata kept with reservations and read ahead for them, pushed where it could go
//! wrong: waiters served by a save, thousands of reservations, a store that is slow or
//! failing, projects handed out while their read is in flight, shutdown in the middle
//! of a read, reservations that change hands between managers, and a manager whose
//! reservations another one took over.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pool_core::{ConversationId, PoolSnapshot, ProjectId, ProjectState, TemplateName};
use pool_runtime::{
    Allocated, ManagerConfig, OnEmpty, PoolManager, ProvisionError, Provisioned, Provisioner,
    TemplateConfig,
};
use pool_storage::{
    Capabilities, ErrorKind, MemoryStore, Metadata, MetadataStore, PoolStore, PoolWrite,
    Precondition, Revision, StoreError, Versioned,
};
use serde_json::json;
use support::*;

fn other() -> TemplateName {
    TemplateName::new("other").unwrap()
}

fn conversation(name: &str) -> ConversationId {
    ConversationId::new(name).unwrap()
}

/// The document every project in these tests has: it names its project.
fn document(id: &ProjectId) -> Metadata {
    json!({ "id": id.as_str() })
}

/// Asserts that a hand-out came with its own project's document.
fn has_own_document(a: &Allocated) {
    let doc = a
        .metadata
        .as_ref()
        .unwrap_or_else(|| panic!("{} was handed out without its document", a.project));
    assert_eq!(
        **doc,
        document(&a.project),
        "{} came with another document",
        a.project
    );
}

/// Provisions projects named `<prefix>-<n>-0abcd` whose documents name them.
#[derive(Debug)]
struct Named {
    prefix: &'static str,
    delay: Duration,
    next: AtomicUsize,
}

impl Named {
    fn new(prefix: &'static str, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            prefix,
            delay,
            next: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Provisioner for Named {
    async fn provision(&self, _: &TemplateName) -> Result<Provisioned, ProvisionError> {
        tokio::time::sleep(self.delay).await;
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let id = ProjectId::new(format!("{}-{n}-0abcd", self.prefix)).unwrap();
        let metadata = document(&id);
        Ok(Provisioned { id, metadata })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        Ok(())
    }
}

/// A metadata store that counts its reads (and how many run at once), can make them
/// slow, and can fail them.
#[derive(Debug, Default)]
struct Watched {
    inner: MemoryStore,
    reads: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    read_delay_ms: AtomicUsize,
    failing: AtomicBool,
    /// Reads of this project never answer.
    hanging: std::sync::Mutex<Option<ProjectId>>,
}

impl Watched {
    fn over(inner: &MemoryStore) -> Arc<Self> {
        Arc::new(Self {
            inner: inner.clone(),
            ..Self::default()
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// Decrements the in-flight count however a read ends, cancellation included.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl MetadataStore for Watched {
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = self.read_delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.hanging.lock().unwrap().as_ref() == Some(project) {
            std::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new(ErrorKind::Unavailable, "watched", "down"));
        }
        self.inner.get_metadata(project).await
    }

    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError> {
        self.inner
            .put_metadata(project, metadata, precondition)
            .await
    }

    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError> {
        self.inner.delete_metadata(project).await
    }

    fn metadata_location(&self, project: &ProjectId) -> String {
        self.inner.metadata_location(project)
    }
}

/// A pool store that can be cut off from one manager while others still reach it.
#[derive(Debug)]
struct Cut {
    inner: MemoryStore,
    cut: AtomicBool,
}

impl Cut {
    fn check(&self) -> Result<(), StoreError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::new(ErrorKind::Unavailable, "cut", "cut off"));
        }
        Ok(())
    }
}

#[async_trait]
impl PoolStore for Cut {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        self.check()?;
        self.inner.load().await
    }

    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.save(write, precondition).await
    }
}

async fn put_documents(store: &MemoryStore, ids: &[ProjectId]) {
    for id in ids {
        store.put_metadata(id, &document(id), None).await.unwrap();
    }
}

/// A manager with a provisioner and `metadata` as its metadata store.
async fn start(
    store: &MemoryStore,
    cfg: ManagerConfig,
    provisioner: Arc<dyn Provisioner>,
    metadata: Arc<dyn MetadataStore>,
) -> PoolManager {
    PoolManager::builder(Arc::new(store.clone()))
        .config(cfg)
        .provisioner(provisioner)
        .metadata(metadata, Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap()
}

/// A manager with no provisioner, serving `default` with `reserve` reservations.
async fn start_plain(store: &MemoryStore, reserve: usize, metadata: Arc<Watched>) -> PoolManager {
    PoolManager::builder(Arc::new(store.clone()))
        .config(config(reserve))
        .metadata(metadata, Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap()
}

async fn allocate(m: &PoolManager, name: &str, template: &TemplateName) -> Allocated {
    m.allocate(&conversation(name), template, OnEmpty::Fail)
        .await
        .unwrap()
}

fn reserved_here(m: &PoolManager, template: &TemplateName) -> usize {
    m.status().templates[template].reserved_here
}

/// A caller waiting for a project is served by the save that stores the project's
/// reservation; that save also wakes the maintainer (a warm hand-out of another template
/// happened just before it). The waiter must still get the document its project was
/// provisioned with.
#[tokio::test(start_paused = true)]
async fn a_waiter_served_by_a_save_gets_its_projects_document() {
    let store = MemoryStore::new();
    let mut warm = TemplateConfig::new(template(), 1);
    warm.policy.max_in_flight = 1;
    let mut waited_for = TemplateConfig::new(other(), 0);
    waited_for.policy.max_in_flight = 1;
    let cfg = ManagerConfig {
        templates: vec![warm, waited_for],
        save_delay: Duration::from_millis(5),
        ..ManagerConfig::default()
    };
    let provisioner = Named::new("made", Duration::from_millis(100));
    let m = start(&store, cfg, provisioner, Arc::new(store.clone())).await;
    reserved(&m, 1).await;
    let elsewhere = m.clone();
    let hand_out = tokio::spawn(async move {
        // While the waiter's project is provisioned and its reservation not yet saved.
        tokio::time::sleep(Duration::from_millis(102)).await;
        allocate(&elsewhere, "warm", &template()).await
    });
    let waiter = m
        .allocate(
            &conversation("waiter"),
            &other(),
            OnEmpty::Wait(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(!waiter.warm);
    has_own_document(&hand_out.await.unwrap());
    has_own_document(&waiter);
    m.shutdown(Duration::from_secs(5)).await;
}

/// A caller that waits and one that provisions cold both get their project's document;
/// so does a warm hand-out of either template.
#[tokio::test(start_paused = true)]
async fn waiters_and_cold_callers_get_the_document() {
    let store = MemoryStore::new();
    let cfg = ManagerConfig {
        templates: vec![
            TemplateConfig::new(template(), 0),
            TemplateConfig::new(other(), 2),
        ],
        save_delay: Duration::from_millis(5),
        ..ManagerConfig::default()
    };
    let provisioner = Named::new("made", Duration::from_millis(50));
    let m = start(&store, cfg, provisioner, Arc::new(store.clone())).await;
    let wait = OnEmpty::Wait(Duration::from_secs(10));
    let waited = m
        .allocate(&conversation("w"), &template(), wait)
        .await
        .unwrap();
    has_own_document(&waited);
    let cold = m
        .allocate(&conversation("c"), &template(), OnEmpty::Cold)
        .await
        .unwrap();
    has_own_document(&cold);
    eventually(Duration::from_secs(10), || reserved_here(&m, &other()) == 2).await;
    m.flush().await.unwrap();
    for name in ["o1", "o2"] {
        has_own_document(&allocate(&m, name, &other()).await);
    }
    assert_eq!(
        store.counters().metadata_gets,
        0,
        "no hand-out read the store"
    );
    m.shutdown(Duration::from_secs(5)).await;
}

/// Three thousand reservations whose documents are in the store: each is read once,
/// never more than 16 at a time, and every hand-out then comes with its own document
/// without another read.
#[tokio::test(start_paused = true)]
async fn thousands_of_reservations_are_read_once_sixteen_at_a_time() {
    const N: usize = 3000;
    let store = MemoryStore::new();
    let projects = ids("many", N);
    put_documents(&store, &projects).await;
    let watched = Watched::over(&store);
    watched.read_delay_ms.store(10, Ordering::SeqCst);
    let m = start_plain(&store, N, watched.clone()).await;
    m.add_projects(&template(), projects).await.unwrap();
    reserved(&m, N).await;
    eventually(Duration::from_secs(60), || watched.reads() == N).await;
    assert_eq!(watched.most_in_flight.load(Ordering::SeqCst), 16);
    // Many maintenance rounds later, nothing was read again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(watched.reads(), N);
    for i in 0..N {
        has_own_document(&allocate(&m, &format!("c{i}"), &template()).await);
    }
    assert_eq!(watched.reads(), N, "no hand-out read the store");
    m.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown while the read-ahead waits on a store that takes an hour per read: it
/// returns promptly and clean, and once the manager is dropped no task is left holding
/// the store.
#[tokio::test(start_paused = true)]
async fn shutdown_in_the_middle_of_a_slow_read_ahead_neither_hangs_nor_leaks() {
    let store = MemoryStore::new();
    let projects = ids("slow", 40);
    put_documents(&store, &projects).await;
    let watched = Watched::over(&store);
    watched.read_delay_ms.store(3_600_000, Ordering::SeqCst);
    let m = start_plain(&store, 40, watched.clone()).await;
    m.add_projects(&template(), projects).await.unwrap();
    reserved(&m, 40).await;
    eventually(Duration::from_secs(10), || {
        watched.in_flight.load(Ordering::SeqCst) == 16
    })
    .await;
    let started = tokio::time::Instant::now();
    let report = m.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        watched.in_flight.load(Ordering::SeqCst),
        0,
        "reads were abandoned"
    );
    drop(m);
    eventually(Duration::from_secs(1), || Arc::strong_count(&watched) == 1).await;
    assert_eq!(watched.reads(), 16);
    let stored = stored(&store).await;
    check(&stored);
    assert_eq!(states(&stored).get("available"), Some(&40));
}

/// A metadata store that fails every read: the read-ahead tries a batch at most every
/// five seconds instead of spinning; once the store is back, every reservation gets
/// its document.
#[tokio::test(start_paused = true)]
async fn a_failing_store_is_not_hammered_and_is_read_once_back() {
    let store = MemoryStore::new();
    let projects = ids("down", 50);
    put_documents(&store, &projects).await;
    let watched = Watched::over(&store);
    watched.failing.store(true, Ordering::SeqCst);
    let m = start_plain(&store, 50, watched.clone()).await;
    m.add_projects(&template(), projects).await.unwrap();
    reserved(&m, 50).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let tried = watched.reads();
    assert!(tried > 0 && tried <= 16 * 14, "{tried} reads in a minute");
    watched.failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(10), || watched.reads() >= tried + 50).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        watched.reads(),
        tried + 50,
        "each document read once when back"
    );
    for i in 0..50 {
        has_own_document(&allocate(&m, &format!("c{i}"), &template()).await);
    }
    m.shutdown(Duration::from_secs(5)).await;
}

/// One document's read never answers: the read-ahead gives up on it after the request
/// timeout, as a failure, instead of waiting for ever; projects reserved later still
/// have their documents read ahead.
#[tokio::test(start_paused = true)]
async fn a_read_that_never_answers_does_not_stop_the_read_ahead() {
    let store = MemoryStore::new();
    let projects = ids("stall", 16);
    put_documents(&store, &projects).await;
    let watched = Watched::over(&store);
    *watched.hanging.lock().unwrap() = Some(projects[0].clone());
    let m = start_plain(&store, 10, watched.clone()).await;
    m.add_projects(&template(), projects[..10].to_vec())
        .await
        .unwrap();
    reserved(&m, 10).await;
    eventually(Duration::from_secs(1), || watched.reads() == 10).await;
    for i in 0..3 {
        let a = allocate(&m, &format!("first{i}"), &template()).await;
        if a.metadata.is_some() {
            has_own_document(&a);
        }
    }
    // Three more are reserved in place of those handed out: their documents are read
    // ahead too, though one read of the first batch never answered.
    m.add_projects(&template(), projects[10..].to_vec())
        .await
        .unwrap();
    reserved(&m, 10).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    for i in 0..10 {
        has_own_document(&allocate(&m, &format!("then{i}"), &template()).await);
    }
    m.shutdown(Duration::from_secs(5)).await;
}

/// Projects handed out while their read-ahead is in flight: the hand-outs do not wait
/// for it, and what it reads is not kept, so the projects' metadata is then read
/// through the cache like that of any project no longer in reserve.
#[tokio::test(start_paused = true)]
async fn projects_handed_out_during_their_read_are_not_kept() {
    let store = MemoryStore::new();
    let projects = ids("race", 5);
    put_documents(&store, &projects).await;
    let watched = Watched::over(&store);
    watched.read_delay_ms.store(1000, Ordering::SeqCst);
    let m = start_plain(&store, 5, watched.clone()).await;
    m.add_projects(&template(), projects.clone()).await.unwrap();
    reserved(&m, 5).await;
    eventually(Duration::from_secs(1), || watched.reads() == 5).await;
    let started = tokio::time::Instant::now();
    let mut handed = Vec::new();
    for i in 0..5 {
        let a = allocate(&m, &format!("c{i}"), &template()).await;
        assert!(a.metadata.is_none(), "not read yet");
        handed.push(a.project);
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (n, id) in handed.iter().enumerate() {
        assert_eq!(*m.metadata(id).await.unwrap(), document(id));
        assert_eq!(
            watched.reads(),
            5 + n + 1,
            "{id} was not read through the cache"
        );
    }
    m.shutdown(Duration::from_secs(5)).await;
}

/// One manager shuts down and returns its reservations; another reserves them and, not
/// having their documents, reads them ahead: its hand-outs of them carry the documents
/// the first manager's provisioner wrote.
#[tokio::test(start_paused = true)]
async fn reservations_another_manager_released_are_read_ahead() {
    let store = MemoryStore::new();
    let mut cfg_a = config(2);
    cfg_a.templates[0].policy.target = 2;
    let a = start(
        &store,
        cfg_a,
        Named::new("a", Duration::from_millis(10)),
        Arc::new(store.clone()),
    )
    .await;
    reserved(&a, 2).await;
    let b = start(
        &store,
        config(3),
        Named::new("b", Duration::from_millis(10)),
        Arc::new(store.clone()),
    )
    .await;
    reserved(&b, 3).await;
    assert!(b.shutdown(Duration::from_secs(5)).await.clean);
    let before = store.counters().metadata_gets;
    for name in ["a1", "a2"] {
        let got = allocate(&a, name, &template()).await;
        assert!(got.project.as_str().starts_with("a-"));
        has_own_document(&got);
    }
    // `a` refills its reserve from what `b` released, and reads their documents.
    reserved(&a, 2).await;
    eventually(Duration::from_secs(10), || {
        store.counters().metadata_gets == before + 2
    })
    .await;
    for name in ["b1", "b2"] {
        let got = allocate(&a, name, &template()).await;
        assert!(got.project.as_str().starts_with("b-"), "{}", got.project);
        has_own_document(&got);
    }
    assert_eq!(store.counters().metadata_gets, before + 2);
    a.shutdown(Duration::from_secs(5)).await;
}

/// A manager is cut off from the pool store until its lease runs out; another manager
/// quarantines its reservations, recycles them and deletes their documents. Once the
/// first manager reaches the store again it learns it lost them and halts; it must not
/// go on serving the documents of projects that no longer exist as if they were still
/// in its reserve.
#[tokio::test(start_paused = true)]
async fn documents_of_reservations_taken_over_are_not_served_from_memory() {
    let store = MemoryStore::new();
    let cut = Arc::new(Cut {
        inner: store.clone(),
        cut: AtomicBool::new(false),
    });
    let lease = ManagerConfig {
        owner_lease: Duration::from_secs(3),
        heartbeat_interval: Duration::from_secs(1),
        ..config(2)
    };
    let mut cfg_a = lease.clone();
    cfg_a.templates[0].policy.target = 2;
    let a = PoolManager::builder(cut.clone())
        .config(cfg_a)
        .provisioner(Named::new("a", Duration::from_millis(10)))
        .metadata(Arc::new(store.clone()), Duration::from_secs(30), 100)
        .start()
        .await
        .unwrap();
    reserved(&a, 2).await;
    let mine: Vec<ProjectId> = a
        .pool_snapshot()
        .projects
        .into_iter()
        .filter(|r| matches!(r.state, ProjectState::Reserved { .. }))
        .map(|r| r.id)
        .collect();
    assert_eq!(mine.len(), 2);
    for id in &mine {
        assert_eq!(*a.metadata(id).await.unwrap(), document(id));
    }
    cut.cut.store(true, Ordering::SeqCst);
    let mut cfg_b = lease.clone();
    cfg_b.templates[0].reserve = 0;
    cfg_b.templates[0].policy.target = 0;
    let b = start(
        &store,
        cfg_b,
        Named::new("b", Duration::from_millis(10)),
        Arc::new(store.clone()),
    )
    .await;
    // `b` sees `a`'s lease run out, quarantines, recycles and removes its reservations.
    eventually(Duration::from_secs(30), || {
        let pool = b.pool_snapshot();
        mine.iter()
            .all(|id| pool.projects.iter().all(|r| &r.id != id))
            && b.status().unsaved_changes == 0
    })
    .await;
    for id in &mine {
        assert!(store.get_metadata(id).await.unwrap().is_none());
    }
    cut.cut.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(30), || {
        matches!(a.status().health, pool_runtime::Health::Halted { .. })
    })
    .await;
    for id in &mine {
        let served = a.metadata(id).await;
        assert!(
            served.is_err(),
            "{id} was destroyed, yet its document was served: {served:?}"
        );
    }
    b.shutdown(Duration::from_secs(5)).await;
    a.shutdown(Duration::from_secs(1)).await;
}
