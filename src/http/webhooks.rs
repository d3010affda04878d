//! Stripe's webhooks: the endpoint that receives them, and the platform
//! administrator's view of what was received.
//!
//! The endpoint does as little as it can before it answers: it verifies the
//! `Stripe-Signature` and records the event in the inbox (one indexed
//! insert), then kicks this node's webhooks subsystem, which processes it
//! after the answer has gone. So the answer never waits for the event's
//! effects, and an event Stripe was told we have is durable.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::domain::{AuditEvent, ClientInfo};
use seatwarden_actors::ports::{NewWebhookEvent, WebhookEvent, WebhookEventQuery, WebhookStatus};

use super::admin::{PlatformAdmin, admin_audit, platform_admin};
use super::openapi::{ErrorBody, PayloadTooLarge, Unauthorized, Unavailable};
use super::paging::{self, PageBody};
use super::{ApiError, AppContext, client, raw_body, with_ctx};
use crate::stripe::webhook::{WebhookRejection, verify};
use crate::telemetry::WEBHOOKS_REFUSED;

/// The largest event body accepted. Stripe's events are a few kilobytes;
/// an invoice with many lines stays well under this.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// What the endpoint answers a verified delivery.
#[derive(Debug, Serialize, ToSchema)]
struct Received {
    /// Always `true`: the event is recorded.
    received: bool,
    /// `true` when this event id had been recorded before (a redelivery):
    /// nothing changed.
    duplicate: bool,
}

/// POST /api/v1/webhooks/stripe
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/stripe",
    tag = "billing",
    operation_id = "stripe_webhook",
    summary = "Receive a Stripe event",
    description = "Stripe calls this with each event of the endpoint's subscribed types. The `Stripe-Signature` header must carry a `v1` HMAC-SHA256 of `t.body` under `stripe.webhook_secret` (or `stripe.previous_webhook_secret`), with `t` within 300 s. A verified event is recorded by its id before the 2xx goes back, and processed afterwards, once; a redelivery is answered 2xx and changes nothing.",
    request_body(content = String, content_type = "application/json", description = "The event, exactly as Stripe sent it."),
    params(("Stripe-Signature" = String, Header, description = "`t=<unix>,v1=<hex>[,v1=<hex>...]`")),
    responses(
        (status = 200, description = "Recorded (or recorded before).", body = Received),
        (status = 400, description = "`invalid_signature` (missing, malformed, not matching, or a timestamp outside the tolerance) or `invalid_event` (signed, but no event): nothing is recorded.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, description = "`billing_disabled`: no `stripe.webhook_secret` is configured; or `store_unavailable`, to be retried.", body = ErrorBody),
    )
)]
pub fn stripe_webhook(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "webhooks" / "stripe")
        .and(warp::post())
        .and(warp::header::optional::<String>("stripe-signature"))
        .and(raw_body(MAX_EVENT_BYTES))
        .and(with_ctx(ctx))
        .and_then(
            |signature: Option<String>, body: Bytes, ctx: AppContext| async move {
                receive(&ctx, signature.as_deref().unwrap_or(""), &body)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn receive(ctx: &AppContext, signature: &str, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.stripe_webhook_secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "billing_disabled",
            "Stripe webhooks are not configured on this server",
        ));
    }
    let secrets: Vec<_> = ctx.stripe_webhook_secrets.iter().collect();
    let now = Utc::now();
    let verified = verify(body, signature, &secrets, now).map_err(|rejection| {
        // Neither the body nor the header is logged: either may be an
        // attacker's, and a genuine body carries customers' details.
        let reason = rejection_reason(&rejection);
        metrics::counter!(WEBHOOKS_REFUSED, "reason" => reason).increment(1);
        tracing::warn!(reason, bytes = body.len(), "refused a webhook delivery");
        match rejection {
            WebhookRejection::MalformedPayload | WebhookRejection::NotAnEvent(_) => {
                ApiError::bad_request("invalid_event", rejection.to_string())
            }
            _ => ApiError::bad_request("invalid_signature", rejection.to_string()),
        }
    })?;
    let unreadable = verified.event.as_ref().err().cloned();
    let event = NewWebhookEvent {
        id: verified.id.to_string(),
        kind: verified.event_type.clone(),
        created: Utc
            .timestamp_opt(verified.created, 0)
            .single()
            .unwrap_or(now),
        // verify() read it as UTF-8 already.
        payload: String::from_utf8_lossy(body).into_owned(),
        received_at: now,
        unreadable,
    };
    if let Some(reason) = &event.unreadable {
        tracing::error!(event_id = %event.id, kind = %event.kind, %reason,
            "a verified webhook event does not parse; recorded as failed, replay it after an upgrade");
    }
    let fresh = ctx.store.record(&event).await?;
    if fresh && event.unreadable.is_some() {
        // Recorded as failed without a processing attempt: counted here,
        // so the webhook-failure alert sees it too.
        metrics::counter!(seatwarden_actors::metrics::WEBHOOKS_FAILED, "kind" => event.kind.clone())
            .increment(1);
    }
    if fresh {
        ctx.coordinator.kick_webhooks();
    }
    tracing::info!(event_id = %event.id, kind = %event.kind, duplicate = !fresh, "webhook event received");
    let body = Received {
        received: true,
        duplicate: !fresh,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// The `reason` label of a refusal: a fixed set.
fn rejection_reason(r: &WebhookRejection) -> &'static str {
    match r {
        WebhookRejection::NoSecret => "no_secret",
        WebhookRejection::MalformedHeader => "malformed_header",
        WebhookRejection::BadSignature => "bad_signature",
        WebhookRejection::Stale { .. } => "stale",
        WebhookRejection::MalformedPayload => "malformed_payload",
        WebhookRejection::NotAnEvent(_) => "not_an_event",
    }
}

// ---------------------------------------------------------------------------
// Administration

/// One recorded event, without its payload (which carries customers'
/// details).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventEntry {
    id: String,
    /// The event type, e.g. `invoice.paid`.
    #[serde(rename = "type")]
    kind: String,
    /// `pending`, `processing`, `processed` or `failed`.
    status: String,
    attempts: u32,
    last_error: Option<String>,
    /// When Stripe created the event.
    created: DateTime<Utc>,
    received_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    processed_at: Option<DateTime<Utc>>,
}

impl From<&WebhookEvent> for EventEntry {
    fn from(e: &WebhookEvent) -> Self {
        Self {
            id: e.id.clone(),
            kind: e.kind.clone(),
            status: e.status.as_str().to_owned(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            created: e.created,
            received_at: e.received_at,
            next_attempt_at: e.next_attempt_at,
            processed_at: e.processed_at,
        }
    }
}

/// The most events one page lists.
const MAX_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// `pending`, `processing`, `processed` or `failed`.
    status: Option<String>,
    /// An event type, e.g. `invoice.paid`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// 1 to 200; 50 when absent.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl EventQuery {
    fn query(&self) -> Result<WebhookEventQuery, ApiError> {
        let bad = |code: &'static str, message: &str| ApiError::bad_request(code, message);
        let status = self
            .status
            .as_deref()
            .map(str::parse::<WebhookStatus>)
            .transpose()
            .map_err(|_| {
                bad(
                    "invalid_status",
                    "status must be pending, processing, processed or failed",
                )
            })?;
        if self
            .kind
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 100)
        {
            return Err(bad("invalid_type", "type must be 1 to 100 characters"));
        }
        let limit = match &self.limit {
            None => 50,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad("invalid_limit", "limit must be 1 to 200"))?,
        };
        let before = self
            .cursor
            .as_deref()
            .map(parse_cursor)
            .transpose()
            .map_err(|_| bad("invalid_cursor", "cursor is not one this server gave out"))?;
        Ok(WebhookEventQuery {
            status,
            kind: self.kind.clone(),
            limit,
            before,
        })
    }
}

/// `<microseconds since the epoch>.<event id>`.
fn cursor((at, id): &(DateTime<Utc>, String)) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

fn parse_cursor(s: &str) -> Result<(DateTime<Utc>, String), ()> {
    let (micros, id) = s.split_once('.').ok_or(())?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(drop)?).ok_or(())?;
    if id.is_empty() || id.len() > 255 {
        return Err(());
    }
    Ok((at, id.to_owned()))
}

/// GET /api/v1/admin/webhook-events?status=&type=&limit=&cursor=
#[utoipa::path(
    get,
    path = "/api/v1/admin/webhook-events",
    tag = "admin",
    operation_id = "admin_list_webhook_events",
    summary = "Received webhook events",
    description = "A platform administrator's access token. Every recorded event, newest received first, with where its processing stands; never its payload.",
    params(EventQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events.", body = PageBody<EventEntry>),
        (status = 400, description = "`invalid_query` (an unknown parameter), `invalid_status`, `invalid_type`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_events(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "webhook-events")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(paging::query::<EventQuery>())
        .and(with_ctx(ctx))
        .and_then(
            |_: PlatformAdmin, q: EventQuery, ctx: AppContext| async move {
                let list = async {
                    let query = q.query()?;
                    let page = ctx.store.list(&query).await?;
                    let items: Vec<EventEntry> = page.items.iter().map(EventEntry::from).collect();
                    let next = page.next.as_ref().map(cursor);
                    Ok::<_, ApiError>(
                        warp::reply::json(&json!({"items": items, "next_cursor": next}))
                            .into_response(),
                    )
                };
                list.await.map_err(warp::reject::custom)
            },
        )
}

/// POST /api/v1/admin/webhook-events/{id}/replay
#[utoipa::path(
    post,
    path = "/api/v1/admin/webhook-events/{id}/replay",
    tag = "admin",
    operation_id = "admin_replay_webhook_event",
    summary = "Process a webhook event again",
    description = "A platform administrator's access token. Makes the event due at once, whatever its status (a failed one after a fix, or a processed one: processing is idempotent), and writes a `WEBHOOK_REPLAYED` audit entry.",
    params(("id" = String, Path, description = "The event id, `evt_...`.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event, due now.", body = EventEntry),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator.", body = ErrorBody),
        (status = 404, description = "`webhook_event_not_found`.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn replay_event(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "webhook-events" / String / "replay")
        .and(warp::post())
        .and(platform_admin(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, admin: PlatformAdmin, client: ClientInfo, ctx: AppContext| async move {
                replay(&ctx, &id, admin, client)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn replay(
    ctx: &AppContext,
    id: &str,
    admin: PlatformAdmin,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("webhook_event_not_found", "no such webhook event");
    if id.is_empty() || id.len() > 255 {
        return Err(not_found());
    }
    let mut audit = admin_audit(AuditEvent::WebhookReplayed, admin, client);
    audit.detail = Some(format!("event={id}"));
    if !ctx.store.replay(id, Utc::now(), &audit).await? {
        return Err(not_found());
    }
    ctx.coordinator.kick_webhooks();
    let event = ctx.store.get(id).await?.ok_or_else(not_found)?;
    let body: Value = serde_json::to_value(EventEntry::from(&event)).unwrap_or_default();
    Ok(warp::reply::json(&body).into_response())
}

/// Every route of this module.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    stripe_webhook(ctx.clone())
        .or(list_events(ctx.clone()))
        .unify()
        .or(replay_event(ctx))
        .unify()
        .boxed()
}
