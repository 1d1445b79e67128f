//! Random operation sequences, checked after every step.
//!
//! Two worlds run the same generated operations:
//!
//! - one pool acted on by several owners, saved in two steps (the changes are taken, more
//!   operations run, then the taken version is marked saved), as the persister does;
//! - two managers with their own pools sharing one conditional [`Store`], each acting as
//!   its own owner, handing out only durably reserved projects, saving with a rebase on
//!   conflict, and declaring the other (or a third, silent owner) dead.
//!
//! After every step: each pool's indexes agree with its records, no conversation holds two
//! projects, no project was ever handed to two holders (a ledger of every hand-out, checked
//! against every holder any pool or the store shows), versions never go back, a refused
//! operation changed nothing and an accepted one raised the version by exactly its number
//! of changes, allocation is idempotent, a pool rebuilt from its snapshot and a snapshot
//! read back from JSON are equal, and the unsaved changes lead from the last saved
//! document to the current pool. The two-manager world ends by saving both and checks they
//! converge on the stored pool.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{Manager, Store, at, conv, owner, pid, tok, tpl};
use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, PoolChanges, PoolError, PoolSnapshot,
    ProjectId, ProjectRecord, ProjectState, TemplateName,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngAlgorithm, TestRunner};

const LEASE: Duration = Duration::from_millis(2_000);

fn owner_n(i: u8) -> OwnerId {
    owner(&format!("o-{}", i % 3))
}

fn template_n(i: u8) -> TemplateName {
    tpl(&format!("t-{}", i % 2))
}

fn chat_n(i: u8) -> ConversationId {
    conv(&format!("c-{}", i % 6))
}

fn token_n(i: u8) -> AllocationToken {
    tok(u64::from(i % 4) + 1)
}

/// Which project an operation targets: mostly one in a state the operation applies to,
/// sometimes any project or one that does not exist.
#[derive(Debug, Clone)]
struct Pick {
    index: Index,
    stray: bool,
}

#[derive(Debug, Clone)]
enum Op {
    AddAvailable(u8),
    AddProvisioning(u8),
    FinishProvisioning(Pick),
    FailProvisioning(Pick),
    Reserve {
        owner: u8,
        template: u8,
        n: u8,
    },
    ReserveProject {
        owner: u8,
        pick: Pick,
    },
    Allocate {
        owner: u8,
        chat: u8,
        template: u8,
        token: u8,
    },
    AllocateProject {
        owner: u8,
        chat: u8,
        pick: Pick,
        token: u8,
    },
    MarkActive {
        pick: Pick,
        wrong: Option<u8>,
    },
    Archive {
        pick: Pick,
        wrong: Option<u8>,
    },
    Reclaim(Pick),
    ReclaimExpired,
    Quarantine(Pick),
    QuarantineOwner(u8),
    ReleaseOwner(u8),
    Remove(Pick),
    RenewOwner {
        owner: u8,
        ms: u16,
    },
    Tick(u16),
    /// One pool: take the unsaved changes. Two managers: save (rebasing on conflict).
    BeginSave,
    /// One pool: mark the taken changes saved. Two managers: rebase onto the store.
    FinishSave,
}

fn pick() -> impl Strategy<Value = Pick> {
    (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(index, stray)| Pick { index, stray })
}

fn wrong() -> impl Strategy<Value = Option<u8>> {
    prop::option::weighted(0.2, any::<u8>())
}

/// Operations; the shared world declares owners dead and saves more often, since that is
/// where managers meet.
fn op(shared: bool) -> impl Strategy<Value = Op> {
    let u = any::<u8>;
    let (dead, save) = if shared { (3, 4) } else { (1, 2) };
    prop_oneof![
        3 => u().prop_map(Op::AddAvailable),
        1 => u().prop_map(Op::AddProvisioning),
        1 => pick().prop_map(Op::FinishProvisioning),
        1 => pick().prop_map(Op::FailProvisioning),
        3 => (u(), u(), 0u8..4).prop_map(|(owner, template, n)| Op::Reserve { owner, template, n }),
        1 => (u(), pick()).prop_map(|(owner, pick)| Op::ReserveProject { owner, pick }),
        6 => (u(), u(), u(), u()).prop_map(|(owner, chat, template, token)| {
            Op::Allocate { owner, chat, template, token }
        }),
        1 => (u(), u(), pick(), u()).prop_map(|(owner, chat, pick, token)| {
            Op::AllocateProject { owner, chat, pick, token }
        }),
        3 => (pick(), wrong()).prop_map(|(pick, wrong)| Op::MarkActive { pick, wrong }),
        2 => (pick(), wrong()).prop_map(|(pick, wrong)| Op::Archive { pick, wrong }),
        1 => pick().prop_map(Op::Reclaim),
        2 => Just(Op::ReclaimExpired),
        1 => pick().prop_map(Op::Quarantine),
        dead => u().prop_map(Op::QuarantineOwner),
        1 => u().prop_map(Op::ReleaseOwner),
        1 => pick().prop_map(Op::Remove),
        2 => (u(), 0u16..20_000).prop_map(|(owner, ms)| Op::RenewOwner { owner, ms }),
        3 => (0u16..3_000).prop_map(Op::Tick),
        save => Just(Op::BeginSave),
        2 => Just(Op::FinishSave),
    ]
}

/// Twelve projects over two templates; each of three owners registered and holding one
/// reservation per template; saved.
fn start() -> PoolSnapshot {
    let mut pool = Pool::new();
    for i in 0..12u8 {
        let id = pid(&format!("s-{i:02}"));
        pool.add_available(id, template_n(i), at(0)).unwrap();
    }
    for o in 0..3 {
        pool.renew_owner(&owner_n(o), at(10_000));
        for t in 0..2 {
            assert_eq!(pool.reserve(&owner_n(o), &template_n(t), 1, at(0)).len(), 1);
        }
    }
    pool.snapshot()
}

/// Everything observable about a pool: its snapshot (with the version) and what it
/// counts as saved. The unsaved changes follow from these, as `check` verifies.
fn observe(pool: &Pool) -> (PoolSnapshot, u64) {
    (pool.snapshot(), pool.saved_version())
}

/// How often the interesting things happened, to show the generator reaches them.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    hand_outs: u64,
    refusals: u64,
    repeats: u64,
    saves: u64,
    conflicts: u64,
    overridden: u64,
    lost: u64,
    evicted: u64,
    demoted: u64,
    removals: u64,
    reclaims: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.hand_outs += o.hand_outs;
        self.refusals += o.refusals;
        self.repeats += o.repeats;
        self.saves += o.saves;
        self.conflicts += o.conflicts;
        self.overridden += o.overridden;
        self.lost += o.lost;
        self.evicted += o.evicted;
        self.demoted += o.demoted;
        self.removals += o.removals;
        self.reclaims += o.reclaims;
    }
}

/// What one operation did to a pool.
enum Outcome {
    Refused(PoolError),
    /// Accepted, with this many changes (each raising the version by one).
    Changed(u64),
    /// Not attempted: the model forbids it here (a hand-out from an unstored reservation).
    Skipped,
}

fn one(r: Result<(), PoolError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Changed(1),
        Err(e) => Outcome::Refused(e),
    }
}

struct World {
    store: Store,
    managers: Vec<Manager>,
    /// Two managers sharing the store, rather than one pool of several owners.
    shared: bool,
    now: u64,
    next_id: u32,
    /// Every hand-out ever made: a project goes to at most one holder, ever.
    ledger: HashMap<ProjectId, (ConversationId, AllocationToken)>,
    versions: Vec<u64>,
    /// The changes taken by a save in progress (one pool only).
    taking: Option<PoolChanges>,
    /// The store revision last checked.
    checked_revision: u64,
    /// Each pool's snapshot as last checked: an unchanged pool need not be encoded again.
    verified: Vec<Option<PoolSnapshot>>,
    /// Projects once stored and then removed from the store: destroyed, never to return
    /// (the model never reuses an id).
    destroyed: BTreeSet<ProjectId>,
    /// The ids in the store as last checked.
    stored_ids: BTreeSet<ProjectId>,
    stats: Stats,
}

impl World {
    fn new(shared: bool) -> Self {
        let store = Store::new(start());
        let managers: Vec<Manager> = if shared {
            vec![store.manager("o-0"), store.manager("o-1")]
        } else {
            vec![store.manager("o-0")]
        };
        let versions = managers.iter().map(|m| m.pool.version()).collect();
        let ledger = HashMap::new();
        World {
            store,
            managers,
            shared,
            now: 1_000,
            next_id: 0,
            ledger,
            versions,
            taking: None,
            checked_revision: 0,
            verified: vec![None, None],
            destroyed: BTreeSet::new(),
            stored_ids: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    fn run(&mut self, steps: &[(u8, Op)]) {
        for (m, op) in steps {
            let m = usize::from(*m) % self.managers.len();
            self.step(m, op);
            self.check(Some(m));
        }
        if self.shared {
            self.converge();
        }
    }

    fn step(&mut self, m: usize, op: &Op) {
        match op {
            Op::Tick(ms) => self.now += u64::from(*ms),
            Op::BeginSave if self.shared => {
                self.stats.saves += 1;
                if let Some(report) = self.store.save(&mut self.managers[m]) {
                    self.stats.conflicts += 1;
                    self.count(&report);
                }
            }
            Op::FinishSave if self.shared => {
                let report = self.store.rebase(&mut self.managers[m]);
                self.count(&report);
            }
            Op::BeginSave => self.taking = Some(self.managers[0].pool.unsaved()),
            Op::FinishSave => {
                if let Some(changes) = self.taking.take() {
                    let single = &mut self.managers[0];
                    assert_eq!(changes.base_version, single.base.pool_version);
                    single.base.apply(&changes);
                    single.pool.mark_saved(changes.pool_version);
                    self.stats.saves += 1;
                }
            }
            _ => self.pool_op(m, op),
        }
    }

    /// The owner an operation acts as: in the shared world a manager only ever acts as
    /// itself.
    fn who(&self, m: usize, o: u8) -> OwnerId {
        if self.shared {
            self.managers[m].me.clone()
        } else {
            owner_n(o)
        }
    }

    fn pool_op(&mut self, m: usize, op: &Op) {
        let before = observe(&self.managers[m].pool);
        let version = self.managers[m].pool.version();
        let outcome = self.apply(m, op);
        let pool = &self.managers[m].pool;
        match outcome {
            Outcome::Refused(e) => {
                assert_eq!(
                    observe(pool),
                    before,
                    "{op:?} was refused ({e}) but changed the pool"
                );
                self.stats.refusals += 1;
            }
            Outcome::Changed(n) => {
                assert_eq!(pool.version(), version + n, "{op:?} made {n} changes");
                if n == 0 {
                    assert_eq!(
                        observe(pool),
                        before,
                        "{op:?} changed nothing but the pool moved"
                    );
                    self.stats.repeats += 1;
                }
            }
            Outcome::Skipped => assert_eq!(observe(pool), before),
        }
    }

    fn fresh_id(&mut self) -> ProjectId {
        self.next_id += 1;
        pid(&format!("n-{:04}", self.next_id))
    }

    fn apply(&mut self, m: usize, op: &Op) -> Outcome {
        let now = at(self.now);
        match op {
            Op::AddAvailable(t) => {
                let id = self.fresh_id();
                one(self.pool(m).add_available(id, template_n(*t), now))
            }
            Op::AddProvisioning(t) => {
                let id = self.fresh_id();
                one(self.pool(m).add_provisioning(id, template_n(*t), now))
            }
            Op::FinishProvisioning(p) => {
                let id = choose(self.pool(m), p, |r| r.state == ProjectState::Provisioning);
                one(self.pool(m).finish_provisioning(&id, now))
            }
            Op::FailProvisioning(p) => {
                let id = choose(self.pool(m), p, |r| r.state == ProjectState::Provisioning);
                one(self.pool(m).fail_provisioning(&id, "provider said no", now))
            }
            Op::Reserve { owner, template, n } => self.reserve(m, *owner, *template, *n),
            Op::ReserveProject { owner, pick } => {
                let who = self.who(m, *owner);
                let id = choose(self.pool(m), pick, |r| r.state == ProjectState::Available);
                one(self.pool(m).reserve_project(&who, &id, now))
            }
            Op::Allocate {
                owner,
                chat,
                template,
                token,
            } => self.allocate(
                m,
                *owner,
                chat_n(*chat),
                template_n(*template),
                token_n(*token),
            ),
            Op::AllocateProject {
                owner,
                chat,
                pick,
                token,
            } => self.allocate_project(m, *owner, chat_n(*chat), pick, token_n(*token)),
            Op::MarkActive { pick, wrong } => {
                let held = |r: &ProjectRecord| matches!(r.state, ProjectState::Allocated { .. });
                let (id, token) = self.holder_pick(m, pick, *wrong, held);
                let before = self.pool(m).get(&id).cloned();
                let r = self.pool(m).mark_active(&id, token, now);
                self.maybe_no_op(m, &id, before, r)
            }
            Op::Archive { pick, wrong } => {
                let held = |r: &ProjectRecord| r.state.holder().is_some();
                let (id, token) = self.holder_pick(m, pick, *wrong, held);
                let before = self.pool(m).get(&id).cloned();
                let r = self.pool(m).archive(&id, token, now);
                self.maybe_no_op(m, &id, before, r)
            }
            Op::Reclaim(p) => {
                let leased = |r: &ProjectRecord| matches!(r.state, ProjectState::Allocated { .. });
                let id = choose(self.pool(m), p, leased);
                one(self.pool(m).reclaim(&id, now))
            }
            Op::ReclaimExpired => {
                let expired = self.pool(m).expired_allocations(now);
                for id in &expired {
                    self.pool(m).reclaim(id, now).unwrap();
                }
                self.stats.reclaims += expired.len() as u64;
                Outcome::Changed(expired.len() as u64)
            }
            Op::Quarantine(p) => {
                let id = choose(self.pool(m), p, |r| r.state.holder().is_none());
                one(self.pool(m).quarantine(&id, "looked wrong", now))
            }
            Op::QuarantineOwner(o) => self.drop_owner(m, *o, true),
            Op::ReleaseOwner(o) => self.drop_owner(m, *o, false),
            Op::Remove(p) => {
                let id = choose(self.pool(m), p, |r| {
                    matches!(
                        r.state,
                        ProjectState::Archived { .. }
                            | ProjectState::Quarantined { .. }
                            | ProjectState::Failed { .. }
                    )
                });
                let r = self.pool(m).remove(&id);
                if let Ok(rec) = &r {
                    assert_eq!(rec.id, id);
                    self.stats.removals += 1;
                }
                one(r.map(|_| ()))
            }
            Op::RenewOwner { owner, ms } => {
                let who = self.who(m, *owner);
                let until = at(self.now + u64::from(*ms));
                self.pool(m).renew_owner(&who, until);
                assert_eq!(self.pool(m).owners()[&who].lease_until, until);
                Outcome::Changed(1)
            }
            Op::Tick(_) | Op::BeginSave | Op::FinishSave => unreachable!("handled by step"),
        }
    }

    fn pool(&mut self, m: usize) -> &mut Pool {
        &mut self.managers[m].pool
    }

    fn reserve(&mut self, m: usize, o: u8, t: u8, n: u8) -> Outcome {
        let (who, template) = (self.who(m, o), template_n(t));
        let pool = self.pool(m);
        let mut available: Vec<ProjectId> = pool
            .records()
            .filter(|r| r.template == template && r.state == ProjectState::Available)
            .map(|r| r.id.clone())
            .collect();
        available.sort();
        available.truncate(usize::from(n));
        let got = pool.reserve(&who, &template, usize::from(n), at(0));
        assert_eq!(
            got, available,
            "reserve takes the first available projects of the template"
        );
        for id in &got {
            assert_eq!(
                pool.get(id).unwrap().state,
                ProjectState::Reserved { owner: who.clone() }
            );
        }
        Outcome::Changed(got.len() as u64)
    }

    /// Whether `id` is reserved by `me` in a reservation the store already has.
    fn durable(&self, m: usize, id: &ProjectId) -> bool {
        let mgr = &self.managers[m];
        let rec = mgr.pool.get(id);
        rec.is_some_and(|r| r.version <= mgr.pool.saved_version())
    }

    fn allocate(
        &mut self,
        m: usize,
        o: u8,
        chat: ConversationId,
        template: TemplateName,
        token: AllocationToken,
    ) -> Outcome {
        let who = self.who(m, o);
        let pool = &self.managers[m].pool;
        let held = pool.holder_of(&chat);
        let first = pool
            .records()
            .filter(|r| r.template == template)
            .filter(|r| r.state == ProjectState::Reserved { owner: who.clone() })
            .map(|r| r.id.clone())
            .min();
        if self.shared && held.is_none() && first.as_ref().is_some_and(|id| !self.durable(m, id)) {
            return Outcome::Skipped;
        }
        let now = at(self.now);
        let got = self
            .pool(m)
            .allocate(&who, &chat, &template, token, now, LEASE);
        let got = match (got, held, first) {
            (Ok(a), Some(h), _) => {
                assert_eq!(a, h, "a conversation that holds a project gets it back");
                return Outcome::Changed(0);
            }
            (Err(e), None, None) => {
                assert_eq!(
                    e,
                    PoolError::NoReservedProject {
                        owner: who,
                        template
                    }
                );
                return Outcome::Refused(e);
            }
            (Ok(a), None, Some(first)) => {
                assert_eq!((a.project.clone(), a.token, a.fresh), (first, token, true));
                a
            }
            (got, held, first) => {
                panic!("allocate gave {got:?} with {held:?} held, {first:?} reserved")
            }
        };
        self.handed_out(m, &chat, &got.project, token);
        Outcome::Changed(1)
    }

    fn allocate_project(
        &mut self,
        m: usize,
        o: u8,
        chat: ConversationId,
        p: &Pick,
        token: AllocationToken,
    ) -> Outcome {
        let who = self.who(m, o);
        let (shared, saved) = (self.shared, self.managers[m].pool.saved_version());
        let id = choose(&self.managers[m].pool, p, |r| {
            r.state == ProjectState::Reserved { owner: who.clone() }
                && (!shared || r.version <= saved)
        });
        let reserved_here = self.managers[m].pool.get(&id).map(|r| &r.state)
            == Some(&ProjectState::Reserved { owner: who.clone() });
        let held = self.managers[m].pool.holder_of(&chat);
        if shared && held.is_none() && reserved_here && !self.durable(m, &id) {
            return Outcome::Skipped;
        }
        let now = at(self.now);
        match self
            .pool(m)
            .allocate_project(&who, &chat, &id, token, now, LEASE)
        {
            Ok(a) if a.fresh => {
                assert!(held.is_none() && reserved_here);
                assert_eq!((a.project.clone(), a.token), (id.clone(), token));
                self.handed_out(m, &chat, &id, token);
                Outcome::Changed(1)
            }
            Ok(a) => {
                assert_eq!(Some(a), held);
                Outcome::Changed(0)
            }
            Err(e) => Outcome::Refused(e),
        }
    }

    /// Records a fresh hand-out in the ledger and checks that asking again is idempotent.
    fn handed_out(
        &mut self,
        m: usize,
        chat: &ConversationId,
        id: &ProjectId,
        token: AllocationToken,
    ) {
        self.stats.hand_outs += 1;
        let earlier = self.ledger.insert(id.clone(), (chat.clone(), token));
        assert_eq!(earlier, None, "project {id} was handed out a second time");
        let pool = &mut self.managers[m].pool;
        let rec = pool.get(id).unwrap().clone();
        let ProjectState::Allocated {
            conversation,
            token: held,
            lease_until,
            ..
        } = &rec.state
        else {
            panic!("a fresh allocation left {id} {:?}", rec.state);
        };
        assert_eq!(
            (conversation, *held, *lease_until),
            (chat, token, at(self.now).saturating_add(LEASE))
        );
        let before = observe(pool);
        let other = AllocationToken::from_u64(token.as_u64() ^ 0xff);
        let (owner, template) = (self.managers[m].me.clone(), rec.template.clone());
        let pool = &mut self.managers[m].pool;
        let again = pool
            .allocate(&owner, chat, &template, other, at(self.now + 5), LEASE)
            .unwrap();
        assert_eq!(
            (&again.project, again.token, again.fresh),
            (id, token, false)
        );
        assert_eq!(
            observe(pool),
            before,
            "a repeated allocation changed the pool"
        );
    }

    /// A held project and either its holder's token or an arbitrary one.
    fn holder_pick(
        &self,
        m: usize,
        p: &Pick,
        wrong: Option<u8>,
        useful: impl Fn(&ProjectRecord) -> bool,
    ) -> (ProjectId, AllocationToken) {
        let pool = &self.managers[m].pool;
        let id = choose(pool, p, useful);
        let held = pool.get(&id).and_then(|r| match &r.state {
            ProjectState::Archived { token, .. } => *token,
            state => state.holder().map(|(_, t)| t),
        });
        let token = match (wrong, held) {
            (None, Some(t)) => t,
            (Some(w), _) => token_n(w),
            (None, None) => token_n(0),
        };
        (id, token)
    }

    /// Mark-active and archive repeat as no-ops: one change, or none when the record is
    /// as it was.
    fn maybe_no_op(
        &self,
        m: usize,
        id: &ProjectId,
        before: Option<ProjectRecord>,
        r: Result<(), PoolError>,
    ) -> Outcome {
        match r {
            Ok(()) if self.managers[m].pool.get(id) == before.as_ref() => Outcome::Changed(0),
            Ok(()) => Outcome::Changed(1),
            Err(e) => Outcome::Refused(e),
        }
    }

    /// Quarantines (or releases) everything an owner reserved, and forgets the owner.
    fn drop_owner(&mut self, m: usize, o: u8, quarantine: bool) -> Outcome {
        let who = if self.shared && !quarantine {
            self.managers[m].me.clone()
        } else {
            owner_n(o)
        };
        if self.shared && quarantine && who == self.managers[m].me {
            return Outcome::Skipped;
        }
        let now = at(self.now);
        let pool = self.pool(m);
        let mut reserved: Vec<ProjectId> = pool
            .records()
            .filter(|r| r.state == ProjectState::Reserved { owner: who.clone() })
            .map(|r| r.id.clone())
            .collect();
        reserved.sort();
        let registered = pool.owners().contains_key(&who);
        let got = if quarantine {
            pool.quarantine_owner(&who, "owner lease expired", now)
        } else {
            pool.release_owner(&who, now)
        };
        assert_eq!(got, reserved);
        for id in &got {
            let state = &pool.get(id).unwrap().state;
            if quarantine {
                let expected = ProjectState::Quarantined {
                    former_owner: Some(who.clone()),
                    reason: "owner lease expired".into(),
                };
                assert_eq!(state, &expected);
            } else {
                assert_eq!(state, &ProjectState::Available);
            }
        }
        assert!(!pool.owners().contains_key(&who));
        Outcome::Changed(got.len() as u64 + u64::from(registered))
    }

    /// Everything that must hold after every step, for the manager that acted (only its
    /// pool can have changed) or for all.
    fn check(&mut self, acted: Option<usize>) {
        let now = at(self.now);
        for (m, mgr) in self.managers.iter().enumerate() {
            if acted.is_some_and(|a| a != m) {
                continue;
            }
            let pool = &mgr.pool;
            pool.check_invariants().unwrap();
            assert!(pool.version() >= self.versions[m], "the version went back");
            self.versions[m] = pool.version();
            let snapshot = pool.snapshot();
            if self.verified[m].as_ref() != Some(&snapshot) {
                let rebuilt = Pool::from_snapshot(snapshot.clone()).unwrap();
                assert_eq!(
                    rebuilt.snapshot(),
                    snapshot,
                    "a pool rebuilt from its snapshot differs"
                );
                let read = PoolSnapshot::from_json(&snapshot.to_json()).unwrap();
                assert_eq!(read, snapshot, "a snapshot read back from JSON differs");
            }
            assert_eq!(mgr.base.pool_version, pool.saved_version());
            let unsaved = pool.unsaved();
            assert_eq!(
                pool.unsaved_changes(),
                unsaved.changed.len() + unsaved.removed.len()
            );
            let mut replayed = mgr.base.clone();
            replayed.apply(&unsaved);
            assert_eq!(
                replayed, snapshot,
                "the unsaved changes do not lead to the pool"
            );
            check_leases(pool, now);
            check_holders(&snapshot, &self.ledger);
            self.verified[m] = Some(snapshot);
        }
        if self.shared && self.checked_revision != self.store.revision {
            self.checked_revision = self.store.revision;
            Pool::from_snapshot(self.store.snapshot.clone()).unwrap();
            check_holders(&self.store.snapshot, &self.ledger);
            let ids: BTreeSet<ProjectId> = self
                .store
                .snapshot
                .projects
                .iter()
                .map(|r| r.id.clone())
                .collect();
            if let Some(back) = ids.intersection(&self.destroyed).next() {
                panic!("project {back} was removed from the store and came back");
            }
            self.destroyed
                .extend(self.stored_ids.difference(&ids).cloned());
            self.stored_ids = ids;
        }
    }

    fn count(&mut self, report: &pool_core::RebaseReport) {
        self.stats.overridden += u64::from(!report.overridden.is_empty());
        self.stats.lost += u64::from(!report.lost.is_empty());
        self.stats.evicted += u64::from(report.evicted);
    }

    /// Hand-outs that a rebase quarantined because their conversation already held
    /// another project.
    fn count_demotions(&mut self) {
        let demoted = self
            .store
            .snapshot
            .projects
            .iter()
            .filter(|r| match &r.state {
                ProjectState::Quarantined { reason, .. } => reason.contains("already holds"),
                _ => false,
            });
        self.stats.demoted += demoted.count() as u64;
    }

    /// Both managers save; both then hold exactly what is stored.
    fn converge(&mut self) {
        let [a, b] = &mut self.managers[..] else {
            unreachable!("two managers")
        };
        self.store.save(a);
        self.store.save(b);
        self.store.rebase(a);
        assert_eq!(a.pool.snapshot(), self.store.snapshot);
        assert_eq!(b.pool.snapshot(), self.store.snapshot);
        self.check(None);
    }
}

/// A project of the state `useful` accepts (any project when none is, or when the pick
/// strays, which also sometimes names a project that does not exist).
fn choose(pool: &Pool, p: &Pick, useful: impl Fn(&ProjectRecord) -> bool) -> ProjectId {
    let mut ids: Vec<ProjectId> = pool
        .records()
        .filter(|r| useful(r))
        .map(|r| r.id.clone())
        .collect();
    if p.stray || ids.is_empty() {
        ids = pool.records().map(|r| r.id.clone()).collect();
        ids.push(pid("missing"));
    }
    ids.sort();
    ids[p.index.index(ids.len())].clone()
}

/// Expired allocations are exactly the allocations whose lease ran out, oldest first, and
/// expired owners exactly the owners whose lease ran out.
fn check_leases(pool: &Pool, now: pool_core::Timestamp) {
    let mut due: Vec<(pool_core::Timestamp, ProjectId)> = pool
        .records()
        .filter_map(|r| match &r.state {
            ProjectState::Allocated { lease_until, .. } if *lease_until <= now => {
                Some((*lease_until, r.id.clone()))
            }
            _ => None,
        })
        .collect();
    due.sort();
    let due: Vec<ProjectId> = due.into_iter().map(|(_, id)| id).collect();
    assert_eq!(pool.expired_allocations(now), due);
    let owners: Vec<OwnerId> = pool
        .owners()
        .iter()
        .filter(|(_, l)| l.lease_until <= now)
        .map(|(o, _)| o.clone())
        .collect();
    assert_eq!(pool.expired_owners(now), owners);
}

/// No conversation holds two projects, and every holder any document shows (including
/// the last holder of an archived project) is the one the project was handed to.
fn check_holders(
    snapshot: &PoolSnapshot,
    ledger: &HashMap<ProjectId, (ConversationId, AllocationToken)>,
) {
    let mut holding = BTreeSet::new();
    for rec in &snapshot.projects {
        let holder = match &rec.state {
            ProjectState::Archived {
                conversation: Some(c),
                token: Some(t),
                ..
            } => Some((c, *t)),
            state => {
                if let Some((c, _)) = state.holder() {
                    assert!(
                        holding.insert(c.clone()),
                        "conversation {c} holds two projects"
                    );
                }
                state.holder()
            }
        };
        if let Some((c, t)) = holder {
            let handed = ledger.get(&rec.id).map(|(c, t)| (c, *t));
            assert_eq!(
                handed,
                Some((c, t)),
                "{} shows a holder it was never handed to",
                rec.id
            );
        }
    }
}

fn steps(shared: bool) -> impl Strategy<Value = Vec<(u8, Op)>> {
    prop::collection::vec((any::<u8>(), op(shared)), 1..32)
}

/// Runs 1,000 random sequences in one world kind; returns what they did in total.
fn run_cases(shared: bool) -> Stats {
    let config = ProptestConfig {
        cases: 1000,
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    };
    let total = std::cell::RefCell::new(Stats::default());
    let mut runner = TestRunner::new(config);
    let result = runner.run(&steps(shared), |steps| {
        let mut world = World::new(shared);
        world.run(&steps);
        if shared {
            world.count_demotions();
        }
        total.borrow_mut().add(&world.stats);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    total.into_inner()
}

/// Fails unless each event happened at least `min` times: a generator that stopped
/// reaching them would leave the properties above checking nothing interesting.
fn reached(events: &[(&str, u64, u64)]) {
    for (what, n, min) in events {
        assert!(n >= min, "only {n} {what} in 1,000 cases (want {min})");
    }
}

#[test]
fn one_pool_of_several_owners_keeps_every_invariant() {
    let s = run_cases(false);
    reached(&[
        ("hand-outs", s.hand_outs, 500),
        ("refusals", s.refusals, 500),
        ("repeated operations", s.repeats, 300),
        ("saves", s.saves, 50),
        ("removals", s.removals, 30),
        ("reclaims", s.reclaims, 15),
    ]);
}

#[test]
fn two_managers_sharing_a_store_never_hand_a_project_out_twice() {
    let s = run_cases(true);
    reached(&[
        ("hand-outs", s.hand_outs, 500),
        ("saves", s.saves, 300),
        ("conflicts", s.conflicts, 100),
        ("rebases overriding a local change", s.overridden, 25),
        ("rebases reporting lost projects", s.lost, 10),
        ("rebases reporting eviction", s.evicted, 5),
        ("conversations served twice", s.demoted, 15),
    ]);
}
