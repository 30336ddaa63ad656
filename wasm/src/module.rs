//! Reading a submitted module and deciding whether farm will run it.
//!
//! A module is accepted when it is small enough, valid, imports nothing,
//! and exports the contract: `f: (i64) -> f64`, or its own batch form
//! `fill: (i64, i32, i32) -> ()` with its memory exported as `memory`
//! (see the crate docs). Everything here is plain parsing: no engine, no
//! compilation, so a coordinator or a CLI can check a module cheaply.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest as _, Sha256};
use wasmparser::{
    CompositeInnerType, ExternalKind, FuncType, Parser, Payload, TypeRef, ValType, Validator,
    WasmFeatures,
};

use crate::limits::Limits;
use crate::nan::{self, NanBits};

/// The function farm calls per element.
pub const F_EXPORT: &str = "f";
/// A module's own batch form.
pub const FILL_EXPORT: &str = "fill";
/// The memory a module's own batch form writes into.
pub const MEMORY_EXPORT: &str = "memory";

/// A module farm will not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("module text (.wat) does not parse: {reason}")]
    Text { reason: String },
    #[error("not a valid WebAssembly module: {reason}")]
    Invalid { reason: String },
    #[error(
        "module imports {}: farm grants no imports (no WASI, no host functions)",
        .imports.join(", ")
    )]
    Imports {
        /// Each import as `module::name`.
        imports: Vec<String>,
    },
    #[error("module exports neither `f: (i64) -> f64` nor `fill: (i64, i32, i32) -> ()`")]
    MissingExport,
    #[error("export `{export}` must be {expected}, found {found}")]
    WrongExport {
        export: String,
        expected: &'static str,
        found: String,
    },
}

/// The SHA-256 of a module's bytes as submitted: its name for caches and
/// for the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// The hash in a message's 32 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<ContentHash> {
        bytes.try_into().ok().map(ContentHash)
    }

    /// The first 12 hex digits: enough to tell modules apart in messages.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(12);
        text
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// How farm runs a module's elements in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// The module exports its own `fill` (and `memory`).
    Own,
    /// The module exports only `f` (function index `f_index`); farm appends
    /// the loop ([`crate::batch`]).
    Appended { f_index: u32 },
}

/// A module that passed every check, in binary form.
#[derive(Debug, Clone)]
pub struct Checked {
    pub hash: ContentHash,
    /// The binary module (the submitted bytes, or the text compiled).
    pub binary: Vec<u8>,
    pub batch: Batch,
    /// Whether the module can see a NaN's bits, which decides how it is
    /// compiled to be deterministic.
    pub nan_bits: NanBits,
}

/// The WebAssembly features farm accepts: WebAssembly 2.0 (which has
/// SIMD128) and nothing that could make results differ between machines or
/// runs: no threads, no relaxed SIMD. The engine enables the same set.
pub fn features() -> WasmFeatures {
    WasmFeatures::WASM2
}

/// Checks a submitted module, text (`.wat`) or binary, against `limits`
/// and the contract.
pub fn check(submitted: &[u8], limits: &Limits) -> Result<Checked, Refused> {
    let size = submitted.len() as u64;
    if size > limits.max_module_bytes {
        return Err(Refused::TooLarge {
            size,
            limit: limits.max_module_bytes,
        });
    }
    let hash = ContentHash::of(submitted);
    let binary: Cow<'_, [u8]> = if submitted.starts_with(b"\0asm") {
        Cow::Borrowed(submitted)
    } else {
        wat::parse_bytes(submitted).map_err(|error| Refused::Text {
            reason: error.to_string(),
        })?
    };
    Validator::new_with_features(features())
        .validate_all(&binary)
        .map_err(|error| Refused::Invalid {
            reason: error.to_string(),
        })?;
    let shape = Shape::read(&binary).map_err(|error| Refused::Invalid {
        reason: error.to_string(),
    })?;
    if !shape.imports.is_empty() {
        return Err(Refused::Imports {
            imports: shape.imports,
        });
    }
    let batch = shape.batch()?;
    let nan_bits = nan::scan(&binary).map_err(|error| Refused::Invalid {
        reason: error.to_string(),
    })?;
    Ok(Checked {
        hash,
        binary: binary.into_owned(),
        batch,
        nan_bits,
    })
}

/// What the checks need to know of a valid module.
#[derive(Debug, Default)]
struct Shape {
    imports: Vec<String>,
    /// The type of each function, by function index.
    function_types: Vec<FuncType>,
    /// Each export: name, kind and index.
    exports: Vec<(String, ExternalKind, u32)>,
    /// Whether each memory is 64-bit, by memory index.
    memory64: Vec<bool>,
}

impl Shape {
    fn read(binary: &[u8]) -> Result<Shape, wasmparser::BinaryReaderError> {
        let mut shape = Shape::default();
        let mut types: Vec<Option<FuncType>> = Vec::new();
        for payload in Parser::new(0).parse_all(binary) {
            match payload? {
                Payload::TypeSection(reader) => {
                    for group in reader {
                        for sub in group?.into_types() {
                            types.push(match sub.composite_type.inner {
                                CompositeInnerType::Func(func) => Some(func),
                                _ => None,
                            });
                        }
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import?;
                        shape
                            .imports
                            .push(format!("{}::{}", import.module, import.name));
                        if let TypeRef::Func(index) = import.ty {
                            shape.function_types.push(func_type(&types, index));
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for index in reader {
                        shape.function_types.push(func_type(&types, index?));
                    }
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        shape.memory64.push(memory?.memory64);
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export?;
                        shape
                            .exports
                            .push((export.name.to_owned(), export.kind, export.index));
                    }
                }
                _ => {}
            }
        }
        Ok(shape)
    }

    fn export(&self, name: &str) -> Option<(ExternalKind, u32)> {
        self.exports
            .iter()
            .find(|(export, ..)| export == name)
            .map(|&(_, kind, index)| (kind, index))
    }

    /// The export `name` as a function of exactly `params -> results`.
    fn function(
        &self,
        name: &str,
        params: &[ValType],
        results: &[ValType],
        expected: &'static str,
    ) -> Result<Option<u32>, Refused> {
        let Some((kind, index)) = self.export(name) else {
            return Ok(None);
        };
        let wrong = |found: String| Refused::WrongExport {
            export: name.to_owned(),
            expected,
            found,
        };
        if kind != ExternalKind::Func {
            return Err(wrong(format!("a {}", kind_name(kind))));
        }
        let ty = self
            .function_types
            .get(index as usize)
            .ok_or_else(|| wrong("a function of unknown type".to_owned()))?;
        if ty.params() != params || ty.results() != results {
            return Err(wrong(format!("a function {}", signature(ty))));
        }
        Ok(Some(index))
    }

    fn batch(&self) -> Result<Batch, Refused> {
        const F: &str = "a function (i64) -> f64";
        const FILL: &str = "a function (i64, i32, i32) -> ()";
        let f = self.function(F_EXPORT, &[ValType::I64], &[ValType::F64], F)?;
        let fill = self.function(
            FILL_EXPORT,
            &[ValType::I64, ValType::I32, ValType::I32],
            &[],
            FILL,
        )?;
        match (fill, f) {
            (Some(_), _) => {
                let expected = "a 32-bit memory, which `fill` writes into";
                let wrong = |found: String| Refused::WrongExport {
                    export: MEMORY_EXPORT.to_owned(),
                    expected,
                    found,
                };
                match self.export(MEMORY_EXPORT) {
                    None => Err(wrong("no such export".to_owned())),
                    Some((ExternalKind::Memory, index)) => {
                        if self.memory64.get(index as usize) == Some(&false) {
                            Ok(Batch::Own)
                        } else {
                            Err(wrong("a 64-bit memory".to_owned()))
                        }
                    }
                    Some((kind, _)) => Err(wrong(format!("a {}", kind_name(kind)))),
                }
            }
            (None, Some(f_index)) => Ok(Batch::Appended { f_index }),
            (None, None) => Err(Refused::MissingExport),
        }
    }
}

fn func_type(types: &[Option<FuncType>], index: u32) -> FuncType {
    // The validator has checked every index; a missing type reads as an
    // empty signature, which matches no contract.
    types
        .get(index as usize)
        .cloned()
        .flatten()
        .unwrap_or_else(|| FuncType::new([], []))
}

fn kind_name(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => "function",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Global => "global",
        ExternalKind::Tag => "tag",
    }
}

fn signature(ty: &FuncType) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let results = match ty.results() {
        [one] => one.to_string(),
        many => format!("({})", list(many)),
    };
    format!("({}) -> {results}", list(ty.params()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refused {
        check(text.as_bytes(), &Limits::default()).unwrap_err()
    }

    #[test]
    fn the_hash_is_sha256_of_the_submitted_bytes() {
        assert_eq!(
            ContentHash::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let text = b"(module (func (export \"f\") (param i64) (result f64) f64.const 1))";
        let checked = check(text, &Limits::default()).unwrap();
        assert_eq!(checked.hash, ContentHash::of(text));
        assert!(checked.binary.starts_with(b"\0asm"));
        assert_eq!(checked.batch, Batch::Appended { f_index: 0 });
    }

    #[test]
    fn imports_are_refused_by_name() {
        let err = refused(
            r#"(module
                 (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                 (import "env" "memory" (memory 1))
                 (func (export "f") (param i64) (result f64) f64.const 0))"#,
        );
        assert_eq!(
            err,
            Refused::Imports {
                imports: vec![
                    "wasi_snapshot_preview1::fd_write".to_owned(),
                    "env::memory".to_owned()
                ]
            }
        );
        assert_eq!(
            err.to_string(),
            "module imports wasi_snapshot_preview1::fd_write, env::memory: farm grants no imports (no WASI, no host functions)"
        );
    }

    #[test]
    fn invalid_bytes_are_refused_with_the_validators_reason() {
        let err = check(b"\0asm\x01\0\0\0\x01\xff", &Limits::default()).unwrap_err();
        let Refused::Invalid { reason } = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(reason.contains("offset"), "{reason}");
        // Well-formed but ill-typed: the validator says what is wrong.
        let err = refused(r#"(module (func (export "f") (param i64) (result f64) i32.const 1))"#);
        let Refused::Invalid { reason } = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(reason.contains("type mismatch"), "{reason}");
        assert!(matches!(refused("(module (func"), Refused::Text { .. }));
    }

    #[test]
    fn large_modules_are_refused() {
        let limits = Limits {
            max_module_bytes: 100,
            ..Limits::default()
        };
        let big = vec![b' '; 101];
        assert_eq!(
            check(&big, &limits).unwrap_err(),
            Refused::TooLarge {
                size: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn the_contract_exports_are_checked() {
        assert_eq!(refused("(module)"), Refused::MissingExport);
        assert_eq!(
            refused(r#"(module (func (export "f") (param i32) (result f64) f64.const 0))"#),
            Refused::WrongExport {
                export: "f".to_owned(),
                expected: "a function (i64) -> f64",
                found: "a function (i32) -> f64".to_owned()
            }
        );
        assert_eq!(
            refused(r#"(module (global (export "f") i32 (i32.const 0)))"#),
            Refused::WrongExport {
                export: "f".to_owned(),
                expected: "a function (i64) -> f64",
                found: "a global".to_owned()
            }
        );
        assert_eq!(
            refused(r#"(module (func (export "fill") (param i64 i32 i32)))"#),
            Refused::WrongExport {
                export: "memory".to_owned(),
                expected: "a 32-bit memory, which `fill` writes into",
                found: "no such export".to_owned()
            }
        );
        assert_eq!(
            refused(
                r#"(module (memory (export "memory") 1) (func (export "fill") (param i64 i32) (result f64) f64.const 0))"#
            ),
            Refused::WrongExport {
                export: "fill".to_owned(),
                expected: "a function (i64, i32, i32) -> ()",
                found: "a function (i64, i32) -> f64".to_owned()
            }
        );
        let own = check(
            br#"(module (memory (export "memory") 1) (func (export "fill") (param i64 i32 i32)))"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(own.batch, Batch::Own);
    }

    #[test]
    fn threads_and_relaxed_simd_are_refused() {
        for text in [
            r#"(module (memory 1 1 shared) (func (export "f") (param i64) (result f64) f64.const 0))"#,
            r#"(module (func (export "f") (param i64) (result f64)
                 (f64x2.extract_lane 0 (f64x2.relaxed_madd (v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0)))))"#,
        ] {
            assert!(matches!(refused(text), Refused::Invalid { .. }), "{text}");
        }
    }
}
