//! Errors of pool operations.

use crate::ids::{ConversationId, OwnerId, ProjectId, TemplateName};
use crate::record::StateKind;

/// Why a pool operation was refused. The pool is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No project has this id.
    #[error("project {0} is not in the pool")]
    UnknownProject(ProjectId),
    /// A project with this id is already in the pool.
    #[error("project {0} is already in the pool")]
    DuplicateProject(ProjectId),
    /// The operation does not apply to the project's current state.
    #[error("cannot {operation} project {project}: it is {state}")]
    InvalidTransition {
        /// The project.
        project: ProjectId,
        /// Its state.
        state: StateKind,
        /// What was attempted.
        operation: &'static str,
    },
    /// The caller's token is not the current holder's: a stale holder is refused.
    #[error("project {project} is not held with that token")]
    TokenMismatch {
        /// The project.
        project: ProjectId,
    },
    /// The owner has no reserved project of this template to hand out.
    #[error("owner {owner} has no reserved project of template {template}")]
    NoReservedProject {
        /// The owner asked.
        owner: OwnerId,
        /// The template asked for.
        template: TemplateName,
    },
    /// The project is reserved by a different owner.
    #[error("project {project} is not reserved by {owner}")]
    NotReservedBy {
        /// The project.
        project: ProjectId,
        /// The owner that asked.
        owner: OwnerId,
    },
    /// The conversation already holds a project other than the one named.
    #[error("conversation {conversation} already holds project {project}")]
    ConversationHoldsAnother {
        /// The conversation.
        conversation: ConversationId,
        /// The project it holds.
        project: ProjectId,
    },
}
