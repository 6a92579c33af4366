//! Join tokens for hosts outside Kubernetes: `<id>.<secret>`, where the id (6 hex digits) names
//! the token in lists, logs and refusals, and the secret is 256 random bits (64 hex digits).
//!
//! The coordinator stores only the SHA-256 of the secret ([`JoinToken::hash`]) and compares a
//! presented secret's hash with it in constant time ([`JoinToken::verify`]). The token itself
//! is shown once, when it is made. Neither `Debug` nor any error prints the secret.

use ring::rand::SecureRandom;

/// Hex digits of a token id.
pub const ID_LEN: usize = 6;
/// Bytes of a token secret.
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "join token is malformed: expected <id>.<secret> with a {ID_LEN}-hex-digit id and a \
         {}-hex-digit secret (as printed by `faultctl tokens create`)",
        SECRET_BYTES * 2
    )]
    Malformed,
    #[error("the system random number generator failed")]
    Random,
}

/// A join token: its public id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

impl JoinToken {
    /// A new token from the system's random number generator.
    pub fn generate() -> Result<Self, TokenError> {
        let rng = ring::rand::SystemRandom::new();
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill(&mut id).map_err(|_| TokenError::Random)?;
        rng.fill(&mut secret).map_err(|_| TokenError::Random)?;
        Ok(JoinToken {
            id: hex(&id),
            secret,
        })
    }

    /// Parses `<id>.<secret>`; surrounding white space (a trailing newline in a token file) is
    /// ignored.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let (id, secret_hex) = s.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let mut id_bytes = [0u8; ID_LEN / 2];
        unhex(id, &mut id_bytes).ok_or(TokenError::Malformed)?;
        let mut secret = [0u8; SECRET_BYTES];
        unhex(secret_hex, &mut secret).ok_or(TokenError::Malformed)?;
        Ok(JoinToken {
            id: id.to_ascii_lowercase(),
            secret,
        })
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token as the operator passes it: `<id>.<secret>`. Show it once.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, hex(&self.secret))
    }

    /// What the coordinator stores: the SHA-256 of the secret, hex.
    pub fn hash(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, &self.secret).as_ref())
    }

    /// Whether this token's secret hashes to `stored` (hex SHA-256), compared in constant time.
    pub fn verify(&self, stored: &str) -> bool {
        let mine = self.hash();
        constant_time_eq(mine.as_bytes(), stored.as_bytes())
    }
}

/// Equal lengths and bytes, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_hash_and_verify() {
        let t = JoinToken::generate().expect("token");
        let text = t.reveal();
        assert_eq!(text.len(), ID_LEN + 1 + SECRET_BYTES * 2);
        let parsed = JoinToken::parse(&format!("  {text}\n")).expect("parse");
        assert_eq!(parsed, t);
        assert_eq!(parsed.id(), t.id());
        let stored = t.hash();
        assert_eq!(stored.len(), 64);
        assert!(parsed.verify(&stored));
        // Same id, another secret: refused.
        let mut other = text.clone();
        let last = other.pop().expect("char");
        other.push(if last == '0' { '1' } else { '0' });
        assert!(!JoinToken::parse(&other).expect("parse").verify(&stored));
        // The stored hash is not the secret.
        assert!(!text.contains(&stored));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "abc",
            "ab12cd",
            "ab12cd.",
            "ab12c.00",
            "zz12cd.0000000000000000000000000000000000000000000000000000000000000000",
            "ab12cd.000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let e = JoinToken::parse(bad).expect_err(bad);
            assert_eq!(e, TokenError::Malformed);
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
        let t = JoinToken::generate().expect("token");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.reveal()[ID_LEN + 1..]), "{dbg}");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
