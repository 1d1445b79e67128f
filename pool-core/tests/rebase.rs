//! Two managers whose pools diverge from one stored snapshot, then meet again through
//! [`Pool::rebase`]. The shared [`Store`] checks, around every rebase, that the version
//! rises above both sides, that the pool counts as saved at the stored version, and that
//! its unsaved changes lead exactly from the stored pool to the rebased one.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{LEASE, Manager, Store, add_many, at, conv, owner, pid, tok, tpl};
use pool_core::{
    Allocation, OwnerLease, Pool, PoolSnapshot, ProjectId, ProjectState, RebaseReport,
};

/// Ten available projects `p-0..p-9`; owners `a` and `b` registered; `a` durably reserved
/// `p-0..p-2` and `b` `p-3..p-5`. Pool version 18.
fn base() -> Store {
    let mut pool = Pool::new();
    add_many(&mut pool, "p", &tpl("t"), 10, at(0));
    pool.renew_owner(&owner("a"), at(60_000));
    pool.renew_owner(&owner("b"), at(60_000));
    pool.reserve(&owner("a"), &tpl("t"), 3, at(0));
    pool.reserve(&owner("b"), &tpl("t"), 3, at(0));
    assert_eq!(pool.version(), 18);
    Store::new(pool.snapshot())
}

fn ids(list: &[&str]) -> Vec<ProjectId> {
    list.iter().map(|s| pid(s)).collect()
}

fn state(m: &Manager, id: &str) -> ProjectState {
    m.pool.get(&pid(id)).unwrap().state.clone()
}

fn allocate(m: &mut Manager, chat: &str, token: u64) -> Allocation {
    let (me, t) = (m.me.clone(), tpl("t"));
    m.pool
        .allocate(&me, &conv(chat), &t, tok(token), at(1_000), LEASE)
        .unwrap()
}

fn report(applied: &[&str], overridden: &[&str], lost: &[&str], evicted: bool) -> RebaseReport {
    RebaseReport {
        applied: ids(applied),
        overridden: ids(overridden),
        lost: ids(lost),
        evicted,
    }
}

fn quarantined_by(former: &str, reason: &str) -> ProjectState {
    ProjectState::Quarantined {
        former_owner: Some(owner(former)),
        reason: reason.into(),
    }
}

#[test]
fn changes_only_this_manager_made_are_kept() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    assert_eq!(allocate(&mut a, "c-1", 1).project, pid("p-0"));
    a.pool.add_available(pid("n-1"), tpl("t"), at(1)).unwrap();
    assert_eq!(allocate(&mut b, "c-2", 2).project, pid("p-3"));
    b.pool.renew_owner(&owner("b"), at(90_000));
    assert_eq!(store.save(&mut b), None);
    assert_eq!(store.snapshot.pool_version, 20);

    let got = store.save(&mut a).unwrap();
    assert_eq!(got, report(&["p-0", "n-1"], &[], &[], false));
    assert_eq!(
        a.pool.version(),
        22,
        "two records stamped above both sides' version 20"
    );
    assert_eq!(a.pool.holder_of(&conv("c-1")).unwrap().project, pid("p-0"));
    assert_eq!(a.pool.holder_of(&conv("c-2")).unwrap().project, pid("p-3"));
    assert_eq!(
        a.pool.owners()[&owner("b")],
        OwnerLease {
            lease_until: at(90_000),
            version: 20,
            incarnation: 0
        }
    );
    assert_eq!(store.snapshot, a.pool.snapshot());

    // B catches up with nothing of its own pending: it simply takes the store.
    assert_eq!(store.rebase(&mut b), RebaseReport::default());
    assert_eq!(b.pool.snapshot(), store.snapshot);
}

#[test]
fn the_store_wins_where_both_changed_and_a_fresh_reservation_is_not_lost() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    assert_eq!(
        a.pool.reserve(&owner("a"), &tpl("t"), 2, at(1)),
        ids(&["p-6", "p-7"])
    );
    a.pool
        .quarantine(&pid("p-8"), "a thinks it is broken", at(1))
        .unwrap();
    b.pool
        .reserve_project(&owner("b"), &pid("p-6"), at(1))
        .unwrap();
    b.pool
        .quarantine(&pid("p-8"), "b thinks it is broken", at(1))
        .unwrap();
    store.save(&mut b);

    let got = store.save(&mut a).unwrap();
    assert_eq!(got, report(&["p-7"], &["p-6", "p-8"], &[], false));
    assert!(!got.ownership_lost());
    assert_eq!(
        state(&a, "p-6"),
        ProjectState::Reserved { owner: owner("b") }
    );
    assert_eq!(
        state(&a, "p-7"),
        ProjectState::Reserved { owner: owner("a") }
    );
    assert_eq!(
        state(&a, "p-8"),
        ProjectState::Quarantined {
            former_owner: None,
            reason: "b thinks it is broken".into()
        }
    );
    assert_eq!(a.pool.reserved_count(&owner("a"), &tpl("t")), 4);
    assert_eq!(a.pool.reserved_count(&owner("b"), &tpl("t")), 4);
}

#[test]
fn a_manager_declared_dead_learns_what_it_lost() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    let gone = b
        .pool
        .quarantine_owner(&owner("a"), "owner lease expired", at(70_000));
    assert_eq!(gone, ids(&["p-0", "p-1", "p-2"]));
    store.save(&mut b);
    // Meanwhile A, unaware, hands out a durable reservation and reserves a new project.
    assert_eq!(allocate(&mut a, "c-1", 1).project, pid("p-0"));
    assert_eq!(
        a.pool.reserve(&owner("a"), &tpl("t"), 1, at(1)),
        ids(&["p-6"])
    );

    let got = store.rebase(&mut a);
    assert_eq!(
        got,
        report(&["p-6"], &["p-0"], &["p-0", "p-1", "p-2"], true)
    );
    assert!(got.ownership_lost());
    assert_eq!(
        a.pool.holder_of(&conv("c-1")),
        None,
        "the hand-out is undone, never doubled"
    );
    for id in ["p-0", "p-1", "p-2"] {
        assert_eq!(state(&a, id), quarantined_by("a", "owner lease expired"));
    }
    assert!(!a.pool.owners().contains_key(&owner("a")));
}

#[test]
fn a_lease_renewed_locally_does_not_hide_lost_reservations() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    b.pool
        .quarantine_owner(&owner("a"), "owner lease expired", at(70_000));
    store.save(&mut b);
    a.pool.renew_owner(&owner("a"), at(120_000));

    let got = store.rebase(&mut a);
    assert_eq!(got.lost, ids(&["p-0", "p-1", "p-2"]));
    assert!(got.ownership_lost());
}

#[test]
fn an_owner_whose_stored_entry_vanished_is_evicted_and_its_hand_outs_stay() {
    let mut store = base();
    let mut a = store.manager("a");
    for (i, chat) in ["c-0", "c-1", "c-2"].into_iter().enumerate() {
        assert_eq!(
            allocate(&mut a, chat, 10 + i as u64).project,
            pid(&format!("p-{i}"))
        );
    }
    store.save(&mut a);
    let mut b = store.manager("b");
    assert!(
        b.pool
            .quarantine_owner(&owner("a"), "owner lease expired", at(70_000))
            .is_empty()
    );
    store.save(&mut b);
    a.pool.mark_active(&pid("p-1"), tok(11), at(2)).unwrap();

    let got = store.save(&mut a).unwrap();
    assert_eq!(got, report(&["p-1"], &[], &[], true));
    assert!(got.ownership_lost());
    for (i, chat) in ["c-0", "c-1", "c-2"].into_iter().enumerate() {
        assert_eq!(
            a.pool.holder_of(&conv(chat)).unwrap().project,
            pid(&format!("p-{i}"))
        );
    }
    let active = ProjectState::Active {
        owner: owner("a"),
        conversation: conv("c-1"),
        token: tok(11),
    };
    assert_eq!(state(&a, "p-1"), active);
}

#[test]
fn a_conversation_served_by_two_managers_ends_with_one_holder() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    assert_eq!(allocate(&mut a, "c-9", 1).project, pid("p-0"));
    assert_eq!(allocate(&mut b, "c-9", 2).project, pid("p-3"));
    store.save(&mut b);

    let got = store.save(&mut a).unwrap();
    assert_eq!(got.applied, ids(&["p-0"]));
    assert_eq!(
        got.lost,
        Vec::<ProjectId>::new(),
        "nobody took anything of a's"
    );
    assert!(!got.ownership_lost());
    let holder = a.pool.holder_of(&conv("c-9")).unwrap();
    assert_eq!((holder.project, holder.token), (pid("p-3"), tok(2)));
    assert_eq!(
        state(&a, "p-0"),
        quarantined_by("a", "conversation c-9 already holds p-3")
    );
    let again = allocate(&mut a, "c-9", 3);
    assert_eq!((again.project, again.fresh), (pid("p-3"), false));

    assert_eq!(store.rebase(&mut b), RebaseReport::default());
    assert_eq!(b.pool.snapshot(), a.pool.snapshot());
}

#[test]
fn the_later_of_two_hand_outs_to_one_conversation_is_quarantined() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    allocate(&mut a, "c-9", 1);
    store.save(&mut a);
    allocate(&mut b, "c-9", 2);
    b.pool.mark_active(&pid("p-3"), tok(2), at(2)).unwrap();

    let got = store.save(&mut b).unwrap();
    assert_eq!((got.applied, got.lost), (ids(&["p-3"]), vec![]));
    assert_eq!(b.pool.holder_of(&conv("c-9")).unwrap().project, pid("p-0"));
    assert_eq!(
        state(&b, "p-3"),
        quarantined_by("b", "conversation c-9 already holds p-0")
    );
}

#[test]
fn a_project_the_store_removed_is_not_brought_back() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    b.pool
        .quarantine_owner(&owner("a"), "owner lease expired", at(70_000));
    b.pool.remove(&pid("p-0")).unwrap();
    store.save(&mut b);
    assert_eq!(allocate(&mut a, "c-1", 1).project, pid("p-0"));
    a.pool.add_available(pid("n-1"), tpl("t"), at(1)).unwrap();

    let got = store.save(&mut a).unwrap();
    assert_eq!(
        got,
        report(&["n-1"], &["p-0"], &["p-0", "p-1", "p-2"], true)
    );
    assert!(
        a.pool.get(&pid("p-0")).is_none(),
        "a destroyed project came back"
    );
    assert_eq!(a.pool.holder_of(&conv("c-1")), None);
    assert_eq!(state(&a, "n-1"), ProjectState::Available);

    // A project added here and not yet stored survives any number of rebases.
    a.pool.add_available(pid("n-2"), tpl("t"), at(2)).unwrap();
    b.pool.renew_owner(&owner("b"), at(99_000));
    store.save(&mut b);
    let got = store.save(&mut a).unwrap();
    assert_eq!(got.applied, ids(&["n-2"]));
    b.pool.renew_owner(&owner("b"), at(99_500));
    store.save(&mut b);
    a.pool.add_available(pid("n-3"), tpl("t"), at(3)).unwrap();
    store.rebase(&mut a);
    b.pool.renew_owner(&owner("b"), at(99_900));
    store.save(&mut b);
    store.save(&mut a);
    for id in ["n-1", "n-2", "n-3"] {
        assert!(
            store.snapshot.projects.iter().any(|r| r.id == pid(id)),
            "{id} was dropped"
        );
    }
}

#[test]
fn a_local_removal_applies_unless_the_store_changed_the_project() {
    let mut store = base();
    let mut b = store.manager("b");
    b.pool.quarantine(&pid("p-8"), "broken", at(1)).unwrap();
    b.pool.quarantine(&pid("p-9"), "broken", at(1)).unwrap();
    store.save(&mut b);
    let mut a = store.manager("a");
    a.pool.remove(&pid("p-8")).unwrap();
    a.pool.remove(&pid("p-9")).unwrap();
    b.pool
        .quarantine(&pid("p-9"), "still broken, keep for forensics", at(2))
        .unwrap();
    store.save(&mut b);

    let got = store.save(&mut a).unwrap();
    assert_eq!(got, report(&[], &["p-9"], &[], false));
    assert!(a.pool.get(&pid("p-8")).is_none());
    let kept = ProjectState::Quarantined {
        former_owner: None,
        reason: "still broken, keep for forensics".into(),
    };
    assert_eq!(state(&a, "p-9"), kept);
    assert!(!store.snapshot.projects.iter().any(|r| r.id == pid("p-8")));
}

#[test]
fn owner_leases_merge_per_owner() {
    let mut store = base();
    let (mut a, mut b) = (store.manager("a"), store.manager("b"));
    a.pool.renew_owner(&owner("a"), at(100_000));
    b.pool.renew_owner(&owner("c"), at(50_000));
    store.save(&mut b);
    store.save(&mut a);
    let leases: Vec<_> = a
        .pool
        .owners()
        .iter()
        .map(|(o, l)| (o.as_str().to_owned(), l.lease_until))
        .collect();
    let expected = [("a", at(100_000)), ("b", at(60_000)), ("c", at(50_000))];
    assert_eq!(leases, expected.map(|(o, t)| (o.to_owned(), t)));

    // A declares c dead; c's stored entry is unchanged since A's base, so it goes.
    store.rebase(&mut b);
    a.pool.quarantine_owner(&owner("c"), "dead", at(60_000));
    b.pool.renew_owner(&owner("b"), at(110_000));
    store.save(&mut b);
    store.save(&mut a);
    assert!(!store.snapshot.owners.contains_key(&owner("c")));
    assert_eq!(store.snapshot.owners[&owner("b")].lease_until, at(110_000));

    // A declares b dead while b renews: b's newer stored lease wins.
    store.rebase(&mut b);
    a.pool.quarantine_owner(&owner("b"), "dead", at(120_000));
    b.pool.renew_owner(&owner("b"), at(200_000));
    store.save(&mut b);
    let got = store.save(&mut a).unwrap();
    assert_eq!(got.lost, Vec::<ProjectId>::new());
    assert_eq!(store.snapshot.owners[&owner("b")].lease_until, at(200_000));
    // A's quarantine was decided on a stale view of b: it is void, b keeps them.
    let got = store.rebase(&mut b);
    assert_eq!((got.lost, got.evicted), (Vec::<ProjectId>::new(), false));
    for p in ["p-3", "p-4", "p-5"] {
        let state = &store
            .snapshot
            .projects
            .iter()
            .find(|r| r.id.as_str() == p)
            .unwrap()
            .state;
        assert_eq!(state, &ProjectState::Reserved { owner: owner("b") }, "{p}");
    }
}

#[test]
fn a_rebase_onto_a_corrupt_snapshot_is_refused_and_changes_nothing() {
    let store = base();
    let mut a = store.manager("a");
    allocate(&mut a, "c-1", 1);
    let before = a.pool.snapshot();
    let mut bad: PoolSnapshot = store.snapshot.clone();
    let dup = bad.projects[0].clone();
    bad.projects.push(dup);
    assert!(a.pool.rebase(bad, &owner("a")).is_err());
    assert_eq!(a.pool.snapshot(), before);
    assert_eq!(a.pool.saved_version(), 18);
}

#[test]
fn a_second_run_under_the_same_owner_id_evicts_the_first() {
    let stored = Pool::new().snapshot();
    let me = owner("shared");
    let mut first = Pool::from_snapshot(stored.clone()).unwrap();
    first.register_owner(&me, at(10_000), 1);
    let mut second = Pool::from_snapshot(stored).unwrap();
    second.register_owner(&me, at(20_000), 2);
    let written = second.snapshot();
    first.renew_owner(&me, at(30_000));
    let report = first.rebase(written, &me).unwrap();
    assert!(report.evicted, "{report:?}");
    assert!(report.ownership_lost());
    assert_eq!(
        first.owners()[&me].incarnation,
        2,
        "the second run's lease stands"
    );
}
