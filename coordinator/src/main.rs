//! `farm-coordinator`: parse flags, bind, serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use farm_coordinator::CoordinatorConfig;
use farm_coordinator::config::{
    DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_MODULE_BYTES, DEFAULT_MAX_STREAMED_ELEMENTS,
};
use farm_net::auth::{self, Admission};
use farm_setup::LogFormat;

/// How long open streams get to end after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The farm coordinator: leases chunks of map jobs to workers and streams
/// the ordered results back to clients.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve clients and workers on.
    #[arg(long, env = "FARM_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// A worker silent for this long loses its leases (e.g. 5s, 1500ms).
    #[arg(long, env = "FARM_LEASE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    lease_timeout: Duration,
    /// How often workers must show they are alive; at most a third of the
    /// lease timeout.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Leases a chunk may use up (failures and lost workers) before its
    /// job fails.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// Jobs running at once; more are refused until one ends.
    #[arg(long, default_value_t = 64)]
    max_jobs: usize,
    /// Largest n a job may ask for.
    #[arg(long, default_value_t = DEFAULT_MAX_ELEMENTS)]
    max_elements: u64,
    /// Largest n a job that streams its values back may ask for.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMED_ELEMENTS)]
    max_streamed_elements: u64,
    /// Largest WebAssembly module a job may bring, in bytes as submitted.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, or `off`.
    #[arg(long, env = "FARM_HTTP", value_name = "ADDR|off", default_value = DEFAULT_HTTP, value_parser = parse_http)]
    http: HttpAddress,
    /// How log lines are written on stderr.
    #[arg(long, env = "FARM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The cluster secret (made by `farm token new --out FILE`): workers
    /// and clients must then present the tokens derived from it. Without
    /// one, anyone may connect, so only a loopback --listen is served.
    #[arg(long, env = "FARM_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// A bad flag or value, or a setting that cannot be served: as clap's own
/// errors.
const INVALID_INPUT: u8 = 2;

/// Loopback: metrics are for this machine unless asked otherwise. Beside
/// the coordinator's 50051 and the worker's health port 50052.
const DEFAULT_HTTP: &str = "127.0.0.1:50053";

/// Where to serve metrics, if anywhere.
#[derive(Debug, Clone, Copy)]
struct HttpAddress(Option<SocketAddr>);

fn parse_http(value: &str) -> Result<HttpAddress, String> {
    if value == "off" {
        return Ok(HttpAddress(None));
    }
    value
        .parse()
        .map(|address| HttpAddress(Some(address)))
        .map_err(|_| format!("expected an address like {DEFAULT_HTTP}, or off"))
}

impl Args {
    /// The settings, with the cluster secret read from its file; an error
    /// here is the user's to fix.
    fn config(&self) -> Result<CoordinatorConfig, String> {
        let mut config = CoordinatorConfig::default();
        if let Some(path) = &self.token_file {
            let secret = auth::read_secret(path).map_err(|e| format!("--token-file: {e}"))?;
            config.admission = Admission::members(&secret);
        }
        farm_coordinator::auth::check_exposure(&config.admission, self.listen)
            .map_err(|e| e.to_string())?;
        config.scheduler.lease_timeout = self.lease_timeout;
        config.scheduler.max_attempts = self.max_attempts;
        config.scheduler.max_running_jobs = self.max_jobs;
        config.heartbeat_interval = self.heartbeat_interval;
        config.limits.max_elements = self.max_elements;
        config.limits.max_streamed_elements = self.max_streamed_elements;
        config.limits.max_module_bytes = self.max_module_bytes;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before the runtime's threads exist: they take their allocator arena
    // on their first allocation.
    farm_setup::tune_allocator();
    farm_setup::init_tracing_as("info", args.log_format);
    let config = match args.config() {
        Ok(config) => config,
        Err(err) => {
            farm_setup::report(format_args!("farm-coordinator: {err}"));
            return ExitCode::from(INVALID_INPUT);
        }
    };
    let served = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(serve(args, config)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            farm_setup::report(format_args!("farm-coordinator: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, config: CoordinatorConfig) -> anyhow::Result<()> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr()?;
    let metrics = match args.http.0 {
        Some(metrics_address) => Some(
            tokio::net::TcpListener::bind(metrics_address)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot serve metrics on {metrics_address}: {e} (--http off turns them off)"
                    )
                })?,
        ),
        None => None,
    };
    // Before the line that says it is ready: a signal sent right after it
    // must stop it gracefully.
    let stop = tokio_util::sync::CancellationToken::new();
    farm_setup::stop_on_signals("farm-coordinator", stop.clone());
    // Scripts and tests read this line to find the port of `--listen :0`.
    farm_setup::say(format_args!("farm-coordinator listening on {address}"));
    if config.admission.is_open() {
        tracing::info!("no --token-file: anyone who can reach this loopback address may connect");
    }
    if let Some(metrics) = &metrics {
        // And this one the port of `--http 127.0.0.1:0`.
        farm_setup::say(format_args!(
            "farm-coordinator serving metrics on http://{}/metrics",
            metrics.local_addr()?
        ));
    }

    let server = farm_coordinator::run_tcp_with_metrics(
        config,
        listener,
        metrics,
        stop.clone().cancelled_owned(),
    );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        () = stop.cancelled() => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("open streams did not end within {SHUTDOWN_GRACE:?}; exiting anyway");
            Ok(())
        }
    }
}
