//! The real binaries on loopback: a coordinator, workers, and `farm`.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use farm_catalog::Function;
use farm_tests::faults::worker_count;
use farm_tests::process::{
    PROCESS_TIMEOUT, assert_summary_json, farm, farm_bounded, farm_with_env, farm_with_stdin, json,
    start_coordinator, start_worker,
};
use farm_tests::reference;

fn wait_for_workers(address: SocketAddr, count: usize) {
    farm_tests::process::wait_for_workers(&address.to_string(), count, PROCESS_TIMEOUT);
}

fn assert_summary(value: &serde_json::Value, start: u64, n: u64) {
    assert_eq!(value["start"].as_u64(), Some(start));
    assert_summary_json(value, &reference::summary(Function::Sqrt, start, n));
}

#[test]
fn a_coordinator_two_workers_and_farm_submit() {
    let (_coordinator, address) = start_coordinator(&[]);
    let _w1 = start_worker(address, &["--threads", "1", "--name", "one"]);
    let _w2 = start_worker(address, &["--threads", "1", "--name", "two"]);
    wait_for_workers(address, 2);
    let address = address.to_string();

    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "3e6",
        "--start",
        "3",
        // Small forced chunks: both workers get some however the machine
        // is loaded.
        "--chunk-size",
        "65536",
        "--coordinator",
        &address,
        "--json",
    ]);
    let summary = json(&out);
    assert_summary(&summary, 3, 3_000_000);
    assert_eq!(summary["mode"], "cluster");
    assert_eq!(
        summary["workers"].as_u64(),
        Some(2),
        "both workers got chunks"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.bin");
    let file = file.to_str().unwrap();
    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "1000003",
        "--coordinator",
        &address,
        "--output",
        file,
        "--chunk-size",
        "10000",
        "--json",
    ]);
    let summary = json(&out);
    assert_summary(&summary, 0, 1_000_003);
    assert!(summary["chunks"].as_u64().unwrap() > 50);
    assert!(std::fs::read(file).unwrap() == reference::bytes(Function::Sqrt, 0, 1_000_003));

    // --fsync on the path through a coordinator, where the client splices
    // the values into the file: 40 MB, more than one stretch written back.
    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "5000001",
        "--coordinator",
        &address,
        "--output",
        file,
        "--fsync",
        "--json",
    ]);
    assert_summary(&json(&out), 0, 5_000_001);
    assert!(std::fs::read(file).unwrap() == reference::bytes(Function::Sqrt, 0, 5_000_001));

    // Those values passed through the coordinator's pipes (on Linux), and
    // none are left there once the jobs are done.
    let cluster = json(&farm(&["workers", "--coordinator", &address, "--json"]));
    let piped = &cluster["piped_values"];
    assert_eq!(piped["bytes"].as_u64(), Some(0), "{piped}");
    assert_eq!(piped["pipes"].as_u64(), Some(0), "{piped}");
    let peak = piped["peak_bytes"].as_u64().unwrap();
    if cfg!(target_os = "linux") {
        // At least one 80 kB result; at most the largest job's values.
        assert!((80_000..=40_000_008).contains(&peak), "{piped}");
    }

    // The environment variable names the coordinator too.
    let out = farm_with_env(
        &["submit", "sqrt", "--n", "5000", "--json"],
        &[("FARM_COORDINATOR", &address)],
    );
    assert_eq!(json(&out)["mode"], "cluster");
}

#[test]
fn sigterm_drains_a_busy_worker_which_hands_back_its_queued_chunks_and_exits_zero() {
    let (_coordinator, address) = start_coordinator(&[]);
    // Three leases in hand (one computing, two queued): whenever the
    // signal lands mid-job, the worker holds chunks it has not started.
    let mut busy = start_worker(
        address,
        &["--threads", "1", "--prefetch", "3", "--name", "busy"],
    );
    wait_for_workers(address, 1);
    let n = 1_000_000_000;
    let address = address.to_string();
    let submit = {
        let address = address.clone();
        std::thread::spawn(move || {
            farm_bounded(
                &[
                    "submit",
                    "sqrt",
                    "--n",
                    "1e9",
                    "--coordinator",
                    &address,
                    "--json",
                ],
                &[],
                Duration::from_secs(60),
            )
        })
    };
    // Wait until the worker holds its full prefetch of the running job,
    // with most of the job left, then ask it to stop.
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        let status = cluster_status(&address);
        if worker_count(&status, "busy", "leases_held") == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = json(&farm(&["status", "1", "--coordinator", &address, "--json"]));
    assert_eq!(job["state"], "running", "{job}");
    assert!(job["elements_done"].as_u64() < Some(n / 2), "{job}");
    busy.signal("TERM");
    let status = busy.wait(PROCESS_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "a drained worker exits 0; stderr:\n{}",
        busy.stderr_tail()
    );
    assert!(busy.stderr().contains("draining"));

    // It handed back what it had not started (no other worker drains),
    // and lost nothing: no chunk was retried or expired.
    let cluster = cluster_status(&address);
    let counters = &cluster["counters"];
    assert!(counters["leases_returned"].as_u64() >= Some(1), "{cluster}");
    assert_eq!(counters["retries"].as_u64(), Some(0), "{cluster}");
    assert_eq!(counters["leases_expired"].as_u64(), Some(0), "{cluster}");
    assert_eq!(cluster["running_jobs"].as_u64(), Some(1), "{cluster}");

    // Another worker finishes the job, exactly.
    let _fresh = start_worker(address.parse().expect("an address"), &[]);
    let out = submit.join().unwrap();
    let summary = json(&out);
    assert_eq!(summary["start"].as_u64(), Some(0));
    assert_summary_json(
        &summary,
        &reference::summary_blockwise(Function::Sqrt, 0, n),
    );
}

fn cluster_status(address: &str) -> serde_json::Value {
    json(&farm(&["workers", "--coordinator", address, "--json"]))
}

#[test]
fn a_worker_retries_until_the_coordinator_appears() {
    let address = free_port();
    let health = free_port().to_string();
    let mut worker = start_worker(address, &["--threads", "1", "--health-listen", &health]);
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while worker
        .stderr()
        .matches("cannot reach the coordinator")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no retry lines:\n{}",
            worker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worker.stderr().contains("attempt=2"),
        "{}",
        worker.stderr_tail()
    );
    // Not connected: its health check says so.
    let out = farm(&["health", "--coordinator", &health]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let address_text = address.to_string();
    let _coordinator =
        farm_tests::process::Process::start("farm-coordinator", &["--listen", &address_text]);
    wait_for_workers(address, 1);
    for checked in [&address_text, &health] {
        let out = farm(&["health", "--coordinator", checked]);
        assert!(
            out.status.success(),
            "{checked}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "SERVING\n");
    }
    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "2e6",
        "--coordinator",
        &address_text,
        "--json",
    ]);
    assert_summary(&json(&out), 0, 2_000_000);
    worker.signal("TERM");
    assert_eq!(worker.wait(PROCESS_TIMEOUT).code(), Some(0));
}

/// `farm submit` against `address` exits 3 within `within`, naming the
/// address; returns what it printed.
fn submit_fails_to_reach(address: &str, within: Duration) -> String {
    let started = Instant::now();
    let out = farm(&["submit", "sqrt", "--n", "5e6", "--coordinator", address]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains(&format!("cannot reach the coordinator at {address}")),
        "{stderr}"
    );
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
    stderr
}

#[test]
fn an_unreachable_coordinator_fails_fast_with_a_clear_message() {
    let stderr = submit_fails_to_reach(&free_port().to_string(), Duration::from_secs(5));
    assert!(
        stderr.to_lowercase().contains("connection refused"),
        "{stderr}"
    );
}

#[test]
fn a_peer_that_never_answers_is_not_waited_on_forever() {
    // Accepts connections and says nothing, like a wedged process.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let address = silent.local_addr().expect("bound address").to_string();
    let stderr = submit_fails_to_reach(&address, Duration::from_secs(10));
    assert!(stderr.contains("no answer within 5 s"), "{stderr}");
    drop(silent);
}

#[test]
fn something_that_is_not_a_coordinator_is_named_as_such() {
    // An HTTP/1 server: reads the request, answers 400, hangs up.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let address = http.local_addr().expect("bound address");
    std::thread::spawn(move || {
        for mut stream in http.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut request = [0u8; 256];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                );
                // Hang up only after the client does (or 5 s): hanging up
                // first races the answer, and the client may see only that
                // the connection closed.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            });
        }
    });
    let stderr = submit_fails_to_reach(&address.to_string(), Duration::from_secs(5));
    assert!(
        stderr.contains(": it is not a farm coordinator"),
        "{stderr}"
    );

    let mut worker = start_worker(address, &[]);
    let status = worker.wait(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert!(
        worker.stderr().contains(&format!(
            "refused by {address}: {address} is not a farm coordinator"
        )),
        "{}",
        worker.stderr_tail()
    );
}

/// A loopback address nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("bound address")
}

#[test]
fn farm_status_describes_a_job_and_refuses_an_unknown_one() {
    let (_coordinator, address) = start_coordinator(&[]);
    let _worker = start_worker(address, &["--threads", "1"]);
    wait_for_workers(address, 1);
    let address = address.to_string();

    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "1e6",
        "--chunk-size",
        "65536",
        "--coordinator",
        &address,
        "--json",
    ]);
    let submitted = json(&out);
    let job = submitted["job_id"].as_u64().unwrap().to_string();
    assert_eq!(submitted["chunks"].as_u64(), Some(16));
    assert_eq!(submitted["attempts"].as_u64(), Some(16));

    let status = json(&farm(&[
        "status",
        &job,
        "--coordinator",
        &address,
        "--json",
    ]));
    assert_eq!(status["state"], "finished");
    assert_eq!(status["function"], "sqrt");
    assert_eq!(status["n"].as_u64(), Some(1_000_000));
    assert_eq!(status["elements_done"].as_u64(), Some(1_000_000));
    assert_eq!(status["chunks_done"].as_u64(), Some(16));
    assert_eq!(status["counters"]["leases_granted"].as_u64(), Some(16));
    assert_eq!(status["counters"]["retries"].as_u64(), Some(0));
    assert_eq!(status["worker_ids"].as_array().map(Vec::len), Some(1));

    let text = farm(&["status", &job, "--coordinator", &address]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("state     finished"), "{text}");

    // The cluster's counters, undelivered leases among them: none here.
    let cluster = json(&farm(&["workers", "--coordinator", &address, "--json"]));
    assert_eq!(cluster["counters"]["leases_granted"].as_u64(), Some(16));
    assert_eq!(cluster["counters"]["leases_undelivered"].as_u64(), Some(0));
    let text = farm(&["workers", "--coordinator", &address]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("leases: 16 granted, 0 expired, 0 returned, 0 undelivered;"),
        "{text}"
    );

    let unknown = farm(&["status", "999", "--coordinator", &address]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no job 999 on this coordinator"),
        "{stderr}"
    );
}

#[test]
fn the_embedded_default_exits_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.bin");
    let file = file.to_str().unwrap();
    // The embedded cluster used to stop its coordinator and worker at
    // once, and the worker then warned of a lost coordinator in about one
    // run in eight of this (one in three in release builds): many runs.
    for run in 0..24 {
        let out = farm_with_env(
            &["submit", "sqrt", "--n", "2e6", "--output", file],
            &[("RUST_LOG", "warn")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert!(!stderr.contains("WARN"), "run {run}: {stderr}");
    }
}

#[test]
fn binary_values_on_stdout_are_the_bin_file_bytes() {
    let (_coordinator, address) = start_coordinator(&[]);
    let _worker = start_worker(address, &["--threads", "1"]);
    wait_for_workers(address, 1);
    let address = address.to_string();
    let (start, n) = (7, 1_000_003);
    let expected = reference::summary(Function::Sqrt, start, n);
    let expected_bytes = reference::bytes(Function::Sqrt, start, n);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.bin");
    let file = file.to_str().unwrap();
    // Through the loopback cluster, and the embedded one (a forced chunk
    // size skips the local short cut for this small n).
    for coordinator in [Some(address.as_str()), None] {
        let submit = |output: &[&str]| {
            let mut args = vec![
                "submit",
                "sqrt",
                "--n",
                "1000003",
                "--start",
                "7",
                "--chunk-size",
                "65536",
                "--json",
            ];
            if let Some(address) = coordinator {
                args.extend(["--coordinator", address]);
            }
            args.extend(output);
            // Only errors on stderr, where the summary goes with --output -.
            farm_with_env(&args, &[("RUST_LOG", "error")])
        };
        let piped = submit(&["--output", "-", "--format", "bin"]);
        let stderr = String::from_utf8_lossy(&piped.stderr);
        assert!(piped.status.success(), "{coordinator:?}: {stderr}");
        assert!(
            piped.stdout == expected_bytes,
            "{coordinator:?}: {} bytes on stdout, not the reference's {}",
            piped.stdout.len(),
            expected_bytes.len()
        );
        let summary: serde_json::Value = serde_json::from_str(&stderr).unwrap();
        assert_summary_json(&summary, &expected);

        let written = submit(&["--output", file]);
        assert_summary_json(&json(&written), &expected);
        assert!(
            std::fs::read(file).unwrap() == piped.stdout,
            "{coordinator:?}"
        );

        // `farm submit ... --output - --format bin | farm digest - --format bin`
        let digested = farm_with_stdin(&["digest", "-", "--format", "bin", "--json"], piped.stdout);
        assert_summary_json(&json(&digested), &expected);
    }
}
