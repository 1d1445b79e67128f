//! Secondary indexes over the project records, kept in step by [`Indexes::add`] and
//! [`Indexes::remove`] around every state change, so every operation is O(log n).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ids::{ConversationId, OwnerId, ProjectId, TemplateName};
use crate::record::{ProjectRecord, ProjectState, StateCounts, Timestamp};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Indexes {
    pub(crate) available: HashMap<TemplateName, BTreeSet<ProjectId>>,
    pub(crate) reserved: HashMap<OwnerId, HashMap<TemplateName, BTreeSet<ProjectId>>>,
    pub(crate) holders: HashMap<ConversationId, ProjectId>,
    pub(crate) leases: BTreeSet<(Timestamp, ProjectId)>,
    pub(crate) counts: BTreeMap<TemplateName, StateCounts>,
    /// Archived and quarantined projects: waiting to be recycled.
    pub(crate) finished: BTreeSet<ProjectId>,
}

impl Indexes {
    pub(crate) fn add(&mut self, rec: &ProjectRecord) {
        *self
            .counts
            .entry(rec.template.clone())
            .or_default()
            .slot(rec.state.kind()) += 1;
        match &rec.state {
            ProjectState::Available => {
                let set = self.available.entry(rec.template.clone()).or_default();
                set.insert(rec.id.clone());
            }
            ProjectState::Reserved { owner } => {
                let by_template = self.reserved.entry(owner.clone()).or_default();
                let set = by_template.entry(rec.template.clone()).or_default();
                set.insert(rec.id.clone());
            }
            ProjectState::Allocated {
                conversation,
                lease_until,
                ..
            } => {
                self.holders.insert(conversation.clone(), rec.id.clone());
                self.leases.insert((*lease_until, rec.id.clone()));
            }
            ProjectState::Active { conversation, .. } => {
                self.holders.insert(conversation.clone(), rec.id.clone());
            }
            ProjectState::Archived { .. } | ProjectState::Quarantined { .. } => {
                self.finished.insert(rec.id.clone());
            }
            _ => {}
        }
    }

    pub(crate) fn remove(&mut self, rec: &ProjectRecord) {
        if let Some(c) = self.counts.get_mut(&rec.template) {
            let slot = c.slot(rec.state.kind());
            *slot = slot.saturating_sub(1);
        }
        match &rec.state {
            ProjectState::Available => {
                if let Some(set) = self.available.get_mut(&rec.template) {
                    set.remove(&rec.id);
                }
            }
            ProjectState::Reserved { owner } => self.remove_reserved(owner, rec),
            ProjectState::Allocated {
                conversation,
                lease_until,
                ..
            } => {
                self.holders.remove(conversation);
                self.leases.remove(&(*lease_until, rec.id.clone()));
            }
            ProjectState::Active { conversation, .. } => {
                self.holders.remove(conversation);
            }
            ProjectState::Archived { .. } | ProjectState::Quarantined { .. } => {
                self.finished.remove(&rec.id);
            }
            _ => {}
        }
    }

    fn remove_reserved(&mut self, owner: &OwnerId, rec: &ProjectRecord) {
        let Some(by_template) = self.reserved.get_mut(owner) else {
            return;
        };
        if let Some(set) = by_template.get_mut(&rec.template) {
            set.remove(&rec.id);
            if set.is_empty() {
                by_template.remove(&rec.template);
            }
        }
        if by_template.is_empty() {
            self.reserved.remove(owner);
        }
    }

    /// Indexes built from scratch, for consistency checks and loading.
    pub(crate) fn build<'a>(records: impl Iterator<Item = &'a ProjectRecord>) -> Self {
        let mut idx = Self::default();
        for rec in records {
            idx.add(rec);
        }
        idx
    }

    /// The same indexes with empty sets and zero counters dropped, for comparison.
    pub(crate) fn normalized(&self) -> Self {
        let mut n = self.clone();
        n.available.retain(|_, s| !s.is_empty());
        n.counts.retain(|_, c| c.total() > 0);
        n
    }
}
