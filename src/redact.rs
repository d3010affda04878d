//! Keeping passwords in connection URLs out of logs and error messages.
//!
//! One place parses URLs for this (with the `url` crate), so the settings
//! that print a URL and the ledger that scrubs driver errors agree on what
//! the secret is.

use percent_encoding::percent_decode_str;
use url::Url;

/// A URL fit for logs: the password, if any, replaced by `***`. A URL that
/// can't be parsed but looks like it carries credentials is not shown.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials at all.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) if url.contains('@') => "(unparseable URL with credentials)".to_owned(),
        Err(_) => url.to_owned(),
    }
}

/// The password of a URL as it may show up in a driver's messages: as
/// written (percent-encoded) and decoded. Empty when there is none.
pub fn url_password_forms(url: &str) -> Vec<String> {
    let Some(raw) = Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty())
    else {
        return Vec::new();
    };
    let decoded = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
    if decoded == raw {
        vec![raw]
    } else {
        vec![raw, decoded]
    }
}

/// `message` with every one of `secrets` replaced by `***`.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_owned(), |m, secret| {
        m.replace(secret.as_str(), "***")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacting_a_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://sw:hunter2@db:5432/sw"),
            "postgres://sw:***@db:5432/sw"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
        assert_eq!(
            redact_url("postgres://sw:p%40ss@db/sw"),
            "postgres://sw:***@db/sw"
        );
    }

    #[test]
    fn passwords_are_found_raw_and_decoded_and_scrubbed() {
        let secrets = url_password_forms("redis://user:p%40ss@host:6379/0");
        assert_eq!(secrets, ["p%40ss", "p@ss"]);
        assert_eq!(scrub("auth p@ss failed", &secrets), "auth *** failed");
        assert_eq!(url_password_forms("redis://:hunter2@host"), ["hunter2"]);
        assert!(url_password_forms("redis://host:6379").is_empty());
        assert!(url_password_forms("redis://user@host:6379").is_empty());
    }
}
