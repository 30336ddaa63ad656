//! One job: its chunks in flight, its reorder window and its merge.
//!
//! Chunks are carved lazily, in order, when a worker asks for work, and
//! dropped as soon as they are released, so a job holds only its window
//! (carved but not yet released chunks), never state proportional to `n`.
//! Released values wait in `ready` until the client's stream takes them;
//! both count against the window, so a slow client stops new leases.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use farm_catalog::grid::leaf_count;
use farm_catalog::summary::DIGEST_LEN;
use farm_catalog::{ChunkSummary, Reducer, Summary};

use super::chunk::{Chunk, ChunkState, LiveLease};
use super::policy::{Sizing, full_size, next_chunk_len};
use super::{
    HeldValues, JobCounters, JobId, JobSpec, JobState, JobStatus, Lease, LeaseToken, WindowLimits,
    WorkerId,
};

#[derive(Debug)]
pub(crate) struct Job<V> {
    pub id: JobId,
    pub spec: JobSpec,
    pub accepted_at: Instant,
    /// First element not yet carved into a chunk.
    next_offset: u64,
    /// Index of `window[0]`: every chunk before it is released.
    released_chunks: u64,
    window: VecDeque<Chunk<V>>,
    /// Chunk indices waiting for a lease (lost, failed, returned).
    retry: BTreeSet<u64>,
    reducer: Reducer,
    ready: VecDeque<ValuesBatch<V>>,
    /// Bytes of finished results held: done out of order, or released and
    /// not yet taken by the client.
    buffered_bytes: u64,
    /// Estimated result bytes of chunks being computed.
    inflight_bytes: u64,
    pub counters: JobCounters,
    pub workers_used: BTreeSet<WorkerId>,
    pub outcome: Option<JobOutcome>,
    /// When the outcome was decided.
    ended_at: Option<Instant>,
}

/// What accepting a result did.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// Other live leases of the chunk, now to be revoked.
    pub losers: Vec<LiveLease>,
    /// Chunks were released to the merge.
    pub released: bool,
    /// The result came from a backup lease.
    pub backup_won: bool,
}

/// Released, ordered values for the client.
#[derive(Debug, PartialEq)]
pub struct ValuesBatch<V> {
    /// Job index of the first value.
    pub offset: u64,
    /// The chunk's values, as the worker's report handed them over.
    pub values: V,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Finished(JobResult),
    Failed(JobFailure),
}

/// A finished job's answer and how it was computed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub summary: Summary,
    pub chunks: u64,
    pub workers: u32,
    pub attempts: u64,
    pub elapsed: Duration,
}

/// Why a job failed, with enough identity to find the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    #[error(
        "job {job} failed: chunk {chunk} (elements [{}, {})) failed after {attempts} attempt(s) on worker(s) {}: {last_error}",
        .range.start, .range.end, fmt_workers(.workers)
    )]
    ChunkFailed {
        job: JobId,
        chunk: u64,
        range: Range<u64>,
        attempts: u32,
        workers: Vec<WorkerId>,
        last_error: String,
    },
    #[error("job {job} failed: results could not be merged: {reason}")]
    Merge { job: JobId, reason: String },
}

fn fmt_workers(workers: &[WorkerId]) -> String {
    let names: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
    names.join(", ")
}

/// What the job can hand to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A chunk to lease (newly carved or waiting for a retry).
    Chunk(u64),
    /// Nothing now: all carved, or the window is full.
    None,
}

/// Why a worker is being granted a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ahead {
    /// It asked for one.
    Demand,
    /// Ahead of its demand, to cover its round trip; it already holds
    /// leases on `elements` of this job.
    Holding { elements: u64 },
}

impl<V: HeldValues> Job<V> {
    pub fn new(id: JobId, spec: JobSpec, now: Instant) -> Job<V> {
        let mut job = Job {
            id,
            spec,
            accepted_at: now,
            next_offset: 0,
            released_chunks: 0,
            window: VecDeque::new(),
            retry: BTreeSet::new(),
            reducer: Reducer::new(),
            ready: VecDeque::new(),
            buffered_bytes: 0,
            inflight_bytes: 0,
            counters: JobCounters::default(),
            workers_used: BTreeSet::new(),
            outcome: None,
            ended_at: None,
        };
        job.check_finished(now);
        job
    }

    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// The next chunk a worker may lease: retries first (the lowest index
    /// holds up the merge), then a newly carved chunk if the window allows.
    /// Ahead of the worker's demand ([`Ahead::Holding`]) only a new chunk,
    /// and a shrunken tail chunk only within the worker's share.
    pub fn next_work(&mut self, limits: &WindowLimits, sizing: Sizing, ahead: Ahead) -> Work {
        if !self.is_running() {
            return Work::None;
        }
        if ahead == Ahead::Demand
            && let Some(index) = self.retry.pop_first()
        {
            return Work::Chunk(index);
        }
        if self.next_offset >= self.spec.n {
            return Work::None;
        }
        let remaining = self.spec.n - self.next_offset;
        let stream = self.spec.stream_values;
        let len = next_chunk_len(self.spec.chunk_size, remaining, sizing, stream);
        if let Ahead::Holding { elements } = ahead
            && !full_size(self.spec.chunk_size, remaining, sizing, stream)
            && !self.within_share(elements.saturating_add(len), sizing.share, remaining)
        {
            return Work::None;
        }
        let held = self.buffered_bytes + self.inflight_bytes;
        // A chunk larger than the whole window may still run alone.
        let window_full = self.window.len() >= limits.max_chunks
            || (held > 0 && held + self.result_bytes(len) > limits.max_bytes);
        if window_full {
            return Work::None;
        }
        let index = self.released_chunks + self.window.len() as u64;
        self.window.push_back(Chunk::new(self.next_offset, len));
        self.next_offset += len;
        Work::Chunk(index)
    }

    pub fn chunk(&self, index: u64) -> Option<&Chunk<V>> {
        let position = index.checked_sub(self.released_chunks)?;
        self.window.get(usize::try_from(position).ok()?)
    }

    pub fn chunk_mut(&mut self, index: u64) -> Option<&mut Chunk<V>> {
        let position = index.checked_sub(self.released_chunks)?;
        self.window.get_mut(usize::try_from(position).ok()?)
    }

    /// Grants a lease on chunk `index` to `worker`.
    pub fn lease(
        &mut self,
        index: u64,
        worker: WorkerId,
        now: Instant,
        backup: bool,
    ) -> Option<Lease> {
        let chunk = self.chunk_mut(index)?;
        let was_running = !chunk.live_leases().is_empty();
        let attempt = chunk.lease(worker, now, backup);
        let (offset, len) = (chunk.offset, chunk.len);
        if !was_running {
            self.inflight_bytes += self.result_bytes(len);
        }
        self.counters.leases_granted += 1;
        if backup {
            self.counters.backups_granted += 1;
        }
        Some(Lease {
            token: LeaseToken {
                job: self.id,
                chunk: index,
                attempt,
            },
            function: self.spec.function.clone(),
            job_start: self.spec.start,
            offset,
            len,
            stream_values: self.spec.stream_values,
        })
    }

    /// A live lease ended without a result: back to the retry queue if no
    /// other lease is working on the chunk.
    pub fn lease_ended(&mut self, index: u64, attempt: u32, counts_as_try: bool) {
        let Some(chunk) = self.chunk_mut(index) else {
            return;
        };
        if counts_as_try {
            chunk.tries += 1;
        }
        if chunk.end_lease(attempt) {
            let len = chunk.len;
            self.inflight_bytes = self.inflight_bytes.saturating_sub(self.result_bytes(len));
            self.retry.insert(index);
        }
    }

    /// A lease never reached its worker: it is taken back as if never
    /// granted, and the chunk waits for a retry if no other lease is
    /// working on it. Returns whether it was a backup; `None` if it was
    /// not live.
    pub fn lease_undelivered(&mut self, index: u64, attempt: u32) -> Option<bool> {
        let chunk = self.chunk_mut(index)?;
        let lease = chunk.take_back(attempt)?;
        let (pending, len) = (chunk.is_pending(), chunk.len);
        if pending {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(self.result_bytes(len));
            self.retry.insert(index);
        }
        self.counters.leases_granted = self.counters.leases_granted.saturating_sub(1);
        if lease.backup {
            self.counters.backups_granted = self.counters.backups_granted.saturating_sub(1);
        }
        Some(lease.backup)
    }

    /// Stores a verified result and releases every chunk now in order.
    pub fn accept(
        &mut self,
        token: LeaseToken,
        summary: ChunkSummary,
        values: Option<V>,
        worker: WorkerId,
        now: Instant,
    ) -> Accepted {
        let held = summary.size_bytes() as u64 + values.as_ref().map_or(0, |v| v.byte_len() as u64);
        let Some(chunk) = self.chunk_mut(token.chunk) else {
            return Accepted::default();
        };
        let len = chunk.len;
        let (winner, losers) = chunk.finish(token.attempt, summary, values);
        let backup_won = winner.is_some_and(|w| w.backup);
        if backup_won {
            self.counters.backups_won += 1;
        }
        self.inflight_bytes = self.inflight_bytes.saturating_sub(self.result_bytes(len));
        self.buffered_bytes += held;
        self.workers_used.insert(worker);
        let released = self.release_in_order(now);
        Accepted {
            losers,
            released,
            backup_won,
        }
    }

    /// Pops done chunks off the front of the window into the reducer and
    /// the ready queue.
    fn release_in_order(&mut self, now: Instant) -> bool {
        let mut released = false;
        while self.window.front().is_some_and(Chunk::is_done) {
            let Some(chunk) = self.window.pop_front() else {
                break;
            };
            self.released_chunks += 1;
            released = true;
            let ChunkState::Done { summary, values } = chunk.state else {
                continue;
            };
            self.buffered_bytes = self
                .buffered_bytes
                .saturating_sub(summary.size_bytes() as u64);
            if let Err(err) = self.reducer.push_chunk(chunk.len, &summary) {
                self.fail(
                    JobFailure::Merge {
                        job: self.id,
                        reason: err.to_string(),
                    },
                    now,
                );
                return true;
            }
            if let Some(values) = values {
                self.ready.push_back(ValuesBatch {
                    offset: chunk.offset,
                    values,
                });
            }
        }
        self.check_finished(now);
        released
    }

    fn check_finished(&mut self, now: Instant) {
        if self.outcome.is_some() || self.reducer.elements() != self.spec.n {
            return;
        }
        self.ended_at = Some(now);
        self.outcome = Some(match self.reducer.finish(self.spec.n) {
            Ok(summary) => JobOutcome::Finished(JobResult {
                summary,
                chunks: self.released_chunks,
                workers: self.workers_used.len() as u32,
                attempts: self.counters.leases_granted,
                elapsed: now.saturating_duration_since(self.accepted_at),
            }),
            Err(err) => JobOutcome::Failed(JobFailure::Merge {
                job: self.id,
                reason: err.to_string(),
            }),
        });
    }

    /// Fails the job (first failure wins) and drops everything it held.
    pub fn fail(&mut self, failure: JobFailure, now: Instant) {
        if self.outcome.is_none() {
            self.outcome = Some(JobOutcome::Failed(failure));
            self.ended_at = Some(now);
        }
        self.ready.clear();
        self.retry.clear();
        self.buffered_bytes = 0;
        self.inflight_bytes = 0;
    }

    /// Takes released values, up to about `max_bytes` (at least one batch).
    pub fn take_ready(&mut self, max_bytes: usize) -> Vec<ValuesBatch<V>> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(batch) = self.ready.front() {
            let len = batch.values.byte_len();
            if !taken.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            if let Some(batch) = self.ready.pop_front() {
                self.buffered_bytes = self.buffered_bytes.saturating_sub(len as u64);
                taken.push(batch);
            }
        }
        taken
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Elements released so far.
    pub fn elements_done(&self) -> u64 {
        self.reducer.elements()
    }

    pub fn chunks_done(&self) -> u64 {
        self.released_chunks
    }

    /// Everything is carved and nothing waits for a retry: the only work
    /// left is in flight, where backups may help.
    pub fn only_running_left(&self) -> bool {
        self.is_running() && self.next_offset >= self.spec.n && self.retry.is_empty()
    }

    pub fn status(&self, now: Instant) -> JobStatus {
        let state = match &self.outcome {
            None => JobState::Running,
            Some(JobOutcome::Finished(_)) => JobState::Finished,
            Some(JobOutcome::Failed(failure)) => JobState::Failed(failure.to_string()),
        };
        let chunks_running = self
            .window
            .iter()
            .filter(|c| !c.live_leases().is_empty())
            .count() as u64;
        JobStatus {
            id: self.id,
            spec: self.spec.clone(),
            state,
            elements_done: self.elements_done(),
            chunks_done: self.chunks_done(),
            chunks_running,
            counters: self.counters,
            workers: self.workers_used.iter().copied().collect(),
            elapsed: self
                .ended_at
                .unwrap_or(now)
                .saturating_duration_since(self.accepted_at),
        }
    }

    /// Every live lease of the job, for revocation.
    pub fn live_leases(&self) -> Vec<(u64, LiveLease)> {
        let mut leases = Vec::new();
        for (position, chunk) in self.window.iter().enumerate() {
            for lease in chunk.live_leases() {
                leases.push((self.released_chunks + position as u64, *lease));
            }
        }
        leases
    }

    /// The failure to report when chunk `index` may not be tried again.
    pub fn chunk_failure(&self, index: u64) -> Option<JobFailure> {
        let chunk = self.chunk(index)?;
        Some(JobFailure::ChunkFailed {
            job: self.id,
            chunk: index,
            range: chunk.offset..chunk.end(),
            attempts: chunk.attempts(),
            workers: chunk.holders.clone(),
            // A reported failure says most about the chunk; without one,
            // say how its leases were lost.
            last_error: chunk
                .last_error
                .clone()
                .or_else(|| {
                    chunk.last_loss.as_ref().map(|loss| {
                        format!("no worker reported an error; its last lease was lost when {loss}")
                    })
                })
                .unwrap_or_else(|| "no worker reported an error".to_owned()),
        })
    }

    /// Estimated bytes a chunk's result occupies while buffered.
    /// Whether a worker holding `elements` of this job (the next chunk
    /// included) holds no more than `share` of the work left: what is not
    /// carved yet and what is carved but not computed. Near the end, a
    /// far worker may take tail chunks ahead of its demand within it: a
    /// lone worker takes the whole tail in one round trip instead of one
    /// chunk per round trip, and beside near workers it takes no more
    /// than it would finish with them.
    fn within_share(&self, elements: u64, share: f64, uncarved: u64) -> bool {
        let unfinished: u64 = self
            .window
            .iter()
            .filter(|chunk| !matches!(chunk.state, ChunkState::Done { .. }))
            .map(|chunk| chunk.len)
            .sum();
        elements as f64 <= share * uncarved.saturating_add(unfinished) as f64
    }

    fn result_bytes(&self, len: u64) -> u64 {
        let stats = leaf_count(len) * (8 + DIGEST_LEN as u64);
        let values = if self.spec.stream_values { len * 8 } else { 0 };
        stats + values
    }
}
