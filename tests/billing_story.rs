//! The revenue story end to end, on two nodes sharing Redis and PostgreSQL,
//! with the fake Stripe delivering signed webhooks to both and every email
//! going through the real SMTP sink: sign up and verify, check out, receive
//! the license (its file verifies against the JWKS), take seats on both
//! nodes, fail three payments (warned, then urged, then suspended: the seats
//! end on both nodes), pay (reactivated, seats again), and cancel
//! (deactivated).

mod support;

use std::time::Duration;

use serde_json::Value;

use seatwarden_actors::domain::AuditEvent;
use support::accounts::register_and_login;
use support::billing::{billing_node_with, checkout_body, post};
use support::mail::{Received, address, smtp_url, wait_for_n};
use support::people::error_code;
use support::services::{fresh_postgres_db, redis_url};
use support::stripe::FakeStripe;
use support::{AppOptions, Backend, TestApp, eventually};

const MAIL: Duration = Duration::from_secs(30);

async fn two_nodes(fake: &FakeStripe) -> (TestApp, TestApp) {
    let backend = Backend::Shared {
        database_url: fresh_postgres_db().await,
        redis_url: redis_url(),
    };
    let node = |backend| AppOptions {
        backend,
        smtp_url: Some(smtp_url()),
        mail_poll_ms: 100,
        ..AppOptions::default()
    };
    let a = billing_node_with(fake, node(backend.clone())).await;
    let b = billing_node_with(fake, node(backend)).await;
    (a, b)
}

/// Waits for the message to `to` whose subject contains `subject`.
async fn mail(to: &str, subject: &str) -> Received {
    eventually(MAIL, || async {
        support::mail::received_by(to)
            .into_iter()
            .find(|m| m.subject.contains(subject))
    })
    .await
    .unwrap_or_else(|| panic!("no mail to {to} about {subject:?}"))
}

/// Waits until `node` refuses the session's heartbeat; its error code.
async fn heartbeat_refused(node: &TestApp, seat: &Value) -> String {
    let refused = eventually(MAIL, || async {
        let r = node.heartbeat_of(seat).await;
        (r.status() == 403).then_some(r)
    })
    .await
    .expect("the heartbeat is refused");
    error_code(refused).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_subscribes_runs_falls_behind_is_suspended_pays_and_cancels() {
    let fake = FakeStripe::start().await;
    let (a, b) = two_nodes(&fake).await;

    // 1. Sign up on node a, verifying through the mailed link.
    let email = address("buyer");
    let owner = register_and_login(&a, &email).await;
    let org = owner.org_id;

    // 2. Check out on node b; Stripe completes it and tells both nodes.
    let opened = post(
        &b,
        "/api/v1/checkout/session",
        &owner.access_token,
        checkout_body(org, "pro"),
    )
    .await;
    assert_eq!(opened.status(), 200);
    let session: Value = opened.json().await.unwrap();
    let completion = fake
        .complete_checkout(session["id"].as_str().unwrap())
        .await;

    // 3. The license arrives by email: the key in the text, and a license
    //    file that verifies against the JWKS. The confirmation comes too.
    let license_mail = mail(&email, "Your seatwarden license for").await;
    let key = license_mail
        .text
        .lines()
        .skip_while(|l| !l.starts_with("License key:"))
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("License key:"))
        .expect("the key in the email")
        .to_owned();
    let (name, file) = license_mail
        .attachments
        .first()
        .expect("the license file is attached");
    assert_eq!(name, "license.lic");
    let claims = b.verify_license_file(file.trim()).await;
    assert_eq!(claims["org_id"], org.to_string());
    assert_eq!(claims["seats"], 10);
    mail(&email, "subscription for").await;

    // 4. Seats on both nodes.
    let on_a = a.acquire_ok(&key, "laptop-a").await;
    let on_b = b.acquire_ok(&key, "laptop-b").await;

    // 5. Three failed payments: a warning, an urgent warning, a suspension.
    let sub = completion.subscription_id;
    fake.emit_payment_failed(&sub).await;
    let warned = mail(&email, "a payment for seatwarden").await;
    assert!(!warned.subject.starts_with("Urgent"), "{}", warned.subject);
    assert_eq!(a.heartbeat_of(&on_a).await.status(), 200, "still in grace");
    fake.emit_payment_failed(&sub).await;
    mail(&email, "Urgent: a payment").await;
    fake.emit_payment_failed(&sub).await;
    mail(&email, "is suspended").await;

    // 6. The seats end on both nodes within seconds.
    assert_eq!(heartbeat_refused(&a, &on_a).await, "license_suspended");
    assert_eq!(heartbeat_refused(&b, &on_b).await, "license_suspended");
    let refused = a.acquire(&key, "laptop-c").await;
    assert_eq!(refused.status(), 403);

    // 7. Paid: reactivated, and a new acquire succeeds.
    fake.emit_renewal_paid(&sub).await;
    mail(&email, "works again").await;
    let again = eventually(MAIL, || async {
        let r = b.acquire(&key, "laptop-c").await;
        r.status().is_success().then_some(r)
    })
    .await
    .expect("a seat after reactivation");
    let seat: Value = again.json().await.unwrap();

    // 8. Cancelled: deactivated, its session ends, no new seats.
    fake.emit_subscription_deleted(&sub).await;
    mail(&email, "has ended").await;
    assert_eq!(heartbeat_refused(&b, &seat).await, "license_inactive");
    let refused = a.acquire(&key, "laptop-d").await;
    assert_eq!(refused.status(), 403);
    assert_eq!(error_code(refused).await, "license_inactive");

    // Every step, once, in the audit log; one email of each kind.
    for (event, n) in [
        (AuditEvent::LicenseIssued, 1),
        (AuditEvent::PaymentFailed, 3),
        (AuditEvent::GracePeriodStarted, 1),
        (AuditEvent::LicenseSuspended, 1),
        (AuditEvent::LicenseReactivated, 1),
        (AuditEvent::LicenseDeactivated, 1),
    ] {
        assert_eq!(a.audit_count(org, event).await, n, "{event:?}");
    }
    let all = wait_for_n(&email, 9, MAIL).await;
    let mut subjects: Vec<String> = all.iter().map(|m| m.subject.clone()).collect();
    subjects.sort();
    subjects.dedup();
    // verify, welcome, confirmation, license, warning, urgent, suspended,
    // works again, ended: nine different messages, none twice.
    assert_eq!(all.len(), 9, "{subjects:#?}");
    assert_eq!(subjects.len(), 9, "{subjects:#?}");
}
