//! A reader of `farm submit ... --output -` that stops early
//! (`farm submit sqrt --n 1e9 --output - --format bin | head -c 1000000`)
//! ends the job at once, on every route the values take: a value
//! connection from a coordinator (`bin`, `npy`), the job's gRPC stream
//! (`text`), and the embedded cluster. `farm` exits 0 (a reader that has
//! seen enough is success), soon, and the coordinator cancels the job
//! instead of computing values nobody reads.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use farm_tests::process::{PROCESS_TIMEOUT, binary, farm, json, start_coordinator, start_worker};

/// How long `farm` may take to exit once its reader has gone. A bound on
/// correctness, not a benchmark: it exits within milliseconds, and used to
/// wait 30 s for the coordinator's silence when the values came on a value
/// connection.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// What the reader takes before it leaves, as `head -c 1000000` does.
const READ_BYTES: usize = 1_000_000;

/// Far more values than are read before the reader leaves (8 GB), so the
/// job is still running then.
const N: &str = "1e9";

/// How `farm` ended after its reader left.
struct Ended {
    status: ExitStatus,
    /// From the reader closing its end to `farm` exiting.
    after_close: Duration,
    stderr: String,
    /// The first bytes `farm` wrote.
    head: Vec<u8>,
}

/// Runs `farm submit sqrt --n N --output - ARGS`, reads [`READ_BYTES`] of
/// its stdout, closes the pipe, and waits (at most [`PROCESS_TIMEOUT`])
/// for `farm` to exit.
fn read_then_leave(args: &[&str]) -> Ended {
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(binary("farm"))
        .args(["submit", "sqrt", "--n", N, "--output", "-"])
        .args(args)
        .env_remove("FARM_COORDINATOR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("reopen stderr file"))
        .spawn()
        .expect("start farm");
    let mut head = vec![0u8; READ_BYTES];
    {
        let mut stdout = child.stdout.take().expect("piped stdout");
        stdout.read_exact(&mut head).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!(
                "farm {args:?} wrote fewer than {READ_BYTES} bytes ({e}): {}",
                std::fs::read_to_string(stderr.path()).unwrap_or_default()
            )
        });
        // Dropped here: the reader leaves.
    }
    let closed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if closed.elapsed() > PROCESS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "farm {args:?} did not exit within {PROCESS_TIMEOUT:?} of its reader leaving: {}",
                std::fs::read_to_string(stderr.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ended {
        status,
        after_close: closed.elapsed(),
        stderr: std::fs::read_to_string(stderr.path()).unwrap_or_default(),
        head,
    }
}

/// Asserts that `farm` took the reader's leaving as success, soon.
fn assert_ended_well(ended: &Ended, route: &str) {
    assert_eq!(
        ended.status.code(),
        Some(0),
        "{route}: a reader that stops early is success; stderr:\n{}",
        ended.stderr
    );
    assert!(
        ended.after_close < EXIT_BOUND,
        "{route}: farm took {:?} to exit after its reader left; stderr:\n{}",
        ended.after_close,
        ended.stderr
    );
    assert!(
        !ended.stderr.contains("farm:"),
        "{route}: no error is printed; stderr:\n{}",
        ended.stderr
    );
}

/// The first `count` values of `sqrt` from 0, as little-endian bytes.
fn sqrt_bytes(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| (i as f64).sqrt().to_le_bytes())
        .collect()
}

fn cluster_counters(address: &str) -> serde_json::Value {
    json(&farm(&["workers", "--coordinator", address, "--json"]))["counters"].clone()
}

/// Waits until the coordinator has cancelled `job` (and `cancelled` jobs
/// in all), failing the test after [`EXIT_BOUND`].
fn assert_cancelled(address: &str, job: u64, cancelled: u64) {
    let deadline = Instant::now() + EXIT_BOUND;
    loop {
        let counters = cluster_counters(address);
        if counters["jobs_cancelled"].as_u64() == Some(cancelled) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} was not cancelled within {EXIT_BOUND:?}: {counters}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = json(&farm(&[
        "status",
        &job.to_string(),
        "--coordinator",
        address,
        "--json",
    ]));
    assert_eq!(status["state"], "cancelled", "job {job}: {status}");
    let counters = cluster_counters(address);
    assert_eq!(counters["jobs_finished"].as_u64(), Some(0), "{counters}");
    assert_eq!(counters["jobs_failed"].as_u64(), Some(0), "{counters}");
}

#[test]
fn a_reader_that_leaves_ends_a_cluster_job_at_once_on_every_route() {
    let (_coordinator, address) = start_coordinator(&[]);
    let _worker = start_worker(address, &["--threads", "1"]);
    let address = address.to_string();
    farm_tests::process::wait_for_workers(&address, 1, PROCESS_TIMEOUT);
    let expected = sqrt_bytes(READ_BYTES / 8);

    // Each job is the coordinator's next: job ids count from 1.
    let routes: [(&str, &[&str]); 3] = [
        ("bin on a value connection", &["--format", "bin"]),
        ("npy on a value connection", &["--format", "npy"]),
        ("text in the job's stream", &["--format", "text"]),
    ];
    for (job, (route, format)) in (1u64..).zip(routes) {
        let args = [format, &["--coordinator", &address]].concat();
        let ended = read_then_leave(&args);
        assert_ended_well(&ended, route);
        match format[1] {
            "bin" => assert!(ended.head == expected, "{route}: the values"),
            "npy" => {
                assert!(ended.head.starts_with(b"\x93NUMPY"), "{route}");
                assert!(ended.head[128..] == expected[..READ_BYTES - 128], "{route}");
            }
            _ => assert!(ended.head.starts_with(b"0.0\n1.0\n1.4142135623730951\n")),
        }
        assert_cancelled(&address, job, job);
    }

    // The worker is free again: the next job runs to the end.
    let out = farm(&[
        "submit",
        "sqrt",
        "--n",
        "2e6",
        "--coordinator",
        &address,
        "--json",
    ]);
    assert_eq!(json(&out)["n"].as_u64(), Some(2_000_000));
    assert_eq!(
        cluster_counters(&address)["jobs_finished"].as_u64(),
        Some(1)
    );
}

#[test]
fn a_reader_that_leaves_ends_an_embedded_job_at_once() {
    let expected = sqrt_bytes(READ_BYTES / 8);
    for format in ["bin", "npy", "text"] {
        let ended = read_then_leave(&["--format", format]);
        assert_ended_well(&ended, &format!("embedded {format}"));
        if format == "bin" {
            assert!(ended.head == expected, "embedded bin: the values");
        }
    }
}
