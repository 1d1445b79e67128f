//! Errors of the manager's operations.

use std::time::Duration;

use pool_core::{PoolError, ProjectId, SnapshotError, TemplateName};
use pool_storage::StoreError;

/// Why a manager operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No project of the template could be handed out under the caller's policy. Not a
    /// storage problem: the pool is simply out of warm projects.
    #[error("no project of template {template} is ready")]
    PoolEmpty {
        /// The template asked for.
        template: TemplateName,
    },
    /// The caller waited for a project up to its deadline.
    #[error("no project of template {template} became ready within {waited:?}")]
    WaitTimedOut {
        /// The template asked for.
        template: TemplateName,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The pool refused the operation (unknown project, wrong token, wrong state).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store failed in a way the manager could not resolve.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The stored pool could not be read.
    #[error("the stored pool is unusable")]
    Snapshot(#[from] SnapshotError),
    /// Another manager took this manager's projects (it was presumed dead); it no longer
    /// hands anything out.
    #[error("this manager stopped handing out projects: {reason}")]
    Halted {
        /// What happened.
        reason: String,
    },
    /// The manager is shutting down and takes no new work.
    #[error("the manager is shutting down")]
    ShuttingDown,
    /// Provisioning a project failed.
    #[error("provisioning a project of template {template} failed: {reason}")]
    Provision {
        /// The template.
        template: TemplateName,
        /// What went wrong.
        reason: String,
    },
    /// The template is not one this manager serves.
    #[error("template {0} is not configured")]
    UnknownTemplate(TemplateName),
    /// The store refused the change that handed out this project, for good; in durable
    /// mode such a hand-out is not acknowledged.
    #[error("the hand-out of project {project} could not be stored")]
    NotStored {
        /// The project.
        project: ProjectId,
    },
    /// A project's metadata could not be found.
    #[error("project {0} has no metadata")]
    NoMetadata(ProjectId),
}

impl ManagerError {
    /// A stable, machine-readable code for the error, for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PoolEmpty { .. } => "pool_empty",
            Self::WaitTimedOut { .. } => "wait_timed_out",
            Self::Pool(PoolError::TokenMismatch { .. }) => "token_mismatch",
            Self::Pool(PoolError::UnknownProject(_)) => "unknown_project",
            Self::Pool(_) => "invalid_transition",
            Self::Store(e) if e.is_conflict() => "storage_conflict",
            Self::Store(_) => "storage_error",
            Self::Snapshot(_) => "corrupt_pool",
            Self::Halted { .. } => "halted",
            Self::ShuttingDown => "shutting_down",
            Self::Provision { .. } => "provision_failed",
            Self::UnknownTemplate(_) => "unknown_template",
            Self::NotStored { .. } => "not_stored",
            Self::NoMetadata(_) => "no_metadata",
        }
    }
}
