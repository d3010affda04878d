//! Billing: applies Stripe's events to subscriptions and licenses.
//!
//! [`StripeEvents`] is the webhooks subsystem's processor. Each event is
//! applied by comparing what it says with what is stored, never by trusting
//! the order or the number of deliveries (Stripe promises neither), so that
//! processing an event twice changes nothing the second time.
//!
//! Applied so far: `checkout.session.completed`, which records the
//! subscription and issues its license (emailed with its key). Other event
//! types are recorded and settled as `failed` with the reason "not applied
//! by this version": kept, and replayable once a version applies them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde_json::json;
use stripe_webhook::EventObject;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, LicenseId, OrgId, PlanId, Subscription, SubscriptionStatus,
};
use seatwarden_actors::ports::{
    GatewayError, MailKind, NewMail, PaymentGateway, ProcessError, StartOutcome, Store, StoreError,
    SubscriptionId, WebhookEvent, WebhookProcessor,
};

use crate::licensing::LicenseSpec;
use crate::stripe::webhook::parse_recorded;

/// What [`StripeEvents`] needs beside its ports.
#[derive(Clone, Debug)]
pub struct BillingPolicy {
    /// `licenses.key_prefix`: new license keys start with it.
    pub key_prefix: String,
    /// `billing.expiry_slack_secs`: a license outlives its paid period by
    /// this much, so that a renewal paid a little late never interrupts
    /// anyone.
    pub expiry_slack: Duration,
}

/// Applies Stripe's events (the webhooks subsystem's processor).
pub struct StripeEvents {
    store: Arc<dyn Store>,
    /// `None` while billing is off (`stripe.secret_key` unset): events that
    /// need Stripe's API then fail, to be replayed once it is configured.
    gateway: Option<Arc<dyn PaymentGateway>>,
    policy: BillingPolicy,
}

impl StripeEvents {
    pub fn new(
        store: Arc<dyn Store>,
        gateway: Option<Arc<dyn PaymentGateway>>,
        policy: BillingPolicy,
    ) -> Self {
        Self {
            store,
            gateway,
            policy,
        }
    }

    /// `checkout.session.completed`: records the subscription the checkout
    /// created and issues its license, once per subscription.
    async fn checkout_completed(
        &self,
        event: &WebhookEvent,
        session: &stripe_shared::CheckoutSession,
    ) -> Result<(), ProcessError> {
        let permanent = |m: String| ProcessError::Permanent(m);
        if session.mode != stripe_shared::CheckoutSessionMode::Subscription {
            return Ok(()); // not one of ours: we only sell subscriptions
        }
        let Some(sub_id) = session.subscription.as_ref().map(|s| s.id().to_string()) else {
            return Err(permanent(format!(
                "checkout session {} completed without a subscription",
                session.id
            )));
        };
        if self
            .store
            .subscription(&sub_id)
            .await
            .map_err(store)?
            .is_some()
        {
            return Ok(()); // applied before: a redelivery or a replay
        }
        let meta = |key: &str| session.metadata.as_ref().and_then(|m| m.get(key)).cloned();
        let org: OrgId = meta("org_id")
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
            .map(OrgId)
            .ok_or_else(|| {
                permanent(format!(
                    "checkout session {} has no valid org_id",
                    session.id
                ))
            })?;
        let plan_id = meta("plan_id")
            .and_then(|p| PlanId::parse(&p).ok())
            .ok_or_else(|| {
                permanent(format!(
                    "checkout session {} has no valid plan_id",
                    session.id
                ))
            })?;
        let gateway = self.gateway.as_ref().ok_or_else(|| {
            permanent("billing is off (stripe.secret_key is unset): replay the event once it is configured".into())
        })?;
        let snapshot = gateway
            .retrieve_subscription(&SubscriptionId::new(sub_id.clone()))
            .await
            .map_err(|e| match e {
                GatewayError::Unavailable(m) => ProcessError::Retry(format!("Stripe: {m}")),
                other => permanent(format!("Stripe refused to show {sub_id}: {other}")),
            })?;
        let plan = self
            .store
            .plan(&plan_id)
            .await
            .map_err(store)?
            .ok_or_else(|| permanent(format!("no plan {plan_id}")))?;
        let org_row = self
            .store
            .org(org)
            .await
            .map_err(store)?
            .ok_or_else(|| permanent(format!("no organization {org}")))?;
        let email = session
            .customer_details
            .as_ref()
            .and_then(|d| d.email.clone())
            .or_else(|| session.customer_email.clone())
            .ok_or_else(|| permanent(format!("checkout session {} has no email", session.id)))?;
        let status: SubscriptionStatus = snapshot.status.parse().map_err(permanent)?;

        let expires_at = snapshot.current_period_end
            + TimeDelta::from_std(self.policy.expiry_slack).unwrap_or(TimeDelta::MAX);
        let seats = plan.seats.saturating_mul(snapshot.quantity.max(1));
        let spec = LicenseSpec {
            org_id: org,
            seats,
            tier: plan.id.as_str().to_owned(),
            features: plan.features.clone(),
            expires_at: Some(expires_at),
            offline_grace_secs: None,
            offline_overdraft: 0,
            max_machines: None,
            requires_user: false,
        };
        let (new_license, key) = spec
            .issue(&self.policy.key_prefix)
            .map_err(|e| permanent(format!("the plan's license is invalid: {}", e.message)))?;
        let now = Utc::now();
        let subscription = Subscription {
            id: sub_id.clone(),
            org_id: org,
            customer_id: snapshot.customer.to_string(),
            plan_id: plan.id.as_str().to_owned(),
            interval: snapshot.interval.clone(),
            quantity: snapshot.quantity.max(1),
            status,
            current_period_start: snapshot.current_period_start,
            current_period_end: snapshot.current_period_end,
            trial_end: snapshot.trial_end,
            license_id: LicenseId::new(), // replaced by the store
            failed_payments: 0,
            grace_ends_at: None,
            canceled_at: None,
            last_event_at: event.created,
            created_at: now,
            updated_at: now,
        };
        let audit = ActionAudit {
            at: now,
            event: AuditEvent::LicenseIssued,
            actor_id: None,
            org_id: Some(org),
            license_id: None,
            client: ClientInfo::default(),
            detail: Some(format!("subscription={sub_id} seats={seats}")),
        };
        let mail = NewMail::new(
            MailKind::LicenseIssued,
            email,
            json!({
                "org_name": org_row.name,
                "plan_name": plan.name,
                "seats": seats,
                "license_key": key,
                "expires_at": expires_at.format("%Y-%m-%d").to_string(),
                "trial_end": snapshot.trial_end.map(|t| t.format("%Y-%m-%d").to_string()),
            }),
        );
        match self
            .store
            .record_customer(org, snapshot.customer.as_str())
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(store(e)),
        }
        match self
            .store
            .start_subscription(&subscription, new_license, audit, &mail)
            .await
            .map_err(store)?
        {
            StartOutcome::Started { license, .. } => {
                // The mailer finds the email at its next poll.
                tracing::info!(subscription = %sub_id, license_id = %license.id, %org, seats,
                    "subscription started; license issued");
            }
            StartOutcome::AlreadyStarted(_) => {}
        }
        Ok(())
    }
}

/// A store failure: an outage is retried, anything else is a bug that a
/// retry would not fix.
fn store(e: StoreError) -> ProcessError {
    match e {
        StoreError::Unavailable(m) => ProcessError::Retry(format!("store: {m}")),
        other => ProcessError::Permanent(format!("store: {other}")),
    }
}

#[async_trait]
impl WebhookProcessor for StripeEvents {
    async fn process(&self, event: &WebhookEvent) -> Result<(), ProcessError> {
        let parsed = parse_recorded(&event.payload).map_err(ProcessError::Permanent)?;
        match &parsed.data.object {
            EventObject::CheckoutSessionCompleted(session) => {
                self.checkout_completed(event, session).await
            }
            // Events we subscribe to for information only.
            EventObject::CustomerCreated(_) | EventObject::CustomerUpdated(_) => Ok(()),
            _ => Err(ProcessError::Permanent(format!(
                "events of type {} are not applied by this version",
                event.kind
            ))),
        }
    }
}
