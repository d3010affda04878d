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

/// The subscriptions of one plan, interval and status, counted: what
/// revenue figures are computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionGroup {
    pub plan_id: String,
    /// `month` or `year`.
    pub interval: String,
    pub status: SubscriptionStatus,
    pub subscriptions: u64,
    /// The sum of their quantities.
    pub quantity: u64,
}

/// Subscription records, counted for revenue analytics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionCounts {
    pub groups: Vec<SubscriptionGroup>,
    /// Created at or after the start of the month.
    pub new_this_month: u64,
    /// Ended (cancelled) at or after the start of the month.
    pub churned_this_month: u64,
    /// Subscribed at the start of the month: created before it and not
    /// ended before it (never-completed checkouts aside).
    pub live_at_month_start: u64,
}

/// One plan's share of the revenue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanRevenue {
    pub plan_id: String,
    pub plan_name: String,
    pub currency: String,
    /// Paying subscriptions (active or past due).
    pub subscriptions: u64,
    pub mrr_cents: i64,
}

/// Revenue figures, from subscription records and the plans' prices.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Revenue {
    /// Monthly recurring revenue: each paying subscription's price for its
    /// interval times its quantity, annual prices divided by 12 (rounded
    /// down per group). Trials are not revenue yet.
    pub mrr_cents: i64,
    pub arr_cents: i64,
    pub active: u64,
    pub trialing: u64,
    pub past_due: u64,
    pub new_this_month: u64,
    pub churned_this_month: u64,
    /// `churned_this_month / live_at_month_start`, four decimals; 0 when
    /// nothing was live at the start of the month.
    pub churn_rate: f64,
    /// Highest MRR first.
    pub by_plan: Vec<PlanRevenue>,
}

impl SubscriptionStatus {
    /// Whether a subscription in this status is paying revenue: active, or
    /// past due (still subscribed while a payment is retried).
    pub fn is_paying(self) -> bool {
        matches!(self, Self::Active | Self::PastDue)
    }
}

impl Revenue {
    /// The figures of `counts`, priced with `plans` (a subscription whose
    /// plan is unknown counts, at no price).
    pub fn compute(counts: &SubscriptionCounts, plans: &[super::Plan]) -> Self {
        use std::collections::BTreeMap;
        let mut by_plan: BTreeMap<&str, PlanRevenue> = BTreeMap::new();
        let (mut active, mut trialing, mut past_due) = (0, 0, 0);
        for g in &counts.groups {
            match g.status {
                SubscriptionStatus::Active => active += g.subscriptions,
                SubscriptionStatus::Trialing => trialing += g.subscriptions,
                SubscriptionStatus::PastDue => past_due += g.subscriptions,
                _ => {}
            }
            if !g.status.is_paying() {
                continue;
            }
            let plan = plans.iter().find(|p| p.id.as_str() == g.plan_id);
            let quantity = i64::try_from(g.quantity).unwrap_or(i64::MAX);
            let monthly = plan.map_or(0, |p| match g.interval.as_str() {
                "year" => {
                    p.annual_price_cents.unwrap_or(p.monthly_price_cents * 12) * quantity / 12
                }
                _ => p.monthly_price_cents * quantity,
            });
            let entry = by_plan.entry(&g.plan_id).or_insert_with(|| PlanRevenue {
                plan_id: g.plan_id.clone(),
                plan_name: plan.map_or_else(|| g.plan_id.clone(), |p| p.name.clone()),
                currency: plan.map_or_else(|| "usd".to_owned(), |p| p.currency.clone()),
                subscriptions: 0,
                mrr_cents: 0,
            });
            entry.subscriptions += g.subscriptions;
            entry.mrr_cents += monthly;
        }
        let mut by_plan: Vec<PlanRevenue> = by_plan.into_values().collect();
        by_plan.sort_by(|a, b| {
            b.mrr_cents
                .cmp(&a.mrr_cents)
                .then(a.plan_id.cmp(&b.plan_id))
        });
        let mrr_cents = by_plan.iter().map(|p| p.mrr_cents).sum::<i64>();
        // Counts far below 2^52: exact enough as f64.
        #[allow(clippy::cast_precision_loss)]
        let churn_rate = if counts.live_at_month_start == 0 {
            0.0
        } else {
            (counts.churned_this_month as f64 / counts.live_at_month_start as f64 * 10_000.0)
                .round()
                / 10_000.0
        };
        Self {
            mrr_cents,
            arr_cents: mrr_cents * 12,
            active,
            trialing,
            past_due,
            new_this_month: counts.new_this_month,
            churned_this_month: counts.churned_this_month,
            churn_rate,
            by_plan,
        }
    }
}
