//! The cluster users start with `docker compose`: the repository's
//! docker-compose.yml and the image from deploy/build-image, on a project
//! (and so a network) of this test's own, with faults injected mid-job.
//! Every answer must equal the reference bit for bit.
//!
//! What a user sees when the coordinator restarts under a running job:
//! `farm submit` fails at once with exit code 3 and "lost the coordinator
//! ... the coordinator is shutting down; job N was cancelled" (jobs are not
//! persisted yet); the workers reconnect by themselves and the next job
//! runs normally.
//!
//! The cluster is members only: the host's `farm` takes the client token
//! out as the README says, and without it is refused (exit 4).

use std::net::TcpListener;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use farm_catalog::{Function, Summary};
use farm_tests::compose::{ComposeProject, docker, image_exists};
use farm_tests::process::{assert_summary_json, farm_bounded, json};
use farm_tests::reference;

/// Long enough (about five seconds on two cores) to break things mid-job.
const N: u64 = 10_000_000_000;
const N_TEXT: &str = "1e10";

/// Bounds each long job, faults included.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Bounds each wait for the cluster to reach a state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What "at once" means for a client whose coordinator goes away: well
/// under the coordinator's 10 s shutdown grace.
const AT_ONCE: Duration = Duration::from_secs(5);

fn image() -> String {
    std::env::var("FARM_IMAGE").unwrap_or_else(|_| "farm:latest".to_owned())
}

#[test]
fn the_compose_cluster_runs_jobs_exactly_through_faults() {
    let image = image();
    assert!(
        image_exists(&image),
        "the image {image} is missing: build it with deploy/build-image (tests/run does)"
    );
    let expected = reference::summary_blockwise(Function::Sqrt, 0, N);

    let port = free_port().to_string();
    let name = format!("farmtest{}", std::process::id());
    let project = ComposeProject::new(
        &name,
        &[
            ("FARM_IMAGE", image.as_str()),
            ("FARM_PORT", port.as_str()),
            ("FARM_LEASE_TIMEOUT", "3s"),
            ("RUST_LOG", "info"),
        ],
    );
    project.run(&["up", "-d", "--scale", "worker=3"]);
    let address = format!("127.0.0.1:{port}");

    // Members only: from the host, no token is refused ...
    let refused = farm_bounded(
        &["submit", "sqrt", "--n", "1e6", "--coordinator", &address],
        &[],
        JOB_TIMEOUT,
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .starts_with("farm: this coordinator requires a client token"),
        "{refused:?}"
    );
    // ... and the client token, taken out as the README says, lets in.
    let token = project.run(&[
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "tokens",
        "farm",
        "token",
        "client",
        "/farm/secret/cluster.secret",
    ]);
    let token_dir = tempfile::tempdir().expect("a temporary directory");
    let token_file = token_dir.path().join("client.token");
    std::fs::write(&token_file, &token.stdout).expect("write the client token");
    TOKEN_FILE
        .set(token_file.to_str().expect("UTF-8").to_owned())
        .expect("set once");
    wait_for_workers(&address, 3);

    // A job across every worker, submitted from the host ...
    assert_exact(&submit(&address), &expected);
    for worker in status(&address)["workers"].as_array().expect("workers") {
        assert!(
            worker["chunks_completed"].as_u64() > Some(0),
            "a worker got no chunks: {worker}"
        );
    }
    // ... and from a container, through the `farm` service.
    let out = project.run(&[
        "run", "-T", "--rm", "farm", "submit", "sqrt", "--n", "1e7", "--json",
    ]);
    let small = serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON summary");
    assert_eq!(
        small["digest"].as_str(),
        Some(
            reference::summary(Function::Sqrt, 0, 10_000_000)
                .digest
                .to_string()
                .as_str()
        )
    );

    // docker kill of a worker mid-job: it holds work, the job has most of
    // its work left, and the kill sends the worker's leases back to be
    // computed again.
    let job = start_job(&address);
    let victim = project.containers("worker")[1].clone();
    wait_for("the victim to hold a lease", || {
        leases_held(&status(&address), &victim) >= 1
    });
    assert_running(&address, 3);
    let retries_before = counter(&address, "retries");
    docker(&["kill", &victim]);
    wait_for("the victim's leases to be retried", || {
        counter(&address, "retries") > retries_before
    });
    assert_exact(&finish(job).0, &expected);

    // A worker cut off from the network for longer than the lease
    // timeout, then reconnected.
    project.run(&["up", "-d", "--scale", "worker=3", "--no-recreate"]);
    wait_for_workers(&address, 3);
    let expired_before = counter(&address, "leases_expired");
    let job = start_job(&address);
    let cut_off = project.containers("worker")[2].clone();
    wait_for("the worker to cut off to hold a lease", || {
        leases_held(&status(&address), &cut_off) >= 1
    });
    assert_running(&address, 4);
    docker(&["network", "disconnect", &project.network(), &cut_off]);
    wait_for("the cut-off worker's leases to expire", || {
        counter(&address, "leases_expired") > expired_before
    });
    docker(&["network", "connect", &project.network(), &cut_off]);
    assert_exact(&finish(job).0, &expected);
    wait_for_workers(&address, 3);

    // The coordinator restarts under a running job: the client is told at
    // once, the workers come back by themselves, the next job is exact.
    let job = start_job(&address);
    assert_running(&address, 5);
    let restarted = Instant::now();
    project.run(&["restart", "coordinator"]);
    let (lost, ended) = finish(job);
    let took = ended.saturating_duration_since(restarted);
    assert!(
        took < AT_ONCE,
        "farm submit exited {took:?} after the restart began"
    );
    assert_eq!(
        lost.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&lost.stderr)
    );
    let message = String::from_utf8_lossy(&lost.stderr);
    assert!(
        message.contains(&format!(
            "farm: lost the coordinator at {address}: the coordinator is shutting down; job "
        )),
        "{message}"
    );
    wait_for_workers(&address, 3);

    // Scaling up mid-job: the new worker takes chunks of the running job.
    let job = start_job(&address);
    project.run(&["up", "-d", "--scale", "worker=4", "--no-recreate"]);
    assert_exact(&finish(job).0, &expected);
    let workers = status(&address)["workers"]
        .as_array()
        .expect("workers")
        .clone();
    assert_eq!(workers.len(), 4);
    for worker in &workers {
        assert!(
            worker["chunks_completed"].as_u64() > Some(0),
            "a worker got no chunks: {worker}"
        );
    }

    // `down` leaves nothing behind.
    project.run(&["down", "--timeout", "5"]);
    let label = format!("label=com.docker.compose.project={name}");
    let left = docker(&["ps", "--all", "--quiet", "--filter", &label]);
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let networks = docker(&[
        "network",
        "ls",
        "--quiet",
        "--filter",
        &format!("name={}", project.network()),
    ]);
    assert!(networks.stdout.is_empty(), "network left behind");
}

/// The client token's file, once taken out of the cluster.
static TOKEN_FILE: OnceLock<String> = OnceLock::new();

/// Runs `farm` with the cluster's client token.
fn farm(args: &[&str]) -> Output {
    farm_bounded(args, &token_env(), farm_tests::process::PROCESS_TIMEOUT)
}

fn token_env() -> [(&'static str, &'static str); 1] {
    [(
        "FARM_TOKEN_FILE",
        TOKEN_FILE
            .get()
            .expect("the client token was taken out")
            .as_str(),
    )]
}

/// Runs the long job to completion.
fn submit(address: &str) -> Output {
    farm_bounded(
        &[
            "submit",
            "sqrt",
            "--n",
            N_TEXT,
            "--coordinator",
            address,
            "--json",
        ],
        &token_env(),
        JOB_TIMEOUT,
    )
}

/// Starts the long job in the background, returning once it is under way;
/// the job ends with its output and when `farm` exited.
fn start_job(address: &str) -> std::thread::JoinHandle<(Output, Instant)> {
    let accepted_before = counter(address, "results_accepted");
    let job = {
        let address = address.to_owned();
        std::thread::spawn(move || {
            let out = submit(&address);
            (out, Instant::now())
        })
    };
    wait_for("the job to get going", || {
        counter(address, "results_accepted") >= accepted_before + 20
    });
    job
}

fn finish(job: std::thread::JoinHandle<(Output, Instant)>) -> (Output, Instant) {
    job.join().expect("the job thread")
}

/// Asserts that job `job` is running with under half its elements done:
/// a fault injected now lands mid-job.
fn assert_running(address: &str, job: u64) {
    let job = job.to_string();
    let status = json(&farm(&["status", &job, "--coordinator", address, "--json"]));
    assert_eq!(status["state"], "running", "job {job}: {status}");
    assert!(
        status["elements_done"].as_u64() < Some(N / 2),
        "job {job} is too far along for a fault now: {status}"
    );
}

/// Leases held by the worker in `container` (a worker's name starts with
/// its container's host name: the first 12 digits of the container id).
fn leases_held(status: &serde_json::Value, container: &str) -> u64 {
    let host = &container[..container.len().min(12)];
    status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| {
            w["name"]
                .as_str()
                .is_some_and(|name| name.starts_with(host))
        })
        .and_then(|w| w["leases_held"].as_u64())
        .unwrap_or(0)
}

fn assert_exact(out: &Output, expected: &Summary) {
    assert_summary_json(&json(out), expected);
}

fn status(address: &str) -> serde_json::Value {
    json(&farm(&["workers", "--coordinator", address, "--json"]))
}

fn counter(address: &str, name: &str) -> u64 {
    let out = farm(&["workers", "--coordinator", address, "--json"]);
    if !out.status.success() {
        return 0;
    }
    json(&out)["counters"][name].as_u64().unwrap_or(0)
}

fn wait_for_workers(address: &str, count: usize) {
    wait_for(&format!("{count} workers to register"), || {
        let out = farm(&["workers", "--coordinator", address, "--json"]);
        out.status.success() && json(&out)["workers"].as_array().map_or(0, Vec::len) == count
    });
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("bound address").port()
}
