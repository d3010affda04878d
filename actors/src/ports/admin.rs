//! The platform's directory across tenants, for platform administrators:
//! users, organizations and licenses with search and keyset pagination,
//! license issue and change with their audit entries, and the numbers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{
    ActionAudit, License, LicenseId, LicenseStatus, LicenseUpdate, NewLicense, Org, OrgId, User,
};

/// One page of a listing: newest first, at most `limit` items, starting
/// after the item the cursor names (`None`: from the newest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// A case-insensitive substring to look for (email or name for users,
    /// name for organizations).
    pub search: Option<String>,
    pub limit: u32,
    /// The last item of the previous page: `(created_at, id)`.
    pub after: Option<(DateTime<Utc>, uuid::Uuid)>,
}

/// A page of items; `next` names the last item when more may follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<(DateTime<Utc>, uuid::Uuid)>,
}

/// Which licenses to list; `None` matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    pub org_id: Option<OrgId>,
    pub status: Option<LicenseStatus>,
    pub tier: Option<String>,
}

/// The platform's numbers at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analytics {
    pub orgs: u64,
    pub users: u64,
    /// Users created at or after the given start of the month.
    pub signups_this_month: u64,
    /// Licenses that are active and not expired.
    pub active_licenses: u64,
    /// The seats of those licenses.
    pub seats_total: u64,
    /// Open sessions on those licenses.
    pub seats_in_use: u64,
}

/// Cross-tenant reads and audited license changes.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Users, newest first.
    async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError>;

    /// Organizations, newest first.
    async fn list_orgs(&self, page: &PageRequest) -> Result<Page<Org>, StoreError>;

    /// Licenses matching `filter`, newest first (`page.search` unused).
    async fn list_licenses(
        &self,
        filter: &LicenseFilter,
        page: &PageRequest,
    ) -> Result<Page<License>, StoreError>;

    /// Creates a license as `LicenseStore::create_license` does, and its
    /// audit entry (`audit.license_id` is filled in), in one transaction.
    async fn issue_license(
        &self,
        new: NewLicense,
        audit: ActionAudit,
    ) -> Result<License, StoreError>;

    /// Changes a license as `LicenseStore::update_license` does (revision,
    /// revocation on suspension), with its audit entry, in one transaction.
    async fn update_license_audited(
        &self,
        id: LicenseId,
        update: &LicenseUpdate,
        audit: ActionAudit,
    ) -> Result<Option<License>, StoreError>;

    /// The numbers, with `now` deciding expiry and `month_start` the
    /// signups counted.
    async fn analytics(
        &self,
        now: DateTime<Utc>,
        month_start: DateTime<Utc>,
    ) -> Result<Analytics, StoreError>;
}
