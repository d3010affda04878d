//! Organizations over HTTP: the organization, members and roles,
//! invitations, API keys, licenses and sessions seen from the
//! organization, force-release and the audit log. On the embedded default,
//! and on PostgreSQL and Redis where the backends differ (concurrency,
//! several nodes).

mod support;

use reqwest::Method;
use serde_json::{Value, json};

use support::accounts::{
    Session, outbox_data, register_and_login, register_unverified, unique_email,
};
use support::services::{fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, ids, spawn_app, spawn_app_with};

fn org_path(s: &Session, rest: &str) -> String {
    format!("/api/v1/orgs/{}{rest}", s.org_id)
}

async fn owner(app: &TestApp, tag: &str) -> Session {
    register_and_login(app, &unique_email(tag)).await
}

/// The newest audit entries of the owner's org with this action.
async fn audit_of(app: &TestApp, owner: &Session, action: &str) -> Vec<Value> {
    let body = app
        .get_as(
            &org_path(owner, &format!("/audit-logs?action={action}")),
            &owner.access_token,
            200,
        )
        .await;
    body["items"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// The organization

#[tokio::test]
async fn a_new_account_sees_its_own_org_as_owner() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;

    let list = app.get_as("/api/v1/orgs", &ada.access_token, 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], ada.org_id.to_string());
    assert_eq!(list["items"][0]["role"], "owner");
    assert_eq!(list["next_cursor"], Value::Null);

    let org = app
        .get_as(&org_path(&ada, ""), &ada.access_token, 200)
        .await;
    assert_eq!(org["id"], ada.org_id.to_string());
    assert_eq!(org["name"], format!("Org of {}", ada.email));
    assert_eq!(org["role"], "owner");
}

#[tokio::test]
async fn org_routes_without_a_credential_answer_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    for path in [
        "/api/v1/orgs".to_owned(),
        org_path(&ada, ""),
        org_path(&ada, "/members"),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let r = app
        .authed(Method::GET, &org_path(&ada, ""), "swk_not-a-real-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a malformed API key");
}

#[tokio::test]
async fn an_owner_renames_the_org_and_the_rename_is_audited_with_their_id() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;

    let renamed = app
        .send_as(
            Method::PATCH,
            &org_path(&ada, ""),
            &ada.access_token,
            Some(&json!({"name": "Analytical Engines"})),
            200,
        )
        .await;
    assert_eq!(renamed["name"], "Analytical Engines");
    let org = app
        .get_as(&org_path(&ada, ""), &ada.access_token, 200)
        .await;
    assert_eq!(org["name"], "Analytical Engines");

    let entries = audit_of(&app, &ada, "ORG_RENAMED").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actor_id"], ada.user_id.to_string());
    assert_eq!(entries[0]["detail"], "name=Analytical Engines");
}

// ---------------------------------------------------------------------------
// Invitations

#[tokio::test]
async fn an_invitation_emails_a_single_use_token_that_joins_its_addressee() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let bob_email = unique_email("bob");
    let bob = register_and_login(&app, &bob_email).await;

    let (invitation, token) = app.invite(&ada, ada.org_id, &bob_email, "admin").await;
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["role"], "admin");
    assert!(
        invitation.get("token").is_none(),
        "the token is only mailed"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        invitation["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::days(7) - chrono::Duration::minutes(1)
            && ttl <= chrono::Duration::days(7),
        "{ttl}"
    );
    // Waits for the delivery, then reads what the invitee reads.
    support::accounts::emailed_token(&app, &bob_email, "invitation").await;
    let mail = support::mail::delivered_to(&app, &bob_email).remove(0);
    assert!(
        mail.text.contains(&format!("Org of {}", ada.email)),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains(&format!("Test {}", ada.email)),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("admin"), "{}", mail.text);

    let joined = app
        .send_as(
            Method::POST,
            "/api/v1/invitations/accept",
            &bob.access_token,
            Some(&json!({"token": token})),
            200,
        )
        .await;
    assert_eq!(joined["id"], ada.org_id.to_string());
    assert_eq!(joined["role"], "admin");
    // Bob's access token predates the membership: the role is read from
    // the store, so it works at once.
    app.get_as(&org_path(&ada, "/members"), &bob.access_token, 200)
        .await;

    let again = app
        .send_as(
            Method::POST,
            "/api/v1/invitations/accept",
            &bob.access_token,
            Some(&json!({"token": token})),
            400,
        )
        .await;
    assert_eq!(again["error"], "invalid_token");

    let members = app
        .get_as(&org_path(&ada, "/members"), &ada.access_token, 200)
        .await;
    let roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (ada.user_id.to_string(), "owner".to_owned()),
            (bob.user_id.to_string(), "admin".to_owned())
        ]
    );
    let invitations = app
        .get_as(&org_path(&ada, "/invitations"), &ada.access_token, 200)
        .await;
    assert_eq!(invitations["items"][0]["status"], "accepted");
    assert_eq!(
        invitations["items"][0]["accepted_by"],
        bob.user_id.to_string()
    );

    let created = audit_of(&app, &ada, "INVITATION_CREATED").await;
    assert_eq!(created[0]["actor_id"], ada.user_id.to_string());
    let accepted = audit_of(&app, &ada, "INVITATION_ACCEPTED").await;
    assert_eq!(accepted[0]["actor_id"], bob.user_id.to_string());
}

#[tokio::test]
async fn an_invitation_for_another_address_is_refused_and_stays_usable() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let bob_email = unique_email("bob");
    let bob = register_and_login(&app, &bob_email).await;
    let eve = owner(&app, "eve").await;
    let (_, token) = app.invite(&ada, ada.org_id, &bob_email, "member").await;

    let refused = app
        .send_as(
            Method::POST,
            "/api/v1/invitations/accept",
            &eve.access_token,
            Some(&json!({"token": token})),
            403,
        )
        .await;
    assert_eq!(refused["error"], "invitation_for_another_address");
    app.get_as(&org_path(&ada, ""), &eve.access_token, 404)
        .await;

    app.send_as(
        Method::POST,
        "/api/v1/invitations/accept",
        &bob.access_token,
        Some(&json!({"token": token})),
        200,
    )
    .await;
}

#[tokio::test]
async fn a_revoked_invitation_cannot_be_accepted() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let bob_email = unique_email("bob");
    let bob = register_and_login(&app, &bob_email).await;
    let (invitation, token) = app.invite(&ada, ada.org_id, &bob_email, "member").await;
    let id = invitation["id"].as_str().unwrap();

    let revoked = app
        .send_as(
            Method::DELETE,
            &org_path(&ada, &format!("/invitations/{id}")),
            &ada.access_token,
            None,
            200,
        )
        .await;
    assert_eq!(revoked["status"], "revoked");
    let r = app
        .send_as(
            Method::POST,
            "/api/v1/invitations/accept",
            &bob.access_token,
            Some(&json!({"token": token})),
            400,
        )
        .await;
    assert_eq!(r["error"], "invalid_token");
    assert_eq!(audit_of(&app, &ada, "INVITATION_REVOKED").await.len(), 1);
    app.send_as(
        Method::DELETE,
        &org_path(&ada, &format!("/invitations/{}", uuid::Uuid::new_v4())),
        &ada.access_token,
        None,
        404,
    )
    .await;
}

#[tokio::test]
async fn inviting_a_member_again_is_a_conflict() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let body = app
        .send_as(
            Method::POST,
            &org_path(&ada, "/invitations"),
            &ada.access_token,
            Some(&json!({"email": ada.email.to_uppercase(), "role": "member"})),
            409,
        )
        .await;
    assert_eq!(body["error"], "already_member");
}

#[tokio::test]
async fn an_unverified_owner_can_log_in_but_not_invite_or_create_api_keys() {
    let app = spawn_app().await;
    let ada = register_unverified(&app, &unique_email("ada")).await;

    app.get_as(&org_path(&ada, ""), &ada.access_token, 200)
        .await;
    let invite = app
        .send_as(
            Method::POST,
            &org_path(&ada, "/invitations"),
            &ada.access_token,
            Some(&json!({"email": "someone@example.com", "role": "member"})),
            403,
        )
        .await;
    assert_eq!(invite["error"], "email_not_verified");
    let key = app
        .send_as(
            Method::POST,
            &org_path(&ada, "/api-keys"),
            &ada.access_token,
            Some(&json!({"name": "ci", "role": "member"})),
            403,
        )
        .await;
    assert_eq!(key["error"], "email_not_verified");
    assert!(
        outbox_data(&app, "someone@example.com", "invitation")
            .await
            .is_none()
    );
    let keys = app
        .get_as(&org_path(&ada, "/api-keys"), &ada.access_token, 200)
        .await;
    assert!(keys["items"].as_array().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Members and roles

#[tokio::test]
async fn members_are_listed_in_pages_with_an_opaque_cursor() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    for tag in ["m1", "m2", "m3"] {
        app.member(&ada, ada.org_id, tag, "member").await;
    }

    let mut seen = Vec::new();
    let mut path = org_path(&ada, "/members?limit=3");
    loop {
        let page = app.get_as(&path, &ada.access_token, 200).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|m| m["user_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = org_path(&ada, &format!("/members?limit=3&cursor={cursor}")),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0], ada.user_id.to_string(), "oldest first");
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 4, "no member twice");

    for (query, code) in [
        ("?cursor=bm9wZQ", "invalid_cursor"),
        ("?limit=0", "invalid_limit"),
        ("?limit=201", "invalid_limit"),
        ("?limit=ten", "invalid_query"),
        ("?sort=name", "invalid_query"),
    ] {
        let body = app
            .get_as(
                &org_path(&ada, &format!("/members{query}")),
                &ada.access_token,
                400,
            )
            .await;
        assert_eq!(body["error"], code, "{query}");
    }
}

#[tokio::test]
async fn an_admin_manages_members_but_never_an_owner() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let admin = app.member(&ada, ada.org_id, "admin", "admin").await;
    let member = app.member(&ada, ada.org_id, "member", "member").await;

    let changed = app
        .send_as(
            Method::PATCH,
            &org_path(&ada, &format!("/members/{}", member.user_id)),
            &admin.access_token,
            Some(&json!({"role": "guest"})),
            200,
        )
        .await;
    assert_eq!(changed["role"], "guest");
    let refused = app
        .send_as(
            Method::PATCH,
            &org_path(&ada, &format!("/members/{}", ada.user_id)),
            &admin.access_token,
            Some(&json!({"role": "member"})),
            403,
        )
        .await;
    assert_eq!(refused["error"], "forbidden");
    app.send_as(
        Method::PATCH,
        &org_path(&ada, &format!("/members/{}", member.user_id)),
        &admin.access_token,
        Some(&json!({"role": "owner"})),
        403,
    )
    .await;
    // The guest manages no one.
    app.send_as(
        Method::DELETE,
        &org_path(&ada, &format!("/members/{}", admin.user_id)),
        &member.access_token,
        None,
        403,
    )
    .await;
    app.send_as(
        Method::DELETE,
        &org_path(&ada, &format!("/members/{}", member.user_id)),
        &admin.access_token,
        None,
        204,
    )
    .await;
    app.send_as(
        Method::DELETE,
        &org_path(&ada, &format!("/members/{}", member.user_id)),
        &admin.access_token,
        None,
        404,
    )
    .await;

    let changes = audit_of(&app, &ada, "MEMBER_ROLE_CHANGED").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["actor_id"], admin.user_id.to_string());
    assert_eq!(
        changes[0]["detail"],
        format!("user_id={} from=member to=guest", member.user_id)
    );
    let removals = audit_of(&app, &ada, "MEMBER_REMOVED").await;
    assert_eq!(removals[0]["actor_id"], admin.user_id.to_string());
}

#[tokio::test]
async fn the_last_owner_can_neither_step_down_nor_be_removed() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let path = org_path(&ada, &format!("/members/{}", ada.user_id));
    let demote = app
        .send_as(
            Method::PATCH,
            &path,
            &ada.access_token,
            Some(&json!({"role": "admin"})),
            409,
        )
        .await;
    assert_eq!(demote["error"], "last_owner");
    let remove = app
        .send_as(Method::DELETE, &path, &ada.access_token, None, 409)
        .await;
    assert_eq!(remove["error"], "last_owner");

    let bob = app.member(&ada, ada.org_id, "bob", "owner").await;
    app.send_as(
        Method::PATCH,
        &path,
        &bob.access_token,
        Some(&json!({"role": "admin"})),
        200,
    )
    .await;
}

#[tokio::test]
async fn a_removed_member_loses_access_with_their_next_request() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let bob = app.member(&ada, ada.org_id, "bob", "admin").await;
    app.get_as(&org_path(&ada, "/licenses"), &bob.access_token, 200)
        .await;
    app.get_as(&org_path(&ada, "/audit-logs"), &bob.access_token, 200)
        .await;

    app.send_as(
        Method::PATCH,
        &org_path(&ada, &format!("/members/{}", bob.user_id)),
        &ada.access_token,
        Some(&json!({"role": "member"})),
        200,
    )
    .await;
    // Demoted: reads licenses still, manages no more, with the same token.
    app.get_as(&org_path(&ada, "/licenses"), &bob.access_token, 200)
        .await;
    app.get_as(&org_path(&ada, "/audit-logs"), &bob.access_token, 403)
        .await;

    app.send_as(
        Method::DELETE,
        &org_path(&ada, &format!("/members/{}", bob.user_id)),
        &ada.access_token,
        None,
        204,
    )
    .await;
    let gone = app
        .get_as(&org_path(&ada, ""), &bob.access_token, 404)
        .await;
    assert_eq!(gone["error"], "org_not_found");
}

#[tokio::test]
async fn guests_see_their_org_but_not_its_licenses_or_members() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let guest = app.member(&ada, ada.org_id, "guest", "guest").await;
    let lic = app.create_license_for(ada.org_id, 1).await;

    let org = app
        .get_as(&org_path(&ada, ""), &guest.access_token, 200)
        .await;
    assert_eq!(org["role"], "guest");
    for path in [
        org_path(&ada, "/licenses"),
        org_path(&ada, "/members"),
        org_path(&ada, "/audit-logs"),
        format!("/api/v1/licenses/{}", lic.id),
    ] {
        let body = app.get_as(&path, &guest.access_token, 403).await;
        assert_eq!(body["error"], "forbidden", "{path}");
    }
}

// ---------------------------------------------------------------------------
// API keys

#[tokio::test]
async fn an_api_key_is_shown_once_and_works_as_a_bearer_credential() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let lic = app.create_license_for(ada.org_id, 2).await;

    let r = app
        .authed(
            Method::POST,
            &org_path(&ada, "/api-keys"),
            &ada.access_token,
        )
        .json(&json!({"name": "ci runners", "role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("swk_"), "{key}");
    assert_eq!(created["role"], "member");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["key_hint"],
        format!("swk_…{}", &key[key.len() - 4..])
    );

    let listed = app
        .get_as(&org_path(&ada, "/api-keys"), &ada.access_token, 200)
        .await;
    assert_eq!(listed["items"][0]["id"], created["id"]);
    assert!(listed["items"][0].get("key").is_none(), "shown once only");
    assert!(!listed.to_string().contains(&key));

    let orgs = app.get_as("/api/v1/orgs", &key, 200).await;
    assert_eq!(orgs["items"][0]["id"], ada.org_id.to_string());
    assert_eq!(orgs["items"][0]["role"], "member");
    let licenses = app.get_as(&org_path(&ada, "/licenses"), &key, 200).await;
    assert_eq!(licenses["items"][0]["id"], lic.id.to_string());
    app.get_as(&format!("/api/v1/licenses/{}/sessions", lic.id), &key, 200)
        .await;

    let created_audit = audit_of(&app, &ada, "API_KEY_CREATED").await;
    assert_eq!(created_audit[0]["actor_id"], ada.user_id.to_string());
    assert!(!created_audit[0].to_string().contains(&key));
}

#[tokio::test]
async fn a_revoked_api_key_stops_working_at_once() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let (id, key) = app.api_key(&ada, ada.org_id, "member").await;
    app.get_as(&org_path(&ada, ""), &key, 200).await;

    let revoked = app
        .send_as(
            Method::DELETE,
            &org_path(&ada, &format!("/api-keys/{id}")),
            &ada.access_token,
            None,
            200,
        )
        .await;
    assert_eq!(revoked["status"], "revoked");
    let r = app.get_as(&org_path(&ada, ""), &key, 401).await;
    assert_eq!(r["error"], "unauthorized");
    assert_eq!(audit_of(&app, &ada, "API_KEY_REVOKED").await.len(), 1);
}

#[tokio::test]
async fn api_keys_read_by_their_role_and_never_manage() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let lic = app.create_license_for(ada.org_id, 1).await;
    let (_, member_key) = app.api_key(&ada, ada.org_id, "member").await;
    let (_, guest_key) = app.api_key(&ada, ada.org_id, "guest").await;

    for (method, path, body) in [
        (
            Method::POST,
            org_path(&ada, "/invitations"),
            Some(json!({"email": "x@example.com", "role": "guest"})),
        ),
        (
            Method::POST,
            org_path(&ada, "/api-keys"),
            Some(json!({"name": "more", "role": "guest"})),
        ),
        (Method::GET, org_path(&ada, "/api-keys"), None),
        (Method::GET, org_path(&ada, "/members"), None),
        (Method::GET, org_path(&ada, "/audit-logs"), None),
        (
            Method::PATCH,
            org_path(&ada, ""),
            Some(json!({"name": "Hijacked"})),
        ),
    ] {
        let answer = app
            .send_as(method.clone(), &path, &member_key, body.as_ref(), 403)
            .await;
        assert_eq!(answer["error"], "forbidden", "{method} {path}");
    }
    // A key is never a person.
    app.send_as(
        Method::POST,
        "/api/v1/invitations/accept",
        &member_key,
        Some(&json!({"token": "swe_x"})),
        403,
    )
    .await;
    app.get_as("/api/v1/auth/me", &member_key, 403).await;
    // Guests only use seats.
    app.get_as(&org_path(&ada, ""), &guest_key, 200).await;
    app.get_as(&org_path(&ada, "/licenses"), &guest_key, 403)
        .await;
    app.get_as(&format!("/api/v1/licenses/{}", lic.id), &guest_key, 403)
        .await;

    let bad = app
        .send_as(
            Method::POST,
            &org_path(&ada, "/api-keys"),
            &ada.access_token,
            Some(&json!({"name": "root", "role": "admin"})),
            400,
        )
        .await;
    assert_eq!(bad["error"], "invalid_role");
}

// ---------------------------------------------------------------------------
// Licenses and sessions

#[tokio::test]
async fn org_licenses_show_seats_used_and_remaining_and_filter_and_page() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let pro = app.create_license_for(ada.org_id, 3).await;
    let basic = app
        .create_license_in(
            ada.org_id,
            2,
            "basic",
            Some("2030-01-01T00:00:00Z"),
            None,
            0,
        )
        .await;
    app.acquire_ok(&pro.key, "m-1").await;
    app.acquire_ok(&pro.key, "m-2").await;

    let all = app
        .get_as(&org_path(&ada, "/licenses"), &ada.access_token, 200)
        .await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], pro.id.to_string());
    assert_eq!(items[0]["seats"], 3);
    assert_eq!(items[0]["seats_used"], 2);
    assert_eq!(items[0]["seats_remaining"], 1);
    assert_eq!(items[1]["seats_used"], 0);
    assert_eq!(items[1]["seats_remaining"], 2);
    assert!(items[0].get("key_hash").is_none());
    assert!(!all.to_string().contains(&pro.key), "keys are never shown");

    let basic_only = app
        .get_as(
            &org_path(&ada, "/licenses?tier=basic"),
            &ada.access_token,
            200,
        )
        .await;
    assert_eq!(basic_only["items"].as_array().unwrap().len(), 1);
    assert_eq!(basic_only["items"][0]["id"], basic.id.to_string());
    let expiring = app
        .get_as(
            &org_path(&ada, "/licenses?expires_before=2031-01-01T00:00:00Z"),
            &ada.access_token,
            200,
        )
        .await;
    assert_eq!(expiring["items"][0]["id"], basic.id.to_string());
    app.update_license(basic.id, None, Some("suspended")).await;
    let suspended = app
        .get_as(
            &org_path(&ada, "/licenses?status=suspended"),
            &ada.access_token,
            200,
        )
        .await;
    assert_eq!(suspended["items"].as_array().unwrap().len(), 1);
    assert_eq!(suspended["items"][0]["status"], "suspended");

    let first = app
        .get_as(&org_path(&ada, "/licenses?limit=1"), &ada.access_token, 200)
        .await;
    assert_eq!(first["items"][0]["id"], pro.id.to_string());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_as(
            &org_path(&ada, &format!("/licenses?limit=1&cursor={cursor}")),
            &ada.access_token,
            200,
        )
        .await;
    assert_eq!(second["items"][0]["id"], basic.id.to_string());
    assert_eq!(second["next_cursor"], Value::Null);

    let bad = app
        .get_as(
            &org_path(&ada, "/licenses?status=lapsed"),
            &ada.access_token,
            400,
        )
        .await;
    assert_eq!(bad["error"], "invalid_query");
}

#[tokio::test]
async fn a_license_and_its_sessions_are_visible_to_its_members() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let member = app.member(&ada, ada.org_id, "member", "member").await;
    let lic = app.create_license_for(ada.org_id, 3).await;
    let live = app.acquire_ok(&lic.key, "m-live").await;
    let ended = app.acquire_ok(&lic.key, "m-ended").await;
    assert_eq!(app.release_of(&ended).await.status(), 200);

    let license = app
        .get_as(
            &format!("/api/v1/licenses/{}", lic.id),
            &member.access_token,
            200,
        )
        .await;
    assert_eq!(license["seats_used"], 1);
    assert_eq!(license["seats_remaining"], 2);
    assert_eq!(license["tier"], "pro");

    let path = |q: &str| format!("/api/v1/licenses/{}/sessions{q}", lic.id);
    let all = app.get_as(&path(""), &member.access_token, 200).await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], ended["session_id"], "newest first");
    let live_only = app
        .get_as(&path("?status=live"), &member.access_token, 200)
        .await;
    assert_eq!(live_only["items"].as_array().unwrap().len(), 1);
    assert_eq!(live_only["items"][0]["id"], live["session_id"]);
    assert_eq!(live_only["items"][0]["status"], "live");
    let released = app
        .get_as(&path("?end_reason=released"), &member.access_token, 200)
        .await;
    assert_eq!(released["items"][0]["id"], ended["session_id"]);
    let by_machine = app
        .get_as(&path("?hardware_id=m-live"), &member.access_token, 200)
        .await;
    assert_eq!(by_machine["items"][0]["id"], live["session_id"]);
    let none = app
        .get_as(
            &path("?started_before=2000-01-01T00:00:00Z"),
            &member.access_token,
            200,
        )
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let page = app
        .get_as(&path("?limit=1"), &member.access_token, 200)
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = app
        .get_as(
            &path(&format!("?limit=1&cursor={cursor}")),
            &member.access_token,
            200,
        )
        .await;
    assert_eq!(next["items"][0]["id"], live["session_id"]);

    let unknown = app
        .get_as(
            &format!("/api/v1/licenses/{}", uuid::Uuid::new_v4()),
            &member.access_token,
            404,
        )
        .await;
    assert_eq!(unknown["error"], "license_not_found");
}

#[tokio::test]
async fn force_release_revokes_the_session_frees_the_seat_and_is_audited() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let lic = app.create_license_for(ada.org_id, 1).await;
    let held = app.acquire_ok(&lic.key, "laptop").await;
    let (session, _) = ids(&held);
    assert_eq!(app.acquire(&lic.key, "desktop").await.status(), 409);

    let path = format!("/api/v1/licenses/{}/sessions/{session}", lic.id);
    let revoked = app
        .send_as(Method::DELETE, &path, &ada.access_token, None, 200)
        .await;
    assert_eq!(revoked["status"], "ended");
    assert_eq!(revoked["end_reason"], "revoked");

    let beat = app.heartbeat_of(&held).await;
    assert_eq!(beat.status(), 410);
    let body: Value = beat.json().await.unwrap();
    assert_eq!(body["error"], "session_revoked");
    assert_eq!(body["end_reason"], "revoked");
    // The seat is free at once.
    app.acquire_ok(&lic.key, "desktop").await;
    // Releasing it afterwards is still fine (idempotent), and says why.
    let release: Value = app.release_of(&held).await.json().await.unwrap();
    assert_eq!(release["end_reason"], "revoked");

    let entries = audit_of(&app, &ada, "SESSION_REVOKED").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actor_id"], ada.user_id.to_string());
    assert_eq!(entries[0]["session_id"], session);
    assert_eq!(entries[0]["license_id"], lic.id.to_string());
    assert_eq!(entries[0]["hardware_id"], "laptop");

    // Again: answered as it ended, nothing more written.
    let again = app
        .send_as(Method::DELETE, &path, &ada.access_token, None, 200)
        .await;
    assert_eq!(again["ended_at"], revoked["ended_at"]);
    assert_eq!(audit_of(&app, &ada, "SESSION_REVOKED").await.len(), 1);
}

#[tokio::test]
async fn only_owners_and_admins_force_release_and_only_their_own_licenses_sessions() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let member = app.member(&ada, ada.org_id, "member", "member").await;
    let admin = app.member(&ada, ada.org_id, "admin", "admin").await;
    let (_, key) = app.api_key(&ada, ada.org_id, "member").await;
    let lic = app.create_license_for(ada.org_id, 2).await;
    let other = app.create_license_for(ada.org_id, 2).await;
    let held = app.acquire_ok(&lic.key, "laptop").await;
    let (session, _) = ids(&held);
    let path = format!("/api/v1/licenses/{}/sessions/{session}", lic.id);

    app.send_as(Method::DELETE, &path, &member.access_token, None, 403)
        .await;
    app.send_as(Method::DELETE, &path, &key, None, 403).await;
    let wrong_license = app
        .send_as(
            Method::DELETE,
            &format!("/api/v1/licenses/{}/sessions/{session}", other.id),
            &admin.access_token,
            None,
            404,
        )
        .await;
    assert_eq!(wrong_license["error"], "session_not_found");
    assert_eq!(app.heartbeat_of(&held).await.status(), 200, "untouched");
    app.send_as(Method::DELETE, &path, &admin.access_token, None, 200)
        .await;
    assert_eq!(app.heartbeat_of(&held).await.status(), 410);
}

// ---------------------------------------------------------------------------
// The audit log

#[tokio::test]
async fn the_audit_log_filters_by_action_user_license_and_time_and_pages() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let bob = app.member(&ada, ada.org_id, "bob", "admin").await;
    let lic = app.create_license_for(ada.org_id, 2).await;
    let since = chrono::Utc::now();
    let held = app.acquire_ok(&lic.key, "laptop").await;
    app.release_of(&held).await;
    app.send_as(
        Method::PATCH,
        &org_path(&ada, ""),
        &bob.access_token,
        Some(&json!({"name": "Renamed by Bob"})),
        200,
    )
    .await;

    let q = |query: String| org_path(&ada, &format!("/audit-logs?{query}"));
    let by_bob = app
        .get_as(
            &q(format!("user_id={}", bob.user_id)),
            &ada.access_token,
            200,
        )
        .await;
    let actions: Vec<&str> = by_bob["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["ORG_RENAMED", "INVITATION_ACCEPTED"],
        "newest first"
    );
    let of_license = app
        .get_as(&q(format!("license_id={}", lic.id)), &ada.access_token, 200)
        .await;
    let actions: Vec<&str> = of_license["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["LICENSE_RELEASED", "LICENSE_ACQUIRED"]);
    let from = since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let recent = app
        .get_as(&q(format!("from={from}")), &ada.access_token, 200)
        .await;
    assert_eq!(recent["items"].as_array().unwrap().len(), 3);
    let before = app
        .get_as(
            &q(format!("to={from}&action=LICENSE_ACQUIRED")),
            &ada.access_token,
            200,
        )
        .await;
    assert!(before["items"].as_array().unwrap().is_empty());

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = app.get_as(&q(query.clone()), &ada.access_token, 200).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=2&cursor={c}"),
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let everything = app
        .get_as(&q("limit=200".into()), &ada.access_token, 200)
        .await;
    assert_eq!(seen.len(), everything["items"].as_array().unwrap().len());

    let bad = app
        .get_as(&q("action=DROP_TABLES".into()), &ada.access_token, 400)
        .await;
    assert_eq!(bad["error"], "invalid_query");
    // The log is append-only: there is no way to change it over HTTP.
    let r = app
        .authed(
            Method::DELETE,
            &org_path(&ada, "/audit-logs"),
            &ada.access_token,
        )
        .send()
        .await
        .unwrap();
    assert!(r.status() == 404 || r.status() == 405, "{}", r.status());
}

// ---------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_never_a_5xx() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let long = "x".repeat(300);
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::PATCH,
            org_path(&ada, ""),
            Some(json!({"name": ""})),
            400,
            "invalid_name",
        ),
        (
            Method::PATCH,
            org_path(&ada, ""),
            Some(json!({"name": long})),
            400,
            "invalid_name",
        ),
        (
            Method::PATCH,
            org_path(&ada, ""),
            Some(json!({"name": "A", "owner": "me"})),
            400,
            "invalid_body",
        ),
        (
            Method::PATCH,
            org_path(&ada, ""),
            Some(json!(["not", "an", "object"])),
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            org_path(&ada, "/invitations"),
            Some(json!({"email": "not-an-address", "role": "member"})),
            400,
            "invalid_email",
        ),
        (
            Method::POST,
            org_path(&ada, "/invitations"),
            Some(json!({"email": "a@example.com", "role": "king"})),
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            org_path(&ada, "/invitations"),
            Some(json!({"email": "a@example.com"})),
            400,
            "invalid_body",
        ),
        (
            Method::PATCH,
            org_path(&ada, &format!("/members/{}", ada.user_id)),
            Some(json!({"role": 7})),
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            org_path(&ada, "/api-keys"),
            Some(json!({"name": long, "role": "member"})),
            400,
            "invalid_name",
        ),
        (
            Method::POST,
            "/api/v1/invitations/accept".to_owned(),
            Some(json!({"token": "nope"})),
            400,
            "invalid_token",
        ),
        (
            Method::GET,
            "/api/v1/orgs/not-a-uuid".to_owned(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/licenses/not-a-uuid/sessions".to_owned(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/api/v1/orgs/{}", uuid::Uuid::new_v4()),
            None,
            404,
            "org_not_found",
        ),
        (
            Method::GET,
            org_path(&ada, "/audit-logs?from=yesterday"),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            org_path(&ada, "/licenses?tier="),
            None,
            400,
            "invalid_query",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let answer = app
            .send_as(
                method.clone(),
                &path,
                &ada.access_token,
                body.as_ref(),
                status,
            )
            .await;
        assert_eq!(answer["error"], code, "{method} {path}");
        assert!(answer["message"].is_string(), "{method} {path}");
    }
}

// ---------------------------------------------------------------------------
// Platform administrators

#[tokio::test]
async fn a_platform_admin_reads_any_org_but_changes_none() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let email = unique_email("root");
    let hash = seatwarden::auth::passwords::hash(secrecy::SecretString::from(
        support::accounts::PASSWORD.to_owned(),
    ))
    .await
    .unwrap();
    app.store
        .create_platform_admin(&email, "Root", &hash)
        .await
        .unwrap();
    let root = support::accounts::login(&app, &email).await;

    let org = app
        .get_as(&org_path(&ada, ""), &root.access_token, 200)
        .await;
    assert_eq!(org["role"], Value::Null);
    app.get_as(&org_path(&ada, "/members"), &root.access_token, 200)
        .await;
    app.get_as(&org_path(&ada, "/audit-logs"), &root.access_token, 200)
        .await;
    app.send_as(
        Method::PATCH,
        &org_path(&ada, ""),
        &root.access_token,
        Some(&json!({"name": "Taken over"})),
        403,
    )
    .await;
    app.get_as(
        &format!("/api/v1/orgs/{}", uuid::Uuid::new_v4()),
        &root.access_token,
        404,
    )
    .await;
}

// ---------------------------------------------------------------------------
// Shared backends: PostgreSQL and Redis

fn shared(database_url: &str) -> AppOptions {
    AppOptions {
        backend: Backend::Shared {
            database_url: database_url.to_owned(),
            redis_url: redis_url(),
        },
        ..AppOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_two_owners_demoting_each_other_at_once_leave_one_owner() {
    let db = fresh_postgres_db().await;
    let app = spawn_app_with(shared(&db)).await;
    for round in 0..3 {
        let ada = owner(&app, &format!("ada{round}")).await;
        let bob = app
            .member(&ada, ada.org_id, &format!("bob{round}"), "owner")
            .await;
        let demote = |by: &Session, whom: &Session| {
            app.authed(
                Method::PATCH,
                &org_path(&ada, &format!("/members/{}", whom.user_id)),
                &by.access_token,
            )
            .json(&json!({"role": "admin"}))
            .send()
        };
        let (a, b) = tokio::join!(demote(&ada, &bob), demote(&bob, &ada));
        let mut statuses = vec![a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        statuses.sort();
        // The loser either meets the last-owner rule (409) or, when the
        // winner's demotion committed first, is no longer an owner (403).
        assert_eq!(statuses[0], 200, "round {round}: {statuses:?}");
        assert!(
            statuses[1] == 409 || statuses[1] == 403,
            "round {round}: {statuses:?}"
        );
        let members = app
            .get_as(&org_path(&ada, "/members"), &ada.access_token, 200)
            .await;
        let owners = members["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "owner")
            .count();
        assert_eq!(owners, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_nodes_force_release_and_key_revocation_hold_on_the_other_node_at_once() {
    let db = fresh_postgres_db().await;
    // Both nodes accept the same access tokens, as production nodes do.
    let node_a = spawn_app_with(shared(&db)).await;
    let node_b = spawn_app_with(shared(&db)).await;

    let ada = owner(&node_a, "ada").await;
    let lic = node_a.create_license_for(ada.org_id, 1).await;
    let held = node_b.acquire_ok(&lic.key, "laptop").await;
    let (session, _) = ids(&held);
    let (key_id, key) = node_a.api_key(&ada, ada.org_id, "member").await;
    node_b.get_as(&org_path(&ada, "/licenses"), &key, 200).await;

    node_a
        .send_as(
            Method::DELETE,
            &format!("/api/v1/licenses/{}/sessions/{session}", lic.id),
            &ada.access_token,
            None,
            200,
        )
        .await;
    let beat = node_b.heartbeat_of(&held).await;
    assert_eq!(beat.status(), 410);
    assert_eq!(
        beat.json::<Value>().await.unwrap()["error"],
        "session_revoked"
    );
    node_b.acquire_ok(&lic.key, "desktop").await;

    node_a
        .send_as(
            Method::DELETE,
            &org_path(&ada, &format!("/api-keys/{key_id}")),
            &ada.access_token,
            None,
            200,
        )
        .await;
    node_b.get_as(&org_path(&ada, "/licenses"), &key, 401).await;
}
