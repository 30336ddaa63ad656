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

use super::bin::BinReader;
use super::npy::NpyReader;
use super::read_values::ReadValues;
use super::text::TextReader;
use super::{Format, OutputError};

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
        Format::Npy => summarize(&mut NpyReader::new(stream, path)?, path),
        Format::Bin => summarize(&mut BinReader::new(stream, path), path),
        Format::Text => summarize(&mut TextReader::new(stream, path), path),
    }
}

/// Folds `source` leaf by leaf into a summary of however many values it
/// holds.
fn summarize(source: &mut dyn ReadValues, path: &Path) -> Result<Summary, OutputError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn a_bin_size_not_a_multiple_of_8_is_an_error() {
        let bytes = [0u8; 8 * 5000 + 3];
        let path = Path::new("x.bin");
        let err = summarize(&mut BinReader::new(&bytes[..], path), path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.bin is 40003 bytes, not a whole number of 8-byte f64 values"
        );
    }

    #[test]
    fn an_empty_bin_file_is_an_empty_output() {
        let path = Path::new("x.bin");
        let s = summarize(&mut BinReader::new(&[][..], path), path);
        let empty = farm_catalog::summary::summarize_values(&[]);
        assert!(s.unwrap().bit_identical(&empty));
    }
}
