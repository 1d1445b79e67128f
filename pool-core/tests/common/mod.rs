//! Short constructors shared by the pool-core integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test file uses a different part; a failed unwrap is a failed test"
)]

use std::time::Duration;

use pool_core::{
    AllocationToken, ConversationId, OwnerId, Pool, PoolError, PoolSnapshot, ProjectId,
    RebaseReport, TemplateName, Timestamp,
};

/// The allocation lease every test uses unless it says otherwise.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

pub(crate) fn pid(s: &str) -> ProjectId {
    ProjectId::new(s).unwrap()
}

pub(crate) fn conv(s: &str) -> ConversationId {
    ConversationId::new(s).unwrap()
}

pub(crate) fn owner(s: &str) -> OwnerId {
    OwnerId::new(s).unwrap()
}

pub(crate) fn tpl(s: &str) -> TemplateName {
    TemplateName::new(s).unwrap()
}

pub(crate) fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub(crate) fn tok(n: u64) -> AllocationToken {
    AllocationToken::from_u64(n)
}

/// Everything observable about a pool, for "nothing changed" comparisons.
#[derive(Debug, PartialEq)]
pub(crate) struct Observed {
    pub(crate) snapshot: PoolSnapshot,
    pub(crate) saved_version: u64,
    pub(crate) unsaved: pool_core::PoolChanges,
}

pub(crate) fn observe(pool: &Pool) -> Observed {
    Observed {
        snapshot: pool.snapshot(),
        saved_version: pool.saved_version(),
        unsaved: pool.unsaved(),
    }
}

/// Runs an operation that must be refused and checks it left the pool exactly as it was.
pub(crate) fn refused<T: std::fmt::Debug>(
    pool: &mut Pool,
    op: impl FnOnce(&mut Pool) -> Result<T, PoolError>,
) -> PoolError {
    let before = observe(pool);
    let err = op(pool).expect_err("the operation must be refused");
    assert_eq!(
        observe(pool),
        before,
        "a refused operation ({err}) changed the pool"
    );
    pool.check_invariants().unwrap();
    err
}

/// Adds `n` available projects named `{prefix}-{i}` of template `t` at time `now`.
pub(crate) fn add_many(
    pool: &mut Pool,
    prefix: &str,
    t: &TemplateName,
    n: usize,
    now: Timestamp,
) -> Vec<ProjectId> {
    (0..n)
        .map(|i| {
            let id = pid(&format!("{prefix}-{i}"));
            pool.add_available(id.clone(), t.clone(), now).unwrap();
            id
        })
        .collect()
}

/// A stored pool with a revision, standing in for a storage backend with conditional
/// writes, shared by several [`Manager`]s.
pub(crate) struct Store {
    pub(crate) snapshot: PoolSnapshot,
    pub(crate) revision: u64,
}

/// One manager process: its owner id, its pool, and the store revision and document it
/// last saw (what its unsaved changes apply to).
pub(crate) struct Manager {
    pub(crate) me: OwnerId,
    pub(crate) pool: Pool,
    pub(crate) revision: u64,
    pub(crate) base: PoolSnapshot,
}

impl Store {
    pub(crate) fn new(snapshot: PoolSnapshot) -> Self {
        Self {
            snapshot,
            revision: 1,
        }
    }

    /// A manager that has just loaded the store.
    pub(crate) fn manager(&self, me: &str) -> Manager {
        let pool = Pool::from_snapshot(self.snapshot.clone()).unwrap();
        Manager {
            me: owner(me),
            pool,
            revision: self.revision,
            base: self.snapshot.clone(),
        }
    }

    /// A conditional save of `m`'s pool: refused (false) when the store moved on since `m`
    /// last saw it. Checks that the incremental form of the write gives the same document
    /// as the full one, and that the stored version never goes back.
    pub(crate) fn try_save(&mut self, m: &mut Manager) -> bool {
        if m.revision != self.revision {
            return false;
        }
        let changes = m.pool.unsaved();
        assert_eq!(
            changes.base_version, self.snapshot.pool_version,
            "changes on another base"
        );
        let full = m.pool.snapshot();
        let mut incremental = self.snapshot.clone();
        incremental.apply(&changes);
        assert_eq!(
            incremental, full,
            "applying the unsaved changes gives another pool"
        );
        assert!(
            full.pool_version >= self.snapshot.pool_version,
            "the stored version went back"
        );
        self.snapshot = full.clone();
        m.base = full;
        self.revision += 1;
        m.revision = self.revision;
        m.pool.mark_saved(m.pool.version());
        true
    }

    /// Rebases `m` onto what is stored, checking what every rebase promises.
    pub(crate) fn rebase(&self, m: &mut Manager) -> RebaseReport {
        let before = m.pool.version();
        let stored = self.snapshot.pool_version;
        let report = m.pool.rebase(self.snapshot.clone(), &m.me).unwrap();
        m.revision = self.revision;
        m.base = self.snapshot.clone();
        let after = m.pool.version();
        assert!(
            after >= before.max(stored),
            "version {after} below {before} or {stored}"
        );
        if !report.applied.is_empty() {
            assert!(
                after > before.max(stored),
                "version {after} not above {before} and {stored}"
            );
        }
        assert_eq!(m.pool.saved_version(), stored);
        assert_eq!(m.pool.unsaved().base_version, stored);
        let mut replayed = self.snapshot.clone();
        replayed.apply(&m.pool.unsaved());
        assert_eq!(
            replayed,
            m.pool.snapshot(),
            "unsaved changes do not lead from the store to the pool"
        );
        m.pool.check_invariants().unwrap();
        report
    }

    /// Saves `m`, rebasing first if another manager saved meanwhile.
    pub(crate) fn save(&mut self, m: &mut Manager) -> Option<RebaseReport> {
        if self.try_save(m) {
            return None;
        }
        let report = self.rebase(m);
        assert!(
            self.try_save(m),
            "a save right after a rebase cannot conflict"
        );
        Some(report)
    }
}
