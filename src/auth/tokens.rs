//! Opaque secrets we hand out: emailed single-use tokens, refresh tokens
//! and API keys. Each is 256 random bits, base64url, behind a short prefix
//! that says what it is (so a leaked one is recognisable in a scanner and
//! never mistaken for another kind). Only its SHA-256 is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "swr_";
/// Prefix of emailed single-use tokens (verification, reset, invitation).
pub const EMAIL_PREFIX: &str = "swe_";
/// Prefix of organizations' API keys, presented as `Authorization: Bearer`.
pub const API_KEY_PREFIX: &str = "swk_";

/// What people see of a secret in listings: its prefix and last four
/// characters (`swk_…a1B2`), which tell keys apart and reveal nothing.
pub fn hint(token: &str, prefix: &str) -> String {
    let tail: String = token
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{prefix}…{tail}")
}

/// A fresh secret with `prefix`, and its hash for the store.
pub fn generate(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = digest(&token);
    (token, hash)
}

/// The stored form of a presented secret: SHA-256, lower-case hex. A
/// plain hash suffices: the secret has 256 bits of entropy, so there is
/// nothing to brute-force, and lookups stay one index probe.
pub fn digest(token: &str) -> String {
    let sum = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in sum {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether `token` could be one of ours: the prefix, then 43 base64url
/// characters. Anything else is refused before touching the store.
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_distinct_and_hash_to_their_digest() {
        let (a, ha) = generate(REFRESH_PREFIX);
        let (b, _) = generate(REFRESH_PREFIX);
        assert_ne!(a, b);
        assert!(well_formed(&a, REFRESH_PREFIX));
        assert!(!well_formed(&a, EMAIL_PREFIX));
        assert_eq!(digest(&a), ha);
        assert!(!well_formed("swr_short", REFRESH_PREFIX));
    }
}
