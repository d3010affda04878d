//! License operations: acquire, borrow, heartbeat and release a seat, wait
//! in a license's line for one, and the keys clients verify seat tokens
//! with.

use chrono::{DateTime, SubsecRound, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warp::Filter;
use warp::reply::{Reply, Response};

use std::sync::Arc;
use std::time::Duration;

use utoipa::ToSchema;

use seatwarden_actors::domain::{ClientInfo, LicenseId, LicenseKey, OrgId, SessionId, TicketId};
use seatwarden_actors::{
    Acquired, Admission, CoordinatorError, Queued, SeatRequest, SessionRef, token_expiry,
};

use super::openapi::{BadRequest, ErrorBody, JwkSet, PayloadTooLarge, RateLimited, Unavailable};
use super::{ApiError, AppContext, client, json_body, with_ctx};
use crate::ratelimit::{Limit, RateKey};
use crate::signing::SeatClaims;
use crate::telemetry::{ACQUIRES, HEARTBEATS, RATE_LIMITED, RELEASES};

const MAX_KEY_LEN: usize = 128;
const MAX_HARDWARE_ID_CHARS: usize = 256;
const MAX_METADATA_BYTES: usize = 4096;
/// Limits of the optional client facts, in characters.
const MAX_CLIENT_VERSION_CHARS: usize = 64;
const MAX_OS_CHARS: usize = 128;
/// A DNS name is at most 253 characters.
const MAX_HOSTNAME_CHARS: usize = 253;

/// The body of an acquire request. A field we don't know is a 400
/// `invalid_body`: a misspelled optional field (`hostnmae`) would
/// otherwise be dropped without a word.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The license key, as issued (case and `0`/`O` confusions are forgiven).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[!-~]+$",
        example = "CODITECT-D5RA-9NWH-CKX0-TH7D-1WP4"
    )]
    license_key: String,
    /// Identifies the machine: 1 to 256 printable characters.
    #[schema(min_length = 1, max_length = 256)]
    hardware_id: String,
    /// Optional, free-form client facts kept with the session (at most 4
    /// KiB of JSON together with the three below).
    #[serde(default)]
    #[schema(additional_properties)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    #[schema(max_length = 64)]
    client_version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 128)]
    os: Option<String>,
    #[serde(default)]
    #[schema(max_length = 253)]
    hostname: Option<String>,
    /// On a full license, wait in its line: 202 with a ticket instead of
    /// 409.
    #[serde(default)]
    wait: bool,
    /// Claim the seat held for this ticket (from a 202). Anyone else's
    /// acquire on the license meanwhile gets 409.
    #[serde(default)]
    #[schema(max_length = 200)]
    queue_ticket: Option<String>,
}

/// The body of a borrow: an acquire's fields (no waiting in line) and how
/// many hours the seat is borrowed for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BorrowRequest {
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    license_key: String,
    #[schema(min_length = 1, max_length = 256)]
    hardware_id: String,
    /// Whole hours, 1 to the license's `max_borrow_hours`.
    #[schema(minimum = 1, maximum = 8784)]
    hours: u32,
    #[serde(default)]
    #[schema(additional_properties)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    #[schema(max_length = 64)]
    client_version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 128)]
    os: Option<String>,
    #[serde(default)]
    #[schema(max_length = 253)]
    hostname: Option<String>,
}

/// A place in a license's line: the answer to an acquire that waits, and
/// to a poll of its ticket.
#[derive(Debug, Serialize, ToSchema)]
struct QueueResponse {
    /// Poll it at `GET /api/v1/licenses/queue/{ticket}`, claim the seat
    /// with it; it is bound to the machine that joined.
    queue_ticket: String,
    /// 1 is the head of the line.
    position: u32,
    /// `waiting`, or `ready` while a seat is held for this ticket (claim
    /// it with an acquire carrying `queue_ticket` before
    /// `hold_expires_at`).
    #[schema(example = "waiting")]
    state: &'static str,
    /// Poll at least this often: a ticket that misses three polls leaves
    /// the line.
    poll_after_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_expires_at: Option<DateTime<Utc>>,
    /// How many tickets are in line.
    queue_length: u32,
}

#[derive(Debug, Serialize, ToSchema)]
struct AcquireResponse {
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    #[schema(value_type = uuid::Uuid)]
    license_id: LicenseId,
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    hardware_id: String,
    /// When the lease lapses unless heartbeated.
    expires_at: DateTime<Utc>,
    heartbeat_interval_secs: u64,
    seats_used: u32,
    max_seats: u32,
    tier: String,
    features: Vec<String>,
    /// The seat token (RS256 JWT): present it to heartbeat and release,
    /// and verify it offline with the JWKS.
    token: String,
    token_expires_at: DateTime<Utc>,
    /// A borrowed seat: no heartbeats are needed until it ends here (also
    /// `expires_at` and `token_expires_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    borrowed_until: Option<DateTime<Utc>>,
}

/// A hardware id is 1 to 256 printable characters.
pub(super) fn validate_hardware_id(id: &str) -> Result<(), ApiError> {
    let count = id.chars().count();
    if count == 0 || count > MAX_HARDWARE_ID_CHARS {
        return Err(ApiError::bad_request(
            "invalid_hardware_id",
            format!("hardware_id must be 1 to {MAX_HARDWARE_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) || id.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_hardware_id",
            "hardware_id must consist of printable characters",
        ));
    }
    Ok(())
}

pub(super) fn validate_license_key(key: &str) -> Result<(), ApiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_license_key",
            format!("license_key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// An optional client fact (`client_version`, `os`, `hostname`): at most
/// `max` characters, none of them control characters.
pub(super) fn validate_fact(
    value: Option<&str>,
    max: usize,
    code: &'static str,
    name: &str,
) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Ok(());
    };
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            code,
            format!("{name} must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

/// What acquire and borrow share: the license key, the machine and the
/// optional client facts.
struct SeatAsk {
    license_key: String,
    hardware_id: String,
    metadata: Option<Map<String, Value>>,
    client_version: Option<String>,
    os: Option<String>,
    hostname: Option<String>,
}

impl AcquireRequest {
    /// Splits the request into what it shares with a borrow and how it
    /// asks for the seat (waiting, or with a ticket).
    fn split(self, ctx: &AppContext) -> Result<(SeatAsk, SeatRequest), ApiError> {
        let ticket = self
            .queue_ticket
            .as_deref()
            .map(|t| QueueTicket::open(ctx, t).map(|t| t.ticket))
            .transpose()?;
        let ask = SeatAsk {
            license_key: self.license_key,
            hardware_id: self.hardware_id,
            metadata: self.metadata,
            client_version: self.client_version,
            os: self.os,
            hostname: self.hostname,
        };
        let request = SeatRequest {
            wait: self.wait,
            ticket,
            borrow: None,
        };
        Ok((ask, request))
    }
}

impl BorrowRequest {
    fn split(self) -> Result<(SeatAsk, SeatRequest), ApiError> {
        if !(1..=crate::licensing::MAX_BORROW_HOURS).contains(&self.hours) {
            return Err(ApiError::bad_request(
                "invalid_hours",
                format!(
                    "hours must be 1 to {} (and at most the license's max_borrow_hours)",
                    crate::licensing::MAX_BORROW_HOURS
                ),
            ));
        }
        let ask = SeatAsk {
            license_key: self.license_key,
            hardware_id: self.hardware_id,
            metadata: self.metadata,
            client_version: self.client_version,
            os: self.os,
            hostname: self.hostname,
        };
        let request = SeatRequest {
            borrow: Some(Duration::from_secs(u64::from(self.hours) * 3600)),
            ..SeatRequest::default()
        };
        Ok((ask, request))
    }
}

/// A ticket as clients see it: `<org>.<license>.<ticket>.<mac>`, so that a
/// poll finds its license's line without a database read, sealed (see
/// [`crate::auth::TicketSeal`]) so that a forged one costs no I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueueTicket {
    org: OrgId,
    license: LicenseId,
    ticket: TicketId,
}

impl QueueTicket {
    /// The ticket a client presents, if this deployment sealed it.
    fn open(ctx: &AppContext, text: &str) -> Result<Self, ApiError> {
        let body = ctx
            .access
            .tickets()
            .open(text)
            .ok_or_else(|| ApiError::from(CoordinatorError::TicketNotFound))?;
        let mut parts = body.split('.');
        let parsed = (|| {
            let ticket = Self {
                org: parts.next()?.parse().ok()?,
                license: parts.next()?.parse().ok()?,
                ticket: parts.next()?.parse().ok()?,
            };
            parts.next().is_none().then_some(ticket)
        })();
        parsed.ok_or_else(|| CoordinatorError::TicketNotFound.into())
    }

    /// The ticket as handed to the client.
    fn seal(&self, ctx: &AppContext) -> String {
        let body = format!("{}.{}.{}", self.org, self.license, self.ticket);
        ctx.access.tickets().seal(&body)
    }
}

impl SeatAsk {
    /// Validates the fields and gathers the optional client facts into one
    /// JSON object.
    fn validate(self) -> Result<(String, String, Option<Value>), ApiError> {
        validate_license_key(&self.license_key)?;
        validate_hardware_id(&self.hardware_id)?;
        validate_fact(
            self.client_version.as_deref(),
            MAX_CLIENT_VERSION_CHARS,
            "invalid_client_version",
            "client_version",
        )?;
        validate_fact(self.os.as_deref(), MAX_OS_CHARS, "invalid_os", "os")?;
        validate_fact(
            self.hostname.as_deref(),
            MAX_HOSTNAME_CHARS,
            "invalid_hostname",
            "hostname",
        )?;
        let mut metadata = self.metadata.unwrap_or_default();
        for (name, value) in [
            ("client_version", self.client_version),
            ("os", self.os),
            ("hostname", self.hostname),
        ] {
            if let Some(v) = value {
                metadata.insert(name.into(), Value::String(v));
            }
        }
        let metadata = (!metadata.is_empty()).then_some(Value::Object(metadata));
        if let Some(m) = &metadata
            && m.to_string().len() > MAX_METADATA_BYTES
        {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!("client metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
        Ok((self.license_key, self.hardware_id, metadata))
    }
}

/// POST /api/v1/licenses/acquire
#[utoipa::path(
    post,
    path = "/api/v1/licenses/acquire",
    tag = "seats",
    operation_id = "acquire",
    summary = "Acquire a seat for a machine",
    request_body = AcquireRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "A new session.", body = AcquireResponse),
        (status = 200, description = "This machine already held a live session; its lease is extended.", body = AcquireResponse),
        (status = 202, description = "With `wait`: no seat is free for this machine, and it waits in the license's line (FIFO across all nodes). Poll the ticket; claim the seat with an acquire carrying `queue_ticket` once its `state` is `ready`.", body = QueueResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`identity_required` or `unauthorized`: the license requires a signed-in user (`requires_user`) and no valid access token came with the request.", body = ErrorBody),
        (status = 403, description = "`license_suspended`, `license_expired` or `license_inactive`; for a license that requires a user, `forbidden` (not a member of its organization) or `machine_not_activated`.", body = ErrorBody),
        (status = 404, description = "`license_not_found`, or `queue_ticket_not_found` for a `queue_ticket` that is not in line (left, dropped out, or another machine's).", body = ErrorBody),
        (status = 409, description = "`no_seats_available`, with `seats_used` and `max_seats`: every seat is taken or held for a ticket ahead in line.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn acquire(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "acquire")
        .and(warp::post())
        .and(json_body::<AcquireRequest>())
        .and(client(ctx.client_ip))
        .and(warp::header::optional::<String>("authorization"))
        .and(with_ctx(ctx))
        .and_then(
            |body: AcquireRequest,
             client: ClientInfo,
             auth: Option<String>,
             ctx: AppContext| async move {
                counted(
                    ACQUIRES,
                    acquire_seat(body, client, auth.as_deref(), &ctx).await,
                )
            },
        )
}

/// Counts a request under `metric` by its outcome (the label of a success,
/// or the error code) and hands the result to warp.
fn counted(
    metric: &'static str,
    result: Result<(Response, &'static str), ApiError>,
) -> Result<Response, warp::Rejection> {
    let outcome = match &result {
        Ok((_, label)) => label,
        Err(e) => e.code,
    };
    metrics::counter!(metric, "result" => outcome).increment(1);
    result
        .map(|(response, _)| response)
        .map_err(warp::reject::custom)
}

async fn acquire_seat(
    body: AcquireRequest,
    client: ClientInfo,
    auth: Option<&str>,
    ctx: &AppContext,
) -> Result<(Response, &'static str), ApiError> {
    let (ask, request) = body.split(ctx)?;
    seat(ask, &request, client, auth, ctx).await
}

/// POST /api/v1/licenses/borrow
#[utoipa::path(
    post,
    path = "/api/v1/licenses/borrow",
    tag = "seats",
    operation_id = "borrow",
    summary = "Borrow a seat for planned offline work",
    description = "Checks out a seat for `hours`, held in the ledger with no heartbeats for the whole period, up to the license's `max_borrow_hours` (0, the default, turns borrowing off). The token is valid exactly until `borrowed_until`. Return it early with `DELETE /api/v1/licenses/sessions/{id}`. A machine that already holds a seat borrows that one (same session). Borrowed seats count against `seats` like any other.",
    request_body = BorrowRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "A new, borrowed session.", body = AcquireResponse),
        (status = 200, description = "This machine's session, now borrowed.", body = AcquireResponse),
        (status = 400, description = "`invalid_hours`, `borrow_too_long` (with `max_borrow_hours`), or a bad field as for acquire.", body = ErrorBody),
        (status = 401, description = "`identity_required` or `unauthorized`: the license requires a signed-in user (`requires_user`) and no valid access token came with the request.", body = ErrorBody),
        (status = 403, description = "`borrowing_disabled`, `license_suspended`, `license_expired` or `license_inactive`; for a license that requires a user, `forbidden` or `machine_not_activated`.", body = ErrorBody),
        (status = 404, description = "`license_not_found`.", body = ErrorBody),
        (status = 409, description = "`no_seats_available`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn borrow(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "borrow")
        .and(warp::post())
        .and(json_body::<BorrowRequest>())
        .and(client(ctx.client_ip))
        .and(warp::header::optional::<String>("authorization"))
        .and(with_ctx(ctx))
        .and_then(
            |body: BorrowRequest,
             client: ClientInfo,
             auth: Option<String>,
             ctx: AppContext| async move {
                let result = match body.split() {
                    Ok((ask, request)) => seat(ask, &request, client, auth.as_deref(), &ctx)
                        .await
                        .map(|(response, _)| (response, "borrowed")),
                    Err(e) => Err(e),
                };
                counted(ACQUIRES, result)
            },
        )
}

/// The seat an acquire or a borrow asks for: checks, one coordinator call,
/// and the answer (a seat with its token, or a place in line).
async fn seat(
    ask: SeatAsk,
    request: &SeatRequest,
    client: ClientInfo,
    auth: Option<&str>,
    ctx: &AppContext,
) -> Result<(Response, &'static str), ApiError> {
    let (key, hardware_id, metadata) = ask.validate()?;
    ctx.rate_limit(Limit::AcquirePerMachine, &machine_key(&key, &hardware_id))
        .await?;
    // Only a license that requires a user pays for reading the caller's
    // organizations. Any other takes a credential for the audit log alone,
    // from the access token's signature: no I/O on the common path.
    let license = ctx.coordinator.license_for_key(&key).await?;
    let caller = if license.requires_user {
        super::machines::caller(ctx, auth).await?
    } else {
        super::machines::named_actor(ctx, auth)
    };
    let acquired = match ctx
        .coordinator
        .request_seat(&key, hardware_id, client, metadata, &caller, request)
        .await?
    {
        Admission::Seat(acquired) => acquired,
        Admission::Queued(queued) => {
            let body = queue_body(ctx, &queued);
            let response = warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED);
            return Ok((response.into_response(), "queued"));
        }
    };
    let settings = ctx.coordinator.settings();
    let grace = acquired.license.offline_grace(settings.offline_grace);
    let claims = SeatClaims {
        iss: "seatwarden".into(),
        sub: acquired.session_id.to_string(),
        session_id: acquired.session_id.to_string(),
        license_id: acquired.license.id.to_string(),
        org_id: acquired.license.org_id.to_string(),
        hardware_id: acquired.hardware_id.clone(),
        tier: acquired.license.tier.clone(),
        features: acquired.license.features.clone(),
        max_seats: acquired.license.seats,
        iat: 0,
        exp: 0,
        lease_exp: 0,
        borrowed: acquired.borrowed_until.is_some(),
    };
    let (token, token_expires_at) = sign_token(ctx, claims, acquired.expires_at, grace).await?;
    let Acquired {
        created,
        session_id,
        hardware_id,
        expires_at,
        license,
        seats_used,
        borrowed_until,
    } = acquired;
    let body = AcquireResponse {
        session_id,
        license_id: license.id,
        org_id: license.org_id,
        hardware_id,
        expires_at,
        heartbeat_interval_secs: ctx.heartbeat_interval_secs,
        seats_used,
        max_seats: license.seats,
        tier: license.tier.clone(),
        features: license.features.clone(),
        token,
        token_expires_at,
        borrowed_until,
    };
    let (status, outcome) = if created {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "renewed")
    };
    let response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    Ok((response, outcome))
}

/// What acquires are counted by: the license key (normalized, so that
/// spelling it differently is the same key) and the hardware id.
fn machine_key(license_key: &str, hardware_id: &str) -> RateKey {
    RateKey::builder()
        .part(LicenseKey::normalize(license_key))
        .part(hardware_id)
        .finish()
}

/// Signs `claims` for a lease ending at `lease_expires_at`: the token lets
/// the client run offline until then, plus the license's offline grace and
/// the clock-skew allowance, and no longer. A borrowed seat's token ends
/// with its borrow exactly.
async fn sign_token(
    ctx: &AppContext,
    mut claims: SeatClaims,
    lease_expires_at: DateTime<Utc>,
    grace: Duration,
) -> Result<(String, DateTime<Utc>), ApiError> {
    let exp = if claims.borrowed {
        lease_expires_at
    } else {
        token_expiry(
            lease_expires_at,
            grace,
            ctx.coordinator.settings().token_skew,
        )
    };
    claims.iat = Utc::now().timestamp();
    claims.exp = exp.timestamp();
    claims.lease_exp = lease_expires_at.timestamp();
    let token = ctx.signer.sign(&claims).await.map_err(|e| {
        tracing::error!(error = %e, "could not sign a seat token");
        ApiError::internal("could not sign the seat token")
    })?;
    Ok((token, exp.trunc_subsecs(0)))
}

/// Who may act on a session: the holder of a token issued for it.
///
/// A valid token names the session's organization and license, which
/// route the request without a database read. Without a valid token the
/// answer is 404 when the session does not exist at all, else 401.
async fn authorize(
    ctx: &AppContext,
    session_id: &str,
    authorization: Option<&str>,
) -> Result<(SessionRef, Arc<SeatClaims>), ApiError> {
    let id: SessionId = session_id
        .parse()
        .map_err(|_| ApiError::from(CoordinatorError::SessionNotFound))?;
    let token = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let claims = token.and_then(|t| ctx.signer.verify_cached(t).ok());
    let session = claims.as_deref().and_then(|c| {
        Some(SessionRef {
            session: c.session_id.parse().ok().filter(|s| *s == id)?,
            org: c.org_id.parse().ok()?,
            license: c.license_id.parse().ok()?,
            hardware_id: c.hardware_id.clone(),
        })
    });
    match (session, claims) {
        (Some(session), Some(claims)) => Ok((session, claims)),
        (_, other) => {
            if ctx.coordinator.session(id).await?.is_none() {
                return Err(CoordinatorError::SessionNotFound.into());
            }
            Err(ApiError::unauthorized(match (token, other) {
                (None, _) => "a Bearer token from acquire is required",
                (Some(_), None) => "the token is invalid",
                (Some(_), Some(_)) => "the token belongs to another session",
            }))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct HeartbeatResponse {
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    expires_at: DateTime<Utc>,
    heartbeat_interval_secs: u64,
    /// A fresh token, only when the presented one would expire before the
    /// next heartbeat is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_expires_at: Option<DateTime<Utc>>,
}

/// POST /api/v1/licenses/sessions/{id}/heartbeat
/// PATCH /api/v1/licenses/sessions/{id}/heartbeat (the same)
#[utoipa::path(
    post,
    path = "/api/v1/licenses/sessions/{id}/heartbeat",
    tag = "seats",
    operation_id = "heartbeat",
    summary = "Extend a session's lease",
    params(("id" = String, Path, description = "The session id from acquire.")),
    security(("seat_token" = [])),
    responses(
        (status = 200, description = "The lease is extended; a fresh token only when the presented one would expire before the next heartbeat.", body = HeartbeatResponse),
        (status = 401, description = "`unauthorized`: the seat token is missing, invalid or another session's.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 410, description = "`session_expired` once the lease lapsed, `session_ended` (with `end_reason`) after a release: acquire again.", body = ErrorBody),
        (status = 429, response = RateLimited),
    )
)]
pub fn heartbeat(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "sessions" / String / "heartbeat")
        .and(warp::post().or(warp::patch()).unify())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, auth: Option<String>, ctx: AppContext| async move {
                counted(
                    HEARTBEATS,
                    heartbeat_session(&ctx, &id, auth.as_deref()).await,
                )
            },
        )
}

/// The PATCH spelling of [`heartbeat`], for the document only: the one
/// filter answers both methods.
#[utoipa::path(
    patch,
    path = "/api/v1/licenses/sessions/{id}/heartbeat",
    tag = "seats",
    operation_id = "heartbeat_patch",
    summary = "Extend a session's lease (PATCH spelling of the POST)",
    params(("id" = String, Path, description = "The session id from acquire.")),
    security(("seat_token" = [])),
    responses(
        (status = 200, description = "The lease is extended.", body = HeartbeatResponse),
        (status = 401, description = "`unauthorized`: the seat token is missing, invalid or another session's.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 410, description = "`session_expired` or `session_ended`: acquire again.", body = ErrorBody),
        (status = 429, response = RateLimited),
    )
)]
#[allow(dead_code)]
pub(super) fn heartbeat_patch() {}

async fn heartbeat_session(
    ctx: &AppContext,
    id: &str,
    auth: Option<&str>,
) -> Result<(Response, &'static str), ApiError> {
    let (session, claims) = authorize(ctx, id, auth).await?;
    // Throttled once the token proved the caller holds the session, so that
    // nobody else can use up its heartbeats; the ledger counts the beat in
    // the same call that extends the lease.
    let beat = match ctx
        .coordinator
        .heartbeat(&session, ctx.heartbeat_throttle)
        .await
    {
        Err(e @ CoordinatorError::Throttled { .. }) => {
            metrics::counter!(RATE_LIMITED, "limit" => Limit::HeartbeatPerSession.name())
                .increment(1);
            return Err(e.into());
        }
        other => other?,
    };
    let settings = ctx.coordinator.settings();
    // Re-sign only when the token's lease part would run out before the
    // next heartbeat is due: one signature per session and interval at
    // most, none for clients that heartbeat early.
    let next_due = Utc::now().timestamp() + settings.heartbeat_interval.as_secs() as i64;
    // A borrowed seat's token already runs to the borrow's end, which a
    // heartbeat never moves.
    let (token, token_expires_at) =
        if !claims.borrowed && claims.exp - (settings.token_skew.as_secs() as i64) <= next_due {
            let (token, exp) = sign_token(
                ctx,
                (*claims).clone(),
                beat.expires_at,
                claims_grace(&claims, ctx),
            )
            .await?;
            (Some(token), Some(exp))
        } else {
            (None, None)
        };
    let body = HeartbeatResponse {
        session_id: beat.session_id,
        expires_at: beat.expires_at,
        heartbeat_interval_secs: ctx.heartbeat_interval_secs,
        token,
        token_expires_at,
    };
    Ok((warp::reply::json(&body).into_response(), "ok"))
}

/// The offline grace a token was issued with: what its expiry adds to its
/// lease beyond the skew allowance. A re-signed token keeps its license's
/// grace without a store read (policy changes apply from the next acquire).
fn claims_grace(claims: &SeatClaims, ctx: &AppContext) -> Duration {
    let settings = ctx.coordinator.settings();
    if claims.lease_exp <= 0 {
        return settings.offline_grace;
    }
    let extra = claims.exp - claims.lease_exp - settings.token_skew.as_secs() as i64;
    Duration::from_secs(u64::try_from(extra).unwrap_or(0))
}

#[derive(Debug, Serialize, ToSchema)]
struct ReleaseResponse {
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    ended_at: DateTime<Utc>,
    /// `released`, or how the session had already ended.
    end_reason: &'static str,
}

/// DELETE /api/v1/licenses/sessions/{id}
#[utoipa::path(
    delete,
    path = "/api/v1/licenses/sessions/{id}",
    tag = "seats",
    operation_id = "release",
    summary = "Release a seat (idempotent)",
    params(("id" = String, Path, description = "The session id from acquire.")),
    security(("seat_token" = [])),
    responses(
        (status = 200, description = "The session has ended (now or before).", body = ReleaseResponse),
        (status = 401, description = "`unauthorized`: the seat token is missing, invalid or another session's.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn release(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "sessions" / String)
        .and(warp::delete())
        .and(warp::header::optional::<String>("authorization"))
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, auth: Option<String>, client: ClientInfo, ctx: AppContext| async move {
                counted(
                    RELEASES,
                    release_session(&ctx, &id, auth.as_deref(), client).await,
                )
            },
        )
}

async fn release_session(
    ctx: &AppContext,
    id: &str,
    auth: Option<&str>,
    client: ClientInfo,
) -> Result<(Response, &'static str), ApiError> {
    let (session, _) = authorize(ctx, id, auth).await?;
    let released = ctx.coordinator.release(&session, client).await?;
    let body = ReleaseResponse {
        session_id: released.session_id,
        ended_at: released.ended_at,
        end_reason: released.reason.as_str(),
    };
    Ok((warp::reply::json(&body).into_response(), "ok"))
}

/// The answer that shows a place in line.
fn queue_body(ctx: &AppContext, queued: &Queued) -> QueueResponse {
    let place = &queued.place;
    let ticket = QueueTicket {
        org: queued.license.org_id,
        license: queued.license.id,
        ticket: place.ticket,
    };
    QueueResponse {
        queue_ticket: ticket.seal(ctx),
        position: place.position,
        state: if place.hold_until.is_some() {
            "ready"
        } else {
            "waiting"
        },
        poll_after_secs: ctx.coordinator.settings().queue_poll.as_secs(),
        hold_expires_at: place.hold_until,
        queue_length: place.length,
    }
}

/// GET /api/v1/licenses/queue/{ticket}
#[utoipa::path(
    get,
    path = "/api/v1/licenses/queue/{ticket}",
    tag = "seats",
    operation_id = "queue_status",
    summary = "Where a ticket stands in its license's line",
    description = "Also keeps the ticket in line: a ticket not polled for three `poll_after_secs` leaves it by itself. When `state` is `ready`, a seat is held for this ticket until `hold_expires_at`: claim it with an acquire carrying `queue_ticket`, or lose the place.",
    params(("ticket" = String, Path, description = "The `queue_ticket` from a 202 acquire; it is the credential.")),
    responses(
        (status = 200, description = "The ticket's place.", body = QueueResponse),
        (status = 403, description = "`license_suspended`, `license_expired` or `license_inactive`.", body = ErrorBody),
        (status = 404, description = "`queue_ticket_not_found`: it left the line (claimed, left, missed its polls or its hold), or never was in it.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn queue_status(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "queue" / String)
        .and(warp::get())
        .and(with_ctx(ctx))
        .and_then(|ticket: String, ctx: AppContext| async move {
            poll_ticket(&ctx, &ticket)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn poll_ticket(ctx: &AppContext, ticket: &str) -> Result<Response, ApiError> {
    let t = QueueTicket::open(ctx, ticket)?;
    let queued = ctx
        .coordinator
        .poll_ticket(t.org, t.license, t.ticket)
        .await?;
    Ok(warp::reply::json(&queue_body(ctx, &queued)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct LeftResponse {
    queue_ticket: String,
    /// Whether the ticket was in line until now.
    left: bool,
}

/// DELETE /api/v1/licenses/queue/{ticket}
#[utoipa::path(
    delete,
    path = "/api/v1/licenses/queue/{ticket}",
    tag = "seats",
    operation_id = "queue_leave",
    summary = "Leave the line (idempotent)",
    params(("ticket" = String, Path, description = "The `queue_ticket` from a 202 acquire.")),
    responses(
        (status = 200, description = "The ticket is out of the line (`left` says whether it was in it).", body = LeftResponse),
        (status = 404, description = "`queue_ticket_not_found`: not a ticket of any license.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn queue_leave(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "queue" / String)
        .and(warp::delete())
        .and(with_ctx(ctx))
        .and_then(|ticket: String, ctx: AppContext| async move {
            leave_line(&ctx, &ticket)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn leave_line(ctx: &AppContext, ticket: &str) -> Result<Response, ApiError> {
    let t = QueueTicket::open(ctx, ticket)?;
    let left = ctx
        .coordinator
        .leave_line(t.org, t.license, t.ticket)
        .await?;
    let body = LeftResponse {
        queue_ticket: t.seal(ctx),
        left,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// GET /api/v1/licenses/public-key
#[utoipa::path(
    get,
    path = "/api/v1/licenses/public-key",
    tag = "seats",
    operation_id = "public_key",
    summary = "The seat-token signing key as PEM",
    responses(
        (status = 200, description = "The public key (SPKI PEM).", content_type = "application/x-pem-file", body = String),
    )
)]
pub fn public_key(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "public-key")
        .and(warp::get())
        .map(move || {
            let pem = ctx.signer.public_key_pem().to_owned();
            let mut response = pem.into_response();
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-pem-file"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=300"),
            );
            response
        })
}

/// GET /.well-known/jwks.json
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "seats",
    operation_id = "jwks",
    summary = "The seat-token signing keys as a JWK set",
    responses(
        (status = 200, description = "The JWK set.", body = JwkSet),
    )
)]
pub fn jwks(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .map(move || {
            let mut response = warp::reply::json(&ctx.signer.jwks()).into_response();
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=300"),
            );
            response
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_ids_must_be_printable_and_at_most_256_chars() {
        assert!(validate_hardware_id("machine-1").is_ok());
        assert!(validate_hardware_id(&"é".repeat(256)).is_ok());
        assert!(validate_hardware_id(&"x".repeat(257)).is_err());
        assert!(validate_hardware_id("").is_err());
        assert!(validate_hardware_id("   ").is_err());
        assert!(validate_hardware_id("a\nb").is_err());
        assert!(validate_hardware_id("a\u{0}b").is_err());
    }

    #[test]
    fn a_license_key_spelled_differently_is_one_rate_key() {
        assert_eq!(
            machine_key("coditect-abcd-ooil", "m1"),
            machine_key(" CODITECT-ABCD-0011 ", "m1")
        );
        assert_ne!(
            machine_key("CODITECT-ABCD", "m1"),
            machine_key("CODITECT-ABCD", "m2")
        );
    }
}
