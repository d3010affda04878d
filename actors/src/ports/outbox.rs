//! Outgoing email, as rows of the outbox.
//!
//! A change that causes an email (a registration, an invitation) writes the
//! message into the outbox in the same transaction as the change, through
//! its own port (for example the accounts store takes a [`NewMail`] with
//! the change). The mailer subsystem delivers it later. So a request never
//! waits for SMTP, and a crash never loses a message whose cause committed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kinds of email seatwarden sends. Each has a template pair
/// (`<name>.txt`, `<name>.html`) under the template directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// Confirms an address after registration: carries a verification link.
    Verify,
    /// Sent once the address is verified.
    Welcome,
    /// Sent instead of a verification when someone registers an address
    /// that already has an account (registration never reveals that).
    AccountExists,
    /// Carries a password-reset link.
    PasswordReset,
    /// Invites an address into an organization.
    Invitation,
    /// Tells an account's owner it was locked after failed logins.
    AccountLocked,
}

impl MailKind {
    pub const ALL: [MailKind; 6] = [
        Self::Verify,
        Self::Welcome,
        Self::AccountExists,
        Self::PasswordReset,
        Self::Invitation,
        Self::AccountLocked,
    ];

    /// The stored name, which is also the template's file stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Welcome => "welcome",
            Self::AccountExists => "account_exists",
            Self::PasswordReset => "password_reset",
            Self::Invitation => "invitation",
            Self::AccountLocked => "account_locked",
        }
    }
}

impl std::str::FromStr for MailKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown mail kind {s:?}"))
    }
}

/// A message to enqueue: what to send to whom, and the template's context.
///
/// `data` may hold single-use secrets (verification and reset tokens): it
/// is never logged, and the outbox clears it once the message is done.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMail {
    pub id: Uuid,
    pub kind: MailKind,
    pub to: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl NewMail {
    pub fn new(kind: MailKind, to: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind,
            to: to.into(),
            data,
            created_at: Utc::now(),
        }
    }
}

/// `data` is left out: it may carry tokens.
impl std::fmt::Debug for NewMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}
