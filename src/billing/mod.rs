//! Billing: applies the payment provider's events to subscriptions and
//! licenses.

use async_trait::async_trait;
use seatwarden_actors::ports::{ProcessError, WebhookEvent, WebhookProcessor};

/// Applies Stripe's events.
pub struct StripeEvents;

#[async_trait]
impl WebhookProcessor for StripeEvents {
    async fn process(&self, event: &WebhookEvent) -> Result<(), ProcessError> {
        Err(ProcessError::Permanent(format!(
            "events of type {} are not applied yet",
            event.kind
        )))
    }
}
