//! License operations: acquire, heartbeat and release a seat, and the keys
//! clients verify seat tokens with.

use chrono::{DateTime, SubsecRound, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warp::Filter;
use warp::reply::{Reply, Response};

use std::sync::Arc;
use std::time::Duration;

use utoipa::ToSchema;

use seatwarden_actors::domain::{ClientInfo, LicenseId, LicenseKey, OrgId, SessionId};
use seatwarden_actors::{Acquired, CoordinatorError, SessionRef, token_expiry};

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

impl AcquireRequest {
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
    responses(
        (status = 201, description = "A new session.", body = AcquireResponse),
        (status = 200, description = "This machine already held a live session; its lease is extended.", body = AcquireResponse),
        (status = 400, response = BadRequest),
        (status = 403, description = "`license_suspended`, `license_expired` or `license_inactive`.", body = ErrorBody),
        (status = 404, description = "`license_not_found`.", body = ErrorBody),
        (status = 409, description = "`no_seats_available`, with `seats_used` and `max_seats`.", body = ErrorBody),
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
    let (key, hardware_id, metadata) = body.validate()?;
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
    let acquired = ctx
        .coordinator
        .acquire_as(&key, hardware_id, client, metadata, &caller)
        .await?;
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
    };
    let (token, token_expires_at) = sign_token(ctx, claims, acquired.expires_at, grace).await?;
    let Acquired {
        created,
        session_id,
        hardware_id,
        expires_at,
        license,
        seats_used,
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
/// the clock-skew allowance, and no longer.
async fn sign_token(
    ctx: &AppContext,
    mut claims: SeatClaims,
    lease_expires_at: DateTime<Utc>,
    grace: Duration,
) -> Result<(String, DateTime<Utc>), ApiError> {
    let exp = token_expiry(
        lease_expires_at,
        grace,
        ctx.coordinator.settings().token_skew,
    );
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
    let (token, token_expires_at) =
        if claims.exp - (settings.token_skew.as_secs() as i64) <= next_due {
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
