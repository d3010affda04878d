//! Incoming webhook events (Stripe's), as durable rows: the inbox.
//!
//! The HTTP layer verifies an event's signature and records it here before
//! it answers 2xx, so an event Stripe was told we have can never be lost.
//! The webhooks subsystem then claims due events, processes them and settles
//! each one: processed, scheduled for a retry with backoff, or failed for
//! good. Claims work like the outbox's: a claim stamps its rows with a fresh
//! token and a lease, so that several nodes take disjoint sets, a crashed
//! claimer's events become due again when its lease ends, and only the
//! current claim may settle a row.
//!
//! Stripe delivers an event more than once; the event id is the row's key,
//! so a redelivery records nothing and processing stays once per event.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::StoreError;
use crate::domain::ActionAudit;

/// Where an event stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Waiting for its first attempt.
    Pending,
    /// Claimed by a node, being processed (or its claimer crashed and the
    /// claim's lease has not ended yet).
    Processing,
    /// Its effects are applied.
    Processed,
    /// The last attempt failed: retried at `next_attempt_at` if set, else
    /// given up (an unreadable event, or out of attempts) until replayed.
    Failed,
}

impl WebhookStatus {
    pub const ALL: [WebhookStatus; 4] = [
        Self::Pending,
        Self::Processing,
        Self::Processed,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for WebhookStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown webhook status {s:?}"))
    }
}

/// A verified event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhookEvent {
    /// The provider's event id (`evt_...`), unique.
    pub id: String,
    /// The event type, e.g. `invoice.paid`.
    pub kind: String,
    /// When the provider created the event.
    pub created: DateTime<Utc>,
    /// The verified body, byte for byte as received.
    pub payload: String,
    pub received_at: DateTime<Utc>,
    /// Set when the body's signature is good but its object can't be read
    /// (for example another API version's shape): the event is recorded as
    /// failed with this reason, never processed automatically, and kept so
    /// that it can be replayed once the server reads it.
    pub unreadable: Option<String>,
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    pub kind: String,
    pub created: DateTime<Utc>,
    pub payload: String,
    pub status: WebhookStatus,
    /// Attempts started so far (claims).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the event is next due: its next attempt, or the end of the
    /// current claim's lease. `None` once processed or given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// An event claimed for processing, with the token that settles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedEvent {
    pub event: WebhookEvent,
    pub claim: Uuid,
}

/// Which events to list, newest received first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookEventQuery {
    pub status: Option<WebhookStatus>,
    pub kind: Option<String>,
    pub limit: u32,
    /// The last event of the previous page: `(received_at, id)`.
    pub before: Option<(DateTime<Utc>, String)>,
}

/// A page of events; `next` names the last one when more may follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEventPage {
    pub items: Vec<WebhookEvent>,
    pub next: Option<(DateTime<Utc>, String)>,
}

/// The durable inbox of webhook events. Contract shared by every
/// implementation (checked by `tests/webhook_events_conformance.rs`):
#[async_trait]
pub trait WebhookEventStore: Send + Sync + 'static {
    /// Records a verified event once. Returns `true` if it was new, `false`
    /// if an event with this id was already recorded (which is left exactly
    /// as it was, whatever this call carries). A new readable event is
    /// `pending` and due at once; an unreadable one is `failed` with its
    /// reason and not due.
    async fn record(&self, event: &NewWebhookEvent) -> Result<bool, StoreError>;

    /// One event by id.
    async fn get(&self, id: &str) -> Result<Option<WebhookEvent>, StoreError>;

    /// Claims up to `limit` events due at `now` (pending, failed with a
    /// retry due, or processing under a claim whose lease has ended),
    /// oldest `created` first. Each becomes `processing`, counts one more
    /// attempt, is due again at `lease_until` (so a crashed claimer's events
    /// come back), and gets a fresh claim token. Concurrent claims, from any
    /// node, never return the same event.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Settles a claimed event as processed (clearing its error). Returns
    /// `false`, changing nothing, if `claim` is no longer the event's claim.
    async fn mark_processed(
        &self,
        id: &str,
        claim: Uuid,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Settles a claimed event as failed with `error`, due again at
    /// `retry_at`, or never (given up) when `None`. Returns `false`,
    /// changing nothing, if `claim` is no longer the event's claim.
    async fn mark_failed(
        &self,
        id: &str,
        claim: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;

    /// Hands a claimed, unprocessed event back: pending, due at `now`, its
    /// attempt given back. Returns `false`, changing nothing, if `claim` is
    /// no longer the event's claim.
    async fn release(&self, id: &str, claim: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Makes an event pending and due at `now` again, whatever its status,
    /// and voids any current claim (its settle calls then return `false`).
    /// Attempts are kept. Writes `audit` (the operator's action) in the
    /// same transaction. Returns `false`, writing nothing, if no such event.
    async fn replay(
        &self,
        id: &str,
        now: DateTime<Utc>,
        audit: &ActionAudit,
    ) -> Result<bool, StoreError>;

    /// Events, newest received first, filtered and paged by `query`.
    async fn list(&self, query: &WebhookEventQuery) -> Result<WebhookEventPage, StoreError>;
}

/// Why processing an event failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Worth another attempt later: an outage of the store or of the
    /// payment provider. Retried with backoff, up to the attempt limit.
    #[error("{0}")]
    Retry(String),
    /// Never worth retrying as it is (an event that can't be applied, such
    /// as one naming an unknown plan): failed at once, kept, and replayable
    /// by an operator once the cause is fixed.
    #[error("{0}")]
    Permanent(String),
}

/// Applies one recorded event's effects.
///
/// **Idempotent:** an event can be processed more than once (a crash
/// between its effects and its settle, a replay, or a redelivery under a
/// new event id describing the same change) and must then change nothing
/// more. Implementations compare the event's object with what is stored
/// (period ends, `created` times) rather than trusting arrival order.
#[async_trait]
pub trait WebhookProcessor: Send + Sync + 'static {
    async fn process(&self, event: &WebhookEvent) -> Result<(), ProcessError>;
}
