//! `farm token`: making a cluster secret and deriving role tokens from
//! it, and finding the client token `farm` presents to a coordinator.

use std::path::Path;

use farm_net::auth::{self, ClusterSecret, KeyFileError, Role, RoleToken};

use crate::args::{DeriveArgs, TokenCommand};

/// The environment variable that may hold a token itself (rather than a
/// file's path), for where a file is awkward. Never a flag: a command
/// line is visible to everyone on the machine.
pub const TOKEN_ENV: &str = "FARM_TOKEN";

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--token-file: {0}")]
    File(#[source] KeyFileError),
    #[error("{TOKEN_ENV}: {0}")]
    Env(#[source] auth::BadKey),
    #[error(
        "{from} holds a {role} token; farm needs the cluster's client token (`farm token client SECRET_FILE` makes it)"
    )]
    WrongRole { from: String, role: Role },
    #[error("{0}")]
    Key(#[source] KeyFileError),
    #[error("no randomness for a secret: {0}")]
    Random(getrandom::Error),
    #[error("cannot print the token: {0}")]
    Print(#[source] std::io::Error),
}

impl TokenError {
    /// Whether the user gave something wrong (rather than the machine
    /// failing).
    pub fn is_invalid_input(&self) -> bool {
        match self {
            TokenError::File(_) | TokenError::Env(_) | TokenError::WrongRole { .. } => true,
            TokenError::Key(err) => !matches!(err, KeyFileError::Write { .. }),
            TokenError::Random(_) | TokenError::Print(_) => false,
        }
    }
}

/// The client token from `--token-file` (or `FARM_TOKEN_FILE`), else
/// from `env_token` (`FARM_TOKEN`'s value); none if neither is set.
pub fn client_token(
    token_file: Option<&Path>,
    env_token: Option<String>,
) -> Result<Option<RoleToken>, TokenError> {
    let (token, from) = match (token_file, env_token) {
        (Some(path), _) => (
            auth::read_token(path).map_err(TokenError::File)?,
            path.display().to_string(),
        ),
        (None, Some(text)) => (
            RoleToken::parse(&text).map_err(TokenError::Env)?,
            TOKEN_ENV.to_owned(),
        ),
        (None, None) => return Ok(None),
    };
    if token.role() != Role::Client {
        return Err(TokenError::WrongRole {
            from,
            role: token.role(),
        });
    }
    Ok(Some(token))
}

/// Runs `farm token ...`.
pub fn run(command: &TokenCommand) -> Result<(), TokenError> {
    match command {
        TokenCommand::New {
            out,
            keep_existing,
            worker_out,
            client_out,
        } => {
            let secret = new_secret(out, *keep_existing)?;
            for (role, path) in [(Role::Worker, worker_out), (Role::Client, client_out)] {
                if let Some(path) = path {
                    write_token(&secret, role, path)?;
                }
            }
            Ok(())
        }
        TokenCommand::Worker(args) => derive(args, Role::Worker),
        TokenCommand::Client(args) => derive(args, Role::Client),
    }
}

/// A new secret written to `out`, or with `keep_existing` the one there.
fn new_secret(out: &Path, keep_existing: bool) -> Result<ClusterSecret, TokenError> {
    if keep_existing && out.exists() {
        return auth::read_secret(out).map_err(TokenError::Key);
    }
    let secret = ClusterSecret::random().map_err(TokenError::Random)?;
    auth::write_new(out, &secret.to_text(), false).map_err(TokenError::Key)?;
    Ok(secret)
}

fn write_token(secret: &ClusterSecret, role: Role, path: &Path) -> Result<(), TokenError> {
    auth::write_new(path, &secret.token(role).to_text(), true).map_err(TokenError::Key)
}

fn derive(args: &DeriveArgs, role: Role) -> Result<(), TokenError> {
    let secret = auth::read_secret(&args.secret).map_err(TokenError::Key)?;
    match &args.out {
        Some(path) => write_token(&secret, role, path),
        None => {
            use std::io::Write;
            writeln!(std::io::stdout(), "{}", secret.token(role).to_text())
                .map_err(TokenError::Print)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_client_token_comes_from_the_file_first_and_must_be_a_clients() {
        let dir = tempfile::tempdir().unwrap();
        let secret = ClusterSecret::random().unwrap();
        let client = secret.token(Role::Client);
        let path = dir.path().join("client.token");
        auth::write_new(&path, &client.to_text(), false).unwrap();
        let other = ClusterSecret::random()
            .unwrap()
            .token(Role::Client)
            .to_text();
        let from_file = client_token(Some(&path), Some(other.clone()))
            .unwrap()
            .unwrap();
        assert!(from_file.matches(&client));
        let from_env = client_token(None, Some(other)).unwrap().unwrap();
        assert!(!from_env.matches(&client));
        assert!(client_token(None, None).unwrap().is_none());

        let worker = secret.token(Role::Worker).to_text();
        let err = client_token(None, Some(worker)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FARM_TOKEN holds a worker token; farm needs the cluster's client token (`farm token client SECRET_FILE` makes it)"
        );
        assert!(err.is_invalid_input());
        let err = client_token(None, Some("hunter2".to_owned())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("FARM_TOKEN: it holds no farm secret or token"),
            "{err}"
        );
    }
}
