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
use support::billing::{
    Subscribed, WAIT, at_checkout, billing_app, billing_node, checkout_body, post, subscribed,
};
use support::eventually;
use support::people::{owner, unique_email};
use support::stripe::{FakeStripe, TEST_SECRET_KEY};

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

#[tokio::test]
async fn an_owner_opens_a_checkout_with_the_plans_price_trial_and_metadata_and_one_customer() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let owner = support::accounts::register_and_login(&app, &unique_email("owner")).await;
    let org = owner.org_id;

    let first = post(
        &app,
        "/api/v1/checkout/session",
        &owner.access_token,
        checkout_body(org, "pro"),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert!(first["id"].as_str().unwrap().starts_with("cs_"));
    assert!(first["url"].as_str().unwrap().starts_with("http"));

    let sessions = fake.requests_to("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let sent = &sessions[0];
    assert_eq!(sent.param("mode"), Some("subscription"));
    assert_eq!(
        sent.param("line_items[0][price]"),
        Some("price_pro_monthly")
    );
    assert_eq!(sent.param("line_items[0][quantity]"), Some("1"));
    assert_eq!(
        sent.param("subscription_data[trial_period_days]"),
        Some("14")
    );
    assert_eq!(
        sent.param("metadata[org_id]"),
        Some(org.to_string().as_str())
    );
    assert_eq!(sent.param("metadata[plan_id]"), Some("pro"));
    assert_eq!(
        sent.param("success_url"),
        Some("http://localhost:8080/billing/done")
    );
    assert!(sent.idempotency_key.is_some());
    let customers = fake.requests_to("/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].param("email"), Some(owner.email.as_str()));

    // A double click gets the same session; a second plan reuses the customer.
    let again: Value = post(
        &app,
        "/api/v1/checkout/session",
        &owner.access_token,
        checkout_body(org, "pro"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(again["id"], first["id"]);
    let mut yearly = checkout_body(org, "enterprise");
    yearly["interval"] = "year".into();
    let other = post(
        &app,
        "/api/v1/checkout/session",
        &owner.access_token,
        yearly,
    )
    .await;
    assert_eq!(other.status(), 200);
    let last = fake.requests_to("/v1/checkout/sessions").pop().unwrap();
    assert_eq!(
        last.param("line_items[0][price]"),
        Some("price_enterprise_annual")
    );
    assert_eq!(
        fake.requests_to("/v1/customers").len(),
        1,
        "one customer per organization"
    );
    assert_eq!(
        app.store.customer_for_org(org).await.unwrap().as_deref(),
        fake.customers()[0]["id"].as_str()
    );
}

#[tokio::test]
async fn checkout_refuses_foreign_redirects_members_keys_unknown_plans_and_missing_intervals() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let owner = support::accounts::register_and_login(&app, &unique_email("owner")).await;
    let org = owner.org_id;
    let member = app.member(&owner, org, "member", "member").await;
    let (_, key) = app.api_key(&owner, org, "member").await;
    let path = "/api/v1/checkout/session";

    for (field, url) in [
        ("success_url", "http://localhost:8080.evil.example/done"),
        ("cancel_url", "https://attacker.example/"),
    ] {
        let mut body = checkout_body(org, "pro");
        body[field] = url.into();
        let response = post(&app, path, &owner.access_token, body).await;
        assert_eq!(response.status(), 400, "{url}");
        assert_eq!(
            support::people::error_code(response).await,
            "invalid_redirect_url"
        );
    }
    let response = post(&app, path, &member.access_token, checkout_body(org, "pro")).await;
    assert_eq!(response.status(), 403);
    let response = post(&app, path, &key, checkout_body(org, "pro")).await;
    assert_eq!(response.status(), 403, "an API key never buys");
    let response = post(
        &app,
        path,
        &owner.access_token,
        checkout_body(OrgId::new(), "pro"),
    )
    .await;
    assert_eq!(response.status(), 404);
    let response = post(
        &app,
        path,
        &owner.access_token,
        checkout_body(org, "platinum"),
    )
    .await;
    assert_eq!(
        support::people::error_code(response).await,
        "plan_not_found"
    );
    let mut yearly = checkout_body(org, "starter");
    yearly["interval"] = "year".into();
    let response = post(&app, path, &owner.access_token, yearly).await;
    assert_eq!(
        support::people::error_code(response).await,
        "interval_unavailable"
    );
    let mut bad = checkout_body(org, "pro");
    bad["interval"] = "week".into();
    assert_eq!(
        post(&app, path, &owner.access_token, bad).await.status(),
        400
    );

    assert!(
        fake.requests_to("/v1/checkout/sessions").is_empty(),
        "nothing reached Stripe"
    );
}

#[tokio::test]
async fn after_its_checkout_an_organization_sees_its_subscription_and_opens_the_portal() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let owner = support::accounts::register_and_login(&app, &unique_email("owner")).await;
    let org = owner.org_id;
    let sub_path = format!("/api/v1/orgs/{org}/subscription");
    let portal = serde_json::json!({"org_id": org, "return_url": "http://localhost:8080/account"});

    let get = |token: String| app.client.get(app.url(&sub_path)).bearer_auth(token).send();
    let none = get(owner.access_token.clone()).await.unwrap();
    assert_eq!(
        support::people::error_code(none).await,
        "subscription_not_found"
    );
    let response = post(
        &app,
        "/api/v1/billing/portal",
        &owner.access_token,
        portal.clone(),
    )
    .await;
    assert_eq!(
        support::people::error_code(response).await,
        "customer_not_found"
    );

    let session: Value = post(
        &app,
        "/api/v1/checkout/session",
        &owner.access_token,
        checkout_body(org, "starter"),
    )
    .await
    .json()
    .await
    .unwrap();
    let completion = fake
        .complete_checkout(session["id"].as_str().unwrap())
        .await;
    let body = eventually(WAIT, || async {
        let response = get(owner.access_token.clone()).await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await
    .expect("the subscription appears");
    let body: Value = body.json().await.unwrap();
    assert_eq!(body["id"], completion.subscription_id.as_str());
    assert_eq!(body["plan_id"], "starter");
    assert_eq!(body["status"], "trialing");
    assert_eq!(body["grace_ends_at"], Value::Null);

    let opened = post(
        &app,
        "/api/v1/billing/portal",
        &owner.access_token,
        portal.clone(),
    )
    .await;
    assert_eq!(opened.status(), 200);
    let opened: Value = opened.json().await.unwrap();
    assert!(opened["url"].as_str().unwrap().starts_with("http"));
    let mut elsewhere = portal;
    elsewhere["return_url"] = "http://evil.example/".into();
    let refused = post(
        &app,
        "/api/v1/billing/portal",
        &owner.access_token,
        elsewhere,
    )
    .await;
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn a_paid_renewal_extends_the_license_once_and_a_deleted_subscription_ends_its_seats() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription: first,
        key,
    } = subscribed(&app, &fake, "pro").await;
    let sub_id = first.id.clone();
    let seat: Value = app.acquire_ok(&key, "laptop").await;

    // Renewed: the expiry follows the new period, and the email goes out once
    // however often Stripe delivers the event.
    let renewal = fake.emit_renewal_paid(&sub_id).await;
    let renewed = app
        .subscription_when(&sub_id, "renewed", |s| {
            s.current_period_end > first.current_period_end
        })
        .await;
    let license = app.license_now(first.license_id).await;
    assert_eq!(
        (license.expires_at.unwrap() - renewed.current_period_end).num_seconds(),
        3 * 86_400
    );
    fake.deliver_times(&renewal, 2).await;
    let replayed = fake
        .deliver(&fake.build_event("invoice.paid", renewal.object().clone()))
        .await;
    eventually(WAIT, || async {
        let e = app.store.get(&replayed[0].event_id).await.unwrap()?;
        e.processed_at.map(|_| ())
    })
    .await
    .expect("the redelivered renewal is processed");
    let count = support::accounts::outbox_count(&app, &owner.email, "license_renewed").await;
    assert_eq!(count, 1, "one renewal, one email");

    // Deleted: the license stops granting seats and the live session ends.
    fake.emit_subscription_deleted(&sub_id).await;
    app.subscription_when(&sub_id, "cancelled", |s| {
        s.status == SubscriptionStatus::Canceled
    })
    .await;
    let license = app.license_now(first.license_id).await;
    assert_eq!(license.status, LicenseStatus::Inactive);
    let heartbeat = eventually(WAIT, || async {
        let r = app.heartbeat_of(&seat).await;
        (r.status() != 200).then_some(r)
    })
    .await
    .expect("the session ends");
    assert_eq!(heartbeat.status(), 403);
    assert_eq!(
        support::people::error_code(heartbeat).await,
        "license_inactive"
    );
    assert_eq!(app.acquire(&key, "other").await.status(), 403);
    assert_eq!(
        support::accounts::outbox_count(&app, &owner.email, "subscription_cancelled").await,
        1
    );
}

#[tokio::test]
async fn an_invoice_paid_before_its_checkout_completed_is_applied_once_the_subscription_exists() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let (owner, session) = at_checkout(&app, "pro").await;
    let org = owner.org_id;
    let completion = fake.build_checkout_completion(&session);
    let (completed, paid) = (&completion.events[0], &completion.events[1]);
    // Stripe's order is not promised: the invoice first.
    fake.deliver(paid).await;
    let waiting = eventually(WAIT, || async {
        let e = app.store.get(&paid.id).await.unwrap()?;
        (e.attempts >= 1 && e.next_attempt_at.is_some() && e.last_error.is_some()).then_some(e)
    })
    .await
    .expect("the invoice waits for its subscription");
    assert!(waiting.last_error.unwrap().contains("not recorded yet"));

    fake.deliver(completed).await;
    eventually(WAIT, || async {
        let e = app.store.get(&paid.id).await.unwrap()?;
        e.processed_at.map(|_| ())
    })
    .await
    .expect("the invoice is applied after its retry");
    assert_eq!(app.store.licenses_for_org(org).await.unwrap().len(), 1);
    assert_eq!(
        support::accounts::outbox_count(&app, &owner.email, "license_issued").await,
        1
    );
    // The first invoice renews nothing: the checkout set the expiry already.
    assert_eq!(
        support::accounts::outbox_count(&app, &owner.email, "license_renewed").await,
        0
    );
}

#[tokio::test]
async fn failed_payments_warn_then_suspend_and_a_payment_reactivates() {
    let fake = FakeStripe::start().await;
    let app = billing_app(&fake).await;
    let Subscribed {
        owner,
        subscription: subscribed,
        key,
    } = subscribed(&app, &fake, "pro").await;
    let sub_id = subscribed.id.clone();
    let seat: Value = app.acquire_ok(&key, "laptop").await;
    let failures_applied = |n: u32| {
        let app = &app;
        let sub_id = sub_id.clone();
        async move {
            app.subscription_when(&sub_id, "the failure is applied", |s| {
                s.failed_payments >= n
            })
            .await
        }
    };

    // First failure: a grace period of 7 days and a warning; seats still work.
    let first = fake.emit_payment_failed(&sub_id).await;
    let s = failures_applied(1).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    let grace = s.grace_ends_at.expect("a grace period") - chrono::Utc::now();
    assert!(
        (6 * 86_400..=7 * 86_400).contains(&grace.num_seconds()),
        "{grace}"
    );
    assert_eq!(app.heartbeat_of(&seat).await.status(), 200);
    let warning = outbox_data(&app, &owner.email, "payment_failed")
        .await
        .unwrap();
    assert_eq!(warning["urgent"], false);

    // Redelivered, the first failure counts once.
    fake.deliver(&first).await;
    // Second: grace restarts at 3 days, urgently.
    fake.emit_payment_failed(&sub_id).await;
    let s = failures_applied(2).await;
    let grace = s.grace_ends_at.unwrap() - chrono::Utc::now();
    assert!(
        (2 * 86_400..=3 * 86_400).contains(&grace.num_seconds()),
        "{grace}"
    );
    let urgent = outbox_data(&app, &owner.email, "payment_failed")
        .await
        .unwrap();
    assert_eq!(urgent["urgent"], true);
    assert_eq!(
        support::accounts::outbox_count(&app, &owner.email, "payment_failed").await,
        2
    );

    // Third: suspended; the live session ends and new seats are refused.
    fake.emit_payment_failed(&sub_id).await;
    failures_applied(3).await;
    let license = app.license_now(subscribed.license_id).await;
    assert_eq!(license.status, LicenseStatus::Suspended);
    let heartbeat = eventually(WAIT, || async {
        let r = app.heartbeat_of(&seat).await;
        (r.status() != 200).then_some(r)
    })
    .await
    .expect("the session ends");
    assert_eq!(heartbeat.status(), 403);
    assert_eq!(
        support::people::error_code(heartbeat).await,
        "license_suspended"
    );
    assert_eq!(
        support::accounts::outbox_count(&app, &owner.email, "license_suspended").await,
        1
    );

    // Paid: reactivated, and seats are granted again.
    fake.emit_renewal_paid(&sub_id).await;
    let s = app
        .subscription_when(&sub_id, "the payment is applied", |s| {
            s.failed_payments == 0
        })
        .await;
    assert_eq!(s.grace_ends_at, None);
    let license = app.license_now(subscribed.license_id).await;
    assert_eq!(license.status, LicenseStatus::Active);
    let renewed = outbox_data(&app, &owner.email, "license_reactivated")
        .await
        .expect("the reactivation email");
    assert_eq!(renewed["reactivated"], true);
    let again = eventually(WAIT, || async {
        let r = app.acquire(&key, "laptop-2").await;
        r.status().is_success().then_some(r)
    })
    .await;
    assert!(again.is_some(), "a new acquire succeeds after reactivation");
}

#[tokio::test]
async fn the_same_completion_sent_ten_times_at_once_to_two_nodes_has_one_effect_and_one_email() {
    let fake = FakeStripe::start().await;
    let backend = support::Backend::Shared {
        database_url: support::services::fresh_postgres_db().await,
        redis_url: support::services::redis_url(),
    };
    let a = billing_node(&fake, backend.clone()).await;
    let b = billing_node(&fake, backend).await;
    let (owner, session) = at_checkout(&a, "pro").await;
    let org = owner.org_id;
    let completion = fake.build_checkout_completion(&session);
    let completed = completion.events[0].clone();

    let deliveries = (0..10).map(|i| {
        let fake = fake.clone();
        let event = completed.clone();
        let url = if i % 2 == 0 { &a } else { &b }.url("/api/v1/webhooks/stripe");
        async move { fake.deliver_to(&event, &url).await }
    });
    for attempts in futures::future::join_all(deliveries).await {
        assert_eq!(attempts[0].status, Some(200));
    }
    eventually(WAIT, || async {
        let e = a.store.get(&completed.id).await.unwrap()?;
        e.processed_at.map(|_| ())
    })
    .await
    .expect("processed");
    assert_eq!(a.store.licenses_for_org(org).await.unwrap().len(), 1);
    assert_eq!(
        support::accounts::outbox_count(&a, &owner.email, "license_issued").await,
        1
    );
    let event = b.store.get(&completed.id).await.unwrap().unwrap();
    assert_eq!(event.attempts, 1, "claimed once across both nodes");
}
