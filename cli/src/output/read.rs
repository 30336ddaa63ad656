//! `farm digest FILE`: recomputing a job's summary from an output file (or
//! from stdin, for `farm submit ... --output - | farm digest -`).
//!
//! The file is streamed one leaf ([`LEAF_LEN`] values) at a time through the
//! catalog's [`Reducer`], the same leaf statistics and the same fold the
//! cluster uses, so the result is bit-identical to the job's own summary
//! while memory stays at one leaf whatever the file's size.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use farm_catalog::grid::LEAF_LEN;
use farm_catalog::{LeafStats, Reducer, Summary};

use super::{Format, OutputError, bin, npy, text};

/// A file's values, in order, in blocks.
pub(super) trait ReadValues {
    /// Appends up to `max` values to `out`: exactly `max` unless the file
    /// ends, after which nothing more is appended.
    fn read_values(&mut self, out: &mut Vec<f64>, max: usize) -> Result<(), OutputError>;
}

/// What errors call stdin.
const STDIN_NAME: &str = "<stdin>";

/// The summary of the values in the output file at `path`, read as
/// `explicit` (`--format`) if given, else as its extension says.
pub fn summarize_file(path: &Path, explicit: Option<Format>) -> Result<Summary, OutputError> {
    let format = Format::of_file(path, explicit)?;
    let file = File::open(path).map_err(|error| OutputError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    summarize_stream(file, path, format)
}

/// The summary of the values on stdin, read as `explicit` if given, else
/// as text (what `--output -` writes by default).
pub fn summarize_stdin(explicit: Option<Format>) -> Result<Summary, OutputError> {
    summarize_stream(
        io::stdin().lock(),
        Path::new(STDIN_NAME),
        Format::of_stream(explicit),
    )
}

/// `path` names the stream in errors.
fn summarize_stream(
    stream: impl Read,
    path: &Path,
    format: Format,
) -> Result<Summary, OutputError> {
    match format {
        Format::Npy => summarize(&mut npy::Reader::new(stream, path)?, path),
        Format::Bin => summarize(&mut bin::Reader::new(stream, path), path),
        Format::Text => summarize(&mut text::Reader::new(stream, path), path),
    }
}

/// Folds `source` leaf by leaf into a summary of however many values it
/// holds.
pub(super) fn summarize(source: &mut dyn ReadValues, path: &Path) -> Result<Summary, OutputError> {
    let summary_error = |error| OutputError::Summary {
        path: path.to_path_buf(),
        error,
    };
    let leaf_len = LEAF_LEN as usize;
    let mut reducer = Reducer::new();
    let mut leaf = Vec::with_capacity(leaf_len);
    loop {
        leaf.clear();
        source.read_values(&mut leaf, leaf_len)?;
        if leaf.is_empty() {
            break;
        }
        // A short leaf followed by more values cannot happen with a
        // well-behaved source; the reducer rejects it if it does.
        reducer
            .push_leaf(leaf.len() as u64, &LeafStats::of_values(&leaf))
            .map_err(summary_error)?;
    }
    reducer.finish(reducer.elements()).map_err(summary_error)
}

/// Reads into `buf` until it is full or the reader is exhausted, returning
/// how many bytes were read (fewer than `buf.len()` only at the end).
pub(super) fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader that hands out at most 5 bytes per call, like a slow pipe.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(5).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn fill_reads_until_full_or_end() {
        let data: Vec<u8> = (0..23).collect();
        let mut buf = [0u8; 16];
        let mut reader = Trickle(&data);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 16);
        assert_eq!(buf[..], data[..16]);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 7);
        assert_eq!(buf[..7], data[16..]);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 0);
    }

    #[test]
    fn missing_and_unknown_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.npy");
        let err = summarize_file(&missing, None).unwrap_err();
        assert!(matches!(err, OutputError::Open { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot open "), "{err}");
        let unknown = dir.path().join("x.json");
        std::fs::write(&unknown, b"[]").unwrap();
        assert!(matches!(
            summarize_file(&unknown, None),
            Err(OutputError::UnknownFormat { .. })
        ));
        // Named explicitly, the format is tried (and the text is refused).
        assert!(matches!(
            summarize_file(&unknown, Some(Format::Text)),
            Err(OutputError::Parse { .. })
        ));
    }
}
