//! Talking to a coordinator: submit a job and follow its stream of events
//! to the end, and ask for the cluster's status.

use std::time::Duration;

use farm_catalog::Summary;
use farm_net::peer;
use farm_net::side_connection::Token;
use farm_net::transport::Connection;
use farm_net::wire::{self, Encoded, FrameBody};
use farm_proto::method;
use farm_proto::v1::job_service_client::JobServiceClient;
use farm_proto::v1::submit_job_response::Event;
use farm_proto::{PROTOCOL_VERSION, v1};
use tonic::Status;

use crate::receive::OutputWriter;

mod error;

pub use error::{ClientError, Lost, Unexpected, Unreachable};

/// How long connecting and having the job accepted may take. (The TCP
/// connect alone is bounded by the endpoint's shorter timeout; this also
/// covers a peer that accepts connections but never answers.)
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator sends progress twice a second; this much silence means
/// it is gone even if the connection still looks open.
const STREAM_SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// A catalog name, or the module's name for a WebAssembly job.
    pub function: String,
    /// A WebAssembly module to run, as the user gave it; empty for a
    /// catalog function.
    pub wasm_module: bytes::Bytes,
    pub start: u64,
    pub n: u64,
    /// Forced elements per chunk.
    pub chunk_size: Option<u64>,
    /// Stream the ordered values back.
    pub stream_values: bool,
    /// Take them on a value connection, if the coordinator offers one.
    pub values_connection: bool,
}

impl JobRequest {
    fn message(&self) -> v1::SubmitJobRequest {
        v1::SubmitJobRequest {
            protocol_version: PROTOCOL_VERSION,
            function: self.function.clone(),
            start: self.start,
            n: self.n,
            chunk_size: self.chunk_size.unwrap_or(0),
            stream_values: self.stream_values,
            values_connection: self.values_connection,
            wasm_module: self.wasm_module.clone(),
        }
    }
}

/// A finished job as the coordinator reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job_id: u64,
    pub summary: Summary,
    pub chunks: u64,
    pub workers: u32,
    pub attempts: u64,
}

/// Runs `request` on the coordinator behind `connection`, handing the
/// ordered values (little-endian f64 bytes) to `values` as they come, or
/// the value connection they come on. `address` names the coordinator in
/// errors.
pub async fn run_job(
    connection: Connection,
    address: &str,
    request: &JobRequest,
    values: Option<&OutputWriter>,
) -> Result<JobReport, ClientError> {
    name_non_coordinator(
        follow_job(connection, address, request, values).await,
        address,
    )
    .await
}

/// A peer that answered but broke the call may not be a coordinator at
/// all; hyper does not always say so, so ask it directly.
async fn explain_unreachable(err: ClientError, address: &str) -> ClientError {
    if let ClientError::Unreachable { cause, .. } = &err
        && cause.is_not_a_coordinator()
    {
        return err;
    }
    match peer::not_a_coordinator_by_probe(address).await {
        Some(reason) => ClientError::Unreachable {
            address: address.to_owned(),
            cause: Unreachable::NotACoordinator(reason),
        },
        None => err,
    }
}

async fn follow_job(
    connection: Connection,
    address: &str,
    request: &JobRequest,
    values: Option<&OutputWriter>,
) -> Result<JobReport, ClientError> {
    // Value connections present the same token as the job's call.
    let credential = connection.token().map(|token| *token.bytes());
    let submit = Encoded::message(&request.message())
        .map_err(|s| ClientError::from_status(s, address, None))?;
    // farm's own framing: the values arrive as slices of the receive
    // buffer, in the pieces they arrived in, not copies (see
    // farm_net::wire).
    let call = wire::call::open(
        connection,
        method::SUBMIT_JOB,
        FrameBody::single_request(submit),
    );
    let mut stream = opened(address, call).await?;
    let mut job_id = None;
    let mut next_offset = 0u64;
    let mut value_connection = false;
    loop {
        let next = tokio::time::timeout(STREAM_SILENCE_TIMEOUT, stream.message_with_payload());
        // A writer that stopped (a reader of stdout that left) ends the
        // job now: returning drops the job's stream, and the coordinator
        // cancels the job.
        let message = tokio::select! {
            message = next => message,
            () = writer_stopped(values) => {
                return Err(ClientError::OutputStopped { job: job_id });
            }
        };
        let lost = move |cause| ClientError::Lost {
            address: address.to_owned(),
            job: job_id,
            cause,
        };
        let message = message
            .map_err(|_| lost(Lost::Silent(STREAM_SILENCE_TIMEOUT)))?
            .map_err(|s| ClientError::from_status(s, address, job_id))?;
        let Some((v1::SubmitJobResponse { event: Some(event) }, payload)) = message else {
            return Err(lost(Lost::StreamEnded));
        };
        let unexpected = move |what| ClientError::Unexpected { job: job_id, what };
        match event {
            Event::Accepted(accepted) => {
                job_id = Some(accepted.job_id);
                if !accepted.values_token.is_empty() {
                    let (Ok(token), Some(values)) =
                        (Token::try_from(&accepted.values_token[..]), values)
                    else {
                        return Err(ClientError::Unexpected {
                            job: job_id,
                            what: Unexpected::ValueConnection,
                        });
                    };
                    values.open_connection(address, accepted.job_id, token, credential);
                    value_connection = true;
                }
            }
            Event::Progress(_) => {}
            Event::Values(batch) => {
                if batch.offset != next_offset || payload.len() % 8 != 0 {
                    return Err(unexpected(Unexpected::ValuesOutOfPlace {
                        offset: batch.offset,
                        bytes: payload.len(),
                        due: next_offset,
                    }));
                }
                next_offset += payload.len() as u64 / 8;
                let Some(values) = values else {
                    return Err(unexpected(Unexpected::UnaskedValues));
                };
                if !values.batch(payload).await {
                    return Err(ClientError::OutputStopped { job: job_id });
                }
            }
            Event::Finished(finished) => {
                // Values on a value connection are counted by the writer.
                let received = (!value_connection).then_some(next_offset);
                return finished_report(job_id, finished, request, received);
            }
        }
    }
}

/// Completes once `values`' writer has stopped; never without one.
async fn writer_stopped(values: Option<&OutputWriter>) {
    match values {
        Some(values) => values.stopped().await,
        None => std::future::pending().await,
    }
}

fn finished_report(
    job_id: Option<u64>,
    finished: v1::JobFinished,
    request: &JobRequest,
    values_received: Option<u64>,
) -> Result<JobReport, ClientError> {
    let unexpected = |what| ClientError::Unexpected { job: job_id, what };
    let summary: Summary = finished
        .summary
        .ok_or_else(|| unexpected(Unexpected::NoSummary))?
        .try_into()
        .map_err(|e| unexpected(Unexpected::Digest(e)))?;
    if summary.n != request.n {
        return Err(unexpected(Unexpected::SummaryCount {
            summarized: summary.n,
            n: request.n,
        }));
    }
    if let Some(received) = values_received
        && request.stream_values
        && received != request.n
    {
        return Err(unexpected(Unexpected::ValueCount {
            received,
            n: request.n,
        }));
    }
    let stats = finished.stats.unwrap_or_default();
    Ok(JobReport {
        job_id: job_id.ok_or_else(|| unexpected(Unexpected::NeverAccepted))?,
        summary,
        chunks: stats.chunks,
        workers: stats.workers,
        attempts: stats.attempts,
    })
}

/// The cluster's workers and counters.
pub async fn cluster_status(
    connection: Connection,
    address: &str,
) -> Result<v1::GetClusterStatusResponse, ClientError> {
    let mut client = JobServiceClient::new(connection);
    let request = v1::GetClusterStatusRequest {
        protocol_version: PROTOCOL_VERSION,
    };
    unary(address, client.get_cluster_status(request)).await
}

/// One job's status, running or recently ended.
pub async fn job_status(
    connection: Connection,
    address: &str,
    job_id: u64,
) -> Result<v1::GetJobStatusResponse, ClientError> {
    let mut client = JobServiceClient::new(connection);
    let request = v1::GetJobStatusRequest {
        protocol_version: PROTOCOL_VERSION,
        job_id,
    };
    unary(address, client.get_job_status(request)).await
}

/// Whether the gRPC health service at `address` reports SERVING.
pub async fn serving(connection: Connection, address: &str) -> Result<bool, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(connection);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = opened(address, answer(client.check(request))).await?;
    Ok(response.status == ServingStatus::Serving as i32)
}

/// The answer to a call, or farm's error for it: bounded by
/// [`OPEN_TIMEOUT`] (a peer that accepts connections but never answers).
async fn opened<T>(
    address: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(OPEN_TIMEOUT, call)
        .await
        .map_err(|_| ClientError::Unreachable {
            address: address.to_owned(),
            cause: Unreachable::NoAnswer(OPEN_TIMEOUT),
        })?
        .map_err(|s| ClientError::from_status(s, address, None))
}

/// A tonic call's message.
async fn answer<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    call.await.map(tonic::Response::into_inner)
}

/// A unary call's answer, like [`opened`]; names a peer that is not a
/// coordinator.
async fn unary<T>(
    address: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, ClientError> {
    name_non_coordinator(opened(address, answer(call)).await, address).await
}

/// An unreachable coordinator may be something else answering on its
/// port: say so when it is.
async fn name_non_coordinator<T>(
    result: Result<T, ClientError>,
    address: &str,
) -> Result<T, ClientError> {
    match result {
        Err(err @ ClientError::Unreachable { .. }) => Err(explain_unreachable(err, address).await),
        other => other,
    }
}
