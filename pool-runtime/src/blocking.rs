//! A blocking facade over [`PoolManager`] for callers that are not async.
//!
//! It owns a small tokio runtime of its own, so it works in a process with no runtime
//! at all; called from inside some other runtime, it runs the operation on a scoped
//! helper thread instead of blocking that runtime's worker, so it neither panics nor
//! deadlocks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pool_core::{AllocationToken, ConversationId, ProjectId, TemplateName};
use pool_storage::Metadata;
use tokio::runtime::{Handle, Runtime};

use crate::error::ManagerError;
use crate::manager::{Allocated, ManagerBuilder, OnEmpty, PoolManager, ShutdownReport, Status};

/// The same operations as [`PoolManager`], as blocking calls.
#[derive(Debug)]
pub struct BlockingPoolManager {
    runtime: Option<Runtime>,
    manager: PoolManager,
    stopped: bool,
}

fn run<F>(runtime: &Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if Handle::try_current().is_err() {
        return runtime.block_on(fut);
    }
    std::thread::scope(|s| {
        let joined = s.spawn(|| runtime.block_on(fut)).join();
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl BlockingPoolManager {
    /// Starts a manager from `builder` on a runtime owned by the facade.
    pub fn start(builder: ManagerBuilder) -> Result<Self, ManagerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pool-manager")
            .enable_all()
            .build()
            .map_err(|e| ManagerError::Halted {
                reason: format!("cannot start a runtime: {e}"),
            })?;
        let manager = run(&runtime, builder.start())?;
        Ok(Self {
            runtime: Some(runtime),
            manager,
            stopped: false,
        })
    }

    fn rt(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime lives until drop"))
    }

    /// The async manager underneath.
    pub fn manager(&self) -> &PoolManager {
        &self.manager
    }

    /// See [`PoolManager::allocate`].
    pub fn allocate(
        &self,
        conversation: &ConversationId,
        template: &TemplateName,
        on_empty: OnEmpty,
    ) -> Result<Allocated, ManagerError> {
        run(
            self.rt(),
            self.manager.allocate(conversation, template, on_empty),
        )
    }

    /// See [`PoolManager::add_projects`].
    pub fn add_projects(
        &self,
        template: &TemplateName,
        ids: Vec<ProjectId>,
    ) -> Result<(), ManagerError> {
        run(self.rt(), self.manager.add_projects(template, ids))
    }

    /// See [`PoolManager::mark_active`].
    pub fn mark_active(
        &self,
        project: &ProjectId,
        token: AllocationToken,
    ) -> Result<(), ManagerError> {
        run(self.rt(), self.manager.mark_active(project, token))
    }

    /// See [`PoolManager::archive`].
    pub fn archive(&self, project: &ProjectId, token: AllocationToken) -> Result<(), ManagerError> {
        run(self.rt(), self.manager.archive(project, token))
    }

    /// See [`PoolManager::metadata`].
    pub fn metadata(&self, project: &ProjectId) -> Result<Arc<Metadata>, ManagerError> {
        run(self.rt(), self.manager.metadata(project))
    }

    /// See [`PoolManager::status`].
    pub fn status(&self) -> Status {
        self.manager.status()
    }

    /// See [`PoolManager::flush`].
    pub fn flush(&self) -> Result<(), ManagerError> {
        run(self.rt(), self.manager.flush())
    }

    /// See [`PoolManager::shutdown`].
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.stopped = true;
        run(self.rt(), self.manager.shutdown(deadline))
    }
}

impl Drop for BlockingPoolManager {
    /// Shuts the manager down (ten seconds at most) unless that was done already, then
    /// stops the runtime, off any async context.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = run(self.rt(), self.manager.shutdown(Duration::from_secs(10)));
        }
        if let Some(runtime) = self.runtime.take() {
            if Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(runtime)).join();
            }
        }
    }
}
