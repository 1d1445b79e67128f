//! Sixteen writers, each with its own connections to one file, each running 500
//! read-modify-write allocation transactions: every one commits, no caller sees a busy
//! database, and no project is handed out twice.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, PoolError, ProjectId, StateKind, TemplateName,
    Timestamp,
};
use pool_sqlite::{Select, SqliteConfig, SqliteStore};
use pool_storage::{PoolStore, PoolWrite, Precondition, Revision};

const TASKS: usize = 16;
const PER_TASK: usize = 500;
const SPARE: usize = 100;

fn template() -> TemplateName {
    TemplateName::new("default").unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

struct Handed {
    conversation: ConversationId,
    project: ProjectId,
    revision: Revision,
}

/// One writer's 500 allocations, each its own transaction.
async fn allocate_all(task: usize, store: SqliteStore) -> Vec<Handed> {
    let owner = OwnerId::new(format!("task-{task}")).unwrap();
    let mut handed = Vec::with_capacity(PER_TASK);
    for j in 0..PER_TASK {
        let conversation = ConversationId::new(format!("chat-{task}-{j}")).unwrap();
        let select = vec![
            Select::HeldBy(conversation.clone()),
            Select::InState {
                template: template(),
                kind: StateKind::Available,
                limit: 1,
            },
        ];
        let (owner, c) = (owner.clone(), conversation.clone());
        let token = AllocationToken::from_u64((task * PER_TASK + j) as u64);
        let done = store
            .transact(select, move |pool: &mut Pool| -> Result<_, PoolError> {
                if let Some(held) = pool.holder_of(&c) {
                    return Ok(held);
                }
                pool.reserve(&owner, &template(), 1, now());
                pool.allocate(
                    &owner,
                    &c,
                    &template(),
                    token,
                    now(),
                    Duration::from_secs(600),
                )
            })
            .await
            .unwrap_or_else(|e| panic!("transaction {task}/{j} reached its caller as {e}"));
        let allocation = done.value.expect("a project was available");
        assert!(
            allocation.fresh,
            "chat-{task}-{j} is new, so its project is fresh"
        );
        handed.push(Handed {
            conversation,
            project: allocation.project,
            revision: done.revision,
        });
    }
    handed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_commit_all_eight_thousand_allocations_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::file(dir.path().join("pool.db"));
    let setup = SqliteStore::open(config.clone()).await.unwrap();
    let mut pool = Pool::new();
    for i in 0..TASKS * PER_TASK + SPARE {
        let id = ProjectId::new(format!("default-{i:05}-0a1b2")).unwrap();
        pool.add_available(id, template(), now()).unwrap();
    }
    let start_version = pool.version();
    setup
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await
        .unwrap();

    let mut writers = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = SqliteStore::open(config.clone()).await.unwrap();
        writers.spawn(allocate_all(task, store));
    }
    let mut handed = Vec::new();
    while let Some(done) = writers.join_next().await {
        handed.extend(done.expect("a writer task"));
    }

    assert_eq!(handed.len(), TASKS * PER_TASK, "8,000 of 8,000 committed");
    let projects: HashSet<&ProjectId> = handed.iter().map(|h| &h.project).collect();
    assert_eq!(
        projects.len(),
        TASKS * PER_TASK,
        "no project handed out twice"
    );
    let revisions: HashSet<&Revision> = handed.iter().map(|h| &h.revision).collect();
    assert_eq!(
        revisions.len(),
        TASKS * PER_TASK,
        "every commit has its own revision"
    );

    let stored = setup.load().await.unwrap().expect("the pool");
    let pool = Pool::from_snapshot(stored.value).expect("a consistent pool");
    pool.check_invariants().expect("the pool's invariants");
    let counts = pool.counts(&template());
    assert_eq!(
        (counts.allocated, counts.available, counts.reserved),
        (8_000, SPARE, 0)
    );
    assert_eq!(
        pool.version(),
        start_version + 2 * 8_000,
        "one reserve and one allocate each"
    );
    let holders: HashMap<&ConversationId, &ProjectId> = handed
        .iter()
        .map(|h| (&h.conversation, &h.project))
        .collect();
    for (conversation, project) in holders {
        let held = pool
            .holder_of(conversation)
            .expect("the conversation holds a project");
        assert_eq!(
            &held.project, project,
            "{conversation} holds what it was handed"
        );
    }
}
