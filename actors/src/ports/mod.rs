//! The ports the coordinator needs from the outside world, one trait per
//! role.
//!
//! Each trait states its contract on its methods; every implementation must
//! pass the shared conformance suite in the root crate's `tests/`. The
//! coordinator holds them as `Arc<dyn Trait>`, so only the composition root
//! names a concrete backend.
//!
//! - [`LicenseStore`]: organizations and licenses (durable, rarely written).
//! - [`SessionStore`]: session records and the audit log (durable history).
//! - [`AccountStore`]: users, credentials and memberships.
//! - [`OrgStore`]: what an organization's people manage (members,
//!   invitations, API keys) and paged reads of its licenses, sessions and
//!   audit log.
//! - [`SeatLedger`]: the live leases (the single source of truth for who
//!   holds a seat right now).
//! - [`Outbox`]: email waiting to be sent and its delivery record;
//!   [`MailSender`]: the transport that sends one message.
//! - [`MachineStore`]: machines activated on licenses.
//! - [`SubscriptionStore`]: subscriptions, the licenses they pay for, and
//!   the organizations' customers at the payment provider.
//! - [`WebhookEventStore`]: verified incoming webhook events, claimed and
//!   processed once each by the webhooks subsystem.
//! - [`DeadlineStore`]: billing deadlines (grace ends, expiries, trial
//!   ends), fired once each by the renewals subsystem.
//! - [`AdminStore`]: the platform's directory (users, organizations and
//!   licenses across tenants) and its numbers, for platform administrators.
//! - [`PlanStore`]: the plan catalogue (seeded from configuration, edited
//!   by platform administrators).
//! - [`KeyStore`]: the seat-signing key set (the active key and the older
//!   ones that still verify), sealed private halves only.
//! - [`PaymentGateway`]: the payment provider's outbound calls (customers,
//!   checkout, customer portal).

mod accounts;
mod admin;
mod billing;
mod deadlines;
mod keys;
mod ledger;
mod licenses;
mod machines;
mod orgs;
mod outbox;
mod payments;
mod plans;
mod sessions;
mod webhooks;

pub use accounts::{AccountStore, MailFor, RefreshOutcome};
pub use admin::{AdminStore, Analytics, LicenseFilter, Page, PageRequest};
pub use billing::{StartOutcome, SubscriptionStore};
pub use deadlines::{
    ClaimedDeadline, Deadline, DeadlineEffect, DeadlineHandler, DeadlineKind, DeadlineStore,
};
pub use keys::{KeyStore, Retirement, StoredKey};
pub use ledger::{
    BeatOutcome, Freed, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, LineRequest, LineRules,
    Place, SeatLedger, SeedLease, Throttle, TicketPoll,
};
pub use licenses::{LicenseChange, LicenseStore};
pub use machines::{Activation, Deactivation, MachineStore};
pub use orgs::OrgStore;
pub use outbox::{
    MailCursor, MailFilter, MailKind, MailPage, MailRecord, MailSender, MailStatus, NewMail,
    Outbox, OutboxBacklog, QueuedMail, SendError,
};
pub use payments::{
    CheckoutRequest, CheckoutSession, CheckoutSessionId, CustomerId, EventId, GatewayError,
    IdempotencyKey, InvalidIdempotencyKey, InvoiceId, MAX_IDEMPOTENCY_KEY_LEN, NewCustomer,
    PaymentGateway, PriceId, SubscriptionId, SubscriptionSnapshot,
};
pub use plans::{PlanChange, PlanStore};
pub use sessions::{EndOutcome, SessionStore, SweepCandidate};
pub use webhooks::{
    ClaimedEvent, NewWebhookEvent, ProcessError, WebhookEvent, WebhookEventPage, WebhookEventQuery,
    WebhookEventStore, WebhookProcessor, WebhookStatus,
};

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A referenced row (for example the organization of a new license) does
    /// not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule was broken (for example a duplicate session id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed; the message must not
    /// contain credentials. The caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row could not be read back (a value outside its domain): a bug or
    /// a corrupted database, never worth a retry.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Every durable role, for callers (the composition root, the CLI, tests)
/// that use one backend for all of them.
pub trait Store:
    LicenseStore
    + SessionStore
    + AccountStore
    + OrgStore
    + Outbox
    + MachineStore
    + AdminStore
    + WebhookEventStore
    + SubscriptionStore
    + PlanStore
    + DeadlineStore
    + KeyStore
{
}
impl<T> Store for T where
    T: LicenseStore
        + SessionStore
        + AccountStore
        + OrgStore
        + Outbox
        + MachineStore
        + AdminStore
        + WebhookEventStore
        + SubscriptionStore
        + PlanStore
        + DeadlineStore
        + KeyStore
        + ?Sized
{
}
