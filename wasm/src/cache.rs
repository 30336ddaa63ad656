//! Compiled modules by content hash: each worker compiles a module once.
//!
//! In memory, the most recently used [`Cache::capacity`] modules are kept.
//! On disk (optional), each compiled module is a file named by its hash;
//! loading one skips compilation across restarts. The directory must be
//! private to the worker: a file there is loaded as native code (wasmtime
//! checks it was made by the same wasmtime with the same settings, not
//! that nobody changed it).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch;
use crate::engine::Engine;
use crate::module::{Batch, Checked, ContentHash, FILL_EXPORT, MEMORY_EXPORT};
use crate::nan::NanBits;

/// A module compiled for this machine, ready to instantiate.
pub struct Compiled {
    pub hash: ContentHash,
    /// Which engine compiled it, and so must run it.
    pub nan_bits: NanBits,
    pub(crate) module: wasmtime::Module,
    /// The export farm calls per batch, and the memory it writes into.
    pub(crate) fill_export: &'static str,
    pub(crate) memory_export: &'static str,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("hash", &self.hash)
            .field("fill_export", &self.fill_export)
            .finish_non_exhaustive()
    }
}

/// Which appended loop ([`batch`]) a file on disk holds: changed with
/// the loop, so that a file of an older loop is compiled again.
const LOOP_REVISION: &str = "loop2";

/// A checked module Cranelift did not compile (a feature this build of
/// the engine lacks, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compile module {hash}: {reason}")]
pub struct CompileError {
    pub hash: ContentHash,
    pub reason: String,
}

/// Compiled modules, by hash.
#[derive(Debug)]
pub struct Cache {
    engine: Engine,
    capacity: usize,
    /// Least recently used first.
    entries: Mutex<VecDeque<Arc<Compiled>>>,
    dir: Option<PathBuf>,
}

impl Cache {
    /// A cache of at most `capacity` modules in memory (at least one),
    /// and on disk in `dir` when given.
    pub fn new(engine: Engine, capacity: usize, dir: Option<PathBuf>) -> Cache {
        Cache {
            engine,
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::new()),
            dir,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many modules are held in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled module of `checked`, compiled now if neither memory
    /// nor disk has it.
    pub fn get(&self, checked: &Checked) -> Result<Arc<Compiled>, CompileError> {
        if let Some(found) = self.take(&checked.hash) {
            self.put(found.clone());
            return Ok(found);
        }
        // Compiled outside the lock: another thread may compile the same
        // module at the same time, which only costs time.
        let module = match self.load_from_disk(checked) {
            Some(module) => module,
            None => {
                let module = compile(&self.engine, checked)?;
                self.store_on_disk(checked, &module);
                module
            }
        };
        let (fill_export, memory_export) = match checked.batch {
            Batch::Own => (FILL_EXPORT, MEMORY_EXPORT),
            Batch::Appended { .. } => (batch::APPENDED_FILL, batch::APPENDED_MEMORY),
        };
        let compiled = Arc::new(Compiled {
            hash: checked.hash,
            nan_bits: checked.nan_bits,
            module,
            fill_export,
            memory_export,
        });
        self.put(compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Compiled>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, hash: &ContentHash) -> Option<Arc<Compiled>> {
        let mut entries = self.lock();
        let at = entries.iter().position(|c| c.hash == *hash)?;
        entries.remove(at)
    }

    fn put(&self, compiled: Arc<Compiled>) {
        let mut entries = self.lock();
        if entries.iter().any(|c| c.hash == compiled.hash) {
            return;
        }
        entries.push_back(compiled);
        while entries.len() > self.capacity {
            entries.pop_front();
        }
    }

    fn path(&self, checked: &Checked) -> Option<PathBuf> {
        // The rewrite is farm-wasm's: a new version may append a different
        // loop, so its files are its own; and each engine reads only what
        // it compiled.
        let version = env!("CARGO_PKG_VERSION");
        let engine = match checked.nan_bits {
            NanBits::Observed => "canonical-nans",
            NanBits::Unobserved => "plain",
        };
        let hash = checked.hash;
        Some(self.dir.as_ref()?.join(format!(
            "{hash}-farm-wasm-{version}-{LOOP_REVISION}-{engine}.cwasm"
        )))
    }

    fn load_from_disk(&self, checked: &Checked) -> Option<wasmtime::Module> {
        let path = self.path(checked)?;
        if !path.is_file() {
            return None;
        }
        // SAFETY: the directory is the worker's own (see the module docs):
        // its files were written by `store_on_disk` from modules this
        // process's wasmtime compiled; wasmtime refuses files made by
        // another version or configuration, and then we compile again.
        let engine = self.engine.wasmtime(checked.nan_bits);
        unsafe { wasmtime::Module::deserialize_file(engine, &path) }.ok()
    }

    /// Best effort: a cache that cannot be written only costs compiling
    /// again next time.
    fn store_on_disk(&self, checked: &Checked, module: &wasmtime::Module) {
        let Some(path) = self.path(checked) else {
            return;
        };
        if let Ok(bytes) = module.serialize() {
            let _ = write_atomically(&path, &bytes);
        }
    }
}

fn compile(engine: &Engine, checked: &Checked) -> Result<wasmtime::Module, CompileError> {
    let failed = |reason: String| CompileError {
        hash: checked.hash,
        reason,
    };
    let binary = match checked.batch {
        Batch::Own => checked.binary.clone(),
        Batch::Appended { f_index } => {
            batch::append_fill(&checked.binary, f_index).map_err(|e| failed(e.to_string()))?
        }
    };
    wasmtime::Module::from_binary(engine.wasmtime(checked.nan_bits), &binary)
        .map_err(|e| failed(e.to_string()))
}

/// Writes `bytes` to `path` so a reader sees the old file or the whole new
/// one, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}
