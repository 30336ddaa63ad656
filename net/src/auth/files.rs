//! The files secrets and tokens live in: one line of text each, written
//! readable by their owner only, never replaced by accident.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::token::{BadKey, ClusterSecret, RoleToken};

/// More than any secret or token file holds; a larger file is not one.
const MAX_FILE_BYTES: u64 = 4096;

/// Why a secret or token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a farm key file: {source}", path.display())]
    Bad {
        path: PathBuf,
        #[source]
        source: BadKey,
    },
    #[error("{} exists; farm does not replace a secret (remove it first to make a new one)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cluster secret in the file at `path`.
pub fn read_secret(path: &Path) -> Result<ClusterSecret, KeyFileError> {
    ClusterSecret::parse(&read_text(path)?).map_err(|source| KeyFileError::Bad {
        path: path.to_owned(),
        source,
    })
}

/// The role token in the file at `path`.
pub fn read_token(path: &Path) -> Result<RoleToken, KeyFileError> {
    RoleToken::parse(&read_text(path)?).map_err(|source| KeyFileError::Bad {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read)?;
    Ok(text)
}

/// Writes `text` and a newline to a new file at `path`, readable and
/// writable by its owner only. With `replace`, an existing file is
/// replaced (a derived token, which the secret makes again); without, an
/// existing file is an error and left alone.
pub fn write_new(path: &Path, text: &str, replace: bool) -> Result<(), KeyFileError> {
    let write = |source| KeyFileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_owned(),
            }
        } else {
            write(source)
        }
    })?;
    // A replaced file keeps its mode: make it the owner's only again.
    #[cfg(unix)]
    if replace {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write)?;
    }
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn a_secret_is_written_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let secret = ClusterSecret::random().unwrap();
        write_new(&path, &secret.to_text(), false).unwrap();
        assert_eq!(read_secret(&path).unwrap(), secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_new(&path, &ClusterSecret::random().unwrap().to_text(), false);
        assert!(
            matches!(again, Err(KeyFileError::Exists { .. })),
            "{again:?}"
        );
        assert_eq!(read_secret(&path).unwrap(), secret, "left alone");

        let token_path = dir.path().join("worker.token");
        let token = secret.token(Role::Worker);
        write_new(&token_path, &token.to_text(), true).unwrap();
        write_new(&token_path, &token.to_text(), true).unwrap();
        assert!(read_token(&token_path).unwrap().matches(&token));
        let mixed = read_secret(&token_path).unwrap_err().to_string();
        assert!(
            mixed.contains("holds a worker token, not a cluster secret"),
            "{mixed}"
        );
        let missing = read_token(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, KeyFileError::Read { .. }));
    }
}
