//! Stripe behind the [`PaymentGateway`] port, with async-stripe's client.
//!
//! [`StripeGateway`] makes the calls billing needs: create a customer,
//! create a subscription-mode Checkout Session, create a Customer Portal
//! session, retrieve a subscription. Every create call carries the caller's idempotency key
//! (the SDK's [`RequestStrategy::Idempotent`]), and is tried once: the
//! caller decides about retries, with the same key. [`webhook`] verifies
//! and parses what Stripe sends back.
//!
//! The API key never appears in an error or in `Debug` output: the SDK
//! marks its header sensitive, and every message that leaves here is
//! scrubbed of it as well.

pub mod webhook;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use stripe::{
    ClientBuilder, IdempotencyKey as SdkKey, RequestStrategy, StripeError, StripeRequest,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;

use seatwarden_actors::ports::{
    CheckoutRequest, CheckoutSession, CheckoutSessionId, CustomerId, GatewayError, IdempotencyKey,
    NewCustomer, PaymentGateway, PriceId, SubscriptionId, SubscriptionSnapshot,
};

use crate::config::StripeSettings;
use crate::redact::scrub;

/// The Stripe API version async-stripe `1.0.0-rc.10` is generated for. The
/// SDK declares it on every request (`Stripe-Version`); the webhook
/// endpoint must be created with it too, or its events may not parse.
pub const PINNED_API_VERSION: &str = "2026-09-30.endive";

/// The [`PaymentGateway`] over Stripe's API.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
    /// Kept only to scrub it out of messages.
    secret_key: SecretString,
    api_base: String,
    timeout: Duration,
}

/// `api_base` and timeout only: never the key.
impl fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeGateway")
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The client could not be built from the settings (a malformed base URL
/// or key); the message names the setting, never the key.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Stripe client: {0}")]
pub struct SetupError(String);

impl StripeGateway {
    /// A gateway when billing is on (`stripe.secret_key` set), `None` when
    /// it is off.
    pub fn from_settings(settings: &StripeSettings) -> Result<Option<Self>, SetupError> {
        let Some(key) = &settings.secret_key else {
            return Ok(None);
        };
        Self::new(key, &settings.api_base, settings.timeout()).map(Some)
    }

    /// A gateway for `secret_key` at `api_base` (which must end with `/`;
    /// requests go to `{api_base}v1/...`), each call bounded by `timeout`.
    pub fn new(
        secret_key: &SecretString,
        api_base: &str,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        if !api_base.ends_with('/') {
            return Err(SetupError(format!("api_base {api_base:?} must end with /")));
        }
        let client = ClientBuilder::new(secret_key.expose_secret())
            .url(api_base)
            .timeout(timeout)
            .app_info(
                "seatwarden",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            )
            .build()
            .map_err(|e| {
                SetupError(scrub(
                    &e.to_string(),
                    &[secret_key.expose_secret().to_owned()],
                ))
            })?;
        Ok(Self {
            client,
            secret_key: secret_key.clone(),
            api_base: api_base.to_owned(),
            timeout,
        })
    }

    fn idempotent(key: &IdempotencyKey) -> Result<RequestStrategy, GatewayError> {
        SdkKey::new(key.as_str())
            .map(RequestStrategy::Idempotent)
            .map_err(|e| GatewayError::Rejected {
                code: None,
                message: e.to_string(),
            })
    }

    /// The port's error for an SDK error: 5xx, 429, 409 and transport
    /// failures are retryable; other 4xx are rejections. Scrubbed of the key.
    fn gateway_error(&self, error: StripeError) -> GatewayError {
        let secrets = [self.secret_key.expose_secret().to_owned()];
        let clean = |m: &str| scrub(m, &secrets);
        match error {
            StripeError::Stripe(api, status) => {
                let message = clean(api.message.as_deref().unwrap_or_else(|| api.type_.as_str()));
                let code = api.code.as_ref().map(|c| c.as_str().to_owned());
                if status >= 500 || status == 429 || status == 409 {
                    GatewayError::Unavailable(format!("Stripe answered {status}: {message}"))
                } else {
                    GatewayError::Rejected { code, message }
                }
            }
            StripeError::Timeout => GatewayError::Unavailable(format!(
                "no answer from Stripe within {} ms",
                self.timeout.as_millis()
            )),
            StripeError::ClientError(m) => {
                GatewayError::Unavailable(format!("cannot reach Stripe: {}", clean(&m)))
            }
            StripeError::JSONDeserialize(m) => {
                GatewayError::Unavailable(format!("unexpected answer from Stripe: {}", clean(&m)))
            }
            StripeError::ConfigError(m) => GatewayError::Rejected {
                code: None,
                message: clean(&m),
            },
        }
    }
}

fn metadata(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn create_customer(&self, req: NewCustomer) -> Result<CustomerId, GatewayError> {
        let customer = CreateCustomer::new()
            .email(req.email)
            .name(req.name)
            .metadata(HashMap::from([(
                "org_id".to_owned(),
                req.org_id.to_string(),
            )]))
            .customize()
            .request_strategy(Self::idempotent(&req.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| self.gateway_error(e))?;
        Ok(CustomerId::new(customer.id.as_str()))
    }

    async fn create_checkout_session(
        &self,
        req: CheckoutRequest,
    ) -> Result<CheckoutSession, GatewayError> {
        let metadata = metadata(&req.metadata);
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(req.price_id.as_str().to_owned());
        line.quantity = Some(u64::from(req.quantity));
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(metadata.clone());
        subscription.trial_period_days = req.trial_days.filter(|days| *days > 0);
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(req.customer.as_str())
            .line_items(vec![line])
            .success_url(req.success_url)
            .cancel_url(req.cancel_url)
            .metadata(metadata)
            .subscription_data(subscription)
            .customize()
            .request_strategy(Self::idempotent(&req.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| self.gateway_error(e))?;
        let url = session.url.ok_or_else(|| {
            GatewayError::Unavailable(format!(
                "Stripe created checkout session {} without a URL",
                session.id.as_str()
            ))
        })?;
        Ok(CheckoutSession {
            id: CheckoutSessionId::new(session.id.as_str()),
            url,
        })
    }

    async fn create_portal_session(
        &self,
        customer: &CustomerId,
        return_url: &str,
    ) -> Result<String, GatewayError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer.as_str())
            .return_url(return_url)
            .send(&self.client)
            .await
            .map_err(|e| self.gateway_error(e))?;
        Ok(session.url)
    }

    async fn retrieve_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionSnapshot, GatewayError> {
        let sub = RetrieveSubscription::new(id.as_str())
            .send(&self.client)
            .await
            .map_err(|e| self.gateway_error(e))?;
        snapshot(&sub).map_err(GatewayError::Unavailable)
    }
}

/// What billing needs of one of the SDK's subscriptions: from the API, or
/// from a `customer.subscription.*` event's object. Since API version
/// 2025-03-31 the billing period is the item's, not the subscription's.
pub fn snapshot(sub: &stripe_billing::Subscription) -> Result<SubscriptionSnapshot, String> {
    let item = sub
        .items
        .data
        .first()
        .ok_or_else(|| format!("subscription {} has no items", sub.id))?;
    let time = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .ok_or_else(|| format!("subscription {}: timestamp {t} out of range", sub.id))
    };
    let interval = item
        .price
        .recurring
        .as_ref()
        .map(|r| r.interval.as_str().to_owned())
        .ok_or_else(|| format!("subscription {}: its price is not recurring", sub.id))?;
    Ok(SubscriptionSnapshot {
        id: SubscriptionId::new(sub.id.as_str()),
        customer: CustomerId::new(sub.customer.id().as_str()),
        status: sub.status.as_str().to_owned(),
        price: PriceId::new(item.price.id.as_str()),
        quantity: u32::try_from(item.quantity.unwrap_or(1)).unwrap_or(u32::MAX),
        interval,
        current_period_start: time(item.current_period_start)?,
        current_period_end: time(item.current_period_end)?,
        trial_end: sub.trial_end.map(time).transpose()?,
        cancel_at_period_end: sub.cancel_at_period_end,
        metadata: sub
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}
