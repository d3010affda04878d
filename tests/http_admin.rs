//! Platform administration over HTTP: who may call it, the listings with
//! search and pagination, license issue and change with their audit
//! entries, and the numbers.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};

use support::people::{Person, audit_actors, error_code, owner, platform_admin};
use support::{TestApp, spawn_app};

async fn get(app: &TestApp, path: &str, who: Option<&Person>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(p) = who {
        request = request.bearer_auth(&p.token);
    }
    request.send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, who: &Person, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&who.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn patch(app: &TestApp, path: &str, who: &Person, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .bearer_auth(&who.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn every_admin_route_wants_a_platform_admin() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let license = format!("/api/v1/admin/licenses/{}", uuid::Uuid::new_v4());
    for path in [
        "/api/v1/admin/users",
        "/api/v1/admin/orgs",
        "/api/v1/admin/licenses",
        "/api/v1/admin/analytics",
    ] {
        let anonymous = get(&app, path, None).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(error_code(anonymous).await, "unauthorized");
        let user = get(&app, path, Some(&ada)).await;
        assert_eq!(user.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(error_code(user).await, "forbidden");
    }
    let issue = post(
        &app,
        "/api/v1/admin/licenses",
        &ada,
        json!({"org_id": ada.org, "seats": 1}),
    )
    .await;
    assert_eq!(issue.status(), StatusCode::FORBIDDEN);
    let change = patch(&app, &license, &ada, json!({"seats": 2})).await;
    assert_eq!(change.status(), StatusCode::FORBIDDEN);
    let anonymous = app
        .client
        .patch(app.url(&license))
        .json(&json!({"seats": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_and_orgs_page_newest_first_with_search() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let mut owners = Vec::new();
    for tag in ["ada", "bob", "cyd"] {
        owners.push(owner(&app, tag).await);
    }

    // Users, one per page: cyd, bob, ada, then the admin, then the end.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/admin/users?limit=1".to_owned(),
            Some(c) => format!("/api/v1/admin/users?limit=1&cursor={c}"),
        };
        let page = ok_json(get(&app, &path, Some(&root)).await).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = owners
        .iter()
        .rev()
        .map(|p| p.id.clone())
        .chain([root.id.clone()])
        .collect();
    assert_eq!(seen, expected);

    let found = ok_json(get(&app, "/api/v1/admin/users?q=BOB", Some(&root)).await).await;
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], owners[1].id);
    assert_eq!(items[0]["platform_admin"], false);
    assert!(items[0].get("password_hash").is_none());
    assert_eq!(found["next_cursor"], Value::Null);

    let orgs = ok_json(get(&app, "/api/v1/admin/orgs?q=cyd%20org", Some(&root)).await).await;
    let items = orgs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], owners[2].org.unwrap().to_string());

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=bogus", "invalid_cursor"),
        ("status=active", "invalid_query"),
        ("sort=name", "invalid_query"),
    ] {
        let r = get(&app, &format!("/api/v1/admin/orgs?{query}"), Some(&root)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(r).await, code, "{query}");
    }
}

#[tokio::test]
async fn an_admin_issues_a_license_whose_key_is_shown_once_and_works() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let ada = owner(&app, "ada").await;

    let issued = post(
        &app,
        "/api/v1/admin/licenses",
        &root,
        json!({
            "org_id": ada.org,
            "seats": 2,
            "tier": "enterprise",
            "features": ["sso", " export "],
            "expires_at": "2099-01-01T00:00:00Z",
            "max_machines": 4,
            "requires_user": false,
        }),
    )
    .await;
    assert_eq!(issued.status(), StatusCode::CREATED);
    assert_eq!(issued.headers()["cache-control"], "no-store");
    let issued: Value = issued.json().await.unwrap();
    let key = issued["key"].as_str().unwrap();
    assert!(key.starts_with("CODITECT-"));
    assert_eq!(issued["features"], json!(["sso", "export"]));
    assert_eq!(issued["max_machines"], 4);
    let id = issued["id"].as_str().unwrap();

    // The key works, and no listing ever shows it again.
    app.post_json(
        "/api/v1/licenses/activate",
        &json!({"license_key": key, "hardware_id": "m1"}),
    )
    .await;
    assert_eq!(app.acquire(key, "m1").await.status(), 201);
    let listed = ok_json(get(&app, "/api/v1/admin/licenses", Some(&root)).await).await;
    assert!(!listed.to_string().contains(key));
    assert_eq!(listed["items"][0]["id"], id);

    let entries = audit_actors(&app, id).await;
    assert_eq!(
        entries[0],
        ("LICENSE_ISSUED".to_owned(), Some(root.id.clone()))
    );

    for (body, status, code) in [
        (json!({"org_id": ada.org, "seats": 0}), 400, "invalid_seats"),
        (
            json!({"org_id": ada.org, "seats": 1, "max_machines": 0}),
            400,
            "invalid_max_machines",
        ),
        (
            json!({"org_id": ada.org, "seats": 1, "tier": ""}),
            400,
            "invalid_tier",
        ),
        (
            json!({"org_id": ada.org, "seats": 1, "colour": "red"}),
            400,
            "invalid_body",
        ),
        (json!({"seats": 1}), 400, "invalid_body"),
        (
            json!({"org_id": uuid::Uuid::new_v4(), "seats": 1}),
            404,
            "org_not_found",
        ),
    ] {
        let r = post(&app, "/api/v1/admin/licenses", &root, body.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(error_code(r).await, code, "{body}");
    }
}

#[tokio::test]
async fn an_admin_changes_a_license_and_a_suspension_ends_its_sessions() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let lic = app.create_license(2).await;
    let path = format!("/api/v1/admin/licenses/{}", lic.id);
    let acquired = app.acquire_ok(&lic.key, "m1").await;

    let changed = ok_json(
        patch(
            &app,
            &path,
            &root,
            json!({"seats": 7, "expires_at": "2099-01-01T00:00:00Z", "max_machines": 3, "requires_user": true}),
        )
        .await,
    )
    .await;
    assert_eq!(changed["seats"], 7);
    assert_eq!(changed["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(changed["max_machines"], 3);
    assert_eq!(changed["requires_user"], true);

    let lifted = ok_json(
        patch(
            &app,
            &path,
            &root,
            json!({"expires_at": null, "max_machines": null, "requires_user": false}),
        )
        .await,
    )
    .await;
    assert_eq!(lifted["expires_at"], Value::Null);
    assert_eq!(lifted["max_machines"], Value::Null);
    assert_eq!(lifted["seats"], 7, "fields not named stay");

    let suspended = ok_json(patch(&app, &path, &root, json!({"status": "suspended"})).await).await;
    assert_eq!(suspended["status"], "suspended");
    let code = support::eventually(std::time::Duration::from_secs(5), || async {
        let beat = app.heartbeat_of(&acquired).await;
        (beat.status() == StatusCode::FORBIDDEN).then_some(())?;
        Some(error_code(beat).await)
    })
    .await;
    assert_eq!(code.as_deref(), Some("license_suspended"));

    let events: Vec<(String, Option<String>)> = audit_actors(&app, &lic.id.to_string())
        .await
        .into_iter()
        .filter(|(e, _)| e == "LICENSE_UPDATED")
        .collect();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|(_, a)| a.as_deref() == Some(root.id.as_str()))
    );

    for (body, code) in [
        (json!({}), "empty_update"),
        (json!({"seats": 0}), "invalid_seats"),
        (json!({"max_machines": 0}), "invalid_max_machines"),
        (json!({"status": "paused"}), "invalid_body"),
        (json!({"key": "x"}), "invalid_body"),
    ] {
        let r = patch(&app, &path, &root, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(r).await, code, "{body}");
    }
    let unknown = patch(
        &app,
        &format!("/api/v1/admin/licenses/{}", uuid::Uuid::new_v4()),
        &root,
        json!({"seats": 1}),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let malformed = patch(
        &app,
        "/api/v1/admin/licenses/nope",
        &root,
        json!({"seats": 1}),
    )
    .await;
    assert_eq!(malformed.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn licenses_are_filtered_by_org_status_and_tier() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let a = app.create_license(1).await;
    let b = app.create_license(1).await;
    app.update_license(b.id, None, Some("suspended")).await;

    let by_org = ok_json(
        get(
            &app,
            &format!("/api/v1/admin/licenses?org_id={}", a.org),
            Some(&root),
        )
        .await,
    )
    .await;
    let ids: Vec<&str> = by_org["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.id.to_string()]);

    let suspended = ok_json(
        get(
            &app,
            "/api/v1/admin/licenses?status=suspended&tier=pro",
            Some(&root),
        )
        .await,
    )
    .await;
    assert_eq!(suspended["items"].as_array().unwrap().len(), 1);
    assert_eq!(suspended["items"][0]["id"], b.id.to_string());

    for (query, code) in [
        ("org_id=nope", "invalid_org_id"),
        ("status=paused", "invalid_status"),
        ("q=acme", "invalid_query"),
        // Not a 405 from the POST route on the same path.
        ("unknown=1", "invalid_query"),
    ] {
        let r = get(
            &app,
            &format!("/api/v1/admin/licenses?{query}"),
            Some(&root),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(r).await, code, "{query}");
    }
}

#[tokio::test]
async fn analytics_count_orgs_users_signups_licenses_and_seats() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let ada = owner(&app, "ada").await;
    let lic = app.create_license(4).await;
    app.acquire_ok(&lic.key, "m1").await;
    let suspended = app.create_license(10).await;
    app.update_license(suspended.id, None, Some("suspended"))
        .await;

    let numbers = ok_json(get(&app, "/api/v1/admin/analytics", Some(&root)).await).await;
    assert_eq!(
        numbers,
        json!({
            "orgs": 3,
            "users": 2,
            "signups_this_month": 2,
            "active_licenses": 1,
            "seats_total": 4,
            "seats_in_use": 1,
            "seat_utilisation": 0.25,
            "mrr_cents": 0,
            "arr_cents": 0,
            "subscriptions": {"active": 0, "trialing": 0, "past_due": 0},
            "new_subscriptions_this_month": 0,
            "churned_subscriptions_this_month": 0,
            "churn_rate": 0.0,
            "revenue_by_plan": [],
        })
    );
    let _ = ada;
}

/// Records a subscription as billing would, with the times given.
async fn subscription(
    app: &TestApp,
    org: seatwarden_actors::domain::OrgId,
    (plan, interval, quantity): (&str, &str, u32),
    status: seatwarden_actors::domain::SubscriptionStatus,
    (created_days_ago, canceled_days_ago): (i64, Option<i64>),
) {
    use chrono::{Duration, Utc};
    use seatwarden_actors::domain::{
        ActionAudit, AuditEvent, ClientInfo, LicenseId, NewLicense, Subscription,
    };
    let now = Utc::now();
    let created = now - Duration::days(created_days_ago);
    let sub = Subscription {
        id: format!("sub_{}", uuid::Uuid::new_v4().simple()),
        org_id: org,
        customer_id: "cus_analytics".into(),
        plan_id: plan.into(),
        interval: interval.into(),
        quantity,
        status,
        current_period_start: created,
        current_period_end: created + Duration::days(30),
        trial_end: None,
        license_id: LicenseId::new(),
        failed_payments: 0,
        grace_ends_at: None,
        canceled_at: canceled_days_ago.map(|d| now - Duration::days(d)),
        last_event_at: created,
        created_at: created,
        updated_at: now,
    };
    let license = NewLicense {
        org_id: org,
        key_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        key_hint: "…TEST".into(),
        seats: 3,
        tier: plan.into(),
        features: vec![],
        expires_at: None,
        offline_grace_secs: None,
        offline_overdraft: 0,
        max_machines: None,
        requires_user: false,
        max_borrow_hours: 0,
    };
    let audit = ActionAudit {
        at: now,
        event: AuditEvent::LicenseIssued,
        actor_id: None,
        org_id: Some(org),
        license_id: None,
        client: ClientInfo::default(),
        detail: None,
    };
    app.store
        .start_subscription(&sub, license, audit, &[])
        .await
        .expect("record the subscription");
}

#[tokio::test]
async fn analytics_compute_mrr_arr_churn_and_revenue_by_plan_from_subscription_records() {
    use seatwarden_actors::domain::SubscriptionStatus as S;
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let org = app.store.create_org("Subscribers").await.unwrap().id;
    // Paying: $29, 2 x $99, $990/year (= $82.50 a month), and $299 past due.
    subscription(&app, org, ("starter", "month", 1), S::Active, (40, None)).await;
    subscription(&app, org, ("pro", "month", 2), S::Active, (0, None)).await;
    subscription(&app, org, ("pro", "year", 1), S::Active, (60, None)).await;
    subscription(
        &app,
        org,
        ("enterprise", "month", 1),
        S::PastDue,
        (90, None),
    )
    .await;
    // A trial is no revenue yet.
    subscription(&app, org, ("enterprise", "year", 1), S::Trialing, (0, None)).await;
    // Churned this month (it was live at its start), and long ago.
    subscription(
        &app,
        org,
        ("starter", "month", 1),
        S::Canceled,
        (100, Some(0)),
    )
    .await;
    subscription(&app, org, ("pro", "month", 1), S::Canceled, (200, Some(50))).await;

    let n = ok_json(get(&app, "/api/v1/admin/analytics", Some(&root)).await).await;
    let mrr = 2_900 + 2 * 9_900 + 99_000 / 12 + 29_900;
    assert_eq!(n["mrr_cents"], mrr);
    assert_eq!(n["arr_cents"], mrr * 12);
    assert_eq!(
        n["subscriptions"],
        json!({"active": 3, "trialing": 1, "past_due": 1})
    );
    assert_eq!(n["new_subscriptions_this_month"], 2);
    assert_eq!(n["churned_subscriptions_this_month"], 1);
    // 1 churned of the 4 live on the first of the month.
    assert_eq!(n["churn_rate"], 0.25);
    assert_eq!(
        n["revenue_by_plan"],
        json!([
            {"plan_id": "enterprise", "plan_name": "Enterprise", "currency": "usd",
             "subscriptions": 1, "mrr_cents": 29_900},
            {"plan_id": "pro", "plan_name": "Pro", "currency": "usd",
             "subscriptions": 2, "mrr_cents": 2 * 9_900 + 99_000 / 12},
            {"plan_id": "starter", "plan_name": "Starter", "currency": "usd",
             "subscriptions": 1, "mrr_cents": 2_900},
        ])
    );
}

#[tokio::test]
async fn the_email_log_lists_delivery_records_for_admins_only_without_their_data() {
    let app = spawn_app().await;
    let admin = platform_admin(&app).await;
    let someone = owner(&app, "mailed").await;
    // The owner's registration sent a verification and a welcome mail.
    let sent = support::eventually(std::time::Duration::from_secs(15), || async {
        let body = ok_json(
            get(
                &app,
                "/api/v1/admin/emails?status=sent&kind=verify",
                Some(&admin),
            )
            .await,
        )
        .await;
        (!body["items"].as_array().unwrap().is_empty()).then_some(body)
    })
    .await
    .expect("the verification mail is delivered and logged");
    let entry = &sent["items"][0];
    assert_eq!(entry["kind"], "verify");
    assert_eq!(entry["status"], "sent");
    assert_eq!(entry["attempts"], 1);
    assert!(entry.get("data").is_none(), "no tokens in the log");
    assert!(
        !sent.to_string().contains("swe_"),
        "no token anywhere: {sent}"
    );

    // A second mail, so that the log has two pages of one.
    let registered = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "second@example.com", "password": "Second2Password",
                    "full_name": "S", "organization_name": "S"}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::ACCEPTED);
    let page = ok_json(get(&app, "/api/v1/admin/emails?limit=1", Some(&admin)).await).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().expect("more than one mail");
    let next = ok_json(
        get(
            &app,
            &format!("/api/v1/admin/emails?limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await,
    )
    .await;
    assert_ne!(next["items"][0]["id"], page["items"][0]["id"]);

    assert_eq!(
        get(&app, "/api/v1/admin/emails", Some(&someone))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&app, "/api/v1/admin/emails", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for (query, code) in [
        ("status=lost", "invalid_status"),
        ("kind=spam", "invalid_kind"),
        ("limit=0", "invalid_limit"),
        ("cursor=nope", "invalid_cursor"),
    ] {
        let response = get(&app, &format!("/api/v1/admin/emails?{query}"), Some(&admin)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(response).await, code, "{query}");
    }
}
