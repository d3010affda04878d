//! The whole customer story of accounts, organizations and machines, on
//! two nodes sharing Redis and PostgreSQL, with mail delivered to the real
//! SMTP sink: sign up, verify, log in, get a license, invite a colleague,
//! who activates a machine and takes a seat on one node, which the owner
//! force-releases from the other. Each step is read back from the
//! organization's audit log.
//!
//! The nodes share what a deployment shares (database, Redis, and so the
//! access-token key, see `support::app`) and nothing else: each has its own actors, caches and mailer,
//! and the steps alternate between them so that every hand-over crosses
//! from one to the other.

mod support;

use reqwest::Method;
use serde_json::{Value, json};

use support::accounts::Session;
use support::mail::{address, mailed_token, smtp_url};
use support::people::{PASSWORD, platform_admin};
use support::services::{fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, spawn_app_with};

async fn two_nodes() -> (TestApp, TestApp) {
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
    let a = spawn_app_with(node(backend.clone())).await;
    let b = spawn_app_with(node(backend)).await;
    (a, b)
}

/// Registers on `node`, follows the verification link mailed through the
/// SMTP sink on `other`, and logs in there.
async fn sign_up(node: &TestApp, other: &TestApp, email: &str, name: &str) -> Session {
    let registered = node
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": PASSWORD,
                    "full_name": name, "organization_name": format!("{name}'s company")}),
        )
        .await;
    assert_eq!(registered.status(), 202);
    let token = mailed_token(node, email, "/api/v1/auth/verify-email").await;
    let verified = other
        .get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(verified.status(), 200, "{:?}", verified.text().await);

    let login = other
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 200);
    let tokens: Value = login.json().await.unwrap();
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let me = node.get_as("/api/v1/auth/me", &access_token, 200).await;
    assert_eq!(me["email_verified"], true, "{me}");
    Session {
        email: email.to_owned(),
        user_id: me["id"].as_str().unwrap().parse().unwrap(),
        org_id: me["organizations"][0]["org_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        access_token,
    }
}

/// An acquire as `who` (the license requires a user).
async fn acquire_as(node: &TestApp, who: &Session, key: &str, machine: &str) -> reqwest::Response {
    node.authed(Method::POST, "/api/v1/licenses/acquire", &who.access_token)
        .json(&json!({"license_key": key, "hardware_id": machine}))
        .send()
        .await
        .unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn an_owner_force_releases_from_one_node_a_seat_their_invited_member_holds_on_the_other() {
    let (a, b) = two_nodes().await;

    // 1–2. Ada signs up on B, reads the verification mail from the SMTP
    // sink, verifies and logs in on A.
    let ada = sign_up(&b, &a, &address("ada"), "Ada").await;
    let org = ada.org_id;

    // 3. A platform administrator issues her organization a license with a
    // machine limit, through the API, on A.
    let admin = platform_admin(&a).await;
    let license = a
        .send_as(
            Method::POST,
            "/api/v1/admin/licenses",
            &admin.token,
            Some(&json!({"org_id": org, "seats": 1, "tier": "pro",
                         "max_machines": 1, "requires_user": true})),
            201,
        )
        .await;
    let key = license["key"].as_str().unwrap().to_owned();
    let license_id = license["id"].as_str().unwrap().to_owned();

    // 4. Ada invites Grace on A; Grace signs up on A, and accepts the
    // mailed invitation on B.
    let grace_email = address("grace");
    a.send_as(
        Method::POST,
        &format!("/api/v1/orgs/{org}/invitations"),
        &ada.access_token,
        Some(&json!({"email": grace_email, "role": "member"})),
        201,
    )
    .await;
    let grace = sign_up(&a, &b, &grace_email, "Grace").await;
    let invitation = mailed_token(&a, &grace_email, "/api/v1/invitations/accept").await;
    let joined = b
        .send_as(
            Method::POST,
            "/api/v1/invitations/accept",
            &grace.access_token,
            Some(&json!({"token": invitation})),
            200,
        )
        .await;
    assert_eq!(joined["id"], org.to_string());
    assert_eq!(joined["role"], "member");

    // 5. Grace activates her laptop and takes the seat on A. The license
    // allows one machine: her second one can neither acquire nor activate.
    let activated = a
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": key, "hardware_id": "grace-laptop", "name": "Grace's laptop"}),
        )
        .await;
    assert_eq!(activated.status(), 201);
    assert_eq!(
        error_of(acquire_as(&a, &grace, &key, "grace-desktop").await).await,
        (403, "machine_not_activated".to_owned())
    );
    let second = a
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": key, "hardware_id": "grace-desktop"}),
        )
        .await;
    assert_eq!(
        error_of(second).await,
        (409, "machine_limit_reached".into())
    );
    let acquired = acquire_as(&a, &grace, &key, "grace-laptop").await;
    assert_eq!(acquired.status(), 201);
    let acquired: Value = acquired.json().await.unwrap();
    let session_id = acquired["session_id"].as_str().unwrap().to_owned();
    let seat_token = acquired["token"].as_str().unwrap().to_owned();
    assert_eq!(a.heartbeat(&session_id, &seat_token).await.status(), 200);

    // The owner sees the live session from B; Grace, a member, can't end it.
    let sessions_path = format!("/api/v1/licenses/{license_id}/sessions?status=live");
    let live = b.get_as(&sessions_path, &ada.access_token, 200).await;
    assert_eq!(live["items"][0]["id"], session_id, "{live}");
    let session_path = format!("/api/v1/licenses/{license_id}/sessions/{session_id}");
    b.send_as(
        Method::DELETE,
        &session_path,
        &grace.access_token,
        None,
        403,
    )
    .await;

    // 6. Ada force-releases it on B.
    let revoked = b
        .send_as(Method::DELETE, &session_path, &ada.access_token, None, 200)
        .await;
    assert_eq!(revoked["end_reason"], "revoked", "{revoked}");

    // 7. Grace's next heartbeat on A is refused for good, and the seat is
    // free on A at once: her laptop takes it again as a new session.
    let heartbeat = a.heartbeat(&session_id, &seat_token).await;
    assert_eq!(error_of(heartbeat).await, (410, "session_revoked".into()));
    let again = acquire_as(&a, &grace, &key, "grace-laptop").await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["session_id"], session_id);

    // 8. The audit log, read on A, tells the story in order, each step
    // with who did it.
    let log = a
        .get_as(
            &format!("/api/v1/orgs/{org}/audit-logs?limit=200"),
            &ada.access_token,
            200,
        )
        .await;
    let mut entries: Vec<(String, Option<String>)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    entries.reverse(); // newest first on the wire
    let ada_id = Some(ada.user_id.to_string());
    let grace_id = Some(grace.user_id.to_string());
    let admin_id = Some(admin.id.clone());
    let expected = [
        ("LICENSE_ISSUED", admin_id),
        ("INVITATION_CREATED", ada_id.clone()),
        ("INVITATION_ACCEPTED", grace_id.clone()),
        ("MACHINE_ACTIVATED", None),
        ("LICENSE_ACQUIRED", grace_id.clone()),
        ("SESSION_REVOKED", ada_id),
        ("LICENSE_ACQUIRED", grace_id),
    ];
    let mut steps = entries
        .iter()
        .filter(|(action, _)| expected.iter().any(|(e, _)| e == action));
    for (action, actor) in &expected {
        let found = steps.next();
        assert_eq!(
            found.map(|(a, who)| (a.as_str(), who)),
            Some((*action, actor)),
            "the audit log, oldest first: {entries:#?}"
        );
    }
}
