//! The per-organization actor.
//!
//! One `OrgActor` per organization and node serializes that organization's
//! license operations on this node, caches its licenses, and keeps the
//! durable session records in step with the seat ledger. Cross-node
//! atomicity is the ledger's job; the actor's job is that, on this node,
//! no two operations of one organization interleave, so the store and the
//! ledger never disagree because of a race between two local requests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::coordinator::{Acquired, Beat, CoordinatorSettings, Released};
use crate::domain::{
    AuditEntry, AuditEvent, ClientInfo, EndReason, License, LicenseId, LicenseStatus, OrgId,
    SessionId, SessionRecord,
};
use crate::error::CoordinatorError;
use crate::metrics as m;
use crate::ports::{EndOutcome, LeaseGrant, LeaseRequest, SeatLedger, Store};

/// A request for a seat, routed to the license's organization.
#[derive(Clone, Debug)]
pub struct AcquireCommand {
    pub license_id: LicenseId,
    pub hardware_id: String,
    pub client: ClientInfo,
    pub metadata: Option<serde_json::Value>,
}

pub enum OrgMessage {
    Acquire(
        AcquireCommand,
        RpcReplyPort<Result<Acquired, CoordinatorError>>,
    ),
    Heartbeat(SessionId, RpcReplyPort<Result<Beat, CoordinatorError>>),
    Release(
        SessionId,
        ClientInfo,
        RpcReplyPort<Result<Released, CoordinatorError>>,
    ),
    /// Periodic housekeeping: flush batched heartbeats, close the records
    /// of lapsed leases, refresh gauges, and stop when idle.
    Tick,
    /// Test-only fault hook: panics inside the handler, as a bug would.
    /// Ignored unless `CoordinatorSettings::fault_hooks` is set.
    InjectPanic,
}

/// Everything an `OrgActor` needs, passed in by its supervisor. Kept so the
/// supervisor can restart the actor with the same arguments.
#[derive(Clone)]
pub struct OrgArguments {
    pub org_id: OrgId,
    pub store: Arc<dyn Store>,
    pub ledger: Arc<dyn SeatLedger>,
    pub settings: Arc<CoordinatorSettings>,
}

pub struct OrgActor;

/// How far node clocks may drift from the ledger's clock before a lease that
/// is missing from the ledger is taken to have lapsed rather than to be
/// released by another node.
const CLOCK_SKEW_ALLOWANCE: chrono::TimeDelta = chrono::TimeDelta::milliseconds(500);

pub struct OrgState {
    org_id: OrgId,
    store: Arc<dyn Store>,
    ledger: Arc<dyn SeatLedger>,
    settings: Arc<CoordinatorSettings>,
    /// Licenses of this organization, with when they were loaded.
    licenses: HashMap<LicenseId, (License, Instant)>,
    /// Open sessions this node has seen, by id, as last read from the
    /// store. Shared, so that a lookup on the heartbeat path costs no copy
    /// of the record; newer lease expiries live in `pending_beats`.
    sessions: HashMap<SessionId, Arc<SessionRecord>>,
    /// Heartbeats not yet written to the store: `(at, lease_expires_at)`.
    pending_beats: HashMap<SessionId, (DateTime<Utc>, DateTime<Utc>)>,
    last_request: Instant,
    ticker: Option<JoinHandle<()>>,
}

impl Actor for OrgActor {
    type Msg = OrgMessage;
    type State = OrgState;
    type Arguments = OrgArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = OrgState {
            org_id: args.org_id,
            store: args.store,
            ledger: args.ledger,
            settings: args.settings,
            licenses: HashMap::new(),
            sessions: HashMap::new(),
            pending_beats: HashMap::new(),
            last_request: Instant::now(),
            ticker: None,
        };
        // Rebuild from the store and the ledger. A failure here must not
        // stop the actor from starting (pre_start errors produce no
        // supervision event): requests report the outage themselves, and the
        // next tick tries again.
        if let Err(e) = state.sweep().await {
            tracing::warn!(org_id = %state.org_id, error = %e, "could not rebuild org state at start");
        }
        // Timers belong to one incarnation: a restarted actor makes its own.
        state.ticker =
            Some(myself.send_interval(state.settings.sweep_interval, || OrgMessage::Tick));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Not called after a panic: batched heartbeats are then lost, which
        // only delays `last_heartbeat_at`; the ledger holds the real lease.
        state.flush_beats().await;
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrgMessage::Acquire(cmd, reply) => {
                state.last_request = Instant::now();
                let _ = reply.send(state.acquire(cmd).await);
            }
            OrgMessage::Heartbeat(id, reply) => {
                state.last_request = Instant::now();
                let _ = reply.send(state.heartbeat(id).await);
            }
            OrgMessage::Release(id, client, reply) => {
                state.last_request = Instant::now();
                let _ = reply.send(state.release(id, client).await);
            }
            OrgMessage::Tick => match state.sweep().await {
                Ok(open) => {
                    let idle = state.last_request.elapsed() >= state.settings.org_idle_timeout;
                    if open == 0 && idle {
                        tracing::debug!(org_id = %state.org_id, "org actor idle, stopping");
                        myself.stop(Some("idle".into()));
                    }
                }
                Err(e) => {
                    tracing::warn!(org_id = %state.org_id, error = %e, "org sweep failed")
                }
            },
            OrgMessage::InjectPanic => {
                if state.settings.fault_hooks {
                    panic!("fault injected into org actor {}", state.org_id);
                }
                tracing::warn!("ignored a fault-injection request: fault hooks are disabled");
            }
        }
        Ok(())
    }
}

/// Why a license refuses new seats, if it does.
fn refusal(license: &License, now: DateTime<Utc>) -> Option<CoordinatorError> {
    match license.status {
        LicenseStatus::Suspended => return Some(CoordinatorError::LicenseSuspended),
        LicenseStatus::Inactive => return Some(CoordinatorError::LicenseInactive),
        LicenseStatus::Active => {}
    }
    match license.expires_at {
        Some(at) if at <= now => Some(CoordinatorError::LicenseExpired),
        _ => None,
    }
}

impl OrgState {
    /// The license, from the cache while it is fresh, else from the store.
    async fn license(&mut self, id: LicenseId) -> Result<License, CoordinatorError> {
        if let Some((license, loaded)) = self.licenses.get(&id)
            && loaded.elapsed() < self.settings.license_cache_ttl
        {
            return Ok(license.clone());
        }
        let license = self
            .store
            .license(id)
            .await?
            .filter(|l| l.org_id == self.org_id)
            .ok_or(CoordinatorError::LicenseNotFound)?;
        metrics::gauge!(m::SEAT_LIMIT, "org_id" => self.org_id.to_string(), "license_id" => id.to_string())
            .set(f64::from(license.seats));
        self.licenses.insert(id, (license.clone(), Instant::now()));
        Ok(license)
    }

    /// The session, from this node's cache of open sessions or the store.
    /// Sessions of other organizations are reported as unknown.
    async fn session(&mut self, id: SessionId) -> Result<Arc<SessionRecord>, CoordinatorError> {
        if let Some(s) = self.sessions.get(&id) {
            return Ok(s.clone());
        }
        let record = self
            .store
            .session(id)
            .await?
            .filter(|s| s.org_id == self.org_id)
            .map(Arc::new)
            .ok_or(CoordinatorError::SessionNotFound)?;
        if record.is_open() {
            self.sessions.insert(id, record.clone());
        }
        Ok(record)
    }

    fn audit(
        &self,
        event: AuditEvent,
        license: LicenseId,
        session: Option<SessionId>,
        hardware_id: &str,
        client: &ClientInfo,
        detail: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            at: Utc::now(),
            event,
            org_id: self.org_id,
            license_id: license,
            session_id: session,
            hardware_id: Some(hardware_id.to_owned()),
            client: client.clone(),
            detail: detail.map(str::to_owned),
        }
    }

    async fn acquire(&mut self, cmd: AcquireCommand) -> Result<Acquired, CoordinatorError> {
        let license = self.license(cmd.license_id).await?;
        let result = self.acquire_seat(&license, &cmd).await;
        if let Err(e) = &result
            && !matches!(
                e,
                CoordinatorError::LedgerUnavailable(_) | CoordinatorError::StoreUnavailable(_)
            )
        {
            let entry = self.audit(
                AuditEvent::LicenseAcquisitionFailed,
                license.id,
                None,
                &cmd.hardware_id,
                &cmd.client,
                Some(e.code()),
            );
            if let Err(err) = self.store.append_audit(&entry).await {
                tracing::warn!(error = %err, "could not write an acquisition-failure audit entry");
            }
        }
        result
    }

    async fn acquire_seat(
        &mut self,
        license: &License,
        cmd: &AcquireCommand,
    ) -> Result<Acquired, CoordinatorError> {
        if let Some(refused) = refusal(license, Utc::now()) {
            return Err(refused);
        }
        // Two rounds at most: the second only after discarding a lease that
        // the ledger holds but the store does not know as open.
        for _ in 0..2 {
            let request = LeaseRequest {
                org: self.org_id,
                license: license.id,
                session: SessionId::new(),
                hardware_id: cmd.hardware_id.clone(),
                max_seats: license.seats,
                ttl: self.settings.lease_ttl,
            };
            match self.ledger.acquire(&request).await? {
                LeaseGrant::Granted {
                    expires_at,
                    seats_used,
                } => {
                    let now = Utc::now();
                    let record = SessionRecord {
                        id: request.session,
                        license_id: license.id,
                        org_id: self.org_id,
                        hardware_id: cmd.hardware_id.clone(),
                        started_at: now,
                        last_heartbeat_at: now,
                        lease_expires_at: expires_at,
                        ended_at: None,
                        end_reason: None,
                        client: cmd.client.clone(),
                        metadata: cmd.metadata.clone(),
                    };
                    let entry = self.audit(
                        AuditEvent::LicenseAcquired,
                        license.id,
                        Some(record.id),
                        &cmd.hardware_id,
                        &cmd.client,
                        None,
                    );
                    if let Err(e) = self.store.start_session(&record, &entry).await {
                        // Nothing half done: give the seat back before failing.
                        if let Err(le) = self
                            .ledger
                            .release(self.org_id, license.id, record.id)
                            .await
                        {
                            tracing::error!(error = %le, session_id = %record.id,
                                "could not roll back a lease after a store failure; it will lapse by itself");
                        }
                        return Err(e.into());
                    }
                    self.sessions.insert(record.id, Arc::new(record.clone()));
                    self.set_seats_in_use(license.id, seats_used);
                    return Ok(Acquired {
                        created: true,
                        session: record,
                        license: license.clone(),
                        seats_used,
                    });
                }
                LeaseGrant::Renewed {
                    session,
                    expires_at,
                    seats_used,
                } => match self.session(session).await {
                    Ok(record) if record.is_open() => {
                        let now = Utc::now();
                        let mut record = SessionRecord::clone(&record);
                        record.last_heartbeat_at = now;
                        record.lease_expires_at = expires_at;
                        self.pending_beats.insert(session, (now, expires_at));
                        self.set_seats_in_use(license.id, seats_used);
                        return Ok(Acquired {
                            created: false,
                            session: record,
                            license: license.clone(),
                            seats_used,
                        });
                    }
                    Ok(_) | Err(CoordinatorError::SessionNotFound) => {
                        tracing::warn!(session_id = %session,
                            "ledger held a lease with no open session record; discarding it");
                        self.ledger
                            .release(self.org_id, license.id, session)
                            .await?;
                    }
                    Err(e) => return Err(e),
                },
                LeaseGrant::Full { seats_used } => {
                    self.set_seats_in_use(license.id, seats_used);
                    return Err(CoordinatorError::NoSeatsAvailable {
                        seats_used,
                        max_seats: license.seats,
                    });
                }
            }
        }
        Err(CoordinatorError::Busy(
            "the seat ledger and the store disagree; retry".into(),
        ))
    }

    async fn heartbeat(&mut self, id: SessionId) -> Result<Beat, CoordinatorError> {
        let record = self.session(id).await?;
        if let Some(reason) = record.end_reason {
            return Err(ended_error(reason));
        }
        match self
            .ledger
            .heartbeat(self.org_id, record.license_id, id, self.settings.lease_ttl)
            .await?
        {
            Some(expires_at) => {
                self.pending_beats.insert(id, (Utc::now(), expires_at));
                Ok(Beat {
                    session_id: id,
                    expires_at,
                })
            }
            None if self.has_lapsed(&record) => {
                self.close_lapsed(&record).await?;
                Err(CoordinatorError::SessionExpired)
            }
            None => {
                // Gone from the ledger before its known expiry: another node
                // is releasing or revoking it right now and will close the
                // record with the true reason.
                self.sessions.remove(&id);
                Err(CoordinatorError::SessionExpired)
            }
        }
    }

    async fn release(
        &mut self,
        id: SessionId,
        client: ClientInfo,
    ) -> Result<Released, CoordinatorError> {
        let record = self.session(id).await?;
        if let Some((ended_at, reason)) = record.end() {
            return Ok(Released {
                session_id: id,
                ended_at,
                reason,
            });
        }
        let was_live = self
            .ledger
            .release(self.org_id, record.license_id, id)
            .await?;
        // Not live and not lapsed means another node released it a moment
        // ago; both of us closing it as released is then the truth.
        let outcome = if was_live || !self.has_lapsed(&record) {
            let entry = self.audit(
                AuditEvent::LicenseReleased,
                record.license_id,
                Some(id),
                &record.hardware_id,
                &client,
                None,
            );
            self.store
                .end_session(id, Utc::now(), EndReason::Released, &entry)
                .await?
        } else {
            self.close_lapsed(&record).await?
        };
        self.sessions.remove(&id);
        self.pending_beats.remove(&id);
        let (ended_at, reason) = outcome
            .and_then(|o| o.record().end())
            .ok_or(CoordinatorError::SessionNotFound)?;
        Ok(Released {
            session_id: id,
            ended_at,
            reason,
        })
    }

    /// Closes the record of a session whose lease has lapsed. The end time
    /// is when the lease ran out, as far as this node knows, not when the
    /// lapse was noticed.
    async fn close_lapsed(
        &mut self,
        record: &SessionRecord,
    ) -> Result<Option<EndOutcome>, CoordinatorError> {
        let ended_at = self.known_expiry(record).min(Utc::now());
        let entry = self.audit(
            AuditEvent::SessionExpired,
            record.license_id,
            Some(record.id),
            &record.hardware_id,
            &record.client,
            None,
        );
        let outcome = self
            .store
            .end_session(record.id, ended_at, EndReason::Expired, &entry)
            .await?;
        if let Some(EndOutcome::Ended(_)) = &outcome {
            metrics::counter!(m::SESSIONS_EXPIRED).increment(1);
            tracing::info!(session_id = %record.id, license_id = %record.license_id, "session expired");
        }
        self.sessions.remove(&record.id);
        self.pending_beats.remove(&record.id);
        Ok(outcome)
    }

    /// The latest lease expiry this node knows of: the store's, or a newer
    /// one from a heartbeat not yet flushed. The ledger's own expiry is never
    /// earlier than this.
    fn known_expiry(&self, record: &SessionRecord) -> DateTime<Utc> {
        self.pending_beats
            .get(&record.id)
            .map_or(record.lease_expires_at, |(_, exp)| *exp)
            .max(record.lease_expires_at)
    }

    /// Whether the lease has run out by this node's clock, allowing for
    /// skew against the ledger's clock. A session missing from the ledger
    /// that has *not* lapsed was released or revoked by another node, which
    /// closes its record with the true reason.
    fn has_lapsed(&self, record: &SessionRecord) -> bool {
        self.known_expiry(record) + CLOCK_SKEW_ALLOWANCE <= Utc::now()
    }

    /// Writes batched heartbeats. On failure they are kept for the next try.
    async fn flush_beats(&mut self) {
        if self.pending_beats.is_empty() {
            return;
        }
        let beats: Vec<_> = self
            .pending_beats
            .iter()
            .map(|(id, (at, exp))| (*id, *at, *exp))
            .collect();
        match self.store.record_heartbeats(&beats).await {
            Ok(()) => self.pending_beats.clear(),
            Err(e) => tracing::warn!(error = %e, "could not write batched heartbeats"),
        }
    }

    /// Brings the store in line with the ledger: closes the records of
    /// sessions whose lease has lapsed (on any node), refreshes the open
    /// session cache and the seat gauges. Returns the number of open
    /// sessions left.
    async fn sweep(&mut self) -> Result<usize, CoordinatorError> {
        self.flush_beats().await;
        // The cache is rebuilt from the store, which now holds the flushed
        // expiries; should the read fail, lookups fall back to the store.
        self.sessions.clear();
        let open = self.store.open_sessions(self.org_id).await?;
        let licenses: HashSet<LicenseId> = open
            .iter()
            .map(|s| s.license_id)
            .chain(self.licenses.keys().copied())
            .collect();
        let mut live: HashSet<SessionId> = HashSet::new();
        for license in licenses {
            let leases = self.ledger.live_leases(self.org_id, license).await?;
            self.set_seats_in_use(license, leases.len() as u32);
            live.extend(leases.into_iter().map(|(id, _)| id));
        }
        let mut still_open = 0;
        for record in open {
            if live.contains(&record.id) {
                self.sessions.insert(record.id, Arc::new(record));
                still_open += 1;
            } else if self.has_lapsed(&record) {
                self.close_lapsed(&record).await?;
            } else {
                // Being released elsewhere right now; look again next tick.
                still_open += 1;
            }
        }
        Ok(still_open)
    }

    fn set_seats_in_use(&self, license: LicenseId, used: u32) {
        metrics::gauge!(m::SEATS_IN_USE, "org_id" => self.org_id.to_string(), "license_id" => license.to_string())
            .set(f64::from(used));
    }
}

fn ended_error(reason: EndReason) -> CoordinatorError {
    match reason {
        EndReason::Expired => CoordinatorError::SessionExpired,
        other => CoordinatorError::SessionEnded(other),
    }
}
