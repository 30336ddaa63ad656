//! What a job computes: a function of the catalog, or a user's
//! WebAssembly module. The scheduler only carries it to the leases; the
//! module itself is kept by the service (`crate::modules`).

use std::fmt;
use std::sync::Arc;

use farm_catalog::Function;
use farm_wasm::ContentHash;

/// The function of a job's elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFunction {
    Catalog(Function),
    /// A WebAssembly module, by content hash; `name` is what the user
    /// called it (its file name), for status and logs only.
    Wasm {
        hash: ContentHash,
        name: Arc<str>,
    },
}

impl JobFunction {
    /// The name shown in status, logs and metrics.
    pub fn name(&self) -> &str {
        match self {
            JobFunction::Catalog(function) => function.name(),
            JobFunction::Wasm { name, .. } => name,
        }
    }

    /// The catalog function, unless it is a WebAssembly job.
    pub fn catalog(&self) -> Option<Function> {
        match self {
            JobFunction::Catalog(function) => Some(*function),
            JobFunction::Wasm { .. } => None,
        }
    }

    /// The module's hash, for a WebAssembly job.
    pub fn module(&self) -> Option<ContentHash> {
        match self {
            JobFunction::Catalog(_) => None,
            JobFunction::Wasm { hash, .. } => Some(*hash),
        }
    }
}

impl From<Function> for JobFunction {
    fn from(function: Function) -> JobFunction {
        JobFunction::Catalog(function)
    }
}

impl fmt::Display for JobFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobFunction::Catalog(function) => f.write_str(function.name()),
            JobFunction::Wasm { hash, name } => write!(f, "{name} (wasm {})", hash.short()),
        }
    }
}
