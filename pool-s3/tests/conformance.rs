//! The storage conformance suite against the S3 emulator, one fresh prefix per scenario.

mod common;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use pool_core::ProjectId;
use pool_s3::S3Store;
use pool_storage::conformance::{Harness, Stores};

struct S3Harness(common::Emulator);

fn s3(stores: &Stores) -> &S3Store {
    stores.raw.downcast_ref().expect("an S3 store")
}

async fn put_raw(store: &S3Store, key: String, bytes: &[u8]) {
    let body = ByteStream::from(bytes.to_vec());
    let put = store
        .client()
        .put_object()
        .bucket(store.config().bucket())
        .key(key)
        .body(body);
    put.send().await.expect("raw put");
}

#[async_trait]
impl Harness for S3Harness {
    async fn fresh(&self) -> Stores {
        let store = self.0.fresh_store().await;
        let raw: Arc<dyn Any + Send + Sync> = Arc::new(store.clone());
        Stores {
            pool: Arc::new(store.clone()),
            metadata: Arc::new(store),
            raw,
        }
    }

    async fn write_raw_pool(&self, stores: &Stores, bytes: &[u8]) {
        let store = s3(stores);
        put_raw(store, store.pool_key(), bytes).await;
    }

    async fn write_raw_metadata(&self, stores: &Stores, project: &ProjectId, bytes: &[u8]) {
        let store = s3(stores);
        put_raw(store, store.metadata_key(project), bytes).await;
    }
}

pool_storage::conformance_tests!(common::emulator().map(S3Harness));
