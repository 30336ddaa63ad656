//! The gRPC services: thin adapters between tonic and the [`Scheduler`].
//!
//! [`Hub`] owns the scheduler behind a `std::sync::Mutex` together with the
//! outboxes of every worker session and the wakers of every job stream.
//! Every scheduler call goes through [`Hub::with_scheduler`], which carries
//! out the call's effects before unlocking: only non-blocking sends and
//! notifications happen under the lock, never an await, and effects leave
//! in the order the scheduler produced them.

mod jobs;
mod status;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use farm_proto::v1;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub use jobs::JobsApi;
pub use workers::WorkersApi;

use crate::config::CoordinatorConfig;
use crate::scheduler::{Departure, Effect, JobId, LeaseToken, Scheduler, WorkerId};

/// Messages queued for one worker session. A worker only receives what it
/// asked for (bounded by its demand) plus revocations, so a full queue
/// means the worker stopped reading: it is dropped.
const SESSION_QUEUE: usize = 256;

type SessionSender = mpsc::Sender<Result<v1::CoordinatorMessage, Status>>;

/// A connected worker's outbox and the switch that ends its session.
#[derive(Debug)]
struct Session {
    outbox: SessionSender,
    closed: CancellationToken,
}

#[derive(Debug)]
struct HubState {
    scheduler: Scheduler,
    sessions: HashMap<WorkerId, Session>,
    job_wakers: HashMap<JobId, Arc<Notify>>,
}

/// The state shared by every service and background task.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    config: CoordinatorConfig,
    /// Cancelled when the coordinator shuts down.
    shutdown: CancellationToken,
}

impl Hub {
    pub fn new(config: CoordinatorConfig, shutdown: CancellationToken) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                scheduler: Scheduler::new(config.scheduler),
                sessions: HashMap::new(),
                job_wakers: HashMap::new(),
            }),
            config,
            shutdown,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Runs `f` on the scheduler, then carries out its effects.
    pub fn with_scheduler<R>(&self, f: impl FnOnce(&mut Scheduler, Instant) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state.scheduler, Instant::now());
        state.apply_effects();
        result
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the scheduler half
        // updated in a way later calls trip on (each call is one step), so
        // keep serving rather than poisoning every later request.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Expires silent workers and hands out backups; called on a timer.
    pub fn tick(&self) {
        self.with_scheduler(|s, now| s.tick(now));
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }
}

impl HubState {
    fn apply_effects(&mut self) {
        loop {
            let effects = self.scheduler.take_effects();
            if effects.is_empty() {
                return;
            }
            let mut broken = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Grant { worker, leases } => {
                        let grant = v1::LeaseGrant {
                            leases: leases.iter().map(lease_message).collect(),
                        };
                        let message = v1::coordinator_message::Kind::Grant(grant);
                        if !self.send(worker, message) {
                            let tokens: Vec<LeaseToken> = leases.iter().map(|l| l.token).collect();
                            broken.push((worker, tokens));
                        }
                    }
                    Effect::Revoke { worker, tokens } => {
                        let revoke = v1::LeaseRevoke {
                            tokens: tokens.iter().map(|t| token_message(*t)).collect(),
                        };
                        // A worker that cannot take a revocation will have
                        // its stale result rejected anyway.
                        self.send(worker, v1::coordinator_message::Kind::Revoke(revoke));
                    }
                    Effect::JobReady(job) => {
                        if let Some(waker) = self.job_wakers.get(&job) {
                            waker.notify_one();
                        }
                    }
                }
            }
            // Leases that could not be delivered go back to the queue, which
            // may produce more effects: loop until none are left. Neither
            // they nor the leases of the session dropped here use up tries:
            // the chunks are not to blame.
            let now = Instant::now();
            for (worker, undelivered) in broken {
                tracing::warn!(%worker, "worker is not reading its session; dropping it");
                self.scheduler.undelivered(worker, &undelivered, now);
                if let Some(session) = self.sessions.remove(&worker) {
                    session.closed.cancel();
                }
                self.scheduler
                    .disconnect_worker(worker, Departure::Dropped, now);
            }
        }
    }

    /// Queues a message for a worker; false if it could not be queued.
    fn send(&mut self, worker: WorkerId, kind: v1::coordinator_message::Kind) -> bool {
        let Some(session) = self.sessions.get(&worker) else {
            return false;
        };
        let message = v1::CoordinatorMessage { kind: Some(kind) };
        session.outbox.try_send(Ok(message)).is_ok()
    }
}

fn lease_message(lease: &crate::scheduler::Lease) -> v1::ChunkLease {
    v1::ChunkLease {
        token: Some(token_message(lease.token)),
        function: lease.function.name().to_owned(),
        job_start: lease.job_start,
        offset: lease.offset,
        len: lease.len,
        stream_values: lease.stream_values,
    }
}

pub(crate) fn token_message(token: LeaseToken) -> v1::LeaseToken {
    v1::LeaseToken {
        job_id: token.job.0,
        chunk_index: token.chunk,
        attempt: token.attempt,
    }
}

pub(crate) fn token_from_message(token: Option<&v1::LeaseToken>) -> Option<LeaseToken> {
    token.map(|t| LeaseToken {
        job: JobId(t.job_id),
        chunk: t.chunk_index,
        attempt: t.attempt,
    })
}
