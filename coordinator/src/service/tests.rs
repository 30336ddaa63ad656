//! Grant delivery: what the hub does when a worker's session cannot take
//! a grant. The outbox is read (or not) by hand, as a slow worker would.

use std::time::{Duration, Instant};

use farm_catalog::Function;
use farm_catalog::grid::LEAF_LEN;
use farm_proto::v1::CoordinatorMessage;
use farm_proto::v1::coordinator_message::Kind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Hub, SESSION_QUEUE, Session};
use crate::config::CoordinatorConfig;
use crate::modules::SessionModules;
use crate::scheduler::{JobFunction, JobSpec, WorkerId, WorkerInfo};

type Outbox = mpsc::Receiver<Result<farm_net::wire::Encoded, tonic::Status>>;

/// A hub with one `sqrt` job of `chunks` one-leaf chunks and one
/// connected worker whose outbox the test reads.
fn hub_with_worker(chunks: u64) -> (Hub, WorkerId, Outbox, CancellationToken) {
    hub_with_job(Function::Sqrt.into(), chunks)
}

/// Like [`hub_with_worker`], with a job of `function`.
fn hub_with_job(function: JobFunction, chunks: u64) -> (Hub, WorkerId, Outbox, CancellationToken) {
    let hub = Hub::new(CoordinatorConfig::default(), CancellationToken::new());
    let (outbox, rx) = mpsc::channel(SESSION_QUEUE);
    let closed = CancellationToken::new();
    let worker = {
        let mut state = hub.lock();
        let info = WorkerInfo {
            name: "slow reader".into(),
            threads: 1,
        };
        let worker = state.scheduler.register_worker(info, Instant::now());
        let session = Session {
            outbox,
            closed: closed.clone(),
            paused_since: None,
            pinged_at: None,
            modules: SessionModules::default(),
        };
        state.sessions.insert(worker, session);
        worker
    };
    let spec = JobSpec {
        function,
        start: 0,
        n: chunks * LEAF_LEN,
        chunk_size: Some(LEAF_LEN),
        stream_values: false,
    };
    hub.with_scheduler(|s, now| s.submit(spec, now))
        .expect("the job is accepted");
    (hub, worker, rx, closed)
}

/// Pulls one lease per call until the outbox is full, then once more.
fn overfill(hub: &Hub, worker: WorkerId) {
    for _ in 0..=SESSION_QUEUE {
        hub.with_scheduler(|s, now| s.pull(worker, 1, now));
    }
}

/// Leases in the grants waiting in the outbox, one count per message.
fn queued_grants(rx: &mut Outbox) -> Vec<usize> {
    let mut sizes = Vec::new();
    while let Ok(Ok(encoded)) = rx.try_recv() {
        let message: CoordinatorMessage = encoded.decode().expect("a message the hub encoded");
        if let Some(Kind::Grant(grant)) = message.kind {
            sizes.push(grant.leases.len());
        }
    }
    sizes
}

#[test]
fn a_worker_slow_to_read_is_paused_then_resumed_without_losing_tries() {
    let (hub, worker, mut rx, closed) = hub_with_worker(1000);
    overfill(&hub, worker);
    {
        let state = hub.lock();
        assert!(state.sessions[&worker].paused_since.is_some());
        let c = state.scheduler.counters();
        assert_eq!((c.leases_undelivered, c.retries), (1, 0));
        assert_eq!(state.scheduler.leases_of(worker).len(), SESSION_QUEUE);
    }
    // Paused: more demand is kept, nothing more is sent.
    hub.with_scheduler(|s, now| s.pull(worker, 2, now));
    hub.tick();
    assert_eq!(hub.lock().scheduler.counters().leases_undelivered, 1);
    let reported = super::status::cluster(&hub).counters.unwrap_or_default();
    assert_eq!(reported.leases_undelivered, 1, "farm workers shows it");
    assert!(!closed.is_cancelled());

    // The worker reads its queue; the next tick resumes its grants, with
    // the lease it missed and the demand it added, in one message.
    assert_eq!(queued_grants(&mut rx), vec![1; SESSION_QUEUE]);
    hub.tick();
    assert_eq!(queued_grants(&mut rx), vec![3]);
    let state = hub.lock();
    assert!(state.sessions[&worker].paused_since.is_none());
    assert_eq!(state.scheduler.leases_of(worker).len(), SESSION_QUEUE + 3);
    assert_eq!(state.scheduler.counters().retries, 0);
}

#[test]
fn a_worker_that_reads_nothing_is_dropped_and_its_chunks_keep_their_tries() {
    let (hub, worker, _rx, closed) = hub_with_worker(1000);
    overfill(&hub, worker);
    let patience = hub.config().scheduler.lease_timeout;
    let mut state = hub.lock();
    let since = state.sessions[&worker]
        .paused_since
        .expect("the session is paused");

    state.check_paused(since + patience, patience);
    assert!(state.sessions.contains_key(&worker), "not yet");
    state.check_paused(since + patience + Duration::from_millis(1), patience);
    state.apply_effects();
    assert!(!state.sessions.contains_key(&worker));
    assert!(closed.is_cancelled(), "its session is ended");
    assert!(state.scheduler.worker_status(Instant::now()).is_empty());
    let c = state.scheduler.counters();
    assert_eq!((c.retries, c.jobs_failed), (0, 0));

    // Its chunks go to the next worker: first tries all the same.
    let info = WorkerInfo {
        name: "next".into(),
        threads: 1,
    };
    let next = state.scheduler.register_worker(info, Instant::now());
    state.scheduler.pull(next, 1, Instant::now());
    let held = state.scheduler.leases_of(next).to_vec();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].chunk, held[0].attempt), (0, 2));
}

#[test]
fn a_module_goes_to_a_worker_once_before_its_first_lease() {
    // The hub neither reads nor checks the module: any bytes do here.
    let module = bytes::Bytes::from_static(b"(module)");
    let hash = farm_wasm::ContentHash::of(&module);
    let function = JobFunction::Wasm {
        hash,
        name: "m.wat".into(),
    };
    let (hub, worker, mut rx, _closed) = hub_with_job(function, 10);
    hub.lock().modules.hold(hash, module.clone());
    for _ in 0..10 {
        hub.with_scheduler(|s, now| s.pull(worker, 1, now));
    }
    let mut messages = Vec::new();
    while let Ok(Ok(encoded)) = rx.try_recv() {
        let message: CoordinatorMessage = encoded.decode().expect("a message the hub encoded");
        messages.extend(message.kind);
    }
    let Some(Kind::Module(sent)) = messages.first() else {
        panic!("the module goes first: {messages:?}");
    };
    assert_eq!((sent.hash.as_ref(), &sent.module), (&hash.0[..], &module));
    let leases: Vec<_> = messages[1..]
        .iter()
        .flat_map(|kind| match kind {
            Kind::Grant(grant) => grant.leases.clone(),
            other => panic!("one module, then grants: {other:?}"),
        })
        .collect();
    assert_eq!(leases.len(), 10);
    assert!(
        leases
            .iter()
            .all(|lease| lease.function == "wasm" && lease.wasm_module_hash.as_ref() == hash.0)
    );
}
