//! How `farm` ends: its exit codes (README.md, "Exit codes") and the one
//! mapping from every error a command can end with to one of them.

use farm_catalog::UnknownFunction;
use farm_net::transport::BadAddress;
use farm_proto::error::ErrorKind;

use crate::client::ClientError;
use crate::module::ModuleError;
use crate::output::OutputError;
use crate::submit::JobRunError;
use crate::token::TokenError;

/// Success; also when the reader of `--output -` stops early.
pub const SUCCESS: u8 = 0;
/// The job failed, or another error (e.g. the output file could not be
/// written).
pub const JOB_FAILED: u8 = 1;
/// Invalid input: a bad flag or value, or a request the coordinator
/// refused as invalid.
pub const INVALID_INPUT: u8 = 2;
/// The coordinator cannot be reached (within a few seconds), was lost, or
/// is busy.
pub const UNREACHABLE: u8 = 3;
/// The coordinator refused the token: none was given, or not this
/// cluster's client token.
pub const UNAUTHENTICATED: u8 = 4;
/// Interrupted (Ctrl-C); the job is cancelled.
pub const INTERRUPTED: u8 = 130;

/// Why a `farm` command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    UnknownFunction(#[from] UnknownFunction),
    /// The WebAssembly module cannot be read, or farm would not run it.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// `--output` and `--format` do not make a valid output.
    #[error(transparent)]
    OutputSpec(OutputError),
    #[error("--start {start} with --n {n} runs past the largest index, 2^64 - 1")]
    PastLastIndex { start: u64, n: u64 },
    #[error(transparent)]
    BadAddress(#[from] BadAddress),
    #[error(transparent)]
    JobRun(#[from] JobRunError),
    /// A call to a coordinator (`farm workers`, `farm status`, `farm
    /// health`).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `farm digest` could not read the file.
    #[error(transparent)]
    Digest(OutputError),
    #[error("{address} is not serving")]
    NotServing { address: String },
    #[error("cannot print the result: {0}")]
    Print(#[source] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `farm token`, or the client token to present.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl CommandError {
    /// The exit code for this error. A reader of stdout that left is
    /// [`SUCCESS`]: `farm ... | head` got what it wanted.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::UnknownFunction(_)
            | CommandError::Module(_)
            | CommandError::OutputSpec(_)
            | CommandError::PastLastIndex { .. }
            | CommandError::BadAddress(_) => INVALID_INPUT,
            CommandError::JobRun(err) => job_run_code(err),
            CommandError::Client(err) => kind_code(err.kind()),
            CommandError::Print(err) if err.kind() == std::io::ErrorKind::BrokenPipe => SUCCESS,
            CommandError::Token(err) if err.is_invalid_input() => INVALID_INPUT,
            CommandError::Digest(_)
            | CommandError::NotServing { .. }
            | CommandError::Print(_)
            | CommandError::Runtime(_)
            | CommandError::Token(_) => JOB_FAILED,
        }
    }
}

fn job_run_code(err: &JobRunError) -> u8 {
    match err {
        JobRunError::Output(OutputError::BrokenPipe) => SUCCESS,
        JobRunError::Client(client) => kind_code(client.kind()),
        JobRunError::Address(_) => INVALID_INPUT,
        JobRunError::Interrupted => INTERRUPTED,
        JobRunError::Output(_)
        | JobRunError::ComputeThreads(_)
        | JobRunError::Compute(_)
        | JobRunError::Reduce(_)
        | JobRunError::EmbeddedStart(_)
        | JobRunError::NotLocal => JOB_FAILED,
    }
}

fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::ProtocolMismatch => INVALID_INPUT,
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted => UNREACHABLE,
        ErrorKind::Unauthenticated => UNAUTHENTICATED,
        ErrorKind::JobFailed | ErrorKind::Cancelled | ErrorKind::NotFound | ErrorKind::Internal => {
            JOB_FAILED
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_stdout_is_success_and_other_output_errors_are_not() {
        let closed = CommandError::JobRun(JobRunError::Output(OutputError::BrokenPipe));
        assert_eq!(closed.exit_code(), SUCCESS);
        let print = CommandError::Print(std::io::ErrorKind::BrokenPipe.into());
        assert_eq!(print.exit_code(), SUCCESS);
        let full = CommandError::Print(std::io::Error::other("disk full"));
        assert_eq!(full.exit_code(), JOB_FAILED);
        assert_eq!(
            CommandError::JobRun(JobRunError::Interrupted).exit_code(),
            INTERRUPTED
        );
        let past = CommandError::PastLastIndex {
            start: u64::MAX,
            n: 2,
        };
        assert_eq!(past.exit_code(), INVALID_INPUT);
        assert_eq!(
            past.to_string(),
            "--start 18446744073709551615 with --n 2 runs past the largest index, 2^64 - 1"
        );
    }

    #[test]
    fn error_kinds_map_as_the_readme_says() {
        let cases = [
            (ErrorKind::InvalidArgument, INVALID_INPUT),
            (ErrorKind::ProtocolMismatch, INVALID_INPUT),
            (ErrorKind::Unavailable, UNREACHABLE),
            (ErrorKind::ResourceExhausted, UNREACHABLE),
            (ErrorKind::Unauthenticated, UNAUTHENTICATED),
            (ErrorKind::JobFailed, JOB_FAILED),
            (ErrorKind::Cancelled, JOB_FAILED),
            (ErrorKind::NotFound, JOB_FAILED),
            (ErrorKind::Internal, JOB_FAILED),
        ];
        for (kind, code) in cases {
            assert_eq!(kind_code(kind), code, "{kind:?}");
        }
    }
}
