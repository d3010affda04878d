//! The OpenAPI 3.1 document of every route, generated from the code with
//! utoipa and served at `GET /api/v1/openapi.json`.
//!
//! Each endpoint's filter fn carries a `#[utoipa::path(...)]` next to its
//! `/// METHOD /path` doc line, and is named once in [`ApiDoc`]'s
//! `paths(...)`. Adding a route to the document is those two steps;
//! `tests/openapi.rs` fails until both are done, and fails too when a
//! documented response code is one no request in its table produces.
//!
//! Why utoipa and not a hand-written YAML file: the request and response
//! bodies are the structs serde reads and writes, so their schemas cannot
//! drift from what the server accepts. What the macros cannot see (which
//! statuses a handler answers with) the conformance test checks against
//! a running server.
//!
//! No documentation UI is served: the usual Swagger UI crate downloads its
//! assets at build time. Point any OpenAPI viewer at the JSON instead.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder, Type, response::Response,
};
use utoipa::{Modify, OpenApi, ToSchema};
use warp::Filter;
use warp::reply::{Reply, Response as WarpResponse};

/// The document: every route's operation, the shared error responses and
/// the three security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "seatwarden",
        description = "Floating-license seat coordinator: seats, machines, accounts, organizations, platform administration and operations.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::licenses::acquire,
        super::licenses::borrow,
        super::licenses::queue_status,
        super::licenses::queue_leave,
        super::licenses::heartbeat,
        super::licenses::heartbeat_patch,
        super::licenses::release,
        super::licenses::public_key,
        super::licenses::jwks,
        super::auth::register,
        super::auth::verify_email,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::me,
        super::auth::forgot_password,
        super::auth::reset_password,
        super::ops::subsystems,
        super::ops::restart_subsystem,
        super::ops::live,
        super::ops::ready,
        super::ops::metrics,
        super::orgs::list_orgs,
        super::orgs::get_org,
        super::orgs::rename_org,
        super::orgs::list_members,
        super::orgs::set_member_role,
        super::orgs::remove_member,
        super::orgs::create_invitation,
        super::orgs::list_invitations,
        super::orgs::revoke_invitation,
        super::orgs::accept_invitation,
        super::orgs::list_api_keys,
        super::orgs::create_api_key,
        super::orgs::revoke_api_key,
        super::orgs::audit_logs,
        super::org_licenses::list_licenses,
        super::org_licenses::get_license,
        super::org_licenses::list_sessions,
        super::org_licenses::force_release,
        super::machines::activate,
        super::machines::list_machines,
        super::machines::deactivate,
        super::machines::validate,
        super::machines::license_file,
        super::admin::list_users,
        super::admin::list_orgs,
        super::admin::list_licenses,
        super::admin::issue_license,
        super::admin::update_license,
        super::admin::analytics,
        super::admin::list_emails,
        super::admin::revoke_session,
        super::plans::list_plans,
        super::plans::get_plan,
        super::plans::admin_list_plans,
        super::plans::create_plan,
        super::plans::update_plan,
        super::plans::retire_plan,
        super::billing::create_checkout,
        super::billing::create_portal,
        super::billing::get_subscription,
        super::webhooks::stripe_webhook,
        super::webhooks::list_events,
        super::webhooks::replay_event,
        openapi_json,
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            PayloadTooLarge,
            RateLimited,
            Unavailable
        )
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "seats", description = "Acquire, heartbeat and release seats; the keys that verify seat tokens."),
        (name = "machines", description = "Activate and deactivate machines, validate a license key, signed license files."),
        (name = "auth", description = "Accounts: register, verify, log in, refresh, log out, reset a password."),
        (name = "orgs", description = "Organizations from the inside: members and roles, invitations, API keys, the audit log."),
        (name = "licenses", description = "An organization's licenses and their sessions; force-release."),
        (name = "plans", description = "The plan catalogue: what is for sale, at what price, with how many seats."),
        (name = "billing", description = "Buying a plan: Stripe Checkout, the Customer Portal, the organization's subscription, and Stripe's webhook endpoint."),
        (name = "admin", description = "Platform administration across organizations."),
        (name = "ops", description = "Health, metrics and the operator API."),
    )
)]
pub struct ApiDoc;

/// The body of every error: a stable machine-readable code and a message
/// for people. Some errors add fields (`seats_used` and `max_seats` on
/// `no_seats_available`, `end_reason` on `session_ended`), which the
/// schema allows by not closing the object.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "license_not_found", "message": "license not found"}))]
pub struct ErrorBody {
    /// A stable code, e.g. `no_seats_available`, `rate_limited`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `{"status": "accepted", "message": ...}`: register and forgot-password
/// answer this whether or not the address has an account.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBody {
    #[schema(example = "accepted")]
    pub status: String,
    pub message: String,
}

/// `{"status": ...}` of a completed step, e.g. `verified`, `password_reset`,
/// `ok`.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    pub status: String,
}

/// The body of a ready or degraded `/health/ready` (the database is down but
/// heartbeats go on).
#[derive(Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `degraded`.
    #[schema(example = "ready")]
    pub status: String,
    /// `ok` or `unavailable`.
    pub database: String,
    /// `ok` while ready.
    pub ledger: String,
    /// Each subsystem's status, e.g. `{"orgs": "running"}`.
    pub subsystems: std::collections::BTreeMap<String, String>,
}

/// One subsystem on the root's board.
#[derive(Serialize, ToSchema)]
pub struct SubsystemLine {
    pub name: String,
    /// `running`, `restarting` or `down`.
    pub status: String,
    /// When the current (or, when down, the last) incarnation started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Restarts since this node started, after failures and by operators.
    pub restarts: u32,
}

/// The body of the subsystem list.
#[derive(Serialize, ToSchema)]
pub struct SubsystemList {
    pub subsystems: Vec<SubsystemLine>,
}

/// One RSA signing key as a JWK.
#[derive(Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "RSA")]
    pub kty: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
    #[schema(example = "RS256")]
    pub alg: String,
    pub kid: String,
    /// The modulus, base64url without padding.
    pub n: String,
    /// The exponent, base64url without padding.
    pub e: String,
}

/// The keys seat tokens are signed with.
#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// The body of a machine list: `GET /api/v1/licenses/{id}/machines`.
#[derive(Serialize, ToSchema)]
pub struct MachineList {
    #[schema(value_type = uuid::Uuid)]
    pub license_id: seatwarden_actors::domain::LicenseId,
    /// The license's machine limit; `null` when any machine may acquire.
    pub max_machines: Option<u32>,
    pub items: Vec<super::machines::MachineBody>,
}

/// The answer to a machine's deactivation.
#[derive(Serialize, ToSchema)]
pub struct Deactivated {
    /// The machine's id.
    pub id: uuid::Uuid,
    pub license_id: uuid::Uuid,
    pub hardware_id: String,
    /// Always `true`.
    pub deactivated: bool,
}

/// A signed license file and when it was issued.
#[derive(Serialize, ToSchema)]
pub struct LicenseFileBody {
    pub license_id: uuid::Uuid,
    /// An RS256 JWT: the license's tier, features, seats, machine limit,
    /// status and expiry, signed with the seat-token key `kid`.
    pub license_file: String,
    /// The signing key's id in the JWKS.
    pub kid: String,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// When the file stops being valid: fetch a fresh one before.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A user as platform administrators see one.
#[derive(Serialize, ToSchema)]
pub struct AdminUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub full_name: String,
    pub email_verified: bool,
    pub platform_admin: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An organization as platform administrators see one.
#[derive(Serialize, ToSchema)]
pub struct AdminOrg {
    pub id: uuid::Uuid,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A license as stored (the key only as its hint).
#[derive(Serialize, ToSchema)]
pub struct LicenseRecord {
    pub id: uuid::Uuid,
    pub org_id: uuid::Uuid,
    /// The key's last characters, for people to tell keys apart.
    pub key_hint: String,
    pub seats: u32,
    pub tier: String,
    pub features: Vec<String>,
    /// `active`, `suspended` or `inactive`.
    #[schema(example = "active")]
    pub status: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `null`: the server's default (`seats.offline_grace_secs`).
    pub offline_grace_secs: Option<u32>,
    pub offline_overdraft: u32,
    /// `null`: any machine may acquire.
    pub max_machines: Option<u32>,
    pub requires_user: bool,
}

/// A license just issued, with its key: shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedLicense {
    #[serde(flatten)]
    pub license: LicenseRecord,
    /// The license key. The server keeps only its hash.
    pub key: String,
}

/// The platform's numbers.
#[derive(Serialize, ToSchema)]
pub struct Analytics {
    pub orgs: u64,
    pub users: u64,
    /// Users created since the first of this month (UTC).
    pub signups_this_month: u64,
    /// Licenses that are active and not expired.
    pub active_licenses: u64,
    /// The seats of those licenses.
    pub seats_total: u64,
    /// Open sessions on those licenses.
    pub seats_in_use: u64,
    /// `seats_in_use / seats_total`, rounded to four decimals; 0 without seats.
    pub seat_utilisation: f64,
    /// Monthly recurring revenue in cents, from subscription records at
    /// their plans' prices: active and past-due subscriptions, annual
    /// prices divided by 12; trials are not revenue yet.
    pub mrr_cents: i64,
    /// `mrr_cents * 12`.
    pub arr_cents: i64,
    pub subscriptions: SubscriptionTally,
    /// Subscriptions created since the first of this month (UTC).
    pub new_subscriptions_this_month: u64,
    /// Subscriptions ended since the first of this month.
    pub churned_subscriptions_this_month: u64,
    /// Churned this month over those subscribed at its start, four
    /// decimals; 0 when none were.
    pub churn_rate: f64,
    /// Each plan's paying subscriptions and MRR, highest MRR first.
    pub revenue_by_plan: Vec<PlanRevenueBody>,
}

/// Subscriptions by status.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionTally {
    pub active: u64,
    pub trialing: u64,
    pub past_due: u64,
}

/// One plan's share of the revenue.
#[derive(Serialize, ToSchema)]
pub struct PlanRevenueBody {
    pub plan_id: String,
    pub plan_name: String,
    pub currency: String,
    /// Its active and past-due subscriptions.
    pub subscriptions: u64,
    pub mrr_cents: i64,
}

/// One message of the email log: its delivery record, never its data.
#[derive(Serialize, ToSchema)]
pub struct EmailEntry {
    pub id: uuid::Uuid,
    /// `verify`, `welcome`, `account_exists`, `password_reset`,
    /// `invitation` or `account_locked`.
    #[schema(example = "verify")]
    pub kind: String,
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    #[schema(example = "sent")]
    pub status: String,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// The last failure, kept after a later success.
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// While pending: when the message is next due. Once settled: when it was.
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A plan of the catalogue.
#[derive(Serialize, ToSchema)]
pub struct PlanBody {
    /// The plan's id, e.g. `pro`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,39}$", example = "pro")]
    pub id: String,
    #[schema(example = "Pro")]
    pub name: String,
    /// Lower-case ISO 4217.
    #[schema(example = "usd")]
    pub currency: String,
    /// In cents.
    #[schema(example = 9900)]
    pub monthly_price_cents: i64,
    /// In cents; `null` when the plan is sold monthly only.
    #[schema(example = 99000)]
    pub annual_price_cents: Option<i64>,
    /// Seats a subscription's license gets.
    #[schema(example = 10)]
    pub seats: u32,
    #[schema(example = 14)]
    pub trial_days: u32,
    /// The Stripe price checkout uses for monthly billing.
    #[schema(example = "price_pro_monthly")]
    pub stripe_price_monthly: String,
    /// The Stripe price for annual billing; `null` with `annual_price_cents`.
    #[schema(example = "price_pro_annual")]
    pub stripe_price_annual: Option<String>,
    pub features: Vec<String>,
    /// When the plan stopped being offered; `null` while it is.
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A shared error response: the [`ErrorBody`] schema by reference, with
/// the headers that status carries.
fn error_response(description: &str, headers: &[(&str, &str)]) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    for (name, what) in headers {
        let kind = if name.eq_ignore_ascii_case("retry-after") {
            Type::Integer
        } else {
            Type::String
        };
        let header = HeaderBuilder::new()
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(kind),
            ))
            .description(Some(*what))
            .build();
        response = response.header(*name, header);
    }
    response.build().into()
}

/// The error responses many operations share, as `components.responses`.
macro_rules! shared_error {
    ($name:ident, $description:literal $(, $header:literal = $what:literal)*) => {
        #[doc = $description]
        pub struct $name;
        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, &[$(($header, $what)),*]))
            }
        }
    };
}

shared_error!(
    BadRequest,
    "The request is malformed: `invalid_body` (unknown fields too), or a field-specific code such as `invalid_email`."
);
shared_error!(
    Unauthorized,
    "A credential is missing, malformed, unknown or expired.",
    "WWW-Authenticate" = "The scheme to use: `Bearer`."
);
shared_error!(
    Forbidden,
    "The credential is valid but does not allow this."
);
shared_error!(
    PayloadTooLarge,
    "`payload_too_large`: the body is over 16 KiB (chunked or not)."
);
shared_error!(
    RateLimited,
    "`rate_limited`: over a rate limit.",
    "Retry-After" = "Whole seconds to wait before retrying."
);
shared_error!(
    Unavailable,
    "A dependency is down or the server is busy (`store_unavailable`, `ledger_unavailable`, `busy`); retry after `Retry-After`.",
    "Retry-After" = "Whole seconds to wait before retrying."
);

/// The three ways a caller proves who it is. All are `Authorization:
/// Bearer`; they differ in what the token is.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = |format: &str, what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(what))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            bearer(
                "JWT",
                "An access token from login or refresh; where an operation says so, an organization's API key or the license key.",
            ),
        );
        components.add_security_scheme(
            "seat_token",
            bearer(
                "JWT",
                "The seat token acquire returned, for that session only.",
            ),
        );
        components.add_security_scheme(
            "ops_token",
            bearer(
                "opaque",
                "The node's `ops.token`; a platform administrator's access token is accepted too.",
            ),
        );
    }
}

/// The document as served: serialized once, on first use.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// GET /api/v1/openapi.json
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    operation_id = "openapi",
    summary = "This document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object),
    )
)]
pub fn openapi_json() -> impl Filter<Extract = (WarpResponse,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| {
            let mut response = document().into_response();
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=300"),
            );
            response
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids() {
        let doc: Value = serde_json::from_str(super::document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(ids.insert(id.to_owned()), "{method} {path}: {id} twice");
            }
        }
        for scheme in ["bearer", "seat_token", "ops_token"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
    }
}
