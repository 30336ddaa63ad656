//! `farm`: parse the command line, run it, map errors to exit codes.
//!
//! Exit codes: 0 success (also when a reader of `--output -` closes the
//! pipe early); 1 the job failed, or another error; 2 invalid input (a bad
//! flag, or a request the coordinator refused as invalid); 3 the
//! coordinator cannot be reached, was lost, or is busy; 130 interrupted.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use farm_catalog::Function;
use farm_cli::args::{Cli, Command, DigestArgs, HealthArgs, StatusArgs, SubmitArgs, WorkersArgs};
use farm_cli::output::{self, Destination};
use farm_cli::report;
use farm_cli::submit::{self, Mode, Submission, SubmitError};
use farm_proto::error::ErrorKind;

fn main() -> ExitCode {
    let cli = Cli::parse();
    farm_setup::tune_allocator();
    // Only warnings by default: the output of `farm` is its result.
    farm_setup::init_tracing_as("warn", cli.log_format);
    let result = match cli.command {
        Command::Submit(args) => run_submit(args),
        Command::Digest(args) => run_digest(&args),
        Command::Workers(args) => run_workers(&args),
        Command::Status(args) => run_status(&args),
        Command::Health(args) => run_health(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message {
                eprintln!("farm: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// A failed command: what to say and which exit code.
struct Failure {
    message: Option<String>,
    code: u8,
}

impl Failure {
    fn new(code: u8, message: impl ToString) -> Failure {
        Failure {
            message: Some(message.to_string()),
            code,
        }
    }
}

fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::ProtocolMismatch => 2,
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted => 3,
        ErrorKind::JobFailed | ErrorKind::Cancelled | ErrorKind::NotFound | ErrorKind::Internal => {
            1
        }
    }
}

impl From<SubmitError> for Failure {
    fn from(err: SubmitError) -> Failure {
        match &err {
            SubmitError::Output(out) if out.is_broken_pipe() => Failure {
                message: None,
                code: 0,
            },
            SubmitError::Client(client) => Failure::new(kind_code(client.kind()), &err),
            SubmitError::Address(_) => Failure::new(2, &err),
            SubmitError::Interrupted => Failure::new(130, &err),
            SubmitError::Output(_) | SubmitError::Local(_) => Failure::new(1, &err),
        }
    }
}

fn run_submit(args: SubmitArgs) -> Result<(), Failure> {
    let function = Function::from_name(&args.function).map_err(|e| Failure::new(2, e))?;
    let threads = args.threads.map_or_else(all_cores, usize::from);
    let output = args.output_spec().map_err(|e| Failure::new(2, e))?;
    let to_stdout = output
        .as_ref()
        .is_some_and(|spec| spec.destination == Destination::Stdout);
    let submission = Submission {
        function,
        start: args.start,
        n: args.n,
        chunk_size: args.chunk_size,
        output,
        coordinator: args.coordinator.filter(|c| !c.is_empty()),
        threads,
    };
    if args.start.checked_add(args.n.saturating_sub(1)).is_none() {
        return Err(Failure::new(
            2,
            format!(
                "--start {} with --n {} runs past the largest index, 2^64 - 1",
                args.start, args.n
            ),
        ));
    }
    let finished = match submission.mode() {
        Mode::Local { .. } => submit::run_local(&submission)?,
        Mode::Cluster(_) | Mode::Embedded { .. } => {
            runtime()?.block_on(submit::run_remote(&submission))?
        }
    };
    // With the values on stdout, the summary goes to stderr.
    let printed = if to_stdout {
        report::print_job(
            &mut std::io::stderr(),
            function.name(),
            args.start,
            &finished,
            args.json,
        )
    } else {
        report::print_job(
            &mut std::io::stdout(),
            function.name(),
            args.start,
            &finished,
            args.json,
        )
    };
    printed.or_else(ignore_broken_pipe)
}

fn run_digest(args: &DigestArgs) -> Result<(), Failure> {
    let summary = if args.file == "-" {
        output::summarize_stdin(args.format)
    } else {
        output::summarize_file(std::path::Path::new(&args.file), args.format)
    }
    .map_err(|e| Failure::new(1, e))?;
    report::print_file_summary(&mut std::io::stdout(), &args.file, &summary, args.json)
        .or_else(ignore_broken_pipe)
}

fn run_workers(args: &WorkersArgs) -> Result<(), Failure> {
    let status = ask_coordinator(&args.coordinator.address, farm_cli::client::cluster_status)?;
    report::print_cluster(&mut std::io::stdout(), &status, args.json).or_else(ignore_broken_pipe)
}

fn run_status(args: &StatusArgs) -> Result<(), Failure> {
    let status = ask_coordinator(&args.coordinator.address, |channel, address| {
        farm_cli::client::job_status(channel, address, args.job)
    })?;
    report::print_job_status(&mut std::io::stdout(), &status, args.json).or_else(ignore_broken_pipe)
}

fn run_health(args: &HealthArgs) -> Result<(), Failure> {
    if ask_coordinator(&args.coordinator.address, farm_cli::client::serving)? {
        println!("SERVING");
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("{} is not serving", args.coordinator.address),
        ))
    }
}

/// Makes one call to the coordinator at `address`.
fn ask_coordinator<'a, T, Fut>(
    address: &'a str,
    call: impl FnOnce(farm_net::transport::Connection, &'a str) -> Fut,
) -> Result<T, Failure>
where
    Fut: Future<Output = Result<T, farm_cli::client::ClientError>>,
{
    let endpoint = farm_net::transport::endpoint(address).map_err(|e| Failure::new(2, e))?;
    runtime()?
        .block_on(async { call(endpoint.connect_lazy().into(), address).await })
        .map_err(|e| Failure::new(kind_code(e.kind()), e))
}

fn ignore_broken_pipe(err: std::io::Error) -> Result<(), Failure> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        let _ = std::io::stderr().flush();
        Err(Failure::new(1, format!("cannot print the result: {err}")))
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One thread runs all of the client's I/O (and the embedded coordinator
/// and worker sessions, which only pass messages: computing happens on the
/// rayon pool, writing output on its own thread). On one thread, the
/// thousands of wake-ups a stream of values causes are function calls, not
/// cross-thread signals: it measured 25-40 % less CPU than two threads.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("farm-io")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("cannot start the async runtime: {e}")))
}
