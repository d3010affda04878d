//! The license watcher: makes license changes reach this node at once.
//!
//! Every change to a license takes a new store revision. Each node polls
//! the highest revision every `license_watch_interval` (one indexed read),
//! and for each changed license it drops the license from its
//! organization's cache and, when the license is no longer active, drops
//! its leases from the ledger, so the next heartbeat of any of its sessions
//! is refused. Dropping leases is idempotent, so every node doing it is
//! harmless; the store has already ended the sessions as `revoked` in the
//! transaction that changed the status.
//!
//! A poll sees each license as it is now, not each revision: a suspension
//! undone before the next poll looks like no suspension at all, yet the
//! store ended the license's sessions. So for a license that grants seats,
//! the watcher also drops the leases whose records have ended (one ledger
//! read and one store read per changed license): a lease never outlives its
//! session's record by more than one poll.

use std::sync::Arc;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::error::CoordinatorError;
use crate::messages::{OrgMessage, WatcherMessage};
use crate::metrics as m;
use crate::names::Names;
use crate::ports::{LicenseStore, SeatLedger, SessionStore};
use crate::settings::CoordinatorSettings;

/// Changes read per poll; a poll with more reads again at once.
const BATCH: u32 = 1000;

#[derive(Clone)]
pub struct WatcherArguments {
    pub names: Names,
    pub licenses: Arc<dyn LicenseStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub ledger: Arc<dyn SeatLedger>,
    pub settings: Arc<CoordinatorSettings>,
}

pub struct LicenseWatcherActor;

pub struct LicenseWatcherState {
    args: WatcherArguments,
    /// The highest revision applied; `None` until the store first answers.
    seen: Option<i64>,
}

impl Actor for LicenseWatcherActor {
    type Msg = WatcherMessage;
    type State = LicenseWatcherState;
    type Arguments = WatcherArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Changes made before this node started need no notice: its caches
        // are empty and the ledger was revoked by whoever saw them.
        let seen = args.licenses.license_revision().await.ok();
        myself.send_after(args.settings.license_watch_interval, || {
            WatcherMessage::Poll
        });
        Ok(LicenseWatcherState { args, seen })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WatcherMessage::Poll => {
                if let Err(e) = state.poll().await {
                    tracing::warn!(error = %e, "license watch failed; retrying");
                }
                myself.send_after(state.args.settings.license_watch_interval, || {
                    WatcherMessage::Poll
                });
            }
        }
        Ok(())
    }
}

impl LicenseWatcherState {
    /// Frees the ledger leases of a license whose session records have
    /// ended (revoked by a change this poll did not see as such).
    async fn drop_ended_leases(
        &self,
        org: crate::domain::OrgId,
        license: crate::domain::LicenseId,
    ) -> Result<(), CoordinatorError> {
        let ledger = &self.args.ledger;
        let live: Vec<_> = ledger
            .live_leases(org, license)
            .await?
            .into_iter()
            .map(|(session, _)| session)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let ended = self.args.sessions.ended_among(&live).await?;
        for session in &ended {
            let freed = ledger.release(org, license, *session).await?;
            crate::metrics::freed_gauges(org, license, freed);
        }
        if !ended.is_empty() {
            tracing::info!(license_id = %license, dropped = ended.len(), "dropped leases of ended sessions");
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<(), CoordinatorError> {
        let Some(mut seen) = self.seen else {
            self.seen = Some(self.args.licenses.license_revision().await?);
            return Ok(());
        };
        loop {
            let changes = self
                .args
                .licenses
                .license_changes_since(seen, BATCH)
                .await?;
            let more = changes.len() as u32 >= BATCH;
            for change in changes {
                let license = &change.license;
                if let Some(org) =
                    ActorRef::<OrgMessage>::where_is(self.args.names.org(license.org_id))
                {
                    let _ = org.cast(OrgMessage::Invalidate(license.id));
                }
                if let Some(refusal) = license.refusal(Utc::now()) {
                    let dropped = self
                        .args
                        .ledger
                        .revoke_license(license.org_id, license.id)
                        .await?;
                    // Every lease and ticket is gone: so are the seats in use.
                    m::seat_gauges(license.org_id, license.id, 0, 0, Some(0));
                    metrics::counter!(m::LICENSES_REVOKED).increment(1);
                    tracing::info!(license_id = %license.id, ?refusal, dropped, "license no longer grants seats; leases revoked");
                } else {
                    self.drop_ended_leases(license.org_id, license.id).await?;
                }
                // Only now: a failure above retries this change next poll.
                seen = change.revision;
                self.seen = Some(seen);
            }
            if !more {
                return Ok(());
            }
        }
    }
}
