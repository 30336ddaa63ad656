//! Who may use a coordinator: the cluster secret, the worker and client
//! tokens derived from it ([`token`]), the files they live in
//! ([`files`]), and [`Admission`], the one check a coordinator makes of
//! every gRPC call and every value or results connection.
//!
//! A token travels as gRPC metadata (`authorization: Bearer TOKEN`) and in
//! a side connection's hello (its 32 bytes): both inside TLS once the
//! connection has it. A coordinator with no secret admits everyone, and
//! therefore listens on loopback only.

pub mod files;
pub mod token;

use http::HeaderValue;

pub use files::{KeyFileError, read_secret, read_token, write_new};
pub use token::{BadKey, ClusterSecret, KEY_BYTES, Role, RoleToken, same_bytes};

/// The metadata key a token travels in.
pub const TOKEN_HEADER: http::HeaderName = http::header::AUTHORIZATION;

const BEARER: &str = "Bearer ";

/// The metadata value that presents `token`, marked sensitive so HTTP/2
/// never keeps it in a compression table.
pub fn bearer(token: &RoleToken) -> HeaderValue {
    let mut value = HeaderValue::try_from(format!("{BEARER}{}", token.to_text()))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// What a coordinator lets in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Admission {
    /// No secret: everyone (serve loopback only).
    #[default]
    Open,
    /// Members only: each role by its token.
    Members {
        worker: RoleToken,
        client: RoleToken,
    },
}

/// Why a call or connection was refused. The message names what to pass
/// and nothing else: not whether the token was another role's, nor any
/// part of the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "this coordinator requires a {0} token: pass --token-file FILE or set FARM_TOKEN_FILE (or FARM_TOKEN) to the cluster's {0} token (`farm token {0} SECRET_FILE` makes it from the coordinator's secret)"
    )]
    Missing(Role),
    #[error(
        "this coordinator refused the {0} token given: pass the cluster's {0} token with --token-file FILE or FARM_TOKEN_FILE (or FARM_TOKEN); `farm token {0} SECRET_FILE` makes it from the coordinator's secret"
    )]
    Wrong(Role),
}

impl Admission {
    /// Members of the cluster with this secret.
    pub fn members(secret: &ClusterSecret) -> Admission {
        Admission::Members {
            worker: secret.token(Role::Worker),
            client: secret.token(Role::Client),
        }
    }

    /// Whether everyone is let in.
    pub fn is_open(&self) -> bool {
        matches!(self, Admission::Open)
    }

    /// Lets in a peer presenting `presented` for what `role` may do.
    pub fn admit(&self, role: Role, presented: Option<&[u8; KEY_BYTES]>) -> Result<(), Refused> {
        let Admission::Members { worker, client } = self else {
            return Ok(());
        };
        let expected = match role {
            Role::Worker => worker,
            Role::Client => client,
        };
        match presented {
            None => Err(Refused::Missing(role)),
            Some(bytes) if same_bytes(bytes, expected.bytes()) => Ok(()),
            Some(_) => Err(Refused::Wrong(role)),
        }
    }

    /// Lets in a call whose metadata value `header` (`Bearer TOKEN`, or
    /// none) is good for `role`.
    pub fn admit_header(&self, role: Role, header: Option<&HeaderValue>) -> Result<(), Refused> {
        if self.is_open() {
            return Ok(());
        }
        let Some(header) = header else {
            return self.admit(role, None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix(BEARER))
            .and_then(|text| RoleToken::parse(text).ok());
        match token {
            Some(token) => self.admit(role, Some(token.bytes())),
            None => Err(Refused::Wrong(role)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_role_gets_in_with_its_own_token_only() {
        let secret = ClusterSecret::random().unwrap();
        let admission = Admission::members(&secret);
        let worker = secret.token(Role::Worker);
        let client = secret.token(Role::Client);
        assert_eq!(admission.admit(Role::Worker, Some(worker.bytes())), Ok(()));
        assert_eq!(admission.admit(Role::Client, Some(client.bytes())), Ok(()));
        assert_eq!(
            admission.admit(Role::Worker, Some(client.bytes())),
            Err(Refused::Wrong(Role::Worker))
        );
        assert_eq!(
            admission.admit(Role::Client, Some(worker.bytes())),
            Err(Refused::Wrong(Role::Client))
        );
        assert_eq!(
            admission.admit(Role::Client, None),
            Err(Refused::Missing(Role::Client))
        );
        let other = ClusterSecret::random().unwrap().token(Role::Client);
        assert_eq!(
            admission.admit(Role::Client, Some(other.bytes())),
            Err(Refused::Wrong(Role::Client))
        );
    }

    #[test]
    fn headers_present_tokens() {
        let secret = ClusterSecret::random().unwrap();
        let admission = Admission::members(&secret);
        let client = secret.token(Role::Client);
        let header = bearer(&client);
        assert!(header.is_sensitive());
        assert_eq!(admission.admit_header(Role::Client, Some(&header)), Ok(()));
        assert_eq!(
            admission.admit_header(Role::Worker, Some(&header)),
            Err(Refused::Wrong(Role::Worker))
        );
        assert_eq!(
            admission.admit_header(Role::Client, None),
            Err(Refused::Missing(Role::Client))
        );
        let bare = HeaderValue::try_from(client.to_text()).unwrap();
        assert_eq!(
            admission.admit_header(Role::Client, Some(&bare)),
            Err(Refused::Wrong(Role::Client))
        );
        assert_eq!(Admission::Open.admit_header(Role::Worker, None), Ok(()));
    }

    #[test]
    fn refusals_say_what_to_pass() {
        assert_eq!(
            Refused::Missing(Role::Client).to_string(),
            "this coordinator requires a client token: pass --token-file FILE or set FARM_TOKEN_FILE (or FARM_TOKEN) to the cluster's client token (`farm token client SECRET_FILE` makes it from the coordinator's secret)"
        );
        assert!(Refused::Wrong(Role::Worker).to_string().starts_with(
            "this coordinator refused the worker token given: pass the cluster's worker token"
        ));
    }
}
