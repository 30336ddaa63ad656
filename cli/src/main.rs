//! `farm`: parse the command line, run it, and exit with the code
//! [`farm_cli::exit`] maps its outcome to.

use std::process::ExitCode;

use clap::Parser;
use farm_cli::args::{
    Cli, Command, DigestArgs, FunctionArg, HealthArgs, StatusArgs, SubmitArgs, WorkersArgs,
};
use farm_cli::client::{self, ClientError};
use farm_cli::exit::{self, CommandError};
use farm_cli::module::{self, JobFunction};
use farm_cli::output::{self, Destination};
use farm_cli::report;
use farm_cli::submit::{self, Mode, Submission};
use farm_cli::token::{self, TOKEN_ENV};
use farm_net::auth::RoleToken;

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        // Help and version go to stdout and succeed; the rest is a bad
        // flag or value.
        let code = if err.use_stderr() {
            exit::INVALID_INPUT
        } else {
            exit::SUCCESS
        };
        let _ = err.print();
        std::process::exit(code.into())
    });
    farm_setup::tune_allocator();
    // Only warnings by default: the output of `farm` is its result. The
    // embedded coordinator and worker say only errors: a failed job
    // reaches the user as farm's own message, once, not three times.
    farm_setup::init_tracing_as(
        "warn,farm_coordinator=error,farm_worker=error",
        cli.log_format,
    );
    // Read only by the commands that talk to a cluster: a bad token
    // never stops the embedded default or `farm digest`.
    let token_file = cli.token_file;
    let client_token = move || -> Result<Option<RoleToken>, CommandError> {
        let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        Ok(token::client_token(token_file.as_deref(), env_token)?)
    };
    let result = match cli.command {
        Command::Submit(args) => run_submit(args, client_token),
        Command::Digest(args) => run_digest(&args),
        Command::Workers(args) => client_token().and_then(|t| run_workers(&args, t)),
        Command::Status(args) => client_token().and_then(|t| run_status(&args, t)),
        // Health is open to all (container probes share the environment
        // of a coordinator's or worker's own --token-file).
        Command::Health(args) => run_health(&args),
        Command::Token(command) => token::run(&command).map_err(CommandError::from),
    };
    let code = match result {
        Ok(()) => exit::SUCCESS,
        Err(err) => {
            let code = err.exit_code();
            if code != exit::SUCCESS {
                eprintln!("farm: {err}");
            }
            code
        }
    };
    ExitCode::from(code)
}

fn run_submit(
    args: SubmitArgs,
    client_token: impl FnOnce() -> Result<Option<RoleToken>, CommandError>,
) -> Result<(), CommandError> {
    let function = match &args.function {
        FunctionArg::Catalog(function) => JobFunction::Catalog(*function),
        FunctionArg::Module(path) => JobFunction::Wasm(module::read(path)?),
    };
    let threads = args.threads.map_or_else(all_cores, usize::from);
    let output = args.output_spec().map_err(CommandError::OutputSpec)?;
    let to_stdout = output
        .as_ref()
        .is_some_and(|spec| spec.destination == Destination::Stdout);
    let token = match &args.coordinator {
        Some(_) => client_token()?,
        None => None,
    };
    let submission = Submission {
        function: function.clone(),
        start: args.start,
        n: args.n,
        chunk_size: args.chunk_size,
        output,
        coordinator: args.coordinator,
        token,
        threads,
    };
    if args.start.checked_add(args.n.saturating_sub(1)).is_none() {
        return Err(CommandError::PastLastIndex {
            start: args.start,
            n: args.n,
        });
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
    printed.map_err(CommandError::Print)
}

fn run_digest(args: &DigestArgs) -> Result<(), CommandError> {
    let summary = if args.file == "-" {
        output::summarize_stdin(args.format)
    } else {
        output::summarize_file(std::path::Path::new(&args.file), args.format)
    }
    .map_err(CommandError::Digest)?;
    report::print_file_summary(&mut std::io::stdout(), &args.file, &summary, args.json)
        .map_err(CommandError::Print)
}

fn run_workers(args: &WorkersArgs, token: Option<RoleToken>) -> Result<(), CommandError> {
    let status = ask_coordinator(&args.coordinator.address, token, client::cluster_status)?;
    report::print_cluster(&mut std::io::stdout(), &status, args.json).map_err(CommandError::Print)
}

fn run_status(args: &StatusArgs, token: Option<RoleToken>) -> Result<(), CommandError> {
    let status = ask_coordinator(&args.coordinator.address, token, |channel, address| {
        client::job_status(channel, address, args.job)
    })?;
    report::print_job_status(&mut std::io::stdout(), &status, args.json)
        .map_err(CommandError::Print)
}

fn run_health(args: &HealthArgs) -> Result<(), CommandError> {
    let address = &args.coordinator.address;
    if !ask_coordinator(address, None, client::serving)? {
        return Err(CommandError::NotServing {
            address: address.clone(),
        });
    }
    println!("SERVING");
    Ok(())
}

/// Makes one call to the coordinator at `address`, presenting `token`.
fn ask_coordinator<'a, T, Fut>(
    address: &'a str,
    token: Option<RoleToken>,
    call: impl FnOnce(farm_net::transport::Connection, &'a str) -> Fut,
) -> Result<T, CommandError>
where
    Fut: Future<Output = Result<T, ClientError>>,
{
    let endpoint = farm_net::transport::endpoint(address)?;
    Ok(runtime()?.block_on(async {
        let connection = farm_net::transport::Connection::from(endpoint.connect_lazy());
        call(connection.with_token(token), address).await
    })?)
}

/// Every core, up to the most a worker may claim.
fn all_cores() -> usize {
    let max = usize::try_from(farm_proto::MAX_WORKER_THREADS).unwrap_or(1);
    std::thread::available_parallelism().map_or(1, |n| n.get().min(max))
}

/// One thread runs all of the client's I/O (and the embedded coordinator
/// and worker sessions, which only pass messages: computing happens on the
/// rayon pool, writing output on its own thread). On one thread, the
/// thousands of wake-ups a stream of values causes are function calls, not
/// cross-thread signals: it measured 25-40 % less CPU than two threads.
fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("farm-io")
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)
}
