//! The webhooks subsystem: processes recorded webhook events, once each
//! across the cluster, without ever holding up the delivery that brought
//! them.
//!
//! The HTTP endpoint only verifies an event, records it in the inbox
//! ([`WebhookEventStore::record`]) and kicks this actor with a cast. The
//! actor claims a batch of due events (exclusive across nodes for the
//! length of a lease), hands them one at a time to the
//! [`WebhookProcessor`], and settles each: `processed`, a retry after an
//! exponential backoff, or `failed` after a permanent error or the last
//! attempt (an operator can replay it).
//!
//! # Once
//!
//! - A claim is exclusive and each settle is fenced by the claim's token,
//!   so two healthy nodes never both process one event.
//! - Processing is started only while the claim has at least
//!   [`WebhookSettings::process_timeout`] left, and is cut off after that
//!   long, so it never outlives its claim.
//! - A crash between the effects and the settle leaves the event claimed;
//!   it is processed again when the lease ends, and the processor's
//!   idempotence (its contract) makes the second run change nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::WebhookMessage;
use crate::metrics as m;
use crate::ports::{ClaimedEvent, ProcessError, WebhookEventStore, WebhookProcessor};
use crate::settings::WebhookSettings;

#[derive(Clone)]
pub struct WebhookArguments {
    pub store: Arc<dyn WebhookEventStore>,
    pub processor: Arc<dyn WebhookProcessor>,
    pub settings: Arc<WebhookSettings>,
}

pub struct WebhookActor;

pub struct WebhookState {
    args: WebhookArguments,
    /// The claimed events not yet processed, oldest first.
    batch: VecDeque<ClaimedEvent>,
    /// When the claim on `batch` ends.
    lease_until: DateTime<Utc>,
}

/// How an attempt ended, as it is recorded.
enum Outcome {
    Processed,
    Retry { error: String, at: DateTime<Utc> },
    Failed { error: String },
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Actor for WebhookActor {
    type Msg = WebhookMessage;
    type State = WebhookState;
    type Arguments = WebhookArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Events left due by a previous run are processed at once.
        myself.send_message(WebhookMessage::Kick)?;
        myself.send_after(args.settings.poll_interval, || WebhookMessage::Poll);
        Ok(WebhookState {
            args,
            batch: VecDeque::new(),
            lease_until: Utc::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WebhookMessage::Poll => {
                state.fill(&myself).await;
                myself.send_after(state.args.settings.poll_interval, || WebhookMessage::Poll);
            }
            WebhookMessage::Kick => state.fill(&myself).await,
            WebhookMessage::ProcessNext => state.process_next(&myself).await,
        }
        Ok(())
    }

    /// A graceful stop lands between two events: the one in flight was
    /// processed and settled. The unprocessed rest of the claim goes back,
    /// due at once, for the next incarnation or another node.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.release_batch().await;
        Ok(())
    }
}

impl WebhookState {
    /// Claims a batch when none is in progress, and starts on it.
    async fn fill(&mut self, myself: &ActorRef<WebhookMessage>) {
        if !self.batch.is_empty() {
            return;
        }
        let settings = &self.args.settings;
        let now = Utc::now();
        let lease_until = now + delta(settings.claim_lease);
        match self
            .args
            .store
            .claim(now, lease_until, settings.batch_size)
            .await
        {
            Ok(claimed) if claimed.is_empty() => {}
            Ok(claimed) => {
                tracing::debug!(count = claimed.len(), "claimed webhook events");
                self.batch = claimed.into();
                self.lease_until = lease_until;
                let _ = myself.send_message(WebhookMessage::ProcessNext);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim webhook events; retrying at the next poll")
            }
        }
    }

    /// Processes the next event of the batch and records how it went.
    async fn process_next(&mut self, myself: &ActorRef<WebhookMessage>) {
        let Some(claimed) = self.batch.pop_front() else {
            return self.fill(myself).await;
        };
        let settings = self.args.settings.clone();
        if Utc::now() + delta(settings.process_timeout) > self.lease_until {
            // Too little of the claim is left: hand the rest back.
            self.batch.push_front(claimed);
            self.release_batch().await;
            return self.fill(myself).await;
        }
        let event = &claimed.event;
        let result =
            tokio::time::timeout(settings.process_timeout, self.args.processor.process(event))
                .await
                .unwrap_or_else(|_| Err(ProcessError::Retry("processing timed out".into())));
        let outcome = match result {
            Ok(()) => Outcome::Processed,
            Err(ProcessError::Retry(error)) if event.attempts < settings.max_attempts => {
                Outcome::Retry {
                    error,
                    at: Utc::now() + delta(settings.retry_delay(event.attempts)),
                }
            }
            Err(ProcessError::Retry(error)) => Outcome::Failed {
                error: format!("{error} (after {} attempts)", event.attempts),
            },
            Err(ProcessError::Permanent(error)) => Outcome::Failed { error },
        };
        self.record(&claimed, outcome).await;
        if self.batch.is_empty() {
            self.fill(myself).await;
        } else {
            let _ = myself.send_message(WebhookMessage::ProcessNext);
        }
    }

    /// Settles an event, fenced by its claim. A store outage here leaves
    /// the event claimed: it is processed again when the lease ends, which
    /// the processor's idempotence makes harmless.
    async fn record(&self, claimed: &ClaimedEvent, outcome: Outcome) {
        let event = &claimed.event;
        let kind = event.kind.clone();
        let store = &self.args.store;
        let settled = match &outcome {
            Outcome::Processed => {
                metrics::counter!(m::WEBHOOKS_PROCESSED, "kind" => kind).increment(1);
                tracing::info!(event_id = %event.id, kind = %event.kind,
                    attempt = event.attempts, "webhook event processed");
                store
                    .mark_processed(&event.id, claimed.claim, Utc::now())
                    .await
            }
            Outcome::Retry { error, at } => {
                metrics::counter!(m::WEBHOOKS_RETRIED, "kind" => kind).increment(1);
                tracing::warn!(event_id = %event.id, kind = %event.kind,
                    attempt = event.attempts, %error, retry_at = %at,
                    "webhook event failed; will retry");
                store
                    .mark_failed(&event.id, claimed.claim, error, Some(*at))
                    .await
            }
            Outcome::Failed { error } => {
                metrics::counter!(m::WEBHOOKS_FAILED, "kind" => kind).increment(1);
                tracing::error!(event_id = %event.id, kind = %event.kind,
                    attempt = event.attempts, %error,
                    "webhook event given up; replay it once the cause is fixed");
                store
                    .mark_failed(&event.id, claimed.claim, error, None)
                    .await
            }
        };
        match settled {
            Ok(true) => {}
            Ok(false) => tracing::warn!(event_id = %event.id,
                "another claim or a replay took this event over; its outcome was not recorded"),
            Err(e) => tracing::error!(event_id = %event.id, error = %e,
                "could not record a webhook event's outcome; it runs again after its lease"),
        }
    }

    /// Hands the unprocessed rest of the batch back, due at once.
    async fn release_batch(&mut self) {
        let now = Utc::now();
        for claimed in std::mem::take(&mut self.batch) {
            let released = self
                .args
                .store
                .release(&claimed.event.id, claimed.claim, now)
                .await;
            if let Err(e) = released {
                // Its claim lapses by itself; it is only delayed.
                tracing::warn!(event_id = %claimed.event.id, error = %e,
                    "could not hand back a claimed webhook event");
            }
        }
    }
}
