//! The runtime's promises: refusals, limits, traps named by element,
//! timeouts, determinism and the cache.

// Helpers of these tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use farm_catalog::grid::LEAF_LEN;
use farm_wasm::{ChunkError, Limits, LoadError, Refused, RunError, Runner, Runtime, TrapKind};

fn runtime(limits: Limits) -> Runtime {
    Runtime::new(limits, None).unwrap()
}

fn load(text: &str) -> Runner {
    runtime(Limits::default()).load(text.as_bytes()).unwrap()
}

fn refusal(text: &str) -> Refused {
    match runtime(Limits::default()).load(text.as_bytes()) {
        Err(LoadError::Refused(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn imports_are_refused_naming_each() {
    let refused = refusal(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
             (func (export "f") (param i64) (result f64) f64.const 0))"#,
    );
    assert_eq!(
        refused,
        Refused::Imports {
            imports: vec!["wasi_snapshot_preview1::proc_exit".to_owned()]
        }
    );
}

#[test]
fn invalid_and_oversized_modules_are_refused() {
    let invalid = runtime(Limits::default()).load(b"\0asm\x02\0\0\0");
    let Err(LoadError::Refused(Refused::Invalid { reason })) = invalid else {
        panic!("expected Invalid, got {invalid:?}");
    };
    assert!(reason.contains("version"), "{reason}");
    let small = Limits {
        max_module_bytes: 64,
        ..Limits::default()
    };
    let text =
        r#"(module (func (export "f") (param i64) (result f64) f64.const 0 f64.const 1 f64.add))"#;
    assert!(matches!(
        runtime(small).load(text.as_bytes()),
        Err(LoadError::Refused(Refused::TooLarge { limit: 64, .. }))
    ));
}

#[test]
fn a_wrong_signature_is_refused() {
    assert!(matches!(
        refusal(r#"(module (func (export "f") (param i64) (result f32) f32.const 0))"#),
        Refused::WrongExport { export, .. } if export == "f"
    ));
    assert_eq!(refusal("(module)"), Refused::MissingExport);
}

/// Evaluates a chunk of `len` elements at job index `offset`.
fn chunk(runner: &Runner, job_start: u64, offset: u64, len: u64) -> Result<Vec<f64>, ChunkError> {
    runner
        .evaluate(job_start, offset..offset + len, Some(Vec::new()))
        .map(|out| out.values.unwrap_or_default())
}

#[test]
fn traps_name_the_element_its_argument_and_the_trap() {
    let cases = [
        // unreachable at x = 5000
        (
            r#"(module (func (export "f") (param $x i64) (result f64)
                 (if (i64.eq (local.get $x) (i64.const 5000)) (then unreachable))
                 (f64.const 1)))"#,
            5000,
            TrapKind::Unreachable,
        ),
        // 1 / (x - 7001)
        (
            r#"(module (func (export "f") (param $x i64) (result f64)
                 (f64.convert_i64_u (i64.div_u (i64.const 1) (i64.sub (local.get $x) (i64.const 7001))))))"#,
            7001,
            TrapKind::IntegerDivisionByZero,
        ),
        // a load at byte x + 70000 of a one-page memory, which farm grows
        // by one page for the output: out of bounds from 131072 - 8 - 70000
        (
            r#"(module (memory 1) (func (export "f") (param $x i64) (result f64)
                 (f64.load offset=70000 (i32.wrap_i64 (local.get $x)))))"#,
            61065,
            TrapKind::MemoryOutOfBounds,
        ),
    ];
    for (text, argument, trap) in cases {
        let runner = load(text);
        // The job starts at 100; the failing element is in the chunk's
        // second leaf or later.
        let job_start = 100;
        let offset = (argument - job_start) / LEAF_LEN * LEAF_LEN - LEAF_LEN;
        let error = chunk(&runner, job_start, offset, 4 * LEAF_LEN).unwrap_err();
        assert_eq!(
            error,
            ChunkError::Trap {
                range: offset..offset + 4 * LEAF_LEN,
                index: argument - job_start,
                argument,
                trap: trap.clone(),
            }
        );
        assert!(error.is_deterministic());
        assert!(
            error.to_string().contains(&format!(
                "element {} (argument {argument})",
                argument - job_start
            )),
            "{error}"
        );
        // The elements before it are fine, and the runner still works.
        let values = chunk(&runner, job_start, 0, LEAF_LEN).unwrap();
        assert_eq!(values.len(), LEAF_LEN as usize);
    }
}

#[test]
fn an_endless_loop_fails_its_chunk_within_the_time_bound() {
    let limits = Limits {
        chunk_time: Duration::from_millis(300),
        ..Limits::default()
    };
    let endless = r#"(module (func (export "f") (param i64) (result f64)
                        (loop (br 0)) (f64.const 0)))"#;
    let runner = runtime(limits.clone()).load(endless.as_bytes()).unwrap();
    let started = Instant::now();
    let error = chunk(&runner, 0, 0, 3 * LEAF_LEN).unwrap_err();
    assert_eq!(
        error,
        ChunkError::Failed {
            range: 0..3 * LEAF_LEN,
            source: RunError::Timeout {
                limit: limits.chunk_time
            }
        }
    );
    assert!(!error.is_deterministic());
    // Not a timing target: the bound that shows the loop was stopped at
    // all, with room for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(60));

    // A start function that never returns is stopped the same way.
    let endless_start = r#"(module (func $s (loop (br 0))) (start $s)
                              (func (export "f") (param i64) (result f64) (f64.const 0)))"#;
    let runner = runtime(limits.clone())
        .load(endless_start.as_bytes())
        .unwrap();
    assert!(matches!(
        chunk(&runner, 0, 0, LEAF_LEN),
        Err(ChunkError::Failed {
            source: RunError::Timeout { .. },
            ..
        })
    ));
}

#[test]
fn memory_past_the_limit_is_a_typed_error() {
    let limits = Limits {
        max_memory_bytes: 1 << 20,
        ..Limits::default()
    };
    // f grows its memory by 32 pages (2 MiB) on every call.
    let growing = r#"(module (memory 1)
        (func (export "f") (param i64) (result f64)
          (f64.convert_i32_s (memory.grow (i32.const 32)))))"#;
    let runner = runtime(limits.clone()).load(growing.as_bytes()).unwrap();
    let error = chunk(&runner, 0, 0, LEAF_LEN).unwrap_err();
    let ChunkError::Failed {
        source: RunError::MemoryLimit { requested, limit },
        ..
    } = error
    else {
        panic!("expected a memory limit, got {error:?}");
    };
    assert_eq!(limit, 1 << 20);
    assert!(requested > limit);
    assert!(error.is_deterministic());

    // A module whose initial memory is over the limit does not start.
    let large = r#"(module (memory 100)
        (func (export "f") (param i64) (result f64) (f64.const 0)))"#;
    let runner = runtime(limits).load(large.as_bytes()).unwrap();
    assert!(matches!(
        chunk(&runner, 0, 0, LEAF_LEN),
        Err(ChunkError::Failed {
            source: RunError::MemoryLimit { .. },
            ..
        })
    ));
}

#[test]
fn nans_are_canonical() {
    // sqrt of a negative number: x86 gives a NaN with the sign bit set,
    // other CPUs give others; canonicalisation makes them all one.
    let runner = load(
        r#"(module (func (export "f") (param $x i64) (result f64)
             (f64.sqrt (f64.neg (f64.add (f64.const 1) (f64.convert_i64_s (local.get $x)))))))"#,
    );
    let values = chunk(&runner, 0, 0, LEAF_LEN + 3).unwrap();
    assert!(values.iter().all(|v| v.to_bits() == 0x7ff8_0000_0000_0000));
}

#[test]
fn every_nan_f_returns_is_stored_canonical_whichever_engine_compiled_it() {
    // NaNs no float operation canonicalises: a constant with a payload, a
    // negated NaN, a NaN made from integer bits; in a module that cannot
    // see a NaN's bits (compiled without canonicalisation) and in one
    // that can (a float store: compiled with it). farm's loop stores each
    // as the canonical NaN, and keeps every other value as it is.
    let body = r#"(if (result f64) (i64.eq (i64.rem_u (local.get $x) (i64.const 4)) (i64.const 0))
                    (then (f64.const -nan:0x1234))
                    (else (if (result f64) (i64.eq (i64.rem_u (local.get $x) (i64.const 4)) (i64.const 1))
                      (then (f64.neg (f64.sqrt (f64.const -1))))
                      (else (if (result f64) (i64.eq (i64.rem_u (local.get $x) (i64.const 4)) (i64.const 2))
                        (then (f64.reinterpret_i64 (i64.const 0x7ff0000000000001)))
                        (else (f64.const -0)))))))"#;
    let unobserved = format!(r#"(module (func (export "f") (param $x i64) (result f64) {body}))"#);
    let observed = format!(
        r#"(module (memory 1) (func (export "f") (param $x i64) (result f64)
             (f64.store (i32.const 0) (f64.const 1)) {body}))"#
    );
    for text in [unobserved, observed] {
        let values = chunk(&load(&text), 0, 0, LEAF_LEN + 3).unwrap();
        for (x, value) in values.iter().enumerate() {
            let expected = if x % 4 == 3 {
                0x8000_0000_0000_0000
            } else {
                0x7ff8_0000_0000_0000
            };
            assert_eq!(value.to_bits(), expected, "x = {x}\n{text}");
        }
    }
}

#[test]
fn the_module_keeps_its_own_memory() {
    // The output space lies past the module's data: f reads its data back
    // on every call, so a clobbered byte would show.
    let runner = load(
        r#"(module (memory 1) (data (i32.const 65528) "\00\00\00\00\00\00\f0\3f")
             (func (export "f") (param i64) (result f64) (f64.load (i32.const 65528))))"#,
    );
    let values = chunk(&runner, 0, 0, 3 * LEAF_LEN).unwrap();
    assert!(values.iter().all(|&v| v == 1.0));
}

#[test]
fn compiled_modules_are_cached_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../examples/sqrt.wat");
    let runtime = Runtime::new(Limits::default(), Some(dir.path().to_owned())).unwrap();
    let first = runtime.load(text.as_bytes()).unwrap();
    let again = runtime.load(text.as_bytes()).unwrap();
    assert_eq!(first.hash(), again.hash());
    assert_eq!(runtime.cache().len(), 1);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&first.hash().to_string()));

    // A new runtime on the same directory loads the compiled file, and it
    // computes the same values.
    let fresh = Runtime::new(Limits::default(), Some(dir.path().to_owned())).unwrap();
    let loaded = fresh.load(text.as_bytes()).unwrap();
    assert_eq!(
        chunk(&loaded, 5, 0, LEAF_LEN).unwrap(),
        chunk(&first, 5, 0, LEAF_LEN).unwrap()
    );
}
