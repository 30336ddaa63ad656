//! What every farm binary sets up around its work: logging, allocator
//! tuning and shutdown signals. Libraries never call these: only a
//! binary's `main` does, once.

/// Logs to stderr, filtered by `RUST_LOG`, or by `default` (e.g. `info`)
/// when it is unset.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes would garble logs written to files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Keeps freed result buffers in the process for the next ones.
///
/// Values move through farm in buffers of a few MiB to 16 MiB (HTTP/2
/// receive buffers, decoded payloads). glibc's defaults serve those with
/// fresh `mmap`s, or trim them back to the kernel when freed, so each new
/// buffer page-faults on every 4 KiB: measured, that cost a client reading
/// 1.6 GB of values 350,000 faults and 60 % of its time. Raising the
/// mmap threshold to its maximum (32 MiB) and trimming only beyond
/// 128 MiB of free heap lets freed buffers be reused, warm. One arena,
/// because glibc unmaps a thread arena's heap whenever it empties, which
/// the coordinator's I/O threads did on every few buffers; small
/// allocations stay per thread in glibc's thread caches.
/// Other platforms and allocators keep their defaults.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 128 << 20;
        // SAFETY: mallopt only sets allocator parameters, under glibc's
        // own lock; a parameter it refuses is left at its default. (Call
        // this before starting threads, or the arena limit misses them.)
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Resolves on Ctrl-C, or SIGTERM where there is one.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Handles Ctrl-C and SIGTERM for a daemon: the first cancels `first`
/// (start a graceful stop), a second exits the process at once (130).
pub fn stop_on_signals(program: &'static str, first: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        first.cancel();
        shutdown_signal().await;
        eprintln!("{program}: second signal, exiting now");
        std::process::exit(130);
    });
}
