//! The leases a session holds and asks for: pure bookkeeping, no I/O, no
//! clock. The session feeds it what the coordinator sends and what the
//! compute pool answers, and sends what it says.
//!
//! A lease goes through these states; each ends exactly once:
//!
//! ```text
//!  asked for ──grant──▶ queued ──next_batch──▶ running ──end_batch──▶ reported
//!      │                  │                      │       (answered)   (result or failure)
//!      │                  ├─revoke──▶ revoked    ├─revoke, then end_batch──▶ revoked
//!      │                  └─drain───▶ returned   └─end_batch (drain grace over)──▶ returned
//!      └─ granted while draining, or past capacity ──▶ returned
//! ```
//!
//! How many to hold: `prefetch` (one computing, the rest queued, so the
//! threads go from one chunk straight to the next), or more when chunks are
//! so small that a batch of them is needed to keep the threads busy; never
//! more than [`Leases::capacity`]. Held plus asked for never exceeds that,
//! so a pull is only ever for free places.

use std::collections::VecDeque;

use farm_proto::v1;

/// Small leases are computed back to back in batches of about this many
/// elements (~0.1 ms of work), and reported in one message, so tiny chunks
/// cost one pool hand-off and one message per batch instead of per chunk.
pub(crate) const BATCH_ELEMENTS: u64 = 1 << 18;

/// The most leases a worker holds at once, however small (unless its
/// prefetch is larger).
pub(crate) const MAX_HELD: u32 = 256;

/// How fast the typical lease length follows the lengths granted.
const LEN_SMOOTHING: f64 = 0.2;

/// The leases of one session.
#[derive(Debug)]
pub(crate) struct Leases {
    prefetch: u32,
    queued: VecDeque<v1::ChunkLease>,
    /// Tokens of the batch on the compute pool.
    running: Vec<v1::LeaseToken>,
    /// Of those, the ones the coordinator no longer wants.
    revoked_running: Vec<v1::LeaseToken>,
    /// Slots asked for and not yet granted.
    asked: u32,
    /// Typical lease length, which decides how many leases to hold.
    typical_len: Option<f64>,
    draining: bool,
}

/// What became of a grant.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Granted {
    /// Leases to hand back at once: granted while draining, or past
    /// capacity (a confused coordinator).
    pub(crate) hand_back: Vec<v1::LeaseToken>,
    /// Leases without a token, which cannot be reported and are dropped.
    pub(crate) without_token: usize,
}

/// The leases of the batch that was running, once it leaves our hands.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BatchEnd {
    /// Still wanted: to report (or hand back, if the batch was given up).
    pub(crate) wanted: Vec<v1::LeaseToken>,
    /// Revoked while they ran: the coordinator has them back already, and
    /// their answers are dropped.
    pub(crate) revoked: Vec<v1::LeaseToken>,
}

impl Leases {
    pub(crate) fn new(prefetch: u32) -> Leases {
        Leases {
            prefetch,
            queued: VecDeque::new(),
            running: Vec::new(),
            revoked_running: Vec::new(),
            asked: 0,
            typical_len: None,
            draining: false,
        }
    }

    /// The most leases held plus asked for at once.
    pub(crate) fn capacity(&self) -> u32 {
        MAX_HELD.max(self.prefetch)
    }

    /// Leases in hand: queued or running.
    pub(crate) fn held(&self) -> u32 {
        u32::try_from(self.queued.len() + self.running.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Slots asked for and not yet granted.
    #[cfg(test)]
    pub(crate) fn asked(&self) -> u32 {
        self.asked
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether a queued lease runs the WebAssembly module `hash`.
    pub(crate) fn names_module(&self, hash: &[u8]) -> bool {
        self.queued
            .iter()
            .any(|lease| lease.wasm_module_hash.as_ref() == hash)
    }

    /// Whether a batch is on the compute pool.
    pub(crate) fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// Draining and nothing left running: the session can close.
    pub(crate) fn is_drained(&self) -> bool {
        self.draining && self.running.is_empty()
    }

    /// How many leases to hold: `prefetch`, or more when chunks are so
    /// small that a batch of them is needed to keep the threads busy.
    pub(crate) fn wanted(&self) -> u32 {
        let batches = self
            .typical_len
            .map_or(0.0, |len| (2 * BATCH_ELEMENTS) as f64 / len.max(1.0));
        // `as` saturates: a huge ratio is clamped like any other.
        (batches.ceil() as u32).clamp(self.prefetch, self.capacity())
    }

    /// Slots to pull now so that held plus asked for reaches
    /// [`Leases::wanted`]; counts them as asked. Nothing while draining.
    pub(crate) fn top_up(&mut self) -> u32 {
        if self.draining {
            return 0;
        }
        let promised = self.held().saturating_add(self.asked);
        let slots = self.wanted().saturating_sub(promised);
        self.asked += slots;
        slots
    }

    /// Takes granted leases: queues them, or says which to hand back.
    pub(crate) fn grant(&mut self, leases: Vec<v1::ChunkLease>) -> Granted {
        let count = u32::try_from(leases.len()).unwrap_or(u32::MAX);
        self.asked = self.asked.saturating_sub(count);
        let mut granted = Granted::default();
        for lease in leases {
            let Some(token) = lease.token else {
                granted.without_token += 1;
                continue;
            };
            self.learn_len(lease.len);
            if self.draining || self.held() >= self.capacity() {
                granted.hand_back.push(token);
            } else {
                self.queued.push_back(lease);
            }
        }
        granted
    }

    /// The coordinator no longer wants `tokens`: queued ones are dropped
    /// (returned here), running ones when their batch ends. Unknown tokens
    /// (already reported, say) are ignored.
    pub(crate) fn revoke(&mut self, tokens: &[v1::LeaseToken]) -> Vec<v1::LeaseToken> {
        let mut dropped = Vec::new();
        self.queued.retain(|lease| match lease.token {
            Some(token) if tokens.contains(&token) => {
                dropped.push(token);
                false
            }
            _ => true,
        });
        for token in tokens {
            if self.running.contains(token) && !self.revoked_running.contains(token) {
                self.revoked_running.push(*token);
            }
        }
        dropped
    }

    /// Drops the queued leases of `jobs` (returned here, to hand back): a
    /// chunk of theirs failed for good, which fails them.
    pub(crate) fn drop_jobs(&mut self, jobs: &[u64]) -> Vec<v1::LeaseToken> {
        let mut dropped = Vec::new();
        self.queued.retain(|lease| match lease.token {
            Some(token) if jobs.contains(&token.job_id) => {
                dropped.push(token);
                false
            }
            _ => true,
        });
        dropped
    }

    /// The next batch for the compute pool, if none is running and any
    /// are queued: one lease, or several small ones of at most
    /// [`BATCH_ELEMENTS`] together, computed back to back.
    pub(crate) fn next_batch(&mut self) -> Option<Vec<v1::ChunkLease>> {
        if self.is_running() {
            return None;
        }
        let mut batch = Vec::new();
        let mut elements = 0u64;
        while let Some(lease) = self.queued.front() {
            if !batch.is_empty() && elements.saturating_add(lease.len) > BATCH_ELEMENTS {
                break;
            }
            elements = elements.saturating_add(lease.len);
            batch.extend(self.queued.pop_front());
        }
        self.running = batch.iter().filter_map(|lease| lease.token).collect();
        (!batch.is_empty()).then_some(batch)
    }

    /// The running batch leaves our hands: it answered (the wanted leases
    /// are reported), or did not finish within the drain grace (they are
    /// handed back, and its answers, should they come, are dropped).
    pub(crate) fn end_batch(&mut self) -> BatchEnd {
        let revoked = std::mem::take(&mut self.revoked_running);
        let mut wanted = std::mem::take(&mut self.running);
        wanted.retain(|token| !revoked.contains(token));
        BatchEnd { wanted, revoked }
    }

    /// Stops taking work: hand back every queued lease (returned here);
    /// the running batch may finish. Later grants are handed back too.
    pub(crate) fn drain(&mut self) -> Vec<v1::LeaseToken> {
        self.draining = true;
        self.queued
            .drain(..)
            .filter_map(|lease| lease.token)
            .collect()
    }

    fn learn_len(&mut self, len: u64) {
        let len = len as f64;
        self.typical_len = Some(match self.typical_len {
            None => len,
            Some(typical) => typical + LEN_SMOOTHING * (len - typical),
        });
    }
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
