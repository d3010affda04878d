//! Organizations and licenses.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{License, LicenseId, LicenseUpdate, NewLicense, Org, OrgId};

/// A license as changed at some store revision.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenseChange {
    pub revision: i64,
    pub license: License,
}

/// Durable organizations and licenses.
///
/// Implementations: SQLite for the embedded default, PostgreSQL for
/// production. Both must be safe to share between several processes.
#[async_trait]
pub trait LicenseStore: Send + Sync + 'static {
    /// Checks that the database answers. Used by `/health/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates an organization with a fresh id.
    async fn create_org(&self, name: &str) -> Result<Org, StoreError>;

    /// The organization, or `None`.
    async fn org(&self, id: OrgId) -> Result<Option<Org>, StoreError>;

    /// Creates an active license with a fresh id. Fails with `NotFound` if
    /// the organization does not exist and `Conflict` if the key hash is
    /// already taken.
    async fn create_license(&self, new: NewLicense) -> Result<License, StoreError>;

    /// The license, or `None`.
    async fn license(&self, id: LicenseId) -> Result<Option<License>, StoreError>;

    /// The license whose key hashes to `key_hash`, or `None`.
    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>, StoreError>;

    /// Changes the given fields of a license and returns it as it now is;
    /// `Ok(None)` if the license is unknown.
    ///
    /// - Every change takes a new, higher revision (see
    ///   [`LicenseStore::license_changes_since`]), so that every node hears
    ///   of it.
    /// - Lowering `seats` below the live sessions is allowed: the ledger
    ///   never evicts, it only refuses new seats until usage is below.
    /// - A change of status to suspended or inactive ends every open
    ///   session of the license as `revoked`, with a `SESSION_REVOKED`
    ///   audit entry each, in the same transaction: nothing half done.
    async fn update_license(
        &self,
        id: LicenseId,
        update: &LicenseUpdate,
    ) -> Result<Option<License>, StoreError>;

    /// All licenses of an organization, oldest first.
    async fn licenses_for_org(&self, org: OrgId) -> Result<Vec<License>, StoreError>;

    /// Licenses changed at a revision above `revision`, in revision order,
    /// at most `limit`. `license_changes_since(0, ..)` never returns
    /// licenses that were only created, never changed.
    async fn license_changes_since(
        &self,
        revision: i64,
        limit: u32,
    ) -> Result<Vec<LicenseChange>, StoreError>;

    /// The highest revision given out so far (0 if none).
    async fn license_revision(&self) -> Result<i64, StoreError>;
}
