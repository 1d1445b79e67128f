//! What the Azurite tests share: finding the emulator, and fresh stores under random
//! prefixes in the run's container.

#![allow(dead_code, reason = "each test file uses a different part")]

pub(crate) mod scripted;

use pool_azure::{AzureConfig, AzureStore};
use rand::Rng;

/// Where the run's Azurite is, from the `POOL_TEST_AZURE_*` variables.
#[derive(Debug, Clone)]
pub(crate) struct Azurite {
    pub(crate) endpoint: String,
    pub(crate) account: String,
    pub(crate) key: String,
    pub(crate) container: String,
}

/// The run's Azurite, or `None` after saying how to get one; under CI, a panic instead.
pub(crate) fn azurite() -> Option<Azurite> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let found = (
        var("POOL_TEST_AZURE_ENDPOINT"),
        var("POOL_TEST_AZURE_ACCOUNT"),
        var("POOL_TEST_AZURE_KEY"),
        var("POOL_TEST_AZURE_CONTAINER"),
    );
    match found {
        (Some(endpoint), Some(account), Some(key), Some(container)) => Some(Azurite {
            endpoint,
            account,
            key,
            container,
        }),
        _ if std::env::var_os("CI").is_some() => {
            panic!("POOL_TEST_AZURE_* are not set under CI; run the tests with `cargo xtask test`")
        }
        _ => {
            let how = "run `cargo xtask test` or `cargo xtask emulators`";
            println!("skipping: set POOL_TEST_AZURE_* ({how})");
            None
        }
    }
}

/// A prefix no other test uses.
pub(crate) fn random_prefix(label: &str) -> String {
    format!("{label}-{:016x}", rand::rng().random::<u64>())
}

impl Azurite {
    /// The configuration of a store under `prefix`.
    pub(crate) fn config(&self, prefix: &str) -> AzureConfig {
        AzureConfig::new(&self.account, &self.container)
            .and_then(|c| c.with_endpoint(&self.endpoint))
            .and_then(|c| c.with_account_key(&self.key))
            .and_then(|c| c.with_prefix(prefix))
            .expect("POOL_TEST_AZURE_* describe a valid store")
    }

    /// A store under `prefix`, its container created if missing.
    pub(crate) async fn store(&self, prefix: &str) -> AzureStore {
        let store = AzureStore::new(self.config(prefix)).expect("store opens");
        store
            .ensure_container()
            .await
            .expect("container exists or is created");
        store
    }
}
