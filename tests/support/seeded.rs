//! A seat ledger that seeds each license it is asked about with no leases,
//! as the coordinator does for a license without open sessions: what the
//! ledger suites need to use fresh licenses on Redis, whose ledger refuses
//! to act on a license it was never seeded with (see `SeatLedger::seed`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId, TicketId};
use seatwarden_actors::ports::{
    BeatOutcome, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, Place, SeatLedger, SeedLease,
    Throttle, TicketPoll,
};

/// Wraps a ledger; every call passes through, and an `Unseeded` answer is
/// seeded (empty) and asked again.
pub struct Seeded(pub Arc<dyn SeatLedger>);

impl Seeded {
    pub fn wrap(ledger: Arc<dyn SeatLedger>) -> Arc<dyn SeatLedger> {
        Arc::new(Self(ledger))
    }
}

#[async_trait]
impl SeatLedger for Seeded {
    async fn ping(&self) -> Result<(), LedgerError> {
        self.0.ping().await
    }

    async fn acquire(&self, req: &LeaseRequest) -> Result<LeaseGrant, LedgerError> {
        match self.0.acquire(req).await? {
            LeaseGrant::Unseeded => {
                self.0.seed(req.org, req.license, req.grace, &[]).await?;
                self.0.acquire(req).await
            }
            grant => Ok(grant),
        }
    }

    async fn heartbeat(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
        ttl: Duration,
        throttle: Option<Throttle>,
    ) -> Result<BeatOutcome, LedgerError> {
        match self
            .0
            .heartbeat(org, license, session, ttl, throttle)
            .await?
        {
            BeatOutcome::Unseeded => {
                self.0.seed(org, license, Duration::ZERO, &[]).await?;
                self.0.heartbeat(org, license, session, ttl, throttle).await
            }
            outcome => Ok(outcome),
        }
    }

    async fn release(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
    ) -> Result<bool, LedgerError> {
        self.0.release(org, license, session).await
    }

    async fn live_leases(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, LedgerError> {
        self.0.live_leases(org, license).await
    }

    async fn lease_states(
        &self,
        org: OrgId,
        license: LicenseId,
        sessions: &[SessionId],
    ) -> Result<LeaseStates, LedgerError> {
        self.0.lease_states(org, license, sessions).await
    }

    async fn revoke_license(&self, org: OrgId, license: LicenseId) -> Result<u32, LedgerError> {
        self.0.revoke_license(org, license).await
    }

    async fn poll_ticket(&self, poll: &TicketPoll) -> Result<Option<Place>, LedgerError> {
        self.0.poll_ticket(poll).await
    }

    async fn leave_line(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<bool, LedgerError> {
        self.0.leave_line(org, license, ticket).await
    }

    async fn seed(
        &self,
        org: OrgId,
        license: LicenseId,
        grace: Duration,
        leases: &[SeedLease],
    ) -> Result<Option<u32>, LedgerError> {
        self.0.seed(org, license, grace, leases).await
    }
}
