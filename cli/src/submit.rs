//! `farm submit`: pick where a job runs, run it, and write its values.
//!
//! - A coordinator named (`--coordinator` or `FARM_COORDINATOR`): the job
//!   runs on that cluster.
//! - Otherwise, a tiny job runs right here on a rayon pool: starting a
//!   coordinator would cost more than the job (parallelism has a cost).
//! - Otherwise, an embedded coordinator and worker start in this process
//!   and the job goes through the same gRPC path as on a cluster.

use std::ops::Range;
use std::time::{Duration, Instant};

use farm_catalog::{EvaluateError, Reducer, ReducerError, Summary, evaluate};
use farm_coordinator::CoordinatorError;
use farm_net::transport;

use crate::client::{self, ClientError, JobReport, JobRequest};
use crate::embedded::EmbeddedCluster;
use crate::module::JobFunction;
use crate::output::{self, OutputError, OutputSpec};
use crate::receive::OutputWriter;

/// Jobs up to this many elements skip the cluster when none is named:
/// computing 1 Mi square roots takes about a millisecond, less than
/// starting a coordinator and a worker.
pub const LOCAL_SHORTCUT_MAX: u64 = 1 << 20;

/// Where a job ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// On the cluster behind this coordinator.
    Cluster(String),
    /// On a coordinator and worker inside this process.
    Embedded { threads: usize },
    /// Directly on this process's threads (a tiny job).
    Local { threads: usize },
}

/// Everything `farm submit` was asked.
#[derive(Debug, Clone)]
pub struct Submission {
    pub function: JobFunction,
    pub start: u64,
    pub n: u64,
    pub chunk_size: Option<u64>,
    pub output: Option<OutputSpec>,
    pub coordinator: Option<String>,
    /// The client token to present to that coordinator.
    pub token: Option<farm_net::auth::RoleToken>,
    /// Threads for the embedded or local run.
    pub threads: usize,
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Finished {
    pub summary: Summary,
    pub mode: Mode,
    pub elapsed: Duration,
    pub workers: u32,
    pub chunks: u64,
    /// Leases granted: chunks, plus retries and backups.
    pub attempts: u64,
    pub job_id: Option<u64>,
}

/// Why running a job for `farm submit` failed. (Not the scheduler's
/// refusal of a job, which reaches the client as a [`ClientError`].)
#[derive(Debug, thiserror::Error)]
pub enum JobRunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Address(#[from] transport::BadAddress),
    #[error("interrupted; the job was cancelled")]
    Interrupted,
    #[error("cannot start compute threads: {0}")]
    ComputeThreads(#[source] rayon::ThreadPoolBuildError),
    #[error("{0}")]
    Compute(#[source] EvaluateError),
    #[error("{0}")]
    Reduce(#[source] ReducerError),
    #[error("cannot start the embedded coordinator: {0}")]
    EmbeddedStart(#[source] CoordinatorError),
    #[error("a WebAssembly module runs on a worker, not in the client")]
    NotLocal,
}

impl Submission {
    /// Where this submission will run. (A module always goes through a
    /// worker: that is where modules are compiled and bounded.)
    pub fn mode(&self) -> Mode {
        let tiny = self.n <= LOCAL_SHORTCUT_MAX && self.chunk_size.is_none();
        match (&self.coordinator, &self.function) {
            (Some(address), _) => Mode::Cluster(address.clone()),
            (None, JobFunction::Catalog(_)) if tiny => Mode::Local {
                threads: self.threads,
            },
            (None, _) => Mode::Embedded {
                threads: self.threads,
            },
        }
    }

    fn request(&self) -> JobRequest {
        JobRequest {
            function: self.function.name().to_owned(),
            wasm_module: match &self.function {
                JobFunction::Catalog(_) => bytes::Bytes::new(),
                JobFunction::Wasm(module) => module.bytes.clone(),
            },
            start: self.start,
            n: self.n,
            chunk_size: self.chunk_size,
            stream_values: self.output.is_some(),
            // Raw values are spliced from a value connection without being
            // read; text is formatted anyway, and formatting overlaps the
            // network best when the values come in the job's stream.
            values_connection: self
                .output
                .as_ref()
                .is_some_and(|spec| spec.format != output::Format::Text),
        }
    }
}

/// Runs a tiny job on this process's threads, without a runtime.
pub fn run_local(submission: &Submission) -> Result<Finished, JobRunError> {
    let started = Instant::now();
    let mut sink = submission
        .output
        .as_ref()
        .map(|spec| output::create(spec, submission.n))
        .transpose()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(submission.threads)
        .build()
        .map_err(JobRunError::ComputeThreads)?;
    let range: Range<u64> = 0..submission.n;
    let JobFunction::Catalog(function) = submission.function else {
        return Err(JobRunError::NotLocal);
    };
    let out = pool
        .install(|| evaluate(function, submission.start, range, sink.is_some()))
        .map_err(JobRunError::Compute)?;
    let mut reducer = Reducer::new();
    reducer
        .push_chunk(submission.n, &out.summary)
        .map_err(JobRunError::Reduce)?;
    let summary = reducer.finish(submission.n).map_err(JobRunError::Reduce)?;
    if let (Some(sink), Some(values)) = (sink.as_mut(), out.values.as_ref()) {
        sink.write_batch(&farm_catalog::summary::le_bytes(values))?;
    }
    if let Some(sink) = sink {
        sink.finish()?;
    }
    Ok(Finished {
        summary,
        mode: submission.mode(),
        elapsed: started.elapsed(),
        workers: 0,
        chunks: 1,
        attempts: 1,
        job_id: None,
    })
}

/// Runs a job on a cluster or the embedded one; Ctrl-C cancels it.
pub async fn run_remote(submission: &Submission) -> Result<Finished, JobRunError> {
    let started = Instant::now();
    let mode = submission.mode();
    let (connection, address, embedded) = match &mode {
        Mode::Cluster(address) => (
            transport::Connection::direct(address)?.with_token(submission.token),
            address.clone(),
            None,
        ),
        Mode::Embedded { threads } | Mode::Local { threads } => {
            let cluster = EmbeddedCluster::start(*threads).map_err(JobRunError::EmbeddedStart)?;
            (
                cluster.connection(),
                "the embedded coordinator".to_owned(),
                Some(cluster),
            )
        }
    };
    let writer = submission
        .output
        .as_ref()
        .map(|spec| output::create(spec, submission.n).map(OutputWriter::start))
        .transpose()?;
    let request = submission.request();
    let job = client::run_job(connection, &address, &request, writer.as_ref());
    let outcome = tokio::select! {
        outcome = job => outcome.map_err(JobRunError::from),
        () = farm_setup::shutdown_signal() => Err(JobRunError::Interrupted),
    };
    let report = finish_output(writer, outcome).await?;
    if let Some(cluster) = embedded {
        cluster.stop().await;
    }
    Ok(Finished {
        summary: report.summary,
        mode,
        elapsed: started.elapsed(),
        workers: report.workers,
        chunks: report.chunks,
        attempts: report.attempts,
        job_id: Some(report.job_id),
    })
}

/// Waits for the writer and decides which error, if any, the user sees:
/// a writer's own error explains a failed job better than "output stopped".
async fn finish_output(
    writer: Option<OutputWriter>,
    outcome: Result<JobReport, JobRunError>,
) -> Result<JobReport, JobRunError> {
    let Some(writer) = writer else {
        return outcome;
    };
    let written = writer.finish(outcome.is_ok()).await;
    match (outcome, written) {
        (Ok(report), Ok(())) => Ok(report),
        (_, Err(err)) => Err(err.into()),
        (Err(err), Ok(())) => Err(err),
    }
}
