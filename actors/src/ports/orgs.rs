//! What an organization's people manage, and what they read of it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewMail, StoreError};
use crate::domain::{
    AcceptOutcome, ActionAudit, ApiKey, ApiKeyId, AuditFilter, AuditRecord, Invitation,
    InvitationId, InvitationRevoke, InviteOutcome, KeyCursor, License, LicenseFilter, LicenseId,
    Member, MemberChange, NewApiKey, NewInvitation, Org, OrgId, Page, PageRequest, Role,
    SessionFilter, SessionRecord, UserId,
};

/// Organizations seen from the inside: members and their roles,
/// invitations, API keys, and paged reads of licenses, sessions and the
/// audit log.
///
/// The contract every implementation keeps:
///
/// - **Scoped by organization.** Every call that names an organization
///   touches and returns only that organization's rows: an id of another
///   organization's invitation, key or member is unknown here (`None`,
///   `NotMember`), never an error that tells it exists.
/// - **Audited.** Every change takes the caller's `ActionAudit` (the actor,
///   the client) and appends it, with the organization and a short detail
///   filled in, in the change's transaction; a change that does nothing
///   appends nothing.
/// - **One owner at least.** Role changes and removals run under a lock on
///   the organization (a row lock on PostgreSQL, the write lock on SQLite)
///   and re-read the roles there, so that two owners demoting each other at
///   once leave one owner, not none.
/// - **Secrets as hashes.** Invitation tokens and API keys are passed and
///   stored as SHA-256 digests only.
/// - **Stable pages.** Lists are keyset-paginated on a unique sort key: a
///   page starts strictly after its cursor, so paging never repeats or
///   skips a row, whatever is written meanwhile.
#[async_trait]
pub trait OrgStore: Send + Sync + 'static {
    /// The user's current role in the organization; `None` for a
    /// non-member (or an unknown organization).
    async fn org_role(&self, org: OrgId, user: UserId) -> Result<Option<Role>, StoreError>;

    /// Renames the organization; `None` when it is unknown.
    async fn rename_org(
        &self,
        org: OrgId,
        name: &str,
        audit: ActionAudit,
    ) -> Result<Option<Org>, StoreError>;

    /// Members, oldest first.
    async fn members(
        &self,
        org: OrgId,
        page: PageRequest<KeyCursor>,
    ) -> Result<Page<Member, KeyCursor>, StoreError>;

    /// Gives a member a new role, if `actor` may (see
    /// [`crate::domain::may_assign`]) and an owner remains.
    async fn set_member_role(
        &self,
        org: OrgId,
        user: UserId,
        role: Role,
        actor: Role,
        audit: ActionAudit,
    ) -> Result<MemberChange, StoreError>;

    /// Removes a member, if `actor` may and an owner remains.
    async fn remove_member(
        &self,
        org: OrgId,
        user: UserId,
        actor: Role,
        audit: ActionAudit,
    ) -> Result<MemberChange, StoreError>;

    /// Stores an invitation and enqueues its mail (which carries the
    /// token), if `actor` may invite with that role and the address is not
    /// a member's already.
    async fn create_invitation(
        &self,
        new: NewInvitation,
        actor: Role,
        mail: NewMail,
        audit: ActionAudit,
    ) -> Result<InviteOutcome, StoreError>;

    /// Invitations, oldest first, whatever their status.
    async fn invitations(
        &self,
        org: OrgId,
        page: PageRequest<KeyCursor>,
    ) -> Result<Page<Invitation, KeyCursor>, StoreError>;

    /// Revokes a pending (or expired) invitation; `None` when the
    /// organization has no such invitation.
    async fn revoke_invitation(
        &self,
        org: OrgId,
        id: InvitationId,
        audit: ActionAudit,
    ) -> Result<Option<InvitationRevoke>, StoreError>;

    /// Uses an invitation token at `now`: the user joins with its role and
    /// the token is spent, at most once however many present it at once.
    /// The user's address must be the invited one (in any case).
    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        now: DateTime<Utc>,
        audit: ActionAudit,
    ) -> Result<AcceptOutcome, StoreError>;

    /// Stores an API key.
    async fn create_api_key(
        &self,
        new: NewApiKey,
        audit: ActionAudit,
    ) -> Result<ApiKey, StoreError>;

    /// API keys, oldest first, revoked ones included.
    async fn api_keys(
        &self,
        org: OrgId,
        page: PageRequest<KeyCursor>,
    ) -> Result<Page<ApiKey, KeyCursor>, StoreError>;

    /// Revokes a key (idempotent); `None` when the organization has no
    /// such key.
    async fn revoke_api_key(
        &self,
        org: OrgId,
        id: ApiKeyId,
        audit: ActionAudit,
    ) -> Result<Option<ApiKey>, StoreError>;

    /// The live (unrevoked) key with this hash. Read on every request that
    /// presents a key, with no cache, so that a revocation holds on every
    /// node at once.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;

    /// The organization's licenses, oldest first.
    async fn org_licenses(
        &self,
        org: OrgId,
        filter: &LicenseFilter,
        page: PageRequest<KeyCursor>,
    ) -> Result<Page<License, KeyCursor>, StoreError>;

    /// A license's sessions, newest first (the cursor's `at` is
    /// `started_at`).
    async fn license_sessions(
        &self,
        license: LicenseId,
        filter: &SessionFilter,
        page: PageRequest<KeyCursor>,
    ) -> Result<Page<SessionRecord, KeyCursor>, StoreError>;

    /// The organization's audit log, newest first; the cursor is an entry's
    /// id.
    async fn org_audit(
        &self,
        org: OrgId,
        filter: &AuditFilter,
        page: PageRequest<i64>,
    ) -> Result<Page<AuditRecord, i64>, StoreError>;
}
