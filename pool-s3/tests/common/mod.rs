//! What the emulator tests share: the emulator's coordinates, fresh stores, and a proxy
//! that injects faults between a store and the emulator.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of this module"
)]

pub mod fault_proxy;

use pool_s3::{S3Config, S3Store};

/// The S3 server the tests use, as `cargo xtask test` describes it.
#[derive(Clone)]
pub struct Emulator {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

/// The emulator from `POOL_TEST_S3_*`; without them, one line saying what to run, or a
/// panic when `CI` is set so CI never passes without running these tests.
pub fn emulator() -> Option<Emulator> {
    let var = |name: &str| std::env::var(format!("POOL_TEST_S3_{name}")).ok();
    let found = (|| {
        Some(Emulator {
            endpoint: var("ENDPOINT")?,
            region: var("REGION")?,
            access_key: var("ACCESS_KEY")?,
            secret_key: var("SECRET_KEY")?,
            bucket: var("BUCKET")?,
        })
    })();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but POOL_TEST_S3_* are not: the S3 tests must run in CI"
        );
        println!(
            "skipping: set POOL_TEST_S3_* (run `cargo xtask test` or `cargo xtask emulators`)"
        );
    }
    found
}

/// A prefix no other test uses.
pub fn random_prefix() -> String {
    format!("t-{:016x}", rand::random::<u64>())
}

impl Emulator {
    /// A configuration for the test bucket under `prefix`.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config::new(&self.bucket)
            .and_then(|c| c.with_prefix(prefix))
            .and_then(|c| c.with_endpoint(&self.endpoint))
            .and_then(|c| c.with_region(&self.region))
            .expect("valid emulator settings")
            .with_static_credentials(&self.access_key, &self.secret_key)
    }

    /// A store under `prefix`, with the bucket created if missing.
    pub async fn store_at(&self, prefix: &str) -> S3Store {
        let store = S3Store::connect(&self.config(prefix))
            .await
            .expect("connect");
        store.ensure_bucket().await.expect("test bucket");
        store
    }

    /// A store under a fresh prefix.
    pub async fn fresh_store(&self) -> S3Store {
        self.store_at(&random_prefix()).await
    }
}
