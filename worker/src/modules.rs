//! The WebAssembly modules a session holds, loaded (checked and compiled)
//! as they arrive, and the ones a batch of leases runs.
//!
//! The coordinator sends a module once per session, before the first
//! lease that names it, and sends it again only once this worker has
//! dropped it. Both sides count the same way: the worker keeps the last
//! [`SESSION_MODULES`] modules sent, so the coordinator knows what the
//! worker holds without asking. A module a queued lease still names is
//! kept beyond those too, so a lease never loses its module while it
//! waits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use farm_proto::v1;
use farm_wasm::{ContentHash, Runner, Runtime};

use crate::chunks::ChunkFailure;

/// Modules a session keeps; the coordinator counts the same (see
/// `WasmModule` in the proto).
pub(crate) const SESSION_MODULES: usize = 16;

/// A module as loaded: ready to run, or why it cannot run here.
pub(crate) type Loaded = Result<Arc<Runner>, String>;

/// The modules of one session, in the order they came.
#[derive(Debug, Default)]
pub(crate) struct Modules {
    held: VecDeque<(ContentHash, Loaded)>,
}

impl Modules {
    /// Keeps a module that came as `hash`, and drops what is no longer
    /// needed: anything older than the last [`SESSION_MODULES`] that no
    /// queued lease names.
    pub(crate) fn insert(
        &mut self,
        hash: ContentHash,
        loaded: Loaded,
        named: impl Fn(&ContentHash) -> bool,
    ) {
        self.held.retain(|(held, _)| *held != hash);
        self.held.push_back((hash, loaded));
        self.drop_unneeded(named);
    }

    /// Drops the modules past the last [`SESSION_MODULES`] that no queued
    /// lease names (any more).
    pub(crate) fn drop_unneeded(&mut self, named: impl Fn(&ContentHash) -> bool) {
        let old = self.held.len().saturating_sub(SESSION_MODULES);
        let mut index = 0;
        self.held.retain(|(hash, _)| {
            let keep = index >= old || named(hash);
            index += 1;
            keep
        });
    }

    /// The modules `leases` name, for the compute pool.
    pub(crate) fn for_batch(&self, leases: &[v1::ChunkLease]) -> BatchModules {
        let mut modules = HashMap::new();
        for lease in leases {
            let Some(hash) = ContentHash::from_slice(&lease.wasm_module_hash) else {
                continue;
            };
            if let Some((_, loaded)) = self.held.iter().find(|(held, _)| *held == hash) {
                modules.insert(hash, loaded.clone());
            }
        }
        BatchModules(modules)
    }
}

/// The modules a batch of leases runs, by hash.
#[derive(Debug, Default, Clone)]
pub(crate) struct BatchModules(HashMap<ContentHash, Loaded>);

impl BatchModules {
    /// The runner of a WebAssembly lease. Failing to find it or to load it
    /// are failures of the lease.
    pub(crate) fn runner(&self, lease: &v1::ChunkLease) -> Result<&Runner, ChunkFailure> {
        let Some(hash) = ContentHash::from_slice(&lease.wasm_module_hash) else {
            return Err(ChunkFailure {
                message: format!(
                    "a module hash is 32 bytes, this lease's is {}",
                    lease.wasm_module_hash.len()
                ),
                retryable: false,
            });
        };
        match self.0.get(&hash) {
            Some(Ok(runner)) => Ok(runner),
            // Loading is deterministic: the module fails the same way on
            // every worker with the same limits.
            Some(Err(reason)) => Err(ChunkFailure {
                message: reason.clone(),
                retryable: false,
            }),
            // The coordinator's mistake, not the module's: another worker
            // may have it.
            None => Err(ChunkFailure {
                message: format!(
                    "module {} was not sent to this worker before its lease",
                    hash.short()
                ),
                retryable: true,
            }),
        }
    }
}

/// Checks and compiles a module that came in a session (compiled modules
/// are cached by hash, so a module seen before costs a lookup). Blocking:
/// run it off the async threads.
pub(crate) fn load(runtime: &Runtime, message: &v1::WasmModule) -> Option<(ContentHash, Loaded)> {
    let Some(hash) = ContentHash::from_slice(&message.hash) else {
        tracing::warn!(
            len = message.hash.len(),
            "ignoring a module whose hash is not 32 bytes"
        );
        return None;
    };
    let started = Instant::now();
    let loaded = load_checked(runtime, hash, &message.module);
    match &loaded {
        Ok(_) => {
            tracing::info!(module = %hash.short(), took = ?started.elapsed(), "module loaded")
        }
        Err(reason) => tracing::warn!(module = %hash.short(), %reason, "module refused"),
    }
    Some((hash, loaded))
}

fn load_checked(runtime: &Runtime, hash: ContentHash, module: &Bytes) -> Loaded {
    let actual = ContentHash::of(module);
    if actual != hash {
        return Err(format!(
            "module {} arrived with the bytes of module {}",
            hash.short(),
            actual.short()
        ));
    }
    runtime
        .load(module)
        .map(Arc::new)
        .map_err(|error| format!("module {} cannot run here: {error}", hash.short()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> ContentHash {
        ContentHash([n; 32])
    }

    fn held(modules: &Modules) -> Vec<u8> {
        modules.held.iter().map(|(hash, _)| hash.0[0]).collect()
    }

    #[test]
    fn keeps_the_last_sixteen_and_those_a_queued_lease_names() {
        let mut modules = Modules::default();
        for n in 0..20 {
            // Module 1 is named by a queued lease throughout.
            modules.insert(hash(n), Err(String::new()), |h| *h == hash(1));
        }
        let expected: Vec<u8> = [1].into_iter().chain(4..20).collect();
        assert_eq!(held(&modules), expected);
        // Its lease ran: module 1 goes too.
        modules.drop_unneeded(|_| false);
        assert_eq!(held(&modules), (4..20).collect::<Vec<_>>());
        assert_eq!(held(&modules).len(), SESSION_MODULES);
    }

    #[test]
    fn a_module_sent_again_counts_as_the_newest() {
        let mut modules = Modules::default();
        for n in [1, 2, 1] {
            modules.insert(hash(n), Err(String::new()), |_| false);
        }
        assert_eq!(held(&modules), vec![2, 1]);
    }

    #[test]
    fn a_lease_finds_its_module_or_fails_saying_why() {
        let mut modules = Modules::default();
        modules.insert(hash(7), Err("refused: imports".into()), |_| false);
        let lease = |n: u8| v1::ChunkLease {
            wasm_module_hash: Bytes::copy_from_slice(&[n; 32]),
            ..Default::default()
        };
        let batch = modules.for_batch(&[lease(7), lease(8)]);
        let refused = batch.runner(&lease(7)).unwrap_err();
        assert_eq!(refused.message, "refused: imports");
        assert!(!refused.retryable);
        let missing = batch.runner(&lease(8)).unwrap_err();
        assert!(missing.retryable);
        assert_eq!(
            missing.message,
            format!(
                "module {} was not sent to this worker before its lease",
                hash(8).short()
            )
        );
    }
}
