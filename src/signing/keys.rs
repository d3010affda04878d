//! The key set: several signing keys, one of which signs.
//!
//! Rotating the seat-signing key must not invalidate what the old key
//! signed: running apps hold seat tokens (verified offline against the
//! JWKS) and license files (valid for weeks). So the server keeps a set of
//! keys in the store ([`KeyStore`]): the **active** key signs every new
//! token; older keys stay in the JWKS and keep verifying until an operator
//! **retires** them (`seatwarden keys rotate`, `seatwarden keys retire`).
//!
//! Every node reads the set at start and again every
//! `signing.reload_secs`, so a rotation reaches all nodes within seconds
//! and no restart. The private halves are stored sealed with AES-256-GCM
//! ([`KeySeal`]) under a key derived from the access-token secret, which
//! every node already shares; the database never holds a private key in
//! the clear, and a database dump alone signs nothing.
//!
//! A deployment that starts with an empty set imports its
//! `signing.key_path` key (generated there first if allowed) as the active
//! key, so upgrading keeps every token issued before valid.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use seatwarden_actors::ports::{KeyStore, StoreError, StoredKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::pkcs11::{HSM_REFERENCE_PREFIX, Hsm, hsm_reference};
use super::verified_cache::VerifiedCache;
use super::{
    DEFAULT_VERIFIED_CACHE_CAPACITY, LicenseFileClaims, SeatClaims, SigningAlgorithm, SigningError,
    TokenSigner,
};

/// What the derived sealing key is for; a new purpose gets a new label.
const SEAL_PURPOSE: &[u8] = b"seatwarden signing-key seal v1";

/// Seals private keys for the store: AES-256-GCM under a key derived from
/// a secret every node shares, with the key's `kid` as associated data (a
/// sealed key copied onto another row does not open).
///
/// A key in a PKCS#11 token is stored as a sealed reference to it instead
/// (see [`pkcs11`](super::pkcs11)); a seal given the token with
/// [`KeySeal::with_hsm`] opens those too.
#[derive(Clone)]
pub struct KeySeal {
    key: Arc<LessSafeKey>,
    hsm: Option<Hsm>,
}

/// The key, never shown.
impl std::fmt::Debug for KeySeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySeal").finish_non_exhaustive()
    }
}

impl KeySeal {
    /// A seal keyed by HMAC-SHA256(`secret`, a fixed label): never the
    /// secret's own key.
    pub fn new(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), SEAL_PURPOSE);
        let key = UnboundKey::new(&AES_256_GCM, derived.as_ref()).expect("32-byte AES key");
        Self {
            key: Arc::new(LessSafeKey::new(key)),
            hsm: None,
        }
    }

    /// This seal, able to open keys that live in `hsm` as well.
    pub fn with_hsm(self, hsm: Hsm) -> Self {
        Self {
            hsm: Some(hsm),
            ..self
        }
    }

    /// The token keys may live in, if one is configured.
    pub fn hsm(&self) -> Option<&Hsm> {
        self.hsm.as_ref()
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SigningError::Sign("no randomness for a nonce".into()))?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SigningError::Sign("sealing the key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of [`KeySeal::seal`], or an error if it was sealed
    /// under another secret, for another `kid`, or altered.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, SigningError> {
        let refused = || {
            SigningError::InvalidKey(format!(
                "stored key {kid} does not open: it was sealed under another access-token \
                 secret, or altered"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut body)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

/// One key of the set, as `seatwarden keys list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub created: DateTime<Utc>,
    pub active: bool,
    pub retired: Option<DateTime<Utc>>,
}

impl From<&StoredKey> for KeyInfo {
    fn from(k: &StoredKey) -> Self {
        Self {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
            created: k.created_at,
            active: k.active,
            retired: k.retired_at,
        }
    }
}

/// The keys in use at one moment.
struct Ring {
    active: TokenSigner,
    /// Every unretired key, the active one included, by `kid`.
    verifiers: HashMap<String, TokenSigner>,
    /// `(kid, active)` of every unretired key: what a reload compares.
    shape: Vec<(String, bool)>,
    jwks: serde_json::Value,
    /// Tokens that verified under this ring. A new ring starts empty, so a
    /// token of a key retired since is verified again, and refused.
    verified: Arc<VerifiedCache>,
}

impl Ring {
    fn new(active: TokenSigner, others: Vec<TokenSigner>) -> Self {
        let mut verifiers = HashMap::new();
        let mut shape = vec![(active.kid().to_owned(), true)];
        let mut jwk_list = active.jwks()["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        verifiers.insert(active.kid().to_owned(), active.clone());
        for key in others {
            if verifiers.contains_key(key.kid()) {
                continue;
            }
            shape.push((key.kid().to_owned(), false));
            jwk_list.extend(key.jwks()["keys"].as_array().cloned().unwrap_or_default());
            verifiers.insert(key.kid().to_owned(), key);
        }
        shape.sort();
        Self {
            active,
            verifiers,
            shape,
            jwks: serde_json::json!({ "keys": jwk_list }),
            verified: Arc::new(VerifiedCache::new(DEFAULT_VERIFIED_CACHE_CAPACITY)),
        }
    }

    /// The ring of `live` (the unretired keys, in any order), each opened
    /// with `seal` and checked against its `kid`.
    fn open(live: &[&StoredKey], seal: &KeySeal) -> Result<Self, SigningError> {
        let Some(active) = live.iter().find(|k| k.active) else {
            return Err(SigningError::InvalidKey(
                "the key set has no active key: run `seatwarden keys rotate`".into(),
            ));
        };
        let active = open_one(active, seal)?;
        let others = live
            .iter()
            .filter(|k| !k.active)
            .map(|k| open_one(k, seal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(active, others))
    }
}

/// The unretired keys of `stored`, and their shape (sorted `(kid, active)`).
fn live_keys(stored: &[StoredKey]) -> (Vec<&StoredKey>, Vec<(String, bool)>) {
    let live: Vec<&StoredKey> = stored.iter().filter(|k| k.retired_at.is_none()).collect();
    let mut shape: Vec<(String, bool)> = live.iter().map(|k| (k.kid.clone(), k.active)).collect();
    shape.sort();
    (live, shape)
}

/// The server's signing keys: signs with the active one, verifies with any
/// unretired one. Cheap to clone; clones share the set, and a reload
/// reaches all of them.
///
/// Every acquire signs and every heartbeat verifies through the ring, and
/// it changes only on a rotation: an [`ArcSwap`] gives readers the current
/// ring without a lock or a shared reference count to contend on.
#[derive(Clone)]
pub struct SigningKeys {
    ring: Arc<ArcSwap<Ring>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.current();
        f.debug_struct("SigningKeys")
            .field("active", &ring.active.kid())
            .field("keys", &ring.shape.len())
            .finish_non_exhaustive()
    }
}

impl From<TokenSigner> for SigningKeys {
    /// A set of one key (tests, the benchmark, single-key tools).
    fn from(signer: TokenSigner) -> Self {
        Self::of(Ring::new(signer, Vec::new()))
    }
}

impl SigningKeys {
    fn of(ring: Ring) -> Self {
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
        }
    }

    fn current(&self) -> Guard<Arc<Ring>> {
        self.ring.load()
    }

    /// The active key's signer.
    pub fn active(&self) -> TokenSigner {
        self.current().active.clone()
    }

    /// The active key's `kid`.
    pub fn kid(&self) -> String {
        self.current().active.kid().to_owned()
    }

    /// The active key's algorithm: what new tokens are signed with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.current().active.algorithm()
    }

    /// The active key's public key (SPKI PEM).
    pub fn public_key_pem(&self) -> String {
        self.current().active.public_key_pem().to_owned()
    }

    /// Every unretired key, the active one first.
    pub fn jwks(&self) -> serde_json::Value {
        self.current().jwks.clone()
    }

    /// Signs with the active key (see [`TokenSigner::sign`]).
    pub async fn sign(&self, claims: &SeatClaims) -> Result<String, SigningError> {
        self.active().sign(claims).await
    }

    /// Signs a license file with the active key.
    pub async fn sign_license_file(
        &self,
        claims: &LicenseFileClaims,
    ) -> Result<String, SigningError> {
        self.active().sign_license_file(claims).await
    }

    /// Verifies a seat token under whichever unretired key its `kid`
    /// names (see [`TokenSigner::verify`]); `UnknownKey` for any other.
    pub fn verify(&self, token: &str) -> Result<SeatClaims, SigningError> {
        verify_in(&self.current(), token)
    }

    /// [`SigningKeys::verify`] with a memory of tokens that verified under
    /// the current key set (see [`TokenSigner::verify_cached`]).
    pub fn verify_cached(&self, token: &str) -> Result<Arc<SeatClaims>, SigningError> {
        let ring = self.current();
        ring.verified.get_or_verify(token, |t| verify_in(&ring, t))
    }

    /// Replaces the set with `stored`'s unretired keys, opened with `seal`.
    /// Changes nothing (and keeps the verified-token cache) when the set's
    /// shape is the same. Returns whether it changed.
    pub fn install(&self, stored: &[StoredKey], seal: &KeySeal) -> Result<bool, SigningError> {
        let (live, shape) = live_keys(stored);
        if shape == self.current().shape {
            return Ok(false);
        }
        self.ring.store(Arc::new(Ring::open(&live, seal)?));
        Ok(true)
    }

    /// Opens the set in `store`: imports `bootstrap` as the active key
    /// when the set is empty (the `signing.key_path` key, so tokens it
    /// signed before the set existed keep verifying), then installs it.
    pub async fn open<F, Fut>(
        store: &dyn KeyStore,
        seal: &KeySeal,
        bootstrap: F,
    ) -> Result<Self, KeySetError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SecretString, SigningError>>,
    {
        let mut stored = store.signing_keys().await?;
        if stored.is_empty() {
            let pem = bootstrap().await?;
            let key = stored_key(&pem, seal, Utc::now())?;
            // Several nodes may import the same file at once: the same
            // kid, so all but one insert nothing.
            store.add_signing_key(&key, true).await?;
            stored = store.signing_keys().await?;
        }
        let (live, _) = live_keys(&stored);
        Ok(Self::of(Ring::open(&live, seal)?))
    }

    /// Reads the set from `store` every `every` and installs it when it
    /// changed, for as long as the returned task runs. A failed read or a
    /// key that does not open is logged and retried; the set in use stays.
    pub fn spawn_reload(
        &self,
        store: Arc<dyn KeyStore>,
        seal: KeySeal,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.signing_keys().await {
                    Ok(stored) => {
                        // Opening a changed set parses keys and may call a
                        // PKCS#11 token: off the async workers.
                        let (ring, seal) = (keys.clone(), seal.clone());
                        match tokio::task::spawn_blocking(move || ring.install(&stored, &seal))
                            .await
                        {
                            Ok(Ok(true)) => {
                                tracing::info!(active = %keys.kid(), "signing key set changed");
                            }
                            Ok(Ok(false)) => {}
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "could not install the signing key set")
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the key set reload task failed")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read the signing key set"),
                }
            }
        })
    }
}

/// A stored key's signer, checked to be the key its `kid` names: a sealed
/// PEM, or a reference to a key in the PKCS#11 token.
fn open_one(k: &StoredKey, seal: &KeySeal) -> Result<TokenSigner, SigningError> {
    let plain = secrecy::zeroize::Zeroizing::new(seal.open(&k.kid, &k.sealed_private)?);
    let signer = if let Some(label) = plain.strip_prefix(HSM_REFERENCE_PREFIX.as_bytes()) {
        let hsm = seal.hsm().ok_or_else(|| {
            SigningError::InvalidKey(format!(
                "stored key {} lives in a PKCS#11 token: configure signing.pkcs11",
                k.kid
            ))
        })?;
        let label = std::str::from_utf8(label).map_err(|_| {
            SigningError::InvalidKey(format!("stored key {} names no token label", k.kid))
        })?;
        TokenSigner::from_hsm(hsm, label)?
    } else {
        let pem = std::str::from_utf8(&plain)
            .map_err(|_| SigningError::InvalidKey(format!("stored key {} is not PEM", k.kid)))?;
        TokenSigner::from_pem(pem)?
    };
    if signer.kid() != k.kid {
        return Err(SigningError::InvalidKey(format!(
            "stored key {} has the thumbprint {}",
            k.kid,
            signer.kid()
        )));
    }
    Ok(signer)
}

fn verify_in(ring: &Ring, token: &str) -> Result<SeatClaims, SigningError> {
    let kid = super::header_kid(token)?;
    ring.verifiers
        .get(&kid)
        .ok_or(SigningError::UnknownKey)?
        .verify(token)
}

/// Failures of opening or changing the key set.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error("key store: {0}")]
    Store(#[from] StoreError),
}

/// The PEM private key `pem` as the store keeps it, sealed with `seal`
/// (not yet active).
pub fn stored_key(
    pem: &SecretString,
    seal: &KeySeal,
    created_at: DateTime<Utc>,
) -> Result<StoredKey, SigningError> {
    let signer = TokenSigner::from_pem(pem.expose_secret())?;
    stored(&signer, pem.expose_secret().as_bytes(), seal, created_at)
}

/// The key labelled `label` in `seal`'s PKCS#11 token as the store keeps
/// it: a sealed reference, no key material (not yet active).
pub fn stored_hsm_key(
    label: &str,
    seal: &KeySeal,
    created_at: DateTime<Utc>,
) -> Result<StoredKey, SigningError> {
    let signer = TokenSigner::from_hsm(token_of(seal)?, label)?;
    stored(&signer, hsm_reference(label).as_bytes(), seal, created_at)
}

/// A new key pair generated inside `seal`'s PKCS#11 token (RS256 of
/// `rsa_bits`, or ES256), as the store keeps it (not yet active). Its
/// label is `seatwarden-` and the creation time. Blocking.
pub fn generate_hsm_key(
    algorithm: SigningAlgorithm,
    rsa_bits: usize,
    seal: &KeySeal,
    created_at: DateTime<Utc>,
) -> Result<StoredKey, SigningError> {
    let label = format!("seatwarden-{}", created_at.format("%Y%m%dT%H%M%S%.6fZ"));
    let (key, public) = token_of(seal)?.generate(algorithm, rsa_bits, &label)?;
    let signer = TokenSigner::in_hsm(key, public)?;
    stored(&signer, hsm_reference(&label).as_bytes(), seal, created_at)
}

/// The PKCS#11 token `seal` opens keys in.
fn token_of(seal: &KeySeal) -> Result<&Hsm, SigningError> {
    seal.hsm().ok_or_else(|| {
        SigningError::InvalidKey("no PKCS#11 token is configured (signing.pkcs11)".into())
    })
}

fn stored(
    signer: &TokenSigner,
    private: &[u8],
    seal: &KeySeal,
    created_at: DateTime<Utc>,
) -> Result<StoredKey, SigningError> {
    Ok(StoredKey {
        kid: signer.kid().to_owned(),
        algorithm: signer.algorithm().as_str().into(),
        public_jwk: signer.jwks()["keys"][0].to_string(),
        sealed_private: seal.seal(signer.kid(), private)?,
        created_at,
        active: false,
        retired_at: None,
    })
}

/// A new key for `algorithm` as PKCS#8 PEM; `rsa_bits` (2048, 3072 or
/// 4096) sizes an RSA key. Blocking: seconds of CPU for RSA-4096.
pub fn generate_pem(
    algorithm: SigningAlgorithm,
    rsa_bits: usize,
) -> Result<SecretString, SigningError> {
    super::key_pair::KeyPair::generate_pem(algorithm, rsa_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_under_its_secret_and_its_kid_unaltered() {
        let seal = KeySeal::new(b"the access-token secret, 32 bytes or more");
        let sealed = seal.seal("kid-1", b"private key").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(seal.open("kid-1", &sealed).unwrap(), b"private key");

        let other = KeySeal::new(b"another secret, also 32 bytes or more!!");
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(seal.open("kid-2", &sealed).is_err(), "bound to its kid");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(seal.open("kid-1", &altered).is_err());
        assert!(seal.open("kid-1", &sealed[..5]).is_err());
        // A fresh nonce each time.
        assert_ne!(seal.seal("kid-1", b"private key").unwrap(), sealed);
    }
}
