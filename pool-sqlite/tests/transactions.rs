//! Read-modify-write transactions over a few rows: what they store, and what they refuse.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use pool_core::{
    Allocation, AllocationToken, ConversationId, OwnerId, Pool, PoolError, ProjectId, StateKind,
    TemplateName, Timestamp,
};
use pool_sqlite::{Select, SqliteConfig, SqliteStore};
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, Revision, Versioned};
use tempfile::TempDir;

fn t() -> TemplateName {
    TemplateName::new("default").unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

fn id(s: &str) -> ProjectId {
    ProjectId::new(s).unwrap()
}

async fn stored(n: usize) -> (TempDir, SqliteStore, Revision) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::file(dir.path().join("p.db")))
        .await
        .unwrap();
    let mut pool = Pool::new();
    for i in 0..n {
        pool.add_available(id(&format!("default-{i:03}")), t(), now())
            .unwrap();
    }
    let rev = store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await;
    (dir, store, rev.unwrap())
}

async fn allocate(store: &SqliteStore, chat: &str) -> Versioned<Result<Allocation, PoolError>> {
    let c = ConversationId::new(chat).unwrap();
    let select = vec![
        Select::HeldBy(c.clone()),
        Select::InState {
            template: t(),
            kind: StateKind::Available,
            limit: 1,
        },
    ];
    store
        .transact(select, move |pool| {
            if let Some(held) = pool.holder_of(&c) {
                return Ok(held);
            }
            let owner = OwnerId::new("cli").unwrap();
            pool.reserve(&owner, &t(), 1, now());
            let token = AllocationToken::from_u64(9);
            pool.allocate(&owner, &c, &t(), token, now(), Duration::from_secs(60))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_allocation_stores_its_rows_and_a_repeat_stores_nothing() {
    let (_dir, store, rev0) = stored(5).await;
    let first = allocate(&store, "chat-1").await;
    let a = first.value.clone().unwrap();
    assert_eq!((a.project.as_str(), a.fresh), ("default-000", true));
    assert_ne!(first.revision, rev0);
    let again = allocate(&store, "chat-1").await;
    assert_eq!(again.value.unwrap(), Allocation { fresh: false, ..a });
    assert_eq!(
        again.revision, first.revision,
        "nothing changed, nothing written"
    );
    let next = allocate(&store, "chat-2").await.value.unwrap();
    assert_eq!(
        next.project.as_str(),
        "default-001",
        "the lowest available id"
    );

    let loaded = store.load().await.unwrap().unwrap();
    let pool = Pool::from_snapshot(loaded.value).unwrap();
    pool.check_invariants().unwrap();
    assert_eq!(pool.counts(&t()).allocated, 2);
    assert_eq!(pool.version(), 5 + 4);
}

#[tokio::test]
async fn a_manager_holding_the_old_revision_conflicts_after_a_transaction() {
    let (_dir, store, rev0) = stored(3).await;
    allocate(&store, "chat-1").await.value.unwrap();
    let mut pool = Pool::from_snapshot(store.load().await.unwrap().unwrap().value).unwrap();
    pool.renew_owner(&OwnerId::new("late").unwrap(), now());
    let stale = store
        .save(
            &PoolWrite::Full(pool.snapshot()),
            &Precondition::Matches(rev0),
        )
        .await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn removals_and_named_rows_go_through() {
    let (_dir, store, _) = stored(4).await;
    let select = vec![Select::Ids(vec![id("default-002"), id("missing")])];
    let seen = store
        .transact(select, |pool| {
            let target = id("default-002");
            pool.quarantine(&target, "test", now()).unwrap();
            pool.remove(&target).unwrap();
            pool.len()
        })
        .await
        .unwrap();
    assert_eq!(
        seen.value, 0,
        "the named row was read, the missing one skipped"
    );
    let loaded = store.load().await.unwrap().unwrap();
    let ids: Vec<&str> = loaded
        .value
        .projects
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["default-000", "default-001", "default-003"]);
    assert_eq!(loaded.revision, seen.revision);
}

#[tokio::test]
async fn adding_a_stored_project_it_did_not_read_is_refused() {
    let (_dir, store, _) = stored(3).await;
    let before = store.load().await.unwrap().unwrap();
    let refused = store
        .transact(vec![], |pool| {
            pool.add_available(id("default-001"), t(), now())
        })
        .await;
    let err = refused.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("default-001"), "{err}");
    assert_eq!(
        store.load().await.unwrap().unwrap(),
        before,
        "nothing stored"
    );
}

#[tokio::test]
async fn a_second_project_for_one_conversation_is_refused() {
    let (_dir, store, _) = stored(3).await;
    allocate(&store, "chat-1").await.value.unwrap();
    let before = store.load().await.unwrap().unwrap();
    let select = vec![Select::InState {
        template: t(),
        kind: StateKind::Available,
        limit: 1,
    }];
    let refused = store
        .transact(select, |pool| {
            let owner = OwnerId::new("sloppy").unwrap();
            pool.reserve(&owner, &t(), 1, now());
            let c = ConversationId::new("chat-1").unwrap();
            let token = AllocationToken::from_u64(1);
            pool.allocate(&owner, &c, &t(), token, now(), Duration::from_secs(1))
                .unwrap()
        })
        .await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        store.load().await.unwrap().unwrap(),
        before,
        "nothing stored"
    );
}

#[tokio::test]
async fn a_transaction_needs_a_stored_pool() {
    let store = SqliteStore::open(SqliteConfig::memory()).await.unwrap();
    let refused = store
        .transact(vec![], |pool| {
            pool.renew_owner(&OwnerId::new("o").unwrap(), now())
        })
        .await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
}
