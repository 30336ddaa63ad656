//! What every farm binary sets up around its work: logging, allocator
//! tuning and shutdown signals. Libraries never call these: only a
//! binary's `main` does, once.

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line of text per event.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, with the event's
    /// fields and those of the spans it happened in (e.g. the worker's).
    Json,
}

/// Logs to stderr as text, filtered by `RUST_LOG`, or by `default` (e.g.
/// `info`) when it is unset.
pub fn init_tracing(default: &str) {
    init_tracing_as(default, LogFormat::Text);
}

/// Logs to stderr in `format`, filtered by `RUST_LOG`, or by `default`
/// when it is unset. A log line that cannot be written (stderr is a closed
/// pipe, a full disk) is dropped: logging never stops or kills the process.
pub fn init_tracing_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Unfailing(std::io::stderr()))
        // Its default reports a failed write with `eprintln!`, which
        // panics when stderr is a closed pipe.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder
            // Colour codes would garble logs written to files and pipes.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// A writer that reports every write as done, so a log line that cannot
/// be written is dropped rather than reported.
struct Unfailing<W>(W);

impl<W: std::io::Write> std::io::Write for Unfailing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes `message` as a line to stderr, ignoring a closed stderr (where
/// `eprintln!` would panic).
pub fn report(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Writes `message` as a line to stdout, ignoring a closed stdout (where
/// `println!` would panic).
pub fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{message}");
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
///
/// On Unix the handlers are in place when this returns, so a process may
/// announce itself ready right after: a signal sent at once is not taken
/// by the default handler, which would kill it without a graceful stop.
pub fn stop_on_signals(program: &'static str, first: tokio_util::sync::CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::spawn(async move {
                for signals in 0.. {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                    if signals > 0 {
                        report(format_args!("{program}: second signal, exiting now"));
                        std::process::exit(130);
                    }
                    first.cancel();
                }
            });
            return;
        }
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        first.cancel();
        shutdown_signal().await;
        report(format_args!("{program}: second signal, exiting now"));
        std::process::exit(130);
    });
}
