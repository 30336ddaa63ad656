//! Members only: on a coordinator with a cluster secret, each role's
//! token is admitted where it belongs and refused where it does not, on
//! every gRPC method and on the value and results connections; the
//! health service stays open; with no secret everything works as before.

use std::time::Duration;

use farm_catalog::Function;
use farm_cli::client::{self, ClientError, JobRequest};
use farm_cli::exit::{CommandError, UNAUTHENTICATED};
use farm_net::auth::{ClusterSecret, Role, RoleToken};
use farm_net::side_connection::{self, ACCEPTED, Hello, Purpose, Token};
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::job_service_client::JobServiceClient;
use farm_proto::v1::submit_job_response::Event;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::v1::worker_service_client::WorkerServiceClient;
use farm_proto::{PROTOCOL_VERSION, v1};
use farm_tests::cluster::{TestCluster, run_on};
use farm_tests::reference;
use farm_worker::{WorkerConfig, WorkerError};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Long enough for any step of these tests on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

const MISSING_CLIENT: &str = "this coordinator requires a client token: pass --token-file FILE or set FARM_TOKEN_FILE (or FARM_TOKEN) to the cluster's client token (`farm token client SECRET_FILE` makes it from the coordinator's secret)";
const WRONG_CLIENT: &str = "this coordinator refused the client token given: pass the cluster's client token with --token-file FILE or FARM_TOKEN_FILE (or FARM_TOKEN); `farm token client SECRET_FILE` makes it from the coordinator's secret";
const MISSING_WORKER: &str = "this coordinator requires a worker token: pass --token-file FILE or set FARM_TOKEN_FILE (or FARM_TOKEN) to the cluster's worker token (`farm token worker SECRET_FILE` makes it from the coordinator's secret)";
const WRONG_WORKER: &str = "this coordinator refused the worker token given: pass the cluster's worker token with --token-file FILE or FARM_TOKEN_FILE (or FARM_TOKEN); `farm token worker SECRET_FILE` makes it from the coordinator's secret";

async fn members_cluster(workers: usize) -> (TestCluster, ClusterSecret) {
    let secret = ClusterSecret::random().expect("randomness");
    let cluster = TestCluster::builder()
        .workers(workers)
        .secret(secret.clone())
        .start()
        .await;
    (cluster, secret)
}

fn job(n: u64, stream_values: bool) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start: 0,
        n,
        chunk_size: None,
        stream_values,
        values_connection: stream_values,
        wasm_module: bytes::Bytes::new(),
    }
}

/// Asserts `err` is the refusal with `message`, and exits `farm` with
/// the unauthenticated code.
fn assert_unauthenticated(err: ClientError, message: &str) {
    assert!(
        matches!(err, ClientError::Unauthenticated { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), message);
    assert_eq!(CommandError::Client(err).exit_code(), UNAUTHENTICATED);
}

/// Every client method, called with `token`: the error of each.
async fn client_calls(cluster: &TestCluster, token: Option<RoleToken>) -> Vec<ClientError> {
    let address = cluster.address();
    let request = job(5000, false);
    let submitted = client::run_job(cluster.connection(token), &address, &request, None);
    let status = client::cluster_status(cluster.connection(token), &address);
    let job_status = client::job_status(cluster.connection(token), &address, 1);
    vec![
        tokio::time::timeout(STEP_TIMEOUT, submitted)
            .await
            .expect("submit answers in time")
            .expect_err("submit refused"),
        tokio::time::timeout(STEP_TIMEOUT, status)
            .await
            .expect("cluster status answers in time")
            .expect_err("cluster status refused"),
        tokio::time::timeout(STEP_TIMEOUT, job_status)
            .await
            .expect("job status answers in time")
            .expect_err("job status refused"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_methods_want_the_client_token() {
    let (cluster, secret) = members_cluster(1).await;
    for err in client_calls(&cluster, None).await {
        assert_unauthenticated(err, MISSING_CLIENT);
    }
    let other_cluster = ClusterSecret::random().expect("randomness");
    for wrong in [
        secret.token(Role::Worker),
        other_cluster.token(Role::Client),
    ] {
        for err in client_calls(&cluster, Some(wrong)).await {
            assert_unauthenticated(err, WRONG_CLIENT);
        }
    }
    // The client token: every method answers.
    let run = cluster
        .run(&job(3_000_017, true))
        .await
        .expect("the job runs");
    assert!(run.values == reference::bytes(Function::Sqrt, 0, 3_000_017));
    assert!(
        run.report
            .summary
            .bit_identical(&reference::summary(Function::Sqrt, 0, 3_000_017))
    );
    assert_eq!(cluster.status().await.workers.len(), 1);
    assert_eq!(
        cluster.job_status(run.report.job_id).await.job_id,
        run.report.job_id
    );
    cluster.shutdown().await;
}

/// Runs a worker presenting `token` until it stops by itself.
async fn worker_refused(cluster: &TestCluster, token: Option<RoleToken>) -> String {
    let config = WorkerConfig::new(cluster.address());
    let drain = CancellationToken::new();
    let ran = tokio::time::timeout(
        STEP_TIMEOUT,
        farm_worker::run(config, cluster.connection(token), drain),
    )
    .await
    .expect("a refused worker stops at once");
    match ran {
        Err(WorkerError::Unauthenticated { reason, .. }) => reason,
        other => panic!("expected a refused token, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_session_wants_the_worker_token() {
    let (mut cluster, secret) = members_cluster(0).await;
    assert_eq!(worker_refused(&cluster, None).await, MISSING_WORKER);
    let other_cluster = ClusterSecret::random().expect("randomness");
    for wrong in [
        secret.token(Role::Client),
        other_cluster.token(Role::Worker),
    ] {
        assert_eq!(worker_refused(&cluster, Some(wrong)).await, WRONG_WORKER);
    }
    assert_eq!(
        cluster.status().await.workers.len(),
        0,
        "no refused worker joined"
    );
    // The worker token: it joins, and computes.
    cluster.add_worker();
    cluster.wait_for_workers(1).await;
    let run = cluster
        .run(&job(1_000_000, false))
        .await
        .expect("the job runs");
    assert_eq!(
        run.report.summary.digest,
        reference::summary(Function::Sqrt, 0, 1_000_000).digest
    );
    cluster.shutdown().await;
}

fn credential(token: &RoleToken) -> Option<[u8; 32]> {
    Some(*token.bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_connection_wants_the_client_token() {
    let (cluster, secret) = members_cluster(1).await;
    let mut jobs = JobServiceClient::new(cluster.client_connection());
    let n = 100_000;
    let request = v1::SubmitJobRequest {
        protocol_version: PROTOCOL_VERSION,
        function: "sqrt".into(),
        n,
        stream_values: true,
        values_connection: true,
        ..Default::default()
    };
    let mut stream = jobs
        .submit_job(request)
        .await
        .expect("submitted")
        .into_inner();
    let Some(v1::SubmitJobResponse {
        event: Some(Event::Accepted(accepted)),
    }) = stream.message().await.expect("a first event")
    else {
        panic!("the stream did not open with `accepted`");
    };
    let token: Token = (&accepted.values_token[..])
        .try_into()
        .expect("a 16-byte token");
    let hello = Hello {
        purpose: Purpose::JobValues,
        id: accepted.job_id,
        token,
        credential: credential(&secret.token(Role::Client)),
    };
    let other_cluster = ClusterSecret::random().expect("randomness");
    for wrong in [
        None,
        credential(&secret.token(Role::Worker)),
        credential(&other_cluster.token(Role::Client)),
    ] {
        let refused = Hello {
            credential: wrong,
            ..hello
        };
        let (_, answer) = cluster.side_connection(refused).await;
        assert_eq!(answer, Some(side_connection::UNAUTHENTICATED), "{wrong:?}");
    }
    // A refused hello does not use up the offer: the right one claims it.
    let (mut connection, answer) = cluster.side_connection(hello).await;
    assert_eq!(answer, Some(ACCEPTED));
    let mut values = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, connection.read_to_end(&mut values))
        .await
        .expect("the values in time")
        .expect("read the values");
    assert!(values == reference::bytes(Function::Sqrt, 0, n));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_connection_wants_the_worker_token() {
    let (cluster, secret) = members_cluster(0).await;
    let (outbox, requests) = tokio::sync::mpsc::channel(4);
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name: "by hand".into(),
        threads: 1,
    });
    outbox
        .send(v1::WorkerMessage { kind: Some(hello) })
        .await
        .expect("queue the hello");
    let mut workers =
        WorkerServiceClient::new(cluster.connection(Some(secret.token(Role::Worker))));
    let mut inbound = workers
        .session(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("a session")
        .into_inner();
    let Some(v1::CoordinatorMessage {
        kind: Some(Incoming::Welcome(welcome)),
    }) = inbound.message().await.expect("a welcome")
    else {
        panic!("the session did not open with a welcome");
    };
    let hello = Hello {
        purpose: Purpose::ChunkResults,
        id: welcome.worker_id,
        token: (&welcome.results_token[..])
            .try_into()
            .expect("a 16-byte token"),
        credential: credential(&secret.token(Role::Worker)),
    };
    for wrong in [None, credential(&secret.token(Role::Client))] {
        let refused = Hello {
            credential: wrong,
            ..hello
        };
        let (_, answer) = cluster.side_connection(refused).await;
        assert_eq!(answer, Some(side_connection::UNAUTHENTICATED), "{wrong:?}");
    }
    let (_connection, answer) = cluster.side_connection(hello).await;
    assert_eq!(answer, Some(ACCEPTED));
    drop(outbox);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_to_all() {
    let (cluster, _) = members_cluster(0).await;
    let address = cluster.address();
    let serving = client::serving(cluster.connection(None), &address);
    assert!(serving.await.expect("health answers without a token"));
    cluster.shutdown().await;
}

/// With no secret, no token is needed, and one presented is not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_secret_everyone_is_let_in() {
    let cluster = TestCluster::builder().workers(1).start().await;
    let stray = ClusterSecret::random()
        .expect("randomness")
        .token(Role::Worker);
    let run = run_on(
        cluster.connection(Some(stray)),
        &cluster.address(),
        &job(2_000_000, true),
    )
    .await
    .expect("the job runs");
    assert!(run.values == reference::bytes(Function::Sqrt, 0, 2_000_000));
    cluster.shutdown().await;
}
