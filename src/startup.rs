//! The composition root: reads settings, opens the configured backends,
//! starts the coordinator, and serves HTTP. The only module (with `main`)
//! that names concrete backends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use seatwarden_actors::domain::License;
use seatwarden_actors::ports::{KeyStore, MailSender, Outbox, SeatLedger, Store};
use seatwarden_actors::{Coordinator, Ports};

use crate::auth::AccessTokens;
use crate::config::Settings;
use crate::http::{self, AppContext, AppState};
use crate::ledger::memory::{MemoryLedger, RestoredLease};
use crate::ledger::redis::RedisLedger;
use crate::mail::LettreMailer;
use crate::ratelimit::local::{HOUSEKEEPING_INTERVAL, LocalRateLimiter};
use crate::ratelimit::redis::RedisRateLimiter;
use crate::ratelimit::{Limit, RateLimiter, SystemClock};
use crate::redact::redact_url;
use crate::signing::keys::{KeySeal, SigningKeys};
use crate::signing::{SigningConfig, TokenSigner};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::telemetry;

/// Opens the store named by `database.url`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database_url();
    let url = url.expose_secret();
    let shown = redact_url(url);
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(
            SqliteStore::connect(url)
                .await
                .with_context(|| format!("opening {shown}"))?,
        )
    } else {
        Arc::new(
            PostgresStore::connect(url, settings.database.max_connections)
                .await
                .with_context(|| format!("opening {shown}"))?,
        )
    };
    tracing::info!(database = %shown, "store ready");
    Ok(store)
}

/// Inserts the `[plans.<id>]` of the settings that the catalogue lacks;
/// plans already there, edited or retired by an administrator, are left
/// as they are (the database is the truth once a plan exists).
pub async fn seed_plans(settings: &Settings, store: &dyn Store) -> anyhow::Result<()> {
    let plans = settings.plan_seeds()?;
    let inserted = store
        .seed_plans(&plans)
        .await
        .context("seeding the plan catalogue")?;
    if !inserted.is_empty() {
        let ids: Vec<&str> = inserted.iter().map(|id| id.as_str()).collect();
        tracing::info!(plans = %ids.join(","), "plans seeded from configuration");
    }
    Ok(())
}

/// Opens the ledger: Redis when `redis.url` or `redis.cluster_urls` is
/// set, else in-process. The in-process ledger starts empty, so it is
/// refilled from the store's open sessions: restarting a single-node server
/// keeps every client's seat.
///
/// A Redis whose persistence or eviction settings can lose leases gets a
/// warning per setting, at start: the server still runs (the ledger
/// re-seeds itself after a loss), but the operator should know.
pub async fn open_ledger(
    settings: &Settings,
    store: &dyn Store,
) -> anyhow::Result<Arc<dyn SeatLedger>> {
    match settings.redis.target() {
        Some(target) => {
            let ledger =
                RedisLedger::open(&target, Duration::from_millis(settings.redis.timeout_ms))
                    .await
                    .with_context(|| format!("connecting to {}", target.redacted()))?;
            for warning in ledger.durability_warnings().await {
                tracing::warn!(redis = %target.redacted(), "{warning}");
            }
            tracing::info!(redis = %target.redacted(), "Redis seat ledger ready");
            Ok(Arc::new(ledger))
        }
        None => {
            let ledger = MemoryLedger::new();
            let default_grace = Duration::from_secs(settings.seats.offline_grace_secs);
            let mut open = Vec::new();
            for org in store.orgs_with_open_sessions().await? {
                let licenses = store.licenses_for_org(org).await?;
                for s in store.open_sessions(org).await? {
                    let grace = licenses
                        .iter()
                        .find(|l| l.id == s.license_id)
                        .map_or(default_grace, |l| l.offline_grace(default_grace));
                    open.push(RestoredLease {
                        org: s.org_id,
                        license: s.license_id,
                        session: s.id,
                        hardware_id: s.hardware_id,
                        expires_at: s.lease_expires_at,
                        grace,
                    });
                }
            }
            let restored = ledger.restore(open);
            tracing::info!(restored, "in-process seat ledger (single node)");
            Ok(Arc::new(ledger))
        }
    }
}

/// Stripe's API, when billing is on (`stripe.secret_key` set).
fn payment_gateway(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn seatwarden_actors::ports::PaymentGateway>>> {
    let gateway = crate::stripe::StripeGateway::from_settings(&settings.stripe)
        .map_err(|e| anyhow::anyhow!("setting up Stripe: {e}"))?;
    Ok(gateway.map(|g| Arc::new(g) as Arc<dyn seatwarden_actors::ports::PaymentGateway>))
}

/// Opens the rate limiter: in Redis (one server or a cluster) when it is
/// configured, so that limits hold across all nodes together, else in this
/// process. Starts the housekeeping that keeps the in-process maps small
/// (the Redis limiter's own for outages included).
pub async fn open_rate_limiter(settings: &Settings) -> anyhow::Result<Arc<dyn RateLimiter>> {
    let rates = settings.rate_limits.rates();
    let clock = Arc::new(SystemClock);
    match settings.redis.target() {
        Some(target) => {
            let timeout = Duration::from_millis(settings.redis.timeout_ms);
            let limiter = RedisRateLimiter::open(&target, timeout, rates, clock)
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("connecting to {} for rate limits", target.redacted()))?;
            limiter.fallback().spawn_housekeeping(HOUSEKEEPING_INTERVAL);
            Ok(Arc::new(limiter))
        }
        None => {
            let limiter = Arc::new(LocalRateLimiter::new(rates, clock));
            limiter.spawn_housekeeping(HOUSEKEEPING_INTERVAL);
            Ok(limiter)
        }
    }
}

/// After a license change made outside the server (the CLI): when the
/// license no longer grants seats and the ledger is shared (Redis), drops
/// its leases right away, so heartbeats are refused at once rather than at
/// the servers' next license poll. Best effort: the servers' license
/// watchers do the same within `seats.license_watch_ms`.
pub async fn revoke_if_refused(settings: &Settings, license: &serde_json::Value) {
    let Some(target) = settings.redis.target() else {
        return;
    };
    let parsed: Result<License, _> = serde_json::from_value(license.clone());
    let Ok(license) = parsed else {
        return;
    };
    if license.refusal(chrono::Utc::now()).is_none() {
        return;
    }
    let timeout = Duration::from_millis(settings.redis.timeout_ms);
    let result = match RedisLedger::open(&target, timeout).await {
        Ok(ledger) => ledger
            .revoke_license(license.org_id, license.id)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not revoke the license's leases now; servers will within a second");
    }
}

/// Opens the signing key set in `store`. When the set is empty, the key at
/// `signing.key_path` (generated first if allowed, on a blocking thread:
/// seconds of CPU) becomes its first, active key.
pub async fn open_signing_keys(
    settings: &Settings,
    store: &dyn KeyStore,
    seal: &KeySeal,
) -> anyhow::Result<SigningKeys> {
    let cfg = SigningConfig {
        key_path: settings.key_path(),
        algorithm: settings.signing.algorithm,
        rsa_bits: settings.signing.rsa_bits,
        generate_if_missing: settings.signing.generate_if_missing,
    };
    let bootstrap = || async move {
        tokio::task::spawn_blocking(move || TokenSigner::load_or_generate_pem(&cfg))
            .await
            .map_err(|e| crate::signing::SigningError::Task(e.to_string()))?
    };
    let keys = SigningKeys::open(store, seal, bootstrap)
        .await
        .context("opening the signing key set")?;
    tracing::info!(kid = %keys.kid(), algorithm = %keys.algorithm(),
        keys = keys.jwks()["keys"].as_array().map_or(0, Vec::len), "signing keys ready");
    if keys.algorithm() != settings.signing.algorithm {
        tracing::warn!(
            active = %keys.algorithm(),
            configured = %settings.signing.algorithm,
            "the active signing key's algorithm is not signing.algorithm; \
             `seatwarden keys rotate` makes a key of the configured one active"
        );
    }
    Ok(keys)
}

/// What opens the stored signing keys: the seal keyed from the
/// access-token secret, with the PKCS#11 token of `signing.pkcs11` when
/// one is configured (opened and logged in here, so a wrong module, label
/// or PIN stops the start).
pub async fn key_seal(settings: &Settings) -> anyhow::Result<KeySeal> {
    let seal = access_tokens(settings)?.key_seal();
    let Some(pkcs11) = settings.signing.pkcs11.clone() else {
        return Ok(seal);
    };
    let hsm = tokio::task::spawn_blocking(move || crate::signing::pkcs11::Hsm::open(&pkcs11))
        .await
        .context("opening the PKCS#11 token")??;
    tracing::info!(?hsm, "PKCS#11 token open");
    Ok(seal.with_hsm(hsm))
}

/// The access-token key the settings name (generated in the data directory
/// when allowed). It also keys the seal of the stored signing keys, which
/// is why the `keys` commands load it too.
pub fn access_tokens(settings: &Settings) -> anyhow::Result<AccessTokens> {
    AccessTokens::load(
        settings.auth.access_token_secret.as_ref(),
        &settings.data_dir,
        settings.signing.generate_if_missing,
        Duration::from_secs(settings.auth.access_token_ttl_secs),
    )
    .context("loading the access-token key")
}

/// A built server, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    /// `http.metrics_listen`, bound: `/metrics` is served there instead.
    metrics_listener: Option<TcpListener>,
    limits: http::ServeLimits,
    context: AppContext,
    /// Held while the application lives (embedded default only).
    _lock: Option<DataDirLock>,
    /// Re-reads the signing key set; stopped when the application goes.
    _key_reload: AbortOnDrop,
}

/// A background task that lives as long as its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An exclusive OS lock on `<data_dir>/seatwarden.lock`, held for the life
/// of an embedded server: its in-process seat ledger is only correct when
/// one process serves a data directory. The OS drops the lock when the
/// process dies, so a crash never leaves a stale lock behind. CLI commands
/// don't take it: they only touch the database, which SQLite shares safely.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join("seatwarden.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another seatwarden server is already serving the data directory {}; \
                 the embedded default allows one server per data directory \
                 (run several nodes on Redis and PostgreSQL instead)",
                data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

impl Application {
    /// Opens everything the settings name and binds `http.listen` (port 0
    /// picks a free port, as tests do).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = telemetry::metrics_handle();
        // Templates and the mail transport first: a missing template
        // directory stops the server now, not the first email later.
        let mail: Arc<dyn MailSender> =
            Arc::new(LettreMailer::new(&settings.mail_config()).context("setting up mail")?);
        // The in-process ledger is only correct with one process per data
        // directory: a second one would grant the same seats again.
        let lock = match settings.redis.target() {
            None => Some(DataDirLock::acquire(&settings.data_dir)?),
            Some(_) => None,
        };
        let store = open_store(&settings).await?;
        seed_plans(&settings, store.as_ref()).await?;
        let seal = key_seal(&settings).await?;
        let access = access_tokens(&settings)?;
        let signer = open_signing_keys(&settings, store.as_ref(), &seal).await?;
        let key_reload = signer.spawn_reload(
            store.clone(),
            seal,
            Duration::from_secs(settings.signing.reload_secs),
        );
        let ledger = open_ledger(&settings, store.as_ref()).await?;
        let payments = payment_gateway(&settings)?;
        let ports = Ports {
            licenses: store.clone(),
            sessions: store.clone(),
            ledger: ledger.clone(),
            outbox: store.clone(),
            mail,
            machines: store.clone(),
            webhook_events: store.clone(),
            webhook_processor: Arc::new(crate::billing::StripeEvents::new(
                store.clone(),
                payments.clone(),
                signer.clone(),
                crate::billing::BillingPolicy {
                    key_prefix: settings.licenses.key_prefix.clone(),
                    expiry_slack: Duration::from_secs(settings.billing.expiry_slack_secs),
                    first_grace: Duration::from_secs(settings.billing.first_grace_secs),
                    second_grace: Duration::from_secs(settings.billing.second_grace_secs),
                    file_ttl_days: settings.licenses.file_ttl_days,
                },
            )),
            deadlines: store.clone(),
            deadline_handler: Arc::new(crate::billing::Renewals::new(
                store.clone(),
                payments.clone(),
            )),
        };
        let (coordinator, _) = Coordinator::start(ports, settings.coordinator())
            .await
            .context("starting the coordinator")?;
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let metrics_listener = match settings.http.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (http.metrics_listen)"))?,
            ),
            None => None,
        };
        let rate_limiter = open_rate_limiter(&settings).await?;
        let limits = http::ServeLimits::from_settings(&settings.http);
        let context = AppContext::new(AppState {
            coordinator,
            signer,
            store,
            ledger,
            metrics,
            heartbeat_interval_secs: settings.seats.heartbeat_interval_secs,
            client_ip: settings.http.client_ip,
            access,
            auth: settings.auth.clone(),
            licenses: settings.licenses.clone(),
            ops_token: settings.ops.token.as_ref().map(http::OperatorToken::new),
            rate_limiter,
            heartbeat_throttle: settings
                .rate_limits
                .rates()
                .get(Limit::HeartbeatPerSession)
                .throttle(),
            payments,
            billing: settings.billing.clone(),
            stripe_webhook_secrets: settings
                .stripe
                .webhook_secrets()
                .into_iter()
                .cloned()
                .collect(),
            hsts: settings.http.hsts,
        });
        if settings.ops.token.is_none() {
            tracing::info!("ops.token is not set: the operator API refuses every call");
        }
        Ok(Self {
            listener,
            metrics_listener,
            limits,
            context,
            _lock: lock,
            _key_reload: AbortOnDrop(key_reload),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The metrics port's address, when `http.metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.context.coordinator
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.context.store.clone()
    }

    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.context.store.clone()
    }

    pub fn signer(&self) -> &SigningKeys {
        &self.context.signer
    }

    /// Serves until `shutdown` completes, then drains connections and stops
    /// the coordinator, which flushes batched heartbeats: all of it within
    /// `http.shutdown_grace_secs` of the signal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr();
        tracing::info!(%addr, "seatwarden listening");
        let coordinator = self.context.coordinator.clone();
        let grace = self.limits.shutdown_grace;
        let signalled = Arc::new(OnceLock::new());
        let shutdown = {
            let signalled = signalled.clone();
            async move {
                shutdown.await;
                let _ = signalled.set(Instant::now());
            }
        };
        match self.metrics_listener {
            None => {
                http::serve(
                    self.listener,
                    http::routes(self.context),
                    self.limits,
                    shutdown,
                )
                .await
            }
            Some(metrics) => {
                tracing::info!(addr = ?metrics.local_addr().ok(), "metrics listening");
                let shutdown = shutdown.shared();
                let public = http::public_routes(self.context.clone());
                let internal = http::metrics_routes(self.context);
                tokio::join!(
                    http::serve(self.listener, public, self.limits, shutdown.clone()),
                    http::serve(metrics, internal, self.limits, shutdown),
                );
            }
        }
        // What the HTTP drain left of the grace, but never less than a
        // moment: batched heartbeats are worth a flush even when late.
        let left = signalled
            .get()
            .map_or(grace, |at: &Instant| grace.saturating_sub(at.elapsed()))
            .max(Duration::from_millis(500));
        coordinator.shutdown(left).await;
        tracing::info!("seatwarden stopped");
    }
}
