//! What operators see of the real binaries: `/metrics` as Prometheus'
//! own parser reads it, JSON logs, and logging into a closed pipe.
//!
//! Needs python3 with prometheus_client (tests/requirements.txt).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use farm_tests::process::{
    PROCESS_TIMEOUT, Process, farm, json, start_coordinator, start_worker, wait_for_workers,
};

/// Starts a coordinator serving metrics on a free loopback port; returns
/// it, its address and the metrics port's address.
fn coordinator_with_metrics(extra: &[&str]) -> (Process, String, String) {
    // The port is free now; nothing else on this machine takes ports
    // from it in the moment before the coordinator does.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let mut args = vec!["--http", metrics.as_str()];
    args.extend_from_slice(extra);
    let (coordinator, address) = start_coordinator(&args);
    (coordinator, address.to_string(), metrics)
}

/// `GET /metrics`, bounded; returns the body.
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(PROCESS_TIMEOUT))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: farm\r\nconnection: close\r\n\r\n")
        .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_owned()
}

/// Parses `text` with prometheus_client's OpenMetrics parser; returns
/// every sample as `name{label="value",...} -> value`, labels sorted.
fn parse(text: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (install tests/requirements.txt)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the metrics");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "the parser refused the metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

fn sample(samples: &serde_json::Value, key: &str) -> f64 {
    samples[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#}"))
}

#[test]
fn metrics_count_a_job_just_run() {
    let (_coordinator, address, metrics) = coordinator_with_metrics(&[]);
    let _worker = start_worker(
        address.parse().expect("address"),
        &["--threads", "1", "--name", "one"],
    );
    wait_for_workers(&address, 1, PROCESS_TIMEOUT);

    let n = 1_000_003u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("out.bin");
    let summary = json(&farm(&[
        "submit",
        "sqrt",
        "--n",
        &n.to_string(),
        "--chunk-size",
        "100000",
        "--coordinator",
        &address,
        "--output",
        file.to_str().expect("utf-8 path"),
        "--json",
    ]));
    let chunks = summary["chunks"].as_u64().expect("chunks");

    let samples = parse(&scrape(&metrics));
    let n = n as f64;
    assert_eq!(sample(&samples, "farm_jobs_submitted_total{}"), 1.0);
    assert_eq!(
        sample(&samples, r#"farm_jobs_ended_total{outcome="finished"}"#),
        1.0
    );
    assert_eq!(
        sample(&samples, r#"farm_jobs_ended_total{outcome="failed"}"#),
        0.0
    );
    assert_eq!(sample(&samples, "farm_jobs_running{}"), 0.0);
    assert_eq!(sample(&samples, "farm_elements_computed_total{}"), n);
    assert_eq!(
        sample(&samples, "farm_results_accepted_total{}"),
        chunks as f64
    );
    assert_eq!(sample(&samples, "farm_results_stale_total{}"), 0.0);
    assert!(sample(&samples, "farm_leases_granted_total{}") >= chunks as f64);
    // Every value went to the client, 8 bytes each.
    assert_eq!(
        sample(&samples, "farm_values_streamed_bytes_total{}"),
        8.0 * n
    );
    assert_eq!(sample(&samples, r#"farm_workers{state="active"}"#), 1.0);
    assert_eq!(sample(&samples, r#"farm_workers{state="silent"}"#), 0.0);
    assert_eq!(
        sample(
            &samples,
            r#"farm_worker_elements_computed_total{worker="one",worker_id="1"}"#
        ),
        n
    );
    // The coordinator's first job.
    assert_eq!(
        sample(
            &samples,
            r#"farm_job_elements_done{function="sqrt",job="1",state="finished"}"#
        ),
        n
    );
    assert!(
        sample(
            &samples,
            r#"farm_worker_elements_per_second{worker="one",worker_id="1"}"#
        ) > 0.0
    );
}

/// `farm-coordinator 2>&1 | head -c 5`, then Ctrl-C: the logs of its
/// shutdown go nowhere, and it still exits 0.
#[test]
fn a_coordinator_logging_into_a_closed_pipe_exits_cleanly() {
    let mut child = Command::new(farm_tests::process::binary("farm-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "off"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start farm-coordinator");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the first line");
    assert!(first.contains("listening on"), "{first}");
    // Both ends read by no one from now on.
    drop(child.stderr.take());

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the coordinator did not stop within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

fn json_lines(process: &Process) -> Vec<serde_json::Value> {
    let log = process.stderr();
    assert!(!log.is_empty());
    log.lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// The fields of the spans a line was logged in, merged.
fn span_field<'a>(line: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|span| span[field].as_str())
}

#[test]
fn json_logs_are_one_object_per_line_and_name_the_worker() {
    let (mut coordinator, address) = start_coordinator(&["--log-format", "json"]);
    let mut worker = start_worker(
        address,
        &[
            "--threads",
            "1",
            "--name",
            "json-worker",
            "--log-format",
            "json",
        ],
    );
    let address = address.to_string();
    wait_for_workers(&address, 1, PROCESS_TIMEOUT);
    json(&farm(&[
        "submit",
        "sqrt",
        "--n",
        "100000",
        "--coordinator",
        &address,
        "--json",
    ]));
    worker.signal("INT");
    assert_eq!(worker.wait(PROCESS_TIMEOUT).code(), Some(0));
    coordinator.signal("INT");
    assert_eq!(coordinator.wait(PROCESS_TIMEOUT).code(), Some(0));

    let worker_lines = json_lines(&worker);
    for line in &worker_lines {
        assert_eq!(
            span_field(line, "worker_name"),
            Some("json-worker"),
            "{line}"
        );
    }
    let coordinator_lines = json_lines(&coordinator);
    let connected = coordinator_lines
        .iter()
        .find(|l| l["fields"]["message"] == "worker connected")
        .expect("a line about the worker connecting");
    assert_eq!(connected["fields"]["name"], "json-worker");
    let disconnected = coordinator_lines
        .iter()
        .find(|l| l["fields"]["message"] == "worker disconnected")
        .expect("a line about the worker leaving");
    assert_eq!(span_field(disconnected, "worker_name"), Some("json-worker"));
}
