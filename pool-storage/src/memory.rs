//! An in-memory store that keeps both contracts faithfully and can be told to misbehave.
//!
//! It stores the pool as encoded JSON bytes, exactly as a blob backend would, so corrupt
//! documents and large snapshots behave as they would on a real store. Faults are set on
//! a shared handle while a test runs: latency per operation (fixed, uniform random from a
//! seed, or a scripted sequence), failing the next n operations, failing saves that touch
//! a given project (temporarily or for good), failing one metadata key, or the whole store
//! being down. Counters record every attempt and outcome. Latency is slept on tokio's
//! clock, so tests with a paused clock run it instantly and deterministically.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pool_core::{PoolSnapshot, ProjectId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ErrorKind, StoreError};
use crate::traits::{
    Capabilities, Metadata, MetadataStore, PoolStore, PoolWrite, Precondition, Revision, Versioned,
    decode_metadata, decode_pool, metadata_key,
};

const BACKEND: &str = "memory";

/// The operations faults can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`PoolStore::load`].
    Load,
    /// [`PoolStore::save`].
    Save,
    /// [`MetadataStore::get_metadata`].
    GetMetadata,
    /// [`MetadataStore::put_metadata`].
    PutMetadata,
    /// [`MetadataStore::delete_metadata`].
    DeleteMetadata,
}

/// How long an operation takes before it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// At once.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniformly between the two bounds, drawn from the store's seeded generator.
    Uniform(Duration, Duration),
}

/// Counts of what the store was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Pool loads attempted.
    pub loads: u64,
    /// Pool saves attempted (including those that failed or conflicted).
    pub saves_attempted: u64,
    /// Pool saves stored.
    pub saves_succeeded: u64,
    /// Pool saves refused for a lost precondition.
    pub saves_conflicted: u64,
    /// Pool saves failed for an injected or other error.
    pub saves_failed: u64,
    /// Metadata reads attempted.
    pub metadata_gets: u64,
    /// Metadata writes attempted.
    pub metadata_puts: u64,
}

#[derive(Default)]
struct AtomicCounters {
    loads: AtomicU64,
    saves_attempted: AtomicU64,
    saves_succeeded: AtomicU64,
    saves_conflicted: AtomicU64,
    saves_failed: AtomicU64,
    metadata_gets: AtomicU64,
    metadata_puts: AtomicU64,
}

struct TouchRule {
    project: ProjectId,
    temporary: bool,
    remaining: Option<u32>,
}

struct Faults {
    latency: HashMap<Op, Latency>,
    scripted: HashMap<Op, VecDeque<Duration>>,
    fail_next: VecDeque<(Option<Op>, ErrorKind)>,
    touching: Vec<TouchRule>,
    failing_keys: Vec<ProjectId>,
    down: bool,
    rng: StdRng,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: HashMap::new(),
            scripted: HashMap::new(),
            fail_next: VecDeque::new(),
            touching: Vec::new(),
            failing_keys: Vec::new(),
            down: false,
            rng: StdRng::seed_from_u64(0),
        }
    }
}

#[derive(Default)]
struct Data {
    pool: Option<(Vec<u8>, u64)>,
    metadata: HashMap<ProjectId, (Vec<u8>, u64)>,
    next_revision: u64,
    saved_versions: Vec<u64>,
}

impl Data {
    fn next_revision(&mut self) -> u64 {
        self.next_revision += 1;
        self.next_revision
    }
}

#[derive(Default)]
struct Inner {
    data: Mutex<Data>,
    faults: Mutex<Faults>,
    counters: AtomicCounters,
}

/// An in-memory pool and metadata store with fault injection. Clones share one store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("counters", &self.counters())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn revision(n: u64) -> Revision {
    Revision::new(format!("mem-{n}"))
}

fn matches(precondition: Option<&Precondition>, current: Option<u64>) -> bool {
    match (precondition, current) {
        (None, _) => true,
        (Some(Precondition::CreateOnly), current) => current.is_none(),
        (Some(Precondition::Matches(r)), Some(n)) => r == &revision(n),
        (Some(Precondition::Matches(_)), None) => false,
    }
}

impl MemoryStore {
    /// An empty store with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every `op` take `latency` from now on.
    pub fn set_latency(&self, op: Op, latency: Latency) {
        lock(&self.inner.faults).latency.insert(op, latency);
    }

    /// Makes the next `op`s take these durations, in order, before `set_latency` applies.
    pub fn script_latency(&self, op: Op, durations: impl IntoIterator<Item = Duration>) {
        lock(&self.inner.faults)
            .scripted
            .entry(op)
            .or_default()
            .extend(durations);
    }

    /// Reseeds the generator behind [`Latency::Uniform`].
    pub fn seed(&self, seed: u64) {
        lock(&self.inner.faults).rng = StdRng::seed_from_u64(seed);
    }

    /// Fails the next `n` operations (of `op`, or of any kind) with `kind`.
    pub fn fail_next(&self, op: Option<Op>, n: usize, kind: ErrorKind) {
        let mut f = lock(&self.inner.faults);
        f.fail_next.extend(std::iter::repeat_n((op, kind), n));
    }

    /// Fails saves that carry `project`: `times` times, or for good with `None`;
    /// temporarily (`Unavailable`) or permanently (`InvalidInput`).
    pub fn fail_saves_touching(&self, project: ProjectId, temporary: bool, times: Option<u32>) {
        let rule = TouchRule {
            project,
            temporary,
            remaining: times,
        };
        lock(&self.inner.faults).touching.push(rule);
    }

    /// Fails every metadata operation on `project`'s document, permanently.
    pub fn fail_metadata_of(&self, project: ProjectId) {
        lock(&self.inner.faults).failing_keys.push(project);
    }

    /// Takes the whole store down (every operation `Unavailable`) or brings it back.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner.faults).down = down;
    }

    /// Removes every fault and latency.
    pub fn clear_faults(&self) {
        *lock(&self.inner.faults) = Faults::default();
    }

    /// What the store has been asked to do so far.
    pub fn counters(&self) -> Counters {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            loads: get(&c.loads),
            saves_attempted: get(&c.saves_attempted),
            saves_succeeded: get(&c.saves_succeeded),
            saves_conflicted: get(&c.saves_conflicted),
            saves_failed: get(&c.saves_failed),
            metadata_gets: get(&c.metadata_gets),
            metadata_puts: get(&c.metadata_puts),
        }
    }

    /// The pool versions stored, in the order they were stored.
    pub fn saved_versions(&self) -> Vec<u64> {
        lock(&self.inner.data).saved_versions.clone()
    }

    /// The stored pool document's bytes.
    pub fn raw_pool(&self) -> Option<Vec<u8>> {
        lock(&self.inner.data).pool.as_ref().map(|(b, _)| b.clone())
    }

    /// Replaces the stored pool document with raw bytes (for corruption tests).
    pub fn put_raw_pool(&self, bytes: Vec<u8>) {
        let mut d = lock(&self.inner.data);
        let rev = d.next_revision();
        d.pool = Some((bytes, rev));
    }

    /// Replaces a metadata document with raw bytes (for corruption tests).
    pub fn put_raw_metadata(&self, project: ProjectId, bytes: Vec<u8>) {
        let mut d = lock(&self.inner.data);
        let rev = d.next_revision();
        d.metadata.insert(project, (bytes, rev));
    }

    /// Sleeps this operation's latency, then reports an injected failure, if any.
    async fn enter(&self, op: Op, key: Option<&ProjectId>) -> Result<(), StoreError> {
        let delay = self.next_delay(op);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut f = lock(&self.inner.faults);
        if f.down {
            return Err(injected(ErrorKind::Unavailable, op));
        }
        if let Some(pos) = f
            .fail_next
            .iter()
            .position(|(o, _)| o.is_none_or(|o| o == op))
        {
            let (_, kind) = f.fail_next.remove(pos).unwrap_or((None, ErrorKind::Other));
            return Err(injected(kind, op));
        }
        if key.is_some_and(|k| f.failing_keys.contains(k)) {
            return Err(injected(ErrorKind::PermissionDenied, op));
        }
        Ok(())
    }

    fn next_delay(&self, op: Op) -> Duration {
        let mut f = lock(&self.inner.faults);
        if let Some(d) = f.scripted.get_mut(&op).and_then(VecDeque::pop_front) {
            return d;
        }
        match f.latency.get(&op).copied().unwrap_or_default() {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) if hi > lo => f.rng.random_range(lo..=hi),
            Latency::Uniform(lo, _) => lo,
        }
    }

    fn check_touching(&self, write: &PoolWrite) -> Result<(), StoreError> {
        let mut f = lock(&self.inner.faults);
        for rule in f.touching.iter_mut() {
            if rule.remaining == Some(0) || !write.touches(&rule.project) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            let kind = if rule.temporary {
                ErrorKind::Unavailable
            } else {
                ErrorKind::InvalidInput
            };
            let msg = format!(
                "injected failure for saves touching project {}",
                rule.project
            );
            return Err(StoreError::new(kind, BACKEND, msg));
        }
        Ok(())
    }

    fn commit(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        let mut d = lock(&self.inner.data);
        let current = d.pool.as_ref().map(|(_, r)| *r);
        if !matches(Some(precondition), current) {
            let msg = format!(
                "save of pool version {} expected {precondition:?}",
                write.pool_version()
            );
            return Err(StoreError::conflict(BACKEND, msg));
        }
        let bytes = match write {
            PoolWrite::Full(s) => s.to_json(),
            PoolWrite::Changes(c) => {
                let stored = d
                    .pool
                    .as_ref()
                    .map(|(b, _)| b.as_slice())
                    .unwrap_or_default();
                let mut snapshot: PoolSnapshot = decode_pool(BACKEND, "pool", stored)?;
                if snapshot.pool_version != c.base_version {
                    let msg = format!(
                        "changes based on version {} but version {} is stored",
                        c.base_version, snapshot.pool_version
                    );
                    return Err(StoreError::new(ErrorKind::InvalidInput, BACKEND, msg));
                }
                snapshot.apply(c);
                snapshot.to_json()
            }
        };
        let rev = d.next_revision();
        d.pool = Some((bytes, rev));
        d.saved_versions.push(write.pool_version());
        Ok(revision(rev))
    }
}

fn injected(kind: ErrorKind, op: Op) -> StoreError {
    StoreError::new(kind, BACKEND, format!("injected failure of {op:?}"))
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl PoolStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: BACKEND,
            incremental_saves: true,
            shared_between_processes: false,
            max_document_bytes: None,
        }
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        bump(&self.inner.counters.loads);
        self.enter(Op::Load, None).await?;
        let stored = lock(&self.inner.data).pool.clone();
        let Some((bytes, rev)) = stored else {
            return Ok(None);
        };
        let value = decode_pool(BACKEND, "pool", &bytes)?;
        Ok(Some(Versioned {
            value,
            revision: revision(rev),
        }))
    }

    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        let c = &self.inner.counters;
        bump(&c.saves_attempted);
        let result = match self.enter(Op::Save, None).await {
            Ok(()) => self
                .check_touching(write)
                .and_then(|()| self.commit(write, precondition)),
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => bump(&c.saves_succeeded),
            Err(e) if e.is_conflict() => bump(&c.saves_conflicted),
            Err(_) => bump(&c.saves_failed),
        }
        result
    }
}

#[async_trait]
impl MetadataStore for MemoryStore {
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError> {
        bump(&self.inner.counters.metadata_gets);
        self.enter(Op::GetMetadata, Some(project)).await?;
        let stored = lock(&self.inner.data).metadata.get(project).cloned();
        let Some((bytes, rev)) = stored else {
            return Ok(None);
        };
        let value = decode_metadata(BACKEND, &self.metadata_location(project), &bytes)?;
        Ok(Some(Versioned {
            value,
            revision: revision(rev),
        }))
    }

    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError> {
        bump(&self.inner.counters.metadata_puts);
        self.enter(Op::PutMetadata, Some(project)).await?;
        let mut d = lock(&self.inner.data);
        let current = d.metadata.get(project).map(|(_, r)| *r);
        if !matches(precondition.as_ref(), current) {
            let msg = format!(
                "write of {} expected {precondition:?}",
                self.metadata_location(project)
            );
            return Err(StoreError::conflict(BACKEND, msg));
        }
        let bytes = serde_json::to_vec(metadata).map_err(|e| {
            StoreError::new(ErrorKind::InvalidInput, BACKEND, "encoding metadata").with_source(e)
        })?;
        let rev = d.next_revision();
        d.metadata.insert(project.clone(), (bytes, rev));
        Ok(revision(rev))
    }

    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError> {
        self.enter(Op::DeleteMetadata, Some(project)).await?;
        lock(&self.inner.data).metadata.remove(project);
        Ok(())
    }

    fn metadata_location(&self, project: &ProjectId) -> String {
        format!("memory:{}", metadata_key("", project))
    }
}
