//! Prometheus text exposition of the manager's counters and the allocate latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pool_runtime::{Health, Status};

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 12] = [
    1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0,
];

/// A fixed-bucket latency histogram that many threads update without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The exposition text for `status` and `latency`.
pub fn render(status: &Status, latency: &Histogram) -> String {
    let m = &status.metrics;
    let mut out = String::new();
    let counters: [(&str, &str, u64); 18] = [
        (
            "pool_handouts_warm_total",
            "Projects handed out from the warm buffer.",
            m.handouts_warm,
        ),
        (
            "pool_handouts_cold_total",
            "Projects handed out after waiting.",
            m.handouts_cold,
        ),
        (
            "pool_handouts_repeat_total",
            "Repeated requests answered with the held project.",
            m.handouts_repeat,
        ),
        (
            "pool_stockouts_total",
            "Allocations that found no ready project.",
            m.stockouts,
        ),
        (
            "pool_waits_total",
            "Allocations that waited for a project.",
            m.waits,
        ),
        (
            "pool_backpressure_waits_total",
            "Hand-outs that waited because too much was unsaved.",
            m.backpressure_waits,
        ),
        ("pool_saves_total", "Pool saves stored.", m.saves),
        (
            "pool_save_retries_total",
            "Saves retried after a temporary error.",
            m.save_retries,
        ),
        (
            "pool_save_failures_total",
            "Saves that failed for good.",
            m.save_failures,
        ),
        (
            "pool_save_conflicts_total",
            "Saves that lost a race and were rebased.",
            m.conflicts,
        ),
        (
            "pool_inline_saves_total",
            "Saves run inline as a fallback.",
            m.inline_saves,
        ),
        (
            "pool_provisions_started_total",
            "Provisions started.",
            m.provisions_started,
        ),
        (
            "pool_provisions_failed_total",
            "Provisions that failed.",
            m.provisions_failed,
        ),
        (
            "pool_quarantined_total",
            "Projects quarantined.",
            m.quarantined,
        ),
        (
            "pool_reclaimed_total",
            "Allocations reclaimed after their lease ran out.",
            m.reclaimed,
        ),
        (
            "pool_metadata_cache_hits_total",
            "Metadata served from memory (the cache, or kept with a reserved project).",
            m.cache_hits,
        ),
        (
            "pool_metadata_cache_misses_total",
            "Metadata reads that missed the cache.",
            m.cache_misses,
        ),
        (
            "pool_metadata_loads_total",
            "Metadata documents read from the store.",
            m.metadata_loads,
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, "counter", help, value);
    }
    metric(
        &mut out,
        "pool_wait_seconds_total",
        "counter",
        "Time allocations waited.",
        m.wait_micros as f64 / 1e6,
    );
    metric(
        &mut out,
        "pool_save_seconds_total",
        "counter",
        "Time spent in stored saves.",
        m.save_micros as f64 / 1e6,
    );
    metric(
        &mut out,
        "pool_unsaved_changes",
        "gauge",
        "Projects whose change is not stored.",
        status.unsaved_changes,
    );
    let healthy = u8::from(status.health == Health::Healthy);
    metric(
        &mut out,
        "pool_healthy",
        "gauge",
        "1 while saves succeed.",
        healthy,
    );
    let in_flight: usize = status.templates.values().map(|t| t.provisioning).sum();
    metric(
        &mut out,
        "pool_provisions_in_flight",
        "gauge",
        "Provisions running.",
        in_flight,
    );
    let _ = writeln!(
        out,
        "# HELP pool_projects Projects per template and state.\n# TYPE pool_projects gauge"
    );
    for (template, t) in &status.templates {
        for kind in pool_core::ALL_KINDS {
            let _ = writeln!(
                out,
                "pool_projects{{template=\"{template}\",state=\"{kind}\"}} {}",
                t.counts.get(kind)
            );
        }
    }
    latency.write(
        &mut out,
        "pool_allocate_seconds",
        "Allocate latency as the API saw it.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_runtime::MetricsSnapshot;

    /// Every counter the manager keeps is exposed, each under its own name: a counter
    /// added to the snapshot without a line here fails to compile this test.
    #[test]
    fn every_counter_of_the_manager_is_exposed() {
        let snapshot = MetricsSnapshot {
            handouts_warm: 101,
            handouts_cold: 102,
            handouts_repeat: 103,
            stockouts: 104,
            waits: 105,
            wait_micros: 106_000_000,
            backpressure_waits: 107,
            saves: 108,
            save_micros: 109_000_000,
            save_retries: 110,
            save_failures: 111,
            conflicts: 112,
            inline_saves: 113,
            provisions_started: 114,
            provisions_failed: 115,
            quarantined: 116,
            reclaimed: 117,
            cache_hits: 118,
            cache_misses: 119,
            metadata_loads: 120,
        };
        let expected = [
            ("pool_handouts_warm_total", 101),
            ("pool_handouts_cold_total", 102),
            ("pool_handouts_repeat_total", 103),
            ("pool_stockouts_total", 104),
            ("pool_waits_total", 105),
            ("pool_wait_seconds_total", 106),
            ("pool_backpressure_waits_total", 107),
            ("pool_saves_total", 108),
            ("pool_save_seconds_total", 109),
            ("pool_save_retries_total", 110),
            ("pool_save_failures_total", 111),
            ("pool_save_conflicts_total", 112),
            ("pool_inline_saves_total", 113),
            ("pool_provisions_started_total", 114),
            ("pool_provisions_failed_total", 115),
            ("pool_quarantined_total", 116),
            ("pool_reclaimed_total", 117),
            ("pool_metadata_cache_hits_total", 118),
            ("pool_metadata_cache_misses_total", 119),
            ("pool_metadata_loads_total", 120),
        ];
        let status = Status {
            owner: pool_core::OwnerId::new("metrics-test").expect("a valid owner id"),
            version: 1,
            saved_version: 1,
            unsaved_changes: 0,
            last_save_age: None,
            health: Health::Healthy,
            templates: std::collections::BTreeMap::new(),
            metrics: snapshot,
        };
        let out = render(&status, &Histogram::default());
        for (name, value) in expected {
            let line = format!("\n{name} {value}\n");
            assert!(out.contains(&line), "no {line:?} in:\n{out}");
            let typed = format!("# TYPE {name} counter\n");
            assert!(
                out.contains(&typed),
                "{name} is not typed a counter:\n{out}"
            );
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_micros(70));
        h.observe(Duration::from_secs(9));
        let mut out = String::new();
        h.write(&mut out, "x", "test");
        assert!(out.contains("x_bucket{le=\"0.00001\"} 1"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count 3"), "{out}");
    }
}
