//! Printing results: the job summary, a file's summary, the cluster's
//! workers. Plain aligned text for people, `--json` for scripts. Floats
//! are printed in shortest round-trip form, so a printed sum is exact.

use std::io::{self, Write};

use farm_catalog::Summary;
use farm_net::display::{LONG, shown_up_to};
use farm_proto::v1;
use farm_proto::v1::get_job_status_response::State;
use serde_json::json;

use crate::submit::{Finished, Mode};

/// Text the coordinator sent (a worker's name, a function's name, why a
/// job failed), as a line of plain output may show it: escaped and
/// bounded. JSON output keeps it as sent: serde escapes what JSON must.
fn remote(text: &str) -> String {
    shown_up_to(text, LONG).to_string()
}

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
    let mut lines = Vec::new();
    if let (Some(id), Mode::Cluster(_)) = (finished.job_id, &finished.mode) {
        // For `farm status JOB` on that cluster.
        lines.push(("job", id.to_string()));
    }
    lines.extend([
        ("function", function.to_owned()),
        ("range", format!("[{start}, {end})")),
    ]);
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
            "{} ({}), {} chunks{}",
            finished.workers,
            mode_text(&finished.mode),
            finished.chunks,
            match finished.attempts.saturating_sub(finished.chunks) {
                0 => String::new(),
                extra => format!(", {extra} extra attempt(s)"),
            }
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

/// A worker's round trip for `farm workers`: "-" until measured.
fn round_trip(micros: u64) -> String {
    match micros {
        0 => "-".to_owned(),
        1..1000 => format!("{micros}us"),
        _ => format!("{:.1}ms", micros as f64 / 1000.0),
    }
}

/// Prints the cluster's workers and counters.
pub fn print_cluster(
    out: &mut dyn Write,
    status: &v1::GetClusterStatusResponse,
    as_json: bool,
) -> io::Result<()> {
    let counters = status.counters.unwrap_or_default();
    let piped = status.piped_values.unwrap_or_default();
    if as_json {
        let workers: Vec<_> = status
            .workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.worker_id, "name": w.name, "threads": w.threads,
                    "leases_held": w.leases_held, "chunks_completed": w.chunks_completed,
                    "elements_completed": w.elements_completed, "draining": w.draining,
                    "silent": w.silent, "elements_per_s": w.elements_per_second,
                    "last_seen_ms": w.last_seen_ms, "round_trip_us": w.round_trip_us,
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
                "leases_undelivered": counters.leases_undelivered,
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
            "piped_values": {
                "pipes": piped.pipes,
                "bytes": piped.bytes,
                "peak_bytes": piped.peak_bytes,
            },
        });
        writeln!(out, "{value}")?;
        return out.flush();
    }
    writeln!(
        out,
        "{:<6}{:<28}{:>8}{:>8}{:>10}{:>16}{:>14}{:>10}  state",
        "id", "name", "threads", "leases", "chunks", "elements", "elements/s", "rtt"
    )?;
    for w in &status.workers {
        let state = if w.silent {
            "silent"
        } else if w.draining {
            "draining"
        } else {
            "active"
        };
        let speed = if w.elements_per_second > 0.0 {
            format!("{:.3e}", w.elements_per_second)
        } else {
            "-".to_owned()
        };
        writeln!(
            out,
            "{:<6}{:<28}{:>8}{:>8}{:>10}{:>16}{:>14}{:>10}  {state}",
            format!("w{}", w.worker_id),
            remote(&w.name),
            w.threads,
            w.leases_held,
            w.chunks_completed,
            w.elements_completed,
            speed,
            round_trip(w.round_trip_us)
        )?;
    }
    writeln!(
        out,
        "\n{} worker(s), {} running job(s)\nleases: {} granted, {} expired, {} returned, {} undelivered; results: {} accepted, {} rejected as stale; {} chunk failures, {} retries; backups: {} granted, {} won\njobs: {} submitted, {} finished, {} failed, {} cancelled",
        status.workers.len(),
        status.running_jobs,
        counters.leases_granted,
        counters.leases_expired,
        counters.leases_returned,
        counters.leases_undelivered,
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
    writeln!(
        out,
        "values in pipes: {:.1} MB now ({} pipes), at most {:.1} MB",
        piped.bytes as f64 / 1e6,
        piped.pipes,
        piped.peak_bytes as f64 / 1e6
    )?;
    out.flush()
}

/// Prints one job's status.
pub fn print_job_status(
    out: &mut dyn Write,
    job: &v1::GetJobStatusResponse,
    as_json: bool,
) -> io::Result<()> {
    let state = match job.state() {
        State::Running => "running",
        State::Finished => "finished",
        State::Failed => "failed",
        State::Cancelled => "cancelled",
        State::Unspecified => "unknown",
    };
    let c = job.counters.unwrap_or_default();
    if as_json {
        let value = json!({
            "job_id": job.job_id, "state": state, "error": job.error,
            "function": job.function, "start": job.start, "n": job.n,
            "elements_done": job.elements_done, "chunks_done": job.chunks_done,
            "chunks_running": job.chunks_running, "worker_ids": job.worker_ids,
            "elapsed_ms": job.elapsed_ms,
            "counters": {
                "leases_granted": c.leases_granted, "retries": c.retries,
                "backups_granted": c.backups_granted, "backups_won": c.backups_won,
                "results_rejected_stale": c.results_rejected_stale,
            },
        });
        writeln!(out, "{value}")?;
        return out.flush();
    }
    let percent = if job.n > 0 {
        job.elements_done as f64 * 100.0 / job.n as f64
    } else {
        100.0
    };
    let workers: Vec<String> = job.worker_ids.iter().map(|w| format!("w{w}")).collect();
    let mut lines = vec![
        ("job", job.job_id.to_string()),
        ("state", state.to_owned()),
        ("function", remote(&job.function)),
        (
            "range",
            format!(
                "[{}, {})",
                job.start,
                u128::from(job.start) + u128::from(job.n)
            ),
        ),
        (
            "done",
            format!(
                "{} of {} elements ({percent:.1}%), {} chunks, {} running",
                job.elements_done, job.n, job.chunks_done, job.chunks_running
            ),
        ),
        (
            "leases",
            format!(
                "{} granted, {} retries, {} backups ({} won), {} stale results rejected",
                c.leases_granted,
                c.retries,
                c.backups_granted,
                c.backups_won,
                c.results_rejected_stale
            ),
        ),
        ("workers", workers.join(", ")),
        ("elapsed", format!("{:.3} s", job.elapsed_ms as f64 / 1e3)),
    ];
    if !job.error.is_empty() {
        lines.push(("error", remote(&job.error)));
    }
    print_lines(out, &lines)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn printed(print: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// What a rogue worker (or coordinator) sent never reaches the
    /// terminal raw: no escape sequence, no extra line.
    #[test]
    fn text_from_the_coordinator_is_printed_escaped() {
        let status = v1::GetClusterStatusResponse {
            workers: vec![v1::WorkerStatus {
                worker_id: 1,
                name: "w\u{1b}[2J\nfarm: forged".to_owned(),
                threads: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = printed(|out| print_cluster(out, &status, false));
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with("w1    w\\u{1b}[2J\\u{a}farm: forged"),
            "{row}"
        );
        assert!(!text.contains(['\u{1b}']), "{text}");

        let job = v1::GetJobStatusResponse {
            job_id: 7,
            state: State::Failed.into(),
            error: format!("chunk 3 failed: {}\r\nfarm: ok", "e".repeat(3000)),
            function: "f\u{9b}31m".to_owned(),
            ..Default::default()
        };
        let text = printed(|out| print_job_status(out, &job, false));
        assert!(text.contains("function  f\\u{9b}31m\n"), "{text}");
        let error = text.lines().find(|l| l.starts_with("error")).unwrap();
        assert_eq!(
            error,
            format!(
                "error     chunk 3 failed: {}… (3026 bytes)",
                "e".repeat(LONG - "chunk 3 failed: ".len())
            )
        );
        assert_eq!(text.lines().count(), 9, "{text}");
    }
}
