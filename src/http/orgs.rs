//! Organizations from the inside: the organization, its members, the
//! invitations that bring people in, its API keys and its audit log.
//!
//! Every organization-scoped route asks [`org_access`] first, which reads
//! the caller's role from the store: outsiders get the same 404 as for an
//! organization that does not exist, members whose role is too low a 403.
//! Ids of another organization's invitations, keys or members are unknown
//! inside this one (404), because every store call is scoped by the
//! organization in the path.
//!
//! Every change is audited with the acting person's id, in the change's
//! own transaction.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::domain::{
    AcceptOutcome, ActionAudit, ApiKey, ApiKeyId, AuditEvent, AuditFilter, AuditRecord, ClientInfo,
    Invitation, InvitationId, InvitationRevoke, InvitationStatus, InviteOutcome, KeyCursor,
    LicenseId, Member, MemberChange, NewApiKey, NewInvitation, OrgId, Role, UserId,
};
use seatwarden_actors::ports::{MailKind, NewMail};

use super::auth::{validate_email, validate_name};
use super::openapi::{
    BadRequest, ErrorBody, PayloadTooLarge, RateLimited, Unauthorized, Unavailable,
};
use super::paging::{self, PageBody, query};
use super::principal::{self, Caller, Need, Principal, forbidden, org_access};
use super::{ApiError, AppContext, client, json_body, rate_limit_by_ip, with_ctx};
use crate::auth::{AccessClaims, tokens};
use crate::ratelimit::Limit;

/// The 404 of an organization that does not exist or is not the caller's.
pub(super) fn org_not_found() -> ApiError {
    ApiError::not_found("org_not_found", "no such organization")
}

fn member_not_found() -> ApiError {
    ApiError::not_found("member_not_found", "no such member in this organization")
}

fn invitation_not_found() -> ApiError {
    ApiError::not_found(
        "invitation_not_found",
        "no such invitation in this organization",
    )
}

fn api_key_not_found() -> ApiError {
    ApiError::not_found("api_key_not_found", "no such API key in this organization")
}

fn conflict(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// An audit entry for what `caller` does now; the store fills in the
/// event, the organization and the detail of the change it makes.
pub(super) fn action(caller: &Caller, principal: &Principal, client: &ClientInfo) -> ActionAudit {
    ActionAudit {
        at: crate::store::now(),
        event: AuditEvent::OrgRenamed,
        actor_id: Some(caller.user().map_or_else(|| principal.actor_id(), |u| u.0)),
        org_id: None,
        license_id: None,
        client: client.clone(),
        detail: None,
    }
}

/// Creating invitations and API keys hands out access: only people whose
/// address is verified (now, not when their token was issued) may.
async fn require_verified(ctx: &AppContext, caller: &Caller) -> Result<(), ApiError> {
    let Some(user) = caller.user() else {
        return Err(forbidden());
    };
    match ctx.store.user(user).await? {
        Some(u) if u.email_verified() => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "email_not_verified",
            "verify your email address first",
        )),
    }
}

/// The managing person's role; keys and platform admins never manage
/// (see [`Need::Manage`]), so this always has one.
fn managing_role(caller: &Caller) -> Result<Role, ApiError> {
    match caller {
        Caller::Member { role, .. } => Ok(*role),
        _ => Err(forbidden()),
    }
}

// ---------------------------------------------------------------------------
// Requests and views

/// A page of a list: no other parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (50 when absent).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// 1 to 200 printable characters.
    #[schema(min_length = 1, max_length = 200, example = "Analytical Engines")]
    name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `owner`, `admin`, `member` or `guest`; only an owner makes, changes
    /// or removes an owner.
    #[schema(value_type = String, pattern = "^(owner|admin|member|guest)$", example = "admin")]
    role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[schema(format = Email, min_length = 3, max_length = 254, example = "grace@example.com")]
    email: String,
    /// The role on joining: `owner` (by an owner only), `admin`, `member`
    /// or `guest`.
    #[schema(value_type = String, pattern = "^(owner|admin|member|guest)$", example = "member")]
    role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The token of the invitation email.
    token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// 1 to 200 printable characters, e.g. where the key is used.
    #[schema(min_length = 1, max_length = 200, example = "ci")]
    name: String,
    /// An API key is a `member` (sees licenses) or a `guest` (uses seats).
    #[schema(value_type = String, pattern = "^(member|guest)$", example = "member")]
    role: Role,
}

/// A page of the audit log and its filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (50 when absent).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Only entries of this event, e.g. `MEMBER_ROLE_CHANGED`.
    #[param(value_type = Option<String>, example = "MEMBER_ROLE_CHANGED")]
    action: Option<AuditEvent>,
    /// Only what this person (or API key) did.
    user_id: Option<Uuid>,
    /// Only entries about this license.
    #[param(value_type = Option<uuid::Uuid>)]
    license_id: Option<LicenseId>,
    /// Only entries at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct OrgView {
    #[schema(value_type = uuid::Uuid)]
    id: OrgId,
    name: String,
    /// The caller's role; `null` for a platform administrator who is not
    /// a member.
    #[schema(value_type = Option<String>, example = "owner")]
    role: Option<Role>,
    /// Absent from a person's list of organizations and on joining one.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct MemberView {
    #[schema(value_type = uuid::Uuid)]
    user_id: UserId,
    email: String,
    full_name: String,
    email_verified: bool,
    /// `owner`, `admin`, `member` or `guest`.
    #[schema(value_type = String, example = "member")]
    role: Role,
    joined_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            full_name: m.full_name,
            email_verified: m.email_verified,
            role: m.role,
            joined_at: m.joined_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct InvitationView {
    #[schema(value_type = uuid::Uuid)]
    id: InvitationId,
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    email: String,
    /// The role on joining: `owner`, `admin`, `member` or `guest`.
    #[schema(value_type = String, example = "member")]
    role: Role,
    /// `pending`, `accepted`, `revoked` or `expired`.
    #[schema(value_type = String, example = "pending")]
    status: InvitationStatus,
    #[schema(value_type = uuid::Uuid)]
    invited_by: UserId,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<uuid::Uuid>)]
    accepted_by: Option<UserId>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<Invitation> for InvitationView {
    fn from(i: Invitation) -> Self {
        Self {
            status: i.status(Utc::now()),
            id: i.id,
            org_id: i.org_id,
            email: i.email,
            role: i.role,
            invited_by: i.invited_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
            accepted_at: i.accepted_at,
            accepted_by: i.accepted_by,
            revoked_at: i.revoked_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ApiKeyView {
    #[schema(value_type = uuid::Uuid)]
    id: ApiKeyId,
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    name: String,
    /// `member` or `guest`.
    #[schema(value_type = String, example = "member")]
    role: Role,
    /// The prefix and last four characters, e.g. `swk_…a1B2`.
    key_hint: String,
    /// `active` or `revoked`.
    #[schema(example = "active")]
    status: &'static str,
    #[schema(value_type = uuid::Uuid)]
    created_by: UserId,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    /// The key itself: in the answer to its creation only. Present it as
    /// `Authorization: Bearer <key>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            status: if k.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            id: k.id,
            org_id: k.org_id,
            name: k.name,
            role: k.role,
            key_hint: k.key_hint,
            created_by: k.created_by,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            key: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct AuditView {
    id: i64,
    at: DateTime<Utc>,
    /// The event, e.g. `MEMBER_ROLE_CHANGED`.
    #[schema(value_type = String, example = "MEMBER_ROLE_CHANGED")]
    action: AuditEvent,
    /// Who acted: a person's id or an API key's.
    actor_id: Option<Uuid>,
    #[schema(value_type = Option<uuid::Uuid>)]
    license_id: Option<LicenseId>,
    #[schema(value_type = Option<uuid::Uuid>)]
    session_id: Option<seatwarden_actors::domain::SessionId>,
    hardware_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(a: AuditRecord) -> Self {
        Self {
            id: a.id,
            at: a.at,
            action: a.event,
            actor_id: a.actor_id,
            license_id: a.license_id,
            session_id: a.session_id,
            hardware_id: a.hardware_id,
            ip: a.ip,
            user_agent: a.user_agent,
            detail: a.detail,
        }
    }
}

fn json_status(body: &impl Serialize, status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// A body that carries a secret shown once: never cached on the way.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn reject(e: ApiError) -> warp::Rejection {
    warp::reject::custom(e)
}

// ---------------------------------------------------------------------------
// The organization

/// `GET /api/v1/orgs`: the caller's organizations (an API key's: its own).
/// A person belongs to few, so this list is always one page.
#[utoipa::path(
    get,
    path = "/api/v1/orgs",
    tag = "orgs",
    operation_id = "list_orgs",
    summary = "The caller's organizations",
    description = "A person's organizations with their role in each, always one page; with an organization's API key, that organization.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every organization of the caller (`next_cursor` is always `null`).", body = PageBody<OrgView>),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_orgs(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and_then(|ctx: AppContext, p: Principal| async move {
            handle_list_orgs(ctx, p).await.map_err(reject)
        })
}

async fn handle_list_orgs(ctx: AppContext, p: Principal) -> Result<Response, ApiError> {
    let items: Vec<OrgView> = match &p {
        Principal::User(claims) => ctx
            .store
            .memberships(claims.sub)
            .await?
            .into_iter()
            .map(|m| OrgView {
                id: m.org_id,
                name: m.org_name,
                role: Some(m.role),
                created_at: None,
            })
            .collect(),
        Principal::ApiKey { org_id, role, .. } => ctx
            .store
            .org(*org_id)
            .await?
            .into_iter()
            .map(|o| OrgView {
                id: o.id,
                name: o.name,
                role: Some(*role),
                created_at: Some(o.created_at),
            })
            .collect(),
    };
    Ok(PageBody {
        items,
        next_cursor: None,
    }
    .into_response())
}

/// `GET /api/v1/orgs/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}",
    tag = "orgs",
    operation_id = "get_org",
    summary = "One organization",
    description = "Any member, the organization's API keys, and platform administrators.",
    params(("id" = uuid::Uuid, Path, description = "The organization.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization, with the caller's role.", body = OrgView),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn get_org(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and_then(|id: Uuid, ctx: AppContext, p: Principal| async move {
            handle_get_org(ctx, p, OrgId(id)).await.map_err(reject)
        })
}

async fn handle_get_org(ctx: AppContext, p: Principal, org: OrgId) -> Result<Response, ApiError> {
    let caller = org_access(&ctx, &p, org, Need::View, org_not_found).await?;
    let found = ctx.store.org(org).await?.ok_or_else(org_not_found)?;
    Ok(warp::reply::json(&OrgView {
        id: found.id,
        name: found.name,
        role: caller.role(),
        created_at: Some(found.created_at),
    })
    .into_response())
}

/// `PATCH /api/v1/orgs/{id}` `{name}`
#[utoipa::path(
    patch,
    path = "/api/v1/orgs/{id}",
    tag = "orgs",
    operation_id = "rename_org",
    summary = "Rename an organization",
    description = "Owners and admins.",
    params(("id" = uuid::Uuid, Path, description = "The organization.")),
    request_body = RenameRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The renamed organization.", body = OrgView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: owners and admins only; never an API key, nor a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn rename_org(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid)
        .and(warp::patch())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<RenameRequest>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, client: ClientInfo, req: RenameRequest| async move {
                handle_rename(ctx, p, client, OrgId(id), req)
                    .await
                    .map_err(reject)
            },
        )
}

async fn handle_rename(
    ctx: AppContext,
    p: Principal,
    client: ClientInfo,
    org: OrgId,
    req: RenameRequest,
) -> Result<Response, ApiError> {
    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
    validate_name("name", &req.name)?;
    let renamed = ctx
        .store
        .rename_org(org, &req.name, action(&caller, &p, &client))
        .await?
        .ok_or_else(org_not_found)?;
    Ok(warp::reply::json(&OrgView {
        id: renamed.id,
        name: renamed.name,
        role: caller.role(),
        created_at: Some(renamed.created_at),
    })
    .into_response())
}

// ---------------------------------------------------------------------------
// Members

/// `GET /api/v1/orgs/{id}/members`
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/members",
    tag = "orgs",
    operation_id = "list_members",
    summary = "The members of an organization",
    description = "People who are members and above, and platform administrators; not guests or API keys. Oldest first.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of members.", body = PageBody<MemberView>),
        (status = 400, description = "`invalid_query` (an unknown parameter or a value of the wrong type), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a guest or an API key.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_members(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "members")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<ListQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: ListQuery| async move {
                let org = OrgId(id);
                async {
                    org_access(&ctx, &p, org, Need::Members, org_not_found).await?;
                    let req = paging::request::<KeyCursor>(q.cursor.as_deref(), q.limit)?;
                    let page = ctx.store.members(org, req).await?;
                    Ok::<_, ApiError>(paging::body(page, MemberView::from).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}

/// `PATCH /api/v1/orgs/{id}/members/{user_id}` `{role}`
#[utoipa::path(
    patch,
    path = "/api/v1/orgs/{id}/members/{user_id}",
    tag = "orgs",
    operation_id = "set_member_role",
    summary = "Change a member's role",
    description = "Owners and admins; only an owner makes, changes or removes an owner.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ("user_id" = uuid::Uuid, Path, description = "The member.")),
    request_body = RoleRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The member with the new role.", body = MemberView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin touching an owner.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `member_not_found`: no such member in this organization.", body = ErrorBody),
        (status = 409, description = "`last_owner`: an organization keeps at least one owner.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn set_member_role(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "members" / Uuid)
        .and(warp::patch())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<RoleRequest>())
        .and_then(
            |org: Uuid,
             user: Uuid,
             ctx: AppContext,
             p: Principal,
             client: ClientInfo,
             req: RoleRequest| async move {
                let org = OrgId(org);
                async {
                    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let outcome = ctx
                        .store
                        .set_member_role(
                            org,
                            UserId(user),
                            req.role,
                            managing_role(&caller)?,
                            action(&caller, &p, &client),
                        )
                        .await?;
                    match member_change(outcome)? {
                        Some(m) => Ok(warp::reply::json(&MemberView::from(m)).into_response()),
                        None => Err(member_not_found()),
                    }
                }
                .await
                .map_err(reject)
            },
        )
}

/// `DELETE /api/v1/orgs/{id}/members/{user_id}`
#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{id}/members/{user_id}",
    tag = "orgs",
    operation_id = "remove_member",
    summary = "Remove a member",
    description = "Owners and admins; only an owner removes an owner. The person loses access with their next request.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ("user_id" = uuid::Uuid, Path, description = "The member.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin removing an owner.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `member_not_found`: no such member in this organization.", body = ErrorBody),
        (status = 409, description = "`last_owner`: an organization keeps at least one owner.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn remove_member(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "members" / Uuid)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and_then(
            |org: Uuid, user: Uuid, ctx: AppContext, p: Principal, client: ClientInfo| async move {
                let org = OrgId(org);
                async {
                    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let outcome = ctx
                        .store
                        .remove_member(
                            org,
                            UserId(user),
                            managing_role(&caller)?,
                            action(&caller, &p, &client),
                        )
                        .await?;
                    match member_change(outcome)? {
                        Some(_) => Ok(warp::reply::with_status(
                            warp::reply(),
                            StatusCode::NO_CONTENT,
                        )
                        .into_response()),
                        None => Err(member_not_found()),
                    }
                }
                .await
                .map_err(reject)
            },
        )
}

/// The answer to a member change: the member, `None` for an unknown one,
/// or why it was refused.
fn member_change(outcome: MemberChange) -> Result<Option<Member>, ApiError> {
    match outcome {
        MemberChange::Changed(m) => Ok(Some(m)),
        MemberChange::NotMember => Ok(None),
        MemberChange::Forbidden => {
            Err(forbidden().with_message("only an owner may make, change or remove an owner"))
        }
        MemberChange::LastOwner => Err(conflict(
            "last_owner",
            "an organization keeps at least one owner; make someone else owner first",
        )),
    }
}

// ---------------------------------------------------------------------------
// Invitations

/// `POST /api/v1/orgs/{id}/invitations` `{email, role}`: emails a
/// single-use token, valid for `auth.invitation_ttl_days` (7).
#[utoipa::path(
    post,
    path = "/api/v1/orgs/{id}/invitations",
    tag = "orgs",
    operation_id = "create_invitation",
    summary = "Invite someone by email",
    description = "Owners and admins whose address is verified; only an owner invites an owner. The invitation's single-use token travels in the email alone and is valid for `auth.invitation_ttl_days` (7).",
    params(("id" = uuid::Uuid, Path, description = "The organization.")),
    request_body = InviteRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The invitation (never its token).", body = InvitationView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden` (not an owner or admin, or an admin inviting an owner) or `email_not_verified`.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 409, description = "`already_member`: that address belongs to a member.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn create_invitation(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "invitations")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<InviteRequest>())
        .and_then(
            |org: Uuid, ctx: AppContext, p: Principal, client: ClientInfo, req: InviteRequest| async move {
                handle_invite(ctx, p, client, OrgId(org), req)
                    .await
                    .map_err(reject)
            },
        )
}

async fn handle_invite(
    ctx: AppContext,
    p: Principal,
    client: ClientInfo,
    org: OrgId,
    req: InviteRequest,
) -> Result<Response, ApiError> {
    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
    validate_email(&req.email)?;
    require_verified(&ctx, &caller).await?;
    let inviter = caller.user().ok_or_else(forbidden)?;
    let org_name = ctx.store.org(org).await?.ok_or_else(org_not_found)?.name;
    let inviter_name = ctx
        .store
        .user(inviter)
        .await?
        .map(|u| u.full_name)
        .unwrap_or_default();
    let (token, token_hash) = tokens::generate(tokens::EMAIL_PREFIX);
    let ttl = chrono::Duration::days(i64::try_from(ctx.auth.invitation_ttl_days).unwrap_or(7));
    let new = NewInvitation {
        org_id: org,
        email: req.email.clone(),
        role: req.role,
        invited_by: inviter,
        token_hash,
        expires_at: crate::store::now() + ttl,
    };
    let mail = NewMail::new(
        MailKind::Invitation,
        req.email,
        json!({
            "org_name": org_name,
            "inviter_name": inviter_name,
            "role": req.role,
            "token": token,
        }),
    );
    let outcome = ctx
        .store
        .create_invitation(
            new,
            managing_role(&caller)?,
            mail,
            action(&caller, &p, &client),
        )
        .await?;
    match outcome {
        InviteOutcome::Invited(invitation) => {
            ctx.coordinator.kick_mailer();
            Ok(json_status(
                &InvitationView::from(invitation),
                StatusCode::CREATED,
            ))
        }
        InviteOutcome::AlreadyMember => Err(conflict(
            "already_member",
            "that address already belongs to a member",
        )),
        InviteOutcome::Forbidden => {
            Err(forbidden().with_message("only an owner may invite an owner"))
        }
    }
}

/// `GET /api/v1/orgs/{id}/invitations`
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/invitations",
    tag = "orgs",
    operation_id = "list_invitations",
    summary = "An organization's invitations",
    description = "Owners and admins. Newest first, whatever their status.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of invitations.", body = PageBody<InvitationView>),
        (status = 400, description = "`invalid_query` (an unknown parameter or a value of the wrong type), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: owners and admins only; never an API key, nor a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_invitations(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "invitations")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<ListQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: ListQuery| async move {
                let org = OrgId(id);
                async {
                    org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let req = paging::request::<KeyCursor>(q.cursor.as_deref(), q.limit)?;
                    let page = ctx.store.invitations(org, req).await?;
                    Ok::<_, ApiError>(paging::body(page, InvitationView::from).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}

/// `DELETE /api/v1/orgs/{id}/invitations/{invitation_id}`
#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{id}/invitations/{invitation_id}",
    tag = "orgs",
    operation_id = "revoke_invitation",
    summary = "Revoke an invitation",
    description = "Owners and admins. Its token stops working at once.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ("invitation_id" = uuid::Uuid, Path, description = "The invitation.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The revoked invitation.", body = InvitationView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: owners and admins only; never an API key, nor a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `invitation_not_found`: no such invitation in this organization.", body = ErrorBody),
        (status = 409, description = "`invitation_accepted`: remove the member instead.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn revoke_invitation(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "invitations" / Uuid)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and_then(
            |org: Uuid, id: Uuid, ctx: AppContext, p: Principal, client: ClientInfo| async move {
                let org = OrgId(org);
                async {
                    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let outcome = ctx
                        .store
                        .revoke_invitation(org, InvitationId(id), action(&caller, &p, &client))
                        .await?;
                    match outcome {
                        Some(InvitationRevoke::Revoked(i)) => {
                            Ok(warp::reply::json(&InvitationView::from(i)).into_response())
                        }
                        Some(InvitationRevoke::AlreadyAccepted(_)) => Err(conflict(
                            "invitation_accepted",
                            "the invitation was accepted; remove the member instead",
                        )),
                        None => Err(invitation_not_found()),
                    }
                }
                .await
                .map_err(reject)
            },
        )
}

/// `POST /api/v1/invitations/accept` `{token}`: the logged-in person joins
/// the organization, if the invitation was sent to their address.
#[utoipa::path(
    post,
    path = "/api/v1/invitations/accept",
    tag = "orgs",
    operation_id = "accept_invitation",
    summary = "Join an organization with an invitation's token",
    description = "A logged-in person (never an API key) whose address is the one invited. Rate-limited per client IP (`accept_invitation_per_ip`), before the credential is looked at.",
    request_body = AcceptRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Joined: the organization and the role.", body = OrgView),
        (status = 400, description = "`invalid_token` (invalid, used, revoked or expired) or `invalid_body`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`invitation_for_another_address` (log in with the invited one), or `forbidden` for an API key.", body = ErrorBody),
        (status = 409, description = "`already_member` of this organization.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn accept_invitation(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "invitations" / "accept")
        .and(warp::post())
        .and(rate_limit_by_ip(&ctx, Limit::AcceptInvitationPerIp))
        .and(with_ctx(ctx.clone()))
        .and(principal::user(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<AcceptRequest>())
        .and_then(
            |ctx: AppContext, claims: AccessClaims, client: ClientInfo, req: AcceptRequest| async move {
                handle_accept(ctx, claims, client, req)
                    .await
                    .map_err(reject)
            },
        )
}

async fn handle_accept(
    ctx: AppContext,
    claims: AccessClaims,
    client: ClientInfo,
    req: AcceptRequest,
) -> Result<Response, ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_token", "the token is invalid, used or expired");
    if !tokens::well_formed(&req.token, tokens::EMAIL_PREFIX) {
        return Err(invalid());
    }
    let audit = ActionAudit {
        at: crate::store::now(),
        event: AuditEvent::InvitationAccepted,
        actor_id: Some(claims.sub.0),
        org_id: None,
        license_id: None,
        client,
        detail: None,
    };
    let outcome = ctx
        .store
        .accept_invitation(&tokens::digest(&req.token), claims.sub, Utc::now(), audit)
        .await?;
    match outcome {
        AcceptOutcome::Joined {
            invitation,
            org_name,
        } => Ok(warp::reply::json(&OrgView {
            id: invitation.org_id,
            name: org_name,
            role: Some(invitation.role),
            created_at: None,
        })
        .into_response()),
        AcceptOutcome::Invalid => Err(invalid()),
        AcceptOutcome::WrongAccount => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invitation_for_another_address",
            "this invitation was sent to another address; log in with that one",
        )),
        AcceptOutcome::AlreadyMember => Err(conflict(
            "already_member",
            "you already are a member of this organization",
        )),
    }
}

// ---------------------------------------------------------------------------
// API keys

/// `GET /api/v1/orgs/{id}/api-keys`
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/api-keys",
    tag = "orgs",
    operation_id = "list_api_keys",
    summary = "An organization's API keys",
    description = "Owners and admins. Newest first, revoked ones too; never the keys themselves.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of API keys.", body = PageBody<ApiKeyView>),
        (status = 400, description = "`invalid_query` (an unknown parameter or a value of the wrong type), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: owners and admins only; never an API key, nor a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_api_keys(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "api-keys")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<ListQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: ListQuery| async move {
                let org = OrgId(id);
                async {
                    org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let req = paging::request::<KeyCursor>(q.cursor.as_deref(), q.limit)?;
                    let page = ctx.store.api_keys(org, req).await?;
                    Ok::<_, ApiError>(paging::body(page, ApiKeyView::from).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}

/// `POST /api/v1/orgs/{id}/api-keys` `{name, role}`: the key is in this
/// answer only; the store keeps its hash.
#[utoipa::path(
    post,
    path = "/api/v1/orgs/{id}/api-keys",
    tag = "orgs",
    operation_id = "create_api_key",
    summary = "Create an API key",
    description = "Owners and admins whose address is verified. The key is in this answer only (`Cache-Control: no-store`); the server keeps its hash.",
    params(("id" = uuid::Uuid, Path, description = "The organization.")),
    request_body = ApiKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The key, with `key` shown this once.", body = ApiKeyView),
        (status = 400, description = "`invalid_body`, `invalid_name`, or `invalid_role` (a key is a `member` or a `guest`).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden` (not an owner or admin) or `email_not_verified`.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn create_api_key(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "api-keys")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<ApiKeyRequest>())
        .and_then(
            |org: Uuid, ctx: AppContext, p: Principal, client: ClientInfo, req: ApiKeyRequest| async move {
                handle_create_key(ctx, p, client, OrgId(org), req)
                    .await
                    .map_err(reject)
            },
        )
}

async fn handle_create_key(
    ctx: AppContext,
    p: Principal,
    client: ClientInfo,
    org: OrgId,
    req: ApiKeyRequest,
) -> Result<Response, ApiError> {
    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
    validate_name("name", &req.name)?;
    if !ApiKey::allowed_role(req.role) {
        return Err(ApiError::bad_request(
            "invalid_role",
            "an API key's role is member or guest",
        ));
    }
    require_verified(&ctx, &caller).await?;
    let created_by = caller.user().ok_or_else(forbidden)?;
    let (key, key_hash) = tokens::generate(tokens::API_KEY_PREFIX);
    let new = NewApiKey {
        org_id: org,
        name: req.name,
        role: req.role,
        key_hash,
        key_hint: tokens::hint(&key, tokens::API_KEY_PREFIX),
        created_by,
    };
    let created = ctx
        .store
        .create_api_key(new, action(&caller, &p, &client))
        .await?;
    let mut view = ApiKeyView::from(created);
    view.key = Some(key);
    Ok(no_store(json_status(&view, StatusCode::CREATED)))
}

/// `DELETE /api/v1/orgs/{id}/api-keys/{key_id}`: the key stops working on
/// every node with the next request (keys are looked up, never cached).
#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{id}/api-keys/{key_id}",
    tag = "orgs",
    operation_id = "revoke_api_key",
    summary = "Revoke an API key",
    description = "Owners and admins. The key stops working on every node with the next request.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), ("key_id" = uuid::Uuid, Path, description = "The API key's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The revoked key.", body = ApiKeyView),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: owners and admins only; never an API key, nor a platform administrator who is not a member.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `api_key_not_found`: no such key in this organization.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn revoke_api_key(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "api-keys" / Uuid)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx.clone()))
        .and(client(ctx.client_ip))
        .and_then(
            |org: Uuid, id: Uuid, ctx: AppContext, p: Principal, client: ClientInfo| async move {
                let org = OrgId(org);
                async {
                    let caller = org_access(&ctx, &p, org, Need::Manage, org_not_found).await?;
                    let key = ctx
                        .store
                        .revoke_api_key(org, ApiKeyId(id), action(&caller, &p, &client))
                        .await?
                        .ok_or_else(api_key_not_found)?;
                    Ok(warp::reply::json(&ApiKeyView::from(key)).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}

// ---------------------------------------------------------------------------
// The audit log

/// `GET /api/v1/orgs/{id}/audit-logs`, newest first, filtered by `action`,
/// `user_id` (who acted), `license_id` and `from`/`to` (RFC 3339).
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/audit-logs",
    tag = "orgs",
    operation_id = "audit_logs",
    summary = "An organization's audit log",
    description = "Owners, admins and platform administrators. Newest first.",
    params(("id" = uuid::Uuid, Path, description = "The organization."), AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of audit entries.", body = PageBody<AuditView>),
        (status = 400, description = "`invalid_query` (an unknown parameter or a value of the wrong type), `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: below admin, or an API key.", body = ErrorBody),
        (status = 404, description = "`org_not_found`: no such organization, or not the caller's.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn audit_logs(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / Uuid / "audit-logs")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::principal(ctx))
        .and(query::<AuditQuery>())
        .and_then(
            |id: Uuid, ctx: AppContext, p: Principal, q: AuditQuery| async move {
                let org = OrgId(id);
                async {
                    org_access(&ctx, &p, org, Need::Audit, org_not_found).await?;
                    let req = paging::request::<i64>(q.cursor.as_deref(), q.limit)?;
                    let filter = AuditFilter {
                        event: q.action,
                        actor_id: q.user_id,
                        license_id: q.license_id,
                        from: q.from,
                        to: q.to,
                    };
                    let page = ctx.store.org_audit(org, &filter, req).await?;
                    Ok::<_, ApiError>(paging::body(page, AuditView::from).into_response())
                }
                .await
                .map_err(reject)
            },
        )
}
