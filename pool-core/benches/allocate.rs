//! Allocate on pools of 1,000 and 100,000 projects: the cost must not grow with the pool.
#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros generate undocumented items

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pool_core::{AllocationToken, ConversationId, OwnerId, Pool, ProjectId, TemplateName, Timestamp};

fn pool_of(n: usize) -> (Pool, OwnerId, TemplateName) {
    let mut pool = Pool::new();
    let t = TemplateName::new("default").unwrap();
    let owner = OwnerId::new("bench").unwrap();
    let now = Timestamp::from_millis(0);
    for i in 0..n {
        let id = ProjectId::new(format!("default-{i}-00000")).unwrap();
        pool.add_available(id, t.clone(), now).unwrap();
    }
    pool.reserve(&owner, &t, n, now);
    (pool, owner, t)
}

fn bench_allocate(c: &mut Criterion) {
    let conversations: Vec<ConversationId> =
        (0..1_000).map(|i| ConversationId::new(format!("c-{i}")).unwrap()).collect();
    for n in [1_000usize, 100_000] {
        let (pool, owner, t) = pool_of(n);
        let mut group = c.benchmark_group(format!("allocate/pool={n}"));
        group.bench_function("one", |b| {
            b.iter_batched_ref(
                || pool.clone(),
                |p| {
                    let now = Timestamp::from_millis(1);
                    let tok = AllocationToken::from_u64(1);
                    p.allocate(&owner, &conversations[0], &t, tok, now, Duration::from_secs(60)).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench_allocate);
criterion_main!(benches);
