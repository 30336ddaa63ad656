//! Running a compiled module on every thread: one instance per thread,
//! each call bounded in time and memory.
//!
//! A [`Runner`] keeps a pool of instances; a thread takes one for a
//! [`Runner::fill`] and gives it back, so there are as many instances as
//! threads running at once, each used by one thread at a time. Each
//! instance has its memory grown by [`OUTPUT_BYTES`] when it is made; the
//! batch export writes its values there and the host copies them out.
//!
//! A trap is deterministic, so it is reported at once with the element
//! that caused it: the batch is re-run one element at a time, on a fresh
//! instance, and the first element that traps alone is named.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use farm_catalog::{ChunkOutput, EvaluateError, FillLeaf, KernelError, evaluate_kernel};
use wasmtime::{Memory, ResourceLimiter, Store, TypedFunc};

use crate::cache::Compiled;
use crate::engine::{Engine, TICK};
use crate::limits::{Limits, OUTPUT_BYTES};
use crate::module::ContentHash;

const OUTPUT_VALUES: usize = (OUTPUT_BYTES / 8) as usize;

/// Why a trap happened, as the WebAssembly spec names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrapKind {
    #[error("unreachable executed")]
    Unreachable,
    #[error("integer divide by zero")]
    IntegerDivisionByZero,
    #[error("integer overflow")]
    IntegerOverflow,
    #[error("invalid conversion to integer")]
    BadConversionToInteger,
    #[error("out of bounds memory access")]
    MemoryOutOfBounds,
    #[error("call stack exhausted")]
    StackOverflow,
    #[error("bad indirect call: {0}")]
    IndirectCall(String),
    #[error("{0}")]
    Other(String),
}

/// Why a batch of elements was not computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("f({argument}) trapped: {trap}")]
    Trap { argument: u64, trap: TrapKind },
    #[error(
        "elements from argument {first}, {count} of them, trapped ({trap}) together, but none traps alone: the module keeps state between calls"
    )]
    TrapNotReproduced {
        first: u64,
        count: u64,
        trap: TrapKind,
    },
    #[error("ran past the time bound of {limit:?} per chunk")]
    Timeout { limit: Duration },
    #[error("instance memory would grow to {requested} bytes, over the limit of {limit} bytes")]
    MemoryLimit { requested: u64, limit: u64 },
    #[error("instance table would grow to {requested} elements, over the limit of {limit}")]
    TableLimit { requested: u64, limit: u64 },
    #[error("no room for farm's output in the module's memory: {reason}")]
    NoRoomForOutput { reason: String },
    #[error("the runtime failed: {reason}")]
    Runtime { reason: String },
    #[error("cannot instantiate module {hash}: {reason}")]
    Instantiate { hash: ContentHash, reason: String },
}

impl RunError {
    /// Whether the same elements would fail the same way on any worker
    /// (with the same limits): such a failure fails the job at once.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, RunError::Timeout { .. })
    }
}

/// A chunk of a WebAssembly job that was not computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Invalid(#[from] EvaluateError),
    #[error("element {index} (argument {argument}) of chunk [{}, {}) trapped: {trap}", .range.start, .range.end)]
    Trap {
        range: Range<u64>,
        index: u64,
        argument: u64,
        trap: TrapKind,
    },
    #[error("chunk [{}, {}) failed: {source}", .range.start, .range.end)]
    Failed {
        range: Range<u64>,
        #[source]
        source: RunError,
    },
}

impl ChunkError {
    /// Whether running the chunk again anywhere would fail the same way.
    pub fn is_deterministic(&self) -> bool {
        match self {
            ChunkError::Invalid(_) | ChunkError::Trap { .. } => true,
            ChunkError::Failed { source, .. } => source.is_deterministic(),
        }
    }
}

/// A compiled module ready to run on any number of threads.
pub struct Runner {
    engine: Engine,
    compiled: Arc<Compiled>,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("hash", &self.compiled.hash)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(engine: Engine, compiled: Arc<Compiled>, limits: Limits) -> Runner {
        Runner {
            engine,
            compiled,
            limits,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn hash(&self) -> ContentHash {
        self.compiled.hash
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Computes elements `range` (job indices) of a job whose element `i`
    /// is `f(job_start + i)` on the current rayon pool, within the chunk
    /// time bound, into the same summary a built-in function gives (see
    /// [`farm_catalog::evaluate_kernel`]; `buffer` as there).
    pub fn evaluate(
        &self,
        job_start: u64,
        range: Range<u64>,
        buffer: Option<Vec<f64>>,
    ) -> Result<ChunkOutput, ChunkError> {
        let kernel = ChunkKernel {
            runner: self,
            deadline: Instant::now() + self.limits.chunk_time,
        };
        evaluate_kernel(&kernel, job_start, range.clone(), buffer).map_err(|error| match error {
            KernelError::Chunk(error) => ChunkError::Invalid(error),
            KernelError::Kernel(RunError::Trap { argument, trap }) => ChunkError::Trap {
                range,
                index: argument.wrapping_sub(job_start),
                argument,
                trap,
            },
            KernelError::Kernel(source) => ChunkError::Failed { range, source },
        })
    }

    /// Fills `out[i] = f(first + i)` before `deadline`, from any thread.
    /// `first + out.len() - 1` must not pass 2^64 - 1.
    pub fn fill(&self, first: u64, out: &mut [f64], deadline: Instant) -> Result<(), RunError> {
        let mut instance = match self.take_idle() {
            Some(instance) => instance,
            None => self.instantiate(deadline)?,
        };
        match instance.fill(first, out, deadline) {
            Ok(()) => {
                self.idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(instance);
                Ok(())
            }
            // An instance that failed mid-call is dropped: its state is
            // whatever the call left.
            Err(Failure::Trap(trap)) => Err(self.locate(first, out.len() as u64, trap, deadline)),
            Err(failure) => Err(failure.into_error(first, &self.limits)),
        }
    }

    fn take_idle(&self) -> Option<Instance> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// The first element of a trapping batch that traps alone.
    fn locate(&self, first: u64, count: u64, trap: TrapKind, deadline: Instant) -> RunError {
        let mut instance = match self.instantiate(deadline) {
            Ok(instance) => instance,
            Err(error) => return error,
        };
        let mut one = [0.0];
        for k in 0..count {
            let argument = first + k;
            match instance.fill(argument, &mut one, deadline) {
                Ok(()) => {}
                Err(failure) => return failure.into_error(argument, &self.limits),
            }
        }
        RunError::TrapNotReproduced { first, count, trap }
    }

    fn instantiate(&self, deadline: Instant) -> Result<Instance, RunError> {
        let limits = &self.limits;
        let failed = |reason: String| RunError::Instantiate {
            hash: self.compiled.hash,
            reason,
        };
        let mut store = Store::new(
            self.engine.wasmtime(self.compiled.nan_bits),
            Bounds {
                memory_bytes: limits.max_memory_bytes,
                table_elements: limits.max_table_elements,
            },
        );
        store.limiter(|bounds| bounds);
        // A start function runs now, under the same bounds.
        store.set_epoch_deadline(ticks_until(deadline).ok_or(RunError::Timeout {
            limit: limits.chunk_time,
        })?);
        let instance =
            wasmtime::Instance::new(&mut store, &self.compiled.module, &[]).map_err(|error| {
                match Failure::of(&error) {
                    Failure::Other(reason) => failed(reason),
                    failure => failure.into_error(0, limits),
                }
            })?;
        let fill = instance
            .get_typed_func::<(i64, i32, i32), ()>(&mut store, self.compiled.fill_export)
            .map_err(|error| failed(error.to_string()))?;
        let memory = instance
            .get_memory(&mut store, self.compiled.memory_export)
            .ok_or_else(|| failed(format!("no memory `{}`", self.compiled.memory_export)))?;
        let pages = OUTPUT_BYTES.div_ceil(memory.page_size(&store));
        let old_pages =
            memory
                .grow(&mut store, pages)
                .map_err(|error| match Failure::of(&error) {
                    Failure::Other(reason) => RunError::NoRoomForOutput { reason },
                    failure => failure.into_error(0, limits),
                })?;
        let out = old_pages
            .checked_mul(memory.page_size(&store))
            .and_then(|bytes| usize::try_from(bytes).ok())
            .filter(|&bytes| bytes as u64 + OUTPUT_BYTES <= 1 << 32)
            .ok_or_else(|| RunError::NoRoomForOutput {
                reason: format!("the memory already has {old_pages} pages"),
            })?;
        Ok(Instance {
            store,
            fill,
            memory,
            out,
        })
    }
}

/// One chunk's view of a runner: its leaves share the chunk's deadline.
struct ChunkKernel<'a> {
    runner: &'a Runner,
    deadline: Instant,
}

impl FillLeaf for ChunkKernel<'_> {
    type Error = RunError;

    fn fill_leaf(&self, first: u64, out: &mut [f64]) -> Result<(), RunError> {
        self.runner.fill(first, out, self.deadline)
    }
}

/// An instance of the module with its store and output space.
struct Instance {
    store: Store<Bounds>,
    fill: TypedFunc<(i64, i32, i32), ()>,
    memory: Memory,
    /// Byte offset of the output space in `memory`.
    out: usize,
}

impl Instance {
    fn fill(&mut self, first: u64, out: &mut [f64], deadline: Instant) -> Result<(), Failure> {
        for (k, piece) in out.chunks_mut(OUTPUT_VALUES).enumerate() {
            let ticks = ticks_until(deadline).ok_or(Failure::Timeout)?;
            self.store.set_epoch_deadline(ticks);
            let piece_first = first.wrapping_add((k * OUTPUT_VALUES) as u64);
            // The u64 argument travels as its bit pattern in an i64.
            let args = (piece_first as i64, piece.len() as i32, self.out as i32);
            self.fill
                .call(&mut self.store, args)
                .map_err(|error| Failure::of(&error))?;
            let bytes = self
                .memory
                .data(&self.store)
                .get(self.out..self.out + piece.len() * 8)
                .ok_or_else(|| Failure::Other("output space out of memory".to_owned()))?;
            for (slot, value) in piece.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut word = [0u8; 8];
                word.copy_from_slice(value);
                *slot = f64::from_le_bytes(word);
            }
        }
        Ok(())
    }
}

/// Epoch ticks from now until `deadline`, rounded up, plus the tick under
/// way; `None` once it has passed.
fn ticks_until(deadline: Instant) -> Option<u64> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let ticks = left.as_nanos().div_ceil(TICK.as_nanos());
    Some(u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1))
}

/// How a call into an instance failed, before it is tied to an element.
#[derive(Debug)]
enum Failure {
    Trap(TrapKind),
    Timeout,
    Limit(LimitHit),
    Other(String),
}

impl Failure {
    fn of(error: &wasmtime::Error) -> Failure {
        if let Some(hit) = error.downcast_ref::<LimitHit>() {
            return Failure::Limit(*hit);
        }
        use wasmtime::Trap;
        let Some(trap) = error.downcast_ref::<Trap>() else {
            return Failure::Other(error.to_string());
        };
        Failure::Trap(match trap {
            Trap::Interrupt => return Failure::Timeout,
            Trap::UnreachableCodeReached => TrapKind::Unreachable,
            Trap::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
            Trap::IntegerOverflow => TrapKind::IntegerOverflow,
            Trap::BadConversionToInteger => TrapKind::BadConversionToInteger,
            Trap::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
            Trap::StackOverflow => TrapKind::StackOverflow,
            Trap::IndirectCallToNull | Trap::BadSignature | Trap::TableOutOfBounds => {
                TrapKind::IndirectCall(trap.to_string())
            }
            other => TrapKind::Other(other.to_string()),
        })
    }

    fn into_error(self, argument: u64, limits: &Limits) -> RunError {
        match self {
            Failure::Trap(trap) => RunError::Trap { argument, trap },
            Failure::Timeout => RunError::Timeout {
                limit: limits.chunk_time,
            },
            Failure::Limit(LimitHit::Memory { requested }) => RunError::MemoryLimit {
                requested,
                limit: limits.max_memory_bytes,
            },
            Failure::Limit(LimitHit::Table { requested }) => RunError::TableLimit {
                requested,
                limit: limits.max_table_elements,
            },
            Failure::Other(reason) => RunError::Runtime { reason },
        }
    }
}

/// The per-instance memory and table limits.
#[derive(Debug)]
struct Bounds {
    memory_bytes: u64,
    table_elements: u64,
}

/// A growth past [`Bounds`]: it fails the call (a module is not left to
/// carry on with a failed `memory.grow`), and is reported as such.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum LimitHit {
    #[error("memory would grow to {requested} bytes")]
    Memory { requested: u64 },
    #[error("table would grow to {requested} elements")]
    Table { requested: u64 },
}

impl ResourceLimiter for Bounds {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitHit::Memory {
                requested: desired as u64,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            return Err(wasmtime::Error::new(LimitHit::Table {
                requested: desired as u64,
            }));
        }
        Ok(true)
    }
}
