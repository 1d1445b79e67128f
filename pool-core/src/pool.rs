//! The [`Pool`]: every project record, its indexes, and the operations that move projects
//! through their lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::changelog::ChangeLog;
use crate::error::PoolError;
use crate::ids::{AllocationToken, ConversationId, OwnerId, ProjectId, TemplateName};
use crate::index::Indexes;
use crate::record::{
    ArchiveReason, ProjectRecord, ProjectState, StateCounts, StateKind, Timestamp,
};

/// A manager's claim to be alive, renewed by heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerLease {
    /// The owner is presumed dead after this time.
    pub lease_until: Timestamp,
    /// The pool version of the lease's last change.
    pub version: u64,
    /// Which run of the owner holds the lease: a process that registers under an owner
    /// id another process used draws a new one, so the older process can tell it was
    /// replaced (zero in documents written before runs were told apart).
    #[serde(default)]
    pub incarnation: u64,
}

/// A project handed to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The project.
    pub project: ProjectId,
    /// Its template.
    pub template: TemplateName,
    /// The token its holder must show to mark it active or archive it.
    pub token: AllocationToken,
    /// `true` if this call handed it out, `false` if the conversation already held it.
    pub fresh: bool,
}

/// The records and operations of a project pool.
///
/// Every method that changes a project raises [`Pool::version`] by one; a refused
/// operation returns a [`PoolError`] and changes nothing.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub(crate) version: u64,
    pub(crate) saved_version: u64,
    pub(crate) projects: HashMap<ProjectId, ProjectRecord>,
    pub(crate) owners: BTreeMap<OwnerId, OwnerLease>,
    pub(crate) idx: Indexes,
    /// `(version, project)` of every record and tombstone, for "what changed since".
    pub(crate) changes: ChangeLog,
    /// Projects removed from the pool, with the version of their removal.
    pub(crate) tombstones: HashMap<ProjectId, u64>,
    /// Projects added since the last version marked saved, with the version of their
    /// addition: the store cannot have them yet, so a rebase keeps them, whereas another
    /// changed project the store lacks was removed there.
    pub(crate) added: HashMap<ProjectId, u64>,
}

impl Pool {
    /// An empty pool at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version, raised by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version last recorded as stored by [`Pool::mark_saved`].
    pub fn saved_version(&self) -> u64 {
        self.saved_version
    }

    /// How many projects the pool holds, in any state.
    pub fn len(&self) -> usize {
        self.projects.len()
    }

    /// Whether the pool holds no project.
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    /// One project's record.
    pub fn get(&self, id: &ProjectId) -> Option<&ProjectRecord> {
        self.projects.get(id)
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &ProjectRecord> {
        self.projects.values()
    }

    /// Counts per state for one template.
    pub fn counts(&self, template: &TemplateName) -> StateCounts {
        self.idx.counts.get(template).copied().unwrap_or_default()
    }

    /// Counts per state for every template that has projects.
    pub fn counts_by_template(&self) -> &BTreeMap<TemplateName, StateCounts> {
        &self.idx.counts
    }

    /// The live owners and their leases.
    pub fn owners(&self) -> &BTreeMap<OwnerId, OwnerLease> {
        &self.owners
    }

    /// How many projects of `template` `owner` has reserved and not handed out.
    pub fn reserved_count(&self, owner: &OwnerId, template: &TemplateName) -> usize {
        self.reserved_set(owner, template).map_or(0, BTreeSet::len)
    }

    /// The first of `owner`'s reserved projects of `template` whose record has not
    /// changed since version `stored_up_to`, i.e. whose reservation is stored.
    pub fn first_reserved(
        &self,
        owner: &OwnerId,
        template: &TemplateName,
        stored_up_to: u64,
    ) -> Option<&ProjectId> {
        let set = self.reserved_set(owner, template)?;
        set.iter().find(|id| {
            self.projects
                .get(*id)
                .is_some_and(|r| r.version <= stored_up_to)
        })
    }

    /// Archived and quarantined projects, in id order: never handed out again, waiting
    /// to be destroyed or reset.
    pub fn finished(&self) -> impl Iterator<Item = &ProjectRecord> {
        self.idx
            .finished
            .iter()
            .filter_map(|id| self.projects.get(id))
    }

    /// The project `conversation` holds, if any.
    pub fn holder_of(&self, conversation: &ConversationId) -> Option<Allocation> {
        let id = self.idx.holders.get(conversation)?;
        let rec = self.projects.get(id)?;
        let (_, token) = rec.state.holder()?;
        Some(Allocation {
            project: id.clone(),
            template: rec.template.clone(),
            token,
            fresh: false,
        })
    }

    /// Whether project `id` is reserved by `owner`.
    pub fn is_reserved_by(&self, id: &ProjectId, owner: &OwnerId) -> bool {
        self.projects
            .get(id)
            .is_some_and(|r| matches!(&r.state, ProjectState::Reserved { owner: o } if o == owner))
    }

    /// `owner`'s reserved projects of `template`, in hand-out order.
    pub fn reserved_of(
        &self,
        owner: &OwnerId,
        template: &TemplateName,
    ) -> impl Iterator<Item = &ProjectId> {
        self.reserved_set(owner, template).into_iter().flatten()
    }

    fn reserved_set(
        &self,
        owner: &OwnerId,
        template: &TemplateName,
    ) -> Option<&BTreeSet<ProjectId>> {
        self.idx.reserved.get(owner)?.get(template)
    }

    pub(crate) fn insert_record(&mut self, rec: ProjectRecord) {
        self.idx.add(&rec);
        self.changes.insert((rec.version, rec.id.clone()));
        if let Some(v) = self.tombstones.remove(&rec.id) {
            self.changes.remove(&(v, rec.id.clone()));
        }
        self.projects.insert(rec.id.clone(), rec);
    }

    fn record(&self, id: &ProjectId) -> Result<&ProjectRecord, PoolError> {
        self.projects
            .get(id)
            .ok_or_else(|| PoolError::UnknownProject(id.clone()))
    }

    /// Moves one project to the state `next` computes from its current one.
    fn transition(
        &mut self,
        id: &ProjectId,
        now: Timestamp,
        next: impl FnOnce(&ProjectRecord) -> Result<ProjectState, PoolError>,
    ) -> Result<(), PoolError> {
        let rec = self
            .projects
            .get_mut(id)
            .ok_or_else(|| PoolError::UnknownProject(id.clone()))?;
        let state = next(rec)?;
        self.version += 1;
        self.idx.remove(rec);
        self.changes.remove(&(rec.version, id.clone()));
        rec.state = state;
        rec.version = self.version;
        rec.changed_at = now;
        self.idx.add(rec);
        self.changes.insert((self.version, id.clone()));
        Ok(())
    }

    fn add(
        &mut self,
        id: ProjectId,
        template: TemplateName,
        state: ProjectState,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        if self.projects.contains_key(&id) {
            return Err(PoolError::DuplicateProject(id));
        }
        self.version += 1;
        self.added.insert(id.clone(), self.version);
        let rec = ProjectRecord {
            id,
            template,
            state,
            version: self.version,
            changed_at: now,
        };
        self.insert_record(rec);
        Ok(())
    }

    /// Adds a project that is ready to be reserved.
    pub fn add_available(
        &mut self,
        id: ProjectId,
        template: TemplateName,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.add(id, template, ProjectState::Available, now)
    }

    /// Adds a project whose provisioning has started.
    pub fn add_provisioning(
        &mut self,
        id: ProjectId,
        template: TemplateName,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.add(id, template, ProjectState::Provisioning, now)
    }

    /// Marks a provisioning project ready.
    pub fn finish_provisioning(&mut self, id: &ProjectId, now: Timestamp) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match rec.state {
            ProjectState::Provisioning => Ok(ProjectState::Available),
            _ => Err(invalid(rec, "finish provisioning")),
        })
    }

    /// Marks a provisioning project failed.
    pub fn fail_provisioning(
        &mut self,
        id: &ProjectId,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match rec.state {
            ProjectState::Provisioning => Ok(ProjectState::Failed {
                reason: reason.to_owned(),
            }),
            _ => Err(invalid(rec, "fail provisioning of")),
        })
    }

    /// Reserves up to `n` available projects of `template` for `owner`; returns those
    /// reserved (fewer when fewer are available).
    pub fn reserve(
        &mut self,
        owner: &OwnerId,
        template: &TemplateName,
        n: usize,
        now: Timestamp,
    ) -> Vec<ProjectId> {
        let picked: Vec<ProjectId> = match self.idx.available.get(template) {
            Some(set) => set.iter().take(n).cloned().collect(),
            None => Vec::new(),
        };
        for id in &picked {
            let state = ProjectState::Reserved {
                owner: owner.clone(),
            };
            let moved = self.transition(id, now, |_| Ok(state));
            debug_assert!(moved.is_ok(), "an indexed project exists");
        }
        picked
    }

    /// Reserves one named available project for `owner`.
    pub fn reserve_project(
        &mut self,
        owner: &OwnerId,
        id: &ProjectId,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match rec.state {
            ProjectState::Available => Ok(ProjectState::Reserved {
                owner: owner.clone(),
            }),
            _ => Err(invalid(rec, "reserve")),
        })
    }

    /// Hands one of `owner`'s reserved projects of `template` to `conversation`.
    ///
    /// Idempotent: if `conversation` already holds a project, that project and its token
    /// come back with `fresh == false` and nothing changes. `token` is used only for a
    /// fresh allocation; the lease runs `lease` from `now`.
    pub fn allocate(
        &mut self,
        owner: &OwnerId,
        conversation: &ConversationId,
        template: &TemplateName,
        token: AllocationToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Allocation, PoolError> {
        if let Some(existing) = self.holder_of(conversation) {
            return Ok(existing);
        }
        let id = self
            .reserved_set(owner, template)
            .and_then(|set| set.first().cloned())
            .ok_or_else(|| PoolError::NoReservedProject {
                owner: owner.clone(),
                template: template.clone(),
            })?;
        self.allocate_project(owner, conversation, &id, token, now, lease)
    }

    /// Hands the named project, reserved by `owner`, to `conversation` (the cold path,
    /// after provisioning a project for this caller). Idempotent like [`Pool::allocate`].
    pub fn allocate_project(
        &mut self,
        owner: &OwnerId,
        conversation: &ConversationId,
        id: &ProjectId,
        token: AllocationToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Allocation, PoolError> {
        if let Some(existing) = self.holder_of(conversation) {
            if &existing.project != id {
                let project = existing.project;
                return Err(PoolError::ConversationHoldsAnother {
                    conversation: conversation.clone(),
                    project,
                });
            }
            return Ok(existing);
        }
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Reserved { owner: o } if o == owner => Ok(ProjectState::Allocated {
                owner: owner.clone(),
                conversation: conversation.clone(),
                token,
                lease_until: now.saturating_add(lease),
            }),
            ProjectState::Reserved { .. } => Err(PoolError::NotReservedBy {
                project: id.clone(),
                owner: owner.clone(),
            }),
            _ => Err(invalid(rec, "allocate")),
        })?;
        let template = self.projects[id].template.clone();
        Ok(Allocation {
            project: id.clone(),
            template,
            token,
            fresh: true,
        })
    }

    /// Takes back a fresh allocation whose caller went away before it was told of it:
    /// the project returns to its owner's reserved buffer. Refused unless the project is
    /// still allocated with `token`.
    pub fn return_undelivered(
        &mut self,
        id: &ProjectId,
        token: AllocationToken,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Allocated {
                owner, token: held, ..
            } => {
                check_token(id, *held, token)?;
                Ok(ProjectState::Reserved {
                    owner: owner.clone(),
                })
            }
            _ => Err(invalid(rec, "return")),
        })
    }

    /// Marks an allocated project active; its holder's token is required. Marking an
    /// active project active again with the same token changes nothing.
    pub fn mark_active(
        &mut self,
        id: &ProjectId,
        token: AllocationToken,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        let rec = self.record(id)?;
        if let ProjectState::Active { token: held, .. } = &rec.state {
            return check_token(id, *held, token);
        }
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Allocated {
                owner,
                conversation,
                token: held,
                ..
            } => {
                check_token(id, *held, token)?;
                Ok(ProjectState::Active {
                    owner: owner.clone(),
                    conversation: conversation.clone(),
                    token,
                })
            }
            _ => Err(invalid(rec, "mark active")),
        })
    }

    /// Archives a held project; its holder's token is required. Archiving again with the
    /// same token changes nothing.
    pub fn archive(
        &mut self,
        id: &ProjectId,
        token: AllocationToken,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        let rec = self.record(id)?;
        if let ProjectState::Archived {
            token: Some(held), ..
        } = &rec.state
        {
            return check_token(id, *held, token);
        }
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Allocated {
                conversation,
                token: held,
                ..
            }
            | ProjectState::Active {
                conversation,
                token: held,
                ..
            } => {
                check_token(id, *held, token)?;
                Ok(ProjectState::Archived {
                    conversation: Some(conversation.clone()),
                    token: Some(token),
                    reason: ArchiveReason::Released,
                })
            }
            _ => Err(invalid(rec, "archive")),
        })
    }

    /// Allocations whose lease ran out by `now` without being marked active, oldest first.
    pub fn expired_allocations(&self, now: Timestamp) -> Vec<ProjectId> {
        self.idx
            .leases
            .iter()
            .take_while(|(until, _)| *until <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Archives an allocation whose lease ran out; it is never handed out again.
    pub fn reclaim(&mut self, id: &ProjectId, now: Timestamp) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Allocated {
                conversation,
                token,
                lease_until,
                ..
            } if *lease_until <= now => Ok(ProjectState::Archived {
                conversation: Some(conversation.clone()),
                token: Some(*token),
                reason: ArchiveReason::LeaseExpired,
            }),
            _ => Err(invalid(rec, "reclaim")),
        })
    }

    /// Quarantines one project that is not held by a conversation.
    pub fn quarantine(
        &mut self,
        id: &ProjectId,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.transition(id, now, |rec| match &rec.state {
            ProjectState::Allocated { .. }
            | ProjectState::Active { .. }
            | ProjectState::Archived { .. } => Err(invalid(rec, "quarantine")),
            state => Ok(ProjectState::Quarantined {
                former_owner: state.owner().cloned(),
                reason: reason.to_owned(),
            }),
        })
    }

    /// Quarantines everything `owner` reserved and did not hand out, and forgets the
    /// owner. Projects it handed out stay with their conversations. Returns those
    /// quarantined.
    pub fn quarantine_owner(
        &mut self,
        owner: &OwnerId,
        reason: &str,
        now: Timestamp,
    ) -> Vec<ProjectId> {
        let ids = self.reserved_by(owner);
        for id in &ids {
            let moved = self.quarantine(id, reason, now);
            debug_assert!(moved.is_ok(), "an indexed reservation exists");
        }
        if self.owners.remove(owner).is_some() {
            self.version += 1;
        }
        ids
    }

    /// Returns everything `owner` reserved to the available set and forgets the owner
    /// (a clean shutdown). Returns the projects released.
    pub fn release_owner(&mut self, owner: &OwnerId, now: Timestamp) -> Vec<ProjectId> {
        let ids = self.reserved_by(owner);
        for id in &ids {
            let moved = self.transition(id, now, |_| Ok(ProjectState::Available));
            debug_assert!(moved.is_ok(), "an indexed reservation exists");
        }
        if self.owners.remove(owner).is_some() {
            self.version += 1;
        }
        ids
    }

    fn reserved_by(&self, owner: &OwnerId) -> Vec<ProjectId> {
        let Some(by_template) = self.idx.reserved.get(owner) else {
            return Vec::new();
        };
        let mut ids: Vec<ProjectId> = by_template.values().flatten().cloned().collect();
        ids.sort();
        ids
    }

    /// Removes a project in a final state (archived, quarantined or failed) once it has
    /// been destroyed.
    pub fn remove(&mut self, id: &ProjectId) -> Result<ProjectRecord, PoolError> {
        let rec = self.record(id)?;
        let terminal = matches!(
            rec.state.kind(),
            StateKind::Archived | StateKind::Quarantined | StateKind::Failed
        );
        if !terminal {
            return Err(invalid(rec, "remove"));
        }
        let rec = self
            .projects
            .remove(id)
            .ok_or_else(|| PoolError::UnknownProject(id.clone()))?;
        self.version += 1;
        self.idx.remove(&rec);
        self.changes.remove(&(rec.version, id.clone()));
        self.changes.insert((self.version, id.clone()));
        self.tombstones.insert(id.clone(), self.version);
        Ok(rec)
    }

    /// Registers `owner` or renews its lease.
    pub fn renew_owner(&mut self, owner: &OwnerId, lease_until: Timestamp) {
        let incarnation = self.owners.get(owner).map_or(0, |l| l.incarnation);
        self.register_owner(owner, lease_until, incarnation);
    }

    /// Registers one run of `owner`, with the lease until `lease_until`; `incarnation`
    /// tells this run apart from any earlier run under the same owner id.
    pub fn register_owner(&mut self, owner: &OwnerId, lease_until: Timestamp, incarnation: u64) {
        self.version += 1;
        let lease = OwnerLease {
            lease_until,
            version: self.version,
            incarnation,
        };
        self.owners.insert(owner.clone(), lease);
    }

    /// Raises the version without changing any record, so that a save of part of the
    /// changes is told apart from the next one.
    pub fn bump_version(&mut self) {
        self.version += 1;
    }

    /// Owners whose lease ran out by `now`.
    pub fn expired_owners(&self, now: Timestamp) -> Vec<OwnerId> {
        self.owners
            .iter()
            .filter(|(_, l)| l.lease_until <= now)
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Records changed after version `since`, and projects removed after it.
    pub fn changes_since(&self, since: u64) -> (Vec<ProjectRecord>, Vec<ProjectId>) {
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (_, id) in self.changes.since(since) {
            match self.projects.get(id) {
                Some(rec) => changed.push(rec.clone()),
                None => removed.push(id.clone()),
            }
        }
        (changed, removed)
    }

    /// How many projects changed after the last version marked saved.
    pub fn unsaved_changes(&self) -> usize {
        self.changes.unsaved()
    }

    /// Records that everything up to `version` is stored; forgets older tombstones.
    pub fn mark_saved(&mut self, version: u64) {
        if version <= self.saved_version {
            return;
        }
        self.saved_version = version;
        self.changes.set_saved(version);
        self.added.retain(|_, v| *v > version);
        let old: Vec<(u64, ProjectId)> = self
            .tombstones
            .iter()
            .filter(|(_, v)| **v <= version)
            .map(|(id, v)| (*v, id.clone()))
            .collect();
        for (v, id) in old {
            self.tombstones.remove(&id);
            self.changes.remove(&(v, id));
        }
    }

    /// Checks that every index agrees with the records, that no conversation holds two
    /// projects, and that no record is newer than the pool. For tests and load-time checks.
    pub fn check_invariants(&self) -> Result<(), String> {
        let rebuilt = Indexes::build(self.projects.values());
        if rebuilt.normalized() != self.idx.normalized() {
            return Err("indexes disagree with the records".into());
        }
        let held = self
            .projects
            .values()
            .filter(|r| r.state.holder().is_some())
            .count();
        if held != rebuilt.holders.len() {
            return Err(format!(
                "{held} held projects but {} holders",
                rebuilt.holders.len()
            ));
        }
        if let Some(r) = self.projects.values().find(|r| r.version > self.version) {
            return Err(format!(
                "project {} has version {} above the pool's {}",
                r.id, r.version, self.version
            ));
        }
        let logged = self.changes.len();
        if logged != self.projects.len() + self.tombstones.len() {
            return Err(format!(
                "change log has {logged} entries for {} records",
                self.projects.len()
            ));
        }
        Ok(())
    }
}

/// The smallest project id (`-` sorts before every other allowed character), as a range
/// bound.
pub(crate) fn first_id() -> ProjectId {
    ProjectId::new("-").unwrap_or_else(|_| unreachable!("\"-\" is a valid id"))
}

fn invalid(rec: &ProjectRecord, operation: &'static str) -> PoolError {
    PoolError::InvalidTransition {
        project: rec.id.clone(),
        state: rec.state.kind(),
        operation,
    }
}

fn check_token(
    id: &ProjectId,
    held: AllocationToken,
    given: AllocationToken,
) -> Result<(), PoolError> {
    if held == given {
        Ok(())
    } else {
        Err(PoolError::TokenMismatch {
            project: id.clone(),
        })
    }
}
