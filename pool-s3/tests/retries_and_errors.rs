//! Throttling, server errors and stalls are retried with backoff; what still fails is an
//! error of the right kind that names the bucket and key.

mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use pool_core::Pool;
use pool_s3::{RetrySettings, S3Config, S3Store, Timeouts};
use pool_storage::{ErrorKind, PoolStore, PoolWrite, Precondition};

const ATTEMPTS: u32 = 4;

fn quick(config: S3Config) -> S3Config {
    let retry = RetrySettings {
        max_attempts: ATTEMPTS,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        attempt: Duration::from_millis(800),
        operation: Duration::from_secs(20),
    };
    config.with_retry(retry).with_timeouts(timeouts)
}

/// A store behind a fault proxy, and the proxy.
async fn faulty(emulator: &common::Emulator) -> (S3Store, FaultProxy) {
    let direct = emulator.fresh_store().await;
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let config = emulator
        .config(direct.config().prefix())
        .with_endpoint(proxy.endpoint());
    let store = S3Store::connect(&quick(config.expect("endpoint")))
        .await
        .expect("connect");
    (store, proxy)
}

fn empty_pool() -> PoolWrite {
    PoolWrite::Full(Pool::new().snapshot())
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let (store, proxy) = faulty(&emulator).await;
    proxy.inject([Fault::SlowDown, Fault::InternalError, Fault::SlowDown]);
    let before = store.requests_sent();
    let revision = store
        .save(&empty_pool(), &Precondition::CreateOnly)
        .await
        .expect("save");
    assert_eq!(
        store.requests_sent() - before,
        4,
        "three refusals, then the write"
    );
    assert_eq!(proxy.requests(), 4);
    assert_eq!(
        store.load().await.expect("load").expect("stored").revision,
        revision
    );
}

#[tokio::test]
async fn a_stalled_attempt_times_out_and_is_retried() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let (store, proxy) = faulty(&emulator).await;
    proxy.inject([Fault::Stall(Duration::from_secs(10))]);
    let started = Instant::now();
    assert!(
        store
            .load()
            .await
            .expect("load after a stalled attempt")
            .is_none()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.requests(), 2);
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_temporary_and_names_the_key() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let (store, proxy) = faulty(&emulator).await;
    proxy.inject(std::iter::repeat_n(Fault::SlowDown, ATTEMPTS as usize));
    let err = store
        .save(&empty_pool(), &Precondition::CreateOnly)
        .await
        .expect_err("throttled");
    assert_eq!(
        (err.kind(), err.is_temporary()),
        (ErrorKind::Unavailable, true),
        "{err}"
    );
    let key = format!("s3://{}/{}", emulator.bucket, store.pool_key());
    assert!(err.to_string().contains(&key), "{err} does not name {key}");
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(
        cause.contains("503") && cause.contains("SlowDown"),
        "{cause}"
    );
    assert_eq!(proxy.requests(), ATTEMPTS as usize);
    assert!(
        store.load().await.expect("load").is_none(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn attempts_that_all_stall_end_in_a_timeout() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let (store, proxy) = faulty(&emulator).await;
    proxy.inject(std::iter::repeat_n(
        Fault::Stall(Duration::from_secs(10)),
        ATTEMPTS as usize,
    ));
    let err = store.load().await.expect_err("every attempt stalls");
    assert_eq!(
        (err.kind(), err.is_temporary()),
        (ErrorKind::Timeout, true),
        "{err}"
    );
    assert!(err.to_string().contains(&store.pool_key()), "{err}");
    assert_eq!(proxy.requests(), ATTEMPTS as usize);
}

#[tokio::test]
async fn a_missing_bucket_is_an_error_not_an_empty_pool() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let bucket = format!("pool-missing-{:08x}", rand::random::<u32>());
    let mut other = emulator.clone();
    other.bucket = bucket.clone();
    let store = S3Store::connect(&other.config("p")).await.expect("connect");
    let err = store.load().await.expect_err("no bucket");
    assert_ne!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains(&format!("s3://{bucket}/p/project_pool.json")),
        "{err}"
    );
    let err = store
        .save(&empty_pool(), &Precondition::CreateOnly)
        .await
        .expect_err("no bucket");
    assert!(!err.is_conflict(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_bucket_is_idempotent_and_race_free() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let mut other = emulator.clone();
    other.bucket = format!("pool-created-{:08x}", rand::random::<u32>());
    let a = S3Store::connect(&other.config("")).await.expect("connect");
    let b = S3Store::connect(&other.config("")).await.expect("connect");
    let (ra, rb) = tokio::join!(a.ensure_bucket(), b.ensure_bucket());
    ra.expect("first creator");
    rb.expect("second creator");
    a.ensure_bucket().await.expect("again");
    a.save(&empty_pool(), &Precondition::CreateOnly)
        .await
        .expect("usable bucket");
}
