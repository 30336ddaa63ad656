//! Output files: streaming a job's ordered f64 values to disk, and reading
//! such a file back to recompute the job's [`Summary`](farm_catalog::Summary).
//!
//! - [`create`] opens a [`Sink`] for `farm submit ... --output DEST`. It takes
//!   the values as the batches of little-endian bytes the cluster sends, so
//!   the whole output is never in memory. Files are written to
//!   `<path>.partial` and renamed into place by [`Sink::finish`], so an
//!   interrupted job never leaves a truncated file under the final name.
//!   What farm does not own is never renamed over: a device or FIFO is
//!   written in place, and a symbolic link is followed to its file.
//! - [`summarize_file`] is `farm digest FILE`: it streams a file leaf by leaf
//!   through the catalog's reducer, so its summary is bit-identical to the
//!   one the cluster reported for the same values.
//!
//! The format ([`Format`]) is `--format` if given, else the extension:
//!
//! - `.npy`: NumPy format 1.0, a 1-D `'<f8'` array.
//! - `.bin`: raw little-endian IEEE-754 binary64, no header.
//! - `.csv`, `.txt`: one value per line in shortest round-trip form, with
//!   `NaN`, `inf` and `-inf` for the special values.
//!
//! `-` is stdout (for `farm digest`, stdin), which has no extension: text
//! unless `--format` says otherwise, so `--output - --format bin` pipes the
//! raw values to another program.
//!
//! Loading each in Python (all three give the same float64 array, bit for
//! bit, except that text keeps no NaN payloads):
//!
//! ```text
//! import numpy
//! a = numpy.load("out.npy")
//! a = numpy.fromfile("out.bin", dtype="<f8")
//! a = numpy.loadtxt("out.csv", dtype="<f8")    # or "out.txt"
//! ```

mod bin;
mod error;
mod npy;
mod read;
mod read_values;
mod sink;
mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use error::OutputError;
pub use read::{summarize_file, summarize_stdin};
pub use sink::{Sink, SpliceSource, Writeback, create};

/// The extensions [`Format::from_path`] knows, for error messages.
const SUPPORTED: &str = ".npy, .bin, .csv, .txt";

/// An output file format. Its variants are also the values of `--format`,
/// and their docs its help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// NumPy .npy (version 1.0, dtype '<f8'), as written for FILE.npy.
    Npy,
    /// Raw little-endian f64, no header, as written for FILE.bin.
    Bin,
    /// One value per line, as written for FILE.csv, FILE.txt and -.
    Text,
}

impl Format {
    /// The format a file name's extension calls for (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Format, OutputError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("npy") => Ok(Format::Npy),
            Some("bin") => Ok(Format::Bin),
            Some("csv" | "txt") => Ok(Format::Text),
            _ => Err(OutputError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The format of the file at `path`: `explicit` (`--format`) if given,
    /// else the one its extension calls for.
    pub fn of_file(path: &Path, explicit: Option<Format>) -> Result<Format, OutputError> {
        match explicit {
            Some(format) => Ok(format),
            None => Format::from_path(path),
        }
    }

    /// The format of stdout or stdin, which have no extension: `explicit`
    /// (`--format`) if given, else text.
    pub fn of_stream(explicit: Option<Format>) -> Format {
        explicit.unwrap_or(Format::Text)
    }
}

/// Where `--output` sends a job's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `-`: stdout.
    Stdout,
    /// A file.
    File(PathBuf),
}

impl Destination {
    /// Parses an `--output` argument. Its format is checked later, with
    /// `--format` ([`OutputSpec::new`]).
    pub fn parse(arg: &str) -> Result<Destination, OutputError> {
        match arg {
            "" => Err(OutputError::EmptyDestination),
            "-" => Ok(Destination::Stdout),
            _ => Ok(Destination::File(PathBuf::from(arg))),
        }
    }
}

/// What `--output` and `--format` ask for: where the values go, and how
/// they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub destination: Destination,
    pub format: Format,
    /// `--fsync`: the file is on disk when the job ends.
    pub fsync: bool,
    /// `--no-clobber`: an existing file is refused instead of replaced.
    pub no_clobber: bool,
}

impl OutputSpec {
    /// `explicit` (`--format`) wins; without it a file's extension decides
    /// (an unknown one is an error, before any job is submitted) and
    /// stdout gets text.
    pub fn new(
        destination: Destination,
        explicit: Option<Format>,
    ) -> Result<OutputSpec, OutputError> {
        let format = match (&destination, explicit) {
            (Destination::Stdout, explicit) => Format::of_stream(explicit),
            (Destination::File(path), explicit) => Format::of_file(path, explicit)?,
        };
        Ok(OutputSpec {
            destination,
            format,
            fsync: false,
            no_clobber: false,
        })
    }

    /// Asks for the file to be on disk, under its name, before the job
    /// ends (`--fsync`). Stdout is refused: it is rarely a file, and what
    /// reads it decides when its bytes reach a disk.
    pub fn with_fsync(self, fsync: bool) -> Result<OutputSpec, OutputError> {
        if fsync && self.destination == Destination::Stdout {
            return Err(OutputError::FsyncStdout);
        }
        Ok(OutputSpec { fsync, ..self })
    }

    /// Refuses to replace an existing regular file (`--no-clobber`);
    /// stdout, devices and FIFOs are written as ever.
    pub fn with_no_clobber(self, no_clobber: bool) -> OutputSpec {
        OutputSpec { no_clobber, ..self }
    }
}

impl FromStr for Destination {
    type Err = OutputError;

    fn from_str(arg: &str) -> Result<Destination, OutputError> {
        Destination::parse(arg)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stdout => f.write_str("-"),
            Destination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension() {
        let cases = [
            ("a.npy", Format::Npy),
            ("dir/A.NPY", Format::Npy),
            ("a.bin", Format::Bin),
            ("a.Bin", Format::Bin),
            ("a.csv", Format::Text),
            ("a.TXT", Format::Text),
        ];
        for (path, format) in cases {
            assert_eq!(
                Format::from_path(Path::new(path)).unwrap(),
                format,
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_extensions_list_the_supported_ones() {
        for path in ["a.json", "a", "npy", "a.npy.gz", "-"] {
            let err = Format::from_path(Path::new(path)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "cannot tell the format of {path} from its extension: \
                     supported extensions are .npy, .bin, .csv, .txt; \
                     or name the format with --format npy, bin or text"
                )
            );
        }
    }

    #[test]
    fn an_explicit_format_overrides_the_extension() {
        let file = |name: &str| Destination::File(PathBuf::from(name));
        let cases = [
            (Destination::Stdout, None, Format::Text),
            (Destination::Stdout, Some(Format::Bin), Format::Bin),
            (Destination::Stdout, Some(Format::Npy), Format::Npy),
            (file("a.npy"), None, Format::Npy),
            (file("a.npy"), Some(Format::Bin), Format::Bin),
            (file("a.out"), Some(Format::Npy), Format::Npy),
            (file("no-extension"), Some(Format::Text), Format::Text),
        ];
        for (destination, explicit, format) in cases {
            let spec = OutputSpec::new(destination.clone(), explicit).unwrap();
            assert_eq!(spec.format, format, "{destination} {explicit:?}");
            assert_eq!(spec.destination, destination);
        }
        assert!(matches!(
            OutputSpec::new(file("a.out"), None),
            Err(OutputError::UnknownFormat { .. })
        ));
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("-").unwrap(), Destination::Stdout);
        assert_eq!(
            "out/x.npy".parse::<Destination>().unwrap(),
            Destination::File(PathBuf::from("out/x.npy"))
        );
        assert_eq!(
            Destination::parse("out/x.npy").unwrap().to_string(),
            "out/x.npy"
        );
        assert!(matches!(
            Destination::parse(""),
            Err(OutputError::EmptyDestination)
        ));
        // The extension is checked with --format, by OutputSpec::new.
        assert_eq!(
            Destination::parse("x.json").unwrap(),
            Destination::File(PathBuf::from("x.json"))
        );
    }

    #[test]
    fn io_errors_name_the_file() {
        use std::io;
        let err = OutputError::Create {
            path: PathBuf::from("out.npy.partial"),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            err.to_string(),
            "cannot create out.npy.partial: permission denied"
        );
        assert!(!err.is_broken_pipe());
        assert!(OutputError::BrokenPipe.is_broken_pipe());
    }
}
