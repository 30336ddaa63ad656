//! Values on a thin link: a worker behind a proxy that limits its bytes
//! per second. With `--output` (values streamed, on a value connection)
//! its values cross the link once, so a job it runs alone goes at the
//! link's rate; beside a near worker it takes its share without holding
//! up the ordered merge, so the near worker is not stalled behind it.
//! Every output is checked byte for byte against the serial reference.

use std::time::{Duration, Instant};

use farm_catalog::Function;
use farm_cli::client::JobRequest;
use farm_proto::v1;
use farm_tests::cluster::{TestCluster, WorkerHandle};
use farm_tests::proxy::{Link, Proxy};
use farm_tests::{reference, wait_until};

/// Bytes per second each way on the thin link.
const LINK_RATE: u64 = 8_000_000;

/// Each way on the thin link: a continent away.
const LINK_DELAY: Duration = Duration::from_millis(25);

const SETTLE: Duration = Duration::from_secs(30);

/// What `farm submit sqrt --n N --output FILE` asks for.
fn sqrt_output(n: u64) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start: 0,
        n,
        chunk_size: None,
        stream_values: true,
        values_connection: true,
    }
}

fn named<'a>(status: &'a v1::GetClusterStatusResponse, name: &str) -> Option<&'a v1::WorkerStatus> {
    status.workers.iter().find(|w| w.name == name)
}

/// A proxy in front of `cluster`'s coordinator with the thin link, and a
/// one-thread worker called `far` behind it, registered with its round
/// trip measured.
async fn far_worker_on_a_thin_link(cluster: &TestCluster) -> (Proxy, WorkerHandle) {
    let upstream = cluster.address().parse().expect("a socket address");
    let link = Link::delayed(LINK_DELAY).limited(LINK_RATE);
    let proxy = Proxy::start(upstream, link).await.expect("start the proxy");
    let far = WorkerHandle::start_via(proxy.address(), "far", 1);
    wait_until("the far worker's round trip", SETTLE, || async {
        named(&cluster.status().await, "far").is_some_and(|w| w.round_trip_us > 0)
    })
    .await;
    (proxy, far)
}

/// Checks `values` against the serial reference of sqrt over `0..n`, a
/// block at a time (the reference of a large job is not held whole).
fn assert_values_exact(values: &[u8], n: u64) {
    const BLOCK: u64 = 1 << 20;
    assert_eq!(values.len() as u64, n * 8, "bytes written");
    let mut offset = 0;
    while offset < n {
        let len = BLOCK.min(n - offset);
        let expected = reference::bytes(Function::Sqrt, offset, len);
        let at = (offset * 8) as usize;
        let got = &values[at..at + expected.len()];
        if got != expected {
            let first = got.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "values differ from the reference in elements [{offset}, {}), first at byte {first:?} of the block",
                offset + len
            );
        }
        offset += len;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_workers_values_cross_a_thin_link_at_its_rate() {
    let cluster = TestCluster::builder().workers(0).start().await;
    let (proxy, far) = far_worker_on_a_thin_link(&cluster).await;

    // 32 MB of values: 4 s on the link.
    let n = 4_000_000;
    let bytes = n * 8;
    let started = Instant::now();
    let run = cluster.run(&sqrt_output(n)).await.expect("the job ends");
    let took = started.elapsed();
    assert_values_exact(&run.values, n);
    assert_eq!(run.report.summary, reference::summary(Function::Sqrt, 0, n));

    let status = cluster.status().await;
    let worker = named(&status, "far").expect("the far worker is listed");
    assert_eq!(worker.elements_completed, n);
    // The link, not the worker, sets the pace: computing the job takes
    // under a fifth of the time its values need on the link, so a job
    // rate under 0.9x the link's would be the protocol's doing.
    let link_time = Duration::from_secs_f64(bytes as f64 / LINK_RATE as f64);
    let compute_time = Duration::from_secs_f64(n as f64 / worker.elements_per_second);
    assert!(
        compute_time * 5 <= link_time,
        "not link-bound: computing takes {compute_time:?}, the link {link_time:?}"
    );
    // Every value crossed the link: no faster than it allows.
    assert!(took >= link_time, "{took:?} for {bytes} bytes");
    let rate = bytes as f64 / took.as_secs_f64();
    println!(
        "{bytes} bytes in {took:?} over a {LINK_RATE} B/s link: {:.3}x its rate",
        rate / LINK_RATE as f64
    );
    assert!(
        rate >= 0.9 * LINK_RATE as f64,
        "{:.2} MB/s in {took:?}, on a link of {:.2} MB/s: {:.2}x",
        rate / 1e6,
        LINK_RATE as f64 / 1e6,
        rate / LINK_RATE as f64
    );
    far.drain_within(SETTLE).await;
    proxy.stop(SETTLE).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_worker_on_a_thin_link_does_not_stall_a_near_one() {
    let cluster = TestCluster::builder()
        .workers(1)
        .threads_per_worker(1)
        .start()
        .await;
    let n = 40_000_000;
    // The near worker alone, warmed up first: the pace to keep.
    cluster
        .run(&sqrt_output(n / 4))
        .await
        .expect("a warm-up job");
    let started = Instant::now();
    let alone = cluster.run(&sqrt_output(n)).await.expect("the job ends");
    let alone_took = started.elapsed();
    assert_values_exact(&alone.values, n);

    let (proxy, far) = far_worker_on_a_thin_link(&cluster).await;
    let before = cluster.status().await;
    let near_before = named(&before, "test-worker-0")
        .expect("the near worker is listed")
        .elements_completed;
    let started = Instant::now();
    let run = cluster.run(&sqrt_output(n)).await.expect("the job ends");
    let took = started.elapsed();
    assert_values_exact(&run.values, n);
    assert_eq!(run.report.summary, alone.report.summary);

    let status = cluster.status().await;
    let far_done = named(&status, "far")
        .expect("the far worker is listed")
        .elements_completed;
    let near_done = named(&status, "test-worker-0")
        .expect("the near worker is listed")
        .elements_completed
        - near_before;
    assert_eq!(far_done + near_done, n);
    // The far worker took part: its values crossed the link...
    assert!(far_done > 0, "the far worker got no work");
    // ...without holding up the merge for long. Each far chunk holds the
    // window's front until its values have crossed the link; sized for
    // the worker's cores (1 Mi elements, a second of link each), the near
    // worker filled the window and waited behind them, and the job took
    // about 5x as long as the near worker alone. Sized for the link, a far
    // chunk arrives within about a quarter of a second, and the near
    // worker keeps going (about 1.7-1.9x on a loaded 2-core machine: the
    // 64 MiB window covers a quarter second of the near worker's pace
    // only just).
    println!("{took:?} with the far worker ({far_done} elements), {alone_took:?} without");
    assert!(
        took <= alone_took * 3,
        "{took:?} with the far worker ({far_done} elements), {alone_took:?} without"
    );
    far.drain_within(SETTLE).await;
    proxy.stop(SETTLE).await;
    cluster.shutdown().await;
}
