//! Seat tokens and license files: compact JWS signed with RS256, ES256 or
//! EdDSA.
//!
//! A seat token is a compact JWS that clients verify offline against
//! the published public key ([`TokenSigner::jwks`] or
//! [`TokenSigner::public_key_pem`]). Several server nodes share one private
//! key file (for example a mounted secret), so every node derives the same
//! `kid` (the RFC 7638 JWK thumbprint) and accepts the others' tokens.
//!
//! Division of labour between the two crypto crates:
//!
//! * the `rsa` crate generates RSA keys, parses RSA PEM (PKCS#8 `PRIVATE
//!   KEY` and PKCS#1 `RSA PRIVATE KEY`) and provides the public
//!   modulus/exponent; P-256 and Ed25519 keys are `aws-lc-rs`'s alone (see
//!   [`key_pair`](self::key_pair));
//! * every private-key operation (signing) goes through `aws-lc-rs`, with a
//!   key pair parsed once at construction and held. (`jsonwebtoken`'s
//!   aws-lc backend parses the private key DER inside every `encode`, which
//!   costs about half the throughput at 4096 bits and two thirds at 2048.)
//!   The compact JWS is assembled here; the header is fixed and encoded
//!   once. The `rsa` crate is about three times slower and its signing is
//!   affected by RUSTSEC-2023-0071 (Marvin timing side channel), so it is
//!   never used to sign;
//! * verification goes through `jsonwebtoken::decode`, after a strict header
//!   check of our own, and [`TokenSigner::verify_cached`] remembers tokens
//!   that already verified (see [`verified_cache`](self::verified_cache)
//!   for why that is safe).
//!
//! Which algorithm signs is the active key's: a key carries its algorithm,
//! the token header's `alg` names it, and a token is verified only under
//! the key its `kid` names and only with that key's algorithm, so no token
//! can choose how it is checked.
//!
//! Signing is CPU-bound (RSA-4096 is roughly 1.5 ms per signature on a
//! current x86 core; P-256 and Ed25519 tens of microseconds), so
//! [`TokenSigner::sign`] runs it on the process's signing threads, one per
//! CPU, fed from one queue (see [`pool`](self::pool)).
//! Verification is a public key operation (tens of microseconds) and runs
//! inline.

mod key_pair;
pub mod keys;
pub mod pkcs11;
mod pool;
mod verified_cache;

pub use key_pair::rsa_jwk_thumbprint;
pub use verified_cache::DEFAULT_VERIFIED_CACHE_CAPACITY;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use key_pair::{KeyPair, MAX_SIGNATURE_LEN};
use pool::SignPool;

/// RSA modulus sizes accepted for newly generated keys.
pub const SUPPORTED_RSA_BITS: [usize; 3] = [2048, 3072, 4096];

/// Default modulus size for generated keys.
pub const DEFAULT_RSA_BITS: usize = 4096;

/// The JWS algorithms a signing key may have. Each key has exactly one;
/// the token header's `alg` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 4096 bits: what every JWT
    /// library verifies. The default.
    #[default]
    RS256,
    /// ECDSA on P-256 with SHA-256: signatures of 64 bytes, signing tens
    /// of times faster than RSA-2048.
    ES256,
    /// Ed25519: the fastest and smallest, for clients whose library
    /// verifies it.
    EdDSA,
}

impl SigningAlgorithm {
    pub const ALL: [Self; 3] = [Self::RS256, Self::ES256, Self::EdDSA];

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;

    /// Exactly a JWS `alg` name: `RS256`, `ES256` or `EdDSA`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unsupported signing algorithm {s:?}: expected RS256, ES256 or EdDSA")
            })
    }
}

/// Where the signing key lives and what to do when it is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningConfig {
    /// PEM file holding the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_path: PathBuf,
    /// Algorithm of a generated key. A key loaded from disk keeps its own.
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
    /// Modulus size used when an RSA key has to be generated: 2048, 3072
    /// or 4096. A key loaded from disk keeps whatever size it has.
    #[serde(default = "default_rsa_bits")]
    pub rsa_bits: usize,
    /// Generate and write a key when `key_path` does not exist.
    ///
    /// Defaults to `false`: in a multi-node deployment the key file is a
    /// shared secret, and a node that silently minted its own key because the
    /// mount was missing would issue tokens no other node accepts. Turn it on
    /// for single-node or development set-ups, or when all nodes share a
    /// writable volume (concurrent creation is safe, see
    /// [`TokenSigner::load_or_generate`]).
    #[serde(default)]
    pub generate_if_missing: bool,
}

fn default_rsa_bits() -> usize {
    DEFAULT_RSA_BITS
}

impl SigningConfig {
    /// A config for `key_path` with a 4096-bit default and no generation.
    pub fn new(key_path: impl Into<PathBuf>) -> Self {
        Self {
            key_path: key_path.into(),
            algorithm: SigningAlgorithm::RS256,
            rsa_bits: DEFAULT_RSA_BITS,
            generate_if_missing: false,
        }
    }
}

/// Failures of key handling, signing and verification.
///
/// [`SigningError::is_token_rejected`] separates "the presented token is not
/// acceptable" (HTTP 401) from server-side faults (HTTP 500). No variant ever
/// carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file does not exist and generation is disabled.
    #[error(
        "signing key file {} does not exist and generate_if_missing is false",
        path.display()
    )]
    KeyMissing { path: PathBuf },
    /// Reading, creating or writing the key file failed.
    #[error("signing key file {}: {source}", path.display())]
    KeyIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The key could not be parsed or is unusable (wrong type, too small,
    /// rejected by the signing backend).
    #[error("invalid signing key: {0}")]
    InvalidKey(String),
    /// `rsa_bits` is not one of [`SUPPORTED_RSA_BITS`].
    #[error("unsupported RSA key size {0} bits (expected 2048, 3072 or 4096)")]
    UnsupportedKeySize(usize),
    /// Generating a new key failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// Producing a signature failed.
    #[error("token signing failed: {0}")]
    Sign(String),
    /// The blocking signing task panicked or was cancelled.
    #[error("signing task failed: {0}")]
    Task(String),

    // ----- token rejections (401) -----
    /// Not a well-formed compact JWS, or the claims do not have the seat
    /// token shape.
    #[error("malformed token: {0}")]
    MalformedToken(String),
    /// The header names an algorithm we never sign with (e.g. `none`,
    /// HS256), or another than its key's.
    #[error("token algorithm {0:?} is not accepted")]
    AlgorithmRejected(String),
    /// The header's `kid` is missing or is not this server's key.
    #[error("token was not issued under this server's key")]
    UnknownKey,
    /// The signature does not match the header and claims.
    #[error("token signature is invalid")]
    BadSignature,
    /// The header's `typ` is not a seat token's (e.g. a license file).
    #[error("token is not a seat token")]
    WrongType,
}

impl SigningError {
    /// `true` when the error is about the token the client presented (map to
    /// 401 Unauthorized); `false` for server-side faults (map to 500).
    pub fn is_token_rejected(&self) -> bool {
        matches!(
            self,
            Self::MalformedToken(_)
                | Self::AlgorithmRejected(_)
                | Self::UnknownKey
                | Self::BadSignature
                | Self::WrongType
        )
    }
}

/// The claims of a seat token.
///
/// `sub` carries the session id (it equals `session_id`); `iat`/`exp` are
/// Unix seconds. `exp` tells offline clients how long the seat may be used
/// without a successful heartbeat; the server itself does not check it (see
/// [`TokenSigner::verify`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SeatClaims {
    pub iss: String,
    /// Equals `session_id`.
    pub sub: String,
    pub session_id: String,
    pub license_id: String,
    pub org_id: String,
    pub hardware_id: String,
    pub tier: String,
    pub features: Vec<String>,
    pub max_seats: u32,
    pub iat: i64,
    /// When the token stops being valid: the lease's end (`lease_exp`),
    /// plus the license's offline grace and a clock-skew allowance.
    pub exp: i64,
    /// When the lease ended as of this token's issue (0 in tokens issued
    /// before this claim existed). Clients heartbeat well before it.
    #[serde(default)]
    pub lease_exp: i64,
    /// A borrowed seat: held with no heartbeats until `exp`, which is its
    /// lease's end exactly (no grace, no skew allowance).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed: bool,
}

/// The header `typ` of a license file.
pub const LICENSE_FILE_TYP: &str = "license+jwt";

/// The claims of a signed license file: what a client needs to check its
/// license offline. Times are Unix seconds; `exp` is when the file itself
/// stops being valid (`iat` plus `licenses.file_ttl_days`), and
/// `license_expires_at` is the license's own expiry, if it has one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LicenseFileClaims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    pub license_id: String,
    pub org_id: String,
    pub tier: String,
    pub features: Vec<String>,
    pub seats: u32,
    pub max_machines: Option<u32>,
    pub requires_user: bool,
    pub status: String,
    pub license_expires_at: Option<i64>,
    pub iat: i64,
    pub exp: i64,
}

impl LicenseFileClaims {
    /// The claims of `license`'s file issued at `issued_at`, valid for
    /// `ttl_days`.
    pub fn for_license(
        license: &seatwarden_actors::domain::License,
        issued_at: chrono::DateTime<chrono::Utc>,
        ttl_days: u32,
    ) -> Self {
        let expires_at = issued_at + chrono::TimeDelta::days(i64::from(ttl_days));
        Self {
            iss: "seatwarden".into(),
            sub: license.id.to_string(),
            license_id: license.id.to_string(),
            org_id: license.org_id.to_string(),
            tier: license.tier.clone(),
            features: license.features.clone(),
            seats: license.seats,
            max_machines: license.max_machines,
            requires_user: license.requires_user,
            status: license.status.as_str().to_owned(),
            license_expires_at: license.expires_at.map(|t| t.timestamp()),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
        }
    }
}

/// Signs and verifies seat tokens with one key. Cheap to clone; clones
/// share the key and the verified-token cache.
#[derive(Clone)]
pub struct TokenSigner {
    inner: Arc<Inner>,
    verified: Arc<verified_cache::VerifiedCache>,
}

struct Inner {
    /// The private key, parsed once.
    key_pair: KeyPair,
    algorithm: SigningAlgorithm,
    /// Signature length in bytes.
    signature_len: usize,
    /// base64url of `{"alg":..,"kid":..,"typ":"JWT"}`, the same for every
    /// token.
    header_b64: String,
    /// base64url of `{"alg":..,"kid":..,"typ":"license+jwt"}`, the header
    /// of every license file.
    license_header_b64: String,
    decoding_key: DecodingKey,
    validation: Validation,
    kid: String,
    bits: usize,
    public_key_pem: String,
    jwks: serde_json::Value,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.inner.kid)
            .field("algorithm", &self.inner.algorithm)
            .field("bits", &self.inner.bits)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads the PEM private key at `cfg.key_path`.
    ///
    /// When the file is missing and `cfg.generate_if_missing` is set, a new
    /// `cfg.rsa_bits` key is generated and written there: parent directories
    /// are created, the file gets mode 0600 and is written to a temporary
    /// file in the same directory, fsynced, then published with a
    /// no-clobber link. If several nodes race to create the same file, one
    /// wins and the others load the winner's key, so all end up with the same
    /// key. When the file is missing and generation is disabled this fails
    /// with [`SigningError::KeyMissing`].
    ///
    /// Blocking: reads files and may generate a key (seconds for 4096 bits).
    /// From async code, call it inside `tokio::task::spawn_blocking`.
    pub fn load_or_generate(cfg: &SigningConfig) -> Result<Self, SigningError> {
        if !SUPPORTED_RSA_BITS.contains(&cfg.rsa_bits) {
            return Err(SigningError::UnsupportedKeySize(cfg.rsa_bits));
        }
        let path = cfg.key_path.as_path();
        match read_key_file(path)? {
            Some(pem) => {
                let signer = Self::from_pem(&pem)?;
                if signer.algorithm() != cfg.algorithm {
                    tracing::info!(
                        path = %path.display(),
                        algorithm = %signer.algorithm(),
                        configured_algorithm = %cfg.algorithm,
                        "signing key on disk differs from signing.algorithm; using the key on disk"
                    );
                } else if signer.algorithm() == SigningAlgorithm::RS256
                    && signer.key_bits() != cfg.rsa_bits
                {
                    tracing::info!(
                        path = %path.display(),
                        bits = signer.key_bits(),
                        configured_bits = cfg.rsa_bits,
                        "signing key on disk differs from rsa_bits; using the key on disk"
                    );
                }
                tracing::info!(path = %path.display(), kid = %signer.kid(), bits = signer.key_bits(), "loaded signing key");
                Ok(signer)
            }
            None if !cfg.generate_if_missing => Err(SigningError::KeyMissing {
                path: path.to_path_buf(),
            }),
            None => Self::generate_and_persist(path, cfg.algorithm, cfg.rsa_bits),
        }
    }

    /// The PEM of the key file `cfg` names, generating it first as
    /// [`TokenSigner::load_or_generate`] does: what the key set imports
    /// when it starts empty. Blocking.
    pub fn load_or_generate_pem(cfg: &SigningConfig) -> Result<SecretString, SigningError> {
        Self::load_or_generate(cfg)?;
        read_key_file(&cfg.key_path)?
            .map(SecretString::from)
            .ok_or_else(|| SigningError::KeyMissing {
                path: cfg.key_path.clone(),
            })
    }

    /// Builds a signer from a PEM private key: PKCS#8 `PRIVATE KEY` (RSA,
    /// P-256 or Ed25519), PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE
    /// KEY`. RSA keys must be 2048 to 8192 bits. The key's type decides
    /// the algorithm: RS256, ES256 or EdDSA.
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        Self::from_key_pair(KeyPair::from_pem(pem)?)
    }

    /// A signer for the key pair labelled `label` in the PKCS#11 token
    /// `hsm`: it signs in the token. Blocking (reads the token).
    pub fn from_hsm(hsm: &pkcs11::Hsm, label: &str) -> Result<Self, SigningError> {
        let (key, public) = hsm.key(label)?;
        Self::in_hsm(key, public)
    }

    /// A signer whose private key is `key`, in a PKCS#11 token, with the
    /// public half `public` read from the token.
    fn in_hsm(key: pkcs11::HsmKey, public: key_pair::PublicKey) -> Result<Self, SigningError> {
        Self::from_key_pair(KeyPair::in_hsm(key, public))
    }

    fn from_key_pair(key_pair: KeyPair) -> Result<Self, SigningError> {
        install_crypto_provider();

        let public = key_pair.public();
        let algorithm = public.algorithm();
        let (signature_len, bits) = (public.signature_len(), public.bits());
        let (decoding_key, public_key_pem) = (public.decoding_key()?, public.pem()?);
        let (kid, mut jwk) = public.jwk();
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), algorithm.as_str().into());
        jwk.insert("kid".into(), kid.clone().into());
        let jwks = serde_json::json!({ "keys": [jwk] });

        let header = serde_json::json!({ "alg": algorithm.as_str(), "kid": kid, "typ": "JWT" });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let license_header =
            serde_json::json!({ "alg": algorithm.as_str(), "kid": kid, "typ": LICENSE_FILE_TYP });
        let license_header_b64 = URL_SAFE_NO_PAD.encode(license_header.to_string());

        // Signature and algorithm only: `exp` is deliberately not checked
        // (see `verify`), and seat tokens carry no `aud`/`nbf`.
        let mut validation = Validation::new(algorithm.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();

        let signer = Self {
            inner: Arc::new(Inner {
                signature_len,
                bits,
                decoding_key,
                public_key_pem,
                key_pair,
                algorithm,
                header_b64,
                license_header_b64,
                validation,
                kid,
                jwks,
            }),
            verified: Arc::new(verified_cache::VerifiedCache::new(
                DEFAULT_VERIFIED_CACHE_CAPACITY,
            )),
        };

        // Self-test: sign a probe token the way seat tokens are signed and
        // verify it the way `verify` does, against the public key we
        // publish. Proves that the backend accepts the key, that the public
        // half matches the private half and that the JWS we assemble is one
        // jsonwebtoken accepts.
        let probe = signer
            .sign_jws(&serde_json::json!({ "probe": "seatwarden key self-test" }))
            .map_err(|e| SigningError::InvalidKey(format!("self-test signing failed: {e}")))?;
        check_header(&probe, &signer.inner.kid, algorithm)
            .and_then(|()| {
                jsonwebtoken::decode::<serde_json::Value>(
                    &probe,
                    &signer.inner.decoding_key,
                    &signer.inner.validation,
                )
                .map_err(map_decode_error)
            })
            .map_err(|e| {
                SigningError::InvalidKey(format!(
                    "self-test signature does not verify against the public key: {e}"
                ))
            })?;
        Ok(signer)
    }

    fn generate_and_persist(
        path: &Path,
        algorithm: SigningAlgorithm,
        bits: usize,
    ) -> Result<Self, SigningError> {
        let io_err = |source| SigningError::KeyIo {
            path: path.to_path_buf(),
            source,
        };

        tracing::info!(path = %path.display(), %algorithm, bits, "signing key missing; generating a new one");
        let started = Instant::now();
        let pem = KeyPair::generate_pem(algorithm, bits)?;
        let pem = pem.expose_secret();
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "generated signing key"
        );

        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io_err)?;

        let mut builder = tempfile::Builder::new();
        builder.prefix(".seatwarden-key-").suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o600));
        }
        // Elsewhere tempfile already creates files private to the user.
        let mut tmp = builder.tempfile_in(&dir).map_err(io_err)?;
        tmp.write_all(pem.as_bytes()).map_err(io_err)?;
        tmp.as_file().sync_all().map_err(io_err)?;

        match tmp.persist_noclobber(path) {
            Ok(_) => {
                sync_dir(&dir);
                let signer = Self::from_pem(pem)?;
                tracing::info!(path = %path.display(), kid = %signer.kid(), %algorithm, "wrote new signing key");
                Ok(signer)
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // Another node (or task) won the race; its file is complete
                // because it was fsynced before being linked into place.
                // Dropping `e.file` removes our temporary file.
                drop(e.file);
                tracing::info!(path = %path.display(), "signing key was created concurrently; loading it");
                let pem = read_key_file(path)?.ok_or_else(|| {
                    io_err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "key file vanished right after a concurrent create",
                    ))
                })?;
                Self::from_pem(&pem)
            }
            Err(e) => Err(io_err(e.error)),
        }
    }

    /// RFC 7638 JWK thumbprint of the public key (base64url SHA-256 of
    /// e.g. `{"e":..,"kty":"RSA","n":..}`): the same on every node using
    /// the key.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> &str {
        &self.inner.public_key_pem
    }

    /// `{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid","n","e"}]}`
    /// with `n` and `e` base64url without padding; for ES256 `kty` `EC`,
    /// `crv` `P-256`, `x`, `y`; for EdDSA `kty` `OKP`, `crv` `Ed25519`, `x`.
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.jwks.clone()
    }

    /// Key size in bits: the RSA modulus, or 256 for P-256 and Ed25519.
    pub fn key_bits(&self) -> usize {
        self.inner.bits
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.inner.algorithm
    }

    /// Whether the private key lives in a PKCS#11 token rather than in
    /// this process.
    pub fn in_token(&self) -> bool {
        self.inner.key_pair.in_token()
    }

    /// Signs `claims` on the signing threads (see [`pool`](self::pool)).
    ///
    /// At most one signature per CPU is in flight process-wide; further
    /// callers queue. If this future is dropped, the signature still runs
    /// to its end on its thread, so the bound holds under cancellation.
    pub async fn sign(&self, claims: &SeatClaims) -> Result<String, SigningError> {
        let this = self.clone();
        let claims = claims.clone();
        SignPool::get()
            .run(move || this.sign_blocking(&claims))
            .await?
    }

    /// Signs `claims` on the calling thread (~0.25 ms for RSA-2048, ~1.5 ms
    /// for RSA-4096 on a current x86 core, far less for ES256 and EdDSA). Do not call from an async worker; use
    /// [`TokenSigner::sign`].
    pub fn sign_blocking(&self, claims: &SeatClaims) -> Result<String, SigningError> {
        self.sign_jws(claims)
    }

    /// Signs a license file: a compact JWS under the same key and `kid` as
    /// seat tokens, with header `typ` `license+jwt` (see [`LicenseFileClaims`]).
    /// Seat-token verification refuses that `typ`, so a license file can
    /// never stand in for a seat token. Runs on the signing threads, as
    /// [`TokenSigner::sign`] does.
    pub async fn sign_license_file(
        &self,
        claims: &LicenseFileClaims,
    ) -> Result<String, SigningError> {
        let this = self.clone();
        let claims = claims.clone();
        SignPool::get()
            .run(move || this.sign_with_header(&this.inner.license_header_b64, &claims))
            .await?
    }

    /// Builds the compact JWS `header.claims.signature` with the held key:
    /// the claims JSON (one buffer), one output `String` sized up front, the
    /// signature on the stack.
    fn sign_jws<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SigningError> {
        self.sign_with_header(&self.inner.header_b64, claims)
    }

    /// [`TokenSigner::sign_jws`] under a given encoded header.
    fn sign_with_header<T: Serialize + ?Sized>(
        &self,
        header_b64: &str,
        claims: &T,
    ) -> Result<String, SigningError> {
        let inner = &*self.inner;
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, claims)
            .map_err(|e| SigningError::Sign(format!("cannot serialize claims: {e}")))?;

        let b64_len = |n: usize| base64::encoded_len(n, false).unwrap_or(0);
        let mut token = String::with_capacity(
            header_b64.len() + 1 + b64_len(json.len()) + 1 + b64_len(inner.signature_len),
        );
        token.push_str(header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);

        let mut signature = [0u8; MAX_SIGNATURE_LEN];
        let signature = &mut signature[..inner.signature_len];
        inner.key_pair.sign(token.as_bytes(), signature)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&*signature, &mut token);
        Ok(token)
    }

    /// Verifies a seat token issued under this key and returns its claims.
    ///
    /// Checks that the token is a well-formed compact JWS, that its header
    /// names this key's algorithm (anything else, including `none` and
    /// HS256 keyed with the public key, is rejected before any crypto),
    /// that its `kid` is this key's, and that the signature is valid.
    ///
    /// **`exp` is deliberately not checked.** The token authenticates the
    /// holder of a session for heartbeat and release; whether that session is
    /// still live is the seat ledger's decision, and a client whose token has
    /// expired must still be able to release its seat. Callers that need
    /// expiry must compare `claims.exp` themselves.
    ///
    /// A public-key operation (tens of microseconds): fine to call inline on
    /// an async worker.
    pub fn verify(&self, token: &str) -> Result<SeatClaims, SigningError> {
        check_header(token, &self.inner.kid, self.inner.algorithm)?;
        jsonwebtoken::decode::<SeatClaims>(token, &self.inner.decoding_key, &self.inner.validation)
            .map(|data| data.claims)
            .map_err(map_decode_error)
    }

    /// [`TokenSigner::verify`] with a memory: a token that verified before
    /// is answered from a bounded cache without any RSA work.
    ///
    /// The cache is keyed by the SHA-256 of the full token, so a token that
    /// differs from a cached one in any byte (an altered signature included)
    /// misses and is verified in full; only tokens that verify are inserted.
    /// At most [`DEFAULT_VERIFIED_CACHE_CAPACITY`] tokens are kept unless
    /// [`TokenSigner::with_verified_cache_capacity`] says otherwise. Errors
    /// are the same as `verify`'s, and like `verify` this does not check
    /// `exp`. Clones of a signer share its cache.
    pub fn verify_cached(&self, token: &str) -> Result<Arc<SeatClaims>, SigningError> {
        self.verified.get_or_verify(token, |t| self.verify(t))
    }

    /// A signer with the same key and its own, empty verified-token cache
    /// holding at most `capacity` tokens (rounded up to a whole number per
    /// internal shard; 0 behaves as 1).
    pub fn with_verified_cache_capacity(&self, capacity: usize) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            verified: Arc::new(verified_cache::VerifiedCache::new(capacity)),
        }
    }

    /// Tokens currently held by the verified-token cache.
    pub fn verified_cache_len(&self) -> usize {
        self.verified.len()
    }

    /// The most tokens the verified-token cache holds.
    pub fn verified_cache_capacity(&self) -> usize {
        self.verified.capacity()
    }

    /// Measures how many tokens per second [`TokenSigner::sign_blocking`]
    /// produces on this thread, signing for about `duration`. Blocking.
    pub fn sign_rate(&self, duration: Duration) -> f64 {
        let claims = bench_claims();
        let started = Instant::now();
        let mut count: u64 = 0;
        loop {
            if self.sign_blocking(&claims).is_ok() {
                count += 1;
            }
            let elapsed = started.elapsed();
            if elapsed >= duration && count > 0 {
                return count as f64 / elapsed.as_secs_f64();
            }
            if elapsed >= duration.max(Duration::from_secs(1)) * 10 {
                // Every sign failed: report zero rather than loop forever.
                return 0.0;
            }
        }
    }

    /// The signing ceiling: total tokens per second when `threads` OS
    /// threads run [`TokenSigner::sign_blocking`] at once for about
    /// `duration`. Blocking; spawns and joins its threads (at least one).
    ///
    /// Runs on threads of its own, not [`TokenSigner::sign`]'s, so with
    /// `threads` equal to the CPU count it is the most `sign` can deliver on
    /// this machine.
    pub fn sign_ceiling(&self, threads: usize, duration: Duration) -> f64 {
        let threads = threads.max(1);
        let claims = bench_claims();
        let start = Barrier::new(threads);
        let (count, elapsed) = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (claims, start) = (&claims, &start);
                    scope.spawn(move || {
                        start.wait();
                        let started = Instant::now();
                        let mut count: u64 = 0;
                        loop {
                            if self.sign_blocking(claims).is_ok() {
                                count += 1;
                            }
                            let elapsed = started.elapsed();
                            if elapsed >= duration {
                                return (count, elapsed);
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or((0, Duration::ZERO)))
                .fold((0u64, Duration::ZERO), |(n, longest), (c, e)| {
                    (n + c, longest.max(e))
                })
        });
        if elapsed.is_zero() {
            return 0.0;
        }
        count as f64 / elapsed.as_secs_f64()
    }
}

/// Representative claims for the signing benchmarks.
fn bench_claims() -> SeatClaims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    SeatClaims {
        iss: "seatwarden-bench".into(),
        sub: "00000000-0000-0000-0000-000000000000".into(),
        session_id: "00000000-0000-0000-0000-000000000000".into(),
        license_id: "00000000-0000-0000-0000-000000000001".into(),
        org_id: "00000000-0000-0000-0000-000000000002".into(),
        hardware_id: "bench-hardware".into(),
        tier: "pro".into(),
        features: vec!["a".into(), "b".into()],
        max_seats: 10,
        iat: now,
        exp: now + 3600,
        lease_exp: now + 3570,
        borrowed: false,
    }
}

/// Rejects tokens whose header is malformed, whose `kid` is not ours, or
/// whose `alg` is not our key's, before any signature work.
fn check_header(token: &str, kid: &str, algorithm: SigningAlgorithm) -> Result<(), SigningError> {
    let (alg, k) = header_of(token)?;
    if k != kid {
        return Err(SigningError::UnknownKey);
    }
    if alg != algorithm {
        return Err(SigningError::AlgorithmRejected(alg.as_str().into()));
    }
    Ok(())
}

/// The `kid` of a seat token's header, after the header checks that need
/// no key: three parts, an `alg` we sign with, a seat token's `typ`, no
/// `crit`. `UnknownKey` when it names none.
pub fn header_kid(token: &str) -> Result<String, SigningError> {
    header_of(token).map(|(_, kid)| kid)
}

/// The `alg` and `kid` of a seat token's header (see [`header_kid`]).
fn header_of(token: &str) -> Result<(SigningAlgorithm, String), SigningError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SigningError::MalformedToken(
            "expected three dot-separated parts".into(),
        ));
    };
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| SigningError::MalformedToken("header is not base64url".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|_| SigningError::MalformedToken("header is not JSON".into()))?;
    let alg = match header.get("alg").and_then(|a| a.as_str()) {
        Some(name) => name
            .parse::<SigningAlgorithm>()
            .map_err(|_| SigningError::AlgorithmRejected(truncate(name)))?,
        None => return Err(SigningError::AlgorithmRejected("<missing>".into())),
    };
    // A license file is signed with the same key but is no seat token: its
    // `typ` says so, and only `JWT` (or none) is a seat token.
    match header.get("typ") {
        None => {}
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(SigningError::WrongType),
    }
    // `crit` extensions are not understood, so must not be accepted
    // (RFC 7515 §4.1.11).
    if header.get("crit").is_some() {
        return Err(SigningError::MalformedToken(
            "unsupported crit header".into(),
        ));
    }
    match header.get("kid").and_then(|k| k.as_str()) {
        Some(k) => Ok((alg, k.to_owned())),
        None => Err(SigningError::UnknownKey),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn map_decode_error(e: jsonwebtoken::errors::Error) -> SigningError {
    match e.kind() {
        ErrorKind::InvalidSignature => SigningError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => {
            SigningError::AlgorithmRejected("not the key's algorithm".into())
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_) => SigningError::MalformedToken(e.to_string()),
        // Anything else is about our key or the backend, not the token.
        _ => SigningError::Sign(format!("verification backend error: {e}")),
    }
}

/// Selects jsonwebtoken's aws-lc provider once per process.
///
/// jsonwebtoken picks a provider from its crate features only when exactly
/// one backend feature is enabled; if another crate in the graph ever turns
/// on `rust_crypto` too, it would panic on first use. Installing explicitly
/// makes the choice independent of feature unification.
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let ours = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        if let Err(existing) = ours.install_default()
            && !std::ptr::eq(existing, ours)
        {
            tracing::warn!(
                "a different jsonwebtoken CryptoProvider was installed first; seat tokens will use it"
            );
        }
    });
}

/// Reads the key file; `Ok(None)` when it does not exist.
fn read_key_file(path: &Path) -> Result<Option<String>, SigningError> {
    match fs::read_to_string(path) {
        Ok(pem) => {
            warn_if_loose_permissions(path);
            Ok(Some(pem))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SigningError::KeyIo {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(unix)]
fn warn_if_loose_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "signing key file is readable by group or others"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_loose_permissions(_path: &Path) {}

/// Makes the new directory entry durable (best effort).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
