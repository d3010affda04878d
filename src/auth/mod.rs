//! Who a caller is: passwords, the opaque tokens we email or hand out, and
//! the short-lived access tokens that carry a user's identity.
//!
//! Access tokens are deliberately unlike seat tokens: HMAC-SHA256 under a
//! key of their own, with their own `iss`, `aud` and `typ`. A seat token
//! (RS256, our `kid`) fails access-token validation on its algorithm alone,
//! and an access token fails seat-token validation the same way, so
//! neither can stand in for the other even if a check were forgotten.

pub mod access;
pub mod passwords;
pub mod tickets;
pub mod tokens;

pub use access::{AccessClaims, AccessTokens, OrgRole};
pub use tickets::TicketSeal;
