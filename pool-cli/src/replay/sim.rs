//! Replaying a trace against an in-process [`PoolManager`] on a memory store, on tokio's
//! paused clock (simulated) or in scaled real time.
//!
//! The pool starts warm at its target. Every arrival allocates for a new conversation,
//! waiting in line when no warm project is ready; a provisioner that takes exactly the
//! provisioning time refills the pool under the manager's replenish policy. The store
//! answers at once and write-behind saves are not delayed, so on the simulated clock
//! nothing but the policy shapes the result, and the result is the same on every run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use indicatif::ProgressBar;
use pool_core::{ConversationId, OwnerId, Pool, ProjectId, ReplenishPolicy, TemplateName};
use pool_runtime::{
    ManagerConfig, OnEmpty, PoolManager, ProvisionError, Provisioned, Provisioner, TemplateConfig,
};
use pool_storage::{MemoryStore, PoolStore, PoolWrite, Precondition};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use super::ReplayError;
use super::report::{Arrival, RunData};
use super::trace::Trace;

/// Which clock an in-process replay runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimClock {
    /// tokio's paused clock: time jumps to the next event, results are deterministic.
    Simulated,
    /// Real time, the trace and the provisioning time divided by `speed`.
    Real {
        /// How many times faster than the trace.
        speed: f64,
    },
}

/// The pool an in-process replay runs.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Ready projects to keep.
    pub target: usize,
    /// How long each provision takes (trace time).
    pub provision_time: Duration,
    /// Provisions running at once, at most.
    pub max_in_flight: usize,
    /// The template every arrival asks for.
    pub template: TemplateName,
    /// How long a caller waits for a project before giving up (trace time).
    pub wait: Duration,
    /// How long each conversation holds its project before archiving it (trace time);
    /// `None` holds it to the end. Archived projects are recycled and leave the pool.
    pub hold: Option<Duration>,
    /// The clock.
    pub clock: SimClock,
}

/// Replays `trace` against an in-process manager; blocks until the replay is done.
///
/// Runs on its own single-threaded runtime, so call it from outside any runtime (or
/// from a blocking thread).
pub fn run(
    trace: &Trace,
    params: &SimParams,
    progress: &ProgressBar,
) -> Result<RunData, ReplayError> {
    let speed = match params.clock {
        SimClock::Simulated => 1.0,
        SimClock::Real { speed } if speed.is_finite() && speed > 0.0 => speed,
        SimClock::Real { speed } => {
            return Err(ReplayError::Usage(format!(
                "--speed must be a positive number, not {speed}"
            )));
        }
    };
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if params.clock == SimClock::Simulated {
        builder.start_paused(true);
    }
    let runtime = builder.build().map_err(ReplayError::Runtime)?;
    let wall = std::time::Instant::now();
    let mut data = runtime.block_on(drive(trace, params, speed, progress))?;
    data.wall = wall.elapsed();
    Ok(data)
}

/// Mints projects after exactly the provisioning time and notes when each became ready.
#[derive(Debug)]
struct ReplayProvisioner {
    delay: Duration,
    next: AtomicU64,
    ready_at: Mutex<Vec<Instant>>,
}

#[async_trait]
impl Provisioner for ReplayProvisioner {
    async fn provision(&self, template: &TemplateName) -> Result<Provisioned, ProvisionError> {
        tokio::time::sleep(self.delay).await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = ProjectId::new(format!("{template}-{n}-00000"))
            .map_err(|e| ProvisionError(format!("template makes an invalid id: {e}")))?;
        self.ready_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        Ok(Provisioned {
            id,
            metadata: serde_json::Value::Null,
        })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        Ok(())
    }
}

fn scaled(d: Duration, speed: f64) -> Duration {
    if speed == 1.0 { d } else { d.div_f64(speed) }
}

fn unscaled(d: Duration, speed: f64) -> Duration {
    if speed == 1.0 { d } else { d.mul_f64(speed) }
}

/// Stores a pool holding `target` available projects, so the manager starts warm.
async fn seed(store: &MemoryStore, p: &SimParams) -> Result<(), ReplayError> {
    let mut pool = Pool::new();
    let now = pool_core::Timestamp::from_millis(0);
    for i in 0..p.target {
        let id = ProjectId::new(format!("{}-s{i}-00000", p.template))
            .map_err(|e| ReplayError::Usage(format!("template makes an invalid id: {e}")))?;
        pool.add_available(id, p.template.clone(), now)
            .map_err(|e| ReplayError::Usage(e.to_string()))?;
    }
    store
        .save(&PoolWrite::Full(pool.snapshot()), &Precondition::CreateOnly)
        .await
        .map_err(|e| ReplayError::Manager(e.into()))?;
    Ok(())
}

/// One arrival's answer, as its task saw it.
struct Answered {
    /// Its row in the trace.
    index: usize,
    /// `Ok(warm)`, or the error code.
    result: Result<bool, String>,
    /// When the allocation was asked for.
    issued: Instant,
    /// When it was answered.
    at: Instant,
    /// How long the allocate call took in real time.
    wall: Duration,
}

fn config(p: &SimParams, speed: f64) -> Result<ManagerConfig, ReplayError> {
    let day = Duration::from_secs(86_400);
    let owner = OwnerId::new("replay").map_err(|e| ReplayError::Usage(e.to_string()))?;
    Ok(ManagerConfig {
        owner: Some(owner),
        templates: vec![TemplateConfig {
            name: p.template.clone(),
            policy: ReplenishPolicy {
                target: p.target,
                max_in_flight: p.max_in_flight,
            },
            reserve: p.target,
        }],
        // Nothing but the replenish policy may shape the result: saves go out at once,
        // hand-outs never wait for a save, allocations are never reclaimed.
        save_delay: Duration::ZERO,
        max_unsaved: usize::MAX / 2,
        max_unsaved_age: day * 365,
        allocation_lease: day * 3_650,
        provision_timeout: scaled(p.provision_time, speed) * 2 + day,
        ..ManagerConfig::default()
    })
}

async fn drive(
    trace: &Trace,
    p: &SimParams,
    speed: f64,
    progress: &ProgressBar,
) -> Result<RunData, ReplayError> {
    let store = MemoryStore::new();
    seed(&store, p).await?;
    let provisioner = Arc::new(ReplayProvisioner {
        delay: scaled(p.provision_time, speed),
        next: AtomicU64::new(0),
        ready_at: Mutex::new(Vec::new()),
    });
    let manager = PoolManager::builder(Arc::new(store.clone()))
        .config(config(p, speed)?)
        .provisioner(provisioner.clone())
        .start()
        .await?;
    // Wait until the seeded projects are durably reserved: the pool is warm.
    loop {
        let s = manager.status();
        let here = s.templates.get(&p.template).map_or(0, |t| t.reserved_here);
        if here >= p.target && s.unsaved_changes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = manager.metrics();
    let writes_before = store.counters().saves_succeeded;
    let start = Instant::now();
    debug!(arrivals = trace.len(), target = p.target, "replay starts");

    let limit = scaled(p.wait, speed);
    let hold = p.hold.map(|h| scaled(h, speed));
    let mut tasks = JoinSet::new();
    let mut done: Vec<Answered> = Vec::with_capacity(trace.len());
    for (i, offset) in trace.offsets.iter().enumerate() {
        tokio::time::sleep_until(start + scaled(*offset, speed)).await;
        let conversation = ConversationId::new(format!("replay-{i}"))
            .map_err(|e| ReplayError::Usage(e.to_string()))?;
        let (m, template) = (manager.clone(), p.template.clone());
        tasks.spawn(async move {
            let (issued, wall) = (Instant::now(), std::time::Instant::now());
            let r = m
                .allocate(&conversation, &template, OnEmpty::Wait(limit))
                .await;
            let (wall, at) = (wall.elapsed(), Instant::now());
            if let (Ok(a), Some(hold)) = (&r, hold) {
                end_conversation(m, a.project.clone(), a.token, hold).await;
            }
            let r = r.map(|a| a.warm).map_err(|e| e.code().to_string());
            Answered {
                index: i,
                result: r,
                issued,
                at,
                wall,
            }
        });
        while let Some(Ok(d)) = tasks.try_join_next() {
            done.push(d);
        }
        progress.inc(1);
    }
    while let Some(d) = tasks.join_next().await {
        done.push(d.map_err(|e| ReplayError::Runtime(std::io::Error::other(e)))?);
    }
    // Let the pool refill to its target, so every provision the trace caused is counted.
    let settle_by = Instant::now()
        + scaled(p.provision_time, speed) * (2 + (p.target / p.max_in_flight.max(1)) as u32)
        + Duration::from_secs(1);
    while Instant::now() < settle_by {
        let s = manager.status();
        let t = s.templates.get(&p.template);
        let refilled = t.is_some_and(|t| t.provisioning == 0 && t.reserved_here >= p.target);
        if refilled && s.unsaved_changes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let settled = unscaled(start.elapsed(), speed);
    let after = manager.metrics();
    let writes = store.counters().saves_succeeded - writes_before;
    manager
        .shutdown(scaled(p.provision_time, speed) + Duration::from_secs(10))
        .await;

    done.sort_by_key(|d| d.index);
    let mut arrivals = Vec::with_capacity(done.len());
    let mut hot_path = Vec::new();
    let mut handed: Vec<Duration> = Vec::new();
    let end = settled;
    for Answered {
        index,
        result,
        issued,
        at,
        wall,
    } in done
    {
        let scheduled = trace.offsets[index];
        let answered = unscaled(at.saturating_duration_since(start), speed);
        // A warm hand-out waited for nothing; any other answer waited from the moment
        // it was asked, not from its place in the trace, so a late timer on the real
        // clock (multiplied by the speed) is not counted as a wait for a project.
        let wait = if result == Ok(true) {
            Duration::ZERO
        } else {
            unscaled(at.saturating_duration_since(issued), speed)
        };
        if result == Ok(true) {
            hot_path.push(wall);
        }
        if result.is_ok() {
            handed.push(answered);
        }
        arrivals.push(Arrival {
            at: scheduled,
            result,
            wait,
            latency: at.saturating_duration_since(issued),
        });
    }
    let ready_at: Vec<Duration> = provisioner
        .ready_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|t| unscaled(t.saturating_duration_since(start), speed))
        .collect();
    let ready = ready_series(p.target as u64, &ready_at, &mut handed);
    let mode = match p.clock {
        SimClock::Simulated => "simulated",
        SimClock::Real { .. } => "real",
    };
    Ok(RunData {
        mode,
        trace: trace.name.clone(),
        target: Some(p.target),
        provision_time: Some(p.provision_time),
        max_in_flight: Some(p.max_in_flight),
        arrivals,
        ready,
        provisions: after.provisions_started - before.provisions_started,
        store_writes: writes,
        end,
        wall: Duration::ZERO,
        hot_path: if p.clock == SimClock::Simulated {
            hot_path
        } else {
            Vec::new()
        },
        achieved_per_s: None,
        dispatch_lag: None,
    })
}

/// Ends a conversation: archives its project once it has held it for `hold`. Archived
/// projects are recycled and leave the pool, which keeps the stored pool small.
async fn end_conversation(
    manager: PoolManager,
    project: ProjectId,
    token: pool_core::AllocationToken,
    hold: Duration,
) {
    let archive = async move {
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        if let Err(e) = manager.archive(&project, token).await {
            debug!(project_id = %project, error = %e, "could not archive after the replay");
        }
    };
    if hold.is_zero() {
        archive.await;
    } else {
        // Holding must not delay the replay's end; unfinished holds end with it.
        tokio::spawn(archive);
    }
}

/// The ready count over time: `initial` at time zero, one more at each `ready_at`, one
/// fewer at each hand-out.
fn ready_series(
    initial: u64,
    ready_at: &[Duration],
    handed: &mut [Duration],
) -> Vec<(Duration, u64)> {
    handed.sort_unstable();
    let mut events: Vec<(Duration, i64)> = ready_at
        .iter()
        .map(|t| (*t, 1))
        .chain(handed.iter().map(|t| (*t, -1)))
        .collect();
    events.sort_by_key(|e| (e.0, -e.1));
    let mut series = vec![(Duration::ZERO, initial)];
    let mut n = initial as i64;
    for (t, delta) in events {
        n = (n + delta).max(0);
        match series.last_mut() {
            Some(last) if last.0 == t => last.1 = n as u64,
            _ => series.push((t, n as u64)),
        }
    }
    series
}
