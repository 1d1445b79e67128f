//! How many projects to provision: the replenish policy, as a pure function.
//!
//! Per template the maintainer keeps
//! `available + reserved + provisioning = target + waiting callers`, with at most
//! `max_in_flight` provisions running at once. Stating it as a function of counts lets a
//! replay check it exactly.

use serde::{Deserialize, Serialize};

/// The replenish target of one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplenishPolicy {
    /// Projects to keep ready (available or reserved) with no caller waiting.
    pub target: usize,
    /// The most provisions running at once.
    pub max_in_flight: usize,
}

/// What the maintainer sees of one template when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SupplyCounts {
    /// Available projects.
    pub available: usize,
    /// Reserved, not yet handed out.
    pub reserved: usize,
    /// Provisions running.
    pub in_flight: usize,
    /// Callers waiting for a project.
    pub waiting: usize,
}

impl ReplenishPolicy {
    /// How many provisions to start now.
    pub fn provisions_to_start(&self, c: SupplyCounts) -> usize {
        let wanted = self.target + c.waiting;
        let have = c.available + c.reserved + c.in_flight;
        let missing = wanted.saturating_sub(have);
        let room = self.max_in_flight.saturating_sub(c.in_flight);
        missing.min(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(available: usize, reserved: usize, in_flight: usize, waiting: usize) -> SupplyCounts {
        SupplyCounts {
            available,
            reserved,
            in_flight,
            waiting,
        }
    }

    #[test]
    fn fills_to_target_within_the_concurrency_limit() {
        let p = ReplenishPolicy {
            target: 25,
            max_in_flight: 4,
        };
        assert_eq!(p.provisions_to_start(counts(0, 0, 0, 0)), 4);
        assert_eq!(p.provisions_to_start(counts(0, 0, 4, 0)), 0);
        assert_eq!(p.provisions_to_start(counts(20, 2, 1, 0)), 2);
        assert_eq!(p.provisions_to_start(counts(20, 5, 0, 0)), 0);
    }

    #[test]
    fn waiting_callers_raise_the_target() {
        let p = ReplenishPolicy {
            target: 2,
            max_in_flight: 16,
        };
        assert_eq!(p.provisions_to_start(counts(0, 0, 0, 5)), 7);
        assert_eq!(p.provisions_to_start(counts(1, 1, 3, 5)), 2);
    }

    #[test]
    fn over_supply_starts_nothing() {
        let p = ReplenishPolicy {
            target: 2,
            max_in_flight: 2,
        };
        assert_eq!(p.provisions_to_start(counts(10, 0, 0, 0)), 0);
        assert_eq!(p.provisions_to_start(counts(0, 0, 9, 0)), 0);
    }
}
