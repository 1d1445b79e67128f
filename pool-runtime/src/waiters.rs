//! Callers waiting for a project, served first come, first served.

use std::collections::{HashMap, VecDeque};

use std::sync::Arc;

use pool_core::{Allocation, ConversationId, TemplateName};
use tokio::sync::oneshot;

use crate::shared::Shared;

pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) conversation: ConversationId,
    pub(crate) tx: oneshot::Sender<Allocation>,
}

/// FIFO queues of waiting callers per template.
#[derive(Default)]
pub(crate) struct Waiters {
    queues: HashMap<TemplateName, VecDeque<Waiter>>,
    next_id: u64,
}

impl Waiters {
    /// Queues a caller; returns its ticket and the receiving end.
    pub(crate) fn push(
        &mut self,
        template: &TemplateName,
        conversation: ConversationId,
    ) -> (u64, oneshot::Receiver<Allocation>) {
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            id: self.next_id,
            conversation,
            tx,
        };
        self.queues
            .entry(template.clone())
            .or_default()
            .push_back(waiter);
        (self.next_id, rx)
    }

    /// Removes a caller that gave up; `false` if it was no longer queued (it was served).
    pub(crate) fn remove(&mut self, template: &TemplateName, id: u64) -> bool {
        let Some(q) = self.queues.get_mut(template) else {
            return false;
        };
        let before = q.len();
        q.retain(|w| w.id != id);
        before != q.len()
    }

    /// The oldest caller still waiting for `template`.
    pub(crate) fn pop(&mut self, template: &TemplateName) -> Option<Waiter> {
        self.queues.get_mut(template)?.pop_front()
    }

    /// Puts a caller back at the head of its queue (it could not be served after all).
    pub(crate) fn unpop(&mut self, template: &TemplateName, waiter: Waiter) {
        self.queues
            .entry(template.clone())
            .or_default()
            .push_front(waiter);
    }

    /// How many callers wait for `template`.
    pub(crate) fn len(&self, template: &TemplateName) -> usize {
        self.queues.get(template).map_or(0, VecDeque::len)
    }

    /// Drops every waiting caller; each is told the manager stopped serving.
    pub(crate) fn clear(&mut self) {
        self.queues.clear();
    }

    /// Templates with waiting callers.
    pub(crate) fn templates(&self) -> Vec<TemplateName> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// A queued caller's place in line. Dropping it (the caller gave up or went away) takes
/// the caller out of the queue; if a project had already been handed to it, the project
/// goes back to the reserved buffer, so a caller that gives up leaves no trace.
pub(crate) struct WaitGuard {
    shared: Arc<Shared>,
    template: TemplateName,
    ticket: u64,
    rx: oneshot::Receiver<Allocation>,
    done: bool,
}

impl WaitGuard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        template: TemplateName,
        ticket: u64,
        rx: oneshot::Receiver<Allocation>,
    ) -> Self {
        Self {
            shared,
            template,
            ticket,
            rx,
            done: false,
        }
    }

    /// The project handed to this caller; `None` if the manager stopped serving.
    pub(crate) async fn recv(&mut self) -> Option<Allocation> {
        let got = (&mut self.rx).await.ok();
        self.done = true;
        if let Some(a) = &got {
            self.shared.lock().undelivered.remove(&a.project);
        }
        got
    }

    /// Leaves the queue; returns a project if one was handed over meanwhile.
    pub(crate) fn give_up(&mut self) -> Option<Allocation> {
        self.done = true;
        let mut st = self.shared.lock();
        if st.waiters.remove(&self.template, self.ticket) {
            return None;
        }
        let got = self.rx.try_recv().ok();
        if let Some(a) = &got {
            st.undelivered.remove(&a.project);
        }
        got
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        if st.waiters.remove(&self.template, self.ticket) {
            return;
        }
        let Ok(a) = self.rx.try_recv() else { return };
        if st.undelivered.remove(&a.project) {
            let before = st.pool.version();
            let _ = st
                .pool
                .return_undelivered(&a.project, a.token, self.shared.now());
            self.shared.changed(&mut st, before);
        }
    }
}
