//! The command line: `serve` (the default); the bootstrap commands, which
//! work on the configured database and print one JSON object; and `ops`,
//! which calls a running server's operator API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use seatwarden_actors::domain::{
    License, LicenseId, LicenseStatus, LicenseUpdate, OrgId, SessionRecord,
};
use seatwarden_actors::ports::{Store, StoreError};

use crate::licensing::{LicenseSpec, check_expires_at, check_max_borrow_hours};

#[derive(Debug, Parser)]
#[command(
    name = "seatwarden",
    version,
    about = "Floating-license seat coordinator"
)]
pub struct Cli {
    /// A settings file layered over config/default.toml
    /// (environment variables SEATWARDEN__SECTION__KEY go on top).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage licenses.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Operate a running server through its operator API. The token comes
    /// from the environment variable SEATWARDEN_OPS_TOKEN (the server's
    /// ops.token), never from the command line, where `ps` would show it.
    #[command(subcommand)]
    Ops(OpsCommand),
    /// Manage platform administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the seat-signing keys. Running servers pick up a change
    /// within signing.reload_secs, with no restart.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the key set as JSON: kid, algorithm, created, active, retired.
    List,
    /// Make a new key the active one: generated (--algorithm, default
    /// signing.algorithm; --bits for RS256, default signing.rsa_bits), or
    /// imported from a PEM file (--import). Older keys keep verifying what
    /// they signed until retired.
    Rotate {
        /// Algorithm of a generated key: RS256, ES256 or EdDSA.
        #[arg(long, conflicts_with = "import")]
        algorithm: Option<crate::signing::SigningAlgorithm>,
        /// RSA modulus size of a generated RS256 key: 2048, 3072 or 4096.
        #[arg(long, conflicts_with = "import")]
        bits: Option<usize>,
        /// A PEM private key to import instead: PKCS#8 (RSA, P-256 or
        /// Ed25519), PKCS#1 RSA or SEC1 EC. Its type decides its algorithm.
        #[arg(long, conflicts_with_all = ["hsm", "hsm_label"])]
        import: Option<PathBuf>,
        /// Generate the key inside the PKCS#11 token of signing.pkcs11
        /// (RS256 or ES256): its private half never leaves the token.
        #[arg(long, conflicts_with = "hsm_label")]
        hsm: bool,
        /// Use the key pair labelled so in the PKCS#11 token (made there by
        /// other tools) instead of generating one.
        #[arg(long, conflicts_with_all = ["algorithm", "bits"], allow_hyphen_values = true)]
        hsm_label: Option<String>,
    },
    /// Re-seal every stored private key under the current access-token
    /// secret (auth.access_token_secret), opening each with the old one:
    /// the step that lets that secret be rotated. The old secret comes from
    /// the environment variable this names, never from the command line.
    /// Keys already sealed under the current secret are left as they are;
    /// a key that opens under neither stops it, changing nothing.
    Reseal {
        /// The environment variable that holds the old secret.
        #[arg(long)]
        old_secret_env: String,
    },
    /// Retire a key: it leaves the JWKS and stops verifying, so tokens and
    /// license files it signed are refused from then on. Not the active key.
    Retire {
        /// The key's kid, as `keys list` prints it. A kid is base64url and
        /// may begin with `-`: it is taken as the kid, not as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// Runs a `keys` command against the key set in `store`, sealing new keys
/// with `seal`; `defaults` give a generated key's algorithm and size.
pub async fn run_keys(
    store: &dyn Store,
    seal: &crate::signing::keys::KeySeal,
    defaults: &crate::config::SigningSettings,
    command: KeysCommand,
) -> anyhow::Result<Value> {
    use crate::signing::keys::{self, KeyInfo};
    use seatwarden_actors::ports::Retirement;
    let list = |stored: &[seatwarden_actors::ports::StoredKey]| json!({"keys": stored.iter().map(KeyInfo::from).collect::<Vec<_>>()});
    match command {
        KeysCommand::List => Ok(list(&store.signing_keys().await?)),
        KeysCommand::Rotate {
            algorithm,
            bits,
            import,
            hsm,
            hsm_label,
        } => {
            let now = chrono::Utc::now();
            let algorithm = algorithm.unwrap_or(defaults.algorithm);
            if bits.is_some() && algorithm != crate::signing::SigningAlgorithm::RS256 {
                bail!("--bits sizes RS256 keys only; {algorithm} keys have a fixed size");
            }
            let bits = bits.unwrap_or(defaults.rsa_bits);
            let seal = seal.clone();
            let key = match (import, hsm, hsm_label) {
                (Some(path), ..) => {
                    let pem = secrecy::SecretString::from(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    keys::stored_key(&pem, &seal, now)?
                }
                (None, _, Some(label)) => {
                    tokio::task::spawn_blocking(move || keys::stored_hsm_key(&label, &seal, now))
                        .await
                        .context("PKCS#11 task")??
                }
                (None, true, None) => tokio::task::spawn_blocking(move || {
                    keys::generate_hsm_key(algorithm, bits, &seal, now)
                })
                .await
                .context("PKCS#11 key generation task")??,
                (None, false, None) => {
                    let pem =
                        tokio::task::spawn_blocking(move || keys::generate_pem(algorithm, bits))
                            .await
                            .context("key generation task")??;
                    keys::stored_key(&pem, &seal, now)?
                }
            };
            if !store.add_signing_key(&key, true).await? {
                bail!("key {} is in the key set already", key.kid);
            }
            let stored = store.signing_keys().await?;
            let added = stored
                .iter()
                .find(|k| k.kid == key.kid)
                .map(KeyInfo::from)
                .context("the new key is not in the key set")?;
            Ok(json!({"rotated_to": added, "keys": list(&stored)["keys"]}))
        }
        KeysCommand::Reseal { old_secret_env } => {
            let old = std::env::var(&old_secret_env)
                .with_context(|| format!("{old_secret_env} (the old secret) is not set"))?;
            let old_seal = keys::KeySeal::new(old.as_bytes());
            let mut resealed = Vec::new();
            let mut current = 0;
            for key in store.signing_keys().await? {
                match old_seal.open(&key.kid, &key.sealed_private) {
                    Ok(private) => {
                        let private = secrecy::zeroize::Zeroizing::new(private);
                        resealed.push((key.kid.clone(), seal.seal(&key.kid, &private)?));
                    }
                    Err(_) if seal.open(&key.kid, &key.sealed_private).is_ok() => current += 1,
                    Err(_) => bail!(
                        "key {} opens under neither the old secret nor the current one; \
                         nothing was changed",
                        key.kid
                    ),
                }
            }
            store.reseal_signing_keys(&resealed).await?;
            Ok(json!({"resealed": resealed.len(), "already_current": current}))
        }
        KeysCommand::Retire { kid } => {
            match store.retire_signing_key(&kid, chrono::Utc::now()).await? {
                Retirement::Retired | Retirement::AlreadyRetired => {
                    Ok(list(&store.signing_keys().await?))
                }
                Retirement::Active => {
                    bail!("{kid} is the active key: rotate to another key first")
                }
                Retirement::NotFound => bail!("no key {kid} in the key set"),
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform administrator (verified, in no organization) and
    /// print it as JSON. The password is read from standard input, never
    /// from the command line, where `ps` and shell history would keep it.
    Create {
        #[arg(long)]
        email: String,
        /// Shown in the admin's account; defaults to the address.
        #[arg(long)]
        full_name: Option<String>,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Where `ops` commands find the server when no `--url` is given.
pub const DEFAULT_OPS_URL: &str = "http://127.0.0.1:8080";
/// The environment variable `ops` commands read the token from.
pub const OPS_TOKEN_ENV: &str = "SEATWARDEN_OPS_TOKEN";

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// List the server's subsystems: name, status, started_at, restarts.
    Subsystems {
        /// The server's base URL.
        #[arg(long, default_value = DEFAULT_OPS_URL)]
        url: String,
    },
    /// Stop a subsystem's subtree and start it afresh (a down one too);
    /// prints its line once it runs again.
    Restart {
        /// orgs, sweeper, watcher, ...
        name: String,
        /// The server's base URL.
        #[arg(long, default_value = DEFAULT_OPS_URL)]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; prints {"id", "name", "created_at"}.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Create a license; prints its key, which is shown only this once.
    Create {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        seats: u32,
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Comma-separated feature names.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// RFC 3339, e.g. 2027-01-31T00:00:00Z.
        #[arg(long)]
        expires_at: Option<DateTime<Utc>>,
        /// How long past its lease a token stays valid offline; default:
        /// the server's seats.offline_grace_secs.
        #[arg(long)]
        offline_grace_secs: Option<u32>,
        /// Sessions beyond --seats that may hold a still-valid token at
        /// once (lapsed within their grace).
        #[arg(long, default_value_t = 0)]
        offline_overdraft: u32,
        /// Only machines activated on the license may acquire seats, at
        /// most this many at once. Default: no limit, no activation needed.
        #[arg(long)]
        max_machines: Option<u32>,
        /// Acquire also needs an access token or API key of the license's
        /// organization.
        #[arg(long)]
        requires_user: bool,
        /// The longest a machine may borrow a seat for offline work, in
        /// hours. 0 (the default): no borrowing.
        #[arg(long, default_value_t = 0)]
        max_borrow_hours: u32,
    },
    /// Change a license's seats, status or expiry. Lowering seats never
    /// evicts live sessions; it only refuses new ones until usage is below.
    Update {
        #[arg(long)]
        id: LicenseId,
        #[arg(long)]
        seats: Option<u32>,
        /// active, suspended or inactive.
        #[arg(long)]
        status: Option<LicenseStatus>,
        /// RFC 3339, or "never" to remove the expiry.
        #[arg(long)]
        expires_at: Option<Expiry>,
        /// Seconds, or "default" for the server's seats.offline_grace_secs.
        #[arg(long)]
        offline_grace_secs: Option<Grace>,
        #[arg(long)]
        offline_overdraft: Option<u32>,
        /// A number, or "none" to lift the machine limit.
        #[arg(long)]
        max_machines: Option<MachineLimit>,
        /// true or false.
        #[arg(long)]
        requires_user: Option<bool>,
        /// Hours; 0 turns borrowing off.
        #[arg(long)]
        max_borrow_hours: Option<u32>,
    },
    /// List an organization's licenses.
    List {
        #[arg(long)]
        org: OrgId,
    },
    /// List a license's sessions, live and ended.
    Sessions {
        #[arg(long)]
        license: LicenseId,
    },
}

/// An expiry given on the command line: a time, or `never`.
#[derive(Clone, Copy, Debug)]
pub enum Expiry {
    At(DateTime<Utc>),
    Never,
}

impl std::str::FromStr for Expiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("never") {
            return Ok(Self::Never);
        }
        s.parse()
            .map(Self::At)
            .map_err(|e| format!("expected RFC 3339 or \"never\": {e}"))
    }
}

/// A machine limit given on the command line: a number, or `none`.
#[derive(Clone, Copy, Debug)]
pub enum MachineLimit {
    At(u32),
    None,
}

impl std::str::FromStr for MachineLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        s.parse()
            .map(Self::At)
            .map_err(|e| format!("expected a number or \"none\": {e}"))
    }
}

/// An offline grace given on the command line: seconds, or `default`.
#[derive(Clone, Copy, Debug)]
pub enum Grace {
    Secs(u32),
    Default,
}

impl std::str::FromStr for Grace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("default") {
            return Ok(Self::Default);
        }
        s.parse()
            .map(Self::Secs)
            .map_err(|e| format!("expected seconds or \"default\": {e}"))
    }
}

/// A license as printed: its stored form (`License`'s own serialization).
fn license_json(l: &License) -> Value {
    serde_json::to_value(l).expect("a License always serializes")
}

fn session_json(s: &SessionRecord) -> Value {
    json!({
        "id": s.id,
        "license_id": s.license_id,
        "hardware_id": s.hardware_id,
        "live": s.is_open(),
        "started_at": s.started_at,
        "last_heartbeat_at": s.last_heartbeat_at,
        "lease_expires_at": s.lease_expires_at,
        "ended_at": s.ended_at,
        "end_reason": s.end_reason,
        "ip": s.client.ip,
        "user_agent": s.client.user_agent,
        "metadata": s.metadata,
        "borrowed_until": s.borrowed_until,
    })
}

/// Runs a bootstrap command and returns what it prints.
/// Creates a platform administrator with a password that meets the policy.
pub async fn create_platform_admin(
    store: &dyn Store,
    email: &str,
    full_name: Option<&str>,
    password: String,
) -> anyhow::Result<Value> {
    if crate::http::validate_email(email).is_err() {
        bail!("--email must be a valid address of at most 254 characters");
    }
    if let Some(why) = crate::auth::passwords::policy_violation(&password) {
        bail!("{why}");
    }
    let full_name = full_name.unwrap_or(email).trim();
    if full_name.is_empty() || full_name.chars().count() > 200 {
        bail!("--full-name must be 1 to 200 characters");
    }
    let hash = crate::auth::passwords::hash(secrecy::SecretString::from(password)).await?;
    let user = match store.create_platform_admin(email, full_name, &hash).await {
        Err(StoreError::Conflict(_)) => bail!("an account with that address exists"),
        other => other?,
    };
    Ok(json!({
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "platform_admin": user.platform_admin,
        "created_at": user.created_at,
    }))
}

pub async fn run_admin(
    store: &dyn Store,
    key_prefix: &str,
    command: Command,
) -> anyhow::Result<Value> {
    match command {
        Command::Serve => bail!("serve is not an admin command"),
        Command::Ops(_) => bail!("ops commands call a running server: see run_ops"),
        Command::Keys(_) => bail!("keys commands need the key seal: see run_keys"),
        Command::Admin(AdminCommand::Create {
            email,
            full_name,
            password_stdin,
        }) => {
            if !password_stdin {
                bail!("--password-stdin is required: a password never goes on the command line");
            }
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            create_platform_admin(store, &email, full_name.as_deref(), password).await
        }
        Command::Org(OrgCommand::Create { name }) => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let org = store.create_org(name).await?;
            Ok(json!({"id": org.id, "name": org.name, "created_at": org.created_at}))
        }
        Command::License(LicenseCommand::Create {
            org,
            seats,
            tier,
            features,
            expires_at,
            offline_grace_secs,
            offline_overdraft,
            max_machines,
            requires_user,
            max_borrow_hours,
        }) => {
            let spec = LicenseSpec {
                org_id: org,
                seats,
                tier,
                features,
                expires_at,
                offline_grace_secs,
                offline_overdraft,
                max_machines,
                requires_user,
                max_borrow_hours,
            };
            let (new, key) = spec
                .issue(key_prefix)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let license = match store.create_license(new).await {
                Err(StoreError::NotFound(_)) => bail!("organization {org} does not exist"),
                other => other?,
            };
            let mut out = license_json(&license);
            out["key"] = json!(key);
            Ok(out)
        }
        Command::License(LicenseCommand::Update {
            id,
            seats,
            status,
            expires_at,
            offline_grace_secs,
            offline_overdraft,
            max_machines,
            requires_user,
            max_borrow_hours,
        }) => {
            if let Some(hours) = max_borrow_hours {
                check_max_borrow_hours(hours).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            if let Some(Expiry::At(at)) = &expires_at {
                check_expires_at(*at).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            let update = LicenseUpdate {
                seats,
                status,
                expires_at: expires_at.map(|e| match e {
                    Expiry::At(at) => Some(at),
                    Expiry::Never => None,
                }),
                offline_grace_secs: offline_grace_secs.map(|g| match g {
                    Grace::Secs(s) => Some(s),
                    Grace::Default => None,
                }),
                offline_overdraft,
                max_machines: max_machines.map(|m| match m {
                    MachineLimit::At(n) => Some(n),
                    MachineLimit::None => None,
                }),
                requires_user,
                max_borrow_hours,
                ..LicenseUpdate::default()
            };
            if update.is_empty() {
                bail!(
                    "nothing to change: give --seats, --status, --expires-at, \
                     --offline-grace-secs, --offline-overdraft, --max-machines \
                     or --requires-user"
                );
            }
            if let Some(Some(0)) = update.max_machines {
                bail!("--max-machines must be at least 1, or \"none\"");
            }
            if seats == Some(0) {
                bail!("--seats must be at least 1");
            }
            let license = store
                .update_license(id, &update)
                .await?
                .with_context(|| format!("license {id} does not exist"))?;
            Ok(license_json(&license))
        }
        Command::License(LicenseCommand::List { org }) => {
            store
                .org(org)
                .await?
                .with_context(|| format!("organization {org} does not exist"))?;
            let licenses = store.licenses_for_org(org).await?;
            Ok(
                json!({"org_id": org, "licenses": licenses.iter().map(license_json).collect::<Vec<_>>()}),
            )
        }
        Command::License(LicenseCommand::Sessions { license }) => {
            store
                .license(license)
                .await?
                .with_context(|| format!("license {license} does not exist"))?;
            let sessions = store.sessions_for_license(license).await?;
            Ok(
                json!({"license_id": license, "sessions": sessions.iter().map(session_json).collect::<Vec<_>>()}),
            )
        }
    }
}

/// Why an `ops` command failed: printed as one JSON line on stderr. For an
/// answer from the server, its own error code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct OpsFailure {
    pub code: String,
    pub message: String,
}

impl OpsFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": self.code, "message": self.message})
    }
}

/// Runs an `ops` command against a running server and returns what it
/// prints. `token` is SEATWARDEN_OPS_TOKEN; it goes into the
/// `Authorization` header and nowhere else, so no message can show it.
pub async fn run_ops(command: OpsCommand, token: Option<String>) -> Result<Value, OpsFailure> {
    let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        OpsFailure::new(
            "missing_token",
            format!("set {OPS_TOKEN_ENV} to the server's ops.token"),
        )
    })?;
    let (base, method, segments): (&str, reqwest::Method, Vec<&str>) = match &command {
        OpsCommand::Subsystems { url } => (url, reqwest::Method::GET, vec![]),
        OpsCommand::Restart { name, url } => (url, reqwest::Method::POST, vec![name, "restart"]),
    };
    let mut url = url::Url::parse(base)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            OpsFailure::new("invalid_url", format!("--url {base} is not an http(s) URL"))
        })?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| OpsFailure::new("invalid_url", format!("--url {base} has no path")))?;
        path.pop_if_empty()
            .extend(["api", "v1", "ops", "subsystems"])
            .extend(segments);
    }
    // A restart waits for the old subtree to stop and the new one to start.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| OpsFailure::new("client_error", e.to_string()))?;
    let response = client
        .request(method, url.clone())
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            OpsFailure::new(
                "connection_failed",
                format!("could not reach {url}: {}", error_chain(&e)),
            )
        })?;
    let status = response.status();
    let body: Option<Value> = response.json().await.ok();
    if status.is_success() {
        return body.ok_or_else(|| {
            OpsFailure::new(
                "bad_response",
                format!("{url} answered {status} without JSON"),
            )
        });
    }
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Err(OpsFailure {
        code: field("error").unwrap_or_else(|| format!("http_{}", status.as_u16())),
        message: format!(
            "{} ({status})",
            field("message").unwrap_or_else(|| "the server refused the request".into())
        ),
    })
}

/// An error and its causes on one line: reqwest's own message says only
/// that sending failed; the cause says why (connection refused, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
