//! Value connections (a job's values on a TCP connection of their own):
//! the handshake as the proto describes it, refusals, the fallback to the
//! job's stream, and farm's client using them.

use std::time::Duration;

use farm_catalog::Function;
use farm_cli::client::JobRequest;
use farm_coordinator::CoordinatorConfig;
use farm_net::side_connection::{ACCEPTED, Hello, Purpose, Token};
use farm_proto::v1::job_service_client::JobServiceClient;
use farm_proto::v1::submit_job_response::Event;
use farm_proto::{PROTOCOL_VERSION, v1};
use farm_tests::cluster::TestCluster;
use farm_tests::reference;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Streaming;

/// Long enough for any step of these tests on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A cluster of two workers whose jobs wait `value_connection_wait` for
/// their client's value connection.
async fn cluster_waiting(value_connection_wait: Duration) -> TestCluster {
    let config = CoordinatorConfig {
        value_connection_wait,
        ..CoordinatorConfig::default()
    };
    TestCluster::builder()
        .workers(2)
        .config(config)
        .start()
        .await
}

fn job(start: u64, n: u64, stream_values: bool) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start,
        n,
        chunk_size: None,
        stream_values,
        values_connection: stream_values,
        wasm_module: bytes::Bytes::new(),
    }
}

/// Submits a streaming job asking for a value connection, with the
/// generated (tonic) client; returns the stream and the hello that claims
/// the job's connection (its id and 16-byte token).
async fn submit(cluster: &TestCluster, n: u64) -> (Streaming<v1::SubmitJobResponse>, Hello) {
    let mut client = JobServiceClient::new(cluster.channel());
    let request = v1::SubmitJobRequest {
        protocol_version: PROTOCOL_VERSION,
        function: "sqrt".into(),
        start: 0,
        n,
        chunk_size: 0,
        stream_values: true,
        values_connection: true,
        wasm_module: Default::default(),
    };
    let mut stream = client
        .submit_job(request)
        .await
        .expect("submitted")
        .into_inner();
    let first = stream.message().await.expect("a first event");
    let Some(v1::SubmitJobResponse {
        event: Some(Event::Accepted(accepted)),
    }) = first
    else {
        panic!("the stream did not open with `accepted`: {first:?}");
    };
    let token: Token = (&accepted.values_token[..])
        .try_into()
        .expect("a value connection offered, with a 16-byte token");
    let hello = Hello {
        purpose: Purpose::JobValues,
        id: accepted.job_id,
        token,
        credential: None,
    };
    (stream, hello)
}

async fn open(cluster: &TestCluster, hello: Hello) -> TcpStream {
    let mut stream = TcpStream::connect(cluster.address())
        .await
        .expect("connect");
    stream
        .write_all(&hello.encode())
        .await
        .expect("send the hello");
    stream
}

/// Everything a connection sends until it closes.
async fn read_all(connection: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, connection.read_to_end(&mut received))
        .await
        .expect("the connection ends in time")?;
    Ok(received)
}

/// The coordinator closes a refused value connection without a word.
async fn assert_refused(cluster: &TestCluster, hello: Hello) {
    let answer = read_all(&mut open(cluster, hello).await).await;
    assert!(
        matches!(&answer, Ok(bytes) if bytes.is_empty()),
        "{:?} {}: {answer:?}",
        hello.purpose,
        hello.id
    );
}

/// Reads to the end of the stream: `(values, Finished or an error)`.
async fn rest_of(
    stream: &mut Streaming<v1::SubmitJobResponse>,
) -> (Vec<u8>, Result<(), tonic::Status>) {
    let mut values = Vec::new();
    loop {
        let message = tokio::time::timeout(STEP_TIMEOUT, stream.message())
            .await
            .expect("the stream goes on");
        match message {
            Ok(Some(v1::SubmitJobResponse {
                event: Some(Event::Values(batch)),
            })) => values.extend_from_slice(&batch.values_le),
            Ok(Some(v1::SubmitJobResponse {
                event: Some(Event::Finished(_)),
            })) => return (values, Ok(())),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an outcome"),
            Err(status) => return (values, Err(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_on_the_connection_the_token_claims() {
    let cluster = cluster_waiting(STEP_TIMEOUT * 3).await;
    let n = 3_000_001;
    let (mut stream, hello) = submit(&cluster, n).await;

    // A wrong token, a right token for another job, and a right token
    // for another purpose are refused.
    assert_refused(
        &cluster,
        Hello {
            token: [0u8; 16],
            ..hello
        },
    )
    .await;
    assert_refused(
        &cluster,
        Hello {
            id: hello.id + 1,
            ..hello
        },
    )
    .await;
    assert_refused(
        &cluster,
        Hello {
            purpose: Purpose::ChunkResults,
            ..hello
        },
    )
    .await;

    let mut connection = open(&cluster, hello).await;
    let received = read_all(&mut connection)
        .await
        .expect("read the value connection");
    assert_eq!(received.first(), Some(&ACCEPTED));
    assert!(
        received[1..] == reference::bytes(Function::Sqrt, 0, n),
        "{} bytes after the answer, not the job's values",
        received.len() - 1
    );
    let (in_stream, outcome) = rest_of(&mut stream).await;
    assert!(in_stream.is_empty(), "values also came in the stream");
    outcome.expect("the job finished");

    // The token was used up.
    assert_refused(&cluster, hello).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connection_the_values_come_in_the_stream() {
    let cluster = cluster_waiting(Duration::from_millis(200)).await;
    let n = 2_000_003;
    // `submit` checks that a value connection was offered.
    let (mut stream, _) = submit(&cluster, n).await;
    let (values, outcome) = rest_of(&mut stream).await;
    outcome.expect("the job finished");
    assert!(values == reference::bytes(Function::Sqrt, 0, n));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_connection_closed_early_cancels_the_job_with_a_reason() {
    let cluster = cluster_waiting(STEP_TIMEOUT * 3).await;
    let (mut stream, hello) = submit(&cluster, 2_000_000_000).await;
    let job_id = hello.id;
    let mut connection = open(&cluster, hello).await;
    let mut first = [0u8; 4096];
    tokio::time::timeout(STEP_TIMEOUT, connection.read_exact(&mut first))
        .await
        .expect("values arrive")
        .expect("read");
    drop(connection);
    let (_, outcome) = rest_of(&mut stream).await;
    let status = outcome.expect_err("the job cannot finish");
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "job {job_id} was cancelled: its value connection closed"
        )),
        "{}",
        status.message()
    );
    let run = cluster
        .run(&job(0, 1000, false))
        .await
        .expect("the cluster keeps serving");
    assert_eq!(run.report.summary.n, 1000);
    cluster.shutdown().await;
}

/// farm's own client opens the connection and splices the values into
/// its output: with a wait longer than the test's timeout, a client that
/// fell back to the stream would fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_takes_its_values_on_a_value_connection() {
    let cluster = cluster_waiting(STEP_TIMEOUT * 3).await;
    for (start, n) in [(0, 1), (7, 4_000_037), (1 << 40, 1_048_576)] {
        let run = tokio::time::timeout(STEP_TIMEOUT, cluster.run(&job(start, n, true)))
            .await
            .unwrap_or_else(|_| panic!("start={start} n={n}: no values within {STEP_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("start={start} n={n}: {e}"));
        assert!(
            run.values == reference::bytes(Function::Sqrt, start, n),
            "start={start} n={n}"
        );
        assert!(
            run.report
                .summary
                .bit_identical(&reference::summary(Function::Sqrt, start, n))
        );
    }
    cluster.shutdown().await;
}

/// Something that is neither HTTP/2 nor a value connection is turned
/// away (by the HTTP/2 server, or by the value connection's check of its
/// hello), and the port goes on serving both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_port_do_not_disturb_it() {
    let cluster = TestCluster::builder().workers(1).start().await;
    for greeting in [
        &b"FARMVAL9 and then some more bytes"[..],
        b"FARMVAL2 too short",
    ] {
        let mut stranger = TcpStream::connect(cluster.address())
            .await
            .expect("connect");
        stranger.write_all(greeting).await.expect("write");
        stranger.shutdown().await.expect("end the greeting");
        // Closed, or reset for the bytes it left unread: turned away.
        match read_all(&mut stranger).await {
            Ok(answer) => assert_ne!(answer.first(), Some(&ACCEPTED), "{greeting:?} was accepted"),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    let silent = TcpStream::connect(cluster.address())
        .await
        .expect("connect");
    let (mut stream, hello) = submit(&cluster, 1000).await;
    let mut connection = open(&cluster, hello).await;
    let received = read_all(&mut connection)
        .await
        .expect("read the value connection");
    assert_eq!(received.len(), 1 + 8000);
    rest_of(&mut stream).await.1.expect("the job finished");
    drop(silent);
    cluster.shutdown().await;
}
