//! farm's benchmark. Each section measures farm against a reference
//! measured in the same run, interleaved, and prints medians, ranges and
//! ratios. It never fails on a time: machines are shared and noisy, so
//! only ratios measured side by side mean much.
//!
//! - [`compute`]: large jobs vs a plain rayon loop, the worker's CPU use,
//!   and tiny jobs from process start to exit.
//! - [`streaming`]: raw values on stdout vs one and two loopback TCP hops
//!   ([`loopback`]).
//! - [`output`]: `--output FILE` vs writing the same bytes directly.
//! - [`scheduling`]: chunks per second, real and simulated workers.
//! - [`memory`]: peak RSS of the coordinator and the clients.
//! - [`python`]: the Python tutorial's `Pool` experiment beside farm.
//! - [`hetero`]: each worker's share with unequal workers.
//! - [`far`]: one worker direct and behind added delays, and values over a
//!   thin link.
//! - [`wasm`]: WebAssembly modules against the built-in and against the
//!   same kernels in Rust, compile time and first-chunk latency.
//!
//! Run: `cargo run --release -p farm-bench -- [--only SECTION,..]` (see
//! bench/README.md).

mod args;
mod cluster;
mod compute;
mod far;
mod hetero;
// The examples' kernels in Rust, shared with farm-wasm's tests.
#[path = "../../examples/kernels.rs"]
mod kernels;
mod loopback;
mod memory;
mod output;
mod procfs;
mod python;
mod scheduling;
mod sim_worker;
mod simulated_cluster;
mod stats;
mod streaming;
mod wasm;

use clap::Parser;

use args::{Args, Section};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The in-process coordinator of the scheduling section logs here; quiet
    // unless RUST_LOG asks.
    farm_setup::init_tracing("off");
    let bin = cluster::build_binaries()?;
    println!(
        "farm bench on {} cores; sections: {}",
        rayon::current_num_threads(),
        if args.only.is_empty() {
            "all".to_owned()
        } else {
            format!("{:?}", args.only)
        }
    );
    if args.runs_section(Section::Compute) {
        compute::large_jobs(&bin, &args)?;
    }
    if args.runs_section(Section::Small) {
        compute::small_jobs(&bin, &args)?;
    }
    if args.runs_section(Section::Streaming) {
        streaming::run(&bin, &args)?;
    }
    if args.runs_section(Section::Output) {
        output::run(&bin, &args)?;
    }
    if args.runs_section(Section::Scheduling) {
        scheduling::run(&bin, &args)?;
    }
    if args.runs_section(Section::Memory) {
        memory::run(&bin, &args)?;
    }
    if args.runs_section(Section::Python) {
        python::run_section(&bin, &args)?;
    }
    if args.runs_section(Section::Hetero) {
        hetero::run(&bin, &args)?;
    }
    if args.runs_section(Section::Far) {
        far::run(&bin, &args)?;
    }
    if args.runs_section(Section::Wasm) {
        wasm::run(&bin, &args)?;
    }
    Ok(())
}
