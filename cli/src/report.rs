//! Printing results: the job summary, a file's summary, the cluster's
//! workers. Plain aligned text for people, `--json` for scripts. Floats
//! are printed in shortest round-trip form, so a printed sum is exact.

use std::io::{self, Write};

use farm_catalog::Summary;
use farm_proto::v1;
use serde_json::json;

use crate::submit::{Finished, Mode};

/// Shortest text that parses back to the same f64.
fn float(x: f64) -> String {
    let mut buffer = ryu::Buffer::new();
    buffer.format(x).to_owned()
}

/// A float for JSON, which has no infinities or NaN.
fn json_float(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        serde_json::Value::Null
    }
}

fn mode_text(mode: &Mode) -> String {
    match mode {
        Mode::Cluster(address) => format!("cluster at {address}"),
        Mode::Embedded { threads } => {
            format!("embedded coordinator and worker, {threads} threads")
        }
        Mode::Local { threads } => {
            format!("local short cut for a tiny job, {threads} threads")
        }
    }
}

fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Cluster(_) => "cluster",
        Mode::Embedded { .. } => "embedded",
        Mode::Local { .. } => "local",
    }
}

fn summary_lines(summary: &Summary) -> Vec<(&'static str, String)> {
    let extreme = |x: f64| {
        if summary.n == 0 {
            "-".to_owned()
        } else {
            float(x)
        }
    };
    vec![
        ("n", summary.n.to_string()),
        ("sum", float(summary.sum)),
        ("min", extreme(summary.min)),
        ("max", extreme(summary.max)),
        ("digest", summary.digest.to_string()),
    ]
}

fn summary_json(summary: &Summary) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("n".into(), json!(summary.n));
    map.insert("sum".into(), json_float(summary.sum));
    let present = |x: f64| {
        if summary.n == 0 {
            serde_json::Value::Null
        } else {
            json_float(x)
        }
    };
    map.insert("min".into(), present(summary.min));
    map.insert("max".into(), present(summary.max));
    map.insert("digest".into(), json!(summary.digest.to_string()));
    map
}

fn print_lines(out: &mut dyn Write, lines: &[(&str, String)]) -> io::Result<()> {
    for (key, value) in lines {
        writeln!(out, "{key:<10}{value}")?;
    }
    out.flush()
}

/// Prints a finished job.
pub fn print_job(
    out: &mut dyn Write,
    function: &str,
    start: u64,
    finished: &Finished,
    as_json: bool,
) -> io::Result<()> {
    let n = finished.summary.n;
    let seconds = finished.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    };
    if as_json {
        let mut map = summary_json(&finished.summary);
        map.insert("function".into(), json!(function));
        map.insert("start".into(), json!(start));
        map.insert("elapsed_s".into(), json!(seconds));
        map.insert("elements_per_s".into(), json!(rate));
        map.insert("workers".into(), json!(finished.workers));
        map.insert("chunks".into(), json!(finished.chunks));
        map.insert("attempts".into(), json!(finished.attempts));
        map.insert("mode".into(), json!(mode_name(&finished.mode)));
        map.insert("job_id".into(), json!(finished.job_id));
        writeln!(out, "{}", serde_json::Value::Object(map))?;
        return out.flush();
    }
    let end = u128::from(start) + u128::from(n);
    let mut lines = vec![
        ("function", function.to_owned()),
        ("range", format!("[{start}, {end})")),
    ];
    lines.extend(summary_lines(&finished.summary));
    let elapsed = if seconds < 1.0 {
        format!("{:.3} ms", seconds * 1e3)
    } else {
        format!("{seconds:.3} s")
    };
    lines.push(("elapsed", elapsed));
    lines.push(("rate", format!("{rate:.3e} elements/s")));
    lines.push((
        "workers",
        format!(
            "{} ({}), {} chunks",
            finished.workers,
            mode_text(&finished.mode),
            finished.chunks
        ),
    ));
    print_lines(out, &lines)
}

/// Prints the summary `farm digest` recomputed from a file.
pub fn print_file_summary(
    out: &mut dyn Write,
    path: &str,
    summary: &Summary,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        let mut map = summary_json(summary);
        map.insert("file".into(), json!(path));
        writeln!(out, "{}", serde_json::Value::Object(map))?;
        return out.flush();
    }
    let mut lines = vec![("file", path.to_owned())];
    lines.extend(summary_lines(summary));
    print_lines(out, &lines)
}

/// Prints the cluster's workers and counters.
pub fn print_cluster(
    out: &mut dyn Write,
    status: &v1::GetClusterStatusResponse,
    as_json: bool,
) -> io::Result<()> {
    let counters = status.counters.unwrap_or_default();
    if as_json {
        let workers: Vec<_> = status
            .workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.worker_id, "name": w.name, "threads": w.threads,
                    "leases_held": w.leases_held, "chunks_completed": w.chunks_completed,
                    "elements_completed": w.elements_completed, "draining": w.draining,
                    "last_seen_ms": w.last_seen_ms, "silent": w.silent,
                })
            })
            .collect();
        let value = json!({
            "workers": workers,
            "running_jobs": status.running_jobs,
            "counters": {
                "leases_granted": counters.leases_granted,
                "leases_expired": counters.leases_expired,
                "leases_returned": counters.leases_returned,
                "results_accepted": counters.results_accepted,
                "results_rejected_stale": counters.results_rejected_stale,
                "chunk_failures": counters.chunk_failures,
                "retries": counters.retries,
                "jobs_submitted": counters.jobs_submitted,
                "jobs_finished": counters.jobs_finished,
                "jobs_failed": counters.jobs_failed,
                "jobs_cancelled": counters.jobs_cancelled,
                "backups_granted": counters.backups_granted,
                "backups_won": counters.backups_won,
            },
        });
        writeln!(out, "{value}")?;
        return out.flush();
    }
    writeln!(
        out,
        "{:<6}{:<28}{:>8}{:>8}{:>10}{:>16}  state",
        "id", "name", "threads", "leases", "chunks", "elements"
    )?;
    for w in &status.workers {
        let state = if w.draining { "draining" } else { "active" };
        writeln!(
            out,
            "{:<6}{:<28}{:>8}{:>8}{:>10}{:>16}  {state}",
            format!("w{}", w.worker_id),
            w.name,
            w.threads,
            w.leases_held,
            w.chunks_completed,
            w.elements_completed
        )?;
    }
    writeln!(
        out,
        "\n{} worker(s), {} running job(s)\nleases: {} granted, {} expired, {} returned; results: {} accepted, {} rejected as stale; {} chunk failures, {} retries; backups: {} granted, {} won\njobs: {} submitted, {} finished, {} failed, {} cancelled",
        status.workers.len(),
        status.running_jobs,
        counters.leases_granted,
        counters.leases_expired,
        counters.leases_returned,
        counters.results_accepted,
        counters.results_rejected_stale,
        counters.chunk_failures,
        counters.retries,
        counters.backups_granted,
        counters.backups_won,
        counters.jobs_submitted,
        counters.jobs_finished,
        counters.jobs_failed,
        counters.jobs_cancelled
    )?;
    out.flush()
}
