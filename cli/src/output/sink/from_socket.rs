//! [`Sink::copy_from`]: the rest of a job's values straight from its
//! value connection.
//!
//! On Linux raw output (`.bin`, `.npy`) is spliced: the kernel moves the
//! received pages into stdout's pipe, or through a pipe of our own into
//! the file, and farm never reads the values at all. Elsewhere, and for
//! text, they are read into a buffer and written as any batch.

use std::io::{Read, Write};

use super::super::read_values::fill;
use super::{Format, OutputError, Sink};

/// The read buffer for raw values, and the most one splice call moves.
const STEP_BYTES: usize = 1 << 20;

/// The read buffer for text: a chunk's worth, as batches from the job's
/// stream are.
const TEXT_BATCH_BYTES: usize = 8 << 20;

impl Sink {
    /// Writes the values still due (all `n` less those written) as they
    /// arrive on `source`, which must carry nothing else. A source that
    /// ends early leaves the sink short, which `finish` reports.
    pub fn copy_from<S: Read + SpliceSource>(&mut self, source: &mut S) -> Result<(), OutputError> {
        let due = (self.expected - self.written) * 8;
        match self.format {
            Format::Bin | Format::Npy => {
                self.out.flush().map_err(|error| self.write_error(error))?;
                self.copy_raw(source, due)
            }
            Format::Text => self.copy_by_reading(source, due),
        }
    }

    fn copy_raw<S: Read + SpliceSource>(
        &mut self,
        source: &mut S,
        due: u64,
    ) -> Result<(), OutputError> {
        #[cfg(target_os = "linux")]
        if let (Some(from), super::Target::File(file, writeback)) =
            (source.splice_fd(), self.out.get_mut())
            && splice::takes_splices(std::os::fd::AsRawFd::as_raw_fd(file))
        {
            use std::os::fd::AsRawFd;
            let to = file.as_raw_fd();
            let copied = splice::copy(from, to, due, |bytes| {
                if let Some(writeback) = writeback {
                    writeback.wrote(file, bytes);
                }
            });
            self.written += copied.bytes / 8;
            return copied.result.map_err(|failed| match failed {
                splice::Failed::Output(error) => self.write_error(error),
                splice::Failed::Source(error) => OutputError::ValueConnection { error },
            });
        }
        self.copy_by_reading(source, due)
    }

    /// Reads into a buffer and writes it once full: text is formatted on
    /// every core only in batches of several MiB (see `text`).
    fn copy_by_reading(&mut self, source: &mut impl Read, due: u64) -> Result<(), OutputError> {
        let size = match self.format {
            Format::Text => TEXT_BATCH_BYTES,
            Format::Bin | Format::Npy => STEP_BYTES,
        };
        let mut buffer = vec![0u8; size];
        let mut left = due;
        while left > 0 {
            let want = usize::try_from(left).map_or(size, |left| left.min(size));
            let filled = fill(source, &mut buffer[..want])
                .map_err(|error| OutputError::ValueConnection { error })?;
            left -= filled as u64;
            // A source that ended inside a value leaves the sink short,
            // which `finish` reports.
            self.write_pieces(&[&buffer[..filled / 8 * 8]])?;
            if filled < want {
                break;
            }
        }
        self.out.flush().map_err(|error| self.write_error(error))
    }
}

/// A source the kernel can splice from: its descriptor, where there is one.
pub trait SpliceSource {
    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd>;
}

impl SpliceSource for std::net::TcpStream {
    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.as_raw_fd())
    }
}

impl SpliceSource for &[u8] {
    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};

    use super::STEP_BYTES;

    /// Which side of a copy failed.
    #[derive(Debug)]
    pub(super) enum Failed {
        Source(io::Error),
        Output(io::Error),
    }

    /// What a copy moved before it ended or failed.
    pub(super) struct Copied {
        pub bytes: u64,
        pub result: Result<(), Failed>,
    }

    /// Moves up to `due` bytes from the socket `from` to `to` (a pipe, or
    /// a file through a pipe of our own); stops early at the end of
    /// `from`. `wrote_file` hears of each step once it is in the file.
    pub(super) fn copy(
        from: RawFd,
        to: RawFd,
        due: u64,
        mut wrote_file: impl FnMut(u64),
    ) -> Copied {
        let mut copied = Copied {
            bytes: 0,
            result: Ok(()),
        };
        if is_pipe(to) {
            copied.result = pump(from, to, due, &mut copied.bytes, |_| Ok(()));
            return copied;
        }
        // A narrower pipe than asked for only means smaller steps.
        let (read_end, write_end) = match farm_net::splice::pipe(STEP_BYTES) {
            Ok((read_end, write_end, _)) => (read_end, write_end),
            Err(error) => {
                copied.result = Err(Failed::Output(error));
                return copied;
            }
        };
        let (read_end, write_end) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        copied.result = pump(from, write_end, due, &mut copied.bytes, |moved| {
            // Empty our pipe into the file before taking more.
            let mut left = moved;
            while left > 0 {
                left -= splice_once(read_end, to, left).map_err(Failed::Output)?;
            }
            wrote_file(moved as u64);
            Ok(())
        });
        copied
    }

    /// Splices from `from` into the pipe `into` until `due` bytes or the
    /// end, calling `drain` with each step's bytes.
    fn pump(
        from: RawFd,
        into: RawFd,
        due: u64,
        bytes: &mut u64,
        mut drain: impl FnMut(usize) -> Result<(), Failed>,
    ) -> Result<(), Failed> {
        while *bytes < due {
            let step = usize::try_from(due - *bytes)
                .unwrap_or(STEP_BYTES)
                .min(STEP_BYTES);
            let moved = match splice_once(from, into, step) {
                Ok(0) => return Ok(()),
                Ok(moved) => moved,
                // Which end failed: a closed pipe is the output's; the
                // rest (reset, timed out) are the connection's.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(Failed::Output(error));
                }
                Err(error) => return Err(Failed::Source(error)),
            };
            drain(moved)?;
            *bytes += moved as u64;
        }
        Ok(())
    }

    /// One blocking splice: the client's thread waits for the socket.
    fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        farm_net::splice::splice(from, to, len, false)
    }

    fn is_pipe(fd: RawFd) -> bool {
        file_type(fd) == Some(libc::S_IFIFO)
    }

    /// Whether the kernel splices into `fd`: a regular file or a pipe
    /// (a FIFO is one). Not every device does (a terminal refuses with
    /// `EINVAL`), so a device is written by reading.
    pub(super) fn takes_splices(fd: RawFd) -> bool {
        matches!(file_type(fd), Some(libc::S_IFREG | libc::S_IFIFO))
    }

    /// `fd`'s file type (`S_IFREG`, `S_IFIFO`, ...), if `fstat` can tell.
    fn file_type(fd: RawFd) -> Option<libc::mode_t> {
        // SAFETY: fstat writes only into the stat buffer we pass.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            (libc::fstat(fd, &raw mut stat) == 0).then_some(stat.st_mode & libc::S_IFMT)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;

    use super::super::{Destination, Format, OutputSpec, create};
    use super::*;

    fn values_le(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f64).sqrt().to_le_bytes())
            .collect()
    }

    fn spec(path: &Path, format: Format) -> OutputSpec {
        OutputSpec::new(Destination::File(path.to_path_buf()), Some(format)).unwrap()
    }

    /// A connected pair on loopback whose far end sends `bytes` and closes.
    fn socket_sending(bytes: Vec<u8>) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut far, _) = listener.accept().unwrap();
            // Small writes, so values are cut across reads and splices.
            for piece in bytes.chunks(4093) {
                far.write_all(piece).unwrap();
            }
        });
        TcpStream::connect(address).unwrap()
    }

    /// The bytes of a file written by `create` and fed whole batches.
    fn written_as_batches(path: &Path, format: Format, batch: &[u8]) -> Vec<u8> {
        let mut sink = create(&spec(path, format), (batch.len() / 8) as u64).unwrap();
        sink.write_batch(batch).unwrap();
        sink.finish().unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn every_format_from_a_socket_equals_the_same_values_written_as_batches() {
        let dir = tempfile::tempdir().unwrap();
        let n = 300_001;
        let values = values_le(n);
        for format in [Format::Bin, Format::Npy, Format::Text] {
            let expected = written_as_batches(&dir.path().join("batches"), format, &values);
            let path = dir.path().join("socket");
            let mut sink = create(&spec(&path, format), n as u64).unwrap();
            // Some values first from the job's stream, the rest from the
            // connection, as when a job's values switch routes.
            sink.write_batch(&values[..8 * 1000]).unwrap();
            sink.copy_from(&mut socket_sending(values[8 * 1000..].to_vec()))
                .unwrap();
            sink.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == expected, "{format:?}");
        }
    }

    #[test]
    fn a_connection_that_ends_early_leaves_the_output_short() {
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Bin, Format::Text] {
            let path = dir.path().join("short");
            let mut sink = create(&spec(&path, format), 1000).unwrap();
            let mut cut = values_le(1000);
            cut.truncate(8 * 600 + 3);
            sink.copy_from(&mut socket_sending(cut)).unwrap();
            let error = sink.finish().unwrap_err();
            assert!(
                matches!(
                    error,
                    OutputError::WrongCount {
                        expected: 1000,
                        got: 600,
                        ..
                    }
                ),
                "{format:?}: {error}"
            );
            assert!(
                !path.exists(),
                "{format:?}: a short output was renamed into place"
            );
        }
    }

    /// /dev/full refuses `splice` ("invalid argument"), as devices whose
    /// driver cannot take one do: a device is written by reading, so the
    /// error is the device's own.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_device_gets_its_values_written_and_its_own_error() {
        let full = Path::new("/dev/full");
        let mut sink = create(&spec(full, Format::Bin), 300_000).unwrap();
        let error = sink
            .copy_from(&mut socket_sending(values_le(300_000)))
            .unwrap_err();
        let OutputError::Write { path, error } = error else {
            panic!("{error}");
        };
        assert_eq!(path, full);
        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");

        let mut sink = create(&spec(Path::new("/dev/null"), Format::Bin), 300_000).unwrap();
        sink.copy_from(&mut socket_sending(values_le(300_000)))
            .unwrap();
        assert_eq!(sink.written(), 300_000);
        sink.finish().unwrap();
    }

    #[test]
    fn a_plain_reader_is_copied_by_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.bin");
        let values = values_le(5000);
        let mut sink = create(&spec(&path, Format::Bin), 5000).unwrap();
        sink.copy_from(&mut values.as_slice()).unwrap();
        sink.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == values);
    }
}
