//! One chunk of a job and its lifecycle.
//!
//! ```text
//!              carve / lost lease / retryable failure
//!                 │
//!                 ▼
//!   ┌──────────► Pending ──lease──► Running ──first valid result──► Done ──in order──► released
//!   │                                 │  ▲                                            (dropped from
//!   │                                 │  └── another lease (backup) ──┐               the window)
//!   └──── last live lease lost ───────┘                               │
//!         or returned unstarted          results under any other token are stale
//! ```
//!
//! Every lease carries a fresh attempt number; a result is accepted only
//! under a token that is live (granted, not lost, not returned) while the
//! chunk is still Running, so a chunk is merged exactly once however many
//! duplicates, zombies and retries report it.

use std::time::Instant;

use farm_catalog::ChunkSummary;

use super::WorkerId;

/// A chunk: a leaf-aligned range of a job's elements.
#[derive(Debug)]
pub(crate) struct Chunk<V> {
    pub offset: u64,
    pub len: u64,
    pub state: ChunkState<V>,
    /// The attempt number the next lease gets.
    pub next_attempt: u32,
    /// Leases taken back because they never reached their worker.
    pub undelivered: u32,
    /// Leases that ended without a result (failure or loss); returned
    /// and undelivered leases do not count.
    pub tries: u32,
    /// Workers that held this chunk, in lease order, for error reports.
    pub holders: Vec<WorkerId>,
    /// The last failure a worker reported.
    pub last_error: Option<String>,
    /// How the last lease lost with its worker was lost: the job's error
    /// when the tries ran out without any worker reporting a failure.
    pub last_loss: Option<String>,
}

#[derive(Debug)]
pub(crate) enum ChunkState<V> {
    /// Waiting in the job's retry queue, or just carved.
    Pending,
    /// Leased; usually one live lease, more while a backup runs.
    Running { live: Vec<LiveLease> },
    /// Computed, waiting for the chunks before it to be released.
    Done {
        summary: ChunkSummary,
        values: Option<V>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveLease {
    pub attempt: u32,
    pub worker: WorkerId,
    pub granted_at: Instant,
    /// A second lease given while the first was straggling.
    pub backup: bool,
    /// This lease made `worker` one of the chunk's holders.
    pub new_holder: bool,
}

impl<V> Chunk<V> {
    pub fn new(offset: u64, len: u64) -> Chunk<V> {
        Chunk {
            offset,
            len,
            state: ChunkState::Pending,
            next_attempt: 1,
            undelivered: 0,
            tries: 0,
            holders: Vec::new(),
            last_error: None,
            last_loss: None,
        }
    }

    /// Starts a lease for `worker`, returning its attempt number.
    pub fn lease(&mut self, worker: WorkerId, now: Instant, backup: bool) -> u32 {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let new_holder = !self.holders.contains(&worker);
        if new_holder {
            self.holders.push(worker);
        }
        let lease = LiveLease {
            attempt,
            worker,
            granted_at: now,
            backup,
            new_holder,
        };
        match &mut self.state {
            ChunkState::Running { live } => live.push(lease),
            _ => self.state = ChunkState::Running { live: vec![lease] },
        }
        attempt
    }

    /// Leases that reached a worker: granted, less those taken back.
    pub fn attempts(&self) -> u32 {
        self.next_attempt - 1 - self.undelivered
    }

    /// Whether `(attempt, worker)` is a live lease of this chunk.
    pub fn is_live(&self, attempt: u32, worker: WorkerId) -> bool {
        match &self.state {
            ChunkState::Running { live } => live
                .iter()
                .any(|l| l.attempt == attempt && l.worker == worker),
            _ => false,
        }
    }

    /// Takes back a live lease that never reached its worker, as if it
    /// had not been granted (its attempt number stays used: tokens are
    /// never reused). Returns the lease, if it was live.
    pub fn take_back(&mut self, attempt: u32) -> Option<LiveLease> {
        let lease = self
            .live_leases()
            .iter()
            .find(|l| l.attempt == attempt)
            .copied()?;
        self.undelivered += 1;
        if lease.new_holder {
            self.holders.retain(|w| *w != lease.worker);
        }
        self.end_lease(attempt);
        Some(lease)
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, ChunkState::Pending)
    }

    /// Ends one live lease without a result. Returns true when no live
    /// lease is left, i.e. the chunk went back to Pending.
    pub fn end_lease(&mut self, attempt: u32) -> bool {
        if let ChunkState::Running { live } = &mut self.state {
            live.retain(|l| l.attempt != attempt);
            if live.is_empty() {
                self.state = ChunkState::Pending;
                return true;
            }
        }
        false
    }

    /// Marks the chunk done with the result of lease `attempt`, returning
    /// that lease and the other live ones (to revoke).
    pub fn finish(
        &mut self,
        attempt: u32,
        summary: ChunkSummary,
        values: Option<V>,
    ) -> (Option<LiveLease>, Vec<LiveLease>) {
        let previous = std::mem::replace(&mut self.state, ChunkState::Done { summary, values });
        let ChunkState::Running { live } = previous else {
            return (None, Vec::new());
        };
        let (winner, losers): (Vec<LiveLease>, Vec<LiveLease>) =
            live.into_iter().partition(|l| l.attempt == attempt);
        (winner.into_iter().next(), losers)
    }

    /// Live leases, if any.
    pub fn live_leases(&self) -> &[LiveLease] {
        match &self.state {
            ChunkState::Running { live } => live,
            _ => &[],
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done { .. })
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}
