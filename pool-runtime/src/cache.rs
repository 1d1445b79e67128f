//! Project metadata read through the store, cached with a time-to-live.
//!
//! Entries live in a bounded [`moka`] cache; freshness is judged on tokio's monotonic
//! clock (so a paused clock in tests moves it exactly), and a stale or missing entry is
//! reloaded under moka's per-key compute lock, so concurrent readers of one project cause
//! a single load and all see its result.

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use pool_core::ProjectId;
use pool_storage::{Metadata, MetadataStore, StoreError};
use tokio::time::Instant;
use tracing::info;

use crate::error::ManagerError;
use crate::metrics::{Metrics, bump};

#[derive(Debug, Clone)]
struct Entry {
    metadata: Arc<Metadata>,
    loaded_at: Instant,
}

/// A read-through, time-limited cache of project metadata documents.
#[derive(Clone)]
pub struct MetadataCache {
    store: Arc<dyn MetadataStore>,
    entries: moka::future::Cache<ProjectId, Entry>,
    ttl: Duration,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl MetadataCache {
    /// A cache over `store` keeping up to `capacity` documents for `ttl` each.
    pub fn new(store: Arc<dyn MetadataStore>, ttl: Duration, capacity: u64) -> Self {
        Self {
            store,
            entries: moka::future::Cache::new(capacity),
            ttl,
        }
    }

    /// The store the cache reads through.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// A project's metadata, from the cache while fresh, else from the store.
    pub(crate) async fn get(
        &self,
        project: &ProjectId,
        metrics: &Metrics,
    ) -> Result<Arc<Metadata>, ManagerError> {
        if let Some(e) = self.entries.get(project).await {
            if e.loaded_at.elapsed() < self.ttl {
                bump(&metrics.cache_hits);
                return Ok(e.metadata);
            }
        }
        bump(&metrics.cache_misses);
        let ttl = self.ttl;
        let result = self
            .entries
            .entry_by_ref(project)
            .and_try_compute_with(|current| async move {
                match current.map(|c| c.into_value()) {
                    Some(e) if e.loaded_at.elapsed() < ttl => Ok(Op::Nop),
                    stale => {
                        if let Some(e) = stale {
                            let age_s = e.loaded_at.elapsed().as_secs_f64();
                            info!(project_id = %project, age_s, "metadata cache expired");
                        }
                        self.load(project, metrics).await.map(Op::Put)
                    }
                }
            })
            .await?;
        match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                Ok(e.into_value().metadata)
            }
            _ => Err(ManagerError::NoMetadata(project.clone())),
        }
    }

    async fn load(&self, project: &ProjectId, metrics: &Metrics) -> Result<Entry, ManagerError> {
        bump(&metrics.metadata_loads);
        let document = self.store.metadata_location(project);
        let loaded = self
            .store
            .get_metadata(project)
            .await
            .map_err(ManagerError::Store)?;
        let Some(v) = loaded else {
            return Err(ManagerError::NoMetadata(project.clone()));
        };
        info!(project_id = %project, document, "metadata read from cloud storage");
        Ok(Entry {
            metadata: Arc::new(v.value),
            loaded_at: Instant::now(),
        })
    }

    /// Stores a new project's metadata; returns the document for the manager to keep
    /// while the project waits in reserve (it is not put in the cache, which holds what
    /// was read).
    pub(crate) async fn store_new(
        &self,
        project: &ProjectId,
        metadata: Metadata,
    ) -> Result<Arc<Metadata>, StoreError> {
        self.store.put_metadata(project, &metadata, None).await?;
        Ok(Arc::new(metadata))
    }

    /// Forgets and deletes a project's metadata (the project was destroyed).
    ///
    /// The delete runs under the same per-key lock as loads, so a read racing with it
    /// cannot load the document back into the cache just before it is deleted.
    pub(crate) async fn remove(&self, project: &ProjectId) -> Result<(), StoreError> {
        let store = &self.store;
        self.entries
            .entry_by_ref(project)
            .and_try_compute_with(|_| async move {
                store
                    .delete_metadata(project)
                    .await
                    .map(|()| Op::<Entry>::Remove)
            })
            .await
            .map(|_| ())
    }
}
