//! The HTTP API: one filter function per endpoint, one `recover`, and a
//! hyper-util accept loop of our own.
//!
//! Why our own loop rather than `warp::serve`: warp 0.4 no longer hands
//! filters the peer address, and we record every client's IP with its
//! session. The loop puts the peer address into the request's extensions,
//! where [`client`] finds it; it also gives us graceful shutdown on a
//! future of our choosing, as `run(listener, shutdown)` in mini-redis.

mod error;
mod licenses;
mod ops;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower::ServiceExt;
use warp::Filter;

use seatwarden_actors::Coordinator;
use seatwarden_actors::domain::ClientInfo;
use seatwarden_actors::ports::{SeatLedger, Store};

use crate::config::ClientIpSource;
use crate::signing::TokenSigner;

pub use error::ApiError;

/// Request bodies are small JSON documents; anything larger is refused
/// before it is read in full.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppContext {
    pub coordinator: Coordinator,
    pub signer: TokenSigner,
    pub store: Arc<dyn Store>,
    pub ledger: Arc<dyn SeatLedger>,
    pub metrics: PrometheusHandle,
    pub heartbeat_interval_secs: u64,
    pub client_ip: ClientIpSource,
}

/// The peer address of the connection a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// All routes, with errors recovered into JSON and latency recorded.
pub fn routes(
    ctx: AppContext,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let api = licenses::acquire(ctx.clone())
        .or(licenses::heartbeat(ctx.clone()))
        .unify()
        .or(licenses::release(ctx.clone()))
        .unify()
        .or(licenses::public_key(ctx.clone()))
        .unify()
        .or(licenses::jwks(ctx.clone()))
        .unify()
        .or(ops::live())
        .unify()
        .or(ops::ready(ctx.clone()))
        .unify()
        .or(ops::metrics(ctx))
        .unify();
    api.recover(error::recover)
        .unify()
        .with(warp::log::custom(ops::record_request))
}

/// Serves `routes` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (for up to ten seconds).
pub async fn serve<F, R>(listener: TcpListener, routes: F, shutdown: impl Future<Output = ()>)
where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
    R: warp::Reply,
{
    let service = warp::service(routes);
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let _ = stream.set_nodelay(true);
        let service =
            service
                .clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
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

/// A JSON body of at most [`MAX_BODY_BYTES`], parsed into `T`.
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
        .and(warp::body::stream())
        .and_then(|body| async move {
            let bytes = read_limited(body).await.map_err(warp::reject::custom)?;
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                warp::reject::custom(ApiError::bad_request(
                    "invalid_body",
                    format!("invalid JSON body: {e}"),
                ))
            })
        })
}

async fn read_limited<S, B>(body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("invalid_body", "could not read the body"))?;
        if buf.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(error::too_large());
        }
        buf.put(chunk);
    }
    Ok(buf.freeze())
}
