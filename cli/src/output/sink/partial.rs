//! `<path>.partial`: a file being written beside its final name, renamed
//! into place only when complete, and removed if it never is.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
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
    /// Whether farm made the partial file: only then is it farm's to
    /// remove.
    created: bool,
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
            created: false,
            committed: false,
        }
    }

    /// Creates the partial file, new. One left by an earlier run that was
    /// killed (a regular file) is replaced; anything else under that name
    /// (a symbolic link, a FIFO, a device, a directory) is not farm's, so
    /// it is refused rather than written through or renamed away.
    pub(super) fn create(&mut self) -> Result<File, OutputError> {
        let create_new = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.partial)
        };
        let created = match create_new() {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                match fs::symlink_metadata(&self.partial) {
                    Ok(meta) if meta.file_type().is_file() => {
                        fs::remove_file(&self.partial).and_then(|()| create_new())
                    }
                    Ok(_) => {
                        return Err(OutputError::PartialTaken {
                            path: self.partial.clone(),
                        });
                    }
                    Err(_) => Err(error),
                }
            }
            created => created,
        };
        let file = created.map_err(|error| OutputError::Create {
            path: self.partial.clone(),
            error,
        })?;
        self.created = true;
        Ok(file)
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
        if self.created && !self.committed {
            // Best effort: the job is already failing for another reason.
            let _ = fs::remove_file(&self.partial);
        }
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, symlink};

    use super::*;

    #[test]
    fn a_partial_file_left_by_a_killed_run_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        fs::write(dir.path().join("out.bin.partial"), b"stale").unwrap();
        let mut partial = PartialFile::new(&path, false);
        partial.create().unwrap().write_all(b"new").unwrap();
        partial.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!dir.path().join("out.bin.partial").exists());
    }

    /// A link named `<path>.partial` would have farm write over the file
    /// it points to, then rename the link into place.
    #[test]
    fn what_farm_did_not_make_under_the_partial_name_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("out.bin");
        let partial_name = dir.path().join("out.bin.partial");
        symlink(&victim, &partial_name).unwrap();
        let mut partial = PartialFile::new(&path, false);
        let err = partial.create().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} exists and is not a regular file, so farm will not write its output there: remove it",
                partial_name.display()
            )
        );
        drop(partial);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&partial_name).unwrap().is_symlink());
        assert!(!path.exists());

        // A FIFO is refused at once, not opened (which would wait for a
        // reader).
        fs::remove_file(&partial_name).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&partial_name)
            .status()
            .unwrap();
        assert!(made.success());
        let mut partial = PartialFile::new(&path, false);
        let err = partial.create().unwrap_err();
        assert!(matches!(err, OutputError::PartialTaken { .. }), "{err}");
        drop(partial);
        assert!(
            fs::symlink_metadata(&partial_name)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
}
