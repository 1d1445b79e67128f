//! The stored form of a pool: a versioned JSON document, and the delta a row-based store
//! writes instead.
//!
//! The format is pinned by a golden file (`tests/golden/snapshot_v1.json`). Loading checks
//! the schema version before anything else, so a document from a newer release is refused
//! by name rather than misread, and checks the records' consistency after parsing, so a
//! damaged document is an error and never a silently emptier pool.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, OwnerId, ProjectId};
use crate::index::Indexes;
use crate::pool::{OwnerLease, Pool};
use crate::record::ProjectRecord;

/// The schema version this release writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole pool as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    /// Always [`SCHEMA_VERSION`] when written by this release.
    pub schema_version: u32,
    /// The pool version the snapshot was taken at.
    pub pool_version: u64,
    /// Live owners and their leases.
    pub owners: BTreeMap<OwnerId, OwnerLease>,
    /// Every project, sorted by id.
    pub projects: Vec<ProjectRecord>,
}

/// What changed in a pool since a stored version: what a row-based store writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChanges {
    /// The stored version these changes apply on top of.
    pub base_version: u64,
    /// The pool version after the changes.
    pub pool_version: u64,
    /// Every live owner and its lease (small, so always written whole).
    pub owners: BTreeMap<OwnerId, OwnerLease>,
    /// Records changed after `base_version`, sorted by id.
    pub changed: Vec<ProjectRecord>,
    /// Projects removed after `base_version`, sorted.
    pub removed: Vec<ProjectId>,
}

/// Why a stored document could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The document was written with a schema this release does not know.
    #[error("snapshot schema version {found} is not supported (this release reads {supported})")]
    UnsupportedSchema {
        /// The version found.
        found: u32,
        /// The version this release reads.
        supported: u32,
    },
    /// The document is not a well-formed snapshot.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    /// The document parsed but its records contradict each other.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Deserialize)]
struct Header {
    schema_version: Option<u32>,
}

impl PoolSnapshot {
    /// The snapshot as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .unwrap_or_else(|e| unreachable!("a snapshot always serializes: {e}"))
    }

    /// The snapshot as indented JSON, for people and golden files.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self)
            .unwrap_or_else(|e| unreachable!("a snapshot always serializes: {e}"))
    }

    /// Parses a stored document, checking its schema version first.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        match header.schema_version {
            Some(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(SnapshotError::UnsupportedSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            None => return Err(SnapshotError::Corrupt("no schema_version field".into())),
        }
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Corrupt(e.to_string()))
    }
}

impl PoolSnapshot {
    /// Applies `changes` (made on top of this snapshot's version) in place, keeping the
    /// projects sorted by id.
    pub fn apply(&mut self, changes: &PoolChanges) {
        let mut by_id: BTreeMap<ProjectId, ProjectRecord> = std::mem::take(&mut self.projects)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for id in &changes.removed {
            by_id.remove(id);
        }
        for rec in &changes.changed {
            by_id.insert(rec.id.clone(), rec.clone());
        }
        self.projects = by_id.into_values().collect();
        self.pool_version = changes.pool_version;
        self.owners = changes.owners.clone();
    }
}

impl Pool {
    /// The whole pool as a snapshot, projects sorted by id.
    pub fn snapshot(&self) -> PoolSnapshot {
        let mut projects: Vec<ProjectRecord> = self.projects.values().cloned().collect();
        projects.sort_by(|a, b| a.id.cmp(&b.id));
        PoolSnapshot {
            schema_version: SCHEMA_VERSION,
            pool_version: self.version,
            owners: self.owners.clone(),
            projects,
        }
    }

    /// What changed since the last version marked saved.
    pub fn unsaved(&self) -> PoolChanges {
        let (mut changed, mut removed) = self.changes_since(self.saved_version);
        changed.sort_by(|a, b| a.id.cmp(&b.id));
        removed.sort();
        PoolChanges {
            base_version: self.saved_version,
            pool_version: self.version,
            owners: self.owners.clone(),
            changed,
            removed,
        }
    }

    /// Rebuilds a pool from a snapshot, checking it is consistent. The pool counts as
    /// saved at the snapshot's version.
    pub fn from_snapshot(snapshot: PoolSnapshot) -> Result<Self, SnapshotError> {
        if snapshot.schema_version != SCHEMA_VERSION {
            let found = snapshot.schema_version;
            return Err(SnapshotError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let version = snapshot.pool_version;
        let mut seen_holders = HashSet::new();
        let mut pool = Pool {
            version,
            saved_version: version,
            ..Pool::default()
        };
        for rec in snapshot.projects {
            check_record(&rec, version, &mut seen_holders)?;
            if pool.projects.contains_key(&rec.id) {
                return Err(SnapshotError::Inconsistent(format!(
                    "project {} appears twice",
                    rec.id
                )));
            }
            pool.changes.insert((rec.version, rec.id.clone()));
            pool.projects.insert(rec.id.clone(), rec);
        }
        if let Some((o, _)) = snapshot.owners.iter().find(|(_, l)| l.version > version) {
            return Err(SnapshotError::Inconsistent(format!(
                "owner {o} is newer than the pool"
            )));
        }
        pool.owners = snapshot.owners;
        pool.changes.set_saved(version);
        pool.idx = Indexes::build(pool.projects.values());
        Ok(pool)
    }
}

fn check_record(
    rec: &ProjectRecord,
    pool_version: u64,
    holders: &mut HashSet<ConversationId>,
) -> Result<(), SnapshotError> {
    if rec.version > pool_version {
        let msg = format!(
            "project {} has version {} above the pool's {pool_version}",
            rec.id, rec.version
        );
        return Err(SnapshotError::Inconsistent(msg));
    }
    if let Some((conversation, _)) = rec.state.holder() {
        if !holders.insert(conversation.clone()) {
            let msg = format!("conversation {conversation} holds more than one project");
            return Err(SnapshotError::Inconsistent(msg));
        }
    }
    Ok(())
}
