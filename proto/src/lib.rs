//! The farm wire contract: the code generated from `farm/v1/farm.proto`,
//! the protocol version and size limits, the method paths, conversions
//! between wire and catalog types ([`convert`]), and the one mapping of
//! errors to gRPC status codes ([`error`]).
//!
//! How the messages travel (connections, framing, side connections) is
//! `farm-net`'s; this crate only says what they are.

pub mod convert;
pub mod error;

/// Generated messages and services of package `farm.v1`.
#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
pub mod v1 {
    tonic::include_proto!("farm.v1");
}

/// The version every first message carries. Bump it on any change that is
/// not wire-compatible; peers refuse a mismatch with a clear message.
pub const PROTOCOL_VERSION: u32 = 1;

/// The most compute threads a worker may claim in its hello: the
/// coordinator refuses more, so the worker and the CLI refuse more
/// already when they parse their flags.
pub const MAX_WORKER_THREADS: u32 = 4096;

/// The largest gRPC message either side accepts: one chunk of streamed
/// values plus its statistics, with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The paths of farm's gRPC methods, shared by every client and the
/// coordinator's routes.
pub mod method {
    pub const JOB_SERVICE: &str = "farm.v1.JobService";
    pub const SUBMIT_JOB: &str = "/farm.v1.JobService/SubmitJob";
    pub const GET_CLUSTER_STATUS: &str = "/farm.v1.JobService/GetClusterStatus";
    pub const GET_JOB_STATUS: &str = "/farm.v1.JobService/GetJobStatus";
    pub const WORKER_SERVICE: &str = "farm.v1.WorkerService";
    pub const WORKER_SESSION: &str = "/farm.v1.WorkerService/Session";
}

#[cfg(test)]
mod tests {
    use super::method;

    /// The generated clients call these paths; the coordinator's routes
    /// must answer the same ones.
    #[test]
    fn method_paths_match_the_generated_clients() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/farm.v1.rs"));
        for path in [
            method::SUBMIT_JOB,
            method::GET_CLUSTER_STATUS,
            method::GET_JOB_STATUS,
            method::WORKER_SESSION,
        ] {
            assert!(generated.contains(&format!("\"{path}\"")), "{path}");
        }
        for service in [method::JOB_SERVICE, method::WORKER_SERVICE] {
            assert!(generated.contains(&format!("\"{service}\"")), "{service}");
        }
    }
}
