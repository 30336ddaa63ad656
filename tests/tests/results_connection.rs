//! Results connections (a worker's results with values on a TCP
//! connection of their own): the handshake and framing as the proto
//! describes them, driven by a hand-made worker, and what a connection
//! cut in the middle of a result does to the session and the job.

use std::time::Duration;

use farm_catalog::grid::LEAF_LEN;
use farm_catalog::{Function, evaluate};
use farm_net::side_connection::{ACCEPTED, Hello, Purpose, result_head};
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::job_service_client::JobServiceClient;
use farm_proto::v1::submit_job_response::Event;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::v1::worker_service_client::WorkerServiceClient;
use farm_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION, v1};
use farm_tests::cluster::TestCluster;
use farm_tests::reference;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Long enough for any step of these tests on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A worker made by hand: its session's two directions.
struct HandWorker {
    outbox: mpsc::Sender<v1::WorkerMessage>,
    inbound: Streaming<v1::CoordinatorMessage>,
    welcome: v1::Welcome,
}

impl HandWorker {
    async fn connect(cluster: &TestCluster) -> HandWorker {
        let (outbox, requests) = mpsc::channel(16);
        let hello = Outgoing::Hello(v1::WorkerHello {
            protocol_version: PROTOCOL_VERSION,
            name: "by hand".into(),
            threads: 1,
        });
        outbox
            .send(v1::WorkerMessage { kind: Some(hello) })
            .await
            .expect("queue the hello");
        let mut client = WorkerServiceClient::new(cluster.channel());
        let mut inbound = client
            .session(ReceiverStream::new(requests))
            .await
            .expect("a session")
            .into_inner();
        let Some(Incoming::Welcome(welcome)) = next(&mut inbound).await else {
            panic!("the session did not open with a welcome");
        };
        HandWorker {
            outbox,
            inbound,
            welcome,
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            purpose: Purpose::ChunkResults,
            id: self.welcome.worker_id,
            token: (&self.welcome.results_token[..])
                .try_into()
                .expect("a results connection offered, with a 16-byte token"),
            credential: None,
        }
    }

    async fn pull_one(&mut self) -> v1::ChunkLease {
        self.pull(1).await.remove(0)
    }

    /// Asks for `count` leases and waits until they are all granted.
    async fn pull(&mut self, count: u32) -> Vec<v1::ChunkLease> {
        self.send(Outgoing::Pull(v1::PullRequest { slots: count }))
            .await;
        let mut leases = Vec::new();
        while leases.len() < count as usize {
            if let Some(Incoming::Grant(grant)) = next(&mut self.inbound).await {
                leases.extend(grant.leases);
            }
        }
        leases
    }

    async fn send(&self, kind: Outgoing) {
        self.outbox
            .send(v1::WorkerMessage { kind: Some(kind) })
            .await
            .expect("the session takes the message");
    }
}

async fn next(inbound: &mut Streaming<v1::CoordinatorMessage>) -> Option<Incoming> {
    tokio::time::timeout(STEP_TIMEOUT, inbound.message())
        .await
        .expect("the coordinator answers in time")
        .expect("the session goes on")
        .and_then(|message| message.kind)
}

/// The lease's result, its values apart.
fn compute(lease: &v1::ChunkLease) -> (v1::ChunkResult, Vec<u8>) {
    let range = lease.offset..lease.offset + lease.len;
    let output = evaluate(Function::Sqrt, lease.job_start, range, true).expect("computed");
    let values: Vec<u8> = output
        .values
        .expect("values")
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let summary = output.summary;
    let result = v1::ChunkResult {
        token: lease.token,
        leaf_sums: summary.leaf_sums,
        leaf_digests: summary.leaf_digests.into(),
        min: summary.min,
        max: summary.max,
        values_le: Default::default(),
        compute_us: 1000,
    };
    (result, values)
}

/// Submits a job whose values come in its stream, in chunks of
/// `chunk_size`.
async fn submit(
    cluster: &TestCluster,
    n: u64,
    chunk_size: u64,
) -> Streaming<v1::SubmitJobResponse> {
    let request = v1::SubmitJobRequest {
        wasm_module: Default::default(),
        protocol_version: PROTOCOL_VERSION,
        function: "sqrt".into(),
        start: 0,
        n,
        chunk_size,
        stream_values: true,
        values_connection: false,
    };
    JobServiceClient::new(cluster.channel())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .submit_job(request)
        .await
        .expect("submitted")
        .into_inner()
}

/// The job's values and the digest it finished with.
async fn outcome(stream: &mut Streaming<v1::SubmitJobResponse>) -> (Vec<u8>, Vec<u8>) {
    let mut values = Vec::new();
    loop {
        let message = tokio::time::timeout(STEP_TIMEOUT, stream.message())
            .await
            .expect("the job goes on")
            .expect("the job does not fail");
        match message.and_then(|m| m.event) {
            Some(Event::Values(batch)) => values.extend_from_slice(&batch.values_le),
            Some(Event::Finished(finished)) => {
                let digest = finished.summary.expect("a summary").digest.to_vec();
                return (values, digest);
            }
            Some(_) => {}
            None => panic!("the job's stream ended without an outcome"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_on_the_connection_the_welcome_offers() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let mut worker = HandWorker::connect(&cluster).await;
    let hello = worker.hello();

    // A wrong token, another worker's id, and the right token for another
    // purpose are refused without a word.
    for wrong in [
        Hello {
            token: [7; 16],
            ..hello
        },
        Hello {
            id: hello.id + 1,
            ..hello
        },
        Hello {
            purpose: Purpose::JobValues,
            ..hello
        },
    ] {
        assert_eq!(cluster.side_connection(wrong).await.1, None, "{wrong:?}");
    }
    let (mut connection, answer) = cluster.side_connection(hello).await;
    assert_eq!(answer, Some(ACCEPTED));

    let n = 1_000_003;
    let mut job = submit(&cluster, n, n).await;
    let lease = worker.pull_one().await;
    assert_eq!((lease.offset, lease.len), (0, n));
    let (result, values) = compute(&lease);
    connection
        .write_all(&result_head(&result, values.len()))
        .await
        .expect("send the result's head");
    // In pieces, so the coordinator's pipes fill from several reads.
    for piece in values.chunks(100_003) {
        connection.write_all(piece).await.expect("send values");
    }

    let (received, digest) = outcome(&mut job).await;
    assert!(received == reference::bytes(Function::Sqrt, 0, n));
    assert_eq!(digest, reference::summary(Function::Sqrt, 0, n).digest.0);
    // The token was used up.
    assert_eq!(cluster.side_connection(hello).await.1, None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_connection_cut_mid_result_ends_the_session_and_the_chunk_is_redone() {
    let mut cluster = TestCluster::builder().workers(0).start().await;
    let mut worker = HandWorker::connect(&cluster).await;
    let (mut connection, answer) = cluster.side_connection(worker.hello()).await;
    assert_eq!(answer, Some(ACCEPTED));

    let n = 500_000;
    let mut job = submit(&cluster, n, n).await;
    let lease = worker.pull_one().await;
    let (result, values) = compute(&lease);
    connection
        .write_all(&result_head(&result, values.len()))
        .await
        .expect("send the result's head");
    connection
        .write_all(&values[..values.len() / 2])
        .await
        .expect("send half the values");
    drop(connection);

    // The coordinator ends the session...
    let ended = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Ok(Some(_)) = worker.inbound.message().await {}
    });
    ended.await.expect("the session ends");
    // ...and a real worker computes the chunk instead.
    cluster.add_worker();
    let (received, digest) = outcome(&mut job).await;
    assert!(received == reference::bytes(Function::Sqrt, 0, n));
    assert_eq!(digest, reference::summary(Function::Sqrt, 0, n).digest.0);
    let status = cluster.status().await;
    assert_eq!(status.workers.len(), 1, "only the real worker is left");
    assert_eq!(status.counters.expect("counters").leases_granted, 2);
    cluster.shutdown().await;
}

/// Sends a result and its values on a results connection.
async fn send_result(connection: &mut TcpStream, result: &v1::ChunkResult, values: &[u8]) {
    connection
        .write_all(&result_head(result, values.len()))
        .await
        .expect("send the result's head");
    connection.write_all(values).await.expect("send the values");
}

/// A worker that announced its drain and then sends several results with
/// values, on its results connection and in its session, among them a
/// stale one carrying another chunk's values and one whose values do not
/// fit its chunk: the client gets exactly the values of the results that
/// were accepted, each at its chunk's place; the stale result is dropped
/// whole, and the misfit one's chunk is leased again, never merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_after_a_drain_notice_reach_the_client_only_as_accepted() {
    let mut cluster = TestCluster::builder().workers(0).start().await;
    let mut worker = HandWorker::connect(&cluster).await;
    let (mut connection, answer) = cluster.side_connection(worker.hello()).await;
    assert_eq!(answer, Some(ACCEPTED));

    let chunk = LEAF_LEN * 64;
    let n = 4 * chunk;
    let mut job = submit(&cluster, n, chunk).await;
    let mut leases = worker.pull(4).await;
    leases.sort_by_key(|lease| lease.offset);
    let offsets: Vec<u64> = leases.iter().map(|lease| lease.offset).collect();
    assert_eq!(offsets, [0, chunk, 2 * chunk, 3 * chunk]);
    let computed: Vec<_> = leases.iter().map(compute).collect();
    let token = |i: usize| leases[i].token.expect("a token");

    worker.send(Outgoing::Drain(v1::DrainNotice {})).await;
    worker
        .send(Outgoing::Returned(v1::ReturnLeases {
            tokens: vec![token(3)],
        }))
        .await;
    // Chunk 2 in the session, out of order.
    let (result, values) = &computed[2];
    let in_session = v1::ChunkResult {
        values_le: values.clone().into(),
        ..result.clone()
    };
    worker.send(Outgoing::Result(in_session)).await;
    // Chunk 0 under an attempt it was never leased with, carrying chunk
    // 1's values (of the same length): stale.
    let stale = v1::ChunkResult {
        token: Some(v1::LeaseToken {
            attempt: token(0).attempt + 1,
            ..token(0)
        }),
        ..computed[0].0.clone()
    };
    send_result(&mut connection, &stale, &computed[1].1).await;
    // Chunk 1 with one value too few: malformed.
    let (result, values) = &computed[1];
    send_result(&mut connection, result, &values[8..]).await;
    // Chunk 0 as leased.
    let (result, values) = &computed[0];
    send_result(&mut connection, result, values).await;
    connection
        .shutdown()
        .await
        .expect("close the results connection");
    drop(connection);
    // Every result is read before the session closes, so none depends on
    // how long the coordinator waits for a closing results connection.
    farm_tests::wait_until("the results to be read", STEP_TIMEOUT, || async {
        let counters = cluster.status().await.counters.expect("counters");
        counters.results_accepted == 2
            && counters.results_rejected_stale == 1
            && counters.chunk_failures == 1
    })
    .await;

    // The results connection ends before the session, as a worker's does.
    let HandWorker {
        outbox,
        mut inbound,
        ..
    } = worker;
    drop(outbox);
    let ended = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Ok(Some(_)) = inbound.message().await {}
    });
    ended.await.expect("the session ends");

    // A real worker does the chunks left: 1 (malformed) and 3 (returned).
    cluster.add_worker();
    let (received, digest) = outcome(&mut job).await;
    assert!(
        received == reference::bytes(Function::Sqrt, 0, n),
        "the client's values differ from the reference"
    );
    assert_eq!(digest, reference::summary(Function::Sqrt, 0, n).digest.0);
    let counters = cluster.status().await.counters.expect("counters");
    assert_eq!(
        (
            counters.results_accepted,
            counters.results_rejected_stale,
            counters.chunk_failures,
            counters.leases_returned,
            counters.retries,
        ),
        (4, 1, 1, 1, 1),
        "{counters:?}"
    );
    // The hand worker's 4, then chunks 1 and 3 again.
    assert_eq!(counters.leases_granted, 6, "{counters:?}");
    cluster.shutdown().await;
}

/// A worker that breaks the protocol is told so: its session ends with
/// INVALID_ARGUMENT naming the breach, not with OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_breach_ends_the_session_with_invalid_argument() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name: "again".into(),
        threads: 1,
    });
    let failure = Outgoing::Failure(v1::ChunkFailure {
        token: None,
        message: "boom".into(),
        retryable: true,
    });
    let cases = [
        (
            Some(hello),
            "protocol breach: a second hello in one session",
        ),
        (None, "protocol breach: an empty worker message"),
        (
            Some(failure),
            "protocol breach: a failure without a lease token",
        ),
    ];
    for (kind, expected) in cases {
        let mut worker = HandWorker::connect(&cluster).await;
        worker
            .outbox
            .send(v1::WorkerMessage { kind })
            .await
            .expect("send the breach");
        let status = loop {
            let message = tokio::time::timeout(STEP_TIMEOUT, worker.inbound.message())
                .await
                .expect("the coordinator answers in time");
            match message {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{expected}: the session ended with OK"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), expected);
    }
}

/// What a worker says about a failure reaches the job's client escaped:
/// a newline or an escape sequence cannot forge a line on its terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_message_reaches_the_client_escaped() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let mut worker = HandWorker::connect(&cluster).await;
    let mut job = submit(&cluster, 4096, 4096).await;
    let lease = worker.pull_one().await;
    let failure = Outgoing::Failure(v1::ChunkFailure {
        token: lease.token,
        message: "boom\nINFO job finished\u{1b}[2J".into(),
        retryable: false,
    });
    worker
        .outbox
        .send(v1::WorkerMessage {
            kind: Some(failure),
        })
        .await
        .expect("send the failure");
    let status = loop {
        let message = tokio::time::timeout(STEP_TIMEOUT, job.message())
            .await
            .expect("the job ends in time");
        match message {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the job ended without its failure"),
            Err(status) => break status,
        }
    };
    assert!(
        status
            .message()
            .contains("boom\\u{a}INFO job finished\\u{1b}[2J"),
        "{status:?}"
    );
    assert!(!status.message().contains(['\n', '\u{1b}']), "{status:?}");
}

/// A function name of 100 KB is refused as invalid, echoed as a short
/// prefix (it used to overflow the status and come back as
/// RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_function_name_is_refused_with_a_short_echo() {
    let status = refused_submit("f".repeat(100_000), Vec::new()).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "unknown function '{}… (100000 bytes)' (known functions: sqrt)",
            "f".repeat(100)
        )
    );
}

/// Submits a 10-element job of `function` (with `wasm_module`, if any)
/// straight to a coordinator with no workers; the refusal.
async fn refused_submit(function: String, wasm_module: Vec<u8>) -> tonic::Status {
    let cluster = TestCluster::builder().workers(0).start().await;
    let request = v1::SubmitJobRequest {
        wasm_module: wasm_module.into(),
        protocol_version: PROTOCOL_VERSION,
        function,
        start: 0,
        n: 10,
        chunk_size: 0,
        stream_values: false,
        values_connection: false,
    };
    JobServiceClient::new(cluster.channel())
        .submit_job(request)
        .await
        .expect_err("refused")
}

/// A WebAssembly module (bytes as sent) whose one import is a function
/// `m::<name>` of type `() -> ()`.
fn module_importing(name: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len(), out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // One type: a function of no parameters and no results.
    section(1, &[1, 0x60, 0, 0], &mut module);
    let mut imports = vec![1, 1, b'm'];
    leb(name.len(), &mut imports);
    imports.extend_from_slice(name);
    imports.extend_from_slice(&[0x00, 0]);
    section(2, &imports, &mut module);
    module
}

/// A module refused for what it names (its imports) is refused as
/// invalid, its names escaped and cut short: a client's 100 KB name is
/// not echoed whole (wasmparser takes names up to 100,000 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_modules_names_are_echoed_short_and_escaped() {
    let name = format!("\n\u{1b}[2J{}", "i".repeat(90_000));
    let status = refused_submit("f.wasm".into(), module_importing(name.as_bytes())).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(
        message.starts_with("WebAssembly module refused: module imports m::\\u{a}\\u{1b}[2Jiii"),
        "{message}"
    );
    assert!(message.ends_with(" bytes)"), "{message}");
    assert!(message.len() < 3000, "{} bytes", message.len());
}
