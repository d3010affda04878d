//! A subscription's life after checkout, through the fake Stripe: the
//! emails that come with it (the license file attached), plan changes,
//! trials, reordered events, and the deadlines the renewals subsystem fires
//! (a grace period ending unpaid, an expiry and its warning, a trial's end)
//! once across nodes, also when a node dies between claim and effect.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, LicenseStatus, SubscriptionStatus,
};
use seatwarden_actors::ports::{DeadlineKind, WebhookStatus};
use support::accounts::{outbox_count, outbox_data, register_and_login};
use support::billing::{Subscribed, WAIT, at_checkout, billing_app, billing_node_with, subscribed};
use support::people::{error_code, unique_email};
use support::stripe::{FakeStripe, SubscriptionChange};
use support::{AppOptions, TestApp, eventually};

/// Waits until the webhook event is settled as processed.
async fn processed(app: &TestApp, event_id: &str) {
    eventually(WAIT, || async {
        let e = app.store.get(event_id).await.unwrap()?;
        e.processed_at.is_some().then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("event {event_id} is processed"));
}

/// A billing server whose renewals subsystem looks every 100 ms, with
/// `overrides` (short grace periods, warning leads).
async fn renewals_node(
    fake: &FakeStripe,
    backend: support::Backend,
    overrides: Vec<(&'static str, figment::value::Value)>,
) -> TestApp {
    let mut all = vec![("renewals.poll_interval_ms", 100.into())];
    all.extend(overrides);
    billing_node_with(
        fake,
        AppOptions {
            backend,
            mail_poll_ms: 3_600_000,
            overrides: all,
            ..AppOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn the_license_email_carries_a_license_file_that_verifies_and_a_confirmation_goes_with_it() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription,
        ..
    } = subscribed(&app, &fake, "pro").await;

    let issued = outbox_data(&app, &owner.email, "license_issued")
        .await
        .unwrap();
    let file = &issued["attachment"];
    assert_eq!(file["filename"], "license.lic");
    assert_eq!(file["content_type"], "application/jwt");
    let claims = app
        .verify_license_file(file["content"].as_str().unwrap())
        .await;
    assert_eq!(claims["license_id"], subscription.license_id.to_string());
    assert_eq!(claims["org_id"], owner.org_id.to_string());
    assert_eq!(claims["seats"], 10);
    assert_eq!(claims["tier"], "pro");
    let license = app.license_now(subscription.license_id).await;
    assert_eq!(
        claims["license_expires_at"],
        license.expires_at.unwrap().timestamp()
    );

    let confirmed = outbox_data(&app, &owner.email, "subscription_confirmed")
        .await
        .expect("the confirmation");
    assert_eq!(confirmed["plan_name"], "Pro");
    assert_eq!(confirmed["amount"], "$99.00");
    assert_eq!(confirmed["interval"], "month");
    assert_eq!(confirmed["seats"], 10);
    let trial_end = subscription
        .trial_end
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(confirmed["trial_end"], trial_end);
    assert_eq!(
        confirmed["next_charge"], trial_end,
        "charged when the trial ends"
    );
    assert!(
        confirmed.get("license_key").is_none(),
        "the key travels only in the license email"
    );
}

#[tokio::test]
async fn a_plan_change_sets_seats_tier_and_features_and_lowering_seats_evicts_nobody() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription,
        key,
    } = subscribed(&app, &fake, "pro").await;
    let org = owner.org_id;
    let mut seats = Vec::new();
    for i in 0..4 {
        seats.push(app.acquire_ok(&key, &format!("m{i}")).await);
    }

    // Down to Starter (3 seats) in the portal, with 4 seats in use.
    let change = SubscriptionChange {
        price: Some("price_starter_monthly".into()),
        ..SubscriptionChange::default()
    };
    let event = fake
        .emit_subscription_updated(&subscription.id, change)
        .await;
    processed(&app, &event.id).await;
    let license = app.license_now(subscription.license_id).await;
    assert_eq!(license.seats, 3);
    assert_eq!(license.tier, "starter");
    assert_eq!(license.features, vec!["floating seats", "email support"]);
    let recorded = app.subscription_now(&subscription.id).await;
    assert_eq!(recorded.plan_id, "starter");
    assert_eq!(app.audit_count(org, AuditEvent::PlanChanged).await, 1);
    // Nobody is evicted; nobody new gets in while 4 of 3 are in use.
    for seat in &seats {
        assert_eq!(app.heartbeat_of(seat).await.status(), 200);
    }
    let refused = eventually(WAIT, || async {
        let r = app.acquire(&key, "m-new").await;
        (r.status() == 409).then_some(r)
    })
    .await;
    assert!(refused.is_some(), "the lowered limit refuses a new seat");

    // Redelivered, nothing more happens.
    fake.deliver(&event).await;
    app.store
        .replay(&event.id, Utc::now(), &replay_audit())
        .await
        .unwrap();
    processed(&app, &event.id).await;
    assert_eq!(app.audit_count(org, AuditEvent::PlanChanged).await, 1);

    // Three of Starter: 9 seats, and room again.
    let more = SubscriptionChange {
        quantity: Some(3),
        ..SubscriptionChange::default()
    };
    let event = fake.emit_subscription_updated(&subscription.id, more).await;
    processed(&app, &event.id).await;
    let license = app.license_now(subscription.license_id).await;
    assert_eq!(license.seats, 9);
    assert_eq!(app.audit_count(org, AuditEvent::PlanChanged).await, 2);
    let admitted = eventually(WAIT, || async {
        let r = app.acquire(&key, "m-new").await;
        r.status().is_success().then_some(r)
    })
    .await;
    assert!(admitted.is_some());
}

/// An operator's replay, as the admin API audits it.
fn replay_audit() -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event: AuditEvent::WebhookReplayed,
        actor_id: None,
        org_id: None,
        license_id: None,
        client: ClientInfo::default(),
        detail: None,
    }
}

#[tokio::test]
async fn a_trial_ending_soon_is_announced_once_however_often_its_event_is_applied() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription,
        ..
    } = subscribed(&app, &fake, "pro").await;
    let event = fake.emit_trial_will_end(&subscription.id).await;
    processed(&app, &event.id).await;
    let mail = outbox_data(&app, &owner.email, "trial_ending")
        .await
        .expect("the trial-ending email");
    assert_eq!(
        mail["trial_end"],
        subscription
            .trial_end
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    );
    // Replayed by an operator (processed a second time): no second email.
    app.store
        .replay(&event.id, Utc::now(), &replay_audit())
        .await
        .unwrap();
    eventually(WAIT, || async {
        let e = app.store.get(&event.id).await.unwrap()?;
        (e.attempts >= 2 && e.processed_at.is_some()).then_some(())
    })
    .await
    .expect("processed again");
    assert_eq!(outbox_count(&app, &owner.email, "trial_ending").await, 1);
}

#[tokio::test]
async fn a_failure_that_arrives_after_its_invoice_was_paid_changes_nothing() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription,
        ..
    } = subscribed(&app, &fake, "pro").await;
    // The charge fails, then succeeds on retry; Stripe delivers the failure
    // last.
    let failed = fake.build_payment_failed(&subscription.id);
    let paid = fake.emit_renewal_paid(&subscription.id).await;
    processed(&app, &paid.id).await;
    fake.deliver(&failed).await;
    processed(&app, &failed.id).await;

    let s = app.subscription_now(&subscription.id).await;
    assert_eq!(s.failed_payments, 0);
    assert_eq!(s.grace_ends_at, None);
    assert_ne!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(outbox_count(&app, &owner.email, "payment_failed").await, 0);
    assert!(
        app.store
            .deadlines_of(&subscription.id)
            .await
            .unwrap()
            .iter()
            .all(|d| d.kind != DeadlineKind::GraceEnd),
        "no grace period runs"
    );
}

#[tokio::test]
async fn an_update_that_arrives_before_its_checkout_completes_is_applied_after_it() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let (owner, session) = at_checkout(&app, "pro").await;
    let completion = fake.build_checkout_completion(&session);
    let more = SubscriptionChange {
        quantity: Some(2),
        ..SubscriptionChange::default()
    };
    let update = fake
        .emit_subscription_updated(&completion.subscription_id, more)
        .await;
    // Not recorded yet: the update waits for a retry.
    let waiting = eventually(WAIT, || async {
        let e = app.store.get(&update.id).await.unwrap()?;
        // Settled as failed with a retry due, not merely claimed.
        (e.status == WebhookStatus::Failed && e.next_attempt_at.is_some()).then_some(e)
    })
    .await
    .expect("the update is retried later");
    assert!(waiting.last_error.unwrap().contains("not recorded yet"));

    fake.deliver_all(&completion.events).await;
    processed(&app, &update.id).await;
    let s = app.subscription_now(&completion.subscription_id).await;
    assert_eq!(s.quantity, 2);
    let license = app.license_now(s.license_id).await;
    assert_eq!(license.seats, 20, "the plan's 10 seats, twice");
    assert_eq!(outbox_count(&app, &owner.email, "license_issued").await, 1);
}

#[tokio::test]
async fn a_grace_period_ending_unpaid_suspends_once_on_two_nodes_after_a_claimer_crashed() {
    let fake = FakeStripe::start().await;
    let backend = support::Backend::Shared {
        database_url: support::services::fresh_postgres_db().await,
        redis_url: support::services::redis_url(),
    };
    let grace = vec![("billing.first_grace_secs", 5.into())];
    let a = renewals_node(&fake, backend.clone(), grace.clone()).await;
    let b = renewals_node(&fake, backend, grace).await;
    let Subscribed {
        owner,
        subscription,
        key,
    } = subscribed(&a, &fake, "pro").await;
    let org = owner.org_id;
    let on_a = a.acquire_ok(&key, "laptop-a").await;
    let on_b = b.acquire_ok(&key, "laptop-b").await;

    fake.emit_payment_failed(&subscription.id).await;
    let s = a
        .subscription_when(&subscription.id, "a grace period starts", |s| {
            s.grace_ends_at.is_some()
        })
        .await;
    let ends = s.grace_ends_at.unwrap();

    // A third node claims the grace period's end and dies before applying
    // it: its claim holds the deadline for 3 more seconds.
    let crashed = a
        .store
        .claim_deadlines(ends, Duration::ZERO, Utc::now() + TimeDelta::seconds(3), 10)
        .await
        .unwrap();
    let crashed: Vec<_> = crashed
        .into_iter()
        .filter(|c| c.deadline.kind == DeadlineKind::GraceEnd)
        .collect();
    assert_eq!(crashed.len(), 1, "claimed before it was due to anyone else");

    // Still unpaid when it ends: suspended, and the sessions on both nodes end.
    for (node, seat) in [(&a, &on_a), (&b, &on_b)] {
        let refused = eventually(Duration::from_secs(30), || async {
            let r = node.heartbeat_of(seat).await;
            (r.status() == 403).then_some(r)
        })
        .await
        .expect("the heartbeat is refused");
        assert_eq!(error_code(refused).await, "license_suspended");
    }
    let license = a.license_now(subscription.license_id).await;
    assert_eq!(license.status, LicenseStatus::Suspended);
    // Once: one suspension, one email, fired by a live node at attempt 2.
    assert_eq!(a.audit_count(org, AuditEvent::LicenseSuspended).await, 1);
    assert_eq!(outbox_count(&a, &owner.email, "license_suspended").await, 1);
    let fired = a
        .store
        .deadlines_of(&subscription.id)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeadlineKind::GraceEnd)
        .unwrap();
    assert!(fired.fired_at.is_some());
    assert_eq!(fired.attempts, 2);
    // The dead node's claim can't apply it a second time.
    let late = a
        .store
        .complete_deadline(&crashed[0], &Default::default(), Utc::now())
        .await
        .unwrap();
    assert!(!late);
}

#[tokio::test]
async fn a_license_past_its_expiry_ends_its_sessions_after_its_owners_were_warned_once() {
    let fake = FakeStripe::start().await;
    let app = renewals_node(
        &fake,
        support::Backend::Embedded,
        vec![("renewals.expiry_warning_secs", 3600.into())],
    )
    .await;
    let owner = register_and_login(&app, &unique_email("expiring")).await;
    let expires = Utc::now() + TimeDelta::seconds(3);
    let license = app
        .create_license_in(owner.org_id, 2, "pro", Some(&expires.to_rfc3339()), None, 0)
        .await;
    let seat: Value = app.acquire_ok(&license.key, "laptop").await;

    // Within the warning's lead at once: the owner is warned.
    let warning = eventually(WAIT, || async {
        outbox_data(&app, &owner.email, "expiry_warning").await
    })
    .await
    .expect("the expiry warning");
    assert_eq!(warning["seats"], 2);

    // Past the expiry, the live session ends.
    let refused = eventually(Duration::from_secs(30), || async {
        let r = app.heartbeat_of(&seat).await;
        (r.status() == 403).then_some(r)
    })
    .await
    .expect("the heartbeat is refused after the expiry");
    assert_eq!(error_code(refused).await, "license_expired");
    assert_eq!(
        app.audit_count(owner.org_id, AuditEvent::LicenseExpired)
            .await,
        1
    );
    assert_eq!(outbox_count(&app, &owner.email, "expiry_warning").await, 1);
    let refused = app.acquire(&license.key, "laptop-2").await;
    assert_eq!(refused.status(), 403);

    // Renewed, it grants seats again, and the next expiry is armed afresh.
    let later = Utc::now() + TimeDelta::days(30);
    app.store
        .update_license(
            license.id,
            &seatwarden_actors::domain::LicenseUpdate {
                expires_at: Some(Some(later)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deadlines = app
        .store
        .deadlines_of(&license.id.to_string())
        .await
        .unwrap();
    assert!(
        deadlines.iter().all(|d| d.fired_at.is_none()),
        "{deadlines:?}"
    );
    let admitted = eventually(WAIT, || async {
        let r = app.acquire(&license.key, "laptop-2").await;
        r.status().is_success().then_some(r)
    })
    .await;
    assert!(admitted.is_some());
}

#[tokio::test]
async fn a_trial_whose_end_event_was_lost_is_reconciled_with_stripe_at_its_end() {
    let fake = FakeStripe::start().await;
    let app = renewals_node(&fake, support::Backend::Embedded, vec![]).await;
    let Subscribed { subscription, .. } = subscribed(&app, &fake, "pro").await;
    assert_eq!(subscription.status, SubscriptionStatus::Trialing);
    // Stripe converts the trial; the event saying so never arrives.
    let _lost = fake.build_subscription_updated(
        &subscription.id,
        SubscriptionChange {
            status: Some("active".into()),
            ..SubscriptionChange::default()
        },
    );
    // Our record's trial ends in a second (time, compressed).
    let mut soon = subscription.clone();
    soon.trial_end = Some(Utc::now() + TimeDelta::seconds(1));
    app.store
        .change_subscription(&soon, &Default::default(), vec![], None)
        .await
        .unwrap();

    let reconciled = app
        .subscription_when(
            &subscription.id,
            "the trial's end is read back from Stripe",
            |s| s.status != SubscriptionStatus::Trialing,
        )
        .await;
    assert_eq!(reconciled.status, SubscriptionStatus::Active);
    let license = app.license_now(subscription.license_id).await;
    assert_eq!(license.status, LicenseStatus::Active);
    let trial = app.store.deadlines_of(&subscription.id).await.unwrap();
    assert_eq!(
        trial
            .iter()
            .map(|d| (d.kind, d.fired_at.is_some()))
            .collect::<Vec<_>>(),
        vec![(DeadlineKind::TrialEnd, true)],
        "fired, then kept as history: {}",
        json!(trial)
    );
}

#[tokio::test]
async fn failures_after_a_grace_period_ran_out_are_counted_without_a_second_suspension() {
    let fake = FakeStripe::start().await;
    let app = renewals_node(
        &fake,
        support::Backend::Embedded,
        vec![("billing.first_grace_secs", 1.into())],
    )
    .await;
    let Subscribed {
        owner,
        subscription,
        key,
    } = subscribed(&app, &fake, "pro").await;
    let org = owner.org_id;
    let suspended = || async {
        eventually(WAIT, || async {
            let l = app.store.license(subscription.license_id).await.unwrap()?;
            (l.status == LicenseStatus::Suspended).then_some(l)
        })
        .await
        .expect("suspended")
    };
    fake.emit_payment_failed(&subscription.id).await;
    suspended().await;
    assert_eq!(
        outbox_count(&app, &owner.email, "license_suspended").await,
        1
    );

    // Stripe's retries keep failing: counted, audited, but no new grace
    // period is promised and the license is not suspended again.
    for attempt in [2, 3] {
        let event = fake.emit_payment_failed(&subscription.id).await;
        processed(&app, &event.id).await;
        let s = app.subscription_now(&subscription.id).await;
        assert_eq!(s.failed_payments, attempt);
        assert_eq!(s.grace_ends_at, None);
    }
    suspended().await;
    assert_eq!(app.audit_count(org, AuditEvent::PaymentFailed).await, 3);
    assert_eq!(app.audit_count(org, AuditEvent::LicenseSuspended).await, 1);
    assert_eq!(outbox_count(&app, &owner.email, "payment_failed").await, 1);
    assert_eq!(
        outbox_count(&app, &owner.email, "license_suspended").await,
        1
    );

    // Paid at last: back, with seats.
    fake.emit_renewal_paid(&subscription.id).await;
    let admitted = eventually(WAIT, || async {
        let r = app.acquire(&key, "after-payment").await;
        r.status().is_success().then_some(r)
    })
    .await;
    assert!(admitted.is_some());
    assert_eq!(
        outbox_count(&app, &owner.email, "license_reactivated").await,
        1
    );
}

#[tokio::test]
async fn an_older_invoice_paid_after_a_newer_failure_keeps_the_grace_period() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let (owner, session) = at_checkout(&app, "pro").await;
    let completion = fake.build_checkout_completion(&session);
    let (completed, first_paid) = (&completion.events[0], &completion.events[1]);
    fake.deliver(completed).await;
    processed(&app, &completed.id).await;
    let sub = completion.subscription_id.clone();

    // The next period's charge fails before the first invoice's payment
    // event comes in.
    let failed = fake.emit_payment_failed(&sub).await;
    processed(&app, &failed.id).await;
    fake.deliver(first_paid).await;
    processed(&app, &first_paid.id).await;

    let s = app.subscription_now(&sub).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(s.failed_payments, 1, "the failure stands");
    let grace = s.grace_ends_at.expect("the grace period stands");
    // The license works through its grace period: its expiry follows the
    // period Stripe moved on to, past the grace period's end.
    let license = app.license_now(s.license_id).await;
    assert!(license.expires_at.unwrap() > grace, "{license:?}");
    assert_eq!(license.status, LicenseStatus::Active);
    assert_eq!(outbox_count(&app, &owner.email, "license_renewed").await, 0);
    assert_eq!(outbox_count(&app, &owner.email, "payment_failed").await, 1);
    assert!(
        app.store
            .deadlines_of(&sub)
            .await
            .unwrap()
            .iter()
            .any(|d| d.kind == DeadlineKind::GraceEnd && d.fired_at.is_none()),
        "the grace period's end is still armed"
    );
}
