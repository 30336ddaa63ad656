//! Whether a module can see the bits of a NaN, which decides how much NaN
//! canonicalisation it needs to be deterministic.
//!
//! IEEE 754 fixes every floating-point result but one: which NaN an
//! operation returns (sign and payload) is left to the CPU, and x86 and
//! Arm differ. Everything else a float operation does with a NaN is fixed:
//! arithmetic gives a NaN, comparisons give the same answer for every NaN,
//! a saturating conversion gives 0, a trapping one traps. So the bits of a
//! NaN reach anything else only through the instructions that copy a
//! float's bits somewhere an integer can read them:
//!
//! - `i32.reinterpret_f32`, `i64.reinterpret_f64`;
//! - `f32.store`, `f64.store` (then any load reads the bits);
//! - `f32.copysign`, `f64.copysign` (a NaN's sign becomes a number's);
//! - any SIMD128 instruction (a `v128` is read as integer or float lanes
//!   alike; all of them are encoded behind the `0xFD` prefix).
//!
//! A module with none of these ([`NanBits::Unobserved`]) computes the same
//! values on every CPU without canonicalisation, except for the NaNs that
//! `f` returns, which the appended loop canonicalises itself
//! ([`crate::batch`]); Cranelift's canonicalisation, a compare and a select
//! after every float operation, costs up to 1.8x on a loop of float
//! arithmetic. Any other module ([`NanBits::Observed`]) is compiled with it.
//! Either way, every value farm reads is the same on every machine.

use wasmparser::{BinaryReaderError, Operator, Parser, Payload};

/// Whether a module has an instruction that can copy a NaN's bits into
/// something other than a float (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NanBits {
    /// It has one: every float operation's NaN must be canonicalised.
    Observed,
    /// It has none: only the NaNs leaving `f` need canonicalising.
    Unobserved,
}

/// The prefix byte of every SIMD128 instruction.
const SIMD_PREFIX: u8 = 0xFD;

/// Scans every function body of a valid module.
pub fn scan(binary: &[u8]) -> Result<NanBits, BinaryReaderError> {
    for payload in Parser::new(0).parse_all(binary) {
        let Payload::CodeSectionEntry(body) = payload? else {
            continue;
        };
        let mut operators = body.get_operators_reader()?;
        while !operators.eof() {
            let (operator, offset) = operators.read_with_offset()?;
            if binary.get(offset) == Some(&SIMD_PREFIX) || copies_float_bits(&operator) {
                return Ok(NanBits::Observed);
            }
        }
    }
    Ok(NanBits::Unobserved)
}

fn copies_float_bits(operator: &Operator<'_>) -> bool {
    matches!(
        operator,
        Operator::I32ReinterpretF32
            | Operator::I64ReinterpretF64
            | Operator::F32Store { .. }
            | Operator::F64Store { .. }
            | Operator::F32Copysign
            | Operator::F64Copysign
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_text(body: &str) -> NanBits {
        let text = format!(
            r#"(module (memory 1)
                 (func (export "f") (param $x i64) (result f64) (local $y f64) {body}))"#
        );
        scan(&wat::parse_str(text).unwrap()).unwrap()
    }

    #[test]
    fn float_arithmetic_alone_does_not_observe_nan_bits() {
        let body = "(local.set $y (f64.sqrt (f64.convert_i64_s (local.get $x))))
                    (if (f64.lt (local.get $y) (f64.const 2)) (then (local.set $y (f64.neg (local.get $y)))))
                    (drop (i64.trunc_sat_f64_s (local.get $y)))
                    (drop (f64.load (i32.const 0)))
                    (drop (f32.demote_f64 (local.get $y)))
                    (f64.add (f64.reinterpret_i64 (local.get $x)) (f64.min (local.get $y) (f64.const nan)))";
        assert_eq!(scan_text(body), NanBits::Unobserved);
    }

    #[test]
    fn each_instruction_that_copies_float_bits_is_found() {
        for body in [
            "(drop (i64.reinterpret_f64 (f64.const 1))) (f64.const 0)",
            "(drop (i32.reinterpret_f32 (f32.const 1))) (f64.const 0)",
            "(f64.store (i32.const 0) (f64.const 1)) (f64.const 0)",
            "(f32.store (i32.const 0) (f32.const 1)) (f64.const 0)",
            "(f64.copysign (f64.const 1) (f64.const 2))",
            "(drop (f32.copysign (f32.const 1) (f32.const 2))) (f64.const 0)",
            "(f64x2.extract_lane 0 (f64x2.splat (f64.const 1)))",
            "(drop (i64x2.splat (local.get $x))) (f64.const 0)",
        ] {
            assert_eq!(scan_text(body), NanBits::Observed, "{body}");
        }
    }

    #[test]
    fn every_function_is_scanned_not_only_f() {
        let text = r#"(module (memory 1)
            (func $g (f64.store (i32.const 0) (f64.const 1)))
            (func (export "f") (param i64) (result f64) (f64.const 1)))"#;
        assert_eq!(
            scan(&wat::parse_str(text).unwrap()).unwrap(),
            NanBits::Observed
        );
    }
}
