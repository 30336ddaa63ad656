//! Where an output file's bytes go, decided before the job starts: farm
//! replaces only a regular file it writes itself, and writes anything else
//! it was pointed at (a device, a FIFO) where it is.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::OutputError;

/// How many symbolic links may lead to the output, as Linux allows.
const MAX_LINKS: usize = 40;

/// How an `--output` path is written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// A regular file, or a name not taken yet: written beside it as
    /// `<path>.partial` and renamed over `path` once complete.
    Replace { path: PathBuf },
    /// Something farm does not own (a character or block device, a FIFO):
    /// opened and written in place, never renamed over or removed.
    InPlace { path: PathBuf },
}

/// Where the output named `path` goes. A symbolic link is followed, so the
/// file it points to is written and the link stays. With `no_clobber`, an
/// existing regular file is refused.
pub(super) fn resolve(path: &Path, no_clobber: bool) -> Result<Place, OutputError> {
    let resolved = follow_links(path).map_err(|error| OutputError::Create {
        path: path.to_path_buf(),
        error,
    })?;
    match fs::metadata(&resolved) {
        Ok(meta) if meta.is_dir() => Err(OutputError::Directory { path: resolved }),
        Ok(meta) if meta.is_file() && no_clobber => Err(OutputError::Exists { path: resolved }),
        Ok(meta) if meta.is_file() => Ok(Place::Replace { path: resolved }),
        Ok(_) => Ok(Place::InPlace { path: resolved }),
        // Not there yet, or not reachable: creating the partial file says
        // which.
        Err(_) => Ok(Place::Replace { path: resolved }),
    }
}

/// `path` with every symbolic link at its end replaced by what it points
/// to (a link whose target does not exist yet included), so the partial
/// file is made beside the file it will replace.
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path)?;
                // A relative target is relative to the link's directory;
                // joining an absolute one gives the absolute one.
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn new_and_regular_files_are_replaced_unless_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let replace = Place::Replace { path: path.clone() };
        assert_eq!(resolve(&path, true).unwrap(), replace);
        fs::write(&path, b"old").unwrap();
        assert_eq!(resolve(&path, false).unwrap(), replace);
        let err = resolve(&path, true).unwrap_err();
        assert!(
            matches!(&err, OutputError::Exists { path: p } if *p == path),
            "{err}"
        );
    }

    #[test]
    fn links_are_followed_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        // A relative link to a link to a file that does not exist yet.
        symlink("sub/real.bin", dir.path().join("first.bin")).unwrap();
        symlink("target.bin", sub.join("real.bin")).unwrap();
        let place = resolve(&dir.path().join("first.bin"), true).unwrap();
        assert_eq!(
            place,
            Place::Replace {
                path: dir.path().join("sub").join("target.bin")
            }
        );
        symlink("/dev/null", dir.path().join("null.bin")).unwrap();
        assert_eq!(
            resolve(&dir.path().join("null.bin"), true).unwrap(),
            Place::InPlace {
                path: PathBuf::from("/dev/null")
            }
        );
        symlink("loop", dir.path().join("loop")).unwrap();
        let err = resolve(&dir.path().join("loop"), false).unwrap_err();
        assert!(matches!(err, OutputError::Create { .. }), "{err}");
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is a directory, not a file", dir.path().display())
        );
    }
}
