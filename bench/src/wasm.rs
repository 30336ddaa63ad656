//! WebAssembly functions: the examples in `examples/` run by `farm submit
//! FILE.wat`, each against a reference measured in the same run.
//!
//! - sqrt: `sqrt.wat` (only `f`, farm appends the loop) and
//!   `sqrt_simd.wat` (its own `fill`) against the built-in `sqrt`.
//! - Uneven costs: `collatz.wat`, `prime.wat` and `mandelbrot.wat` against
//!   the same kernels written in plain Rust (`examples/kernels.rs`), run with a rayon loop
//!   over the same range and reduced to the same summary (so the digests
//!   must match farm's); and the worker's CPU share on those jobs, which
//!   says whether adaptive chunking keeps the cores busy when elements
//!   cost from one step to thousands.
//! - Compile time: a fresh [`Runtime`] loading each example.
//! - First-chunk latency: a tiny job on a brand-new worker, which must
//!   fetch and compile the module, then the same job again (cached).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use farm_catalog::{FillLeaf, Reducer, Summary, evaluate_kernel};
use farm_wasm::{Limits, Runtime};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, digest, submit_json};
use crate::kernels::{collatz_steps, is_prime, mandelbrot};
use crate::procfs;
use crate::stats::{median, median_f64, rate_spread, ratio, spread, timed};

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let examples = examples_dir()?;
    against_built_in(bin, args, &examples)?;
    uneven_costs(bin, args, &examples)?;
    compile_times(args, &examples)?;
    first_chunk(bin, args, &examples)
}

/// The repository's `examples/`, as an absolute path: the CLI takes a
/// name with a `/` for a module file, and the bench may run from anywhere.
fn examples_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    dir.canonicalize()
        .with_context(|| format!("the examples directory {}", dir.display()))
}

fn example_path(examples: &Path, file: &str) -> String {
    examples.join(file).display().to_string()
}

/// Rows 1 and 2: the sqrt modules against the built-in, embedded, at
/// `--wasm-sqrt-n`; every run's digest must be the built-in's.
fn against_built_in(bin: &Path, args: &Args, examples: &Path) -> anyhow::Result<()> {
    let n = args.wasm_sqrt_n.to_string();
    let jobs = [
        ("sqrt (built-in, reference)", "sqrt".to_owned(), ""),
        (
            "sqrt.wat (f only, farm's loop)",
            example_path(examples, "sqrt.wat"),
            "target >= 0.50x",
        ),
        (
            "sqrt_simd.wat (its own fill)",
            example_path(examples, "sqrt_simd.wat"),
            "target >= 0.90x",
        ),
    ];
    let mut times = vec![Vec::new(); jobs.len()];
    let mut digests = Vec::new();
    for _ in 0..args.runs {
        for (k, (_, function, _)) in jobs.iter().enumerate() {
            let (time, summary) = submit_json(bin, &["submit", function, "--n", &n, "--json"])?;
            times[k].push(time);
            digests.push((jobs[k].0, digest(&summary)));
        }
    }
    let reference = &digests[0].1;
    if let Some((job, other)) = digests.iter().find(|(_, d)| d != reference) {
        bail!("{job} gave digest {other}, the built-in sqrt {reference}: not the same bits");
    }
    println!(
        "\n## wasm: sqrt --n {} embedded, module against the built-in, {} runs interleaved (median [min..max])\n",
        args.wasm_sqrt_n, args.runs
    );
    println!(
        "{:<34}{:>34}{:>14}{:>12}",
        "function", "time", "elements/s", "throughput"
    );
    for ((name, _, target), job_times) in jobs.iter().zip(&times) {
        let per_second = args.wasm_sqrt_n as f64 / median(job_times).as_secs_f64();
        println!(
            "{name:<34}{:>34}{per_second:>14.3e}{:>11.2}x   {target}",
            spread(job_times),
            ratio(&times[0], job_times)
        );
    }
    println!("digest of every run (built-in and modules alike): {reference}");
    Ok(())
}

/// An example whose elements cost from one step to thousands, and the
/// same kernel in plain Rust.
#[derive(Debug, Clone, Copy)]
enum Uneven {
    Collatz,
    Prime,
    Mandelbrot,
}

impl Uneven {
    const ALL: [Uneven; 3] = [Uneven::Collatz, Uneven::Prime, Uneven::Mandelbrot];

    fn file(self) -> &'static str {
        match self {
            Uneven::Collatz => "collatz.wat",
            Uneven::Prime => "prime.wat",
            Uneven::Mandelbrot => "mandelbrot.wat",
        }
    }

    fn n(self, args: &Args) -> u64 {
        match self {
            Uneven::Collatz => args.wasm_collatz_n,
            Uneven::Prime => args.wasm_prime_n,
            Uneven::Mandelbrot => args.wasm_mandelbrot_n,
        }
    }

    /// The summary of elements `0..n` computed by the Rust kernel on the
    /// current rayon pool, through the catalog's leaf grid and reducer as
    /// farm computes a job, so its digest is comparable with farm's.
    fn rust_summary(self, n: u64) -> anyhow::Result<Summary> {
        // Each arm is its own instantiation, so the kernel is inlined
        // into the leaf loop as native code would be.
        match self {
            Uneven::Collatz => native_summary(&Native(collatz_steps), n),
            Uneven::Prime => native_summary(&Native(is_prime), n),
            Uneven::Mandelbrot => native_summary(&Native(mandelbrot), n),
        }
    }
}

/// A plain Rust kernel as a leaf filler.
struct Native<K>(K);

impl<K: Fn(u64) -> f64 + Sync> FillLeaf for Native<K> {
    type Error = std::convert::Infallible;

    fn fill_leaf(&self, first: u64, out: &mut [f64]) -> Result<(), Self::Error> {
        for (slot, x) in out.iter_mut().zip(first..) {
            *slot = (self.0)(x);
        }
        Ok(())
    }
}

fn native_summary<K: FillLeaf>(kernel: &K, n: u64) -> anyhow::Result<Summary> {
    let out = evaluate_kernel(kernel, 0, 0..n, None)
        .map_err(|_| anyhow::anyhow!("the Rust kernel could not run over 0..{n}"))?;
    let mut reducer = Reducer::new();
    reducer.push_chunk(n, &out.summary)?;
    Ok(reducer.finish(n)?)
}

/// CPU time over (wall x threads): the share of the cores a process kept
/// busy.
fn cpu_share(used: Duration, wall: Duration, threads: usize) -> f64 {
    used.as_secs_f64() / (wall.as_secs_f64() * threads as f64)
}

/// Times and shares of one uneven example, run by run.
#[derive(Debug, Default)]
struct UnevenRuns {
    rust: Vec<Duration>,
    embedded: Vec<Duration>,
    cluster: Vec<Duration>,
    rust_share: Vec<f64>,
    worker_share: Vec<f64>,
}

/// Row 3: each uneven example embedded and on a coordinator + one worker
/// of every core, against the Rust kernel with rayon; the worker's CPU
/// share against the rayon loop's, both read from /proc.
fn uneven_costs(bin: &Path, args: &Args, examples: &Path) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let cluster = LoopbackCluster::start_with(bin, &[vec![format!("--threads={threads}")]])?;
    let worker = cluster.worker_pids()[0];
    println!(
        "\n## wasm: uneven costs, farm submit EXAMPLE.wat against the same kernel in Rust with rayon, {} runs interleaved (median [min..max])\n",
        args.runs
    );
    println!("{:<46}{:>34}{:>10}", "job", "time", "vs rust");
    let mut busy = Vec::new();
    for example in Uneven::ALL {
        let runs = measure_uneven(bin, args, examples, example, &cluster.address, worker)?;
        print_uneven(example, example.n(args), &runs, threads);
        busy.push((
            example,
            median_f64(&runs.worker_share) / median_f64(&runs.rust_share),
        ));
    }
    print_busy_verdict(&busy);
    Ok(())
}

fn measure_uneven(
    bin: &Path,
    args: &Args,
    examples: &Path,
    example: Uneven,
    address: &str,
    worker: u32,
) -> anyhow::Result<UnevenRuns> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let n = example.n(args);
    let n_text = n.to_string();
    let path = example_path(examples, example.file());
    let embedded = ["submit", &path, "--n", &n_text, "--json"];
    let remote = [
        "submit",
        &path,
        "--n",
        &n_text,
        "--coordinator",
        address,
        "--json",
    ];
    let mut runs = UnevenRuns::default();
    let mut digests = Vec::new();
    for _ in 0..args.runs {
        let before = procfs::cpu_time(std::process::id())?;
        let (time, summary) = timed(|| example.rust_summary(n));
        let used = procfs::cpu_time(std::process::id())? - before;
        runs.rust.push(time);
        runs.rust_share.push(cpu_share(used, time, threads));
        digests.push(("rust", summary?.digest.to_string()));

        let (time, summary) = submit_json(bin, &embedded)?;
        runs.embedded.push(time);
        digests.push(("farm embedded", digest(&summary)));

        let before = procfs::cpu_time(worker)?;
        let (time, summary) = submit_json(bin, &remote)?;
        let used = procfs::cpu_time(worker)? - before;
        runs.cluster.push(time);
        runs.worker_share.push(cpu_share(used, time, threads));
        digests.push(("farm on the cluster", digest(&summary)));
    }
    let reference = &digests[0].1;
    if let Some((job, other)) = digests.iter().find(|(_, d)| d != reference) {
        bail!(
            "{} --n {n}: {job} gave digest {other}, the Rust kernel {reference}",
            example.file()
        );
    }
    Ok(runs)
}

fn print_uneven(example: Uneven, n: u64, runs: &UnevenRuns, threads: usize) {
    println!("{} --n {n}", example.file());
    let rows = [
        ("  plain Rust, rayon loop (reference)", &runs.rust, ""),
        ("  farm, embedded", &runs.embedded, "target <= 2.00x"),
        (
            "  farm, coordinator + 1 worker",
            &runs.cluster,
            "target <= 2.00x",
        ),
    ];
    for (name, times, target) in rows {
        println!(
            "{name:<46}{:>34}{:>9.2}x   {target}",
            spread(times),
            ratio(times, &runs.rust)
        );
    }
    println!(
        "  CPU / (wall x {threads}): farm-worker {}, Rust loop {}",
        rate_spread(&runs.worker_share, 0.01, "%"),
        rate_spread(&runs.rust_share, 0.01, "%")
    );
}

/// The worker's CPU share within this fraction of the rayon loop's counts
/// as keeping the cores as busy as a plain loop does.
const BUSY_RATIO: f64 = 0.95;

fn print_busy_verdict(busy: &[(Uneven, f64)]) {
    let idle: Vec<String> = busy
        .iter()
        .filter(|(_, r)| *r < BUSY_RATIO)
        .map(|(e, r)| format!("{} {r:.2}x", e.file()))
        .collect();
    let all: Vec<String> = busy
        .iter()
        .map(|(e, r)| format!("{} {r:.2}x", e.file()))
        .collect();
    println!("worker CPU share vs the Rust loop's: {}", all.join(", "));
    if idle.is_empty() {
        println!(
            "adaptive chunking keeps the cores busy: the worker's share is within {:.0} % of the rayon loop's on every uneven example",
            (1.0 - BUSY_RATIO) * 100.0
        );
    } else {
        println!(
            "adaptive chunking does NOT keep the cores busy on: {} (below {BUSY_RATIO:.2}x the rayon loop's share)",
            idle.join(", ")
        );
    }
}

/// Every example, for the compile-time rows.
const EXAMPLES: [&str; 5] = [
    "sqrt.wat",
    "sqrt_simd.wat",
    "collatz.wat",
    "prime.wat",
    "mandelbrot.wat",
];

/// Row 4: checking, appending the loop and compiling each example in a
/// fresh runtime (no disk cache), against loading it again from the
/// runtime's memory cache (the check and the hash alone).
fn compile_times(args: &Args, examples: &Path) -> anyhow::Result<()> {
    let runs = args.wasm_compile_runs;
    println!(
        "\n## wasm: module compile time, a fresh Runtime (no disk cache) loading each example, {runs} runs (median [min..max])\n"
    );
    println!(
        "{:<18}{:>8}{:>34}{:>34}",
        "example", "bytes", "fresh runtime, load", "load again (memory cache)"
    );
    let mut setups = Vec::new();
    for file in EXAMPLES {
        let path = examples.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let (mut fresh, mut cached) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (setup, runtime) = timed(|| Runtime::new(Limits::default(), None));
            let runtime = runtime?;
            setups.push(setup);
            let (time, runner) = timed(|| runtime.load(&bytes));
            runner.with_context(|| format!("load {file}"))?;
            fresh.push(time);
            let (time, runner) = timed(|| runtime.load(&bytes));
            runner.with_context(|| format!("load {file} again"))?;
            cached.push(time);
        }
        println!(
            "{file:<18}{:>8}{:>34}{:>34}",
            bytes.len(),
            spread(&fresh),
            spread(&cached)
        );
    }
    println!(
        "Runtime::new (engine and epoch ticker), every run above: {}",
        spread(&setups)
    );
    println!("(the issue measured 2-5 ms to compile a small module)");
    Ok(())
}

/// Row 5: a tiny mandelbrot job on a brand-new worker (the coordinator
/// sends the module, the worker compiles it on first use), the same job
/// again (cached), and the built-in sqrt on a brand-new worker and again
/// as references; a fresh cluster for each run.
fn first_chunk(bin: &Path, args: &Args, examples: &Path) -> anyhow::Result<()> {
    let n = args.wasm_first_n.to_string();
    let module = example_path(examples, "mandelbrot.wat");
    let jobs = ["sqrt", module.as_str()];
    // [sqrt first, sqrt again, module first, module again]
    let mut times = vec![Vec::new(); 4];
    for _ in 0..args.wasm_first_runs {
        for (k, function) in jobs.iter().enumerate() {
            let cluster = LoopbackCluster::start(bin, 1)?;
            let submit = [
                "submit",
                function,
                "--n",
                &n,
                "--coordinator",
                &cluster.address,
                "--json",
            ];
            times[2 * k].push(submit_json(bin, &submit)?.0);
            times[2 * k + 1].push(submit_json(bin, &submit)?.0);
        }
    }
    println!(
        "\n## wasm: first-chunk latency, --n {} against a coordinator + a brand-new worker, start to exit, {} runs (median [min..max])\n",
        args.wasm_first_n, args.wasm_first_runs
    );
    println!("{:<52}{:>34}{:>10}", "job", "time", "vs sqrt");
    let rows = [
        ("sqrt, first job of the worker (reference)", 0, 0),
        ("sqrt, again (reference)", 1, 1),
        ("mandelbrot.wat, first job: module sent, compiled", 2, 0),
        ("mandelbrot.wat, again: module cached", 3, 1),
    ];
    for (name, k, reference) in rows {
        println!(
            "{name:<52}{:>34}{:>9.2}x",
            spread(&times[k]),
            ratio(&times[k], &times[reference])
        );
    }
    println!("(each row against sqrt on a worker in the same state: brand-new, or after one job)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use farm_catalog::grid::LEAF_LEN;
    use farm_wasm::Runner;

    use super::*;

    fn load(file: &str) -> Runner {
        let examples = examples_dir().expect("examples directory");
        let bytes = std::fs::read(examples.join(file)).expect("example file");
        let runtime = Runtime::new(Limits::default(), None).expect("runtime");
        runtime.load(&bytes).expect("example loads")
    }

    /// The summary farm's runtime computes for `0..n`, as a worker does.
    fn wasm_summary(file: &str, n: u64) -> Summary {
        let out = load(file).evaluate(0, 0..n, None).expect("module runs");
        let mut reducer = Reducer::new();
        reducer.push_chunk(n, &out.summary).expect("shape");
        reducer.finish(n).expect("length")
    }

    #[test]
    fn rust_kernels_give_the_modules_digests() {
        // A partial last leaf, and for mandelbrot the middle of the set.
        for (example, n) in [
            (Uneven::Collatz, 5 * LEAF_LEN + 17),
            (Uneven::Prime, 7 * LEAF_LEN + 3),
            (Uneven::Mandelbrot, 600 * 1024),
        ] {
            let rust = example.rust_summary(n).expect("rust kernel");
            let wasm = wasm_summary(example.file(), n);
            assert!(
                rust.bit_identical(&wasm),
                "{}: {rust:?} vs {wasm:?}",
                example.file()
            );
        }
    }

    #[test]
    fn rust_kernels_known_values() {
        assert_eq!(collatz_steps(27), 111.0);
        assert_eq!(collatz_steps(1), 0.0);
        let primes: f64 = (0..10_000).map(is_prime).sum();
        assert_eq!(primes, 1229.0);
        // Grid point (0, 0) is c = -2 - 1.25i: outside after one step.
        assert_eq!(mandelbrot(0), 1.0);
        // Column 820, row 512: c = 0.00195..., inside the main cardioid.
        assert_eq!(mandelbrot(512 * 1024 + 820), 1000.0);
    }
}
