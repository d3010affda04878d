//! Buying a plan: Stripe Checkout and the Customer Portal for an
//! organization, and what the organization is subscribed to.
//!
//! Payment happens on Stripe's pages; seatwarden learns of it from the
//! `checkout.session.completed` webhook (see `webhooks.rs` and
//! `crate::billing`), never from the browser coming back.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::domain::{BillingInterval, OrgId, PlanId};
use seatwarden_actors::ports::{
    CheckoutRequest, CustomerId, GatewayError, IdempotencyKey, NewCustomer, PaymentGateway, PriceId,
};

use super::openapi::{BadRequest, ErrorBody, PayloadTooLarge, Unauthorized};
use super::orgs::org_not_found;
use super::principal::{Need, Principal, org_access, principal};
use super::{ApiError, AppContext, json_body, with_ctx};

/// `{org_id, plan_id, interval?, success_url, cancel_url}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    #[schema(value_type = String, example = "pro")]
    plan_id: String,
    /// `month` (the default) or `year`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "month")]
    interval: Option<BillingInterval>,
    /// Where Stripe sends the buyer after paying; on an allowed origin.
    success_url: String,
    /// Where Stripe sends the buyer who gives up; on an allowed origin.
    cancel_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutCreated {
    /// Stripe's Checkout Session id, `cs_...`.
    id: String,
    /// Stripe's hosted payment page: send the buyer there.
    url: String,
}

fn billing_disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_disabled",
        "billing is not configured on this server",
    )
}

fn gateway(ctx: &AppContext) -> Result<&dyn PaymentGateway, ApiError> {
    ctx.payments.as_deref().ok_or_else(billing_disabled)
}

/// Stripe's answer as ours: an outage is a 503 to retry; a refusal of a
/// request we built means our configuration is wrong (an unknown price,
/// a revoked key), which the client can't fix: 502, logged.
fn gateway_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::Unavailable(m) => {
            tracing::warn!(error = %m, "Stripe is unavailable");
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_provider_unavailable",
                "the payment provider is unavailable; retry shortly",
            );
            error.retry_after_secs = Some(5);
            error
        }
        other => {
            tracing::error!(error = %other, "Stripe refused a request");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                "the payment provider refused the request; the operator has been told",
            )
        }
    }
}

/// Whether `url` is on one of `origins`: the origin itself, or it followed
/// by `/`, `?` or `#` (so `http://localhost:8080.evil.example` is not on
/// `http://localhost:8080`).
pub fn on_allowed_origin(url: &str, origins: &[String]) -> bool {
    if url.len() > 2048 || url.chars().any(char::is_control) {
        return false;
    }
    origins.iter().any(|origin| {
        url.strip_prefix(origin.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with('/')
                || rest.starts_with('?')
                || rest.starts_with('#')
        })
    })
}

fn check_redirect(ctx: &AppContext, field: &'static str, url: &str) -> Result<(), ApiError> {
    if on_allowed_origin(url, &ctx.billing.allowed_redirect_origins) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_redirect_url",
            format!("{field} must be on one of billing.allowed_redirect_origins"),
        )
        .with("field", field))
    }
}

/// The organization's customer at Stripe: the recorded one, or a new one
/// (recorded; a concurrent checkout's wins, so one org has one customer).
/// Stripe's receipts go to the customer's email: the person who opened the
/// first checkout.
async fn customer(
    ctx: &AppContext,
    gateway: &dyn PaymentGateway,
    org: OrgId,
    buyer: Option<seatwarden_actors::domain::UserId>,
) -> Result<CustomerId, ApiError> {
    if let Some(id) = ctx.store.customer_for_org(org).await? {
        return Ok(CustomerId::new(id));
    }
    let org_row = ctx.store.org(org).await?.ok_or_else(org_not_found)?;
    let email = match buyer {
        Some(user) => ctx.store.user(user).await?.map(|u| u.email),
        None => None,
    }
    .unwrap_or_default();
    let created = gateway
        .create_customer(NewCustomer {
            org_id: org,
            email,
            name: org_row.name,
            idempotency_key: key(&format!("customer:{org}")),
        })
        .await
        .map_err(gateway_error)?;
    let recorded = ctx.store.record_customer(org, created.as_str()).await?;
    Ok(CustomerId::new(recorded))
}

/// An idempotency key from what makes a request the same request.
fn key(what: &str) -> IdempotencyKey {
    let digest: String = Sha256::digest(what.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    IdempotencyKey::new(format!("sw-{}", &digest[..40])).expect("40 hex characters")
}

/// POST /api/v1/checkout/session
#[utoipa::path(
    post,
    path = "/api/v1/checkout/session",
    tag = "billing",
    operation_id = "create_checkout_session",
    summary = "Open a Stripe Checkout for a plan",
    description = "An owner's or admin's access token. Creates (or reuses) the organization's Stripe customer and a subscription-mode Checkout Session for the plan, with the plan's trial and the organization and plan in its metadata. The license is issued when Stripe reports the completed checkout. The same request repeated within ten minutes answers the same session.",
    request_body = CheckoutBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Send the buyer to `url`.", body = CheckoutCreated),
        (status = 400, description = "`invalid_body`, `invalid_redirect_url` (not on `billing.allowed_redirect_origins`), `plan_retired` or `interval_unavailable` (no annual price).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not an owner or admin of the organization (an API key never is).", body = ErrorBody),
        (status = 404, description = "`org_not_found` or `plan_not_found`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, description = "`billing_disabled`: no `stripe.secret_key`; or the payment provider or the store is unavailable.", body = ErrorBody),
    )
)]
pub fn create_checkout(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "checkout" / "session")
        .and(warp::post())
        .and(principal(ctx.clone()))
        .and(json_body::<CheckoutBody>())
        .and(with_ctx(ctx))
        .and_then(
            |who: Principal, body: CheckoutBody, ctx: AppContext| async move {
                checkout(&ctx, &who, body)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn checkout(
    ctx: &AppContext,
    who: &Principal,
    body: CheckoutBody,
) -> Result<Response, ApiError> {
    org_access(ctx, who, body.org_id, Need::Manage, org_not_found).await?;
    check_redirect(ctx, "success_url", &body.success_url)?;
    check_redirect(ctx, "cancel_url", &body.cancel_url)?;
    let plan_not_found = || ApiError::not_found("plan_not_found", "no such plan");
    let plan_id = PlanId::parse(&body.plan_id).map_err(|_| plan_not_found())?;
    let plan = ctx.store.plan(&plan_id).await?.ok_or_else(plan_not_found)?;
    if plan.retired_at.is_some() {
        return Err(ApiError::bad_request(
            "plan_retired",
            "the plan is no longer offered",
        ));
    }
    let interval = body.interval.unwrap_or(BillingInterval::Month);
    let (_, price) = plan.price_for(interval).ok_or_else(|| {
        ApiError::bad_request("interval_unavailable", "the plan has no annual price")
    })?;
    let gateway = gateway(ctx)?;
    let customer = customer(ctx, gateway, body.org_id, who.user_id()).await?;
    // Double clicks within the same ten minutes get the same session.
    let window = Utc::now().timestamp() / 600;
    let idempotency_key = key(&format!(
        "checkout:{}:{}:{:?}:{}:{}:{window}",
        body.org_id, plan.id, interval, body.success_url, body.cancel_url
    ));
    let session = gateway
        .create_checkout_session(CheckoutRequest {
            customer,
            price_id: PriceId::new(price),
            quantity: 1,
            trial_days: (plan.trial_days > 0).then_some(plan.trial_days),
            success_url: body.success_url,
            cancel_url: body.cancel_url,
            metadata: vec![
                ("org_id".into(), body.org_id.to_string()),
                ("plan_id".into(), plan.id.as_str().to_owned()),
            ],
            idempotency_key,
        })
        .await
        .map_err(gateway_error)?;
    let created = CheckoutCreated {
        id: session.id.to_string(),
        url: session.url,
    };
    Ok(warp::reply::json(&created).into_response())
}

/// `{org_id, return_url}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalBody {
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    /// Where the portal sends the customer back; on an allowed origin.
    return_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalCreated {
    /// Stripe's Customer Portal for the organization: short-lived.
    url: String,
}

/// POST /api/v1/billing/portal
#[utoipa::path(
    post,
    path = "/api/v1/billing/portal",
    tag = "billing",
    operation_id = "create_billing_portal",
    summary = "Open the Stripe Customer Portal",
    description = "An owner's or admin's access token. A portal session for the organization's Stripe customer, where payment methods, invoices and cancellation are managed.",
    request_body = PortalBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Send the customer to `url`.", body = PortalCreated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not an owner or admin of the organization.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `customer_not_found`: the organization never opened a checkout.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, description = "`billing_disabled`, or the payment provider or the store is unavailable.", body = ErrorBody),
    )
)]
pub fn create_portal(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "billing" / "portal")
        .and(warp::post())
        .and(principal(ctx.clone()))
        .and(json_body::<PortalBody>())
        .and(with_ctx(ctx))
        .and_then(
            |who: Principal, body: PortalBody, ctx: AppContext| async move {
                portal(&ctx, &who, body).await.map_err(warp::reject::custom)
            },
        )
}

async fn portal(ctx: &AppContext, who: &Principal, body: PortalBody) -> Result<Response, ApiError> {
    org_access(ctx, who, body.org_id, Need::Manage, org_not_found).await?;
    check_redirect(ctx, "return_url", &body.return_url)?;
    let customer = ctx
        .store
        .customer_for_org(body.org_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "customer_not_found",
                "the organization has no billing account yet: open a checkout first",
            )
        })?;
    let url = gateway(ctx)?
        .create_portal_session(&CustomerId::new(customer), &body.return_url)
        .await
        .map_err(gateway_error)?;
    Ok(warp::reply::json(&PortalCreated { url }).into_response())
}

/// An organization's subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionBody {
    /// Stripe's subscription id, `sub_...`.
    id: String,
    plan_id: String,
    /// `month` or `year`.
    interval: String,
    quantity: u32,
    /// Stripe's status: `trialing`, `active`, `past_due`, `canceled`, ...
    status: String,
    current_period_start: DateTime<Utc>,
    current_period_end: DateTime<Utc>,
    trial_end: Option<DateTime<Utc>>,
    /// While a payment is overdue: when the license is suspended unless paid.
    grace_ends_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    #[schema(value_type = uuid::Uuid)]
    license_id: seatwarden_actors::domain::LicenseId,
}

/// GET /api/v1/orgs/{id}/subscription
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/subscription",
    tag = "billing",
    operation_id = "get_org_subscription",
    summary = "The organization's subscription",
    description = "Members and above, and the organization's member keys. The newest subscription, as Stripe last reported it.",
    params(("id" = uuid::Uuid, Path, description = "The organization.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscription.", body = SubscriptionBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a guest.", body = ErrorBody),
        (status = 404, description = "`org_not_found`, or `subscription_not_found`: the organization has none.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub fn get_subscription(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "orgs" / String / "subscription")
        .and(warp::get())
        .and(principal(ctx.clone()))
        .and(with_ctx(ctx))
        .and_then(|id: String, who: Principal, ctx: AppContext| async move {
            subscription(&ctx, &id, &who)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn subscription(ctx: &AppContext, id: &str, who: &Principal) -> Result<Response, ApiError> {
    let org = id
        .parse::<uuid::Uuid>()
        .map(OrgId)
        .map_err(|_| org_not_found())?;
    org_access(ctx, who, org, Need::Licenses, org_not_found).await?;
    let s = ctx.store.subscription_for_org(org).await?.ok_or_else(|| {
        ApiError::not_found(
            "subscription_not_found",
            "the organization has no subscription",
        )
    })?;
    let body = SubscriptionBody {
        id: s.id,
        plan_id: s.plan_id,
        interval: s.interval,
        quantity: s.quantity,
        status: s.status.as_str().to_owned(),
        current_period_start: s.current_period_start,
        current_period_end: s.current_period_end,
        trial_end: s.trial_end,
        grace_ends_at: s.grace_ends_at,
        canceled_at: s.canceled_at,
        license_id: s.license_id,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// Every route of this module.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    create_checkout(ctx.clone())
        .or(create_portal(ctx.clone()))
        .unify()
        .or(get_subscription(ctx))
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_must_be_on_an_allowed_origin_not_merely_start_like_one() {
        let origins = vec!["http://localhost:8080".to_owned()];
        for ok in [
            "http://localhost:8080",
            "http://localhost:8080/",
            "http://localhost:8080/billing/done?x=1",
            "http://localhost:8080?session={CHECKOUT_SESSION_ID}",
        ] {
            assert!(on_allowed_origin(ok, &origins), "{ok}");
        }
        for bad in [
            "http://localhost:8080.evil.example/",
            "http://localhost:80800/",
            "http://localhost:8080@evil.example/",
            "https://localhost:8080/",
            "http://evil.example/?http://localhost:8080",
            "http://localhost:8080/\nx",
            "",
        ] {
            assert!(!on_allowed_origin(bad, &origins), "{bad}");
        }
    }
}
