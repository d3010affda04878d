//! Outgoing email, as rows of the outbox, and the transport that sends it.
//!
//! A change that causes an email (a registration, an invitation) writes the
//! message into the outbox in the same transaction as the change, through
//! its own port (for example the accounts store takes a [`NewMail`] with
//! the change). The mailer subsystem delivers it later. So a request never
//! waits for SMTP, and a crash never loses a message whose cause committed.
//!
//! Two ports live here: [`Outbox`], the durable queue and delivery record
//! (the email log), and [`MailSender`], which renders and hands one message
//! to a mail transport.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;

/// The kinds of email seatwarden sends. Each has a template pair
/// (`<name>.txt`, `<name>.html`) under the template directory; the text
/// template's first line is the subject (`Subject: ...`).
///
/// The template data each kind is enqueued with (the renderer adds
/// `public_url`, the server's public base URL, to every one):
///
/// | kind | data |
/// |---|---|
/// | `verify` | `full_name`, `token` |
/// | `welcome` | `full_name` |
/// | `account_exists` | `full_name` |
/// | `password_reset` | `full_name`, `token` |
/// | `invitation` | `org_name`, `inviter_name`, `role`, `token` |
/// | `account_locked` | `full_name`, `locked_until` |
/// | `license_issued` | `org_name`, `plan_name`, `seats`, `license_key`, `expires_at`, `trial_end` (or null) |
/// | `license_renewed` | `org_name`, `plan_name`, `expires_at`, `reactivated` |
/// | `subscription_cancelled` | `org_name`, `plan_name` |
/// | `payment_failed` | `org_name`, `plan_name`, `urgent`, `grace_ends_at` |
/// | `license_suspended` | `org_name`, `plan_name` |
///
/// Templates use strict undefined: a missing field fails rendering, which
/// the mailer records as a permanent failure.
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
    /// Carries a new subscription's license key.
    LicenseIssued,
    /// A paid invoice renewed (and perhaps reactivated) a license.
    LicenseRenewed,
    /// A subscription ended; its license stopped granting seats.
    SubscriptionCancelled,
    /// A payment failed: a warning (first failure) or urgent (second).
    PaymentFailed,
    /// Repeated failed payments suspended the license.
    LicenseSuspended,
    /// A checkout completed: what was bought, what it costs, when the
    /// first charge comes (the key goes separately, in `LicenseIssued`).
    SubscriptionConfirmed,
    /// A payment brought a suspended license back.
    LicenseReactivated,
    /// A trial ends soon (Stripe's `trial_will_end`, three days before).
    TrialEnding,
    /// A license that nothing renews expires soon.
    ExpiryWarning,
}

impl MailKind {
    pub const ALL: [MailKind; 15] = [
        Self::Verify,
        Self::Welcome,
        Self::AccountExists,
        Self::PasswordReset,
        Self::Invitation,
        Self::AccountLocked,
        Self::LicenseIssued,
        Self::LicenseRenewed,
        Self::SubscriptionCancelled,
        Self::PaymentFailed,
        Self::LicenseSuspended,
        Self::SubscriptionConfirmed,
        Self::LicenseReactivated,
        Self::TrialEnding,
        Self::ExpiryWarning,
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
            Self::LicenseIssued => "license_issued",
            Self::LicenseRenewed => "license_renewed",
            Self::SubscriptionCancelled => "subscription_cancelled",
            Self::PaymentFailed => "payment_failed",
            Self::LicenseSuspended => "license_suspended",
            Self::SubscriptionConfirmed => "subscription_confirmed",
            Self::LicenseReactivated => "license_reactivated",
            Self::TrialEnding => "trial_ending",
            Self::ExpiryWarning => "expiry_warning",
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

    /// A mail that goes out once per `cause` (for example a webhook
    /// event's id): its id is derived from the cause and the kind, and the
    /// outbox queues an id once, so applying the cause again (a crash
    /// before it was settled, a replay) sends nothing more.
    pub fn once(
        cause: &str,
        kind: MailKind,
        to: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\n{cause}", kind.as_str()));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self {
            id: uuid::Builder::from_random_bytes(bytes).into_uuid(),
            ..Self::new(kind, to, data)
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

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for its next attempt, or being sent.
    Pending,
    /// Accepted by the mail transport.
    Sent,
    /// Given up: refused for good, or out of attempts.
    Failed,
}

impl MailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MailStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Sent, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown mail status {s:?}"))
    }
}

/// A message claimed for delivery.
///
/// `attempt` is this delivery attempt's number (1 for the first): each
/// claim counts one, so an attempt cut short by a crash is counted too.
/// `claim` is the claim's fencing token: the calls that settle the message
/// name it, and do nothing once another claim has taken the message over.
#[derive(Clone, PartialEq)]
pub struct QueuedMail {
    pub id: Uuid,
    pub kind: MailKind,
    pub to: String,
    pub data: serde_json::Value,
    pub attempt: u32,
    pub claim: Uuid,
    pub created_at: DateTime<Utc>,
}

/// `data` is left out: it may carry tokens.
impl fmt::Debug for QueuedMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// One entry of the email log: a message's delivery record, without its
/// template data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRecord {
    pub id: Uuid,
    pub kind: MailKind,
    pub recipient: String,
    pub status: MailStatus,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// The last failure, kept after a later success.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// While pending: when the message is next due (while a claim holds
    /// it, when that claim ends). Once settled: when it was.
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// A position in the email log, which is ordered newest first by
/// `(created_at, id)`: the next page starts strictly after it.
///
/// Its text form (`<microseconds since the epoch>_<id>`) is what an HTTP
/// API hands out as an opaque cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl fmt::Display for MailCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }
}

impl std::str::FromStr for MailCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid cursor {s:?}");
        let (micros, id) = s.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

/// Which entries of the email log to list. Empty filters match all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFilter {
    pub status: Option<MailStatus>,
    pub kind: Option<MailKind>,
    /// Exact match on the address as enqueued.
    pub recipient: Option<String>,
    /// Entries strictly older than this (the previous page's `next`).
    pub after: Option<MailCursor>,
    /// At most this many entries (clamped to 1..=1000).
    pub limit: u32,
}

/// A page of the email log, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailPage {
    pub entries: Vec<MailRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<MailCursor>,
}

/// Mail not yet delivered nor given up: what `seatwarden_outbox_pending`
/// and `seatwarden_outbox_oldest_seconds` show, so that mail stuck behind
/// a broken SMTP relay raises an alert rather than silence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub pending: u64,
    /// When the oldest pending message was enqueued.
    pub oldest: Option<DateTime<Utc>>,
}

/// The outbox: the durable queue of email and its delivery record.
///
/// # Contract
///
/// - **Enqueued mail is never lost.** A message is `pending` from its
///   insert (here, or inside another store's transaction through the
///   shared insert) until it is marked `sent` or `failed`.
/// - **Each claim is exclusive.** [`claim`](Outbox::claim) hands a due
///   message to exactly one caller, however many nodes claim at once
///   (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the single writer),
///   and hides it from every other claim until the claim's lease ends.
///   A claimer that dies leaves the message to be claimed again once the
///   lease has passed: delivery is at least once, never zero times.
/// - **Claims are fenced.** Every claim stamps its messages with a fresh
///   token ([`QueuedMail::claim`]) and every settling call names it; once
///   a message was claimed again, settled or released, a call naming an
///   older claim changes nothing and returns `false`.
/// - **Secrets don't outlive delivery.** Marking a message `sent` or
///   `failed` clears its `data` (to `{}`), which may hold single-use
///   tokens; the log keeps kind, recipient, status, attempts and errors.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Enqueues a message on its own, due at once. Changes that cause mail
    /// enqueue it inside their own transaction instead. A duplicate id is
    /// `Conflict`.
    async fn enqueue(&self, mail: &NewMail) -> Result<(), StoreError>;

    /// Claims up to `limit` pending messages due at `now` (oldest due
    /// first) until `lease_until`, counting one attempt on each, in one
    /// atomic step. See the contract on exclusivity.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedMail>, StoreError>;

    /// Records that the claim's attempt delivered the message, and clears
    /// its data. `false` if that claim no longer holds the message.
    async fn mark_sent(&self, id: Uuid, claim: Uuid, at: DateTime<Utc>)
    -> Result<bool, StoreError>;

    /// Records that the claim's attempt failed with `error` and makes the
    /// message due again at `next_attempt_at`. `false` if that claim no
    /// longer holds the message.
    async fn schedule_retry(
        &self,
        id: Uuid,
        claim: Uuid,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives the message up after the claim's attempt failed with `error`
    /// (refused for good, or the last attempt), and clears its data.
    /// `false` if that claim no longer holds the message.
    async fn mark_failed(
        &self,
        id: Uuid,
        claim: Uuid,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Hands back a claimed message that was not tried (its holder is
    /// stopping, or its claim ran short): the attempt is not counted, and
    /// the message is due again at `now`. `false` if that claim no longer
    /// holds the message.
    async fn release(&self, id: Uuid, claim: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// A page of the email log, newest first (by `created_at`, then id).
    async fn email_log(&self, filter: &MailFilter) -> Result<MailPage, StoreError>;

    /// How many messages are pending (claimed or not), and the oldest's
    /// enqueue time.
    async fn backlog(&self) -> Result<OutboxBacklog, StoreError>;
}

/// Why a message could not be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later: the server is unreachable, timed out,
    /// or answered with a temporary (4xx) refusal.
    #[error("{0}")]
    Transient(String),
    /// Never worth another attempt: a permanent (5xx) refusal, an invalid
    /// address, or template data that does not render.
    #[error("{0}")]
    Permanent(String),
}

/// Hands one message to a mail transport.
///
/// Implementations render the message from its kind's templates and data,
/// give it a `Message-ID` derived from its outbox id (so that a message
/// delivered twice after a crash is recognisably the same one), and return
/// once the transport has accepted it. Error texts never carry the data's
/// secrets.
#[async_trait]
pub trait MailSender: Send + Sync + 'static {
    async fn send(&self, mail: &QueuedMail) -> Result<(), SendError>;
}
