//! The Stripe adapter against the fake Stripe: what it sends, what it makes
//! of the answers, and that the API key never leaks.

mod support;

use std::time::{Duration, Instant};

use seatwarden::config::StripeSettings;
use seatwarden::stripe::{PINNED_API_VERSION, StripeGateway};
use seatwarden_actors::domain::OrgId;
use seatwarden_actors::ports::{
    CheckoutRequest, CustomerId, GatewayError, IdempotencyKey, NewCustomer, PaymentGateway, PriceId,
};
use secrecy::SecretString;
use support::services::free_port;
use support::stripe::{Failure, FakeStripe, TEST_SECRET_KEY};

fn gateway(fake: &FakeStripe) -> StripeGateway {
    gateway_with(fake, TEST_SECRET_KEY, Duration::from_secs(5))
}

fn gateway_with(fake: &FakeStripe, key: &str, timeout: Duration) -> StripeGateway {
    StripeGateway::new(&SecretString::from(key), &fake.api_base(), timeout).expect("gateway")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

async fn customer(gw: &StripeGateway) -> CustomerId {
    gw.create_customer(NewCustomer {
        org_id: OrgId::new(),
        email: "billing@acme.example".into(),
        name: "Acme".into(),
        idempotency_key: key(&unique("customer")),
    })
    .await
    .expect("customer")
}

fn checkout(
    customer: &CustomerId,
    org: OrgId,
    trial_days: Option<u32>,
    idem: &str,
) -> CheckoutRequest {
    CheckoutRequest {
        customer: customer.clone(),
        price_id: PriceId::new("price_team_monthly"),
        quantity: 7,
        trial_days,
        success_url: "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}".into(),
        cancel_url: "https://app.example/billing".into(),
        metadata: vec![
            ("org_id".into(), org.to_string()),
            ("plan_id".into(), "team".into()),
        ],
        idempotency_key: key(idem),
    }
}

#[tokio::test]
async fn the_adapter_creates_a_customer_with_the_org_in_its_metadata_and_an_idempotency_key() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let org = OrgId::new();
    let id = gw
        .create_customer(NewCustomer {
            org_id: org,
            email: "billing@acme.example".into(),
            name: "Acme Ltd".into(),
            idempotency_key: key("customer-acme-1"),
        })
        .await
        .unwrap();
    assert!(id.as_str().starts_with("cus_"), "{id}");

    let sent = &fake.requests_to("/v1/customers")[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.idempotency_key.as_deref(), Some("customer-acme-1"));
    assert_eq!(sent.stripe_version.as_deref(), Some(PINNED_API_VERSION));
    assert_eq!(sent.param("email"), Some("billing@acme.example"));
    assert_eq!(sent.param("name"), Some("Acme Ltd"));
    assert_eq!(
        sent.param("metadata[org_id]"),
        Some(org.to_string().as_str())
    );
    let stored = fake.customer(id.as_str()).unwrap();
    assert_eq!(stored["metadata"]["org_id"], org.to_string());
}

#[tokio::test]
async fn the_adapter_creates_a_subscription_checkout_with_price_quantity_trial_metadata_and_urls() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let cus = customer(&gw).await;
    let org = OrgId::new();
    let session = gw
        .create_checkout_session(checkout(&cus, org, Some(14), "checkout-1"))
        .await
        .unwrap();
    assert!(session.id.as_str().starts_with("cs_test_"), "{session:?}");
    assert!(session.url.contains(session.id.as_str()), "{session:?}");

    let sent = &fake.requests_to("/v1/checkout/sessions")[0];
    let org = org.to_string();
    for (name, value) in [
        ("mode", "subscription"),
        ("customer", cus.as_str()),
        ("line_items[0][price]", "price_team_monthly"),
        ("line_items[0][quantity]", "7"),
        ("subscription_data[trial_period_days]", "14"),
        ("metadata[org_id]", org.as_str()),
        ("metadata[plan_id]", "team"),
        ("subscription_data[metadata][org_id]", org.as_str()),
        ("subscription_data[metadata][plan_id]", "team"),
        (
            "success_url",
            "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://app.example/billing"),
    ] {
        assert_eq!(sent.param(name), Some(value), "{name} in {:?}", sent.params);
    }
    assert_eq!(sent.idempotency_key.as_deref(), Some("checkout-1"));
    let stored = fake.session(session.id.as_str()).unwrap();
    assert_eq!(stored["mode"], "subscription");
    assert_eq!(stored["status"], "open");
}

#[tokio::test]
async fn a_checkout_without_trial_days_asks_for_no_trial() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let cus = customer(&gw).await;
    for (trial, idem) in [(None, "no-trial"), (Some(0), "zero-trial")] {
        gw.create_checkout_session(checkout(&cus, OrgId::new(), trial, idem))
            .await
            .unwrap();
    }
    for sent in fake.requests_to("/v1/checkout/sessions") {
        assert_eq!(sent.param("subscription_data[trial_period_days]"), None);
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_answer_and_creates_nothing_new() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let org = OrgId::new();
    let new_customer = || NewCustomer {
        org_id: org,
        email: "billing@acme.example".into(),
        name: "Acme".into(),
        idempotency_key: key("customer-once"),
    };
    let first = gw.create_customer(new_customer()).await.unwrap();
    let again = gw.create_customer(new_customer()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(fake.customers().len(), 1);

    let request = checkout(&first, org, Some(7), "checkout-once");
    let a = gw.create_checkout_session(request.clone()).await.unwrap();
    let b = gw.create_checkout_session(request).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(fake.sessions().len(), 1);
    let sent = fake.requests_to("/v1/checkout/sessions");
    assert_eq!(
        sent.iter().map(|r| r.replayed).collect::<Vec<_>>(),
        [false, true]
    );
}

#[tokio::test]
async fn a_reused_idempotency_key_with_other_parameters_is_rejected() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let cus = customer(&gw).await;
    gw.create_checkout_session(checkout(&cus, OrgId::new(), None, "same-key"))
        .await
        .unwrap();
    let err = gw
        .create_checkout_session(checkout(&cus, OrgId::new(), None, "same-key"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Rejected { message, .. } if message.contains("same parameters")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_adapter_creates_a_portal_session_for_the_customer() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let cus = customer(&gw).await;
    let url = gw
        .create_portal_session(&cus, "https://app.example/billing")
        .await
        .unwrap();
    assert!(
        url.starts_with(&fake.api_base()) && url.contains("/p/session/bps_"),
        "{url}"
    );
    let sent = &fake.requests_to("/v1/billing_portal/sessions")[0];
    assert_eq!(sent.param("customer"), Some(cus.as_str()));
    assert_eq!(
        sent.param("return_url"),
        Some("https://app.example/billing")
    );
}

#[tokio::test]
async fn a_stripe_4xx_is_a_rejection_with_stripe_s_code() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let err = gw
        .create_portal_session(&CustomerId::new("cus_nobody"), "https://app.example/")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GatewayError::Rejected {
            code: Some("resource_missing".into()),
            message: "No such customer: 'cus_nobody'".into()
        }
    );
    assert!(!err.is_retryable());

    fake.fail_next(Failure::card_declined());
    let cus_err = gw
        .create_checkout_session(checkout(
            &CustomerId::new("cus_x"),
            OrgId::new(),
            None,
            "declined",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&cus_err, GatewayError::Rejected { code: Some(c), .. } if c == "card_declined"),
        "{cus_err:?}"
    );
}

#[tokio::test]
async fn a_stripe_5xx_or_429_is_unavailable_and_a_retry_with_the_same_key_succeeds() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake);
    let cus = customer(&gw).await;
    let request = checkout(&cus, OrgId::new(), None, "retry-me");

    fake.fail_next(Failure::server_error());
    let err = gw
        .create_checkout_session(request.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());

    fake.fail_next(Failure {
        status: 429,
        error_type: "invalid_request_error".into(),
        code: Some("rate_limit".into()),
        message: "Too many requests".into(),
    });
    let err = gw
        .create_checkout_session(request.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");

    gw.create_checkout_session(request).await.unwrap();
    assert_eq!(fake.sessions().len(), 1);
    let keys: Vec<_> = fake
        .requests_to("/v1/checkout/sessions")
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys, vec![Some("retry-me".to_owned()); 3]);
}

#[tokio::test]
async fn an_unreachable_base_url_is_unavailable() {
    let gw = StripeGateway::new(
        &SecretString::from(TEST_SECRET_KEY),
        &format!("http://127.0.0.1:{}/", free_port()),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = gw
        .create_customer(NewCustomer {
            org_id: OrgId::new(),
            email: "a@b.example".into(),
            name: "A".into(),
            idempotency_key: key("unreachable"),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_stripe_slower_than_the_timeout_is_unavailable() {
    let fake = FakeStripe::start().await;
    fake.set_response_delay(Duration::from_secs(3));
    let gw = gateway_with(&fake, TEST_SECRET_KEY, Duration::from_millis(200));
    let started = Instant::now();
    let err = gw
        .create_portal_session(&CustomerId::new("cus_slow"), "https://app.example/")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Unavailable(m) if m.contains("200 ms")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_secret_key_appears_in_no_error_message_or_debug_output() {
    let fake = FakeStripe::start().await;
    let wrong = "sk_test_51WrongKeyThatMustNeverBeShown";
    let gw = gateway_with(&fake, wrong, Duration::from_secs(5));
    let mut shown = vec![format!("{gw:?}")];

    // A wrong key: Stripe answers 401 (showing only its ends).
    let err = gw
        .create_portal_session(&CustomerId::new("cus_x"), "https://app.example/")
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Rejected { .. }), "{err:?}");
    assert!(!fake.requests()[0].authorized);
    shown.push(format!("{err} {err:?}"));

    // Even an answer that echoes the whole key is scrubbed.
    fake.set_api_key(wrong);
    fake.fail_next(Failure {
        status: 400,
        error_type: "invalid_request_error".into(),
        code: None,
        message: format!("Something about {wrong} went wrong"),
    });
    let err = gw
        .create_portal_session(&CustomerId::new("cus_x"), "https://app.example/")
        .await
        .unwrap_err();
    shown.push(format!("{err} {err:?}"));
    fake.fail_next(Failure {
        status: 503,
        error_type: "api_error".into(),
        code: None,
        message: format!("upstream {wrong}"),
    });
    let err = gw
        .create_portal_session(&CustomerId::new("cus_x"), "https://app.example/")
        .await
        .unwrap_err();
    shown.push(format!("{err} {err:?}"));

    // Unreachable and slow.
    let gone = StripeGateway::new(
        &SecretString::from(wrong),
        &format!("http://127.0.0.1:{}/", free_port()),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = gone
        .create_portal_session(&CustomerId::new("cus_x"), "https://app.example/")
        .await
        .unwrap_err();
    shown.push(format!("{gone:?} {err} {err:?}"));

    for text in &shown {
        assert!(!text.contains("WrongKeyThatMustNeverBeShown"), "{text}");
    }
}

#[tokio::test]
async fn a_gateway_exists_only_when_billing_is_on_and_its_base_url_ends_with_a_slash() {
    let mut settings = StripeSettings {
        secret_key: None,
        webhook_secret: None,
        previous_webhook_secret: None,
        api_base: "https://api.stripe.com/".into(),
        timeout_ms: 10_000,
    };
    assert!(StripeGateway::from_settings(&settings).unwrap().is_none());
    settings.secret_key = Some(SecretString::from(TEST_SECRET_KEY));
    assert!(StripeGateway::from_settings(&settings).unwrap().is_some());
    let err = StripeGateway::new(
        &SecretString::from(TEST_SECRET_KEY),
        "http://127.0.0.1:1",
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("must end with /"), "{err}");
}
