//! `farm submit ./f.wasm`: the function of a job, a catalog name or a
//! user's WebAssembly module, read and checked before anything starts, so
//! a module farm would refuse is refused here with the reason.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use farm_catalog::Function;
use farm_wasm::{ContentHash, Refused};

/// The largest module farm reads: what fits a message. The coordinator
/// applies its own (smaller, by default 4 MiB) limit.
pub const MAX_READ_BYTES: u64 = farm_proto::MAX_MESSAGE_BYTES as u64 / 2;

/// The function a job maps.
#[derive(Debug, Clone)]
pub enum JobFunction {
    Catalog(Function),
    Wasm(UserModule),
}

impl JobFunction {
    /// The name shown with the job's summary.
    pub fn name(&self) -> &str {
        match self {
            JobFunction::Catalog(function) => function.name(),
            JobFunction::Wasm(module) => &module.name,
        }
    }
}

/// A WebAssembly module, checked, as it will be submitted.
#[derive(Debug, Clone)]
pub struct UserModule {
    /// Its file name.
    pub name: String,
    /// The file's bytes, text or binary.
    pub bytes: Bytes,
    pub hash: ContentHash,
}

/// A module file farm will not submit.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Refused {
        path: PathBuf,
        #[source]
        source: Refused,
    },
}

/// Reads and checks the module at `path` (size, validity, no imports, the
/// contract), as a worker will.
pub fn read(path: &Path) -> Result<UserModule, ModuleError> {
    let read_error = |source| ModuleError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // One byte past the limit is enough to refuse it as too large.
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let limits = farm_wasm::Limits {
        max_module_bytes: MAX_READ_BYTES,
        ..farm_wasm::Limits::default()
    };
    let checked = farm_wasm::check(&bytes, &limits).map_err(|source| ModuleError::Refused {
        path: path.to_owned(),
        source,
    })?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    Ok(UserModule {
        name,
        bytes: bytes.into(),
        hash: checked.hash,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_read_checked_and_named_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.wat");
        let text = r#"(module (func (export "f") (param i64) (result f64) f64.const 1))"#;
        std::fs::write(&path, text).unwrap();
        let module = read(&path).unwrap();
        assert_eq!(module.name, "one.wat");
        assert_eq!(module.hash, ContentHash::of(text.as_bytes()));
        assert_eq!(module.bytes, text.as_bytes());
    }

    #[test]
    fn refusals_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wasm");
        let error = read(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot read {}: ", missing.display())),
            "{error}"
        );
        let imports = dir.path().join("clock.wat");
        std::fs::write(
            &imports,
            r#"(module (import "wasi" "clock" (func)) (func (export "f") (param i64) (result f64) f64.const 1))"#,
        )
        .unwrap();
        assert_eq!(
            read(&imports).unwrap_err().to_string(),
            format!(
                "{}: module imports wasi::clock: farm grants no imports (no WASI, no host functions)",
                imports.display()
            )
        );
        let big = dir.path().join("big.wasm");
        std::fs::write(&big, vec![0; MAX_READ_BYTES as usize + 10]).unwrap();
        assert_eq!(
            read(&big).unwrap_err().to_string(),
            format!(
                "{}: module is {} bytes, over the limit of {MAX_READ_BYTES} bytes",
                big.display(),
                MAX_READ_BYTES + 1
            )
        );
    }
}
