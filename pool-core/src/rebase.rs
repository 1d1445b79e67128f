//! Merging this manager's unsaved changes onto a pool another writer stored meanwhile.
//!
//! Several managers share one stored pool. Each changes mostly records it owns, so when a
//! conditional save loses to another writer, the loser reloads and replays its changes on
//! top: a record only this manager changed since the last common version keeps this
//! manager's state; a record both changed keeps the stored state, and a project the store
//! removed stays removed unless this manager added it after the last save. A hand-out is
//! only ever made from a durably reserved project, so a race on a reservation never undoes
//! a hand-out; losing a project this manager had durably reserved or handed out means
//! another manager declared this one dead, and the report says so.

use std::cmp::max;
use std::collections::HashSet;

use crate::ids::{OwnerId, ProjectId};
use crate::pool::Pool;
use crate::record::{ProjectRecord, ProjectState};
use crate::snapshot::{PoolSnapshot, SnapshotError};

/// What a [`Pool::rebase`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebaseReport {
    /// Local changes kept on top of the stored pool.
    pub applied: Vec<ProjectId>,
    /// Local changes dropped because the store changed the same project.
    pub overridden: Vec<ProjectId>,
    /// Projects this owner had durably reserved or handed out that another writer took.
    pub lost: Vec<ProjectId>,
    /// The store no longer lists this owner, although its registration had been stored.
    pub evicted: bool,
}

impl RebaseReport {
    /// Whether another writer took anything of this owner's: it must stop handing out.
    pub fn ownership_lost(&self) -> bool {
        self.evicted || !self.lost.is_empty()
    }
}

impl Pool {
    /// Replaces this pool by `stored` with this pool's unsaved changes replayed on top,
    /// as seen by owner `me`. Afterwards the pool counts as saved at `stored`'s version and
    /// its version is above both, so the next save never goes back.
    pub fn rebase(
        &mut self,
        stored: PoolSnapshot,
        me: &OwnerId,
    ) -> Result<RebaseReport, SnapshotError> {
        let base = self.saved_version;
        let mut merged = Pool::from_snapshot(stored)?;
        merged.version = max(merged.version, self.version);
        let mut report = RebaseReport::default();
        let (changed, removed) = self.changes_since(base);
        for rec in changed {
            let added_here = self.added.contains_key(&rec.id);
            match merged.projects.get(&rec.id) {
                Some(theirs) if theirs.version > base => report.overridden.push(rec.id.clone()),
                None if !added_here => report.overridden.push(rec.id.clone()),
                Some(_) if quarantines_a_live_owner(&rec, &merged, me, base) => {
                    report.overridden.push(rec.id.clone());
                }
                _ => {
                    let id = rec.id.clone();
                    merged.put(demote_double_holding(rec, &merged, me));
                    if added_here {
                        merged.added.insert(id.clone(), merged.version);
                    }
                    report.applied.push(id);
                }
            }
        }
        for id in removed {
            match merged.projects.get(&id) {
                Some(theirs) if theirs.version > base => report.overridden.push(id),
                Some(_) => merged.drop_record(&id),
                None => {}
            }
        }
        self.merge_owners(&mut merged, me, base, &mut report);
        report.lost = self.lost_to(&merged, me, base, &report.applied);
        *self = merged;
        Ok(report)
    }

    fn merge_owners(&self, merged: &mut Pool, me: &OwnerId, base: u64, report: &mut RebaseReport) {
        let mine = self.owners.get(me).map(|l| l.incarnation);
        let theirs = merged.owners.get(me).map(|l| l.incarnation);
        if let (Some(mine), Some(theirs)) = (mine, theirs) {
            if mine != theirs {
                // Another process registered under this owner id: its reservations are
                // not ours, and ours were quarantined when it registered.
                report.evicted = true;
                return;
            }
        }
        for (owner, lease) in &self.owners {
            if lease.version > base {
                merged.renew_owner(owner, lease.lease_until);
            } else if owner == me && !merged.owners.contains_key(me) {
                report.evicted = true;
            }
        }
        let dropped: Vec<OwnerId> = merged
            .owners
            .iter()
            .filter(|(o, l)| l.version <= base && !self.owners.contains_key(*o))
            .map(|(o, _)| o.clone())
            .collect();
        for owner in dropped {
            merged.owners.remove(&owner);
            merged.version += 1;
        }
    }

    /// Projects `me` held durably (reserved and stored, or handed out) that `merged` no
    /// longer shows as `me`'s. A record replayed here (`applied`) was not taken by another
    /// writer, even when the replay quarantined a second hand-out to one conversation.
    fn lost_to(
        &self,
        merged: &Pool,
        me: &OwnerId,
        base: u64,
        applied: &[ProjectId],
    ) -> Vec<ProjectId> {
        let applied: HashSet<&ProjectId> = applied.iter().collect();
        let mut lost: Vec<ProjectId> = self
            .projects
            .values()
            .filter(|rec| rec.state.owner() == Some(me) && !applied.contains(&rec.id))
            .filter(|rec| {
                let fresh_reservation =
                    rec.version > base && matches!(rec.state, ProjectState::Reserved { .. });
                !fresh_reservation
            })
            .filter(|rec| merged.projects.get(&rec.id).map(|m| &m.state) != Some(&rec.state))
            .map(|rec| rec.id.clone())
            .collect();
        lost.sort();
        lost
    }

    /// Inserts or replaces a record, stamping it with a new version.
    fn put(&mut self, mut rec: ProjectRecord) {
        if let Some(old) = self.projects.remove(&rec.id) {
            self.idx.remove(&old);
            self.changes.remove(&(old.version, old.id));
        }
        self.version += 1;
        rec.version = self.version;
        self.insert_record(rec);
    }

    fn drop_record(&mut self, id: &ProjectId) {
        if let Some(old) = self.projects.remove(id) {
            self.idx.remove(&old);
            self.changes.remove(&(old.version, old.id));
            self.version += 1;
            self.changes.insert((self.version, id.clone()));
            self.tombstones.insert(id.clone(), self.version);
        }
    }
}

/// A record handing a project to a conversation that, in the stored pool, already holds
/// another project (it asked two managers at once) is quarantined instead: the
/// conversation keeps the stored project and this one is never handed out again.
fn demote_double_holding(rec: ProjectRecord, merged: &Pool, me: &OwnerId) -> ProjectRecord {
    let Some((conversation, _)) = rec.state.holder() else {
        return rec;
    };
    match merged.idx.holders.get(conversation) {
        Some(other) if other != &rec.id => ProjectRecord {
            state: ProjectState::Quarantined {
                former_owner: Some(me.clone()),
                reason: format!("conversation {conversation} already holds {other}"),
            },
            ..rec
        },
        _ => rec,
    }
}

/// Whether `rec` is this manager's quarantine of another owner's project although that
/// owner renewed its lease after `base`: the quarantine was decided on a stale view (the
/// owner was only slow, or this manager was paused) and is void.
fn quarantines_a_live_owner(rec: &ProjectRecord, merged: &Pool, me: &OwnerId, base: u64) -> bool {
    let ProjectState::Quarantined {
        former_owner: Some(owner),
        ..
    } = &rec.state
    else {
        return false;
    };
    owner != me && merged.owners.get(owner).is_some_and(|l| l.version > base)
}
