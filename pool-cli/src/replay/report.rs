//! What a replay measured, its summary, and the printed forms: a table for people, one
//! JSON object for machines, and an SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// What happened to one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived, from the start of the trace (trace time).
    pub at: Duration,
    /// `Ok(warm)` when it got a project, or the error code it got instead.
    pub result: Result<bool, String>,
    /// From the moment it was asked to its hand-out (or its error), in trace time; zero
    /// for a warm hand-out.
    pub wait: Duration,
    /// From the moment it was asked to its answer, on the clock the replay ran on.
    pub latency: Duration,
}

impl Arrival {
    /// It found no warm project: it waited, or it got none.
    pub fn stockout(&self) -> bool {
        !matches!(self.result, Ok(true))
    }
}

/// Everything one replay run measured.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// `simulated`, `real` or `http`.
    pub mode: &'static str,
    /// The trace's name.
    pub trace: String,
    /// The pool target, when the replay ran the pool itself.
    pub target: Option<usize>,
    /// The provisioning time, when the replay ran the pool itself.
    pub provision_time: Option<Duration>,
    /// The provisions allowed at once, when the replay ran the pool itself.
    pub max_in_flight: Option<usize>,
    /// One entry per arrival, in trace order.
    pub arrivals: Vec<Arrival>,
    /// Ready (available or reserved, not handed out) projects over trace time: each
    /// entry is a time and the count from then on. Starts at time zero.
    pub ready: Vec<(Duration, u64)>,
    /// Provisions started while the trace ran.
    pub provisions: u64,
    /// Pool writes the store took while the trace ran.
    pub store_writes: u64,
    /// Trace time when the last arrival was answered.
    pub end: Duration,
    /// Real time the run took.
    pub wall: Duration,
    /// Real time of each allocation answered from the warm buffer (simulated clock only).
    pub hot_path: Vec<Duration>,
    /// Responses per second of real time (HTTP mode only).
    pub achieved_per_s: Option<f64>,
    /// How late the load generator queued requests, p50 and p99 (HTTP mode only).
    pub dispatch_lag: Option<(Duration, Duration)>,
}

/// The figures of one run, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// `simulated`, `real` or `http`.
    pub mode: &'static str,
    /// The trace's name.
    pub trace: String,
    /// The pool target, when the replay ran the pool itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
    /// The provisioning time in milliseconds, when the replay ran the pool itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provision_time_ms: Option<u64>,
    /// The provisions allowed at once, when the replay ran the pool itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Arrivals replayed.
    pub arrivals: usize,
    /// Arrivals handed a warm project at once.
    pub warm: usize,
    /// `warm` as a percentage of `arrivals`.
    pub warm_pct: f64,
    /// Arrivals that found no warm project (they waited, or got none).
    pub stockouts: usize,
    /// Arrivals that got an error instead of a project, per error code.
    pub errors: BTreeMap<String, usize>,
    /// Median time from arrival to hand-out over all answered arrivals (0 for warm ones),
    /// in milliseconds of trace time.
    pub wait_ms_p50: f64,
    /// 99th percentile of the same.
    pub wait_ms_p99: f64,
    /// Longest of the same.
    pub wait_ms_max: f64,
    /// Provisions started while the trace ran.
    pub provisions: u64,
    /// Integral of ready-but-unused projects over the trace, in project-seconds.
    pub idle_project_seconds: f64,
    /// Pool writes the store took while the trace ran.
    pub store_writes: u64,
    /// Median allocate latency in microseconds, on the clock the replay ran on (the
    /// simulated clock does not advance while a warm hand-out runs, so this stays a
    /// deterministic figure; the text report adds the warm hand-outs' real time).
    pub latency_us_p50: f64,
    /// 99th percentile of the same.
    pub latency_us_p99: f64,
    /// Longest of the same.
    pub latency_us_max: f64,
    /// Responses per second of real time (HTTP mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub achieved_per_s: Option<f64>,
    /// Median lateness of the generator queueing an arrival against the trace, in
    /// microseconds; not counted in the latency (HTTP mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_lag_us_p50: Option<f64>,
    /// 99th percentile of the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_lag_us_p99: Option<f64>,
}

/// The value at quantile `q` (0..=1) of sorted `values`, by the nearest-rank method.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1_000.0)
}

fn us(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1_000_000.0)
}

/// The integral of the `ready` step series from time zero to `end`, in project-seconds.
pub fn idle_project_seconds(ready: &[(Duration, u64)], end: Duration) -> f64 {
    let mut total = 0.0;
    for (i, (t, n)) in ready.iter().enumerate() {
        if *t >= end {
            break;
        }
        let next = ready.get(i + 1).map_or(end, |(t, _)| (*t).min(end));
        total += next.saturating_sub(*t).as_secs_f64() * *n as f64;
    }
    total
}

impl RunData {
    /// The summary of this run.
    pub fn summary(&self) -> Summary {
        let arrivals = self.arrivals.len();
        let warm = self
            .arrivals
            .iter()
            .filter(|a| matches!(a.result, Ok(true)))
            .count();
        let stockouts = self.arrivals.iter().filter(|a| a.stockout()).count();
        let mut errors = BTreeMap::new();
        for a in &self.arrivals {
            if let Err(code) = &a.result {
                *errors.entry(code.clone()).or_insert(0) += 1;
            }
        }
        let mut waits: Vec<Duration> = self
            .arrivals
            .iter()
            .filter(|a| a.result.is_ok())
            .map(|a| a.wait)
            .collect();
        waits.sort_unstable();
        let mut latency: Vec<Duration> = self.arrivals.iter().map(|a| a.latency).collect();
        latency.sort_unstable();
        let warm_pct = if arrivals == 0 {
            100.0
        } else {
            round3(100.0 * warm as f64 / arrivals as f64)
        };
        Summary {
            mode: self.mode,
            trace: self.trace.clone(),
            target: self.target,
            provision_time_ms: self
                .provision_time
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_in_flight: self.max_in_flight,
            arrivals,
            warm,
            warm_pct,
            stockouts,
            errors,
            wait_ms_p50: ms(percentile(&waits, 0.50)),
            wait_ms_p99: ms(percentile(&waits, 0.99)),
            wait_ms_max: ms(waits.last().copied().unwrap_or_default()),
            provisions: self.provisions,
            idle_project_seconds: round3(idle_project_seconds(&self.ready, self.end)),
            store_writes: self.store_writes,
            latency_us_p50: us(percentile(&latency, 0.50)),
            latency_us_p99: us(percentile(&latency, 0.99)),
            latency_us_max: us(latency.last().copied().unwrap_or_default()),
            achieved_per_s: self.achieved_per_s.map(|r| (r * 10.0).round() / 10.0),
            generator_lag_us_p50: self.dispatch_lag.map(|(p50, _)| us(p50)),
            generator_lag_us_p99: self.dispatch_lag.map(|(_, p99)| us(p99)),
        }
    }

    /// The summary as a table for people.
    pub fn human(&self) -> String {
        let s = self.summary();
        let mut out = String::new();
        if s.mode == "http" {
            let _ = writeln!(
                out,
                "replayed {} arrivals of {} over HTTP in {}",
                s.arrivals,
                s.trace,
                short(self.wall),
            );
        } else {
            let _ = writeln!(
                out,
                "replayed {} arrivals of {} ({} of trace time) on the {} clock in {}",
                s.arrivals,
                s.trace,
                short(self.end),
                s.mode,
                short(self.wall),
            );
        }
        if let (Some(t), Some(p), Some(c)) = (s.target, self.provision_time, s.max_in_flight) {
            let _ = writeln!(
                out,
                "  pool: target {t}, provisioning {}, at most {c} in flight",
                humantime::format_duration(p)
            );
        }
        let row = |out: &mut String, label: &str, value: String| {
            // At least one space, however long the label (an error code can be).
            let _ = writeln!(out, "  {label:<21} {value}");
        };
        row(
            &mut out,
            "warm hand-outs",
            format!("{:.3} %  ({} of {})", s.warm_pct, s.warm, s.arrivals),
        );
        row(&mut out, "stockouts", s.stockouts.to_string());
        for (code, n) in &s.errors {
            row(&mut out, &format!("  error {code}"), n.to_string());
        }
        row(
            &mut out,
            "wait (ms)",
            format!(
                "p50 {} / p99 {} / max {}",
                s.wait_ms_p50, s.wait_ms_p99, s.wait_ms_max
            ),
        );
        row(&mut out, "provisions started", s.provisions.to_string());
        row(
            &mut out,
            "idle project-seconds",
            format!("{:.1}", s.idle_project_seconds),
        );
        row(&mut out, "store writes", s.store_writes.to_string());
        if self.mode == "simulated" {
            // The paused clock stands still during a hand-out; show the real cost.
            let mut h = self.hot_path.clone();
            h.sort_unstable();
            row(
                &mut out,
                "allocate (µs)",
                format!(
                    "p50 {} / p99 {}  (real time of the warm hand-outs)",
                    us(percentile(&h, 0.5)),
                    us(percentile(&h, 0.99))
                ),
            );
        } else {
            row(
                &mut out,
                "allocate (µs)",
                format!(
                    "p50 {} / p99 {} / max {}",
                    s.latency_us_p50, s.latency_us_p99, s.latency_us_max
                ),
            );
        }
        if let Some(r) = s.achieved_per_s {
            row(&mut out, "achieved rate", format!("{r:.1} /s"));
        }
        if let Some((p50, p99)) = self.dispatch_lag {
            row(
                &mut out,
                "generator lag (µs)",
                format!(
                    "p50 {} / p99 {}  (not counted in the latency)",
                    us(p50),
                    us(p99)
                ),
            );
        }
        out
    }
}

/// A plot of ready projects (a step line) and stockouts (bars per time slice) over the
/// trace, as a standalone SVG document.
pub fn svg(run: &RunData) -> String {
    const W: f64 = 960.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const PLOT_H: f64 = 240.0;
    const BAR_TOP: f64 = 310.0;
    const BAR_H: f64 = 70.0;
    let plot_w = W - LEFT - RIGHT;
    let end = run.end.max(run.span()).as_secs_f64().max(1e-3);
    let x_of = |t: Duration| LEFT + plot_w * (t.as_secs_f64() / end).min(1.0);
    let max_ready = run.ready.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let y_of = |n: u64| TOP + PLOT_H * (1.0 - n as f64 / max_ready as f64);

    let mut points = String::new();
    let mut last: Option<(f64, u64)> = None;
    let mut column: Option<(i64, u64, u64)> = None;
    for (t, n) in &run.ready {
        let x = x_of(*t);
        let col = x.floor() as i64;
        // Within one pixel column keep only the extremes, so huge traces stay small.
        match &mut column {
            Some((c, lo, hi)) if *c == col => {
                *lo = (*lo).min(*n);
                *hi = (*hi).max(*n);
                if *n != *lo && *n != *hi {
                    continue;
                }
            }
            _ => column = Some((col, *n, *n)),
        }
        if let Some((_, prev)) = last {
            let _ = write!(points, "{x:.1},{:.1} ", y_of(prev));
        }
        let _ = write!(points, "{x:.1},{:.1} ", y_of(*n));
        last = Some((x, *n));
    }
    if let Some((_, prev)) = last {
        let _ = write!(points, "{:.1},{:.1}", LEFT + plot_w, y_of(prev));
    }

    let slices = 240usize;
    let mut counts = vec![0u32; slices];
    for a in run.arrivals.iter().filter(|a| a.stockout()) {
        let i = ((a.at.as_secs_f64() / end) * slices as f64) as usize;
        counts[i.min(slices - 1)] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(0).max(1);
    let bar_w = plot_w / slices as f64;
    let mut bars = String::new();
    for (i, c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let h = BAR_H * f64::from(*c) / f64::from(max_count);
        let _ = writeln!(
            bars,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#d62728"/>"##,
            LEFT + bar_w * i as f64,
            BAR_TOP + BAR_H - h,
            bar_w.max(1.0),
        );
    }

    let s = run.summary();
    let title = format!(
        "{}: {} arrivals, {} stockouts ({:.2} % warm){}",
        xml(&run.trace),
        s.arrivals,
        s.stockouts,
        s.warm_pct,
        match (s.target, s.max_in_flight) {
            (Some(t), Some(c)) => format!(", target {t}, {c} in flight"),
            _ => String::new(),
        }
    );
    let mut ticks = String::new();
    for k in 0..=4 {
        let t = end * f64::from(k) / 4.0;
        let x = LEFT + plot_w * f64::from(k) / 4.0;
        let _ = writeln!(
            ticks,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            BAR_TOP + BAR_H + 16.0,
            human_seconds(t)
        );
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{LEFT}" y="20" font-size="14">{title}</text>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom:.1}" stroke="#888"/>
<line x1="{LEFT}" y1="{bottom:.1}" x2="{right:.1}" y2="{bottom:.1}" stroke="#888"/>
<text x="{lab:.1}" y="{TOP:.1}" text-anchor="end">{max_ready}</text>
<text x="{lab:.1}" y="{bottom:.1}" text-anchor="end">0</text>
<text x="{lab:.1}" y="{mid:.1}" text-anchor="end">ready</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{points}"/>
<line x1="{LEFT}" y1="{bar_bottom:.1}" x2="{right:.1}" y2="{bar_bottom:.1}" stroke="#888"/>
<text x="{lab:.1}" y="{BAR_TOP:.1}" text-anchor="end">{max_count}</text>
<text x="{lab:.1}" y="{bar_mid:.1}" text-anchor="end">stockouts</text>
{bars}{ticks}</svg>
"##,
        bottom = TOP + PLOT_H,
        right = LEFT + plot_w,
        lab = LEFT - 6.0,
        mid = TOP + PLOT_H / 2.0,
        bar_bottom = BAR_TOP + BAR_H,
        bar_mid = BAR_TOP + BAR_H / 2.0,
    )
}

impl RunData {
    fn span(&self) -> Duration {
        self.arrivals.last().map(|a| a.at).unwrap_or_default()
    }
}

/// A duration rounded for people: whole seconds from 10 s up, milliseconds below.
fn short(d: Duration) -> humantime::FormattedDuration {
    let d = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs_f64().round() as u64)
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d)
}

fn human_seconds(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn idle_time_is_the_area_under_the_ready_steps() {
        let s = Duration::from_secs;
        let ready = [(s(0), 2), (s(10), 1), (s(15), 3)];
        assert_eq!(
            idle_project_seconds(&ready, s(20)),
            2.0 * 10.0 + 5.0 + 3.0 * 5.0
        );
        assert_eq!(idle_project_seconds(&ready, s(5)), 10.0);
    }

    #[test]
    fn the_table_keeps_long_error_codes_apart_from_their_counts() {
        let arrival = |result: Result<bool, String>| Arrival {
            at: Duration::ZERO,
            result,
            wait: Duration::from_millis(1),
            latency: Duration::from_millis(1),
        };
        let run = RunData {
            mode: "http",
            trace: "synthetic 10/s for 1s".into(),
            arrivals: vec![
                arrival(Ok(true)),
                arrival(Err("wait_timed_out".into())),
                arrival(Err("a_code_longer_than_the_label_column".into())),
            ],
            wall: Duration::from_secs(2),
            ..RunData::default()
        };
        let table = run.human();
        assert!(table.contains("error wait_timed_out 1"), "{table}");
        assert!(
            table.contains("error a_code_longer_than_the_label_column 1"),
            "{table}"
        );
        assert!(
            table.starts_with("replayed 3 arrivals of synthetic 10/s for 1s over HTTP in 2s"),
            "{table}"
        );
        assert!(
            table.contains("  warm hand-outs        33.333 %"),
            "{table}"
        );
    }
}
