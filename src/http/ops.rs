//! Operational endpoints: health checks and Prometheus metrics.

use http::StatusCode;
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
/// Ready means both the database and the seat ledger answer; a load
/// balancer should stop sending traffic to a node that can't reach either.
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
                let body = if db_ok && ledger_ok {
                    json!({"status": "ready", "database": "ok", "ledger": "ok"})
                } else {
                    json!({
                        "error": "not_ready",
                        "message": "a dependency is unavailable",
                        "database": status(db_ok),
                        "ledger": status(ledger_ok),
                    })
                };
                let code = if db_ok && ledger_ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
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
        [".well-known", "jwks.json"] => "/.well-known/jwks.json",
        ["health", "live"] => "/health/live",
        ["health", "ready"] => "/health/ready",
        ["metrics"] => "/metrics",
        _ => "other",
    }
}

/// Records every request's latency and logs it at debug level.
pub fn record_request(info: warp::log::Info<'_>) {
    let route = route_of(info.path());
    let status = info.status().as_u16();
    metrics::histogram!(
        crate::telemetry::REQUEST_DURATION,
        "route" => route,
        "method" => info.method().to_string(),
        "status" => status.to_string(),
    )
    .record(info.elapsed().as_secs_f64());
    tracing::debug!(method = %info.method(), route, status, elapsed_ms = info.elapsed().as_secs_f64() * 1e3, "request");
}

#[cfg(test)]
mod tests {
    use super::route_of;

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
