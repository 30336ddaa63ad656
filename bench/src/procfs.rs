//! What the bench reads about other processes: CPU time and peak memory
//! from /proc, the peak memory of a child that exits by itself (read
//! until it exits, since /proc forgets a process once it is reaped), and
//! a watchdog that kills one that outlives its time.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use anyhow::{Context, bail};

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after it are
    // plain. utime and stime are fields 14 and 15 (1-based).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

/// The peak resident set size (VmHWM) of a running process, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kib * 1024)
}

/// How often a child's high-water mark is read while it runs.
const PEAK_POLL: Duration = Duration::from_millis(5);

/// Waits for `child` (at most `timeout`, then kills it) and returns its
/// exit status and peak resident set size in bytes.
///
/// The peak is the child's VmHWM, read every few milliseconds until it
/// exits: the last reading covers all but its final milliseconds, when it
/// only frees memory. `wait4`'s `ru_maxrss` cannot be used: Linux records
/// the spawning process's own peak in it at `exec`, so a child of a bench
/// that has grown to 190 MB reported 190 MB whatever it used itself.
pub fn wait_with_peak_rss(child: &Child, timeout: Duration) -> anyhow::Result<(ExitStatus, u64)> {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let pid = child.id();
    let _watchdog = Watchdog::new(pid, timeout);
    let peak = Arc::new(AtomicU64::new(0));
    let exited = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, exited) = (peak.clone(), exited.clone());
        std::thread::spawn(move || {
            // A reading fails once the child is a zombie; the last good
            // one stands.
            while !exited.load(Ordering::Relaxed) {
                if let Ok(bytes) = peak_rss(pid) {
                    peak.fetch_max(bytes, Ordering::Relaxed);
                }
                std::thread::sleep(PEAK_POLL);
            }
        })
    };
    let pid_t = libc::pid_t::try_from(pid)?;
    // Wait for the exit without reaping, so the sampler stops before the
    // pid can be reused by another process.
    // SAFETY: siginfo_t is plain old data that waitid fills in; the child
    // is ours and not yet reaped (std only reaps in wait/try_wait, which
    // are not called).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let waited =
        unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    exited.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    if waited != 0 {
        bail!(
            "waitid on {pid} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut status = 0;
    // SAFETY: a valid pointer to a local; the child has exited and is
    // still ours to reap.
    let reaped = unsafe { libc::waitpid(pid_t, &mut status, 0) };
    if reaped != pid_t {
        bail!(
            "waitpid on {pid} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((ExitStatus::from_raw(status), peak.load(Ordering::Relaxed)))
}

/// Kills a process that outlives its time, unless dropped first.
#[derive(Debug)]
pub struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, timeout: Duration) -> Watchdog {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(timeout)
            {
                eprintln!("bench: process {pid} ran over {timeout:?}; killing it");
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        });
        Watchdog { done: Some(done) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}
