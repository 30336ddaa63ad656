//! The one bridge from async code to the compute threads.
//!
//! Chunks run on a dedicated rayon pool that uses every core it is given;
//! the async runtime only waits for the answer on a oneshot channel. Work
//! whose caller is gone is skipped, and a panic becomes an error instead
//! of taking the worker down.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;

/// The compute pool.
#[derive(Debug)]
pub struct ComputePool {
    pool: rayon::ThreadPool,
}

/// Work that did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("the compute pool dropped the task")]
    Dropped,
}

impl ComputePool {
    pub fn new(threads: usize) -> Result<ComputePool, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("farm-compute-{i}"))
            .build()?;
        Ok(ComputePool { pool })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on the pool (where rayon's parallel iterators use all of
    /// its threads) and returns its result when done.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ComputeError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            if reply.is_closed() {
                return;
            }
            let _entered = span.enter();
            let outcome = catch_panic(work);
            let _ = reply.send(outcome);
        });
        answer.await.unwrap_or(Err(ComputeError::Dropped))
    }
}

/// Runs `work`, turning a panic into an error that carries its message.
pub fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, ComputeError> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        ComputeError::Panicked(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_turns_panics_into_errors() {
        let pool = ComputePool::new(2).unwrap();
        assert_eq!(pool.threads(), 2);
        assert_eq!(pool.run(|| 6 * 7).await, Ok(42));
        let failed = pool.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(failed, Err(ComputeError::Panicked("boom".into())));
        // The pool survives.
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }

    #[tokio::test]
    async fn parallel_iterators_use_the_pool() {
        use rayon::prelude::*;
        let pool = ComputePool::new(3).unwrap();
        let threads = pool.run(rayon::current_num_threads).await;
        assert_eq!(threads, Ok(3));
        let sum = pool.run(|| (0..1000u64).into_par_iter().sum::<u64>()).await;
        assert_eq!(sum, Ok(499_500));
    }
}
