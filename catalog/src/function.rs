//! Every map function farm can run, with its name and kernel.
//!
//! To add a function: add a variant, give it a name and description, and a
//! [`Kernel`](crate::lanes::Kernel) in [`Function::fill_leaf`]. Validation,
//! execution, the CLI's list of choices and error messages all follow.
//!
//! A function the catalog does not hold (a user's WebAssembly module)
//! implements [`FillLeaf`] instead, and is computed by
//! [`evaluate_kernel`](crate::evaluate_kernel) on the same leaf grid with
//! the same statistics.

use std::fmt;

use crate::lanes::{self, Kernel, LeafLanes};

/// A map function: element `i` of a job is `f(start + i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// `sqrt(x as f64)`, correctly rounded.
    Sqrt,
}

impl Function {
    /// Every function, in the order `farm` lists them.
    pub const ALL: &'static [Function] = &[Function::Sqrt];

    /// The name users type (`farm submit sqrt`) and the wire carries.
    pub fn name(self) -> &'static str {
        match self {
            Function::Sqrt => "sqrt",
        }
    }

    /// One line for `--help` listings.
    pub fn description(self) -> &'static str {
        match self {
            Function::Sqrt => "square root of (start + i) as a 64-bit float",
        }
    }

    /// Looks a function up by the name users type.
    pub fn from_name(name: &str) -> Result<Function, UnknownFunction> {
        Function::ALL
            .iter()
            .copied()
            .find(|f| f.name() == name)
            .ok_or_else(|| UnknownFunction {
                name: name.to_owned(),
            })
    }

    /// The known names, comma separated, for error messages.
    pub fn known_names() -> String {
        let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
        names.join(", ")
    }

    /// The value of one element: the scalar reference every fast path must
    /// match bit for bit.
    pub fn eval(self, x: u64) -> f64 {
        match self {
            Function::Sqrt => Sqrt::eval(x),
        }
    }

    /// Fills `out[i] = f(first + i)` and returns the leaf's lane statistics.
    pub(crate) fn fill_leaf(self, first: u64, out: &mut [f64]) -> LeafLanes {
        match self {
            Function::Sqrt => lanes::fill::<Sqrt>(first, out),
        }
    }
}

/// A map function from outside the catalog: anything that can fill a leaf
/// of values, and may fail doing so (a WebAssembly module that traps or
/// runs out of time).
///
/// It only fills values: the catalog computes each leaf's statistics from
/// them, so a kernel that gives the same values as a built-in gives the
/// same summary and digest, bit for bit.
pub trait FillLeaf: Sync {
    /// Why a leaf could not be filled.
    type Error: Send;

    /// Fills `out[i] = f(first + i)`. Called for one leaf at a time
    /// (at most [`LEAF_LEN`](crate::grid::LEAF_LEN) values), from any
    /// thread of the current rayon pool; `first + out.len() - 1` never
    /// overflows.
    fn fill_leaf(&self, first: u64, out: &mut [f64]) -> Result<(), Self::Error>;
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown function '{name}' (known functions: {known})", known = Function::known_names())]
pub struct UnknownFunction {
    pub name: String,
}

struct Sqrt;

impl Kernel for Sqrt {
    #[inline(always)]
    fn eval(x: u64) -> f64 {
        // `as` rounds to nearest for x above 2^53; sqrt is correctly
        // rounded by IEEE 754, so every platform gives the same bits.
        (x as f64).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Ok(*f));
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = Function::from_name("cbrt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown function 'cbrt' (known functions: sqrt)"
        );
    }

    #[test]
    fn sqrt_values() {
        assert_eq!(Function::Sqrt.eval(0), 0.0);
        assert_eq!(Function::Sqrt.eval(16), 4.0);
        assert_eq!(Function::Sqrt.eval(2), std::f64::consts::SQRT_2);
        // 2^64 - 1 rounds to 2^64 as f64, whose root is exactly 2^32.
        assert_eq!(Function::Sqrt.eval(u64::MAX), 4294967296.0);
    }
}
