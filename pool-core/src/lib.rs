//! The pure state machine of a warm project pool.
//!
//! A [`Pool`] holds every project record and moves projects through their lifecycle:
//! `Provisioning -> Available -> Reserved -> Allocated -> Active -> Archived`, with
//! `Quarantined` and `Failed` on the side. Each transition is a method that returns a
//! typed [`PoolError`] when it does not apply, and every change raises the pool's version.
//!
//! This crate performs no I/O, reads no clock and knows nothing of async runtimes or
//! storage: time is an argument ([`Timestamp`]), storage sees only [`PoolSnapshot`] and
//! [`PoolChanges`]. That keeps every rule of the pool testable in microseconds, and lets
//! the runtime hold the pool under a plain mutex on the request path.
//!
//! The decision a reader may question: hand-outs are only made from projects an owner has
//! *reserved* ([`Pool::reserve`]), and the runtime stores a reservation before using it.
//! That is what lets a hand-out be acknowledged before it is stored: after a crash, the
//! dead owner's unsaved hand-outs are among its stored reservations, which another manager
//! quarantines ([`Pool::quarantine_owner`]) rather than hands out twice.
//!
//! ```
//! use std::time::Duration;
//! use pool_core::{AllocationToken, ConversationId, OwnerId, Pool, ProjectId, TemplateName, Timestamp};
//!
//! let mut pool = Pool::new();
//! let template = TemplateName::new("default")?;
//! let owner = OwnerId::new("manager-a")?;
//! let now = Timestamp::from_millis(1_000);
//! pool.add_available(ProjectId::new("default-1-9ca82")?, template.clone(), now)?;
//! assert_eq!(pool.reserve(&owner, &template, 5, now).len(), 1);
//!
//! let chat = ConversationId::new("chat-42")?;
//! let token = AllocationToken::from_u64(7);
//! let first = pool.allocate(&owner, &chat, &template, token, now, Duration::from_secs(60))?;
//! let again = pool.allocate(&owner, &chat, &template, token, now, Duration::from_secs(60))?;
//! assert_eq!(first.project, again.project);
//! assert!(first.fresh && !again.fresh);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod changelog;
mod error;
mod ids;
mod index;
mod policy;
mod pool;
mod rebase;
mod record;
mod snapshot;

pub use error::PoolError;
pub use ids::{
    AllocationToken, ConversationId, IdError, OwnerId, ProjectId, TemplateName, TokenError,
};
pub use policy::{ReplenishPolicy, SupplyCounts};
pub use pool::{Allocation, OwnerLease, Pool};
pub use rebase::RebaseReport;
pub use record::{
    ALL_KINDS, ArchiveReason, ProjectRecord, ProjectState, StateCounts, StateKind, Timestamp,
};
pub use snapshot::{PoolChanges, PoolSnapshot, SCHEMA_VERSION, SnapshotError};
