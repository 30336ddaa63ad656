//! Users' own functions as WebAssembly modules, through the real
//! binaries: the examples against references computed independently in
//! Python, every output format, a cluster that loses a worker mid-job,
//! and each refusal and failure as a user sees it (exit code and message),
//! with the workers still connected and the next job exact.
//! Needs python3 with numpy (tests/requirements.txt).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use farm_catalog::Function;
use farm_tests::faults::{
    FaultCluster, JOB_TIMEOUT, STATE_TIMEOUT, counter, submit_function, worker_count,
};
use farm_tests::process::{
    Process, assert_summary_json, farm, farm_bounded, json, start_coordinator, start_worker,
};
use farm_tests::reference;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    path.to_str().expect("a UTF-8 path").to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Element `i` of each example for `x = start + i`, computed the plain
/// way in Python, compared bit for bit with the values in `path`.
const PYTHON_REFERENCE: &str = r#"
import sys, numpy
example, path, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if path.endswith(".npy"):
    a = numpy.load(path)
elif path.endswith(".bin"):
    a = numpy.fromfile(path, dtype="<f8")
else:
    a = numpy.loadtxt(path, dtype="<f8", ndmin=1)

def collatz(x):
    steps = 0
    while x > 1:
        x = x // 2 if x % 2 == 0 else (3 * x + 1) % 2**64
        steps += 1
    return float(steps)

def prime(x):
    if x < 2:
        return 0.0
    d = 2
    while d * d <= x:
        if x % d == 0:
            return 0.0
        d += 1
    return 1.0

def mandelbrot(start, n):
    x = numpy.arange(start, start + n, dtype=numpy.uint64)
    step = 2.5 / 1024
    cx = -2.0 + (x & numpy.uint64(1023)).astype(numpy.float64) * step
    cy = -1.25 + ((x >> numpy.uint64(10)) & numpy.uint64(1023)).astype(numpy.float64) * step
    zr = numpy.zeros(n)
    zi = numpy.zeros(n)
    count = numpy.zeros(n, dtype=numpy.int64)
    active = numpy.ones(n, dtype=bool)
    while True:
        zr2, zi2 = zr * zr, zi * zi
        active &= ~(zr2 + zi2 > 4.0) & (count < 1000)
        if not active.any():
            return count.astype(numpy.float64)
        zi = numpy.where(active, (zr + zr) * zi + cy, zi)
        zr = numpy.where(active, (zr2 - zi2) + cx, zr)
        count += active

if example == "sqrt":
    expected = numpy.sqrt(numpy.arange(start, start + n, dtype=numpy.float64))
elif example == "mandelbrot":
    expected = mandelbrot(start, n)
else:
    f = {"collatz": collatz, "prime": prime}[example]
    expected = numpy.array([f(x) for x in range(start, start + n)], dtype=numpy.float64)
assert a.shape == (n,), a.shape
same = a.view(numpy.uint64) == expected.view(numpy.uint64)
if not same.all():
    i = int(numpy.argmin(same))
    sys.exit(f"element {i} (x = {start + i}): farm {a[i]!r}, python {expected[i]!r}")
print("ok")
"#;

fn assert_python_agrees(example: &str, path: &Path, start: u64, n: u64) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_REFERENCE)
        .arg(example)
        .arg(path)
        .arg(start.to_string())
        .arg(n.to_string())
        .output()
        .expect("python3 runs (install tests/requirements.txt)");
    assert!(
        out.status.success(),
        "{example} from {start}: {}",
        stderr(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// `farm digest FILE --json`: the summary of the values in a file.
fn digest_of(path: &Path) -> serde_json::Value {
    json(&farm(&[
        "digest",
        path.to_str().expect("a UTF-8 path"),
        "--json",
    ]))
}

fn assert_same_summary(job: &serde_json::Value, file: &serde_json::Value) {
    for key in ["n", "sum", "min", "max", "digest"] {
        assert_eq!(job[key], file[key], "{key}: job {job}, file {file}");
    }
}

#[test]
fn examples_match_python_in_every_output_format() {
    let dir = tempfile::tempdir().unwrap();
    // (example, start, n, output file, extra flags): uneven costs, chunk
    // sizes forced and not, every file format.
    let cases: [(&str, u64, u64, &str, &[&str]); 3] = [
        (
            "collatz",
            1,
            20_000,
            "collatz.npy",
            &["--chunk-size", "4096"],
        ),
        ("prime", 1_000_000, 20_000, "prime.bin", &[]),
        // Rows 500..516 of the grid: through the middle of the set.
        (
            "mandelbrot",
            500 * 1024,
            16 * 1024,
            "mandelbrot.csv",
            &["--chunk-size", "5000"],
        ),
    ];
    for (name, start, n, file, flags) in cases {
        let path = dir.path().join(file);
        let module = example(&format!("{name}.wat"));
        let (start_text, n_text) = (start.to_string(), n.to_string());
        let mut args = vec![
            "submit",
            &module,
            "--start",
            &start_text,
            "--n",
            &n_text,
            "--output",
            path.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(flags);
        let job = json(&farm(&args));
        assert_eq!(job["function"], format!("{name}.wat"), "{job}");
        assert_eq!(job["start"].as_u64(), Some(start));
        assert_python_agrees(name, &path, start, n);
        assert_same_summary(&job, &digest_of(&path));
    }

    // Values on stdout as text, the summary on stderr.
    let out = farm(&[
        "submit",
        &example("sqrt.wat"),
        "--start",
        "3",
        "--n",
        "70000",
        "--output",
        "-",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = dir.path().join("sqrt.txt");
    std::fs::write(&text, &out.stdout).unwrap();
    assert_python_agrees("sqrt", &text, 3, 70_000);
}

#[test]
fn the_sqrt_examples_give_the_built_in_bits() {
    let expected = reference::summary(Function::Sqrt, 5, 3_000_000);
    for module in ["sqrt.wat", "sqrt_simd.wat"] {
        let job = json(&farm(&[
            "submit",
            &example(module),
            "--start",
            "5",
            "--n",
            "3e6",
            "--json",
        ]));
        assert_summary_json(&job, &expected);
    }
}

#[test]
fn a_module_on_a_cluster_survives_a_killed_worker() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let address = cluster.address_text();
    let module = example("collatz.wat");
    // The reference: the same job embedded, on this process's threads,
    // bounded as a cluster job is (it is long enough to kill a worker in).
    let (start, n) = (1u64 << 32, 30_000_000u64);
    let (start_text, n_text) = (start.to_string(), n.to_string());
    let args = [
        "submit",
        &module,
        "--start",
        &start_text,
        "--n",
        &n_text,
        "--json",
    ];
    let expected = json(&farm_bounded(&args, &[], JOB_TIMEOUT));

    let job = submit_function(&address, &module, start, n, &["--chunk-size", "65536"]);
    let status = cluster.wait_for("w-2 to hold a lease of the job", |s| {
        s["running_jobs"].as_u64() == Some(1) && worker_count(s, "w-2", "leases_held") > 0
    });
    let retries = counter(&status, "retries");
    cluster.workers[1].signal("KILL");
    let (out, _) = job.finish();
    let done = json(&out);
    assert_same_summary(&done, &expected);
    let after = cluster.status();
    assert!(
        counter(&after, "retries") > retries,
        "the killed worker's leases were retried: {after}"
    );
    assert_eq!(counter(&after, "chunk_failures"), 0, "{after}");
    for name in ["w-1", "w-3"] {
        assert!(
            worker_count(&after, name, "chunks_completed") > 0,
            "{name}: {after}"
        );
    }
}

/// A module whose `f` does `body` with the argument in local 0.
fn write_module(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text =
        format!(r#"(module (memory 1) (func (export "f") (param $x i64) (result f64) {body}))"#);
    std::fs::write(&path, text).expect("the module is written");
    path
}

/// Runs `farm submit` of `module` (with `args`) against `address`.
fn submit(address: &str, module: &Path, args: &[&str]) -> Output {
    let module = module.to_str().expect("a UTF-8 path");
    let mut all = vec!["submit", module, "--coordinator", address];
    all.extend_from_slice(args);
    farm(&all)
}

/// A coordinator and one single-threaded worker, as processes (killed on
/// drop), and the coordinator's address.
fn one_worker(coordinator_flags: &[&str], worker_flags: &[&str]) -> (Process, Process, String) {
    let (coordinator, address) = start_coordinator(coordinator_flags);
    let mut flags = vec!["--threads", "1"];
    flags.extend_from_slice(worker_flags);
    let worker = start_worker(address, &flags);
    let address = address.to_string();
    farm_tests::process::wait_for_workers(&address, 1, STATE_TIMEOUT);
    (coordinator, worker, address)
}

/// Submits `module` with `args` to `address`, which must fail the job
/// (exit 1); returns what `farm` said.
fn failed_job(address: &str, module: &Path, args: &[&str]) -> String {
    let out = submit(address, module, args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    stderr(&out)
}

/// The cluster is whole and a built-in job on it is exact.
fn assert_next_job_exact(address: &str, workers: usize) {
    let status = json(&farm(&["workers", "--coordinator", address, "--json"]));
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(workers),
        "{status}"
    );
    let job = json(&farm(&[
        "submit",
        "sqrt",
        "--n",
        "2e6",
        "--coordinator",
        address,
        "--json",
    ]));
    assert_summary_json(&job, &reference::summary(Function::Sqrt, 0, 2_000_000));
}

#[test]
fn refusals_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _worker, address) = one_worker(&["--max-module-bytes", "300"], &[]);

    let imports = dir.path().join("clock.wat");
    std::fs::write(
        &imports,
        r#"(module (import "wasi_snapshot_preview1" "clock_time_get" (func)) (func (export "f") (param i64) (result f64) f64.const 1))"#,
    )
    .unwrap();
    let not_wasm = dir.path().join("junk.wasm");
    std::fs::write(&not_wasm, b"\0asm\x01\0\0\0\x01\x05junk").unwrap();
    let not_text = dir.path().join("junk.wat");
    std::fs::write(&not_text, "(module (func $f (export \"f\")").unwrap();
    let no_f = dir.path().join("g.wat");
    std::fs::write(
        &no_f,
        r#"(module (func (export "g") (param i64) (result f64) f64.const 1))"#,
    )
    .unwrap();
    let wrong_type = dir.path().join("f32.wat");
    std::fs::write(
        &wrong_type,
        r#"(module (func (export "f") (param i32) (result f32) f32.const 1))"#,
    )
    .unwrap();
    let large = write_module(
        dir.path(),
        "large.wat",
        &format!(";; {}\n f64.const 1", "padding ".repeat(40)),
    );
    let large_bytes = std::fs::metadata(&large).unwrap().len();
    let missing = dir.path().join("missing.wasm");
    let cases: [(&Path, String); 7] = [
        (
            &imports,
            "module imports wasi_snapshot_preview1::clock_time_get: farm grants no imports (no WASI, no host functions)".to_owned(),
        ),
        (&not_wasm, "not a valid WebAssembly module: ".to_owned()),
        (&not_text, "module text (.wat) does not parse: ".to_owned()),
        (
            &no_f,
            "module exports neither `f: (i64) -> f64` nor `fill: (i64, i32, i32) -> ()`".to_owned(),
        ),
        (
            &wrong_type,
            "export `f` must be a function (i64) -> f64, found a function (i32) -> f32".to_owned(),
        ),
        // Only the coordinator's limit (300 bytes) refuses this one.
        (
            &large,
            format!("WebAssembly module refused: module is {large_bytes} bytes, over the limit of 300 bytes"),
        ),
        (&missing, format!("cannot read {}: ", missing.display())),
    ];
    for (module, message) in cases {
        let out = submit(&address, module, &["--n", "100"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            module.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&message),
            "{}: expected {message:?} in {:?}",
            module.display(),
            stderr(&out)
        );
    }
    assert_next_job_exact(&address, 1);
}

#[test]
fn a_trap_fails_the_job_at_once_naming_the_element() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FaultCluster::start(&[], 2, &[]);
    let address = cluster.address_text();
    // Divides by zero at x = 1007 (element 1000 of a job from 7).
    let trap = write_module(
        dir.path(),
        "trap.wat",
        "(f64.convert_i64_s (i64.div_u (i64.const 1) (i64.sub (local.get $x) (i64.const 1007))))",
    );
    let before = cluster.status();
    let message = failed_job(&address, &trap, &["--start", "7", "--n", "1e6"]);
    assert!(
        message.contains("element 1000 (argument 1007) of chunk [0, ")
            && message.contains(") trapped: integer divide by zero"),
        "{message}"
    );
    let after = cluster.status();
    // Deterministic: failed at its first try, never retried.
    assert_eq!(
        counter(&after, "retries"),
        counter(&before, "retries"),
        "{after}"
    );
    assert_eq!(
        counter(&after, "jobs_failed"),
        counter(&before, "jobs_failed") + 1
    );
    assert_next_job_exact(&address, 2);
}

#[test]
fn an_endless_loop_fails_its_chunk_at_the_time_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _worker, address) = one_worker(&[], &["--wasm-chunk-time", "2s"]);
    let endless = write_module(
        dir.path(),
        "endless.wat",
        "(loop $forever (br $forever)) f64.const 0",
    );
    // Small chunks: several in the worker's hands when the first fails.
    let message = failed_job(&address, &endless, &["--n", "1e5", "--chunk-size", "4096"]);
    assert!(
        message.contains("failed after 1 attempt(s)")
            && message.contains(") failed: ran past the time bound of 2s per chunk"),
        "{message}"
    );
    // One bound, not one per try or per chunk: nothing was retried.
    let status = json(&farm(&["workers", "--coordinator", &address, "--json"]));
    assert_eq!(counter(&status, "retries"), 0, "{status}");
    assert_next_job_exact(&address, 1);
}

#[test]
fn memory_past_the_worker_limit_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _worker, address) = one_worker(&[], &["--wasm-memory-mib", "8"]);
    // 200 pages (12.5 MiB) more on every call.
    let greedy = write_module(
        dir.path(),
        "greedy.wat",
        "(f64.convert_i32_s (memory.grow (i32.const 200)))",
    );
    let message = failed_job(&address, &greedy, &["--n", "1e4"]);
    assert!(
        message.contains("over the limit of 8388608 bytes"),
        "{message}"
    );
    assert_next_job_exact(&address, 1);
}
