//! The session's message handling, driven by a fake coordinator on the
//! two ends of an in-memory call.

#![allow(clippy::unwrap_used)]

use farm_net::wire::FrameBody;

use super::*;
use crate::chunks::compute;
use crate::modules::BatchModules;
use farm_wasm::Limits;

/// The coordinator's end of a session under test.
struct FakeCoordinator {
    to_worker: FrameSender,
    from_worker: MessageReader<FrameBody>,
}

impl FakeCoordinator {
    async fn send(&self, kind: Incoming) {
        let message = v1::CoordinatorMessage { kind: Some(kind) };
        self.to_worker
            .send(Encoded::message(&message))
            .await
            .unwrap();
    }

    /// The worker's next message other than a heartbeat; `None` once it
    /// closed its side.
    async fn next(&mut self) -> Option<Outgoing> {
        loop {
            let message = tokio::time::timeout(
                Duration::from_secs(30),
                self.from_worker.message::<v1::WorkerMessage>(),
            )
            .await
            .expect("the worker says something within 30 s")
            .unwrap();
            match message?.kind.unwrap() {
                Outgoing::Heartbeat(_) => {}
                kind => return Some(kind),
            }
        }
    }
}

fn token(chunk: u32) -> v1::LeaseToken {
    v1::LeaseToken {
        job_id: 4,
        chunk_index: u64::from(chunk),
        attempt: 1,
    }
}

fn lease(chunk: u32, len: u64) -> v1::ChunkLease {
    v1::ChunkLease {
        token: Some(token(chunk)),
        function: "sqrt".to_owned(),
        job_start: 10,
        offset: u64::from(chunk) << 20,
        len,
        stream_values: false,
        wasm_module_hash: bytes::Bytes::new(),
    }
}

fn grant(leases: Vec<v1::ChunkLease>) -> Incoming {
    Incoming::Grant(v1::LeaseGrant { leases })
}

/// A large lease: it cannot finish within the short drain grace.
const SLOW: u64 = 1 << 30;
const QUICK: u64 = 1 << 20;

/// Starts a session with `prefetch` and `drain_grace` served against a
/// fake coordinator; the session's end comes out of the returned task.
fn start(
    prefetch: u32,
    drain_grace: Duration,
    drain: &CancellationToken,
) -> (FakeCoordinator, tokio::task::JoinHandle<SessionEnd>) {
    let mut config = WorkerConfig::new("fake");
    config.prefetch = prefetch;
    config.drain_grace = drain_grace;
    let (to_worker, inbound) = FrameBody::response(16);
    let (outbox, from_worker) = FrameBody::request(64);
    let welcome = v1::Welcome {
        worker_id: 1,
        heartbeat_interval_ms: 60_000,
        lease_timeout_ms: 60_000,
        results_token: bytes::Bytes::new(),
    };
    let drain = drain.clone();
    let serving = tokio::spawn(async move {
        let pool = Arc::new(ComputePool::new(1).unwrap());
        let runtime = Arc::new(Runtime::new(Limits::default(), None).unwrap());
        let session = Session {
            config: &config,
            pool: &pool,
            runtime: &runtime,
            outbox,
            results: None,
            leases: Leases::new(config.prefetch),
            modules: Modules::default(),
            computing: None,
        };
        let inbound = MessageReader::new(Body::new(inbound));
        session.serve(inbound, &welcome, &drain).await
    });
    let fake = FakeCoordinator {
        to_worker,
        from_worker: MessageReader::new(from_worker),
    };
    (fake, serving)
}

fn expect_results(kind: Option<Outgoing>) -> v1::ChunkResults {
    match kind {
        Some(Outgoing::Results(results)) => results,
        other => panic!("expected results, got {other:?}"),
    }
}

#[tokio::test]
async fn pulls_computes_reports_and_replaces_each_lease() {
    let drain = CancellationToken::new();
    let (mut coordinator, serving) = start(2, Duration::from_secs(30), &drain);
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Pull(v1::PullRequest { slots: 2 }))
    );
    coordinator
        .send(grant(vec![lease(0, QUICK), lease(1, QUICK)]))
        .await;
    // One at a time (each is a batch of its own), each result with the
    // pull that replaces its lease.
    for chunk in 0..2 {
        let results = expect_results(coordinator.next().await);
        assert_eq!(results.pull, 1);
        assert_eq!(results.results.len(), 1);
        let result = &results.results[0];
        assert_eq!(result.token, Some(token(chunk)));
        let expected = compute(&lease(chunk, QUICK), &BatchModules::default())
            .unwrap()
            .summary;
        assert_eq!((result.min, result.max), (expected.min, expected.max));
        assert_eq!(result.leaf_sums, expected.leaf_sums);
    }

    drain.cancel();
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Drain(v1::DrainNotice {}))
    );
    // Nothing held: the worker closes its side, then waits for ours.
    assert_eq!(coordinator.next().await, None);
    drop(coordinator);
    assert!(matches!(serving.await.unwrap(), SessionEnd::Drained));
}

#[tokio::test]
async fn revoked_and_unfinished_leases_go_back_on_drain() {
    let drain = CancellationToken::new();
    let (mut coordinator, serving) = start(3, Duration::from_millis(50), &drain);
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Pull(v1::PullRequest { slots: 3 }))
    );
    coordinator
        .send(grant(vec![
            lease(0, SLOW),
            lease(1, QUICK),
            lease(2, QUICK),
        ]))
        .await;
    // Chunk 0 is computing; 1 and 2 wait. Revoking 1 frees its place.
    coordinator
        .send(Incoming::Revoke(v1::LeaseRevoke {
            tokens: vec![token(1)],
        }))
        .await;
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Pull(v1::PullRequest { slots: 1 }))
    );

    drain.cancel();
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Drain(v1::DrainNotice {}))
    );
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Returned(v1::ReturnLeases {
            tokens: vec![token(2)]
        }))
    );
    // Granted while draining: straight back.
    coordinator.send(grant(vec![lease(3, QUICK)])).await;
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Returned(v1::ReturnLeases {
            tokens: vec![token(3)]
        }))
    );
    // Chunk 0 outlasts the drain grace and is handed back unfinished.
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Returned(v1::ReturnLeases {
            tokens: vec![token(0)]
        }))
    );
    assert_eq!(coordinator.next().await, None);
    drop(coordinator);
    assert!(matches!(serving.await.unwrap(), SessionEnd::Drained));
}

#[tokio::test]
async fn a_coordinator_that_ends_the_session_loses_it() {
    let drain = CancellationToken::new();
    let (mut coordinator, serving) = start(1, Duration::from_secs(30), &drain);
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Pull(v1::PullRequest { slots: 1 }))
    );
    drop(coordinator.to_worker);
    let SessionEnd::Lost(reason) = serving.await.unwrap() else {
        panic!("the session was not lost");
    };
    assert_eq!(reason, "the coordinator closed the session");
}

fn module_message(text: &str) -> Incoming {
    Incoming::Module(v1::WasmModule {
        hash: bytes::Bytes::copy_from_slice(&farm_wasm::ContentHash::of(text.as_bytes()).0),
        module: bytes::Bytes::copy_from_slice(text.as_bytes()),
    })
}

fn wasm_lease(chunk: u32, module: &str) -> v1::ChunkLease {
    v1::ChunkLease {
        function: "wasm".to_owned(),
        wasm_module_hash: bytes::Bytes::copy_from_slice(
            &farm_wasm::ContentHash::of(module.as_bytes()).0,
        ),
        ..lease(chunk, QUICK)
    }
}

/// The worker's next failure report, past the pulls that replace the
/// leases before it.
async fn next_failure(coordinator: &mut FakeCoordinator) -> v1::ChunkFailure {
    loop {
        match coordinator.next().await {
            Some(Outgoing::Pull(_)) => {}
            Some(Outgoing::Failure(failure)) => return failure,
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn leases_run_the_modules_sent_before_them() {
    // The built-in sqrt's bits: element i is sqrt(10 + i) either way.
    const SQRT: &str = r#"(module (func (export "f") (param $x i64) (result f64)
        (f64.sqrt (f64.convert_i64_s (local.get $x)))))"#;
    const IMPORTS: &str = r#"(module (import "env" "g" (func))
        (func (export "f") (param i64) (result f64) f64.const 1))"#;
    let drain = CancellationToken::new();
    let (mut coordinator, serving) = start(1, Duration::from_secs(30), &drain);
    assert_eq!(
        coordinator.next().await,
        Some(Outgoing::Pull(v1::PullRequest { slots: 1 }))
    );

    coordinator.send(module_message(SQRT)).await;
    coordinator.send(grant(vec![wasm_lease(0, SQRT)])).await;
    let results = expect_results(coordinator.next().await);
    let result = &results.results[0];
    let expected = compute(&lease(0, QUICK), &BatchModules::default())
        .unwrap()
        .summary;
    assert_eq!(result.token, Some(token(0)));
    assert_eq!(result.leaf_sums, expected.leaf_sums);
    assert_eq!(result.leaf_digests, expected.leaf_digests);

    // A module that was never sent: the coordinator's mistake, so another
    // worker may try.
    coordinator.send(grant(vec![wasm_lease(1, IMPORTS)])).await;
    let failure = next_failure(&mut coordinator).await;
    assert_eq!(failure.token, Some(token(1)));
    assert!(failure.retryable, "{failure:?}");
    assert!(failure.message.contains("was not sent to this worker"));

    // A module this worker refuses: every worker would.
    coordinator.send(module_message(IMPORTS)).await;
    coordinator.send(grant(vec![wasm_lease(2, IMPORTS)])).await;
    let failure = next_failure(&mut coordinator).await;
    assert!(!failure.retryable, "{failure:?}");
    assert!(
        failure
            .message
            .ends_with("cannot run here: module imports env::g: farm grants no imports (no WASI, no host functions)"),
        "{}",
        failure.message
    );

    drain.cancel();
    drop(coordinator);
    let _ = serving.await.unwrap();
}
