//! `<path>.partial`: a file being written beside its final name, renamed
//! into place only when complete, and removed if it never is.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::OutputError;

/// A `<path>.partial` file, removed when dropped unless committed.
#[derive(Debug)]
pub(super) struct PartialFile {
    pub(super) partial: PathBuf,
    pub(super) path: PathBuf,
    committed: bool,
}

impl PartialFile {
    pub(super) fn new(path: &Path) -> PartialFile {
        let mut partial = OsString::from(path.as_os_str());
        partial.push(".partial");
        PartialFile {
            partial: PathBuf::from(partial),
            path: path.to_path_buf(),
            committed: false,
        }
    }

    /// Renames the partial file to its final name.
    pub(super) fn commit(mut self) -> Result<(), OutputError> {
        fs::rename(&self.partial, &self.path).map_err(|error| OutputError::Rename {
            from: self.partial.clone(),
            to: self.path.clone(),
            error,
        })?;
        self.committed = true;
        Ok(())
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
