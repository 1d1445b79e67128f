//! mockall mocks of both storage traits, for tests that script an exact call sequence.

use async_trait::async_trait;
use pool_core::{PoolSnapshot, ProjectId};

use crate::error::StoreError;
use crate::traits::{Capabilities, Metadata, PoolWrite, Precondition, Revision, Versioned};

mockall::mock! {
    /// A pool store whose answers a test scripts.
    pub PoolStore {}

    #[async_trait]
    impl crate::PoolStore for PoolStore {
        fn capabilities(&self) -> Capabilities;
        async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError>;
        async fn save(
            &self,
            write: &PoolWrite,
            precondition: &Precondition,
        ) -> Result<Revision, StoreError>;
    }
}

mockall::mock! {
    /// A metadata store whose answers a test scripts.
    pub MetadataStore {}

    #[async_trait]
    impl crate::MetadataStore for MetadataStore {
        async fn get_metadata(
            &self,
            project: &ProjectId,
        ) -> Result<Option<Versioned<Metadata>>, StoreError>;
        async fn put_metadata(
            &self,
            project: &ProjectId,
            metadata: &Metadata,
            precondition: Option<Precondition>,
        ) -> Result<Revision, StoreError>;
        async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError>;
        fn metadata_location(&self, project: &ProjectId) -> String;
    }
}

impl std::fmt::Debug for MockPoolStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockPoolStore")
    }
}

impl std::fmt::Debug for MockMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockMetadataStore")
    }
}
