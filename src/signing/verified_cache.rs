//! A bounded, concurrent cache of seat tokens that already passed
//! [`TokenSigner::verify`](super::TokenSigner::verify).
//!
//! Heartbeats present the same token again and again, and an RS256 verify
//! costs tens of microseconds of public-key arithmetic. A hit here costs one
//! SHA-256 over the token bytes (about a microsecond with the CPU's SHA
//! extensions), one shard read lock and an `Arc` clone; no allocation.
//!
//! # Why the key is SHA-256 of the whole token
//!
//! A hit skips the signature check, so a hit must be impossible to forge:
//! the key must be a function of *every* byte of the token, header, claims
//! and signature alike, and finding a second token with the same key must be
//! infeasible. SHA-256 is collision- and second-preimage-resistant, so a
//! token whose signature (or any other byte) was altered has a different key
//! and goes through the full verification. A fast non-cryptographic hash
//! (even a keyed one such as SipHash) would only be safe together with a
//! comparison of the full stored token on every hit, which costs memory (the
//! token is 0.5 to 1 KB) and a compare for nothing, since the digest is
//! computed over the same bytes once anyway.
//!
//! # Bound and eviction
//!
//! Only tokens that verified are inserted, so garbage cannot fill the cache;
//! but an authenticated client could still present many distinct valid
//! tokens, so the cache is bounded ([`DEFAULT_VERIFIED_CACHE_CAPACITY`]
//! entries by default, about 50 MB worst case with today's claims).
//! Eviction is `quick_cache`'s S3-FIFO: new entries enter a small probation
//! queue and are promoted once hit again, so a burst of one-off tokens (a
//! wave of fresh acquires, or a client cycling tokens) evicts those one-offs
//! first and leaves the tokens that keep heartbeating. Clearing the whole
//! map when full, the simplest alternative, would turn every overflow into a
//! storm of full verifications for all live sessions at once.
//!
//! Entries never expire by time: [`TokenSigner::verify`](super::TokenSigner::verify)
//! does not check `exp` either (liveness is the seat ledger's decision), and
//! the cache belongs to one signer, hence to one key.

use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::{SeatClaims, SigningError};

/// Entries kept by a signer's verified-token cache unless configured
/// otherwise (see [`TokenSigner::with_verified_cache_capacity`](super::TokenSigner::with_verified_cache_capacity)).
pub const DEFAULT_VERIFIED_CACHE_CAPACITY: usize = 100_000;

/// SHA-256 of the token bytes. See the module docs for why.
type TokenDigest = [u8; 32];

pub(super) struct VerifiedCache {
    map: Cache<TokenDigest, Arc<SeatClaims>>,
}

impl VerifiedCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            // quick_cache wants a positive capacity; 1 is as good as off.
            map: Cache::new(capacity.max(1)),
        }
    }

    /// Returns the cached claims for `token`, or runs `verify` and caches
    /// its result when it succeeds. Failures are never cached.
    pub(super) fn get_or_verify(
        &self,
        token: &str,
        verify: impl FnOnce(&str) -> Result<SeatClaims, SigningError>,
    ) -> Result<Arc<SeatClaims>, SigningError> {
        let digest: TokenDigest = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.map.get(&digest) {
            return Ok(claims);
        }
        // Concurrent misses on one token may both verify; both results are
        // the same and the second insert just replaces the first. Cheaper
        // than making every other caller wait on a placeholder.
        let claims = Arc::new(verify(token)?);
        self.map.insert(digest, Arc::clone(&claims));
        Ok(claims)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The most entries the cache holds (the configured capacity, possibly
    /// rounded up to a whole number per internal shard).
    pub(super) fn capacity(&self) -> usize {
        usize::try_from(self.map.capacity()).unwrap_or(usize::MAX)
    }
}
