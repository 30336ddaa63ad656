//! What `GET /metrics` shows: the scheduler's counters and views, the
//! values streamed and held in pipes, in Prometheus' OpenMetrics text.
//!
//! Nothing is counted twice: a scrape copies the numbers the scheduler and
//! [`Hub`] already keep (the same ones `farm workers` and `farm status`
//! show) and writes them out. Per-worker series are labelled with the
//! worker's name and id (names need not be unique); per-job series cover
//! the jobs `farm status` knows, a bounded number.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use crate::scheduler::{Counters, JobState, JobStatus, WorkerStatus};
use crate::service::Hub;
use crate::values::PipeUsage;

type Labels = Vec<(&'static str, String)>;
type Rate = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The numbers of one scrape, copied under the hub's lock.
#[derive(Debug)]
struct Snapshot {
    counters: Counters,
    workers: Vec<WorkerStatus>,
    jobs: Vec<JobStatus>,
    running_jobs: usize,
    streamed_bytes: u64,
    piped: PipeUsage,
}

/// The coordinator's metrics now, as OpenMetrics text.
pub fn render(hub: &Hub) -> String {
    let piped = crate::values::pipe_usage();
    let snapshot = hub.with_scheduler(|s, now| Snapshot {
        counters: s.counters(),
        workers: s.worker_status(now),
        jobs: s.job_statuses(now),
        running_jobs: s.running_jobs(),
        streamed_bytes: hub.streamed_bytes(),
        piped,
    });
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry(&snapshot));
    text
}

fn registry(snapshot: &Snapshot) -> Registry {
    let mut r = Registry::with_prefix("farm");
    cluster(&mut r, snapshot);
    workers(&mut r, &snapshot.workers);
    jobs(&mut r, &snapshot.jobs);
    r
}

fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    r.register(name, help, ConstCounter::new(value));
}

fn cluster(r: &mut Registry, s: &Snapshot) {
    let c = &s.counters;
    counter(
        r,
        "leases_granted",
        "Chunk leases granted to workers: first tries, retries and backups",
        c.leases_granted,
    );
    counter(
        r,
        "leases_expired",
        "Leases lost because their worker went silent",
        c.leases_expired,
    );
    counter(
        r,
        "leases_returned",
        "Leases handed back by draining or departing workers",
        c.leases_returned,
    );
    counter(
        r,
        "leases_undelivered",
        "Leases a worker's session could not take, given to others without using a try",
        c.leases_undelivered,
    );
    counter(
        r,
        "results_accepted",
        "Chunk results merged into their job",
        c.results_accepted,
    );
    counter(
        r,
        "results_stale",
        "Chunk results rejected because their lease was no longer current",
        c.results_rejected_stale,
    );
    counter(
        r,
        "chunk_failures",
        "Chunk attempts that failed on a worker",
        c.chunk_failures,
    );
    counter(
        r,
        "retries",
        "Leases of chunks whose earlier lease failed or was lost",
        c.retries,
    );
    counter(
        r,
        "backups_granted",
        "Second leases of chunks held by a straggler",
        c.backups_granted,
    );
    counter(
        r,
        "backups_won",
        "Chunks whose backup lease reported first",
        c.backups_won,
    );
    counter(
        r,
        "elements_computed",
        "Elements of the accepted chunk results",
        c.elements_computed,
    );
    counter(r, "jobs_submitted", "Jobs accepted", c.jobs_submitted);

    let ended = Family::<Labels, Counter>::default();
    for (outcome, count) in [
        ("finished", c.jobs_finished),
        ("failed", c.jobs_failed),
        ("cancelled", c.jobs_cancelled),
    ] {
        ended
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc_by(count);
    }
    r.register("jobs_ended", "Jobs that ended, by outcome", ended);
    r.register(
        "jobs_running",
        "Jobs running now",
        ConstGauge::new(s.running_jobs as u64),
    );

    let by_state = Family::<Labels, Gauge>::default();
    for state in ["active", "draining", "silent"] {
        by_state
            .get_or_create(&vec![("state", state.to_owned())])
            .set(0);
    }
    for w in &s.workers {
        by_state
            .get_or_create(&vec![("state", worker_state(w).to_owned())])
            .inc();
    }
    r.register("workers", "Connected workers by state", by_state);

    r.register_with_unit(
        "values_streamed",
        "Values handed to clients, on value connections or in job streams",
        Unit::Bytes,
        ConstCounter::new(s.streamed_bytes),
    );
    r.register_with_unit(
        "piped_values",
        "Values held in pipes now (kernel memory)",
        Unit::Bytes,
        ConstGauge::new(s.piped.bytes as u64),
    );
    r.register_with_unit(
        "piped_values_peak",
        "The most values held in pipes at once since the coordinator started",
        Unit::Bytes,
        ConstGauge::new(s.piped.peak_bytes as u64),
    );
    r.register(
        "value_pipes",
        "Pipes holding values now",
        ConstGauge::new(s.piped.pipes as u64),
    );
}

/// Silent wins over draining: a silent worker's leases are gone either way.
fn worker_state(w: &WorkerStatus) -> &'static str {
    if w.silent {
        "silent"
    } else if w.draining {
        "draining"
    } else {
        "active"
    }
}

fn workers(r: &mut Registry, workers: &[WorkerStatus]) {
    let leases = Family::<Labels, Gauge>::default();
    let elements = Family::<Labels, Counter>::default();
    let speed = Family::<Labels, Rate>::default();
    for w in workers {
        let labels = vec![
            ("worker", w.info.name.clone()),
            ("worker_id", w.id.0.to_string()),
        ];
        leases.get_or_create(&labels).set(i64::from(w.leases_held));
        elements.get_or_create(&labels).inc_by(w.elements_completed);
        if let Some(measured) = w.speed {
            speed.get_or_create(&labels).set(measured);
        }
    }
    r.register("worker_leases_held", "Leases each worker holds now", leases);
    r.register(
        "worker_elements_computed",
        "Elements of each worker's accepted results",
        elements,
    );
    r.register(
        "worker_elements_per_second",
        "Each worker's measured compute speed, once it has reported a chunk",
        speed,
    );
}

fn jobs(r: &mut Registry, jobs: &[JobStatus]) {
    let done = Family::<Labels, Gauge>::default();
    let rate = Family::<Labels, Rate>::default();
    for job in jobs {
        let labels = vec![
            ("job", job.id.0.to_string()),
            ("function", job.spec.function.name().to_owned()),
            ("state", job_state(&job.state).to_owned()),
        ];
        done.get_or_create(&labels)
            .set(i64::try_from(job.elements_done).unwrap_or(i64::MAX));
        let seconds = job.elapsed.as_secs_f64();
        if seconds > 0.0 {
            rate.get_or_create(&labels)
                .set(job.elements_done as f64 / seconds);
        }
    }
    r.register("job_elements_done", "Elements each job has merged", done);
    r.register(
        "job_elements_per_second",
        "Each job's elements merged per second since it was accepted, or until it ended",
        rate,
    );
}

fn job_state(state: &JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Finished => "finished",
        JobState::Failed(_) => "failed",
        JobState::Cancelled => "cancelled",
    }
}
