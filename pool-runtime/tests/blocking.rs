//! The blocking facade, from a plain thread and from inside a runtime.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pool_core::ConversationId;
use pool_runtime::{BlockingPoolManager, OnEmpty, PoolManager};
use pool_storage::MemoryStore;
use support::*;

fn start(store: &MemoryStore) -> BlockingPoolManager {
    let builder = PoolManager::builder(Arc::new(store.clone())).config(config(2));
    let m = BlockingPoolManager::start(builder).unwrap();
    m.add_projects(&template(), ids("p", 2)).unwrap();
    m
}

fn exercise(m: &BlockingPoolManager) {
    let c = ConversationId::new("blocking-1").unwrap();
    let mut a = None;
    for _ in 0..200 {
        match m.allocate(&c, &template(), OnEmpty::Fail) {
            Ok(got) => {
                a = Some(got);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let a = a.expect("a project within 2 s");
    assert_eq!(
        m.allocate(&c, &template(), OnEmpty::Fail).unwrap().project,
        a.project
    );
    m.mark_active(&a.project, a.token).unwrap();
    m.archive(&a.project, a.token).unwrap();
    m.flush().unwrap();
    assert_eq!(m.status().unsaved_changes, 0);
}

#[test]
fn works_from_a_plain_thread_with_no_runtime() {
    let store = MemoryStore::new();
    let m = start(&store);
    std::thread::spawn(move || {
        exercise(&m);
        assert!(m.shutdown(Duration::from_secs(5)).clean);
    })
    .join()
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn works_from_inside_a_single_threaded_runtime() {
    let store = MemoryStore::new();
    let m = start(&store);
    exercise(&m);
    drop(m);
    let snap = stored(&store).await;
    assert_eq!(states(&snap)["archived"], 1);
}
