//! A real coordinator and three workers in this process, over loopback
//! gRPC: every output must equal the serial reference bit for bit.

use farm_catalog::Function;
use farm_catalog::grid::LEAF_LEN;
use farm_cli::client::JobRequest;
use farm_proto::v1::job_service_client::JobServiceClient;
use farm_proto::v1::worker_service_client::WorkerServiceClient;
use farm_proto::{PROTOCOL_VERSION, v1};
use farm_tests::cluster::{TestCluster, run_on};
use farm_tests::reference;
use farm_worker::WorkerConfig;
use tonic::Code;

fn request(start: u64, n: u64, chunk_size: Option<u64>, stream_values: bool) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start,
        n,
        chunk_size,
        stream_values,
        values_connection: stream_values,
        wasm_module: bytes::Bytes::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_equals_the_serial_reference() {
    let cluster = TestCluster::builder().workers(3).start().await;
    // (start, n, forced chunk size)
    let cases: [(u64, u64, Option<u64>); 8] = [
        (0, 0, None),
        (0, 1, None),
        (0, 7, None),
        (0, 1_000_003, None),
        (0, 10_000_000, None),
        (1_234_567_891, 1_000_003, None),
        (0, 1_000_003, Some(2_000_000)),
        (5, 10_000_000, Some(8192)),
    ];
    for (start, n, chunk_size) in cases {
        let expected_bytes = reference::bytes(Function::Sqrt, start, n);
        let expected = reference::summary(Function::Sqrt, start, n);

        let streamed = cluster
            .run(&request(start, n, chunk_size, true))
            .await
            .unwrap_or_else(|e| panic!("start={start} n={n}: {e}"));
        assert!(
            streamed.values == expected_bytes,
            "start={start} n={n} chunk={chunk_size:?}: values differ from the serial reference"
        );
        assert!(
            streamed.report.summary.bit_identical(&expected),
            "start={start} n={n}: {:?} != {expected:?}",
            streamed.report.summary
        );

        let in_stream = JobRequest {
            values_connection: false,
            wasm_module: bytes::Bytes::new(),
            ..request(start, n, chunk_size, true)
        };
        let in_stream = cluster
            .run(&in_stream)
            .await
            .unwrap_or_else(|e| panic!("start={start} n={n}, values in the stream: {e}"));
        assert!(
            in_stream.values == expected_bytes,
            "start={start} n={n} chunk={chunk_size:?}: values in the stream differ from the serial reference"
        );

        let summary_only = cluster
            .run(&request(start, n, chunk_size, false))
            .await
            .unwrap();
        assert!(summary_only.values.is_empty());
        assert!(summary_only.report.summary.bit_identical(&expected));

        match chunk_size {
            Some(2_000_000) => assert_eq!(streamed.report.chunks, 1, "one chunk"),
            Some(8192) => assert!(
                streamed.report.chunks > 1000,
                "{} chunks",
                streamed.report.chunks
            ),
            _ => {}
        }
    }
    let status = cluster.status().await;
    for worker in &status.workers {
        assert!(
            worker.chunks_completed > 0,
            "worker {} got no chunks",
            worker.name
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_does_not_depend_on_workers_or_chunking() {
    let n = 3_000_017;
    let expected = reference::summary(Function::Sqrt, 11, n);
    for (workers, chunk_size) in [(1, None), (2, Some(LEAF_LEN)), (3, Some(123_457))] {
        let cluster = TestCluster::builder().workers(workers).start().await;
        let run = cluster
            .run(&request(11, n, chunk_size, false))
            .await
            .unwrap();
        assert!(
            run.report.summary.bit_identical(&expected),
            "{workers} workers, chunk {chunk_size:?}"
        );
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_run_jobs_at_once() {
    let cluster = TestCluster::builder().workers(3).start().await;
    let address = cluster.address();
    let first = request(0, 4_000_000, Some(65_536), true);
    let second = request(77, 3_000_000, Some(65_536), false);
    let (a, b) = tokio::join!(
        run_on(cluster.channel().into(), &address, &first),
        run_on(cluster.channel().into(), &address, &second),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.report.job_id, b.report.job_id);
    assert!(a.values == reference::bytes(Function::Sqrt, 0, 4_000_000));
    assert!(
        a.report
            .summary
            .bit_identical(&reference::summary(Function::Sqrt, 0, 4_000_000))
    );
    assert!(
        b.report
            .summary
            .bit_identical(&reference::summary(Function::Sqrt, 77, 3_000_000))
    );
    let counters = counters(&cluster).await;
    assert_eq!((counters.jobs_submitted, counters.jobs_finished), (2, 2));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_hands_back_its_work_and_the_job_still_finishes() {
    drain_mid_job(false).await;
}

/// With values, a draining worker sends its last results on its results
/// connection and closes it before its session: none of them is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_loses_none_of_its_results_with_values() {
    drain_mid_job(true).await;
}

async fn counters(cluster: &TestCluster) -> v1::Counters {
    cluster.status().await.counters.expect("counters")
}

/// Drains the first of two workers mid-job, and checks that it handed
/// back the chunks it had not started, finished the one it was computing,
/// and left the rest of the job to the other worker.
///
/// Both compute each chunk 10 times slower (the test fault `slow=10`: the
/// compute thread sleeps), so the job lasts long enough for the drain to
/// land with most of it left; the drained worker holds four leases (one
/// computing, the others queued), so whenever the drain lands it has
/// unstarted ones to hand back. With values, chunks are of 8 MiB, so that
/// the draining worker is still sending its last result when it closes
/// its session.
async fn drain_mid_job(stream_values: bool) {
    let slow = |config: &mut WorkerConfig| {
        config.faults = "slow=10".parse().expect("a valid test fault");
    };
    let mut cluster = TestCluster::builder().workers(0).start().await;
    cluster.add_worker_with(|config| {
        slow(config);
        config.prefetch = 4;
    });
    cluster.add_worker_with(slow);
    cluster.wait_for_workers(2).await;
    let (drained, other) = ("test-worker-0", "test-worker-1");
    let n = 30_000_000;
    let job = request(0, n, Some(LEAF_LEN * 256), stream_values);
    let run = {
        let channel = cluster.channel();
        let address = cluster.address();
        tokio::spawn(async move { run_on(channel.into(), &address, &job).await })
    };
    farm_tests::wait_until(
        "the worker to be drained to hold a full prefetch",
        std::time::Duration::from_secs(10),
        || async { worker(&cluster.status().await, drained).is_some_and(|w| w.leases_held >= 3) },
    )
    .await;
    let job = cluster.job_status(1).await;
    assert_eq!(job.state(), v1::get_job_status_response::State::Running);
    assert!(job.elements_done < n / 2, "too late for a drain: {job:?}");
    let at_drain = cluster.status().await;

    cluster.drain_worker(0).await;
    assert!(!run.is_finished(), "the job ended before the drain did");
    let run = run
        .await
        .expect("the job's task")
        .expect("the job finished");
    assert!(
        run.report
            .summary
            .bit_identical(&reference::summary_blockwise(Function::Sqrt, 0, n))
    );
    if stream_values {
        assert!(run.values == reference::bytes(Function::Sqrt, 0, n));
    }
    let status = cluster.status().await;
    let counters = status.counters.expect("counters");
    // Only the drained worker hands leases back; none of its leases was
    // lost or expired, and every chunk was merged once.
    assert!(
        counters.leases_returned >= 1,
        "the drained worker handed nothing back: {counters:?}"
    );
    assert_eq!(
        (
            counters.results_rejected_stale,
            counters.leases_expired,
            counters.retries
        ),
        (0, 0, 0),
        "a drained worker's result was lost or late"
    );
    assert_eq!(counters.results_accepted, run.report.chunks, "{counters:?}");
    // It is gone, and the other worker computed the rest.
    assert!(worker(&status, drained).is_none(), "{status:?}");
    let completed = |s: &v1::GetClusterStatusResponse| worker(s, other).map(|w| w.chunks_completed);
    assert!(completed(&status) > completed(&at_drain), "{status:?}");
    cluster.shutdown().await;
}

/// The entry of the worker called `name`, if it is connected.
fn worker<'a>(
    status: &'a v1::GetClusterStatusResponse,
    name: &str,
) -> Option<&'a v1::WorkerStatus> {
    status.workers.iter().find(|w| w.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_revalidates_every_field() {
    let cluster = TestCluster::builder().workers(1).start().await;
    let good = v1::SubmitJobRequest {
        protocol_version: PROTOCOL_VERSION,
        function: "sqrt".into(),
        start: 0,
        n: 10,
        chunk_size: 0,
        stream_values: false,
        values_connection: false,
        wasm_module: Default::default(),
    };
    let cases: Vec<(v1::SubmitJobRequest, Code, &str)> = vec![
        (
            v1::SubmitJobRequest {
                function: "nope".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "unknown function 'nope' (known functions: sqrt)",
        ),
        (
            v1::SubmitJobRequest {
                n: u64::MAX,
                ..good.clone()
            },
            Code::InvalidArgument,
            "n = 18446744073709551615 is over this coordinator's limit",
        ),
        (
            v1::SubmitJobRequest {
                start: u64::MAX,
                ..good.clone()
            },
            Code::InvalidArgument,
            "runs past the largest index",
        ),
        (
            v1::SubmitJobRequest {
                chunk_size: u64::MAX,
                ..good.clone()
            },
            Code::InvalidArgument,
            "chunk_size = 18446744073709551615 is over the limit",
        ),
        (
            v1::SubmitJobRequest {
                protocol_version: 99,
                ..good.clone()
            },
            Code::FailedPrecondition,
            "the client speaks version 99, this coordinator speaks version 1",
        ),
    ];
    let mut client = JobServiceClient::new(cluster.channel());
    for (request, code, message) in cases {
        let status = client
            .submit_job(request)
            .await
            .expect_err("a bad request is refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(message),
            "'{}' lacks '{message}'",
            status.message()
        );
    }
    // The cluster keeps serving.
    let run = cluster.run(&request(0, 10, None, false)).await.unwrap();
    assert_eq!(run.report.summary.n, 10);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_speaking_another_protocol_version_is_refused() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let hello = v1::WorkerMessage {
        kind: Some(v1::worker_message::Kind::Hello(v1::WorkerHello {
            protocol_version: PROTOCOL_VERSION + 1,
            name: "from the future".into(),
            threads: 1,
        })),
    };
    let mut client = WorkerServiceClient::new(cluster.channel());
    let status = client
        .session(tokio_stream_once(hello))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "protocol version mismatch: the worker speaks version 2, this coordinator speaks version 1; upgrade the older side"
    );
    assert!(cluster.status().await.workers.is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_job() {
    let cluster = TestCluster::builder().workers(2).start().await;
    let job = request(0, 5_000_000_000, None, false);
    let channel = cluster.channel();
    let address = cluster.address();
    let abandoned = tokio::spawn(async move { run_on(channel.into(), &address, &job).await });
    farm_tests::wait_until(
        "the job to start",
        std::time::Duration::from_secs(10),
        || async { cluster.status().await.running_jobs == 1 },
    )
    .await;
    abandoned.abort();
    farm_tests::wait_until(
        "the job to be cancelled",
        std::time::Duration::from_secs(10),
        || async {
            let status = cluster.status().await;
            status.running_jobs == 0 && status.counters.unwrap().jobs_cancelled == 1
        },
    )
    .await;
    let run = cluster.run(&request(0, 1000, None, false)).await.unwrap();
    assert_eq!(run.report.summary.n, 1000, "the cluster keeps serving");
    cluster.shutdown().await;
}

/// A request stream of one message that then stays open.
fn tokio_stream_once(
    message: v1::WorkerMessage,
) -> impl tokio_stream::Stream<Item = v1::WorkerMessage> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::once(message).chain(tokio_stream::pending())
}
