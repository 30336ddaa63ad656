//! Writing a job's values as they arrive: [`create`] and [`Sink`].
//!
//! A regular file is written as `<path>.partial` beside its final name and
//! renamed into place only once exactly `n` values have been written, so a
//! failed or interrupted job leaves either nothing or a complete file. What
//! is not a regular file (a device, a FIFO) is written in place ([`place`]).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

mod from_socket;
mod partial;
mod place;
mod target;
mod writeback;

use super::{Destination, Format, OutputError, OutputSpec, npy, text};
use partial::PartialFile;
use place::Place;
use target::{Target, stdout_target};

pub use from_socket::SpliceSource;
pub use writeback::Writeback;

/// Write buffer size: large enough that text output, written a line at a
/// time, reaches the OS in big writes. Raw batches at least this large
/// bypass it.
const BUFFER_BYTES: usize = 1 << 20;

/// Where [`Sink::write_batch`] reports stdout's errors from.
const STDOUT_NAME: &str = "<stdout>";

/// Opens `spec`'s destination for a job of `n` values. For a regular file
/// this creates `<path>.partial`; a device or FIFO is opened in place. For
/// `.npy`, it writes the header. With `spec.fsync`, a regular file is
/// written back to disk as it grows.
pub fn create(spec: &OutputSpec, n: u64) -> Result<Sink, OutputError> {
    let format = spec.format;
    let (target, path, partial) = match &spec.destination {
        Destination::Stdout => (stdout_target(), None, None),
        Destination::File(path) => match place::resolve(path, spec.no_clobber)? {
            Place::Replace { path } => {
                let mut partial = PartialFile::new(&path, spec.no_clobber);
                let file = partial.create()?;
                let writeback = spec.fsync.then(Writeback::new);
                (Target::File(file, writeback), Some(path), Some(partial))
            }
            // Neither truncated nor created: a device or FIFO has no
            // length, and what is not there is not farm's to make here.
            Place::InPlace { path } => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|error| OutputError::Create {
                        path: path.clone(),
                        error,
                    })?;
                (Target::File(file, None), Some(path), None)
            }
        },
    };
    let mut sink = Sink {
        out: BufWriter::with_capacity(BUFFER_BYTES, target),
        path,
        partial,
        format,
        text: text::TextWriter::default(),
        expected: n,
        written: 0,
    };
    if format == Format::Npy {
        let header = npy::header(n);
        sink.out
            .write_all(&header)
            .map_err(|error| sink.write_error(error))?;
    }
    Ok(sink)
}

/// An output being written: feed it the job's batches in order, then
/// [`finish`](Sink::finish) it. Dropped unfinished, it removes its partial
/// file.
pub struct Sink {
    // Declared before `partial` so the file is closed before the partial
    // file guard removes it.
    out: BufWriter<Target>,
    /// The file written (links followed), or `None` for stdout.
    path: Option<PathBuf>,
    /// For a regular file, the partial file it is written as.
    partial: Option<PartialFile>,
    format: Format,
    /// Formats text output; keeps its buffers from batch to batch.
    text: text::TextWriter,
    expected: u64,
    written: u64,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("path", &self.display_path())
            .field("format", &self.format)
            .field("expected", &self.expected)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Writes the next batch of values, as little-endian f64 bytes.
    pub fn write_batch(&mut self, le_bytes: &[u8]) -> Result<(), OutputError> {
        self.write_pieces(&[le_bytes])
    }

    /// Writes the next batch of values given in pieces, as it arrived over
    /// the network: a piece may end inside a value, only the batch as a
    /// whole must be whole values.
    pub fn write_pieces(&mut self, pieces: &[impl AsRef<[u8]>]) -> Result<(), OutputError> {
        let len: usize = pieces.iter().map(|piece| piece.as_ref().len()).sum();
        let (count, rest) = (len / 8, len % 8);
        if rest != 0 {
            return Err(OutputError::RaggedBatch {
                path: self.display_path(),
                len,
            });
        }
        let total = self.written + count as u64;
        if total > self.expected {
            return Err(self.wrong_count(total));
        }
        let result = match (self.format, pieces) {
            // The batches are already the file's byte order.
            (Format::Npy | Format::Bin, _) => pieces
                .iter()
                .try_for_each(|piece| self.out.write_all(piece.as_ref())),
            (Format::Text, [one]) => self.text.write_values(one.as_ref(), &mut self.out),
            // Formatting text costs far more than joining the pieces.
            (Format::Text, _) => {
                let joined: Vec<u8> = pieces.iter().flat_map(|p| p.as_ref()).copied().collect();
                self.text.write_values(&joined, &mut self.out)
            }
        };
        result.map_err(|error| self.write_error(error))?;
        self.written = total;
        Ok(())
    }

    /// Values written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that all `n` values were written, flushes, and (for a file)
    /// renames the partial file into place. With `--fsync` the file is on
    /// disk before it is renamed, and its new name after; otherwise
    /// nothing is synced.
    pub fn finish(mut self) -> Result<(), OutputError> {
        if self.written != self.expected {
            return Err(self.wrong_count(self.written));
        }
        self.out.flush().map_err(|error| self.write_error(error))?;
        let durable = match self.out.get_ref() {
            // All of it, data and size. (Only a regular file has a
            // writeback: a device or FIFO is not synced.)
            Target::File(file, Some(_)) => {
                file.sync_all().map_err(|error| OutputError::Sync {
                    path: self.display_path(),
                    error,
                })?;
                true
            }
            _ => false,
        };
        let Sink { out, partial, .. } = self;
        // Close the file before renaming it, as some platforms require.
        drop(out);
        let Some(partial) = partial else {
            return Ok(());
        };
        let dir = partial.path.parent().map(Path::to_path_buf);
        partial.commit()?;
        match dir {
            Some(dir) if durable => writeback::sync_directory(&dir)
                .map_err(|error| OutputError::Sync { path: dir, error }),
            _ => Ok(()),
        }
    }

    /// The name errors report: the partial file while it is being written.
    fn display_path(&self) -> PathBuf {
        match (&self.partial, &self.path) {
            (Some(partial), _) => partial.partial.clone(),
            (None, Some(path)) => path.clone(),
            (None, None) => PathBuf::from(STDOUT_NAME),
        }
    }

    fn wrong_count(&self, got: u64) -> OutputError {
        OutputError::WrongCount {
            path: self.path.clone().unwrap_or_else(|| STDOUT_NAME.into()),
            expected: self.expected,
            got,
        }
    }

    fn write_error(&self, error: io::Error) -> OutputError {
        if self.path.is_none() && error.kind() == io::ErrorKind::BrokenPipe {
            OutputError::BrokenPipe
        } else {
            OutputError::Write {
                path: self.display_path(),
                error,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use super::super::summarize_file;
    use super::*;
    use farm_catalog::summary::{le_bytes, summarize_values};

    /// Values that exercise every corner the formats must keep: signed
    /// zeros, extremes, subnormals, and enough sqrt values for several
    /// leaves with a partial last one.
    fn sample(with_nan: bool) -> Vec<f64> {
        let mut values = vec![0.0, -0.0, 1e300, 5e-324, f64::MAX, -f64::MAX, 2f64.sqrt()];
        values.extend((0..3 * 4096 + 100).map(|i| (1e6 + f64::from(i)).sqrt()));
        values.extend([f64::INFINITY, f64::NEG_INFINITY, -5e-324, 1e-310]);
        if with_nan {
            values.insert(5000, f64::NAN);
        }
        values
    }

    /// A file whose extension gives its format.
    fn file(path: &Path) -> OutputSpec {
        OutputSpec::new(Destination::File(path.to_path_buf()), None).unwrap()
    }

    /// Writes `values` in uneven batches: 3 values, then 4095, then the
    /// rest.
    fn write_uneven(spec: &OutputSpec, values: &[f64]) -> Result<(), OutputError> {
        let bytes = le_bytes(values);
        let mut sink = create(spec, values.len() as u64)?;
        let cut1 = (3 * 8).min(bytes.len());
        let cut2 = (4098 * 8).min(bytes.len());
        for batch in [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]] {
            sink.write_batch(batch)?;
        }
        sink.finish()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn check_round_trip(name: &str, values: &[f64]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        write_uneven(&file(&path), values).unwrap();
        assert_eq!(files_in(dir.path()), [name]);
        let summary = summarize_file(&path, None).unwrap();
        let expected = summarize_values(values);
        assert!(
            summary.bit_identical(&expected),
            "{name}: {summary:?} != {expected:?}"
        );
        let bytes = fs::read(&path).unwrap();
        match Format::from_path(&path).unwrap() {
            Format::Npy => {
                let header = npy::header(values.len() as u64);
                assert_eq!(bytes[..header.len()], header[..]);
                assert_eq!(bytes[header.len()..], le_bytes(values)[..]);
            }
            Format::Bin => assert_eq!(bytes[..], le_bytes(values)[..]),
            Format::Text => {
                assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), values.len());
            }
        }
    }

    #[test]
    fn every_format_round_trips_bit_for_bit() {
        check_round_trip("out.npy", &sample(false));
        check_round_trip("out.bin", &sample(true));
        check_round_trip("out.csv", &sample(true));
        check_round_trip("OUT.TXT", &sample(true));
    }

    #[test]
    fn a_format_named_explicitly_wins_over_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let values = sample(false);
        for (name, format) in [("values.out", Format::Bin), ("x.txt", Format::Npy)] {
            let path = dir.path().join(name);
            let spec = OutputSpec::new(Destination::File(path.clone()), Some(format)).unwrap();
            write_uneven(&spec, &values).unwrap();
            let bytes = fs::read(&path).unwrap();
            let header = match format {
                Format::Npy => npy::header(values.len() as u64),
                _ => Vec::new(),
            };
            assert_eq!(bytes[..header.len()], header[..], "{name}");
            assert_eq!(bytes[header.len()..], le_bytes(&values)[..], "{name}");
            let summary = summarize_file(&path, Some(format)).unwrap();
            assert!(summary.bit_identical(&summarize_values(&values)), "{name}");
        }
    }

    #[test]
    fn short_and_exact_leaf_outputs_round_trip() {
        for len in [1, 2, 4095, 4096, 4097, 8192] {
            let values: Vec<f64> = (0..len).map(|i| f64::from(i).sqrt()).collect();
            for name in ["a.npy", "a.bin", "a.txt"] {
                check_round_trip(name, &values);
            }
        }
    }

    #[test]
    fn empty_outputs() {
        for name in ["empty.npy", "empty.bin", "empty.csv"] {
            check_round_trip(name, &[]);
        }
    }

    #[test]
    fn short_output_fails_at_finish_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        let mut sink = create(&file(&path), 10).unwrap();
        sink.write_batch(&le_bytes(&[1.0; 7])).unwrap();
        assert_eq!(sink.written(), 7);
        let err = sink.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: expected 10 values, got 7", path.display())
        );
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn too_many_values_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut sink = create(&file(&path), 2).unwrap();
        let err = sink.write_batch(&le_bytes(&[1.0; 3])).unwrap_err();
        assert!(
            matches!(
                err,
                OutputError::WrongCount {
                    expected: 2,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = sink.write_batch(&[0; 12]).unwrap_err();
        assert!(
            matches!(err, OutputError::RaggedBatch { len: 12, .. }),
            "{err}"
        );
        drop(sink);
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn dropping_unfinished_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["out.npy", "out.bin", "out.txt"] {
            let path = dir.path().join(name);
            let mut sink = create(&file(&path), 4).unwrap();
            sink.write_batch(&le_bytes(&[1.0, 2.0])).unwrap();
            assert_eq!(files_in(dir.path()), [format!("{name}.partial")]);
            drop(sink);
            assert!(files_in(dir.path()).is_empty(), "{name}");
        }
    }

    #[test]
    fn finishing_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        fs::write(&path, b"old").unwrap();
        let mut sink = create(&file(&path), 1).unwrap();
        // Until the job finishes, the old file stays as it was.
        assert_eq!(fs::read(&path).unwrap(), b"old");
        sink.write_batch(&le_bytes(&[4.0])).unwrap();
        sink.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), 4f64.to_le_bytes());
    }

    #[test]
    fn create_errors_name_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("out.npy");
        let err = create(&file(&path), 1).unwrap_err();
        assert!(matches!(err, OutputError::Create { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot create {}.partial: ", path.display())),
            "{message}"
        );
    }

    /// `farm submit ... --output - | head`: once the reader of stdout has
    /// gone, writing reports `BrokenPipe`. Stdout must be a real pipe, so
    /// the writing runs in a child copy of this test binary.
    #[cfg(unix)]
    #[test]
    fn closed_stdout_is_a_broken_pipe() {
        use std::io::Read;
        use std::process::{Command, Stdio, exit};

        const CHILD: &str = "FARM_OUTPUT_BROKEN_PIPE_CHILD";
        let batches = 1000;
        if std::env::var_os(CHILD).is_some() {
            let bytes = le_bytes(&[1.5; 1 << 16]).into_owned();
            let n = batches * (1 << 16);
            let stdout = OutputSpec::new(Destination::Stdout, None).unwrap();
            let mut sink = create(&stdout, n).unwrap();
            for _ in 0..batches {
                if let Err(err) = sink.write_batch(&bytes) {
                    // Exit before the test harness prints to the closed pipe.
                    exit(if err.is_broken_pipe() { 0 } else { 2 });
                }
            }
            exit(3);
        }
        let (_, path) = module_path!().split_once("::").unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .arg(format!("{path}::closed_stdout_is_a_broken_pipe"))
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut start = [0u8; 4096];
        stdout.read_exact(&mut start).unwrap();
        assert!(start.windows(8).any(|w| w == b"1.5\n1.5\n"));
        drop(stdout);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }

    #[test]
    fn sinks_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<Sink>();
    }
}
