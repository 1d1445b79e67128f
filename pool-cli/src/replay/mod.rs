//! `pool replay`: drive a pool with a real arrival trace, to size it and to load it.
//!
//! Three ways to run a trace, all reporting the same figures:
//!
//! - **simulated clock**: the real [`pool_runtime::PoolManager`] on a memory store, on
//!   tokio's paused clock. An hour of arrivals replays in seconds and two runs give the
//!   same numbers, so a pool can be sized by sweeping its target ([`sweep`]).
//! - **real clock**: the same in real time, faster by `--speed`.
//! - **`--url`**: an open-loop load generator against a running `pool serve`: requests
//!   go out at their scheduled times whatever the server answers.

pub mod load;
pub mod report;
pub mod sim;
pub mod trace;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pool_core::TemplateName;
use pool_runtime::ManagerError;
use serde::Serialize;

pub use report::{Arrival, RunData, Summary};
pub use sim::{SimClock, SimParams};
pub use trace::{Trace, TraceError};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The options do not fit together.
    #[error("{0}")]
    Usage(String),
    /// The in-process pool manager failed.
    #[error("pool manager: {0}")]
    Manager(#[from] ManagerError),
    /// The async runtime could not start or a task failed.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// The pool service could not be reached or answered something unexpected.
    #[error("{0}")]
    Http(String),
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Output {
        /// What was being written.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Which clock an in-process replay runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockArg {
    /// tokio's paused clock: fast and deterministic.
    Simulated,
    /// Real time, scaled by --speed.
    Real,
}

/// What an arrival asks the service to do when the pool is empty (`--url` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnEmptyArg {
    /// Wait up to --wait for a project.
    Wait,
    /// Fail at once.
    Fail,
    /// Provision a project for this caller.
    Cold,
}

impl OnEmptyArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Fail => "fail",
            Self::Cold => "cold",
        }
    }
}

/// An inclusive range of targets, written `A..B` or `A..=B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRange {
    /// The smallest target tried.
    pub from: usize,
    /// The largest target tried.
    pub to: usize,
}

impl FromStr for TargetRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("{s:?} is not a range like 5..30"))?;
        let b = b.strip_prefix('=').unwrap_or(b);
        let from: usize = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a target"))?;
        let to: usize = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a target"))?;
        if from > to {
            return Err(format!("the range {s:?} is empty"));
        }
        Ok(Self { from, to })
    }
}

/// How long each conversation keeps its project: a duration, or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold(pub Option<Duration>);

impl FromStr for Hold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("forever") {
            return Ok(Self(None));
        }
        humantime::parse_duration(s)
            .map(|d| Self(Some(d)))
            .map_err(|e| format!("{s:?} is neither a duration nor `forever`: {e}"))
    }
}

/// `pool replay` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// A CSV file with an `offset_ms` column (other columns are ignored); each row is a
    /// new conversation asking for a project.
    #[arg(required_unless_present = "rate")]
    pub trace: Option<PathBuf>,
    /// Instead of a trace file: evenly spaced arrivals, this many per second (with
    /// --duration).
    #[arg(long, conflicts_with = "trace", requires = "duration")]
    pub rate: Option<f64>,
    /// How long the synthetic arrivals of --rate last, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration, requires = "rate")]
    pub duration: Option<Duration>,
    /// Ready projects the pool keeps (in-process replays).
    #[arg(long)]
    pub target: Option<usize>,
    /// How long one provision takes (in-process replays).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub provision_time: Duration,
    /// Provisions running at once, at most (in-process replays).
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: usize,
    /// `simulated` (tokio's paused clock: an hour in seconds, deterministic) or `real`.
    #[arg(long, value_enum, default_value_t = ClockArg::Simulated)]
    pub clock: ClockArg,
    /// How many times faster than the trace to run on the real clock or with --url.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Drive a running `pool serve` at this base URL (http:// only) instead of an
    /// in-process pool.
    #[arg(long)]
    pub url: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a plot of ready projects and stockouts over time to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Replay once per target in this inclusive range (e.g. `5..30`, simulated clock)
    /// and recommend the smallest that reaches --goal.
    #[arg(long, conflicts_with_all = ["url", "target"])]
    pub sweep: Option<TargetRange>,
    /// The warm hand-out percentage --sweep aims for.
    #[arg(long, default_value_t = 99.0)]
    pub goal: f64,
    /// The template every arrival asks for.
    #[arg(long, default_value = "default")]
    pub template: String,
    /// How long an arrival waits for a project when none is warm, before giving up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub wait: Duration,
    /// In-process replays: how long each conversation holds its project before it is
    /// archived (and recycled), or `forever`. Archiving keeps the stored pool small;
    /// holding changes no stockout, only store writes and the work per save.
    #[arg(long, default_value = "0s")]
    pub hold: Hold,
    /// With --url: what an arrival asks for when the pool is empty.
    #[arg(long, value_enum, default_value_t = OnEmptyArg::Wait)]
    pub on_empty: OnEmptyArg,
    /// With --url: the service's bearer token.
    #[arg(long, env = "POOL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// With --url: HTTP/1.1 keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// With --url: requests each connection may send before reading their answers
    /// (HTTP pipelining; 1 = none).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
}

/// What a sweep found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepResult {
    /// The warm hand-out goal, in percent.
    pub goal: f64,
    /// The smallest target that reached the goal, if any did.
    pub recommended: Option<usize>,
    /// One summary per target, smallest first.
    pub runs: Vec<Summary>,
}

/// Replays `trace` once per target in `range` on the simulated clock; `base` gives every
/// other setting.
pub fn sweep(
    trace: &Trace,
    base: &SimParams,
    range: TargetRange,
    goal: f64,
    progress: &ProgressBar,
) -> Result<SweepResult, ReplayError> {
    let mut runs = Vec::new();
    let mut recommended = None;
    for target in range.from..=range.to {
        progress.set_message(format!("target {target}"));
        progress.set_position(0);
        let params = SimParams {
            target,
            clock: SimClock::Simulated,
            ..base.clone()
        };
        let s = sim::run(trace, &params, progress)?.summary();
        if recommended.is_none() && s.warm_pct >= goal {
            recommended = Some(target);
        }
        runs.push(s);
    }
    Ok(SweepResult {
        goal,
        recommended,
        runs,
    })
}

fn progress_bar(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} arrivals ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_stdout(text: &str) -> Result<(), ReplayError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| ReplayError::Output {
            path: "standard output".into(),
            source,
        })
}

fn to_json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Runs `pool replay`: reads the trace, replays it as the options say, and prints the
/// result. Starts its own runtime, so call it outside of one.
pub fn run(args: ReplayArgs) -> Result<(), ReplayError> {
    let trace = match (&args.trace, args.rate, args.duration) {
        (Some(path), _, _) => Trace::read(path)?,
        (None, Some(rate), Some(duration)) => Trace::synthetic(rate, duration)?,
        _ => {
            return Err(ReplayError::Usage(
                "give a trace file, or --rate with --duration".into(),
            ));
        }
    };
    let template = TemplateName::new(args.template.clone())
        .map_err(|e| ReplayError::Usage(format!("--template: {e}")))?;
    let progress = progress_bar(trace.len());

    if let Some(url) = &args.url {
        let params = load::HttpParams {
            url: url.clone(),
            template: args.template.clone(),
            on_empty: args.on_empty.as_str(),
            wait: args.wait,
            api_token: args.api_token.clone().filter(|t| !t.is_empty()),
            concurrency: args.concurrency.max(1),
            pipeline: args.pipeline.max(1),
            speed: args.speed,
        };
        let data = load::run(&trace, &params, &progress)?;
        progress.finish_and_clear();
        return print_run(&args, &data);
    }

    let clock = match args.clock {
        ClockArg::Simulated => SimClock::Simulated,
        ClockArg::Real => SimClock::Real { speed: args.speed },
    };
    let base = SimParams {
        target: args.target.unwrap_or(0),
        provision_time: args.provision_time,
        max_in_flight: args.max_in_flight,
        template,
        wait: args.wait,
        hold: args.hold.0,
        clock,
    };
    if let Some(range) = args.sweep {
        if clock != SimClock::Simulated {
            return Err(ReplayError::Usage(
                "--sweep runs on the simulated clock only".into(),
            ));
        }
        let result = sweep(&trace, &base, range, args.goal, &progress)?;
        progress.finish_and_clear();
        return print_sweep(&args, &result);
    }
    if args.target.is_none() {
        return Err(ReplayError::Usage(
            "--target is required (or --sweep A..B, or --url)".into(),
        ));
    }
    progress.set_message(format!("target {}", base.target));
    let data = sim::run(&trace, &base, &progress)?;
    progress.finish_and_clear();
    print_run(&args, &data)
}

fn print_run(args: &ReplayArgs, data: &RunData) -> Result<(), ReplayError> {
    if let Some(path) = &args.svg {
        std::fs::write(path, report::svg(data)).map_err(|source| ReplayError::Output {
            path: path.display().to_string(),
            source,
        })?;
    }
    if args.json {
        write_stdout(&to_json(&data.summary()))
    } else {
        write_stdout(&data.human())
    }
}

fn print_sweep(args: &ReplayArgs, result: &SweepResult) -> Result<(), ReplayError> {
    if args.json {
        return write_stdout(&to_json(result));
    }
    let mut out = String::from(
        "target   warm %  stockouts  wait p99 ms  provisions  idle project-s  store writes\n",
    );
    for s in &result.runs {
        out.push_str(&format!(
            "{:>6} {:>8.3} {:>10} {:>12} {:>11} {:>15.1} {:>13}\n",
            s.target.unwrap_or(0),
            s.warm_pct,
            s.stockouts,
            s.wait_ms_p99,
            s.provisions,
            s.idle_project_seconds,
            s.store_writes
        ));
    }
    match result.recommended {
        Some(t) => out.push_str(&format!(
            "recommended target: {t} (the smallest with at least {} % warm hand-outs)\n",
            result.goal
        )),
        None => out.push_str(&format!(
            "no target in the range reached {} % warm hand-outs; try larger ones\n",
            result.goal
        )),
    }
    write_stdout(&out)
}
