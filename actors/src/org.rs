//! The per-organization actor.
//!
//! One `OrgActor` per organization and node owns that organization's state
//! on this node: its cached licenses, the heartbeats not yet written to the
//! store, and the rate bound on acquisition-failure audit entries.
//!
//! Its mailbox never waits on the seat ledger: cross-node atomicity is the
//! ledger's job, done by one atomic call from the request's own task, and
//! the actor only hears of the outcome (a cast). What the actor does await
//! is the store, on a cache miss and once per tick for a batch of
//! heartbeats; neither is on the steady-state path of a request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::domain::{AuditEntry, License, LicenseId, OrgId, SessionId};
use crate::error::CoordinatorError;
use crate::messages::OrgMessage;
use crate::metrics as m;
use crate::ports::{LicenseStore, SessionStore};
use crate::settings::CoordinatorSettings;

/// Everything an `OrgActor` needs, passed in by its supervisor. Kept so the
/// supervisor can restart the actor with the same arguments.
#[derive(Clone)]
pub struct OrgArguments {
    pub org_id: OrgId,
    pub licenses: Arc<dyn LicenseStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub settings: Arc<CoordinatorSettings>,
}

pub struct OrgActor;

pub struct OrgState {
    args: OrgArguments,
    /// Licenses of this organization, with when they were loaded. The
    /// license watcher invalidates entries the moment a change is seen.
    licenses: HashMap<LicenseId, (Arc<License>, Instant)>,
    /// Heartbeats not yet written to the store: `(at, lease_expires_at)`.
    pending_beats: HashMap<SessionId, (DateTime<Utc>, DateTime<Utc>)>,
    /// Acquisition-failure audit entries per license in the current minute.
    failure_audits: HashMap<LicenseId, FailureWindow>,
    last_request: Instant,
    ticker: Option<JoinHandle<()>>,
}

/// A one-minute window of acquisition-failure audit entries of a license.
struct FailureWindow {
    started: Instant,
    written: u32,
    suppressed: u64,
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
        // Timers belong to one incarnation: a restarted actor makes its own.
        let ticker = myself.send_interval(args.settings.sweep_interval, || OrgMessage::Tick);
        Ok(OrgState {
            args,
            licenses: HashMap::new(),
            pending_beats: HashMap::new(),
            failure_audits: HashMap::new(),
            last_request: Instant::now(),
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Not called after a panic: batched heartbeats are then lost, which
        // only delays `last_heartbeat_at`; the ledger holds the real lease
        // and the sweep reads expiries from it.
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
            OrgMessage::License(id, reply) => {
                state.last_request = Instant::now();
                let _ = reply.send(state.license(id).await);
            }
            OrgMessage::Beat {
                session,
                at,
                expires_at,
            } => {
                state.last_request = Instant::now();
                let beat = state
                    .pending_beats
                    .entry(session)
                    .or_insert((at, expires_at));
                beat.0 = beat.0.max(at);
                beat.1 = beat.1.max(expires_at);
            }
            OrgMessage::AcquireFailed(entry) => {
                state.last_request = Instant::now();
                state.audit_failure(entry).await;
            }
            OrgMessage::Invalidate(id) => {
                state.licenses.remove(&id);
            }
            OrgMessage::Tick => {
                state.flush_beats().await;
                let idle = state.last_request.elapsed() >= state.args.settings.org_idle_timeout;
                if idle && state.pending_beats.is_empty() {
                    tracing::debug!(org_id = %state.args.org_id, "org actor idle, stopping");
                    myself.stop(Some("idle".into()));
                }
            }
            OrgMessage::InjectPanic => {
                if state.args.settings.fault_hooks {
                    panic!("fault injected into org actor {}", state.args.org_id);
                }
                tracing::warn!("ignored a fault-injection request: fault hooks are disabled");
            }
        }
        Ok(())
    }
}

impl OrgState {
    /// The license, from the cache while it is fresh, else from the store.
    async fn license(&mut self, id: LicenseId) -> Result<Arc<License>, CoordinatorError> {
        if let Some((license, loaded)) = self.licenses.get(&id)
            && loaded.elapsed() < self.args.settings.license_cache_ttl
        {
            return Ok(license.clone());
        }
        let license = self
            .args
            .licenses
            .license(id)
            .await?
            .filter(|l| l.org_id == self.args.org_id)
            .map(Arc::new)
            .ok_or(CoordinatorError::LicenseNotFound)?;
        metrics::gauge!(m::SEAT_LIMIT, "org_id" => self.args.org_id.to_string(), "license_id" => id.to_string())
            .set(f64::from(license.seats));
        self.licenses.insert(id, (license.clone(), Instant::now()));
        Ok(license)
    }

    /// Writes a refused acquisition's audit entry, at most
    /// `failure_audits_per_minute` per license and minute. Entries over the
    /// bound are counted, and the count goes into the detail of the next
    /// entry written, so the log still says how many there were while a
    /// flood of refusals can't fill the disk.
    async fn audit_failure(&mut self, mut entry: AuditEntry) {
        let limit = self.args.settings.failure_audits_per_minute;
        let window = self
            .failure_audits
            .entry(entry.license_id)
            .or_insert(FailureWindow {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            });
        if window.started.elapsed().as_secs() >= 60 {
            window.started = Instant::now();
            window.written = 0;
        }
        if window.written >= limit {
            window.suppressed += 1;
            metrics::counter!(m::AUDIT_SUPPRESSED).increment(1);
            return;
        }
        window.written += 1;
        if window.suppressed > 0 {
            let detail = entry.detail.take().unwrap_or_default();
            entry.detail = Some(format!("{detail} (+{} not logged)", window.suppressed));
            window.suppressed = 0;
        }
        if let Err(e) = self.args.sessions.append_audit(&entry).await {
            tracing::warn!(error = %e, "could not write an acquisition-failure audit entry");
        }
    }

    /// Writes batched heartbeats. On failure (the store is down) they are
    /// kept and written by a later tick: heartbeats need only the ledger.
    async fn flush_beats(&mut self) {
        if self.pending_beats.is_empty() {
            return;
        }
        let beats: Vec<_> = self
            .pending_beats
            .iter()
            .map(|(id, (at, exp))| (*id, *at, *exp))
            .collect();
        match self.args.sessions.record_heartbeats(&beats).await {
            Ok(()) => self.pending_beats.clear(),
            Err(e) => {
                tracing::warn!(error = %e, pending = beats.len(), "could not write batched heartbeats; keeping them")
            }
        }
    }
}
