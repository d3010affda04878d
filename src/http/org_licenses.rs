//! Licenses seen from their organization: the license list with seats in
//! use, one license, its sessions, and force-release of a session.
//!
//! Seats in use come from the seat ledger, which is the truth for live
//! seats (the store's open sessions may include lapsed ones the sweep has
//! not closed yet). A license of another organization answers exactly as
//! one that does not exist.

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::CoordinatorError;
use seatwarden_actors::domain::{
    AuditEvent, ClientInfo, EndReason, KeyCursor, License, LicenseFilter, LicenseId, LicenseStatus,
    OrgId, SessionFilter, SessionId, SessionRecord,
};

use super::error::license_not_found;
use super::openapi::{ErrorBody, Unauthorized, Unavailable};
use super::orgs::{action, org_not_found};
use super::paging::{self, PageBody, query};
use super::principal::{self, Need, Principal, org_access};
use super::with_ctx;
use super::{ApiError, AppContext, client};

const MAX_FILTER_CHARS: usize = 256;

fn session_not_found() -> ApiError {
    ApiError::not_found("session_not_found", "no such session on this license")
}

fn reject(e: ApiError) -> warp::Rejection {
    warp::reject::custom(e)
}

fn bounded(field: &'static str, value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > MAX_FILTER_CHARS => {
            Err(ApiError::bad_request(
                "invalid_query",
                format!("{field} must be 1 to {MAX_FILTER_CHARS} characters"),
            ))
        }
        _ => Ok(()),
    }
}

/// A page of an organization's licenses and its filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LicenseQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (50 when absent).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `active`, `suspended` or `inactive`.
    #[param(value_type = Option<String>, pattern = "^(active|suspended|inactive)$")]
    status: Option<LicenseStatus>,
    /// Only licenses of this tier: 1 to 256 characters.
    #[param(min_length = 1, max_length = 256)]
    tier: Option<String>,
    /// Only licenses that expire before this time (RFC 3339).
    expires_before: Option<DateTime<Utc>>,
    /// Only licenses that expire after this time (RFC 3339).
    expires_after: Option<DateTime<Utc>>,
}

/// `live` or `ended`.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Live,
    Ended,
}

/// A page of a license's sessions and its filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (50 when absent).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `live` or `ended`.
    #[param(value_type = Option<String>, pattern = "^(live|ended)$")]
    status: Option<SessionState>,
    /// Only sessions of this machine: 1 to 256 characters.
    #[param(min_length = 1, max_length = 256)]
    hardware_id: Option<String>,
    /// `released`, `expired` or `revoked`.
    #[param(value_type = Option<String>, pattern = "^(released|expired|revoked)$")]
    end_reason: Option<EndReason>,
    /// Only sessions started after this time (RFC 3339).
    started_after: Option<DateTime<Utc>>,
    /// Only sessions started before this time (RFC 3339).
    started_before: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct LicenseView {
    #[schema(value_type = uuid::Uuid)]
    id: LicenseId,
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    /// The key's last characters, for people to tell keys apart.
    key_hint: String,
    seats: u32,
    /// Live leases now, from the seat ledger.
    seats_used: u32,
    seats_remaining: u32,
    tier: String,
    features: Vec<String>,
    /// `active`, `suspended` or `inactive` (an expired license stays `active`
    /// past `expires_at`).
    #[schema(value_type = String, example = "active")]
    status: LicenseStatus,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    offline_grace_secs: Option<u32>,
    offline_overdraft: u32,
}

impl LicenseView {
    fn new(l: License, seats_used: u32) -> Self {
        Self {
            seats_remaining: l.seats.saturating_sub(seats_used),
            seats_used,
            id: l.id,
            org_id: l.org_id,
            key_hint: l.key_hint,
            seats: l.seats,
            tier: l.tier,
            features: l.features,
            status: l.status,
            expires_at: l.expires_at,
            created_at: l.created_at,
            offline_grace_secs: l.offline_grace_secs,
            offline_overdraft: l.offline_overdraft,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionView {
    #[schema(value_type = uuid::Uuid)]
    id: SessionId,
    #[schema(value_type = uuid::Uuid)]
    license_id: LicenseId,
    hardware_id: String,
    /// `live` while the record is open (`borrowed` for a borrowed seat),
    /// `ended` after.
    #[schema(example = "live")]
    status: &'static str,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
    lease_expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// `released`, `expired` or `revoked`, once ended.
    #[schema(value_type = Option<String>, example = "released")]
    end_reason: Option<EndReason>,
    ip: Option<String>,
    user_agent: Option<String>,
    /// What the client sent with acquire (`metadata`, `client_version`,
    /// `os`, `hostname`).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Whether the seat is borrowed: held with no heartbeats until
    /// `borrowed_until`.
    borrowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    borrowed_until: Option<DateTime<Utc>>,
}

impl From<SessionRecord> for SessionView {
    fn from(s: SessionRecord) -> Self {
        Self {
            status: match (s.is_open(), s.borrowed_until.is_some()) {
                (true, true) => "borrowed",
                (true, false) => "live",
                (false, _) => "ended",
            },
            id: s.id,
            license_id: s.license_id,
            hardware_id: s.hardware_id,
            started_at: s.started_at,
            last_heartbeat_at: s.last_heartbeat_at,
            lease_expires_at: s.lease_expires_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason,
            ip: s.client.ip,
            user_agent: s.client.user_agent,
            metadata: s.metadata,
            borrowed: s.borrowed_until.is_some(),
            borrowed_until: s.borrowed_until,
        }
    }
}

/// Live leases of a license, from the ledger.
async fn seats_used(ctx: &AppContext, license: &License) -> Result<u32, ApiError> {
    let live = ctx
        .ledger
        .live_leases(license.org_id, license.id)
        .await
        .map_err(CoordinatorError::from)?;
    Ok(u32::try_from(live.len()).unwrap_or(u32::MAX))
}

async fn license_view(ctx: &AppContext, license: License) -> Result<LicenseView, ApiError> {
    let used = seats_used(ctx, &license).await?;
    Ok(LicenseView::new(license, used))
}

/// The license, if the caller may do what `need` says in its
/// organization; otherwise the same 404 as for no license at all.
async fn visible_license(
    ctx: &AppContext,
    p: &Principal,
    id: LicenseId,
    need: Need,
) -> Result<(License, principal::Caller), ApiError> {
    let license = ctx.store.license(id).await?.ok_or_else(license_not_found)?;
    let caller = org_access(ctx, p, license.org_id, need, license_not_found).await?;
    Ok((license, caller))
}

/// `GET /api/v1/orgs/{id}/licenses`, oldest first, filtered by `status`,
/// `tier` and `expires_before`/`expires_after` (RFC 3339), with the seats
/// used and remaining of each.
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/licenses",
    tag = "licenses",
    operation_id = "list_org_licenses",
    summary = "An organization's licenses, with seats in use",
    description = "Members and above, `member` API keys of the organization, and platform administrators. Oldest first.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), LicenseQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of licenses.", body = PageBody<LicenseView>),
        (status = 400, description = "`invalid_query` (an unknown parameter, a value of the wrong type, a filter out of bounds), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a guest, or a `guest` API key.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_licenses(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "licenses")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<LicenseQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: LicenseQuery| async move {
                handle_list(ctx, p, OrgId(id), q).await.map_err(reject)
            },
        )
}

async fn handle_list(
    ctx: AppContext,
    p: Principal,
    org: OrgId,
    q: LicenseQuery,
) -> Result<Response, ApiError> {
    org_access(&ctx, &p, org, Need::Licenses, org_not_found).await?;
    bounded("tier", &q.tier)?;
    let req = paging::request::<KeyCursor>(q.cursor.as_deref(), q.limit)?;
    let filter = LicenseFilter {
        status: q.status,
        tier: q.tier,
        expires_before: q.expires_before,
        expires_after: q.expires_after,
    };
    let page = ctx.store.org_licenses(org, &filter, req).await?;
    let next_cursor = page.next.as_ref().map(paging::Cursor::encode);
    let items = try_join_all(page.items.into_iter().map(|l| license_view(&ctx, l))).await?;
    Ok(paging::PageBody { items, next_cursor }.into_response())
}

/// `GET /api/v1/licenses/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/licenses/{id}",
    tag = "licenses",
    operation_id = "get_license",
    summary = "One license, with seats in use",
    description = "Members and above of its organization, its `member` API keys, and platform administrators.",
    params(("id" = uuid::Uuid, Path, description = "The license.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The license.", body = LicenseView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a guest, or a `guest` API key.", body = ErrorBody),
        (status = 404, description = "`license_not_found`: no such license, or another organization's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn get_license(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / Uuid)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and_then(|id: Uuid, ctx: AppContext, p: Principal| async move {
            async {
                let (license, _) = visible_license(&ctx, &p, LicenseId(id), Need::Licenses).await?;
                let view = license_view(&ctx, license).await?;
                Ok::<_, ApiError>(warp::reply::json(&view).into_response())
            }
            .await
            .map_err(reject)
        })
}

/// `GET /api/v1/licenses/{id}/sessions`, newest first, filtered by
/// `status` (`live`/`ended`), `hardware_id`, `end_reason` and
/// `started_after`/`started_before` (RFC 3339).
#[utoipa::path(
    get,
    path = "/api/v1/licenses/{id}/sessions",
    tag = "licenses",
    operation_id = "list_license_sessions",
    summary = "A license's sessions",
    description = "Members and above of its organization, its `member` API keys, and platform administrators. Newest first.",
    params(("id" = uuid::Uuid, Path, description = "The license."), SessionQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of sessions.", body = PageBody<SessionView>),
        (status = 400, description = "`invalid_query` (an unknown parameter, a value of the wrong type, a filter out of bounds), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a guest, or a `guest` API key.", body = ErrorBody),
        (status = 404, description = "`license_not_found`: no such license, or another organization's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_sessions(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / Uuid / "sessions")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<SessionQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: SessionQuery| async move {
                async {
                    let (license, _) =
                        visible_license(&ctx, &p, LicenseId(id), Need::Licenses).await?;
                    bounded("hardware_id", &q.hardware_id)?;
                    let req = paging::request::<KeyCursor>(q.cursor.as_deref(), q.limit)?;
                    let filter = SessionFilter {
                        live: q.status.map(|s| matches!(s, SessionState::Live)),
                        hardware_id: q.hardware_id,
                        end_reason: q.end_reason,
                        started_after: q.started_after,
                        started_before: q.started_before,
                    };
                    let page = ctx.store.license_sessions(license.id, &filter, req).await?;
                    Ok::<_, ApiError>(paging::body(page, SessionView::from).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}

/// `DELETE /api/v1/licenses/{id}/sessions/{session_id}`: an owner or
/// admin ends a live session as `revoked` and frees its seat on every
/// node; the holder's next heartbeat gets 410 `session_revoked`. Answers
/// the session as it now is (a session that had already ended, as it
/// ended: nothing more happens to it).
#[utoipa::path(
    delete,
    path = "/api/v1/licenses/{id}/sessions/{session_id}",
    tag = "licenses",
    operation_id = "force_release",
    summary = "End a session and free its seat",
    description = "Owners and admins of the license's organization. A live session ends as `revoked` on every node (its next heartbeat answers 410 `session_revoked`); one that had ended already is answered as it ended.",
    params(("id" = uuid::Uuid, Path, description = "The license."), ("session_id" = uuid::Uuid, Path, description = "The session.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session as it now is.", body = SessionView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: below admin, an API key, or a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`license_not_found` (no such license, or another organization's) or `session_not_found` (not on this license).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn force_release(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / Uuid / "sessions" / Uuid)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and_then(
            |license: Uuid, session: Uuid, ctx: AppContext, p: Principal, client: ClientInfo| async move {
                handle_force_release(ctx, p, client, LicenseId(license), SessionId(session))
                    .await
                    .map_err(reject)
            },
        )
}

async fn handle_force_release(
    ctx: AppContext,
    p: Principal,
    client: ClientInfo,
    license: LicenseId,
    session: SessionId,
) -> Result<Response, ApiError> {
    let (license, caller) = visible_license(&ctx, &p, license, Need::Manage).await?;
    match ctx.store.session(session).await? {
        Some(s) if s.license_id == license.id => {}
        _ => return Err(session_not_found()),
    }
    let mut audit = action(&caller, &p, &client);
    audit.event = AuditEvent::SessionRevoked;
    audit.org_id = Some(license.org_id);
    audit.license_id = Some(license.id);
    audit.detail = Some("force_release".to_owned());
    let record = ctx
        .coordinator
        .revoke_session(session, audit)
        .await
        .map_err(|e| match e {
            CoordinatorError::SessionNotFound => session_not_found(),
            other => other.into(),
        })?;
    Ok(warp::reply::json(&SessionView::from(record)).into_response())
}
