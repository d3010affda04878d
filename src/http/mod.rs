//! The HTTP API: one filter function per endpoint, one `recover`, and a
//! hyper-util accept loop of our own.
//!
//! Why our own loop rather than `warp::serve`: warp 0.4 no longer hands
//! filters the peer address, and we record every client's IP with its
//! session. The loop puts the peer address into the request's extensions,
//! where [`client`] finds it; it also gives us graceful shutdown on a
//! future of our choosing, as `run(listener, shutdown)` in mini-redis.
//!
//! The loop also enforces [`ServeLimits`]: a deadline for request heads, a
//! cap on open connections, and an idle timeout; the body deadline is
//! enforced where bodies are read, in [`json_body`].
//!
//! Every response, errors and 404s included, leaves through [`finish`],
//! which adds the security headers; rate limits are applied per route
//! with [`AppState::rate_limit`] or [`rate_limit_by_ip`].

mod admin;
mod allow;
mod auth;
pub use auth::validate_email;
mod billing;
mod error;
mod licenses;
mod machines;
mod openapi;
mod ops;
mod org_licenses;
mod orgs;
mod paging;
mod plans;
pub mod principal;
mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;
use warp::Filter;

use seatwarden_actors::Coordinator;
use seatwarden_actors::domain::ClientInfo;
use seatwarden_actors::ports::{SeatLedger, Store};

use crate::config::{ClientIpSource, HttpSettings};
use crate::ratelimit::{Decision, Limit, RateKey, RateLimiter};
use crate::signing::keys::SigningKeys;

pub use error::ApiError;
pub use ops::{Operator, OperatorToken};

/// Request bodies are small JSON documents; anything larger is refused
/// before it is read in full.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppContext(Arc<AppState>);

impl AppContext {
    pub fn new(state: AppState) -> Self {
        Self(Arc::new(state))
    }
}

/// Every filter takes the context by value, once per request: one shared
/// allocation keeps that to a single reference count.
impl std::ops::Deref for AppContext {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// What the handlers share, behind [`AppContext`].
pub struct AppState {
    pub coordinator: Coordinator,
    pub signer: SigningKeys,
    pub store: Arc<dyn Store>,
    pub ledger: Arc<dyn SeatLedger>,
    pub metrics: PrometheusHandle,
    pub heartbeat_interval_secs: u64,
    pub client_ip: ClientIpSource,
    /// Issues and checks access tokens (never seat tokens).
    pub access: crate::auth::AccessTokens,
    pub auth: crate::config::AuthSettings,
    /// `[licenses]`: license files and machine deactivations.
    pub licenses: crate::config::LicenseSettings,
    /// `ops.token`, as a digest; `None` refuses every operator call.
    pub ops_token: Option<OperatorToken>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// `rate_limits.heartbeat_per_session`, enforced by the seat ledger in
    /// the heartbeat's own call rather than by `rate_limiter`, so that a
    /// heartbeat costs one round trip (see [`seatwarden_actors::ports::Throttle`]).
    pub heartbeat_throttle: Option<seatwarden_actors::ports::Throttle>,
    /// Stripe's API; `None` while billing is off (`stripe.secret_key` unset).
    pub payments: Option<Arc<dyn seatwarden_actors::ports::PaymentGateway>>,
    /// `[billing]`: where checkout may send people back to.
    pub billing: crate::config::BillingSettings,
    /// `stripe.webhook_secret` and `stripe.previous_webhook_secret`, current
    /// first; empty while billing is off.
    pub stripe_webhook_secrets: Vec<secrecy::SecretString>,
    /// `http.hsts`: send `Strict-Transport-Security`.
    pub hsts: bool,
}

impl AppState {
    /// Counts one request of `key` under `limit`: `Ok` when it may go on,
    /// else the 429 `rate_limited` error with its `Retry-After`. Applying a
    /// limit to a route is this one line in its handler:
    ///
    /// ```ignore
    /// ctx.rate_limit(Limit::LoginPerAccount, &RateKey::of(email)).await?;
    /// ```
    pub async fn rate_limit(&self, limit: Limit, key: &RateKey) -> Result<(), ApiError> {
        match self.rate_limiter.check(limit, key).await {
            Decision::Allowed => Ok(()),
            Decision::Limited { retry_after } => Err(error::rate_limited(retry_after)),
        }
    }
}

/// A filter that counts each request under `limit` by its client IP (as
/// `http.client_ip` says) and rejects it with 429 when over: the one line
/// for per-IP limits, `.and(rate_limit_by_ip(&ctx, Limit::RegisterPerIp))`.
pub fn rate_limit_by_ip(
    ctx: &AppContext,
    limit: Limit,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone + use<> {
    limit_by_ip(ctx.rate_limiter.clone(), ctx.client_ip, limit)
}

fn limit_by_ip(
    limiter: Arc<dyn RateLimiter>,
    source: ClientIpSource,
    limit: Limit,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    client(source)
        .and_then(move |client: ClientInfo| {
            let limiter = limiter.clone();
            async move {
                let key = RateKey::of(client.ip.unwrap_or_default());
                match limiter.check(limit, &key).await {
                    Decision::Allowed => Ok(()),
                    Decision::Limited { retry_after } => {
                        Err(warp::reject::custom(error::rate_limited(retry_after)))
                    }
                }
            }
        })
        .untuple_one()
}

/// The peer address of the connection a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// How long a request's body may take to arrive. [`serve`] puts it into
/// every request's extensions, where [`json_body`] finds it, so the limit
/// needs no plumbing through each endpoint's filter.
#[derive(Clone, Copy, Debug)]
struct BodyTimeout(Duration);

/// Counter: connections closed at accept because `max_connections` were open.
const CONNECTIONS_REFUSED: &str = "seatwarden_http_connections_refused_total";

/// What [`serve`] enforces on every connection, from the `[http]` settings.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Every connection must start its first request within this of being
    /// accepted, and each HTTP/1 request head (request line and headers)
    /// must arrive within this. The latter is hyper's header-read timer,
    /// which also runs while an HTTP/1 connection waits for its next
    /// request: idle HTTP/1 connections are closed after the shorter of
    /// this and `keep_alive_idle`.
    pub header_timeout: Duration,
    /// A request body must arrive in full within this: 408 otherwise.
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub keep_alive_idle: Duration,
    /// Open connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Once shutdown starts, in-flight requests have this long to finish.
    pub shutdown_grace: Duration,
}

impl ServeLimits {
    pub fn from_settings(http: &HttpSettings) -> Self {
        Self {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            body_timeout: Duration::from_secs(http.body_timeout_secs),
            keep_alive_idle: Duration::from_secs(http.keep_alive_idle_secs),
            max_connections: http.max_connections,
            shutdown_grace: Duration::from_secs(http.shutdown_grace_secs),
        }
    }
}

impl Default for ServeLimits {
    /// The shipped defaults of `config/default.toml`.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(75),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// All routes, `/metrics` included, with errors recovered into JSON and
/// latency recorded.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let hsts = ctx.hsts;
    finish(
        no_nul_in_query()
            .and(api(ctx.clone()))
            .or(ops::metrics(ctx))
            .unify(),
        hsts,
    )
}

/// The routes for the public port when `/metrics` is served elsewhere
/// (`http.metrics_listen`): everything but `/metrics`, which is a 404 here.
pub fn public_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let hsts = ctx.hsts;
    finish(no_nul_in_query().and(api(ctx)), hsts)
}

/// `/metrics` alone, for the internal metrics port.
pub fn metrics_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let hsts = ctx.hsts;
    finish(ops::metrics(ctx), hsts)
}

/// Errors recovered into JSON (a 405 with its `Allow`), the security
/// headers on every response, and every request's latency recorded.
fn finish<F>(
    filter: F,
    hsts: bool,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
where
    F: Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
    // Boxed: the routes' full type is deep enough to overflow the
    // compiler's query depth in crates that serve it.
    let filter = filter.boxed();
    warp::path::full()
        .and(filter.recover(error::recover).unify())
        .map(
            move |path: warp::path::FullPath, mut response: warp::reply::Response| {
                if response.status() == http::StatusCode::METHOD_NOT_ALLOWED {
                    let allow = allow::allowed(path.as_str())
                        .and_then(|methods| http::HeaderValue::from_str(&methods).ok());
                    if let Some(allow) = allow {
                        response.headers_mut().insert(http::header::ALLOW, allow);
                    }
                }
                security_headers(response.headers_mut(), hsts);
                response
            },
        )
        .with(warp::log::custom(ops::record_request))
}

/// The headers every response carries. The API serves JSON, PEM and
/// metrics text, never a page: nothing may be sniffed into HTML, framed,
/// leak a referrer, or load anything (`default-src 'none'`). HSTS only
/// when `http.hsts` is on, since it binds browsers to HTTPS for two years.
fn security_headers(headers: &mut http::HeaderMap, hsts: bool) {
    use http::HeaderValue;
    use http::header::{
        CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
        X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    if hsts {
        headers.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
}

/// Every endpoint but `/metrics`.
fn api(
    ctx: AppContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    licenses::acquire(ctx.clone())
        .or(licenses::borrow(ctx.clone()))
        .unify()
        .or(licenses::queue_status(ctx.clone()))
        .unify()
        .or(licenses::queue_leave(ctx.clone()))
        .unify()
        .or(licenses::heartbeat(ctx.clone()))
        .unify()
        .or(licenses::release(ctx.clone()))
        .unify()
        .or(licenses::public_key(ctx.clone()))
        .unify()
        .or(licenses::jwks(ctx.clone()))
        .unify()
        .or(machine_routes(ctx.clone()))
        .unify()
        .or(admin::routes(ctx.clone()))
        .unify()
        .or(plans::routes(ctx.clone()))
        .unify()
        .or(webhooks::routes(ctx.clone()))
        .unify()
        .or(billing::routes(ctx.clone()))
        .unify()
        .or(auth_routes(ctx.clone()))
        .unify()
        .or(org_routes(ctx.clone()))
        .unify()
        .or(org_license_routes(ctx.clone()))
        .unify()
        .or(ops::live())
        .unify()
        .or(ops::ready(ctx.clone()))
        .unify()
        .or(ops::subsystems(ctx.clone()))
        .unify()
        .or(ops::restart_subsystem(ctx))
        .unify()
        .or(openapi::openapi_json())
        .unify()
        // Boxed: the chain's future type is deep enough that wrapping it
        // once more (the NUL guard) overflows trait solving in release.
        .boxed()
}

/// Machines, validation and license files under `/api/v1/licenses`.
fn machine_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    machines::activate(ctx.clone())
        .or(machines::validate(ctx.clone()))
        .unify()
        .or(machines::list_machines(ctx.clone()))
        .unify()
        .or(machines::deactivate(ctx.clone()))
        .unify()
        .or(machines::license_file(ctx))
        .unify()
        .boxed()
}

/// `/api/v1/auth/*`.
fn auth_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    auth::register(ctx.clone())
        .or(auth::verify_email(ctx.clone()))
        .unify()
        .or(auth::login(ctx.clone()))
        .unify()
        .or(auth::refresh(ctx.clone()))
        .unify()
        .or(auth::logout(ctx.clone()))
        .unify()
        .or(auth::me(ctx.clone()))
        .unify()
        .or(auth::forgot_password(ctx.clone()))
        .unify()
        .or(auth::reset_password(ctx))
        .unify()
        .boxed()
}

/// `/api/v1/orgs/*` and `/api/v1/invitations/accept`.
fn org_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    orgs::list_orgs(ctx.clone())
        .or(orgs::get_org(ctx.clone()))
        .unify()
        .or(orgs::rename_org(ctx.clone()))
        .unify()
        .or(orgs::list_members(ctx.clone()))
        .unify()
        .or(orgs::set_member_role(ctx.clone()))
        .unify()
        .or(orgs::remove_member(ctx.clone()))
        .unify()
        .or(orgs::create_invitation(ctx.clone()))
        .unify()
        .or(orgs::list_invitations(ctx.clone()))
        .unify()
        .or(orgs::revoke_invitation(ctx.clone()))
        .unify()
        .or(orgs::accept_invitation(ctx.clone()))
        .unify()
        .or(orgs::list_api_keys(ctx.clone()))
        .unify()
        .or(orgs::create_api_key(ctx.clone()))
        .unify()
        .or(orgs::revoke_api_key(ctx.clone()))
        .unify()
        .or(orgs::audit_logs(ctx))
        .unify()
        .boxed()
}

/// Licenses and sessions seen from their organization.
fn org_license_routes(
    ctx: AppContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    org_licenses::list_licenses(ctx.clone())
        .or(org_licenses::get_license(ctx.clone()))
        .unify()
        .or(org_licenses::list_sessions(ctx.clone()))
        .unify()
        .or(org_licenses::force_release(ctx))
        .unify()
        .boxed()
}

/// Serves `routes` on `listener` within `limits` until `shutdown`
/// completes, then stops accepting and lets in-flight requests finish,
/// for up to `limits.shutdown_grace`. hyper's graceful shutdown answers the
/// requests in flight, then closes each connection (no more keep-alive), so
/// clients reconnect to another node rather than meet a reset mid-request.
///
/// At `limits.max_connections` open connections, a new one is accepted and
/// closed at once rather than left waiting in the kernel's backlog: the
/// client (or load balancer) learns immediately and can retry elsewhere,
/// health checks fail visibly instead of timing out, and the backlog never
/// overflows into silently dropped SYNs.
pub async fn serve<F, R>(
    listener: TcpListener,
    routes: F,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
    R: warp::Reply,
{
    let service = warp::service(routes);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper ignores header_read_timeout unless the builder has a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE under load: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: max_connections open");
            metrics::counter!(CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let body_timeout = BodyTimeout(limits.body_timeout);
        let service = service
            .clone()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req.extensions_mut().insert(body_timeout);
                req
            })
            .map_future({
                let activity = activity.clone();
                move |response| {
                    let in_flight = activity.begin();
                    async move {
                        let response = response.await;
                        drop(in_flight);
                        response
                    }
                }
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = deadline_passed(&activity, limits) => {
                    tracing::debug!(%peer, "closing an idle connection");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = limits.shutdown_grace.as_secs(),
            "connections still open at the end of the shutdown grace; closing them"
        );
    }
}

/// What the idle deadline of one connection depends on.
///
/// hyper's header timer covers an HTTP/1 connection only once hyper-util
/// has seen its first bytes (the auto builder reads them to tell HTTP/1
/// from HTTP/2, with no deadline of its own), and never covers HTTP/2. So
/// the accept loop keeps its own deadline: the first request must start
/// within `header_timeout` of the accept, and later a connection with no
/// request in flight may idle for `keep_alive_idle`.
struct Activity {
    opened: Instant,
    started_any: AtomicBool,
    /// Notified when the first request starts.
    first_request: Notify,
    in_flight: AtomicUsize,
    /// When the last request finished, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
}

/// A request being handled; dropping it marks the time it finished.
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            started_any: AtomicBool::new(false),
            first_request: Notify::new(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        // Counted before it is marked started, so that a deadline computed
        // in between never sees a started connection as idle since `opened`.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if !self.started_any.swap(true, Ordering::SeqCst) {
            // notify_one keeps the wake-up if the watchdog isn't waiting yet.
            self.first_request.notify_one();
        }
        InFlight(self.clone())
    }

    /// When a connection that has started a request is to be closed;
    /// `None` while a request is in flight.
    fn idle_deadline(&self, limits: &ServeLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(self.opened + idle_since + limits.keep_alive_idle)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let finished = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.fetch_max(finished, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes when the connection has passed its deadline. While a request
/// is in flight it looks again every `keep_alive_idle`: one timer per
/// connection, rearmed rarely.
async fn deadline_passed(activity: &Activity, limits: ServeLimits) {
    let first_by = activity.opened + limits.header_timeout;
    let first = tokio::time::timeout_at(first_by, activity.first_request.notified()).await;
    if first.is_err() && !activity.started_any.load(Ordering::SeqCst) {
        return;
    }
    loop {
        let wake = match activity.idle_deadline(&limits) {
            Some(deadline) if deadline <= Instant::now() => return,
            Some(deadline) => deadline,
            None => Instant::now() + limits.keep_alive_idle,
        };
        tokio::time::sleep_until(wake).await;
    }
}

/// The shared context, handed to each handler.
/// `body` as JSON with `status`.
fn reply<T: serde::Serialize>(status: http::StatusCode, body: &T) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// An [`ApiError`] as a rejection, for `recover` to answer.
fn rejected(e: ApiError) -> warp::Rejection {
    warp::reject::custom(e)
}

fn with_ctx(ctx: AppContext) -> impl Filter<Extract = (AppContext,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The client's address and user agent, for session records and audit.
fn client(
    source: ClientIpSource,
) -> impl Filter<Extract = (ClientInfo,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .and(warp::header::optional::<String>("user-agent"))
        .map(
            move |peer: Option<PeerAddr>, forwarded: Option<String>, user_agent: Option<String>| {
                let forwarded = match source {
                    ClientIpSource::XForwardedFor => forwarded
                        .as_deref()
                        .and_then(|h| h.rsplit(',').next())
                        .map(str::trim)
                        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                        .map(str::to_owned),
                    ClientIpSource::Peer => None,
                };
                ClientInfo {
                    ip: forwarded.or_else(|| peer.map(|p| p.0.ip().to_string())),
                    user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
                }
            },
        )
}

/// A JSON body of at most [`MAX_BODY_BYTES`], parsed into `T`, that must
/// arrive within the body timeout of [`ServeLimits`] (408 otherwise).
///
/// warp's own `content_length_limit` refuses chunked bodies outright and
/// `warp::body::json` hides serde's message, so this reads the stream
/// itself, stops at the limit, and reports what exactly is wrong.
fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(n) if n > MAX_BODY_BYTES as u64 => {
                    Err(warp::reject::custom(error::too_large()))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::ext::optional::<BodyTimeout>())
        .and(warp::body::stream())
        .and_then(|timeout: Option<BodyTimeout>, body| async move {
            // Requests that didn't come through `serve` (warp::test) get
            // the shipped default.
            let limit = timeout.map_or(ServeLimits::default().body_timeout, |t| t.0);
            let bytes = tokio::time::timeout(limit, read_limited(body, MAX_BODY_BYTES))
                .await
                .map_err(|_| warp::reject::custom(error::request_timeout()))?
                .map_err(warp::reject::custom)?;
            // PostgreSQL's text and jsonb refuse NUL, SQLite would keep it:
            // refused here, for every body, on every backend alike.
            if contains_nul_escape(&bytes) {
                return Err(warp::reject::custom(ApiError::bad_request(
                    "invalid_body",
                    "NUL characters (\\u0000) are not accepted",
                )));
            }
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                warp::reject::custom(ApiError::bad_request(
                    "invalid_body",
                    format!("invalid JSON body: {e}"),
                ))
            })
        })
}

/// Whether a JSON text carries a NUL character (the only way JSON can:
/// the escape `\u0000`). A literal backslash followed by `u0000` in a
/// string (`\\u0000`) counts too; no client needs to send that.
fn contains_nul_escape(json: &[u8]) -> bool {
    json.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

/// Refuses a request whose query string carries a NUL character (`%00`)
/// with 400 `invalid_query`, before any route: no query value may reach
/// the store with one (PostgreSQL refuses NUL in text, which would be a 503).
fn no_nul_in_query() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|query: String| async move {
            if query.contains("%00") || query.contains('\0') {
                return Err(warp::reject::custom(ApiError::bad_request(
                    "invalid_query",
                    "NUL characters (%00) are not accepted",
                )));
            }
            Ok(())
        })
        .untuple_one()
}

/// The body as it came, at most `max` bytes (413 beyond), read within the
/// body timeout (408 beyond): for endpoints that must see the exact bytes,
/// such as a signed webhook.
fn raw_body(max: usize) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |length: Option<u64>| async move {
            match length {
                Some(n) if n > max as u64 => Err(warp::reject::custom(error::too_large())),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::ext::optional::<BodyTimeout>())
        .and(warp::body::stream())
        .and_then(move |timeout: Option<BodyTimeout>, body| async move {
            let limit = timeout.map_or(ServeLimits::default().body_timeout, |t| t.0);
            tokio::time::timeout(limit, read_limited(body, max))
                .await
                .map_err(|_| warp::reject::custom(error::request_timeout()))?
                .map_err(warp::reject::custom)
        })
}

async fn read_limited<S, B>(body: S, max: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("invalid_body", "could not read the body"))?;
        if buf.len() + chunk.remaining() > max {
            return Err(error::too_large());
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::local::LocalRateLimiter;
    use crate::ratelimit::{ManualClock, Rate, Rates};

    #[tokio::test]
    async fn the_per_ip_filter_counts_each_client_address_on_its_own() {
        let rates = Rates::off().with(Limit::LoginPerIp, Rate::per(2, Duration::from_secs(60)));
        let limiter = Arc::new(LocalRateLimiter::new(rates, Arc::new(ManualClock::new())));
        let filter =
            limit_by_ip(limiter, ClientIpSource::XForwardedFor, Limit::LoginPerIp).map(|| "ok");
        let from = |ip: &str| {
            warp::test::request()
                .header("x-forwarded-for", format!("10.0.0.1, {ip}"))
                .filter(&filter)
        };

        assert!(from("192.0.2.1").await.is_ok());
        assert!(from("192.0.2.1").await.is_ok());
        let refused = from("192.0.2.1").await.unwrap_err();
        assert!(from("192.0.2.2").await.is_ok());

        let error = refused.find::<ApiError>().expect("an ApiError");
        assert_eq!(error.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.code, "rate_limited");
        assert_eq!(error.retry_after_secs, Some(30));
    }
}
