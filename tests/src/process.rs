//! Running the real binaries: find them, start them, read what they say,
//! signal them, and always reap them (on drop, also when a test fails).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to start listening or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of a workspace binary (`farm`, `farm-coordinator`,
/// `farm-worker`), built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins, as tests/run does)",
        path.display()
    );
    path
}

/// A child process that is killed and reaped when dropped; its stderr is
/// kept in a file so a failing test can show the tail.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `name` with `args`; stdout is piped, stderr goes to a file.
    pub fn start(name: &str, args: &[&str]) -> Process {
        Process::start_with_env(name, args, &[])
    }

    /// Like [`Process::start`], with extra environment variables.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let child = Command::new(binary(name))
            .args(args)
            .env("RUST_LOG", "info")
            // Coordinators run side by side: none may take the default
            // metrics port.
            .env("FARM_HTTP", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let mut text = String::new();
        let _ =
            std::fs::File::open(self.stderr.path()).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Reads stdout lines until one contains `marker`, within `timeout`.
    pub fn wait_for_stdout_line(&mut self, marker: &str, timeout: Duration) -> String {
        let stdout = self
            .child
            .stdout
            .take()
            .expect("stdout is piped and unread");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} did not print '{marker}' within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                ),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- {} stderr (tail) ---\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
        }
    }
}

/// Starts `farm-coordinator` on an ephemeral loopback port.
pub fn start_coordinator(extra: &[&str]) -> (Process, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut coordinator = Process::start("farm-coordinator", &args);
    let line = coordinator.wait_for_stdout_line("listening on", PROCESS_TIMEOUT);
    let address = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in '{line}'"));
    (coordinator, address)
}

/// Starts `farm-worker` connected to `address`.
pub fn start_worker(address: SocketAddr, extra: &[&str]) -> Process {
    start_worker_with_env(address, extra, &[])
}

/// Like [`start_worker`], with extra environment variables (e.g.
/// `FARM_TEST_FAULTS`).
pub fn start_worker_with_env(address: SocketAddr, extra: &[&str], env: &[(&str, &str)]) -> Process {
    let address = address.to_string();
    let mut args = vec!["--connect", address.as_str()];
    args.extend_from_slice(extra);
    Process::start_with_env("farm-worker", &args, env)
}

/// Runs `farm` to completion (bounded by [`PROCESS_TIMEOUT`]) and returns
/// its output.
pub fn farm(args: &[&str]) -> Output {
    farm_with_env(args, &[])
}

/// Like [`farm`], with extra environment variables.
pub fn farm_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    farm_bounded(args, env, PROCESS_TIMEOUT)
}

/// Runs `farm`, killing it (and failing the test) after `timeout`.
pub fn farm_bounded(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = Command::new(binary("farm"));
    command.args(args).env_remove("FARM_COORDINATOR");
    for (key, value) in env {
        command.env(key, value);
    }
    run_bounded(command, timeout).expect("start farm")
}

/// Runs `farm` with `input` on its stdin (e.g. `farm digest -`), bounded
/// by [`PROCESS_TIMEOUT`].
pub fn farm_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    let mut command = Command::new(binary("farm"));
    command.args(args).env_remove("FARM_COORDINATOR");
    run_bounded_with_stdin(command, Some(input), PROCESS_TIMEOUT).expect("start farm")
}

/// Runs a command to completion with its output captured, killing it (and
/// failing the test) after `timeout`. Errs only if it cannot be started.
pub fn run_bounded(command: Command, timeout: Duration) -> std::io::Result<Output> {
    run_bounded_with_stdin(command, None, timeout)
}

/// Like [`run_bounded`], with `input` (if any) written to the command's
/// stdin, which is then closed; without it, stdin is empty.
pub fn run_bounded_with_stdin(
    mut command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<Output> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = format!("{command:?}");
    let mut child = command.spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // From a thread: the child may fill its stdout before it has read
        // all its input. A child that stops reading ends the write early.
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{described} did not finish within {timeout:?}");
        }
    }
}

/// Parses the single JSON object `farm ... --json` prints.
pub fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "farm failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "farm printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Asserts that a `farm ... --json` summary equals `expected` bit for bit
/// (n, sum, min, max and digest).
pub fn assert_summary_json(value: &serde_json::Value, expected: &farm_catalog::Summary) {
    assert_eq!(value["n"].as_u64(), Some(expected.n), "n in {value}");
    for (key, want) in [
        ("sum", expected.sum),
        ("min", expected.min),
        ("max", expected.max),
    ] {
        assert_eq!(
            value[key].as_f64().map(f64::to_bits),
            Some(want.to_bits()),
            "{key} in {value}"
        );
    }
    assert_eq!(
        value["digest"].as_str(),
        Some(expected.digest.to_string().as_str()),
        "digest in {value}"
    );
}

/// Polls `farm workers` until the coordinator at `address` has exactly
/// `count` workers, failing the test after `timeout`.
pub fn wait_for_workers(address: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = farm(&["workers", "--coordinator", address, "--json"]);
        if out.status.success() && json(&out)["workers"].as_array().map_or(0, Vec::len) == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} workers did not register at {address} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
