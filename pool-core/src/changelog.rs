//! The log of which records changed at which version, with an O(1) count of the changes
//! above the saved version (read on every hand-out for backpressure).

use std::collections::BTreeSet;
use std::ops::RangeFrom;

use crate::ids::ProjectId;
use crate::pool::first_id;

#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeLog {
    entries: BTreeSet<(u64, ProjectId)>,
    saved: u64,
    unsaved: usize,
}

impl ChangeLog {
    pub(crate) fn insert(&mut self, entry: (u64, ProjectId)) {
        let above = entry.0 > self.saved;
        if self.entries.insert(entry) && above {
            self.unsaved += 1;
        }
    }

    pub(crate) fn remove(&mut self, entry: &(u64, ProjectId)) {
        if self.entries.remove(entry) && entry.0 > self.saved {
            self.unsaved -= 1;
        }
    }

    /// Entries changed after version `since`, oldest first.
    pub(crate) fn since(&self, since: u64) -> impl Iterator<Item = &(u64, ProjectId)> {
        let from: RangeFrom<(u64, ProjectId)> = (since + 1, first_id())..;
        self.entries.range(from)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records and removals changed after the saved version.
    pub(crate) fn unsaved(&self) -> usize {
        self.unsaved
    }

    pub(crate) fn set_saved(&mut self, saved: u64) {
        self.saved = saved;
        self.unsaved = self.since(saved).count();
    }
}
