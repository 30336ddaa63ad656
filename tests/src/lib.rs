//! Test support for farm: an in-process cluster ([`cluster`]), helpers to
//! run the real binaries ([`process`]), a cluster of them for fault tests
//! ([`faults`]) and the compose cluster ([`compose`]), and serial references that every
//! distributed result must match bit for bit ([`reference`]).

pub mod cluster;
pub mod compose;
pub mod faults;
pub mod process;
pub mod proxy;
pub mod reference;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` until it holds, failing the test with `what` after
/// `timeout`: tests wait for states, never for guessed durations.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
