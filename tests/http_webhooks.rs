//! `POST /api/v1/webhooks/stripe` against deliveries signed exactly as
//! Stripe signs them (by the fake Stripe), and the administrators' view of
//! what was received: each verified event is recorded once by its id,
//! whatever the redeliveries and however many nodes, and nothing forged,
//! tampered with or stale is recorded at all.

mod support;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use seatwarden_actors::ports::WebhookStatus;
use support::people::{error_code, owner, platform_admin};
use support::services::{fresh_postgres_db, redis_url};
use support::stripe::{
    Delivery, FakeEvent, FakeStripe, RetryPolicy, TEST_WEBHOOK_SECRET, signature_header,
};
use support::{AppOptions, Backend, TestApp, eventually, spawn_app_with};

/// One delivery attempt only: a refusal is what the test looks at.
const ONCE: RetryPolicy = RetryPolicy {
    max_attempts: 1,
    interval: std::time::Duration::from_millis(1),
};

fn with_secrets(backend: Backend, secrets: &[(&'static str, &str)]) -> AppOptions {
    AppOptions {
        backend,
        overrides: secrets
            .iter()
            .map(|(k, v)| (*k, figment::value::Value::from(v.to_string())))
            .collect(),
        ..AppOptions::default()
    }
}

async fn app_and_fake() -> (TestApp, FakeStripe) {
    let app = spawn_app_with(with_secrets(
        Backend::Embedded,
        &[("stripe.webhook_secret", TEST_WEBHOOK_SECRET)],
    ))
    .await;
    let fake = FakeStripe::start().await;
    fake.set_retry_policy(ONCE);
    fake.add_webhook_url(&endpoint(&app));
    (app, fake)
}

fn endpoint(app: &TestApp) -> String {
    app.url("/api/v1/webhooks/stripe")
}

/// A small event whose object parses with the SDK's types.
fn customer_created(fake: &FakeStripe) -> FakeEvent {
    fake.build_event("customer.created", support::stripe::customer_object())
}

async fn post_raw(app: &TestApp, body: &str, signature: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(endpoint(app))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        request = request.header("stripe-signature", sig);
    }
    request.send().await.unwrap()
}

async fn recorded(app: &TestApp, id: &str) -> Option<seatwarden_actors::ports::WebhookEvent> {
    app.store.get(id).await.expect("read the inbox")
}

#[tokio::test]
async fn a_signed_event_is_recorded_byte_for_byte_and_answered_200() {
    let (app, fake) = app_and_fake().await;
    let event = customer_created(&fake);

    let attempts = fake.deliver(&event).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(200));
    let answer: Value = serde_json::from_str(&attempts[0].response_body).unwrap();
    assert_eq!(answer, json!({"received": true, "duplicate": false}));

    let stored = recorded(&app, &event.id).await.expect("recorded");
    assert_eq!(stored.kind, "customer.created");
    assert_eq!(stored.payload, event.body());
    assert_eq!(
        stored.created.timestamp(),
        event.json["created"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn a_redelivered_event_is_answered_200_and_recorded_once() {
    let (app, fake) = app_and_fake().await;
    let event = customer_created(&fake);

    let attempts = fake.deliver_times(&event, 3).await;
    let answers: Vec<Value> = attempts
        .iter()
        .map(|a| {
            assert_eq!(a.status, Some(200));
            serde_json::from_str(&a.response_body).unwrap()
        })
        .collect();
    assert_eq!(answers[0]["duplicate"], false);
    assert_eq!(answers[1]["duplicate"], true);
    assert_eq!(answers[2]["duplicate"], true);

    let admin = platform_admin(&app).await;
    let listed: Value = app
        .client
        .get(app.url("/api/v1/admin/webhook-events?type=customer.created"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let same: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == event.id.as_str())
        .collect();
    assert_eq!(same.len(), 1, "{listed}");
}

#[tokio::test]
async fn a_tampered_body_a_stale_timestamp_a_wrong_secret_or_no_signature_gets_400_and_records_nothing()
 {
    let (app, fake) = app_and_fake().await;
    let cases = [
        (
            "tampered",
            Delivery {
                tamper: true,
                retry: Some(ONCE),
                ..Delivery::default()
            },
        ),
        (
            "stale",
            Delivery {
                timestamp: Some(support::stripe::now() - 301),
                retry: Some(ONCE),
                ..Delivery::default()
            },
        ),
        (
            "from the future",
            Delivery {
                timestamp: Some(support::stripe::now() + 301),
                retry: Some(ONCE),
                ..Delivery::default()
            },
        ),
        (
            "wrong secret",
            Delivery {
                secret: Some("whsec_not_ours".into()),
                retry: Some(ONCE),
                ..Delivery::default()
            },
        ),
    ];
    for (what, how) in cases {
        let event = customer_created(&fake);
        let attempts = fake.deliver_with(&event, &how).await;
        assert_eq!(attempts[0].status, Some(400), "{what}");
        let body: Value = serde_json::from_str(&attempts[0].response_body).unwrap();
        assert_eq!(body["error"], "invalid_signature", "{what}: {body}");
        assert!(recorded(&app, &event.id).await.is_none(), "{what}");
    }

    let event = customer_created(&fake);
    for signature in [None, Some("garbage"), Some("t=1,v0=abc")] {
        let response = post_raw(&app, &event.body(), signature).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{signature:?}");
        assert_eq!(error_code(response).await, "invalid_signature");
    }
    assert!(recorded(&app, &event.id).await.is_none());

    // Signed, but not an event at all.
    let body = r#"{"hello":"world"}"#;
    let header = signature_header(body, TEST_WEBHOOK_SECRET, support::stripe::now());
    let response = post_raw(&app, body, Some(&header)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_event");
}

#[tokio::test]
async fn during_a_secret_roll_events_signed_with_either_secret_are_accepted() {
    let app = spawn_app_with(with_secrets(
        Backend::Embedded,
        &[
            ("stripe.webhook_secret", "whsec_new_secret"),
            ("stripe.previous_webhook_secret", "whsec_old_secret"),
        ],
    ))
    .await;
    let fake = FakeStripe::start().await;
    fake.add_webhook_url(&endpoint(&app));
    for (secret, status) in [
        ("whsec_old_secret", 200),
        ("whsec_new_secret", 200),
        ("whsec_someone_elses", 400),
    ] {
        let event = customer_created(&fake);
        let attempts = fake
            .deliver_with(
                &event,
                &Delivery {
                    secret: Some(secret.into()),
                    retry: Some(ONCE),
                    ..Delivery::default()
                },
            )
            .await;
        assert_eq!(attempts[0].status, Some(status), "{secret}");
        assert_eq!(recorded(&app, &event.id).await.is_some(), status == 200);
    }

    // Several v1 signatures, as Stripe sends while rolling: any match will do.
    let event = customer_created(&fake);
    let body = event.body();
    let t = support::stripe::now();
    let theirs = signature_header(&body, "whsec_someone_elses", t);
    let ours = signature_header(&body, "whsec_new_secret", t);
    let both = format!("{theirs},{}", ours.split_once(',').unwrap().1);
    assert_eq!(post_raw(&app, &body, Some(&both)).await.status(), 200);
}

#[tokio::test]
async fn a_verified_event_whose_object_does_not_parse_is_kept_as_failed_with_its_reason() {
    let (app, fake) = app_and_fake().await;
    // An invoice without the fields every invoice has.
    let event = fake.build_event(
        "invoice.paid",
        json!({"id": "in_broken", "object": "invoice"}),
    );
    let attempts = fake.deliver(&event).await;
    assert_eq!(
        attempts[0].status,
        Some(200),
        "Stripe must not retry it forever"
    );

    let stored = recorded(&app, &event.id).await.expect("kept");
    assert_eq!(stored.status, WebhookStatus::Failed);
    assert!(stored.last_error.as_deref().is_some_and(|e| !e.is_empty()));
    assert_eq!(stored.next_attempt_at, None, "not retried until replayed");
    assert_eq!(stored.payload, event.body());
}

#[tokio::test]
async fn without_a_webhook_secret_the_endpoint_answers_503_and_records_nothing() {
    let app = spawn_app_with(AppOptions::default()).await;
    let fake = FakeStripe::start().await;
    let event = customer_created(&fake);
    let header = signature_header(&event.body(), TEST_WEBHOOK_SECRET, support::stripe::now());
    let response = post_raw(&app, &event.body(), Some(&header)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "billing_disabled");
    assert!(recorded(&app, &event.id).await.is_none());
}

#[tokio::test]
async fn a_body_over_256_kib_gets_413() {
    let (app, _fake) = app_and_fake().await;
    let body = format!(r#"{{"id":"evt_big","pad":"{}"}}"#, "x".repeat(300 * 1024));
    let header = signature_header(&body, TEST_WEBHOOK_SECRET, support::stripe::now());
    let response = post_raw(&app, &body, Some(&header)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(recorded(&app, "evt_big").await.is_none());
}

#[tokio::test]
async fn the_same_event_sent_ten_times_at_once_to_two_nodes_is_recorded_once() {
    let backend = Backend::Shared {
        database_url: fresh_postgres_db().await,
        redis_url: redis_url(),
    };
    let secret = [("stripe.webhook_secret", TEST_WEBHOOK_SECRET)];
    let a = spawn_app_with(with_secrets(backend.clone(), &secret)).await;
    let b = spawn_app_with(with_secrets(backend, &secret)).await;
    let fake = FakeStripe::start().await;
    fake.set_retry_policy(ONCE);
    let event = customer_created(&fake);

    let deliveries = (0..10).map(|i| {
        let fake = fake.clone();
        let event = event.clone();
        let url = if i % 2 == 0 {
            endpoint(&a)
        } else {
            endpoint(&b)
        };
        async move { fake.deliver_to(&event, &url).await }
    });
    let mut fresh = 0;
    for attempts in join_all(deliveries).await {
        assert_eq!(attempts[0].status, Some(200));
        let body: Value = serde_json::from_str(&attempts[0].response_body).unwrap();
        if body["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery recorded the event");
    let on_a = recorded(&a, &event.id).await.expect("recorded");
    let on_b = recorded(&b, &event.id).await.expect("the same row");
    assert_eq!(on_a.received_at, on_b.received_at);
    let processing_started = eventually(std::time::Duration::from_secs(10), || async {
        let e = recorded(&a, &event.id).await?;
        (e.attempts > 0).then_some(e.attempts)
    })
    .await
    .expect("one node's webhooks subsystem picked it up");
    assert_eq!(processing_started, 1, "claimed once across both nodes");
}

#[tokio::test]
async fn administrators_list_received_events_and_replay_one() {
    let (app, fake) = app_and_fake().await;
    let event = customer_created(&fake);
    fake.deliver(&event).await;
    let admin = platform_admin(&app).await;
    let someone = owner(&app, "not-admin").await;

    let list = |token: Option<String>, query: &'static str| {
        let mut request = app
            .client
            .get(app.url(&format!("/api/v1/admin/webhook-events{query}")));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    assert_eq!(list(None, "").await.unwrap().status(), 401);
    assert_eq!(
        list(Some(someone.token.clone()), "")
            .await
            .unwrap()
            .status(),
        403
    );
    let listed: Value = list(Some(admin.token.clone()), "?limit=10")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &listed["items"][0];
    assert_eq!(entry["id"], event.id.as_str());
    assert_eq!(entry["type"], "customer.created");
    assert!(entry.get("payload").is_none(), "never the payload");
    for bad in [
        "?status=done",
        "?limit=0",
        "?cursor=nonsense",
        "?colour=red",
    ] {
        let response = list(Some(admin.token.clone()), bad).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    let replay = |id: String, token: String| {
        app.client
            .post(app.url(&format!("/api/v1/admin/webhook-events/{id}/replay")))
            .bearer_auth(token)
            .send()
    };
    let response = replay(event.id.clone(), someone.token.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = replay("evt_unknown".into(), admin.token.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "webhook_event_not_found");
    // Its first processing settles it (whatever the outcome) ...
    let before = eventually(std::time::Duration::from_secs(10), || async {
        let e = recorded(&app, &event.id).await?;
        matches!(e.status, WebhookStatus::Processed | WebhookStatus::Failed).then_some(e.attempts)
    })
    .await
    .expect("the event is processed");
    // ... and a replay runs it once more.
    let response = replay(event.id.clone(), admin.token.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], event.id.as_str());
    let attempts = eventually(std::time::Duration::from_secs(10), || async {
        let e = recorded(&app, &event.id).await?;
        (e.attempts > before).then_some(e.attempts)
    })
    .await
    .expect("the replayed event is processed again");
    assert_eq!(attempts, before + 1);
}
