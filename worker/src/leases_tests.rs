#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn token(chunk: u32) -> v1::LeaseToken {
    v1::LeaseToken {
        job_id: 1,
        chunk_index: u64::from(chunk),
        attempt: 1,
    }
}

fn lease(chunk: u32, len: u64) -> v1::ChunkLease {
    v1::ChunkLease {
        token: Some(token(chunk)),
        function: "sqrt".to_owned(),
        job_start: 0,
        offset: u64::from(chunk) * len,
        len,
        stream_values: false,
        wasm_module_hash: bytes::Bytes::new(),
    }
}

fn tokens(batch: &[v1::ChunkLease]) -> Vec<v1::LeaseToken> {
    batch.iter().filter_map(|lease| lease.token).collect()
}

#[test]
fn asks_for_prefetch_then_only_for_what_left() {
    let mut leases = Leases::new(2);
    assert_eq!(leases.top_up(), 2);
    // Asked already: nothing more until something leaves.
    assert_eq!(leases.top_up(), 0);
    let granted = leases.grant(vec![lease(0, 1 << 20), lease(1, 1 << 20)]);
    assert_eq!(granted, Granted::default());
    assert_eq!((leases.held(), leases.asked()), (2, 0));
    assert_eq!(leases.top_up(), 0);

    // Large leases run one at a time.
    let batch = leases.next_batch().unwrap();
    assert_eq!(tokens(&batch), [token(0)]);
    assert_eq!(leases.next_batch(), None, "one batch at a time");
    let end = leases.end_batch();
    assert_eq!(end.wanted, [token(0)]);
    assert!(end.revoked.is_empty());
    assert_eq!(leases.top_up(), 1);
    assert_eq!(leases.asked(), 1);
}

#[test]
fn small_leases_are_batched_and_held_in_numbers() {
    let mut leases = Leases::new(2);
    assert_eq!(leases.top_up(), 2);
    let len = 1 << 10;
    leases.grant(vec![lease(0, len), lease(1, len)]);
    // 2 * 2^18 / 2^10 = 512 wanted, capped at MAX_HELD.
    assert_eq!(leases.wanted(), MAX_HELD);
    assert_eq!(leases.top_up(), MAX_HELD - 2);
    let more: Vec<_> = (2..MAX_HELD).map(|chunk| lease(chunk, len)).collect();
    assert!(leases.grant(more).hand_back.is_empty());
    let batch = leases.next_batch().unwrap();
    assert_eq!(batch.len() as u64, BATCH_ELEMENTS / len);
}

#[test]
fn a_grant_past_capacity_or_while_draining_goes_back() {
    let mut leases = Leases::new(1);
    let too_many: Vec<_> = (0..MAX_HELD + 3).map(|chunk| lease(chunk, 1)).collect();
    let granted = leases.grant(too_many);
    assert_eq!(
        granted.hand_back,
        [token(MAX_HELD), token(MAX_HELD + 1), token(MAX_HELD + 2)]
    );
    assert_eq!(leases.held(), MAX_HELD);
    assert_eq!(leases.top_up(), 0);

    let handed_back = leases.drain();
    assert_eq!(handed_back.len(), MAX_HELD as usize);
    assert_eq!(leases.grant(vec![lease(999, 1)]).hand_back, [token(999)]);
    assert_eq!(leases.top_up(), 0, "no pulls while draining");
    assert!(leases.is_drained());
}

#[test]
fn a_lease_without_a_token_is_dropped_and_frees_its_slot() {
    let mut leases = Leases::new(2);
    assert_eq!(leases.top_up(), 2);
    let mut tokenless = lease(0, 1 << 20);
    tokenless.token = None;
    let granted = leases.grant(vec![tokenless, lease(1, 1 << 20)]);
    assert_eq!(granted.without_token, 1);
    assert_eq!(leases.held(), 1);
    assert_eq!(leases.top_up(), 1);
}

#[test]
fn revoked_leases_are_dropped_queued_or_running() {
    let mut leases = Leases::new(3);
    leases.top_up();
    leases.grant(vec![
        lease(0, 1 << 20),
        lease(1, 1 << 20),
        lease(2, 1 << 20),
    ]);
    leases.next_batch().unwrap();
    let dropped = leases.revoke(&[token(0), token(2), token(7)]);
    assert_eq!(dropped, [token(2)], "only the queued one is dropped now");
    assert_eq!(leases.held(), 2);
    // The running one stays until its batch ends, then is not reported.
    let end = leases.end_batch();
    assert_eq!((end.wanted, end.revoked), (vec![], vec![token(0)]));
    assert_eq!(leases.held(), 1);
}

#[test]
fn draining_hands_back_the_queue_and_waits_for_the_running_batch() {
    let mut leases = Leases::new(3);
    leases.top_up();
    leases.grant(vec![
        lease(0, 1 << 20),
        lease(1, 1 << 20),
        lease(2, 1 << 20),
    ]);
    leases.next_batch().unwrap();
    assert_eq!(leases.drain(), [token(1), token(2)]);
    assert!(!leases.is_drained(), "a batch is still running");
    assert_eq!(leases.next_batch(), None);
    assert_eq!(leases.end_batch().wanted, [token(0)]);
    assert!(leases.is_drained());
}

/// What happened to a lease, as the session would tell the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Reported,
    Returned,
    Revoked,
}

#[derive(Debug, Clone)]
enum Step {
    /// The coordinator grants `count` leases of `len` elements (any count,
    /// asked for or not); `tokenless` of them without a token.
    Grant {
        count: u32,
        len: u64,
        tokenless: u32,
    },
    /// Revokes leases picked by these numbers among those granted so far
    /// (ended or not), plus one never granted.
    Revoke(Vec<usize>),
    /// The session starts the next batch if it can.
    Start,
    /// The running batch answers (each lease a result or a failure: the
    /// same to the bookkeeping), or its drain grace runs out.
    End,
    Pull,
    Drain,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u32..40, prop_oneof![1u64..100, 1u64..(1 << 22)], 0u32..2)
            .prop_map(|(count, len, tokenless)| Step::Grant { count, len, tokenless }),
        1 => proptest::collection::vec(any::<usize>(), 0..4).prop_map(Step::Revoke),
        3 => Just(Step::Start),
        3 => Just(Step::End),
        2 => Just(Step::Pull),
        1 => Just(Step::Drain),
    ]
}

/// Plays the steps, recording how each lease ended.
struct Model {
    leases: Leases,
    granted: Vec<v1::LeaseToken>,
    ends: HashMap<v1::LeaseToken, End>,
    next_chunk: u32,
    drained: bool,
}

impl Model {
    fn end(&mut self, tokens: impl IntoIterator<Item = v1::LeaseToken>, end: End) {
        for token in tokens {
            let before = self.ends.insert(token, end);
            assert_eq!(
                before, None,
                "{token:?} ended twice: {before:?}, then {end:?}"
            );
        }
    }

    fn play(&mut self, step: Step) {
        match step {
            Step::Grant {
                count,
                len,
                tokenless,
            } => {
                let mut batch = Vec::new();
                for _ in 0..count {
                    let chunk = self.next_chunk;
                    self.next_chunk += 1;
                    batch.push(lease(chunk, len));
                    self.granted.push(token(chunk));
                }
                for _ in 0..tokenless {
                    let mut lease = lease(u32::MAX, len);
                    lease.token = None;
                    batch.push(lease);
                }
                let granted = self.leases.grant(batch);
                assert_eq!(granted.without_token, tokenless as usize);
                if self.drained {
                    assert_eq!(granted.hand_back.len(), count as usize);
                }
                self.end(granted.hand_back, End::Returned);
            }
            Step::Revoke(picks) => {
                let mut tokens: Vec<_> = picks
                    .iter()
                    .filter(|_| !self.granted.is_empty())
                    .map(|pick| self.granted[pick % self.granted.len()])
                    .collect();
                tokens.push(token(u32::MAX - 1));
                let dropped = self.leases.revoke(&tokens);
                self.end(dropped, End::Revoked);
            }
            Step::Start => {
                let was_running = self.leases.is_running();
                if let Some(batch) = self.leases.next_batch() {
                    assert!(!was_running);
                    let elements: u64 = batch.iter().map(|lease| lease.len).sum();
                    assert!(batch.len() == 1 || elements <= BATCH_ELEMENTS);
                    assert!(self.leases.is_running());
                }
            }
            Step::End => {
                let end = self.leases.end_batch();
                self.end(end.wanted, End::Reported);
                self.end(end.revoked, End::Revoked);
            }
            Step::Pull => {
                let before = self.leases.held() + self.leases.asked();
                let slots = self.leases.top_up();
                if self.drained {
                    assert_eq!(slots, 0);
                }
                assert_eq!(self.leases.held() + self.leases.asked(), before + slots);
            }
            Step::Drain => {
                let handed_back = self.leases.drain();
                self.drained = true;
                self.end(handed_back, End::Returned);
                assert_eq!(self.leases.queued(), 0);
            }
        }
    }

    fn check(&self) {
        let leases = &self.leases;
        let promised = u64::from(leases.held()) + u64::from(leases.asked());
        assert!(
            promised <= u64::from(leases.capacity()),
            "holds {} and asked for {}, over a capacity of {}",
            leases.held(),
            leases.asked(),
            leases.capacity()
        );
        let in_hand = self.granted.len() - self.ends.len();
        assert_eq!(
            leases.held() as usize,
            in_hand,
            "held leases are those not ended"
        );
        if self.drained {
            assert_eq!(leases.queued(), 0);
        }
    }
}

proptest! {
    #[test]
    fn every_lease_ends_exactly_once_within_capacity(
        prefetch in 1u32..8,
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        let mut model = Model {
            leases: Leases::new(prefetch),
            granted: Vec::new(),
            ends: HashMap::new(),
            next_chunk: 0,
            drained: false,
        };
        for step in steps {
            model.play(step);
            model.check();
        }
        // Drain: every queued lease is handed back, the running batch
        // ends, and nothing is left.
        model.play(Step::Drain);
        model.play(Step::End);
        model.check();
        prop_assert!(model.leases.is_drained());
        prop_assert_eq!(model.leases.held(), 0);
        prop_assert_eq!(model.leases.top_up(), 0);
        for token in &model.granted {
            prop_assert!(model.ends.contains_key(token), "{:?} never ended", token);
        }
    }
}

#[test]
fn the_queued_leases_of_a_failed_job_are_dropped() {
    let mut leases = Leases::new(4);
    let other_job = v1::ChunkLease {
        token: Some(v1::LeaseToken {
            job_id: 99,
            ..token(3)
        }),
        ..lease(3, 10)
    };
    leases.grant(vec![lease(0, 10), lease(1, 10), other_job]);
    let running = leases.next_batch().unwrap();
    assert_eq!(running.len(), 3, "small leases run as one batch");
    leases.grant(vec![lease(4, 10), lease(5, 10)]);
    assert_eq!(
        leases.drop_jobs(&[token(0).job_id]),
        vec![token(4), token(5)]
    );
    assert_eq!(leases.queued(), 0);
    // The running batch is not the book's to drop: it reports.
    assert_eq!(leases.running(), 3);
}
