//! `farm-worker`: parse flags, connect, compute until Ctrl-C or SIGTERM.
//! The first signal drains (finish or hand back held chunks, exit 0); a
//! second one exits at once.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{CommandFactory, Parser};
use farm_net::auth::{self, Role, RoleToken};
use farm_net::transport::Connection;
use farm_proto::MAX_WORKER_THREADS;
use farm_setup::LogFormat;
use farm_worker::WorkerConfig;
use farm_worker::faults::{self, Faults};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A farm worker: computes chunks of map jobs on every core of this machine.
#[derive(Debug, Parser)]
#[command(version, after_help = TESTING_FAULTS)]
struct Args {
    /// The coordinator, as HOST:PORT.
    #[arg(long, env = "FARM_COORDINATOR", value_name = "HOST:PORT")]
    connect: String,
    /// Compute threads [default: all cores, at most 4096].
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=u64::from(MAX_WORKER_THREADS)))]
    threads: Option<usize>,
    /// Name shown by the coordinator [default: host name and process id].
    #[arg(long, env = "FARM_WORKER_NAME")]
    name: Option<String>,
    /// Chunks held at once (one computing, the rest queued).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    prefetch: u32,
    /// Serve the gRPC health service here (e.g. 0.0.0.0:50052): SERVING
    /// while connected to the coordinator, NOT_SERVING otherwise.
    #[arg(long, env = "FARM_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<std::net::SocketAddr>,
    /// On drain, how long the running chunk may take before it is handed
    /// back (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_grace: Duration,
    /// How log lines are written on stderr.
    #[arg(long, env = "FARM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How long one chunk of a WebAssembly job may run (e.g. 60s, 500ms);
    /// a chunk that runs past it fails its job, naming the chunk.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wasm_chunk_time: Duration,
    /// Linear memory one WebAssembly instance may have (one instance runs
    /// per compute thread), in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    wasm_memory_mib: u64,
    /// Largest WebAssembly module this worker runs, in bytes as submitted.
    #[arg(long, default_value_t = farm_wasm::Limits::default().max_module_bytes)]
    wasm_max_module_bytes: u64,
    /// Keep compiled WebAssembly modules in this directory (this worker's
    /// own), so a restart does not compile them again.
    #[arg(long, env = "FARM_WASM_CACHE", value_name = "DIR")]
    wasm_cache_dir: Option<std::path::PathBuf>,
    /// A file holding the cluster's worker token (`farm token worker
    /// SECRET_FILE` makes it), for a coordinator that requires one.
    /// FARM_TOKEN may hold the token itself instead.
    #[arg(long, env = "FARM_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

/// How `farm-worker` ends (besides 0, drained, and 2, a bad flag).
mod exit {
    /// Refused, or failed on its own.
    pub const FAILED: u8 = 1;
    /// A bad flag, value or token file.
    pub const INVALID_INPUT: u8 = 2;
    /// The coordinator refused this worker's token, or its lack of one:
    /// the worker exits rather than retry with a token that cannot
    /// change, and its supervisor's restart back-off paces the retries.
    pub const UNAUTHENTICATED: u8 = 4;
}

/// The environment variable that may hold the token itself.
const TOKEN_ENV: &str = "FARM_TOKEN";

const TESTING_FAULTS: &str = "\
Testing faults:
  FARM_TEST_FAULTS makes this worker misbehave on purpose, for end-to-end
  tests only; unset (the default), it does nothing. Comma-separated:
    slow=F       each chunk takes F times as long (F > 1): the compute
                 thread sleeps (F - 1) times the chunk's compute time
    panic-at=X   a chunk whose arguments (start + index) include X panics
                 (a retryable chunk failure; the job fails after the
                 coordinator's --max-attempts)
  e.g. FARM_TEST_FAULTS=slow=10 farm-worker --connect 127.0.0.1:50051";

fn main() -> ExitCode {
    let args = Args::parse();
    let faults = test_faults();
    let token = match worker_token(args.token_file.as_deref()) {
        Ok(token) => token,
        Err(message) => {
            farm_setup::report(format_args!("farm-worker: {message}"));
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    farm_setup::tune_allocator();
    farm_setup::init_tracing_as("info", args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("farm-io")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            farm_setup::report(format_args!(
                "farm-worker: cannot start the async runtime: {err}"
            ));
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(serve(args, faults, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            farm_setup::report(format_args!("farm-worker: {err:#}"));
            let unauthenticated = matches!(
                err.downcast_ref::<farm_worker::WorkerError>(),
                Some(farm_worker::WorkerError::Unauthenticated { .. })
            );
            ExitCode::from(if unauthenticated {
                exit::UNAUTHENTICATED
            } else {
                exit::FAILED
            })
        }
    }
}

/// The worker token from `--token-file` (or `FARM_TOKEN_FILE`), else from
/// `FARM_TOKEN`; none if neither is set. A client token is refused here,
/// before it is sent anywhere.
fn worker_token(path: Option<&std::path::Path>) -> Result<Option<RoleToken>, String> {
    let (token, from) = match (
        path,
        std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
    ) {
        (Some(path), _) => (
            auth::read_token(path).map_err(|e| format!("--token-file: {e}"))?,
            path.display().to_string(),
        ),
        (None, Some(text)) => (
            RoleToken::parse(&text).map_err(|e| format!("{TOKEN_ENV}: {e}"))?,
            TOKEN_ENV.to_owned(),
        ),
        (None, None) => return Ok(None),
    };
    if token.role() != Role::Worker {
        return Err(format!(
            "{from} holds a {} token; farm-worker needs the cluster's worker token (`farm token worker SECRET_FILE` makes it)",
            token.role()
        ));
    }
    Ok(Some(token))
}

/// The faults in `FARM_TEST_FAULTS`; a value that cannot be understood is
/// reported like a bad flag (exit code 2).
fn test_faults() -> Faults {
    let Some(value) = std::env::var_os(faults::ENV) else {
        return Faults::default();
    };
    let parsed = value
        .to_str()
        .ok_or_else(|| "it is not UTF-8".to_owned())
        .and_then(|text| text.parse::<Faults>().map_err(|e| e.to_string()));
    parsed.unwrap_or_else(|reason| {
        let message = format!("invalid {}={value:?}: {reason}", faults::ENV);
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit()
    })
}

async fn serve(args: Args, faults: Faults, token: Option<RoleToken>) -> anyhow::Result<()> {
    let endpoint = farm_net::transport::endpoint(&args.connect)?;
    let mut config = WorkerConfig::new(args.connect.clone());
    config.name = args.name.unwrap_or_else(host_name);
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    config.prefetch = args.prefetch;
    config.drain_grace = args.drain_grace;
    config.faults = faults;
    config.wasm_limits = farm_wasm::Limits {
        max_module_bytes: args.wasm_max_module_bytes,
        max_memory_bytes: args.wasm_memory_mib << 20,
        chunk_time: args.wasm_chunk_time,
        ..farm_wasm::Limits::default()
    };
    config.wasm_cache_dir = args.wasm_cache_dir;

    let drain = CancellationToken::new();
    farm_setup::stop_on_signals("farm-worker", drain.clone());
    let (connected, connection) = tokio::sync::watch::channel(false);
    let tasks = TaskTracker::new();
    if let Some(address) = args.health_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve health checks on {address}: {e}"))?;
        tasks.spawn(serve_health(listener, connection, drain.clone()));
    }
    // Every line this worker logs names it.
    let span = tracing::info_span!("worker", worker_name = %config.name);
    let served = farm_worker::run_reporting(
        config,
        Connection::from(endpoint.connect_lazy()).with_token(token),
        drain.clone(),
        connected,
    )
    .instrument(span)
    .await;
    // Refused, say: the health service stops too.
    drain.cancel();
    tasks.close();
    if tokio::time::timeout(HEALTH_STOP_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("the health service did not stop within {HEALTH_STOP_TIMEOUT:?}");
    }
    served?;
    Ok(())
}

/// How long the health service may take to stop after the worker.
const HEALTH_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `grpc.health.v1.Health`, following the connection to the
/// coordinator, until the worker drains.
async fn serve_health(
    listener: tokio::net::TcpListener,
    mut connection: tokio::sync::watch::Receiver<bool>,
    drain: CancellationToken,
) {
    use tonic_health::ServingStatus;
    let (health, service) = tonic_health::server::health_reporter();
    let follow = async move {
        loop {
            let status = if *connection.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            if connection.changed().await.is_err() {
                return;
            }
        }
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let serving = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, drain.cancelled_owned());
    // Following ends when the worker drops its end of `connection`.
    let ((), served) = tokio::join!(follow, serving);
    if let Err(err) = served {
        tracing::warn!(%err, "the health service stopped");
    }
}

/// The host name (as containers and most shells export it) and process id.
fn host_name() -> String {
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}/{}", std::process::id())
}
