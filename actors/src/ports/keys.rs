//! The seat-signing key set: which keys sign and verify seat tokens and
//! license files.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// One signing key as stored: the public half in the clear (as a JWK, so
/// the JWKS needs no private key), the private half sealed by the caller
/// (the store never sees it in the clear).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint of the public key: the JWS header's `kid`.
    pub kid: String,
    /// The JWS `alg` it signs with, e.g. `RS256`.
    pub algorithm: String,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    /// The private key, sealed (encrypted and authenticated) by the caller.
    pub sealed_private: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// The one key that signs. Every other unretired key only verifies.
    pub active: bool,
    /// Set once the key no longer verifies anything.
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the sealed private key, even sealed.
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("active", &self.active)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// What retiring a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retirement {
    Retired,
    AlreadyRetired,
    /// The active key signs every new token: rotate first.
    Active,
    NotFound,
}

/// The key set every node reads.
///
/// # Contract
/// - At most one key is active; [`KeyStore::add_signing_key`] with
///   `activate` makes the new key the only active one atomically, so no
///   reader ever sees two active keys or none (once one exists).
/// - Keys are never deleted: retired keys stay as a record.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every key, retired ones included, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Adds `key` (its `active` and `retired_at` fields are ignored). With
    /// `activate`, it becomes the active key and the previous one is
    /// deactivated (it keeps verifying until retired), in one transaction.
    /// Returns `false`, changing nothing, when a key of that `kid` exists.
    async fn add_signing_key(&self, key: &StoredKey, activate: bool) -> Result<bool, StoreError>;

    /// Replaces the sealed private half of every key named in `sealed`
    /// (`kid`, new sealed bytes), in one transaction: if any `kid` is not
    /// in the set, nothing changes and the answer is `NotFound`. Nothing
    /// else of a key changes (what a node compares on reload stays the
    /// same, so running nodes keep the keys they hold).
    async fn reseal_signing_keys(&self, sealed: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// Retires `kid` at `at`: it leaves the JWKS and stops verifying. The
    /// active key cannot be retired.
    async fn retire_signing_key(
        &self,
        kid: &str,
        at: DateTime<Utc>,
    ) -> Result<Retirement, StoreError>;
}
