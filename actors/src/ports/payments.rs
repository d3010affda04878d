//! The payment provider, as seen from billing: the few outbound calls that
//! start a subscription and let a customer manage it.
//!
//! [`PaymentGateway`] is implemented over Stripe in the root crate
//! (`src/stripe/`); nothing here names Stripe's SDK. The ids are Stripe's
//! (`cus_...`, `cs_...`, `price_...`), kept opaque in newtypes so that a
//! customer id can't be passed where a price id belongs.
//!
//! What comes back *inbound* (signed webhook events: a checkout completed,
//! an invoice paid, a subscription changed) is not part of this port: the
//! webhook endpoint verifies and parses those itself.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::OrgId;

macro_rules! provider_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }
    };
}

provider_id!(
    /// The provider's customer: one per organization (`cus_...`).
    CustomerId
);
provider_id!(
    /// A recurring price of the provider's catalogue (`price_...`); a plan
    /// names the one it is sold at.
    PriceId
);
provider_id!(
    /// A hosted checkout page (`cs_...`).
    CheckoutSessionId
);
provider_id!(
    /// A subscription created by a completed checkout (`sub_...`).
    SubscriptionId
);
provider_id!(
    /// An invoice of a subscription (`in_...`).
    InvoiceId
);
provider_id!(
    /// A webhook event (`evt_...`): the unit of deduplication.
    EventId
);

/// The key that makes a create call safe to repeat: the provider answers a
/// repeated key with the first call's response instead of creating a
/// second object (Stripe keeps keys for at least 24 hours). Derive it from
/// what identifies the intent (e.g. the organization, plan and the request
/// the user made), never from the time of the attempt, so that a retry
/// after a timeout reuses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Longest idempotency key the provider takes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl IdempotencyKey {
    /// 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters (it
    /// travels as an HTTP header).
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidIdempotencyKey> {
        let key = key.into();
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

/// A customer to create for an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCustomer {
    /// Stored on the customer as metadata `org_id`, so the provider's
    /// dashboard and events lead back to the organization.
    pub org_id: OrgId,
    /// Where the provider sends receipts and invoices.
    pub email: String,
    /// Shown on invoices: the organization's name.
    pub name: String,
    pub idempotency_key: IdempotencyKey,
}

/// A subscription-mode checkout to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub customer: CustomerId,
    pub price_id: PriceId,
    /// Units of the price (seats); at least 1.
    pub quantity: u32,
    /// Free days before the first charge (`subscription_data.trial_period_days`);
    /// `None` or `Some(0)`: no trial.
    pub trial_days: Option<u32>,
    /// Where the browser goes after paying. May contain the provider's
    /// `{CHECKOUT_SESSION_ID}` placeholder.
    pub success_url: String,
    /// Where the browser goes when the customer backs out.
    pub cancel_url: String,
    /// Put both on the session and on the subscription it creates
    /// (`subscription_data.metadata`), so that `checkout.session.completed`
    /// and every later subscription and invoice event carry them. Billing
    /// passes `org_id` and `plan_id`.
    pub metadata: Vec<(String, String)>,
    pub idempotency_key: IdempotencyKey,
}

/// A created checkout: send the browser to `url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: CheckoutSessionId,
    pub url: String,
}

/// Why a call to the provider failed. Messages never contain the API key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The provider could not be reached, timed out, answered 5xx, 429
    /// (rate limited) or 409 (the same idempotency key is in flight), or
    /// answered something that doesn't parse. Retryable: repeat the call
    /// with the same idempotency key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (a 4xx other than 409 and 429):
    /// a bad parameter, an unknown customer or price, a wrong API key.
    /// Repeating it won't help. `code` is the provider's error code when
    /// it gave one (e.g. `resource_missing`).
    #[error("payment provider rejected the request: {message}")]
    Rejected {
        code: Option<String>,
        message: String,
    },
}

impl GatewayError {
    /// Whether repeating the call (with the same idempotency key) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Outbound calls to the payment provider.
///
/// Contract, for every implementation:
/// - Each create call sends its idempotency key; repeating a call with the
///   same key and the same request returns the first call's result and
///   creates nothing new.
/// - Errors are [`GatewayError::Unavailable`] (retry later, same key) or
///   [`GatewayError::Rejected`] (don't retry); no message and no `Debug`
///   output contains the API key.
/// - A call never waits longer than the configured timeout.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Creates the provider's customer for an organization. Billing stores
    /// the returned id and reuses it, so this runs once per organization;
    /// the idempotency key covers a retry after a lost answer.
    async fn create_customer(&self, req: NewCustomer) -> Result<CustomerId, GatewayError>;

    /// Creates a subscription-mode hosted checkout for one price and
    /// quantity, with the trial and metadata of `req` on the subscription
    /// it will create. Nothing is charged until the customer completes it;
    /// completion arrives as a `checkout.session.completed` webhook.
    async fn create_checkout_session(
        &self,
        req: CheckoutRequest,
    ) -> Result<CheckoutSession, GatewayError>;

    /// Creates a Customer Portal session and returns its URL, where the
    /// customer manages payment methods, invoices and cancellation; the
    /// portal sends them back to `return_url`. Short-lived: create one per
    /// visit.
    async fn create_portal_session(
        &self,
        customer: &CustomerId,
        return_url: &str,
    ) -> Result<String, GatewayError>;

    /// The subscription as the provider holds it now: a completed checkout
    /// names its subscription only by id.
    async fn retrieve_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionSnapshot, GatewayError>;
}

/// A subscription as the provider reports it, in the terms billing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    pub id: SubscriptionId,
    pub customer: CustomerId,
    /// The provider's status, e.g. `trialing`, `active`, `past_due`.
    pub status: String,
    /// The price of its (first) item, and how many of it.
    pub price: PriceId,
    pub quantity: u32,
    /// `month` or `year`, from the price.
    pub interval: String,
    pub current_period_start: chrono::DateTime<chrono::Utc>,
    pub current_period_end: chrono::DateTime<chrono::Utc>,
    pub trial_end: Option<chrono::DateTime<chrono::Utc>>,
    pub cancel_at_period_end: bool,
    pub metadata: Vec<(String, String)>,
}

impl SubscriptionSnapshot {
    /// A metadata value, e.g. `org_id`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_is_one_to_255_visible_characters() {
        assert!(IdempotencyKey::new("checkout:org:plan:1").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("x".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("x".repeat(256)).is_err());
    }

    #[test]
    fn only_unavailability_is_retryable() {
        assert!(GatewayError::Unavailable("timeout".into()).is_retryable());
        assert!(
            !GatewayError::Rejected {
                code: None,
                message: "no such price".into()
            }
            .is_retryable()
        );
    }
}
