//! People: users, their roles in organizations, and what they do.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuditEvent, ClientInfo, LicenseId, OrgId};

id_type!(
    /// A person with a login.
    UserId
);

/// What a member may do in an organization, from most to least.
///
/// - owners and admins manage members, invitations and API keys;
/// - members see licenses and their own sessions;
/// - guests can only use seats.
///
/// An organization always keeps at least one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Guest,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::Owner, Self::Admin, Self::Member, Self::Guest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Guest => "guest",
        }
    }

    /// Owners and admins manage the organization's people and keys.
    pub fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }

    /// Members and above see the organization's licenses.
    pub fn sees_licenses(self) -> bool {
        self != Self::Guest
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// A user as stored, without credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub full_name: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub platform_admin: bool,
    pub created_at: DateTime<Utc>,
}

impl User {
    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }
}

/// A user with what login checks: the password hash and any lock.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: User,
    /// A PHC string (argon2id).
    pub password_hash: String,
    pub locked_until: Option<DateTime<Utc>>,
}

/// The hash is left out.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

/// A user's role in one organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub org_id: OrgId,
    pub org_name: String,
    pub role: Role,
}

/// What `register` creates: a user and the organization they own.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub email: String,
    pub password_hash: String,
    pub full_name: String,
    pub org_name: String,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("email", &self.email)
            .field("full_name", &self.full_name)
            .field("org_name", &self.org_name)
            .finish_non_exhaustive()
    }
}

/// What a single-use emailed token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }
}

/// A single-use token to store. Only its hash is kept: the token itself
/// travels in the email alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUserToken {
    pub token_hash: String,
    pub purpose: TokenPurpose,
    pub expires_at: DateTime<Utc>,
}

/// A refresh token to store (by hash), in the family of the login it
/// descends from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub family_id: uuid::Uuid,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
}

/// When failed logins lock an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// This many failures within `window` lock the account...
    pub max_failures: u32,
    pub window: chrono::Duration,
    /// ...for this long.
    pub lock_for: chrono::Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: chrono::Duration::minutes(15),
            lock_for: chrono::Duration::minutes(15),
        }
    }
}

/// An audit entry about what a person (or a platform administrator, or an
/// API key) did, as opposed to a seat event ([`super::AuditEntry`]). Lives
/// in the same append-only log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionAudit {
    pub at: DateTime<Utc>,
    pub event: AuditEvent,
    /// Who acted: a user, or the id of an API key.
    pub actor_id: Option<uuid::Uuid>,
    pub org_id: Option<OrgId>,
    pub license_id: Option<LicenseId>,
    pub client: ClientInfo,
    /// A short machine-readable detail, never a secret.
    pub detail: Option<String>,
}
