//! `<path>.partial`: a file being written beside its final name, renamed
//! into place only when complete, and removed if it never is.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::OutputError;

/// A `<path>.partial` file, removed when dropped unless committed.
#[derive(Debug)]
pub(super) struct PartialFile {
    pub(super) partial: PathBuf,
    pub(super) path: PathBuf,
    /// `--no-clobber`: committing never replaces a file that appeared at
    /// `path` while the job ran.
    no_clobber: bool,
    committed: bool,
}

impl PartialFile {
    pub(super) fn new(path: &Path, no_clobber: bool) -> PartialFile {
        let mut partial = OsString::from(path.as_os_str());
        partial.push(".partial");
        PartialFile {
            partial: PathBuf::from(partial),
            path: path.to_path_buf(),
            no_clobber,
            committed: false,
        }
    }

    /// Renames the partial file to its final name. With `no_clobber` it is
    /// linked there instead, which fails if the name is taken, and the
    /// partial name is then removed (when dropped).
    pub(super) fn commit(mut self) -> Result<(), OutputError> {
        if self.no_clobber {
            return fs::hard_link(&self.partial, &self.path).map_err(|error| match error.kind() {
                io::ErrorKind::AlreadyExists => OutputError::Exists {
                    path: self.path.clone(),
                },
                _ => self.rename_error(error),
            });
        }
        fs::rename(&self.partial, &self.path).map_err(|error| self.rename_error(error))?;
        self.committed = true;
        Ok(())
    }

    fn rename_error(&self, error: io::Error) -> OutputError {
        OutputError::Rename {
            from: self.partial.clone(),
            to: self.path.clone(),
            error,
        }
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the job is already failing for another reason.
            let _ = fs::remove_file(&self.partial);
        }
    }
}
