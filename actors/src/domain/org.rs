//! What an organization's people manage: its members, the invitations that
//! bring new ones in, the API keys its machines use, and the pages and
//! filters through which its licenses, sessions and audit log are read.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuditEvent, EndReason, LicenseId, LicenseStatus, OrgId, Role, UserId};

id_type!(
    /// An invitation into an organization.
    InvitationId
);
id_type!(
    /// An organization's API key.
    ApiKeyId
);

/// Whether a person acting as `actor` may give a member whose role is
/// `current` (`None`: not a member yet, e.g. an invitation) the role
/// `next` (`None`: removal).
///
/// Owners and admins manage people, but only an owner touches owners:
/// an admin can neither make an owner nor change or remove one. This is
/// the one place the rule is written; the store applies it under the
/// organization's lock, against the target's role as it is then.
pub fn may_assign(actor: Role, current: Option<Role>, next: Option<Role>) -> bool {
    if !actor.manages() {
        return false;
    }
    let touches_owner = current == Some(Role::Owner) || next == Some(Role::Owner);
    !touches_owner || actor == Role::Owner
}

/// A member of an organization, as its managers see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub full_name: String,
    pub email_verified: bool,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// What a change to a member did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Done; the member as they are now (as they were, for a removal).
    Changed(Member),
    /// The user is not a member of the organization.
    NotMember,
    /// The acting role may not make this change (see [`may_assign`]).
    Forbidden,
    /// The change would leave the organization without an owner.
    LastOwner,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

/// An invitation as stored. The token is never stored, only its hash,
/// and never shown: it travels in the email alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub org_id: OrgId,
    pub email: String,
    pub role: Role,
    pub invited_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<UserId>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Invitation {
    pub fn status(&self, now: DateTime<Utc>) -> InvitationStatus {
        if self.accepted_at.is_some() {
            InvitationStatus::Accepted
        } else if self.revoked_at.is_some() {
            InvitationStatus::Revoked
        } else if self.expires_at <= now {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        }
    }
}

/// An invitation to store, with the hash of its single-use token.
#[derive(Clone, PartialEq, Eq)]
pub struct NewInvitation {
    pub org_id: OrgId,
    pub email: String,
    pub role: Role,
    pub invited_by: UserId,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
}

/// The token hash is left out.
impl fmt::Debug for NewInvitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewInvitation")
            .field("org_id", &self.org_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("invited_by", &self.invited_by)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What creating an invitation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteOutcome {
    Invited(Invitation),
    /// The address already belongs to a member; nothing was written.
    AlreadyMember,
    /// The acting role may not invite with this role (see [`may_assign`]).
    Forbidden,
}

/// What presenting an invitation token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The user joined with the invitation's role; the token is used up.
    Joined {
        invitation: Invitation,
        org_name: String,
    },
    /// Unknown, used, revoked or expired: nothing changed.
    Invalid,
    /// The invitation is for another address; nothing changed, and the
    /// token stays usable by its addressee.
    WrongAccount,
    /// The user already is a member; nothing changed.
    AlreadyMember,
}

/// What revoking an invitation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvitationRevoke {
    /// Revoked now, or already revoked before (nothing written then).
    Revoked(Invitation),
    /// It was accepted: there is nothing left to revoke (remove the member
    /// instead).
    AlreadyAccepted(Invitation),
}

/// An organization's API key as stored: a credential for machines, with a
/// role of `member` or `guest`. Only the hash of the key is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    /// The key's last characters, for people to tell keys apart.
    pub key_hint: String,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The roles a key may carry: keys use seats and read, never manage.
    pub fn allowed_role(role: Role) -> bool {
        matches!(role, Role::Member | Role::Guest)
    }
}

/// An API key to store.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    pub key_hash: String,
    pub key_hint: String,
    pub created_by: UserId,
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("key_hint", &self.key_hint)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Pages

/// Where a page of a time-ordered list starts: after the row with this
/// timestamp and id (the list's sort key, which is unique), so pages never
/// skip or repeat a row whatever is inserted meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// Which page to read: after `after` (from the start when `None`), at most
/// `limit` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub after: Option<C>,
    pub limit: u32,
}

impl<C> PageRequest<C> {
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }
}

/// A page of rows and where the next one starts (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page from up to `limit + 1` rows read in order: a row
    /// beyond `limit` means there is a next page, which starts after the
    /// last row kept.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> C) -> Self {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(key) } else { None };
        Self { items: rows, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U, C> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Filters of an organization's license list; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    pub status: Option<LicenseStatus>,
    pub tier: Option<String>,
    /// Only licenses with an expiry before this...
    pub expires_before: Option<DateTime<Utc>>,
    /// ...or at or after this. Either excludes licenses that never expire.
    pub expires_after: Option<DateTime<Utc>>,
}

/// Filters of a license's session list; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// `Some(true)`: open sessions only; `Some(false)`: ended ones only.
    pub live: Option<bool>,
    pub hardware_id: Option<String>,
    pub end_reason: Option<EndReason>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
}

/// Filters of an organization's audit log; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub event: Option<AuditEvent>,
    /// Who acted (a user, or an API key's id).
    pub actor_id: Option<Uuid>,
    pub license_id: Option<LicenseId>,
    /// At or after this...
    pub from: Option<DateTime<Utc>>,
    /// ...and before this.
    pub to: Option<DateTime<Utc>>,
}

/// One entry of an organization's audit log, seat events and people's
/// actions alike, with its position in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its position: later entries have higher ids.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub event: AuditEvent,
    pub actor_id: Option<Uuid>,
    pub org_id: Option<OrgId>,
    pub license_id: Option<LicenseId>,
    pub session_id: Option<super::SessionId>,
    pub hardware_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owners_touch_owners_and_only_managers_assign() {
        use Role::*;
        assert!(may_assign(Owner, Some(Owner), Some(Admin)));
        assert!(may_assign(Owner, None, Some(Owner)));
        assert!(may_assign(Admin, Some(Member), Some(Admin)));
        assert!(may_assign(Admin, Some(Guest), None));
        assert!(!may_assign(Admin, Some(Owner), Some(Admin)));
        assert!(!may_assign(Admin, Some(Member), Some(Owner)));
        assert!(!may_assign(Admin, Some(Owner), None));
        assert!(!may_assign(Member, Some(Guest), Some(Member)));
        assert!(!may_assign(Guest, None, Some(Guest)));
    }

    #[test]
    fn a_page_of_more_rows_than_its_limit_points_past_its_last_row() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next, Some(2));
        let last = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!(last.next, None);
    }
}
