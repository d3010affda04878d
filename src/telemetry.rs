//! Logging and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global tracing subscriber: `RUST_LOG` if set, else the
/// configured level. Logs go to stderr so CLI commands keep stdout for JSON.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn,hyper=warn", settings.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Counter, by `result` (`created`, `renewed` or an error code).
pub const ACQUIRES: &str = "seatwarden_acquire_total";
/// Counter, by `result` (`ok` or an error code).
pub const HEARTBEATS: &str = "seatwarden_heartbeat_total";
/// Counter, by `result` (`ok` or an error code).
pub const RELEASES: &str = "seatwarden_release_total";
/// Counter, by `limit`: requests refused by a rate limit.
pub const RATE_LIMITED: &str = "seatwarden_rate_limited_total";
/// Counter, by `reason` (a fixed set): webhook deliveries refused before
/// anything was recorded (bad or stale signatures, bodies that are no event).
pub const WEBHOOKS_REFUSED: &str = "seatwarden_webhooks_refused_total";
/// Counter, by `limit`: rate-limit checks that Redis failed, answered by
/// the limit's outage policy instead.
pub const RATE_LIMIT_ERRORS: &str = "seatwarden_rate_limit_errors_total";
/// Gauge, by `dependency` (`store`, `ledger`): 1 when it answered the
/// last scrape's ping, else 0.
pub const DEPENDENCY_UP: &str = "seatwarden_dependency_up";
/// Gauge: mail pending in the outbox (not yet delivered nor given up).
pub const OUTBOX_PENDING: &str = "seatwarden_outbox_pending";
/// Gauge: age in seconds of the oldest pending mail, 0 when none.
pub const OUTBOX_OLDEST: &str = "seatwarden_outbox_oldest_seconds";
/// Histogram, by `route`, `method` and `status`.
pub const REQUEST_DURATION: &str = "seatwarden_http_request_duration_seconds";

/// Latency buckets from 0.5 ms to 10 s: acquire signs an RSA token (a few
/// ms), heartbeats take well under one.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the time a queued machine waited for its seat: seconds to an
/// hour. A histogram (not the exporter's default summary) so that nodes
/// aggregate.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The process-wide Prometheus recorder. The `metrics` facade has one global
/// recorder, so it is installed once and shared by every server in the
/// process (tests run several).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .expect("latency buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full(seatwarden_actors::metrics::QUEUE_WAIT.into()),
                    QUEUE_WAIT_BUCKETS,
                )
                .expect("queue-wait buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // Without the exporter's own HTTP listener, someone has to drain
            // histogram buffers now and then.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            metrics::describe_counter!(ACQUIRES, "Acquire requests by result");
            metrics::describe_counter!(HEARTBEATS, "Heartbeat requests by result");
            metrics::describe_counter!(RELEASES, "Release requests by result");
            metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by limit");
            metrics::describe_counter!(
                WEBHOOKS_REFUSED,
                "Webhook deliveries refused before recording, by reason"
            );
            metrics::describe_counter!(
                RATE_LIMIT_ERRORS,
                "Rate-limit checks Redis failed (the limit's outage policy answered), by limit"
            );
            metrics::describe_gauge!(
                DEPENDENCY_UP,
                "1 when the dependency (store, ledger) answered the last scrape's ping"
            );
            metrics::describe_gauge!(OUTBOX_PENDING, "Mail pending in the outbox");
            metrics::describe_gauge!(
                OUTBOX_OLDEST,
                metrics::Unit::Seconds,
                "Age of the oldest pending mail, 0 when none"
            );
            metrics::describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "HTTP request latency by route, method and status"
            );
            handle
        })
        .clone()
}
