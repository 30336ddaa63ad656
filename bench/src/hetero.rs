//! Unequal workers: a cluster of one 1-thread and one 2-thread worker runs
//! long jobs; each worker's share of the elements is printed beside its
//! share of the threads (the fair split on idle cores).

use std::path::Path;

use anyhow::Context;

use crate::args::Args;
use crate::cluster::{LoopbackCluster, submit_json};
use crate::stats::spread;

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let workers = [
        vec!["--threads=1".to_owned(), "--name=one-thread".to_owned()],
        vec!["--threads=2".to_owned(), "--name=two-threads".to_owned()],
    ];
    let cluster = LoopbackCluster::start_with(bin, &workers)?;
    let n = args.hetero_n.to_string();
    let runs = args.runs.min(3);
    let mut times = Vec::new();
    for _ in 0..runs {
        let submit = [
            "submit",
            "sqrt",
            "--n",
            &n,
            "--coordinator",
            &cluster.address,
            "--json",
        ];
        times.push(submit_json(bin, &submit)?.0);
    }
    let status = cluster.status()?;
    let workers = status["workers"].as_array().context("workers in --json")?;
    let field = |w: &serde_json::Value, key: &str| w[key].as_f64().unwrap_or(0.0);
    let elements: f64 = workers.iter().map(|w| field(w, "elements_completed")).sum();
    let threads: f64 = workers.iter().map(|w| field(w, "threads")).sum();
    println!(
        "\n## heterogeneous workers: {runs} jobs of sqrt --n {}, {} each\n",
        args.hetero_n,
        spread(&times)
    );
    println!(
        "{:<14}{:>9}{:>16}{:>16}",
        "worker", "threads", "thread share", "element share"
    );
    for w in workers {
        println!(
            "{:<14}{:>9}{:>15.1}%{:>15.1}%",
            w["name"].as_str().unwrap_or("?"),
            field(w, "threads"),
            100.0 * field(w, "threads") / threads,
            100.0 * field(w, "elements_completed") / elements.max(1.0)
        );
    }
    println!("(3 compute threads on this machine's cores: the shares are of contended cores)");
    Ok(())
}
