//! Project records, their lifecycle states, and the time type the pool is given.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{AllocationToken, ConversationId, OwnerId, ProjectId, TemplateName};

/// A point in time in milliseconds, supplied by the caller; the pool never reads a clock.
///
/// The runtime passes wall-clock milliseconds since the Unix epoch so that leases written
/// by one process are meaningful to another.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is, or zero if it is not later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Why a project was archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveReason {
    /// Its holder archived it with its token.
    Released,
    /// Its allocation was not marked active before the lease ran out.
    LeaseExpired,
}

/// Where a project is in its lifecycle.
///
/// `Provisioning -> Available -> Reserved -> Allocated -> Active -> Archived`, with
/// `Quarantined` for projects whose fate is doubtful and `Failed` for failed provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProjectState {
    /// Being created by a provisioner.
    Provisioning,
    /// Ready, not yet claimed by any manager.
    Available,
    /// Durably claimed by one manager, which may hand it out without further I/O.
    Reserved {
        /// The manager holding the reservation.
        owner: OwnerId,
    },
    /// Handed to a conversation that has not yet marked it active.
    Allocated {
        /// The manager that handed it out.
        owner: OwnerId,
        /// Its holder.
        conversation: ConversationId,
        /// The holder's proof.
        token: AllocationToken,
        /// When the allocation is reclaimed unless marked active.
        lease_until: Timestamp,
    },
    /// In use by its conversation.
    Active {
        /// The manager that handed it out.
        owner: OwnerId,
        /// Its holder.
        conversation: ConversationId,
        /// The holder's proof.
        token: AllocationToken,
    },
    /// Done with; waiting to be destroyed or reset. Never handed out again.
    Archived {
        /// Its last holder, if it had one.
        conversation: Option<ConversationId>,
        /// The last holder's token, so that a repeated archive is recognised.
        token: Option<AllocationToken>,
        /// Why it was archived.
        reason: ArchiveReason,
    },
    /// Doubtful (reserved by a manager that died); never handed out again.
    Quarantined {
        /// The manager whose reservation it was, if any.
        former_owner: Option<OwnerId>,
        /// Why it was quarantined.
        reason: String,
    },
    /// Provisioning did not succeed.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl ProjectState {
    /// The state's name without its data, for errors and counts.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Provisioning => StateKind::Provisioning,
            Self::Available => StateKind::Available,
            Self::Reserved { .. } => StateKind::Reserved,
            Self::Allocated { .. } => StateKind::Allocated,
            Self::Active { .. } => StateKind::Active,
            Self::Archived { .. } => StateKind::Archived,
            Self::Quarantined { .. } => StateKind::Quarantined,
            Self::Failed { .. } => StateKind::Failed,
        }
    }

    /// The manager this state belongs to, if any.
    pub fn owner(&self) -> Option<&OwnerId> {
        match self {
            Self::Reserved { owner }
            | Self::Allocated { owner, .. }
            | Self::Active { owner, .. } => Some(owner),
            _ => None,
        }
    }

    /// The conversation holding the project, if it is held.
    pub fn holder(&self) -> Option<(&ConversationId, AllocationToken)> {
        match self {
            Self::Allocated {
                conversation,
                token,
                ..
            }
            | Self::Active {
                conversation,
                token,
                ..
            } => Some((conversation, *token)),
            _ => None,
        }
    }
}

/// The name of a [`ProjectState`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// See [`ProjectState::Provisioning`].
    Provisioning,
    /// See [`ProjectState::Available`].
    Available,
    /// See [`ProjectState::Reserved`].
    Reserved,
    /// See [`ProjectState::Allocated`].
    Allocated,
    /// See [`ProjectState::Active`].
    Active,
    /// See [`ProjectState::Archived`].
    Archived,
    /// See [`ProjectState::Quarantined`].
    Quarantined,
    /// See [`ProjectState::Failed`].
    Failed,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Provisioning => "provisioning",
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Allocated => "allocated",
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Quarantined => "quarantined",
            Self::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// One project as the pool knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// Its id.
    pub id: ProjectId,
    /// The template it was provisioned from.
    pub template: TemplateName,
    /// Where it is in its lifecycle.
    pub state: ProjectState,
    /// The pool version of its last change.
    pub version: u64,
    /// When it last changed.
    pub changed_at: Timestamp,
}

/// How many projects of one template are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StateCounts {
    /// Being provisioned.
    pub provisioning: usize,
    /// Ready and unclaimed.
    pub available: usize,
    /// Reserved by some manager.
    pub reserved: usize,
    /// Handed out, not yet active.
    pub allocated: usize,
    /// In use.
    pub active: usize,
    /// Archived.
    pub archived: usize,
    /// Quarantined.
    pub quarantined: usize,
    /// Failed to provision.
    pub failed: usize,
}

impl StateCounts {
    /// The counter for `kind`.
    pub fn get(&self, kind: StateKind) -> usize {
        match kind {
            StateKind::Provisioning => self.provisioning,
            StateKind::Available => self.available,
            StateKind::Reserved => self.reserved,
            StateKind::Allocated => self.allocated,
            StateKind::Active => self.active,
            StateKind::Archived => self.archived,
            StateKind::Quarantined => self.quarantined,
            StateKind::Failed => self.failed,
        }
    }

    pub(crate) fn slot(&mut self, kind: StateKind) -> &mut usize {
        match kind {
            StateKind::Provisioning => &mut self.provisioning,
            StateKind::Available => &mut self.available,
            StateKind::Reserved => &mut self.reserved,
            StateKind::Allocated => &mut self.allocated,
            StateKind::Active => &mut self.active,
            StateKind::Archived => &mut self.archived,
            StateKind::Quarantined => &mut self.quarantined,
            StateKind::Failed => &mut self.failed,
        }
    }

    /// Adds another template's counts to these.
    pub fn add(&mut self, other: &StateCounts) {
        for kind in ALL_KINDS {
            *self.slot(kind) += other.get(kind);
        }
    }

    /// All projects counted.
    pub fn total(&self) -> usize {
        ALL_KINDS.iter().map(|k| self.get(*k)).sum()
    }
}

/// Every state kind, in lifecycle order.
pub const ALL_KINDS: [StateKind; 8] = [
    StateKind::Provisioning,
    StateKind::Available,
    StateKind::Reserved,
    StateKind::Allocated,
    StateKind::Active,
    StateKind::Archived,
    StateKind::Quarantined,
    StateKind::Failed,
];
