//! State shared by the manager's handles and its background tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pool_core::{AllocationToken, OwnerId, Pool, ProjectId, TemplateName, Timestamp};
use pool_storage::{Metadata, PoolStore, Revision};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::error;

use crate::cache::MetadataCache;
use crate::clock::Clock;
use crate::config::ManagerConfig;
use crate::error::ManagerError;
use crate::metrics::Metrics;
use crate::provision::{Provisioner, Provisioning};
use crate::waiters::Waiters;

/// How well the manager is keeping its state stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    /// Saves succeed.
    Healthy,
    /// Saves are failing or some changes could not be stored; hand-outs go on.
    Degraded {
        /// The latest reason.
        reason: String,
    },
    /// Another manager took this one's projects; it hands nothing out.
    Halted {
        /// What happened.
        reason: String,
    },
}

/// What the saver publishes after every save: the highest version stored, and whether
/// the saver has stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Durable {
    pub(crate) saved: u64,
    pub(crate) closed: bool,
}

pub(crate) struct State {
    pub(crate) pool: Pool,
    /// The revision of the stored pool, `None` before the first create.
    pub(crate) revision: Option<Revision>,
    /// The pool version the store holds.
    pub(crate) stored_version: u64,
    pub(crate) last_save: Option<Instant>,
    pub(crate) unsaved_since: Option<Instant>,
    /// A caller waits for the next save: skip the gathering delay.
    pub(crate) urgent: bool,
    pub(crate) failing: Option<String>,
    /// Projects whose change could not be stored, with the version of that change.
    pub(crate) poisoned: BTreeMap<ProjectId, u64>,
    pub(crate) halted: Option<String>,
    /// This manager's lease as last stored: past it, other managers may quarantine
    /// its reservations, so it hands nothing out once it gets close.
    pub(crate) stored_lease_until: Timestamp,
    pub(crate) waiters: Waiters,
    pub(crate) provisioning: Provisioning,
    /// Projects being destroyed or reset by the provisioner.
    pub(crate) recycling: HashSet<ProjectId>,
    /// Fresh hand-outs sent to a waiting caller that has not taken them yet. A caller
    /// that gives up returns its project only while it is here: once any request has
    /// been told the conversation holds it, it stays held.
    pub(crate) undelivered: HashSet<ProjectId>,
    /// The metadata documents of projects this manager provisioned and still holds in
    /// reserve. A hand-out takes its project's document from here, so the reply needs
    /// no read; once handed out, a project's metadata is read through the cache.
    pub(crate) reserve_metadata: HashMap<ProjectId, Arc<Metadata>>,
    /// Reserved projects the store has no metadata for: not read again while reserved.
    pub(crate) no_metadata: HashSet<ProjectId>,
    /// A task is reading ahead the metadata of reserved projects.
    pub(crate) reading_ahead: bool,
    /// After a failed read-ahead, the next one waits until then.
    pub(crate) read_ahead_after: Option<Instant>,
}

impl State {
    /// The state of a manager that starts from `pool`, stored at `revision`.
    pub(crate) fn new(pool: Pool, revision: Option<Revision>) -> Self {
        Self {
            stored_version: pool.saved_version(),
            pool,
            revision,
            last_save: None,
            unsaved_since: None,
            urgent: false,
            failing: None,
            poisoned: BTreeMap::new(),
            halted: None,
            stored_lease_until: Timestamp::default(),
            waiters: Waiters::default(),
            provisioning: Provisioning::default(),
            recycling: HashSet::new(),
            undelivered: HashSet::new(),
            reserve_metadata: HashMap::new(),
            no_metadata: HashSet::new(),
            reading_ahead: false,
            read_ahead_after: None,
        }
    }

    pub(crate) fn health(&self) -> Health {
        if let Some(reason) = &self.halted {
            return Health::Halted {
                reason: reason.clone(),
            };
        }
        if let Some(reason) = &self.failing {
            return Health::Degraded {
                reason: reason.clone(),
            };
        }
        if !self.poisoned.is_empty() {
            let reason = format!(
                "{} project change(s) could not be stored",
                self.poisoned.len()
            );
            return Health::Degraded { reason };
        }
        Health::Healthy
    }

    /// Versions made since the store last took a save: non-zero means there is
    /// something to write, if only a lease renewal.
    pub(crate) fn unsaved(&self) -> u64 {
        self.pool
            .version()
            .saturating_sub(self.pool.saved_version())
    }

    /// Whether this manager's stored lease leaves enough margin to hand out: other
    /// managers quarantine its reservations once the lease has run out, and clocks
    /// differ a little between machines.
    pub(crate) fn lease_is_safe(&self, now: Timestamp, lease: Duration) -> bool {
        now.saturating_add(lease / 4) < self.stored_lease_until
    }

    /// Forgets the kept metadata of projects no longer reserved by `owner` (taken by
    /// another manager at a rebase, quarantined, removed), and says whether some of its
    /// reservations have no document at hand. A project handed to a waiting caller that
    /// has not taken it yet keeps its document: the caller takes it with the project.
    /// Cheap when nothing is stale: it only scans when more projects are accounted for
    /// than `owner` has reservations.
    pub(crate) fn check_kept_metadata<'t>(
        &mut self,
        owner: &OwnerId,
        templates: impl IntoIterator<Item = &'t TemplateName>,
    ) -> bool {
        let reserved: usize = templates
            .into_iter()
            .map(|t| self.pool.reserved_count(owner, t))
            .sum();
        if self.reserve_metadata.len() + self.no_metadata.len() > reserved {
            let (pool, undelivered) = (&self.pool, &self.undelivered);
            let ours = |id: &ProjectId| pool.is_reserved_by(id, owner) || undelivered.contains(id);
            self.reserve_metadata.retain(|id, _| ours(id));
            self.no_metadata.retain(|id| ours(id));
        }
        self.reserve_metadata.len() + self.no_metadata.len() < reserved
    }

    /// Takes the kept metadata of a project being handed out.
    pub(crate) fn take_kept_metadata(&mut self, id: &ProjectId) -> Option<Arc<Metadata>> {
        if !self.no_metadata.is_empty() {
            self.no_metadata.remove(id);
        }
        self.reserve_metadata.remove(id)
    }

    /// Projects whose latest change is not stored: what a crash now could lose.
    pub(crate) fn unsaved_changes(&self) -> u64 {
        self.pool.unsaved_changes() as u64
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn PoolStore>,
    pub(crate) config: ManagerConfig,
    pub(crate) owner: OwnerId,
    pub(crate) clock: Clock,
    pub(crate) incremental: bool,
    pub(crate) state: Mutex<State>,
    pub(crate) metrics: Metrics,
    /// Wakes the saver: there is something to save, or it should stop.
    pub(crate) wake: Notify,
    pub(crate) durable: watch::Sender<Durable>,
    /// At most one save in flight, whether the saver or an inline fallback runs it.
    pub(crate) save_lock: tokio::sync::Mutex<()>,
    pub(crate) saver_running: AtomicBool,
    pub(crate) stopping: AtomicBool,
    /// Wakes the maintainer: something changed that it may act on.
    pub(crate) maintain: Notify,
    /// A hand-out happened since the maintainer last looked; the saver wakes it after
    /// its next write, so the hand-out itself does not pay for waking another thread.
    pub(crate) maintenance_due: AtomicBool,
    /// Every background task but the saver: the maintainer, provisions, recycles.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    pub(crate) provisioner: Option<Arc<dyn Provisioner>>,
    pub(crate) cache: Option<MetadataCache>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Notes that `state` changed; wakes the saver if it did.
    ///
    /// Only the first change after a save wakes the saver: it is either gathering or
    /// saving already, and will look again when that write is done. That keeps a
    /// thread wake-up off most hand-outs.
    pub(crate) fn changed(&self, state: &mut State, before: u64) {
        if state.pool.version() != before && state.unsaved_since.is_none() {
            state.unsaved_since = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    /// Waits until everything up to `version` is stored. Asks the saver to skip its
    /// gathering delay, so callers waiting together share the next write.
    pub(crate) async fn wait_saved(&self, version: u64) -> Result<(), ManagerError> {
        let mut rx = self.durable.subscribe();
        if rx.borrow().saved >= version {
            return Ok(());
        }
        self.lock().urgent = true;
        self.wake.notify_one();
        let seen = rx.wait_for(|d| d.saved >= version || d.closed).await;
        match seen.map(|d| *d) {
            Ok(d) if d.saved >= version => Ok(()),
            _ => Err(self.stopped_error()),
        }
    }

    /// Why this manager no longer serves: it was halted, or it is shutting down.
    pub(crate) fn stopped_error(&self) -> ManagerError {
        match &self.lock().halted {
            Some(reason) => ManagerError::Halted {
                reason: reason.clone(),
            },
            None => ManagerError::ShuttingDown,
        }
    }

    /// How long the oldest unsaved change has waited.
    pub(crate) fn unsaved_age(state: &State) -> Duration {
        state.unsaved_since.map(|t| t.elapsed()).unwrap_or_default()
    }
}

impl Shared {
    pub(crate) fn lock_tasks(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `task` as a background task owned by the manager.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.lock_tasks();
        while let Some(done) = tasks.try_join_next() {
            report_task_end(done);
        }
        tasks.spawn(task);
    }

    /// Waits for every background task but the saver to end.
    pub(crate) async fn join_tasks(&self) {
        loop {
            let mut tasks = std::mem::take(&mut *self.lock_tasks());
            if tasks.is_empty() {
                return;
            }
            while let Some(done) = tasks.join_next().await {
                report_task_end(done);
            }
        }
    }

    /// Provisions this manager is running, over all templates.
    pub(crate) fn provisions_in_flight(&self) -> usize {
        self.lock()
            .provisioning
            .templates
            .values()
            .map(|t| t.in_flight)
            .sum()
    }

    /// Hands durably reserved projects to waiting callers, oldest first.
    pub(crate) fn serve_waiters(&self, st: &mut State) {
        let before = st.pool.version();
        for template in st.waiters.templates() {
            loop {
                let saved = st.pool.saved_version();
                let Some(id) = st
                    .pool
                    .first_reserved(&self.owner, &template, saved)
                    .cloned()
                else {
                    break;
                };
                let Some(w) = st.waiters.pop(&template) else {
                    break;
                };
                if let Some(a) = st.pool.holder_of(&w.conversation) {
                    st.undelivered.remove(&a.project);
                    let _ = w.tx.send(a);
                    continue;
                }
                let token = AllocationToken::from_u64(rand::rng().random());
                let (now, lease) = (self.now(), self.config.allocation_lease);
                match st
                    .pool
                    .allocate_project(&self.owner, &w.conversation, &id, token, now, lease)
                {
                    Ok(a) => {
                        let project = a.project.clone();
                        match w.tx.send(a) {
                            Ok(()) => {
                                st.undelivered.insert(project);
                            }
                            Err(a) => {
                                let _ = st.pool.return_undelivered(&a.project, a.token, now);
                            }
                        }
                    }
                    Err(e) => {
                        error!(project_id = %id, error = %e, "could not serve a waiting caller");
                        st.waiters.unpop(&template, w);
                        break;
                    }
                }
            }
        }
        self.changed(st, before);
    }
}

fn report_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!(error = %e, "background task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]

    use super::*;

    #[test]
    fn kept_metadata_is_forgotten_once_its_project_is_no_longer_reserved_here() {
        let (me, other) = (OwnerId::new("me").unwrap(), OwnerId::new("other").unwrap());
        let template = TemplateName::new("default").unwrap();
        let now = Timestamp::from_millis(1);
        let mut pool = Pool::new();
        let ids: Vec<ProjectId> = (0..4)
            .map(|i| ProjectId::new(format!("default-{i}-00000")).unwrap())
            .collect();
        for id in &ids {
            pool.add_available(id.clone(), template.clone(), now)
                .unwrap();
        }
        for id in &ids[..3] {
            pool.reserve_project(&me, id, now).unwrap();
        }
        pool.reserve_project(&other, &ids[3], now).unwrap();
        let mut st = State::new(pool, None);
        for id in &ids {
            let doc = Arc::new(serde_json::json!({"id": id.as_str()}));
            st.reserve_metadata.insert(id.clone(), doc);
        }
        let templates = [template.clone()];
        assert!(!st.check_kept_metadata(&me, &templates), "nothing missing");
        let mut kept: Vec<_> = st.reserve_metadata.keys().cloned().collect();
        kept.sort();
        assert_eq!(
            kept,
            ids[..3].to_vec(),
            "another manager's project is dropped"
        );
        st.pool.quarantine(&ids[0], "a test", now).unwrap();
        assert!(!st.check_kept_metadata(&me, &templates));
        assert_eq!(
            st.reserve_metadata.len(),
            2,
            "a quarantined project is dropped"
        );
        assert!(!st.reserve_metadata.contains_key(&ids[0]));
        let taken = st.take_kept_metadata(&ids[1]).unwrap();
        assert_eq!(taken["id"], ids[1].as_str());
        // Taken for a hand-out while the project is still reserved (as in a test; a
        // hand-out allocates it): one reservation now lacks its document.
        assert!(st.check_kept_metadata(&me, &templates));
    }
}
