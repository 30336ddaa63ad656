//! Opening a session: our hello, the coordinator's welcome, and telling a
//! refusal (retrying cannot help) from a passing failure (retry later).

use std::time::Duration;

use farm_net::display::{LONG, shown_up_to, status_text};
use farm_net::peer;
use farm_net::transport::Connection;
use farm_net::wire::{self, FrameBody, FrameSender, MessageReader};
use farm_proto::method;
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::{PROTOCOL_VERSION, v1};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::session::encode;

/// Messages queued for the coordinator: results wait here while the
/// network is busy, and the session waits when it is full.
const OUTBOX: usize = 64;

/// How long the coordinator may take to answer a new session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A session that could not be established.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionError {
    /// Worth retrying: the coordinator is down, restarting or unreachable.
    #[error("{0}")]
    Unreachable(String),
    /// Retrying cannot help (another protocol version, or not a coordinator).
    #[error("{0}")]
    Refused(String),
    /// The coordinator wants another token (or one at all): its message
    /// says what to pass. Retrying with the same one cannot help.
    #[error("{0}")]
    Unauthenticated(String),
}

/// An open session: where to send, what comes back, and the welcome.
pub(crate) struct Opened {
    pub(crate) outbox: FrameSender,
    pub(crate) inbound: MessageReader<Body>,
    pub(crate) welcome: v1::Welcome,
}

/// Says hello as `name` with `threads` and waits for the welcome.
pub(crate) async fn open(
    connection: Connection,
    coordinator: &str,
    name: &str,
    threads: usize,
) -> Result<Opened, SessionError> {
    let (outbox, requests) = FrameBody::request(OUTBOX);
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name: name.to_owned(),
        threads: u32::try_from(threads).unwrap_or(u32::MAX),
    });
    // The queue is new and has room.
    let _ = outbox.try_send(encode(hello));
    let opened = tokio::time::timeout(
        OPEN_TIMEOUT,
        wire::call::open(connection, method::WORKER_SESSION, requests),
    )
    .await
    .map_err(|_| SessionError::Unreachable("no answer within 10 s".to_owned()))?;
    let mut inbound = match opened {
        Ok(inbound) => inbound,
        Err(status) => return Err(classify_with_probe(&status, coordinator).await),
    };
    let welcome = match tokio::time::timeout(OPEN_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::CoordinatorMessage {
            kind: Some(Incoming::Welcome(welcome)),
        }))) => welcome,
        Ok(Err(status)) => return Err(classify_with_probe(&status, coordinator).await),
        _ => {
            return Err(SessionError::Refused(format!(
                "{coordinator} did not welcome this worker; is it a farm coordinator?"
            )));
        }
    };
    Ok(Opened {
        outbox,
        inbound,
        welcome,
    })
}

/// Like [`classify`]; when the call merely broke, asks the peer whether
/// it is a coordinator at all, since hyper does not always say.
async fn classify_with_probe(status: &Status, coordinator: &str) -> SessionError {
    let classified = classify(status, coordinator);
    if !matches!(classified, SessionError::Unreachable(_)) {
        return classified;
    }
    match peer::not_a_coordinator(status, coordinator).await {
        Some(reason) => not_a_coordinator(coordinator, &reason),
        None => classified,
    }
}

/// Tells a refusal from a passing failure.
fn classify(status: &Status, coordinator: &str) -> SessionError {
    if let Some(reason) = peer::not_a_coordinator_by_status(status) {
        return not_a_coordinator(coordinator, &reason);
    }
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument => {
            SessionError::Refused(shown_up_to(status.message(), LONG).to_string())
        }
        Code::Unauthenticated => {
            SessionError::Unauthenticated(shown_up_to(status.message(), LONG).to_string())
        }
        _ => SessionError::Unreachable(status_text(status)),
    }
}

fn not_a_coordinator(coordinator: &str, reason: &peer::NotACoordinator) -> SessionError {
    SessionError::Refused(format!(
        "{coordinator} is not a farm coordinator ({reason})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_version_or_request_is_a_refusal() {
        let status = Status::failed_precondition("protocol version 9 is not 1");
        assert_eq!(
            classify(&status, "c:1"),
            SessionError::Refused("protocol version 9 is not 1".to_owned())
        );
        let status = Status::invalid_argument("threads must be at least 1");
        assert!(matches!(classify(&status, "c:1"), SessionError::Refused(_)));
        let status = Status::unimplemented("no such service");
        let SessionError::Refused(reason) = classify(&status, "c:1") else {
            panic!("an unimplemented session is a refusal");
        };
        assert!(
            reason.starts_with("c:1 is not a farm coordinator"),
            "{reason}"
        );
    }

    /// What the coordinator says reaches the worker's log escaped: no
    /// forged line, no escape sequence.
    #[test]
    fn what_the_coordinator_says_is_escaped() {
        let status = Status::invalid_argument("no\n2026-12-08T01:00:00Z INFO forged\u{1b}[2J");
        assert_eq!(
            classify(&status, "c:1"),
            SessionError::Refused("no\\u{a}2026-12-08T01:00:00Z INFO forged\\u{1b}[2J".to_owned())
        );
        let status = Status::unavailable(format!("gone\r{}", "x".repeat(5000)));
        let SessionError::Unreachable(reason) = classify(&status, "c:1") else {
            panic!("unavailable is worth retrying");
        };
        assert!(reason.starts_with("gone\\u{d}xxx"), "{reason}");
        assert!(reason.ends_with("… (5005 bytes)"), "{reason}");
    }

    #[test]
    fn a_refused_token_is_told_apart() {
        let status = Status::unauthenticated("this coordinator requires a worker token: ...");
        assert_eq!(
            classify(&status, "c:1"),
            SessionError::Unauthenticated(
                "this coordinator requires a worker token: ...".to_owned()
            )
        );
    }

    #[test]
    fn a_coordinator_that_is_down_or_busy_is_worth_retrying() {
        for status in [
            Status::unavailable("connection refused"),
            Status::deadline_exceeded("no answer"),
            Status::unknown("stream reset"),
        ] {
            assert!(
                matches!(classify(&status, "c:1"), SessionError::Unreachable(_)),
                "{status:?}"
            );
        }
    }
}
