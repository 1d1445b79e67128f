//! Creating the container is idempotent, and a missing container is an error, not an empty
//! pool.

mod common;

use pool_azure::{AzureConfig, AzureStore};
use pool_storage::{ErrorKind, PoolStore};
use rand::Rng;

#[tokio::test]
async fn the_container_is_created_once_and_then_found() {
    let Some(azurite) = common::azurite() else {
        return;
    };
    let name = format!("pooltest-own-{:08x}", rand::rng().random::<u32>());
    let config = AzureConfig::new(&azurite.account, &name)
        .and_then(|c| c.with_endpoint(&azurite.endpoint))
        .and_then(|c| c.with_account_key(&azurite.key))
        .expect("valid config");
    let store = AzureStore::new(config).expect("store");

    let err = store.load().await.expect_err("no container yet");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains(&name), "{err}");

    assert!(
        store.ensure_container().await.expect("create"),
        "created the first time"
    );
    assert!(
        !store.ensure_container().await.expect("exists"),
        "found the second time"
    );
    assert!(store.load().await.expect("load").is_none());
}
