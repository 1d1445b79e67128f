//! Two manager processes sharing one bucket prefix.
//!
//! This binary is also the manager: run with `POOL_S3_MANAGER_PROCESS` set it runs one
//! (`manager.rs`); otherwise it runs the scenarios, each starting two managers and
//! checking, from what they acknowledged and what is stored, that no project was held
//! twice. Pass words as arguments to run only the scenarios whose names contain them.

#[path = "../common/mod.rs"]
mod common;
mod manager;
mod parent;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pool_core::{Pool, ProjectState};

use manager::{Plan, now_ms};
use parent::{Report, Running, stored_pool};

/// A scenario by name.
type Scenario = (&'static str, fn(&common::Emulator));

fn plan(prefix: &str, owner: &str, conversations: usize) -> Plan {
    Plan {
        prefix: prefix.to_owned(),
        owner: owner.to_owned(),
        conversations,
        pause: Duration::ZERO,
        start_at_ms: now_ms() + 1_500,
        owner_lease: Duration::from_secs(30),
        when_alone: 0,
    }
}

/// No project went to two conversations, and the stored pool shows each hand-out.
/// Returns how many hand-outs there were.
fn held_once_and_stored(reports: &[&Report], pool: &Pool) -> usize {
    let mut holder = HashMap::new();
    for (conversation, project) in reports.iter().flat_map(|r| &r.handouts) {
        if let Some(first) = holder.insert(project, conversation) {
            panic!("{project} was handed to {first} and to {conversation}");
        }
    }
    for (project, conversation) in &holder {
        let record = pool.records().find(|r| r.id.as_str() == project.as_str());
        let stored = record
            .and_then(|r| r.state.holder())
            .map(|(c, _)| c.to_string());
        assert_eq!(
            stored.as_deref(),
            Some(conversation.as_str()),
            "{project} stored as held"
        );
    }
    holder.len()
}

fn two_managers_share_one_bucket(emulator: &common::Emulator) {
    let prefix = common::random_prefix();
    let a = Running::start(&plan(&prefix, "manager-a", 1_000));
    let b = Running::start(&plan(&prefix, "manager-b", 1_000));
    let (a, b) = (a.finish(), b.finish());
    let pool = stored_pool(emulator, &prefix);
    assert_eq!(held_once_and_stored(&[&a, &b], &pool), 2_000);
    for r in [&a, &b] {
        assert_eq!(
            r.stats["clean"], true,
            "{} stored everything before stopping",
            r.owner
        );
        let rebased = r.stat(&["metrics", "conflicts"]);
        assert_eq!(
            rebased,
            r.stat(&["store_conflicts"]),
            "{}: each conflict rebased",
            r.owner
        );
    }
    assert_eq!(
        a.stat(&["creates_won"]) + b.stat(&["creates_won"]),
        1,
        "one create"
    );
    figures(&[&a, &b]);
}

fn a_killed_manager_is_quarantined_by_the_survivor(emulator: &common::Emulator) {
    let prefix = common::random_prefix();
    let lease = Duration::from_secs(3);
    let mut doomed = plan(&prefix, "manager-a", 5_000);
    (doomed.pause, doomed.owner_lease) = (Duration::from_millis(100), lease);
    let mut survivor = plan(&prefix, "manager-b", 300);
    (survivor.pause, survivor.owner_lease, survivor.when_alone) =
        (Duration::from_millis(4), lease, 300);
    let (a, b) = (Running::start(&doomed), Running::start(&survivor));
    let a = a.kill_after(100);
    let b = b.finish();
    let quarantined = b.stat(&["metrics", "quarantined"]);
    assert!(
        quarantined > 0,
        "the survivor quarantined the dead manager's reservations"
    );

    let pool = stored_pool(emulator, &prefix);
    let reissued: HashSet<&String> = b.handouts.iter().map(|(_, p)| p).collect();
    for (conversation, project) in &a.handouts {
        assert!(
            !reissued.contains(project),
            "{project} went to {conversation}, then again"
        );
        match pool
            .records()
            .find(|r| r.id.as_str() == project)
            .map(|r| &r.state)
        {
            None | Some(ProjectState::Quarantined { .. }) => {}
            Some(state) => {
                let holder = state.holder().map(|(c, _)| c.to_string());
                assert_eq!(
                    holder.as_ref(),
                    Some(conversation),
                    "{project} stored as {state:?}"
                );
            }
        }
    }
    let left = pool.records().filter(
        |r| matches!(&r.state, ProjectState::Reserved { owner } if owner.as_str() == "manager-a"),
    );
    assert_eq!(
        left.count(),
        0,
        "every reservation of the dead manager was quarantined"
    );
    held_once_and_stored(&[&b], &pool);
    println!(
        "  A acknowledged {} hand-outs, then SIGKILL; B quarantined {quarantined}",
        a.handouts.len()
    );
}

/// Allocation rate, requests and conflicts of a shared run.
fn figures(reports: &[&Report]) {
    let sum = |path: &[&str]| reports.iter().map(|r| r.stat(path)).sum::<u64>();
    let allocations = reports.iter().map(|r| r.handouts.len()).sum::<usize>() as f64;
    let slowest_ms = reports
        .iter()
        .map(|r| r.stat(&["allocating_ms"]))
        .max()
        .unwrap_or(1);
    let (requests, saves) = (sum(&["requests_allocating"]), sum(&["metrics", "saves"]));
    let conflicts = sum(&["metrics", "conflicts"]);
    println!(
        "  {allocations} allocations in {slowest_ms} ms: {:.0}/s for both managers",
        allocations * 1000.0 / slowest_ms.max(1) as f64
    );
    println!(
        "  {requests} requests while allocating: {:.3} per allocation; {saves} saves stored",
        requests as f64 / allocations
    );
    println!(
        "  {conflicts} conflicts: {:.1} per 1,000 allocations",
        conflicts as f64 * 1000.0 / allocations
    );
}

fn main() {
    if std::env::var_os(parent::MANAGER).is_some() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(manager::run());
        return;
    }
    let Some(emulator) = common::emulator() else {
        return;
    };
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let scenarios: [Scenario; 2] = [
        (
            "two_managers_share_one_bucket",
            two_managers_share_one_bucket,
        ),
        (
            "a_killed_manager_is_quarantined_by_the_survivor",
            a_killed_manager_is_quarantined_by_the_survivor,
        ),
    ];
    let mut ran = 0;
    for (name, scenario) in scenarios {
        if only.iter().all(|word| name.contains(word.as_str())) {
            println!("test {name} ...");
            scenario(&emulator);
            println!("test {name} ... ok");
            ran += 1;
        }
    }
    println!("{ran} passed, 0 failed");
}
