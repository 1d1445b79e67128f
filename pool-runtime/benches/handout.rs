//! Allocate-and-save three ways, against an in-memory store with injected save latency.
//!
//! * **blocking**: the caller awaits its own save of the whole pool, one save per
//!   allocation, saves one at a time so they stay in order (the behaviour of a manager
//!   that saves synchronously). Built here on a `Mutex<Pool>` and the store directly.
//! * **write-behind**: [`PoolManager`] in [`Durability::WriteBehind`]; `allocate` takes a
//!   stored reservation and returns, the saver writes behind.
//! * **durable**: [`PoolManager`] in [`Durability::Durable`]; `allocate` returns once its
//!   allocation is stored, and callers waiting together share one write.
//!
//! Every cell runs on a real clock, closed loop (each caller allocates again as soon as
//! its previous allocation returned), until its time or allocation budget is spent.
//! Each `allocate` call is timed with [`std::time::Instant`]; percentiles come from every
//! sample. Store writes are the store's save attempts from the first allocation until
//! everything handed out is stored. After each cell the stored pool is loaded and must
//! hold exactly as many allocations as were made.
//!
//! `cargo bench -p pool-runtime --bench handout` runs the full set (a couple of minutes on
//! 2 cores). Run without `--bench` (as `cargo test --benches` does), it only smoke-tests
//! every path with tiny budgets.

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, ProjectId, ProjectState, TemplateName,
    Timestamp,
};
use pool_runtime::{Durability, ManagerConfig, OnEmpty, PoolManager, TemplateConfig};
use pool_storage::{Latency, MemoryStore, Op, PoolStore, PoolWrite, Precondition, Revision};
use tokio::task::JoinSet;

type BenchError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BenchError>;

/// Budgets and the grid of cells.
struct Plan {
    /// The longest a closed-loop cell starts new allocations.
    cell_time: Duration,
    /// The most allocations one closed-loop write-behind cell makes.
    cap: usize,
    /// The most allocations one closed-loop blocking or durable cell makes. Their every
    /// allocation waits for a save whose cost grows with the pool, so their pool is kept
    /// small: this flatters them, never the write-behind rows.
    cap_waiting: usize,
    latencies_ms: Vec<u64>,
    callers: Vec<usize>,
    /// Arrival rate and duration of the open-loop runs.
    open_rate: u64,
    open_time: Duration,
    /// The durable group-commit headline cell.
    headline_latency_ms: u64,
    headline_callers: usize,
    headline_time: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            cell_time: Duration::from_millis(1_500),
            cap: 20_000,
            cap_waiting: 2_000,
            latencies_ms: vec![0, 1, 10, 50],
            callers: vec![1, 64],
            open_rate: 1_000,
            open_time: Duration::from_secs(3),
            headline_latency_ms: 20,
            headline_callers: 64,
            headline_time: Duration::from_secs(2),
        }
    }

    fn smoke() -> Self {
        Self {
            cell_time: Duration::from_millis(50),
            cap: 200,
            cap_waiting: 100,
            latencies_ms: vec![0, 1],
            callers: vec![1, 8],
            open_rate: 1_000,
            open_time: Duration::from_millis(100),
            headline_latency_ms: 1,
            headline_callers: 8,
            headline_time: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Blocking,
    WriteBehind,
    Durable,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Blocking, Mode::WriteBehind, Mode::Durable];

    fn name(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking",
            Mode::WriteBehind => "write-behind",
            Mode::Durable => "durable",
        }
    }
}

/// One cell to run.
#[derive(Debug, Clone)]
struct Spec {
    mode: Mode,
    latency_ms: u64,
    callers: usize,
    time: Duration,
    cap: usize,
    /// The manager's `max_unsaved`; `None` keeps the default.
    max_unsaved: Option<usize>,
}

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    latency_ms: u64,
    callers: String,
    allocations: usize,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
    writes: u64,
    /// What the manager's saver did, for the notes under the table.
    note: Option<String>,
}

impl Row {
    fn writes_per_alloc(&self) -> f64 {
        self.writes as f64 / self.allocations.max(1) as f64
    }

    fn print(&self) {
        println!(
            "| {} | {} ms | {} | {} | {} | {} | {:.0} | {:.4} |",
            self.label,
            self.latency_ms,
            self.callers,
            self.allocations,
            show(self.p50),
            show(self.p99),
            self.per_sec,
            self.writes_per_alloc()
        );
    }
}

fn show(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn template() -> Result<TemplateName> {
    Ok(TemplateName::new("default")?)
}

fn project_ids(n: usize) -> Result<Vec<ProjectId>> {
    (0..n)
        .map(|i| Ok(ProjectId::new(format!("default-{i:06}-0bench"))?))
        .collect()
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The baseline: allocation and a whole-pool save awaited by the caller.
struct Blocking {
    store: MemoryStore,
    owner: OwnerId,
    template: TemplateName,
    pool: Mutex<Pool>,
    /// The stored revision; held across each save, so saves run one at a time, in order.
    revision: tokio::sync::Mutex<Revision>,
    tokens: AtomicUsize,
}

impl Blocking {
    async fn start(store: &MemoryStore, projects: usize) -> Result<Self> {
        let (owner, template) = (OwnerId::new("blocking")?, template()?);
        let mut pool = Pool::new();
        let at = now();
        for id in project_ids(projects)? {
            pool.add_available(id, template.clone(), at)?;
        }
        pool.reserve(&owner, &template, projects, at);
        pool.renew_owner(&owner, at.saturating_add(Duration::from_secs(3_600)));
        let write = PoolWrite::Full(pool.snapshot());
        let revision = store.save(&write, &Precondition::CreateOnly).await?;
        pool.mark_saved(pool.version());
        Ok(Self {
            store: store.clone(),
            owner,
            template,
            pool: Mutex::new(pool),
            revision: tokio::sync::Mutex::new(revision),
            tokens: AtomicUsize::new(0),
        })
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn allocate(&self, conversation: &ConversationId) -> Result<()> {
        let mut revision = self.revision.lock().await;
        let token = AllocationToken::from_u64(self.tokens.fetch_add(1, Ordering::Relaxed) as u64);
        let snapshot = {
            let mut pool = self.pool();
            let lease = Duration::from_secs(300);
            pool.allocate(
                &self.owner,
                conversation,
                &self.template,
                token,
                now(),
                lease,
            )?;
            pool.snapshot()
        };
        let version = snapshot.pool_version;
        let write = PoolWrite::Full(snapshot);
        let precondition = Precondition::Matches(revision.clone());
        *revision = self.store.save(&write, &precondition).await?;
        self.pool().mark_saved(version);
        Ok(())
    }
}

/// What a cell allocates from.
#[derive(Clone)]
enum Target {
    Blocking(Arc<Blocking>),
    Manager(PoolManager, TemplateName),
}

impl Target {
    async fn start(spec: &Spec, store: &MemoryStore, projects: usize) -> Result<Self> {
        let durability = match spec.mode {
            Mode::Blocking => {
                return Ok(Self::Blocking(Arc::new(
                    Blocking::start(store, projects).await?,
                )));
            }
            Mode::WriteBehind => Durability::WriteBehind,
            Mode::Durable => Durability::Durable,
        };
        let template = template()?;
        let mut config = ManagerConfig {
            templates: vec![TemplateConfig::new(template.clone(), projects)],
            durability,
            ..ManagerConfig::default()
        };
        if let Some(max) = spec.max_unsaved {
            config.max_unsaved = max;
        }
        let m = PoolManager::builder(Arc::new(store.clone()))
            .config(config)
            .start()
            .await?;
        m.add_projects(&template, project_ids(projects)?).await?;
        wait_reserved(&m, &template, projects).await?;
        Ok(Self::Manager(m, template))
    }

    async fn allocate(&self, conversation: &ConversationId) -> Result<()> {
        match self {
            Self::Blocking(b) => b.allocate(conversation).await,
            Self::Manager(m, t) => {
                m.allocate(conversation, t, OnEmpty::Fail).await?;
                Ok(())
            }
        }
    }

    /// The manager's stored saves and their total time in microseconds.
    fn saver(&self) -> (u64, u64) {
        match self {
            Self::Blocking(_) => (0, 0),
            Self::Manager(m, _) => {
                let metrics = m.metrics();
                (metrics.saves, metrics.save_micros)
            }
        }
    }

    /// Waits until everything handed out is stored.
    async fn flush(&self) -> Result<()> {
        if let Self::Manager(m, _) = self {
            m.flush().await?;
        }
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        if let Self::Manager(m, _) = self {
            let report = m.shutdown(Duration::from_secs(30)).await;
            if !report.clean {
                return Err(format!("shutdown was not clean: {report:?}").into());
            }
        }
        Ok(())
    }
}

/// Waits until the manager holds `n` stored reservations.
async fn wait_reserved(m: &PoolManager, template: &TemplateName, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = m.status();
        let here = status
            .templates
            .get(template)
            .map_or(0, |t| t.reserved_here);
        if here >= n && status.unsaved_changes == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {here} of {n} projects reserved in time").into());
        }
        tokio::time::sleep(ms(5)).await;
    }
}

/// How many projects the stored pool holds as allocated.
async fn stored_allocations(store: &MemoryStore) -> Result<usize> {
    let stored = store.load().await?.ok_or("no pool stored")?;
    let allocated = stored.value.projects.iter();
    Ok(allocated
        .filter(|r| matches!(r.state, ProjectState::Allocated { .. }))
        .count())
}

fn conversation(i: usize) -> Result<ConversationId> {
    Ok(ConversationId::new(format!("conv-{i}"))?)
}

/// One closed-loop caller: allocates until the budget is spent; returns its samples.
async fn caller(
    target: Target,
    next: Arc<AtomicUsize>,
    cap: usize,
    deadline: Instant,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(1_024);
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= cap {
            break;
        }
        let conv = conversation(i)?;
        let started = Instant::now();
        target.allocate(&conv).await?;
        samples.push(started.elapsed());
        // A request handler does other work between hand-outs; let the other callers in.
        tokio::task::yield_now().await;
    }
    Ok(samples)
}

/// Runs every caller to the end; returns all samples and the wall time taken.
async fn closed_loop(target: &Target, spec: &Spec) -> Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + spec.time;
    let mut tasks = JoinSet::new();
    for _ in 0..spec.callers {
        tasks.spawn(caller(target.clone(), next.clone(), spec.cap, deadline));
    }
    let mut samples = Vec::with_capacity(spec.cap);
    while let Some(done) = tasks.join_next().await {
        samples.extend(done??);
    }
    Ok((samples, started.elapsed()))
}

fn row(label: String, latency_ms: u64, callers: String, samples: Vec<Duration>) -> Row {
    let mut sorted = samples;
    sorted.sort_unstable();
    Row {
        label,
        latency_ms,
        callers,
        allocations: sorted.len(),
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        per_sec: 0.0,
        writes: 0,
        note: None,
    }
}

/// Checks that the store holds exactly the allocations made, then stops the target.
async fn settle(target: Target, store: &MemoryStore, made: usize) -> Result<()> {
    store.set_latency(Op::Save, Latency::None);
    let stored = stored_allocations(store).await?;
    if stored != made {
        return Err(format!("{made} allocations made but {stored} stored").into());
    }
    target.stop().await
}

async fn run_cell(spec: &Spec, label: String) -> Result<Row> {
    let store = MemoryStore::new();
    let target = Target::start(spec, &store, spec.cap + spec.callers).await?;
    store.set_latency(Op::Save, Latency::Fixed(ms(spec.latency_ms)));
    let (before, saver_before) = (store.counters().saves_attempted, target.saver());
    let (samples, elapsed) = closed_loop(&target, spec).await?;
    target.flush().await?;
    let writes = store.counters().saves_attempted - before;
    let mut r = row(label, spec.latency_ms, spec.callers.to_string(), samples);
    r.per_sec = r.allocations as f64 / elapsed.as_secs_f64();
    r.writes = writes;
    if spec.mode == Mode::Durable {
        r.note = Some(saver_note(&r, saver_before, target.saver(), elapsed));
    }
    settle(target, &store, r.allocations).await?;
    Ok(r)
}

/// How often the saver wrote during a run and how long its writes took.
fn saver_note(r: &Row, before: (u64, u64), after: (u64, u64), elapsed: Duration) -> String {
    let saves = after.0 - before.0;
    let mean = Duration::from_micros((after.1 - before.1) / saves.max(1));
    format!(
        "{}, {} ms store, callers {}: {saves} saves in {}, {:.1} saves/s, mean save {}, \
         {:.1} allocations per save",
        r.label,
        r.latency_ms,
        r.callers,
        show(elapsed),
        saves as f64 / elapsed.as_secs_f64(),
        show(mean),
        r.allocations as f64 / saves.max(1) as f64
    )
}

/// Write-behind with the default configuration under an open-loop arrival of
/// `plan.open_rate` allocations per second.
async fn run_open_loop(plan: &Plan, latency_ms: u64) -> Result<Row> {
    let n = (plan.open_rate as f64 * plan.open_time.as_secs_f64()) as usize;
    let spec = Spec {
        mode: Mode::WriteBehind,
        latency_ms,
        callers: 1,
        time: plan.open_time,
        cap: n,
        max_unsaved: None,
    };
    let store = MemoryStore::new();
    let target = Target::start(&spec, &store, n).await?;
    store.set_latency(Op::Save, Latency::Fixed(ms(latency_ms)));
    let (before, saver_before) = (store.counters().saves_attempted, target.saver());
    let (samples, elapsed) = arrivals(&target, plan.open_rate, n).await?;
    target.flush().await?;
    let writes = store.counters().saves_attempted - before;
    let label = format!("write-behind, open loop {}/s", plan.open_rate);
    let mut r = row(label, latency_ms, "open".into(), samples);
    r.per_sec = r.allocations as f64 / elapsed.as_secs_f64();
    r.writes = writes;
    r.note = Some(saver_note(&r, saver_before, target.saver(), elapsed));
    settle(target, &store, r.allocations).await?;
    Ok(r)
}

/// Starts allocation `i` at `i / rate` seconds, each as its own task, whether or not the
/// earlier ones have returned.
async fn arrivals(target: &Target, rate: u64, n: usize) -> Result<(Vec<Duration>, Duration)> {
    let started = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(started + gap.mul_f64(i as f64)).await;
        let (target, conv) = (target.clone(), conversation(i)?);
        tasks.spawn(async move {
            let t0 = Instant::now();
            target.allocate(&conv).await.map(|()| t0.elapsed())
        });
    }
    let mut samples = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        samples.push(done??);
    }
    Ok((samples, started.elapsed()))
}

fn header() {
    println!();
    println!(
        "| mode | store latency | callers | allocations | p50 | p99 | allocations/s | writes/alloc |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
}

/// Every mode at every latency and caller count.
async fn grid(plan: &Plan) -> Result<Vec<(Spec, Row)>> {
    let mut rows = Vec::new();
    for &latency_ms in &plan.latencies_ms {
        for &callers in &plan.callers {
            for mode in Mode::ALL {
                let cap = match mode {
                    Mode::WriteBehind => plan.cap,
                    Mode::Blocking | Mode::Durable => plan.cap_waiting,
                };
                let spec = Spec {
                    mode,
                    latency_ms,
                    callers,
                    time: plan.cell_time,
                    cap,
                    // Closed-loop callers outrun any save; the cap is lifted so the
                    // rows show the hand-out itself. The backpressure row shows the default.
                    max_unsaved: Some(plan.cap + callers),
                };
                let r = run_cell(&spec, mode.name().into()).await?;
                r.print();
                rows.push((spec, r));
            }
        }
    }
    Ok(rows)
}

fn find(rows: &[(Spec, Row)], mode: Mode, latency_ms: u64, callers: usize) -> Option<&Row> {
    rows.iter()
        .find(|(s, _)| s.mode == mode && s.latency_ms == latency_ms && s.callers == callers)
        .map(|(_, r)| r)
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// Prints the three headline figures against their targets.
fn headlines(rows: &[(Spec, Row)], durable: &Row, open: &[Row], plan: &Plan) {
    let worst = plan.latencies_ms.iter().copied().max().unwrap_or(0);
    println!();
    println!("Headlines (store latency {worst} ms for the first):");
    for &callers in &plan.callers {
        let wb = find(rows, Mode::WriteBehind, worst, callers);
        let bl = find(rows, Mode::Blocking, worst, callers);
        if let (Some(wb), Some(bl)) = (wb, bl) {
            let ratio = bl.p99.as_secs_f64() / wb.p99.as_secs_f64().max(1e-9);
            let met = wb.p99 < Duration::from_micros(5) && ratio >= 10_000.0;
            println!(
                "- write-behind p99 {} vs blocking p99 {} with {callers} caller(s): {ratio:.0}x \
                 (target < 5 us and >= 10,000x): {}",
                show(wb.p99),
                show(bl.p99),
                verdict(met)
            );
        }
    }
    println!(
        "- durable group commit, {} ms store, {} callers: {:.0} allocations/s \
         (target >= 2,000): {}",
        durable.latency_ms,
        durable.callers,
        durable.per_sec,
        verdict(durable.per_sec >= 2_000.0)
    );
    for r in open {
        println!(
            "- write-behind at {:.0} allocations/s (open loop), {} ms store: {:.4} writes/alloc \
             (target <= 0.05): {}",
            r.per_sec,
            r.latency_ms,
            r.writes_per_alloc(),
            verdict(r.writes_per_alloc() <= 0.05)
        );
    }
}

/// Write-behind under closed-loop overload with the default backpressure limit.
async fn backpressure_row(plan: &Plan, latency_ms: u64) -> Result<Row> {
    let spec = Spec {
        mode: Mode::WriteBehind,
        latency_ms,
        callers: plan.headline_callers,
        time: plan.cell_time,
        cap: plan.cap,
        max_unsaved: None,
    };
    let label = "write-behind, default max_unsaved 1,000 (backpressure)".to_owned();
    run_cell(&spec, label).await
}

/// Durable group commit at the headline latency and caller count.
async fn durable_headline(plan: &Plan) -> Result<Row> {
    let spec = Spec {
        mode: Mode::Durable,
        latency_ms: plan.headline_latency_ms,
        callers: plan.headline_callers,
        time: plan.headline_time,
        cap: plan.cap_waiting,
        max_unsaved: None,
    };
    run_cell(&spec, "durable (headline)".into()).await
}

fn print_notes<'a>(rows: impl Iterator<Item = &'a Row>) {
    println!();
    println!("Saver activity (stored saves, from the first allocation until all were stored):");
    for note in rows.filter_map(|r| r.note.as_ref()) {
        println!("- {note}");
    }
}

async fn run(plan: Plan) -> Result<()> {
    header();
    let rows = grid(&plan).await?;
    let worst = plan.latencies_ms.iter().copied().max().unwrap_or(0);
    backpressure_row(&plan, worst).await?.print();
    let durable = durable_headline(&plan).await?;
    durable.print();
    let mut open = Vec::new();
    for &latency_ms in &plan.latencies_ms {
        let r = run_open_loop(&plan, latency_ms).await?;
        r.print();
        open.push(r);
    }
    let grid_rows = rows.iter().map(|(_, r)| r);
    print_notes(grid_rows.chain([&durable]).chain(open.iter()));
    headlines(&rows, &durable, &open, &plan);
    Ok(())
}

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { Plan::full() } else { Plan::smoke() };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "hand-out benchmark ({} run), {cores} core(s); closed-loop cells run {} ms or \
         {} allocations (write-behind) / {} (blocking, durable), whichever comes first, \
         on a pool of that many projects plus one per caller",
        if full { "full" } else { "smoke" },
        plan.cell_time.as_millis(),
        plan.cap,
        plan.cap_waiting
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(plan))
}
