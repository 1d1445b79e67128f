//! The tokio side of a warm project pool: the [`PoolManager`] that hands projects out
//! without waiting on storage, and the background tasks that keep the pool stored, warm
//! and recovered.
//!
//! A hand-out takes a project this manager has *durably reserved* and records the
//! allocation in memory: a lock and a few map operations, no I/O. One owned saver task
//! writes the pool behind the hand-outs: it gathers every change since the last save into
//! one conditional write, keeps at most one write in flight so versions only go up,
//! resolves lost races by reloading and replaying this manager's changes, and retries
//! temporary failures. Callers that need durability (reservations, archives, allocations
//! in [`Durability::Durable`] mode) wait for the next write and share it.
//!
//! The decision a reader may question: acknowledging a hand-out before it is stored.
//! It is safe because only stored reservations are handed out: after a crash, the
//! projects this manager reserved are still stored as its reservations, and once its
//! lease runs out another manager quarantines them instead of handing them out again.
//! A crash costs at most the reserved buffer, never a project held twice.
//!
//! A second owned task, the maintainer, keeps each template's supply at its target under
//! the replenish policy ([`pool_core::ReplenishPolicy`]) through a [`Provisioner`],
//! renews this manager's lease, quarantines what dead managers reserved, reclaims
//! allocations whose lease ran out, and serves callers waiting on an empty pool in
//! arrival order. Project metadata is read through a TTL cache ([`MetadataCache`]).
//!
//! ```
//! use std::sync::Arc;
//! use pool_core::{ConversationId, ProjectId, TemplateName};
//! use pool_runtime::{ManagerConfig, OnEmpty, PoolManager, TemplateConfig};
//! use pool_storage::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let template = TemplateName::new("default")?;
//! let config = ManagerConfig {
//!     templates: vec![TemplateConfig::new(template.clone(), 2)],
//!     ..ManagerConfig::default()
//! };
//! let manager = PoolManager::builder(Arc::new(MemoryStore::new())).config(config).start().await?;
//! manager.add_projects(&template, vec![ProjectId::new("default-1-9ca82")?]).await?;
//!
//! let chat = ConversationId::new("chat-42")?;
//! let got = manager.allocate(&chat, &template, OnEmpty::Fail).await?;
//! assert_eq!(got.project.as_str(), "default-1-9ca82");
//! assert!(manager.shutdown(std::time::Duration::from_secs(5)).await.clean);
//! # Ok(())
//! # }
//! ```

mod blocking;
mod cache;
mod clock;
mod config;
mod error;
mod maintainer;
mod manager;
mod metrics;
mod persister;
mod provision;
mod shared;
mod waiters;

pub use blocking::BlockingPoolManager;
pub use cache::MetadataCache;
pub use config::{Durability, ManagerConfig, RetryPolicy, TemplateConfig};
pub use error::ManagerError;
pub use manager::{
    Allocated, ManagerBuilder, OnEmpty, PoolManager, ShutdownReport, Status, TemplateStatus,
};
pub use metrics::MetricsSnapshot;
pub use provision::{Circuit, ProvisionError, Provisioned, Provisioner};
pub use shared::Health;
