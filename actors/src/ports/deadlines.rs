//! Billing deadlines, as durable rows: the renewals subsystem's timers.
//!
//! A deadline is a moment at which something must happen unless an event
//! got there first: a grace period that ends unpaid suspends its license, a
//! license past its expiry stops granting seats, an expiry is announced
//! ahead of time, a trial's end is checked against the payment provider.
//!
//! The store keeps them beside the rows they are about, and writes them in
//! the same transactions: whatever sets a license's expiry, a
//! subscription's grace period or its trial end (re)schedules the matching
//! deadline, so a deadline can't be lost between a change and its timer.
//! There is at most one row per `(kind, subject)`: moving a deadline (a
//! renewal moves the expiry) re-arms it, and scheduling it again at the
//! same moment leaves a fired one fired, so it never fires twice.
//!
//! Firing is claimed like the outbox and the webhook inbox: a claim stamps
//! its rows with a fresh token and a lease, concurrent claims from any node
//! take disjoint rows, and a claimer that crashes leaves its rows to the
//! next claim once the lease ends. A deadline's effect is committed in the
//! same transaction that marks it fired, fenced by the claim's token
//! ([`DeadlineStore::complete`]), so it takes effect exactly once.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{NewMail, ProcessError, StoreError};
use crate::domain::{ActionAudit, LicenseId, LicenseUpdate, SubscriptionStatus};

/// What a deadline is for. Its subject is a subscription id for
/// [`GraceEnd`](Self::GraceEnd) and [`TrialEnd`](Self::TrialEnd), and a
/// license id for [`Expiry`](Self::Expiry) and
/// [`ExpiryWarning`](Self::ExpiryWarning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    /// A subscription's grace period after a failed payment ends: unpaid,
    /// its license is suspended.
    GraceEnd,
    /// A subscription's trial ends: its status is read back from the
    /// payment provider, in case the event that says so was lost.
    TrialEnd,
    /// A license's expiry is near: its owners are told. Its `due_at` is the
    /// expiry itself; it is claimable a configured lead before that.
    ExpiryWarning,
    /// A license passes its expiry unrenewed: its live sessions end.
    Expiry,
}

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 4] = [
        Self::GraceEnd,
        Self::TrialEnd,
        Self::ExpiryWarning,
        Self::Expiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GraceEnd => "grace_end",
            Self::TrialEnd => "trial_end",
            Self::ExpiryWarning => "expiry_warning",
            Self::Expiry => "expiry",
        }
    }
}

impl std::str::FromStr for DeadlineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown deadline kind {s:?}"))
    }
}

/// A recorded deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deadline {
    pub kind: DeadlineKind,
    /// A subscription id or a license id; see [`DeadlineKind`].
    pub subject: String,
    /// When it is due. For an expiry warning, the expiry it warns of.
    pub due_at: DateTime<Utc>,
    /// Attempts started (claims) since it was last (re)scheduled.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it fired; `None` while pending.
    pub fired_at: Option<DateTime<Utc>>,
}

/// A deadline claimed for firing, with the token that completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDeadline {
    pub deadline: Deadline,
    pub claim: Uuid,
}

/// What firing a deadline changes, committed with its firing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeadlineEffect {
    /// A change to a license, applied as `LicenseStore::update_license`
    /// applies it (a new revision every node hears). A change that leaves
    /// the license refusing seats (suspended, inactive, or past its expiry)
    /// ends its open sessions as revoked.
    pub license: Option<(LicenseId, LicenseUpdate)>,
    /// A subscription whose trial is over, with the status the payment
    /// provider reports for it now: applied only while the record still
    /// says `trialing`, so that an event that got there first wins.
    pub trial_over: Option<(String, SubscriptionStatus)>,
    /// Audit entries, written as given (with their ids filled in).
    pub audits: Vec<ActionAudit>,
    pub mail: Vec<NewMail>,
    /// Why the deadline changed nothing, for the log: it was overtaken
    /// (paid, renewed, moved). `None` when it took effect.
    pub skipped: Option<String>,
}

impl DeadlineEffect {
    /// A deadline that finds nothing left to do.
    pub fn skip(why: impl Into<String>) -> Self {
        Self {
            skipped: Some(why.into()),
            ..Self::default()
        }
    }
}

/// The durable deadlines. Scheduling is not a method: the stores write
/// deadlines in the transactions that change what they are about (see the
/// module docs). Contract shared by every implementation (checked by
/// `tests/deadlines_conformance.rs`):
#[async_trait]
pub trait DeadlineStore: Send + Sync + 'static {
    /// Claims up to `limit` pending deadlines that are due: `due_at <=
    /// now`, or for an expiry warning `due_at <= now + warning_lead`; and
    /// not held by a live claim or waiting for a retry. Earliest first.
    /// Each counts one more attempt, is held until `lease_until` (so a
    /// crashed claimer's deadlines come back then), and gets a fresh claim
    /// token. Concurrent claims, from any node, never return the same
    /// deadline.
    async fn claim_deadlines(
        &self,
        now: DateTime<Utc>,
        warning_lead: Duration,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDeadline>, StoreError>;

    /// Fires a claimed deadline: marks it fired at `now` and commits
    /// `effect` in the same transaction. Returns `false`, writing nothing,
    /// when `claim` is no longer the deadline's claim (its lease ended and
    /// another claim took it, or it was rescheduled meanwhile).
    async fn complete_deadline(
        &self,
        claimed: &ClaimedDeadline,
        effect: &DeadlineEffect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt: `error`, and claimable again from
    /// `retry_at`; or, when `None`, given up: fired at `now` with the
    /// error kept, for an operator to see. Returns `false`, changing
    /// nothing, when `claim` is no longer the deadline's claim.
    async fn fail_deadline(
        &self,
        claimed: &ClaimedDeadline,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// When the next pending deadline may become claimable (with the same
    /// `warning_lead`), if any: the renewals subsystem sleeps until then.
    /// Never earlier than `now` for a deadline held by a claim or waiting
    /// for a retry; it may be earlier than the true moment (a lower bound),
    /// never later.
    async fn next_deadline(
        &self,
        now: DateTime<Utc>,
        warning_lead: Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// The deadlines of one subject (a subscription or license id), fired
    /// or not, in kind order.
    async fn deadlines_of(&self, subject: &str) -> Result<Vec<Deadline>, StoreError>;
}

/// Decides what a due deadline does, from the records as they are now.
///
/// It only reads: the renewals subsystem commits the returned effect with
/// the deadline's firing ([`DeadlineStore::complete_deadline`]), so a
/// deadline decided twice (a crash after deciding) still takes effect once.
/// A deadline that an event overtook (the invoice was paid, the license
/// renewed) is skipped with [`DeadlineEffect::skip`].
#[async_trait]
pub trait DeadlineHandler: Send + Sync + 'static {
    async fn decide(&self, deadline: &Deadline) -> Result<DeadlineEffect, ProcessError>;
}
