//! Appending the batch loop to a module that exports only `f`.
//!
//! A call from the host into wasm costs about as much as a square root
//! many times over, so farm never calls `f` per element: it adds an export
//!
//! ```text
//! farm:fill(first: i64, count: i32, out: i32)
//!     for each k in 0..count: f64.store(out + 8k, f(first + k))
//! ```
//!
//! and calls it once per leaf. A loop inside wasm calling `f` costs about
//! what `f` inlined would. The module's memory 0 is exported as
//! `farm:memory` (a memory of no pages is added when it has none); the host
//! grows it for the output when it instantiates the module, so the output
//! lies past everything the module had and never clobbers its data.
//!
//! The rewrite appends one type, one function, one body and two exports
//! (and maybe a memory); nothing is renumbered, and every other byte of the
//! module is copied as it was.

use wasm_encoder::{
    CodeSection, Encode, ExportKind, ExportSection, Function, FunctionSection, Instruction, MemArg,
    MemorySection, MemoryType, RawSection, TypeSection, ValType,
};
use wasmparser::{BinaryReader, BinaryReaderError, Parser, Payload};

/// The appended batch function.
pub const APPENDED_FILL: &str = "farm:fill";
/// The module's memory 0, exported for the output.
pub const APPENDED_MEMORY: &str = "farm:memory";

/// The one NaN farm's loop stores: positive, quiet, no payload (what
/// Cranelift's canonicalisation gives too).
pub const CANONICAL_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0000);

// Section ids, in the order the binary format requires them.
const TYPE: u8 = 1;
const FUNCTION: u8 = 3;
const MEMORY: u8 = 5;
const EXPORT: u8 = 7;
const CODE: u8 = 10;

/// The place of a (non-custom) section in the required order.
fn rank(id: u8) -> u8 {
    match id {
        13 => 6, // tags come between memories and globals
        6..=9 => id + 1,
        12 => 11, // data count comes before code
        10 | 11 => id + 2,
        _ => id,
    }
}

/// The module with `farm:fill` and `farm:memory` appended; `f_index` is the
/// function index of `f`. The module must be valid and import nothing
/// ([`crate::module::check`]).
pub fn append_fill(binary: &[u8], f_index: u32) -> Result<Vec<u8>, BinaryReaderError> {
    let mut counts = Counts::default();
    for payload in Parser::new(0).parse_all(binary) {
        match payload? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    counts.types += group?.types().count() as u32;
                }
            }
            Payload::FunctionSection(reader) => counts.functions += reader.count(),
            Payload::MemorySection(reader) => counts.memories += reader.count(),
            _ => {}
        }
    }

    let mut module = wasm_encoder::Module::new();
    let mut memory_added = counts.memories > 0;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload?;
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        let data = &binary[range];
        if !memory_added && id != 0 && rank(id) > rank(MEMORY) {
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: 0,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            module.section(&memories);
            memory_added = true;
        }
        let appended = match id {
            TYPE => {
                let mut types = TypeSection::new();
                types
                    .ty()
                    .function([ValType::I64, ValType::I32, ValType::I32], []);
                Some(items(&types))
            }
            FUNCTION => {
                let mut functions = FunctionSection::new();
                functions.function(counts.types);
                Some(items(&functions))
            }
            EXPORT => {
                let mut exports = ExportSection::new();
                exports.export(APPENDED_FILL, ExportKind::Func, counts.functions);
                exports.export(APPENDED_MEMORY, ExportKind::Memory, 0);
                Some(items(&exports))
            }
            CODE => {
                let mut code = CodeSection::new();
                code.function(&fill_body(f_index));
                Some(items(&code))
            }
            _ => None,
        };
        let data = match appended {
            Some((added, bytes)) => extend_vector(data, added, &bytes)?,
            None => data.to_vec(),
        };
        module.section(&RawSection { id, data: &data });
    }
    Ok(module.finish())
}

#[derive(Debug, Default)]
struct Counts {
    types: u32,
    functions: u32,
    memories: u32,
}

/// `farm:fill`: params first (0), count (1), out (2); local value (3).
fn fill_body(f_index: u32) -> Function {
    let (first, count, out, value) = (0, 1, 2, 3);
    let store = MemArg {
        offset: 0,
        align: 3,
        memory_index: 0,
    };
    let mut body = Function::new([(1, ValType::F64)]);
    for instruction in [
        Instruction::Block(wasm_encoder::BlockType::Empty),
        Instruction::Loop(wasm_encoder::BlockType::Empty),
        Instruction::LocalGet(count),
        Instruction::I32Eqz,
        Instruction::BrIf(1),
        Instruction::LocalGet(out),
        Instruction::LocalGet(first),
        Instruction::Call(f_index),
        // A NaN is stored as the canonical NaN, whatever its bits: a
        // module compiled without canonicalisation may return any NaN
        // (see `crate::nan`). `select` keeps the value when it equals
        // itself, i.e. is not a NaN.
        Instruction::LocalTee(value),
        Instruction::F64Const(CANONICAL_NAN.into()),
        Instruction::LocalGet(value),
        Instruction::LocalGet(value),
        Instruction::F64Eq,
        Instruction::Select,
        Instruction::F64Store(store),
        Instruction::LocalGet(first),
        Instruction::I64Const(1),
        Instruction::I64Add,
        Instruction::LocalSet(first),
        Instruction::LocalGet(out),
        Instruction::I32Const(8),
        Instruction::I32Add,
        Instruction::LocalSet(out),
        Instruction::LocalGet(count),
        Instruction::I32Const(1),
        Instruction::I32Sub,
        Instruction::LocalSet(count),
        Instruction::Br(0),
        Instruction::End,
        Instruction::End,
        Instruction::End,
    ] {
        body.instruction(&instruction);
    }
    body
}

/// The items of an encoded section (its size and count stripped), and
/// their count.
fn items(section: &impl Encode) -> (u32, Vec<u8>) {
    let mut encoded = Vec::new();
    section.encode(&mut encoded);
    let mut reader = BinaryReader::new(&encoded, 0);
    // Our own encoding of a one-item section: it always reads back.
    let _size = reader.read_var_u32().unwrap_or_default();
    let count = reader.read_var_u32().unwrap_or_default();
    let start = reader.original_position();
    (count, encoded[start..].to_vec())
}

/// A vector section's contents with `added` more items appended.
fn extend_vector(data: &[u8], added: u32, bytes: &[u8]) -> Result<Vec<u8>, BinaryReaderError> {
    let mut reader = BinaryReader::new(data, 0);
    let count = reader.read_var_u32()?;
    let rest = &data[reader.original_position()..];
    let mut out = Vec::with_capacity(data.len() + bytes.len() + 5);
    (count + added).encode(&mut out);
    out.extend_from_slice(rest);
    out.extend_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::features;

    fn exports(binary: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(binary) {
            if let Payload::ExportSection(reader) = payload.unwrap() {
                for export in reader {
                    names.push(export.unwrap().name.to_owned());
                }
            }
        }
        names
    }

    #[test]
    fn the_rewritten_module_is_valid_with_the_new_exports() {
        for text in [
            // No memory: one is added.
            r#"(module (func (export "f") (param i64) (result f64) f64.const 1))"#,
            // A memory with data, a global, a start function, a table and
            // custom sections around: all kept, the memory exported twice.
            r#"(module
                 (type (func))
                 (memory (export "memory") 1)
                 (global $g (mut i32) (i32.const 0))
                 (table 1 funcref)
                 (elem (i32.const 0) $start)
                 (func $start (global.set $g (i32.const 1)))
                 (start $start)
                 (func (export "f") (param i64) (result f64) f64.const 1)
                 (data (i32.const 8) "kept"))"#,
        ] {
            let binary = wat::parse_str(text).unwrap();
            let f_index = if text.contains("$start") { 1 } else { 0 };
            let rewritten = append_fill(&binary, f_index).unwrap();
            wasmparser::Validator::new_with_features(features())
                .validate_all(&rewritten)
                .unwrap();
            let names = exports(&rewritten);
            assert!(names.contains(&APPENDED_FILL.to_owned()), "{names:?}");
            assert!(names.contains(&APPENDED_MEMORY.to_owned()), "{names:?}");
            assert!(names.contains(&"f".to_owned()));
        }
    }

    #[test]
    fn section_order_is_kept() {
        // Every rank is increasing over the standard section ids.
        let order = [1u8, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
        assert!(order.windows(2).all(|w| rank(w[0]) < rank(w[1])));
    }
}
