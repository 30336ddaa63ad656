//! The WebAssembly modules of running jobs, by content hash, and which of
//! them each worker session holds.
//!
//! A module is stored while a job needs it and sent to each worker once:
//! before the first lease that names it, and again only once the worker
//! has dropped it. A worker keeps the last [`SESSION_MODULES`] modules a
//! session sent it (see `WasmModule` in the proto); [`SessionModules`]
//! counts the same way, so both sides agree on what the worker holds
//! without it ever saying.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use farm_wasm::ContentHash;

/// Modules a worker keeps per session; the proto documents the number.
pub const SESSION_MODULES: usize = 16;

/// Running jobs' modules. Bounded by the running jobs times the largest
/// module accepted.
#[derive(Debug, Default)]
pub struct ModuleStore {
    modules: HashMap<ContentHash, Stored>,
}

#[derive(Debug)]
struct Stored {
    module: Bytes,
    /// Running jobs that need it.
    jobs: usize,
}

impl ModuleStore {
    /// A job needs `module`; jobs of the same module share one copy.
    pub fn hold(&mut self, hash: ContentHash, module: Bytes) {
        self.modules
            .entry(hash)
            .or_insert(Stored { module, jobs: 0 })
            .jobs += 1;
    }

    /// A job that needed `hash` ended; the module goes with the last one.
    pub fn release(&mut self, hash: ContentHash) {
        if let Some(stored) = self.modules.get_mut(&hash) {
            stored.jobs -= 1;
            if stored.jobs == 0 {
                self.modules.remove(&hash);
            }
        }
    }

    pub fn get(&self, hash: &ContentHash) -> Option<&Bytes> {
        self.modules.get(hash).map(|stored| &stored.module)
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// The modules one worker session holds, oldest first.
#[derive(Debug, Default)]
pub struct SessionModules {
    held: VecDeque<ContentHash>,
}

impl SessionModules {
    pub fn holds(&self, hash: &ContentHash) -> bool {
        self.held.contains(hash)
    }

    /// `hash` was sent: the worker holds it now, and drops its oldest if
    /// it holds more than [`SESSION_MODULES`].
    pub fn sent(&mut self, hash: ContentHash) {
        self.held.push_back(hash);
        if self.held.len() > SESSION_MODULES {
            self.held.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> ContentHash {
        ContentHash([n; 32])
    }

    #[test]
    fn a_module_lives_while_a_job_needs_it() {
        let mut store = ModuleStore::default();
        store.hold(hash(1), Bytes::from_static(b"one"));
        store.hold(hash(1), Bytes::from_static(b"one"));
        store.release(hash(1));
        assert_eq!(store.get(&hash(1)), Some(&Bytes::from_static(b"one")));
        store.release(hash(1));
        assert_eq!(store.get(&hash(1)), None);
        assert!(store.is_empty());
        // A release with nothing held changes nothing.
        store.release(hash(1));
        assert!(store.is_empty());
    }

    #[test]
    fn a_session_holds_the_last_sixteen_sent() {
        let mut session = SessionModules::default();
        for n in 0..=SESSION_MODULES as u8 {
            assert!(!session.holds(&hash(n)));
            session.sent(hash(n));
        }
        // The first one sent was dropped when the seventeenth came.
        assert!(!session.holds(&hash(0)));
        assert!((1..=SESSION_MODULES as u8).all(|n| session.holds(&hash(n))));
    }
}
