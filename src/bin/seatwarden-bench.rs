//! Load generator for a running seatwarden server.
//!
//! Runs three phases against one license, each a fixed number of requests
//! spread over `--concurrency` workers sharing one pooled HTTP client:
//!
//! 1. acquire: `--sessions` acquires, each with its own hardware id;
//! 2. heartbeat: `--heartbeats-per-session` heartbeats for every session
//!    acquired in phase 1;
//! 3. release: one release per acquired session.
//!
//! For each phase it prints requests/s, p50 and p99 latency and the number
//! of non-2xx answers. With `--key-path` (the server's signing key) it also
//! measures this machine's RSA signing rate for that key size, which bounds
//! acquires/s since every acquire signs one token. A table for people is
//! followed by one JSON line for machines.
//!
//! ```text
//! seatwarden-bench --url http://127.0.0.1:8080 --license-key CODITECT-... \
//!     [--concurrency 32] [--sessions 2000] [--heartbeats-per-session 3] \
//!     [--key-path data/signing-key.pem] [--label embedded]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use seatwarden::signing::TokenSigner;

#[derive(Debug, Parser)]
#[command(
    name = "seatwarden-bench",
    about = "Drive acquire, heartbeat and release against a running seatwarden server"
)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// Key of the license to take seats from. It needs at least --sessions
    /// free seats, or the surplus acquires are refused (409).
    #[arg(long)]
    license_key: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sessions to acquire (each with a distinct hardware id).
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Heartbeats sent for each acquired session.
    #[arg(long, default_value_t = 3)]
    heartbeats_per_session: usize,
    /// The server's signing key (PEM), to measure the RSA signing rate.
    #[arg(long)]
    key_path: Option<PathBuf>,
    /// How long to measure the signing rate for, in seconds.
    #[arg(long, default_value_t = 2.0)]
    sign_secs: f64,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// A name for this run, echoed in the output (e.g. the backend).
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
    fn from_samples(name: &'static str, mut samples: Vec<Sample>, elapsed: Duration) -> Self {
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

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
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

/// Runs `count` jobs with at most `concurrency` in flight; `job(i)` sends
/// request `i` and returns its status and whatever the caller keeps.
async fn run_phase<T, F, Fut>(
    name: &'static str,
    count: usize,
    concurrency: usize,
    job: F,
) -> (PhaseStats, Vec<T>)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (u16, Option<T>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|_| {
            let next = next.clone();
            let job = job.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut kept = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let t = Instant::now();
                    let (status, keep) = job(i).await;
                    samples.push(Sample {
                        latency: t.elapsed(),
                        status,
                    });
                    kept.extend(keep);
                }
                (samples, kept)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(count);
    let mut kept = Vec::new();
    for worker in workers {
        let (s, k) = worker.await.expect("bench worker panicked");
        samples.extend(s);
        kept.extend(k);
    }
    let elapsed = started.elapsed();
    (PhaseStats::from_samples(name, samples, elapsed), kept)
}

/// Reads the whole body (so the connection goes back to the pool) and
/// returns the status, plus the JSON body when asked for and 2xx.
async fn finish(
    response: reqwest::Result<reqwest::Response>,
    want_body: bool,
) -> (u16, Option<Value>) {
    let Ok(response) = response else {
        return (0, None);
    };
    let status = response.status().as_u16();
    let Ok(bytes) = response.bytes().await else {
        return (0, None);
    };
    let body = if want_body && (200..300).contains(&status) {
        serde_json::from_slice(&bytes).ok()
    } else {
        None
    };
    (status, body)
}

/// The RSA signing rate of this machine for the server's key.
struct SignRate {
    bits: usize,
    per_thread: f64,
    threads: usize,
    all_threads: f64,
}

fn measure_sign_rate(pem: &str, duration: Duration) -> anyhow::Result<SignRate> {
    let signer = TokenSigner::from_pem(pem).context("loading the signing key")?;
    let per_thread = signer.sign_rate(duration);
    // The server signs on one thread per CPU at most; measure that too.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all_threads = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let signer = signer.clone();
                scope.spawn(move || signer.sign_rate(duration))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0.0))
            .sum::<f64>()
    });
    Ok(SignRate {
        bits: signer.key_bits(),
        per_thread,
        threads,
        all_threads,
    })
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
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let sign_pem = match &args.key_path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --key-path {}", path.display()))?,
        ),
        None => None,
    };

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;

    let ready = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    if !ready.status().is_success() {
        bail!("{base}/health/ready answered {}", ready.status());
    }

    // Distinct hardware ids per run, so repeated runs on one license don't
    // renew each other's sessions.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = &run_id[..8];

    // Phase 1: acquire.
    let acquire = {
        let client = client.clone();
        let url = format!("{base}/api/v1/licenses/acquire");
        let key = args.license_key.clone();
        let run_id = run_id.to_owned();
        move |i: usize| {
            let request = client
                .post(&url)
                .json(&json!({"license_key": key, "hardware_id": format!("bench-{run_id}-{i}")}));
            async move {
                let (status, body) = finish(request.send().await, true).await;
                let session = body.and_then(|b| {
                    Some((
                        b["session_id"].as_str()?.to_owned(),
                        b["token"].as_str()?.to_owned(),
                    ))
                });
                (status, session)
            }
        }
    };
    let (acquire_stats, sessions) =
        run_phase("acquire", args.sessions, args.concurrency, acquire).await;
    let sessions: Arc<Vec<(String, String)>> = Arc::new(sessions);

    // Phase 2: heartbeat, round-robin over the sessions.
    let heartbeat = {
        let client = client.clone();
        let base = base.clone();
        let sessions = sessions.clone();
        move |i: usize| {
            let (id, token) = &sessions[i % sessions.len()];
            let request = client
                .post(format!("{base}/api/v1/licenses/sessions/{id}/heartbeat"))
                .bearer_auth(token);
            async move { (finish(request.send().await, false).await.0, None::<()>) }
        }
    };
    let heartbeats = sessions.len() * args.heartbeats_per_session;
    let (heartbeat_stats, _) =
        run_phase("heartbeat", heartbeats, args.concurrency, heartbeat).await;

    // Phase 3: release.
    let release = {
        let client = client.clone();
        let base = base.clone();
        let sessions = sessions.clone();
        move |i: usize| {
            let (id, token) = &sessions[i];
            let request = client
                .delete(format!("{base}/api/v1/licenses/sessions/{id}"))
                .bearer_auth(token);
            async move { (finish(request.send().await, false).await.0, None::<()>) }
        }
    };
    let (release_stats, _) = run_phase("release", sessions.len(), args.concurrency, release).await;

    // Signing last, with the server idle, so the two don't compete for CPU.
    let sign = match sign_pem {
        Some(pem) => {
            let duration = Duration::from_secs_f64(args.sign_secs.max(0.1));
            Some(tokio::task::spawn_blocking(move || measure_sign_rate(&pem, duration)).await??)
        }
        None => None,
    };

    let phases = [&acquire_stats, &heartbeat_stats, &release_stats];
    print_table(&args, &base, &phases, sign.as_ref());

    let mut out = json!({
        "label": args.label,
        "url": base,
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "heartbeats_per_session": args.heartbeats_per_session,
        "phases": {},
    });
    for phase in phases {
        out["phases"][phase.name] = phase.json();
    }
    if let Some(s) = &sign {
        out["signing"] = json!({
            "rsa_bits": s.bits,
            "signs_per_s_one_thread": round(s.per_thread, 1),
            "threads": s.threads,
            "signs_per_s_all_threads": round(s.all_threads, 1),
            "acquire_ceiling_per_s": round(s.all_threads, 1),
        });
    }
    println!("{out}");
    Ok(())
}

fn print_table(args: &Args, base: &str, phases: &[&PhaseStats], sign: Option<&SignRate>) {
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", args.label)
    };
    println!(
        "{label}{base}: {} sessions, {} heartbeats/session, concurrency {}",
        args.sessions, args.heartbeats_per_session, args.concurrency
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}  non-2xx by status",
        "phase", "requests", "elapsed_s", "req/s", "p50_ms", "p99_ms", "max_ms", "non-2xx"
    );
    for p in phases {
        let detail = p
            .by_status
            .iter()
            .map(|(status, n)| format!("{status}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<10} {:>9} {:>10.2} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>8}  {}",
            p.name,
            p.requests,
            p.elapsed.as_secs_f64(),
            p.rate(),
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
            p.non_2xx,
            detail
        );
    }
    if let Some(s) = sign {
        println!(
            "RSA-{} signing on this machine: {:.0} signs/s on one thread, {:.0} signs/s on {} threads \
             => ceiling ~{:.0} acquires/s (one signature per acquire)",
            s.bits, s.per_thread, s.all_threads, s.threads, s.all_threads
        );
    }
}
