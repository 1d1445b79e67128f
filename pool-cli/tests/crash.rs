//! Crash safety end to end: `pool serve` on a SQLite file is killed with SIGKILL at a
//! random moment while several clients allocate, then restarted, and every conversation
//! asks again.
//!
//! Checked after each run: no project was ever given to two conversations; every
//! allocation answered before the kill comes back unchanged, or its project is
//! quarantined (never handed out again) and the conversation gets another one. Half the
//! runs restart under the same owner id (a service with a fixed `--owner`), half under a
//! new one (the default random id); the first quarantines at once what the killed run had
//! reserved, the second once the killed run's lease runs out.
//!
//! `POOL_CRASH_RUNS` sets the number of runs (default 20) and `POOL_CRASH_SEED` the
//! seed of the first run (default: random, printed), so `cargo xtask crash` runs the same
//! scenario many times and a failing run can be replayed alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client;
use common::scripts::{self, Provision};
use common::server::Server;
use common::{export, holders, poll};
use pool_core::{Pool, PoolSnapshot, ProjectState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const RUNS_VAR: &str = "POOL_CRASH_RUNS";
const SEED_VAR: &str = "POOL_CRASH_SEED";
const CLIENTS: u64 = 4;
/// Conversations each client starts at most before the kill.
const PER_CLIENT: u64 = 60;
const ALLOCATE: &str = r#"{"on_empty": "wait", "wait_ms": 5000}"#;

/// One answered allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    conversation: String,
    project: String,
    token: String,
}

/// What one client saw before the kill.
#[derive(Debug, Default)]
struct Seen {
    asked: Vec<String>,
    answers: Vec<Answer>,
    violations: Vec<String>,
}

/// The counts of one or many runs.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    kills: u64,
    checked: u64,
    unchanged: u64,
    quarantined: u64,
    violations: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.runs += other.runs;
        self.kills += other.kills;
        self.checked += other.checked;
        self.unchanged += other.unchanged;
        self.quarantined += other.quarantined;
        self.violations.extend(other.violations);
    }
}

fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.parse()
            .unwrap_or_else(|_| panic!("{name}={raw} is not a number")),
    )
}

#[test]
fn kill_9_at_a_random_moment_never_gives_a_project_to_two_conversations() {
    let runs = env_number(RUNS_VAR).unwrap_or(20);
    let seed = env_number(SEED_VAR).unwrap_or_else(|| rand::rng().random::<u32>().into());
    let started = Instant::now();
    let mut total = Tally::default();
    for run in 0..runs {
        let run_seed = seed.wrapping_add(run);
        let tally = scenario(run_seed);
        for v in &tally.violations {
            eprintln!("crash run seed {run_seed}: VIOLATION {v}");
        }
        total.add(tally);
    }
    println!(
        "crash summary: runs {} kills {} allocations checked {} unchanged {} quarantined {} \
         violations {} (seed {seed}, {:.1}s)",
        total.runs,
        total.kills,
        total.checked,
        total.unchanged,
        total.quarantined,
        total.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total.violations.is_empty(), "{:#?}", total.violations);
    assert_eq!(total.kills, runs);
    assert!(
        total.checked > 0,
        "no allocation was answered before any kill"
    );
}

/// One run: serve, allocate from several clients, kill -9, restart, ask again, check.
fn scenario(seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = scripts::exec_provisioner(dir.path(), Provision::Ok, 0);
    let first_owner = format!("crash-{seed}");
    let same_owner = rng.random_bool(0.5);
    let save_delay = format!("{}ms", rng.random_range(1..40));
    let start = |owner: &str| {
        let args = [
            "--provisioner",
            &spec,
            "--templates",
            "default=16",
            "--max-in-flight",
            "16",
            "--owner-lease",
            "1s",
            "--save-delay",
            &save_delay,
            "--owner",
            owner,
        ];
        Server::start(dir.path(), &args)
    };

    let mut first = start(&first_owner);
    let kill_after = if rng.random_bool(0.1) {
        Duration::from_millis(rng.random_range(0..20))
    } else {
        Duration::from_millis(rng.random_range(20..900))
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, client_seed) = (first.addr, seed ^ (c + 1) << 32);
            std::thread::spawn(move || allocate_until_refused(addr, c, client_seed))
        })
        .collect();
    std::thread::sleep(kill_after);
    first.kill();
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();

    let second_owner = if same_owner {
        first_owner.clone()
    } else {
        format!("{first_owner}-again")
    };
    let mut second = start(&second_owner);
    let (mut tally, after) = check_after_restart(&second, &seen);
    tally.violations.iter_mut().for_each(|v| {
        *v = format!(
            "{v} (save delay {save_delay}, same owner {same_owner}, kill at {kill_after:?})"
        );
    });
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(30));
    if status.code() != Some(0) {
        tally
            .violations
            .push(format!("restarted server exited with {status}"));
    }
    let snapshot = export(&second.store);
    tally
        .violations
        .extend(check_stored(&snapshot, &seen, &after, dir.path()));
    tally
}

/// A client: new conversations one after another (some asked twice, some marked
/// active) until the server stops answering.
fn allocate_until_refused(addr: SocketAddr, client: u64, seed: u64) -> Seen {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = Seen::default();
    for n in 0..PER_CLIENT {
        let conversation = format!("c{client}-{n}");
        seen.asked.push(conversation.clone());
        let Some(answer) = allocate(addr, &conversation) else {
            break;
        };
        let Ok(answer) = answer else {
            continue;
        };
        seen.answers.push(answer.clone());
        if rng.random_bool(0.2) {
            match allocate(addr, &conversation) {
                Some(Ok(again)) if again != answer => seen.violations.push(format!(
                    "asked twice before the kill: {answer:?} then {again:?}"
                )),
                None => break,
                _ => {}
            }
        }
        if rng.random_bool(0.2) {
            let path = format!("/v1/projects/{}/active", answer.project);
            let body = format!(r#"{{"token": "{}"}}"#, answer.token);
            if client::request(addr, "POST", &path, &[], Some(body.as_bytes())).is_err() {
                break;
            }
        }
    }
    seen
}

/// Allocates for `conversation`: `None` when the server did not answer, `Err` with the
/// reply when it refused.
fn allocate(addr: SocketAddr, conversation: &str) -> Option<Result<Answer, String>> {
    let path = format!("/v1/conversations/{conversation}/project");
    let r = client::request(addr, "POST", &path, &[], Some(ALLOCATE.as_bytes())).ok()?;
    if r.status != 200 {
        return Some(Err(r.text()));
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    Some(Ok(Answer {
        conversation: conversation.to_owned(),
        project: v["project_id"].as_str()?.to_owned(),
        token: v["token"].as_str()?.to_owned(),
    }))
}

/// Asks again for every conversation, compares with the answers before the kill, and
/// waits until the killed run's reservations are quarantined.
fn check_after_restart(server: &Server, seen: &[Seen]) -> (Tally, Vec<Answer>) {
    let mut tally = Tally {
        runs: 1,
        kills: 1,
        ..Tally::default()
    };
    let before: BTreeMap<&str, &Answer> = seen
        .iter()
        .flat_map(|s| &s.answers)
        .map(|a| (a.conversation.as_str(), a))
        .collect();
    let mut given: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut answers = Vec::new();
    for a in before.values() {
        given
            .entry(a.project.clone())
            .or_default()
            .insert(a.conversation.clone());
    }
    tally
        .violations
        .extend(seen.iter().flat_map(|s| s.violations.clone()));
    for conversation in seen.iter().flat_map(|s| &s.asked) {
        let after = match allocate(server.addr, conversation) {
            Some(Ok(after)) => after,
            other => {
                tally
                    .violations
                    .push(format!("{conversation} after the restart: {other:?}"));
                continue;
            }
        };
        given
            .entry(after.project.clone())
            .or_default()
            .insert(conversation.clone());
        answers.push(after.clone());
        let Some(earlier) = before.get(conversation.as_str()) else {
            continue;
        };
        tally.checked += 1;
        if after.project == earlier.project {
            tally.unchanged += 1;
            if after.token != earlier.token {
                tally
                    .violations
                    .push(format!("{earlier:?} came back as {after:?}"));
            }
        } else {
            tally.quarantined += 1;
        }
    }
    for (project, conversations) in given {
        if conversations.len() > 1 {
            tally
                .violations
                .push(format!("{project} given to {conversations:?}"));
        }
    }
    wait_for_quarantine(server);
    (tally, answers)
}

/// Waits until no reservation but the restarted manager's own is left.
fn wait_for_quarantine(server: &Server) {
    poll(
        Duration::from_secs(20),
        "the killed run's reservations to be quarantined",
        || {
            let t = &server.pool_status()["templates"]["default"];
            (t["counts"]["reserved"] == t["reserved_here"]).then_some(())
        },
    );
}

/// Checks the stored pool after the restarted server stopped: it holds every answer
/// given after the restart, and every project answered before the kill whose
/// conversation got another one is quarantined (or already destroyed as such).
fn check_stored(
    snapshot: &PoolSnapshot,
    seen: &[Seen],
    after: &[Answer],
    dir: &Path,
) -> Vec<String> {
    let mut violations = Vec::new();
    match Pool::from_snapshot(snapshot.clone()) {
        Ok(pool) => violations.extend(pool.check_invariants().err()),
        Err(e) => violations.push(format!("the stored pool does not load: {e}")),
    }
    let held = holders(snapshot);
    let mut moved = BTreeSet::new();
    let before: BTreeMap<&str, &Answer> = seen
        .iter()
        .flat_map(|s| &s.answers)
        .map(|a| (a.conversation.as_str(), a))
        .collect();
    for a in after {
        let holder = held.get(&a.project);
        if holder != Some(&(a.conversation.clone(), a.token.clone())) {
            violations.push(format!("{a:?} is stored as held by {holder:?}"));
        }
        if let Some(earlier) = before.get(a.conversation.as_str()) {
            if earlier.project != a.project {
                moved.insert(earlier.project.clone());
            }
        }
    }
    let recycled: BTreeSet<String> = scripts::lines(dir, "recycled").into_iter().collect();
    for project in moved {
        let record = snapshot.projects.iter().find(|r| r.id.as_str() == project);
        let quarantined = match record {
            Some(r) => matches!(r.state, ProjectState::Quarantined { .. }),
            None => recycled.contains(&project),
        };
        if !quarantined {
            let state = record.map(|r| format!("{:?}", r.state));
            violations.push(format!("{project} was given up but is {state:?}"));
        }
    }
    violations
}
