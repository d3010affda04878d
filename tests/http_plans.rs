//! The plan catalogue over HTTP: the public listing and one plan, the
//! platform administrators' create, change and retire with their audit
//! entries, what invalid input answers, and seeding from configuration
//! across restarts.

mod support;

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use support::people::{Person, error_code, owner, platform_admin};
use support::{AppOptions, TestApp, spawn_app, spawn_app_with};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    who: Option<&Person>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(p) = who {
        request = request.bearer_auth(&p.token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// The ids of a listing's items, in order.
fn ids(listing: &Value) -> Vec<&str> {
    listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

async fn public_ids(app: &TestApp) -> Vec<String> {
    let listing = ok_json(app.get("/api/v1/plans").await).await;
    ids(&listing).into_iter().map(str::to_owned).collect()
}

fn team() -> Value {
    json!({
        "id": "team",
        "name": "Team",
        "monthly_price_cents": 4900,
        "seats": 5,
        "stripe_price_monthly": "price_team_monthly",
        "features": ["floating seats"],
    })
}

async fn create(app: &TestApp, root: &Person, plan: Value) -> Value {
    let response = send(
        app,
        Method::POST,
        "/api/v1/admin/plans",
        Some(root),
        Some(plan),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn retire(app: &TestApp, root: &Person, id: &str) -> reqwest::Response {
    let path = format!("/api/v1/admin/plans/{id}/retire");
    send(app, Method::POST, &path, Some(root), None).await
}

async fn patch(app: &TestApp, root: &Person, id: &str, body: Value) -> reqwest::Response {
    let path = format!("/api/v1/admin/plans/{id}");
    send(app, Method::PATCH, &path, Some(root), Some(body)).await
}

/// `(event, actor_id, detail)` of every plan audit entry, oldest first
/// (the embedded database).
async fn plan_audit(app: &TestApp) -> Vec<(String, Option<String>, Option<String>)> {
    let url = app.settings.database_url();
    let url = url.expose_secret();
    assert!(url.starts_with("sqlite:"), "these tests run embedded");
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT event, actor_id, detail FROM audit_log WHERE event LIKE 'PLAN_%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_public_listing_is_sorted_by_price_and_leaves_out_retired_plans() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;

    // Seeded from config/default.toml, read with no credential.
    let listing = ok_json(app.get("/api/v1/plans").await).await;
    assert_eq!(ids(&listing), ["starter", "pro", "enterprise"]);
    assert_eq!(listing["next_cursor"], Value::Null);
    let prices: Vec<i64> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["monthly_price_cents"].as_i64().unwrap())
        .collect();
    assert_eq!(prices, [2900, 9900, 29_900]);

    create(&app, &root, team()).await;
    assert_eq!(
        public_ids(&app).await,
        ["starter", "team", "pro", "enterprise"]
    );

    assert_eq!(
        retire(&app, &root, "starter").await.status(),
        StatusCode::OK
    );
    assert_eq!(public_ids(&app).await, ["team", "pro", "enterprise"]);

    // Administrators still see it, marked.
    let all =
        ok_json(send(&app, Method::GET, "/api/v1/admin/plans", Some(&root), None).await).await;
    assert_eq!(ids(&all), ["starter", "team", "pro", "enterprise"]);
    assert!(all["items"][0]["retired_at"].is_string());
    assert_eq!(all["items"][1]["retired_at"], Value::Null);
}

#[tokio::test]
async fn one_plan_is_answered_by_id_even_once_retired() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;

    let pro = ok_json(app.get("/api/v1/plans/pro").await).await;
    assert_eq!(pro["name"], "Pro");
    assert_eq!(pro["currency"], "usd");
    assert_eq!(pro["monthly_price_cents"], 9900);
    assert_eq!(pro["annual_price_cents"], 99_000);
    assert_eq!(pro["seats"], 10);
    assert_eq!(pro["trial_days"], 14);
    assert_eq!(pro["stripe_price_monthly"], "price_pro_monthly");
    assert_eq!(pro["stripe_price_annual"], "price_pro_annual");
    assert_eq!(
        pro["features"],
        json!([
            "floating seats",
            "email support",
            "offline grace",
            "priority support"
        ])
    );
    assert_eq!(pro["retired_at"], Value::Null);
    let starter = ok_json(app.get("/api/v1/plans/starter").await).await;
    assert_eq!(starter["annual_price_cents"], Value::Null);
    assert_eq!(starter["stripe_price_annual"], Value::Null);

    // Unknown and malformed ids alike: 404 plan_not_found.
    for path in [
        "/api/v1/plans/platinum",
        "/api/v1/plans/PRO",
        "/api/v1/plans/pro%20plan",
        "/api/v1/plans/-pro",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(response).await, "plan_not_found", "{path}");
    }

    let retired = ok_json(retire(&app, &root, "pro").await).await;
    let read = ok_json(app.get("/api/v1/plans/pro").await).await;
    assert!(read["retired_at"].is_string());
    assert_eq!(read, retired);
}

#[tokio::test]
async fn plan_administration_wants_a_platform_admin() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let routes = [
        (Method::GET, "/api/v1/admin/plans", None),
        (Method::POST, "/api/v1/admin/plans", Some(team())),
        (
            Method::PATCH,
            "/api/v1/admin/plans/pro",
            Some(json!({"seats": 11})),
        ),
        (Method::POST, "/api/v1/admin/plans/pro/retire", None),
    ];
    for (method, path, body) in routes {
        let anonymous = send(&app, method.clone(), path, None, body.clone()).await;
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(error_code(anonymous).await, "unauthorized");
        let user = send(&app, method.clone(), path, Some(&ada), body).await;
        assert_eq!(user.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(error_code(user).await, "forbidden");
    }
    // Nothing changed.
    assert_eq!(public_ids(&app).await, ["starter", "pro", "enterprise"]);
    assert_eq!(
        ok_json(app.get("/api/v1/plans/pro").await).await["seats"],
        10
    );
}

#[tokio::test]
async fn an_admin_creates_changes_and_retires_a_plan_and_each_change_is_audited() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;

    let created = create(
        &app,
        &root,
        json!({
            "id": "team",
            "name": "Team",
            "monthly_price_cents": 4900,
            "annual_price_cents": 49_000,
            "seats": 5,
            "stripe_price_monthly": "price_team_monthly",
            "stripe_price_annual": "price_team_annual",
        }),
    )
    .await;
    // Defaults: dollars, a 14-day trial, no features.
    assert_eq!(created["currency"], "usd");
    assert_eq!(created["trial_days"], 14);
    assert_eq!(created["features"], json!([]));
    assert_eq!(ok_json(app.get("/api/v1/plans/team").await).await, created);

    let again = send(
        &app,
        Method::POST,
        "/api/v1/admin/plans",
        Some(&root),
        Some(team()),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(again).await, "plan_exists");

    // A partial change: the rest stays.
    let changed = ok_json(
        patch(
            &app,
            &root,
            "team",
            json!({"monthly_price_cents": 5900, "features": ["floating seats", "sso"]}),
        )
        .await,
    )
    .await;
    assert_eq!(changed["monthly_price_cents"], 5900);
    assert_eq!(changed["features"], json!(["floating seats", "sso"]));
    assert_eq!(changed["annual_price_cents"], 49_000);
    assert_eq!(changed["seats"], 5);
    assert_eq!(changed["created_at"], created["created_at"]);
    assert_ne!(changed["updated_at"], created["updated_at"]);

    // Monthly only from now on: both annual fields go, as null.
    let monthly = ok_json(
        patch(
            &app,
            &root,
            "team",
            json!({"annual_price_cents": null, "stripe_price_annual": null}),
        )
        .await,
    )
    .await;
    assert_eq!(monthly["annual_price_cents"], Value::Null);
    assert_eq!(monthly["stripe_price_annual"], Value::Null);

    // Retiring twice answers the same first retirement.
    let first = ok_json(retire(&app, &root, "team").await).await;
    assert!(first["retired_at"].is_string());
    let second = ok_json(retire(&app, &root, "team").await).await;
    assert_eq!(second["retired_at"], first["retired_at"]);

    for response in [
        patch(&app, &root, "platinum", json!({"seats": 2})).await,
        retire(&app, &root, "platinum").await,
        retire(&app, &root, "Not-A-Slug").await,
    ] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(response).await, "plan_not_found");
    }

    // Seeds first (no actor), then one entry per change, by the admin;
    // none for the repeated retirement or the refused requests.
    let audit = plan_audit(&app).await;
    let seeded: Vec<_> = audit
        .iter()
        .filter(|(_, actor, _)| actor.is_none())
        .collect();
    assert_eq!(seeded.len(), 3, "{audit:?}");
    assert!(seeded.iter().all(|(e, _, d)| e == "PLAN_CREATED"
        && d.as_deref().is_some_and(|d| d.ends_with(";source=config"))));
    let by_admin: Vec<(&str, &str)> = audit
        .iter()
        .filter(|(_, actor, _)| actor.as_deref() == Some(root.id.as_str()))
        .map(|(e, _, d)| (e.as_str(), d.as_deref().unwrap()))
        .collect();
    assert_eq!(
        by_admin,
        [
            ("PLAN_CREATED", "plan=team"),
            (
                "PLAN_UPDATED",
                "plan=team;changed=monthly_price_cents,features"
            ),
            (
                "PLAN_UPDATED",
                "plan=team;changed=annual_price_cents,stripe_price_annual"
            ),
            ("PLAN_RETIRED", "plan=team"),
        ]
    );
    assert_eq!(audit.len(), 3 + 4);
}

#[tokio::test]
async fn invalid_input_is_a_400_that_says_what_and_never_a_5xx() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let with = |key: &str, value: Value| {
        let mut plan = team();
        plan[key] = value;
        plan
    };

    // Bodies that are not a plan at all.
    for body in [
        r#"{"id": "team""#.to_owned(),
        "not json".to_owned(),
        with("colour", json!("blue")).to_string(),
        with("seats", json!("five")).to_string(),
        with("seats", json!(-1)).to_string(),
        with("monthly_price_cents", json!(49.5)).to_string(),
        json!({"id": "team"}).to_string(),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/admin/plans"))
            .bearer_auth(&root.token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_body", "{body}");
    }

    // Plans that break a rule: 400 invalid_plan naming the field.
    for (plan, field) in [
        (with("id", json!("Team Plan")), "id"),
        (with("id", json!("x".repeat(41))), "id"),
        (with("name", json!("  ")), "name"),
        (with("currency", json!("USD")), "currency"),
        (with("monthly_price_cents", json!(0)), "monthly_price_cents"),
        (
            with("monthly_price_cents", json!(100_000_000)),
            "monthly_price_cents",
        ),
        (
            with("annual_price_cents", json!(49_000)),
            "stripe_price_annual",
        ),
        (
            with("stripe_price_annual", json!("price_x")),
            "stripe_price_annual",
        ),
        (with("seats", json!(0)), "seats"),
        (with("trial_days", json!(731)), "trial_days"),
        (
            with("stripe_price_monthly", json!("")),
            "stripe_price_monthly",
        ),
        (with("features", json!(["sso", "sso"])), "features"),
    ] {
        let response = send(
            &app,
            Method::POST,
            "/api/v1/admin/plans",
            Some(&root),
            Some(plan.clone()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{plan}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_plan", "{plan}: {body}");
        assert_eq!(body["field"], field, "{plan}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    assert_eq!(public_ids(&app).await, ["starter", "pro", "enterprise"]);

    // Changes: nothing to change, fields that never change, wrong types,
    // and a result that would break a rule.
    for (body, code) in [
        (json!({}), "empty_update"),
        (json!({"id": "pro2"}), "invalid_body"),
        (json!({"currency": "eur"}), "invalid_body"),
        (json!({"seats": "ten"}), "invalid_body"),
        (json!({"features": "sso"}), "invalid_body"),
        (json!({"seats": 0}), "invalid_plan"),
        (json!({"annual_price_cents": null}), "invalid_plan"),
        (json!({"stripe_price_annual": null}), "invalid_plan"),
        (json!({"trial_days": 1000}), "invalid_plan"),
    ] {
        let response = patch(&app, &root, "pro", body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let pro = ok_json(app.get("/api/v1/plans/pro").await).await;
    assert_eq!(pro["seats"], 10);
    assert_eq!(pro["annual_price_cents"], 99_000);
    assert_eq!(pro["trial_days"], 14);
}

#[tokio::test]
async fn seeding_does_not_overwrite_an_admin_s_edit_after_a_restart() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let edited = ok_json(
        patch(
            &app,
            &root,
            "pro",
            json!({"monthly_price_cents": 10_900, "stripe_price_monthly": "price_pro_2027"}),
        )
        .await,
    )
    .await;
    let retired = ok_json(retire(&app, &root, "starter").await).await;

    // The same configuration seeds again on start-up: nothing changes.
    let app = app.restart().await;
    assert_eq!(ok_json(app.get("/api/v1/plans/pro").await).await, edited);
    assert_eq!(
        ok_json(app.get("/api/v1/plans/starter").await).await,
        retired
    );
    assert_eq!(public_ids(&app).await, ["pro", "enterprise"]);

    // A configuration that prices Pro differently and adds a plan only
    // adds the plan: the database is the truth once a plan exists.
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions {
        overrides: vec![
            ("plans.pro.monthly_price_cents", 1.into()),
            ("plans.team.name", "Team".into()),
            ("plans.team.monthly_price_cents", 4900.into()),
            ("plans.team.seats", 5.into()),
            (
                "plans.team.stripe_price_monthly",
                "price_team_monthly".into(),
            ),
        ],
        ..AppOptions::default()
    };
    let settings = support::app::settings_for(&opts, dir.path());
    seatwarden::startup::seed_plans(&settings, &*app.store)
        .await
        .unwrap();
    assert_eq!(ok_json(app.get("/api/v1/plans/pro").await).await, edited);
    assert_eq!(public_ids(&app).await, ["team", "pro", "enterprise"]);
    let seeded = plan_audit(&app)
        .await
        .into_iter()
        .filter(|(_, actor, _)| actor.is_none())
        .count();
    assert_eq!(seeded, 4, "starter, pro, enterprise, then team");
}

#[tokio::test]
async fn a_node_with_its_own_plans_in_config_serves_them() {
    let app = spawn_app_with(AppOptions {
        overrides: vec![
            ("plans.solo.name", "Solo".into()),
            ("plans.solo.monthly_price_cents", 900.into()),
            ("plans.solo.seats", 1.into()),
            ("plans.solo.trial_days", 0.into()),
            ("plans.solo.stripe_price_monthly", "price_solo".into()),
        ],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(
        public_ids(&app).await,
        ["solo", "starter", "pro", "enterprise"]
    );
    let solo = ok_json(app.get("/api/v1/plans/solo").await).await;
    assert_eq!(solo["trial_days"], 0);
    assert_eq!(solo["currency"], "usd");
    assert_eq!(solo["features"], json!([]));
}
