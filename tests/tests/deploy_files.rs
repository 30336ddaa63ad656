//! The deploy files, checked offline by the tools that would read them:
//! the Kubernetes manifests (deploy/kubernetes) against Kubernetes' own
//! JSON schemas, strictly, and against each other and the binaries' flags;
//! the systemd unit (deploy/systemd) with `systemd-analyze verify` and
//! `systemd-analyze security`. Each tool also gets broken copies, as a
//! negative control: a check that cannot fail proves nothing.
//!
//! Needs python3 with kubernetes-validate (tests/requirements.txt, which
//! tests/run installs) and systemd-analyze (Debian's `systemd` package).
//! A missing tool fails the test, saying how to install it: nothing here
//! is skipped.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any external tool may run before it is killed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The Kubernetes release whose schemas the manifests are validated
/// against. kubernetes-validate 1.37.0 (pinned in tests/requirements.txt)
/// bundles 1.33 to 1.37; 1.35 rather than the newest, so the manifests use
/// nothing that only the newest clusters accept.
const KUBERNETES_VERSION: &str = "1.35";

/// The worker's default `--drain-grace`, in seconds (checked against
/// `farm-worker --help` below).
const DRAIN_GRACE_SECS: u64 = 30;

/// The coordinator's shutdown grace for open streams, in seconds
/// (`SHUTDOWN_GRACE` in coordinator/src/main.rs).
const COORDINATOR_SHUTDOWN_SECS: u64 = 10;

const PIP_HINT: &str = "install it with `python3 -m pip install -r tests/requirements.txt` \
     (tests/run does this first)";
const SYSTEMD_HINT: &str = "install it with `apt-get install -y systemd` (Debian's systemd \
     package has systemd-analyze)";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn systemd_dir() -> PathBuf {
    repo().join("deploy/systemd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Running tools, bounded

fn drain_pipe(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `command` to completion and returns its output, killing it (and
/// failing the test) after [`TOOL_TIMEOUT`]. If the program cannot be
/// found, the test fails with `install` as advice.
fn run(command: &mut Command, install: &str) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not installed: {install}")
        }
        Err(e) => panic!("cannot start {command:?}: {e}"),
    };
    // Read both pipes while waiting, so a chatty tool never blocks.
    let stdout = drain_pipe(child.stdout.take().expect("stdout is piped"));
    let stderr = drain_pipe(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the tool") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {TOOL_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout and stderr together, for failure messages.
fn both(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Fails the test unless python3 can import `module`.
fn require_python_module(module: &str, package: &str) {
    let out = run(
        Command::new("python3").args(["-c", &format!("import {module}")]),
        "install Python 3 (Debian: apt-get install -y python3)",
    );
    assert!(
        out.status.success(),
        "python3 cannot import {module}: the PyPI package {package} is missing; {PIP_HINT}\n{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// kubernetes-validate

/// Runs kubernetes-validate in strict mode (unknown fields are errors)
/// against [`KUBERNETES_VERSION`], in `dir`.
fn kubernetes_validate(dir: &Path, files: &[&str]) -> Output {
    require_python_module("kubernetes_validate", "kubernetes-validate");
    // `python3 -m` rather than the console script: it is the interpreter
    // pip installed into, whatever PATH (or pyenv's shims) say.
    run(
        Command::new("python3")
            .current_dir(dir)
            .args(["-m", "kubernetes_validate", "--strict", "-k"])
            .arg(format!("{KUBERNETES_VERSION}.0"))
            .args(files),
        PIP_HINT,
    )
}

/// Judges a kubernetes-validate run: Ok with the resources (`kind/name`)
/// that passed when it exited 0, every line of its report says a resource
/// passed against [`KUBERNETES_VERSION`] itself (not an older fallback),
/// and nothing else was said. The exit status alone is not enough: for a
/// kind or apiVersion it has no schema for, the validator only prints a
/// WARN line and exits 0.
fn judge_validation(output: &Output) -> Result<Vec<String>, String> {
    if !output.status.success() {
        return Err(format!("the validator failed\n{}", both(output)));
    }
    if !output.stderr.is_empty() {
        return Err(format!("the validator wrote to stderr\n{}", both(output)));
    }
    let suffix = format!(" against version {KUBERNETES_VERSION}");
    let mut passed = Vec::new();
    for line in text(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let resource = line
            .strip_prefix("INFO ")
            .and_then(|rest| rest.split_once(" passed for resource "))
            .and_then(|(_, rest)| rest.strip_suffix(&suffix));
        match resource {
            Some(resource) => passed.push(resource.to_owned()),
            None => return Err(format!("unexpected line: {line}\n{}", both(output))),
        }
    }
    if passed.is_empty() {
        return Err(format!("nothing was validated\n{}", both(output)));
    }
    Ok(passed)
}

#[test]
fn kubernetes_manifests_validate_strictly_against_the_schemas() {
    let output = kubernetes_validate(&kubernetes_dir(), &["coordinator.yaml", "worker.yaml"]);
    let passed = judge_validation(&output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        passed,
        [
            "deployment/farm-coordinator",
            "service/farm-coordinator",
            "deployment/farm-worker"
        ],
        "{}",
        both(&output)
    );
}

/// `text` with its first line whose key is `key` (`  key: value`) made
/// `new_key: new_value`, indentation kept; `None` keeps the value.
fn edit_line(text: &str, key: &str, new_key: &str, new_value: Option<&str>) -> String {
    let prefix = format!("{key}:");
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            if done || !body.starts_with(&prefix) {
                return line.to_owned();
            }
            done = true;
            let indent = &line[..line.len() - body.len()];
            let value = new_value.unwrap_or_else(|| body[prefix.len()..].trim());
            format!("{indent}{new_key}: {value}")
        })
        .collect();
    assert!(done, "no line with the key {key}");
    lines.join("\n") + "\n"
}

#[test]
fn the_validator_rejects_broken_manifests() {
    let worker = read(&kubernetes_dir().join("worker.yaml"));
    let dir = tempfile::tempdir().unwrap();
    // (what is broken, the broken manifest, the field the validator must
    // name; None: the validator only warns, which judge_validation must
    // reject)
    let cases = [
        (
            "a string where an integer belongs",
            edit_line(&worker, "replicas", "replicas", Some("\"three\"")),
            Some("spec.replicas"),
        ),
        (
            "an unknown field (strict mode)",
            edit_line(
                &worker,
                "terminationGracePeriodSeconds",
                "terminationGracePeriodSecond",
                None,
            ),
            Some("terminationGracePeriodSecond"),
        ),
        (
            "an apiVersion with no schema",
            edit_line(&worker, "apiVersion", "apiVersion", Some("apps/v2")),
            None,
        ),
    ];
    for (what, broken, names) in cases {
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).unwrap();
        let output = kubernetes_validate(dir.path(), &["broken.yaml"]);
        assert!(
            judge_validation(&output).is_err(),
            "{what} passed: {}",
            both(&output)
        );
        let stdout = text(&output.stdout);
        match names {
            Some(field) => {
                assert!(
                    !output.status.success(),
                    "{what}: exit 0\n{}",
                    both(&output)
                );
                assert!(
                    stdout.contains("ERROR") && stdout.contains(field),
                    "{what}: no error naming {field}\n{}",
                    both(&output)
                );
            }
            None => assert!(
                stdout.contains("WARN"),
                "{what}: no warning\n{}",
                both(&output)
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// The manifests, read as data

/// The documents of each manifest file, by file name, parsed by PyYAML
/// (which kubernetes-validate brings) and handed over as JSON.
struct Manifests {
    files: serde_json::Map<String, Value>,
}

impl Manifests {
    fn load() -> Manifests {
        require_python_module("yaml", "PyYAML (a dependency of kubernetes-validate)");
        let script = r#"
import json, sys, yaml
docs = {}
for path in sys.argv[1:]:
    with open(path) as f:
        docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
print(json.dumps(docs))
"#;
        let output = run(
            Command::new("python3")
                .current_dir(kubernetes_dir())
                .args(["-c", script])
                .args(["coordinator.yaml", "worker.yaml", "kustomization.yaml"]),
            PIP_HINT,
        );
        assert!(
            output.status.success(),
            "parsing the YAML failed\n{}",
            both(&output)
        );
        let files = match serde_json::from_slice(&output.stdout) {
            Ok(Value::Object(files)) => files,
            other => panic!("the YAML parser printed no JSON object: {other:?}"),
        };
        Manifests { files }
    }

    fn documents(&self, file: &str) -> &[Value] {
        self.files[file].as_array().expect("a list of documents")
    }

    /// The one document of `kind` named `name` in `file`.
    fn get(&self, file: &str, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .documents(file)
            .iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{file} has one {kind} {name}");
        found[0]
    }
}

/// The one container of a Deployment.
fn only_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect()
}

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let equals = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        if *arg == flag {
            Some(*args.get(i + 1).expect("a value after the flag"))
        } else {
            arg.strip_prefix(&equals)
        }
    })
}

/// The port of `HOST:PORT`.
fn port_of(address: &str) -> u64 {
    let (_, port) = address.rsplit_once(':').expect("HOST:PORT");
    port.parse()
        .unwrap_or_else(|e| panic!("port of {address}: {e}"))
}

/// A container port given as a number or by name, as a number.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The container ports a container declares.
fn declared_ports(container: &Value) -> Vec<u64> {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["containerPort"].as_u64().expect("containerPort"))
        .collect()
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector map");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// A Kubernetes CPU quantity (2, "2", "1500m", "0.5") in millicores.
fn millicores(quantity: &Value) -> u64 {
    let text = match quantity {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("a CPU quantity: {other}"),
    };
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse().unwrap_or_else(|e| panic!("CPU {text}: {e}"));
    }
    let cores: f64 = text.parse().unwrap_or_else(|e| panic!("CPU {text}: {e}"));
    (cores * 1000.0).round() as u64
}

#[test]
fn the_manifests_agree_with_each_other() {
    let m = Manifests::load();
    let coordinator = m.get("coordinator.yaml", "Deployment", "farm-coordinator");
    let service = m.get("coordinator.yaml", "Service", "farm-coordinator");
    let worker = m.get("worker.yaml", "Deployment", "farm-worker");
    let kustomization = match m.documents("kustomization.yaml") {
        [one] if one["kind"] == "Kustomization" => one,
        other => panic!("kustomization.yaml holds one Kustomization: {other:?}"),
    };
    let coordinator_pod = &coordinator["spec"]["template"];
    let worker_pod = &worker["spec"]["template"];
    let c = only_container(coordinator);
    let w = only_container(worker);

    // One coordinator, never two at once.
    assert_eq!(coordinator["spec"]["replicas"], 1);
    assert_eq!(coordinator["spec"]["strategy"]["type"], "Recreate");

    // Each Deployment selects its own pods and not the other's; the
    // Service selects the coordinator and not the workers.
    let coordinator_selector = &coordinator["spec"]["selector"]["matchLabels"];
    let worker_selector = &worker["spec"]["selector"]["matchLabels"];
    let service_selector = &service["spec"]["selector"];
    assert!(selects(
        coordinator_selector,
        &coordinator_pod["metadata"]["labels"]
    ));
    assert!(!selects(
        coordinator_selector,
        &worker_pod["metadata"]["labels"]
    ));
    assert!(selects(worker_selector, &worker_pod["metadata"]["labels"]));
    assert!(!selects(
        worker_selector,
        &coordinator_pod["metadata"]["labels"]
    ));
    assert!(
        selects(service_selector, &coordinator_pod["metadata"]["labels"]),
        "the Service selects the coordinator pods"
    );
    assert!(
        !selects(service_selector, &worker_pod["metadata"]["labels"]),
        "the Service does not select workers"
    );
    for pod in [coordinator_pod, worker_pod] {
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "farm");
    }

    // The coordinator listens where its port, its probes and the Service
    // point.
    let coordinator_args = args(c);
    assert_eq!(coordinator_args[0], "farm-coordinator");
    let listen = port_of(flag(&coordinator_args, "--listen").expect("--listen"));
    assert_eq!(
        declared_ports(c),
        [listen],
        "the coordinator declares its --listen port"
    );
    assert_eq!(resolve_port(c, &Value::from("grpc")), listen);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            c[probe]["grpc"]["port"].as_u64(),
            Some(listen),
            "coordinator {probe} is a grpc probe on --listen"
        );
    }
    let service_ports = service["spec"]["ports"].as_array().expect("Service ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(resolve_port(c, &service_ports[0]["targetPort"]), listen);
    assert_eq!(service["spec"]["type"], "ClusterIP");

    // Workers dial the Service.
    let worker_args = args(w);
    assert_eq!(worker_args[0], "farm-worker");
    let connect = flag(&worker_args, "--connect").expect("--connect");
    let (host, _) = connect.rsplit_once(':').expect("HOST:PORT");
    assert_eq!(
        host, service["metadata"]["name"],
        "--connect names the Service"
    );
    assert_eq!(
        Some(port_of(connect)),
        service_ports[0]["port"].as_u64(),
        "--connect uses the Service's port"
    );

    // The worker's probes ask its --health-listen port: readiness by gRPC
    // (SERVING = connected), liveness by TCP only (alive while
    // reconnecting), so a coordinator restart never restarts workers.
    let health = port_of(flag(&worker_args, "--health-listen").expect("--health-listen"));
    assert_eq!(
        declared_ports(w),
        [health],
        "the worker declares its health port"
    );
    assert_eq!(w["readinessProbe"]["grpc"]["port"].as_u64(), Some(health));
    assert!(
        w["livenessProbe"]["grpc"].is_null(),
        "no grpc liveness probe"
    );
    assert_eq!(
        resolve_port(w, &w["livenessProbe"]["tcpSocket"]["port"]),
        health
    );

    // Sized to cores: CPU request == limit == --threads.
    let threads: u64 = flag(&worker_args, "--threads")
        .expect("--threads")
        .parse()
        .expect("--threads is a number");
    let resources = &w["resources"];
    assert_eq!(millicores(&resources["requests"]["cpu"]), threads * 1000);
    assert_eq!(millicores(&resources["limits"]["cpu"]), threads * 1000);
    assert!(!resources["requests"]["memory"].is_null());
    assert_eq!(
        resources["requests"]["memory"],
        resources["limits"]["memory"]
    );
    assert!(!c["resources"]["requests"]["cpu"].is_null());
    assert!(!c["resources"]["requests"]["memory"].is_null());
    assert!(!c["resources"]["limits"]["memory"].is_null());

    // A drain (--drain-grace) ends before the kubelet's SIGKILL, and a
    // health port closed by the drain never fails liveness before that.
    let drain_grace = match flag(&worker_args, "--drain-grace") {
        Some(grace) => grace
            .strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .expect("--drain-grace in whole seconds"),
        None => DRAIN_GRACE_SECS,
    };
    let grace = worker_pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("worker terminationGracePeriodSeconds");
    assert!(
        grace > drain_grace,
        "worker grace {grace}s <= drain grace {drain_grace}s"
    );
    let liveness = &w["livenessProbe"];
    let fails_after = liveness["periodSeconds"].as_u64().unwrap_or(10)
        * liveness["failureThreshold"].as_u64().unwrap_or(3);
    assert!(
        fails_after >= grace,
        "liveness fails after {fails_after}s, within the {grace}s grace"
    );
    let coordinator_grace = coordinator_pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(coordinator_grace > COORDINATOR_SHUTDOWN_SECS);

    // The worker is named after its pod; both log at a set level.
    let env = |container: &Value, name: &str| -> Value {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in env"))
    };
    assert_eq!(
        env(w, "FARM_WORKER_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(env(w, "RUST_LOG")["value"].is_string());
    assert!(env(c, "RUST_LOG")["value"].is_string());

    // Locked down alike.
    for container in [c, w] {
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["runAsUser"], 10001);
        assert_eq!(security["runAsGroup"], 10001);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    }

    // Members only: the coordinator reads the cluster secret and the
    // workers their token, each from a Secret of its own, readable by
    // the pod's group only.
    let secret_file = |pod: &Value, container: &Value| -> (String, String) {
        let path = env(container, "FARM_TOKEN_FILE")["value"]
            .as_str()
            .expect("FARM_TOKEN_FILE is a path")
            .to_owned();
        let (dir, file) = path.rsplit_once('/').expect("a path in a directory");
        let mount = container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
        assert_eq!(mount["readOnly"], true, "{dir} is mounted read-only");
        let volume = pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        let mode = volume["secret"]["defaultMode"]
            .as_u64()
            .expect("a Secret volume's mode");
        assert_eq!(mode & 0o007, 0, "{dir}: others cannot read it");
        assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 10001);
        let secret = volume["secret"]["secretName"].as_str().expect("secretName");
        (secret.to_owned(), file.to_owned())
    };
    let (coordinator_secret, coordinator_key) = secret_file(coordinator_pod, c);
    let (worker_secret, worker_key) = secret_file(worker_pod, w);
    assert_eq!(coordinator_key, "cluster.secret");
    assert_eq!(worker_key, "worker.token");
    assert_ne!(
        coordinator_secret, worker_secret,
        "workers never see the cluster secret"
    );
    assert!(
        !flag(&coordinator_args, "--listen")
            .expect("--listen")
            .starts_with("127."),
        "the coordinator listens for the other pods, so it needs its secret"
    );

    // kustomization.yaml lists every manifest here, and its images entry
    // is the image the containers run.
    let mut manifests: Vec<String> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    manifests.sort();
    let mut resources: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    resources.sort();
    assert_eq!(
        resources, manifests,
        "kustomization.yaml lists every manifest"
    );
    let image_names: Vec<&Value> = kustomization["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| &i["name"])
        .collect();
    for container in [c, w] {
        let image = container["image"].as_str().expect("image");
        let name = image.split([':', '@']).next().expect("an image name");
        assert!(
            image_names.iter().any(|n| *n == name),
            "kustomization.yaml's images: sets {name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Flags and variables, as the binaries have them

/// `--help` of a workspace binary, whitespace collapsed (clap wraps it).
fn help(binary: &str) -> String {
    help_of(binary, &["--help"])
}

/// What a workspace binary prints for `args` (a help), whitespace
/// collapsed.
fn help_of(binary: &str, args: &[&str]) -> String {
    let mut command = Command::new(farm_tests::process::binary(binary));
    command.args(args);
    // clap prints set variables' values in the help: show none.
    for (key, _) in std::env::vars() {
        if key.starts_with("FARM_") {
            command.env_remove(key);
        }
    }
    let output = run(
        &mut command,
        "build the binaries: cargo build --workspace --bins",
    );
    assert!(
        output.status.success(),
        "{binary} --help\n{}",
        both(&output)
    );
    text(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every `--flag` in `args` is one of `help`'s.
fn assert_flags_exist(args: &[&str], help: &str, whose: &str) {
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let name = arg.split('=').next().expect("a flag");
        assert!(help.contains(&format!("{name} ")), "{whose} has no {name}");
    }
}

#[test]
fn the_deploy_files_use_flags_and_variables_the_binaries_have() {
    let worker_help = help("farm-worker");
    let coordinator_help = help("farm-coordinator");
    assert!(
        worker_help.contains(&format!("[default: {DRAIN_GRACE_SECS}s]")),
        "farm-worker's drain grace is {DRAIN_GRACE_SECS}s: {worker_help}"
    );

    let m = Manifests::load();
    let coordinator = only_container(m.get("coordinator.yaml", "Deployment", "farm-coordinator"));
    let worker = only_container(m.get("worker.yaml", "Deployment", "farm-worker"));
    assert_flags_exist(&args(coordinator), &coordinator_help, "farm-coordinator");
    assert_flags_exist(&args(worker), &worker_help, "farm-worker");
    for (container, help) in [(coordinator, &coordinator_help), (worker, &worker_help)] {
        for variable in container["env"].as_array().expect("env") {
            let name = variable["name"].as_str().expect("a variable name");
            if name != "RUST_LOG" {
                assert!(
                    help.contains(&format!("env: {name}=")),
                    "no variable {name}"
                );
            }
        }
    }

    // The systemd environment file: its variables (set or commented out)
    // are the worker's, but RUST_LOG and the unit's FARM_WORKER_ARGS,
    // whose example flags the worker has.
    let example = read(&systemd_dir().join("worker.env.example"));
    let mut names = Vec::new();
    for line in example.lines() {
        let setting = line.trim_start_matches('#').trim();
        let Some((name, value)) = setting.split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            continue;
        }
        names.push(name.to_owned());
        match name {
            "RUST_LOG" => {}
            "FARM_WORKER_ARGS" => {
                let flags: Vec<&str> = value.split_whitespace().collect();
                assert_flags_exist(&flags, &worker_help, "farm-worker");
            }
            _ => assert!(
                worker_help.contains(&format!("env: {name}=")),
                "no variable {name}"
            ),
        }
    }
    assert!(names.contains(&"FARM_COORDINATOR".to_owned()));
    assert!(
        example
            .lines()
            .any(|l| l == "FARM_COORDINATOR=coordinator.example.com:50051"),
        "the example sets FARM_COORDINATOR"
    );
}

// ---------------------------------------------------------------------------
// systemd

const UNIT: &str = "farm-worker.service";

/// A fake root for `systemd-analyze --root`: the unit, byte for byte, in
/// /etc/systemd/system; the host's unit directory (sysinit.target and the
/// other units every service depends on: verify loads them); and an
/// executable stand-in at /usr/local/bin/farm-worker, since verify checks
/// that ExecStart's program exists. A root keeps the unit exactly as
/// shipped, instead of rewriting its ExecStart.
fn fake_root(unit_text: &str, with_binary: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("a temporary directory");
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .unwrap_or_else(|| panic!("no systemd unit directory on this machine: {SYSTEMD_HINT}"));
    let lib = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&lib).expect("usr/lib/systemd");
    let copied = run(
        Command::new("cp")
            .arg("-a")
            .arg(host_units)
            .arg(lib.join("system")),
        "cp is part of coreutils",
    );
    assert!(
        copied.status.success(),
        "copying the host's units\n{}",
        both(&copied)
    );
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).expect("etc/systemd/system");
    std::fs::write(etc.join(UNIT), unit_text).expect("write the unit");
    if with_binary {
        let bin = root.path().join("usr/local/bin");
        std::fs::create_dir_all(&bin).expect("usr/local/bin");
        let program = bin.join("farm-worker");
        std::fs::write(&program, "#!/bin/sh\nexit 0\n").expect("write the stand-in");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .expect("make the stand-in executable");
    }
    root
}

fn systemd_analyze(root: &Path, args: &[&str]) -> Output {
    run(
        Command::new("systemd-analyze")
            .args(args)
            .arg(format!("--root={}", root.display()))
            .arg(UNIT)
            .env("SYSTEMD_LOG_COLOR", "0")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", ""),
        SYSTEMD_HINT,
    )
}

/// What `systemd-analyze` said, less what is about the machine rather
/// than the unit: in containers it may fail to read kernel or cgroup state
/// (/proc, /sys). Such a line never names the unit; any line that does is
/// kept, whatever it says, and so is anything else.
fn complaints(output: &Output) -> Vec<String> {
    let environmental = |line: &str| {
        !line.contains(UNIT)
            && ["/proc/", "/sys/", "cgroup"]
                .iter()
                .any(|p| line.contains(p))
    };
    [text(&output.stdout), text(&output.stderr)]
        .iter()
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| !line.is_empty() && !environmental(line))
        .collect()
}

fn unit_text() -> String {
    read(&systemd_dir().join(UNIT))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let root = fake_root(&unit_text(), true);
    let output = systemd_analyze(root.path(), &["verify"]);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed\n{}",
        both(&output)
    );
    // verify exits 0 on unknown keys and bad values (it ignores them, as
    // systemd would): only its output tells.
    assert_eq!(
        complaints(&output),
        Vec::<String>::new(),
        "\n{}",
        both(&output)
    );
}

#[test]
fn systemd_analyze_verify_catches_broken_units() {
    let unit = unit_text();
    let cases = [
        ("Restart=on-failure\n", "Restartt=on-failure\n", "Restartt"),
        ("ProtectSystem=strict\n", "ProtectSystem=bogus\n", "bogus"),
    ];
    for (good, bad, says) in cases {
        assert_eq!(unit.matches(good).count(), 1, "the unit has {good:?} once");
        let root = fake_root(&unit.replace(good, bad), true);
        let output = systemd_analyze(root.path(), &["verify"]);
        let complaints = complaints(&output);
        assert!(
            complaints.iter().any(|c| c.contains(says)),
            "no complaint about {bad:?}: {complaints:?}\n{}",
            both(&output)
        );
    }
    // Without the program, verify fails: so it does look for ExecStart's
    // program inside the fake root.
    let root = fake_root(&unit, false);
    let output = systemd_analyze(root.path(), &["verify"]);
    assert!(
        !output.status.success(),
        "verify passed without the program\n{}",
        both(&output)
    );
    assert!(
        complaints(&output)
            .iter()
            .any(|c| c.contains("/usr/local/bin/farm-worker")),
        "{}",
        both(&output)
    );
}

/// The value of the last `key=` in `section` of a unit file.
fn unit_setting<'a>(unit: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let header = format!("[{section}]");
    let mut current = "";
    let mut found = None;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
        } else if current == header
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            found = Some(v.trim());
        }
    }
    found
}

#[test]
fn the_systemd_unit_drains_and_is_hardened() {
    let unit = unit_text();
    let setting = |section: &str, key: &str| {
        unit_setting(&unit, section, key).unwrap_or_else(|| panic!("no {key}= in [{section}]"))
    };
    assert!(setting("Service", "ExecStart").starts_with("/usr/local/bin/farm-worker"));
    assert_eq!(
        setting("Service", "EnvironmentFile"),
        "/etc/farm/worker.env"
    );
    assert_eq!(setting("Service", "Restart"), "on-failure");
    assert_eq!(setting("Service", "KillSignal"), "SIGTERM");
    assert_eq!(setting("Service", "DynamicUser"), "yes");
    let stop: u64 = setting("Service", "TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > DRAIN_GRACE_SECS,
        "TimeoutStopSec {stop}s does not outlast the {DRAIN_GRACE_SECS}s drain"
    );
    // The worker token: a credential only the service can read, never
    // on the command line; a refused token (4) is not restarted.
    let (name, source) = setting("Service", "LoadCredential")
        .split_once(':')
        .expect("LoadCredential=NAME:PATH");
    assert_eq!(source, "/etc/farm/worker.token");
    assert_eq!(
        setting("Service", "Environment"),
        format!("FARM_TOKEN_FILE=%d/{name}")
    );
    assert!(!setting("Service", "ExecStart").contains("token"));
    assert!(
        setting("Service", "RestartPreventExitStatus")
            .split_whitespace()
            .any(|code| code == "4"),
        "a refused token is not retried"
    );
    assert!(setting("Unit", "After").contains("network-online.target"));
    assert!(setting("Unit", "Wants").contains("network-online.target"));
    assert_eq!(setting("Install", "WantedBy"), "multi-user.target");

    // systemd's own exposure score (0 = locked down, 10 = exposed), offline
    // from the unit file: exits non-zero over the threshold (in tenths).
    let root = fake_root(&unit, true);
    let output = systemd_analyze(
        root.path(),
        &["security", "--offline=yes", "--threshold=20"],
    );
    let report = text(&output.stdout);
    assert!(
        output.status.success()
            && report.contains("Overall exposure level for farm-worker.service"),
        "the unit's exposure is over 2.0 (or the analysis failed)\n{}",
        both(&output)
    );
}

// ---------------------------------------------------------------------------
// docker-compose.yml

/// docker-compose.yml, parsed by PyYAML and handed over as JSON.
fn compose_file() -> Value {
    require_python_module("yaml", "PyYAML (a dependency of kubernetes-validate)");
    let script = "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let output = run(
        Command::new("python3")
            .args(["-c", script])
            .arg(repo().join("docker-compose.yml")),
        PIP_HINT,
    );
    assert!(
        output.status.success(),
        "parsing docker-compose.yml failed\n{}",
        both(&output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// `name:path[:ro]` volume entries of a service, as (volume, path, read-only).
fn compose_volumes(service: &Value) -> Vec<(String, String, bool)> {
    service["volumes"]
        .as_array()
        .map(|volumes| {
            volumes
                .iter()
                .map(|v| {
                    let parts: Vec<&str> = v
                        .as_str()
                        .expect("short volume syntax")
                        .split(':')
                        .collect();
                    (
                        parts[0].to_owned(),
                        parts[1].to_owned(),
                        parts.get(2) == Some(&"ro"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_makes_the_secret_and_hands_each_service_only_its_own_token() {
    let compose = compose_file();
    let services = &compose["services"];
    let tokens = &services["tokens"];
    let command: Vec<&str> = tokens["command"]
        .as_array()
        .expect("the tokens service's command")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    assert_eq!(command[..3], ["farm", "token", "new"]);
    assert!(
        command.contains(&"--keep-existing"),
        "a second `up` keeps the secret"
    );
    assert_eq!(tokens["restart"], "no");
    let token_help = help_of("farm", &["token", "new", "--help"]);
    assert_flags_exist(&command, &token_help, "farm token new");
    let written = |flag_name: &str| flag(&command, flag_name).expect(flag_name).to_owned();
    let tokens_volumes = compose_volumes(tokens);

    for (service, flag_name) in [
        ("coordinator", "--out"),
        ("worker", "--worker-out"),
        ("farm", "--client-out"),
    ] {
        let spec = &services[service];
        let path = written(flag_name);
        assert_eq!(
            spec["environment"]["FARM_TOKEN_FILE"],
            path.as_str(),
            "{service} reads what `tokens` wrote"
        );
        let (dir, _) = path.rsplit_once('/').expect("a path in a directory");
        let volume = tokens_volumes
            .iter()
            .find(|(_, mount, _)| mount == dir)
            .unwrap_or_else(|| panic!("`tokens` writes {dir} into a volume"))
            .0
            .clone();
        let mounts = compose_volumes(spec);
        assert_eq!(
            mounts,
            [(volume.clone(), dir.to_owned(), true)],
            "{service} mounts its own key's volume, read-only, and no other"
        );
        assert!(
            compose["volumes"].get(&volume).is_some(),
            "{volume} is declared"
        );
        assert_eq!(
            spec["depends_on"]["tokens"]["condition"], "service_completed_successfully",
            "{service} starts once the tokens are written"
        );
    }
    // The coordinator listens for the other containers, so it must have
    // its secret: without, it would refuse to start.
    let coordinator_command: Vec<&str> = services["coordinator"]["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    assert_eq!(
        flag(&coordinator_command, "--listen"),
        Some("0.0.0.0:50051")
    );
    // The image has the mount points, owned by its user.
    for file in ["deploy/Dockerfile", "deploy/Dockerfile.multistage"] {
        let text = read(&repo().join(file));
        assert!(
            text.contains("--chown=10001:10001"),
            "{file} makes /farm/* the user's"
        );
        assert!(text.contains("USER 10001:10001"), "{file}");
    }
    let build = read(&repo().join("deploy/build-image"));
    for (_, dir, _) in &tokens_volumes {
        let name = dir.trim_start_matches("/farm/");
        assert!(
            build.contains(&format!("$context/farm-dirs/{name}")),
            "build-image makes {dir}"
        );
    }
}
