//! Far-away workers: behind a proxy that adds 100 ms each way, a worker
//! still ends its jobs exact, its round trip shows in the cluster status,
//! it holds enough work to stay busy beside a near worker (its share of
//! the elements follows its speed, not its distance), and losing it
//! mid-job still ends the job exact.

use std::time::Duration;

use farm_catalog::Function;
use farm_cli::client::JobRequest;
use farm_proto::v1;
use farm_tests::cluster::{TestCluster, WorkerHandle};
use farm_tests::proxy::{Link, Proxy};
use farm_tests::{reference, wait_until};

/// Each way: a round trip of 200 ms, eight times a 25 ms chunk.
const FAR: Duration = Duration::from_millis(100);

const SETTLE: Duration = Duration::from_secs(30);

fn sqrt_summary(n: u64) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start: 0,
        n,
        chunk_size: None,
        stream_values: false,
        values_connection: false,
        wasm_module: bytes::Bytes::new(),
    }
}

fn named<'a>(status: &'a v1::GetClusterStatusResponse, name: &str) -> Option<&'a v1::WorkerStatus> {
    status.workers.iter().find(|w| w.name == name)
}

/// Waits until the worker called `name` has registered and its round trip
/// is measured.
async fn wait_for_round_trip(cluster: &TestCluster, name: &str) {
    wait_until(&format!("{name}'s round trip"), SETTLE, || async {
        named(&cluster.status().await, name).is_some_and(|w| w.round_trip_us > 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_100ms_away_ends_exact_and_shows_its_round_trip() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let upstream = cluster.address().parse().expect("a socket address");
    let proxy = Proxy::start(upstream, Link::delayed(FAR))
        .await
        .expect("start the proxy");
    let far = WorkerHandle::start_via(proxy.address(), "far", 1);
    wait_for_round_trip(&cluster, "far").await;

    let n = 200_000_000;
    let run = cluster.run(&sqrt_summary(n)).await.expect("the job ends");
    assert_eq!(
        run.report.summary,
        reference::summary_blockwise(Function::Sqrt, 0, n)
    );

    let status = cluster.status().await;
    let worker = named(&status, "far").expect("the far worker is listed");
    assert_eq!(worker.elements_completed, n);
    // Every byte crosses the proxy twice: no round trip is shorter.
    assert!(
        worker.round_trip_us >= 2 * FAR.as_micros() as u64,
        "round trip {} us",
        worker.round_trip_us
    );
    far.drain_within(SETTLE).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_and_far_workers_share_by_speed_and_losing_the_far_one_ends_exact() {
    let cluster = TestCluster::builder()
        .workers(1)
        .threads_per_worker(1)
        .start()
        .await;
    let upstream = cluster.address().parse().expect("a socket address");
    let proxy = Proxy::start(upstream, Link::delayed(FAR))
        .await
        .expect("start the proxy");
    let far = WorkerHandle::start_via(proxy.address(), "far", 1);
    wait_for_round_trip(&cluster, "far").await;

    let n = 2_000_000_000;
    let expected = reference::summary_blockwise(Function::Sqrt, 0, n);
    let run = cluster.run(&sqrt_summary(n)).await.expect("the job ends");
    assert_eq!(run.report.summary, expected);

    let status = cluster.status().await;
    let far_status = named(&status, "far").expect("the far worker is listed");
    let near_status = named(&status, "test-worker-0").expect("the near worker is listed");
    assert_eq!(
        far_status.elements_completed + near_status.elements_completed,
        n
    );
    // Shares follow speeds: were the far worker idle while its grants
    // crossed the link, it would get about a fifth of its speed's share
    // (50 ms of work per 200 ms round trip); the bound leaves room for
    // the start, when its first grants are still on their way.
    let far_share = far_status.elements_completed as f64 / n as f64;
    let far_speed_share = far_status.elements_per_second
        / (far_status.elements_per_second + near_status.elements_per_second);
    assert!(
        far_share >= 0.5 * far_speed_share,
        "the far worker did {far_share:.3} of the elements at {far_speed_share:.3} of the speed"
    );

    // The same job again; the far worker is lost once it has done some.
    let done_before = far_status.elements_completed;
    let job = {
        let channel = cluster.channel();
        let address = cluster.address();
        tokio::spawn(async move {
            farm_tests::cluster::run_on(channel.into(), &address, &sqrt_summary(n)).await
        })
    };
    wait_until(
        "the far worker to work on the second job",
        SETTLE,
        || async {
            named(&cluster.status().await, "far")
                .is_some_and(|w| w.elements_completed > done_before)
        },
    )
    .await;
    proxy.sever();
    far.task.abort();
    let run = tokio::time::timeout(Duration::from_secs(120), job)
        .await
        .expect("the job ends without its far worker")
        .expect("the job's task did not panic")
        .expect("the job ends");
    assert_eq!(run.report.summary, expected);
    cluster.shutdown().await;
}
