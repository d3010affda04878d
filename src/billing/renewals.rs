//! What each billing deadline does when it comes due (the renewals
//! subsystem's [`DeadlineHandler`]).
//!
//! Every decision is taken from the records as they are now, so a deadline
//! that an event overtook (the invoice was paid, the license renewed, the
//! trial converted) changes nothing. The effect is committed by the store
//! together with the deadline's firing, so it happens once.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, License, LicenseId, LicenseStatus, LicenseUpdate,
    Subscription, SubscriptionStatus,
};
use seatwarden_actors::ports::{
    Deadline, DeadlineEffect, DeadlineHandler, DeadlineKind, GatewayError, MailKind, NewMail,
    PaymentGateway, ProcessError, Store, SubscriptionId,
};

use super::{names, owner_email, store};

/// Fires billing deadlines: suspends at a grace period's end, ends the
/// sessions of an expired license, warns of an expiry, and reconciles a
/// trial's end with the payment provider.
pub struct Renewals {
    store: Arc<dyn Store>,
    /// `None` while billing is off: trial ends are then left as recorded.
    gateway: Option<Arc<dyn PaymentGateway>>,
}

impl Renewals {
    pub fn new(store: Arc<dyn Store>, gateway: Option<Arc<dyn PaymentGateway>>) -> Self {
        Self { store, gateway }
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, ProcessError> {
        self.store.subscription(id).await.map_err(store)
    }

    async fn license(&self, subject: &str) -> Result<Option<License>, ProcessError> {
        let Ok(id) = subject.parse::<uuid::Uuid>() else {
            return Err(ProcessError::Permanent(format!(
                "{subject:?} is not a license id"
            )));
        };
        self.store.license(LicenseId(id)).await.map_err(store)
    }

    /// A grace period ended: still unpaid, the license is suspended (its
    /// sessions end on every node) and the owners are told.
    async fn grace_end(&self, d: &Deadline) -> Result<DeadlineEffect, ProcessError> {
        let Some(sub) = self.subscription(&d.subject).await? else {
            return Ok(DeadlineEffect::skip("no such subscription"));
        };
        if sub.status != SubscriptionStatus::PastDue || sub.grace_ends_at != Some(d.due_at) {
            return Ok(DeadlineEffect::skip("paid, or the grace period moved"));
        }
        let Some(license) = self.store.license(sub.license_id).await.map_err(store)? else {
            return Ok(DeadlineEffect::skip("the license is gone"));
        };
        if license.status != LicenseStatus::Active {
            return Ok(DeadlineEffect::skip("the license grants no seats already"));
        }
        let (org_name, plan_name) = names(self.store.as_ref(), &sub).await?;
        let mail = owner_email(self.store.as_ref(), sub.org_id)
            .await?
            .map(|to| {
                NewMail::new(
                    MailKind::LicenseSuspended,
                    to,
                    json!({"org_name": org_name, "plan_name": plan_name}),
                )
            });
        Ok(DeadlineEffect {
            license: Some((
                license.id,
                LicenseUpdate {
                    status: Some(LicenseStatus::Suspended),
                    ..LicenseUpdate::default()
                },
            )),
            audits: vec![audit(
                &license,
                AuditEvent::LicenseSuspended,
                format!(
                    "subscription={} grace period ended unpaid (failed_payments={})",
                    sub.id, sub.failed_payments
                ),
            )],
            mail: mail.into_iter().collect(),
            ..DeadlineEffect::default()
        })
    }

    /// A license passed its expiry unrenewed: it already refuses new seats
    /// (acquire checks the expiry); this ends its live sessions, through a
    /// license revision every node hears.
    async fn expiry(&self, d: &Deadline) -> Result<DeadlineEffect, ProcessError> {
        let Some(license) = self.license(&d.subject).await? else {
            return Ok(DeadlineEffect::skip("the license is gone"));
        };
        if license.expires_at != Some(d.due_at) {
            return Ok(DeadlineEffect::skip("renewed, or the expiry moved"));
        }
        if license.status != LicenseStatus::Active {
            return Ok(DeadlineEffect::skip("the license grants no seats already"));
        }
        Ok(DeadlineEffect {
            // Setting the expiry it has: a new revision, and the sessions
            // of a license that now refuses seats end as revoked.
            license: Some((
                license.id,
                LicenseUpdate {
                    expires_at: Some(license.expires_at),
                    ..LicenseUpdate::default()
                },
            )),
            audits: vec![audit(
                &license,
                AuditEvent::LicenseExpired,
                format!("expired at {}", d.due_at.to_rfc3339()),
            )],
            ..DeadlineEffect::default()
        })
    }

    /// A license's expiry is near. Owners are warned, unless its
    /// subscription is in good standing: the provider renews that by itself
    /// and the expiry moves, so a warning would only alarm.
    async fn expiry_warning(&self, d: &Deadline) -> Result<DeadlineEffect, ProcessError> {
        let Some(license) = self.license(&d.subject).await? else {
            return Ok(DeadlineEffect::skip("the license is gone"));
        };
        if license.expires_at != Some(d.due_at) || license.status != LicenseStatus::Active {
            return Ok(DeadlineEffect::skip("renewed, moved, or not active"));
        }
        if d.due_at <= Utc::now() {
            return Ok(DeadlineEffect::skip("expired already"));
        }
        let sub = self
            .store
            .subscription_for_license(license.id)
            .await
            .map_err(store)?;
        if sub.as_ref().is_some_and(|s| {
            matches!(
                s.status,
                SubscriptionStatus::Active | SubscriptionStatus::Trialing
            )
        }) {
            return Ok(DeadlineEffect::skip("the subscription renews it"));
        }
        let Some(to) = owner_email(self.store.as_ref(), license.org_id).await? else {
            return Ok(DeadlineEffect::skip(
                "the organization has no owner to tell",
            ));
        };
        let org_name = self
            .store
            .org(license.org_id)
            .await
            .map_err(store)?
            .map_or_else(|| license.org_id.to_string(), |o| o.name);
        Ok(DeadlineEffect {
            mail: vec![NewMail::new(
                MailKind::ExpiryWarning,
                to,
                json!({
                    "org_name": org_name,
                    "key_hint": license.key_hint,
                    "seats": license.seats,
                    "expires_at": d.due_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                }),
            )],
            ..DeadlineEffect::default()
        })
    }

    /// A trial ended while our record still says trialing: the event that
    /// says how it ended may be late or lost, so the provider is asked.
    /// Its status is recorded; a subscription that ended with its trial
    /// deactivates the license.
    async fn trial_end(&self, d: &Deadline) -> Result<DeadlineEffect, ProcessError> {
        let Some(sub) = self.subscription(&d.subject).await? else {
            return Ok(DeadlineEffect::skip("no such subscription"));
        };
        if sub.status != SubscriptionStatus::Trialing || sub.trial_end != Some(d.due_at) {
            return Ok(DeadlineEffect::skip("its trial's end was applied already"));
        }
        let Some(gateway) = &self.gateway else {
            return Ok(DeadlineEffect::skip("billing is off"));
        };
        let snapshot = gateway
            .retrieve_subscription(&SubscriptionId::new(&sub.id))
            .await
            .map_err(|e| match e {
                GatewayError::Unavailable(m) => ProcessError::Retry(format!("Stripe: {m}")),
                other => ProcessError::Permanent(format!("Stripe: {other}")),
            })?;
        let status: SubscriptionStatus =
            snapshot.status.parse().map_err(ProcessError::Permanent)?;
        if status == SubscriptionStatus::Trialing {
            // Extended: the update event that moves the trial end is due.
            return Ok(DeadlineEffect::skip("still trialing at the provider"));
        }
        let mut effect = DeadlineEffect {
            trial_over: Some((sub.id.clone(), status)),
            ..DeadlineEffect::default()
        };
        if matches!(
            status,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        ) && let Some(license) = self.store.license(sub.license_id).await.map_err(store)?
            && license.status == LicenseStatus::Active
        {
            effect.license = Some((
                license.id,
                LicenseUpdate {
                    status: Some(LicenseStatus::Inactive),
                    ..LicenseUpdate::default()
                },
            ));
            effect.audits.push(audit(
                &license,
                AuditEvent::LicenseDeactivated,
                format!("subscription={} ended with its trial", sub.id),
            ));
        }
        Ok(effect)
    }
}

/// An audit entry about `license`, written by billing (no actor).
fn audit(license: &License, event: AuditEvent, detail: String) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event,
        actor_id: None,
        org_id: Some(license.org_id),
        license_id: Some(license.id),
        client: ClientInfo::default(),
        detail: Some(detail),
    }
}

#[async_trait]
impl DeadlineHandler for Renewals {
    async fn decide(&self, deadline: &Deadline) -> Result<DeadlineEffect, ProcessError> {
        match deadline.kind {
            DeadlineKind::GraceEnd => self.grace_end(deadline).await,
            DeadlineKind::Expiry => self.expiry(deadline).await,
            DeadlineKind::ExpiryWarning => self.expiry_warning(deadline).await,
            DeadlineKind::TrialEnd => self.trial_end(deadline).await,
        }
    }
}
