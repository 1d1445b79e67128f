//! Two stores (two clients, as two managers would have) create the pool at the same
//! moment: exactly one create wins, the other sees `Conflict`, loads the winner's pool and
//! adopts it by writing over the winner's revision.

mod common;

use std::sync::Arc;

use pool_azure::AzureStore;
use pool_core::{OwnerId, Pool, ProjectId, TemplateName, Timestamp};
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, Revision, StoreError};
use tokio::sync::Barrier;

fn pool_of(owner: &str) -> Pool {
    let mut pool = Pool::new();
    let t = TemplateName::new("default").expect("valid");
    let now = Timestamp::from_millis(1_000);
    pool.renew_owner(
        &OwnerId::new(owner).expect("valid"),
        Timestamp::from_millis(60_000),
    );
    let id = ProjectId::new(format!("{owner}-1-00000")).expect("valid");
    pool.add_available(id, t, now).expect("new id");
    pool
}

/// Loads whatever is stored (nothing, at first), then creates its own pool at the barrier.
async fn try_create(store: AzureStore, owner: &str, barrier: Arc<Barrier>) -> Attempt {
    assert!(
        store.load().await.expect("first load").is_none(),
        "the pool exists already"
    );
    let pool = pool_of(owner);
    barrier.wait().await;
    let result = store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await;
    Attempt {
        store,
        owner: owner.to_owned(),
        result,
    }
}

struct Attempt {
    store: AzureStore,
    owner: String,
    result: Result<Revision, StoreError>,
}

/// The loser's recovery: load the stored pool, add its own project to it, and save over
/// the revision it loaded.
async fn adopt(loser: &Attempt, winner_revision: &Revision) -> Revision {
    let stored = loser
        .store
        .load()
        .await
        .expect("load after conflict")
        .expect("a pool");
    assert_eq!(
        &stored.revision, winner_revision,
        "the loser sees the winner's write"
    );
    let mut pool = Pool::from_snapshot(stored.value).expect("consistent");
    let t = TemplateName::new("default").expect("valid");
    let id = ProjectId::new(format!("{}-1-00000", loser.owner)).expect("valid");
    pool.add_available(id, t, Timestamp::from_millis(2_000))
        .expect("new id");
    let write = PoolWrite::Full(pool.snapshot());
    let precondition = Precondition::Matches(stored.revision);
    loser
        .store
        .save(&write, &precondition)
        .await
        .expect("save over the winner's revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_concurrent_create_wins_and_the_other_adopts() {
    let Some(azurite) = common::azurite() else {
        return;
    };
    let mut wins = [0_u32; 2];
    for _round in 0..10 {
        let prefix = common::random_prefix("create-race");
        let (a, b) = (azurite.store(&prefix).await, azurite.store(&prefix).await);
        let barrier = Arc::new(Barrier::new(2));
        let (first, second) = tokio::join!(
            tokio::spawn(try_create(a, "manager-a", barrier.clone())),
            tokio::spawn(try_create(b, "manager-b", barrier)),
        );
        let attempts = [first.expect("task a"), second.expect("task b")];
        let winners: Vec<usize> = (0..2).filter(|&i| attempts[i].result.is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one create succeeds");
        let (w, l) = (winners[0], 1 - winners[0]);
        wins[w] += 1;
        let lost = attempts[l]
            .result
            .as_ref()
            .expect_err("the other create fails");
        assert_eq!(lost.kind(), ErrorKind::Conflict, "{lost}");
        let winner_revision = attempts[w].result.as_ref().expect("winner").clone();
        let adopted = adopt(&attempts[l], &winner_revision).await;

        let end = attempts[w]
            .store
            .load()
            .await
            .expect("load")
            .expect("a pool");
        assert_eq!(end.revision, adopted);
        let ids: Vec<&str> = end.value.projects.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["manager-a-1-00000", "manager-b-1-00000"]);
        assert_eq!(
            end.value.owners.len(),
            1,
            "the winner's owner lease is kept"
        );
    }
    println!(
        "create race wins: manager-a {}, manager-b {}",
        wins[0], wins[1]
    );
}
