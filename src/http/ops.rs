//! Operational endpoints: health checks and Prometheus metrics.

use http::StatusCode;
use metrics::SharedString;
use serde_json::json;
use warp::Filter;
use warp::reply::{Reply, Response};

use super::AppContext;

/// GET /health/live
pub fn live() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response())
}

/// GET /health/ready
///
/// Ready means the seat ledger answers: heartbeats, which keep every running
/// app alive, need nothing else. A database outage makes the node
/// `degraded` (still 200; acquire and release answer 503 meanwhile) rather
/// than unready, so that a load balancer doesn't take every node out of
/// rotation at once and turn a partial outage into a total one.
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
                let (code, body) = match (ledger_ok, db_ok) {
                    (true, true) => (
                        StatusCode::OK,
                        json!({"status": "ready", "database": "ok", "ledger": "ok"}),
                    ),
                    (true, false) => (
                        StatusCode::OK,
                        json!({"status": "degraded", "database": "unavailable", "ledger": "ok"}),
                    ),
                    (false, _) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({
                            "error": "not_ready",
                            "message": "the seat ledger is unavailable",
                            "database": status(db_ok),
                            "ledger": "unavailable",
                        }),
                    ),
                };
                warp::reply::with_status(warp::reply::json(&body), code).into_response()
            }
        })
}

/// GET /metrics
pub fn metrics(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        let mut response = ctx.metrics.render().into_response();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    })
}

/// The route template of a path, so that latency is labelled by endpoint and
/// not by session id.
fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "licenses", "acquire"] => "/api/v1/licenses/acquire",
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
    }
}
