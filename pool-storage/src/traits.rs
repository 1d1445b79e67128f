//! The two storage traits every backend implements, and the values they exchange.

use std::fmt;

use async_trait::async_trait;
use pool_core::{PoolChanges, PoolSnapshot, ProjectId};

use crate::error::StoreError;

/// An opaque marker of one stored state of a document (an ETag, a row version).
///
/// Every successful write returns a new revision; a conditional write names the revision
/// it expects to replace.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Revision(String);

impl Revision {
    /// Wraps a backend's revision string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The backend's revision string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revision({})", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a write may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if the document does not exist yet.
    CreateOnly,
    /// Only if the document's current revision is this one.
    Matches(Revision),
}

/// A value read from a store with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision, for a following conditional write.
    pub revision: Revision,
}

/// A pool write: the whole pool, or what changed since the stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolWrite {
    /// Every record; what a document store writes.
    Full(PoolSnapshot),
    /// Only the changes; what a row store writes. Its `base_version` must be the stored
    /// pool's version, which the precondition already guarantees for a correct caller.
    Changes(PoolChanges),
}

impl PoolWrite {
    /// The pool version the write stores.
    pub fn pool_version(&self) -> u64 {
        match self {
            Self::Full(s) => s.pool_version,
            Self::Changes(c) => c.pool_version,
        }
    }

    /// Whether the write carries `project`, changed or removed.
    pub fn touches(&self, project: &ProjectId) -> bool {
        match self {
            Self::Full(s) => s.projects.iter().any(|r| &r.id == project),
            Self::Changes(c) => {
                c.changed.iter().any(|r| &r.id == project) || c.removed.contains(project)
            }
        }
    }

    /// How many project records the write carries.
    pub fn record_count(&self) -> usize {
        match self {
            Self::Full(s) => s.projects.len(),
            Self::Changes(c) => c.changed.len() + c.removed.len(),
        }
    }
}

/// What a backend can do, so callers and the conformance suite choose by capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's short name (`memory`, `sqlite`, `azure`, `s3`).
    pub name: &'static str,
    /// Accepts [`PoolWrite::Changes`]; otherwise only [`PoolWrite::Full`].
    pub incremental_saves: bool,
    /// Other processes see the same data (a file or a service, not process memory).
    pub shared_between_processes: bool,
    /// The largest pool document it stores, if limited.
    pub max_document_bytes: Option<usize>,
}

/// Where the pool is stored.
///
/// # Contract
///
/// - `load` returns `None` when no pool has been stored, never an error for that.
/// - `save` is atomic and conditional: with [`Precondition::CreateOnly`] it succeeds only
///   if no pool is stored; with [`Precondition::Matches`] only if the stored revision is
///   that one. A precondition that does not hold fails with
///   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) and stores nothing.
/// - Every successful `save` returns a revision different from every earlier one of this
///   store, and a following `load` returns that revision with what was written.
/// - A stored document that cannot be decoded, or is from an unknown schema version, fails
///   `load` with [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt); it is never read as
///   an empty pool.
/// - A store whose capabilities say `incremental_saves == false` refuses
///   [`PoolWrite::Changes`] with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
/// - Nothing is promised about two saves in flight at once from one caller; the runtime
///   never has more than one.
#[async_trait]
pub trait PoolStore: Send + Sync + fmt::Debug {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The stored pool and its revision, or `None` if none is stored.
    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError>;

    /// Stores `write` if `precondition` holds; returns the new revision.
    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError>;
}

/// A project's metadata document (connection details and the like), as JSON.
pub type Metadata = serde_json::Value;

/// Where each project's metadata document is stored.
///
/// # Contract
///
/// - `get_metadata` returns `None` for a project with no document.
/// - `put_metadata` with `Some(precondition)` behaves like a conditional pool save,
///   failing with `Conflict` when it does not hold; with `None` it overwrites.
/// - `delete_metadata` of a missing document succeeds.
/// - A stored document that is not JSON fails `get_metadata` with `Corrupt`.
#[async_trait]
pub trait MetadataStore: Send + Sync + fmt::Debug {
    /// The project's metadata and its revision.
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError>;

    /// Stores the project's metadata; returns the new revision.
    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError>;

    /// Removes the project's metadata.
    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError>;

    /// Where the document lives, for logs (`{project_id}/project_metadata.json` under
    /// the store's prefix, or a table row).
    fn metadata_location(&self, project: &ProjectId) -> String;
}

/// The key of a project's metadata document in a blob store.
pub fn metadata_key(prefix: &str, project: &ProjectId) -> String {
    join_key(prefix, &format!("{project}/project_metadata.json"))
}

/// The key of the pool document in a blob store.
pub fn pool_key(prefix: &str) -> String {
    join_key(prefix, POOL_DOCUMENT)
}

/// The pool document's name in a blob store.
pub const POOL_DOCUMENT: &str = "project_pool.json";

fn join_key(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Decodes a stored pool document, mapping failures to a `Corrupt` error that names
/// where it came from.
pub fn decode_pool(
    backend: &'static str,
    location: &str,
    bytes: &[u8],
) -> Result<PoolSnapshot, StoreError> {
    PoolSnapshot::from_json(bytes).map_err(|e| {
        StoreError::new(
            crate::ErrorKind::Corrupt,
            backend,
            format!("reading {location}"),
        )
        .with_source(e)
    })
}

/// Decodes a stored metadata document, mapping failures to `Corrupt`.
pub fn decode_metadata(
    backend: &'static str,
    location: &str,
    bytes: &[u8],
) -> Result<Metadata, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::new(
            crate::ErrorKind::Corrupt,
            backend,
            format!("reading {location}"),
        )
        .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_blob_layout() {
        let p = ProjectId::new("horizon-617-9ca82").unwrap();
        assert_eq!(
            metadata_key("", &p),
            "horizon-617-9ca82/project_metadata.json"
        );
        assert_eq!(
            metadata_key("a/b/", &p),
            "a/b/horizon-617-9ca82/project_metadata.json"
        );
        assert_eq!(pool_key("/pools"), "pools/project_pool.json");
    }
}
