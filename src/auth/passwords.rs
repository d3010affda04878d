//! Password policy and argon2id hashing.
//!
//! Hashing costs about 20 ms of CPU and 19 MiB, by design, so it runs on
//! the blocking pool and never on an async worker.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

/// Why a password is refused, in words for the person choosing it.
pub fn policy_violation(password: &str) -> Option<&'static str> {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Some("the password must be 8 to 128 characters long");
    }
    if !password.chars().any(|c| c.is_uppercase()) {
        return Some("the password must contain an upper-case letter");
    }
    if !password.chars().any(|c| c.is_lowercase()) {
        return Some("the password must contain a lower-case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return Some("the password must contain a digit");
    }
    None
}

/// The argon2id PHC string of `password`, with a fresh salt.
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

/// Whether `password` matches `phc`. An unparsable hash never matches.
pub async fn verify(password: SecretString, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Spends the time of one verification without an account to check, so
/// that a login for an unknown address takes as long as one for a known
/// address with a wrong password.
pub async fn verify_nothing(password: SecretString) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY
        .get_or_init(|| {
            Argon2::default()
                .hash_password(b"no account has this password")
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone();
    let _ = verify(password, phc).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_wants_length_cases_and_a_digit() {
        assert!(policy_violation("Short1").is_some());
        assert!(policy_violation("alllowercase1").is_some());
        assert!(policy_violation("ALLUPPERCASE1").is_some());
        assert!(policy_violation("NoDigitsHere").is_some());
        assert!(policy_violation(&format!("Aa1{}", "x".repeat(126))).is_some());
        assert_eq!(policy_violation("Correct1Horse"), None);
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash(SecretString::from("Correct1Horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(SecretString::from("Correct1Horse"), phc.clone()).await);
        assert!(!verify(SecretString::from("Wrong1Horse"), phc).await);
        assert!(!verify(SecretString::from("x"), "not a hash".into()).await);
    }
}
