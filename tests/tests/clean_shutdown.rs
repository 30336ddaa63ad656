//! Stopping leaves no task behind: `farm_coordinator::run_tcp`,
//! `farm_coordinator::in_process` and `farm_worker::run` end only after
//! every task they started has.
//!
//! Each part runs on a current-thread runtime: there a task that ended
//! was released before `block_on` returns, so the runtime's count of live
//! tasks at that moment is exactly what the part left running.

use std::time::Duration;

use farm_catalog::Function;
use farm_cli::client::{self, JobRequest};
use farm_coordinator::CoordinatorConfig;
use farm_net::transport;
use farm_proto::error::ErrorKind;
use farm_tests::cluster::run_on;
use farm_tests::{reference, wait_until};
use farm_worker::WorkerConfig;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long any step (a job, a drain, a shutdown) may take.
const BOUND: Duration = Duration::from_secs(30);

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn worker_config(address: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(address);
    config.name = "clean-shutdown-worker".to_owned();
    config.threads = 1;
    config
}

fn request(n: u64, stream_values: bool) -> JobRequest {
    JobRequest {
        function: "sqrt".into(),
        start: 3,
        n,
        chunk_size: Some(50_000),
        stream_values,
        values_connection: stream_values,
        wasm_module: bytes::Bytes::new(),
    }
}

/// A coordinator on a port, and a worker and a client in another runtime:
/// a job with values (value and results connections, job stream, worker
/// session) runs, the worker drains, and the coordinator stops while a
/// connection it accepted has not said a word yet.
#[test]
fn a_coordinator_on_a_port_and_its_worker_stop_with_no_task_left() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let address = listener.local_addr().expect("bound address").to_string();
    let stop = CancellationToken::new();
    let (report, stopped) = tokio::sync::oneshot::channel();
    let coordinator = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let runtime = current_thread();
            let served = runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
                let serving = farm_coordinator::run_tcp(
                    CoordinatorConfig::default(),
                    listener,
                    stop.cancelled_owned(),
                );
                tokio::time::timeout(BOUND, serving).await
            });
            let left = runtime.metrics().num_alive_tasks();
            let _ = report.send((served.map(|served| served.map_err(|e| e.to_string())), left));
        }
    });

    let runtime = current_thread();
    let (served, left) = runtime.block_on(async {
        let endpoint = transport::endpoint(&address).expect("an endpoint");
        let drain = CancellationToken::new();
        let worker = farm_worker::run(
            worker_config(&address),
            endpoint.connect_lazy().into(),
            drain.clone(),
        );
        let client = async {
            let channel = endpoint.connect_lazy();
            wait_until("the worker to register", BOUND, || async {
                client::cluster_status(channel.clone().into(), &address)
                    .await
                    .is_ok_and(|status| status.workers.len() == 1)
            })
            .await;
            // Silent: the coordinator is still waiting for its first bytes
            // when it stops.
            let silent = tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect");
            let n = 400_003;
            let run = run_on(channel.into(), &address, &request(n, true))
                .await
                .expect("the job finishes");
            assert!(run.values == reference::bytes(Function::Sqrt, 3, n));
            let expected = reference::summary(Function::Sqrt, 3, n);
            assert!(run.report.summary.bit_identical(&expected));
            drain.cancel();
            silent
        };
        let (drained, silent) = tokio::time::timeout(BOUND, async { tokio::join!(worker, client) })
            .await
            .expect("the job runs and the worker drains in time");
        drained.expect("the worker exits cleanly");
        // This runtime keeps running while the coordinator stops, so that
        // the clients' connections answer its goodbye.
        stop.cancel();
        let stopped = tokio::time::timeout(BOUND, stopped)
            .await
            .expect("the coordinator reports in time")
            .expect("the coordinator's thread reports");
        drop(silent);
        stopped
    });
    coordinator.join().expect("the coordinator's thread");
    served
        .expect("run_tcp returns in time")
        .expect("run_tcp exits cleanly");
    assert_eq!(left, 0, "tasks still alive after run_tcp returned");

    // The worker's tasks ended before `run` returned; the client's
    // connections (tonic's tasks, not ours) close on their own.
    runtime.block_on(wait_until(
        "the worker's runtime to have no task left",
        BOUND,
        || async {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                == 0
        },
    ));
}

/// The embedded cluster's coordinator (no port) and a worker, in one
/// runtime: after a job, the coordinator stops in the middle of another,
/// with the worker's session up; then the worker drains. When the
/// coordinator's task ends, the worker and the client (futures of this
/// test, not tasks) are still running: every task left then is the
/// coordinator's. Mid-job, every task alive must be on its tracker.
#[test]
fn an_in_process_coordinator_stopping_mid_job_leaves_no_task() {
    let runtime = current_thread();
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (connection, mut coordinator) = farm_coordinator::in_process_on(
            CoordinatorConfig::default(),
            stop.clone().cancelled_owned(),
            tasks.clone(),
        )
        .expect("an in-process coordinator");
        let drain = CancellationToken::new();
        let worker = farm_worker::run(
            worker_config("in-process"),
            connection.clone(),
            drain.clone(),
        );
        let status = || async {
            client::cluster_status(connection.clone(), "in-process")
                .await
                .expect("cluster status")
        };
        let script = async {
            wait_until("the worker to register", BOUND, || async {
                status().await.workers.len() == 1
            })
            .await;
            let n = 1_000_003;
            let report =
                client::run_job(connection.clone(), "in-process", &request(n, false), None)
                    .await
                    .expect("the job finishes");
            let expected = reference::summary(Function::Sqrt, 3, n);
            assert!(report.summary.bit_identical(&expected));

            let endless = JobRequest {
                n: 1_000_000_000_000,
                chunk_size: None,
                ..request(0, false)
            };
            let cut_short = client::run_job(connection.clone(), "in-process", &endless, None);
            let stopping = async {
                wait_until("the second job to run on the worker", BOUND, || async {
                    let status = status().await;
                    status.running_jobs == 1 && status.workers.iter().any(|w| w.leases_held > 0)
                })
                .await;
                // Every task is the coordinator's (nothing here is a task
                // but its handle), and on its tracker: the ticker, the
                // worker's session, the job's stream.
                let alive = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                assert_eq!(tasks.len(), 3, "the ticker, a session and a job stream");
                assert_eq!(alive, tasks.len() + 1, "tasks running off the tracker");
                stop.cancel();
                tokio::time::timeout(BOUND, &mut coordinator)
                    .await
                    .expect("the coordinator stops in time")
                    .expect("the coordinator's task ends cleanly");
                let left = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                drain.cancel();
                left
            };
            let (cut_short, left) = tokio::join!(cut_short, stopping);
            assert_eq!(
                left, 0,
                "tasks still alive after the coordinator's task ended"
            );
            let error = cut_short.expect_err("the coordinator stopped before the job ended");
            assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        };
        let (drained, ()) = tokio::time::timeout(BOUND, async { tokio::join!(worker, script) })
            .await
            .expect("the jobs run, the coordinator stops and the worker drains in time");
        drained.expect("the worker exits cleanly");
    });
    assert_eq!(
        runtime.metrics().num_alive_tasks(),
        0,
        "tasks still alive after the worker returned"
    );
}
