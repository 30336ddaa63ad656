//! `--fsync`: a file that is on disk, under its final name, when farm
//! exits.
//!
//! Left alone, Linux keeps a new file's pages dirty in memory until they
//! pass its dirty thresholds (gigabytes, on a large machine), so an fsync
//! at the end would write the whole file while farm waits. Instead the sink
//! asks the kernel to start writing each stretch back as soon as it is
//! written (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which does not
//! wait for the disk): the disk works while the job computes, and the final
//! fsync waits only for the last stretches.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;

/// How much is written before the kernel is asked to start writing it
/// back: big enough for long sequential disk writes and few system calls.
const STRETCH_BYTES: u64 = 32 << 20;

/// Tracks what of a file being written sequentially is already on its way
/// to disk. (The bench's direct-write reference uses it too.)
#[derive(Debug, Default)]
pub struct Writeback {
    /// Bytes written to the file so far.
    written: u64,
    /// Bytes the kernel was asked to write back.
    requested: u64,
    /// Cleared once the kernel refuses the request (a file system or
    /// platform without it): the final fsync still makes the file durable.
    hinting: bool,
}

impl Writeback {
    pub fn new() -> Writeback {
        Writeback {
            hinting: true,
            ..Writeback::default()
        }
    }

    /// Counts `bytes` more written at the end of `file`, and starts
    /// writing back what has grown to a whole stretch.
    pub fn wrote(&mut self, file: &File, bytes: u64) {
        if let Some(range) = self.advance(bytes)
            && self.hinting
            && start_writeback(file, range).is_err()
        {
            self.hinting = false;
        }
    }

    /// The range to start writing back after `bytes` more are written, if
    /// a whole stretch is waiting.
    fn advance(&mut self, bytes: u64) -> Option<Range<u64>> {
        self.written += bytes;
        if self.written - self.requested < STRETCH_BYTES {
            return None;
        }
        let range = self.requested..self.written;
        self.requested = self.written;
        Some(range)
    }
}

/// Waits until the directory entry of a file just renamed into `dir` is on
/// disk: without this, a crash could leave the old name, or none.
pub(super) fn sync_directory(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }
    // Elsewhere a directory cannot be opened as a file to sync it; the
    // file's own sync is what the platform offers.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, range: Range<u64>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let start = libc::off64_t::try_from(range.start).map_err(io::Error::other)?;
    let len = libc::off64_t::try_from(range.end - range.start).map_err(io::Error::other)?;
    // SAFETY: sync_file_range only reads its integer arguments.
    let status =
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere there is no way to start writeback without waiting for it.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _range: Range<u64>) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn each_whole_stretch_is_written_back_once_in_order() {
        let mut writeback = Writeback::new();
        let mut requested = Vec::new();
        // An .npy header, then 10 MiB batches.
        for bytes in [128, 10 * MIB, 10 * MIB, 10 * MIB, 10 * MIB, 10 * MIB, 3] {
            requested.extend(writeback.advance(bytes));
        }
        assert_eq!(requested, vec![0..40 * MIB + 128]);
        for _ in 0..4 {
            requested.extend(writeback.advance(10 * MIB));
        }
        assert_eq!(
            requested,
            vec![0..40 * MIB + 128, 40 * MIB + 128..80 * MIB + 131]
        );
    }

    #[test]
    fn one_large_write_is_one_stretch() {
        let mut writeback = Writeback::new();
        assert_eq!(writeback.advance(STRETCH_BYTES - 1), None);
        assert_eq!(writeback.advance(1), Some(0..STRETCH_BYTES));
        assert_eq!(
            writeback.advance(5 * STRETCH_BYTES),
            Some(STRETCH_BYTES..6 * STRETCH_BYTES)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_takes_the_request_for_a_regular_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("a.bin")).unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        start_writeback(&file, 0..1 << 20).unwrap();
        sync_directory(dir.path()).unwrap();
    }
}
