//! What the caller must do after a scheduler call.

use super::{HeldValues, JobId, Lease, LeaseToken, Scheduler, WorkerId};

/// Something the caller must do after a scheduler call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send these leases to the worker (one grant per worker per call).
    /// If they cannot be queued for it, hand them back with
    /// [`Scheduler::undelivered`].
    Grant {
        worker: WorkerId,
        leases: Vec<Lease>,
    },
    /// Tell the worker these leases are no longer wanted.
    Revoke {
        worker: WorkerId,
        tokens: Vec<LeaseToken>,
    },
    /// The job has values, or an outcome, for its stream.
    JobReady(JobId),
}

impl<V: HeldValues> Scheduler<V> {
    /// What the caller must do now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.queued_grants.clear();
        std::mem::take(&mut self.effects)
    }

    /// Queues leases for `worker`, in the grant already queued for it if
    /// there is one: a batch of results freeing window space one chunk at
    /// a time is then answered with one message, not one per chunk.
    /// Merging moves leases earlier, never later, so a revocation still
    /// follows the grant of what it revokes.
    pub(super) fn queue_grant(&mut self, worker: WorkerId, mut leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        if let Some(&index) = self.queued_grants.get(&worker)
            && let Some(Effect::Grant { leases: queued, .. }) = self.effects.get_mut(index)
        {
            queued.append(&mut leases);
            return;
        }
        self.queued_grants.insert(worker, self.effects.len());
        self.effects.push(Effect::Grant { worker, leases });
    }
}
