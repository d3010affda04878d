//! Machines, validation and signed license files: the license routes that
//! are not about one seat.
//!
//! Who may act on a license by id ([`license_access`]): an owner or admin
//! of its organization (role re-read from the store), a platform
//! administrator, or whoever holds the license key, sent as
//! `Authorization: Bearer <license key>`. Another organization's license
//! answers 404, exactly like a license that does not exist, so ids can't be
//! probed across tenants; a member below admin of the license's own
//! organization gets 403.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::CoordinatorError;
use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, Caller, ClientInfo, License, LicenseId, LicenseKey, Machine,
    MachineId, NewMachine, UserId,
};
use seatwarden_actors::ports::{Activation, Deactivation};

use super::error::license_not_found;
use super::licenses::{validate_fact, validate_hardware_id, validate_license_key};
use super::openapi::{
    BadRequest, Deactivated, ErrorBody, LicenseFileBody, MachineList, PayloadTooLarge, RateLimited,
    Unauthorized, Unavailable,
};
use super::principal::{Principal, authenticate, forbidden, unauthenticated};
use super::with_ctx;
use super::{ApiError, AppContext, client, json_body};
use crate::ratelimit::{Limit, RateKey};
use crate::signing::LicenseFileClaims;

/// Longest machine name and platform, in characters.
const MAX_MACHINE_NAME_CHARS: usize = 255;
const MAX_PLATFORM_CHARS: usize = 64;

/// Who an acquire of a license without `requires_user` names, for its
/// audit entry: the user of a valid access token, read from its signature
/// alone. Anything else (no header, an API key, a bad token) is anonymous,
/// since such a license ignores credentials.
pub(super) fn named_actor(ctx: &AppContext, header: Option<&str>) -> Caller {
    header
        .and_then(super::principal::bearer_token)
        .and_then(|token| ctx.access.verify(token))
        .map_or(Caller::Anonymous, |claims| Caller::Authenticated {
            actor_id: claims.sub.0,
            orgs: Vec::new(),
        })
}

/// The credential of an acquire, as the coordinator sees it (see
/// [`Caller`]), for a license with `requires_user`. With no
/// `Authorization` header this costs nothing; with one, the organizations
/// are re-read from the store (decision 28), so a removed member loses
/// access at once.
pub(super) async fn caller(ctx: &AppContext, header: Option<&str>) -> Result<Caller, ApiError> {
    let Some(header) = header else {
        return Ok(Caller::Anonymous);
    };
    let Some(token) = super::principal::bearer_token(header) else {
        return Ok(Caller::Invalid);
    };
    let principal = match super::principal::authenticate(ctx, token).await {
        Ok(p) => p,
        Err(e) if e.status == http::StatusCode::UNAUTHORIZED => return Ok(Caller::Invalid),
        Err(e) => return Err(e),
    };
    // Every kind of principal names the organizations it may act for.
    match principal {
        Principal::User(claims) => {
            let orgs = ctx
                .store
                .memberships(claims.sub)
                .await?
                .into_iter()
                .map(|m| m.org_id)
                .collect();
            Ok(Caller::Authenticated {
                actor_id: claims.sub.0,
                orgs,
            })
        }
        // An org API key acts for its own organization only.
        Principal::ApiKey { id, org_id, .. } => Ok(Caller::Authenticated {
            actor_id: id.0,
            orgs: vec![org_id],
        }),
    }
}

/// How a caller may act on one license.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    PlatformAdmin(UserId),
    /// An owner or admin of the license's organization.
    Manager(UserId),
    /// The holder of the license key: a machine of the license.
    Key,
}

impl Access {
    fn user(self) -> Option<UserId> {
        match self {
            Self::PlatformAdmin(u) | Self::Manager(u) => Some(u),
            Self::Key => None,
        }
    }
}

/// The license `id` and how the caller may act on it (see the module
/// docs): 401 without a valid credential, 404 for an unknown license or
/// another organization's, 403 for a member below admin.
async fn license_access(
    ctx: &AppContext,
    id: &str,
    header: Option<&str>,
) -> Result<(License, Access), ApiError> {
    let header = header.ok_or_else(unauthenticated)?;
    let token = super::principal::bearer_token(header).ok_or_else(unauthenticated)?;
    let id: LicenseId = id.parse().map_err(|_| license_not_found())?;
    if let Some(claims) = ctx.access.verify(token) {
        let user = claims.sub;
        let license = ctx.store.license(id).await?.ok_or_else(license_not_found)?;
        // Both re-read: a demoted admin or a removed member loses access now.
        if claims.adm
            && ctx
                .store
                .user(user)
                .await?
                .is_some_and(|u| u.platform_admin)
        {
            return Ok((license, Access::PlatformAdmin(user)));
        }
        let role = ctx
            .store
            .memberships(user)
            .await?
            .into_iter()
            .find(|m| m.org_id == license.org_id)
            .map(|m| m.role);
        return match role {
            Some(role) if role.manages() => Ok((license, Access::Manager(user))),
            Some(_) => Err(forbidden()),
            None => Err(license_not_found()),
        };
    }
    if token.starts_with(crate::auth::tokens::API_KEY_PREFIX) {
        // An organization's API key is a valid credential but never a
        // manager (its role is member or guest): another organization's
        // license is unknown to it, its own is forbidden.
        let Principal::ApiKey { org_id, .. } = authenticate(ctx, token).await? else {
            return Err(unauthenticated());
        };
        let license = ctx.store.license(id).await?.ok_or_else(license_not_found)?;
        return Err(if license.org_id == org_id {
            forbidden()
        } else {
            license_not_found()
        });
    }
    if token.contains('.') || validate_license_key(token).is_err() {
        // A JWT that did not verify, or nothing like a key.
        return Err(unauthenticated());
    }
    match ctx.coordinator.license_for_key(token).await {
        Ok(keyed) if keyed.id == id => {
            // Fresh, not the node's cache: the file states the license now.
            let license = ctx.store.license(id).await?.ok_or_else(license_not_found)?;
            Ok((license, Access::Key))
        }
        Ok(_) => Err(license_not_found()),
        Err(CoordinatorError::LicenseNotFound) => Err(unauthenticated()),
        Err(e) => Err(e.into()),
    }
}

/// What the API shows of a machine.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MachineBody {
    #[schema(value_type = uuid::Uuid)]
    id: MachineId,
    #[schema(value_type = uuid::Uuid)]
    license_id: LicenseId,
    hardware_id: String,
    name: Option<String>,
    platform: Option<String>,
    activated_at: DateTime<Utc>,
}

impl From<Machine> for MachineBody {
    fn from(m: Machine) -> Self {
        Self {
            id: m.id,
            license_id: m.license_id,
            hardware_id: m.hardware_id,
            name: m.name,
            platform: m.platform,
            activated_at: m.activated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The license key, as issued.
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
    /// For people: at most 255 printable characters.
    #[serde(default)]
    #[schema(max_length = 255)]
    name: Option<String>,
    /// E.g. `linux-x86_64`: at most 64 printable characters.
    #[serde(default)]
    #[schema(max_length = 64)]
    platform: Option<String>,
}

/// An audit entry of a machine change.
fn machine_audit(
    event: AuditEvent,
    license: &License,
    machine: MachineId,
    actor: Option<UserId>,
    client: ClientInfo,
) -> ActionAudit {
    ActionAudit {
        at: crate::store::now(),
        event,
        actor_id: actor.map(|u| u.0),
        org_id: Some(license.org_id),
        license_id: Some(license.id),
        client,
        detail: Some(format!("machine={machine}")),
    }
}

/// POST /api/v1/licenses/activate
#[utoipa::path(
    post,
    path = "/api/v1/licenses/activate",
    tag = "machines",
    operation_id = "activate_machine",
    summary = "Activate a machine on a license",
    description = "Public: the license key in the body is the credential. Rate-limited per license key (`activate_per_key`). On a license with `max_machines`, only activated machines acquire seats.",
    request_body = ActivateRequest,
    responses(
        (status = 201, description = "The machine is activated.", body = MachineBody),
        (status = 200, description = "The machine was activated already.", body = MachineBody),
        (status = 400, response = BadRequest),
        (status = 403, description = "`license_suspended`, `license_expired` or `license_inactive`.", body = ErrorBody),
        (status = 404, description = "`license_not_found`.", body = ErrorBody),
        (status = 409, description = "`machine_limit_reached`, with `max_machines`: deactivate one first.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn activate(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "activate")
        .and(warp::post())
        .and(json_body::<ActivateRequest>())
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |body: ActivateRequest, client: ClientInfo, ctx: AppContext| async move {
                activate_machine(&ctx, body, client)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn activate_machine(
    ctx: &AppContext,
    body: ActivateRequest,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    validate_license_key(&body.license_key)?;
    validate_hardware_id(&body.hardware_id)?;
    validate_fact(
        body.name.as_deref(),
        MAX_MACHINE_NAME_CHARS,
        "invalid_name",
        "name",
    )?;
    validate_fact(
        body.platform.as_deref(),
        MAX_PLATFORM_CHARS,
        "invalid_platform",
        "platform",
    )?;
    let key = RateKey::of(LicenseKey::normalize(&body.license_key));
    ctx.rate_limit(Limit::ActivatePerKey, &key).await?;
    let license = ctx.coordinator.license_for_key(&body.license_key).await?;
    if let Some(refusal) = license.refusal(Utc::now()) {
        return Err(CoordinatorError::from(refusal).into());
    }
    let new = NewMachine {
        hardware_id: body.hardware_id,
        name: body.name,
        platform: body.platform,
    };
    // The id is known only once inserted; the store fills in the detail.
    let mut audit = machine_audit(
        AuditEvent::MachineActivated,
        &license,
        MachineId::new(),
        None,
        client,
    );
    audit.detail = None;
    match ctx.store.activate_machine(license.id, new, audit).await? {
        Activation::Activated(m) => Ok(warp::reply::with_status(
            warp::reply::json(&MachineBody::from(m)),
            StatusCode::CREATED,
        )
        .into_response()),
        Activation::AlreadyActive(m) => {
            Ok(warp::reply::json(&MachineBody::from(m)).into_response())
        }
        Activation::LimitReached { max_machines } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "machine_limit_reached",
            format!("all {max_machines} machines of this license are activated"),
        )
        .with("max_machines", max_machines)),
        Activation::LicenseNotFound => Err(CoordinatorError::LicenseNotFound.into()),
    }
}

/// GET /api/v1/licenses/{id}/machines
#[utoipa::path(
    get,
    path = "/api/v1/licenses/{id}/machines",
    tag = "machines",
    operation_id = "list_machines",
    summary = "The machines activated on a license",
    description = "An owner's or admin's access token of the license's organization, a platform administrator's, or the license key itself as `Authorization: Bearer <license key>` (organization API keys are not accepted).",
    params(("id" = uuid::Uuid, Path, description = "The license.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every activated machine (never more than a page).", body = MachineList),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a member of the license's organization below admin.", body = ErrorBody),
        (status = 404, description = "`license_not_found`: no such license, another organization's, or another license's key.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_machines(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / String / "machines")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, auth: Option<String>, ctx: AppContext| async move {
                let result: Result<Response, ApiError> = async {
                    let (license, _) = license_access(&ctx, &id, auth.as_deref()).await?;
                    let machines = ctx.store.machines(license.id).await?;
                    let items: Vec<MachineBody> =
                        machines.into_iter().map(MachineBody::from).collect();
                    Ok(warp::reply::json(&serde_json::json!({
                        "license_id": license.id,
                        "max_machines": license.max_machines,
                        "items": items,
                    }))
                    .into_response())
                }
                .await;
                result.map_err(warp::reject::custom)
            },
        )
}

/// DELETE /api/v1/licenses/{id}/machines/{machine_id}
#[utoipa::path(
    delete,
    path = "/api/v1/licenses/{id}/machines/{machine_id}",
    tag = "machines",
    operation_id = "deactivate_machine",
    summary = "Deactivate a machine",
    description = "An owner's or admin's access token of the license's organization, a platform administrator's, or the license key itself as `Authorization: Bearer <license key>` (organization API keys are not accepted). Everyone but platform administrators is held to `licenses.deactivations_per_day` per license.",
    params(("id" = uuid::Uuid, Path, description = "The license."), ("machine_id" = uuid::Uuid, Path, description = "The machine's id from activate or the list.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deactivated.", body = Deactivated),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a member of the license's organization below admin.", body = ErrorBody),
        (status = 404, description = "`license_not_found` (as for the list) or `machine_not_found`.", body = ErrorBody),
        (status = 429, description = "`deactivation_limit_reached`, with `retry_at`: the license's deactivations of the last 24 hours are used up.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds until a deactivation is allowed again."))),
        (status = 503, response = Unavailable),
    )
)]
pub fn deactivate(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / String / "machines" / String)
        .and(warp::delete())
        .and(warp::header::optional::<String>("authorization"))
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String,
             machine: String,
             auth: Option<String>,
             client: ClientInfo,
             ctx: AppContext| async move {
                deactivate_machine(&ctx, &id, &machine, auth.as_deref(), client)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

fn machine_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "machine_not_found",
        "no such machine on this license",
    )
}

async fn deactivate_machine(
    ctx: &AppContext,
    id: &str,
    machine: &str,
    auth: Option<&str>,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let (license, access) = license_access(ctx, id, auth).await?;
    let machine: MachineId = machine.parse().map_err(|_| machine_not_found())?;
    // Platform administrators fix mistakes; everyone else is held to the
    // daily limit, so a license can't be shared by swapping machines.
    let max_per_day = match access {
        Access::PlatformAdmin(_) => None,
        Access::Manager(_) | Access::Key => Some(ctx.licenses.deactivations_per_day),
    };
    let audit = machine_audit(
        AuditEvent::MachineDeactivated,
        &license,
        machine,
        access.user(),
        client,
    );
    match ctx
        .store
        .deactivate_machine(license.id, machine, max_per_day, audit)
        .await?
    {
        Deactivation::Deactivated(m) => Ok(warp::reply::json(&serde_json::json!({
            "id": m.id,
            "license_id": m.license_id,
            "hardware_id": m.hardware_id,
            "deactivated": true,
        }))
        .into_response()),
        Deactivation::NotFound => Err(machine_not_found()),
        Deactivation::LimitReached { retry_at } => {
            let wait = (retry_at - Utc::now()).num_seconds().max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "deactivation_limit_reached",
                format!(
                    "this license allows {} deactivations per 24 hours",
                    ctx.licenses.deactivations_per_day
                ),
            )
            .with("retry_at", retry_at.to_rfc3339());
            e.retry_after_secs = Some(u64::try_from(wait).unwrap_or(1));
            Err(e)
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The license key, as issued.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[!-~]+$",
        example = "CODITECT-D5RA-9NWH-CKX0-TH7D-1WP4"
    )]
    license_key: String,
    /// Also say whether this machine is activated on the license.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    hardware_id: Option<String>,
}

/// All that validate reveals.
#[derive(Debug, Serialize, ToSchema)]
struct ValidateResponse {
    /// Whether the license grants seats now (and, on a license limited to
    /// activated machines, whether this machine is one).
    valid: bool,
    /// `active`, `suspended`, `inactive`, `expired` or `not_found`.
    #[schema(example = "active")]
    status: &'static str,
    /// Absent when the license never expires (or is not found).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    /// Only when `hardware_id` was given and the license exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    machine_activated: Option<bool>,
}

/// POST /api/v1/licenses/validate
#[utoipa::path(
    post,
    path = "/api/v1/licenses/validate",
    tag = "machines",
    operation_id = "validate_license",
    summary = "Whether a license key is valid now",
    description = "Public: the license key in the body is the credential; an unknown key is a 200 with `not_found`. Rate-limited per license key (`validate_per_key`).",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The license's standing.", body = ValidateResponse),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn validate(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / "validate")
        .and(warp::post())
        .and(json_body::<ValidateRequest>())
        .and(with_ctx(ctx))
        .and_then(|body: ValidateRequest, ctx: AppContext| async move {
            validate_license(&ctx, body)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn validate_license(ctx: &AppContext, body: ValidateRequest) -> Result<Response, ApiError> {
    validate_license_key(&body.license_key)?;
    if let Some(hw) = &body.hardware_id {
        validate_hardware_id(hw)?;
    }
    let key = RateKey::of(LicenseKey::normalize(&body.license_key));
    ctx.rate_limit(Limit::ValidatePerKey, &key).await?;
    let license = match ctx.coordinator.license_for_key(&body.license_key).await {
        Ok(l) => l,
        Err(CoordinatorError::LicenseNotFound) => {
            let body = ValidateResponse {
                valid: false,
                status: "not_found",
                expires_at: None,
                machine_activated: None,
            };
            return Ok(warp::reply::json(&body).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let refusal = license.refusal(Utc::now());
    let status = match refusal {
        None => "active",
        Some(r) => CoordinatorError::from(r)
            .code()
            .trim_start_matches("license_"),
    };
    let machine_activated = match &body.hardware_id {
        Some(hw) => Some(ctx.store.machine_activated(license.id, hw).await?),
        None => None,
    };
    let machine_ok = license.max_machines.is_none() || machine_activated != Some(false);
    let body = ValidateResponse {
        valid: refusal.is_none() && machine_ok,
        status,
        expires_at: license.expires_at,
        machine_activated,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// GET /api/v1/licenses/{id}/file
#[utoipa::path(
    get,
    path = "/api/v1/licenses/{id}/file",
    tag = "machines",
    operation_id = "license_file",
    summary = "A signed license file for offline use",
    description = "An owner's or admin's access token of the license's organization, a platform administrator's, or the license key itself as `Authorization: Bearer <license key>` (organization API keys are not accepted). The file is an RS256 JWT verified with the seat-token keys (`kid`), valid `licenses.file_ttl_days`; `Cache-Control: no-store`.",
    params(("id" = uuid::Uuid, Path, description = "The license.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed file.", body = LicenseFileBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden` (a member below admin), or `license_suspended`, `license_expired` or `license_inactive`: no file for a license that grants no seats.", body = ErrorBody),
        (status = 404, description = "`license_not_found`: no such license, another organization's, or another license's key.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn license_file(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "licenses" / String / "file")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, auth: Option<String>, ctx: AppContext| async move {
                signed_file(&ctx, &id, auth.as_deref())
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn signed_file(ctx: &AppContext, id: &str, auth: Option<&str>) -> Result<Response, ApiError> {
    let (license, _) = license_access(ctx, id, auth).await?;
    // A file promises offline use: none for a license that grants no seats.
    if let Some(refusal) = license.refusal(Utc::now()) {
        return Err(CoordinatorError::from(refusal).into());
    }
    let claims = LicenseFileClaims::for_license(&license, Utc::now(), ctx.licenses.file_ttl_days);
    let file = ctx.signer.sign_license_file(&claims).await.map_err(|e| {
        tracing::error!(error = %e, "could not sign a license file");
        ApiError::internal("could not sign the license file")
    })?;
    let body = serde_json::json!({
        "license_id": license.id,
        "license_file": file,
        "kid": ctx.signer.kid(),
        "issued_at": DateTime::from_timestamp(claims.iat, 0),
        "expires_at": DateTime::from_timestamp(claims.exp, 0),
    });
    let mut response = warp::reply::json(&body).into_response();
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use crate::http::principal::bearer_token;

    #[test]
    fn only_bearer_headers_with_a_token_carry_one() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
