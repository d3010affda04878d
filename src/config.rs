//! Layered settings: the built-in `config/default.toml`, then an optional
//! file, then `SEATWARDEN__SECTION__KEY` environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::redis_link::RedisTarget;
use seatwarden_actors::domain::{DEFAULT_CURRENCY, NewPlan, PlanId};
use seatwarden_actors::ports::LineRules;
use seatwarden_actors::{
    CoordinatorSettings, MailerSettings, RenewalSettings, RestartPolicy, WebhookSettings,
};

pub use crate::ratelimit::RateLimitSettings;

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub seats: SeatSettings,
    pub signing: SigningSettings,
    pub licenses: LicenseSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub supervision: SupervisionSettings,
    #[serde(default)]
    pub ops: OpsSettings,
    pub rate_limits: RateLimitSettings,
    pub mail: MailSettings,
    pub webhooks: WebhooksSettings,
    pub renewals: RenewalsSettings,
    pub queue: QueueSettings,
    pub billing: BillingSettings,
    /// `[plans.<id>]`: the plans seeded into the catalogue at start-up.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanSettings>,
    pub stripe: StripeSettings,
    #[serde(default)]
    pub testing: TestingSettings,
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub client_ip: ClientIpSource,
    /// A client must send a request's complete head within this (slowloris).
    pub header_timeout_secs: u64,
    /// A request body must arrive in full within this, or the answer is 408.
    pub body_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_idle_secs: u64,
    /// Open connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// On SIGTERM, the whole drain (in-flight requests, batched heartbeats,
    /// subsystems) must be done within this.
    pub shutdown_grace_secs: u64,
    /// When set, `/metrics` is served only here and not on `listen`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Send `Strict-Transport-Security` on every response (only behind
    /// TLS: the header is meaningless, and ignored, over plain HTTP).
    #[serde(default)]
    pub hsts: bool,
    /// The server's address as its users reach it: the base of links in
    /// email. No trailing slash (one is removed).
    pub public_url: String,
}

/// Where the client IP recorded with sessions comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpSource {
    /// The TCP peer address.
    Peer,
    /// The right-most `X-Forwarded-For` entry, as appended by a trusted
    /// reverse proxy; the peer address when the header is absent.
    XForwardedFor,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    /// Secret: a PostgreSQL URL carries a password. `None` means SQLite in
    /// `data_dir`.
    pub url: Option<SecretString>,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    /// Secret: may carry a password. `None` (and no `cluster_urls`) means
    /// the in-process ledger.
    pub url: Option<SecretString>,
    /// Redis Cluster: some of its nodes' URLs (the rest are discovered). A
    /// list in TOML, a comma-separated list in
    /// `SEATWARDEN__REDIS__CLUSTER_URLS`. Secret, like `url`. Excludes `url`.
    #[serde(default, deserialize_with = "url_list")]
    pub cluster_urls: Vec<SecretString>,
    pub timeout_ms: u64,
}

impl RedisSettings {
    /// Where the shared ledger and rate limits live; `None` for the
    /// embedded, in-process default.
    pub fn target(&self) -> Option<RedisTarget> {
        if !self.cluster_urls.is_empty() {
            let urls = self
                .cluster_urls
                .iter()
                .map(|u| u.expose_secret().to_owned());
            return Some(RedisTarget::Cluster(urls.collect()));
        }
        self.url
            .as_ref()
            .map(|u| RedisTarget::Single(u.expose_secret().to_owned()))
    }
}

/// A list of URLs given as a list, or as one comma-separated string (an
/// environment variable). Blank entries are dropped, so an empty variable
/// means none.
fn url_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    let urls = match Urls::deserialize(d)? {
        Urls::One(s) => s.split(',').map(str::to_owned).collect(),
        Urls::Many(v) => v,
    };
    Ok(urls
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .map(SecretString::from)
        .collect())
}

#[derive(Clone, Debug, Deserialize)]
pub struct MailSettings {
    /// Secret: may carry a password. `None` means `.eml` files in
    /// `<data_dir>/outbox/`.
    pub smtp_url: Option<SecretString>,
    pub from: String,
    pub template_dir: PathBuf,
    pub poll_interval_ms: u64,
    pub retry_base_secs: u64,
    pub max_attempts: u32,
    pub batch_size: u32,
    pub claim_secs: u64,
    pub send_timeout_secs: u64,
}

/// `[billing]`: how subscriptions become licenses.
#[derive(Clone, Debug, Deserialize)]
pub struct BillingSettings {
    /// A subscription's license outlives its paid period by this much.
    pub expiry_slack_secs: u64,
    /// The grace period a first failed payment starts, and the one a
    /// second failure restarts (shorter).
    pub first_grace_secs: u64,
    pub second_grace_secs: u64,
    /// Checkout's `success_url` and `cancel_url` must be on one of these
    /// origins (`scheme://host[:port]`), so that nobody can use a checkout
    /// of ours to send a buyer elsewhere.
    pub allowed_redirect_origins: Vec<String>,
}

/// `[webhooks]`: how recorded webhook events are processed.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhooksSettings {
    pub poll_interval_ms: u64,
    pub retry_base_secs: u64,
    pub max_attempts: u32,
    pub batch_size: u32,
    pub claim_secs: u64,
    pub process_timeout_secs: u64,
}

/// `[renewals]`: the billing deadlines (grace ends, expiries, expiry
/// warnings, trial ends) and how they are fired.
#[derive(Clone, Debug, Deserialize)]
pub struct RenewalsSettings {
    /// How long before a license's expiry its owners are warned.
    pub expiry_warning_secs: u64,
    pub poll_interval_ms: u64,
    pub retry_base_secs: u64,
    pub max_attempts: u32,
    pub batch_size: u32,
    pub claim_secs: u64,
    pub decide_timeout_secs: u64,
}

/// `[queue]`: the seat queue, where machines wait for a full license's
/// next free seat.
#[derive(Clone, Debug, Deserialize)]
pub struct QueueSettings {
    /// How long a freed seat is held for the ticket at the head of the line.
    pub hold_secs: u64,
    /// How often a waiting client polls its ticket; three missed polls and
    /// the ticket leaves the line.
    pub poll_secs: u64,
    /// The longest line per license.
    pub max_length: u32,
}

/// Billing through Stripe. Off while `secret_key` is unset.
#[derive(Clone, Debug, Deserialize)]
pub struct StripeSettings {
    /// The API key (`sk_...` or a restricted `rk_...`). Secret. `None`:
    /// billing is off and the server runs without it.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// The signing secret of the webhook endpoint (`whsec_...`). Secret.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// The previous signing secret while one is being rolled: events signed
    /// with either are accepted. Secret.
    #[serde(default)]
    pub previous_webhook_secret: Option<SecretString>,
    /// Where the API is; requests go to `{api_base}v1/...`. Always ends
    /// with `/` (one is added).
    pub api_base: String,
    /// How long one API call may take before it fails as unavailable.
    pub timeout_ms: u64,
}

impl StripeSettings {
    /// Whether billing is on: an API key is configured.
    pub fn enabled(&self) -> bool {
        self.secret_key.is_some()
    }

    /// The webhook signing secrets to accept, current first.
    pub fn webhook_secrets(&self) -> Vec<&SecretString> {
        self.webhook_secret
            .iter()
            .chain(self.previous_webhook_secret.iter())
            .collect()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct SeatSettings {
    pub lease_ttl_secs: u64,
    pub heartbeat_interval_secs: u64,
    pub offline_grace_secs: u64,
    pub token_skew_secs: u64,
    pub sweep_interval_secs: u64,
    pub sweep_batch: u32,
    pub license_watch_ms: u64,
    pub org_idle_timeout_secs: u64,
    pub license_cache_secs: u64,
    pub unknown_key_cache_secs: u64,
    pub failure_audits_per_minute: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SigningSettings {
    pub key_path: Option<PathBuf>,
    /// The algorithm of keys generated from now on (`RS256`, `ES256` or
    /// `EdDSA`); a key in use keeps its own until `keys rotate`.
    #[serde(default)]
    pub algorithm: crate::signing::SigningAlgorithm,
    pub rsa_bits: usize,
    pub generate_if_missing: bool,
    /// How often a node re-reads the key set, so that a rotation reaches
    /// it without a restart.
    pub reload_secs: u64,
    /// A PKCS#11 token for keys that never leave it (`keys rotate --hsm`).
    /// The PIN is a secret: `SEATWARDEN__SIGNING__PKCS11__PIN`.
    #[serde(default)]
    pub pkcs11: Option<crate::signing::pkcs11::Pkcs11Settings>,
}

/// Logins, their tokens and the lockout.
#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    /// The HMAC key of access tokens, shared by every node. `None`: a key
    /// generated once in `<data_dir>/access-token.key` (single node), when
    /// `signing.generate_if_missing` allows it.
    pub access_token_secret: Option<SecretString>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_days: u64,
    pub verify_token_ttl_hours: u64,
    pub reset_token_ttl_mins: u64,
    /// How long an emailed invitation into an organization stays usable.
    #[serde(default = "seven")]
    pub invitation_ttl_days: u64,
    pub lockout_max_failures: u32,
    pub lockout_window_secs: u64,
    pub lockout_secs: u64,
}

impl AuthSettings {
    pub fn lockout(&self) -> seatwarden_actors::domain::LockoutPolicy {
        seatwarden_actors::domain::LockoutPolicy {
            max_failures: self.lockout_max_failures,
            window: secs(self.lockout_window_secs),
            lock_for: secs(self.lockout_secs),
        }
    }
}

fn seven() -> u64 {
    7
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX))
}

#[derive(Clone, Debug, Deserialize)]
pub struct LicenseSettings {
    pub key_prefix: String,
    /// How long a signed license file stays valid, in days.
    pub file_ttl_days: u32,
    /// Machine deactivations allowed per license within any 24 hours.
    pub deactivations_per_day: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The root's restart policy, the same for every subsystem.
#[derive(Clone, Debug, Deserialize)]
pub struct SupervisionSettings {
    /// Restarts allowed within `window_secs`; one more failure and the
    /// subsystem stays down. 0: down at the first failure.
    pub max_restarts: u32,
    pub window_secs: u64,
}

/// The operator API.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OpsSettings {
    /// Static bearer token for `/api/v1/ops/...`. Secret: redacted in
    /// Debug. `None`: every operator call is refused.
    pub token: Option<SecretString>,
}

/// Shortest `ops.token` accepted: a guessable operator token would hand
/// out restarts of the whole node.
pub const MIN_OPS_TOKEN_LEN: usize = 16;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct TestingSettings {
    #[serde(default)]
    pub fault_hooks: bool,
}

/// One `[plans.<id>]` table: a plan to seed into the catalogue when no
/// plan has its id yet. Seeding never overwrites: once the plan exists,
/// the database (and the admin API) is the truth, and a change here only
/// reaches a database that lacks the plan.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub name: String,
    /// Lower-case ISO 4217; `usd` when absent.
    #[serde(default = "default_currency")]
    pub currency: String,
    pub monthly_price_cents: i64,
    /// Absent: sold monthly only.
    #[serde(default)]
    pub annual_price_cents: Option<i64>,
    pub seats: u32,
    /// 14 when absent.
    #[serde(default = "default_trial_days")]
    pub trial_days: u32,
    pub stripe_price_monthly: String,
    /// Required exactly when `annual_price_cents` is set.
    #[serde(default)]
    pub stripe_price_annual: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

fn default_trial_days() -> u32 {
    14
}

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A `[plans.<id>]` table that is not a valid plan; `key` names the
    /// table or the field, e.g. `plans.pro.stripe_price_annual`.
    #[error("invalid setting {key}: {reason}")]
    InvalidPlan { key: String, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The environment variable of the PKCS#11 PIN, read verbatim.
const PKCS11_PIN_ENV: &str = "SEATWARDEN__SIGNING__PKCS11__PIN";

impl Settings {
    /// Loads the layers from the real environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // (See `figment` for how the PKCS#11 PIN is read.)
        Self::from_figment(Self::figment(file))
    }

    /// The layers, for callers that want to add one (tests merge their own
    /// values on top).
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment.merge(Env::prefixed("SEATWARDEN__").split("__"));
        // Figment reads `0042` from the environment as the number 42; a PIN
        // is text, and its leading zeros count.
        match std::env::var(PKCS11_PIN_ENV) {
            Ok(pin) => figment.merge(figment::providers::Serialized::default(
                "signing.pkcs11.pin",
                pin,
            )),
            Err(_) => figment,
        }
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        // An empty variable (SEATWARDEN__REDIS__URL=) means "unset".
        if settings
            .redis
            .url
            .as_ref()
            .is_some_and(|u| u.expose_secret().trim().is_empty())
        {
            settings.redis.url = None;
        }
        if settings
            .database
            .url
            .as_ref()
            .is_some_and(|u| u.expose_secret().trim().is_empty())
        {
            settings.database.url = None;
        }
        if settings
            .auth
            .access_token_secret
            .as_ref()
            .is_some_and(|u| u.expose_secret().trim().is_empty())
        {
            settings.auth.access_token_secret = None;
        }
        if settings
            .ops
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
        {
            settings.ops.token = None;
        }
        if settings
            .mail
            .smtp_url
            .as_ref()
            .is_some_and(|u| u.expose_secret().trim().is_empty())
        {
            settings.mail.smtp_url = None;
        }
        for secret in [
            &mut settings.stripe.secret_key,
            &mut settings.stripe.webhook_secret,
            &mut settings.stripe.previous_webhook_secret,
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                *secret = None;
            }
        }
        if !settings.stripe.api_base.ends_with('/') {
            settings.stripe.api_base.push('/');
        }
        // Normalized (percent-encoded) as the url crate writes it: the
        // templates treat it as trusted, unescaped HTML.
        if let Ok(url) = url::Url::parse(&settings.http.public_url) {
            settings.http.public_url = url.as_str().to_owned();
        }
        settings.http.public_url = settings.http.public_url.trim_end_matches('/').to_owned();
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.seats;
        if s.lease_ttl_secs == 0 {
            return Err(invalid("seats.lease_ttl_secs", "must be at least 1"));
        }
        if s.heartbeat_interval_secs == 0 || s.heartbeat_interval_secs > s.lease_ttl_secs {
            return Err(invalid(
                "seats.heartbeat_interval_secs",
                "must be between 1 and seats.lease_ttl_secs",
            ));
        }
        if s.sweep_interval_secs == 0 {
            return Err(invalid("seats.sweep_interval_secs", "must be at least 1"));
        }
        if s.token_skew_secs > 60 {
            return Err(invalid("seats.token_skew_secs", "must be at most 60"));
        }
        if s.offline_grace_secs > u64::from(u32::MAX) {
            return Err(invalid("seats.offline_grace_secs", "is too large"));
        }
        if s.sweep_batch == 0 {
            return Err(invalid("seats.sweep_batch", "must be at least 1"));
        }
        if s.license_watch_ms < 10 {
            return Err(invalid("seats.license_watch_ms", "must be at least 10"));
        }
        if ![2048, 3072, 4096].contains(&self.signing.rsa_bits) {
            return Err(invalid("signing.rsa_bits", "must be 2048, 3072 or 4096"));
        }
        if !(1..=3650).contains(&self.licenses.file_ttl_days) {
            return Err(invalid("licenses.file_ttl_days", "must be 1 to 3650"));
        }
        let prefix = &self.licenses.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "licenses.key_prefix",
                "must be 1 to 32 ASCII letters or digits",
            ));
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(invalid(
                    "database.url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        let h = &self.http;
        for (key, secs) in [
            ("http.header_timeout_secs", h.header_timeout_secs),
            ("http.body_timeout_secs", h.body_timeout_secs),
            ("http.keep_alive_idle_secs", h.keep_alive_idle_secs),
            ("http.shutdown_grace_secs", h.shutdown_grace_secs),
            ("signing.reload_secs", self.signing.reload_secs),
        ] {
            if secs == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.redis.url.is_some() && !self.redis.cluster_urls.is_empty() {
            return Err(invalid(
                "redis.cluster_urls",
                "set either redis.url (one server) or redis.cluster_urls (a cluster), not both",
            ));
        }
        for url in &self.redis.cluster_urls {
            if !url.expose_secret().starts_with("redis://")
                && !url.expose_secret().starts_with("rediss://")
            {
                return Err(invalid(
                    "redis.cluster_urls",
                    "every entry must start with redis:// or rediss://",
                ));
            }
        }
        if h.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        let a = &self.auth;
        if a.access_token_ttl_secs == 0 || a.access_token_ttl_secs > 86_400 {
            return Err(invalid("auth.access_token_ttl_secs", "must be 1 to 86400"));
        }
        for (key, n) in [
            ("auth.refresh_token_ttl_days", a.refresh_token_ttl_days),
            ("auth.verify_token_ttl_hours", a.verify_token_ttl_hours),
            ("auth.reset_token_ttl_mins", a.reset_token_ttl_mins),
            ("auth.lockout_window_secs", a.lockout_window_secs),
            ("auth.lockout_secs", a.lockout_secs),
        ] {
            if n == 0 || n > 10_000_000 {
                return Err(invalid(key, "must be 1 to 10000000"));
            }
        }
        if a.lockout_max_failures == 0 {
            return Err(invalid("auth.lockout_max_failures", "must be at least 1"));
        }
        if let Some(secret) = &a.access_token_secret
            && secret.expose_secret().len() < 32
        {
            return Err(invalid(
                "auth.access_token_secret",
                "must be at least 32 characters",
            ));
        }
        if self.supervision.window_secs == 0 {
            return Err(invalid("supervision.window_secs", "must be at least 1"));
        }
        if let Some(token) = &self.ops.token
            && token.expose_secret().chars().count() < MIN_OPS_TOKEN_LEN
        {
            return Err(invalid(
                "ops.token",
                format!("must be at least {MIN_OPS_TOKEN_LEN} characters"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        match url::Url::parse(&h.public_url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
            _ => {
                return Err(invalid(
                    "http.public_url",
                    "must be an http:// or https:// URL without query or fragment",
                ));
            }
        }
        self.validate_mail()?;
        self.validate_stripe()?;
        self.validate_renewals()?;
        self.validate_queue()?;
        self.plan_seeds().map(drop)
    }

    fn validate_queue(&self) -> Result<(), ConfigError> {
        let q = &self.queue;
        if !(1..=3600).contains(&q.hold_secs) {
            return Err(invalid("queue.hold_secs", "must be 1 to 3600"));
        }
        if !(1..=600).contains(&q.poll_secs) {
            return Err(invalid("queue.poll_secs", "must be 1 to 600"));
        }
        if !(1..=100_000).contains(&q.max_length) {
            return Err(invalid("queue.max_length", "must be 1 to 100000"));
        }
        Ok(())
    }

    fn validate_renewals(&self) -> Result<(), ConfigError> {
        let r = &self.renewals;
        if r.poll_interval_ms == 0 {
            return Err(invalid("renewals.poll_interval_ms", "must be at least 1"));
        }
        if r.batch_size == 0 {
            return Err(invalid("renewals.batch_size", "must be at least 1"));
        }
        if r.max_attempts == 0 {
            return Err(invalid("renewals.max_attempts", "must be at least 1"));
        }
        if r.decide_timeout_secs == 0 || r.decide_timeout_secs >= r.claim_secs {
            return Err(invalid(
                "renewals.decide_timeout_secs",
                "must be at least 1 and below renewals.claim_secs",
            ));
        }
        Ok(())
    }

    /// The `[plans.<id>]` tables as plans to seed, each validated as the
    /// admin API validates a new plan, in id order.
    pub fn plan_seeds(&self) -> Result<Vec<NewPlan>, ConfigError> {
        self.plans
            .iter()
            .map(|(key, p)| {
                let id = PlanId::parse(key).map_err(|e| ConfigError::InvalidPlan {
                    key: format!("plans.{key}"),
                    reason: format!("the plan id {}", e.message),
                })?;
                let plan = NewPlan {
                    id,
                    name: p.name.clone(),
                    currency: p.currency.clone(),
                    monthly_price_cents: p.monthly_price_cents,
                    annual_price_cents: p.annual_price_cents,
                    seats: p.seats,
                    trial_days: p.trial_days,
                    stripe_price_monthly: p.stripe_price_monthly.clone(),
                    stripe_price_annual: p.stripe_price_annual.clone(),
                    features: p.features.clone(),
                };
                plan.validate().map_err(|e| ConfigError::InvalidPlan {
                    key: format!("plans.{key}.{}", e.field),
                    reason: e.message,
                })?;
                Ok(plan)
            })
            .collect()
    }

    fn validate_stripe(&self) -> Result<(), ConfigError> {
        let s = &self.stripe;
        match url::Url::parse(&s.api_base) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
            _ => {
                return Err(invalid(
                    "stripe.api_base",
                    "must be an http:// or https:// URL without credentials, query or fragment",
                ));
            }
        }
        if s.timeout_ms == 0 {
            return Err(invalid("stripe.timeout_ms", "must be at least 1"));
        }
        if let Some(key) = &s.secret_key
            && !key.expose_secret().bytes().all(|b| b.is_ascii_graphic())
        {
            // It travels in an HTTP header; don't echo it.
            return Err(invalid(
                "stripe.secret_key",
                "must be visible ASCII characters only",
            ));
        }
        if s.secret_key.is_some() && s.webhook_secret.is_none() {
            return Err(invalid(
                "stripe.webhook_secret",
                "must be set when stripe.secret_key is: billing learns of payments from webhooks",
            ));
        }
        if s.previous_webhook_secret.is_some() && s.webhook_secret.is_none() {
            return Err(invalid(
                "stripe.previous_webhook_secret",
                "needs stripe.webhook_secret (the current one)",
            ));
        }
        Ok(())
    }

    fn validate_mail(&self) -> Result<(), ConfigError> {
        let m = &self.mail;
        if let Some(url) = &m.smtp_url {
            let url = url.expose_secret();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(invalid(
                    "mail.smtp_url",
                    "must start with smtp:// or smtps://",
                ));
            }
        }
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "mail.from",
                "must be a mail address, e.g. \"seatwarden <noreply@example.com>\"",
            ));
        }
        if m.poll_interval_ms < 10 {
            return Err(invalid("mail.poll_interval_ms", "must be at least 10"));
        }
        if m.max_attempts == 0 {
            return Err(invalid("mail.max_attempts", "must be at least 1"));
        }
        if m.batch_size == 0 {
            return Err(invalid("mail.batch_size", "must be at least 1"));
        }
        if m.send_timeout_secs == 0 {
            return Err(invalid("mail.send_timeout_secs", "must be at least 1"));
        }
        // A send is only started while the claim has send_timeout left.
        if m.claim_secs <= m.send_timeout_secs {
            return Err(invalid(
                "mail.claim_secs",
                "must be longer than mail.send_timeout_secs",
            ));
        }
        Ok(())
    }

    /// The database URL, defaulting to SQLite in `data_dir`.
    pub fn database_url(&self) -> SecretString {
        self.database.url.clone().unwrap_or_else(|| {
            SecretString::from(format!(
                "sqlite://{}",
                self.data_dir.join("seatwarden.db").display()
            ))
        })
    }

    /// The signing key's path, defaulting to `data_dir`.
    pub fn key_path(&self) -> PathBuf {
        self.signing
            .key_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing-key.pem"))
    }

    /// Where mail goes as `.eml` files when `mail.smtp_url` is unset.
    pub fn mail_file_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// What the mail transport needs.
    pub fn mail_config(&self) -> crate::mail::MailConfig {
        crate::mail::MailConfig {
            smtp_url: self.mail.smtp_url.clone(),
            from: self.mail.from.clone(),
            template_dir: self.mail.template_dir.clone(),
            public_url: self.http.public_url.clone(),
            file_dir: self.mail_file_dir(),
            send_timeout: Duration::from_secs(self.mail.send_timeout_secs),
        }
    }

    pub fn mailer(&self) -> MailerSettings {
        let m = &self.mail;
        MailerSettings {
            poll_interval: Duration::from_millis(m.poll_interval_ms),
            retry_base: Duration::from_secs(m.retry_base_secs),
            max_attempts: m.max_attempts,
            batch_size: m.batch_size,
            claim_lease: Duration::from_secs(m.claim_secs),
            send_timeout: Duration::from_secs(m.send_timeout_secs),
            ..MailerSettings::default()
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.seats.lease_ttl_secs)
    }

    pub fn coordinator(&self) -> CoordinatorSettings {
        let s = &self.seats;
        CoordinatorSettings {
            lease_ttl: self.lease_ttl(),
            heartbeat_interval: Duration::from_secs(s.heartbeat_interval_secs),
            offline_grace: Duration::from_secs(s.offline_grace_secs),
            token_skew: Duration::from_secs(s.token_skew_secs),
            sweep_interval: Duration::from_secs(s.sweep_interval_secs),
            sweep_batch: s.sweep_batch,
            license_watch_interval: Duration::from_millis(s.license_watch_ms),
            org_idle_timeout: Duration::from_secs(s.org_idle_timeout_secs),
            license_cache_ttl: Duration::from_secs(s.license_cache_secs),
            unknown_key_ttl: Duration::from_secs(s.unknown_key_cache_secs),
            failure_audits_per_minute: s.failure_audits_per_minute,
            call_timeout: Duration::from_secs(10),
            fault_hooks: self.testing.fault_hooks,
            restart_policy: RestartPolicy {
                max_restarts: self.supervision.max_restarts,
                window: Duration::from_secs(self.supervision.window_secs),
            },
            mailer: self.mailer(),
            webhooks: self.webhook_processing(),
            renewals: self.renewal_timers(),
            line: LineRules {
                hold: Duration::from_secs(self.queue.hold_secs),
                patience: Duration::from_secs(self.queue.poll_secs.saturating_mul(3)),
                max_len: self.queue.max_length,
            },
            queue_poll: Duration::from_secs(self.queue.poll_secs),
        }
    }

    pub fn renewal_timers(&self) -> RenewalSettings {
        let r = &self.renewals;
        RenewalSettings {
            poll_interval: Duration::from_millis(r.poll_interval_ms),
            expiry_warning: Duration::from_secs(r.expiry_warning_secs),
            retry_base: Duration::from_secs(r.retry_base_secs),
            max_attempts: r.max_attempts,
            batch_size: r.batch_size,
            claim_lease: Duration::from_secs(r.claim_secs),
            decide_timeout: Duration::from_secs(r.decide_timeout_secs),
            ..RenewalSettings::default()
        }
    }

    pub fn webhook_processing(&self) -> WebhookSettings {
        let w = &self.webhooks;
        WebhookSettings {
            poll_interval: Duration::from_millis(w.poll_interval_ms),
            retry_base: Duration::from_secs(w.retry_base_secs),
            max_attempts: w.max_attempts,
            batch_size: w.batch_size,
            claim_lease: Duration::from_secs(w.claim_secs),
            process_timeout: Duration::from_secs(w.process_timeout_secs),
            ..WebhookSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_load_and_point_at_the_data_dir() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        assert_eq!(s.seats.lease_ttl_secs, 360);
        assert_eq!(s.seats.heartbeat_interval_secs, 300);
        assert_eq!(s.signing.rsa_bits, 4096);
        assert_eq!(s.signing.algorithm, crate::signing::SigningAlgorithm::RS256);
        assert!(s.redis.url.is_none());
        assert_eq!(
            s.database_url().expose_secret(),
            "sqlite://./data/seatwarden.db"
        );
        assert_eq!(s.key_path(), PathBuf::from("./data/signing-key.pem"));
        assert_eq!(s.http.header_timeout_secs, 10);
        assert_eq!(s.http.body_timeout_secs, 10);
        assert_eq!(s.http.keep_alive_idle_secs, 75);
        assert_eq!(s.http.max_connections, 10_000);
        assert!(s.http.metrics_listen.is_none());
        assert_eq!(s.supervision.max_restarts, 5);
        assert_eq!(s.supervision.window_secs, 60);
        assert!(s.ops.token.is_none());
        assert!(!s.http.hsts);
    }

    #[test]
    fn the_default_rate_limits_are_the_issue_s_quotas() {
        use crate::ratelimit::{Limit, Rate};
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        let rates = s.rate_limits.rates();
        let per = |n, secs| Rate::per(n, Duration::from_secs(secs));
        for (limit, rate) in [
            (Limit::LoginPerIp, per(5, 60)),
            (Limit::LoginPerAccount, per(10, 60)),
            (Limit::RegisterPerIp, per(3, 60)),
            (Limit::ForgotPasswordPerAccount, per(3, 3600)),
            (Limit::ValidatePerKey, per(60, 60)),
            (Limit::ActivatePerKey, per(10, 3600)),
            (Limit::AcquirePerMachine, per(10, 60)),
            (Limit::HeartbeatPerSession, per(20, 60)),
            (Limit::AcceptInvitationPerIp, per(10, 3600)),
        ] {
            assert_eq!(rates.get(limit), rate, "{limit}");
        }
    }

    #[test]
    fn a_rate_limit_can_be_switched_off_alone_or_all_at_once() {
        use crate::ratelimit::{Limit, Rate};
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("rate_limits.heartbeat_per_session", "off"));
        let rates = Settings::from_figment(f).unwrap().rate_limits.rates();
        assert_eq!(rates.get(Limit::HeartbeatPerSession), Rate::Off);
        assert_ne!(rates.get(Limit::AcquirePerMachine), Rate::Off);

        let f = Figment::from(Toml::string(DEFAULTS)).merge(("rate_limits.enabled", false));
        let rates = Settings::from_figment(f).unwrap().rate_limits.rates();
        assert!(Limit::ALL.iter().all(|l| rates.get(*l) == Rate::Off));
    }

    #[test]
    fn renewals_default_to_a_week_of_warning_and_refuse_a_decision_longer_than_its_claim() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        let r = s.renewal_timers();
        assert_eq!(r.expiry_warning, Duration::from_secs(7 * 86_400));
        assert!(r.decide_timeout < r.claim_lease);
        for (key, value) in [
            ("renewals.decide_timeout_secs", 120),
            ("renewals.batch_size", 0),
            ("renewals.poll_interval_ms", 0),
        ] {
            let f = Figment::from(Toml::string(DEFAULTS)).merge((key, value));
            let error = Settings::from_figment(f).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn a_rate_that_does_not_parse_is_refused_with_its_key() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("rate_limits.login_per_ip", "5 per minute"));
        let error = Settings::from_figment(f).unwrap_err().to_string();
        assert!(error.contains("login_per_ip"), "{error}");
    }

    #[test]
    fn the_ops_token_is_redacted_in_debug_output_and_an_empty_one_is_unset() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("ops.token", "correct-horse-battery-staple"));
        let s = Settings::from_figment(f).unwrap();
        assert!(!format!("{s:?}").contains("correct-horse"), "{s:?}");
        let f = Figment::from(Toml::string(DEFAULTS)).merge(("ops.token", " "));
        assert!(Settings::from_figment(f).unwrap().ops.token.is_none());
    }

    #[test]
    fn the_signing_algorithm_and_a_pkcs11_token_load_and_the_pin_is_redacted() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("signing.algorithm", "EdDSA"))
            .merge(("signing.pkcs11.module", "/usr/lib/softhsm/libsofthsm2.so"))
            .merge(("signing.pkcs11.token_label", "seatwarden"))
            .merge(("signing.pkcs11.pin", "pin-8361-secret"));
        let s = Settings::from_figment(f).unwrap();
        assert_eq!(s.signing.algorithm, crate::signing::SigningAlgorithm::EdDSA);
        let pkcs11 = s.signing.pkcs11.as_ref().expect("signing.pkcs11");
        assert_eq!(pkcs11.token_label, "seatwarden");
        assert!(!format!("{s:?}").contains("pin-8361"), "{s:?}");

        let f = Figment::from(Toml::string(DEFAULTS)).merge(("signing.algorithm", "ES512"));
        let error = Settings::from_figment(f).unwrap_err().to_string();
        assert!(
            error.contains("ES512") || error.contains("algorithm"),
            "{error}"
        );
    }

    #[test]
    fn a_short_ops_token_is_refused_without_showing_it() {
        let f = Figment::from(Toml::string(DEFAULTS)).merge(("ops.token", "hunter2"));
        let err = Settings::from_figment(f).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "ops.token",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_restart_policy_reaches_the_coordinator() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("supervision.max_restarts", 2))
            .merge(("supervision.window_secs", 7));
        let policy = Settings::from_figment(f)
            .unwrap()
            .coordinator()
            .restart_policy;
        assert_eq!(policy.max_restarts, 2);
        assert_eq!(policy.window, Duration::from_secs(7));
    }

    #[test]
    fn production_serves_metrics_on_an_internal_port_only() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string(include_str!("../config/production.toml")));
        let s = Settings::from_figment(f).unwrap();
        assert_eq!(s.http.listen.port(), 8080);
        assert_eq!(s.http.metrics_listen.map(|a| a.port()), Some(9090));
    }

    #[test]
    fn a_header_timeout_of_zero_is_refused() {
        let f = Figment::from(Toml::string(DEFAULTS)).merge(("http.header_timeout_secs", 0));
        assert!(matches!(
            Settings::from_figment(f),
            Err(ConfigError::Invalid {
                key: "http.header_timeout_secs",
                ..
            })
        ));
    }

    #[test]
    fn a_lease_ttl_of_zero_is_refused() {
        let f = Figment::from(Toml::string(DEFAULTS)).merge(("seats.lease_ttl_secs", 0));
        assert!(matches!(
            Settings::from_figment(f),
            Err(ConfigError::Invalid {
                key: "seats.lease_ttl_secs",
                ..
            })
        ));
    }

    #[test]
    fn a_one_second_lease_is_accepted() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("seats.lease_ttl_secs", 1))
            .merge(("seats.heartbeat_interval_secs", 1));
        assert_eq!(
            Settings::from_figment(f).unwrap().lease_ttl(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn cluster_urls_come_as_a_list_or_as_one_comma_separated_string() {
        let from_toml = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(
            "[redis]\ncluster_urls = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]",
        ));
        let from_env = Figment::from(Toml::string(DEFAULTS)).merge((
            "redis.cluster_urls",
            "redis://127.0.0.1:7000, redis://127.0.0.1:7001,",
        ));
        for f in [from_toml, from_env] {
            let s = Settings::from_figment(f).unwrap();
            assert_eq!(
                s.redis.target(),
                Some(RedisTarget::Cluster(vec![
                    "redis://127.0.0.1:7000".into(),
                    "redis://127.0.0.1:7001".into()
                ]))
            );
        }
    }

    #[test]
    fn a_url_and_cluster_urls_together_are_refused() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("redis.url", "redis://127.0.0.1:6379"))
            .merge(("redis.cluster_urls", "redis://127.0.0.1:7000"));
        let err = Settings::from_figment(f).unwrap_err().to_string();
        assert!(err.contains("redis.cluster_urls"), "{err}");
    }

    #[test]
    fn debug_output_redacts_database_and_redis_urls() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("database.url", "postgres://sw:hunter2@db/sw"))
            .merge(("redis.url", "redis://:s3cret@cache:6379"))
            .merge((
                "mail.smtp_url",
                "smtp://mailer:m41lpass@smtp.example.com:587",
            ));
        let s = Settings::from_figment(f).unwrap();
        let shown = format!("{s:?} {:?}", s.mail_config());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret") && !shown.contains("m41lpass"),
            "{shown}"
        );
    }

    #[test]
    fn mail_defaults_write_files_and_link_to_the_local_server() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        assert!(s.mail.smtp_url.is_none());
        assert_eq!(s.mail_file_dir(), PathBuf::from("./data/outbox"));
        assert_eq!(s.mail.template_dir, PathBuf::from("config/templates/email"));
        assert_eq!(s.http.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn a_public_url_loses_its_trailing_slash() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("http.public_url", "https://licenses.example.com/"));
        let s = Settings::from_figment(f).unwrap();
        assert_eq!(s.http.public_url, "https://licenses.example.com");
    }

    #[test]
    fn a_claim_no_longer_than_a_send_is_refused() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("mail.claim_secs", 15))
            .merge(("mail.send_timeout_secs", 15));
        assert!(matches!(
            Settings::from_figment(f),
            Err(ConfigError::Invalid {
                key: "mail.claim_secs",
                ..
            })
        ));
    }

    #[test]
    fn the_default_plans_are_the_issue_s_catalogue() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        let plans = s.plan_seeds().unwrap();
        let summary: Vec<(&str, i64, Option<i64>, u32, u32)> = plans
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.monthly_price_cents,
                    p.annual_price_cents,
                    p.seats,
                    p.trial_days,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("enterprise", 29_900, Some(299_000), 50, 14),
                ("pro", 9900, Some(99_000), 10, 14),
                ("starter", 2900, None, 3, 14),
            ]
        );
        assert!(plans.iter().all(|p| p.currency == "usd"));
        assert_eq!(plans[1].stripe_price_monthly, "price_pro_monthly");
        assert!(plans[0].features.contains(&"dedicated support".to_owned()));
    }

    #[test]
    fn a_plan_s_stripe_price_can_be_set_per_plan() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("plans.pro.stripe_price_monthly", "price_1Pq2real"));
        let plans = Settings::from_figment(f).unwrap().plan_seeds().unwrap();
        let pro = plans.iter().find(|p| p.id.as_str() == "pro").unwrap();
        assert_eq!(pro.stripe_price_monthly, "price_1Pq2real");
    }

    #[test]
    fn a_bad_plan_stops_start_up_naming_its_setting() {
        let refused = |f: Figment| match Settings::from_figment(f) {
            Err(ConfigError::InvalidPlan { key, reason }) => format!("{key}: {reason}"),
            other => panic!("{other:?}"),
        };
        let defaults = || Figment::from(Toml::string(DEFAULTS));
        let error = refused(defaults().merge(("plans.pro.seats", 0)));
        assert!(error.starts_with("plans.pro.seats:"), "{error}");
        let error = refused(defaults().merge(("plans.starter.annual_price_cents", 29_000)));
        assert!(
            error.starts_with("plans.starter.stripe_price_annual:"),
            "{error}"
        );
        let error = refused(
            defaults()
                .merge(("plans.Team.name", "Team"))
                .merge(("plans.Team.monthly_price_cents", 4900))
                .merge(("plans.Team.seats", 5))
                .merge(("plans.Team.stripe_price_monthly", "price_team")),
        );
        assert!(
            error.starts_with("plans.Team: the plan id must be"),
            "{error}"
        );
        // A misspelt field is refused too, not ignored.
        let error = Settings::from_figment(defaults().merge(("plans.pro.monthly_price", 1)))
            .unwrap_err()
            .to_string();
        assert!(error.contains("monthly_price"), "{error}");
    }

    #[test]
    fn billing_is_off_on_the_defaults() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULTS))).unwrap();
        assert!(!s.stripe.enabled());
        assert!(s.stripe.webhook_secrets().is_empty());
        assert_eq!(s.stripe.api_base, "https://api.stripe.com/");
        assert_eq!(s.stripe.timeout(), Duration::from_secs(10));
    }

    #[test]
    fn stripe_secrets_are_redacted_in_debug_output_and_empty_ones_are_unset() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("stripe.secret_key", "sk_test_51SecretKeyValue"))
            .merge(("stripe.webhook_secret", "whsec_CurrentSigningSecret"))
            .merge(("stripe.previous_webhook_secret", "whsec_OldSigningSecret"));
        let s = Settings::from_figment(f).unwrap();
        let shown = format!("{s:?}");
        for secret in ["SecretKeyValue", "CurrentSigning", "OldSigning"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(s.stripe.enabled());
        let secrets: Vec<_> = s
            .stripe
            .webhook_secrets()
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect();
        assert_eq!(
            secrets,
            ["whsec_CurrentSigningSecret", "whsec_OldSigningSecret"]
        );

        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("stripe.secret_key", ""))
            .merge(("stripe.webhook_secret", " "));
        let s = Settings::from_figment(f).unwrap();
        assert!(!s.stripe.enabled());
        assert!(s.stripe.webhook_secret.is_none());
    }

    #[test]
    fn the_stripe_api_base_gains_its_trailing_slash_and_must_be_a_plain_url() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("stripe.api_base", "http://127.0.0.1:12111"));
        let s = Settings::from_figment(f).unwrap();
        assert_eq!(s.stripe.api_base, "http://127.0.0.1:12111/");
        for bad in [
            "api.stripe.com",
            "ftp://x/",
            "https://u:p@x/",
            "https://x/?a=b",
        ] {
            let f = Figment::from(Toml::string(DEFAULTS)).merge(("stripe.api_base", bad));
            assert!(
                matches!(
                    Settings::from_figment(f),
                    Err(ConfigError::Invalid {
                        key: "stripe.api_base",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_stripe_key_without_a_webhook_secret_is_refused_without_showing_it() {
        let f = Figment::from(Toml::string(DEFAULTS))
            .merge(("stripe.secret_key", "sk_test_51SecretKeyValue"));
        let err = Settings::from_figment(f).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "stripe.webhook_secret",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("SecretKeyValue"), "{err}");
    }
}
