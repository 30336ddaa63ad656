//! The cluster secret and the role tokens derived from it.
//!
//! A coordinator holds one random [`ClusterSecret`]. Each role's token is
//! `HMAC-SHA256(secret, "farm worker v1")` or `... "farm client v1"`, so
//! one file on the coordinator yields both, and a role token reveals
//! neither the secret nor the other role's token. Tokens are written as
//! text that names their role (`farm-worker-` or `farm-client-` and 64
//! hex digits), so a file given to the wrong program is caught before
//! anything is sent.

use std::fmt;

use sha2::{Digest, Sha256};

/// The bytes of a secret and of a token.
pub const KEY_BYTES: usize = 32;

/// How a cluster secret is written: this prefix, then 64 hex digits.
const SECRET_PREFIX: &str = "farm-secret-";

/// Who a token lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Joins as a worker: the worker session and results connections.
    Worker,
    /// Submits and reads jobs: the job service and value connections.
    Client,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Worker, Role::Client];

    /// The role's name, as tokens and messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    /// The label its token is derived with. The version lets a later
    /// scheme derive other tokens from the same secret.
    fn label(self) -> &'static [u8] {
        match self {
            Role::Worker => b"farm worker v1",
            Role::Client => b"farm client v1",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Role::Worker => "farm-worker-",
            Role::Client => "farm-client-",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A coordinator's secret: random bytes every role token derives from.
/// Never shown in logs (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; KEY_BYTES]);

/// Why a text is not a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    #[error(
        "it holds a {0} token, not a cluster secret (the coordinator takes the secret made by `farm token new`)"
    )]
    TokenNotSecret(Role),
    #[error(
        "it holds a cluster secret, not a token (give the coordinator the secret; workers and clients the tokens `farm token worker|client` derive from it)"
    )]
    SecretNotToken,
    #[error(
        "it holds no farm secret or token (expected a line starting farm-secret-, farm-worker- or farm-client-, then 64 hex digits)"
    )]
    Malformed,
}

impl ClusterSecret {
    /// A new secret from the operating system's random source.
    pub fn random() -> Result<ClusterSecret, getrandom::Error> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(ClusterSecret(bytes))
    }

    /// The token of `role` on this cluster.
    pub fn token(&self, role: Role) -> RoleToken {
        RoleToken {
            role,
            bytes: hmac_sha256(&self.0, role.label()),
        }
    }

    /// The secret as written in its file (without a newline).
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", hex(&self.0))
    }

    /// The secret in `text` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<ClusterSecret, BadKey> {
        let text = text.trim();
        if let Some(digits) = text.strip_prefix(SECRET_PREFIX) {
            return unhex(digits).map(ClusterSecret).ok_or(BadKey::Malformed);
        }
        match RoleToken::parse(text) {
            Ok(token) => Err(BadKey::TokenNotSecret(token.role)),
            Err(_) => Err(BadKey::Malformed),
        }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// A role's token: what a worker or a client presents. `Debug` shows the
/// role only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RoleToken {
    role: Role,
    bytes: [u8; KEY_BYTES],
}

impl RoleToken {
    /// The role the token's text names. (Only the bytes are checked: a
    /// coordinator compares them with its own token for the role a call
    /// needs.)
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    /// A token received as bytes (a side connection's hello), checked
    /// for `role`.
    pub fn from_bytes(role: Role, bytes: [u8; KEY_BYTES]) -> RoleToken {
        RoleToken { role, bytes }
    }

    /// The token as written in its file and sent in gRPC metadata.
    pub fn to_text(&self) -> String {
        format!("{}{}", self.role.prefix(), hex(&self.bytes))
    }

    /// The token in `text` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<RoleToken, BadKey> {
        let text = text.trim();
        if text.starts_with(SECRET_PREFIX) {
            return Err(BadKey::SecretNotToken);
        }
        Role::ALL
            .into_iter()
            .find_map(|role| {
                let digits = text.strip_prefix(role.prefix())?;
                Some(RoleToken {
                    role,
                    bytes: unhex(digits)?,
                })
            })
            .ok_or(BadKey::Malformed)
    }

    /// Whether `self` and `other` hold the same bytes, compared in time
    /// independent of where they differ.
    pub fn matches(&self, other: &RoleToken) -> bool {
        same_bytes(&self.bytes, &other.bytes)
    }
}

impl fmt::Debug for RoleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleToken({}, ..)", self.role)
    }
}

/// Compares in time independent of where `a` and `b` differ, so a
/// guesser learns nothing from how fast a wrong token is refused.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104) with a key of one block or less.
fn hmac_sha256(key: &[u8; KEY_BYTES], message: &[u8]) -> [u8; KEY_BYTES] {
    const BLOCK: usize = 64;
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for (i, byte) in key.iter().enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly 64 lowercase or uppercase hex digits.
fn unhex(digits: &str) -> Option<[u8; KEY_BYTES]> {
    if digits.len() != 2 * KEY_BYTES || !digits.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; KEY_BYTES];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231, with its 4-byte key padded with zeros
        // to 32 bytes (HMAC pads short keys with zeros the same way).
        let mut key = [0u8; KEY_BYTES];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex(&hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_role_has_its_own_token_and_they_survive_text() {
        let secret = ClusterSecret::parse(&format!("farm-secret-{}", "ab".repeat(32))).unwrap();
        let worker = secret.token(Role::Worker);
        let client = secret.token(Role::Client);
        assert!(!worker.matches(&client));
        assert_eq!(worker.role(), Role::Worker);
        let text = worker.to_text();
        assert!(
            text.starts_with("farm-worker-") && text.len() == 12 + 64,
            "{text}"
        );
        let parsed = RoleToken::parse(&format!("  {text}\n")).unwrap();
        assert!(parsed.matches(&worker) && parsed.role() == Role::Worker);
        assert!(
            RoleToken::parse(&client.to_text())
                .unwrap()
                .matches(&client)
        );
        assert_eq!(ClusterSecret::parse(&secret.to_text()).unwrap(), secret);
        // Derivation is stable: the same secret, the same tokens.
        assert_eq!(
            hex(worker.bytes()),
            hex(&hmac_sha256(&[0xab; 32], b"farm worker v1"))
        );
    }

    #[test]
    fn a_mixed_up_file_is_named() {
        let secret = ClusterSecret::random().unwrap();
        assert_eq!(
            ClusterSecret::parse(&secret.token(Role::Client).to_text()),
            Err(BadKey::TokenNotSecret(Role::Client))
        );
        assert_eq!(
            RoleToken::parse(&secret.to_text()).unwrap_err(),
            BadKey::SecretNotToken
        );
        for bad in [
            "",
            "farm-worker-",
            "farm-client-xyz",
            &format!("farm-worker-{}", "0".repeat(63)),
            "hunter2",
        ] {
            assert_eq!(
                RoleToken::parse(bad).unwrap_err(),
                BadKey::Malformed,
                "{bad}"
            );
        }
        assert!(!format!("{secret:?}").contains(&secret.to_text()[12..20]));
        assert_eq!(
            format!("{:?}", secret.token(Role::Worker)),
            "RoleToken(worker, ..)"
        );
    }

    #[test]
    fn bytes_compare_only_equal_when_equal() {
        assert!(same_bytes(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_bytes(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!same_bytes(b"0123", b"01234"));
    }
}
