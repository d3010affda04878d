//! Users, their organizations, and their credentials.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewMail, StoreError};
use crate::domain::{
    ActionAudit, Credentials, LockoutPolicy, Membership, NewAccount, NewRefreshToken, NewUserToken,
    Org, TokenPurpose, User, UserId,
};

/// Builds the email a change sends, from the user it concerns, inside the
/// change's transaction (the address and name are only known there).
pub type MailFor<'a> = &'a (dyn Fn(&User) -> NewMail + Send + Sync);

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was live: it is now used, and its successor is stored.
    Rotated(UserId),
    /// The token had been used before: someone holds a copy. Its whole
    /// family is now revoked, the successor was not stored.
    Reused(UserId),
    /// Unknown, expired or revoked: nothing changed.
    Invalid,
}

/// Durable accounts.
///
/// Every change that sends email takes the message and writes it to the
/// outbox in the same transaction (see [`super::NewMail`]): both commit or
/// neither does. Email addresses compare case-insensitively everywhere.
/// Tokens are passed and stored as hashes only.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates the user, an organization named `org_name` with the user as
    /// its owner, the verification token, the `USER_REGISTERED` audit entry
    /// and the verification mail, all or nothing. `Conflict` when the
    /// address is taken (in any case), and then nothing is written.
    async fn create_account(
        &self,
        account: NewAccount,
        verify: NewUserToken,
        mail: NewMail,
        audit: ActionAudit,
    ) -> Result<(User, Org), StoreError>;

    /// Creates a platform administrator with a verified address and no
    /// organization. `Conflict` when the address is taken.
    async fn create_platform_admin(
        &self,
        email: &str,
        full_name: &str,
        password_hash: &str,
    ) -> Result<User, StoreError>;

    /// When the address (in any case) has an account, enqueues
    /// `mail(user)` and returns `true`; `false` and nothing written when it
    /// has none. Registration uses it to tell an address's owner, and only
    /// them, that someone tried to register it again.
    async fn notify_existing(&self, email: &str, mail: MailFor<'_>) -> Result<bool, StoreError>;

    /// The user with this address (in any case) and their credentials.
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError>;

    /// The user, or `None`.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The user's organizations and roles, by organization name.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError>;

    /// Stores a single-use token for the user and enqueues `mail(user)`
    /// (which carries the token), in one transaction. `NotFound` for an
    /// unknown user.
    async fn issue_user_token(
        &self,
        user: UserId,
        token: NewUserToken,
        mail: MailFor<'_>,
        audit: Option<ActionAudit>,
    ) -> Result<(), StoreError>;

    /// Uses a verification token: marks the address verified and enqueues
    /// `welcome(user)` with an `EMAIL_VERIFIED` entry. `None` when the
    /// token is unknown, used, expired (at `now`) or of another purpose;
    /// then nothing changes.
    async fn verify_email(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        welcome: MailFor<'_>,
    ) -> Result<Option<User>, StoreError>;

    /// Whether a token of `purpose` is live at `now` (without using it).
    async fn user_token_live(
        &self,
        token_hash: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Uses a reset token: sets the new password hash, clears any lockout
    /// and failed logins, and revokes every refresh token of the user, with
    /// a `PASSWORD_RESET` entry. `None` when the token is not live, and
    /// then nothing changes.
    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError>;

    /// Records a failed login (`audit` is its `LOGIN_FAILED` entry). When
    /// this makes `policy.max_failures` within `policy.window`, locks the
    /// account until `audit.at + policy.lock_for`, appends
    /// `ACCOUNT_LOCKED` and enqueues `locked(user)`, and returns the lock's
    /// end. An account that is already locked stays as it is.
    async fn record_login_failure(
        &self,
        user: UserId,
        policy: LockoutPolicy,
        audit: ActionAudit,
        locked: MailFor<'_>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Forgets the user's failed logins after a successful one.
    async fn clear_login_failures(&self, user: UserId) -> Result<(), StoreError>;

    /// Stores the first refresh token of a new family (a login).
    async fn issue_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError>;

    /// Presents a refresh token: see [`RefreshOutcome`]. `next` is stored
    /// in the presented token's family only when the outcome is `Rotated`
    /// (its `family_id` and `user_id` are taken from the presented token).
    /// Two concurrent presentations of one token: exactly one rotates.
    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next: NewRefreshToken,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes the family of the presented token (logout). `false` when the
    /// token is unknown.
    async fn revoke_refresh_family(
        &self,
        presented_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Appends an entry to the audit log.
    async fn append_action(&self, entry: &ActionAudit) -> Result<(), StoreError>;
}
