//! The backend conformance suite on Azurite, each scenario under its own prefix.

mod common;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pool_azure::AzureStore;
use pool_core::ProjectId;
use pool_storage::conformance::{Harness, Stores};

struct AzureHarness(common::Azurite);

fn azure(stores: &Stores) -> &AzureStore {
    stores.raw.downcast_ref().expect("an azure store")
}

#[async_trait]
impl Harness for AzureHarness {
    async fn fresh(&self) -> Stores {
        let store = self.0.store(&common::random_prefix("conformance")).await;
        let raw: Arc<dyn Any + Send + Sync> = Arc::new(store.clone());
        Stores {
            pool: Arc::new(store.clone()),
            metadata: Arc::new(store),
            raw,
        }
    }

    async fn write_raw_pool(&self, stores: &Stores, bytes: &[u8]) {
        let store = azure(stores);
        store
            .write_raw(&store.pool_blob(), bytes.to_vec())
            .await
            .expect("raw pool write");
    }

    async fn write_raw_metadata(&self, stores: &Stores, project: &ProjectId, bytes: &[u8]) {
        let store = azure(stores);
        let blob = store.metadata_blob(project);
        store
            .write_raw(&blob, bytes.to_vec())
            .await
            .expect("raw metadata write");
    }
}

pool_storage::conformance_tests!(common::azurite().map(AzureHarness));
