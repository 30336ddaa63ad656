//! Test-only fault injection, so that end-to-end tests can make a real
//! `farm-worker` slow or make one chunk panic without a special build.
//!
//! `farm-worker` reads the faults from the `FARM_TEST_FAULTS` environment
//! variable ([`ENV`]); unset (or empty), there are none and [`Faults::apply`]
//! just runs the work. The syntax is comma-separated directives:
//!
//! - `slow=F` (F > 1): each chunk takes F times as long: after computing,
//!   the compute thread sleeps (F - 1) times the measured compute time, so
//!   the worker's capacity really is held.
//! - `panic-at=X`: a chunk whose arguments (`job_start + index` for every
//!   index in the chunk) include X panics on the compute thread, which the
//!   compute pool turns into a retryable chunk failure.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::{Duration, Instant};

use farm_proto::v1;

/// The environment variable `farm-worker` reads the faults from.
pub const ENV: &str = "FARM_TEST_FAULTS";

/// The most `slow=F` may ask for: enough for any test, and a typo such as
/// `slow=1e9` is refused instead of wedging the worker.
const MAX_SLOWDOWN: f64 = 1000.0;

/// The faults a worker injects; the default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    slow: Option<f64>,
    panic_at: Option<u64>,
}

/// A `FARM_TEST_FAULTS` value that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultsError {
    #[error("unknown fault '{0}' (expected slow=F or panic-at=X)")]
    Unknown(String),
    #[error("'{directive}': {expected}")]
    BadValue {
        directive: String,
        expected: &'static str,
    },
    #[error("'{0}' is given twice")]
    Repeated(String),
}

impl Faults {
    /// Whether any fault is injected.
    pub fn enabled(&self) -> bool {
        *self != Faults::default()
    }

    /// Runs `work`, the computation of `lease`, with the faults applied.
    /// Called on the compute thread.
    pub fn apply<T>(&self, lease: &v1::ChunkLease, work: impl FnOnce() -> T) -> T {
        if let Some(x) = self.panic_at {
            let args = arguments(lease);
            if contains(&args, x) {
                panic!(
                    "test fault panic-at={x}: arguments [{}, {}) include it",
                    args.start, args.end
                );
            }
        }
        let started = Instant::now();
        let output = work();
        if let Some(factor) = self.slow {
            let extra = started.elapsed().as_secs_f64() * (factor - 1.0);
            std::thread::sleep(Duration::try_from_secs_f64(extra).unwrap_or_default());
        }
        output
    }
}

/// The arguments of a lease's elements, `job_start + index`; wide so that
/// nothing a coordinator sends can overflow.
fn arguments(lease: &v1::ChunkLease) -> Range<u128> {
    let first = u128::from(lease.job_start) + u128::from(lease.offset);
    first..first + u128::from(lease.len)
}

fn contains(args: &Range<u128>, x: u64) -> bool {
    args.contains(&u128::from(x))
}

impl FromStr for Faults {
    type Err = FaultsError;

    fn from_str(text: &str) -> Result<Faults, FaultsError> {
        let mut faults = Faults::default();
        for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let (key, value) = directive.split_once('=').unwrap_or((directive, ""));
            let bad = |expected| FaultsError::BadValue {
                directive: directive.to_owned(),
                expected,
            };
            match key.trim() {
                "slow" => {
                    let factor = value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 1.0 && *f <= MAX_SLOWDOWN)
                        .ok_or_else(|| bad("slow= takes a number over 1 and at most 1000"))?;
                    if faults.slow.replace(factor).is_some() {
                        return Err(FaultsError::Repeated("slow".to_owned()));
                    }
                }
                "panic-at" => {
                    let x = value
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| bad("panic-at= takes a whole number from 0 to 2^64 - 1"))?;
                    if faults.panic_at.replace(x).is_some() {
                        return Err(FaultsError::Repeated("panic-at".to_owned()));
                    }
                }
                _ => return Err(FaultsError::Unknown(directive.to_owned())),
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(factor) = self.slow {
            parts.push(format!("slow={factor}"));
        }
        if let Some(x) = self.panic_at {
            parts.push(format!("panic-at={x}"));
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(job_start: u64, offset: u64, len: u64) -> v1::ChunkLease {
        v1::ChunkLease {
            job_start,
            offset,
            len,
            ..Default::default()
        }
    }

    fn panics(faults: &Faults, lease: &v1::ChunkLease) -> bool {
        std::panic::catch_unwind(|| faults.apply(lease, || ())).is_err()
    }

    #[test]
    fn parses_directives() {
        assert_eq!("".parse(), Ok(Faults::default()));
        assert!(!Faults::default().enabled());
        let both: Faults = " slow=10 , panic-at=12345,".parse().unwrap();
        assert_eq!(
            both,
            Faults {
                slow: Some(10.0),
                panic_at: Some(12345)
            }
        );
        assert!(both.enabled());
        assert_eq!(both.to_string(), "slow=10,panic-at=12345");
        assert_eq!("slow=1.5".parse::<Faults>().unwrap().slow, Some(1.5));
        assert_eq!(
            "panic-at=18446744073709551615"
                .parse::<Faults>()
                .unwrap()
                .panic_at,
            Some(u64::MAX)
        );
    }

    #[test]
    fn refuses_malformed_values_naming_them() {
        for (text, message) in [
            (
                "slow",
                "'slow': slow= takes a number over 1 and at most 1000",
            ),
            (
                "slow=1",
                "'slow=1': slow= takes a number over 1 and at most 1000",
            ),
            (
                "slow=NaN",
                "'slow=NaN': slow= takes a number over 1 and at most 1000",
            ),
            (
                "slow=inf",
                "'slow=inf': slow= takes a number over 1 and at most 1000",
            ),
            (
                "slow=5000",
                "'slow=5000': slow= takes a number over 1 and at most 1000",
            ),
            (
                "panic-at=-1",
                "'panic-at=-1': panic-at= takes a whole number from 0 to 2^64 - 1",
            ),
            (
                "panic-at=1e6",
                "'panic-at=1e6': panic-at= takes a whole number from 0 to 2^64 - 1",
            ),
            (
                "slow=2,crash",
                "unknown fault 'crash' (expected slow=F or panic-at=X)",
            ),
            ("slow=2,slow=3", "'slow' is given twice"),
            ("panic-at=1,panic-at=1", "'panic-at' is given twice"),
        ] {
            let err = text.parse::<Faults>().unwrap_err();
            assert_eq!(err.to_string(), message, "{text}");
        }
    }

    #[test]
    fn panic_at_hits_exactly_the_chunks_whose_arguments_include_it() {
        let faults: Faults = "panic-at=1000".parse().unwrap();
        // Arguments are job_start + offset .. job_start + offset + len.
        assert!(panics(&faults, &lease(0, 1000, 1)));
        assert!(panics(&faults, &lease(0, 0, 1001)));
        assert!(panics(&faults, &lease(900, 50, 51)));
        assert!(!panics(&faults, &lease(0, 0, 1000)));
        assert!(!panics(&faults, &lease(0, 1001, 10)));
        assert!(!panics(&faults, &lease(900, 101, 10)));
        assert!(!panics(&faults, &lease(1000, 0, 0)));
        // Near the top of the range nothing overflows.
        let top: Faults = format!("panic-at={}", u64::MAX).parse().unwrap();
        assert!(panics(&top, &lease(u64::MAX - 10, 10, 1)));
        assert!(!panics(&top, &lease(u64::MAX - 10, 0, 10)));
        assert!(!panics(&top, &lease(u64::MAX, u64::MAX, u64::MAX)));
    }

    #[test]
    fn the_panic_names_the_fault_and_the_arguments() {
        let faults: Faults = "panic-at=7".parse().unwrap();
        let panic = std::panic::catch_unwind(|| faults.apply(&lease(5, 0, 4), || ())).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert_eq!(
            message,
            "test fault panic-at=7: arguments [5, 9) include it"
        );
    }

    #[test]
    fn slow_stretches_the_work_and_no_faults_changes_nothing() {
        let work = || {
            std::thread::sleep(Duration::from_millis(20));
            42
        };
        let slow: Faults = "slow=3".parse().unwrap();
        let started = Instant::now();
        assert_eq!(slow.apply(&lease(0, 0, 1), work), 42);
        // At least (1 + 2) x 20 ms; only a lower bound, as sleeps overrun.
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(Faults::default().apply(&lease(0, 0, 1), || 7), 7);
    }
}
