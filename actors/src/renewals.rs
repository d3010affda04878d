//! The renewals subsystem: owns every billing deadline, and fires each one
//! once across the cluster.
//!
//! The deadlines themselves live in the store ([`DeadlineStore`]), written
//! by the same transactions that change a license's expiry or a
//! subscription's grace period or trial. This actor only keeps a timer: at
//! start, and after each pass, it asks the store when the next deadline
//! comes due and sleeps until then (at most `poll_interval`, so that
//! deadlines another node schedules are noticed too). A restart re-arms the
//! timer from the store, so nothing is lost with the actor.
//!
//! # Once
//!
//! A pass claims due deadlines (exclusive across nodes for the length of a
//! lease), asks the [`DeadlineHandler`] what each one does, and commits
//! that effect together with the deadline's firing, fenced by the claim
//! ([`DeadlineStore::complete_deadline`]). A node that crashes between
//! claim and effect leaves its deadlines claimed; they come back when the
//! lease ends and another node fires them, once. A claim that lapsed and
//! was taken over while its holder was still deciding can't commit: the
//! fence refuses it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::RenewalMessage;
use crate::metrics as m;
use crate::ports::{ClaimedDeadline, DeadlineHandler, DeadlineStore, ProcessError};
use crate::settings::RenewalSettings;

#[derive(Clone)]
pub struct RenewalArguments {
    pub store: Arc<dyn DeadlineStore>,
    pub handler: Arc<dyn DeadlineHandler>,
    pub settings: Arc<RenewalSettings>,
}

pub struct RenewalActor;

pub struct RenewalState {
    args: RenewalArguments,
}

/// The shortest sleep between two passes.
const MIN_SLEEP: Duration = Duration::from_millis(20);

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Actor for RenewalActor {
    type Msg = RenewalMessage;
    type State = RenewalState;
    type Arguments = RenewalArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Re-arm: whatever came due while no node ran this fires at once.
        myself.send_message(RenewalMessage::Tick)?;
        Ok(RenewalState { args })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RenewalMessage::Tick => {
                state.pass().await;
                let sleep = state.until_next().await;
                myself.send_after(sleep, || RenewalMessage::Tick);
            }
        }
        Ok(())
    }
}

/// How one deadline ended, as it is recorded.
enum Outcome {
    Applied,
    Skipped(String),
    Retry(String, chrono::DateTime<Utc>),
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Skipped(_) => "skipped",
            Self::Retry(..) => "retried",
            Self::Failed(_) => "failed",
        }
    }
}

impl RenewalState {
    /// Fires every deadline due now, a batch at a time.
    async fn pass(&mut self) {
        let settings = self.args.settings.clone();
        loop {
            let now = Utc::now();
            let lease_until = now + delta(settings.claim_lease);
            let claimed = match self
                .args
                .store
                .claim_deadlines(
                    now,
                    settings.expiry_warning,
                    lease_until,
                    settings.batch_size,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim deadlines; retrying at the next tick");
                    return;
                }
            };
            let full = claimed.len() as u32 >= settings.batch_size;
            for c in &claimed {
                if Utc::now() + delta(settings.decide_timeout) > lease_until {
                    // The rest of the claim lapses and comes back.
                    break;
                }
                self.fire(c).await;
            }
            if !full {
                return;
            }
        }
    }

    /// Decides one deadline and records the outcome with it.
    async fn fire(&self, claimed: &ClaimedDeadline) {
        let settings = &self.args.settings;
        let d = &claimed.deadline;
        let decided = tokio::time::timeout(settings.decide_timeout, self.args.handler.decide(d))
            .await
            .unwrap_or_else(|_| Err(ProcessError::Retry("deciding timed out".into())));
        let store = &self.args.store;
        let now = Utc::now();
        let (outcome, settled) = match decided {
            Ok(effect) => {
                let outcome = match &effect.skipped {
                    Some(why) => Outcome::Skipped(why.clone()),
                    None => Outcome::Applied,
                };
                (
                    outcome,
                    store.complete_deadline(claimed, &effect, now).await,
                )
            }
            Err(ProcessError::Retry(error)) if d.attempts < settings.max_attempts => {
                let at = now + delta(settings.retry_delay(d.attempts));
                let settled = store.fail_deadline(claimed, &error, Some(at), now).await;
                (Outcome::Retry(error, at), settled)
            }
            Err(ProcessError::Retry(error)) => {
                let error = format!("{error} (after {} attempts)", d.attempts);
                let settled = store.fail_deadline(claimed, &error, None, now).await;
                (Outcome::Failed(error), settled)
            }
            Err(ProcessError::Permanent(error)) => {
                let settled = store.fail_deadline(claimed, &error, None, now).await;
                (Outcome::Failed(error), settled)
            }
        };
        let kind = d.kind.as_str();
        match settled {
            Ok(true) => {
                metrics::counter!(m::DEADLINES, "kind" => kind, "outcome" => outcome.label())
                    .increment(1);
                match &outcome {
                    Outcome::Applied => tracing::info!(kind, subject = %d.subject,
                        due_at = %d.due_at, "deadline fired"),
                    Outcome::Skipped(why) => tracing::info!(kind, subject = %d.subject,
                        due_at = %d.due_at, why = %why, "deadline overtaken; nothing to do"),
                    Outcome::Retry(error, at) => tracing::warn!(kind, subject = %d.subject,
                        attempt = d.attempts, %error, retry_at = %at, "deadline failed; will retry"),
                    Outcome::Failed(error) => tracing::error!(kind, subject = %d.subject,
                        attempt = d.attempts, %error, "deadline given up"),
                }
            }
            Ok(false) => tracing::warn!(kind, subject = %d.subject,
                "deadline claimed elsewhere or moved meanwhile; this outcome was not recorded"),
            Err(e) => tracing::error!(kind, subject = %d.subject, error = %e,
                "could not record a deadline's outcome; it comes back after its lease"),
        }
    }

    /// How long to sleep: until the next deadline comes due, at most
    /// `poll_interval`.
    async fn until_next(&self) -> Duration {
        let settings = &self.args.settings;
        let now = Utc::now();
        match self
            .args
            .store
            .next_deadline(now, settings.expiry_warning)
            .await
        {
            // A floor, so that a deadline the last pass could not take
            // (a store hiccup between its claim and this read) never spins.
            Ok(Some(at)) => (at - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(MIN_SLEEP, settings.poll_interval.max(MIN_SLEEP)),
            Ok(None) => settings.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the next deadline");
                settings.poll_interval
            }
        }
    }
}
