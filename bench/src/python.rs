//! The Python tutorial's `Pool` experiment (`bench/pool_experiment.py`):
//! `math.sqrt` over `range(10, N)`, serial loop and `Pool().map`, beside
//! farm on the same job, embedded, from process start to exit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::args::Args;
use crate::cluster::{run, submit_json};
use crate::stats::{ratio, spread};

pub fn run_section(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pool_experiment.py");
    println!(
        "\n## python: the tutorial's sqrt over range(10, {}), {} runs (median [min..max])\n",
        args.python_n, args.runs
    );
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipped: python3 is not installed");
        return Ok(());
    }
    let n = args.python_n.saturating_sub(10).to_string();
    let farm_args = ["submit", "sqrt", "--start", "10", "--n", &n, "--json"];
    let (mut pool, mut serial, mut farm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let mut python = Command::new("python3");
        python.arg(&script).arg(args.python_n.to_string());
        let (_, out) = run(python)?;
        let times: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("the script's JSON")?;
        let seconds = |key: &str| -> anyhow::Result<Duration> {
            let s = times[key]
                .as_f64()
                .with_context(|| format!("{key} in the script's JSON"))?;
            Ok(Duration::from_secs_f64(s))
        };
        pool.push(seconds("pool_s")?);
        serial.push(seconds("serial_s")?);
        farm.push(submit_json(bin, &farm_args)?.0);
    }
    println!("{:<54}{:>34}{:>10}", "job", "time", "vs farm");
    let rows = [
        (
            "farm submit sqrt --start 10, embedded (start to exit)",
            &farm,
        ),
        ("python Pool().map (perf_counter, as the tutorial)", &pool),
        (
            "python serial loop (perf_counter, as the tutorial)",
            &serial,
        ),
    ];
    for (name, times) in rows {
        println!(
            "{name:<54}{:>34}{:>9.2}x",
            spread(times),
            ratio(times, &farm)
        );
    }
    println!("python serial vs Pool().map: {:.2}x", ratio(&serial, &pool));
    Ok(())
}
