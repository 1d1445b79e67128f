//! Allocate on pools of 1,000, 10,000 and 100,000 projects: the cost must grow no faster
//! than the logarithm of the pool's size (what growth there is comes from cache misses).
//!
//! Each pool has half its projects held by conversations and 40% reserved by the owner that
//! allocates, and counts as saved. A sample hands reserved projects to new conversations in
//! chunks; only those calls are timed. Between chunks the projects are given back
//! (untimed) so that the pool keeps its size and shape, and no pool is cloned per
//! iteration: a clone of a 100,000-project pool would cost far more than the allocation.
#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, ProjectId, TemplateName, Timestamp,
};

const LEASE: Duration = Duration::from_secs(60);

struct Setup {
    pool: Pool,
    owner: OwnerId,
    template: TemplateName,
    /// Conversations that hold nothing, one per allocation in a chunk.
    fresh: Vec<ConversationId>,
    /// A conversation that already holds a project.
    holding: ConversationId,
}

fn setup(n: usize) -> Setup {
    let mut pool = Pool::new();
    let template = TemplateName::new("default").unwrap();
    let owner = OwnerId::new("bench").unwrap();
    let now = Timestamp::from_millis(0);
    for i in 0..n {
        let id = ProjectId::new(format!("default-{i}-00000")).unwrap();
        pool.add_available(id, template.clone(), now).unwrap();
    }
    pool.reserve(&owner, &template, n * 9 / 10, now);
    for i in 0..n / 2 {
        let chat = ConversationId::new(format!("held-{i}")).unwrap();
        let token = AllocationToken::from_u64(i as u64);
        pool.allocate(&owner, &chat, &template, token, now, LEASE)
            .unwrap();
    }
    pool.mark_saved(pool.version());
    let chunk = (n / 5).min(5_000);
    let fresh = (0..chunk)
        .map(|i| ConversationId::new(format!("c-{i}")).unwrap())
        .collect();
    let holding = ConversationId::new("held-0").unwrap();
    Setup {
        pool,
        owner,
        template,
        fresh,
        holding,
    }
}

/// Times `iters` fresh allocations; returns the time spent in `allocate` alone.
fn allocate_fresh(s: &mut Setup, iters: u64) -> Duration {
    let now = Timestamp::from_millis(1);
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = s
            .fresh
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let chats = &s.fresh[..k];
        let start = Instant::now();
        for (i, chat) in chats.iter().enumerate() {
            let token = AllocationToken::from_u64(i as u64);
            black_box(
                s.pool
                    .allocate(&s.owner, chat, &s.template, token, now, LEASE)
                    .unwrap(),
            );
        }
        timed += start.elapsed();
        for chat in chats {
            let got = s.pool.holder_of(chat).unwrap();
            s.pool
                .return_undelivered(&got.project, got.token, now)
                .unwrap();
        }
        left -= k as u64;
    }
    timed
}

fn bench_allocate(c: &mut Criterion) {
    for n in [1_000usize, 10_000, 100_000] {
        let mut s = setup(n);
        let mut group = c.benchmark_group(format!("allocate/pool={n}"));
        group.bench_function("fresh", |b| {
            b.iter_custom(|iters| allocate_fresh(&mut s, iters))
        });
        group.bench_function("repeat", |b| {
            let now = Timestamp::from_millis(1);
            let token = AllocationToken::from_u64(7);
            b.iter(|| {
                let got = s
                    .pool
                    .allocate(&s.owner, &s.holding, &s.template, token, now, LEASE);
                black_box(got.unwrap())
            })
        });
        group.finish();
        assert_eq!(s.pool.reserved_count(&s.owner, &s.template), n * 2 / 5);
        s.pool.check_invariants().unwrap();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_allocate
}
criterion_main!(benches);
