//! Operational endpoints: health checks, Prometheus metrics, and the
//! operator API over the root's subsystems.

use std::fmt;

use http::StatusCode;
use metrics::SharedString;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::{Subsystem, SubsystemInfo, SubsystemStatus};

use super::openapi::{ErrorBody, Forbidden, ReadyBody, SubsystemLine, SubsystemList, Unauthorized};
use super::{ApiError, AppContext, with_ctx};

/// Who is calling the operator API, once [`operator`] let them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Presented this node's static `ops.token`.
    StaticToken,
    /// A platform administrator's access token.
    PlatformAdmin(seatwarden_actors::domain::UserId),
}

impl Operator {
    /// For logs: who did it, never with what.
    fn label(self) -> String {
        match self {
            Self::StaticToken => "ops.token".to_owned(),
            Self::PlatformAdmin(user) => format!("admin:{user}"),
        }
    }
}

/// The configured `ops.token`, held only as its SHA-256 digest: the server
/// never keeps the token itself past start-up, and comparing two digests
/// of equal length in constant time leaks nothing about the token, not
/// even its length.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    pub fn new(token: &SecretString) -> Self {
        Self(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every byte is compared whatever the first difference: no early exit.
        let diff = self
            .0
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(***)")
    }
}

/// A 401 that tells the client which scheme to use.
fn denied(message: &str) -> ApiError {
    let mut e = ApiError::unauthorized(message);
    e.www_authenticate = Some("Bearer");
    e
}

/// Decides who the caller is. Every refusal is the same 401, whether the
/// header is missing, malformed or wrong, or no `ops.token` is configured:
/// a caller learns nothing about the node's configuration.
async fn authenticate(ctx: &AppContext, header: Option<&str>) -> Result<Operator, ApiError> {
    let Some(token) = header.and_then(super::principal::bearer_token) else {
        return Err(denied(
            "operator credentials required: Authorization: Bearer <token>",
        ));
    };
    if let Some(expected) = &ctx.ops_token
        && expected.matches(token)
    {
        return Ok(Operator::StaticToken);
    }
    // An access token: a platform administrator's is an operator's; anyone
    // else's is known but not allowed. The flag is re-read from the store,
    // so a revoked administrator loses access at once.
    if let Some(claims) = ctx.access.verify(token) {
        let admin = ctx
            .store
            .user(claims.sub)
            .await
            .map_err(ApiError::from)?
            .is_some_and(|u| u.platform_admin);
        return if admin {
            Ok(Operator::PlatformAdmin(claims.sub))
        } else {
            Err(super::principal::forbidden())
        };
    }
    Err(denied("invalid operator credentials"))
}

/// Operator credentials, checked before anything else of an operator
/// endpoint is looked at: the one filter every operator route takes.
pub fn operator(
    ctx: AppContext,
) -> impl Filter<Extract = (Operator,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let ctx = ctx.clone();
        async move {
            authenticate(&ctx, header.as_deref())
                .await
                .map_err(warp::reject::custom)
        }
    })
}

/// GET /api/v1/ops/subsystems
///
/// `{"subsystems": [{name, status, started_at, restarts}, ...]}`, from the
/// root's board: it answers at once even while a restart is under way.
#[utoipa::path(
    get,
    path = "/api/v1/ops/subsystems",
    tag = "ops",
    operation_id = "list_subsystems",
    summary = "The root's subsystems and their status",
    security(("ops_token" = [])),
    responses(
        (status = 200, description = "Every subsystem's line.", body = SubsystemList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
pub fn subsystems(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "ops" / "subsystems")
        .and(warp::get())
        .and(operator(ctx.clone()))
        .map(move |_: Operator| {
            let list = ctx.coordinator.subsystems();
            warp::reply::json(&json!({ "subsystems": list })).into_response()
        })
}

/// POST /api/v1/ops/subsystems/{name}/restart
///
/// Stops the subsystem's subtree and starts it afresh (a `down` one too);
/// answers 200 with its line once it runs again, 404 `subsystem_not_found`
/// for an unknown name, 503 `subsystem_down` when it failed to come back.
#[utoipa::path(
    post,
    path = "/api/v1/ops/subsystems/{name}/restart",
    tag = "ops",
    operation_id = "restart_subsystem",
    summary = "Restart a subsystem, a down one too",
    params(("name" = String, Path, description = "The subsystem: `orgs`, `sweeper`, `watcher`, `mailer`, `webhooks` or `renewals`.")),
    security(("ops_token" = [])),
    responses(
        (status = 200, description = "It runs again: its line.", body = SubsystemLine),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`subsystem_not_found`.", body = ErrorBody),
    )
)]
pub fn restart_subsystem(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "ops" / "subsystems" / String / "restart")
        .and(warp::post())
        .and(operator(ctx.clone()))
        .and(with_ctx(ctx))
        .and_then(|name: String, who: Operator, ctx: AppContext| async move {
            restart(&ctx, &name, who)
                .await
                .map_err(warp::reject::custom)
        })
}

async fn restart(ctx: &AppContext, name: &str, who: Operator) -> Result<Response, ApiError> {
    let Some(which) = Subsystem::from_name(name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "subsystem_not_found",
            format!(
                "no subsystem is called that; known: {}",
                Subsystem::ALL.map(Subsystem::name).join(", ")
            ),
        ));
    };
    tracing::info!(
        subsystem = which.name(),
        operator = who.label(),
        "operator restart"
    );
    let result = ctx.coordinator.restart_subsystem(which).await;
    let line = ctx.coordinator.subsystem(which);
    match result {
        Ok(()) => Ok(warp::reply::json(&line).into_response()),
        Err(e) => {
            tracing::error!(subsystem = which.name(), error = %e, "operator restart failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "subsystem_down",
                format!("{} did not come back; see the server log", which.name()),
            )
            .with("subsystem", json!(line)))
        }
    }
}

/// GET /health/live
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "ops",
    operation_id = "live",
    summary = "Liveness: the process answers",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`.", body = super::openapi::StatusBody),
    )
)]
pub fn live() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response())
}

/// GET /health/ready
///
/// Ready means the seat ledger answers and no subsystem is down:
/// heartbeats, which keep every running app alive, need nothing else. A
/// database outage makes the node `degraded` (still 200; acquire and
/// release answer 503 meanwhile) rather than unready, so that a load
/// balancer doesn't take every node out of rotation at once and turn a
/// partial outage into a total one. A subsystem that is down stays down
/// until an operator restarts it, so the node leaves rotation meanwhile; one
/// that is restarting is back within moments and does not count.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "ops",
    operation_id = "ready",
    summary = "Readiness: the ledger answers and no subsystem is down",
    responses(
        (status = 200, description = "`ready`, or `degraded` while only the database is down.", body = ReadyBody),
        (status = 503, description = "`not_ready`, with `database`, `ledger`, `subsystems` and `down`.", body = ErrorBody),
    )
)]
pub fn ready(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("health" / "ready")
        .and(warp::get())
        .then(move || {
            let ctx = ctx.clone();
            async move {
                let (store, ledger) = tokio::join!(ctx.store.ping(), ctx.ledger.ping());
                let status = |ok: bool| if ok { "ok" } else { "unavailable" };
                let (db_ok, ledger_ok) = (store.is_ok(), ledger.is_ok());
                if let Err(e) = &store {
                    tracing::warn!(error = %e, "readiness: database unavailable");
                }
                if let Err(e) = &ledger {
                    tracing::warn!(error = %e, "readiness: ledger unavailable");
                }
                let subsystems = ctx.coordinator.subsystems();
                let down: Vec<&str> = subsystems
                    .iter()
                    .filter(|s| s.status == SubsystemStatus::Down)
                    .map(|s| s.name)
                    .collect();
                let states = subsystem_states(&subsystems);
                let (code, body) = match (ledger_ok, down.is_empty(), db_ok) {
                    (true, true, true) => (
                        StatusCode::OK,
                        json!({"status": "ready", "database": "ok", "ledger": "ok",
                               "subsystems": states}),
                    ),
                    (true, true, false) => (
                        StatusCode::OK,
                        json!({"status": "degraded", "database": "unavailable", "ledger": "ok",
                               "subsystems": states}),
                    ),
                    (_, _, _) => {
                        let mut reasons = Vec::new();
                        if !ledger_ok {
                            reasons.push("the seat ledger is unavailable".to_owned());
                        }
                        if !down.is_empty() {
                            reasons.push(format!(
                                "subsystem {} down (an operator restart brings it back)",
                                down.join(", ")
                            ));
                        }
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            json!({
                                "error": "not_ready",
                                "message": reasons.join("; "),
                                "database": status(db_ok),
                                "ledger": status(ledger_ok),
                                "subsystems": states,
                                "down": down,
                            }),
                        )
                    }
                };
                warp::reply::with_status(warp::reply::json(&body), code).into_response()
            }
        })
}

/// `{"orgs": "running", ...}`: each subsystem's status, for readiness.
fn subsystem_states(subsystems: &[SubsystemInfo]) -> Value {
    subsystems
        .iter()
        .map(|s| (s.name.to_owned(), json!(s.status.as_str())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// GET /metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Served on the public port unless `http.metrics_listen` moves it to a port of its own.",
    responses(
        (status = 200, description = "The Prometheus text exposition.", content_type = "text/plain; version=0.0.4", body = String),
    )
)]
pub fn metrics(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).then(move || {
        let ctx = ctx.clone();
        async move {
            seatwarden_actors::metrics::subsystem_gauges(&ctx.coordinator.subsystems());
            tokio::join!(borrowed_gauges(&ctx), dependency_gauges(&ctx));
            let mut response = ctx.metrics.render().into_response();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
    })
}

/// Sets `seatwarden_borrowed_sessions` from the store, which is the truth
/// for borrowed seats (they change by the hour, not by the heartbeat): one
/// indexed count per scrape. Licenses counted before and not now go to 0.
/// With the store down the gauges keep their last values; the scrape
/// itself never fails on it.
async fn borrowed_gauges(ctx: &AppContext) {
    use seatwarden_actors::domain::{LicenseId, OrgId};
    use std::collections::HashSet;
    static SEEN: std::sync::Mutex<Option<HashSet<(OrgId, LicenseId)>>> =
        std::sync::Mutex::new(None);
    let counts = match ctx.store.borrowed_counts(chrono::Utc::now()).await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "could not count borrowed seats for /metrics");
            return;
        }
    };
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = seen.get_or_insert_with(HashSet::new);
    let now: HashSet<(OrgId, LicenseId)> = counts.iter().map(|&(o, l, _)| (o, l)).collect();
    for &(org, license) in seen.difference(&now) {
        metrics::gauge!(seatwarden_actors::metrics::BORROWED_SESSIONS,
            "org_id" => org.to_string(), "license_id" => license.to_string())
        .set(0.0);
    }
    for (org, license, n) in counts {
        metrics::gauge!(seatwarden_actors::metrics::BORROWED_SESSIONS,
            "org_id" => org.to_string(), "license_id" => license.to_string())
        .set(f64::from(n));
    }
    *seen = now;
}

/// How long a scrape waits for each dependency before it counts it as down.
const SCRAPE_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets `seatwarden_dependency_up` for the store and the ledger from a ping
/// each, and the outbox backlog gauges (kept at their last values while the
/// store is down, like the borrowed gauges): what the alerts on an
/// unavailable dependency and on mail stuck in the outbox read.
async fn dependency_gauges(ctx: &AppContext) {
    use crate::telemetry::{DEPENDENCY_UP, OUTBOX_OLDEST, OUTBOX_PENDING};
    let (store, ledger, backlog) = tokio::join!(
        tokio::time::timeout(SCRAPE_PROBE, ctx.store.ping()),
        tokio::time::timeout(SCRAPE_PROBE, ctx.ledger.ping()),
        tokio::time::timeout(SCRAPE_PROBE, ctx.store.backlog())
    );
    let up = |ok: bool| if ok { 1.0 } else { 0.0 };
    metrics::gauge!(DEPENDENCY_UP, "dependency" => "store").set(up(matches!(store, Ok(Ok(())))));
    metrics::gauge!(DEPENDENCY_UP, "dependency" => "ledger").set(up(matches!(ledger, Ok(Ok(())))));
    if let Ok(Ok(backlog)) = backlog {
        metrics::gauge!(OUTBOX_PENDING).set(backlog.pending as f64);
        let age = backlog
            .oldest
            .map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64().max(0.0));
        metrics::gauge!(OUTBOX_OLDEST).set(age);
    }
}

/// The route template of a path, so that latency is labelled by endpoint and
/// not by session id.
fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "licenses", "acquire"] => "/api/v1/licenses/acquire",
        ["api", "v1", "licenses", "borrow"] => "/api/v1/licenses/borrow",
        ["api", "v1", "licenses", "queue", _] => "/api/v1/licenses/queue/{ticket}",
        ["api", "v1", "admin", "sessions", _] => "/api/v1/admin/sessions/{id}",
        ["api", "v1", "licenses", "public-key"] => "/api/v1/licenses/public-key",
        ["api", "v1", "licenses", "sessions", _, "heartbeat"] => {
            "/api/v1/licenses/sessions/{id}/heartbeat"
        }
        ["api", "v1", "licenses", "sessions", _] => "/api/v1/licenses/sessions/{id}",
        ["api", "v1", "licenses", _] => "/api/v1/licenses/{id}",
        ["api", "v1", "licenses", _, "sessions"] => "/api/v1/licenses/{id}/sessions",
        ["api", "v1", "licenses", _, "sessions", _] => "/api/v1/licenses/{id}/sessions/{id}",
        ["api", "v1", "orgs"] => "/api/v1/orgs",
        ["api", "v1", "orgs", _] => "/api/v1/orgs/{id}",
        ["api", "v1", "orgs", _, "members"] => "/api/v1/orgs/{id}/members",
        ["api", "v1", "orgs", _, "members", _] => "/api/v1/orgs/{id}/members/{id}",
        ["api", "v1", "orgs", _, "invitations"] => "/api/v1/orgs/{id}/invitations",
        ["api", "v1", "orgs", _, "invitations", _] => "/api/v1/orgs/{id}/invitations/{id}",
        ["api", "v1", "orgs", _, "api-keys"] => "/api/v1/orgs/{id}/api-keys",
        ["api", "v1", "orgs", _, "api-keys", _] => "/api/v1/orgs/{id}/api-keys/{id}",
        ["api", "v1", "orgs", _, "licenses"] => "/api/v1/orgs/{id}/licenses",
        ["api", "v1", "orgs", _, "audit-logs"] => "/api/v1/orgs/{id}/audit-logs",
        ["api", "v1", "invitations", "accept"] => "/api/v1/invitations/accept",
        [".well-known", "jwks.json"] => "/.well-known/jwks.json",
        ["api", "v1", "ops", "subsystems"] => "/api/v1/ops/subsystems",
        ["api", "v1", "ops", "subsystems", _, "restart"] => "/api/v1/ops/subsystems/{name}/restart",
        ["health", "live"] => "/health/live",
        ["health", "ready"] => "/health/ready",
        ["metrics"] => "/metrics",
        _ => "other",
    }
}

/// The method as a metrics label. Clients choose the method, and any token
/// is a valid one (`FOO`), so labels are a fixed set: one time series per
/// custom method would let any client grow the exposition without bound.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a metrics label, without allocating for the statuses this
/// server answers with. Statuses come from our own handlers, not clients.
fn status_label(status: StatusCode) -> SharedString {
    let common = match status.as_u16() {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => return SharedString::from(status.as_str().to_owned()),
    };
    SharedString::const_str(common)
}

/// Records every request's latency and logs it at debug level.
pub fn record_request(info: warp::log::Info<'_>) {
    let route = route_of(info.path());
    let status = info.status();
    metrics::histogram!(
        crate::telemetry::REQUEST_DURATION,
        "route" => route,
        "method" => method_label(info.method()),
        "status" => status_label(status),
    )
    .record(info.elapsed().as_secs_f64());
    tracing::debug!(method = %info.method(), route, status = status.as_u16(), elapsed_ms = info.elapsed().as_secs_f64() * 1e3, "request");
}

#[cfg(test)]
mod tests {
    use super::{method_label, route_of, status_label};
    use http::{Method, StatusCode};

    #[test]
    fn method_labels_are_a_fixed_set_whatever_the_client_sends() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        for custom in ["FOO", "get", "BREW", "CONNECT", "TRACE"] {
            let method = Method::from_bytes(custom.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{custom}");
        }
    }

    #[test]
    fn status_labels_are_the_three_digit_code() {
        assert_eq!(&*status_label(StatusCode::CREATED), "201");
        assert_eq!(&*status_label(StatusCode::REQUEST_TIMEOUT), "408");
        assert_eq!(&*status_label(StatusCode::IM_A_TEAPOT), "418");
    }

    #[test]
    fn session_ids_are_folded_out_of_route_labels() {
        assert_eq!(
            route_of("/api/v1/licenses/sessions/0b6f/heartbeat"),
            "/api/v1/licenses/sessions/{id}/heartbeat"
        );
        assert_eq!(
            route_of("/api/v1/licenses/sessions/0b6f"),
            "/api/v1/licenses/sessions/{id}"
        );
        assert_eq!(route_of("/nope"), "other");
        assert_eq!(
            route_of("/api/v1/ops/subsystems/whatever/restart"),
            "/api/v1/ops/subsystems/{name}/restart"
        );
    }

    #[test]
    fn only_the_configured_token_matches_and_debug_output_hides_it() {
        use super::OperatorToken;
        use crate::http::principal::bearer_token as bearer;
        let token = OperatorToken::new(&"0123456789abcdef-ops".to_owned().into());
        assert!(token.matches("0123456789abcdef-ops"));
        assert!(!token.matches("0123456789abcdef-op"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "OperatorToken(***)");
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
