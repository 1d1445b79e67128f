//! A pool of 100,000 projects in a database file: saving 100 changed projects
//! incrementally against rewriting the whole pool, loading the pool, and opening the file.
//!
//! Bytes written are counted by the kernel (`wchar` of `/proc/self/io`: every byte this
//! process passed to `write`, so WAL frames and checkpoints into the main file alike), and
//! printed as an average per save once each benchmark has run. The JSON size of the
//! records saved is printed beside it for scale.
#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros generate undocumented items

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use pool_core::{OwnerId, Pool, ProjectId, TemplateName, Timestamp};
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{PoolStore, PoolWrite, Precondition, Revision};
use tokio::runtime::Runtime;

const POOL: usize = 100_000;
const CHANGED: usize = 100;

struct Fixture {
    rt: Runtime,
    _dir: tempfile::TempDir,
    store: SqliteStore,
    pool: Pool,
    rev: Revision,
    owner: OwnerId,
    template: TemplateName,
    reserved: bool,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::file(dir.path().join("bench.db"));
        let store = rt.block_on(SqliteStore::open(config)).unwrap();
        let template = TemplateName::new("default").unwrap();
        let mut pool = Pool::new();
        for i in 0..POOL {
            let id = ProjectId::new(format!("default-{i:06}-0a1b2")).unwrap();
            pool.add_available(id, template.clone(), Timestamp::from_millis(1))
                .unwrap();
        }
        let write = PoolWrite::Full(pool.snapshot());
        let rev = rt
            .block_on(store.save(&write, &Precondition::CreateOnly))
            .unwrap();
        pool.mark_saved(pool.version());
        let owner = OwnerId::new("bench").unwrap();
        Self {
            rt,
            _dir: dir,
            store,
            pool,
            rev,
            owner,
            template,
            reserved: false,
        }
    }

    /// Changes exactly 100 projects: reserves 100, or releases the 100 reserved.
    fn change_100(&mut self) {
        let now = Timestamp::from_millis(2);
        let moved = if self.reserved {
            self.pool.release_owner(&self.owner, now).len()
        } else {
            self.pool
                .reserve(&self.owner, &self.template, CHANGED, now)
                .len()
        };
        assert_eq!(moved, CHANGED);
        self.reserved = !self.reserved;
    }

    /// Times one save of `write`; counts the bytes it wrote into `bytes`.
    fn timed_save(&mut self, write: &PoolWrite, bytes: &Cell<(u64, u64)>) -> Duration {
        let before = written_bytes();
        let start = Instant::now();
        let rev = self.rt.block_on(
            self.store
                .save(write, &Precondition::Matches(self.rev.clone())),
        );
        let took = start.elapsed();
        let (total, saves) = bytes.get();
        bytes.set((total + written_bytes().saturating_sub(before), saves + 1));
        self.rev = rev.unwrap();
        self.pool.mark_saved(self.pool.version());
        took
    }
}

/// Bytes this process has passed to `write` so far (0 where `/proc` is missing).
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let line = io.lines().find_map(|l| l.strip_prefix("wchar: "));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

fn json_bytes(write: &PoolWrite) -> usize {
    let records = match write {
        PoolWrite::Full(s) => &s.projects,
        PoolWrite::Changes(c) => &c.changed,
    };
    records
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len())
        .sum()
}

fn report(name: &str, bytes: &Cell<(u64, u64)>, json: usize) {
    let (total, saves) = bytes.get();
    if saves == 0 {
        return; // filtered out
    }
    let per_save = total / saves;
    println!(
        "{name}: {per_save} bytes written per save (avg of {saves}); records as JSON {json} bytes"
    );
}

fn bench_saves(c: &mut Criterion) {
    let mut f = Fixture::new();
    let mut group = c.benchmark_group("save_100k");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let incremental = Cell::new((0, 0));
    let mut json = 0;
    group.bench_function("incremental_100_changed", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    f.change_100();
                    let write = PoolWrite::Changes(f.pool.unsaved());
                    json = json_bytes(&write);
                    f.timed_save(&write, &incremental)
                })
                .sum()
        })
    });
    report("incremental_100_changed", &incremental, json);

    let full = Cell::new((0, 0));
    group.bench_function("full_rewrite", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    f.change_100();
                    let write = PoolWrite::Full(f.pool.snapshot());
                    json = json_bytes(&write);
                    f.timed_save(&write, &full)
                })
                .sum()
        })
    });
    report("full_rewrite", &full, json);
    group.finish();

    let mut group = c.benchmark_group("load_100k");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("load", |b| {
        b.iter(|| {
            let loaded = f.rt.block_on(f.store.load()).unwrap().unwrap();
            assert_eq!(loaded.value.projects.len(), POOL);
            loaded
        })
    });
    group.finish();
}

/// Opening the file of a 100,000-project pool, with and without the page check.
fn bench_open(c: &mut Criterion) {
    let f = Fixture::new();
    let mut group = c.benchmark_group("open_100k");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let path = f.store.location().to_owned();
    for (name, verify_on_open) in [("checked", true), ("unchecked", false)] {
        let config = SqliteConfig {
            verify_on_open,
            ..SqliteConfig::file(&path)
        };
        group.bench_function(name, |b| {
            b.iter(|| f.rt.block_on(SqliteStore::open(config.clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_saves, bench_open);
criterion_main!(benches);
