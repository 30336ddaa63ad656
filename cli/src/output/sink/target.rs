//! Where a sink's bytes go: a file, or standard output (as a plain file
//! handle where the platform allows).

use std::fs::File;
use std::io::{self, Write};

use super::Writeback;

/// The stream a sink writes to.
#[derive(Debug)]
pub(super) enum Target {
    Stdout(io::Stdout),
    /// A file, or standard output as a plain file handle; for `--fsync`,
    /// with what of it is already on its way to disk.
    File(File, Option<Writeback>),
}

/// Standard output, as a plain handle where the platform allows: Rust's
/// `io::Stdout` is line-buffered, so it would search gigabytes of binary
/// values for line ends and cut its writes at them.
pub(super) fn stdout_target() -> Target {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(handle) = io::stdout().as_fd().try_clone_to_owned() {
            let file = File::from(handle);
            grow_pipe_buffer(&file);
            return Target::File(file, None);
        }
    }
    Target::Stdout(io::stdout())
}

/// Widens a pipe to 1 MiB (Linux's limit for unprivileged processes): with
/// the default 64 KiB, farm and the program reading it would take turns
/// every 64 KiB of a gigabyte stream. Anything but a pipe is left alone.
fn grow_pipe_buffer(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const PIPE_BYTES: libc::c_int = 1 << 20;
        // SAFETY: F_SETPIPE_SZ reads an int argument and touches no memory
        // of ours; on a file or terminal it fails (EBADF), which is fine.
        unsafe {
            libc::fcntl(file.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
    }
    let _ = file;
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Target::Stdout(out) => out.write(buf),
            Target::File(file, writeback) => {
                let written = file.write(buf)?;
                if let Some(writeback) = writeback {
                    writeback.wrote(file, written as u64);
                }
                Ok(written)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Target::Stdout(out) => out.flush(),
            Target::File(file, _) => file.flush(),
        }
    }
}
