//! Counters the manager keeps for status and for metrics exporters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Monotonic counters of what the manager did. Read them with [`Metrics::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) handouts_warm: AtomicU64,
    pub(crate) handouts_cold: AtomicU64,
    pub(crate) handouts_repeat: AtomicU64,
    pub(crate) stockouts: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) wait_micros: AtomicU64,
    pub(crate) backpressure_waits: AtomicU64,
    pub(crate) saves: AtomicU64,
    pub(crate) save_micros: AtomicU64,
    pub(crate) save_retries: AtomicU64,
    pub(crate) save_failures: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) inline_saves: AtomicU64,
    pub(crate) provisions_started: AtomicU64,
    pub(crate) provisions_failed: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) metadata_loads: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Projects handed out from the reserved buffer without waiting.
    pub handouts_warm: u64,
    /// Projects handed out after waiting (for a reservation, a provision or a waiter slot).
    pub handouts_cold: u64,
    /// Allocations answered with the project the conversation already held.
    pub handouts_repeat: u64,
    /// Allocations that found no ready project.
    pub stockouts: u64,
    /// Allocations that waited for a project.
    pub waits: u64,
    /// Total time allocations waited, in microseconds.
    pub wait_micros: u64,
    /// Hand-outs that waited for a save because too much was unsaved.
    pub backpressure_waits: u64,
    /// Pool saves stored.
    pub saves: u64,
    /// Total time of stored saves, in microseconds.
    pub save_micros: u64,
    /// Saves retried after a temporary error.
    pub save_retries: u64,
    /// Saves that failed for good.
    pub save_failures: u64,
    /// Saves that lost to another writer and were rebased.
    pub conflicts: u64,
    /// Saves run inline because the background saver was not running.
    pub inline_saves: u64,
    /// Provisions started.
    pub provisions_started: u64,
    /// Provisions that failed.
    pub provisions_failed: u64,
    /// Projects quarantined.
    pub quarantined: u64,
    /// Allocations reclaimed after their lease ran out.
    pub reclaimed: u64,
    /// Metadata served from memory: from the cache, or kept with a reserved project and
    /// handed out with it.
    pub cache_hits: u64,
    /// Metadata reads that missed the cache.
    pub cache_misses: u64,
    /// Metadata documents loaded from the store.
    pub metadata_loads: u64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add_duration(c: &AtomicU64, d: Duration) {
    c.fetch_add(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

impl Metrics {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            handouts_warm: g(&self.handouts_warm),
            handouts_cold: g(&self.handouts_cold),
            handouts_repeat: g(&self.handouts_repeat),
            stockouts: g(&self.stockouts),
            waits: g(&self.waits),
            wait_micros: g(&self.wait_micros),
            backpressure_waits: g(&self.backpressure_waits),
            saves: g(&self.saves),
            save_micros: g(&self.save_micros),
            save_retries: g(&self.save_retries),
            save_failures: g(&self.save_failures),
            conflicts: g(&self.conflicts),
            inline_saves: g(&self.inline_saves),
            provisions_started: g(&self.provisions_started),
            provisions_failed: g(&self.provisions_failed),
            quarantined: g(&self.quarantined),
            reclaimed: g(&self.reclaimed),
            cache_hits: g(&self.cache_hits),
            cache_misses: g(&self.cache_misses),
            metadata_loads: g(&self.metadata_loads),
        }
    }
}
