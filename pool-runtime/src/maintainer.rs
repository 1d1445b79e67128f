//! The maintainer: one owned task that keeps the pool warm and recovered.
//!
//! On every tick (and whenever a hand-out, a waiter or a finished provision wakes it) it
//! renews this manager's lease, quarantines what dead managers reserved, reclaims
//! allocations whose lease ran out, reserves projects ahead of demand, serves waiting
//! callers, starts provisions under the replenish policy, and recycles projects that will
//! never be handed out again.

use std::sync::Arc;

use pool_core::{ProjectId, ProjectState, SupplyCounts, TemplateName, Timestamp};
use pool_storage::{ErrorKind, Metadata, StoreError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::ManagerError;
use crate::metrics::bump;
use crate::provision::{Circuit, Provisioned};
use crate::shared::{Shared, State};

/// The maintainer task's body.
pub(crate) async fn run(shared: Arc<Shared>) {
    let heartbeat = heartbeat_interval(&shared.config);
    let mut next_heartbeat = Instant::now() + heartbeat;
    loop {
        if shared.is_stopping() {
            return;
        }
        tick(&shared, &mut next_heartbeat, heartbeat);
        tokio::select! {
            () = shared.maintain.notified() => {}
            () = tokio::time::sleep(shared.config.maintain_interval.min(heartbeat)) => {}
        }
    }
}

/// The lease is renewed at least three times per lease, so that a save or two may fail
/// without the lease running short.
fn heartbeat_interval(config: &crate::config::ManagerConfig) -> std::time::Duration {
    config.heartbeat_interval.min(config.owner_lease / 3)
}

fn tick(shared: &Arc<Shared>, next_heartbeat: &mut Instant, heartbeat: std::time::Duration) {
    let mut guard = shared.lock();
    let st = &mut *guard;
    if st.halted.is_some() {
        return;
    }
    let before = st.pool.version();
    let now = shared.now();
    if Instant::now() >= *next_heartbeat {
        let until = now.saturating_add(shared.config.owner_lease);
        st.pool.renew_owner(&shared.owner, until);
        *next_heartbeat = Instant::now() + heartbeat;
    }
    quarantine_dead_owners(shared, st, now);
    reclaim_expired(shared, st, now);
    reserve_ahead(shared, st, now);
    let templates = shared.config.templates.iter().map(|t| &t.name);
    let read_ahead = st.check_kept_metadata(&shared.owner, templates)
        && shared.cache.is_some()
        && !st.reading_ahead
        && st.read_ahead_after.is_none_or(|at| at <= Instant::now())
        && !shared.is_stopping();
    st.reading_ahead |= read_ahead;
    shared.serve_waiters(st);
    let starts = plan_provisions(shared, st);
    let recycles = plan_recycles(shared, st);
    shared.changed(st, before);
    drop(guard);
    for template in starts {
        shared.spawn(provision(shared.clone(), template, None));
    }
    for (id, template) in recycles {
        shared.spawn(recycle(shared.clone(), id, template));
    }
    if read_ahead {
        shared.spawn(read_metadata_ahead(shared.clone()));
    }
}

/// Reads at once this many metadata documents, at most.
const READ_AHEAD_CONCURRENCY: usize = 16;

/// How long a failed read-ahead waits before the next.
const READ_AHEAD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the metadata of this manager's reservations that have none at hand (projects
/// reserved after a restart, or provisioned elsewhere), so that their hand-outs need no
/// read either. A project handed out meanwhile is skipped; one whose document is
/// missing is noted and not read again while it stays reserved.
async fn read_metadata_ahead(shared: Arc<Shared>) {
    let Some(store) = shared.cache.as_ref().map(|c| c.store().clone()) else {
        return;
    };
    let wanted: Vec<ProjectId> = {
        let st = shared.lock();
        shared
            .config
            .templates
            .iter()
            .flat_map(|t| st.pool.reserved_of(&shared.owner, &t.name))
            .filter(|id| !st.reserve_metadata.contains_key(*id) && !st.no_metadata.contains(*id))
            .cloned()
            .collect()
    };
    let started = Instant::now();
    let (mut read, mut missing) = (0usize, 0usize);
    let mut failure = None;
    let mut reads = tokio::task::JoinSet::new();
    let mut next = wanted.into_iter();
    let limit = shared.config.request_timeout;
    loop {
        while reads.len() < READ_AHEAD_CONCURRENCY && failure.is_none() && !shared.is_stopping() {
            let Some(id) = next.next() else { break };
            let store = store.clone();
            reads.spawn(async move {
                // A read that never answers would otherwise hold this task, and with it
                // every later read-ahead, for good.
                let got = tokio::time::timeout(limit, store.get_metadata(&id)).await;
                let got = got.unwrap_or_else(|_| {
                    let msg = format!("no answer within {limit:?}");
                    Err(StoreError::new(ErrorKind::Timeout, "runtime", msg))
                });
                (id, got)
            });
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        let Ok((id, got)) = done else { continue };
        let mut st = shared.lock();
        let ours = st.pool.is_reserved_by(&id, &shared.owner);
        match got {
            Ok(Some(v)) if ours => {
                st.reserve_metadata.insert(id, Arc::new(v.value));
                read += 1;
            }
            Ok(None) if ours => {
                st.no_metadata.insert(id);
                missing += 1;
            }
            Ok(_) => {}
            Err(e) => failure = Some(format!("reading metadata of {id}: {e}")),
        }
    }
    {
        let mut st = shared.lock();
        st.reading_ahead = false;
        st.read_ahead_after = failure.as_ref().map(|_| Instant::now() + READ_AHEAD_RETRY);
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match failure {
        Some(error) => {
            warn!(read, missing, %error, "reading reserved projects' metadata ahead stopped; will retry")
        }
        None if read + missing > 0 => {
            info!(
                read,
                missing,
                elapsed_ms,
                "metadata of reserved projects read from storage ahead of their hand-out"
            )
        }
        None => {}
    }
}

fn quarantine_dead_owners(shared: &Shared, st: &mut State, now: Timestamp) {
    for owner in st.pool.expired_owners(now) {
        if owner == shared.owner {
            continue;
        }
        let ids = st
            .pool
            .quarantine_owner(&owner, "its manager's lease ran out", now);
        for _ in &ids {
            bump(&shared.metrics.quarantined);
        }
        warn!(owner = %owner, project_ids = ?ids, "manager presumed dead; quarantined its unused reservations");
    }
}

fn reclaim_expired(shared: &Shared, st: &mut State, now: Timestamp) {
    for id in st.pool.expired_allocations(now) {
        let owner = st.pool.get(&id).and_then(|r| r.state.owner().cloned());
        let ours = owner
            .as_ref()
            .is_none_or(|o| o == &shared.owner || !st.pool.owners().contains_key(o));
        if ours && st.pool.reclaim(&id, now).is_ok() {
            bump(&shared.metrics.reclaimed);
            info!(project_id = %id, "allocation lease ran out without activity; reclaimed");
        }
    }
}

fn reserve_ahead(shared: &Shared, st: &mut State, now: Timestamp) {
    for t in &shared.config.templates {
        let mine = st.pool.reserved_count(&shared.owner, &t.name);
        if mine < t.reserve {
            st.pool
                .reserve(&shared.owner, &t.name, t.reserve - mine, now);
        }
    }
}

/// Decides how many provisions to start per template; counts them as in flight.
///
/// Supply is seen from this manager: unclaimed projects, its own reservations and its
/// own provisions. Each manager sharing a store thus keeps its own target ready, instead
/// of one manager's buffer starving the others.
fn plan_provisions(shared: &Shared, st: &mut State) -> Vec<TemplateName> {
    let mut starts = Vec::new();
    if shared.provisioner.is_none() || shared.is_stopping() {
        return starts;
    }
    for t in &shared.config.templates {
        let counts = st.pool.counts(&t.name);
        let mine = st.pool.reserved_count(&shared.owner, &t.name);
        let waiting = st.waiters.len(&t.name);
        let tp = st.provisioning.of(&t.name);
        if tp.next_attempt.is_some_and(|at| at > Instant::now()) {
            continue;
        }
        let supply = SupplyCounts {
            available: counts.available,
            reserved: mine,
            in_flight: tp.in_flight,
            waiting,
        };
        let mut n = t.policy.provisions_to_start(supply);
        if tp.circuit == Circuit::Open {
            n = n.min(usize::from(tp.in_flight == 0));
        }
        tp.in_flight += n;
        tp.started += n as u64;
        for _ in 0..n {
            bump(&shared.metrics.provisions_started);
            starts.push(t.name.clone());
        }
    }
    starts
}

fn plan_recycles(shared: &Shared, st: &mut State) -> Vec<(ProjectId, TemplateName)> {
    if shared.provisioner.is_none() || shared.is_stopping() {
        return Vec::new();
    }
    let done: Vec<(ProjectId, TemplateName)> = st
        .pool
        .finished()
        .filter(|r| r.version <= st.pool.saved_version() && !st.recycling.contains(&r.id))
        .map(|r| (r.id.clone(), r.template.clone()))
        .collect();
    for (id, _) in &done {
        st.recycling.insert(id.clone());
    }
    done
}

/// Provisions one project of `template`; on success it joins the pool reserved by this
/// manager. With `caller`, its id is sent there (the caller provisioned cold).
pub(crate) async fn provision(
    shared: Arc<Shared>,
    template: TemplateName,
    caller: Option<oneshot::Sender<Result<ProjectId, String>>>,
) {
    let outcome = run_provisioner(&shared, &template).await;
    let reply = match outcome {
        Ok((id, metadata)) => joined(&shared, &template, id, metadata).map_err(|e| e.to_string()),
        Err(reason) => Err(failed(&shared, &template, reason)),
    };
    if let Some(tx) = caller {
        let _ = tx.send(reply);
    }
    shared.maintain.notify_one();
}

/// Runs the provisioner and stores the new project's metadata; returns the project and
/// its metadata document if a metadata store keeps it.
async fn run_provisioner(
    shared: &Shared,
    template: &TemplateName,
) -> Result<(ProjectId, Option<Arc<Metadata>>), String> {
    let Some(p) = shared.provisioner.clone() else {
        return Err("no provisioner configured".into());
    };
    let limit = shared.config.provision_timeout;
    let provisioned = match tokio::time::timeout(limit, p.provision(template)).await {
        Ok(Ok(provisioned)) => provisioned,
        Ok(Err(e)) => return Err(e.0),
        Err(_) => return Err(format!("provisioning took longer than {limit:?}")),
    };
    let Provisioned { id, metadata } = provisioned;
    let Some(cache) = &shared.cache else {
        return Ok((id, None));
    };
    match cache.store_new(&id, metadata).await {
        Ok(stored) => Ok((id, Some(stored))),
        Err(e) => Err(format!("storing metadata of {id} failed: {e}")),
    }
}

/// Adds a provisioned project to the pool, reserved by this manager.
fn joined(
    shared: &Shared,
    template: &TemplateName,
    id: ProjectId,
    metadata: Option<Arc<Metadata>>,
) -> Result<ProjectId, ManagerError> {
    let mut guard = shared.lock();
    let st = &mut *guard;
    let tp = st.provisioning.of(template);
    tp.in_flight = tp.in_flight.saturating_sub(1);
    tp.failures_in_row = 0;
    tp.next_attempt = None;
    if tp.circuit == Circuit::Open {
        info!(template = %template, "provisioning succeeded again; circuit closed");
    }
    tp.circuit = Circuit::Closed;
    let before = st.pool.version();
    let now = shared.now();
    st.pool.add_available(id.clone(), template.clone(), now)?;
    st.pool.reserve_project(&shared.owner, &id, now)?;
    if let Some(m) = metadata {
        st.reserve_metadata.insert(id.clone(), m);
    }
    shared.changed(st, before);
    debug!(project_id = %id, template = %template, "project provisioned");
    Ok(id)
}

/// Books a failed provision: backoff, and the circuit after too many in a row.
fn failed(shared: &Shared, template: &TemplateName, reason: String) -> String {
    bump(&shared.metrics.provisions_failed);
    let mut st = shared.lock();
    let tp = st.provisioning.of(template);
    tp.in_flight = tp.in_flight.saturating_sub(1);
    tp.failures_in_row += 1;
    let failures = tp.failures_in_row;
    let mut pause = shared.config.provision_retry.delay(failures);
    if failures >= shared.config.circuit_threshold {
        if tp.circuit == Circuit::Closed {
            warn!(template = %template, failures, "provisioning keeps failing; circuit opened");
        }
        tp.circuit = Circuit::Open;
        pause = shared.config.circuit_open_for;
    }
    tp.next_attempt = Some(Instant::now() + pause);
    warn!(template = %template, failures, retry_in_ms = pause.as_millis() as u64, reason = %reason, "provisioning failed");
    reason
}

/// Provisions a project for one caller (the cold path) and returns its id once it has
/// joined the pool, reserved by this manager.
pub(crate) async fn provision_for_caller(
    shared: &Arc<Shared>,
    template: &TemplateName,
) -> Result<ProjectId, ManagerError> {
    if shared.provisioner.is_none() {
        return Err(ManagerError::PoolEmpty {
            template: template.clone(),
        });
    }
    shared.lock().provisioning.of(template).in_flight += 1;
    bump(&shared.metrics.provisions_started);
    let (tx, rx) = oneshot::channel();
    shared.spawn(provision(shared.clone(), template.clone(), Some(tx)));
    match rx.await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(reason)) => Err(ManagerError::Provision {
            template: template.clone(),
            reason,
        }),
        Err(_) => Err(ManagerError::ShuttingDown),
    }
}

/// Destroys or resets a project that is never handed out again, then forgets it.
async fn recycle(shared: Arc<Shared>, id: ProjectId, template: TemplateName) {
    let Some(p) = shared.provisioner.clone() else {
        return;
    };
    let result = p.recycle(&id, &template).await;
    if let Err(e) = &result {
        warn!(project_id = %id, error = %e, "recycling a project failed; will retry");
    } else if let Some(cache) = &shared.cache {
        if let Err(e) = cache.remove(&id).await {
            warn!(project_id = %id, error = %e, "deleting a recycled project's metadata failed");
        }
    }
    let mut st = shared.lock();
    st.recycling.remove(&id);
    if result.is_ok() {
        st.reserve_metadata.remove(&id);
        let before = st.pool.version();
        let terminal = st
            .pool
            .get(&id)
            .is_some_and(|r| !matches!(r.state, ProjectState::Available));
        if terminal && st.pool.remove(&id).is_ok() {
            info!(project_id = %id, "project recycled and removed from the pool");
        }
        shared.changed(&mut st, before);
    }
}
