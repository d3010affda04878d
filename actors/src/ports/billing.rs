//! Subscriptions and payment-provider customers, durable.

use async_trait::async_trait;

use super::{NewMail, StoreError};
use crate::domain::{ActionAudit, License, NewLicense, OrgId, Subscription};

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
/// provider. Contract shared by every implementation (checked by
/// `tests/billing_conformance.rs`):
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
    /// transaction: the license (`license`), its `LICENSE_ISSUED` audit
    /// entry (`audit`, with its license and organization filled in), the
    /// subscription (`subscription`, whose `license_id` is replaced with
    /// the new license's) and the email (`mail`) commit together or not at
    /// all. If the subscription id is already recorded, nothing is
    /// written and the recorded subscription is returned.
    async fn start_subscription(
        &self,
        subscription: &Subscription,
        license: NewLicense,
        audit: ActionAudit,
        mail: &NewMail,
    ) -> Result<StartOutcome, StoreError>;

    /// One subscription by the provider's id.
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;

    /// The organization's newest subscription, if any.
    async fn subscription_for_org(&self, org: OrgId) -> Result<Option<Subscription>, StoreError>;
}
