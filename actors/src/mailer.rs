//! The mailer: delivers the outbox, on every node, without ever holding up
//! the request that caused a message.
//!
//! Requests only write mail into the outbox (in the transaction of the
//! change that causes it) and kick the mailer with a cast. The mailer
//! claims a batch of due messages ([`Outbox::claim`]: exclusive across
//! nodes for the length of a lease), sends them one at a time, and settles
//! each: `sent`, a retry after an exponential backoff, or `failed` after the
//! last attempt or a permanent refusal.
//!
//! # Once, as far as SMTP allows
//!
//! - A claim is exclusive and each settling call is fenced by the claim's
//!   token, so two nodes never both send one message while both
//!   are healthy.
//! - A send is started only while the claim has at least
//!   [`MailerSettings::send_timeout`] left, and is cut off after that long,
//!   so a send never outlives its claim.
//! - One message is sent per actor message ([`MailerMessage::SendNext`]):
//!   a graceful stop waits for the send in flight and its record, then
//!   hands the rest of the batch back ([`Outbox::release`]) for the next
//!   incarnation or another node.
//! - Only a crash between the transport's acceptance and the record (or a
//!   database outage there) leaves a sent message pending; it is sent again
//!   once its claim lapses, with the same `Message-ID`, so the duplicate is
//!   recognisable. See `docs/decisions.md`.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::MailerMessage;
use crate::metrics as m;
use crate::ports::{MailSender, Outbox, QueuedMail, SendError, StoreError};
use crate::settings::MailerSettings;

#[derive(Clone)]
pub struct MailerArguments {
    pub outbox: Arc<dyn Outbox>,
    pub sender: Arc<dyn MailSender>,
    pub settings: Arc<MailerSettings>,
}

pub struct MailerActor;

pub struct MailerState {
    args: MailerArguments,
    /// The claimed messages not yet sent, in order.
    batch: VecDeque<QueuedMail>,
    /// When the claim on `batch` ends.
    lease_until: DateTime<Utc>,
    /// Outcomes the store could not record (it was down); retried before
    /// the next claim. Lost if the actor dies, which can only cause a
    /// duplicate, never a loss.
    unrecorded: Vec<(QueuedMail, Outcome)>,
}

/// How an attempt ended, as it is recorded.
#[derive(Clone, Debug)]
enum Outcome {
    Sent { at: DateTime<Utc> },
    Retry { error: String, at: DateTime<Utc> },
    Failed { error: String, at: DateTime<Utc> },
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Actor for MailerActor {
    type Msg = MailerMessage;
    type State = MailerState;
    type Arguments = MailerArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Mail left pending by a previous run goes out at once.
        myself.send_message(MailerMessage::Kick)?;
        myself.send_after(args.settings.poll_interval, || MailerMessage::Poll);
        Ok(MailerState {
            args,
            batch: VecDeque::new(),
            lease_until: Utc::now(),
            unrecorded: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailerMessage::Poll => {
                state.fill(&myself).await;
                // One poll at a time: the next is scheduled when this one
                // is done, so slow rounds never pile up.
                myself.send_after(state.args.settings.poll_interval, || MailerMessage::Poll);
            }
            MailerMessage::Kick => state.fill(&myself).await,
            MailerMessage::SendNext => state.send_next(&myself).await,
        }
        Ok(())
    }

    /// A graceful stop lands between two sends: the one in flight was sent
    /// and recorded. What is left of the claim goes back to the outbox.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.record_leftovers().await;
        state.release_batch().await;
        Ok(())
    }
}

impl MailerState {
    /// Claims a batch when none is being sent, and starts sending it.
    async fn fill(&mut self, myself: &ActorRef<MailerMessage>) {
        if !self.batch.is_empty() {
            return; // the batch in progress claims again when it is done
        }
        self.record_leftovers().await;
        let settings = &self.args.settings;
        let now = Utc::now();
        let lease_until = now + delta(settings.claim_lease);
        match self
            .args
            .outbox
            .claim(now, lease_until, settings.batch_size)
            .await
        {
            Ok(claimed) if claimed.is_empty() => {}
            Ok(claimed) => {
                tracing::debug!(count = claimed.len(), "claimed mail");
                self.batch = claimed.into();
                self.lease_until = lease_until;
                let _ = myself.send_message(MailerMessage::SendNext);
            }
            Err(e) => tracing::warn!(error = %e, "could not claim mail; retrying at the next poll"),
        }
    }

    /// Sends the next message of the batch and records how it went.
    async fn send_next(&mut self, myself: &ActorRef<MailerMessage>) {
        let Some(mail) = self.batch.pop_front() else {
            return self.fill(myself).await;
        };
        let settings = self.args.settings.clone();
        if Utc::now() + delta(settings.send_timeout) > self.lease_until {
            // Too little of the claim is left to be sure a send ends inside
            // it: hand the rest back and claim afresh.
            self.batch.push_front(mail);
            self.release_batch().await;
            return self.fill(myself).await;
        }
        let outcome =
            match tokio::time::timeout(settings.send_timeout, self.args.sender.send(&mail))
                .await
                .unwrap_or_else(|_| Err(SendError::Transient("the send timed out".into())))
            {
                Ok(()) => Outcome::Sent { at: Utc::now() },
                Err(SendError::Transient(error)) if mail.attempt < settings.max_attempts => {
                    let at = Utc::now() + delta(settings.retry_delay(mail.attempt));
                    Outcome::Retry { error, at }
                }
                Err(SendError::Transient(error)) => Outcome::Failed {
                    error: format!("{error} (after {} attempts)", mail.attempt),
                    at: Utc::now(),
                },
                Err(SendError::Permanent(error)) => Outcome::Failed {
                    error,
                    at: Utc::now(),
                },
            };
        count(&mail, &outcome);
        if let Err(e) = record(self.args.outbox.as_ref(), &mail, &outcome).await {
            tracing::error!(mail_id = %mail.id, error = %e,
                "could not record a mail attempt; retrying before the next claim");
            self.unrecorded.push((mail, outcome));
        }
        if self.batch.is_empty() {
            // Drained: more may be due (a full batch, or mail enqueued
            // meanwhile); the claim is one indexed read when nothing is.
            self.fill(myself).await;
        } else {
            let _ = myself.send_message(MailerMessage::SendNext);
        }
    }

    /// Records the outcomes the store refused earlier.
    async fn record_leftovers(&mut self) {
        let mut still = Vec::new();
        for (mail, outcome) in std::mem::take(&mut self.unrecorded) {
            if let Err(e) = record(self.args.outbox.as_ref(), &mail, &outcome).await {
                tracing::warn!(mail_id = %mail.id, error = %e, "still cannot record a mail attempt");
                still.push((mail, outcome));
            }
        }
        self.unrecorded = still;
    }

    /// Hands the unsent rest of the batch back to the outbox, due at once.
    async fn release_batch(&mut self) {
        let now = Utc::now();
        for mail in std::mem::take(&mut self.batch) {
            if let Err(e) = self.args.outbox.release(mail.id, mail.claim, now).await {
                // Its claim lapses by itself; it is only delayed.
                tracing::warn!(mail_id = %mail.id, error = %e, "could not release claimed mail");
            }
        }
    }
}

/// Counts an outcome by the message's kind.
fn count(mail: &QueuedMail, outcome: &Outcome) {
    let kind = mail.kind.as_str();
    match outcome {
        Outcome::Sent { .. } => {
            metrics::counter!(m::MAIL_SENT, "kind" => kind).increment(1);
            tracing::info!(mail_id = %mail.id, kind, attempt = mail.attempt, "mail sent");
        }
        Outcome::Retry { error, at } => {
            metrics::counter!(m::MAIL_RETRIED, "kind" => kind).increment(1);
            tracing::warn!(mail_id = %mail.id, kind, attempt = mail.attempt, %error,
                retry_at = %at, "mail attempt failed; will retry");
        }
        Outcome::Failed { error, .. } => {
            metrics::counter!(m::MAIL_FAILED, "kind" => kind).increment(1);
            tracing::error!(mail_id = %mail.id, kind, attempt = mail.attempt, %error,
                "mail given up");
        }
    }
}

/// Writes an outcome to the outbox, fenced by the claim.
async fn record(
    outbox: &dyn Outbox,
    mail: &QueuedMail,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let held = match outcome {
        Outcome::Sent { at } => outbox.mark_sent(mail.id, mail.claim, *at).await?,
        Outcome::Retry { error, at } => {
            outbox
                .schedule_retry(mail.id, mail.claim, error, *at)
                .await?
        }
        Outcome::Failed { error, at } => {
            outbox.mark_failed(mail.id, mail.claim, error, *at).await?
        }
    };
    if !held {
        tracing::warn!(mail_id = %mail.id, attempt = mail.attempt,
            "another claim took this message over; its outcome was not recorded");
    }
    Ok(())
}
