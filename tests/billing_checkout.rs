//! A completed Stripe checkout becomes a subscription and a license, once:
//! the fake Stripe completes a checkout made through the server's own
//! Stripe adapter and delivers `checkout.session.completed` (then
//! `invoice.paid`) signed as Stripe does; the webhooks subsystem records the
//! subscription, issues the license with the plan's seats times the
//! quantity, and enqueues the license email with its key, which then
//! acquires a seat.

mod support;

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use seatwarden::stripe::StripeGateway;
use seatwarden_actors::domain::{LicenseStatus, OrgId, SubscriptionStatus};
use seatwarden_actors::ports::{
    CheckoutRequest, IdempotencyKey, NewCustomer, PaymentGateway, PriceId,
};
use support::accounts::outbox_data;
use support::people::{owner, unique_email};
use support::stripe::{FakeStripe, RetryPolicy, TEST_SECRET_KEY, TEST_WEBHOOK_SECRET};
use support::{AppOptions, TestApp, eventually, spawn_app_with};

const WAIT: Duration = Duration::from_secs(15);

async fn billing_app(fake: &FakeStripe) -> TestApp {
    let app = spawn_app_with(AppOptions {
        overrides: vec![
            ("stripe.secret_key", TEST_SECRET_KEY.into()),
            ("stripe.webhook_secret", TEST_WEBHOOK_SECRET.into()),
            ("stripe.api_base", fake.api_base().into()),
            ("webhooks.poll_interval_ms", 100.into()),
        ],
        // Mail stays in the outbox, where the test reads the key: the
        // mailer's next poll is an hour away.
        mail_poll_ms: 3_600_000,
        ..AppOptions::default()
    })
    .await;
    fake.add_webhook_url(&app.url("/api/v1/webhooks/stripe"));
    fake.set_retry_policy(RetryPolicy {
        max_attempts: 1,
        interval: Duration::from_millis(1),
    });
    app
}

/// Opens a checkout for `quantity` of the Pro plan, as `POST
/// /checkout/session` will: a customer, then a subscription-mode session
/// with the organization and plan in its metadata.
async fn checkout(fake: &FakeStripe, org: OrgId, email: &str, quantity: u32) -> String {
    let gateway = StripeGateway::new(
        &SecretString::from(TEST_SECRET_KEY),
        &fake.api_base(),
        Duration::from_secs(5),
    )
    .expect("the adapter");
    let customer = gateway
        .create_customer(NewCustomer {
            org_id: org,
            email: email.to_owned(),
            name: "Buyer".into(),
            idempotency_key: IdempotencyKey::new(format!("customer:{org}")).unwrap(),
        })
        .await
        .expect("customer");
    gateway
        .create_checkout_session(CheckoutRequest {
            customer,
            price_id: PriceId::new("price_pro_monthly"),
            quantity,
            trial_days: Some(14),
            success_url: "http://localhost:8080/done".into(),
            cancel_url: "http://localhost:8080/cancel".into(),
            metadata: vec![
                ("org_id".into(), org.to_string()),
                ("plan_id".into(), "pro".into()),
            ],
            idempotency_key: IdempotencyKey::new(format!("checkout:{org}")).unwrap(),
        })
        .await
        .expect("checkout session")
        .id
        .to_string()
}

#[tokio::test]
async fn a_completed_checkout_records_the_subscription_and_issues_a_license_once() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let buyer = owner(&app, "buyer").await;
    let org = buyer.org.unwrap();
    let email = unique_email("billing");
    let session = checkout(&fake, org, &email, 2).await;

    let completion = fake.complete_checkout(&session).await;
    for attempt in fake.attempts() {
        assert_eq!(attempt.status, Some(200), "{attempt:?}");
    }

    let subscription = eventually(WAIT, || async {
        app.store.subscription_for_org(org).await.unwrap()
    })
    .await
    .expect("the subscription is recorded");
    assert_eq!(subscription.id, completion.subscription_id);
    assert_eq!(subscription.plan_id, "pro");
    assert_eq!(subscription.quantity, 2);
    assert_eq!(subscription.interval, "month");
    assert_eq!(subscription.status, SubscriptionStatus::Trialing);
    assert!(subscription.trial_end.is_some());
    let stripe_sub = fake.subscription(&completion.subscription_id).unwrap();
    assert_eq!(
        subscription.customer_id,
        stripe_sub["customer"].as_str().unwrap()
    );

    // The license: the plan's 10 seats times 2, the plan's features, valid
    // until the period's end plus the 3-day slack.
    let license = app
        .store
        .license(subscription.license_id)
        .await
        .unwrap()
        .expect("issued");
    assert_eq!(license.org_id, org);
    assert_eq!(license.seats, 20);
    assert_eq!(license.tier, "pro");
    assert_eq!(license.status, LicenseStatus::Active);
    assert!(!license.features.is_empty());
    let slack = license.expires_at.unwrap() - subscription.current_period_end;
    assert_eq!(slack.num_seconds(), 3 * 86_400);

    // The email carries the key, which acquires a seat.
    let mail: Value = outbox_data(&app, &email, "license_issued")
        .await
        .expect("the license email is enqueued");
    assert_eq!(mail["seats"], 20);
    assert_eq!(mail["plan_name"], "Pro");
    let key = mail["license_key"].as_str().unwrap().to_owned();
    let acquired = app.acquire(&key, "buyer-laptop").await;
    assert!(acquired.status().is_success(), "{}", acquired.status());

    // Redelivered, the completion changes nothing: one license, one email.
    let redelivered = fake.deliver(&completion.events[0]).await;
    assert_eq!(redelivered[0].status, Some(200));
    let replayed = fake
        .deliver(&fake.build_event(
            "checkout.session.completed",
            completion.events[0].object().clone(),
        ))
        .await;
    assert_eq!(
        replayed[0].status,
        Some(200),
        "a new event id, the same session"
    );
    eventually(WAIT, || async {
        let e = app.store.get(&replayed[0].event_id).await.unwrap()?;
        (e.processed_at.is_some()).then_some(())
    })
    .await
    .expect("the second completion is processed");
    assert_eq!(app.store.licenses_for_org(org).await.unwrap().len(), 1);
    let count = support::accounts::outbox_count(&app, &email, "license_issued").await;
    assert_eq!(count, 1);
}
