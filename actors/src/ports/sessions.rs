//! Session records and the audit log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{
    ActionAudit, AuditEntry, EndReason, LicenseId, OrgId, SessionId, SessionRecord,
};

/// What [`SessionStore::end_session`] did.
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

/// An open session whose lease, as far as the store knows, has run out: a
/// candidate for the cluster-wide sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepCandidate {
    pub id: SessionId,
    pub org_id: OrgId,
    pub license_id: LicenseId,
    pub hardware_id: String,
    pub lease_expires_at: DateTime<Utc>,
}

/// Durable session history: open and ended sessions, and the append-only
/// audit log.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a new open session and its `LICENSE_ACQUIRED` audit entry
    /// atomically (one statement or one transaction): either both are
    /// durable or neither is. Fails with `Conflict` on a duplicate id and
    /// `NotFound` for an unknown license.
    ///
    /// Writes nothing and returns `Ok(false)` when the license is not
    /// active, checked atomically against `LicenseStore::update_license`: a
    /// suspension either sees the new session (and ends it as revoked) or
    /// makes this write nothing. So no session is ever left open on a
    /// license that no longer grants seats, whatever a node's caches say.
    async fn start_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Makes sure a session the ledger holds a lease for has its record:
    /// inserts it with its `LICENSE_ACQUIRED` entry (atomically, as
    /// [`SessionStore::start_session`]) when its id is not recorded yet;
    /// otherwise leaves the record, open or ended, as it is and writes no
    /// audit entry. Returns `Ok(true)` when the record exists afterwards,
    /// and `Ok(false)`, writing nothing, when the license is not active
    /// (the same atomic check as `start_session`). `NotFound` for an
    /// unknown license.
    ///
    /// Why: a lease can reach the ledger without its record reaching the
    /// store, when the ledger call timed out after Redis had queued it, or
    /// the node died between the two. The machine's next acquire renews
    /// that lease; adopting it there means every seat a client was told
    /// about has a record that release, force-release and the sweep find.
    /// A concurrent `start_session` of the same id (the node that granted
    /// it, still writing) then fails with `Conflict`, which its caller
    /// takes as "recorded".
    async fn adopt_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// The session, open or ended, or `None`.
    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Records heartbeats: for each `(session, at, lease_expires_at)` sets
    /// `last_heartbeat_at` and `lease_expires_at`, but only on sessions that
    /// are still open and only forwards in time (an older write arriving
    /// late never moves a lease back). The sweep looks at a session again
    /// no earlier than its new lease expiry. Unknown ids are ignored.
    async fn record_heartbeats(
        &self,
        beats: &[(SessionId, DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<(), StoreError>;

    /// Ends an open session and appends `audit` atomically.
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

    /// Ends an open session as `revoked` on a person's behalf (an owner
    /// or admin taking the seat back) and appends `audit`, completed with
    /// the session's organization, license, id and hardware id, atomically.
    ///
    /// Same rules as [`SessionStore::end_session`]: the first caller gets
    /// `Ended`, later ones `AlreadyEnded` with the original end and nothing
    /// written; `Ok(None)` when the session is unknown.
    async fn revoke_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        audit: &ActionAudit,
    ) -> Result<Option<EndOutcome>, StoreError>;

    /// Claims up to `limit` open sessions whose sweep is due (`sweep_at`,
    /// which starts as the lease expiry, is at or before `now`) and pushes
    /// their `sweep_at` to `claim_until`, in one atomic step.
    ///
    /// Nodes sharing the store claim disjoint sets: a session claimed by one
    /// caller is not returned to another until `claim_until` passes, so a
    /// claimer that dies only delays the session's turn by one claim. Cost
    /// grows with the number of due sessions, not with the open ones.
    async fn claim_sweep(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SweepCandidate>, StoreError>;

    /// Sets when the sweep looks at each open session again.
    async fn reschedule_sweep(&self, at: &[(SessionId, DateTime<Utc>)]) -> Result<(), StoreError>;

    /// The open sessions of an organization, oldest first.
    async fn open_sessions(&self, org: OrgId) -> Result<Vec<SessionRecord>, StoreError>;

    /// The open sessions of one license, in no particular order (index
    /// `sessions_open_by_license`): what seeds a ledger that lost them.
    async fn open_sessions_of_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Organizations that have at least one open session.
    async fn orgs_with_open_sessions(&self) -> Result<Vec<OrgId>, StoreError>;

    /// All sessions of a license, open and ended, newest first.
    async fn sessions_for_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Marks an open session as a borrowed seat until `until`, moving its
    /// borrow's end, its lease expiry and the sweep's next look forward to
    /// `until` if they were earlier; never backward. Returns whether the session was open.
    async fn borrow_session(&self, id: SessionId, until: DateTime<Utc>)
    -> Result<bool, StoreError>;

    /// Open borrowed sessions whose borrow runs past `now`, counted per
    /// license: `(org, license, count)`, licenses with none left out.
    async fn borrowed_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, LicenseId, u32)>, StoreError>;

    /// Of `ids`, those whose sessions have ended; unknown and open ones are
    /// left out. One read whatever the number of ids.
    async fn ended_among(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError>;

    /// Appends one audit entry.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The audit entries of a license, in the order they were written.
    async fn audit_for_license(&self, license: LicenseId) -> Result<Vec<AuditEntry>, StoreError>;
}
