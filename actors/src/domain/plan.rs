//! The plan catalogue: what a customer can subscribe to, at what price,
//! with how many seats.
//!
//! Plans are seeded from configuration and edited by platform
//! administrators afterwards (the database is the truth once a plan is
//! there). A plan is never deleted, only retired: a retired plan is no
//! longer offered, but subscriptions on it keep reading it by id.
//!
//! Every rule a plan must satisfy lives here, in [`NewPlan::validate`] and
//! [`Plan::validate`], so that configuration, the admin API and the stores
//! refuse the same things with the same words.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The largest amount Stripe accepts for one price, in the currency's
/// smallest unit (eight digits).
pub const MAX_PRICE_CENTS: i64 = 99_999_999;
/// The most seats a plan may grant.
pub const MAX_PLAN_SEATS: u32 = 1_000_000;
/// The longest trial, in days.
pub const MAX_TRIAL_DAYS: u32 = 730;
/// At most this many features per plan, each at most this many characters.
pub const MAX_FEATURES: usize = 64;
pub const MAX_FEATURE_CHARS: usize = 100;
/// The longest plan name and Stripe price id.
pub const MAX_PLAN_NAME_CHARS: usize = 100;
pub const MAX_STRIPE_PRICE_CHARS: usize = 255;

/// Why a plan (or a plan id) is refused: the field and what is wrong with
/// it, in words fit for an API error or a startup message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPlan {
    /// The field, as the API and configuration spell it, e.g. `seats`.
    pub field: &'static str,
    pub message: String,
}

impl InvalidPlan {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A plan's id: a slug of 1 to 40 characters, lower-case letters, digits
/// and hyphens, starting with a letter or digit (`^[a-z0-9][a-z0-9-]{0,39}$`),
/// e.g. `starter`. Stable: it names the plan in URLs, configuration and
/// subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanId(String);

impl PlanId {
    pub const MAX_LEN: usize = 40;

    /// The id, if `s` is a valid slug.
    pub fn parse(s: &str) -> Result<Self, InvalidPlan> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidPlan::new(
                "id",
                "must be 1 to 40 lower-case letters, digits and hyphens, \
                 starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PlanId {
    type Err = InvalidPlan;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PlanId {
    type Error = InvalidPlan;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PlanId> for String {
    fn from(id: PlanId) -> Self {
        id.0
    }
}

/// How often a subscription is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BillingInterval {
    Month,
    Year,
}

impl BillingInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

impl FromStr for BillingInterval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(format!("unknown billing interval {other:?}")),
        }
    }
}

/// A plan as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    /// Lower-case ISO 4217 code, e.g. `usd`.
    pub currency: String,
    /// In the currency's smallest unit (cents); more than 0.
    pub monthly_price_cents: i64,
    /// `None`: the plan is sold monthly only.
    pub annual_price_cents: Option<i64>,
    /// Seats a subscription's license gets.
    pub seats: u32,
    /// 0 to 730.
    pub trial_days: u32,
    /// The Stripe price checkout uses for monthly billing.
    pub stripe_price_monthly: String,
    /// The Stripe price for annual billing: set exactly when
    /// `annual_price_cents` is.
    pub stripe_price_annual: Option<String>,
    pub features: Vec<String>,
    /// When the plan stopped being offered; `None` while it is.
    pub retired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Plan {
    /// The price and Stripe price id for billing every `interval`; `None`
    /// when the plan has no annual price. Checkout uses this.
    pub fn price_for(&self, interval: BillingInterval) -> Option<(i64, &str)> {
        match interval {
            BillingInterval::Month => {
                Some((self.monthly_price_cents, self.stripe_price_monthly.as_str()))
            }
            BillingInterval::Year => self
                .annual_price_cents
                .zip(self.stripe_price_annual.as_deref()),
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired_at.is_some()
    }

    /// The plan's terms, to validate or re-insert.
    pub fn terms(&self) -> NewPlan {
        NewPlan {
            id: self.id.clone(),
            name: self.name.clone(),
            currency: self.currency.clone(),
            monthly_price_cents: self.monthly_price_cents,
            annual_price_cents: self.annual_price_cents,
            seats: self.seats,
            trial_days: self.trial_days,
            stripe_price_monthly: self.stripe_price_monthly.clone(),
            stripe_price_annual: self.stripe_price_annual.clone(),
            features: self.features.clone(),
        }
    }

    /// Whether the plan keeps every rule of [`NewPlan::validate`].
    pub fn validate(&self) -> Result<(), InvalidPlan> {
        self.terms().validate()
    }
}

/// A plan to create (by an administrator) or to seed (from
/// configuration); the store adds the timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPlan {
    pub id: PlanId,
    pub name: String,
    pub currency: String,
    pub monthly_price_cents: i64,
    pub annual_price_cents: Option<i64>,
    pub seats: u32,
    pub trial_days: u32,
    pub stripe_price_monthly: String,
    pub stripe_price_annual: Option<String>,
    pub features: Vec<String>,
}

/// The currency when none is given.
pub const DEFAULT_CURRENCY: &str = "usd";

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn check_price(field: &'static str, cents: i64) -> Result<(), InvalidPlan> {
    if (1..=MAX_PRICE_CENTS).contains(&cents) {
        Ok(())
    } else {
        Err(InvalidPlan::new(
            field,
            format!("must be 1 to {MAX_PRICE_CENTS} (in cents)"),
        ))
    }
}

fn check_stripe_price(field: &'static str, id: &str) -> Result<(), InvalidPlan> {
    let valid = !id.is_empty()
        && id.chars().count() <= MAX_STRIPE_PRICE_CHARS
        && id.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(InvalidPlan::new(
            field,
            format!(
                "must be a Stripe price id: 1 to {MAX_STRIPE_PRICE_CHARS} printable ASCII \
                 characters without spaces"
            ),
        ))
    }
}

impl NewPlan {
    /// Every rule a plan keeps:
    ///
    /// - `name`: 1 to 100 characters, not blank, no control characters;
    /// - `currency`: three lower-case letters (ISO 4217), e.g. `usd`;
    /// - `monthly_price_cents`, `annual_price_cents`: 1 to 99,999,999;
    /// - `seats`: 1 to 1,000,000; `trial_days`: 0 to 730;
    /// - `stripe_price_monthly`: a Stripe price id; `stripe_price_annual`
    ///   one too, given exactly when `annual_price_cents` is;
    /// - `features`: at most 64, each 1 to 100 characters, no duplicates.
    pub fn validate(&self) -> Result<(), InvalidPlan> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() || name_chars > MAX_PLAN_NAME_CHARS || !printable(&self.name)
        {
            return Err(InvalidPlan::new(
                "name",
                format!("must be 1 to {MAX_PLAN_NAME_CHARS} characters, not blank"),
            ));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(InvalidPlan::new(
                "currency",
                "must be a lower-case ISO 4217 code, e.g. usd",
            ));
        }
        check_price("monthly_price_cents", self.monthly_price_cents)?;
        if let Some(annual) = self.annual_price_cents {
            check_price("annual_price_cents", annual)?;
        }
        if !(1..=MAX_PLAN_SEATS).contains(&self.seats) {
            return Err(InvalidPlan::new(
                "seats",
                format!("must be 1 to {MAX_PLAN_SEATS}"),
            ));
        }
        if self.trial_days > MAX_TRIAL_DAYS {
            return Err(InvalidPlan::new(
                "trial_days",
                format!("must be 0 to {MAX_TRIAL_DAYS}"),
            ));
        }
        check_stripe_price("stripe_price_monthly", &self.stripe_price_monthly)?;
        match (&self.annual_price_cents, &self.stripe_price_annual) {
            (Some(_), Some(id)) => check_stripe_price("stripe_price_annual", id)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(InvalidPlan::new(
                    "stripe_price_annual",
                    "is required when annual_price_cents is set",
                ));
            }
            (None, Some(_)) => {
                return Err(InvalidPlan::new(
                    "stripe_price_annual",
                    "must be absent without annual_price_cents",
                ));
            }
        }
        if self.features.len() > MAX_FEATURES {
            return Err(InvalidPlan::new(
                "features",
                format!("at most {MAX_FEATURES}"),
            ));
        }
        for (i, feature) in self.features.iter().enumerate() {
            let chars = feature.chars().count();
            if feature.trim().is_empty() || chars > MAX_FEATURE_CHARS || !printable(feature) {
                return Err(InvalidPlan::new(
                    "features",
                    format!("each must be 1 to {MAX_FEATURE_CHARS} characters, not blank"),
                ));
            }
            if self.features[..i].contains(feature) {
                return Err(InvalidPlan::new(
                    "features",
                    format!("{feature:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// A change to a plan; `None` leaves a field as it is. The id and the
/// currency never change: a plan in another currency is another plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanPatch {
    pub name: Option<String>,
    pub monthly_price_cents: Option<i64>,
    /// `Some(None)` stops selling the plan annually (and needs
    /// `stripe_price_annual: Some(None)` with it).
    pub annual_price_cents: Option<Option<i64>>,
    pub stripe_price_monthly: Option<String>,
    pub stripe_price_annual: Option<Option<String>>,
    pub seats: Option<u32>,
    pub trial_days: Option<u32>,
    pub features: Option<Vec<String>>,
}

impl PlanPatch {
    pub fn is_empty(&self) -> bool {
        self.changed().is_empty()
    }

    /// The names of the fields this patch sets, in a fixed order.
    pub fn changed(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("monthly_price_cents", self.monthly_price_cents.is_some()),
            ("annual_price_cents", self.annual_price_cents.is_some()),
            ("stripe_price_monthly", self.stripe_price_monthly.is_some()),
            ("stripe_price_annual", self.stripe_price_annual.is_some()),
            ("seats", self.seats.is_some()),
            ("trial_days", self.trial_days.is_some()),
            ("features", self.features.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// `plan` with this patch applied at `now`, if the result keeps every
    /// rule; `retired_at` and `created_at` stay as they were.
    pub fn apply(&self, plan: &Plan, now: DateTime<Utc>) -> Result<Plan, InvalidPlan> {
        let mut next = plan.clone();
        if let Some(name) = &self.name {
            next.name.clone_from(name);
        }
        if let Some(cents) = self.monthly_price_cents {
            next.monthly_price_cents = cents;
        }
        if let Some(cents) = self.annual_price_cents {
            next.annual_price_cents = cents;
        }
        if let Some(id) = &self.stripe_price_monthly {
            next.stripe_price_monthly.clone_from(id);
        }
        if let Some(id) = &self.stripe_price_annual {
            next.stripe_price_annual.clone_from(id);
        }
        if let Some(seats) = self.seats {
            next.seats = seats;
        }
        if let Some(days) = self.trial_days {
            next.trial_days = days;
        }
        if let Some(features) = &self.features {
            next.features.clone_from(features);
        }
        next.validate()?;
        next.updated_at = now;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pro() -> NewPlan {
        NewPlan {
            id: PlanId::parse("pro").unwrap(),
            name: "Pro".into(),
            currency: "usd".into(),
            monthly_price_cents: 9900,
            annual_price_cents: Some(99_000),
            seats: 10,
            trial_days: 14,
            stripe_price_monthly: "price_pro_monthly".into(),
            stripe_price_annual: Some("price_pro_annual".into()),
            features: vec!["floating seats".into()],
        }
    }

    fn stored(new: NewPlan) -> Plan {
        let now = Utc::now();
        Plan {
            id: new.id,
            name: new.name,
            currency: new.currency,
            monthly_price_cents: new.monthly_price_cents,
            annual_price_cents: new.annual_price_cents,
            seats: new.seats,
            trial_days: new.trial_days,
            stripe_price_monthly: new.stripe_price_monthly,
            stripe_price_annual: new.stripe_price_annual,
            features: new.features,
            retired_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn plan_ids_are_short_lower_case_slugs() {
        for good in ["starter", "pro-2", "0", &"a".repeat(40)] {
            assert!(PlanId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-pro",
            "Pro",
            "pro plan",
            "pro_2",
            "pro/2",
            &"a".repeat(41),
        ] {
            assert!(PlanId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<PlanId>("\"Bad\"").is_err());
        assert_eq!(
            serde_json::to_string(&PlanId::parse("pro").unwrap()).unwrap(),
            "\"pro\""
        );
    }

    #[test]
    fn the_default_plans_are_valid() {
        assert_eq!(pro().validate(), Ok(()));
        let monthly_only = NewPlan {
            annual_price_cents: None,
            stripe_price_annual: None,
            ..pro()
        };
        assert_eq!(monthly_only.validate(), Ok(()));
    }

    #[test]
    fn each_rule_names_its_field() {
        let refused = |plan: NewPlan| plan.validate().unwrap_err().field;
        assert_eq!(
            refused(NewPlan {
                name: " ".into(),
                ..pro()
            }),
            "name"
        );
        assert_eq!(
            refused(NewPlan {
                currency: "USD".into(),
                ..pro()
            }),
            "currency"
        );
        assert_eq!(
            refused(NewPlan {
                monthly_price_cents: 0,
                ..pro()
            }),
            "monthly_price_cents"
        );
        assert_eq!(
            refused(NewPlan {
                annual_price_cents: Some(-1),
                ..pro()
            }),
            "annual_price_cents"
        );
        assert_eq!(refused(NewPlan { seats: 0, ..pro() }), "seats");
        assert_eq!(
            refused(NewPlan {
                trial_days: 731,
                ..pro()
            }),
            "trial_days"
        );
        assert_eq!(
            refused(NewPlan {
                stripe_price_monthly: "price x".into(),
                ..pro()
            }),
            "stripe_price_monthly"
        );
        assert_eq!(
            refused(NewPlan {
                stripe_price_annual: None,
                ..pro()
            }),
            "stripe_price_annual"
        );
        assert_eq!(
            refused(NewPlan {
                annual_price_cents: None,
                ..pro()
            }),
            "stripe_price_annual"
        );
        assert_eq!(
            refused(NewPlan {
                features: vec!["a".into(), "a".into()],
                ..pro()
            }),
            "features"
        );
    }

    #[test]
    fn the_price_for_an_interval_comes_with_its_stripe_price() {
        let plan = stored(pro());
        assert_eq!(
            plan.price_for(BillingInterval::Month),
            Some((9900, "price_pro_monthly"))
        );
        assert_eq!(
            plan.price_for(BillingInterval::Year),
            Some((99_000, "price_pro_annual"))
        );
        let monthly_only = stored(NewPlan {
            annual_price_cents: None,
            stripe_price_annual: None,
            ..pro()
        });
        assert_eq!(monthly_only.price_for(BillingInterval::Year), None);
        assert_eq!(
            serde_json::to_string(&BillingInterval::Year).unwrap(),
            "\"year\""
        );
    }

    #[test]
    fn a_patch_applies_only_when_the_result_is_valid() {
        let plan = stored(pro());
        let later = plan.updated_at + chrono::Duration::seconds(5);
        let cheaper = PlanPatch {
            monthly_price_cents: Some(8900),
            ..PlanPatch::default()
        };
        let changed = cheaper.apply(&plan, later).unwrap();
        assert_eq!(changed.monthly_price_cents, 8900);
        assert_eq!(changed.updated_at, later);
        assert_eq!(changed.created_at, plan.created_at);
        assert_eq!(cheaper.changed(), ["monthly_price_cents"]);

        // Dropping the annual price alone leaves its Stripe price behind.
        let half = PlanPatch {
            annual_price_cents: Some(None),
            ..PlanPatch::default()
        };
        assert_eq!(
            half.apply(&plan, later).unwrap_err().field,
            "stripe_price_annual"
        );
        let whole = PlanPatch {
            annual_price_cents: Some(None),
            stripe_price_annual: Some(None),
            ..PlanPatch::default()
        };
        assert_eq!(
            whole
                .apply(&plan, later)
                .unwrap()
                .price_for(BillingInterval::Year),
            None
        );
        assert!(PlanPatch::default().is_empty());
    }
}
