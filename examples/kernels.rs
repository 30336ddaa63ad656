//! The examples' kernels in plain Rust, operation for operation as the
//! `.wat` files: the bench's native reference and the runtime tests'
//! expected values. Included by path (`#[path]`) where needed, so that no
//! crate depends on another for them; each includer uses what it needs.

#![allow(dead_code)]

/// Collatz steps from `x` to 1, wrapping at 2^64, as `collatz.wat`.
pub fn collatz_steps(mut x: u64) -> f64 {
    let mut steps = 0u64;
    while x > 1 {
        x = if x.is_multiple_of(2) {
            x / 2
        } else {
            x.wrapping_mul(3).wrapping_add(1)
        };
        steps += 1;
    }
    steps as f64
}

/// 1.0 if `x` is prime, by the same trial division as `prime.wat`: 2,
/// then odd divisors until the divisor passes the quotient.
pub fn is_prime(x: u64) -> f64 {
    if x < 4 {
        return if x >= 2 { 1.0 } else { 0.0 };
    }
    if x.is_multiple_of(2) {
        return 0.0;
    }
    let mut d = 3u64;
    loop {
        let q = x / d;
        if d > q {
            return 1.0;
        }
        if q * d == x {
            return 0.0;
        }
        d += 2;
    }
}

/// The escape count of grid point `x`, as `mandelbrot.wat`, operation for
/// operation (Rust does not fuse multiply-adds unless asked).
pub fn mandelbrot(x: u64) -> f64 {
    let step = 2.5 / 1024.0;
    let cx = -2.0 + (x & 1023) as f64 * step;
    let cy = -1.25 + ((x >> 10) & 1023) as f64 * step;
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    let mut n = 0u32;
    loop {
        let (zr2, zi2) = (zr * zr, zi * zi);
        if zr2 + zi2 > 4.0 || n >= 1000 {
            break;
        }
        zi = (zr + zr) * zi + cy;
        zr = (zr2 - zi2) + cx;
        n += 1;
    }
    f64::from(n)
}
