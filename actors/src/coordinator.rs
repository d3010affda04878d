//! The coordinator's public face: a cheap, cloneable handle that runs each
//! license operation.
//!
//! The hot paths (acquire, heartbeat, release) run in the caller's task and
//! make one atomic ledger call each; they never wait in an organization's
//! mailbox behind another request's network round trip. The organization's
//! actor owns what is cached and batched on this node (licenses, pending
//! heartbeats, failure audits) and hears of outcomes through casts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, MessagingErr, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::domain::{
    ActionAudit, AuditEntry, AuditEvent, Caller, ClientInfo, EndReason, License, LicenseId,
    LicenseKey, OrgId, SessionId, SessionRecord, TicketId,
};
use crate::error::CoordinatorError;
use crate::mailer::MailerArguments;
use crate::messages::{
    Acquired, Admission, Beat, MailerMessage, OrgMessage, OrgSupervisorMessage, Queued, Released,
    RootMessage, SeatRequest, SessionRef, WebhookMessage,
};
use crate::names::Names;
use crate::org_supervisor::OrgSupervisorArguments;
use crate::ports::{
    BeatOutcome, DeadlineHandler, DeadlineStore, EndOutcome, LeaseGrant, LeaseRequest,
    LicenseStore, LineRequest, MachineStore, MailSender, Outbox, SeatLedger, SeedLease,
    SessionStore, StoreError, Throttle, TicketPoll, WebhookEventStore, WebhookProcessor,
};
use crate::renewals::RenewalArguments;
use crate::root::{RootArguments, RootSupervisor, Subsystem, SupervisionArguments};
use crate::settings::CoordinatorSettings;
use crate::supervision::{SubsystemBoard, SubsystemInfo};
use crate::sweeper::{self, SweepReport, SweeperArguments};
use crate::watcher::WatcherArguments;
use crate::webhooks::WebhookArguments;

/// Bound on each key cache, so keys sprayed by a client can't grow it
/// without limit; it is simply cleared when full.
const KEY_CACHE_LIMIT: usize = 100_000;

/// A license key resolved to its license and organization. The mapping
/// never changes, so it is cached for the life of the process.
#[derive(Clone, Copy)]
struct KeyTarget {
    license: LicenseId,
    org: OrgId,
}

/// Known keys forever, unknown keys for a short while: a flood of bad keys
/// then costs no database read each.
#[derive(Default)]
struct KeyCache {
    known: HashMap<String, KeyTarget>,
    unknown: HashMap<String, Instant>,
}

/// The ports the coordinator is built on.
#[derive(Clone)]
pub struct Ports {
    pub licenses: Arc<dyn LicenseStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub ledger: Arc<dyn SeatLedger>,
    /// Email waiting to be sent, and its delivery record.
    pub outbox: Arc<dyn Outbox>,
    /// The mail transport.
    pub mail: Arc<dyn MailSender>,
    /// Read on acquire only for licenses with `max_machines`.
    pub machines: Arc<dyn MachineStore>,
    /// The inbox of webhook events, and what applies them.
    pub webhook_events: Arc<dyn WebhookEventStore>,
    pub webhook_processor: Arc<dyn WebhookProcessor>,
    /// The billing deadlines, and what firing one does.
    pub deadlines: Arc<dyn DeadlineStore>,
    pub deadline_handler: Arc<dyn DeadlineHandler>,
}

/// Handle to a running coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    names: Names,
    ports: Ports,
    settings: Arc<CoordinatorSettings>,
    root: ActorRef<RootMessage>,
    /// The root's status board of its subsystems, read without asking it.
    subsystems: SubsystemBoard,
    keys: Mutex<KeyCache>,
    /// Running organization actors, so that the hot paths find theirs
    /// without formatting a registry name. Entries of stopped actors are
    /// dropped when met.
    actors: Mutex<HashMap<OrgId, ActorRef<OrgMessage>>>,
}

impl Coordinator {
    /// Starts the supervision tree.
    pub async fn start(
        ports: Ports,
        settings: CoordinatorSettings,
    ) -> Result<(Self, JoinHandle<()>), CoordinatorError> {
        crate::metrics::describe();
        let names = Names::new();
        let settings = Arc::new(settings);
        let subsystems = SubsystemBoard::default();
        let args = RootArguments {
            supervision: SupervisionArguments {
                policy: settings.restart_policy,
                board: subsystems.clone(),
                fault_hooks: settings.fault_hooks,
            },
            orgs: OrgSupervisorArguments {
                names: names.clone(),
                licenses: ports.licenses.clone(),
                sessions: ports.sessions.clone(),
                settings: settings.clone(),
            },
            sweeper: SweeperArguments {
                sessions: ports.sessions.clone(),
                ledger: ports.ledger.clone(),
                settings: settings.clone(),
            },
            watcher: WatcherArguments {
                names: names.clone(),
                licenses: ports.licenses.clone(),
                sessions: ports.sessions.clone(),
                ledger: ports.ledger.clone(),
                settings: settings.clone(),
            },
            mailer: MailerArguments {
                outbox: ports.outbox.clone(),
                sender: ports.mail.clone(),
                settings: Arc::new(settings.mailer.clone()),
            },
            webhooks: WebhookArguments {
                store: ports.webhook_events.clone(),
                processor: ports.webhook_processor.clone(),
                settings: Arc::new(settings.webhooks.clone()),
            },
            renewals: RenewalArguments {
                store: ports.deadlines.clone(),
                handler: ports.deadline_handler.clone(),
                settings: Arc::new(settings.renewals.clone()),
            },
        };
        let (root, handle) = Actor::spawn(Some(names.root()), RootSupervisor, args)
            .await
            .map_err(|e| CoordinatorError::Busy(format!("could not start the coordinator: {e}")))?;
        let inner = Inner {
            names,
            ports,
            settings,
            root,
            subsystems,
            keys: Mutex::new(KeyCache::default()),
            actors: Mutex::new(HashMap::new()),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            handle,
        ))
    }

    pub fn settings(&self) -> &CoordinatorSettings {
        &self.inner.settings
    }

    /// Checks out a seat for `hardware_id` on the license whose key is given.
    ///
    /// One ledger call decides; a new session then costs one atomic store
    /// write (record and audit entry together). Should that write fail, the
    /// seat is given back before the error is returned: nothing half done.
    pub async fn acquire(
        &self,
        license_key: &str,
        hardware_id: String,
        client: ClientInfo,
        metadata: Option<serde_json::Value>,
    ) -> Result<Acquired, CoordinatorError> {
        self.acquire_as(
            license_key,
            hardware_id,
            client,
            metadata,
            &Caller::Anonymous,
        )
        .await
    }

    /// [`Coordinator::acquire`] on behalf of `caller`, which licenses with
    /// `requires_user` check (see [`Caller`]).
    ///
    /// Licenses without `max_machines` or `requires_user` pay nothing for
    /// either: both are fields of the cached license. A license with
    /// `max_machines` costs one index probe of the machines table.
    pub async fn acquire_as(
        &self,
        license_key: &str,
        hardware_id: String,
        client: ClientInfo,
        metadata: Option<serde_json::Value>,
        caller: &Caller,
    ) -> Result<Acquired, CoordinatorError> {
        let plain = SeatRequest::default();
        match self
            .request_seat(license_key, hardware_id, client, metadata, caller, &plain)
            .await?
        {
            Admission::Seat(acquired) => Ok(acquired),
            Admission::Queued(_) => Err(CoordinatorError::Internal(
                "a request that does not wait was queued".into(),
            )),
        }
    }

    /// A seat as `request` asks for it: a plain acquire, a borrow, a wait
    /// in the license's line, or a claim with a ticket from it. Checks as
    /// [`Coordinator::acquire_as`] does, then one ledger call decides.
    pub async fn request_seat(
        &self,
        license_key: &str,
        hardware_id: String,
        client: ClientInfo,
        metadata: Option<serde_json::Value>,
        caller: &Caller,
        request: &SeatRequest,
    ) -> Result<Admission, CoordinatorError> {
        let target = self.resolve_key(license_key).await?;
        let license = self.license(target.org, target.license).await?;
        // A license that grants no seats (suspended, expired) is refused as
        // such before its own checks: they would only hide why.
        let result = match license.refusal(Utc::now()) {
            Some(refused) => Err(refused.into()),
            None => match self.admit(&license, &hardware_id, caller, request).await {
                Ok(()) => {
                    self.acquire_seat(
                        &license,
                        hardware_id.clone(),
                        &client,
                        metadata,
                        caller,
                        request,
                    )
                    .await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = &result
            && !e.is_outage()
            && !matches!(e, CoordinatorError::Internal(_))
        {
            let entry = AuditEntry {
                at: Utc::now(),
                event: AuditEvent::LicenseAcquisitionFailed,
                org_id: license.org_id,
                license_id: license.id,
                session_id: None,
                hardware_id: Some(hardware_id),
                client,
                detail: Some(e.code().to_owned()),
                actor_id: caller.actor_id(),
            };
            self.cast(license.org_id, OrgMessage::AcquireFailed(entry))
                .await;
        }
        result
    }

    /// The checks a license that grants seats adds before one: its
    /// borrowing policy, its identity requirement and its machine
    /// activations.
    async fn admit(
        &self,
        license: &License,
        hardware_id: &str,
        caller: &Caller,
        request: &SeatRequest,
    ) -> Result<(), CoordinatorError> {
        if let Some(borrow) = request.borrow {
            let max_hours = license.max_borrow_hours;
            if max_hours == 0 {
                return Err(CoordinatorError::BorrowingDisabled);
            }
            if borrow > Duration::from_secs(u64::from(max_hours) * 3600) {
                return Err(CoordinatorError::BorrowTooLong { max_hours });
            }
        }
        if license.requires_user {
            match caller {
                Caller::Anonymous => return Err(CoordinatorError::IdentityRequired),
                Caller::Invalid => return Err(CoordinatorError::IdentityInvalid),
                Caller::Authenticated { orgs, .. } if !orgs.contains(&license.org_id) => {
                    return Err(CoordinatorError::IdentityForbidden);
                }
                Caller::Authenticated { .. } => {}
            }
        }
        if license.max_machines.is_some()
            && !self
                .inner
                .ports
                .machines
                .machine_activated(license.id, hardware_id)
                .await?
        {
            return Err(CoordinatorError::MachineNotActivated);
        }
        Ok(())
    }

    /// The license a key names, through the caches acquire uses: a known
    /// key costs no database read, an unknown one is remembered as unknown
    /// for a while.
    pub async fn license_for_key(
        &self,
        license_key: &str,
    ) -> Result<Arc<License>, CoordinatorError> {
        let target = self.resolve_key(license_key).await?;
        self.license(target.org, target.license).await
    }

    /// The seat itself, for a license that grants seats ([`acquire_as`]
    /// checked its refusal): one ledger call, then one store write.
    ///
    /// [`acquire_as`]: Coordinator::acquire_as
    async fn acquire_seat(
        &self,
        license: &Arc<License>,
        hardware_id: String,
        client: &ClientInfo,
        metadata: Option<serde_json::Value>,
        caller: &Caller,
        seat: &SeatRequest,
    ) -> Result<Admission, CoordinatorError> {
        let now = Utc::now();
        let settings = &self.inner.settings;
        let request = LeaseRequest {
            org: license.org_id,
            license: license.id,
            session: SessionId::new(),
            hardware_id,
            max_seats: license.seats,
            ttl: seat.borrow.unwrap_or(settings.lease_ttl),
            grace: license.offline_grace(settings.offline_grace),
            overdraft: license.offline_overdraft,
            line: LineRequest {
                rules: settings.line,
                join: seat.wait.then(TicketId::new),
                claim: seat.ticket,
            },
        };
        let ledger = &self.inner.ports.ledger;
        let grant = match ledger.acquire(&request).await? {
            LeaseGrant::Unseeded => {
                self.seed_license(license.org_id, license.id).await?;
                ledger.acquire(&request).await?
            }
            grant => grant,
        };
        // The record of the session the caller is told about, and its
        // LICENSE_ACQUIRED entry: a new one, or one adopted (`detail`).
        let opening = |id: SessionId,
                       expires_at: DateTime<Utc>,
                       metadata: Option<serde_json::Value>,
                       detail: Option<&str>| {
            let record = SessionRecord {
                id,
                license_id: license.id,
                org_id: license.org_id,
                hardware_id: request.hardware_id.clone(),
                started_at: now,
                last_heartbeat_at: now,
                lease_expires_at: expires_at,
                ended_at: None,
                end_reason: None,
                client: client.clone(),
                metadata,
                borrowed_until: seat.borrow.map(|_| expires_at),
            };
            let entry = AuditEntry {
                at: now,
                event: AuditEvent::LicenseAcquired,
                org_id: license.org_id,
                license_id: license.id,
                session_id: Some(id),
                hardware_id: Some(request.hardware_id.clone()),
                client: client.clone(),
                detail: detail.map(str::to_owned),
                actor_id: caller.actor_id(),
            };
            (record, entry)
        };
        match grant {
            LeaseGrant::Unseeded => Err(unseedable()),
            LeaseGrant::Granted {
                expires_at,
                seats_used,
                graced,
                waited,
                queued,
            } => {
                crate::metrics::seat_gauges(
                    license.org_id,
                    license.id,
                    seats_used,
                    graced,
                    Some(queued),
                );
                if let Some(waited) = waited {
                    metrics::histogram!(crate::metrics::QUEUE_WAIT).record(waited.as_secs_f64());
                }
                let (record, entry) = opening(request.session, expires_at, metadata, None);
                let started = match self
                    .inner
                    .ports
                    .sessions
                    .start_session(&record, &entry)
                    .await
                {
                    // The id is new, so only an adoption (a renewal of this
                    // lease on another node, see `adopt_session`) can have
                    // recorded it first: the record exists, as wanted.
                    Err(StoreError::Conflict(_)) => Ok(true),
                    started => started,
                };
                if !matches!(started, Ok(true)) {
                    // Nothing half done: the seat goes back before the answer.
                    match ledger.release(license.org_id, license.id, record.id).await {
                        Ok(freed) => {
                            crate::metrics::freed_gauges(license.org_id, license.id, freed)
                        }
                        Err(le) => tracing::error!(error = %le, session_id = %record.id,
                            "could not roll back a lease; it will lapse by itself"),
                    }
                }
                match started {
                    Ok(true) => {}
                    // This node's cache said active, the store says not: a
                    // change the license watcher has not delivered yet.
                    Ok(false) => return Err(self.refused_after_change(license).await),
                    Err(e) => return Err(e.into()),
                }
                Ok(Admission::Seat(Acquired {
                    created: true,
                    session_id: record.id,
                    hardware_id: record.hardware_id,
                    expires_at,
                    license: license.clone(),
                    seats_used,
                    borrowed_until: record.borrowed_until,
                }))
            }
            // The ledger is the truth for live seats: its session is
            // answered, and adopted into the store if no record of it
            // landed (a grant whose answer timed out, a node that died
            // before its write, or another node's write still in flight).
            LeaseGrant::Renewed {
                session,
                expires_at,
                seats_used,
                graced,
            } => {
                crate::metrics::seat_gauges(license.org_id, license.id, seats_used, graced, None);
                let (record, entry) = opening(session, expires_at, metadata, Some("adopted"));
                if !self
                    .inner
                    .ports
                    .sessions
                    .adopt_session(&record, &entry)
                    .await?
                {
                    return Err(self.refused_after_change(license).await);
                }
                // A borrow of a seat the machine held already: the ledger
                // moved its end out; the record says it is borrowed now.
                // Should this write fail, the answer is the error and a
                // retry writes it (the ledger never shortens the lease).
                if seat.borrow.is_some()
                    && !self
                        .inner
                        .ports
                        .sessions
                        .borrow_session(session, expires_at)
                        .await?
                {
                    // The ledger holds a lease whose record is not open: a
                    // store write of another node still in flight.
                    tracing::warn!(session_id = %session, "borrowed a seat whose record is not open");
                }
                self.cast(
                    license.org_id,
                    OrgMessage::Beat {
                        session,
                        at: now,
                        expires_at,
                    },
                )
                .await;
                Ok(Admission::Seat(Acquired {
                    created: false,
                    session_id: session,
                    hardware_id: request.hardware_id,
                    expires_at,
                    license: license.clone(),
                    seats_used,
                    borrowed_until: seat.borrow.map(|_| expires_at),
                }))
            }
            LeaseGrant::Queued(place) => {
                crate::metrics::queue_gauge(license.org_id, license.id, place.length);
                Ok(Admission::Queued(Queued {
                    license: license.clone(),
                    place,
                }))
            }
            LeaseGrant::NoTicket => Err(CoordinatorError::TicketNotFound),
            LeaseGrant::Full {
                seats_used,
                graced,
                queued,
            } => {
                crate::metrics::seat_gauges(
                    license.org_id,
                    license.id,
                    seats_used,
                    graced,
                    Some(queued),
                );
                // Graced sessions hold seats too (their tokens are valid),
                // so count them, up to the seats, as used: a 409 never says
                // fewer seats are used than there are.
                let held = (seats_used + graced).min(license.seats).max(seats_used);
                Err(CoordinatorError::NoSeatsAvailable {
                    seats_used: held,
                    max_seats: license.seats,
                })
            }
        }
    }

    /// Where a ticket stands in its license's line, renewing its patience
    /// (a poll). [`CoordinatorError::TicketNotFound`] once it has left the
    /// line; the license's refusal if it no longer grants seats.
    pub async fn poll_ticket(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<Queued, CoordinatorError> {
        let license = self.ticket_license(org, license).await?;
        if let Some(refused) = license.refusal(Utc::now()) {
            return Err(refused.into());
        }
        let settings = &self.inner.settings;
        let poll = TicketPoll {
            org: license.org_id,
            license: license.id,
            ticket,
            max_seats: license.seats,
            overdraft: license.offline_overdraft,
            grace: license.offline_grace(settings.offline_grace),
            rules: settings.line,
        };
        let place = self
            .inner
            .ports
            .ledger
            .poll_ticket(&poll)
            .await?
            .ok_or(CoordinatorError::TicketNotFound)?;
        crate::metrics::queue_gauge(license.org_id, license.id, place.length);
        Ok(Queued { license, place })
    }

    /// Takes a ticket out of its license's line. Returns whether it was in
    /// it; idempotent. [`CoordinatorError::TicketNotFound`] for a ticket
    /// of no license.
    pub async fn leave_line(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<bool, CoordinatorError> {
        let license = self.ticket_license(org, license).await?;
        Ok(self
            .inner
            .ports
            .ledger
            .leave_line(license.org_id, license.id, ticket)
            .await?)
    }

    /// Extends the lease of a session. Needs only the ledger: the store
    /// hears of the heartbeat in the organization's next batch, and is read
    /// only to say why a session that is no longer held is gone.
    pub async fn heartbeat(
        &self,
        session: &SessionRef,
        throttle: Option<Throttle>,
    ) -> Result<Beat, CoordinatorError> {
        let beat = || {
            self.inner.ports.ledger.heartbeat(
                session.org,
                session.license,
                session.session,
                self.inner.settings.lease_ttl,
                throttle,
            )
        };
        let outcome = match beat().await? {
            BeatOutcome::Unseeded => {
                self.seed_license(session.org, session.license).await?;
                beat().await?
            }
            outcome => outcome,
        };
        match outcome {
            BeatOutcome::Unseeded => Err(unseedable()),
            BeatOutcome::Extended(expires_at) => {
                self.cast(
                    session.org,
                    OrgMessage::Beat {
                        session: session.session,
                        at: Utc::now(),
                        expires_at,
                    },
                )
                .await;
                Ok(Beat {
                    session_id: session.session,
                    expires_at,
                })
            }
            BeatOutcome::Throttled { retry_after } => {
                Err(CoordinatorError::Throttled { retry_after })
            }
            BeatOutcome::Gone => Err(self.why_gone(session).await),
        }
    }

    /// The license a ticket names; a ticket of no license is no ticket.
    async fn ticket_license(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Arc<License>, CoordinatorError> {
        self.license(org, license).await.map_err(|e| match e {
            CoordinatorError::LicenseNotFound => CoordinatorError::TicketNotFound,
            other => other,
        })
    }

    /// Puts back a license's leases after the ledger lost them (see
    /// [`SeatLedger::seed`]): the store's open sessions of the license,
    /// with the lease ends last written, which trail the ledger's by at
    /// most one heartbeat flush. A live session whose heartbeats go on
    /// keeps its seat; a lapsed one not yet swept gets none.
    async fn seed_license(&self, org: OrgId, license: LicenseId) -> Result<(), CoordinatorError> {
        let policy = self.license(org, license).await?;
        let grace = policy.offline_grace(self.inner.settings.offline_grace);
        let leases: Vec<SeedLease> = self
            .inner
            .ports
            .sessions
            .open_sessions_of_license(license)
            .await?
            .into_iter()
            .map(|s| SeedLease {
                session: s.id,
                hardware_id: s.hardware_id,
                expires_at: s.lease_expires_at,
            })
            .collect();
        let open = leases.len();
        if let Some(put) = self
            .inner
            .ports
            .ledger
            .seed(org, license, grace, &leases)
            .await?
        {
            metrics::counter!(crate::metrics::LEDGER_SEEDS).increment(1);
            if put > 0 {
                tracing::warn!(license_id = %license, restored = put, open,
                    "the seat ledger had lost this license's leases; put them back from the store");
            }
        }
        Ok(())
    }

    /// Why a session the ledger no longer holds is gone, from its record.
    async fn why_gone(&self, session: &SessionRef) -> CoordinatorError {
        let record = match self.inner.ports.sessions.session(session.session).await {
            Ok(Some(r)) => r,
            Ok(None) => return CoordinatorError::SessionNotFound,
            Err(e) => return e.into(),
        };
        match record.end_reason {
            // Open: lapsed (the sweep closes it) or being released elsewhere.
            None | Some(EndReason::Expired) => CoordinatorError::SessionExpired,
            Some(EndReason::Released) => CoordinatorError::SessionEnded(EndReason::Released),
            // Revoked with the license's seats (a suspension) or alone (an
            // administrator's force-release): the license says which.
            Some(EndReason::Revoked) => match self.fresh_license(session.license).await {
                Ok(Some(license)) => match license.refusal(Utc::now()) {
                    Some(refusal) => refusal.into(),
                    None => CoordinatorError::SessionRevoked,
                },
                Ok(None) => CoordinatorError::SessionRevoked,
                Err(e) => e,
            },
        }
    }

    /// Ends a session. Idempotent: ending an ended session returns its
    /// original end.
    ///
    /// The record is ended first, then the seat given back: with the store
    /// down nothing changes (503), and with the ledger down the session is
    /// recorded as released and a retry frees the seat (an unreleased seat
    /// would lapse by itself anyway). Never the other way round, which could
    /// free a seat whose record stays open.
    pub async fn release(
        &self,
        session: &SessionRef,
        client: ClientInfo,
    ) -> Result<Released, CoordinatorError> {
        let now = Utc::now();
        let entry = AuditEntry {
            at: now,
            event: AuditEvent::LicenseReleased,
            org_id: session.org,
            license_id: session.license,
            session_id: Some(session.session),
            hardware_id: Some(session.hardware_id.clone()),
            client,
            detail: None,
            actor_id: None,
        };
        let outcome = self
            .inner
            .ports
            .sessions
            .end_session(session.session, now, EndReason::Released, &entry)
            .await?
            .ok_or(CoordinatorError::SessionNotFound)?;
        let freed = self
            .inner
            .ports
            .ledger
            .release(session.org, session.license, session.session)
            .await?;
        crate::metrics::freed_gauges(session.org, session.license, freed);
        let (ended_at, reason) = outcome
            .record()
            .end()
            .ok_or_else(|| CoordinatorError::Internal("an ended session has no end".into()))?;
        Ok(Released {
            session_id: session.session,
            ended_at,
            reason,
        })
    }

    /// Takes a seat back on an administrator's behalf (force-release):
    /// ends the session's record as `revoked` with `audit` (its
    /// `SESSION_REVOKED` entry, naming the actor), then frees the seat in
    /// the ledger, which every node shares (Redis) or which is this single
    /// node's (in-process). The holder's next heartbeat gets
    /// [`CoordinatorError::SessionRevoked`].
    ///
    /// The same order as [`Coordinator::release`], for the same reasons:
    /// with the store down nothing changes; with the ledger down the record
    /// is ended and a retry (which finds it ended, and writes nothing)
    /// frees the seat. Idempotent: a session that had already ended is
    /// answered with its original end, and its seat freed all the same.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        audit: ActionAudit,
    ) -> Result<SessionRecord, CoordinatorError> {
        let outcome = self
            .inner
            .ports
            .sessions
            .revoke_session(id, audit.at, &audit)
            .await?
            .ok_or(CoordinatorError::SessionNotFound)?;
        let record = outcome.record().clone();
        let freed = self
            .inner
            .ports
            .ledger
            .release(record.org_id, record.license_id, record.id)
            .await?;
        crate::metrics::freed_gauges(record.org_id, record.license_id, freed);
        if matches!(outcome, EndOutcome::Ended(_)) {
            tracing::info!(session_id = %record.id, license_id = %record.license_id,
                actor = ?audit.actor_id, freed = freed.held, "session revoked by an administrator");
        }
        Ok(record)
    }

    /// The durable record of a session, if it exists.
    pub async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, CoordinatorError> {
        Ok(self.inner.ports.sessions.session(id).await?)
    }

    /// Runs one round of the cluster-wide sweep now, as the sweeper does
    /// every interval.
    pub async fn sweep_now(&self) -> Result<SweepReport, CoordinatorError> {
        sweeper::sweep(&SweeperArguments {
            sessions: self.inner.ports.sessions.clone(),
            ledger: self.inner.ports.ledger.clone(),
            settings: self.inner.settings.clone(),
        })
        .await
    }

    /// How many organization actors run on this node.
    pub async fn org_actor_count(&self) -> Result<usize, CoordinatorError> {
        let sup = self.org_supervisor()?;
        match sup
            .call(
                OrgSupervisorMessage::Count,
                Some(self.inner.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(n)) => Ok(n),
            _ => Err(CoordinatorError::Busy(
                "org supervisor did not answer".into(),
            )),
        }
    }

    /// The id of the organization's actor running on this node, if any. A
    /// restarted actor has a new id.
    pub fn org_actor_id(&self, org: OrgId) -> Option<ractor::ActorId> {
        self.running_org_actor(org).map(|a| a.get_id())
    }

    /// Whether an organization's actor is running on this node.
    pub fn org_actor_running(&self, org: OrgId) -> bool {
        self.org_actor_id(org).is_some()
    }

    /// Every subsystem of this node: name, status, start and restarts.
    /// Read from the root's board, never through its mailbox, so it
    /// answers at once even while the root restarts something.
    pub fn subsystems(&self) -> Vec<SubsystemInfo> {
        self.inner.subsystems.snapshot()
    }

    /// One subsystem's line of the board.
    pub fn subsystem(&self, which: Subsystem) -> Option<SubsystemInfo> {
        self.inner.subsystems.get(which.name())
    }

    /// Operator action: stops the subsystem's subtree and starts it afresh
    /// (a `down` one too, with a fresh restart budget); returns once it
    /// runs again. Live sessions survive: the ledger holds them.
    pub async fn restart_subsystem(&self, which: Subsystem) -> Result<(), CoordinatorError> {
        // The old subtree gets 10 s to stop and each actor up to 10 s more.
        let timeout = Duration::from_secs(60);
        match self
            .inner
            .root
            .call(|reply| RootMessage::Restart(which, reply), Some(timeout))
            .await
        {
            Ok(CallResult::Success(r)) => r.map_err(CoordinatorError::Busy),
            _ => Err(CoordinatorError::Busy(
                "root supervisor did not answer".into(),
            )),
        }
    }

    /// Test-only fault hook: while `failing`, the subsystem panics whenever
    /// it starts, so the root's restarts run into the policy's limit.
    /// Returns whether the hook is enabled (`fault_hooks`); when it is not,
    /// nothing happens.
    pub async fn set_subsystem_fault(&self, which: Subsystem, failing: bool) -> bool {
        matches!(
            self.inner
                .root
                .call(
                    |reply| RootMessage::InjectFault(which, failing, reply),
                    Some(Duration::from_secs(60)),
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }

    /// Tells this node's mailer that mail was just enqueued, so it goes out
    /// now rather than at the next poll. Call it after the transaction that
    /// wrote the mail committed. Never waits and never fails: when the
    /// mailer is not running (restarting), its next start or poll finds
    /// the mail anyway.
    pub fn kick_mailer(&self) {
        if let Some(mailer) = ActorRef::<MailerMessage>::where_is(self.inner.names.mailer()) {
            let _ = mailer.cast(MailerMessage::Kick);
        }
    }

    /// Tells this node's webhooks subsystem that an event was just
    /// recorded, so it is processed at once rather than at the next poll.
    /// Harmless when it is not running: its next start or poll finds the
    /// event.
    pub fn kick_webhooks(&self) {
        if let Some(w) = ActorRef::<WebhookMessage>::where_is(self.inner.names.webhooks()) {
            let _ = w.cast(WebhookMessage::Kick);
        }
    }

    /// The id of this node's running mailer, if any. A restarted mailer has
    /// a new id.
    pub fn mailer_id(&self) -> Option<ractor::ActorId> {
        ActorRef::<MailerMessage>::where_is(self.inner.names.mailer()).map(|a| a.get_id())
    }

    /// Test-only fault hook: makes the organization's actor panic, as a bug
    /// would. Does nothing unless `fault_hooks` is enabled.
    pub async fn inject_panic(&self, org: OrgId) -> Result<(), CoordinatorError> {
        let actor = self.org_actor(org).await?;
        actor
            .cast(OrgMessage::InjectPanic)
            .map_err(|e| CoordinatorError::Busy(e.to_string()))
    }

    /// Stops the supervision tree, flushing what the actors have batched,
    /// waiting at most `within` for it.
    pub async fn shutdown(&self, within: Duration) {
        if self
            .inner
            .root
            .stop_and_wait(Some("shutdown".into()), Some(within))
            .await
            .is_err()
        {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "the supervision tree did not stop in time"
            );
        }
    }

    async fn resolve_key(&self, license_key: &str) -> Result<KeyTarget, CoordinatorError> {
        let hash = LicenseKey::hash(license_key);
        {
            let mut keys = self.inner.keys.lock().expect("key cache poisoned");
            if let Some(t) = keys.known.get(&hash) {
                return Ok(*t);
            }
            match keys.unknown.get(&hash) {
                Some(seen) if seen.elapsed() < self.inner.settings.unknown_key_ttl => {
                    return Err(CoordinatorError::LicenseNotFound);
                }
                Some(_) => {
                    keys.unknown.remove(&hash);
                }
                None => {}
            }
        }
        let found = self.inner.ports.licenses.license_by_key_hash(&hash).await?;
        let mut keys = self.inner.keys.lock().expect("key cache poisoned");
        let Some(license) = found else {
            if keys.unknown.len() >= KEY_CACHE_LIMIT {
                keys.unknown.clear();
            }
            keys.unknown.insert(hash, Instant::now());
            return Err(CoordinatorError::LicenseNotFound);
        };
        let target = KeyTarget {
            license: license.id,
            org: license.org_id,
        };
        if keys.known.len() >= KEY_CACHE_LIMIT {
            keys.known.clear();
        }
        keys.known.insert(hash, target);
        Ok(target)
    }

    /// The license through its organization's cache.
    async fn license(&self, org: OrgId, id: LicenseId) -> Result<Arc<License>, CoordinatorError> {
        self.call(org, |reply| OrgMessage::License(id, reply)).await
    }

    /// Why a license this node cached as active refused a session in the
    /// store: drops the stale cache entry and reads the refusal afresh.
    async fn refused_after_change(&self, cached: &License) -> CoordinatorError {
        self.cast(cached.org_id, OrgMessage::Invalidate(cached.id))
            .await;
        match self.fresh_license(cached.id).await {
            Ok(Some(license)) => license.refusal(Utc::now()).map_or_else(
                || CoordinatorError::Busy("the license just changed; retry".into()),
                Into::into,
            ),
            Ok(None) => CoordinatorError::LicenseNotFound,
            Err(e) => e,
        }
    }

    /// The license as the store has it now, bypassing caches.
    async fn fresh_license(&self, id: LicenseId) -> Result<Option<License>, CoordinatorError> {
        Ok(self.inner.ports.licenses.license(id).await?)
    }

    fn org_supervisor(&self) -> Result<ActorRef<OrgSupervisorMessage>, CoordinatorError> {
        ActorRef::where_is(self.inner.names.orgs())
            .ok_or_else(|| CoordinatorError::Busy("org supervisor is restarting".into()))
    }

    fn running_org_actor(&self, org: OrgId) -> Option<ActorRef<OrgMessage>> {
        ActorRef::where_is(self.inner.names.org(org))
    }

    /// The organization's actor: from this handle's cache or the registry
    /// when it runs, else spawned through the organization supervisor.
    async fn org_actor(&self, org: OrgId) -> Result<ActorRef<OrgMessage>, CoordinatorError> {
        {
            let mut actors = self.inner.actors.lock().expect("actor cache poisoned");
            match actors.get(&org) {
                Some(actor) if actor.get_status() <= ractor::ActorStatus::Running => {
                    return Ok(actor.clone());
                }
                Some(_) => {
                    actors.remove(&org);
                }
                None => {}
            }
        }
        let actor = self.find_or_spawn_org_actor(org).await?;
        let mut actors = self.inner.actors.lock().expect("actor cache poisoned");
        if actors.len() >= KEY_CACHE_LIMIT {
            actors.clear();
        }
        actors.insert(org, actor.clone());
        Ok(actor)
    }

    async fn find_or_spawn_org_actor(
        &self,
        org: OrgId,
    ) -> Result<ActorRef<OrgMessage>, CoordinatorError> {
        if let Some(actor) = self.running_org_actor(org) {
            return Ok(actor);
        }
        let sup = self.org_supervisor()?;
        match sup
            .call(
                |reply| OrgSupervisorMessage::Get(org, reply),
                Some(self.inner.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(Ok(actor))) => Ok(actor),
            Ok(CallResult::Success(Err(e))) => Err(CoordinatorError::Busy(e)),
            _ => Err(CoordinatorError::Busy(
                "org supervisor did not answer".into(),
            )),
        }
    }

    /// Tells the organization's actor of an outcome, without waiting for
    /// it. A message lost to a restart costs only a delay: beats are
    /// re-sent by the next heartbeat, and the sweep reads expiries from the
    /// ledger.
    async fn cast(&self, org: OrgId, message: OrgMessage) {
        match self.org_actor(org).await {
            Ok(actor) => {
                if let Err(e) = actor.cast(message) {
                    tracing::debug!(%org, error = %e, "org actor was stopping; message dropped");
                }
            }
            // Only while the org subsystem restarts; debug, so a restart under
            // load does not flood the log.
            Err(e) => tracing::debug!(%org, error = %e, "no org actor; message dropped"),
        }
    }

    /// Sends a request to the organization's actor and waits for its answer.
    ///
    /// An actor that stops between lookup and delivery (idle, or restarting
    /// after a failure) never saw the message, so delivery is retried a few
    /// times. A request that was delivered is never re-sent.
    async fn call<T, F>(&self, org: OrgId, build: F) -> Result<T, CoordinatorError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<Result<T, CoordinatorError>>) -> OrgMessage,
    {
        const ATTEMPTS: usize = 5;
        let timeout = self.inner.settings.call_timeout;
        for attempt in 1..=ATTEMPTS {
            let actor = self.org_actor(org).await?;
            match actor.call(&build, Some(timeout)).await {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => {
                    return Err(CoordinatorError::Busy(
                        "the organization's actor did not answer in time".into(),
                    ));
                }
                // The actor died while handling the request.
                Ok(CallResult::SenderError) => {
                    return Err(CoordinatorError::Busy(
                        "the organization's actor failed; retry".into(),
                    ));
                }
                Err(MessagingErr::SendErr(_)) | Err(MessagingErr::ChannelClosed) => {
                    tracing::debug!(%org, attempt, "org actor was stopping; retrying delivery");
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(CoordinatorError::Busy(e.to_string())),
            }
        }
        Err(CoordinatorError::Busy(
            "the organization's actor kept stopping".into(),
        ))
    }
}

/// When a token issued now for a lease ending at `lease_expires_at` should
/// expire: the lease, plus the license's offline grace, plus the skew
/// allowance.
pub fn token_expiry(
    lease_expires_at: DateTime<Utc>,
    grace: Duration,
    skew: Duration,
) -> DateTime<Utc> {
    let extra = TimeDelta::from_std(grace + skew).unwrap_or(TimeDelta::days(365));
    lease_expires_at + extra
}

/// A license the ledger still reports unseeded right after a seed: it lost
/// its data again in between. Retried by the client like any outage.
fn unseedable() -> CoordinatorError {
    CoordinatorError::LedgerUnavailable("the seat ledger lost its data; retry".into())
}
