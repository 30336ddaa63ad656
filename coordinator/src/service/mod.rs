//! The gRPC services: thin adapters between the wire and the [`Scheduler`].
//!
//! [`Hub`] owns the scheduler behind a `std::sync::Mutex` together with the
//! outboxes of every worker session and the wakers of every job stream.
//! Every scheduler call goes through [`Hub::with_scheduler`], which carries
//! out the call's effects before unlocking: only non-blocking sends and
//! notifications happen under the lock, never an await, and effects leave
//! in the order the scheduler produced them.

mod jobs;
pub mod routes;
mod status;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use farm_net::wire::{Encoded, FrameSender};
use farm_proto::v1;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use jobs::JobsApi;
pub use workers::WorkersApi;

use crate::config::CoordinatorConfig;
use crate::modules::{ModuleStore, SessionModules};
use crate::scheduler::{
    Departure, Effect, JobFunction, JobId, Lease, LeaseToken, Scheduler, WorkerId,
};
use crate::values::{ChunkValues, ValueOffers};

/// Messages queued for one worker session. A worker only receives what it
/// asked for (bounded by its demand, at most one grant per scheduler call)
/// plus revocations. When the queue is full the worker is reading slowly:
/// the grant that did not fit goes to other workers, without using up a
/// try, and the worker gets no more until its queue drains.
const SESSION_QUEUE: usize = 256;

/// Free places a paused session's queue needs before it gets grants
/// again, so that it does not flip between paused and not on every tick.
const RESUME_ROOM: usize = SESSION_QUEUE / 2;

/// How often each worker is pinged to time its round trip: often enough
/// to follow a link that changes, rarely enough to cost nothing.
const PING_INTERVAL: Duration = Duration::from_millis(500);

/// A connected worker's outbox and the switch that ends its session.
#[derive(Debug)]
struct Session {
    outbox: FrameSender,
    closed: CancellationToken,
    /// Since when grants are paused because the outbox was full. A worker
    /// that does not make room within the lease timeout is dropped.
    paused_since: Option<Instant>,
    /// When it was last pinged.
    pinged_at: Option<Instant>,
    /// The WebAssembly modules it holds.
    modules: SessionModules,
}

/// Why a message could not be queued for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsent {
    /// Its outbox is full: it reads more slowly than it asks.
    Full,
    /// Its session is over.
    Gone,
}

#[derive(Debug)]
struct HubState {
    scheduler: Scheduler<ChunkValues>,
    sessions: HashMap<WorkerId, Session>,
    job_wakers: HashMap<JobId, Arc<Notify>>,
    /// Running jobs' WebAssembly modules.
    modules: ModuleStore,
}

/// The state shared by every service and background task.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    config: CoordinatorConfig,
    /// Cancelled when the coordinator shuts down.
    shutdown: CancellationToken,
    /// Every task the coordinator starts, so that it can wait for them
    /// all before it returns.
    tasks: TaskTracker,
    /// Value connections, when clients can open them (a TCP listener).
    value_offers: Option<Arc<ValueOffers>>,
    /// Bytes of values sent to clients, for the metrics.
    streamed_bytes: AtomicU64,
    /// What pings measure from: their `sent_us` is time since this.
    epoch: Instant,
}

impl Hub {
    pub fn new(config: CoordinatorConfig, shutdown: CancellationToken) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                scheduler: Scheduler::new(config.scheduler),
                sessions: HashMap::new(),
                job_wakers: HashMap::new(),
                modules: ModuleStore::default(),
            }),
            config,
            shutdown,
            tasks: TaskTracker::new(),
            value_offers: None,
            streamed_bytes: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Starts the coordinator's tasks on `tasks` (which the caller may
    /// watch) instead of a tracker of its own.
    #[must_use]
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Hub {
        self.tasks = tasks;
        self
    }

    /// Lets jobs offer their clients value connections through `offers`.
    #[must_use]
    pub fn with_value_offers(mut self, offers: Arc<ValueOffers>) -> Hub {
        self.value_offers = Some(offers);
        self
    }

    pub(crate) fn value_offers(&self) -> Option<&ValueOffers> {
        self.value_offers.as_deref()
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Runs `f` on the scheduler, then carries out its effects.
    pub fn with_scheduler<R>(
        &self,
        f: impl FnOnce(&mut Scheduler<ChunkValues>, Instant) -> R,
    ) -> R {
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

    /// Resumes or drops paused sessions, expires silent workers and hands
    /// out backups; called on a timer.
    pub fn tick(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.check_paused(now, self.config.scheduler.lease_timeout);
        state.ping(now, self.micros_since_epoch(now));
        let expired = state.scheduler.counters().leases_expired;
        state.scheduler.tick(now);
        let lost = state.scheduler.counters().leases_expired - expired;
        if lost > 0 {
            tracing::warn!(
                leases = lost,
                "workers went silent; their leases go to others"
            );
        }
        state.apply_effects();
    }

    /// Bytes of values sent to clients since the coordinator started.
    pub fn streamed_bytes(&self) -> u64 {
        self.streamed_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn count_streamed(&self, bytes: usize) {
        self.streamed_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `now` on the clock pings carry.
    fn micros_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// A worker answered a ping sent at `sent_us`: its session's round
    /// trip, on our clock. An answer from the future (a confused worker)
    /// is ignored.
    fn pong(&self, worker: WorkerId, sent_us: u64) {
        self.with_scheduler(|s, now| {
            let now_us = self.micros_since_epoch(now);
            if let Some(trip) = now_us.checked_sub(sent_us) {
                s.round_trip(worker, Duration::from_micros(trip), now);
            }
        });
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Where the coordinator's tasks are started and waited for.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}

impl HubState {
    fn apply_effects(&mut self) {
        loop {
            let effects = self.scheduler.take_effects();
            if effects.is_empty() {
                return;
            }
            let mut undelivered = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Grant { worker, leases } => {
                        let grant = v1::LeaseGrant {
                            leases: leases.iter().map(lease_message).collect(),
                        };
                        let message = v1::coordinator_message::Kind::Grant(grant);
                        let sent = self
                            .send_modules(worker, &leases)
                            .and_then(|()| self.send(worker, message));
                        if let Err(unsent) = sent {
                            let tokens: Vec<LeaseToken> = leases.iter().map(|l| l.token).collect();
                            undelivered.push((worker, tokens, unsent));
                        }
                    }
                    Effect::Revoke { worker, tokens } => {
                        let revoke = v1::LeaseRevoke {
                            tokens: tokens.iter().map(|t| token_message(*t)).collect(),
                        };
                        // A worker that cannot take a revocation will have
                        // its stale result rejected anyway.
                        let _ = self.send(worker, v1::coordinator_message::Kind::Revoke(revoke));
                    }
                    Effect::JobReady(job) => {
                        if let Some(waker) = self.job_wakers.get(&job) {
                            waker.notify_one();
                        }
                    }
                }
            }
            // Leases that could not be queued go to other workers, which
            // produces more effects: loop until none are left. It ends: a
            // worker whose grant did not fit gets no more until its session
            // drains.
            let now = Instant::now();
            for (worker, tokens, unsent) in undelivered {
                self.scheduler.undelivered(worker, &tokens, now);
                match unsent {
                    Unsent::Full => self.pause(worker, now),
                    Unsent::Gone => self.end_session(worker, Departure::Lost, now),
                }
            }
        }
    }

    /// Pings every session not pinged for [`PING_INTERVAL`]. A full
    /// outbox skips its ping: it would time the queue, not the link.
    fn ping(&mut self, now: Instant, now_us: u64) {
        for session in self.sessions.values_mut() {
            if session
                .pinged_at
                .is_some_and(|at| now.saturating_duration_since(at) < PING_INTERVAL)
            {
                continue;
            }
            let ping = v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Ping(v1::Ping {
                    sent_us: now_us,
                })),
            };
            if let Ok(message) = Encoded::message(&ping)
                && session.outbox.try_send(Ok(message)).is_ok()
            {
                session.pinged_at = Some(now);
            }
        }
    }

    /// Stops granting to a worker whose outbox is full, until it drains.
    fn pause(&mut self, worker: WorkerId, now: Instant) {
        if let Some(session) = self.sessions.get_mut(&worker)
            && session.paused_since.is_none()
        {
            tracing::info!(%worker, "worker reads its session slowly; pausing its grants");
            session.paused_since = Some(now);
        }
    }

    /// Forgets a worker's session, ends it, and requeues its leases.
    fn end_session(&mut self, worker: WorkerId, departure: Departure, now: Instant) {
        if let Some(session) = self.sessions.remove(&worker) {
            session.closed.cancel();
        }
        self.scheduler.disconnect_worker(worker, departure, now);
    }

    /// Resumes the paused sessions that made room, and drops those that
    /// read nothing for `patience`: a stuck worker must not keep its
    /// leases forever. Dropping is the coordinator's doing, so their
    /// chunks keep their tries.
    fn check_paused(&mut self, now: Instant, patience: Duration) {
        let mut resumed = Vec::new();
        let mut stuck = Vec::new();
        for (worker, session) in &mut self.sessions {
            let Some(since) = session.paused_since else {
                continue;
            };
            if session.outbox.capacity() >= RESUME_ROOM {
                session.paused_since = None;
                resumed.push(*worker);
            } else if now.saturating_duration_since(since) > patience {
                stuck.push(*worker);
            }
        }
        for worker in resumed {
            self.scheduler.resume_grants(worker, now);
        }
        for worker in stuck {
            tracing::warn!(%worker, ?patience, "worker is not reading its session; dropping it");
            self.end_session(worker, Departure::Dropped, now);
        }
    }

    /// Queues, ahead of `leases`, each module they name that `worker` does
    /// not hold.
    fn send_modules(&mut self, worker: WorkerId, leases: &[Lease]) -> Result<(), Unsent> {
        for hash in leases.iter().filter_map(|lease| lease.function.module()) {
            let session = self.sessions.get(&worker).ok_or(Unsent::Gone)?;
            if session.modules.holds(&hash) {
                continue;
            }
            // A lease is granted only for a running job, whose module is
            // stored until the job ends.
            let Some(module) = self.modules.get(&hash) else {
                tracing::error!(module = %hash, "a lease names a module that is not stored");
                return Err(Unsent::Gone);
            };
            let message = v1::WasmModule {
                hash: Bytes::copy_from_slice(&hash.0),
                module: module.clone(),
            };
            self.send(worker, v1::coordinator_message::Kind::Module(message))?;
            if let Some(session) = self.sessions.get_mut(&worker) {
                session.modules.sent(hash);
            }
        }
        Ok(())
    }

    /// Queues a message for a worker.
    fn send(
        &mut self,
        worker: WorkerId,
        kind: v1::coordinator_message::Kind,
    ) -> Result<(), Unsent> {
        let Some(session) = self.sessions.get(&worker) else {
            return Err(Unsent::Gone);
        };
        let message = v1::CoordinatorMessage { kind: Some(kind) };
        // Grants and revocations are far below the message size limit; a
        // message that cannot be encoded cannot be sent either.
        let message = Encoded::message(&message).map_err(|_| Unsent::Gone)?;
        session
            .outbox
            .try_send(Ok(message))
            .map_err(|err| match err {
                TrySendError::Full(_) => Unsent::Full,
                TrySendError::Closed(_) => Unsent::Gone,
            })
    }
}

fn lease_message(lease: &Lease) -> v1::ChunkLease {
    let (function, wasm_module_hash) = match &lease.function {
        JobFunction::Catalog(function) => (function.name().to_owned(), Bytes::new()),
        // "wasm" is no catalog name: a worker without WebAssembly refuses
        // the lease instead of computing something else.
        JobFunction::Wasm { hash, .. } => ("wasm".to_owned(), Bytes::copy_from_slice(&hash.0)),
    };
    v1::ChunkLease {
        token: Some(token_message(lease.token)),
        function,
        wasm_module_hash,
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

#[cfg(test)]
mod tests;
