//! One test per pool operation, with the exact records, versions and errors expected.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use common::{LEASE, add_many, at, conv, observe, owner, pid, refused, tok, tpl};
use pool_core::{
    Allocation, ArchiveReason, OwnerLease, Pool, PoolError, ProjectState, StateCounts, StateKind,
};

fn state(pool: &Pool, id: &str) -> ProjectState {
    pool.get(&pid(id)).unwrap().state.clone()
}

fn invalid(project: &str, state: StateKind, operation: &'static str) -> PoolError {
    PoolError::InvalidTransition {
        project: pid(project),
        state,
        operation,
    }
}

/// A pool with `n` projects `p-0..` of template `t`, all reserved by owner `a`.
fn reserved_pool(n: usize) -> Pool {
    let mut pool = Pool::new();
    add_many(&mut pool, "p", &tpl("t"), n, at(0));
    assert_eq!(pool.reserve(&owner("a"), &tpl("t"), n, at(0)).len(), n);
    pool
}

fn allocate(
    pool: &mut Pool,
    who: &str,
    chat: &str,
    token: u64,
    now: u64,
) -> Result<Allocation, PoolError> {
    pool.allocate(
        &owner(who),
        &conv(chat),
        &tpl("t"),
        tok(token),
        at(now),
        LEASE,
    )
}

#[test]
fn adding_projects_raises_the_version_by_one_each() {
    let mut pool = Pool::new();
    assert_eq!((pool.version(), pool.len(), pool.is_empty()), (0, 0, true));
    pool.add_available(pid("a-1"), tpl("t"), at(10)).unwrap();
    pool.add_provisioning(pid("a-2"), tpl("t"), at(20)).unwrap();
    assert_eq!((pool.version(), pool.len()), (2, 2));
    let rec = pool.get(&pid("a-2")).unwrap();
    assert_eq!(
        (rec.state.clone(), rec.version, rec.changed_at),
        (ProjectState::Provisioning, 2, at(20))
    );
    assert_eq!(pool.get(&pid("a-1")).unwrap().version, 1);
    let counts = StateCounts {
        available: 1,
        provisioning: 1,
        ..StateCounts::default()
    };
    assert_eq!(pool.counts(&tpl("t")), counts);
    assert_eq!(pool.counts(&tpl("other")), StateCounts::default());

    let err = refused(&mut pool, |p| p.add_available(pid("a-1"), tpl("t"), at(30)));
    assert_eq!(err, PoolError::DuplicateProject(pid("a-1")));
    let err = refused(&mut pool, |p| {
        p.add_provisioning(pid("a-2"), tpl("u"), at(30))
    });
    assert_eq!(err, PoolError::DuplicateProject(pid("a-2")));
}

#[test]
fn provisioning_finishes_or_fails_once() {
    let mut pool = Pool::new();
    pool.add_provisioning(pid("a-1"), tpl("t"), at(0)).unwrap();
    pool.add_provisioning(pid("a-2"), tpl("t"), at(0)).unwrap();
    pool.finish_provisioning(&pid("a-1"), at(5)).unwrap();
    assert_eq!(
        (state(&pool, "a-1"), pool.version()),
        (ProjectState::Available, 3)
    );
    assert_eq!(pool.get(&pid("a-1")).unwrap().changed_at, at(5));
    pool.fail_provisioning(&pid("a-2"), "quota exceeded", at(6))
        .unwrap();
    let failed = ProjectState::Failed {
        reason: "quota exceeded".into(),
    };
    assert_eq!((state(&pool, "a-2"), pool.version()), (failed, 4));

    let err = refused(&mut pool, |p| p.finish_provisioning(&pid("a-1"), at(7)));
    assert_eq!(
        err,
        invalid("a-1", StateKind::Available, "finish provisioning")
    );
    let err = refused(&mut pool, |p| p.finish_provisioning(&pid("a-2"), at(7)));
    assert_eq!(
        err,
        invalid("a-2", StateKind::Failed, "finish provisioning")
    );
    let err = refused(&mut pool, |p| {
        p.fail_provisioning(&pid("a-1"), "late", at(7))
    });
    assert_eq!(
        err,
        invalid("a-1", StateKind::Available, "fail provisioning of")
    );
    let err = refused(&mut pool, |p| p.finish_provisioning(&pid("nope"), at(7)));
    assert_eq!(err, PoolError::UnknownProject(pid("nope")));
    let err = refused(&mut pool, |p| p.fail_provisioning(&pid("nope"), "x", at(7)));
    assert_eq!(err, PoolError::UnknownProject(pid("nope")));
}

#[test]
fn reserve_takes_only_the_template_asked_and_fewer_when_fewer_are_available() {
    let mut pool = Pool::new();
    add_many(&mut pool, "t", &tpl("t"), 3, at(0));
    add_many(&mut pool, "u", &tpl("u"), 2, at(0));
    pool.add_provisioning(pid("t-9"), tpl("t"), at(0)).unwrap();
    assert_eq!(pool.version(), 6);

    let got = pool.reserve(&owner("a"), &tpl("t"), 2, at(1));
    assert_eq!(got, vec![pid("t-0"), pid("t-1")]);
    assert_eq!(pool.version(), 8);
    let got = pool.reserve(&owner("a"), &tpl("t"), 5, at(2));
    assert_eq!(got, vec![pid("t-2")]);
    assert_eq!(pool.version(), 9);
    assert_eq!(
        state(&pool, "t-2"),
        ProjectState::Reserved { owner: owner("a") }
    );
    assert_eq!(pool.reserved_count(&owner("a"), &tpl("t")), 3);
    assert_eq!(pool.reserved_count(&owner("a"), &tpl("u")), 0);
    assert_eq!(pool.counts(&tpl("u")).available, 2);
    assert_eq!(state(&pool, "t-9"), ProjectState::Provisioning);

    let before = observe(&pool);
    assert!(pool.reserve(&owner("a"), &tpl("t"), 5, at(3)).is_empty());
    assert!(pool.reserve(&owner("b"), &tpl("none"), 5, at(3)).is_empty());
    assert!(pool.reserve(&owner("b"), &tpl("u"), 0, at(3)).is_empty());
    assert_eq!(observe(&pool), before, "reserving nothing changes nothing");
    pool.check_invariants().unwrap();
}

#[test]
fn reserve_project_claims_one_available_project() {
    let mut pool = Pool::new();
    add_many(&mut pool, "p", &tpl("t"), 2, at(0));
    pool.reserve_project(&owner("a"), &pid("p-1"), at(1))
        .unwrap();
    assert_eq!(
        state(&pool, "p-1"),
        ProjectState::Reserved { owner: owner("a") }
    );
    assert_eq!(
        (pool.version(), pool.reserved_count(&owner("a"), &tpl("t"))),
        (3, 1)
    );
    let err = refused(&mut pool, |p| {
        p.reserve_project(&owner("b"), &pid("p-1"), at(2))
    });
    assert_eq!(err, invalid("p-1", StateKind::Reserved, "reserve"));
    let err = refused(&mut pool, |p| {
        p.reserve_project(&owner("b"), &pid("p-7"), at(2))
    });
    assert_eq!(err, PoolError::UnknownProject(pid("p-7")));
}

#[test]
fn allocate_is_idempotent_per_conversation() {
    let mut pool = reserved_pool(3);
    assert_eq!(pool.version(), 6);
    let first = allocate(&mut pool, "a", "chat-1", 11, 1_000).unwrap();
    let expected = Allocation {
        project: pid("p-0"),
        template: tpl("t"),
        token: tok(11),
        fresh: true,
    };
    assert_eq!(first, expected);
    assert_eq!(pool.version(), 7);
    let allocated = ProjectState::Allocated {
        owner: owner("a"),
        conversation: conv("chat-1"),
        token: tok(11),
        lease_until: at(61_000),
    };
    assert_eq!(state(&pool, "p-0"), allocated);

    let before = observe(&pool);
    let again = allocate(&mut pool, "a", "chat-1", 99, 2_000).unwrap();
    assert_eq!(
        again,
        Allocation {
            fresh: false,
            ..expected.clone()
        }
    );
    // Another owner, another template: the conversation still gets what it holds.
    let other = pool
        .allocate(
            &owner("b"),
            &conv("chat-1"),
            &tpl("x"),
            tok(5),
            at(3),
            LEASE,
        )
        .unwrap();
    assert_eq!(
        other,
        Allocation {
            fresh: false,
            ..expected.clone()
        }
    );
    assert_eq!(
        observe(&pool),
        before,
        "a repeated allocation changes nothing"
    );
    assert_eq!(
        pool.holder_of(&conv("chat-1")),
        Some(Allocation {
            fresh: false,
            ..expected
        })
    );

    let second = allocate(&mut pool, "a", "chat-2", 12, 1_000).unwrap();
    assert_eq!(
        (second.project, second.fresh, pool.version()),
        (pid("p-1"), true, 8)
    );
    assert_eq!(pool.reserved_count(&owner("a"), &tpl("t")), 1);
    pool.check_invariants().unwrap();
}

#[test]
fn allocate_uses_only_the_owners_own_reservations() {
    let mut pool = reserved_pool(2);
    add_many(&mut pool, "q", &tpl("t"), 1, at(0));
    let err = refused(&mut pool, |p| allocate(p, "b", "chat-1", 1, 0));
    assert_eq!(
        err,
        PoolError::NoReservedProject {
            owner: owner("b"),
            template: tpl("t")
        }
    );
    let err = refused(&mut pool, |p| {
        p.allocate(
            &owner("a"),
            &conv("chat-1"),
            &tpl("u"),
            tok(1),
            at(0),
            LEASE,
        )
    });
    assert_eq!(
        err,
        PoolError::NoReservedProject {
            owner: owner("a"),
            template: tpl("u")
        }
    );

    allocate(&mut pool, "a", "c-1", 1, 0).unwrap();
    allocate(&mut pool, "a", "c-2", 2, 0).unwrap();
    let err = refused(&mut pool, |p| allocate(p, "a", "c-3", 3, 0));
    assert_eq!(
        err,
        PoolError::NoReservedProject {
            owner: owner("a"),
            template: tpl("t")
        }
    );
    assert_eq!(
        state(&pool, "q-0"),
        ProjectState::Available,
        "available projects are not handed out"
    );
}

#[test]
fn allocate_project_checks_owner_state_and_conversation() {
    let mut pool = reserved_pool(3);
    pool.add_available(pid("free"), tpl("t"), at(0)).unwrap();
    let err = refused(&mut pool, |p| {
        p.allocate_project(&owner("b"), &conv("c-1"), &pid("p-2"), tok(1), at(0), LEASE)
    });
    assert_eq!(
        err,
        PoolError::NotReservedBy {
            project: pid("p-2"),
            owner: owner("b")
        }
    );
    let err = refused(&mut pool, |p| {
        p.allocate_project(
            &owner("a"),
            &conv("c-1"),
            &pid("free"),
            tok(1),
            at(0),
            LEASE,
        )
    });
    assert_eq!(err, invalid("free", StateKind::Available, "allocate"));
    let err = refused(&mut pool, |p| {
        p.allocate_project(
            &owner("a"),
            &conv("c-1"),
            &pid("gone"),
            tok(1),
            at(0),
            LEASE,
        )
    });
    assert_eq!(err, PoolError::UnknownProject(pid("gone")));

    let got = pool.allocate_project(&owner("a"), &conv("c-1"), &pid("p-2"), tok(7), at(0), LEASE);
    let expected = Allocation {
        project: pid("p-2"),
        template: tpl("t"),
        token: tok(7),
        fresh: true,
    };
    assert_eq!(got.unwrap(), expected);
    assert_eq!(pool.version(), 8);

    let again = pool.allocate_project(&owner("a"), &conv("c-1"), &pid("p-2"), tok(8), at(9), LEASE);
    assert_eq!(
        again.unwrap(),
        Allocation {
            fresh: false,
            ..expected
        }
    );
    assert_eq!(pool.version(), 8);
    let err = refused(&mut pool, |p| {
        p.allocate_project(&owner("a"), &conv("c-1"), &pid("p-0"), tok(8), at(9), LEASE)
    });
    assert_eq!(
        err,
        PoolError::ConversationHoldsAnother {
            conversation: conv("c-1"),
            project: pid("p-2")
        }
    );
    let err = refused(&mut pool, |p| {
        p.allocate_project(&owner("a"), &conv("c-2"), &pid("p-2"), tok(8), at(9), LEASE)
    });
    assert_eq!(err, invalid("p-2", StateKind::Allocated, "allocate"));
}

#[test]
fn mark_active_needs_the_holders_token_and_repeats_as_a_no_op() {
    let mut pool = reserved_pool(2);
    allocate(&mut pool, "a", "c-1", 42, 0).unwrap();
    let err = refused(&mut pool, |p| p.mark_active(&pid("p-0"), tok(41), at(5)));
    assert_eq!(
        err,
        PoolError::TokenMismatch {
            project: pid("p-0")
        }
    );

    pool.mark_active(&pid("p-0"), tok(42), at(5)).unwrap();
    assert_eq!(pool.version(), 6);
    let active = ProjectState::Active {
        owner: owner("a"),
        conversation: conv("c-1"),
        token: tok(42),
    };
    assert_eq!(state(&pool, "p-0"), active);
    assert_eq!(pool.get(&pid("p-0")).unwrap().changed_at, at(5));
    assert!(
        pool.expired_allocations(at(u64::MAX)).is_empty(),
        "an active project has no lease"
    );

    let before = observe(&pool);
    pool.mark_active(&pid("p-0"), tok(42), at(9)).unwrap();
    assert_eq!(
        observe(&pool),
        before,
        "a repeated mark-active changes nothing"
    );
    let err = refused(&mut pool, |p| p.mark_active(&pid("p-0"), tok(43), at(9)));
    assert_eq!(
        err,
        PoolError::TokenMismatch {
            project: pid("p-0")
        }
    );
    let err = refused(&mut pool, |p| p.mark_active(&pid("p-1"), tok(42), at(9)));
    assert_eq!(err, invalid("p-1", StateKind::Reserved, "mark active"));
    let err = refused(&mut pool, |p| p.mark_active(&pid("zz"), tok(42), at(9)));
    assert_eq!(err, PoolError::UnknownProject(pid("zz")));
    assert_eq!(
        allocate(&mut pool, "a", "c-1", 1, 9).unwrap().project,
        pid("p-0")
    );
}

#[test]
fn archive_needs_the_holders_token_and_frees_the_conversation() {
    let mut pool = reserved_pool(3);
    allocate(&mut pool, "a", "c-1", 1, 0).unwrap();
    allocate(&mut pool, "a", "c-2", 2, 0).unwrap();
    pool.mark_active(&pid("p-1"), tok(2), at(1)).unwrap();
    assert_eq!(pool.version(), 9);

    let err = refused(&mut pool, |p| p.archive(&pid("p-0"), tok(2), at(3)));
    assert_eq!(
        err,
        PoolError::TokenMismatch {
            project: pid("p-0")
        }
    );
    pool.archive(&pid("p-0"), tok(1), at(3)).unwrap();
    pool.archive(&pid("p-1"), tok(2), at(4)).unwrap();
    assert_eq!(pool.version(), 11);
    let archived = |c: &str, t: u64| ProjectState::Archived {
        conversation: Some(conv(c)),
        token: Some(tok(t)),
        reason: ArchiveReason::Released,
    };
    assert_eq!(state(&pool, "p-0"), archived("c-1", 1));
    assert_eq!(state(&pool, "p-1"), archived("c-2", 2));

    let before = observe(&pool);
    pool.archive(&pid("p-0"), tok(1), at(8)).unwrap();
    assert_eq!(observe(&pool), before, "a repeated archive changes nothing");
    let err = refused(&mut pool, |p| p.archive(&pid("p-0"), tok(2), at(8)));
    assert_eq!(
        err,
        PoolError::TokenMismatch {
            project: pid("p-0")
        }
    );
    let err = refused(&mut pool, |p| p.mark_active(&pid("p-0"), tok(1), at(8)));
    assert_eq!(err, invalid("p-0", StateKind::Archived, "mark active"));
    let err = refused(&mut pool, |p| p.archive(&pid("p-2"), tok(1), at(8)));
    assert_eq!(err, invalid("p-2", StateKind::Reserved, "archive"));

    assert_eq!(pool.holder_of(&conv("c-1")), None);
    let next = allocate(&mut pool, "a", "c-1", 3, 9).unwrap();
    assert_eq!(
        (next.project, next.fresh),
        (pid("p-2"), true),
        "an archived project is not handed out again"
    );
}

#[test]
fn expired_allocations_are_reclaimed_and_never_handed_out_again() {
    let mut pool = reserved_pool(4);
    allocate(&mut pool, "a", "c-late", 1, 5_000).unwrap(); // p-0, lease until 65 s
    allocate(&mut pool, "a", "c-early", 2, 1_000).unwrap(); // p-1, lease until 61 s
    allocate(&mut pool, "a", "c-busy", 3, 0).unwrap(); // p-2, marked active below
    pool.mark_active(&pid("p-2"), tok(3), at(1)).unwrap();

    assert!(pool.expired_allocations(at(60_999)).is_empty());
    assert_eq!(pool.expired_allocations(at(61_000)), vec![pid("p-1")]);
    assert_eq!(
        pool.expired_allocations(at(99_000)),
        vec![pid("p-1"), pid("p-0")]
    );

    let err = refused(&mut pool, |p| p.reclaim(&pid("p-0"), at(64_999)));
    assert_eq!(err, invalid("p-0", StateKind::Allocated, "reclaim"));
    let err = refused(&mut pool, |p| p.reclaim(&pid("p-2"), at(99_000)));
    assert_eq!(err, invalid("p-2", StateKind::Active, "reclaim"));
    let v = pool.version();
    pool.reclaim(&pid("p-1"), at(61_000)).unwrap();
    assert_eq!(pool.version(), v + 1);
    let expired = ProjectState::Archived {
        conversation: Some(conv("c-early")),
        token: Some(tok(2)),
        reason: ArchiveReason::LeaseExpired,
    };
    assert_eq!(state(&pool, "p-1"), expired);
    assert_eq!(pool.expired_allocations(at(99_000)), vec![pid("p-0")]);
    let err = refused(&mut pool, |p| p.reclaim(&pid("p-1"), at(99_000)));
    assert_eq!(err, invalid("p-1", StateKind::Archived, "reclaim"));
    let err = refused(&mut pool, |p| {
        p.mark_active(&pid("p-1"), tok(2), at(99_000))
    });
    assert_eq!(err, invalid("p-1", StateKind::Archived, "mark active"));

    // The conversation whose lease ran out gets a new project, never the reclaimed one.
    let again = allocate(&mut pool, "a", "c-early", 4, 99_000).unwrap();
    assert_eq!((again.project, again.fresh), (pid("p-3"), true));
    assert!(
        pool.reserve(&owner("a"), &tpl("t"), 9, at(99_000))
            .is_empty()
    );
    pool.check_invariants().unwrap();
}

#[test]
fn quarantine_applies_only_to_projects_nobody_holds() {
    let mut pool = reserved_pool(3);
    pool.add_available(pid("free"), tpl("t"), at(0)).unwrap();
    pool.add_provisioning(pid("prov"), tpl("t"), at(0)).unwrap();
    allocate(&mut pool, "a", "c-1", 1, 0).unwrap(); // p-0
    allocate(&mut pool, "a", "c-2", 2, 0).unwrap(); // p-1
    pool.mark_active(&pid("p-1"), tok(2), at(0)).unwrap();
    let v = pool.version();

    pool.quarantine(&pid("p-2"), "doubtful", at(1)).unwrap();
    pool.quarantine(&pid("free"), "bad image", at(1)).unwrap();
    pool.quarantine(&pid("prov"), "stuck", at(1)).unwrap();
    assert_eq!(pool.version(), v + 3);
    let q = |o: Option<&str>, r: &str| ProjectState::Quarantined {
        former_owner: o.map(owner),
        reason: r.into(),
    };
    assert_eq!(state(&pool, "p-2"), q(Some("a"), "doubtful"));
    assert_eq!(state(&pool, "free"), q(None, "bad image"));
    assert_eq!(state(&pool, "prov"), q(None, "stuck"));
    assert_eq!(pool.reserved_count(&owner("a"), &tpl("t")), 0);

    let err = refused(&mut pool, |p| p.quarantine(&pid("p-0"), "x", at(2)));
    assert_eq!(err, invalid("p-0", StateKind::Allocated, "quarantine"));
    let err = refused(&mut pool, |p| p.quarantine(&pid("p-1"), "x", at(2)));
    assert_eq!(err, invalid("p-1", StateKind::Active, "quarantine"));
    pool.archive(&pid("p-1"), tok(2), at(2)).unwrap();
    let err = refused(&mut pool, |p| p.quarantine(&pid("p-1"), "x", at(2)));
    assert_eq!(err, invalid("p-1", StateKind::Archived, "quarantine"));
    let err = refused(&mut pool, |p| p.quarantine(&pid("zz"), "x", at(2)));
    assert_eq!(err, PoolError::UnknownProject(pid("zz")));
}

/// Owner `a` with reservations of two templates, one allocated and one active project;
/// owner `b` with one reservation. Both registered.
fn two_owner_pool() -> Pool {
    let mut pool = Pool::new();
    add_many(&mut pool, "t", &tpl("t"), 4, at(0));
    add_many(&mut pool, "u", &tpl("u"), 2, at(0));
    add_many(&mut pool, "x", &tpl("t"), 1, at(0));
    pool.reserve(&owner("a"), &tpl("t"), 4, at(0));
    pool.reserve(&owner("a"), &tpl("u"), 1, at(0));
    pool.reserve_project(&owner("b"), &pid("x-0"), at(0))
        .unwrap();
    pool.renew_owner(&owner("a"), at(30_000));
    pool.renew_owner(&owner("b"), at(30_000));
    allocate(&mut pool, "a", "c-1", 1, 0).unwrap(); // t-0
    allocate(&mut pool, "a", "c-2", 2, 0).unwrap(); // t-1
    pool.mark_active(&pid("t-1"), tok(2), at(0)).unwrap();
    pool
}

#[test]
fn quarantine_owner_takes_its_reservations_and_leaves_its_hand_outs() {
    let mut pool = two_owner_pool();
    let v = pool.version();
    let got = pool.quarantine_owner(&owner("a"), "owner lease expired", at(40_000));
    assert_eq!(got, vec![pid("t-2"), pid("t-3"), pid("u-0")]);
    assert_eq!(
        pool.version(),
        v + 4,
        "three quarantines and the owner forgotten"
    );
    let q = ProjectState::Quarantined {
        former_owner: Some(owner("a")),
        reason: "owner lease expired".into(),
    };
    for id in ["t-2", "t-3", "u-0"] {
        assert_eq!(state(&pool, id), q);
    }
    assert_eq!(pool.holder_of(&conv("c-1")).unwrap().project, pid("t-0"));
    assert_eq!(pool.holder_of(&conv("c-2")).unwrap().project, pid("t-1"));
    assert_eq!(
        state(&pool, "x-0"),
        ProjectState::Reserved { owner: owner("b") }
    );
    assert_eq!(state(&pool, "u-1"), ProjectState::Available);
    assert_eq!(
        pool.owners().keys().cloned().collect::<Vec<_>>(),
        vec![owner("b")]
    );
    assert_eq!(pool.counts(&tpl("t")).quarantined, 2);

    let before = observe(&pool);
    assert!(
        pool.quarantine_owner(&owner("a"), "again", at(50_000))
            .is_empty()
    );
    assert_eq!(
        observe(&pool),
        before,
        "quarantining a forgotten owner changes nothing"
    );
    pool.check_invariants().unwrap();
}

#[test]
fn release_owner_returns_its_reservations_to_the_pool() {
    let mut pool = two_owner_pool();
    let v = pool.version();
    let got = pool.release_owner(&owner("a"), at(1_000));
    assert_eq!(got, vec![pid("t-2"), pid("t-3"), pid("u-0")]);
    assert_eq!(pool.version(), v + 4);
    for id in ["t-2", "t-3", "u-0"] {
        assert_eq!(state(&pool, id), ProjectState::Available);
    }
    assert_eq!(pool.holder_of(&conv("c-1")).unwrap().project, pid("t-0"));
    assert!(!pool.owners().contains_key(&owner("a")));
    assert_eq!(
        pool.reserve(&owner("b"), &tpl("t"), 9, at(2_000)),
        vec![pid("t-2"), pid("t-3")]
    );

    // An owner with no reservations and no lease: nothing to do, no version bump.
    let before = observe(&pool);
    assert!(pool.release_owner(&owner("ghost"), at(3_000)).is_empty());
    assert_eq!(observe(&pool), before);
}

#[test]
fn remove_takes_only_projects_in_a_final_state() {
    let mut pool = two_owner_pool();
    pool.add_provisioning(pid("prov"), tpl("t"), at(0)).unwrap();
    pool.add_provisioning(pid("dud"), tpl("t"), at(0)).unwrap();
    pool.fail_provisioning(&pid("dud"), "boom", at(0)).unwrap();
    pool.quarantine(&pid("x-0"), "x", at(0)).unwrap();
    pool.archive(&pid("t-1"), tok(2), at(0)).unwrap();
    let cases = [
        ("prov", StateKind::Provisioning),
        ("u-1", StateKind::Available),
        ("t-2", StateKind::Reserved),
        ("t-0", StateKind::Allocated),
    ];
    for (id, kind) in cases {
        let err = refused(&mut pool, |p| p.remove(&pid(id)));
        assert_eq!(err, invalid(id, kind, "remove"));
    }
    let err = refused(&mut pool, |p| p.remove(&pid("zz")));
    assert_eq!(err, PoolError::UnknownProject(pid("zz")));

    let (v, n) = (pool.version(), pool.len());
    for (i, id) in ["dud", "x-0", "t-1"].into_iter().enumerate() {
        let rec = pool.remove(&pid(id)).unwrap();
        assert_eq!(rec.id, pid(id));
        assert_eq!(pool.version(), v + 1 + i as u64);
        assert!(pool.get(&pid(id)).is_none());
    }
    assert_eq!(pool.len(), n - 3);
    let err = refused(&mut pool, |p| p.remove(&pid("t-1")));
    assert_eq!(err, PoolError::UnknownProject(pid("t-1")));
    assert_eq!(pool.counts(&tpl("t")).archived, 0);
    pool.check_invariants().unwrap();
}

#[test]
fn an_active_project_cannot_be_removed() {
    let mut pool = two_owner_pool();
    let err = refused(&mut pool, |p| p.remove(&pid("t-1")));
    assert_eq!(err, invalid("t-1", StateKind::Active, "remove"));
}

#[test]
fn owner_leases_renew_and_expire() {
    let mut pool = Pool::new();
    pool.renew_owner(&owner("a"), at(1_000));
    pool.renew_owner(&owner("b"), at(2_000));
    assert_eq!(pool.version(), 2);
    assert_eq!(
        pool.owners()[&owner("b")],
        OwnerLease {
            lease_until: at(2_000),
            version: 2,
            incarnation: 0
        }
    );
    assert!(pool.expired_owners(at(999)).is_empty());
    assert_eq!(pool.expired_owners(at(1_000)), vec![owner("a")]);
    assert_eq!(pool.expired_owners(at(2_000)), vec![owner("a"), owner("b")]);
    pool.renew_owner(&owner("a"), at(5_000));
    assert_eq!(pool.version(), 3);
    assert_eq!(
        pool.owners()[&owner("a")],
        OwnerLease {
            lease_until: at(5_000),
            version: 3,
            incarnation: 0
        }
    );
    assert_eq!(pool.expired_owners(at(2_000)), vec![owner("b")]);
    assert_eq!(
        pool.unsaved().owners.len(),
        2,
        "owners travel with every save"
    );
}

#[test]
fn changes_since_and_unsaved_follow_mark_saved() {
    let mut pool = Pool::new();
    add_many(&mut pool, "p", &tpl("t"), 3, at(0)); // versions 1..=3
    pool.add_provisioning(pid("q"), tpl("t"), at(0)).unwrap(); // 4
    pool.mark_saved(4);
    assert_eq!((pool.saved_version(), pool.unsaved_changes()), (4, 0));
    let empty = pool.unsaved();
    assert_eq!((empty.base_version, empty.pool_version), (4, 4));
    assert!(empty.changed.is_empty() && empty.removed.is_empty());

    pool.reserve(&owner("a"), &tpl("t"), 1, at(1)); // p-0 -> 5
    pool.fail_provisioning(&pid("q"), "x", at(1)).unwrap(); // 6
    pool.remove(&pid("q")).unwrap(); // 7
    pool.quarantine(&pid("p-2"), "x", at(1)).unwrap(); // 8
    assert_eq!(pool.unsaved_changes(), 3);

    let (changed, removed) = pool.changes_since(4);
    let ids: Vec<_> = changed.iter().map(|r| (r.id.clone(), r.version)).collect();
    assert_eq!(ids, vec![(pid("p-0"), 5), (pid("p-2"), 8)]);
    assert_eq!(removed, vec![pid("q")]);
    let (changed, removed) = pool.changes_since(7);
    assert_eq!((changed.len(), removed.len()), (1, 0));
    let (changed, _) = pool.changes_since(0);
    assert_eq!(changed.len(), 3, "everything still in the pool");

    let unsaved = pool.unsaved();
    assert_eq!((unsaved.base_version, unsaved.pool_version), (4, 8));
    assert_eq!(
        unsaved
            .changed
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        vec![pid("p-0"), pid("p-2")]
    );
    assert_eq!(unsaved.removed, vec![pid("q")]);

    pool.mark_saved(6); // the tombstone at 7 is not yet stored
    assert_eq!(pool.unsaved().removed, vec![pid("q")]);
    assert_eq!(pool.unsaved_changes(), 2);
    pool.mark_saved(3); // older than what is recorded: ignored
    assert_eq!(pool.saved_version(), 6);
    pool.mark_saved(8);
    let after = pool.unsaved();
    assert!(after.changed.is_empty() && after.removed.is_empty());
    assert_eq!(
        pool.changes_since(4).1,
        Vec::new(),
        "stored tombstones are forgotten"
    );
    pool.check_invariants().unwrap();
}

#[test]
fn a_removed_id_can_come_back_without_a_stale_tombstone() {
    let mut pool = Pool::new();
    pool.add_provisioning(pid("p"), tpl("t"), at(0)).unwrap();
    pool.mark_saved(1);
    pool.fail_provisioning(&pid("p"), "x", at(0)).unwrap();
    pool.remove(&pid("p")).unwrap();
    pool.add_available(pid("p"), tpl("t"), at(1)).unwrap();
    let unsaved = pool.unsaved();
    assert_eq!(unsaved.removed, Vec::new());
    assert_eq!(unsaved.changed.len(), 1);
    assert_eq!(unsaved.changed[0].state, ProjectState::Available);
    pool.check_invariants().unwrap();
}

#[test]
fn counts_follow_every_transition() {
    let mut pool = two_owner_pool();
    let t = pool.counts(&tpl("t"));
    let expected = StateCounts {
        reserved: 3,
        allocated: 1,
        active: 1,
        ..StateCounts::default()
    };
    assert_eq!(t, expected);
    let u = pool.counts(&tpl("u"));
    assert_eq!((u.reserved, u.available, u.total()), (1, 1, 2));
    pool.archive(&pid("t-0"), tok(1), at(1)).unwrap();
    assert_eq!(
        (
            pool.counts(&tpl("t")).allocated,
            pool.counts(&tpl("t")).archived
        ),
        (0, 1)
    );
    let total: usize = pool
        .counts_by_template()
        .values()
        .map(StateCounts::total)
        .sum();
    assert_eq!(total, pool.len());
}
