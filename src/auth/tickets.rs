//! Queue tickets: the capability a waiting client polls and claims with.
//!
//! A ticket names its line (`<org>.<license>.<ticket id>`) so that a poll
//! finds it without a database read, and carries a MAC over that, keyed by
//! a key derived from the access-token secret that every node shares. A
//! forged or altered ticket is refused before any I/O: without the MAC,
//! anyone could name arbitrary organizations and make a node start an
//! organization actor and read the store for each.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What the derived key is for; a new purpose gets a new label.
const PURPOSE: &[u8] = b"seatwarden queue tickets v1";
/// MAC bytes kept: 128 bits.
const MAC_LEN: usize = 16;

/// Seals and opens queue tickets.
#[derive(Clone)]
pub struct TicketSeal {
    key: hmac::Key,
}

/// The key, never shown.
impl std::fmt::Debug for TicketSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSeal").finish_non_exhaustive()
    }
}

impl TicketSeal {
    /// A seal under a key derived from `secret` (HMAC-SHA256 of a fixed
    /// label), so that it is never the secret's own key.
    pub fn new(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), PURPOSE);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// `body.<mac>`.
    pub fn seal(&self, body: &str) -> String {
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(&mac.as_ref()[..MAC_LEN])
        )
    }

    /// The body of a ticket this seal made, or `None` for anything else.
    pub fn open<'a>(&self, ticket: &'a str) -> Option<&'a str> {
        let (body, mac) = ticket.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = hmac::sign(&self.key, body.as_bytes());
        verify_slices_are_equal(&mac, &expected.as_ref()[..MAC_LEN]).ok()?;
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_ticket_opens_and_an_altered_or_foreign_one_does_not() {
        let seal = TicketSeal::new(b"0123456789abcdef0123456789abcdef");
        let ticket = seal.seal("org.license.ticket");
        assert_eq!(seal.open(&ticket), Some("org.license.ticket"));
        assert_eq!(seal.open("org.license.ticket"), None);
        assert_eq!(seal.open(&ticket.replacen("org", "gro", 1)), None);
        let other = TicketSeal::new(b"another secret of thirty-two bytes!");
        assert_eq!(other.open(&ticket), None);
        assert_eq!(seal.open(""), None);
        assert_eq!(seal.open(&format!("{ticket}x")), None);
    }
}
