//! The cluster-wide sweep: closes the records of sessions whose lease has
//! lapsed, whichever node served them and whichever nodes are alive.
//!
//! Every node runs one `SweeperActor`. Each round claims a batch of due
//! sessions from the store ([`SessionStore::claim_sweep`]: the index on
//! `sweep_at` of open sessions, claimed atomically and, on PostgreSQL, with
//! `FOR UPDATE SKIP LOCKED`), so nodes split the work instead of repeating
//! it, and a node that dies mid-round only delays its claims by one
//! interval. A round costs in proportion to the sessions that are due, not
//! to the open ones: sessions that heartbeat have their `sweep_at` pushed
//! forward by the batched heartbeat writes and are never read.
//!
//! For each claimed session the ledger decides:
//! - held and live: the store lagged behind a heartbeat; look again at the
//!   ledger's expiry;
//! - held and lapsed within its grace: its token is still valid offline;
//!   look again when the grace ends;
//! - not held: close the record as expired, with its audit entry.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::{AuditEntry, AuditEvent, ClientInfo, EndReason, LicenseId, OrgId, SessionId};
use crate::error::CoordinatorError;
use crate::messages::SweeperMessage;
use crate::metrics as m;
use crate::ports::{EndOutcome, SeatLedger, SessionStore, SweepCandidate};
use crate::settings::CoordinatorSettings;

/// How far node clocks may drift from the ledger's clock: a session is
/// only claimed this long after the store says its lease ran out.
const CLOCK_SKEW_ALLOWANCE: TimeDelta = TimeDelta::milliseconds(500);

#[derive(Clone)]
pub struct SweeperArguments {
    pub sessions: Arc<dyn SessionStore>,
    pub ledger: Arc<dyn SeatLedger>,
    pub settings: Arc<CoordinatorSettings>,
}

pub struct SweeperActor;

pub struct SweeperState {
    args: SweeperArguments,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub claimed: usize,
    pub expired: usize,
    pub live: usize,
    pub graced: usize,
}

impl Actor for SweeperActor {
    type Msg = SweeperMessage;
    type State = SweeperState;
    type Arguments = SweeperArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // One round at a time: the next is scheduled when this one ends, so
        // a slow round never queues more behind it.
        myself.send_after(args.settings.sweep_interval, || SweeperMessage::Sweep);
        Ok(SweeperState { args })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SweeperMessage::Sweep => {
                match sweep(&state.args).await {
                    Ok(report) if report.claimed > 0 => {
                        tracing::debug!(?report, "sweep round");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "sweep round failed; retrying next interval")
                    }
                }
                myself.send_after(state.args.settings.sweep_interval, || SweeperMessage::Sweep);
            }
        }
        Ok(())
    }
}

/// One sweep round: claims due sessions batch by batch until none is left.
pub async fn sweep(args: &SweeperArguments) -> Result<SweepReport, CoordinatorError> {
    let mut report = SweepReport::default();
    let interval = TimeDelta::from_std(args.settings.sweep_interval).unwrap_or(TimeDelta::MAX);
    loop {
        let now = Utc::now();
        let batch = args
            .sessions
            .claim_sweep(
                now - CLOCK_SKEW_ALLOWANCE,
                now + interval,
                args.settings.sweep_batch,
            )
            .await?;
        let full = batch.len() as u32 >= args.settings.sweep_batch;
        report.claimed += batch.len();
        let mut by_license: HashMap<(OrgId, LicenseId), Vec<SweepCandidate>> = HashMap::new();
        for c in batch {
            by_license
                .entry((c.org_id, c.license_id))
                .or_default()
                .push(c);
        }
        for ((org, license), candidates) in by_license {
            settle(args, org, license, &candidates, &mut report).await?;
        }
        if !full {
            return Ok(report);
        }
    }
}

/// Settles the claimed sessions of one license against the ledger.
async fn settle(
    args: &SweeperArguments,
    org: OrgId,
    license: LicenseId,
    candidates: &[SweepCandidate],
    report: &mut SweepReport,
) -> Result<(), CoordinatorError> {
    let ids: Vec<SessionId> = candidates.iter().map(|c| c.id).collect();
    let states = args.ledger.lease_states(org, license, &ids).await?;
    let grace = TimeDelta::from_std(states.grace).unwrap_or(TimeDelta::MAX);
    let mut later: Vec<(SessionId, DateTime<Utc>)> = Vec::new();
    for (candidate, expiry) in candidates.iter().zip(&states.expiries) {
        match expiry {
            Some(exp) if *exp > states.now => {
                report.live += 1;
                later.push((candidate.id, *exp));
            }
            Some(exp) => {
                report.graced += 1;
                later.push((candidate.id, *exp + grace));
            }
            None => {
                if close_expired(args, candidate).await? {
                    report.expired += 1;
                }
            }
        }
    }
    if !later.is_empty() {
        args.sessions.reschedule_sweep(&later).await?;
    }
    m::seat_gauges(org, license, states.live, states.graced, None);
    Ok(())
}

/// Closes a lapsed session's record as expired. The end time is when the
/// lease ran out as far as the store knows, not when the lapse was seen.
async fn close_expired(
    args: &SweeperArguments,
    c: &SweepCandidate,
) -> Result<bool, CoordinatorError> {
    let ended_at = c.lease_expires_at.min(Utc::now());
    let entry = AuditEntry {
        at: Utc::now(),
        event: AuditEvent::SessionExpired,
        org_id: c.org_id,
        license_id: c.license_id,
        session_id: Some(c.id),
        hardware_id: Some(c.hardware_id.clone()),
        client: ClientInfo::default(),
        detail: None,
        actor_id: None,
    };
    let outcome = args
        .sessions
        .end_session(c.id, ended_at, EndReason::Expired, &entry)
        .await?;
    let ended = matches!(outcome, Some(EndOutcome::Ended(_)));
    if ended {
        metrics::counter!(m::SESSIONS_EXPIRED).increment(1);
        tracing::info!(session_id = %c.id, license_id = %c.license_id, "session expired");
    }
    Ok(ended)
}
