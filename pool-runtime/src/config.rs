//! Configuration of a [`PoolManager`](crate::PoolManager).

use std::time::Duration;

use pool_core::{OwnerId, ReplenishPolicy, TemplateName};

/// When a hand-out is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// At once, from a durably reserved project; the allocation is saved behind.
    #[default]
    WriteBehind,
    /// Only once the allocation itself is stored (callers waiting together share one
    /// write).
    Durable,
}

/// Capped exponential backoff with jitter, for temporary store errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Each delay is the previous one times this.
    pub multiplier: f64,
    /// Each delay is shortened by a random fraction up to this (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = self.initial.as_secs_f64() * exp;
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The delay with jitter applied, given a uniform random number in `[0, 1)`.
    pub fn jittered(&self, attempt: u32, random: f64) -> Duration {
        let d = self.delay(attempt);
        d.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
    }
}

/// One template the manager keeps warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The template's name.
    pub name: TemplateName,
    /// How many ready projects to keep, and how many provisions may run at once.
    pub policy: ReplenishPolicy,
    /// How many projects this manager keeps reserved for itself, ready to hand out
    /// without I/O.
    pub reserve: usize,
}

impl TemplateConfig {
    /// A template with `target` ready projects, all of them reserved by this manager,
    /// and up to 4 provisions at once.
    pub fn new(name: TemplateName, target: usize) -> Self {
        Self {
            name,
            policy: ReplenishPolicy {
                target,
                max_in_flight: 4,
            },
            reserve: target,
        }
    }
}

/// How a [`PoolManager`](crate::PoolManager) behaves.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// This manager's owner id; a random one when `None`.
    pub owner: Option<OwnerId>,
    /// The templates kept warm.
    pub templates: Vec<TemplateConfig>,
    /// When hand-outs are acknowledged.
    pub durability: Durability,
    /// How long an allocation may stay unmarked-active before it is reclaimed.
    pub allocation_lease: Duration,
    /// How long this manager's liveness lease lasts without a heartbeat.
    pub owner_lease: Duration,
    /// How often the lease is renewed.
    pub heartbeat_interval: Duration,
    /// How long write-behind changes wait to be gathered into one save.
    pub save_delay: Duration,
    /// Past this many unsaved changed projects, hand-outs wait for a save.
    pub max_unsaved: usize,
    /// Past this age of the oldest unsaved change, hand-outs wait for a save.
    pub max_unsaved_age: Duration,
    /// Backoff for temporary store errors.
    pub retry: RetryPolicy,
    /// The longest one store request may take before it counts as a temporary failure.
    pub request_timeout: Duration,
    /// How often the maintainer looks at the pool when nothing wakes it earlier.
    pub maintain_interval: Duration,
    /// The longest one provision may take before it counts as failed.
    pub provision_timeout: Duration,
    /// Backoff between failed provisions of one template.
    pub provision_retry: RetryPolicy,
    /// Failures in a row that open a template's provisioning circuit.
    pub circuit_threshold: u32,
    /// How long an open circuit waits before one probe provision.
    pub circuit_open_for: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            owner: None,
            templates: Vec::new(),
            durability: Durability::WriteBehind,
            allocation_lease: Duration::from_secs(300),
            owner_lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            save_delay: Duration::from_millis(50),
            max_unsaved: 1_000,
            max_unsaved_age: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            maintain_interval: Duration::from_secs(1),
            provision_timeout: Duration::from_secs(600),
            provision_retry: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.0,
            },
            circuit_threshold: 5,
            circuit_open_for: Duration::from_secs(60),
        }
    }
}

impl ManagerConfig {
    /// The configuration of `template`, if the manager keeps it warm.
    pub fn template(&self, template: &TemplateName) -> Option<&TemplateConfig> {
        self.templates.iter().find(|t| &t.name == template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
        };
        let ms: Vec<u128> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.jittered(2, 1.0).as_millis(), 100);
        assert_eq!(p.jittered(2, 0.0).as_millis(), 200);
        assert_eq!(p.delay(10_000), Duration::from_secs(1));
    }
}
