//! Rate limits as clients meet them: 429 `rate_limited` with `Retry-After`
//! on acquire and heartbeat, and a limit that holds across two nodes
//! sharing Redis and PostgreSQL, for seats and for invitation tokens.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::accounts::{register_and_login, unique_email};
use support::services::{fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, ids, spawn_app_with};

fn limited(overrides: &[(&'static str, &'static str)], backend: Backend) -> AppOptions {
    AppOptions {
        backend,
        overrides: overrides.iter().map(|(k, v)| (*k, (*v).into())).collect(),
        ..AppOptions::default()
    }
}

/// Asserts a 429 `rate_limited` answer and returns its `Retry-After`.
async fn assert_rate_limited(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    retry_after
}

#[tokio::test]
async fn acquiring_again_and_again_from_one_machine_gets_429_with_retry_after() {
    let app = spawn_app_with(limited(
        &[("rate_limits.acquire_per_machine", "2/min")],
        Backend::Embedded,
    ))
    .await;
    let lic = app.create_license(5).await;

    assert_eq!(app.acquire(&lic.key, "m1").await.status(), 201);
    assert_eq!(app.acquire(&lic.key, "m1").await.status(), 200);
    let retry_after = assert_rate_limited(app.acquire(&lic.key, "m1").await).await;

    // One every 30 s after the burst of 2.
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // Another machine of the same license, and the same machine spelling
    // the key differently, are told apart only where they should be.
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);
    let lower = lic.key.to_lowercase();
    assert_rate_limited(app.acquire(&lower, "m1").await).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"seatwarden_rate_limited_total{limit="acquire_per_machine"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"seatwarden_acquire_total{result="rate_limited"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn heartbeating_too_often_gets_429_and_other_sessions_are_unaffected() {
    let app = spawn_app_with(limited(
        &[("rate_limits.heartbeat_per_session", "2/min")],
        Backend::Embedded,
    ))
    .await;
    let lic = app.create_license(2).await;
    let first = app.acquire_ok(&lic.key, "m1").await;
    let second = app.acquire_ok(&lic.key, "m2").await;
    let (id, _) = ids(&first);

    // Requests without the session's token don't use up its heartbeats.
    for _ in 0..3 {
        let forged = app.heartbeat(id, "not-a-token").await;
        assert_eq!(forged.status(), 401);
    }
    for _ in 0..2 {
        assert_eq!(app.heartbeat_of(&first).await.status(), 200);
    }
    let retry_after = assert_rate_limited(app.heartbeat_of(&first).await).await;

    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(app.heartbeat_of(&second).await.status(), 200);
}

async fn two_shared_nodes(overrides: &[(&'static str, &'static str)]) -> (TestApp, TestApp) {
    let backend = Backend::Shared {
        database_url: fresh_postgres_db().await,
        redis_url: redis_url(),
    };
    let a = spawn_app_with(limited(overrides, backend.clone())).await;
    let b = spawn_app_with(limited(overrides, backend)).await;
    (a, b)
}

#[tokio::test]
async fn an_acquire_limit_holds_across_two_nodes_together() {
    let (a, b) = two_shared_nodes(&[("rate_limits.acquire_per_machine", "4/min")]).await;
    let lic = a.create_license(5).await;

    let mut allowed = 0;
    let mut refused = 0;
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let response = node.acquire(&lic.key, "m1").await;
        match response.status().as_u16() {
            200 | 201 => allowed += 1,
            429 => {
                assert_rate_limited(response).await;
                refused += 1;
            }
            other => panic!("acquire answered {other}"),
        }
    }

    assert_eq!(allowed, 4, "the limit, not twice the limit");
    assert_eq!(refused, 6);
}

#[tokio::test]
async fn a_heartbeat_limit_holds_across_two_nodes_together() {
    let (a, b) = two_shared_nodes(&[("rate_limits.heartbeat_per_session", "3/min")]).await;
    let lic = a.create_license(1).await;
    let acquired = a.acquire_ok(&lic.key, "m1").await;

    let mut statuses = Vec::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { &b } else { &a };
        statuses.push(node.heartbeat_of(&acquired).await.status().as_u16());
    }

    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
}

#[tokio::test]
async fn accepting_invitations_over_the_limit_gets_429_on_either_node_even_with_a_valid_token() {
    let (a, b) = two_shared_nodes(&[
        ("rate_limits.accept_invitation_per_ip", "3/hour"),
        // A client of its own: Redis outlives this test, and other tests
        // accept invitations from 127.0.0.1 too.
        ("http.client_ip", "x_forwarded_for"),
    ])
    .await;
    let r = rand::random::<[u16; 3]>();
    let client_ip = format!("2001:db8::{:x}:{:x}:{:x}", r[0], r[1], r[2]);
    let owner = register_and_login(&a, &unique_email("owner")).await;
    let guest_email = unique_email("guest");
    let guest = register_and_login(&b, &guest_email).await;
    let (_, token) = a.invite(&owner, owner.org_id, &guest_email, "member").await;
    let accept = |node: &TestApp, token: &str| {
        node.authed(
            Method::POST,
            "/api/v1/invitations/accept",
            &guest.access_token,
        )
        .header("x-forwarded-for", &client_ip)
        .json(&json!({ "token": token }))
        .send()
    };

    // Three guesses, spread over both nodes, use up the quota...
    for (i, guess) in ["swe_guess1", "swe_guess2", "swe_guess3"]
        .iter()
        .enumerate()
    {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(accept(node, guess).await.unwrap().status(), 400);
    }
    // ...so that even the real token is refused, on both, until it refills.
    assert_rate_limited(accept(&a, &token).await.unwrap()).await;
    assert_rate_limited(accept(&b, &token).await.unwrap()).await;
    let orgs = b.get_as("/api/v1/orgs", &guest.access_token, 200).await;
    assert_eq!(orgs["items"].as_array().unwrap().len(), 1, "{orgs}");
}
