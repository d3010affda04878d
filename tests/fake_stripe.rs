//! The fake Stripe tested on its own: its events parse with async-stripe's
//! types and pass seatwarden's verification, its deliveries are signed and
//! retried like Stripe's, and its state moves like a subscription's.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use seatwarden::stripe::StripeGateway;
use seatwarden::stripe::webhook::{Verified, WebhookRejection, verify};
use seatwarden_actors::domain::OrgId;
use seatwarden_actors::ports::{
    CheckoutRequest, CustomerId, IdempotencyKey, NewCustomer, PaymentGateway, PriceId,
};
use secrecy::SecretString;
use serde_json::json;
use stripe_webhook::{EventObject, Webhook};
use support::stripe::{
    Delivery, FakeEvent, FakeStripe, RetryPolicy, SubscriptionChange, TEST_SECRET_KEY,
    TEST_WEBHOOK_SECRET, now, signature_header,
};

// ----- a webhook endpoint that records what it gets -------------------------

#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: String,
}

/// Answers each delivery with the next scripted status (200 once the
/// script is used up) and keeps what it received.
#[derive(Clone)]
struct Sink {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Sink {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let sink = Sink {
            url,
            received: Arc::default(),
            script: Arc::default(),
        };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let signature = req
                                .headers()
                                .get("stripe-signature")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            sink.received.lock().unwrap().push(Received {
                                signature,
                                body: String::from_utf8(body.to_vec()).unwrap(),
                            });
                            let status = sink.script.lock().unwrap().pop_front().unwrap_or(200);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        sink
    }

    fn answer(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn event_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

// ----- helpers -----------------------------------------------------------------

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

fn verify_as_server(body: &str, header: &str) -> Result<Verified, WebhookRejection> {
    let current = secret(TEST_WEBHOOK_SECRET);
    verify(body.as_bytes(), header, &[&current], Utc::now())
}

/// Signs like the fake, then checks with both seatwarden's `verify` and the
/// SDK's own parsing; returns the SDK's object.
fn parsed(event: &FakeEvent) -> EventObject {
    let body = event.body();
    let header = signature_header(&body, TEST_WEBHOOK_SECRET, now());
    let verified = verify_as_server(&body, &header).expect("signature verifies");
    assert_eq!(verified.id.as_str(), event.id);
    assert_eq!(verified.event_type, event.event_type);
    assert!(
        verified.event.is_ok(),
        "{} does not parse: {:?}",
        event.event_type,
        verified.event.err()
    );
    let sdk = Webhook::construct_event(&body, &header, TEST_WEBHOOK_SECRET)
        .unwrap_or_else(|e| panic!("the SDK refuses {}: {e}", event.event_type));
    assert_eq!(sdk.id.as_str(), event.id);
    assert_eq!(sdk.type_.as_str(), event.event_type);
    assert!(!sdk.livemode);
    sdk.data.object
}

struct Started {
    fake: FakeStripe,
    org: OrgId,
    customer: CustomerId,
    session_id: String,
}

/// A customer and an open subscription checkout made through the adapter.
async fn checkout_started(trial_days: Option<u32>) -> Started {
    let fake = FakeStripe::start().await;
    fake.add_price("price_team_monthly", 1500, "month");
    let gw = StripeGateway::new(
        &secret(TEST_SECRET_KEY),
        &fake.api_base(),
        Duration::from_secs(5),
    )
    .unwrap();
    let org = OrgId::new();
    let customer = gw
        .create_customer(NewCustomer {
            org_id: org,
            email: "billing@acme.example".into(),
            name: "Acme".into(),
            idempotency_key: IdempotencyKey::new(format!("customer-{org}")).unwrap(),
        })
        .await
        .unwrap();
    let session = gw
        .create_checkout_session(CheckoutRequest {
            customer: customer.clone(),
            price_id: PriceId::new("price_team_monthly"),
            quantity: 4,
            trial_days,
            success_url: "https://app.example/ok".into(),
            cancel_url: "https://app.example/no".into(),
            metadata: vec![
                ("org_id".into(), org.to_string()),
                ("plan_id".into(), "team".into()),
            ],
            idempotency_key: IdempotencyKey::new(format!("checkout-{org}")).unwrap(),
        })
        .await
        .unwrap();
    Started {
        fake,
        org,
        customer,
        session_id: session.id.as_str().to_owned(),
    }
}

// ----- the events --------------------------------------------------------------

#[tokio::test]
async fn every_event_the_fake_builds_parses_with_the_sdk_s_types_and_verifies() {
    let s = checkout_started(Some(14)).await;
    let fake = &s.fake;
    let org = s.org.to_string();
    let done = fake.build_checkout_completion(&s.session_id);

    match parsed(&done.events[0]) {
        EventObject::CheckoutSessionCompleted(session) => {
            assert_eq!(session.id.as_str(), s.session_id);
            assert_eq!(session.metadata.as_ref().unwrap()["org_id"], org);
            assert_eq!(session.metadata.as_ref().unwrap()["plan_id"], "team");
            let sub = session.subscription.as_ref().unwrap();
            assert_eq!(sub.id().as_str(), done.subscription_id);
            assert_eq!(
                session.customer.as_ref().unwrap().id().as_str(),
                s.customer.as_str()
            );
        }
        other => panic!("{other:?}"),
    }
    match parsed(&done.events[1]) {
        EventObject::InvoicePaid(invoice) => {
            let parent = invoice.parent.as_ref().unwrap();
            let details = parent.subscription_details.as_ref().unwrap();
            assert_eq!(details.subscription.id().as_str(), done.subscription_id);
            assert_eq!(details.metadata.as_ref().unwrap()["org_id"], org);
            assert_eq!(invoice.amount_paid, 0, "a trial's first invoice is free");
        }
        other => panic!("{other:?}"),
    }
    match parsed(&fake.build_trial_will_end(&done.subscription_id)) {
        EventObject::CustomerSubscriptionTrialWillEnd(sub) => {
            assert_eq!(sub.status.as_str(), "trialing");
        }
        other => panic!("{other:?}"),
    }
    match parsed(&fake.build_renewal_paid(&done.subscription_id)) {
        EventObject::InvoicePaid(invoice) => {
            assert_eq!(invoice.amount_paid, 4 * 1500);
            assert_eq!(
                invoice.billing_reason.as_ref().unwrap().as_str(),
                "subscription_cycle"
            );
        }
        other => panic!("{other:?}"),
    }
    match parsed(&fake.build_payment_failed(&done.subscription_id)) {
        EventObject::InvoicePaymentFailed(invoice) => {
            assert_eq!(invoice.amount_paid, 0);
            assert_eq!(invoice.amount_remaining, 4 * 1500);
        }
        other => panic!("{other:?}"),
    }
    let change = SubscriptionChange {
        price: Some("price_enterprise_monthly".into()),
        quantity: Some(25),
        metadata: vec![("plan_id".into(), "enterprise".into())],
        ..SubscriptionChange::default()
    };
    match parsed(&fake.build_subscription_updated(&done.subscription_id, change)) {
        EventObject::CustomerSubscriptionUpdated(sub) => {
            let item = &sub.items.data[0];
            assert_eq!(item.price.id.as_str(), "price_enterprise_monthly");
            assert_eq!(item.quantity, Some(25));
            assert_eq!(sub.metadata["plan_id"], "enterprise");
            assert_eq!(sub.metadata["org_id"], org);
        }
        other => panic!("{other:?}"),
    }
    match parsed(&fake.build_subscription_deleted(&done.subscription_id)) {
        EventObject::CustomerSubscriptionDeleted(sub) => {
            assert_eq!(sub.status.as_str(), "canceled");
            assert!(sub.ended_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    let types: Vec<_> = fake.events().into_iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            "checkout.session.completed",
            "invoice.paid",
            "customer.subscription.trial_will_end",
            "invoice.paid",
            "invoice.payment_failed",
            "customer.subscription.updated",
            "customer.subscription.deleted"
        ]
    );
}

#[tokio::test]
async fn a_subscription_update_says_what_changed_in_previous_attributes() {
    let s = checkout_started(None).await;
    let done = s.fake.build_checkout_completion(&s.session_id);
    let event = s.fake.build_subscription_updated(
        &done.subscription_id,
        SubscriptionChange {
            quantity: Some(9),
            cancel_at_period_end: Some(true),
            ..SubscriptionChange::default()
        },
    );
    let previous = &event.json["data"]["previous_attributes"];
    assert_eq!(previous["quantity"], 4);
    assert_eq!(previous["cancel_at_period_end"], false);
    assert_eq!(previous["items"]["data"][0]["quantity"], 4);
    let sub = event.object();
    assert_eq!(
        sub["cancel_at"],
        sub["items"]["data"][0]["current_period_end"]
    );
    parsed(&event);
}

#[tokio::test]
async fn a_checkout_without_trial_starts_active_and_is_charged_at_once() {
    let s = checkout_started(None).await;
    let done = s.fake.build_checkout_completion(&s.session_id);
    let sub = s.fake.subscription(&done.subscription_id).unwrap();
    assert_eq!(sub["status"], "active");
    assert!(sub["trial_end"].is_null());
    assert_eq!(sub["metadata"]["plan_id"], "team");
    let item = &sub["items"]["data"][0];
    assert_eq!(item["quantity"], 4);
    assert_eq!(item["price"]["id"], "price_team_monthly");
    let start = item["current_period_start"].as_i64().unwrap();
    let end = item["current_period_end"].as_i64().unwrap();
    assert!(
        (28 * 86_400..=31 * 86_400).contains(&(end - start)),
        "{start}..{end}"
    );
    let invoice = s.fake.invoice(&done.invoice_id).unwrap();
    assert_eq!(invoice["amount_paid"], 4 * 1500);
    assert_eq!(invoice["billing_reason"], "subscription_create");
    let session = s.fake.session(&s.session_id).unwrap();
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "paid");
    assert_eq!(session["subscription"], done.subscription_id);
}

#[tokio::test]
async fn a_trial_checkout_starts_trialing_until_the_trial_ends() {
    let s = checkout_started(Some(14)).await;
    let before = now();
    let done = s.fake.build_checkout_completion(&s.session_id);
    let sub = s.fake.subscription(&done.subscription_id).unwrap();
    assert_eq!(sub["status"], "trialing");
    let trial_end = sub["trial_end"].as_i64().unwrap();
    assert!((before + 14 * 86_400..=now() + 14 * 86_400).contains(&trial_end));
    assert_eq!(sub["items"]["data"][0]["current_period_end"], trial_end);
    assert_eq!(
        s.fake.session(&s.session_id).unwrap()["payment_status"],
        "no_payment_required"
    );

    // The renewal after the trial: the next period, charged, active.
    let renewal = s.fake.build_renewal_paid(&done.subscription_id);
    let line = &renewal.object()["lines"]["data"][0];
    assert_eq!(line["period"]["start"], trial_end);
    let sub = s.fake.subscription(&done.subscription_id).unwrap();
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["items"]["data"][0]["current_period_start"], trial_end);
    assert_eq!(sub["latest_invoice"], renewal.object()["id"]);
}

// ----- deliveries ----------------------------------------------------------------

#[tokio::test]
async fn completing_a_checkout_delivers_the_session_then_the_paid_invoice_signed() {
    let s = checkout_started(Some(7)).await;
    let sink = Sink::start().await;
    s.fake.add_webhook_url(&sink.url);
    let done = s.fake.complete_checkout(&s.session_id).await;

    let received = sink.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        sink.event_ids(),
        [done.events[0].id.clone(), done.events[1].id.clone()]
    );
    for (got, sent) in received.iter().zip(&done.events) {
        assert_eq!(got.body, sent.body());
        assert!(got.signature.starts_with("t=") && got.signature.contains(",v1="));
        let v = verify_as_server(&got.body, &got.signature).unwrap();
        assert!(v.parsed().is_some());
    }
    assert!(
        s.fake
            .attempts()
            .iter()
            .all(|a| a.succeeded() && a.attempt == 1)
    );
}

#[tokio::test]
async fn a_delivery_answered_non_2xx_is_retried_a_bounded_number_of_times() {
    let s = checkout_started(None).await;
    let sink = Sink::start().await;
    s.fake.add_webhook_url(&sink.url);
    s.fake.set_retry_policy(RetryPolicy {
        max_attempts: 4,
        interval: Duration::from_millis(10),
    });
    let done = s.fake.build_checkout_completion(&s.session_id);

    sink.answer(&[500, 503]);
    let attempts = s.fake.deliver(&done.events[0]).await;
    let statuses: Vec<_> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    sink.answer(&[500; 10]);
    let attempts = s.fake.deliver(&done.events[1]).await;
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a.status == Some(500)));
    assert_eq!(s.fake.attempts_for(&done.events[1].id).len(), 4);
    sink.script.lock().unwrap().clear();

    // Nobody listening: every attempt is recorded without a status.
    let gone = format!(
        "http://127.0.0.1:{}/webhook",
        support::services::free_port()
    );
    let attempts = s
        .fake
        .deliver_with(
            &done.events[1],
            &Delivery {
                url: Some(gone),
                retry: Some(RetryPolicy {
                    max_attempts: 2,
                    interval: Duration::from_millis(1),
                }),
                ..Delivery::default()
            },
        )
        .await;
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.status.is_none()));
}

#[tokio::test]
async fn duplicates_order_and_target_of_deliveries_are_the_test_s_choice() {
    let s = checkout_started(None).await;
    let (one, two) = (Sink::start().await, Sink::start().await);
    s.fake.set_webhook_urls(&[&one.url, &two.url]);
    let done = s.fake.build_checkout_completion(&s.session_id);
    let (completed, paid) = (&done.events[0], &done.events[1]);

    s.fake.deliver_times(paid, 3).await;
    assert_eq!(one.event_ids(), vec![paid.id.clone(); 3]);
    assert_eq!(two.event_ids(), vec![paid.id.clone(); 3]);

    s.fake.deliver_all(&[paid.clone(), completed.clone()]).await;
    assert_eq!(
        one.event_ids()[3..],
        [paid.id.clone(), completed.id.clone()]
    );

    s.fake.deliver_to(completed, &two.url).await;
    assert_eq!(one.received().len(), 5);
    assert_eq!(two.received().len(), 6);
}

#[tokio::test]
async fn deliveries_can_be_signed_wrongly_late_or_tampered_with() {
    let s = checkout_started(None).await;
    let sink = Sink::start().await;
    s.fake.add_webhook_url(&sink.url);
    let done = s.fake.build_checkout_completion(&s.session_id);
    let event = &done.events[0];

    s.fake
        .deliver_with(
            event,
            &Delivery {
                secret: Some("whsec_previous".into()),
                ..Delivery::default()
            },
        )
        .await;
    s.fake
        .deliver_with(
            event,
            &Delivery {
                timestamp: Some(now() - 3600),
                ..Delivery::default()
            },
        )
        .await;
    s.fake
        .deliver_with(
            event,
            &Delivery {
                tamper: true,
                ..Delivery::default()
            },
        )
        .await;
    let got = sink.received();
    assert_eq!(got.len(), 3);

    // Another secret: refused with ours, accepted while rolling.
    assert_eq!(
        verify_as_server(&got[0].body, &got[0].signature).unwrap_err(),
        WebhookRejection::BadSignature
    );
    let (current, previous) = (secret(TEST_WEBHOOK_SECRET), secret("whsec_previous"));
    let rolled = verify(
        got[0].body.as_bytes(),
        &got[0].signature,
        &[&current, &previous],
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rolled.secret_index, 1);
    // An hour old: stale.
    assert!(matches!(
        verify_as_server(&got[1].body, &got[1].signature),
        Err(WebhookRejection::Stale { .. })
    ));
    // Tampered: the body differs from what was signed.
    assert_ne!(got[2].body, event.body());
    assert_eq!(
        verify_as_server(&got[2].body, &got[2].signature).unwrap_err(),
        WebhookRejection::BadSignature
    );
}

#[tokio::test]
async fn an_event_of_another_api_version_verifies_but_does_not_parse() {
    let fake = FakeStripe::start().await;
    let mut event = fake.build_event(
        "invoice.paid",
        json!({"id": "in_old", "object": "invoice", "subscription": "sub_old"}),
    );
    event.json["api_version"] = json!("2020-08-27");
    let body = event.body();
    let v = verify_as_server(&body, &signature_header(&body, TEST_WEBHOOK_SECRET, now())).unwrap();
    assert_eq!(v.id.as_str(), event.id);
    assert_eq!(v.event_type, "invoice.paid");
    let reason = v.event.unwrap_err();
    assert!(reason.contains("2020-08-27"), "{reason}");
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

// ----- the API's own rules ---------------------------------------------------------

#[tokio::test]
async fn the_fake_api_wants_the_key_and_knows_only_the_calls_seatwarden_makes() {
    let fake = FakeStripe::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}v1/customers", fake.api_base());

    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("email", "a@b.example")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let r = http
        .post(&url)
        .bearer_auth("sk_test_other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("sk_test_other"),
        "Stripe masks the key: {message}"
    );

    let r = http
        .post(format!("{}v1/charges", fake.api_base()))
        .bearer_auth(TEST_SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = http
        .post(format!("{}v1/checkout/sessions", fake.api_base()))
        .bearer_auth(TEST_SECRET_KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("mode", "subscription"),
            ("success_url", "https://x/"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "parameter_missing");

    let r = http
        .post(&url)
        .bearer_auth(TEST_SECRET_KEY)
        .header("idempotency-key", "k1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("email", "a@b.example")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(&url)
        .bearer_auth(TEST_SECRET_KEY)
        .header("idempotency-key", "k1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("email", "a@b.example")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let r = http
        .post(&url)
        .bearer_auth(TEST_SECRET_KEY)
        .header("idempotency-key", "k1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("email", "c@d.example")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(fake.customers().len(), 1);
    assert_eq!(fake.requests().len(), 7);
}
