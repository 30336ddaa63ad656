//! The `farm` command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use farm_catalog::Function;
use farm_proto::MAX_WORKER_THREADS;

use crate::number::{NumberError, parse_count};
use crate::output::{Destination, Format, OutputError, OutputSpec};

/// farm: run a map over a huge range on every core of every machine you
/// have, and get the ordered results back.
#[derive(Debug, Parser)]
#[command(name = "farm", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines (warnings and errors) are written on stderr.
    #[arg(long, global = true, env = "FARM_LOG_FORMAT", value_enum, default_value_t = farm_setup::LogFormat::Text)]
    pub log_format: farm_setup::LogFormat,
    /// A file holding the cluster's client token (`farm token client
    /// SECRET_FILE` makes it), for a coordinator that requires one.
    /// FARM_TOKEN may hold the token itself instead. Never needed for the
    /// embedded default.
    #[arg(long, global = true, env = "FARM_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job and print its summary (or write its values with --output).
    Submit(SubmitArgs),
    /// Recompute the summary and digest of an output file (.npy, .bin,
    /// .csv, .txt), or of values on stdin (-).
    Digest(DigestArgs),
    /// Show a coordinator's workers and counters.
    Workers(WorkersArgs),
    /// Show one job: progress, retries, backups, workers, and how it ended.
    Status(StatusArgs),
    /// Check that a coordinator (or a worker's --health-listen address) is
    /// serving: prints SERVING and exits 0, or exits non-zero.
    Health(HealthArgs),
    /// Make a cluster secret, or derive a worker's or client's token from
    /// one (see the README, "Security").
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new random cluster secret to a new file (mode 0600), for
    /// the coordinator's --token-file; an existing file is never replaced.
    New {
        /// Where to write the secret.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// If --out exists, keep the secret in it (and still write the
        /// tokens asked for) instead of failing: for set-up steps run on
        /// every start.
        #[arg(long)]
        keep_existing: bool,
        /// Also write the worker token to this file (mode 0600).
        #[arg(long, value_name = "FILE")]
        worker_out: Option<PathBuf>,
        /// Also write the client token to this file (mode 0600).
        #[arg(long, value_name = "FILE")]
        client_out: Option<PathBuf>,
    },
    /// Print the worker token of the cluster whose secret is in
    /// SECRET_FILE (or write it to --out).
    Worker(DeriveArgs),
    /// Print the client token of the cluster whose secret is in
    /// SECRET_FILE (or write it to --out).
    Client(DeriveArgs),
}

#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// The cluster secret's file.
    #[arg(value_name = "SECRET_FILE")]
    pub secret: PathBuf,
    /// Write the token to this file (mode 0600, replaced if it exists)
    /// instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The function to map: a catalog name (sqrt), or the path of your own
    /// WebAssembly module (./f.wasm, f.wat), which exports
    /// `f: (i64) -> f64` (see the README).
    #[arg(value_parser = parse_function, value_name = "FUNCTION|MODULE")]
    pub function: FunctionArg,
    /// Number of elements: 1000000, 1_000_000, 1e9, 2.5e9.
    // Hyphen values reach the parser, which explains why `-5` is refused.
    #[arg(long, value_parser = parse_count, allow_hyphen_values = true)]
    pub n: u64,
    /// First input: element i is function(start + i).
    #[arg(long, default_value = "0", value_parser = parse_count, allow_hyphen_values = true)]
    pub start: u64,
    /// The coordinator to run on, as HOST:PORT. Without one, an embedded
    /// coordinator and worker run in this process.
    #[arg(long, env = "FARM_COORDINATOR", value_name = "HOST:PORT", value_parser = non_empty_address)]
    pub coordinator: Option<String>,
    /// Write the ordered values: FILE.npy (numpy), FILE.bin (raw
    /// little-endian f64), FILE.csv or FILE.txt (one per line), or - for
    /// stdout (text unless --format says otherwise).
    #[arg(long, short, value_parser = Destination::parse)]
    pub output: Option<Destination>,
    /// The format of --output, whatever its extension [default: from the
    /// extension; text for -].
    #[arg(long, value_enum, requires = "output")]
    pub format: Option<Format>,
    /// Have the --output file on disk when farm exits: it is written back
    /// as it grows, then synced with its directory.
    #[arg(long, requires = "output")]
    pub fsync: bool,
    /// Refuse to replace an existing --output file (a device or FIFO is
    /// still written in place).
    #[arg(long, requires = "output")]
    pub no_clobber: bool,
    /// Elements per chunk (rounded up to a multiple of 4096) instead of
    /// the coordinator's choice.
    #[arg(long, value_parser = parse_chunk_size, allow_hyphen_values = true)]
    pub chunk_size: Option<u64>,
    /// Compute threads for an embedded or local run [default: all cores,
    /// at most 4096].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKER_THREADS)))]
    pub threads: Option<u16>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl SubmitArgs {
    /// Where and how to write the values, if asked: `--format` or the
    /// extension of `--output`, checked before any job is submitted.
    pub fn output_spec(&self) -> Result<Option<OutputSpec>, OutputError> {
        self.output
            .clone()
            .map(|destination| {
                let spec = OutputSpec::new(destination, self.format)?.with_fsync(self.fsync)?;
                Ok(spec.with_no_clobber(self.no_clobber))
            })
            .transpose()
    }
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The output file to summarise, or - for stdin.
    pub file: String,
    /// How to read it, whatever its extension [default: from the
    /// extension; text for -].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id, as `farm submit` prints it.
    pub job: u64,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The address to check: a coordinator, or a worker's --health-listen.
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// `--coordinator HOST:PORT` for commands that talk to a running cluster.
#[derive(Debug, Args)]
pub struct CoordinatorAddress {
    /// The coordinator, as HOST:PORT.
    #[arg(
        long = "coordinator",
        env = "FARM_COORDINATOR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:50051",
        value_parser = non_empty_address
    )]
    pub address: String,
}

/// What `farm submit` was told to map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionArg {
    Catalog(Function),
    /// The path of a WebAssembly module, read once the flags are parsed.
    Module(PathBuf),
}

/// A catalog name, or a path: anything with a `/` (or `\`) in it, or
/// ending in `.wasm` or `.wat`. Catalog names never look like either.
fn parse_function(text: &str) -> Result<FunctionArg, UnknownFunctionArg> {
    if let Ok(function) = Function::from_name(text) {
        return Ok(FunctionArg::Catalog(function));
    }
    let is_path = text.contains(['/', '\\'])
        || [".wasm", ".wat"]
            .iter()
            .any(|extension| text.to_ascii_lowercase().ends_with(extension));
    if is_path {
        return Ok(FunctionArg::Module(PathBuf::from(text)));
    }
    Err(UnknownFunctionArg)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a catalog function (known: {}) nor a module path (./f.wasm, f.wat)",
    Function::known_names()
)]
pub struct UnknownFunctionArg;

/// A `--coordinator` value: empty is refused rather than taken to mean
/// "none", which would quietly run the job somewhere else than asked.
fn non_empty_address(text: &str) -> Result<String, EmptyAddress> {
    if text.is_empty() {
        return Err(EmptyAddress);
    }
    Ok(text.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the coordinator address is empty: give HOST:PORT, or (for farm submit) leave out --coordinator and FARM_COORDINATOR to run embedded"
)]
pub struct EmptyAddress;

/// A chunk size: a count of at least one.
fn parse_chunk_size(text: &str) -> Result<u64, ChunkSizeError> {
    match parse_count(text)? {
        0 => Err(ChunkSizeError::Zero),
        size => Ok(size),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkSizeError {
    #[error(transparent)]
    Number(#[from] NumberError),
    #[error("a chunk holds at least one element")]
    Zero,
}
