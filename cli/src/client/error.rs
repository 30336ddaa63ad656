//! Why a call to a coordinator failed: [`ClientError`], with a variant for
//! each cause a user can see, carrying what identifies it (the address,
//! the job, the status the coordinator sent). Decisions are made on these
//! variants, never on their messages.

use std::time::Duration;

use farm_net::display::{LONG, Shown, shown_up_to, status_text};
use farm_net::peer::{self, NotACoordinator};
use farm_proto::convert::BadDigest;
use farm_proto::error::ErrorKind;
use tonic::Status;

/// A status's message as it may be shown: the coordinator's messages
/// carry what workers sent (a failure message), so control characters
/// are escaped and the length bounded.
fn message(status: &Status) -> Shown<'_> {
    shown_up_to(status.message(), LONG)
}

/// Why a job did not finish, or a call was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {address}: {cause}")]
    Unreachable {
        address: String,
        #[source]
        cause: Unreachable,
    },
    #[error("the coordinator refused the job: {}", message(.status))]
    Invalid {
        #[source]
        status: Status,
    },
    #[error("{}", message(.status))]
    ProtocolMismatch {
        #[source]
        status: Status,
    },
    /// The coordinator's message names the job, the chunk, the attempts and
    /// the workers.
    #[error("{}", message(.status))]
    JobFailed {
        job: Option<u64>,
        #[source]
        status: Status,
    },
    #[error("the coordinator is busy: {}", message(.status))]
    Busy {
        #[source]
        status: Status,
    },
    #[error("lost the coordinator at {address}: {cause}")]
    Lost {
        address: String,
        job: Option<u64>,
        #[source]
        cause: Lost,
    },
    #[error("the coordinator sent something unexpected: {what}")]
    Unexpected {
        job: Option<u64>,
        #[source]
        what: Unexpected,
    },
    /// The output writer stopped before the job finished; its own error
    /// says why.
    #[error("the output writer stopped")]
    OutputStopped { job: Option<u64> },
    #[error("{}", message(.status))]
    NotFound {
        #[source]
        status: Status,
    },
    /// No token, or the wrong one: the coordinator's message says what to
    /// pass.
    #[error("{}", message(.status))]
    Unauthenticated {
        #[source]
        status: Status,
    },
}

/// Why the coordinator could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// Something answered that is not a farm coordinator.
    #[error("it is not a farm coordinator ({0})")]
    NotACoordinator(#[source] NotACoordinator),
    #[error("no answer within {} s", .0.as_secs())]
    NoAnswer(Duration),
    /// Refused, reset, or unavailable, as the status says.
    #[error("{}", status_text(.0))]
    Failed(#[source] Status),
}

impl Unreachable {
    /// Whether the peer is known to be something other than a coordinator.
    pub fn is_not_a_coordinator(&self) -> bool {
        matches!(self, Unreachable::NotACoordinator(_))
    }
}

/// Why a coordinator that accepted the job was lost.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("the connection broke ({}); job {job} is lost: submit it again", status_text(.status))]
    ConnectionBroke {
        job: u64,
        #[source]
        status: Status,
    },
    #[error("no word for {} s", .0.as_secs())]
    Silent(Duration),
    #[error("the job stream ended without a result")]
    StreamEnded,
    /// Unavailable or cancelled, as the status says (e.g. the coordinator
    /// is shutting down).
    #[error("{}", status_text(.0))]
    Failed(#[source] Status),
}

/// Something the coordinator sent that breaks the protocol.
#[derive(Debug, thiserror::Error)]
pub enum Unexpected {
    /// An internal error, as the status says.
    #[error("{}", status_text(.0))]
    Status(#[source] Status),
    #[error("a value connection that was not asked for, or a malformed token")]
    ValueConnection,
    #[error("values at offset {offset} ({bytes} bytes) where offset {due} was due")]
    ValuesOutOfPlace { offset: u64, bytes: usize, due: u64 },
    #[error("values that were not asked for")]
    UnaskedValues,
    #[error("a finished job without a summary")]
    NoSummary,
    #[error("{0}")]
    Digest(#[source] BadDigest),
    #[error("a summary of {summarized} elements for a job of {n}")]
    SummaryCount { summarized: u64, n: u64 },
    #[error("{received} values streamed for a job of {n}")]
    ValueCount { received: u64, n: u64 },
    #[error("a finished job that was never accepted")]
    NeverAccepted,
}

impl ClientError {
    /// The kind of failure, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unreachable { .. } | ClientError::Lost { .. } => ErrorKind::Unavailable,
            ClientError::Invalid { .. } => ErrorKind::InvalidArgument,
            ClientError::ProtocolMismatch { .. } => ErrorKind::ProtocolMismatch,
            ClientError::JobFailed { .. } => ErrorKind::JobFailed,
            ClientError::Busy { .. } => ErrorKind::ResourceExhausted,
            ClientError::NotFound { .. } => ErrorKind::NotFound,
            ClientError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            ClientError::Unexpected { .. } | ClientError::OutputStopped { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// The error for a failed call to the coordinator at `address`; `job`
    /// is the job it accepted, if it got that far.
    pub(super) fn from_status(status: Status, address: &str, job: Option<u64>) -> ClientError {
        let address = address.to_owned();
        if let Some(reason) = peer::not_a_coordinator_by_status(&status) {
            // A peer that accepted the job is a coordinator: a broken
            // connection now means it died or the network failed.
            return match job {
                Some(job) => ClientError::Lost {
                    address,
                    job: Some(job),
                    cause: Lost::ConnectionBroke { job, status },
                },
                None => ClientError::Unreachable {
                    address,
                    cause: Unreachable::NotACoordinator(reason),
                },
            };
        }
        match ErrorKind::of_code(status.code()) {
            ErrorKind::InvalidArgument => ClientError::Invalid { status },
            ErrorKind::ProtocolMismatch => ClientError::ProtocolMismatch { status },
            ErrorKind::JobFailed => ClientError::JobFailed { job, status },
            ErrorKind::ResourceExhausted => ClientError::Busy { status },
            ErrorKind::Unavailable | ErrorKind::Cancelled if job.is_none() => {
                ClientError::Unreachable {
                    address,
                    cause: Unreachable::Failed(status),
                }
            }
            ErrorKind::Unavailable | ErrorKind::Cancelled => ClientError::Lost {
                address,
                job,
                cause: Lost::Failed(status),
            },
            ErrorKind::NotFound => ClientError::NotFound { status },
            ErrorKind::Unauthenticated => ClientError::Unauthenticated { status },
            ErrorKind::Internal => ClientError::Unexpected {
                job,
                what: Unexpected::Status(status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: &str = "127.0.0.1:50051";

    #[test]
    fn statuses_become_the_variant_their_code_says() {
        let err = ClientError::from_status(Status::invalid_argument("n = 0"), ADDRESS, None);
        assert!(matches!(err, ClientError::Invalid { .. }), "{err:?}");
        assert_eq!(err.to_string(), "the coordinator refused the job: n = 0");

        let err = ClientError::from_status(Status::unavailable("refused"), ADDRESS, None);
        assert!(
            matches!(
                &err,
                ClientError::Unreachable {
                    cause: Unreachable::Failed(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot reach the coordinator at 127.0.0.1:50051: refused"
        );

        let err = ClientError::from_status(Status::unavailable("shutting down"), ADDRESS, Some(7));
        assert!(
            matches!(
                &err,
                ClientError::Lost {
                    job: Some(7),
                    cause: Lost::Failed(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);

        let err = ClientError::from_status(
            Status::new(ErrorKind::JobFailed.code(), "job 7 failed: chunk 3"),
            ADDRESS,
            Some(7),
        );
        assert!(
            matches!(err, ClientError::JobFailed { job: Some(7), .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "job 7 failed: chunk 3");
    }

    #[test]
    fn what_workers_sent_is_shown_escaped_and_bounded() {
        let forged = "job 7 failed: chunk 3 on w1: boom\n\u{1b}[31mERROR forged";
        let err = ClientError::from_status(
            Status::new(ErrorKind::JobFailed.code(), forged),
            ADDRESS,
            Some(7),
        );
        assert_eq!(
            err.to_string(),
            "job 7 failed: chunk 3 on w1: boom\\u{a}\\u{1b}[31mERROR forged"
        );
        let huge = "x".repeat(100_000);
        let err = ClientError::from_status(Status::unavailable(huge), ADDRESS, None);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the coordinator at 127.0.0.1:50051: {}… (100000 bytes)",
                "x".repeat(LONG)
            )
        );
    }

    #[test]
    fn a_peer_that_is_not_grpc_is_named_by_its_variant() {
        let err = ClientError::from_status(Status::unimplemented("no such service"), ADDRESS, None);
        let ClientError::Unreachable { cause, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(cause.is_not_a_coordinator());
        assert!(Unreachable::NotACoordinator(NotACoordinator::NotHttp2).is_not_a_coordinator());
        assert!(!Unreachable::NoAnswer(Duration::from_secs(5)).is_not_a_coordinator());

        // Once the job was accepted, the peer was a coordinator: it is lost.
        let err = ClientError::from_status(Status::unimplemented("gone"), ADDRESS, Some(3));
        assert!(
            matches!(
                &err,
                ClientError::Lost {
                    cause: Lost::ConnectionBroke { job: 3, .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("; job 3 is lost: submit it again"),
            "{err}"
        );
    }
}
