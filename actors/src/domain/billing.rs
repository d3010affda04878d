//! Subscriptions: what an organization pays for, as the payment provider
//! last told us, and the license it pays for.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{LicenseId, OrgId};

/// A subscription's state, in the provider's (Stripe's) terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Incomplete,
    IncompleteExpired,
    Paused,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 8] = [
        Self::Trialing,
        Self::Active,
        Self::PastDue,
        Self::Canceled,
        Self::Unpaid,
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
        }
    }
}

impl std::str::FromStr for SubscriptionStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown subscription status {s:?}"))
    }
}

/// A subscription and the license it pays for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// The provider's id (`sub_...`).
    pub id: String,
    pub org_id: OrgId,
    /// The provider's customer (`cus_...`).
    pub customer_id: String,
    /// The plan it was bought on; kept when the plan is retired.
    pub plan_id: String,
    /// `month` or `year`.
    pub interval: String,
    pub quantity: u32,
    pub status: SubscriptionStatus,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub license_id: LicenseId,
    /// Failed payments since the last paid invoice.
    pub failed_payments: u32,
    /// While a payment is overdue: when the license is suspended unless paid.
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The provider's `created` time of the newest event applied to this
    /// subscription: an event older than this changes nothing (Stripe
    /// promises no order).
    pub last_event_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
