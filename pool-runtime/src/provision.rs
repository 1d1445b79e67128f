//! The [`Provisioner`] trait, and the manager's bookkeeping of provisions in flight,
//! failures, backoff and the circuit breaker.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use pool_core::{ProjectId, TemplateName};
use pool_storage::Metadata;
use tokio::time::Instant;

/// A freshly provisioned project.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioned {
    /// Its id.
    pub id: ProjectId,
    /// Its metadata document (connection details and the like).
    pub metadata: Metadata,
}

/// Why a provision, reset or destroy did not succeed; an ordinary outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

/// Creates and destroys projects: the slow, external part of keeping a pool warm.
///
/// # Contract
///
/// - `provision` may take seconds to minutes; the maintainer runs several at once, up
///   to the template's limit, and treats an error or a timeout as a failed attempt.
/// - The id returned must be new: a provisioner never returns an id it returned before.
/// - `recycle` is called for projects that must never be handed out again (archived,
///   reclaimed, quarantined); it destroys or resets them. After it succeeds the pool
///   forgets the project.
#[async_trait]
pub trait Provisioner: Send + Sync + fmt::Debug {
    /// Creates a project of `template`.
    async fn provision(&self, template: &TemplateName) -> Result<Provisioned, ProvisionError>;

    /// Destroys or resets a project that will not be handed out again.
    async fn recycle(
        &self,
        project: &ProjectId,
        template: &TemplateName,
    ) -> Result<(), ProvisionError>;
}

/// The circuit breaker of one template's provisioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Provisions run normally.
    #[default]
    Closed,
    /// Too many failures in a row; only a probe runs once the pause is over.
    Open,
}

/// Provisioning bookkeeping of one template.
#[derive(Debug, Default)]
pub(crate) struct TemplateProvisioning {
    pub(crate) in_flight: usize,
    pub(crate) failures_in_row: u32,
    pub(crate) next_attempt: Option<Instant>,
    pub(crate) circuit: Circuit,
    pub(crate) started: u64,
}

/// Provisioning bookkeeping of every template.
#[derive(Debug, Default)]
pub(crate) struct Provisioning {
    pub(crate) templates: HashMap<TemplateName, TemplateProvisioning>,
}

impl Provisioning {
    pub(crate) fn of(&mut self, template: &TemplateName) -> &mut TemplateProvisioning {
        self.templates.entry(template.clone()).or_default()
    }

    pub(crate) fn in_flight(&self, template: &TemplateName) -> usize {
        self.templates.get(template).map_or(0, |t| t.in_flight)
    }

    pub(crate) fn circuit(&self, template: &TemplateName) -> Circuit {
        self.templates
            .get(template)
            .map_or(Circuit::Closed, |t| t.circuit)
    }
}
