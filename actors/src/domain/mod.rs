//! Domain types shared by the coordinator, its ports and the adapters that
//! implement them.
//!
//! Identifiers are newtypes over UUIDs so that a session id can never be
//! passed where a license id is expected; the compiler checks what a code
//! review would otherwise have to.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// An organization: the vendor's customer, who owns licenses.
    OrgId
);
id_type!(
    /// A license: a number of seats that machines may hold at once.
    LicenseId
);
id_type!(
    /// One machine's hold on one seat, from acquire to release or expiry.
    SessionId
);
id_type!(
    /// One machine's place in a license's line for a seat (the seat queue).
    TicketId
);

mod billing;
pub use billing::{
    PlanRevenue, Revenue, Subscription, SubscriptionCounts, SubscriptionGroup, SubscriptionStatus,
};

mod machine;
pub use machine::{Machine, MachineId, NewMachine};

mod account;
pub use account::{
    ActionAudit, Credentials, LockoutPolicy, Membership, NewAccount, NewRefreshToken, NewUserToken,
    Role, TokenPurpose, User, UserId,
};

mod plan;
pub use plan::{
    BillingInterval, DEFAULT_CURRENCY, InvalidPlan, MAX_PRICE_CENTS, NewPlan, Plan, PlanId,
    PlanPatch,
};

mod org;
pub use org::{
    AcceptOutcome, ApiKey, ApiKeyId, AuditFilter, AuditRecord, Invitation, InvitationId,
    InvitationRevoke, InvitationStatus, InviteOutcome, KeyCursor, LicenseFilter, Member,
    MemberChange, NewApiKey, NewInvitation, Page, PageRequest, SessionFilter, may_assign,
};

/// An organization as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Whether a license may hand out seats at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
    /// Temporarily barred, for example for an unpaid invoice.
    Suspended,
    /// Not (or no longer) in force, for example a cancelled subscription.
    Inactive,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Inactive => "inactive",
        }
    }
}

impl FromStr for LicenseStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "inactive" => Ok(Self::Inactive),
            other => Err(format!("unknown license status {other:?}")),
        }
    }
}

/// A license as stored. The key itself is never stored, only its hash and
/// the last characters as a hint for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub id: LicenseId,
    pub org_id: OrgId,
    pub key_hint: String,
    pub seats: u32,
    pub tier: String,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// How long past its lease a seat token stays valid, for apps that must
    /// survive network outages. `None` takes the server's default
    /// (`seats.offline_grace_secs`).
    pub offline_grace_secs: Option<u32>,
    /// How many sessions beyond `seats` may hold a still-valid token at once
    /// (lapsed within their grace). Live leases never exceed `seats`.
    pub offline_overdraft: u32,
    /// When set, only machines activated on the license may acquire seats,
    /// and at most this many may be activated at once. `None`: any machine
    /// may acquire, and activation is optional bookkeeping.
    #[serde(default)]
    pub max_machines: Option<u32>,
    /// Acquire also needs a credential of someone in the license's
    /// organization (an access token of a member, or an org API key).
    #[serde(default)]
    pub requires_user: bool,
    /// The longest a machine may borrow a seat for planned offline work,
    /// in hours; 0 (the default) turns borrowing off.
    #[serde(default)]
    pub max_borrow_hours: u32,
}

impl License {
    /// The offline grace of this license, falling back to `default`.
    pub fn offline_grace(&self, default: std::time::Duration) -> std::time::Duration {
        self.offline_grace_secs
            .map_or(default, |s| std::time::Duration::from_secs(u64::from(s)))
    }

    /// Why the license refuses new seats and live sessions, if it does.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<Refusal> {
        match self.status {
            LicenseStatus::Suspended => Some(Refusal::Suspended),
            LicenseStatus::Inactive => Some(Refusal::Inactive),
            LicenseStatus::Active => match self.expires_at {
                Some(at) if at <= now => Some(Refusal::Expired),
                _ => None,
            },
        }
    }
}

/// Why a license refuses seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Suspended,
    Inactive,
    Expired,
}

impl Refusal {
    /// The error code clients see for it, also the detail of the audit
    /// entries of the sessions it ends.
    pub fn code(self) -> &'static str {
        match self {
            Self::Suspended => "license_suspended",
            Self::Inactive => "license_inactive",
            Self::Expired => "license_expired",
        }
    }
}

/// What a new license needs; the store fills in `id`, `status` (active) and
/// `created_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLicense {
    pub org_id: OrgId,
    pub key_hash: String,
    pub key_hint: String,
    pub seats: u32,
    pub tier: String,
    pub features: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub offline_grace_secs: Option<u32>,
    pub offline_overdraft: u32,
    pub max_machines: Option<u32>,
    pub requires_user: bool,
    pub max_borrow_hours: u32,
}

/// A change to a license; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseUpdate {
    pub seats: Option<u32>,
    pub status: Option<LicenseStatus>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// `Some(None)` goes back to the server's default.
    pub offline_grace_secs: Option<Option<u32>>,
    pub offline_overdraft: Option<u32>,
    /// `Some(None)` lifts the machine limit. Lowering it below the machines
    /// activated deactivates none: it only refuses new activations.
    pub max_machines: Option<Option<u32>>,
    pub requires_user: Option<bool>,
    pub max_borrow_hours: Option<u32>,
    /// Billing changes these with a subscription's plan.
    pub tier: Option<String>,
    pub features: Option<Vec<String>>,
}

impl LicenseUpdate {
    pub fn is_empty(&self) -> bool {
        self.tier.is_none()
            && self.features.is_none()
            && self.seats.is_none()
            && self.status.is_none()
            && self.expires_at.is_none()
            && self.offline_grace_secs.is_none()
            && self.offline_overdraft.is_none()
            && self.max_machines.is_none()
            && self.requires_user.is_none()
            && self.max_borrow_hours.is_none()
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client gave the seat back.
    Released,
    /// Heartbeats stopped and the lease lapsed.
    Expired,
    /// An operator or the billing system took the seat away.
    Revoked,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for EndReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "released" => Ok(Self::Released),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!("unknown end reason {other:?}")),
        }
    }
}

/// Who asks for a seat, as the API layer established it. Only licenses
/// with `requires_user` look at it, so anonymous callers cost nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Caller {
    /// No credential came with the request.
    #[default]
    Anonymous,
    /// A credential came and is not valid (malformed, unknown, expired).
    Invalid,
    /// A valid credential: who (a user or an API key) and the
    /// organizations it may act for, as the store says now.
    Authenticated { actor_id: Uuid, orgs: Vec<OrgId> },
}

impl Caller {
    /// The user or API key, for the audit log; `None` unless authenticated.
    pub fn actor_id(&self) -> Option<Uuid> {
        match self {
            Caller::Authenticated { actor_id, .. } => Some(*actor_id),
            Caller::Anonymous | Caller::Invalid => None,
        }
    }
}

/// Where a request came from, recorded with sessions and audit entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The durable record of a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub license_id: LicenseId,
    pub org_id: OrgId,
    pub hardware_id: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// When the lease lapses unless renewed, as last written durably.
    /// Heartbeats are batched, so this may trail the ledger by one flush.
    pub lease_expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    pub client: ClientInfo,
    /// Optional client-supplied metadata (app version, OS, ...), as JSON.
    pub metadata: Option<serde_json::Value>,
    /// Set for a borrowed seat: held with no heartbeats until this instant
    /// (the lease's own expiry).
    pub borrowed_until: Option<DateTime<Utc>>,
}

impl SessionRecord {
    pub fn is_open(&self) -> bool {
        self.ended_at.is_none()
    }

    /// When and why the session ended, if it has.
    pub fn end(&self) -> Option<(DateTime<Utc>, EndReason)> {
        self.ended_at.zip(self.end_reason)
    }
}

/// Kinds of audit entries. The names are part of the audit log's contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditEvent {
    #[serde(rename = "LICENSE_ACQUIRED")]
    LicenseAcquired,
    #[serde(rename = "LICENSE_ACQUISITION_FAILED")]
    LicenseAcquisitionFailed,
    #[serde(rename = "LICENSE_RELEASED")]
    LicenseReleased,
    #[serde(rename = "SESSION_EXPIRED")]
    SessionExpired,
    #[serde(rename = "SESSION_REVOKED")]
    SessionRevoked,
    #[serde(rename = "USER_REGISTERED")]
    UserRegistered,
    #[serde(rename = "EMAIL_VERIFIED")]
    EmailVerified,
    #[serde(rename = "LOGIN_SUCCEEDED")]
    LoginSucceeded,
    #[serde(rename = "LOGIN_FAILED")]
    LoginFailed,
    #[serde(rename = "ACCOUNT_LOCKED")]
    AccountLocked,
    #[serde(rename = "PASSWORD_RESET_REQUESTED")]
    PasswordResetRequested,
    #[serde(rename = "PASSWORD_RESET")]
    PasswordReset,
    #[serde(rename = "REFRESH_TOKEN_REUSED")]
    RefreshTokenReused,
    #[serde(rename = "ORG_RENAMED")]
    OrgRenamed,
    #[serde(rename = "MEMBER_ROLE_CHANGED")]
    MemberRoleChanged,
    #[serde(rename = "MEMBER_REMOVED")]
    MemberRemoved,
    #[serde(rename = "INVITATION_CREATED")]
    InvitationCreated,
    #[serde(rename = "INVITATION_REVOKED")]
    InvitationRevoked,
    #[serde(rename = "INVITATION_ACCEPTED")]
    InvitationAccepted,
    #[serde(rename = "API_KEY_CREATED")]
    ApiKeyCreated,
    #[serde(rename = "API_KEY_REVOKED")]
    ApiKeyRevoked,
    #[serde(rename = "LICENSE_ISSUED")]
    LicenseIssued,
    #[serde(rename = "LICENSE_UPDATED")]
    LicenseUpdated,
    #[serde(rename = "MACHINE_ACTIVATED")]
    MachineActivated,
    #[serde(rename = "MACHINE_DEACTIVATED")]
    MachineDeactivated,
    #[serde(rename = "PLAN_CREATED")]
    PlanCreated,
    #[serde(rename = "PLAN_UPDATED")]
    PlanUpdated,
    #[serde(rename = "PLAN_RETIRED")]
    PlanRetired,
    /// A platform administrator re-ran a webhook event.
    #[serde(rename = "WEBHOOK_REPLAYED")]
    WebhookReplayed,
    /// A paid invoice moved a subscription's license expiry.
    #[serde(rename = "LICENSE_RENEWED")]
    LicenseRenewed,
    /// A payment brought a suspended license back.
    #[serde(rename = "LICENSE_REACTIVATED")]
    LicenseReactivated,
    /// A subscription ended, and its license with it.
    #[serde(rename = "LICENSE_DEACTIVATED")]
    LicenseDeactivated,
    /// A subscription's payment failed.
    #[serde(rename = "PAYMENT_FAILED")]
    PaymentFailed,
    /// A first failed payment started a grace period.
    #[serde(rename = "GRACE_PERIOD_STARTED")]
    GracePeriodStarted,
    /// Billing suspended a license (repeated failed payments).
    #[serde(rename = "LICENSE_SUSPENDED")]
    LicenseSuspended,
    /// A license passed its expiry unrenewed; its sessions ended.
    #[serde(rename = "LICENSE_EXPIRED")]
    LicenseExpired,
    /// A subscription's plan or quantity changed its license's seats or
    /// features.
    #[serde(rename = "PLAN_CHANGED")]
    PlanChanged,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LicenseAcquired => "LICENSE_ACQUIRED",
            Self::LicenseAcquisitionFailed => "LICENSE_ACQUISITION_FAILED",
            Self::LicenseReleased => "LICENSE_RELEASED",
            Self::SessionExpired => "SESSION_EXPIRED",
            Self::SessionRevoked => "SESSION_REVOKED",
            Self::UserRegistered => "USER_REGISTERED",
            Self::EmailVerified => "EMAIL_VERIFIED",
            Self::LoginSucceeded => "LOGIN_SUCCEEDED",
            Self::LoginFailed => "LOGIN_FAILED",
            Self::AccountLocked => "ACCOUNT_LOCKED",
            Self::PasswordResetRequested => "PASSWORD_RESET_REQUESTED",
            Self::PasswordReset => "PASSWORD_RESET",
            Self::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Self::OrgRenamed => "ORG_RENAMED",
            Self::MemberRoleChanged => "MEMBER_ROLE_CHANGED",
            Self::MemberRemoved => "MEMBER_REMOVED",
            Self::InvitationCreated => "INVITATION_CREATED",
            Self::InvitationRevoked => "INVITATION_REVOKED",
            Self::InvitationAccepted => "INVITATION_ACCEPTED",
            Self::ApiKeyCreated => "API_KEY_CREATED",
            Self::ApiKeyRevoked => "API_KEY_REVOKED",
            Self::LicenseIssued => "LICENSE_ISSUED",
            Self::LicenseUpdated => "LICENSE_UPDATED",
            Self::MachineActivated => "MACHINE_ACTIVATED",
            Self::MachineDeactivated => "MACHINE_DEACTIVATED",
            Self::PlanCreated => "PLAN_CREATED",
            Self::PlanUpdated => "PLAN_UPDATED",
            Self::PlanRetired => "PLAN_RETIRED",
            Self::WebhookReplayed => "WEBHOOK_REPLAYED",
            Self::LicenseRenewed => "LICENSE_RENEWED",
            Self::LicenseReactivated => "LICENSE_REACTIVATED",
            Self::LicenseDeactivated => "LICENSE_DEACTIVATED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::GracePeriodStarted => "GRACE_PERIOD_STARTED",
            Self::LicenseSuspended => "LICENSE_SUSPENDED",
            Self::LicenseExpired => "LICENSE_EXPIRED",
            Self::PlanChanged => "PLAN_CHANGED",
        }
    }

    /// Every event, so that names parse back without a second list.
    pub const ALL: [AuditEvent; 37] = [
        Self::LicenseAcquired,
        Self::LicenseAcquisitionFailed,
        Self::LicenseReleased,
        Self::SessionExpired,
        Self::SessionRevoked,
        Self::UserRegistered,
        Self::EmailVerified,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::AccountLocked,
        Self::PasswordResetRequested,
        Self::PasswordReset,
        Self::RefreshTokenReused,
        Self::OrgRenamed,
        Self::MemberRoleChanged,
        Self::MemberRemoved,
        Self::InvitationCreated,
        Self::InvitationRevoked,
        Self::InvitationAccepted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::LicenseIssued,
        Self::LicenseUpdated,
        Self::MachineActivated,
        Self::MachineDeactivated,
        Self::PlanCreated,
        Self::PlanUpdated,
        Self::PlanRetired,
        Self::WebhookReplayed,
        Self::LicenseRenewed,
        Self::LicenseReactivated,
        Self::LicenseDeactivated,
        Self::PaymentFailed,
        Self::GracePeriodStarted,
        Self::LicenseSuspended,
        Self::LicenseExpired,
        Self::PlanChanged,
    ];
}

impl FromStr for AuditEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown audit event {s:?}"))
    }
}

/// One append-only audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub event: AuditEvent,
    pub org_id: OrgId,
    pub license_id: LicenseId,
    pub session_id: Option<SessionId>,
    pub hardware_id: Option<String>,
    pub client: ClientInfo,
    /// A short machine-readable reason, e.g. `no_seats_available`.
    pub detail: Option<String>,
    /// Who acted, when the request said: the user or API key whose
    /// credential an acquire of a `requires_user` license presented.
    /// Anonymous seat traffic (a license key alone) has none.
    pub actor_id: Option<Uuid>,
}

/// A license key as handed to customers: `PREFIX-XXXX-XXXX-XXXX-XXXX-XXXX`.
///
/// Five groups of four characters from a 32-letter alphabet carry 100 bits
/// from the operating system's CSPRNG. The alphabet is Crockford's base32:
/// it has no `O`, `I`, `L` or `U`, so nothing can be misread as `0` or `1`,
/// and [`LicenseKey::normalize`] maps those letters back the way Crockford
/// prescribes, for keys typed by hand from an email or a screenshot.
pub struct LicenseKey;

impl LicenseKey {
    pub const ALPHABET: &'static [u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    const GROUPS: usize = 5;
    const GROUP_LEN: usize = 4;

    /// A fresh key with the given prefix.
    pub fn generate(prefix: &str) -> String {
        let mut rng = rand::rngs::OsRng;
        let mut key = String::with_capacity(prefix.len() + Self::GROUPS * (Self::GROUP_LEN + 1));
        key.push_str(prefix);
        for _ in 0..Self::GROUPS {
            key.push('-');
            for _ in 0..Self::GROUP_LEN {
                let c = Self::ALPHABET[rng.gen_range(0..Self::ALPHABET.len())];
                key.push(c as char);
            }
        }
        key
    }

    /// Canonical form used for hashing: trimmed, upper-cased, and with the
    /// letters Crockford's alphabet leaves out mapped to the digits they are
    /// mistaken for, so that a key typed by hand still works. The prefix is
    /// normalized the same way, consistently at creation and at lookup.
    pub fn normalize(key: &str) -> String {
        key.trim()
            .chars()
            .map(|c| match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            })
            .collect()
    }

    /// The SHA-256 of the normalized key, hex-encoded: what the store keeps.
    ///
    /// A fast hash is right here (unlike for passwords): keys carry 100 bits
    /// of entropy, so there is nothing for a slow hash to protect.
    pub fn hash(key: &str) -> String {
        use std::fmt::Write;
        let digest = Sha256::digest(Self::normalize(key).as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// The last group, for humans to tell keys apart in listings.
    pub fn hint(key: &str) -> String {
        let normalized = Self::normalize(key);
        let tail = normalized.rsplit('-').next().unwrap_or_default();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_five_groups_of_unambiguous_characters() {
        let key = LicenseKey::generate("CODITECT");
        let groups: Vec<&str> = key.split('-').collect();
        assert_eq!(groups.len(), 6, "{key}");
        assert_eq!(groups[0], "CODITECT");
        for g in &groups[1..] {
            assert_eq!(g.len(), 4);
            assert!(
                g.bytes().all(|c| LicenseKey::ALPHABET.contains(&c)),
                "{key}"
            );
            assert!(!g.contains(['O', 'I', 'L', 'U']));
        }
    }

    #[test]
    fn generated_keys_differ() {
        let keys: std::collections::HashSet<String> =
            (0..1000).map(|_| LicenseKey::generate("K")).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn hashing_ignores_case_and_surrounding_space() {
        assert_eq!(
            LicenseKey::hash("coditect-abcd-efgh"),
            LicenseKey::hash("  CODITECT-ABCD-EFGH\n")
        );
        assert_eq!(
            LicenseKey::hash("K-0011-ABCD"),
            LicenseKey::hash("k-ooiL-abcd")
        );
        assert_ne!(LicenseKey::hash("A"), LicenseKey::hash("B"));
    }
}
