//! Checks every field a client or worker sends before the scheduler sees
//! it. The CLI checks the same things, but the coordinator must not trust
//! any client.

use farm_catalog::Function;
use farm_catalog::grid::round_to_leaves;
use farm_net::display::{LONG, shown, shown_up_to};
use farm_proto::PROTOCOL_VERSION;
use farm_proto::error::{ErrorKind, ServiceError};
use farm_proto::v1;

use crate::config::RequestLimits;
use crate::scheduler::policy::{MAX_FORCED_CHUNK, MAX_FORCED_STREAM_CHUNK};
use crate::scheduler::{JobFunction, JobSpec, WorkerInfo};

pub use farm_proto::MAX_WORKER_THREADS;

/// The longest worker name kept.
pub const MAX_WORKER_NAME: usize = 256;

/// The longest name of a WebAssembly job kept (its file name, as shown).
pub const MAX_MODULE_NAME: usize = 128;

/// A request the coordinator refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error(
        "protocol version mismatch: the {peer} speaks version {theirs}, this coordinator speaks version {PROTOCOL_VERSION}; upgrade the older side"
    )]
    ProtocolVersion { peer: &'static str, theirs: u32 },
    /// The name is echoed escaped and cut short: it may be anything, of
    /// any length, and the message must fit a status.
    #[error(
        "unknown function '{}' (known functions: {})",
        shown(name),
        Function::known_names()
    )]
    UnknownFunction { name: String },
    #[error("n = {n} is over this coordinator's limit of {max} elements{what}")]
    TooManyElements {
        n: u64,
        max: u64,
        what: &'static str,
    },
    #[error("start = {start} with n = {n} runs past the largest index, 2^64 - 1")]
    IndexOverflow { start: u64, n: u64 },
    #[error("chunk_size = {chunk_size} is over the limit of {max} elements{what}")]
    ChunkTooLarge {
        chunk_size: u64,
        max: u64,
        what: &'static str,
    },
    /// Why names what the module holds (its imports, its exports), which
    /// may be anything: escaped and cut short.
    #[error("WebAssembly module refused: {}", shown_up_to(&.0.to_string(), LONG))]
    Module(#[from] farm_wasm::Refused),
    #[error("worker threads = {threads} must be between 1 and {MAX_WORKER_THREADS}")]
    WorkerThreads { threads: u32 },
    #[error("{0}")]
    Protocol(String),
}

impl ServiceError for InvalidRequest {
    fn kind(&self) -> ErrorKind {
        match self {
            InvalidRequest::ProtocolVersion { .. } => ErrorKind::ProtocolMismatch,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

pub fn protocol_version(peer: &'static str, theirs: u32) -> Result<(), InvalidRequest> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(InvalidRequest::ProtocolVersion { peer, theirs })
    }
}

/// A job request made into a [`JobSpec`], or the first thing wrong with it.
pub fn job_spec(
    request: &v1::SubmitJobRequest,
    limits: &RequestLimits,
) -> Result<JobSpec, InvalidRequest> {
    protocol_version("client", request.protocol_version)?;
    let function = if request.wasm_module.is_empty() {
        Function::from_name(&request.function)
            .map_err(|_| InvalidRequest::UnknownFunction {
                name: request.function.clone(),
            })?
            .into()
    } else {
        wasm_function(request, limits)?
    };
    let (max_elements, what) = if request.stream_values {
        (
            limits.max_elements.min(limits.max_streamed_elements),
            " when values are streamed",
        )
    } else {
        (limits.max_elements, "")
    };
    if request.n > max_elements {
        return Err(InvalidRequest::TooManyElements {
            n: request.n,
            max: max_elements,
            what,
        });
    }
    if request.n > 0 && request.start.checked_add(request.n - 1).is_none() {
        return Err(InvalidRequest::IndexOverflow {
            start: request.start,
            n: request.n,
        });
    }
    let chunk_size = match request.chunk_size {
        0 => None,
        size => {
            let (max, what) = if request.stream_values {
                (MAX_FORCED_STREAM_CHUNK, " when values are streamed")
            } else {
                (MAX_FORCED_CHUNK, "")
            };
            if size > max {
                return Err(InvalidRequest::ChunkTooLarge {
                    chunk_size: size,
                    max,
                    what,
                });
            }
            Some(round_to_leaves(size))
        }
    };
    Ok(JobSpec {
        function,
        start: request.start,
        n: request.n,
        chunk_size,
        stream_values: request.stream_values,
    })
}

/// A WebAssembly job's function: its module checked as a worker will check
/// it (size, validity, no imports, the contract), named by its hash.
fn wasm_function(
    request: &v1::SubmitJobRequest,
    limits: &RequestLimits,
) -> Result<JobFunction, InvalidRequest> {
    let wasm_limits = farm_wasm::Limits {
        max_module_bytes: limits.max_module_bytes,
        ..farm_wasm::Limits::default()
    };
    let checked = farm_wasm::check(&request.wasm_module, &wasm_limits)?;
    // Kept as it is shown (`farm status`, logs): escaped, and bounded.
    let mut name = shown_up_to(&request.function, MAX_MODULE_NAME).to_string();
    if name.trim().is_empty() {
        name = "wasm".to_owned();
    }
    Ok(JobFunction::Wasm {
        hash: checked.hash,
        name: name.into(),
    })
}

/// A worker's hello made into [`WorkerInfo`].
pub fn worker_hello(hello: &v1::WorkerHello) -> Result<WorkerInfo, InvalidRequest> {
    protocol_version("worker", hello.protocol_version)?;
    if hello.threads == 0 || hello.threads > MAX_WORKER_THREADS {
        return Err(InvalidRequest::WorkerThreads {
            threads: hello.threads,
        });
    }
    // Kept as it may be shown (`farm workers`, logs): escaped, and bounded.
    let mut name = shown_up_to(&hello.name, MAX_WORKER_NAME).to_string();
    if name.trim().is_empty() {
        name = "unnamed".to_owned();
    }
    Ok(WorkerInfo {
        name,
        threads: hello.threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoordinatorConfig;

    fn request() -> v1::SubmitJobRequest {
        v1::SubmitJobRequest {
            protocol_version: PROTOCOL_VERSION,
            function: "sqrt".into(),
            start: 0,
            n: 1000,
            chunk_size: 0,
            stream_values: false,
            values_connection: false,
            wasm_module: Default::default(),
        }
    }

    fn check(change: impl FnOnce(&mut v1::SubmitJobRequest)) -> Result<JobSpec, InvalidRequest> {
        let mut r = request();
        change(&mut r);
        job_spec(&r, &CoordinatorConfig::default().limits)
    }

    #[test]
    fn a_good_request_passes() {
        let spec = check(|r| r.chunk_size = 5000).unwrap();
        assert_eq!(spec.chunk_size, Some(2 * farm_catalog::grid::LEAF_LEN));
        assert_eq!(spec.n, 1000);
    }

    #[test]
    fn every_bad_field_is_named() {
        type Change = Box<dyn FnOnce(&mut v1::SubmitJobRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.protocol_version = 7),
                "protocol version mismatch: the client speaks version 7, this coordinator speaks version 1; upgrade the older side",
            ),
            (
                Box::new(|r| r.function = "cbrt".into()),
                "unknown function 'cbrt' (known functions: sqrt)",
            ),
            (
                Box::new(|r| r.n = u64::MAX),
                "n = 18446744073709551615 is over this coordinator's limit of 10000000000000 elements",
            ),
            (
                Box::new(|r| {
                    r.n = 1 << 40;
                    r.stream_values = true
                }),
                "n = 1099511627776 is over this coordinator's limit of 137438953472 elements when values are streamed",
            ),
            (
                Box::new(|r| r.start = u64::MAX - 10),
                "start = 18446744073709551605 with n = 1000 runs past the largest index, 2^64 - 1",
            ),
            (
                Box::new(|r| r.chunk_size = u64::MAX),
                "chunk_size = 18446744073709551615 is over the limit of 67108864 elements",
            ),
        ];
        for (change, message) in cases {
            assert_eq!(check(change).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn a_module_is_checked_and_named_by_its_hash() {
        let module = br#"(module (func (export "f") (param i64) (result f64) f64.const 1))"#;
        let spec = check(|r| {
            r.function = "one.wat".into();
            r.wasm_module = module.to_vec().into();
        })
        .unwrap();
        let hash = farm_wasm::ContentHash::of(module);
        assert_eq!(spec.function.module(), Some(hash));
        assert_eq!(
            spec.function.to_string(),
            format!("one.wat (wasm {})", hash.short())
        );
        let imports = br#"(module (import "env" "now" (func)) (func (export "f") (param i64) (result f64) f64.const 1))"#;
        let refused = check(|r| r.wasm_module = imports.to_vec().into()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "WebAssembly module refused: module imports env::now: farm grants no imports (no WASI, no host functions)"
        );
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
        let big = check(|r| r.wasm_module = vec![0; 5 << 20].into()).unwrap_err();
        assert_eq!(
            big.to_string(),
            "WebAssembly module refused: module is 5242880 bytes, over the limit of 4194304 bytes"
        );
    }

    #[test]
    fn the_last_index_is_allowed() {
        assert!(check(|r| r.start = u64::MAX - 999).is_ok());
        assert!(
            check(|r| {
                r.start = u64::MAX;
                r.n = 0
            })
            .is_ok()
        );
    }

    #[test]
    fn worker_hellos() {
        let hello = |threads, version| v1::WorkerHello {
            protocol_version: version,
            name: String::new(),
            threads,
        };
        assert_eq!(
            worker_hello(&hello(2, PROTOCOL_VERSION)).unwrap().name,
            "unnamed"
        );
        assert!(matches!(
            worker_hello(&hello(0, PROTOCOL_VERSION)),
            Err(InvalidRequest::WorkerThreads { threads: 0 })
        ));
        assert_eq!(
            worker_hello(&hello(2, 2)).unwrap_err().kind(),
            ErrorKind::ProtocolMismatch
        );
        let named = |name: String| v1::WorkerHello {
            name,
            ..hello(2, PROTOCOL_VERSION)
        };
        assert_eq!(
            worker_hello(&named("w1\n\u{1b}[2J".into())).unwrap().name,
            "w1\\u{a}\\u{1b}[2J"
        );
        let long = worker_hello(&named("n".repeat(100_000))).unwrap().name;
        assert_eq!(
            long,
            format!("{}… (100000 bytes)", "n".repeat(MAX_WORKER_NAME))
        );
    }

    #[test]
    fn an_oversized_function_name_is_echoed_short() {
        let err = check(|r| r.function = format!("{}\n", "f".repeat(100_000))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unknown function '{}… (100001 bytes)' (known functions: sqrt)",
                "f".repeat(farm_net::display::SHORT)
            )
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
