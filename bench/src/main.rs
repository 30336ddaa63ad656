//! farm's benchmark. Each section measures farm against a reference
//! measured in the same run, interleaved, and prints medians, ranges and
//! ratios. It never fails on a time: machines are shared and noisy, so
//! only ratios measured side by side mean much.
//!
//! - [`compute`]: large jobs vs a plain rayon loop, the worker's CPU use,
//!   and tiny jobs from process start to exit.
//! - [`scheduling`]: chunks per second, real and simulated workers.
//!
//! Run: `cargo run --release -p farm-bench -- [--only SECTION,..]` (see
//! bench/README.md).

mod args;
mod cluster;
mod compute;
mod procfs;
mod scheduling;
mod sim_worker;
mod stats;

use clap::Parser;

use args::{Args, Section};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    if args.runs_section(Section::Scheduling) {
        scheduling::run(&bin, &args)?;
    }
    Ok(())
}
