//! Async storage for a project pool: the traits every backend implements, one error type,
//! an in-memory store with fault injection, and the conformance suite backends run.
//!
//! [`PoolStore`] keeps the pool; [`MetadataStore`] keeps each project's metadata document.
//! Both are object-safe, so a store chosen at run time from a URL is an
//! `Arc<dyn PoolStore>`. Every write is conditional ([`Precondition`]): create-only, or
//! only over the revision the writer last saw. A lost race is [`ErrorKind::Conflict`],
//! distinct from every other failure, because it is the one the caller resolves by
//! reloading rather than retrying.
//!
//! The design decision a reader may question: a save takes a [`PoolWrite`], which is
//! either the whole pool or only the records changed since the stored version. Blob
//! stores need the whole document anyway; a row store (SQLite) writes only the changed
//! rows, which turns a save of a 100,000-project pool from megabytes into a few rows.
//! [`Capabilities::incremental_saves`] says which a backend accepts.
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `mock` | `MockPoolStore` and `MockMetadataStore` (mockall) |
//! | `conformance` | the `conformance` module and [`conformance_tests!`] for backend tests |
//!
//! ```
//! use pool_core::{Pool, PoolSnapshot};
//! use pool_storage::{ErrorKind, MemoryStore, PoolStore, PoolWrite, Precondition};
//!
//! # tokio_test_block(async {
//! let store = MemoryStore::new();
//! let write = PoolWrite::Full(Pool::new().snapshot());
//! let rev = store.save(&write, &Precondition::CreateOnly).await?;
//! let again = store.save(&write, &Precondition::CreateOnly).await;
//! assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict);
//! assert_eq!(store.load().await?.unwrap().revision, rev);
//! # Ok::<(), pool_storage::StoreError>(())
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

mod error;
mod memory;
mod traits;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "mock"))]
mod mock;

pub use error::{ErrorKind, StoreError};
pub use memory::{Counters, Latency, MemoryStore, Op};
#[cfg(any(test, feature = "mock"))]
pub use mock::{MockMetadataStore, MockPoolStore};
pub use traits::{
    Capabilities, Metadata, MetadataStore, POOL_DOCUMENT, PoolStore, PoolWrite, Precondition,
    Revision, Versioned, decode_metadata, decode_pool, metadata_key, pool_key,
};

#[cfg(test)]
mod memory_conformance {
    use std::any::Any;
    use std::sync::Arc;

    use async_trait::async_trait;
    use pool_core::ProjectId;

    use crate::MemoryStore;
    use crate::conformance::{Harness, Stores};

    struct Memory;

    fn memory(stores: &Stores) -> &MemoryStore {
        stores.raw.downcast_ref().expect("a memory store")
    }

    #[async_trait]
    impl Harness for Memory {
        async fn fresh(&self) -> Stores {
            let m = MemoryStore::new();
            let raw: Arc<dyn Any + Send + Sync> = Arc::new(m.clone());
            Stores {
                pool: Arc::new(m.clone()),
                metadata: Arc::new(m),
                raw,
            }
        }
        async fn write_raw_pool(&self, stores: &Stores, bytes: &[u8]) {
            memory(stores).put_raw_pool(bytes.to_vec());
        }
        async fn write_raw_metadata(&self, stores: &Stores, project: &ProjectId, bytes: &[u8]) {
            memory(stores).put_raw_metadata(project.clone(), bytes.to_vec());
        }
    }

    crate::conformance_tests!(Some(Memory));
}
