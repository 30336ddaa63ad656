//! What a finished batch's answers become: the messages that report them
//! to the coordinator. Pure: the session sends what this decides.

use farm_proto::v1;
use farm_proto::v1::worker_message::Kind as Outgoing;

use crate::chunks::{ChunkAnswer, result_message};

/// Results carrying at least this many bytes of values are sent one per
/// message rather than batched, so their values are not copied.
pub(crate) const SEND_ALONE_BYTES: usize = 64 << 10;

/// The messages reporting one batch, in the order they go out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// Failures, a message each.
    pub(crate) failures: Vec<v1::ChunkFailure>,
    /// Results with many values, each on its own: on the results
    /// connection if there is one, otherwise a session message each, where
    /// the values travel as the buffer they were computed in (in a batch
    /// they would be copied).
    pub(crate) alone: Vec<v1::ChunkResult>,
    /// The other results together with the pull that replaces the batch's
    /// leases, in one message; `None` when there is neither.
    pub(crate) rest: Option<Outgoing>,
}

/// Reports `answers`, leaving out the `revoked` leases' (the coordinator
/// no longer wants them), and asks for `pull` more leases.
pub(crate) fn report(answers: Vec<ChunkAnswer>, revoked: &[v1::LeaseToken], pull: u32) -> Report {
    let mut report = Report::default();
    let mut results = Vec::new();
    for (lease, took, outcome) in answers {
        if lease.token.as_ref().is_some_and(|t| revoked.contains(t)) {
            tracing::debug!(token = ?lease.token, "dropping the answer of a revoked lease");
            continue;
        }
        match outcome {
            Ok(output) => {
                let result = result_message(lease.token, output, took);
                if result.values_le.len() >= SEND_ALONE_BYTES {
                    report.alone.push(result);
                } else {
                    results.push(result);
                }
            }
            Err(failure) => report.failures.push(v1::ChunkFailure {
                token: lease.token,
                message: failure.message,
                retryable: failure.retryable,
            }),
        }
    }
    report.rest = match (results.len(), pull) {
        (0, 0) => None,
        (0, slots) => Some(Outgoing::Pull(v1::PullRequest { slots })),
        (1, 0) => results.pop().map(Outgoing::Result),
        _ => Some(Outgoing::Results(v1::ChunkResults { results, pull })),
    };
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chunks::{ChunkFailure, compute};
    use crate::modules::BatchModules;

    fn lease(chunk: u32, len: u64, stream_values: bool) -> v1::ChunkLease {
        v1::ChunkLease {
            token: Some(token(chunk)),
            function: "sqrt".to_owned(),
            job_start: 0,
            // On a leaf boundary, as every chunk starts.
            offset: u64::from(chunk) << 20,
            len,
            stream_values,
            wasm_module_hash: bytes::Bytes::new(),
        }
    }

    fn token(chunk: u32) -> v1::LeaseToken {
        v1::LeaseToken {
            job_id: 7,
            chunk_index: u64::from(chunk),
            attempt: 1,
        }
    }

    fn answer(lease: v1::ChunkLease) -> ChunkAnswer {
        let output = compute(&lease, &BatchModules::default());
        (lease, Duration::from_micros(5), output)
    }

    fn tokens(results: &[v1::ChunkResult]) -> Vec<v1::LeaseToken> {
        results.iter().filter_map(|r| r.token).collect()
    }

    #[test]
    fn small_results_go_together_with_the_pull() {
        let answers = vec![answer(lease(0, 100, true)), answer(lease(1, 100, false))];
        let report = report(answers, &[], 2);
        assert!(report.failures.is_empty() && report.alone.is_empty());
        let Some(Outgoing::Results(batch)) = report.rest else {
            panic!("expected one batch, got {:?}", report.rest);
        };
        assert_eq!(batch.pull, 2);
        assert_eq!(tokens(&batch.results), [token(0), token(1)]);
        assert_eq!(batch.results[0].values_le.len(), 800);
        assert_eq!(batch.results[0].compute_us, 5);
    }

    #[test]
    fn a_single_result_without_a_pull_goes_alone() {
        let report = report(vec![answer(lease(3, 10, false))], &[], 0);
        let Some(Outgoing::Result(result)) = report.rest else {
            panic!("expected a result, got {:?}", report.rest);
        };
        assert_eq!(result.token, Some(token(3)));
    }

    #[test]
    fn nothing_to_say_is_no_message() {
        assert_eq!(report(Vec::new(), &[], 0), Report::default());
        let pull_only = report(Vec::new(), &[], 4);
        assert_eq!(
            pull_only.rest,
            Some(Outgoing::Pull(v1::PullRequest { slots: 4 }))
        );
    }

    #[test]
    fn large_values_go_alone_failures_apart_revoked_not_at_all() {
        let big = 1 + (SEND_ALONE_BYTES / 8) as u64;
        let failed = (
            lease(2, 10, false),
            Duration::ZERO,
            Err(ChunkFailure {
                message: "boom".to_owned(),
                retryable: true,
            }),
        );
        let answers = vec![
            answer(lease(0, big, true)),
            answer(lease(1, 10, true)),
            failed,
            answer(lease(3, 10, false)),
        ];
        let report = report(answers, &[token(3)], 1);
        assert_eq!(tokens(&report.alone), [token(0)]);
        assert_eq!(report.alone[0].values_le.len() as u64, big * 8);
        assert_eq!(
            report.failures,
            [v1::ChunkFailure {
                token: Some(token(2)),
                message: "boom".to_owned(),
                retryable: true,
            }]
        );
        let Some(Outgoing::Results(batch)) = report.rest else {
            panic!("expected one batch, got {:?}", report.rest);
        };
        assert_eq!((tokens(&batch.results), batch.pull), (vec![token(1)], 1));
    }
}
