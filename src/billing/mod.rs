//! Billing: applies Stripe's events to subscriptions and licenses.
//!
//! [`StripeEvents`] is the webhooks subsystem's processor. Each event is
//! applied by comparing what it says with what is stored, never by trusting
//! the order or the number of deliveries (Stripe promises neither), so that
//! processing an event twice changes nothing the second time.
//!
//! Applied so far:
//! - `checkout.session.completed` records the subscription and issues its
//!   license (emailed with its key);
//! - `invoice.paid` renews: the license's expiry follows the subscription's
//!   period end as Stripe reports it now, a suspended license is
//!   reactivated, the failed-payment count is reset;
//! - `invoice.payment_failed` starts, then restarts, a grace period, and
//!   suspends the license at the third failure;
//! - `customer.subscription.updated` records a plan or quantity change and
//!   gives the license the new plan's seats (times the quantity), tier and
//!   features;
//! - `customer.subscription.trial_will_end` tells the owners;
//! - `customer.subscription.deleted` deactivates the license, which ends its
//!   live sessions on every node.
//!
//! Deadlines (a grace period's end, an expiry, a trial's end) are fired by
//! the renewals subsystem, with [`Renewals`] deciding what each one does.
//!
//! Other event types are recorded and settled as `failed` with the reason
//! "not applied by this version": kept, and replayable once a version
//! applies them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde_json::json;
use stripe_webhook::EventObject;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, BillingInterval, ClientInfo, License, LicenseId, LicenseStatus,
    LicenseUpdate, NewLicense, OrgId, PageRequest, PlanId, Role, Subscription, SubscriptionStatus,
};
use seatwarden_actors::ports::{
    GatewayError, MailKind, NewMail, PaymentGateway, ProcessError, StartOutcome, Store, StoreError,
    SubscriptionId, SubscriptionSnapshot, WebhookEvent, WebhookProcessor,
};

use crate::licensing::LicenseSpec;
use crate::signing::LicenseFileClaims;
use crate::signing::keys::SigningKeys;

mod renewals;
use crate::stripe::webhook::parse_recorded;
pub use renewals::Renewals;

/// What [`StripeEvents`] needs beside its ports.
#[derive(Clone, Debug)]
pub struct BillingPolicy {
    /// `licenses.key_prefix`: new license keys start with it.
    pub key_prefix: String,
    /// `billing.expiry_slack_secs`: a license outlives its paid period by
    /// this much, so that a renewal paid a little late never interrupts
    /// anyone.
    pub expiry_slack: Duration,
    /// `billing.first_grace_secs` and `billing.second_grace_secs`.
    pub first_grace: Duration,
    pub second_grace: Duration,
    /// `licenses.file_ttl_days`: how long the license file attached to the
    /// license email stays valid.
    pub file_ttl_days: u32,
}

/// Applies Stripe's events (the webhooks subsystem's processor).
pub struct StripeEvents {
    store: Arc<dyn Store>,
    /// `None` while billing is off (`stripe.secret_key` unset): events that
    /// need Stripe's API then fail, to be replayed once it is configured.
    gateway: Option<Arc<dyn PaymentGateway>>,
    /// Signs the license file attached to a new license's email.
    signer: SigningKeys,
    policy: BillingPolicy,
}

impl StripeEvents {
    pub fn new(
        store: Arc<dyn Store>,
        gateway: Option<Arc<dyn PaymentGateway>>,
        signer: SigningKeys,
        policy: BillingPolicy,
    ) -> Self {
        Self {
            store,
            gateway,
            signer,
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
        let snapshot = self.retrieve(&sub_id).await?;
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
            max_borrow_hours: 0,
        };
        let (new_license, key) = spec
            .issue(&self.policy.key_prefix)
            .map_err(|e| permanent(format!("the plan's license is invalid: {}", e.message)))?;
        let now = Utc::now();
        // The license's id is chosen here, so that its file can be signed
        // before the license, the subscription and the email commit
        // together.
        let license_id = LicenseId::new();
        let file = self.license_file(license_id, &new_license, now).await?;
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
            license_id,
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
        let day = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        let interval: BillingInterval = snapshot.interval.parse().unwrap_or(BillingInterval::Month);
        let unit_cents = plan
            .price_for(interval)
            .map_or(plan.monthly_price_cents, |(c, _)| c);
        let confirmed = NewMail::new(
            MailKind::SubscriptionConfirmed,
            email.clone(),
            json!({
                "org_name": org_row.name,
                "plan_name": plan.name,
                "seats": seats,
                "quantity": snapshot.quantity.max(1),
                "interval": interval.as_str(),
                "amount": money(unit_cents, &plan.currency),
                "trial_end": snapshot.trial_end.map(day),
                "next_charge": day(snapshot.trial_end.unwrap_or(snapshot.current_period_end)),
            }),
        );
        let issued = NewMail::new(
            MailKind::LicenseIssued,
            email,
            json!({
                "org_name": org_row.name,
                "plan_name": plan.name,
                "seats": seats,
                "license_key": key,
                "expires_at": day(expires_at),
                "trial_end": snapshot.trial_end.map(day),
                "attachment": {
                    "filename": "license.lic",
                    "content_type": "application/jwt",
                    "content": file,
                },
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
            .start_subscription(&subscription, new_license, audit, &[confirmed, issued])
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

impl StripeEvents {
    /// The signed license file of a license about to be issued.
    async fn license_file(
        &self,
        id: LicenseId,
        new: &NewLicense,
        now: chrono::DateTime<Utc>,
    ) -> Result<String, ProcessError> {
        let license = License {
            id,
            org_id: new.org_id,
            key_hint: new.key_hint.clone(),
            seats: new.seats,
            tier: new.tier.clone(),
            features: new.features.clone(),
            status: LicenseStatus::Active,
            expires_at: new.expires_at,
            created_at: now,
            offline_grace_secs: new.offline_grace_secs,
            offline_overdraft: new.offline_overdraft,
            max_machines: new.max_machines,
            requires_user: new.requires_user,
            max_borrow_hours: new.max_borrow_hours,
        };
        let claims = LicenseFileClaims::for_license(&license, now, self.policy.file_ttl_days);
        self.signer
            .sign_license_file(&claims)
            .await
            .map_err(|e| ProcessError::Retry(format!("could not sign the license file: {e}")))
    }

    /// Who hears about an invoice: the address Stripe billed, else the
    /// organization's first owner.
    async fn invoice_recipient(
        &self,
        invoice: &stripe_shared::Invoice,
        org: OrgId,
    ) -> Result<Option<String>, ProcessError> {
        match &invoice.customer_email {
            Some(email) => Ok(Some(email.clone())),
            None => owner_email(self.store.as_ref(), org).await,
        }
    }

    fn slack(&self) -> TimeDelta {
        TimeDelta::from_std(self.policy.expiry_slack).unwrap_or(TimeDelta::MAX)
    }

    async fn retrieve(&self, id: &str) -> Result<SubscriptionSnapshot, ProcessError> {
        let gateway = self.gateway.as_ref().ok_or_else(|| {
            ProcessError::Permanent(
                "billing is off (stripe.secret_key is unset): replay the event once it is configured"
                    .into(),
            )
        })?;
        gateway
            .retrieve_subscription(&SubscriptionId::new(id))
            .await
            .map_err(|e| match e {
                GatewayError::Unavailable(m) => ProcessError::Retry(format!("Stripe: {m}")),
                other => ProcessError::Permanent(format!("Stripe refused to show {id}: {other}")),
            })
    }

    /// A recorded subscription; a retry while it is not recorded yet, since
    /// its checkout's completion may still be on its way.
    async fn recorded(&self, id: &str) -> Result<Subscription, ProcessError> {
        self.store
            .subscription(id)
            .await
            .map_err(store)?
            .ok_or_else(|| ProcessError::Retry(format!("subscription {id} is not recorded yet")))
    }

    fn audit(event: AuditEvent, detail: String) -> ActionAudit {
        ActionAudit {
            at: Utc::now(),
            event,
            actor_id: None,
            org_id: None,
            license_id: None,
            client: ClientInfo::default(),
            detail: Some(detail),
        }
    }

    /// `invoice.paid`: the license's expiry follows the period Stripe
    /// reports now (read back, so the order of events doesn't matter), a
    /// suspended license is reactivated and the failed payments are
    /// forgotten. Nothing changes, and no email goes out, when all of that
    /// was applied already (the first invoice of a checkout, a
    /// redelivery).
    async fn invoice_paid(
        &self,
        event: &WebhookEvent,
        invoice: &stripe_shared::Invoice,
    ) -> Result<(), ProcessError> {
        let Some(sub_id) = invoice_subscription(invoice) else {
            return Ok(()); // not a subscription's invoice
        };
        let stored = self.recorded(&sub_id).await?;
        let snapshot = self.retrieve(&sub_id).await?;
        let license = self
            .store
            .license(stored.license_id)
            .await
            .map_err(store)?
            .ok_or_else(|| ProcessError::Permanent(format!("no license for {sub_id}")))?;
        let status: SubscriptionStatus =
            snapshot.status.parse().map_err(ProcessError::Permanent)?;
        // Settled: Stripe, read back now, has no payment overdue. An older
        // invoice's payment arriving after a newer failure (Stripe keeps no
        // order) leaves the failure, its grace period and a suspension be.
        let settled = matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        );
        let expires_at = snapshot.current_period_end + self.slack();
        let renews = license.expires_at.is_none_or(|e| expires_at > e);
        let reactivates = settled && license.status == LicenseStatus::Suspended;
        let forgives = settled && (stored.failed_payments > 0 || stored.grace_ends_at.is_some());
        if !renews && !reactivates && !forgives {
            return Ok(());
        }
        let mut next = stored.clone();
        next.status = status;
        next.current_period_start = snapshot.current_period_start;
        next.current_period_end = snapshot.current_period_end;
        next.trial_end = snapshot.trial_end;
        next.quantity = snapshot.quantity.max(1);
        if settled {
            next.failed_payments = 0;
            next.grace_ends_at = None;
        }
        next.last_event_at = stored.last_event_at.max(event.created);
        next.updated_at = Utc::now();
        let update = LicenseUpdate {
            expires_at: renews.then_some(Some(expires_at)),
            status: reactivates.then_some(LicenseStatus::Active),
            ..LicenseUpdate::default()
        };
        let mut audits = Vec::new();
        if renews {
            audits.push(Self::audit(
                AuditEvent::LicenseRenewed,
                format!(
                    "subscription={sub_id} until={}",
                    expires_at.format("%Y-%m-%d")
                ),
            ));
        }
        if reactivates {
            audits.push(Self::audit(
                AuditEvent::LicenseReactivated,
                format!("subscription={sub_id}"),
            ));
        }
        let (org_name, plan_name) = names(self.store.as_ref(), &stored).await?;
        let kind = if reactivates {
            MailKind::LicenseReactivated
        } else {
            MailKind::LicenseRenewed
        };
        // An older invoice paid while a newer one is overdue: no "your
        // payment went through" while another one is failing.
        let to = if settled {
            self.invoice_recipient(invoice, stored.org_id).await?
        } else {
            None
        };
        let mail = to.map(|to| {
            NewMail::once(
                &event.id,
                kind,
                to,
                json!({
                    "org_name": org_name,
                    "plan_name": plan_name,
                    "expires_at": expires_at.format("%Y-%m-%d").to_string(),
                    "reactivated": reactivates,
                }),
            )
        });
        self.store
            .change_subscription(&next, &update, audits, mail.as_ref())
            .await
            .map_err(store)?;
        tracing::info!(subscription = %sub_id, renews, reactivates, "invoice paid applied");
        Ok(())
    }

    /// `invoice.payment_failed`: the invoice's `attempt_count` is the
    /// number of failed payments in a row, so a redelivered or late event
    /// (a count not above the stored one) changes nothing. The first starts
    /// a grace period (`first_grace`) with a warning; the second restarts it
    /// at `second_grace` with an urgent email; the third suspends the
    /// license, which ends its live sessions on every node. The
    /// subscription is `past_due` until paid.
    async fn payment_failed(
        &self,
        event: &WebhookEvent,
        invoice: &stripe_shared::Invoice,
    ) -> Result<(), ProcessError> {
        let Some(sub_id) = invoice_subscription(invoice) else {
            return Ok(());
        };
        let stored = self.recorded(&sub_id).await?;
        let failures = u32::try_from(invoice.attempt_count.max(1)).unwrap_or(u32::MAX);
        if failures <= stored.failed_payments || stored.status == SubscriptionStatus::Canceled {
            return Ok(()); // applied before, or older than what is stored
        }
        // A failure that arrives after the invoice was paid after all (Stripe
        // promises no order) is history: Stripe, read back now, says whether
        // a payment is still overdue.
        let snapshot = self.retrieve(&sub_id).await?;
        let now_at_stripe: SubscriptionStatus =
            snapshot.status.parse().map_err(ProcessError::Permanent)?;
        if !matches!(
            now_at_stripe,
            SubscriptionStatus::PastDue
                | SubscriptionStatus::Unpaid
                | SubscriptionStatus::Incomplete
        ) {
            tracing::info!(subscription = %sub_id, status = now_at_stripe.as_str(),
                "a payment failure that was settled since; nothing to do");
            return Ok(());
        }
        let now = Utc::now();
        // Suspended already (its grace period ran out first): a further
        // failure is counted and audited, with no new grace period to
        // announce and no second suspension.
        let license = self
            .store
            .license(stored.license_id)
            .await
            .map_err(store)?
            .ok_or_else(|| ProcessError::Permanent(format!("no license for {sub_id}")))?;
        let suspended = license.status == LicenseStatus::Suspended;
        let grace = match failures {
            _ if suspended => None,
            1 => Some(self.policy.first_grace),
            2 => Some(self.policy.second_grace),
            _ => None,
        }
        .map(|g| now + TimeDelta::from_std(g).unwrap_or(TimeDelta::MAX));
        let mut next = stored.clone();
        next.status = SubscriptionStatus::PastDue;
        next.failed_payments = failures;
        next.grace_ends_at = grace;
        next.last_event_at = stored.last_event_at.max(event.created);
        next.updated_at = now;
        let mut audits = vec![Self::audit(
            AuditEvent::PaymentFailed,
            format!(
                "subscription={sub_id} invoice={} attempt={failures}",
                invoice.id.as_ref().map_or("-", |id| id.as_str())
            ),
        )];
        // The expiry follows Stripe's current period, which moved on with
        // the invoice that failed: the grace period, not the old period's
        // end, decides how long an unpaid license works.
        let expires_at = snapshot.current_period_end + self.slack();
        let mut update = LicenseUpdate {
            expires_at: license
                .expires_at
                .is_some_and(|e| expires_at > e)
                .then_some(Some(expires_at)),
            ..LicenseUpdate::default()
        };
        let (org_name, plan_name) = names(self.store.as_ref(), &stored).await?;
        let notice = match grace {
            None if suspended => None,
            Some(ends) => {
                if failures == 1 {
                    audits.push(Self::audit(
                        AuditEvent::GracePeriodStarted,
                        format!("subscription={sub_id} until={}", ends.to_rfc3339()),
                    ));
                }
                Some((
                    MailKind::PaymentFailed,
                    json!({
                        "org_name": org_name,
                        "plan_name": plan_name,
                        "urgent": failures > 1,
                        "grace_ends_at": ends.format("%Y-%m-%d %H:%M UTC").to_string(),
                    }),
                ))
            }
            None => {
                update.status = Some(LicenseStatus::Suspended);
                audits.push(Self::audit(
                    AuditEvent::LicenseSuspended,
                    format!("subscription={sub_id} failed_payments={failures}"),
                ));
                Some((
                    MailKind::LicenseSuspended,
                    json!({"org_name": org_name, "plan_name": plan_name}),
                ))
            }
        };
        let to = match notice {
            Some(_) => self.invoice_recipient(invoice, stored.org_id).await?,
            None => None,
        };
        let mail = to
            .zip(notice)
            .map(|(to, (kind, data))| NewMail::once(&event.id, kind, to, data));
        self.store
            .change_subscription(&next, &update, audits, mail.as_ref())
            .await
            .map_err(store)?;
        tracing::info!(subscription = %sub_id, failures, "failed payment applied");
        Ok(())
    }

    /// `customer.subscription.deleted`: the subscription is over; its
    /// license stops granting seats and its live sessions end (revoked),
    /// through the license change every node hears.
    async fn subscription_deleted(
        &self,
        event: &WebhookEvent,
        sub: &stripe_shared::Subscription,
    ) -> Result<(), ProcessError> {
        let sub_id = sub.id.to_string();
        let stored = self.recorded(&sub_id).await?;
        if stored.status == SubscriptionStatus::Canceled {
            return Ok(()); // applied before
        }
        let ended = sub
            .ended_at
            .or(sub.canceled_at)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .unwrap_or_else(Utc::now);
        let mut next = stored.clone();
        next.status = SubscriptionStatus::Canceled;
        next.canceled_at = Some(ended);
        next.grace_ends_at = None;
        next.last_event_at = stored.last_event_at.max(event.created);
        next.updated_at = Utc::now();
        let update = LicenseUpdate {
            status: Some(LicenseStatus::Inactive),
            ..LicenseUpdate::default()
        };
        let audits = vec![Self::audit(
            AuditEvent::LicenseDeactivated,
            format!("subscription={sub_id} ended"),
        )];
        let (org_name, plan_name) = names(self.store.as_ref(), &stored).await?;
        let mail = owner_email(self.store.as_ref(), stored.org_id)
            .await?
            .map(|to| {
                NewMail::once(
                    &event.id,
                    MailKind::SubscriptionCancelled,
                    to,
                    json!({"org_name": org_name, "plan_name": plan_name}),
                )
            });
        self.store
            .change_subscription(&next, &update, audits, mail.as_ref())
            .await
            .map_err(store)?;
        tracing::info!(subscription = %sub_id, "subscription ended; license deactivated");
        Ok(())
    }
}

/// The organization's name and the plan's, for email.
pub(crate) async fn names(
    store: &dyn Store,
    s: &Subscription,
) -> Result<(String, String), ProcessError> {
    let org = store.org(s.org_id).await.map_err(self::store)?;
    let plan = match PlanId::parse(&s.plan_id) {
        Ok(id) => store.plan(&id).await.map_err(self::store)?,
        Err(_) => None,
    };
    Ok((
        org.map_or_else(|| s.org_id.to_string(), |o| o.name),
        plan.map_or_else(|| s.plan_id.clone(), |p| p.name),
    ))
}

/// Where billing email goes when the event names no address: the
/// organization's first owner.
pub(crate) async fn owner_email(
    store: &dyn Store,
    org: OrgId,
) -> Result<Option<String>, ProcessError> {
    let members = store
        .members(org, PageRequest::first(100))
        .await
        .map_err(self::store)?;
    Ok(members
        .items
        .into_iter()
        .find(|m| m.role == Role::Owner)
        .map(|m| m.email))
}

impl StripeEvents {
    /// `customer.subscription.updated`: the subscription as Stripe reports
    /// it now (read back, so a late or repeated event changes nothing) is
    /// recorded. A plan or quantity change sets the license's seats (the
    /// plan's times the quantity), tier and features; lowering seats
    /// evicts no live session, it only refuses new ones beyond the limit.
    async fn subscription_updated(
        &self,
        event: &WebhookEvent,
        sub: &stripe_shared::Subscription,
    ) -> Result<(), ProcessError> {
        let sub_id = sub.id.to_string();
        let stored = self.recorded(&sub_id).await?;
        if stored.status == SubscriptionStatus::Canceled {
            return Ok(()); // over: a late update changes nothing
        }
        let snapshot = self.retrieve(&sub_id).await?;
        let plans = self.store.plans(true).await.map_err(store)?;
        let plan = plans
            .into_iter()
            .find(|p| {
                p.stripe_price_monthly == snapshot.price.as_str()
                    || p.stripe_price_annual.as_deref() == Some(snapshot.price.as_str())
            })
            .ok_or_else(|| {
                ProcessError::Permanent(format!(
                    "no plan has the price {} of subscription {sub_id}",
                    snapshot.price.as_str()
                ))
            })?;
        let status: SubscriptionStatus =
            snapshot.status.parse().map_err(ProcessError::Permanent)?;
        let quantity = snapshot.quantity.max(1);
        let mut next = stored.clone();
        next.plan_id = plan.id.as_str().to_owned();
        next.interval = snapshot.interval.clone();
        next.quantity = quantity;
        next.status = status;
        next.current_period_start = snapshot.current_period_start;
        next.current_period_end = snapshot.current_period_end;
        next.trial_end = snapshot.trial_end;
        let license = self
            .store
            .license(stored.license_id)
            .await
            .map_err(store)?
            .ok_or_else(|| ProcessError::Permanent(format!("no license for {sub_id}")))?;
        let seats = plan.seats.saturating_mul(quantity);
        let tier = plan.id.as_str().to_owned();
        let terms_change =
            license.seats != seats || license.tier != tier || license.features != plan.features;
        let same = |a: &Subscription, b: &Subscription| {
            (
                &a.plan_id,
                &a.interval,
                a.quantity,
                a.status,
                a.current_period_start,
                a.current_period_end,
                a.trial_end,
            ) == (
                &b.plan_id,
                &b.interval,
                b.quantity,
                b.status,
                b.current_period_start,
                b.current_period_end,
                b.trial_end,
            )
        };
        if same(&next, &stored) && !terms_change {
            return Ok(()); // applied before
        }
        next.last_event_at = stored.last_event_at.max(event.created);
        next.updated_at = Utc::now();
        let mut update = LicenseUpdate::default();
        let mut audits = Vec::new();
        if terms_change {
            update.seats = Some(seats);
            update.tier = Some(tier);
            update.features = Some(plan.features.clone());
            audits.push(Self::audit(
                AuditEvent::PlanChanged,
                format!(
                    "subscription={sub_id} plan={}->{} quantity={}->{quantity} seats={}->{seats}",
                    stored.plan_id, next.plan_id, stored.quantity, license.seats
                ),
            ));
        }
        self.store
            .change_subscription(&next, &update, audits, None)
            .await
            .map_err(store)?;
        tracing::info!(subscription = %sub_id, plan = %next.plan_id, quantity, seats,
            terms_change, "subscription update applied");
        Ok(())
    }

    /// `customer.subscription.trial_will_end` (three days before): the
    /// owners are told, once per event.
    async fn trial_will_end(
        &self,
        event: &WebhookEvent,
        sub: &stripe_shared::Subscription,
    ) -> Result<(), ProcessError> {
        let stored = self.recorded(sub.id.as_str()).await?;
        if stored.status != SubscriptionStatus::Trialing {
            return Ok(()); // converted or ended already
        }
        let trial_end = sub
            .trial_end
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .or(stored.trial_end);
        let Some(trial_end) = trial_end else {
            return Ok(());
        };
        let (org_name, plan_name) = names(self.store.as_ref(), &stored).await?;
        let Some(to) = owner_email(self.store.as_ref(), stored.org_id).await? else {
            return Ok(());
        };
        let mail = NewMail::once(
            &event.id,
            MailKind::TrialEnding,
            to,
            json!({
                "org_name": org_name,
                "plan_name": plan_name,
                "trial_end": trial_end.format("%Y-%m-%d").to_string(),
            }),
        );
        let mut next = stored.clone();
        next.last_event_at = stored.last_event_at.max(event.created);
        self.store
            .change_subscription(&next, &LicenseUpdate::default(), Vec::new(), Some(&mail))
            .await
            .map_err(store)?;
        Ok(())
    }
}

/// An amount in cents as an email shows it: `$99.00` for USD, else
/// `99.00 EUR`.
fn money(cents: i64, currency: &str) -> String {
    let amount = format!("{}.{:02}", cents / 100, (cents % 100).abs());
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("${amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

/// The subscription an invoice bills, if any.
fn invoice_subscription(invoice: &stripe_shared::Invoice) -> Option<String> {
    invoice
        .subscription
        .as_ref()
        .map(|s| s.id().to_string())
        .or_else(|| {
            invoice
                .parent
                .as_ref()
                .and_then(|p| p.subscription_details.as_ref())
                .map(|d| d.subscription.id().to_string())
        })
}

/// A store failure: an outage is retried, anything else is a bug that a
/// retry would not fix.
pub(crate) fn store(e: StoreError) -> ProcessError {
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
            EventObject::InvoicePaid(invoice) => self.invoice_paid(event, invoice).await,
            EventObject::InvoicePaymentFailed(invoice) => self.payment_failed(event, invoice).await,
            EventObject::CustomerSubscriptionDeleted(sub) => {
                self.subscription_deleted(event, sub).await
            }
            EventObject::CustomerSubscriptionUpdated(sub) => {
                self.subscription_updated(event, sub).await
            }
            EventObject::CustomerSubscriptionTrialWillEnd(sub) => {
                self.trial_will_end(event, sub).await
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
