//! Platform administration under `/api/v1/admin`: the directory of users,
//! organizations and licenses across tenants, license issue and change,
//! and the platform's numbers.
//!
//! Every route takes [`platform_admin`]: an access token whose user the
//! store says (now, not as of the token's issue) is a platform
//! administrator. 401 without a valid credential, 403 for anyone else.
//! Every change is audited with the administrator's id as `actor_id`.
//!
//! Listings share one shape, `{"items": [...], "next_cursor": "..."|null}`,
//! newest first, with `limit` (default 50, at most 200) and an opaque
//! `cursor` from the previous page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use warp::Filter;
use warp::reply::Response;

use seatwarden_actors::CoordinatorError;
use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, License, LicenseId, LicenseStatus, LicenseUpdate, OrgId,
    Revenue, SessionId, User, UserId,
};
use seatwarden_actors::ports::{
    LicenseFilter, MailCursor, MailFilter, MailKind, MailStatus, PageRequest, StoreError,
};

use super::error::license_not_found;
use super::openapi::{
    AdminOrg, AdminUser, Analytics, EmailEntry, ErrorBody, IssuedLicense, LicenseRecord,
    PayloadTooLarge, Unauthorized, Unavailable,
};
use super::org_licenses::SessionView;
use super::paging::{self, PageBody};
use super::principal::{forbidden, user};
use super::with_ctx;
use super::{ApiError, AppContext, client, json_body, rejected, reply};
use crate::auth::AccessClaims;
use crate::licensing::{
    InvalidSpec, LicenseSpec, check_expires_at, check_max_borrow_hours, check_max_machines,
    check_seats,
};

/// Listing page sizes.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// Longest search string, in characters.
const MAX_SEARCH_CHARS: usize = 200;

/// A platform administrator, as the store says now.
#[derive(Clone, Copy, Debug)]
pub struct PlatformAdmin {
    pub id: UserId,
}

/// An access token whose user is a platform administrator (re-read from
/// the store): 401 without a valid credential, 403 for anyone else. The
/// one filter every admin route takes.
pub fn platform_admin(
    ctx: AppContext,
) -> impl Filter<Extract = (PlatformAdmin,), Error = warp::Rejection> + Clone {
    user(ctx.clone()).and_then(move |claims: AccessClaims| {
        let ctx = ctx.clone();
        async move {
            let is_admin = ctx
                .store
                .user(claims.sub)
                .await
                .map_err(|e| warp::reject::custom(ApiError::from(e)))?
                .is_some_and(|u| u.platform_admin);
            if is_admin {
                Ok(PlatformAdmin { id: claims.sub })
            } else {
                Err(warp::reject::custom(forbidden()))
            }
        }
    })
}

/// `/api/v1/admin/*`.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    list_users(ctx.clone())
        .or(list_orgs(ctx.clone()))
        .unify()
        .or(list_licenses(ctx.clone()))
        .unify()
        .or(issue_license(ctx.clone()))
        .unify()
        .or(update_license(ctx.clone()))
        .unify()
        .or(analytics(ctx.clone()))
        .unify()
        .or(list_emails(ctx.clone()))
        .unify()
        .or(revoke_session(ctx))
        .unify()
        .boxed()
}

// ---------------------------------------------------------------------------
// Listings

/// The query of a listing; everything arrives as text so that each bad
/// value gets its own 400 code rather than a generic `invalid_query`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    // License filters.
    org_id: Option<String>,
    status: Option<String>,
    tier: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: uuid::Uuid) -> String {
    let raw = format!("{}~{}", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), id);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, uuid::Uuid)> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let raw = std::str::from_utf8(&raw).ok()?;
    let (at, id) = raw.split_once('~')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

impl ListQuery {
    fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_limit",
                        format!("limit must be 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this server gave")
            })?),
        };
        let search = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if search.is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS) {
            return Err(ApiError::bad_request(
                "invalid_search",
                format!("q must be at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        Ok(PageRequest {
            search: search.map(str::to_owned),
            limit,
            after,
        })
    }

    /// Refuses filters a listing does not have.
    fn only_paging(&self) -> Result<(), ApiError> {
        if self.org_id.is_some() || self.status.is_some() || self.tier.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "this listing takes only q, limit and cursor",
            ));
        }
        Ok(())
    }

    fn license_filter(&self) -> Result<LicenseFilter, ApiError> {
        if self.q.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "licenses are filtered by org_id, status and tier, not q",
            ));
        }
        let org_id = self
            .org_id
            .as_deref()
            .map(|s| s.parse::<OrgId>())
            .transpose()
            .map_err(|_| ApiError::bad_request("invalid_org_id", "org_id must be a UUID"))?;
        let status = self
            .status
            .as_deref()
            .map(|s| s.parse::<LicenseStatus>())
            .transpose()
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_status",
                    "status must be active, suspended or inactive",
                )
            })?;
        Ok(LicenseFilter {
            org_id,
            status,
            tier: self.tier.clone(),
        })
    }
}

fn page_json<T, S: Serialize>(
    page: seatwarden_actors::ports::Page<T>,
    show: impl Fn(T) -> S,
) -> Value {
    let items: Vec<S> = page.items.into_iter().map(show).collect();
    json!({
        "items": items,
        "next_cursor": page.next.map(|(at, id)| encode_cursor(at, id)),
    })
}

fn user_json(u: User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "full_name": u.full_name,
        "email_verified": u.email_verified_at.is_some(),
        "platform_admin": u.platform_admin,
        "created_at": u.created_at,
    })
}

fn license_json(l: &License) -> Value {
    serde_json::to_value(l).expect("a License always serializes")
}

/// A listing's query; a bad query string (an unknown parameter, say) is
/// a 400 `invalid_query`, also where the path has routes for other methods
/// (see [`paging::query`]).
fn list_query() -> impl Filter<Extract = (ListQuery,), Error = warp::Rejection> + Clone {
    paging::query::<ListQuery>()
}

/// GET /api/v1/admin/users?q=&limit=&cursor=
#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    tag = "admin",
    operation_id = "admin_list_users",
    summary = "Every user",
    description = "A platform administrator's access token (the flag is re-read from the store). Newest first.",
    params(
        ("q" = Option<String>, Query, max_length = 200, description = "Search: part of the address or the full name, case-insensitive."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (50 when absent)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users.", body = PageBody<AdminUser>),
        (status = 400, description = "`invalid_query` (an unknown parameter or one this listing does not take), `invalid_search`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_users(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "users")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(list_query())
        .and(with_ctx(ctx))
        .and_then(
            |_: PlatformAdmin, q: ListQuery, ctx: AppContext| async move {
                q.only_paging().map_err(rejected)?;
                let page = q.page().map_err(rejected)?;
                let users = ctx
                    .store
                    .list_users(&page)
                    .await
                    .map_err(|e| rejected(e.into()))?;
                Ok::<_, warp::Rejection>(reply(StatusCode::OK, &page_json(users, user_json)))
            },
        )
}

/// GET /api/v1/admin/orgs?q=&limit=&cursor=
#[utoipa::path(
    get,
    path = "/api/v1/admin/orgs",
    tag = "admin",
    operation_id = "admin_list_orgs",
    summary = "Every organization",
    description = "A platform administrator's access token (the flag is re-read from the store). Newest first.",
    params(
        ("q" = Option<String>, Query, max_length = 200, description = "Search: part of the name, case-insensitive."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (50 when absent)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of organizations.", body = PageBody<AdminOrg>),
        (status = 400, description = "`invalid_query` (an unknown parameter or one this listing does not take), `invalid_search`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_orgs(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "orgs")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(list_query())
        .and(with_ctx(ctx))
        .and_then(
            |_: PlatformAdmin, q: ListQuery, ctx: AppContext| async move {
                q.only_paging().map_err(rejected)?;
                let page = q.page().map_err(rejected)?;
                let orgs = ctx
                    .store
                    .list_orgs(&page)
                    .await
                    .map_err(|e| rejected(e.into()))?;
                Ok::<_, warp::Rejection>(reply(StatusCode::OK, &page_json(orgs, |o| o)))
            },
        )
}

/// GET /api/v1/admin/licenses?org_id=&status=&tier=&limit=&cursor=
#[utoipa::path(
    get,
    path = "/api/v1/admin/licenses",
    tag = "admin",
    operation_id = "admin_list_licenses",
    summary = "Every license",
    description = "A platform administrator's access token (the flag is re-read from the store). Newest first.",
    params(
        ("org_id" = Option<uuid::Uuid>, Query, description = "Only this organization's licenses."),
        ("status" = Option<String>, Query, pattern = "^(active|suspended|inactive)$", description = "`active`, `suspended` or `inactive`."),
        ("tier" = Option<String>, Query, description = "Only licenses of this tier."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (50 when absent)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of licenses.", body = PageBody<LicenseRecord>),
        (status = 400, description = "`invalid_query` (`q`, or an unknown parameter), `invalid_org_id`, `invalid_status`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_licenses(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "licenses")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(list_query())
        .and(with_ctx(ctx))
        .and_then(
            |_: PlatformAdmin, q: ListQuery, ctx: AppContext| async move {
                let filter = q.license_filter().map_err(rejected)?;
                let page = q.page().map_err(rejected)?;
                let licenses = ctx
                    .store
                    .list_licenses(&filter, &page)
                    .await
                    .map_err(|e| rejected(e.into()))?;
                Ok::<_, warp::Rejection>(reply(
                    StatusCode::OK,
                    &page_json(licenses, |l| license_json(&l)),
                ))
            },
        )
}

// ---------------------------------------------------------------------------
// License issue and change

fn invalid_spec(e: InvalidSpec) -> ApiError {
    ApiError::bad_request(e.code, e.message)
}

pub(super) fn admin_audit(
    event: AuditEvent,
    admin: PlatformAdmin,
    client: ClientInfo,
) -> ActionAudit {
    ActionAudit {
        at: crate::store::now(),
        event,
        actor_id: Some(admin.id.0),
        org_id: None,
        license_id: None,
        client,
        detail: None,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The organization the license is for.
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    #[schema(minimum = 1, maximum = 2147483647)]
    seats: u32,
    /// 1 to 64 printable characters (`standard` when absent).
    #[serde(default = "default_tier")]
    #[schema(min_length = 1, max_length = 64, default = "standard")]
    tier: String,
    /// At most 64, each 1 to 64 printable characters.
    #[serde(default)]
    #[schema(max_items = 64)]
    features: Vec<String>,
    /// Never, when absent.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Only activated machines acquire seats, at most this many at once.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2147483647)]
    max_machines: Option<u32>,
    /// Acquire also needs a credential of someone in the organization.
    #[serde(default)]
    requires_user: bool,
    /// How long past its lease a seat token stays valid; the server's
    /// default when absent.
    #[serde(default)]
    #[schema(maximum = 2147483647)]
    offline_grace_secs: Option<u32>,
    /// Sessions beyond `seats` that may hold a still-valid token at once.
    #[serde(default)]
    #[schema(maximum = 2147483647)]
    offline_overdraft: u32,
    /// The longest a machine may borrow a seat, in hours; 0 (the default)
    /// turns borrowing off.
    #[serde(default)]
    #[schema(maximum = 8784)]
    max_borrow_hours: u32,
}

fn default_tier() -> String {
    "standard".to_owned()
}

/// POST /api/v1/admin/licenses: issues a license as `seatwarden license
/// create` does; the key is in this answer and nowhere else, ever.
#[utoipa::path(
    post,
    path = "/api/v1/admin/licenses",
    tag = "admin",
    operation_id = "admin_issue_license",
    summary = "Issue a license",
    description = "A platform administrator's access token (the flag is re-read from the store). As `seatwarden license create`; the key is in this answer and nowhere else, ever (`Cache-Control: no-store`).",
    request_body = IssueRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The license, with its `key`.", body = IssuedLicense),
        (status = 400, description = "`invalid_body`, or what the license spec refuses: `invalid_seats`, `invalid_max_machines`, `invalid_tier`, `invalid_features`, `invalid_offline_policy`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 404, description = "`org_not_found`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn issue_license(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "licenses")
        .and(warp::post())
        .and(platform_admin(ctx.clone()))
        .and(json_body::<IssueRequest>())
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |admin: PlatformAdmin, body: IssueRequest, client: ClientInfo, ctx: AppContext| async move {
                issue(&ctx, admin, body, client).await.map_err(rejected)
            },
        )
}

async fn issue(
    ctx: &AppContext,
    admin: PlatformAdmin,
    body: IssueRequest,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let spec = LicenseSpec {
        org_id: body.org_id,
        seats: body.seats,
        tier: body.tier,
        features: body.features,
        expires_at: body.expires_at,
        offline_grace_secs: body.offline_grace_secs,
        offline_overdraft: body.offline_overdraft,
        max_machines: body.max_machines,
        requires_user: body.requires_user,
        max_borrow_hours: body.max_borrow_hours,
    };
    let (new, key) = spec.issue(&ctx.licenses.key_prefix).map_err(invalid_spec)?;
    let mut audit = admin_audit(AuditEvent::LicenseIssued, admin, client);
    audit.detail = Some(format!("seats={}", new.seats));
    let license = match ctx.store.issue_license(new, audit).await {
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "org_not_found",
                "no such organization",
            ));
        }
        other => other?,
    };
    let mut out = license_json(&license);
    out["key"] = json!(key);
    let mut response = reply(StatusCode::CREATED, &out);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; an
/// absent field stays `None` through `#[serde(default)]`.
pub(super) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// At least one field; an absent field stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2147483647)]
    seats: Option<u32>,
    /// `active`, `suspended` or `inactive`; suspending or deactivating ends
    /// the license's open sessions.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(active|suspended|inactive)$", example = "suspended")]
    status: Option<LicenseStatus>,
    /// `null` removes the expiry.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    expires_at: Option<Option<DateTime<Utc>>>,
    /// `null` lifts the machine limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 2147483647)]
    max_machines: Option<Option<u32>>,
    #[serde(default)]
    requires_user: Option<bool>,
    /// Hours; 0 turns borrowing off.
    #[serde(default)]
    #[schema(maximum = 8784)]
    max_borrow_hours: Option<u32>,
}

/// PATCH /api/v1/admin/licenses/{id}: seats, status, expiry, machine limit
/// and identity requirement. A suspension or deactivation ends the
/// license's open sessions in the same transaction (as `license update`).
#[utoipa::path(
    patch,
    path = "/api/v1/admin/licenses/{id}",
    tag = "admin",
    operation_id = "admin_update_license",
    summary = "Change a license",
    description = "A platform administrator's access token (the flag is re-read from the store). As `seatwarden license update`: a suspension or deactivation ends the license's open sessions in the same transaction.",
    params(("id" = uuid::Uuid, Path, description = "The license.")),
    request_body = PatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The license as changed.", body = LicenseRecord),
        (status = 400, description = "`invalid_body`, `empty_update`, `invalid_seats` or `invalid_max_machines`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 404, description = "`license_not_found`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn update_license(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "licenses" / String)
        .and(warp::patch())
        .and(platform_admin(ctx.clone()))
        .and(json_body::<PatchRequest>())
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String,
             admin: PlatformAdmin,
             body: PatchRequest,
             client: ClientInfo,
             ctx: AppContext| async move {
                update(&ctx, &id, admin, body, client)
                    .await
                    .map_err(rejected)
            },
        )
}

async fn update(
    ctx: &AppContext,
    id: &str,
    admin: PlatformAdmin,
    body: PatchRequest,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let id: LicenseId = id.parse().map_err(|_| license_not_found())?;
    if let Some(seats) = body.seats {
        check_seats(seats).map_err(invalid_spec)?;
    }
    if let Some(max) = body.max_machines {
        check_max_machines(max).map_err(invalid_spec)?;
    }
    if let Some(hours) = body.max_borrow_hours {
        check_max_borrow_hours(hours).map_err(invalid_spec)?;
    }
    if let Some(Some(at)) = body.expires_at {
        check_expires_at(at).map_err(invalid_spec)?;
    }
    let update = LicenseUpdate {
        seats: body.seats,
        status: body.status,
        expires_at: body.expires_at,
        max_machines: body.max_machines,
        requires_user: body.requires_user,
        max_borrow_hours: body.max_borrow_hours,
        ..LicenseUpdate::default()
    };
    if update.is_empty() {
        return Err(ApiError::bad_request(
            "empty_update",
            "give at least one of seats, status, expires_at, max_machines, requires_user, \
             max_borrow_hours",
        ));
    }
    let changed: Vec<&str> = [
        ("seats", update.seats.is_some()),
        ("status", update.status.is_some()),
        ("expires_at", update.expires_at.is_some()),
        ("max_machines", update.max_machines.is_some()),
        ("requires_user", update.requires_user.is_some()),
        ("max_borrow_hours", update.max_borrow_hours.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let mut audit = admin_audit(AuditEvent::LicenseUpdated, admin, client);
    audit.detail = Some(changed.join(","));
    let license = ctx
        .store
        .update_license_audited(id, &update, audit)
        .await?
        .ok_or_else(license_not_found)?;
    Ok(reply(StatusCode::OK, &license_json(&license)))
}

// ---------------------------------------------------------------------------
// Sessions

/// DELETE /api/v1/admin/sessions/{id}
#[utoipa::path(
    delete,
    path = "/api/v1/admin/sessions/{id}",
    tag = "admin",
    operation_id = "admin_revoke_session",
    summary = "Take a seat back",
    description = "A platform administrator's access token (the flag is re-read from the store). Ends the session as `revoked` on every node, a borrowed seat included; its holder's next heartbeat gets 410 `session_revoked`. Audited `SESSION_REVOKED`. Idempotent: a session that had ended is answered as it ended.",
    params(("id" = uuid::Uuid, Path, description = "The session.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session as it now is.", body = SessionView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn revoke_session(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "sessions" / String)
        .and(warp::delete())
        .and(platform_admin(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, admin: PlatformAdmin, client: ClientInfo, ctx: AppContext| async move {
                revoke(&ctx, &id, admin, client).await.map_err(rejected)
            },
        )
}

async fn revoke(
    ctx: &AppContext,
    id: &str,
    admin: PlatformAdmin,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::from(CoordinatorError::SessionNotFound);
    let id: SessionId = id.parse().map_err(|_| not_found())?;
    let session = ctx.store.session(id).await?.ok_or_else(not_found)?;
    let mut audit = admin_audit(AuditEvent::SessionRevoked, admin, client);
    audit.org_id = Some(session.org_id);
    audit.license_id = Some(session.license_id);
    audit.detail = Some("platform_admin".to_owned());
    let record = ctx.coordinator.revoke_session(id, audit).await?;
    Ok(reply(StatusCode::OK, &SessionView::from(record)))
}

// ---------------------------------------------------------------------------
// Analytics

/// GET /api/v1/admin/analytics
#[utoipa::path(
    get,
    path = "/api/v1/admin/analytics",
    tag = "admin",
    operation_id = "admin_analytics",
    summary = "The platform's numbers",
    description = "A platform administrator's access token (the flag is re-read from the store).",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts now and this month, and revenue from subscription records.", body = Analytics),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn analytics(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "analytics")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(with_ctx(ctx))
        .and_then(|_: PlatformAdmin, ctx: AppContext| async move {
            let now = Utc::now();
            let month_start = Utc
                .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(now);
            let a = ctx
                .store
                .analytics(now, month_start)
                .await
                .map_err(|e| rejected(e.into()))?;
            let counts = ctx
                .store
                .subscription_counts(month_start)
                .await
                .map_err(|e| rejected(e.into()))?;
            let plans = ctx
                .store
                .plans(true)
                .await
                .map_err(|e| rejected(e.into()))?;
            let revenue = Revenue::compute(&counts, &plans);
            // Ratios of counts far below 2^52: exact enough as f64.
            #[allow(clippy::cast_precision_loss)]
            let utilisation = if a.seats_total == 0 {
                0.0
            } else {
                (a.seats_in_use as f64 / a.seats_total as f64 * 10_000.0).round() / 10_000.0
            };
            Ok::<_, warp::Rejection>(reply(
                StatusCode::OK,
                &json!({
                    "orgs": a.orgs,
                    "users": a.users,
                    "signups_this_month": a.signups_this_month,
                    "active_licenses": a.active_licenses,
                    "seats_total": a.seats_total,
                    "seats_in_use": a.seats_in_use,
                    "seat_utilisation": utilisation,
                    "mrr_cents": revenue.mrr_cents,
                    "arr_cents": revenue.arr_cents,
                    "subscriptions": {
                        "active": revenue.active,
                        "trialing": revenue.trialing,
                        "past_due": revenue.past_due,
                    },
                    "new_subscriptions_this_month": revenue.new_this_month,
                    "churned_subscriptions_this_month": revenue.churned_this_month,
                    "churn_rate": revenue.churn_rate,
                    "revenue_by_plan": revenue.by_plan,
                }),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_item_it_names() {
        let at: DateTime<Utc> = "2026-11-27T10:11:12.123456Z".parse().unwrap();
        let id = uuid::Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x~y")), None);
    }
}

// ---------------------------------------------------------------------------
// The email log

/// The query of the email log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EmailQuery {
    /// `pending`, `sent` or `failed`.
    #[param(pattern = "^(pending|sent|failed)$")]
    status: Option<String>,
    /// `verify`, `welcome`, `account_exists`, `password_reset`,
    /// `invitation` or `account_locked`.
    #[param(
        pattern = "^(verify|welcome|account_exists|password_reset|invitation|account_locked)$"
    )]
    kind: Option<String>,
    /// Only mail to this address: at most 254 characters.
    #[param(max_length = 254)]
    recipient: Option<String>,
    /// Items per page, 1 to 200 (50 when absent).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl EmailQuery {
    fn filter(&self) -> Result<MailFilter, ApiError> {
        let bad = |code: &'static str, what: &str| ApiError::bad_request(code, what.to_owned());
        let status = self
            .status
            .as_deref()
            .map(|s| s.parse::<MailStatus>())
            .transpose()
            .map_err(|_| bad("invalid_status", "status must be pending, sent or failed"))?;
        let kind = self
            .kind
            .as_deref()
            .map(|k| k.parse::<MailKind>())
            .transpose()
            .map_err(|_| bad("invalid_kind", "kind is not a kind of mail we send"))?;
        if self
            .recipient
            .as_ref()
            .is_some_and(|r| r.chars().count() > 254)
        {
            return Err(bad(
                "invalid_recipient",
                "recipient is at most 254 characters",
            ));
        }
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad("invalid_limit", "limit must be 1 to 200"))?,
        };
        let after = self
            .cursor
            .as_deref()
            .map(|c| c.parse::<MailCursor>())
            .transpose()
            .map_err(|_| bad("invalid_cursor", "cursor is not one this server gave out"))?;
        Ok(MailFilter {
            status,
            kind,
            recipient: self.recipient.clone(),
            after,
            limit,
        })
    }
}

/// GET /api/v1/admin/emails?status=&kind=&recipient=&limit=&cursor=
///
/// The delivery record of every email, newest first: kind, recipient,
/// status, attempts and the last error; never the message's data.
#[utoipa::path(
    get,
    path = "/api/v1/admin/emails",
    tag = "admin",
    operation_id = "admin_list_emails",
    summary = "The email log",
    description = "A platform administrator's access token (the flag is re-read from the store). The delivery record of every email, newest first: never the message's data.",
    params(EmailQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the log.", body = PageBody<EmailEntry>),
        (status = 400, description = "`invalid_query` (an unknown parameter), `invalid_status`, `invalid_kind`, `invalid_recipient`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_emails(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "emails")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(paging::query::<EmailQuery>())
        .and(with_ctx(ctx))
        .and_then(
            |_: PlatformAdmin, q: EmailQuery, ctx: AppContext| async move {
                let filter = q.filter().map_err(rejected)?;
                let page = ctx
                    .store
                    .email_log(&filter)
                    .await
                    .map_err(|e| rejected(e.into()))?;
                let items: Vec<Value> = page
                    .entries
                    .iter()
                    .map(|m| {
                        json!({
                            "id": m.id,
                            "kind": m.kind,
                            "recipient": m.recipient,
                            "status": m.status.as_str(),
                            "attempts": m.attempts,
                            "last_error": m.last_error,
                            "created_at": m.created_at,
                            "next_attempt_at": m.next_attempt_at,
                            "sent_at": m.sent_at,
                        })
                    })
                    .collect();
                let next = page.next.map(|c| c.to_string());
                Ok::<_, warp::Rejection>(reply(
                    StatusCode::OK,
                    &json!({"items": items, "next_cursor": next}),
                ))
            },
        )
}
