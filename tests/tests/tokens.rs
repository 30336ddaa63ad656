//! Tokens with the real binaries: `farm token` makes and derives them,
//! the coordinator refuses to serve a network address without one, and a
//! members-only cluster admits each binary with its own token only,
//! taken from a file or the environment.

use std::path::Path;
use std::time::{Duration, Instant};

use farm_catalog::Function;
use farm_tests::process::{
    PROCESS_TIMEOUT, Process, farm_with_env, json, start_coordinator, start_worker_with_env,
};
use farm_tests::reference;

/// `farm`'s and `farm-worker`'s exit code for a refused token.
const UNAUTHENTICATED: i32 = 4;
const INVALID_INPUT: i32 = 2;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A secret and both role tokens, made by `farm token new`.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let keys = Keys { dir };
        let out = farm_with_env(
            &[
                "token",
                "new",
                "--out",
                keys.str("cluster.secret"),
                "--worker-out",
                keys.str("worker.token"),
                "--client-out",
                keys.str("client.token"),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        keys
    }

    fn str(&self, name: &str) -> &str {
        let path = self.dir.path().join(name);
        // Leaked once per test: the path lives as long as the test.
        Box::leak(
            path.into_os_string()
                .into_string()
                .expect("UTF-8")
                .into_boxed_str(),
        )
    }
}

#[test]
fn farm_token_makes_a_secret_once_and_derives_the_same_tokens() {
    let keys = Keys::new();
    let secret = read(Path::new(keys.str("cluster.secret")));
    assert!(
        secret.starts_with("farm-secret-") && secret.len() == 12 + 64 + 1,
        "{secret}"
    );
    #[cfg(unix)]
    for name in ["cluster.secret", "worker.token", "client.token"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.str(name))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    for role in ["worker", "client"] {
        let out = farm_with_env(&["token", role, keys.str("cluster.secret")], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            read(Path::new(keys.str(&format!("{role}.token"))))
        );
        assert!(text(&out.stdout).starts_with(&format!("farm-{role}-")));
    }
    // Never replaced: a second `new` fails and leaves the secret alone ...
    let again = farm_with_env(&["token", "new", "--out", keys.str("cluster.secret")], &[]);
    assert_eq!(again.status.code(), Some(INVALID_INPUT));
    assert!(
        text(&again.stderr).contains("exists; farm does not replace a secret"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(read(Path::new(keys.str("cluster.secret"))), secret);
    // ... unless asked to keep it, as a set-up step run on every start does.
    let kept = farm_with_env(
        &[
            "token",
            "new",
            "--out",
            keys.str("cluster.secret"),
            "--keep-existing",
            "--client-out",
            keys.str("again.token"),
        ],
        &[],
    );
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert_eq!(read(Path::new(keys.str("cluster.secret"))), secret);
    assert_eq!(
        read(Path::new(keys.str("again.token"))),
        read(Path::new(keys.str("client.token")))
    );
    // A token is not a secret.
    let mixed = farm_with_env(&["token", "worker", keys.str("client.token")], &[]);
    assert_eq!(mixed.status.code(), Some(INVALID_INPUT));
    assert!(
        text(&mixed.stderr).contains("holds a client token, not a cluster secret"),
        "{}",
        text(&mixed.stderr)
    );
}

#[test]
fn with_no_token_the_coordinator_serves_loopback_only() {
    let mut open = Process::start("farm-coordinator", &["--listen", "0.0.0.0:0"]);
    let status = open.wait(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(INVALID_INPUT));
    let stderr = open.stderr();
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 with no token")
            && stderr.contains("farm token new --out cluster.secret"),
        "{stderr}"
    );
    // With a secret it serves any address.
    let keys = Keys::new();
    let mut members = Process::start(
        "farm-coordinator",
        &[
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            keys.str("cluster.secret"),
        ],
    );
    members.wait_for_stdout_line("listening on 0.0.0.0:", PROCESS_TIMEOUT);
    // A coordinator given a token instead of the secret says so.
    let mut mixed = Process::start(
        "farm-coordinator",
        &["--token-file", keys.str("worker.token")],
    );
    assert_eq!(mixed.wait(PROCESS_TIMEOUT).code(), Some(INVALID_INPUT));
    assert!(
        mixed
            .stderr()
            .contains("holds a worker token, not a cluster secret"),
        "{}",
        mixed.stderr()
    );
}

/// Waits until `farm workers` (with the client token) counts `count`.
fn wait_for_workers(address: &str, client_token: &str, count: usize) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        let out = farm_with_env(
            &[
                "workers",
                "--coordinator",
                address,
                "--json",
                "--token-file",
                client_token,
            ],
            &[],
        );
        if out.status.success() && json(&out)["workers"].as_array().map_or(0, Vec::len) == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} workers did not register: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_members_cluster_admits_each_binary_with_its_own_token() {
    let keys = Keys::new();
    let (_coordinator, address) = start_coordinator(&["--token-file", keys.str("cluster.secret")]);

    // Workers: none, or a client's token, are refused, with the reason.
    let mut bare = start_worker_with_env(address, &["--threads", "1"], &[]);
    assert_eq!(
        bare.wait(PROCESS_TIMEOUT).code(),
        Some(UNAUTHENTICATED),
        "{}",
        bare.stderr()
    );
    assert!(
        bare.stderr()
            .contains("this coordinator requires a worker token: pass --token-file FILE"),
        "{}",
        bare.stderr()
    );
    let mut as_client = start_worker_with_env(
        address,
        &["--threads", "1", "--token-file", keys.str("client.token")],
        &[],
    );
    assert_eq!(as_client.wait(PROCESS_TIMEOUT).code(), Some(INVALID_INPUT));
    assert!(
        as_client
            .stderr()
            .contains("holds a client token; farm-worker needs the cluster's worker token"),
        "{}",
        as_client.stderr()
    );
    let _worker = start_worker_with_env(
        address,
        &["--threads", "1"],
        &[("FARM_TOKEN_FILE", keys.str("worker.token"))],
    );
    let address = address.to_string();
    wait_for_workers(&address, keys.str("client.token"), 1);

    // Clients: no token, exit 4 and what to pass.
    let submit = [
        "submit",
        "sqrt",
        "--n",
        "2000003",
        "--coordinator",
        address.as_str(),
        "--json",
    ];
    let out = farm_with_env(&submit, &[]);
    assert_eq!(out.status.code(), Some(UNAUTHENTICATED));
    assert_eq!(
        text(&out.stderr),
        "farm: this coordinator requires a client token: pass --token-file FILE or set FARM_TOKEN_FILE (or FARM_TOKEN) to the cluster's client token (`farm token client SECRET_FILE` makes it from the coordinator's secret)\n"
    );
    let workers = ["workers", "--coordinator", address.as_str()];
    let status = ["status", "1", "--coordinator", address.as_str()];
    for command in [&workers[..], &status[..]] {
        let out = farm_with_env(command, &[]);
        assert_eq!(out.status.code(), Some(UNAUTHENTICATED), "{command:?}");
    }
    // Another cluster's client token: refused.
    let other = Keys::new();
    let out = farm_with_env(&submit, &[("FARM_TOKEN_FILE", other.str("client.token"))]);
    assert_eq!(out.status.code(), Some(UNAUTHENTICATED));
    assert!(
        text(&out.stderr).starts_with("farm: this coordinator refused the client token given"),
        "{}",
        text(&out.stderr)
    );
    // A worker's token is caught before it is sent.
    let out = farm_with_env(&submit, &[("FARM_TOKEN_FILE", keys.str("worker.token"))]);
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    assert!(
        text(&out.stderr).contains("holds a worker token; farm needs the cluster's client token"),
        "{}",
        text(&out.stderr)
    );

    // The client token, from the environment itself: the job runs, and
    // its values come on a value connection.
    let client_token = read(Path::new(keys.str("client.token")));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("out.bin");
    let file = file.to_str().expect("UTF-8");
    let mut with_output = submit.to_vec();
    with_output.extend(["--output", file]);
    let out = farm_with_env(&with_output, &[("FARM_TOKEN", client_token.trim())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = json(&out);
    assert_eq!(
        summary["digest"].as_str(),
        Some(
            reference::summary(Function::Sqrt, 0, 2_000_003)
                .digest
                .to_string()
                .as_str()
        )
    );
    assert!(
        std::fs::read(file).expect("the output") == reference::bytes(Function::Sqrt, 0, 2_000_003)
    );
    let out = farm_with_env(
        &[
            "status",
            &summary["job_id"].to_string(),
            "--coordinator",
            &address,
            "--token-file",
            keys.str("client.token"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Health is open to probes that hold no token.
    let out = farm_with_env(&["health", "--coordinator", &address], &[]);
    assert_eq!(text(&out.stdout), "SERVING\n", "{}", text(&out.stderr));
}

#[test]
fn the_embedded_default_needs_no_token() {
    let out = farm_with_env(
        &["submit", "sqrt", "--n", "3e6", "--json"],
        &[
            ("FARM_TOKEN_FILE", "/nonexistent/client.token"),
            ("FARM_TOKEN", "not a token"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["mode"], "embedded");
}
