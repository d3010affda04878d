//! A server billing through the fake Stripe, and the steps every billing
//! test starts with: an owner at checkout, and a completed subscription
//! with the license key from its email.

use std::time::Duration;

use serde_json::Value;

use seatwarden_actors::domain::{
    AuditEvent, AuditFilter, License, LicenseId, OrgId, PageRequest, Subscription,
};

use super::accounts::{Session, outbox_data};
use super::people::unique_email;
use super::stripe::{FakeStripe, RetryPolicy, TEST_SECRET_KEY, TEST_WEBHOOK_SECRET};
use super::{AppOptions, TestApp, eventually, spawn_app_with};

pub const WAIT: Duration = Duration::from_secs(15);

pub async fn billing_app(fake: &FakeStripe) -> TestApp {
    billing_node(fake, super::Backend::Embedded).await
}

/// A server whose Stripe is `fake`, on `backend`.
pub async fn billing_node(fake: &FakeStripe, backend: super::Backend) -> TestApp {
    billing_node_with(
        fake,
        AppOptions {
            backend,
            // Mail stays in the outbox, where the test reads the key: the
            // mailer's next poll is an hour away.
            mail_poll_ms: 3_600_000,
            ..AppOptions::default()
        },
    )
    .await
}

/// A server with `opts`, whose Stripe is `fake` (its settings are added to
/// `opts.overrides`), registered as the fake's webhook endpoint.
pub async fn billing_node_with(fake: &FakeStripe, mut opts: AppOptions) -> TestApp {
    opts.overrides.extend([
        ("stripe.secret_key", TEST_SECRET_KEY.into()),
        ("stripe.webhook_secret", TEST_WEBHOOK_SECRET.into()),
        ("stripe.api_base", fake.api_base().into()),
        ("webhooks.poll_interval_ms", 100.into()),
        ("webhooks.retry_base_secs", 1.into()),
    ]);
    let app = spawn_app_with(opts).await;
    fake.add_webhook_url(&app.url("/api/v1/webhooks/stripe"));
    fake.set_retry_policy(RetryPolicy {
        max_attempts: 1,
        interval: Duration::from_millis(1),
    });
    app
}

/// A new owner who opened a checkout of `plan` through the API, and the
/// Checkout Session's id.
pub async fn at_checkout(app: &TestApp, plan: &str) -> (Session, String) {
    let owner = super::accounts::register_and_login(app, &unique_email("owner")).await;
    let response = post(
        app,
        "/api/v1/checkout/session",
        &owner.access_token,
        checkout_body(owner.org_id, plan),
    )
    .await;
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    (owner, id)
}

/// An organization whose checkout of a plan the fake Stripe completed: its
/// owner, the recorded subscription, and the license key from the email.
pub struct Subscribed {
    pub owner: Session,
    pub subscription: Subscription,
    pub key: String,
}

pub async fn subscribed(app: &TestApp, fake: &FakeStripe, plan: &str) -> Subscribed {
    let (owner, session) = at_checkout(app, plan).await;
    let sub_id = fake.complete_checkout(&session).await.subscription_id;
    let subscription = eventually(WAIT, || async {
        app.store.subscription(&sub_id).await.unwrap()
    })
    .await
    .expect("subscribed");
    let key = outbox_data(app, &owner.email, "license_issued")
        .await
        .expect("the license email")["license_key"]
        .as_str()
        .unwrap()
        .to_owned();
    Subscribed {
        owner,
        subscription,
        key,
    }
}

pub async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub fn checkout_body(org: OrgId, plan: &str) -> Value {
    serde_json::json!({
        "org_id": org, "plan_id": plan,
        "success_url": "http://localhost:8080/billing/done",
        "cancel_url": "http://localhost:8080/billing",
    })
}

impl TestApp {
    /// A license the test knows exists, as the store has it now.
    pub async fn license_now(&self, id: LicenseId) -> License {
        self.store
            .license(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("license {id} exists"))
    }

    /// A subscription the test knows is recorded, as the store has it now.
    pub async fn subscription_now(&self, id: &str) -> Subscription {
        self.store
            .subscription(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("subscription {id} is recorded"))
    }

    /// The subscription once `ready` holds for it (bounded polling);
    /// panics with `what` if it doesn't within [`WAIT`].
    pub async fn subscription_when(
        &self,
        id: &str,
        what: &str,
        ready: impl Fn(&Subscription) -> bool,
    ) -> Subscription {
        eventually(WAIT, || async {
            let s = self.store.subscription(id).await.unwrap()?;
            ready(&s).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("subscription {id}: {what}"))
    }

    /// How many audit entries of `event` the organization has.
    pub async fn audit_count(&self, org: OrgId, event: AuditEvent) -> usize {
        let filter = AuditFilter {
            event: Some(event),
            ..AuditFilter::default()
        };
        self.store
            .org_audit(org, &filter, PageRequest::first(200))
            .await
            .unwrap()
            .items
            .len()
    }
}
