//! Several manager processes sharing one Azurite container.
//!
//! The test binary is its own child: started with `POOL_AZURE_CHILD` set, it runs one
//! manager (see `child.rs`); otherwise it runs the scenarios below, each starting two such
//! processes on one prefix and checking, from their reports and the stored pool, that no
//! project was held twice and every acknowledged hand-out was stored or made safe.

mod child;
#[path = "../common/mod.rs"]
mod common;
mod parent;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pool_core::{Pool, ProjectState};

use child::{Spec, wall_ms};
use parent::{Report, Running, stored_pool};

fn spec(prefix: &str, owner: &str, conversations: usize) -> Spec {
    Spec {
        prefix: prefix.to_owned(),
        owner: owner.to_owned(),
        conversations,
        pace: Duration::ZERO,
        start_at_ms: wall_ms() + 1_500,
        owner_lease: Duration::from_secs(30),
        after_quarantine: 0,
    }
}

/// Every conversation holds one project, no project is held by two conversations, and
/// the stored pool records each of these hand-outs.
fn check_handouts(reports: &[&Report], pool: &Pool) -> usize {
    let mut holder_of = HashMap::new();
    for (conv, project) in reports.iter().flat_map(|r| &r.handouts) {
        if let Some(other) = holder_of.insert(project.clone(), conv.clone()) {
            panic!("project {project} was handed to {other} and to {conv}");
        }
    }
    for (project, conv) in &holder_of {
        let record = pool.records().find(|r| r.id.as_str() == project);
        let holder = record
            .and_then(|r| r.state.holder())
            .map(|(c, _)| c.to_string());
        assert_eq!(
            holder.as_ref(),
            Some(conv),
            "hand-out of {project} to {conv} is stored"
        );
    }
    holder_of.len()
}

/// Two managers, 1,000 conversations each, on one container stocked with enough ready
/// projects, so the figures measure hand-outs and saves rather than provisioning.
fn two_managers_share_one_container(azurite: &common::Azurite) {
    let prefix = common::random_prefix("two-managers");
    parent::stock_pool(azurite, &prefix, 2_100);
    let a = Running::start(&spec(&prefix, "manager-a", 1_000));
    let b = Running::start(&spec(&prefix, "manager-b", 1_000));
    let (a, b) = (a.wait(), b.wait());
    let pool = stored_pool(azurite, &prefix);
    assert_eq!(check_handouts(&[&a, &b], &pool), 2_000);
    for r in [&a, &b] {
        assert!(
            r.stats["clean"].as_bool().expect("clean"),
            "{} shut down clean",
            r.owner
        );
        let counted = &r.stats["metrics"]["conflicts"];
        assert_eq!(
            counted, &r.stats["store_conflicts"],
            "{}: every conflict resolved",
            r.owner
        );
    }
    let creates = a.stat("creates_won") + b.stat("creates_won");
    assert_eq!(creates, 0, "the stocked pool is adopted, not created again");
    parent::print_figures(&[&a, &b]);
}

/// Manager A is killed mid-run; B quarantines A's unused reservations once A's lease runs
/// out, and never hands out what A handed out.
fn a_killed_manager_is_quarantined_by_the_survivor(azurite: &common::Azurite) {
    let prefix = common::random_prefix("kill");
    // Short enough to keep the test quick, long enough that a busy machine does not make
    // a live manager look dead.
    let lease = Duration::from_secs(6);
    // A asks for less than it can keep reserved, so it dies holding reservations.
    let mut a_spec = spec(&prefix, "manager-a", 5_000);
    a_spec.pace = Duration::from_millis(100);
    a_spec.owner_lease = lease;
    let mut b_spec = spec(&prefix, "manager-b", 300);
    b_spec.pace = Duration::from_millis(4);
    b_spec.owner_lease = lease;
    b_spec.after_quarantine = 300;
    let a = Running::start(&a_spec);
    let b = Running::start(&b_spec);
    let a = a.kill_after_handouts(100);
    let b = b.wait();
    assert!(b.stats["metrics"]["quarantined"].as_u64().expect("count") > 0);

    let pool = stored_pool(azurite, &prefix);
    let b_projects: HashSet<&String> = b.handouts.iter().map(|(_, p)| p).collect();
    for (conv, project) in &a.handouts {
        assert!(
            !b_projects.contains(project),
            "{project}, handed to {conv} by A, reissued by B"
        );
        let state = pool
            .records()
            .find(|r| r.id.as_str() == project)
            .map(|r| &r.state);
        match state {
            None | Some(ProjectState::Quarantined { .. }) => {}
            Some(s) => match s.holder() {
                Some((holder, _)) => assert_eq!(holder.as_str(), conv, "{project}"),
                None => panic!("{project}, handed to {conv} by A, is stored as {s:?}"),
            },
        }
    }
    let reserved_by_a = pool.records().filter(
        |r| matches!(&r.state, ProjectState::Reserved { owner } if owner.as_str() == "manager-a"),
    );
    assert_eq!(
        reserved_by_a.count(),
        0,
        "A's reservations were quarantined"
    );
    check_handouts(&[&b], &pool);
    println!(
        "  A acknowledged {} hand-outs before SIGKILL; B quarantined {} projects",
        a.handouts.len(),
        b.stats["metrics"]["quarantined"]
    );
}

/// Two managers start on an empty prefix at the same moment: exactly one creates the
/// pool, the other adopts it, and both work on it.
fn managers_starting_together_create_one_pool(azurite: &common::Azurite) {
    for _round in 0..3 {
        let prefix = common::random_prefix("create");
        let a = Running::start(&spec(&prefix, "manager-a", 20));
        let b = Running::start(&spec(&prefix, "manager-b", 20));
        let (a, b) = (a.wait(), b.wait());
        let (won, lost) = (
            a.stat("creates_won") + b.stat("creates_won"),
            a.stat("creates_lost") + b.stat("creates_lost"),
        );
        assert_eq!(won, 1, "exactly one create wins");
        assert!(lost <= 1, "at most one create is refused");
        let pool = stored_pool(azurite, &prefix);
        assert_eq!(check_handouts(&[&a, &b], &pool), 40);
        println!("  round: creates won {won}, refused and adopted {lost}");
    }
}

/// One scenario over the run's Azurite.
type Scenario = fn(&common::Azurite);

fn main() {
    if std::env::var_os(parent::CHILD).is_some() {
        // POOL_TEST_LOG=warn (or any filter) shows a manager process's log on stderr.
        if let Ok(filter) = std::env::var("POOL_TEST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(child::run());
        return;
    }
    let Some(azurite) = common::azurite() else {
        return;
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let scenarios: [(&str, Scenario); 3] = [
        (
            "two_managers_share_one_container",
            two_managers_share_one_container,
        ),
        (
            "a_killed_manager_is_quarantined_by_the_survivor",
            a_killed_manager_is_quarantined_by_the_survivor,
        ),
        (
            "managers_starting_together_create_one_pool",
            managers_starting_together_create_one_pool,
        ),
    ];
    let started = std::time::Instant::now();
    let (mut passed, mut filtered) = (0, 0);
    for (name, scenario) in scenarios {
        if !filter.iter().all(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        println!("test {name} ...");
        scenario(&azurite);
        println!("test {name} ... ok");
        passed += 1;
    }
    // The summary line libtest prints, which test runners count.
    let secs = started.elapsed().as_secs_f64();
    println!(
        "test result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; \
         {filtered} filtered out; finished in {secs:.2}s"
    );
}
