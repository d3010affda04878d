//! Subscriptions and payment-provider customers, durable.

use async_trait::async_trait;

use super::{NewMail, StoreError};
use chrono::{DateTime, Utc};

use crate::domain::{
    ActionAudit, License, LicenseId, LicenseUpdate, NewLicense, OrgId, Subscription,
    SubscriptionCounts,
};

/// What [`SubscriptionStore::start_subscription`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    /// The subscription is new: it, its license, the license's audit entry
    /// and the email were written together.
    Started {
        subscription: Subscription,
        license: License,
    },
    /// A subscription with this id was already recorded (a redelivered or
    /// replayed event): nothing was written.
    AlreadyStarted(Subscription),
}

/// Durable subscriptions and the organizations' customers at the payment
/// provider. Contract shared by every implementation (checked on both
/// backends by `tests/deadlines_conformance.rs`, and through the server by
/// the `billing_*` suites):
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// The provider customer recorded for an organization, if any.
    async fn customer_for_org(&self, org: OrgId) -> Result<Option<String>, StoreError>;

    /// Records `customer` as the organization's, unless one is recorded
    /// already; returns the one that is recorded now (so that two
    /// concurrent checkouts end up naming the same customer). Fails with
    /// `NotFound` for an unknown organization.
    async fn record_customer(&self, org: OrgId, customer: &str) -> Result<String, StoreError>;

    /// The organization that owns a provider customer, if recorded.
    async fn org_for_customer(&self, customer: &str) -> Result<Option<OrgId>, StoreError>;

    /// Records a new subscription and issues its license, in one
    /// transaction: the license (`license`, under the id
    /// `subscription.license_id`, which the caller chooses so that it can
    /// sign the license's file first), its `LICENSE_ISSUED` audit entry
    /// (`audit`, with its license and organization filled in), the
    /// subscription, its deadlines (trial end) and the emails (`mails`)
    /// commit together or not at all. If the subscription id is already
    /// recorded, nothing is written and the recorded subscription is
    /// returned.
    async fn start_subscription(
        &self,
        subscription: &Subscription,
        license: NewLicense,
        audit: ActionAudit,
        mails: &[NewMail],
    ) -> Result<StartOutcome, StoreError>;

    /// Changes a recorded subscription and its license together, in one
    /// transaction: the row of `subscription.id` takes every other field of
    /// `subscription` (but `org_id`, `customer_id`, `license_id` and
    /// `created_at`, which never change); `license` is applied to its
    /// license as `LicenseStore::update_license` applies it (a new
    /// revision that every node hears; a suspension or deactivation ends
    /// the license's open sessions as revoked; a new expiry reschedules its
    /// deadlines); the subscription's grace-end and trial-end deadlines
    /// follow its `grace_ends_at` and trial; each of `audits` is written
    /// with the license and organization filled in; `mail` is enqueued
    /// once (a mail id already queued is not queued again). Returns the
    /// license as it now is, or `None`, writing nothing, for an unknown
    /// subscription.
    async fn change_subscription(
        &self,
        subscription: &Subscription,
        license: &LicenseUpdate,
        audits: Vec<ActionAudit>,
        mail: Option<&NewMail>,
    ) -> Result<Option<License>, StoreError>;

    /// One subscription by the provider's id.
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;

    /// The organization's newest subscription, if any.
    async fn subscription_for_org(&self, org: OrgId) -> Result<Option<Subscription>, StoreError>;

    /// The subscription that pays for a license, if any (at most one does).
    async fn subscription_for_license(
        &self,
        license: LicenseId,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Every subscription record counted by plan, interval and status, and
    /// the month's movements since `month_start` (see
    /// [`SubscriptionCounts`]), for revenue analytics.
    async fn subscription_counts(
        &self,
        month_start: DateTime<Utc>,
    ) -> Result<SubscriptionCounts, StoreError>;
}
