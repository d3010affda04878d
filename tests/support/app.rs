//! `spawn_app()`: a real server on a free port, in-process, with its own
//! data directory, stopped when the `TestApp` is dropped.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use figment::Figment;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use seatwarden::cli::{Command, LicenseCommand, OrgCommand, run_admin};
use seatwarden::config::Settings;
use seatwarden::signing::TokenSigner;
use seatwarden::startup::Application;
use seatwarden_actors::Coordinator;
use seatwarden_actors::domain::{LicenseId, OrgId};
use seatwarden_actors::ports::{Outbox, Store};

/// One 2048-bit key per test binary: generating keys is slow, and tests
/// only need a valid one.
pub fn test_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("generate test key");
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("encode test key")
            .to_string()
    })
}

/// Which backends a test server runs on.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// SQLite in the app's data dir and the in-process ledger.
    #[default]
    Embedded,
    /// A shared Redis and PostgreSQL.
    Shared {
        database_url: String,
        redis_url: String,
    },
}

/// Knobs tests turn; everything else is the shipped default.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub backend: Backend,
    pub lease_ttl_secs: u64,
    pub sweep_interval_secs: u64,
    pub license_cache_secs: u64,
    pub fault_hooks: bool,
    pub client_ip: &'static str,
    pub org_idle_timeout_secs: u64,
    pub offline_grace_secs: u64,
    pub failure_audits_per_minute: u32,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub keep_alive_idle_secs: u64,
    pub max_connections: usize,
    /// `Some("127.0.0.1:0")` serves `/metrics` on a port of its own.
    pub metrics_listen: Option<&'static str>,
    /// `ops.token`; `None` leaves it unset (every operator call refused).
    pub ops_token: Option<&'static str>,
    /// `supervision.max_restarts` and `supervision.window_secs`.
    pub max_restarts: u32,
    pub restart_window_secs: u64,
    /// Further settings, merged last: `("rate_limits.heartbeat_per_session",
    /// "3/min".into())`. Rate limits are otherwise so high (a million a
    /// second) that tests never meet them, though every check still runs.
    pub overrides: Vec<(&'static str, figment::value::Value)>,
    /// `mail.smtp_url`; `None` writes `.eml` files into the data dir.
    pub smtp_url: Option<String>,
    pub mail_poll_ms: u64,
    pub mail_retry_base_secs: u64,
    pub mail_max_attempts: u32,
    /// `mail.claim_secs` and `mail.send_timeout_secs`.
    pub mail_claim_secs: u64,
    pub mail_send_timeout_secs: u64,
    /// `http.public_url`, the base of links in mail.
    pub public_url: Option<String>,
    /// `mail.template_dir`; the repository's templates when `None`.
    pub template_dir: Option<std::path::PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            lease_ttl_secs: 360,
            sweep_interval_secs: 1,
            license_cache_secs: 0,
            fault_hooks: false,
            client_ip: "peer",
            org_idle_timeout_secs: 300,
            offline_grace_secs: 0,
            failure_audits_per_minute: 60,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            keep_alive_idle_secs: 75,
            max_connections: 10_000,
            metrics_listen: None,
            ops_token: None,
            max_restarts: 5,
            restart_window_secs: 60,
            overrides: Vec::new(),
            smtp_url: None,
            mail_poll_ms: 1000,
            mail_retry_base_secs: 30,
            mail_max_attempts: 8,
            mail_claim_secs: 60,
            mail_send_timeout_secs: 15,
            public_url: None,
            template_dir: None,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Set when `AppOptions::metrics_listen` was.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub coordinator: Coordinator,
    pub store: std::sync::Arc<dyn Store>,
    pub outbox: std::sync::Arc<dyn Outbox>,
    pub signer: seatwarden::signing::keys::SigningKeys,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(&opts, dir.path());
    start(settings, dir).await
}

/// The settings `spawn_app_with` would start a server with, in `dir`: for
/// tests that build the application themselves.
pub fn settings_for(opts: &AppOptions, dir: &std::path::Path) -> Settings {
    test_settings(opts, dir)
}

fn test_settings(opts: &AppOptions, dir: &std::path::Path) -> Settings {
    let key_path = dir.join("signing-key.pem");
    std::fs::write(&key_path, test_key_pem()).expect("write test key");
    let mut figment: Figment = Settings::figment(None)
        .merge(("data_dir", dir.display().to_string()))
        .merge(("http.listen", "127.0.0.1:0"))
        .merge(("http.client_ip", opts.client_ip))
        .merge(("signing.key_path", key_path.display().to_string()))
        .merge(("signing.rsa_bits", 2048))
        .merge(("seats.lease_ttl_secs", opts.lease_ttl_secs))
        .merge((
            "seats.heartbeat_interval_secs",
            opts.lease_ttl_secs.min(300),
        ))
        .merge(("seats.sweep_interval_secs", opts.sweep_interval_secs))
        .merge(("seats.license_cache_secs", opts.license_cache_secs))
        .merge(("seats.org_idle_timeout_secs", opts.org_idle_timeout_secs))
        .merge(("seats.offline_grace_secs", opts.offline_grace_secs))
        .merge((
            "seats.failure_audits_per_minute",
            opts.failure_audits_per_minute,
        ))
        .merge(("seats.license_watch_ms", 100))
        .merge(("testing.fault_hooks", opts.fault_hooks))
        .merge(("http.header_timeout_secs", opts.header_timeout_secs))
        .merge(("http.body_timeout_secs", opts.body_timeout_secs))
        .merge(("http.keep_alive_idle_secs", opts.keep_alive_idle_secs))
        .merge(("http.max_connections", opts.max_connections))
        .merge(("supervision.max_restarts", opts.max_restarts))
        .merge(("supervision.window_secs", opts.restart_window_secs))
        .merge(("mail.poll_interval_ms", opts.mail_poll_ms))
        .merge(("mail.retry_base_secs", opts.mail_retry_base_secs))
        .merge(("mail.max_attempts", opts.mail_max_attempts))
        .merge(("mail.claim_secs", opts.mail_claim_secs))
        .merge(("mail.send_timeout_secs", opts.mail_send_timeout_secs));
    if let Some(token) = opts.ops_token {
        figment = figment.merge(("ops.token", token));
    }
    if let Some(url) = &opts.smtp_url {
        figment = figment.merge(("mail.smtp_url", url.clone()));
    }
    if let Some(url) = &opts.public_url {
        figment = figment.merge(("http.public_url", url.clone()));
    }
    if let Some(dir) = &opts.template_dir {
        figment = figment.merge(("mail.template_dir", dir.display().to_string()));
    }
    // Nodes of one deployment share the access-token key, as production
    // nodes do by configuration: here, nodes on the same database get the
    // same one, derived from its URL, so that any two-node test accepts
    // each other's tokens without saying so. An embedded node generates
    // its own in its data dir.
    let shared_secret = match &opts.backend {
        Backend::Shared { database_url, .. } => {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("test access key {database_url}"));
            Some(
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
        }
        Backend::Embedded => None,
    };
    if let Some(secret) = shared_secret {
        figment = figment.merge(("auth.access_token_secret", secret));
    }
    if let Some(addr) = opts.metrics_listen {
        figment = figment.merge(("http.metrics_listen", addr));
    }
    if let Backend::Shared {
        database_url,
        redis_url,
    } = &opts.backend
    {
        figment = figment
            .merge(("database.url", database_url.clone()))
            .merge(("redis.url", redis_url.clone()));
    }
    for limit in seatwarden::ratelimit::Limit::ALL {
        figment = figment.merge((format!("rate_limits.{}", limit.name()), "1000000/sec"));
    }
    for (key, value) in &opts.overrides {
        figment = figment.merge((*key, value.clone()));
    }
    Settings::from_figment(figment).expect("test settings are valid")
}

async fn start(settings: Settings, dir: tempfile::TempDir) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("build app");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let coordinator = app.coordinator().clone();
    let store = app.store();
    let outbox = app.outbox();
    let signer = app.signer().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        metrics_addr,
        client: reqwest::Client::new(),
        coordinator,
        store,
        outbox,
        signer,
        settings,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

/// A license created for a test.
#[derive(Clone, Debug)]
pub struct TestLicense {
    pub org: OrgId,
    pub id: LicenseId,
    pub key: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Creates an organization and a license through the CLI's code path.
    pub async fn create_license(&self, seats: u32) -> TestLicense {
        self.create_license_with(seats, None).await
    }

    pub async fn create_license_with(&self, seats: u32, expires_at: Option<&str>) -> TestLicense {
        self.create_license_full(seats, expires_at, None, 0, None, false)
            .await
    }

    /// A license with a machine limit and/or an identity requirement.
    pub async fn create_license_policy(
        &self,
        seats: u32,
        max_machines: Option<u32>,
        requires_user: bool,
    ) -> TestLicense {
        self.create_license_full(seats, None, None, 0, max_machines, requires_user)
            .await
    }

    /// A license with its own offline policy.
    pub async fn create_license_offline(
        &self,
        seats: u32,
        grace_secs: u32,
        overdraft: u32,
    ) -> TestLicense {
        self.create_license_full(seats, None, Some(grace_secs), overdraft, None, false)
            .await
    }

    async fn create_license_full(
        &self,
        seats: u32,
        expires_at: Option<&str>,
        offline_grace_secs: Option<u32>,
        offline_overdraft: u32,
        max_machines: Option<u32>,
        requires_user: bool,
    ) -> TestLicense {
        let prefix = &self.settings.licenses.key_prefix;
        let org = run_admin(
            self.store.as_ref(),
            prefix,
            Command::Org(OrgCommand::Create {
                name: "Acme".into(),
            }),
        )
        .await
        .expect("create org");
        let org: OrgId = org["id"].as_str().unwrap().parse().unwrap();
        self.create_license_with_policy(
            org,
            seats,
            "pro",
            expires_at,
            (offline_grace_secs, offline_overdraft),
            (max_machines, requires_user),
        )
        .await
    }

    /// A license of an existing organization (for example one a test
    /// person registered), through the CLI's `license create --org` path.
    pub async fn create_license_for(&self, org: OrgId, seats: u32) -> TestLicense {
        self.create_license_in(org, seats, "pro", None, None, 0)
            .await
    }

    /// A license of `org` with its tier and expiry, through the CLI path.
    pub async fn create_license_in(
        &self,
        org: OrgId,
        seats: u32,
        tier: &str,
        expires_at: Option<&str>,
        offline_grace_secs: Option<u32>,
        offline_overdraft: u32,
    ) -> TestLicense {
        self.create_license_with_policy(
            org,
            seats,
            tier,
            expires_at,
            (offline_grace_secs, offline_overdraft),
            (None, false),
        )
        .await
    }

    /// A license with every policy knob: `offline` is (grace, overdraft),
    /// `machines` is (max_machines, requires_user).
    async fn create_license_with_policy(
        &self,
        org: OrgId,
        seats: u32,
        tier: &str,
        expires_at: Option<&str>,
        offline: (Option<u32>, u32),
        machines: (Option<u32>, bool),
    ) -> TestLicense {
        let (offline_grace_secs, offline_overdraft) = offline;
        let (max_machines, requires_user) = machines;
        let prefix = &self.settings.licenses.key_prefix;
        let license = run_admin(
            self.store.as_ref(),
            prefix,
            Command::License(LicenseCommand::Create {
                org,
                seats,
                tier: tier.into(),
                features: vec!["export".into(), "sso".into()],
                expires_at: expires_at.map(|s| s.parse().unwrap()),
                offline_grace_secs,
                offline_overdraft,
                max_machines,
                requires_user,
                max_borrow_hours: 0,
            }),
        )
        .await
        .expect("create license");
        TestLicense {
            org,
            id: license["id"].as_str().unwrap().parse().unwrap(),
            key: license["key"].as_str().unwrap().to_owned(),
        }
    }

    /// Changes a license through the CLI's code path.
    pub async fn update_license(&self, id: LicenseId, seats: Option<u32>, status: Option<&str>) {
        run_admin(
            self.store.as_ref(),
            &self.settings.licenses.key_prefix,
            Command::License(LicenseCommand::Update {
                id,
                seats,
                status: status.map(|s| s.parse().unwrap()),
                expires_at: None,
                offline_grace_secs: None,
                offline_overdraft: None,
                max_machines: None,
                requires_user: None,
                max_borrow_hours: None,
            }),
        )
        .await
        .expect("update license");
    }

    /// Sets a license's borrowing policy through the CLI's code path.
    pub async fn set_max_borrow_hours(&self, id: LicenseId, hours: u32) {
        run_admin(
            self.store.as_ref(),
            &self.settings.licenses.key_prefix,
            Command::License(LicenseCommand::Update {
                id,
                seats: None,
                status: None,
                expires_at: None,
                offline_grace_secs: None,
                offline_overdraft: None,
                max_machines: None,
                requires_user: None,
                max_borrow_hours: Some(hours),
            }),
        )
        .await
        .expect("update license");
    }

    pub async fn acquire(&self, key: &str, hardware_id: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": key, "hardware_id": hardware_id}),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn heartbeat(&self, session: &str, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/licenses/sessions/{session}/heartbeat")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn release(&self, session: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/v1/licenses/sessions/{session}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Heartbeats the session of an acquire response with its own token.
    pub async fn heartbeat_of(&self, acquired: &Value) -> reqwest::Response {
        let (id, token) = ids(acquired);
        self.heartbeat(id, token).await
    }

    /// Releases the session of an acquire response with its own token.
    pub async fn release_of(&self, acquired: &Value) -> reqwest::Response {
        let (id, token) = ids(acquired);
        self.release(id, token).await
    }

    /// Acquires a seat and returns the response body, asserting a 201.
    pub async fn acquire_ok(&self, key: &str, hardware_id: &str) -> Value {
        let response = self.acquire(key, hardware_id).await;
        assert_eq!(response.status(), 201, "acquire for {hardware_id}");
        response.json().await.unwrap()
    }

    /// Polls acquire until it answers 201 (for at most `limit`), and
    /// returns that body: for seats that free themselves.
    pub async fn acquire_eventually(
        &self,
        key: &str,
        hardware_id: &str,
        limit: Duration,
    ) -> Option<Value> {
        eventually(limit, || async {
            let r = self.acquire(key, hardware_id).await;
            (r.status() == 201).then_some(())?;
            r.json::<Value>().await.ok()
        })
        .await
    }

    /// Verifies a signed license file as a client would, offline, against
    /// this server's JWKS; its claims. Panics if it does not verify.
    pub async fn verify_license_file(&self, jws: &str) -> Value {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
        let jwks: JwkSet = self
            .get("/.well-known/jwks.json")
            .await
            .json()
            .await
            .expect("the JWKS");
        let header = jsonwebtoken::decode_header(jws).expect("a JWS header");
        assert_eq!(header.typ.as_deref(), Some("license+jwt"));
        let kid = header.kid.expect("a kid");
        let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("an RSA key");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["seatwarden"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Value>(jws, &key, &validation)
            .expect("the license file verifies against the JWKS")
            .claims
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// This node's `seatwarden_seats_in_use` for `license`, if exported.
    pub async fn seats_in_use(&self, license: LicenseId) -> Option<f64> {
        let label = format!("license_id=\"{license}\"");
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with("seatwarden_seats_in_use{") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
        }
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory and settings, as an operator's restart would.
    pub async fn restart(mut self) -> TestApp {
        self.shut_down().await;
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
        start(self.settings.clone(), dir).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The session id and token of an acquire response.
pub fn ids(acquired: &Value) -> (&str, &str) {
    (
        acquired["session_id"].as_str().expect("session_id"),
        acquired["token"].as_str().expect("token"),
    )
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
/// Tests wait on outcomes this way, never on fixed sleeps.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
