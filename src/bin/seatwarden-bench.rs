//! Load generator for a running seatwarden server.
//!
//! Sessions are spread round-robin over the licenses given with
//! `--license-key` and/or `--license-keys-file` (one key per line), so one
//! run can load one license, many licenses of one organization, or one
//! license in each of many organizations; which it is depends only on the
//! keys, and `--shape` names it in the output.
//!
//! `--mode phases` (the default) runs three phases, each a fixed number of
//! requests spread over `--concurrency` workers sharing one pooled client:
//!
//! 1. acquire: `--sessions` acquires, each with its own hardware id;
//! 2. heartbeat: `--heartbeats-per-session` heartbeats for every session
//!    acquired in phase 1;
//! 3. release: one release per acquired session.
//!
//! `--mode mixed` first acquires `--sessions` sessions (setup-acquire), then
//! for `--mixed-secs` runs two streams at once: `--concurrency` workers
//! heartbeating those sessions, and `--churn-concurrency` workers that each
//! acquire a seat on a license of `--churn-keys-file` and release it at
//! once, in a loop, so acquires saturate the server without running out of
//! seats. It reports heartbeat latency under that load and the acquire rate
//! reached meanwhile, then releases the setup sessions (cleanup-release).
//!
//! Every phase prints requests/s, p50/p99/max latency and the non-2xx count;
//! latencies are exact (all samples are kept and sorted). Every loop is
//! bounded by a request count and by time (`--phase-max-secs`,
//! `--mixed-secs`).
//!
//! With `--key-path` (the server's signing key), or `--hsm-label` (the
//! server's key in a PKCS#11 token, which `SEATWARDEN__SIGNING__PKCS11__*`
//! name as they do for the server) it measures, right before
//! the acquire phase and with the server idle, the signing ceiling: the
//! rate of the server's own signer (`TokenSigner`) on all cores at once.
//! Every acquire signs one token, so acquire/s can't exceed it; the output
//! gives the ratio `acquire / ceiling`. Likewise, with `--redis-url`, right
//! before the heartbeat phase it measures the ledger's heartbeat ceiling:
//! the Redis ledger's own `heartbeat` (the same script, the same
//! throttle check) called from this process at `--concurrency`, on as many
//! leases over 100 licenses of a scratch organization, with no HTTP and no
//! server work. A table for people is followed by one JSON line for
//! machines.
//!
//! ```text
//! seatwarden-bench --url http://127.0.0.1:8080 --license-keys-file keys.txt \
//!     [--license-key CODITECT-...] [--shape one-org] [--concurrency 32] \
//!     [--sessions 2000] [--heartbeats-per-session 3] \
//!     [--key-path data/signing-key.pem] [--label embedded]
//! seatwarden-bench --mode mixed --url ... --license-keys-file keys.txt \
//!     --churn-keys-file churn.txt [--mixed-secs 20] [--churn-concurrency 16]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};

use seatwarden::signing::{SeatClaims, TokenSigner};

/// The server's allocator (see `src/main.rs`): the load generator shares
/// the cores with the server, so every cycle it spends in malloc is one the
/// server doesn't get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// acquire, then heartbeat, then release, one after the other.
    Phases,
    /// heartbeats at a fixed concurrency while acquire+release churns.
    Mixed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Phases => "phases",
            Mode::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "seatwarden-bench",
    about = "Drive acquire, heartbeat and release against a running seatwarden server"
)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A license to take seats from (may be repeated). Together the
    /// licenses need at least --sessions free seats, or the surplus
    /// acquires are refused (409).
    #[arg(long)]
    license_key: Vec<String>,
    /// A file of license keys, one per line; sessions go round-robin over
    /// these and the --license-key ones.
    #[arg(long)]
    license_keys_file: Option<PathBuf>,
    /// phases: acquire, heartbeat, release in turn. mixed: heartbeats while
    /// acquire+release churns on --churn-keys-file.
    #[arg(long, value_enum, default_value_t = Mode::Phases)]
    mode: Mode,
    /// A name for the load's shape, echoed in the output (e.g. one-org).
    #[arg(long, default_value = "")]
    shape: String,
    /// Requests in flight at once (in mixed mode: heartbeats in flight).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sessions to acquire (each with a distinct hardware id).
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Heartbeats sent for each acquired session (phases mode).
    #[arg(long, default_value_t = 3)]
    heartbeats_per_session: usize,
    /// Mixed mode: the license keys, one per line, that the acquire+release
    /// loop takes its seats from. Give them enough seats for
    /// --churn-concurrency sessions at once.
    #[arg(long)]
    churn_keys_file: Option<PathBuf>,
    /// Mixed mode: acquire+release loops running at once.
    #[arg(long, default_value_t = 16)]
    churn_concurrency: usize,
    /// Mixed mode: how long both streams run, in seconds.
    #[arg(long, default_value_t = 20.0)]
    mixed_secs: f64,
    /// Mixed mode: at most this many iterations per stream.
    #[arg(long, default_value_t = 2_000_000)]
    mixed_max_requests: usize,
    /// A phase stops sending new requests after this many seconds, even if
    /// it has not sent all of them (the output says so).
    #[arg(long, default_value_t = 120.0)]
    phase_max_secs: f64,
    /// The server's signing key (PEM), to measure the signing ceiling.
    #[arg(long, conflicts_with = "hsm_label")]
    key_path: Option<PathBuf>,
    /// The label of the server's signing key in a PKCS#11 token, to measure
    /// the signing ceiling of that token; the module, token label and PIN
    /// come from SEATWARDEN__SIGNING__PKCS11__{MODULE,TOKEN_LABEL,PIN}.
    #[arg(long)]
    hsm_label: Option<String>,
    /// How long to measure the signing ceiling for, in seconds.
    #[arg(long, default_value_t = 2.0)]
    sign_secs: f64,
    /// The server's Redis, to measure the ledger's heartbeat ceiling (phases
    /// mode): the Redis ledger's own heartbeat rate from this process at
    /// the same concurrency, with no HTTP, right before the heartbeat phase.
    #[arg(long)]
    redis_url: Option<String>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// A name for this run, echoed in the output (e.g. the deployment).
    #[arg(long, default_value = "")]
    label: String,
}

/// The outcome of one request.
struct Sample {
    latency: Duration,
    /// HTTP status, or 0 when the request failed without one.
    status: u16,
}

/// The statistics of one phase.
struct PhaseStats {
    name: &'static str,
    /// Requests the phase meant to send (0: as many as fit in its time).
    planned: usize,
    requests: usize,
    non_2xx: usize,
    /// Non-2xx answers by status ("error" for transport failures).
    by_status: BTreeMap<String, usize>,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl PhaseStats {
    fn from_samples(
        name: &'static str,
        planned: usize,
        mut samples: Vec<Sample>,
        elapsed: Duration,
    ) -> Self {
        samples.sort_unstable_by_key(|s| s.latency);
        let mut by_status = BTreeMap::new();
        for s in samples.iter().filter(|s| !(200..300).contains(&s.status)) {
            let key = if s.status == 0 {
                "error".to_owned()
            } else {
                s.status.to_string()
            };
            *by_status.entry(key).or_insert(0) += 1;
        }
        Self {
            name,
            planned,
            requests: samples.len(),
            non_2xx: by_status.values().sum(),
            by_status,
            elapsed,
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().map_or(Duration::ZERO, |s| s.latency),
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// True when the time limit stopped the phase before its planned count.
    fn cut_short(&self) -> bool {
        self.planned > 0 && self.requests < self.planned
    }

    fn json(&self) -> Value {
        json!({
            "planned": self.planned,
            "requests": self.requests,
            "cut_short": self.cut_short(),
            "non_2xx": self.non_2xx,
            "non_2xx_by_status": self.by_status,
            "elapsed_s": round(self.elapsed.as_secs_f64(), 3),
            "rps": round(self.rate(), 1),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

/// Nearest-rank percentile of samples sorted by latency.
fn percentile(sorted: &[Sample], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].latency
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 2)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// What one iteration of a loop did: its requests, each tagged with the
/// index of the phase it counts for, and whatever the caller keeps.
struct Step<T> {
    samples: Vec<(usize, Sample)>,
    keep: Option<T>,
}

/// The samples of a loop, one list per phase index, and what it kept.
struct LoopOutcome<T> {
    samples: Vec<Vec<Sample>>,
    kept: Vec<T>,
    elapsed: Duration,
}

/// Runs iterations `job(0)`, `job(1)`, … on `concurrency` workers until
/// `count` iterations have started or `limit` has passed, whichever comes
/// first, and collects their samples into `phases` lists.
async fn run_loop<T, F, Fut>(
    phases: usize,
    count: usize,
    concurrency: usize,
    limit: Duration,
    job: F,
) -> LoopOutcome<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Step<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|_| {
            let next = next.clone();
            let job = job.clone();
            tokio::spawn(async move {
                let mut samples: Vec<Vec<Sample>> = (0..phases).map(|_| Vec::new()).collect();
                let mut kept = Vec::new();
                while started.elapsed() < limit {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let step = job(i).await;
                    for (phase, sample) in step.samples {
                        samples[phase].push(sample);
                    }
                    kept.extend(step.keep);
                }
                (samples, kept)
            })
        })
        .collect();
    let mut samples: Vec<Vec<Sample>> = (0..phases).map(|_| Vec::new()).collect();
    let mut kept = Vec::new();
    for worker in workers {
        let (s, k) = worker.await.expect("bench worker panicked");
        for (all, mine) in samples.iter_mut().zip(s) {
            all.extend(mine);
        }
        kept.extend(k);
    }
    LoopOutcome {
        samples,
        kept,
        elapsed: started.elapsed(),
    }
}

/// Runs `count` requests as one phase (`job` returns one sample each) and
/// returns its statistics and what the requests kept.
async fn run_phase<T, F, Fut>(
    name: &'static str,
    count: usize,
    concurrency: usize,
    limit: Duration,
    job: F,
) -> (PhaseStats, Vec<T>)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Step<T>> + Send,
{
    let mut out = run_loop(1, count, concurrency, limit, job).await;
    let samples = out.samples.pop().unwrap_or_default();
    (
        PhaseStats::from_samples(name, count, samples, out.elapsed),
        out.kept,
    )
}

/// A live session: its id and bearer token.
type Session = (String, String);

fn session_of(body: Option<Value>) -> Option<Session> {
    let b = body?;
    Some((
        b["session_id"].as_str()?.to_owned(),
        b["token"].as_str()?.to_owned(),
    ))
}

/// A request as the bench sends it.
type ApiRequest = http::Request<Full<Bytes>>;

/// The requests of the API, over HTTP/1.1 keep-alive connections: one per
/// request in flight, taken from and put back on a plain stack.
///
/// Why not reqwest (used before): per request it parses the URL (with
/// IDNA), clones its client and checks a connection out of a keyed pool.
/// In a heartbeat run that was two thirds of this process's user time, and
/// this process shares the two cores with the server it measures.
#[derive(Clone)]
struct Api {
    /// The base URL, for the output.
    base: Arc<str>,
    addr: std::net::SocketAddr,
    host: http::HeaderValue,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
    timeout: Duration,
}

impl Api {
    /// For a base URL `http://host:port` (no TLS: the bench runs on
    /// loopback).
    async fn new(base: Arc<str>, timeout: Duration) -> anyhow::Result<Self> {
        let url = url::Url::parse(&base).with_context(|| format!("--url {base}"))?;
        if url.scheme() != "http" {
            bail!("--url must be http://host:port, not {base}");
        }
        let host = url.host_str().context("--url has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            host: http::HeaderValue::from_str(&format!("{host}:{port}"))?,
            base,
            addr,
            idle: Arc::default(),
            timeout,
        })
    }

    fn request(&self, method: http::Method, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.host.clone())
    }

    fn acquire(&self, key: &str, hardware_id: &str) -> ApiRequest {
        let body = json!({"license_key": key, "hardware_id": hardware_id}).to_string();
        self.request(http::Method::POST, "/api/v1/licenses/acquire")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a well-formed request")
    }

    fn heartbeat(&self, (id, token): &Session) -> ApiRequest {
        self.with_token(
            http::Method::POST,
            &format!("/api/v1/licenses/sessions/{id}/heartbeat"),
            token,
        )
    }

    fn release(&self, (id, token): &Session) -> ApiRequest {
        self.with_token(
            http::Method::DELETE,
            &format!("/api/v1/licenses/sessions/{id}"),
            token,
        )
    }

    /// A bodiless request carrying a session's token.
    fn with_token(&self, method: http::Method, path: &str, token: &str) -> ApiRequest {
        self.request(method, path)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::default())
            .expect("a well-formed request")
    }

    fn get(&self, path: &str) -> ApiRequest {
        self.request(http::Method::GET, path)
            .body(Full::default())
            .expect("a well-formed request")
    }

    /// Sends a request and reads the whole body; returns its sample (status
    /// 0 for a transport error or a timeout), plus the JSON body when asked
    /// for and 2xx.
    async fn send(&self, request: ApiRequest, want_body: bool) -> (Sample, Option<Value>) {
        let started = Instant::now();
        let (status, body) = match tokio::time::timeout(self.timeout, self.exchange(request)).await
        {
            Ok(Ok((status, bytes))) if want_body && (200..300).contains(&status) => {
                (status, serde_json::from_slice(&bytes).ok())
            }
            Ok(Ok((status, _))) => (status, None),
            Ok(Err(_)) | Err(_) => (0, None),
        };
        (
            Sample {
                latency: started.elapsed(),
                status,
            },
            body,
        )
    }

    /// One request and its whole answer on an idle connection, or on a new
    /// one when none is idle or the idle one was closed (before anything
    /// was sent on it, so nothing is sent twice). A connection goes back on
    /// the stack only after a complete exchange.
    async fn exchange(&self, request: ApiRequest) -> anyhow::Result<(u16, Bytes)> {
        let pooled = self.idle.lock().expect("idle connections").pop();
        let mut conn = match pooled {
            Some(mut conn) => match conn.ready().await {
                Ok(()) => conn,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let response = conn.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        self.idle.lock().expect("idle connections").push(conn);
        Ok((status, body))
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender
            // is dropped; either way the next request opens another.
            let _ = conn.await;
        });
        sender.ready().await?;
        Ok(sender)
    }
}

/// Acquires `count` sessions, round-robin over `keys`, as phase `name`.
async fn acquire_phase(
    api: &Api,
    name: &'static str,
    keys: &Arc<Vec<String>>,
    run_id: &str,
    count: usize,
    concurrency: usize,
    limit: Duration,
) -> (PhaseStats, Vec<Session>) {
    let api = api.clone();
    let keys = keys.clone();
    let prefix = format!("bench-{run_id}-s");
    run_phase(name, count, concurrency, limit, move |i| {
        let request = api.acquire(&keys[i % keys.len()], &format!("{prefix}{i}"));
        let api = api.clone();
        async move {
            let (sample, body) = api.send(request, true).await;
            Step {
                samples: vec![(0, sample)],
                keep: session_of(body),
            }
        }
    })
    .await
}

/// Releases every session once, as phase `name`.
async fn release_phase(
    api: &Api,
    name: &'static str,
    sessions: &Arc<Vec<Session>>,
    concurrency: usize,
    limit: Duration,
) -> PhaseStats {
    let api = api.clone();
    let sessions = sessions.clone();
    let count = sessions.len();
    let (stats, _) = run_phase(name, count, concurrency, limit, move |i| {
        let request = api.release(&sessions[i]);
        let api = api.clone();
        async move {
            Step::<()> {
                samples: vec![(0, api.send(request, false).await.0)],
                keep: None,
            }
        }
    })
    .await;
    stats
}

/// Sends `count` heartbeats round-robin over the sessions, as one loop of
/// at most `limit`; its samples are phase 0.
async fn heartbeat_loop(
    api: &Api,
    sessions: &Arc<Vec<Session>>,
    count: usize,
    concurrency: usize,
    limit: Duration,
) -> LoopOutcome<()> {
    let api = api.clone();
    let sessions = sessions.clone();
    let count = if sessions.is_empty() { 0 } else { count };
    run_loop(1, count, concurrency, limit, move |i| {
        let request = api.heartbeat(&sessions[i % sessions.len()]);
        let api = api.clone();
        async move {
            Step {
                samples: vec![(0, api.send(request, false).await.0)],
                keep: None,
            }
        }
    })
    .await
}

/// The ledger's heartbeat ceiling: what the Redis ledger alone does.
struct LedgerCeiling {
    concurrency: usize,
    secs: f64,
    per_s: f64,
}

/// Heartbeats straight to the Redis ledger at `concurrency`, for `duration`,
/// on `sessions` leases of a scratch organization (removed afterwards).
async fn measure_ledger_ceiling(
    url: &str,
    sessions: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LedgerCeiling> {
    use seatwarden::ledger::redis::RedisLedger;
    use seatwarden_actors::domain::{LicenseId, OrgId, SessionId};
    use seatwarden_actors::ports::{LeaseGrant, LeaseRequest, SeatLedger, Throttle};
    let ledger = Arc::new(
        RedisLedger::connect(url)
            .await
            .context("connecting to --redis-url")?,
    );
    let org = OrgId(uuid::Uuid::new_v4());
    let licenses: Vec<LicenseId> = (0..100).map(|_| LicenseId::new()).collect();
    for &license in &licenses {
        ledger
            .seed(org, license, Duration::ZERO, &[])
            .await
            .context("seeding a scratch license")?;
    }
    let ttl = Duration::from_secs(360);
    let mut leases = Vec::with_capacity(sessions);
    for i in 0..sessions.max(1) {
        let license = licenses[i % licenses.len()];
        let session = SessionId::new();
        let grant = ledger
            .acquire(&LeaseRequest {
                org,
                license,
                session,
                hardware_id: format!("ceiling-{i}"),
                max_seats: u32::try_from(sessions).unwrap_or(u32::MAX).max(1),
                ttl,
                grace: Duration::ZERO,
                overdraft: 0,
                line: Default::default(),
            })
            .await
            .context("a scratch lease")?;
        if !matches!(grant, LeaseGrant::Granted { .. }) {
            bail!("the ledger refused a scratch lease: {grant:?}");
        }
        leases.push((license, session));
    }
    // The bench server's throttle (1000000/sec): checked, never met.
    let throttle = Throttle {
        interval: Duration::from_micros(1),
        burst: 1_000_000,
    };
    let leases = Arc::new(leases);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|_| {
        let (ledger, leases, next) = (ledger.clone(), leases.clone(), next.clone());
        tokio::spawn(async move {
            let mut done = 0usize;
            while started.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (license, session) = leases[i % leases.len()];
                if ledger
                    .heartbeat(org, license, session, ttl, Some(throttle))
                    .await
                    .is_ok()
                {
                    done += 1;
                }
            }
            done
        })
    });
    let mut total = 0;
    for w in futures::future::join_all(workers).await {
        total += w.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    for license in &licenses {
        let _ = ledger.revoke_license(org, *license).await;
    }
    Ok(LedgerCeiling {
        concurrency: concurrency.max(1),
        secs,
        per_s: total as f64 / secs,
    })
}

/// The signing ceiling: the rate of the server's own signer on all cores.
struct SignCeiling {
    /// `RSA-4096`, `ES256`, `EdDSA`: the key the server signs with.
    key: String,
    threads: usize,
    secs: f64,
    per_s: f64,
}

/// Claims shaped like an acquire's, so a signature costs what it costs the
/// server.
fn bench_claims() -> SeatClaims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    SeatClaims {
        iss: "seatwarden".into(),
        sub: "6f1c2b8e-3a7d-4e59-9c1a-2b3c4d5e6f70".into(),
        session_id: "6f1c2b8e-3a7d-4e59-9c1a-2b3c4d5e6f70".into(),
        license_id: "0b9d8c7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e".into(),
        org_id: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d".into(),
        hardware_id: "bench-00000000-s0".into(),
        tier: "bench".into(),
        features: Vec::new(),
        max_seats: 2000,
        iat: now,
        exp: now + 360 + 30,
        lease_exp: now + 360,
        borrowed: false,
    }
}

/// The key whose signer the ceiling measures.
#[derive(Clone)]
enum CeilingKey {
    Pem(String),
    Hsm(seatwarden::signing::pkcs11::Pkcs11Settings, String),
}

impl CeilingKey {
    fn from_args(args: &Args) -> anyhow::Result<Option<Self>> {
        if let Some(path) = &args.key_path {
            return Ok(Some(Self::Pem(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --key-path {}", path.display()))?,
            )));
        }
        let Some(label) = &args.hsm_label else {
            return Ok(None);
        };
        let var = |name: &str| {
            let key = format!("SEATWARDEN__SIGNING__PKCS11__{name}");
            std::env::var(&key).with_context(|| format!("--hsm-label needs {key}"))
        };
        let settings = seatwarden::signing::pkcs11::Pkcs11Settings {
            module: var("MODULE")?.into(),
            token_label: var("TOKEN_LABEL")?,
            pin: var("PIN")?.into(),
        };
        Ok(Some(Self::Hsm(settings, label.clone())))
    }

    fn signer(&self) -> anyhow::Result<TokenSigner> {
        match self {
            Self::Pem(pem) => TokenSigner::from_pem(pem).context("loading the signing key"),
            Self::Hsm(settings, label) => {
                let hsm = seatwarden::signing::pkcs11::Hsm::open(settings)
                    .context("opening the PKCS#11 token")?;
                TokenSigner::from_hsm(&hsm, label).context("loading the token's key")
            }
        }
    }
}

fn measure_ceiling(key: &CeilingKey, duration: Duration) -> anyhow::Result<SignCeiling> {
    let signer = key.signer()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One signature first, so a broken key fails loudly instead of
    // measuring zero.
    signer
        .sign_blocking(&bench_claims())
        .context("signing with the server's key")?;
    let per_s = signer.sign_ceiling(threads, duration);
    Ok(SignCeiling {
        key: match (signer.algorithm(), signer.in_token()) {
            (seatwarden::signing::SigningAlgorithm::RS256, false) => {
                format!("RSA-{}", signer.key_bits())
            }
            (seatwarden::signing::SigningAlgorithm::RS256, true) => {
                format!("PKCS#11 RSA-{}", signer.key_bits())
            }
            (other, false) => other.to_string(),
            (other, true) => format!("PKCS#11 {other}"),
        },
        threads,
        secs: duration.as_secs_f64(),
        per_s,
    })
}

fn read_keys(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading license keys from {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seatwarden-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.churn_concurrency == 0 {
        bail!("--concurrency and --churn-concurrency must be at least 1");
    }
    let mut keys = args.license_key.clone();
    if let Some(path) = &args.license_keys_file {
        keys.extend(read_keys(path)?);
    }
    if keys.is_empty() {
        bail!("give --license-key or --license-keys-file (with at least one key)");
    }
    let keys = Arc::new(keys);
    let churn_keys = match (&args.churn_keys_file, args.mode) {
        (Some(path), _) => read_keys(path)?,
        (None, Mode::Mixed) => bail!("--mode mixed needs --churn-keys-file"),
        (None, Mode::Phases) => Vec::new(),
    };
    if args.mode == Mode::Mixed && churn_keys.is_empty() {
        bail!("--churn-keys-file has no keys");
    }
    let churn_keys = Arc::new(churn_keys);
    let sign_key = CeilingKey::from_args(&args)?;
    let base: Arc<str> = args.url.trim_end_matches('/').into();
    if !base.starts_with("http://127.0.0.1") && !base.starts_with("http://localhost") {
        eprintln!("seatwarden-bench: note: {base} is not a loopback address");
    }

    let api = Api::new(base, Duration::from_secs(args.timeout_secs)).await?;

    let (status, _) = api
        .exchange(api.get("/health/ready"))
        .await
        .with_context(|| format!("cannot reach {}", api.base))?;
    if !(200..300).contains(&status) {
        bail!("{}/health/ready answered {status}", api.base);
    }

    // Distinct hardware ids per run, so repeated runs on one license don't
    // renew each other's sessions.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = &run_id[..8];
    let limit = Duration::from_secs_f64(args.phase_max_secs.max(1.0));
    let sign_duration = Duration::from_secs_f64(args.sign_secs.max(0.1));
    // With the server idle, right before the acquires it bounds.
    let ceiling = async || -> anyhow::Result<Option<SignCeiling>> {
        let Some(key) = sign_key.clone() else {
            return Ok(None);
        };
        let c = tokio::task::spawn_blocking(move || measure_ceiling(&key, sign_duration)).await??;
        Ok(Some(c))
    };

    let mut ledger: Option<LedgerCeiling> = None;
    let (phases, sign) = match args.mode {
        Mode::Phases => {
            let sign = ceiling().await?;
            let (acquire, sessions) = acquire_phase(
                &api,
                "acquire",
                &keys,
                run_id,
                args.sessions,
                args.concurrency,
                limit,
            )
            .await;
            let sessions = Arc::new(sessions);
            let count = sessions.len() * args.heartbeats_per_session;
            if let Some(url) = &args.redis_url {
                ledger = Some(
                    measure_ledger_ceiling(url, sessions.len(), args.concurrency, sign_duration)
                        .await?,
                );
            }
            let mut hb = heartbeat_loop(&api, &sessions, count, args.concurrency, limit).await;
            let heartbeat = PhaseStats::from_samples(
                "heartbeat",
                count,
                hb.samples.pop().unwrap_or_default(),
                hb.elapsed,
            );
            let release = release_phase(&api, "release", &sessions, args.concurrency, limit).await;
            (vec![acquire, heartbeat, release], sign)
        }
        Mode::Mixed => {
            let (setup, sessions) = acquire_phase(
                &api,
                "setup-acquire",
                &keys,
                run_id,
                args.sessions,
                args.concurrency,
                limit,
            )
            .await;
            let sessions = Arc::new(sessions);
            let sign = ceiling().await?;
            let window = Duration::from_secs_f64(args.mixed_secs.max(0.1));
            let heartbeats = heartbeat_loop(
                &api,
                &sessions,
                args.mixed_max_requests,
                args.concurrency,
                window,
            );
            let churn = {
                let api = api.clone();
                let churn_keys = churn_keys.clone();
                let prefix = format!("bench-{run_id}-c");
                run_loop(
                    2,
                    args.mixed_max_requests,
                    args.churn_concurrency,
                    window,
                    move |i| {
                        let api = api.clone();
                        let key = churn_keys[i % churn_keys.len()].clone();
                        let hardware_id = format!("{prefix}{i}");
                        async move {
                            let (acquired, body) =
                                api.send(api.acquire(&key, &hardware_id), true).await;
                            let mut samples = vec![(0, acquired)];
                            if let Some(session) = session_of(body) {
                                samples.push((1, api.send(api.release(&session), false).await.0));
                            }
                            Step::<()> {
                                samples,
                                keep: None,
                            }
                        }
                    },
                )
            };
            let (mut hb, mut churn) = tokio::join!(heartbeats, churn);
            let heartbeat = PhaseStats::from_samples(
                "heartbeat",
                0,
                hb.samples.pop().unwrap_or_default(),
                hb.elapsed,
            );
            let churn_release = churn.samples.pop().unwrap_or_default();
            let churn_acquire = churn.samples.pop().unwrap_or_default();
            let acquire = PhaseStats::from_samples("acquire", 0, churn_acquire, churn.elapsed);
            let release = PhaseStats::from_samples("release", 0, churn_release, churn.elapsed);
            let cleanup =
                release_phase(&api, "cleanup-release", &sessions, args.concurrency, limit).await;
            (vec![setup, acquire, heartbeat, release, cleanup], sign)
        }
    };

    let acquire_rate = phases
        .iter()
        .find(|p| p.name == "acquire")
        .map_or(0.0, PhaseStats::rate);
    let ratio = sign
        .as_ref()
        .filter(|s| s.per_s > 0.0)
        .map(|s| acquire_rate / s.per_s);

    let heartbeat_rate = phases
        .iter()
        .find(|p| p.name == "heartbeat")
        .map_or(0.0, PhaseStats::rate);
    let ledger_ratio = ledger
        .as_ref()
        .filter(|l| l.per_s > 0.0)
        .map(|l| heartbeat_rate / l.per_s);

    print_table(
        &args,
        &api.base,
        keys.len(),
        churn_keys.len(),
        &phases,
        sign.as_ref(),
        ratio,
    );
    if let Some(l) = &ledger {
        println!(
            "ledger heartbeat ceiling (the Redis ledger alone from this process, concurrency {}, \
             idle server, {:.1}s): {:.0} beats/s; heartbeat reached {:.2} of it",
            l.concurrency,
            l.secs,
            l.per_s,
            ledger_ratio.unwrap_or(0.0)
        );
    }

    let mut out = json!({
        "label": args.label,
        "shape": args.shape,
        "mode": args.mode.name(),
        "url": &*api.base,
        "licenses": keys.len(),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "phases": {},
        "signing": null,
        "acquire_over_ceiling": ratio.map(|r| round(r, 3)),
        "ledger_heartbeat_ceiling_per_s": ledger.as_ref().map(|l| round(l.per_s, 1)),
        "heartbeat_over_ledger_ceiling": ledger_ratio.map(|r| round(r, 3)),
    });
    match args.mode {
        Mode::Phases => {
            out["heartbeats_per_session"] = json!(args.heartbeats_per_session);
        }
        Mode::Mixed => {
            out["churn_licenses"] = json!(churn_keys.len());
            out["churn_concurrency"] = json!(args.churn_concurrency);
            out["mixed_secs"] = json!(args.mixed_secs);
        }
    }
    for phase in &phases {
        out["phases"][phase.name] = phase.json();
    }
    if let Some(s) = &sign {
        out["signing"] = json!({
            "key": s.key,
            "threads": s.threads,
            "secs": s.secs,
            "ceiling_per_s": round(s.per_s, 1),
            "per_thread_per_s": round(s.per_s / s.threads as f64, 1),
        });
    }
    println!("{out}");
    Ok(())
}

fn print_table(
    args: &Args,
    base: &str,
    licenses: usize,
    churn_licenses: usize,
    phases: &[PhaseStats],
    sign: Option<&SignCeiling>,
    ratio: Option<f64>,
) {
    let label = [args.label.as_str(), args.shape.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| format!("[{s}] "))
        .collect::<String>();
    match args.mode {
        Mode::Phases => println!(
            "{label}{base}: {} sessions over {licenses} licenses, {} heartbeats/session, \
             concurrency {}",
            args.sessions, args.heartbeats_per_session, args.concurrency
        ),
        Mode::Mixed => println!(
            "{label}{base}: mixed for {}s: heartbeats at concurrency {} on {} sessions over \
             {licenses} licenses, while {} loops acquire+release on {} other licenses",
            args.mixed_secs,
            args.concurrency,
            args.sessions,
            args.churn_concurrency,
            churn_licenses,
        ),
    }
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}  non-2xx by status",
        "phase", "requests", "elapsed_s", "req/s", "p50_ms", "p99_ms", "max_ms", "non-2xx"
    );
    for p in phases {
        let mut detail = p
            .by_status
            .iter()
            .map(|(status, n)| format!("{status}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        if p.cut_short() {
            detail.push_str(&format!(
                " (time limit: {} of {} sent)",
                p.requests, p.planned
            ));
        }
        println!(
            "{:<16} {:>9} {:>10.2} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>8}  {}",
            p.name,
            p.requests,
            p.elapsed.as_secs_f64(),
            p.rate(),
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
            p.non_2xx,
            detail.trim()
        );
    }
    if let Some(s) = sign {
        println!(
            "signing ceiling (the server's {} signer on {} threads, idle server, {:.1}s): \
             {:.0} signs/s ({:.0}/thread); acquire reached {:.2} of it",
            s.key,
            s.threads,
            s.secs,
            s.per_s,
            s.per_s / s.threads as f64,
            ratio.unwrap_or(0.0)
        );
    }
}
