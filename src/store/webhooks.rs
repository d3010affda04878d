//! [`WebhookEventStore`](seatwarden_actors::ports::WebhookEventStore) on
//! both backends, written once: [`webhook_store_impl!`] emits the impl for a
//! store type, given the pools it writes and reads through and how a claim
//! locks its rows (as the outbox does: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; nothing on SQLite, whose single writer serializes claims).
//!
//! Every settling write is fenced by the claim's token: a claimer whose
//! lease ended (and whose event another node claimed since), or whose event
//! was replayed, changes nothing.

use chrono::{DateTime, Utc};
use seatwarden_actors::ports::{
    ClaimedEvent, NewWebhookEvent, StoreError, WebhookEvent, WebhookEventPage, WebhookEventQuery,
    WebhookStatus,
};
use sqlx::FromRow;
use uuid::Uuid;

use super::{Arg, Backend, DbTime, DbUuid, Query, QueryAs, db_error};

/// The most events one page lists.
const MAX_PAGE: u32 = 500;

macro_rules! webhook_columns {
    () => {
        "id, kind, created, payload, status, attempts, last_error, next_attempt_at, \
         claim_token, received_at, processed_at"
    };
}
pub(crate) use webhook_columns;

/// The claim: one more attempt, `processing`, due again when the lease
/// ends, a fresh token. Bind now, lease end, limit, token.
macro_rules! claim_webhooks_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_events SET status = 'processing', attempts = attempts + 1, \
             next_attempt_at = $2, claim_token = $4 \
             WHERE id IN (SELECT id FROM webhook_events WHERE next_attempt_at IS NOT NULL \
             AND next_attempt_at <= $1 ORDER BY created, id LIMIT $3",
            $lock,
            ") RETURNING ",
            $crate::store::webhooks::webhook_columns!()
        )
    };
}
pub(crate) use claim_webhooks_sql;

const RECORD: &str = "INSERT INTO webhook_events (id, kind, created, payload, status, attempts, \
     last_error, next_attempt_at, received_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8) \
     ON CONFLICT (id) DO NOTHING";
const GET: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhook_events WHERE id = $1"
);
const MARK_PROCESSED: &str = "UPDATE webhook_events SET status = 'processed', processed_at = $3, \
     last_error = NULL, next_attempt_at = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'processing'";
const MARK_FAILED: &str = "UPDATE webhook_events SET status = 'failed', last_error = $3, \
     next_attempt_at = $4, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'processing'";
/// The untried attempt is given back, so a release costs no attempt.
const RELEASE: &str = "UPDATE webhook_events SET status = 'pending', attempts = attempts - 1, \
     next_attempt_at = $3, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'processing'";
const REPLAY: &str = "UPDATE webhook_events SET status = 'pending', next_attempt_at = $2, \
     claim_token = NULL WHERE id = $1";
const LIST: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhook_events WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) \
     AND ($3 IS NULL OR (received_at, id) < ($3, $4)) \
     ORDER BY received_at DESC, id DESC LIMIT $5"
);

pub(crate) fn record<DB: Backend>(e: &NewWebhookEvent) -> Query<DB> {
    let (status, due) = match e.unreadable {
        None => (WebhookStatus::Pending, Some(DbTime(e.received_at))),
        Some(_) => (WebhookStatus::Failed, None),
    };
    sqlx::query(RECORD)
        .arg(e.id.clone())
        .arg(e.kind.clone())
        .arg(DbTime(e.created))
        .arg(e.payload.clone())
        .arg(status.as_str().to_owned())
        .arg(e.unreadable.clone())
        .arg(due)
        .arg(DbTime(e.received_at))
}

pub(crate) fn get<DB: Backend>(id: &str) -> QueryAs<DB, WebhookRow>
where
    WebhookRow: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, WebhookRow>(GET).arg(id.to_owned())
}

pub(crate) fn mark_processed<DB: Backend>(id: &str, claim: Uuid, at: DateTime<Utc>) -> Query<DB> {
    sqlx::query(MARK_PROCESSED)
        .arg(id.to_owned())
        .arg(DbUuid(claim))
        .arg(DbTime(at))
}

pub(crate) fn mark_failed<DB: Backend>(
    id: &str,
    claim: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Query<DB> {
    sqlx::query(MARK_FAILED)
        .arg(id.to_owned())
        .arg(DbUuid(claim))
        .arg(error.to_owned())
        .arg(retry_at.map(DbTime))
}

pub(crate) fn release<DB: Backend>(id: &str, claim: Uuid, now: DateTime<Utc>) -> Query<DB> {
    sqlx::query(RELEASE)
        .arg(id.to_owned())
        .arg(DbUuid(claim))
        .arg(DbTime(now))
}

pub(crate) fn replay<DB: Backend>(id: &str, now: DateTime<Utc>) -> Query<DB> {
    sqlx::query(REPLAY).arg(id.to_owned()).arg(DbTime(now))
}

pub(crate) fn list<DB: Backend>(q: &WebhookEventQuery) -> QueryAs<DB, WebhookRow>
where
    WebhookRow: for<'r> FromRow<'r, DB::Row>,
{
    let (before_at, before_id) = match &q.before {
        Some((at, id)) => (Some(DbTime(*at)), Some(id.clone())),
        None => (None, None),
    };
    sqlx::query_as::<DB, WebhookRow>(LIST)
        .arg(q.status.map(|s| s.as_str().to_owned()))
        .arg(q.kind.clone())
        .arg(before_at)
        .arg(before_id)
        .arg(i64::from(page_size(q.limit)))
}

fn page_size(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// One page of [`list`], with its cursor when the page is full.
pub(crate) fn page(
    fetched: Result<Vec<WebhookRow>, sqlx::Error>,
    q: &WebhookEventQuery,
) -> Result<WebhookEventPage, StoreError> {
    let items: Vec<WebhookEvent> = super::all(fetched)?;
    let next = if items.len() as u32 >= page_size(q.limit) {
        items.last().map(|e| (e.received_at, e.id.clone()))
    } else {
        None
    };
    Ok(WebhookEventPage { items, next })
}

/// Claimed rows, oldest event first (a claim's `RETURNING` has no order).
pub(crate) fn claimed(
    fetched: Result<Vec<WebhookRow>, sqlx::Error>,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    let mut claimed = Vec::new();
    for row in fetched.map_err(db_error)? {
        let token = row.claim_token.as_ref().map(|t| t.0).ok_or_else(|| {
            StoreError::Corrupt(format!("claimed webhook event {} has no token", row.id))
        })?;
        claimed.push(ClaimedEvent {
            event: WebhookEvent::try_from(row)?,
            claim: token,
        });
    }
    claimed.sort_by(|a, b| (a.event.created, &a.event.id).cmp(&(b.event.created, &b.event.id)));
    Ok(claimed)
}

#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    id: String,
    kind: String,
    created: DateTime<Utc>,
    payload: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    claim_token: Option<DbUuid>,
    received_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
}

impl TryFrom<WebhookRow> for WebhookEvent {
    type Error = StoreError;

    fn try_from(r: WebhookRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("unreadable webhook event {}: {what}", r.id));
        let status = r.status.parse().map_err(|_| corrupt("status"))?;
        let attempts = u32::try_from(r.attempts).map_err(|_| corrupt("attempts"))?;
        Ok(WebhookEvent {
            id: r.id,
            kind: r.kind,
            created: r.created,
            payload: r.payload,
            status,
            attempts,
            last_error: r.last_error,
            next_attempt_at: r.next_attempt_at,
            received_at: r.received_at,
            processed_at: r.processed_at,
        })
    }
}

/// `impl WebhookEventStore for $store`: writes through `self.$writer`,
/// reads through `self.$reader`, claims with `$lock` appended to the
/// claim's row selection.
macro_rules! webhook_store_impl {
    ($store:ty, $db:ty, writer = $writer:ident, reader = $reader:ident, lock = $lock:literal) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::WebhookEventStore for $store {
            async fn record(
                &self,
                event: &seatwarden_actors::ports::NewWebhookEvent,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::webhooks::record::<$db>(event)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn get(
                &self,
                id: &str,
            ) -> Result<
                Option<seatwarden_actors::ports::WebhookEvent>,
                seatwarden_actors::ports::StoreError,
            > {
                $crate::store::one(
                    $crate::store::webhooks::get::<$db>(id)
                        .fetch_optional(&self.$reader)
                        .await,
                )
            }

            async fn claim(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<
                Vec<seatwarden_actors::ports::ClaimedEvent>,
                seatwarden_actors::ports::StoreError,
            > {
                use $crate::store::Arg;
                const CLAIM: &str = $crate::store::webhooks::claim_webhooks_sql!($lock);
                $crate::store::webhooks::claimed(
                    sqlx::query_as::<_, $crate::store::webhooks::WebhookRow>(CLAIM)
                        .arg($crate::store::DbTime(now))
                        .arg($crate::store::DbTime(lease_until))
                        .arg(i64::from(limit))
                        .arg($crate::store::DbUuid(uuid::Uuid::new_v4()))
                        .fetch_all(&self.$writer)
                        .await,
                )
            }

            async fn mark_processed(
                &self,
                id: &str,
                claim: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::webhooks::mark_processed::<$db>(id, claim, at)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn mark_failed(
                &self,
                id: &str,
                claim: uuid::Uuid,
                error: &str,
                retry_at: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::webhooks::mark_failed::<$db>(id, claim, error, retry_at)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn release(
                &self,
                id: &str,
                claim: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::webhooks::release::<$db>(id, claim, now)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn replay(
                &self,
                id: &str,
                now: chrono::DateTime<chrono::Utc>,
                audit: &seatwarden_actors::domain::ActionAudit,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let done = $crate::store::webhooks::replay::<$db>(id, now)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::db_error)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                $crate::store::accounts::insert_action::<$db>(audit)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::db_error)?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(true)
            }

            async fn list(
                &self,
                query: &seatwarden_actors::ports::WebhookEventQuery,
            ) -> Result<
                seatwarden_actors::ports::WebhookEventPage,
                seatwarden_actors::ports::StoreError,
            > {
                $crate::store::webhooks::page(
                    $crate::store::webhooks::list::<$db>(query)
                        .fetch_all(&self.$reader)
                        .await,
                    query,
                )
            }
        }
    };
}

pub(crate) use webhook_store_impl;
