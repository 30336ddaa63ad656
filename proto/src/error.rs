//! The one mapping between farm's error kinds and gRPC status codes.
//!
//! Libraries define typed errors and say which [`ErrorKind`] each is; only
//! this module turns kinds into codes (servers) and codes back into kinds
//! (clients), so a code means the same thing everywhere.

use tonic::{Code, Status};

/// What a failure means to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A request field is wrong; retrying the same request cannot help.
    InvalidArgument,
    /// The peer speaks another protocol version.
    ProtocolMismatch,
    /// A documented cap was reached (e.g. too many running jobs).
    ResourceExhausted,
    /// The job failed: a chunk failed more often than allowed, or could not
    /// be computed at all.
    JobFailed,
    /// The caller or an operator cancelled the work.
    Cancelled,
    /// The thing asked about (a job) is not known.
    NotFound,
    /// The coordinator is shutting down or cannot be reached.
    Unavailable,
    /// No token, or not the one the call needs.
    Unauthenticated,
    /// A bug or broken invariant.
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::ProtocolMismatch => Code::FailedPrecondition,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::JobFailed => Code::Aborted,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::Internal => Code::Internal,
        }
    }

    /// The kind a received status stands for.
    pub fn of_code(code: Code) -> ErrorKind {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::FailedPrecondition => ErrorKind::ProtocolMismatch,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Aborted => ErrorKind::JobFailed,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::NotFound => ErrorKind::NotFound,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            // tonic reports a connection that broke under a call as Unknown;
            // farm's servers never send it.
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// An error a service can return to a remote caller.
pub trait ServiceError: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

/// The longest status message a server sends, in bytes. A message travels
/// in an HTTP/2 header (`grpc-message`, percent-encoded), and a peer that
/// receives a header list past its limit (16 KiB for hyper) closes the
/// whole connection: a message that echoes what a caller sent is cut
/// here, whatever the error.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// The status a server sends for `err`: its kind's code and its message,
/// at most [`MAX_STATUS_MESSAGE`] bytes of it.
pub fn to_status(err: &dyn ServiceError) -> Status {
    Status::new(err.kind().code(), bounded(err.to_string()))
}

/// `message` cut to [`MAX_STATUS_MESSAGE`] bytes (at a character's
/// boundary), with its full size given.
fn bounded(mut message: String) -> String {
    let total = message.len();
    if total <= MAX_STATUS_MESSAGE {
        return message;
    }
    let mut cut = MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!("… ({total} bytes)"));
    message
}

/// A status's message followed by the causes tonic keeps behind it (where
/// "connection refused" lives), skipping causes the text already says.
pub fn describe(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Echo(String);

    impl ServiceError for Echo {
        fn kind(&self) -> ErrorKind {
            ErrorKind::InvalidArgument
        }
    }

    #[test]
    fn a_status_message_is_bounded_whatever_the_error_echoes() {
        let status = to_status(&Echo("short".to_owned()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "short");
        let status = to_status(&Echo("x".repeat(100_000)));
        assert_eq!(
            status.message(),
            format!("{}… (100000 bytes)", "x".repeat(MAX_STATUS_MESSAGE))
        );
        // Cut at a character's boundary: 'é' is two bytes.
        let status = to_status(&Echo(format!("a{}", "é".repeat(MAX_STATUS_MESSAGE))));
        let kept = status.message().split('…').next().unwrap_or_default();
        assert_eq!(kept, format!("a{}", "é".repeat(MAX_STATUS_MESSAGE / 2 - 1)));
    }

    #[test]
    fn every_kind_survives_the_wire() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::ProtocolMismatch,
            ErrorKind::ResourceExhausted,
            ErrorKind::JobFailed,
            ErrorKind::Cancelled,
            ErrorKind::NotFound,
            ErrorKind::Unavailable,
            ErrorKind::Unauthenticated,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::of_code(kind.code()), kind);
        }
    }
}
