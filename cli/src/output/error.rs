//! [`OutputError`]: why an output could not be written or read.

use std::io;
use std::path::PathBuf;

use farm_catalog::ReducerError;

use super::SUPPORTED;

/// Why an output file could not be written or read.
///
/// The underlying error is part of each message rather than a `source()`,
/// so printing the chain (`{:#}` in anyhow) does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the output file name is empty: give a file ending in {SUPPORTED}, or - for stdout")]
    EmptyDestination,
    #[error(
        "cannot tell the format of {} from its extension: supported extensions are {SUPPORTED}; \
         or name the format with --format npy, bin or text",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
    /// `--no-clobber` and the output file exists.
    #[error("{} exists, and --no-clobber keeps it: remove it or name another file", path.display())]
    Exists { path: PathBuf },
    /// `<path>.partial`, where farm writes, is something farm did not
    /// make (not a regular file).
    #[error(
        "{} exists and is not a regular file, so farm will not write its output there: remove it",
        path.display()
    )]
    PartialTaken { path: PathBuf },
    #[error("{} is a directory, not a file", path.display())]
    Directory { path: PathBuf },
    #[error("cannot create {}: {error}", path.display())]
    Create { path: PathBuf, error: io::Error },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("--fsync needs --output FILE: stdout (-) cannot be synced to disk")]
    FsyncStdout,
    #[error("cannot sync {} to disk: {error}", path.display())]
    Sync { path: PathBuf, error: io::Error },
    #[error("cannot rename {} to {}: {error}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        error: io::Error,
    },
    #[error("cannot open {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The reader of stdout went away (`farm submit ... --output - | head`):
    /// a clean stop, not a failure.
    #[error("stdout was closed by its reader")]
    BrokenPipe,
    #[error("cannot write {}: a batch of {len} bytes is not a whole number of f64 values", path.display())]
    RaggedBatch { path: PathBuf, len: usize },
    #[error("{}: expected {expected} values, got {got}", path.display())]
    WrongCount {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    /// The value connection broke or went silent while values were due.
    #[error("the connection carrying the values failed: {error}")]
    ValueConnection { error: io::Error },
    #[error("{} is not a float64 .npy file farm can read: {reason}", path.display())]
    Npy { path: PathBuf, reason: String },
    #[error("{} is {len} bytes, not a whole number of 8-byte f64 values", path.display())]
    BinLength { path: PathBuf, len: u64 },
    #[error("{}:{line}: cannot read {text:?} as a number", path.display())]
    Parse {
        path: PathBuf,
        line: u64,
        text: String,
    },
    #[error("{}:{line}: empty line before the last value", path.display())]
    BlankLine { path: PathBuf, line: u64 },
    #[error("{}:{line}: line is longer than {max} bytes", path.display())]
    LineTooLong {
        path: PathBuf,
        line: u64,
        max: usize,
    },
    #[error("cannot summarize {}: {error}", path.display())]
    Summary { path: PathBuf, error: ReducerError },
    /// The thread writing the output panicked.
    #[error("the output writer crashed")]
    WriterCrashed,
}

impl OutputError {
    /// Whether this is the reader of stdout going away, which the caller
    /// should treat as a clean exit.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, OutputError::BrokenPipe)
    }
}
