//! Linux's `splice` and pipes, for the two ends that move raw values
//! between sockets, pipes and files inside the kernel: the coordinator
//! (worker socket to pipes to client socket) and the client (socket to
//! its output).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Moves up to `len` bytes from `from` to `to`, one of them a pipe,
/// using and advancing their positions. `nonblocking` makes the pipe's
/// side return `WouldBlock` instead of waiting (a socket's side follows
/// its own mode). Retries on `EINTR`.
pub fn splice(from: RawFd, to: RawFd, len: usize, nonblocking: bool) -> io::Result<usize> {
    let mut flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE;
    if nonblocking {
        flags |= libc::SPLICE_F_NONBLOCK;
    }
    loop {
        // SAFETY: the caller lends both descriptors for the call; null
        // offsets touch no memory of ours.
        let moved = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if moved >= 0 {
            return Ok(moved.unsigned_abs());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A new pipe (read end, write end), asked to hold `size` bytes, and
/// the size it got: less when the system refuses (past
/// `/proc/sys/fs/pipe-max-size` or the user's pipe budget).
pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `ends`, which we then own.
    let (read_end, write_end) = unsafe {
        if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1]))
    };
    let fd = write_end.as_raw_fd();
    let asked = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take an int or nothing and
    // touch no memory of ours.
    let got = unsafe {
        match libc::fcntl(fd, libc::F_SETPIPE_SZ, asked) {
            refused if refused < 0 => libc::fcntl(fd, libc::F_GETPIPE_SZ),
            set => set,
        }
    };
    Ok((read_end, write_end, usize::try_from(got).unwrap_or(0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn bytes_spliced_between_pipes_arrive_whole() {
        let (from_read, from_write, size) = pipe(1 << 16).unwrap();
        assert!(size >= 1 << 16);
        let (to_read, to_write, _) = pipe(1 << 16).unwrap();
        let mut writer = File::from(from_write);
        writer.write_all(b"values").unwrap();
        let moved = splice(from_read.as_raw_fd(), to_write.as_raw_fd(), 100, true).unwrap();
        assert_eq!(moved, 6);
        // Empty, but its writer is open: non-blocking says so.
        let empty = splice(from_read.as_raw_fd(), to_write.as_raw_fd(), 100, true);
        assert_eq!(empty.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop((writer, to_write));
        let mut got = Vec::new();
        File::from(to_read).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"values");
    }
}
