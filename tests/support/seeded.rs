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
    BeatOutcome, Freed, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, Place, SeatLedger,
    SeedLease, Throttle, TicketPoll,
};

/// `n` handles on one in-process ledger: several callers of one process.
pub async fn memory_nodes(n: usize) -> Vec<Arc<dyn SeatLedger>> {
    let ledger: Arc<dyn SeatLedger> = Arc::new(seatwarden::ledger::memory::MemoryLedger::new());
    vec![ledger; n]
}

/// `n` separate connections to the test Redis: several server nodes.
pub async fn redis_nodes(n: usize) -> Vec<Arc<dyn SeatLedger>> {
    nodes_on(
        &seatwarden::redis_link::RedisTarget::Single(super::services::redis_url()),
        n,
    )
    .await
}

/// `n` separate connections to the test Redis Cluster: several server
/// nodes, each organization's keys on whichever master owns its slot.
pub async fn cluster_nodes(n: usize) -> Vec<Arc<dyn SeatLedger>> {
    nodes_on(&super::services::redis_cluster(), n).await
}

async fn nodes_on(
    target: &seatwarden::redis_link::RedisTarget,
    n: usize,
) -> Vec<Arc<dyn SeatLedger>> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let ledger = seatwarden::ledger::redis::RedisLedger::open(target, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("connect to the test {target:?}: {e}"));
        nodes.push(Seeded::wrap(Arc::new(ledger)));
    }
    nodes
}

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
    ) -> Result<Freed, LedgerError> {
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
