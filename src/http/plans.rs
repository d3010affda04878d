//! The plan catalogue over HTTP: the public listing and one plan, and the
//! platform administrators' create, change and retire.
//!
//! Reads are public: anyone may see what is for sale. The public listing
//! leaves retired plans out; one plan by id is answered retired or not
//! (with its `retired_at`), since subscriptions on it keep pointing at it.
//! Changes take [`platform_admin`] and are audited with the
//! administrator's id (`PLAN_CREATED`, `PLAN_UPDATED`, `PLAN_RETIRED`).
//!
//! Listings share the shape of every list, `{"items": [...],
//! "next_cursor": null}`, in one page: the catalogue is a handful of rows.

use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warp::Filter;
use warp::reply::Response;

use seatwarden_actors::domain::{
    AuditEvent, ClientInfo, DEFAULT_CURRENCY, InvalidPlan, NewPlan, Plan, PlanId, PlanPatch,
};
use seatwarden_actors::ports::{PlanChange, StoreError};

use super::admin::{PlatformAdmin, admin_audit, nullable, platform_admin};
use super::openapi::{ErrorBody, PayloadTooLarge, PlanBody, Unauthorized, Unavailable};
use super::paging::PageBody;
use super::{ApiError, AppContext, client, json_body, rejected, reply, with_ctx};

/// `/api/v1/plans*` and `/api/v1/admin/plans*`.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    list_plans(ctx.clone())
        .or(get_plan(ctx.clone()))
        .unify()
        .or(admin_list_plans(ctx.clone()))
        .unify()
        .or(create_plan(ctx.clone()))
        .unify()
        .or(update_plan(ctx.clone()))
        .unify()
        .or(retire_plan(ctx))
        .unify()
        .boxed()
}

fn plan_not_found() -> ApiError {
    ApiError::not_found("plan_not_found", "no such plan")
}

/// 400 `invalid_plan`, with the offending `field`.
fn invalid_plan(e: InvalidPlan) -> ApiError {
    ApiError::bad_request("invalid_plan", e.to_string()).with("field", e.field)
}

/// A path's plan id: one that is not a valid slug names no plan (404).
fn plan_id(raw: &str) -> Result<PlanId, ApiError> {
    PlanId::parse(raw).map_err(|_| plan_not_found())
}

fn listing(plans: Vec<Plan>) -> Response {
    PageBody {
        items: plans,
        next_cursor: None,
    }
    .into_response()
}

// ---------------------------------------------------------------------------
// Public reads

/// GET /api/v1/plans
#[utoipa::path(
    get,
    path = "/api/v1/plans",
    tag = "plans",
    operation_id = "list_plans",
    summary = "The plans for sale",
    description = "No credential needed. Every plan that is not retired, by monthly price (then id), in one page.",
    responses(
        (status = 200, description = "The plans; `next_cursor` is always `null`.", body = PageBody<PlanBody>),
        (status = 503, response = Unavailable),
    )
)]
pub fn list_plans(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "plans")
        .and(warp::get())
        .and(with_ctx(ctx))
        .and_then(|ctx: AppContext| async move {
            let plans = ctx
                .store
                .plans(false)
                .await
                .map_err(|e| rejected(e.into()))?;
            Ok::<_, warp::Rejection>(listing(plans))
        })
}

/// GET /api/v1/plans/{id}
#[utoipa::path(
    get,
    path = "/api/v1/plans/{id}",
    tag = "plans",
    operation_id = "get_plan",
    summary = "One plan",
    description = "No credential needed. A retired plan is answered too, with its `retired_at`: subscriptions on it keep their plan.",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,39}$", description = "The plan, e.g. `pro`.")),
    responses(
        (status = 200, description = "The plan.", body = PlanBody),
        (status = 404, description = "`plan_not_found` (also for an id that is not a plan id).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn get_plan(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "plans" / String)
        .and(warp::get())
        .and(with_ctx(ctx))
        .and_then(|id: String, ctx: AppContext| async move {
            let id = plan_id(&id).map_err(rejected)?;
            let plan = ctx
                .store
                .plan(&id)
                .await
                .map_err(|e| rejected(e.into()))?
                .ok_or_else(|| rejected(plan_not_found()))?;
            Ok::<_, warp::Rejection>(reply(StatusCode::OK, &plan))
        })
}

// ---------------------------------------------------------------------------
// Administration

/// GET /api/v1/admin/plans
#[utoipa::path(
    get,
    path = "/api/v1/admin/plans",
    tag = "admin",
    operation_id = "admin_list_plans",
    summary = "Every plan, retired ones included",
    description = "A platform administrator's access token (the flag is re-read from the store). By monthly price (then id), in one page.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plans; `next_cursor` is always `null`.", body = PageBody<PlanBody>),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn admin_list_plans(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "plans")
        .and(warp::get())
        .and(platform_admin(ctx.clone()))
        .and(with_ctx(ctx))
        .and_then(|_: PlatformAdmin, ctx: AppContext| async move {
            let plans = ctx
                .store
                .plans(true)
                .await
                .map_err(|e| rejected(e.into()))?;
            Ok::<_, warp::Rejection>(listing(plans))
        })
}

/// A new plan. The rules are those of `[plans.<id>]` in the configuration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// 1 to 40 lower-case letters, digits and hyphens; never changes.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,39}$", example = "team")]
    id: String,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, example = "Team")]
    name: String,
    /// Lower-case ISO 4217 (`usd` when absent); never changes.
    #[serde(default = "default_currency")]
    #[schema(pattern = "^[a-z]{3}$", default = "usd")]
    currency: String,
    /// In cents.
    #[schema(minimum = 1, maximum = 99999999, example = 4900)]
    monthly_price_cents: i64,
    /// In cents; absent: sold monthly only.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 99999999)]
    annual_price_cents: Option<i64>,
    #[schema(minimum = 1, maximum = 1000000, example = 5)]
    seats: u32,
    /// 14 when absent.
    #[serde(default = "default_trial_days")]
    #[schema(minimum = 0, maximum = 730, default = 14)]
    trial_days: u32,
    /// The Stripe price of monthly billing.
    #[schema(min_length = 1, max_length = 255, example = "price_1QbTeamMonthly")]
    stripe_price_monthly: String,
    /// The Stripe price of annual billing: required exactly when
    /// `annual_price_cents` is given.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    stripe_price_annual: Option<String>,
    /// At most 64, each 1 to 100 characters, no duplicates.
    #[serde(default)]
    #[schema(max_items = 64)]
    features: Vec<String>,
}

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

fn default_trial_days() -> u32 {
    14
}

/// POST /api/v1/admin/plans
#[utoipa::path(
    post,
    path = "/api/v1/admin/plans",
    tag = "admin",
    operation_id = "admin_create_plan",
    summary = "Add a plan",
    description = "A platform administrator's access token (the flag is re-read from the store). Audited as `PLAN_CREATED`.",
    request_body = CreatePlanRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The plan.", body = PlanBody),
        (status = 400, description = "`invalid_body` (also for unknown fields and wrong types), or `invalid_plan` with `field` naming what breaks a rule.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 409, description = "`plan_exists`: a plan (retired or not) has that id.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn create_plan(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "plans")
        .and(warp::post())
        .and(platform_admin(ctx.clone()))
        .and(json_body::<CreatePlanRequest>())
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |admin: PlatformAdmin, body: CreatePlanRequest, client: ClientInfo, ctx: AppContext| async move {
                create(&ctx, admin, body, client).await.map_err(rejected)
            },
        )
}

async fn create(
    ctx: &AppContext,
    admin: PlatformAdmin,
    body: CreatePlanRequest,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let plan = NewPlan {
        id: PlanId::parse(&body.id).map_err(invalid_plan)?,
        name: body.name,
        currency: body.currency,
        monthly_price_cents: body.monthly_price_cents,
        annual_price_cents: body.annual_price_cents,
        seats: body.seats,
        trial_days: body.trial_days,
        stripe_price_monthly: body.stripe_price_monthly,
        stripe_price_annual: body.stripe_price_annual,
        features: body.features,
    };
    plan.validate().map_err(invalid_plan)?;
    let audit = admin_audit(AuditEvent::PlanCreated, admin, client);
    match ctx.store.create_plan(plan, audit).await {
        Ok(plan) => Ok(reply(StatusCode::CREATED, &plan)),
        Err(StoreError::Conflict(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "plan_exists",
            "a plan with that id exists (retired plans keep their id)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// At least one field; an absent field stays as it is. The id and the
/// currency never change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatchRequest {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// In cents. Subscriptions keep the price they were bought at.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 99999999)]
    monthly_price_cents: Option<i64>,
    /// In cents; `null` stops annual billing (send `stripe_price_annual:
    /// null` with it).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 99999999)]
    annual_price_cents: Option<Option<i64>>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    stripe_price_monthly: Option<String>,
    /// Set exactly when the plan has an annual price.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    stripe_price_annual: Option<Option<String>>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000000)]
    seats: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 730)]
    trial_days: Option<u32>,
    /// Replaces the whole list.
    #[serde(default)]
    #[schema(max_items = 64)]
    features: Option<Vec<String>>,
}

/// PATCH /api/v1/admin/plans/{id}
#[utoipa::path(
    patch,
    path = "/api/v1/admin/plans/{id}",
    tag = "admin",
    operation_id = "admin_update_plan",
    summary = "Change a plan",
    description = "A platform administrator's access token (the flag is re-read from the store). The plan with the change applied must keep every rule; a retired plan may be changed and stays retired. Audited as `PLAN_UPDATED`.",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,39}$", description = "The plan.")),
    request_body = PlanPatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plan as changed.", body = PlanBody),
        (status = 400, description = "`invalid_body` (also for unknown fields, `id` and `currency` among them, and wrong types), `empty_update`, or `invalid_plan` with `field`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 404, description = "`plan_not_found`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn update_plan(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "plans" / String)
        .and(warp::patch())
        .and(platform_admin(ctx.clone()))
        .and(json_body::<PlanPatchRequest>())
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String,
             admin: PlatformAdmin,
             body: PlanPatchRequest,
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
    body: PlanPatchRequest,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let id = plan_id(id)?;
    let patch = PlanPatch {
        name: body.name,
        monthly_price_cents: body.monthly_price_cents,
        annual_price_cents: body.annual_price_cents,
        stripe_price_monthly: body.stripe_price_monthly,
        stripe_price_annual: body.stripe_price_annual,
        seats: body.seats,
        trial_days: body.trial_days,
        features: body.features,
    };
    if patch.is_empty() {
        return Err(ApiError::bad_request(
            "empty_update",
            "give at least one of name, monthly_price_cents, annual_price_cents, \
             stripe_price_monthly, stripe_price_annual, seats, trial_days, features",
        ));
    }
    let audit = admin_audit(AuditEvent::PlanUpdated, admin, client);
    match ctx.store.update_plan(&id, &patch, audit).await? {
        PlanChange::Changed(plan) => Ok(reply(StatusCode::OK, &plan)),
        PlanChange::NotFound => Err(plan_not_found()),
        PlanChange::Invalid(e) => Err(invalid_plan(e)),
    }
}

/// POST /api/v1/admin/plans/{id}/retire
#[utoipa::path(
    post,
    path = "/api/v1/admin/plans/{id}/retire",
    tag = "admin",
    operation_id = "admin_retire_plan",
    summary = "Stop offering a plan",
    description = "A platform administrator's access token (the flag is re-read from the store). The plan leaves the public listing but stays readable by id; subscriptions on it keep it. Idempotent: retiring again answers the plan with its first `retired_at`. Audited as `PLAN_RETIRED` (once). No body.",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,39}$", description = "The plan.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plan, retired.", body = PlanBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform administrator (an API key never is).", body = ErrorBody),
        (status = 404, description = "`plan_not_found`.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn retire_plan(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "admin" / "plans" / String / "retire")
        .and(warp::post())
        .and(platform_admin(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(with_ctx(ctx))
        .and_then(
            |id: String, admin: PlatformAdmin, client: ClientInfo, ctx: AppContext| async move {
                let id = plan_id(&id).map_err(rejected)?;
                let audit = admin_audit(AuditEvent::PlanRetired, admin, client);
                let plan = ctx
                    .store
                    .retire_plan(&id, Utc::now(), audit)
                    .await
                    .map_err(|e| rejected(e.into()))?
                    .ok_or_else(|| rejected(plan_not_found()))?;
                Ok::<_, warp::Rejection>(reply(StatusCode::OK, &plan))
            },
        )
}
