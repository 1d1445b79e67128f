//! The saver: one owned task that writes the pool behind the hand-outs.
//!
//! Everything changed since the last save goes into the next write, so a burst of
//! hand-outs costs one write; at most one save is in flight, and each carries a higher
//! version than the last, so an older state can never overwrite a newer one. Writes are
//! conditional on the revision last stored: a lost race reloads the stored pool and
//! replays this manager's changes on top ([`pool_core::Pool::rebase`]). Temporary
//! errors back off and retry; a permanent error is narrowed down to the projects whose
//! changes the store refuses, which are set aside, logged and counted, so the rest is
//! still stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pool_core::ProjectId;
use pool_storage::{PoolWrite, Precondition, Revision, StoreError};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::metrics::{add_duration, bump};
use crate::shared::{Durable, Shared, State};

/// Where a save runs, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaveMode {
    Background,
    Inline,
}

impl SaveMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Inline => "inline",
        }
    }
}

/// One write ready to send.
struct Job {
    write: PoolWrite,
    precondition: Precondition,
    /// The pool version this write makes durable once stored.
    version: u64,
    /// Projects the write carries.
    ids: Vec<ProjectId>,
    project_count: usize,
}

enum Failure {
    Conflict,
    Temporary(StoreError),
    Permanent(StoreError),
}

/// Marks the saver stopped when its task ends, however it ends.
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.saver_running.store(false, Ordering::Release);
    }
}

/// The saver task's body: save whenever there is something unsaved, until asked to stop
/// with nothing left to save.
pub(crate) async fn run(shared: Arc<Shared>) {
    let _guard = RunningGuard(shared.clone());
    loop {
        let (pending, urgent) = {
            let mut st = shared.lock();
            let pending = st.unsaved() > 0;
            if !pending {
                // The next change must wake this task (see `Shared::changed`).
                st.unsaved_since = None;
            }
            (pending, st.urgent)
        };
        if shared.lock().halted.is_some() {
            return;
        }
        if !pending {
            if shared.is_stopping() {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        if urgent {
            let_released_callers_join().await;
        } else if !shared.is_stopping() {
            gather(&shared).await;
        }
        save_all(&shared, SaveMode::Background).await;
    }
}

/// Callers a write just released for their next durable operation are runnable but
/// may not have run yet; a few yields let them make their change and join the next
/// write, so that group commit takes the whole group instead of half of it.
async fn let_released_callers_join() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Waits the gathering delay, cut short when a caller starts waiting for durability.
async fn gather(shared: &Shared) {
    let deadline = Instant::now() + shared.config.save_delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            () = shared.wake.notified() => {
                if shared.lock().urgent || shared.is_stopping() {
                    return;
                }
            }
        }
    }
}

/// Saves until nothing is unsaved (or only changes the store refuses are left).
pub(crate) async fn save_all(shared: &Shared, mode: SaveMode) {
    let _one_at_a_time = shared.save_lock.lock().await;
    let mut attempt = 0u32;
    while let Some(job) = build_job(shared, None) {
        match send(shared, &job).await {
            Ok((rev, took)) => {
                attempt = 0;
                commit(shared, &job, rev, took, mode);
                if mode == SaveMode::Background && !shared.is_stopping() {
                    // Back to gathering: under steady load the next write then carries
                    // a whole delay's worth of changes instead of whatever came in
                    // during this one.
                    return;
                }
            }
            Err(Failure::Conflict) => reload(shared, &mut attempt).await,
            Err(Failure::Temporary(e)) => back_off(shared, &mut attempt, &e).await,
            Err(Failure::Permanent(_)) if shared.incremental && job.ids.len() > 1 => {
                isolate(shared, job, mode).await;
            }
            Err(Failure::Permanent(e)) => {
                set_aside(shared, &job, &e);
                if !shared.incremental || job.ids.is_empty() {
                    back_off(shared, &mut attempt, &e).await;
                }
            }
        }
        if shared.lock().halted.is_some() {
            return;
        }
    }
}

/// Builds the next write: everything unsaved, or only `subset` of it.
fn build_job(shared: &Shared, subset: Option<&BTreeSet<ProjectId>>) -> Option<Job> {
    let mut st = shared.lock();
    if st.unsaved() == 0 || st.halted.is_some() {
        return None;
    }
    if subset.is_some() {
        st.pool.bump_version();
    }
    st.urgent = false;
    let version = st.pool.version();
    let precondition = st
        .revision
        .clone()
        .map_or(Precondition::CreateOnly, Precondition::Matches);
    let (write, ids) = if shared.incremental {
        let mut changes = st.pool.unsaved();
        changes.base_version = st.stored_version;
        let keep = |id: &ProjectId, v: u64| {
            subset.is_none_or(|s| s.contains(id)) && st.poisoned.get(id) != Some(&v)
        };
        changes.changed.retain(|r| keep(&r.id, r.version));
        changes
            .removed
            .retain(|id| subset.is_none_or(|s| s.contains(id)));
        let ids = changes
            .changed
            .iter()
            .map(|r| r.id.clone())
            .chain(changes.removed.clone());
        let ids = ids.collect();
        (PoolWrite::Changes(changes), ids)
    } else {
        let (changed, removed) = st.pool.changes_since(st.pool.saved_version());
        let ids = changed.into_iter().map(|r| r.id).chain(removed).collect();
        (PoolWrite::Full(st.pool.snapshot()), ids)
    };
    let project_count = st.pool.len();
    Some(Job {
        write,
        precondition,
        version,
        ids,
        project_count,
    })
}

async fn send(shared: &Shared, job: &Job) -> Result<(Revision, Duration), Failure> {
    let started = Instant::now();
    let timeout = shared.config.request_timeout;
    let result = tokio::time::timeout(timeout, shared.store.save(&job.write, &job.precondition));
    match result.await {
        Ok(Ok(rev)) => {
            let took = started.elapsed();
            add_duration(&shared.metrics.save_micros, took);
            Ok((rev, took))
        }
        Ok(Err(e)) if e.is_conflict() => Err(Failure::Conflict),
        Ok(Err(e)) if e.is_temporary() => Err(Failure::Temporary(e)),
        Ok(Err(e)) => Err(Failure::Permanent(e)),
        Err(_) => {
            let kind = pool_storage::ErrorKind::Timeout;
            let msg = format!("save did not answer within {timeout:?}");
            Err(Failure::Temporary(StoreError::new(kind, "runtime", msg)))
        }
    }
}

fn commit(shared: &Shared, job: &Job, rev: Revision, took: Duration, mode: SaveMode) {
    let saved = {
        let mut st = shared.lock();
        let st = &mut *st;
        st.revision = Some(rev);
        st.stored_version = job.write.pool_version();
        st.pool.mark_saved(job.version);
        st.failing = None;
        st.last_save = Some(Instant::now());
        st.unsaved_since = (st.unsaved() > 0).then(Instant::now);
        note_stored_lease(shared, st);
        shared.serve_waiters(st);
        st.pool.saved_version()
    };
    bump(&shared.metrics.saves);
    if mode == SaveMode::Inline {
        bump(&shared.metrics.inline_saves);
    }
    info!(
        project_count = job.project_count,
        changed = job.ids.len(),
        version = job.version,
        mode = mode.as_str(),
        duration_ms = took.as_secs_f64() * 1e3,
        "pool state saved"
    );
    shared.durable.send_modify(|d| d.saved = d.saved.max(saved));
    if shared.maintenance_due.swap(false, Ordering::AcqRel) {
        shared.maintain.notify_one();
    }
}

/// Records this manager's lease as stored, if the stored state has it.
fn note_stored_lease(shared: &Shared, st: &mut State) {
    let saved = st.pool.saved_version();
    if let Some(lease) = st.pool.owners().get(&shared.owner) {
        if lease.version <= saved {
            st.stored_lease_until = st.stored_lease_until.max(lease.lease_until);
        }
    }
}

/// After a lost race: load what the other writer stored and replay this manager's
/// changes on top.
async fn reload(shared: &Shared, attempt: &mut u32) {
    bump(&shared.metrics.conflicts);
    let loaded = match shared.store.load().await {
        Ok(Some(v)) => v,
        Ok(None) => {
            let e = StoreError::new(pool_storage::ErrorKind::Other, "runtime", "pool vanished");
            return back_off(shared, attempt, &e).await;
        }
        Err(e) => return back_off(shared, attempt, &e).await,
    };
    let mut st = shared.lock();
    let stored_version = loaded.value.pool_version;
    match st.pool.rebase(loaded.value, &shared.owner) {
        Ok(report) => {
            st.revision = Some(loaded.revision);
            st.stored_version = stored_version;
            note_stored_lease(shared, &mut st);
            info!(
                stored_version,
                applied = report.applied.len(),
                overridden = report.overridden.len(),
                "save lost a race; reloaded and replayed this manager's changes"
            );
            if report.ownership_lost() {
                let reason = format!(
                    "another manager took {} of this manager's projects (evicted: {})",
                    report.lost.len(),
                    report.evicted
                );
                error!(lost = ?report.lost, evicted = report.evicted, "{reason}");
                st.halted = Some(reason);
                // Nothing will be saved or handed out any more: answer everyone waiting.
                st.waiters.clear();
                shared.durable.send_modify(|d| d.closed = true);
            }
        }
        Err(e) => {
            error!(error = %e, "stored pool is unusable; cannot replay changes");
            st.failing = Some(format!("stored pool is unusable: {e}"));
        }
    }
}

async fn back_off(shared: &Shared, attempt: &mut u32, e: &StoreError) {
    *attempt += 1;
    bump(&shared.metrics.save_retries);
    let delay = shared
        .config
        .retry
        .jittered(*attempt, rand::rng().random::<f64>());
    shared.lock().failing = Some(e.to_string());
    warn!(attempt = *attempt, delay_ms = delay.as_millis() as u64, error = %e, "pool save failed; retrying");
    tokio::time::sleep(delay).await;
}

/// Records that the store refuses the changes of `job`'s projects; they are left out of
/// later writes until they change again.
fn set_aside(shared: &Shared, job: &Job, e: &StoreError) {
    bump(&shared.metrics.save_failures);
    let mut st = shared.lock();
    for id in &job.ids {
        let version = st.pool.get(id).map_or(0, |r| r.version);
        st.poisoned.insert(id.clone(), version);
    }
    st.failing = Some(e.to_string());
    error!(project_ids = ?job.ids, error = %e, "pool save failed permanently; these changes are set aside");
}

/// Finds which projects' changes the store refuses by saving halves of the refused
/// write until each refusal is down to one project.
async fn isolate(shared: &Shared, job: Job, mode: SaveMode) {
    debug!(
        projects = job.ids.len(),
        "narrowing down a permanently failing save"
    );
    let covered = job.version;
    let mut stack: Vec<Vec<ProjectId>> = vec![job.ids];
    let mut attempt = 0u32;
    while let Some(ids) = stack.pop() {
        let subset: BTreeSet<ProjectId> = ids.iter().cloned().collect();
        let Some(part) = build_job(shared, Some(&subset)) else {
            return;
        };
        match send(shared, &part).await {
            Ok((rev, took)) => commit_part(shared, &part, rev, took, mode),
            Err(Failure::Conflict) => return reload(shared, &mut attempt).await,
            Err(Failure::Temporary(e)) => {
                back_off(shared, &mut attempt, &e).await;
                stack.push(ids);
            }
            Err(Failure::Permanent(e)) if ids.len() == 1 => set_aside(shared, &part, &e),
            Err(Failure::Permanent(_)) => {
                let (a, b) = ids.split_at(ids.len() / 2);
                stack.push(b.to_vec());
                stack.push(a.to_vec());
            }
        }
    }
    let mut st = shared.lock();
    // Every change up to the refused write's version is now stored or set aside.
    st.pool.mark_saved(covered);
    let saved = st.pool.saved_version();
    drop(st);
    shared.durable.send_modify(|d| d.saved = d.saved.max(saved));
}

/// Records a partial save: the store moved on, but not every change is in it.
fn commit_part(shared: &Shared, part: &Job, rev: Revision, took: Duration, mode: SaveMode) {
    let mut st = shared.lock();
    st.revision = Some(rev);
    st.stored_version = part.write.pool_version();
    st.last_save = Some(Instant::now());
    drop(st);
    bump(&shared.metrics.saves);
    info!(
        project_count = part.project_count,
        changed = part.ids.len(),
        version = part.version,
        mode = mode.as_str(),
        duration_ms = took.as_secs_f64() * 1e3,
        "pool state saved (part of a refused save)"
    );
}

/// Stops publishing: waiters for durability that can no longer be served get an error.
pub(crate) fn close(shared: &Shared) {
    shared
        .durable
        .send_modify(|d: &mut Durable| d.closed = true);
}
