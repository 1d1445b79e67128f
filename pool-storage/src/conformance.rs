//! The conformance suite every backend runs: plain async scenarios over a [`Harness`].
//!
//! A backend's tests implement [`Harness`] (fresh, empty stores per scenario, and a way to
//! plant raw bytes where the backend keeps its documents) and expand
//! [`conformance_tests!`](crate::conformance_tests) to get one test per scenario.
//! Scenarios that depend on a capability read it from the store, never the backend name.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pool_core::{
    OwnerId, Pool, PoolChanges, PoolSnapshot, ProjectId, SCHEMA_VERSION, TemplateName, Timestamp,
};
use serde_json::json;

use crate::error::ErrorKind;
use crate::traits::{MetadataStore, PoolStore, PoolWrite, Precondition, Revision, Versioned};

/// A pool store and a metadata store over the same backend location.
#[derive(Clone)]
pub struct Stores {
    /// The pool store.
    pub pool: Arc<dyn PoolStore>,
    /// The metadata store.
    pub metadata: Arc<dyn MetadataStore>,
    /// Whatever the harness needs to reach the backend's raw storage (downcast it).
    pub raw: Arc<dyn std::any::Any + Send + Sync>,
}

/// What a backend's tests provide to run the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// New, empty stores that no other scenario uses.
    async fn fresh(&self) -> Stores;
    /// Overwrites the stored pool document with raw bytes.
    async fn write_raw_pool(&self, stores: &Stores, bytes: &[u8]);
    /// Overwrites a project's stored metadata document with raw bytes.
    async fn write_raw_metadata(&self, stores: &Stores, project: &ProjectId, bytes: &[u8]);
}

/// Expands to one `#[tokio::test]` per conformance scenario. The argument is an
/// expression giving `Option<impl Harness>`; `None` means the backend is not available
/// here and the harness has already said so.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            create_only_succeeds_once,
            stale_revision_conflicts,
            conflict_stores_nothing,
            each_write_returns_a_new_revision,
            missing_documents_are_none,
            metadata_round_trips,
            large_snapshot_round_trips,
            concurrent_increments_end_exact,
            corrupt_pool_is_an_error,
            corrupt_metadata_is_an_error,
            incremental_saves_apply_or_are_refused
        );
    };
    (@each $harness:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(h) = $harness {
                    $crate::conformance::$name(&h).await;
                }
            }
        )*
    };
}

/// A pool of `n` available projects plus one in each other state.
pub fn sample_pool(n: usize) -> Pool {
    let mut pool = Pool::new();
    let t = TemplateName::new("default").expect("valid");
    let owner = OwnerId::new("conformance").expect("valid");
    let now = Timestamp::from_millis(1_700_000_000_000);
    pool.renew_owner(&owner, now.saturating_add(Duration::from_secs(30)));
    for i in 0..n {
        let id = ProjectId::new(format!("default-{i}-0a1b2")).expect("valid");
        pool.add_available(id, t.clone(), now).expect("new id");
    }
    pool.add_provisioning(ProjectId::new("prov-1").expect("valid"), t.clone(), now)
        .expect("new id");
    pool
}

fn full(pool: &Pool) -> PoolWrite {
    PoolWrite::Full(pool.snapshot())
}

/// A write of `pool`'s unsaved changes in the form `store` accepts.
fn write_for(store: &dyn PoolStore, pool: &Pool) -> PoolWrite {
    if store.capabilities().incremental_saves {
        PoolWrite::Changes(pool.unsaved())
    } else {
        full(pool)
    }
}

async fn load(store: &dyn PoolStore) -> Versioned<PoolSnapshot> {
    store.load().await.expect("load").expect("a stored pool")
}

async fn create(store: &dyn PoolStore, pool: &mut Pool) -> Revision {
    let rev = store
        .save(&full(pool), &Precondition::CreateOnly)
        .await
        .expect("create");
    pool.mark_saved(pool.version());
    rev
}

/// Create-only succeeds on an empty store, then conflicts.
pub async fn create_only_succeeds_once(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(3);
    create(&*s.pool, &mut pool).await;
    let again = s.pool.save(&full(&pool), &Precondition::CreateOnly).await;
    assert_eq!(
        again.expect_err("second create").kind(),
        ErrorKind::Conflict
    );
    assert_eq!(load(&*s.pool).await.value, pool.snapshot());
}

/// A write naming an old revision conflicts.
pub async fn stale_revision_conflicts(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(3);
    let first = create(&*s.pool, &mut pool).await;
    pool.renew_owner(
        &OwnerId::new("other").expect("valid"),
        Timestamp::from_millis(9),
    );
    let write = write_for(&*s.pool, &pool);
    let second = s
        .pool
        .save(&write, &Precondition::Matches(first.clone()))
        .await;
    let second = second.expect("update");
    pool.mark_saved(pool.version());
    let stale = s
        .pool
        .save(&full(&pool), &Precondition::Matches(first))
        .await;
    assert_eq!(stale.expect_err("stale write").kind(), ErrorKind::Conflict);
    assert_eq!(load(&*s.pool).await.revision, second);
}

/// A refused write leaves the stored pool exactly as it was.
pub async fn conflict_stores_nothing(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(2);
    create(&*s.pool, &mut pool).await;
    let before = load(&*s.pool).await;
    let mut other = sample_pool(5);
    other.renew_owner(
        &OwnerId::new("intruder").expect("valid"),
        Timestamp::from_millis(1),
    );
    let bogus = Precondition::Matches(Revision::new("not-a-revision"));
    let refused = s.pool.save(&full(&other), &bogus).await;
    assert_eq!(
        refused.expect_err("bogus revision").kind(),
        ErrorKind::Conflict
    );
    assert_eq!(load(&*s.pool).await, before);
}

/// Every write returns a new revision, even when only the version differs, and a load
/// returns the revision of the last write.
pub async fn each_write_returns_a_new_revision(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(2);
    let mut seen = vec![create(&*s.pool, &mut pool).await];
    for _ in 0..3 {
        let snapshot = PoolSnapshot {
            pool_version: pool.version() + 1,
            ..pool.snapshot()
        };
        pool = Pool::from_snapshot(snapshot.clone()).expect("consistent");
        let last = seen.last().cloned().expect("one revision");
        let rev = s
            .pool
            .save(&PoolWrite::Full(snapshot), &Precondition::Matches(last))
            .await;
        let rev = rev.expect("update");
        assert!(!seen.contains(&rev), "revision {rev} was returned twice");
        seen.push(rev);
    }
    let loaded = load(&*s.pool).await;
    assert_eq!(Some(&loaded.revision), seen.last());
    assert_eq!(loaded.value, pool.snapshot());
}

/// Missing documents are `None`, not errors.
pub async fn missing_documents_are_none(h: &dyn Harness) {
    let s = h.fresh().await;
    assert!(
        s.pool
            .load()
            .await
            .expect("load of an empty store")
            .is_none()
    );
    let id = ProjectId::new("nobody-1-00000").expect("valid");
    assert!(
        s.metadata
            .get_metadata(&id)
            .await
            .expect("get of a missing doc")
            .is_none()
    );
    s.metadata
        .delete_metadata(&id)
        .await
        .expect("delete of a missing doc");
}

/// Metadata round-trips and honours the same preconditions as the pool.
pub async fn metadata_round_trips(h: &dyn Harness) {
    let s = h.fresh().await;
    let m = &*s.metadata;
    let id = ProjectId::new("horizon-617-9ca82").expect("valid");
    let doc = json!({"backend_url": "https://example.invalid/p", "region": "local", "n": 3});
    let r1 = m
        .put_metadata(&id, &doc, Some(Precondition::CreateOnly))
        .await
        .expect("create");
    let again = m
        .put_metadata(&id, &doc, Some(Precondition::CreateOnly))
        .await;
    assert_eq!(
        again.expect_err("second create").kind(),
        ErrorKind::Conflict
    );
    let got = m.get_metadata(&id).await.expect("get").expect("stored");
    assert_eq!((got.value, got.revision.clone()), (doc.clone(), r1.clone()));
    let doc2 = json!({"backend_url": "https://example.invalid/q"});
    let r2 = m
        .put_metadata(&id, &doc2, Some(Precondition::Matches(r1.clone())))
        .await;
    let r2 = r2.expect("update");
    assert_ne!(r1, r2);
    let stale = m
        .put_metadata(&id, &doc, Some(Precondition::Matches(r1)))
        .await;
    assert_eq!(stale.expect_err("stale").kind(), ErrorKind::Conflict);
    m.put_metadata(&id, &doc, None)
        .await
        .expect("unconditional overwrite");
    assert_eq!(
        m.get_metadata(&id)
            .await
            .expect("get")
            .expect("stored")
            .value,
        doc
    );
    m.delete_metadata(&id).await.expect("delete");
    assert!(m.get_metadata(&id).await.expect("get").is_none());
    assert!(m.metadata_location(&id).contains("horizon-617-9ca82"));
}

/// A pool document of at least 10 MB round-trips unchanged, and can be updated.
pub async fn large_snapshot_round_trips(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(85_000);
    let size = pool.snapshot().to_json().len();
    assert!(size >= 10 << 20, "sample pool is only {size} bytes");
    let rev = create(&*s.pool, &mut pool).await;
    let loaded = load(&*s.pool).await;
    assert_eq!(loaded.revision, rev);
    assert_eq!(loaded.value, pool.snapshot());
    pool.renew_owner(
        &OwnerId::new("later").expect("valid"),
        Timestamp::from_millis(5),
    );
    let write = write_for(&*s.pool, &pool);
    s.pool
        .save(&write, &Precondition::Matches(rev.clone()))
        .await
        .expect("update");
    let stale = s.pool.save(&full(&pool), &Precondition::Matches(rev)).await;
    assert_eq!(
        stale.expect_err("stale large write").kind(),
        ErrorKind::Conflict
    );
    assert_eq!(load(&*s.pool).await.value, pool.snapshot());
}

/// 100 concurrent read-modify-write increments through the conditional save end at
/// exactly 100, every lost race seen as `Conflict` and nothing else.
pub async fn concurrent_increments_end_exact(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = Pool::new();
    create(&*s.pool, &mut pool).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let store = s.pool.clone();
        tasks.spawn(async move { increment(&*store, i).await });
    }
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        conflicts += joined.expect("increment task");
    }
    let end = load(&*s.pool).await.value;
    assert_eq!(end.projects.len(), 100);
    let adds = u64::try_from(end.projects.len()).expect("small");
    assert_eq!(
        end.pool_version, adds,
        "{conflicts} conflicts along the way"
    );
}

/// Adds one project through load, modify, conditional save; returns the conflicts seen.
async fn increment(store: &dyn PoolStore, i: usize) -> usize {
    let t = TemplateName::new("default").expect("valid");
    for conflicts in 0.. {
        let Versioned { value, revision } = load(store).await;
        let mut pool = Pool::from_snapshot(value).expect("consistent");
        let id = ProjectId::new(format!("inc-{i}")).expect("valid");
        pool.add_available(id, t.clone(), Timestamp::from_millis(1))
            .expect("new id");
        match store
            .save(&write_for(store, &pool), &Precondition::Matches(revision))
            .await
        {
            Ok(_) => return conflicts,
            Err(e) if e.is_conflict() => {}
            Err(e) => panic!("increment {i} failed with something other than a conflict: {e}"),
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Garbage and unknown schema versions in the stored pool are `Corrupt` errors.
pub async fn corrupt_pool_is_an_error(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(1);
    create(&*s.pool, &mut pool).await;
    let newer = json!({"schema_version": SCHEMA_VERSION + 1, "pool_version": 1});
    let cases: [Vec<u8>; 4] = [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        serde_json::to_vec(&newer).expect("json"),
        b"{\"schema_version\":1,\"pool_version\":1,\"owners\":{},\"projects\":[{\"id\":\"../x\"}]}"
            .to_vec(),
    ];
    for bytes in cases {
        h.write_raw_pool(&s, &bytes).await;
        let err = s.pool.load().await.expect_err("corrupt pool must not load");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
}

/// A stored metadata document that is not JSON is a `Corrupt` error.
pub async fn corrupt_metadata_is_an_error(h: &dyn Harness) {
    let s = h.fresh().await;
    let id = ProjectId::new("broken-1-00000").expect("valid");
    h.write_raw_metadata(&s, &id, b"\x00\x01 not json").await;
    let err = s
        .metadata
        .get_metadata(&id)
        .await
        .expect_err("corrupt metadata");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// A store that takes incremental saves applies changes and removals exactly, and refuses
/// changes based on a version other than the stored one; one that does not refuses them.
pub async fn incremental_saves_apply_or_are_refused(h: &dyn Harness) {
    let s = h.fresh().await;
    let mut pool = sample_pool(10);
    let rev = create(&*s.pool, &mut pool).await;
    let t = TemplateName::new("default").expect("valid");
    let now = Timestamp::from_millis(2);
    let owner = OwnerId::new("conformance").expect("valid");
    pool.reserve(&owner, &t, 3, now);
    let doomed = ProjectId::new("prov-1").expect("valid");
    pool.fail_provisioning(&doomed, "test", now)
        .expect("provisioning");
    pool.remove(&doomed).expect("failed project");
    pool.add_available(ProjectId::new("late-1-00000").expect("valid"), t, now)
        .expect("new");
    let changes = pool.unsaved();
    let result = s
        .pool
        .save(
            &PoolWrite::Changes(changes.clone()),
            &Precondition::Matches(rev),
        )
        .await;
    if !s.pool.capabilities().incremental_saves {
        assert_eq!(
            result.expect_err("unsupported").kind(),
            ErrorKind::Unsupported
        );
        return;
    }
    let rev = result.expect("incremental save");
    assert_eq!(load(&*s.pool).await.value, pool.snapshot());
    let wrong_base = PoolChanges {
        base_version: changes.base_version + 1,
        ..changes
    };
    let refused = s
        .pool
        .save(&PoolWrite::Changes(wrong_base), &Precondition::Matches(rev))
        .await;
    assert_eq!(
        refused.expect_err("wrong base").kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(load(&*s.pool).await.value, pool.snapshot());
}
