//! Driving the repository's `docker-compose.yml` from tests: whichever of
//! `docker compose` and `docker-compose` this machine has, a project name
//! of the test's own (so its containers and network are its own), every
//! command bounded in time, and `down` on drop, also when the test fails.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::run_bounded;

/// How long one docker or compose command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A compose project started from the repository's `docker-compose.yml`.
#[derive(Debug)]
pub struct ComposeProject {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    program: Vec<String>,
    pub project: String,
    env: Vec<(String, String)>,
    file: PathBuf,
}

impl ComposeProject {
    /// A project named `name`, with extra environment for the compose file.
    pub fn new(name: &str, env: &[(&str, &str)]) -> ComposeProject {
        let file = repository_root().join("docker-compose.yml");
        assert!(file.exists(), "{} is missing", file.display());
        ComposeProject {
            program: compose_program(),
            project: name.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            file,
        }
    }

    /// Runs `compose -p PROJECT -f FILE args...`; panics on failure.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\n{}{}",
            self.program.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Like [`run`](Self::run), returning the output whatever the status.
    pub fn try_run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .args(["--project-name", &self.project, "--file"])
            .arg(&self.file)
            .args(args)
            .current_dir(repository_root());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        bounded(command)
    }

    /// Container ids of a service, in compose's order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let out = self.run(&["ps", "-q", service]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The project's default network.
    pub fn network(&self) -> String {
        // Compose v1 strips characters v2 keeps; the test names avoid them.
        format!("{}_default", self.project)
    }

    /// The tail of a service's logs, for failure messages.
    pub fn logs(&self, service: &str) -> String {
        let out = self.try_run(&["logs", "--no-color", "--tail", "40", service]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- coordinator logs ---\n{}", self.logs("coordinator"));
            eprintln!("--- worker logs ---\n{}", self.logs("worker"));
        }
        let out = self.try_run(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if !out.status.success() {
            eprintln!(
                "compose down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs `docker args...`; panics on failure.
pub fn docker(args: &[&str]) -> Output {
    let mut command = Command::new("docker");
    command.args(args);
    let out = bounded(command);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether the image exists locally.
pub fn image_exists(image: &str) -> bool {
    let mut command = Command::new("docker");
    command.args(["image", "inspect", image]);
    bounded(command).status.success()
}

/// `docker compose` if the plugin is installed, else `docker-compose`.
fn compose_program() -> Vec<String> {
    let mut plugin = Command::new("docker");
    plugin.args(["compose", "version"]);
    if bounded(plugin).status.success() {
        return vec!["docker".into(), "compose".into()];
    }
    let mut standalone = Command::new("docker-compose");
    standalone.arg("version");
    let found = bounded(standalone);
    assert!(
        found.status.success(),
        "neither `docker compose` nor `docker-compose` works here"
    );
    vec!["docker-compose".into()]
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Runs a command to completion within [`COMMAND_TIMEOUT`]; a command
/// that cannot start reads as a failed run, so probing for a program
/// (`compose_program`) can move on to the next.
fn bounded(command: Command) -> Output {
    let described = format!("{command:?}");
    run_bounded(command, COMMAND_TIMEOUT).unwrap_or_else(|err| Output {
        status: Command::new("false").status().expect("run false"),
        stdout: Vec::new(),
        stderr: format!("cannot run {described}: {err}").into_bytes(),
    })
}
