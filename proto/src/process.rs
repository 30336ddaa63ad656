//! Plumbing every farm binary shares: logging set-up and shutdown signals.
//! (It lives here because every binary already depends on this crate.)

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
