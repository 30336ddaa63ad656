//! The bench's flags: which sections to run and how big each job is. The
//! defaults finish in a few minutes on a 2-core machine.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use farm_cli::number::parse_count;

/// One part of the benchmark, selectable with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Large jobs: embedded and loopback cluster vs a plain rayon loop,
    /// and the worker's CPU use on a long job.
    Compute,
    /// Tiny jobs from process start to exit.
    Small,
    /// Raw ordered values on stdout vs one and two loopback TCP hops.
    Streaming,
    /// `--output FILE` vs writing the same bytes directly, on disk and
    /// on tmpfs.
    Output,
    /// Chunks per second: real workers, and 1,000 simulated workers.
    Scheduling,
    /// Peak RSS of the coordinator and the clients.
    Memory,
    /// The tutorial's Python `Pool` experiment beside farm.
    Python,
    /// Each worker's share of a job with unequal workers.
    Hetero,
    /// One worker direct and behind 5, 25 and 100 ms each way, and an
    /// `--output` job over a thin link.
    Far,
    /// WebAssembly modules from `examples/`: sqrt against the built-in,
    /// uneven kernels against Rust with rayon and the worker's CPU share,
    /// compile time and first-chunk latency.
    Wasm,
}

/// How simulated workers report results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimReport {
    Batched,
    Single,
}

#[derive(Debug, Parser)]
#[command(about = "farm's benchmark: farm against references measured in the same run")]
pub struct Args {
    /// Sections to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Directory for output files (removed after each run).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,

    /// compute: elements of the large jobs, comma-separated.
    #[arg(long, default_value = "1e8,1e9", value_delimiter = ',', value_parser = parse_count)]
    pub compute_n: Vec<u64>,
    /// compute: elements of the long cluster job whose CPU use is measured.
    #[arg(long, default_value = "1e10", value_parser = parse_count)]
    pub cpu_n: u64,

    /// small: elements of the tiny job.
    #[arg(long, default_value = "1e5", value_parser = parse_count)]
    pub small_n: u64,
    /// small: repetitions of the tiny job.
    #[arg(long, default_value_t = 50)]
    pub small_runs: usize,

    /// streaming: elements streamed as raw f64 to stdout (8 bytes each).
    #[arg(long, default_value = "1e8", value_parser = parse_count)]
    pub stream_n: u64,
    /// streaming: elements streamed as text to stdout for the secondary
    /// text row (0 skips it).
    #[arg(long, default_value = "2e7", value_parser = parse_count)]
    pub stream_text_n: u64,
    /// output: elements written to a .bin file (8 bytes each).
    #[arg(long, default_value = "1e8", value_parser = parse_count)]
    pub output_n: u64,
    /// output: a tmpfs directory for the rows that leave the disk out
    /// (skipped if it is not a directory).
    #[arg(long, default_value = "/dev/shm")]
    pub tmpfs_dir: PathBuf,

    /// scheduling: 4096-element chunks of the job on real workers.
    #[arg(long, default_value = "5e4", value_parser = parse_count)]
    pub real_chunks: u64,
    /// scheduling: worker processes for the real-gRPC rate.
    #[arg(long, default_value_t = 4)]
    pub real_workers: usize,
    /// scheduling: 4096-element chunks of the simulated-cluster job.
    #[arg(long, default_value = "2e5", value_parser = parse_count)]
    pub sim_chunks: u64,
    /// scheduling: simulated workers of the large simulated cluster.
    #[arg(long, default_value_t = 1000)]
    pub sim_workers: usize,
    /// scheduling: simulated workers of the small (reference) cluster.
    #[arg(long, default_value_t = 4)]
    pub sim_few_workers: usize,
    /// scheduling: leases each simulated worker holds.
    #[arg(long, default_value_t = 2)]
    pub sim_hold: u32,
    /// scheduling: how simulated workers report: `batched` (one
    /// ChunkResults per grant) or `single` (a result and a pull per lease).
    #[arg(long, value_enum, default_value = "batched")]
    pub sim_report: SimReport,
    /// scheduling: repetitions of each simulated-cluster job.
    #[arg(long, default_value_t = 3)]
    pub sim_runs: usize,

    /// memory: elements of the jobs whose peak RSS is measured (a .bin of
    /// 8 bytes per element is written; 2e9 needs 16 GB of disk).
    #[arg(long, default_value = "2e8", value_parser = parse_count)]
    pub mem_n: u64,

    /// python: N of the tutorial's experiment (sqrt over range(10, N)).
    #[arg(long, default_value = "5e6", value_parser = parse_count)]
    pub python_n: u64,

    /// hetero: elements of the job shared by a 1-thread and a 2-thread
    /// worker.
    #[arg(long, default_value = "1e10", value_parser = parse_count)]
    pub hetero_n: u64,

    /// far: elements of the summary job run direct and behind each delay.
    #[arg(long, default_value = "5e9", value_parser = parse_count)]
    pub far_n: u64,
    /// far: elements of the `--output` job over the thin link (8 bytes
    /// each).
    #[arg(long, default_value = "2e7", value_parser = parse_count)]
    pub far_output_n: u64,
    /// far: bytes per second each way on the thin link.
    #[arg(long, default_value = "40000000", value_parser = parse_count)]
    pub far_link_rate: u64,

    /// wasm: elements of the sqrt jobs (built-in, sqrt.wat, sqrt_simd.wat).
    #[arg(long, default_value = "1e9", value_parser = parse_count)]
    pub wasm_sqrt_n: u64,
    /// wasm: elements of the collatz.wat job (Collatz steps of 0..n).
    #[arg(long, default_value = "8e6", value_parser = parse_count)]
    pub wasm_collatz_n: u64,
    /// wasm: elements of the prime.wat job (trial division of 0..n).
    #[arg(long, default_value = "8e6", value_parser = parse_count)]
    pub wasm_prime_n: u64,
    /// wasm: elements of the mandelbrot.wat job (the 1024 x 1024 grid is
    /// 1,048,576 elements; more wraps around it).
    #[arg(long, default_value = "1048576", value_parser = parse_count)]
    pub wasm_mandelbrot_n: u64,
    /// wasm: fresh runtimes loading each example for the compile times.
    #[arg(long, default_value_t = 30)]
    pub wasm_compile_runs: usize,
    /// wasm: elements of the first-chunk job (one chunk).
    #[arg(long, default_value = "4096", value_parser = parse_count)]
    pub wasm_first_n: u64,
    /// wasm: fresh clusters for the first-chunk latency.
    #[arg(long, default_value_t = 10)]
    pub wasm_first_runs: usize,
}

impl Args {
    /// Whether `section` was asked for.
    pub fn runs_section(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}
