//! Retries, timeouts and error context, against a scripted HTTP server on 127.0.0.1 that
//! answers like the blob service would (no emulator needed).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::scripted::{Reply, serve};

use pool_azure::{AzureConfig, AzureStore, EMULATOR_KEY, RetryConfig};
use pool_core::Pool;
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition, Revision};

fn store(addr: SocketAddr, attempts: u32) -> AzureStore {
    let retry = RetryConfig {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let config = AzureConfig::new("devstoreaccount1", "scripted")
        .and_then(|c| c.with_endpoint(&format!("http://{addr}/devstoreaccount1")))
        .and_then(|c| c.with_account_key(EMULATOR_KEY))
        .and_then(|c| c.with_prefix("p"))
        .expect("valid config")
        .with_retry(retry)
        .with_request_timeout(Duration::from_millis(300));
    AzureStore::new(config).expect("store")
}

fn empty_pool() -> PoolWrite {
    PoolWrite::Full(Pool::new().snapshot())
}

fn any_revision() -> Precondition {
    Precondition::Matches(Revision::new("\"0x1\""))
}

#[tokio::test]
async fn server_errors_are_retried_until_the_write_succeeds() {
    let script = vec![
        Reply::Status(503, "ServerBusy"),
        Reply::Status(500, "InternalError"),
        Reply::Created("\"0x2\""),
    ];
    let (addr, seen) = serve(script).await;
    let store = store(addr, 5);
    let rev = store
        .save(&empty_pool(), &Precondition::CreateOnly)
        .await
        .expect("third attempt");
    assert_eq!(rev, Revision::new("\"0x2\""));
    assert_eq!(store.requests_sent(), 3);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 3);
    // The SDK sends the blob name as one path segment, '/' escaped; the service unescapes it.
    let path = "PUT /devstoreaccount1/scripted/p%2Fproject_pool.json?";
    assert!(
        seen.requests.iter().all(|r| r.starts_with(path)),
        "{:?}",
        seen.requests
    );
}

#[tokio::test]
async fn exhausted_retries_name_the_container_and_blob() {
    let (addr, _) = serve(vec![Reply::Status(503, "ServerBusy")]).await;
    let store = store(addr, 3);
    let err = store.load().await.expect_err("always busy");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
    assert_eq!(store.requests_sent(), 3);
    let text = err.to_string();
    assert!(
        text.contains("\"scripted\"") && text.contains("\"p/project_pool.json\""),
        "{text}"
    );
    assert!(text.contains("after 3 attempts"), "{text}");
}

#[tokio::test]
async fn a_silent_server_times_out_each_attempt() {
    let (addr, _) = serve(vec![Reply::Hang]).await;
    let store = store(addr, 2);
    let started = std::time::Instant::now();
    let err = store
        .save(&empty_pool(), &any_revision())
        .await
        .expect_err("no answer");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(store.requests_sent(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn lost_preconditions_are_conflicts_and_not_retried() {
    for (status, code) in [
        (412, "ConditionNotMet"),
        (409, "BlobAlreadyExists"),
        (404, "BlobNotFound"),
    ] {
        let (addr, _) = serve(vec![Reply::Status(status, code)]).await;
        let store = store(addr, 5);
        let err = store
            .save(&empty_pool(), &any_revision())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{status}: {err}");
        assert_eq!(store.requests_sent(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn a_missing_container_is_not_a_missing_pool() {
    let (addr, _) = serve(vec![Reply::Status(404, "ContainerNotFound")]).await;
    let err = store(addr, 5).load().await.expect_err("no container");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("container does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn a_retry_refused_by_its_own_earlier_attempt_succeeds() {
    let script = vec![
        Reply::Status(500, "InternalError"),
        Reply::Status(412, "ConditionNotMet"),
        Reply::PropertiesOfFirstPut("\"0x9\""),
    ];
    let (addr, seen) = serve(script).await;
    let store = store(addr, 5);
    let rev = store
        .save(&empty_pool(), &any_revision())
        .await
        .expect("own earlier write");
    assert_eq!(rev, Revision::new("\"0x9\""));
    let seen = seen.lock().unwrap();
    assert!(seen.requests[2].starts_with("HEAD "), "{:?}", seen.requests);
}

#[tokio::test]
async fn a_retry_refused_by_another_writer_is_a_conflict() {
    let script = vec![
        Reply::Hang,
        Reply::Status(412, "ConditionNotMet"),
        Reply::PropertiesOfAnotherWriter("\"0x9\""),
    ];
    let (addr, _) = serve(script).await;
    let store = store(addr, 5);
    let err = store
        .save(&empty_pool(), &any_revision())
        .await
        .expect_err("another writer");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(store.requests_sent(), 3);
}
