//! The ports the coordinator needs from the outside world.
//!
//! Each trait states its contract on its methods; every implementation must
//! pass the shared conformance suite in the root crate's `tests/`. The
//! coordinator holds them as `Arc<dyn Trait>`, so only `main` names a
//! concrete backend.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    AuditEntry, EndReason, License, LicenseId, LicenseUpdate, NewLicense, Org, OrgId, SessionId,
    SessionRecord,
};

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A referenced row (for example the organization of a new license) does
    /// not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule was broken (for example a duplicate session id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed; the message must not
    /// contain credentials.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What [`Store::end_session`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum EndOutcome {
    /// This call closed the session; its audit entry was written with it.
    Ended(SessionRecord),
    /// The session had already ended; nothing was written and the record
    /// shows the original `ended_at` and `end_reason`.
    AlreadyEnded(SessionRecord),
}

impl EndOutcome {
    pub fn record(&self) -> &SessionRecord {
        match self {
            Self::Ended(r) | Self::AlreadyEnded(r) => r,
        }
    }
}

/// Durable records: organizations, licenses, sessions and the audit log.
///
/// Implementations: SQLite for the embedded default, PostgreSQL for
/// production. Both must be safe to share between several server processes.
#[async_trait]
pub trait Store: Send + Sync + 'static {
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
    /// `Ok(None)` if the license is unknown. Lowering `seats` below the live
    /// sessions is allowed: the ledger never evicts, it only refuses new
    /// seats until usage is below the limit.
    async fn update_license(
        &self,
        id: LicenseId,
        update: &LicenseUpdate,
    ) -> Result<Option<License>, StoreError>;

    /// All licenses of an organization, oldest first.
    async fn licenses_for_org(&self, org: OrgId) -> Result<Vec<License>, StoreError>;

    /// Inserts a new open session and its `LICENSE_ACQUIRED` audit entry in
    /// one transaction: either both are durable or neither is.
    async fn start_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The session, open or ended, or `None`.
    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Records heartbeats: for each `(session, at, lease_expires_at)` sets
    /// `last_heartbeat_at` and `lease_expires_at`, but only on sessions that
    /// are still open and only forwards in time (an older write arriving
    /// late never moves a lease back). Unknown ids are ignored.
    async fn record_heartbeats(
        &self,
        beats: &[(SessionId, DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<(), StoreError>;

    /// Ends an open session and appends `audit` in one transaction.
    ///
    /// Idempotent and safe under races between nodes: only the first caller
    /// gets `Ended`, every later one gets `AlreadyEnded` with the original
    /// record and writes nothing. `Ok(None)` when the session is unknown.
    async fn end_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        reason: EndReason,
        audit: &AuditEntry,
    ) -> Result<Option<EndOutcome>, StoreError>;

    /// The open sessions of an organization, oldest first.
    async fn open_sessions(&self, org: OrgId) -> Result<Vec<SessionRecord>, StoreError>;

    /// Organizations that have at least one open session. At start-up the
    /// coordinator spawns their actors so that lapsed leases get closed.
    async fn orgs_with_open_sessions(&self) -> Result<Vec<OrgId>, StoreError>;

    /// All sessions of a license, open and ended, newest first.
    async fn sessions_for_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Appends one audit entry.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The audit entries of a license, in the order they were written.
    async fn audit_for_license(&self, license: LicenseId) -> Result<Vec<AuditEntry>, StoreError>;
}

/// A failure of the seat ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger could not be reached; the caller should retry later.
    #[error("seat ledger unavailable: {0}")]
    Unavailable(String),
}

/// A request for a seat.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub org: OrgId,
    pub license: LicenseId,
    /// The id the new session gets if a seat is granted.
    pub session: SessionId,
    pub hardware_id: String,
    pub max_seats: u32,
    pub ttl: Duration,
}

/// The answer to a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseGrant {
    /// A new lease under the requested session id.
    Granted {
        expires_at: DateTime<Utc>,
        seats_used: u32,
    },
    /// This hardware id already held a live lease on the license; it was
    /// extended and keeps its original session id.
    Renewed {
        session: SessionId,
        expires_at: DateTime<Utc>,
        seats_used: u32,
    },
    /// Every seat is taken by a live lease.
    Full { seats_used: u32 },
}

/// The live leases: which machine holds which seat until when.
///
/// The ledger is the single source of truth for *live* seats; the store only
/// keeps history. Contract shared by every implementation:
///
/// - **Invariant:** a license never has more live leases than `max_seats`,
///   however many processes call the ledger at once.
/// - A lease is live while `now < expires_at`, with `now` taken from one
///   clock shared by all callers (Redis `TIME`, or the process clock for the
///   in-process ledger), so skew between nodes cannot stretch or cut it.
/// - A lapsed lease frees its seat by itself: no sweeper and no client call
///   is needed. Once lapsed it can never become live again: heartbeat and
///   release report it as gone.
/// - At most one live lease per `(license, hardware_id)`.
/// - Lowering `max_seats` never evicts live leases; it only refuses new ones
///   until usage is below the limit.
#[async_trait]
pub trait SeatLedger: Send + Sync + 'static {
    /// Checks that the ledger answers. Used by `/health/ready`.
    async fn ping(&self) -> Result<(), LedgerError>;

    /// Grants, renews or refuses a seat, atomically.
    async fn acquire(&self, req: &LeaseRequest) -> Result<LeaseGrant, LedgerError>;

    /// Extends a live lease to `now + ttl` and returns the new expiry;
    /// `None` if the lease is unknown, released or has lapsed.
    async fn heartbeat(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
        ttl: Duration,
    ) -> Result<Option<DateTime<Utc>>, LedgerError>;

    /// Frees the seat. Returns whether a live lease was removed; `false`
    /// for an unknown, already released or lapsed lease. Idempotent.
    async fn release(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
    ) -> Result<bool, LedgerError>;

    /// The live leases of a license with their expiry, in no particular
    /// order. Lapsed leases are never returned.
    async fn live_leases(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, LedgerError>;
}
