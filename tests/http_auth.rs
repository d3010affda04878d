//! Accounts over HTTP: register, verify, log in, refresh, log out, reset a
//! password, lockout, and what access tokens and seat tokens may not do
//! for each other.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};

use support::{AppOptions, TestApp, spawn_app, spawn_app_with};

const PASSWORD: &str = "Correct1Horse";

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The template data of the newest outbox message of `kind` to `to` (`{}`
/// once it was sent): whether such a mail was enqueued.
async fn mail_data(app: &TestApp, to: &str, kind: &str) -> Option<Value> {
    use secrecy::ExposeSecret;
    let url = app.settings.database_url();
    let url = url.expose_secret();
    let sql = "SELECT data FROM outbox WHERE lower(recipient) = lower($1) AND kind = $2 \
               ORDER BY created_at DESC LIMIT 1";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(to)
            .bind(kind)
            .fetch_optional(&pool)
            .await
            .unwrap();
        row.map(|(s,)| serde_json::from_str(&s).unwrap())
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let row: Option<(sqlx::types::Json<Value>,)> = sqlx::query_as(sql)
            .bind(to)
            .bind(kind)
            .fetch_optional(&pool)
            .await
            .unwrap();
        row.map(|(j,)| j.0)
    }
}

/// The token of the newest mail of `kind` to `to`, from the delivered mail
/// itself (the outbox forgets tokens once a message is sent).
async fn mail_token(app: &TestApp, to: &str, kind: &str) -> String {
    let path = match kind {
        "verify" => "/api/v1/auth/verify-email",
        "password_reset" => "/api/v1/auth/reset-password",
        other => panic!("no link in {other} mail"),
    };
    support::mail::mailed_token(app, to, path).await
}

async fn register(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/auth/register",
        &json!({
            "email": email,
            "password": PASSWORD,
            "full_name": "Ada Lovelace",
            "organization_name": "Engines",
        }),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
    .await
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["message"].is_string(), "{body}");
    body["error"].as_str().expect("an error code").to_owned()
}

/// Registers, verifies and logs in; returns the login body.
async fn signed_up(app: &TestApp, email: &str) -> Value {
    assert_eq!(register(app, email).await.status(), StatusCode::ACCEPTED);
    let token = mail_token(app, email, "verify").await;
    let verified = app
        .get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(verified.status(), StatusCode::OK);
    let response = login(app, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn registering_verifying_and_logging_in_gives_tokens_that_say_who_i_am() {
    let app = spawn_app().await;
    let email = unique_email("ada");
    let tokens = signed_up(&app, &email).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("swr_")
    );

    let response = me(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], email);
    assert_eq!(body["email_verified"], true);
    assert_eq!(body["platform_admin"], false);
    assert_eq!(body["organizations"][0]["name"], "Engines");
    assert_eq!(body["organizations"][0]["role"], "owner");
    assert!(
        mail_data(&app, &email, "welcome").await.is_some(),
        "verification sends a welcome mail"
    );
}

#[tokio::test]
async fn registering_a_taken_address_answers_the_same_and_mails_its_owner() {
    let app = spawn_app().await;
    let email = unique_email("taken");
    let first = register(&app, &email).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = register(&app, &email.to_uppercase()).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        first, again,
        "the answer does not reveal the address is taken"
    );
    assert!(mail_data(&app, &email, "account_exists").await.is_some());
    // The original password still works; the second registration changed nothing.
    let token = mail_token(&app, &email, "verify").await;
    app.get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(login(&app, &email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unverified_user_can_log_in_but_is_shown_as_unverified() {
    let app = spawn_app().await;
    let email = unique_email("unverified");
    register(&app, &email).await;
    let response = login(&app, &email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let body: Value = me(&app, tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["email_verified"], false);
}

#[tokio::test]
async fn bad_registrations_get_400_with_a_code_and_create_nothing() {
    let app = spawn_app().await;
    let email = unique_email("bad");
    let long_local = format!("{}@example.com", "a".repeat(250));
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "full_name": "A", "organization_name": "O"}),
            "invalid_email",
        ),
        (
            json!({"email": long_local, "password": PASSWORD, "full_name": "A", "organization_name": "O"}),
            "invalid_email",
        ),
        (
            json!({"email": email, "password": "short1A", "full_name": "A", "organization_name": "O"}),
            "weak_password",
        ),
        (
            json!({"email": email, "password": "nouppercase1", "full_name": "A", "organization_name": "O"}),
            "weak_password",
        ),
        (
            json!({"email": email, "password": "NOLOWERCASE1", "full_name": "A", "organization_name": "O"}),
            "weak_password",
        ),
        (
            json!({"email": email, "password": "NoDigitsHere", "full_name": "A", "organization_name": "O"}),
            "weak_password",
        ),
        (
            json!({"email": email, "password": format!("Aa1{}", "x".repeat(126)), "full_name": "A", "organization_name": "O"}),
            "weak_password",
        ),
        (
            json!({"email": email, "password": PASSWORD, "full_name": " ", "organization_name": "O"}),
            "invalid_name",
        ),
        (
            json!({"email": email, "password": PASSWORD, "full_name": "A", "organization_name": "x".repeat(201)}),
            "invalid_name",
        ),
        (
            json!({"email": email, "password": PASSWORD, "full_name": "A", "organization_name": "O", "admin": true}),
            "invalid_body",
        ),
        (
            json!({"email": email, "password": PASSWORD}),
            "invalid_body",
        ),
    ];
    for (body, code) in cases {
        let response = app.post_json("/api/v1/auth/register", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    assert!(mail_data(&app, &email, "verify").await.is_none());
}

#[tokio::test]
async fn a_verification_token_works_once() {
    let app = spawn_app().await;
    let email = unique_email("once");
    register(&app, &email).await;
    let token = mail_token(&app, &email, "verify").await;
    let path = format!("/api/v1/auth/verify-email?token={token}");
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);
    let again = app.get(&path).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(again).await, "invalid_token");
    for bad in [
        "/api/v1/auth/verify-email?token=swe_nope",
        "/api/v1/auth/verify-email",
        "/api/v1/auth/verify-email?token=a&token=b",
        "/api/v1/auth/verify-email?other=1",
    ] {
        let response = app.get(bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_address_fail_alike_and_are_audited() {
    let app = spawn_app().await;
    let email = unique_email("wrong");
    signed_up(&app, &email).await;
    let wrong = login(&app, &email, "Wrong1Horse").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown = login(&app, &unique_email("nobody"), PASSWORD).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown, "the two failures are indistinguishable");
    assert_eq!(wrong["error"], "invalid_credentials");

    let failures = audit_events(&app, "LOGIN_FAILED").await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|(ip, _)| ip.as_deref() == Some("127.0.0.1"))
    );
}

/// `(ip, detail)` of every audit entry of `event`.
async fn audit_events(app: &TestApp, event: &str) -> Vec<(Option<String>, Option<String>)> {
    use secrecy::ExposeSecret;
    let url = app.settings.database_url();
    let pool = sqlx::SqlitePool::connect(url.expose_secret())
        .await
        .unwrap();
    sqlx::query_as("SELECT ip, detail FROM audit_log WHERE event = $1 ORDER BY id")
        .bind(event)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn five_failed_logins_lock_the_account_and_mail_its_owner() {
    let app = spawn_app().await;
    let email = unique_email("lock");
    signed_up(&app, &email).await;
    for _ in 0..5 {
        let response = login(&app, &email, "Wrong1Horse").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = login(&app, &email, PASSWORD).await;
    assert_eq!(
        locked.status(),
        StatusCode::UNAUTHORIZED,
        "the right password is refused while locked"
    );
    assert_eq!(error_code(locked).await, "invalid_credentials");
    assert!(mail_data(&app, &email, "account_locked").await.is_some());
    assert_eq!(audit_events(&app, "ACCOUNT_LOCKED").await.len(), 1);
}

#[tokio::test]
async fn a_refresh_token_rotates_and_presenting_a_used_one_revokes_the_family() {
    let app = spawn_app().await;
    let email = unique_email("refresh");
    let tokens = signed_up(&app, &email).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();

    let rotated = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(
        me(&app, rotated["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );

    let reuse = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(reuse).await, "invalid_refresh_token");
    let after = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": second}))
        .await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the live successor went with its family"
    );
}

#[tokio::test]
async fn logging_out_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let email = unique_email("logout");
    let tokens = signed_up(&app, &email).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let out = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let again = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_password_reset_works_once_keeps_the_token_on_a_weak_password_and_logs_out_everywhere() {
    let app = spawn_app().await;
    let email = unique_email("reset");
    let tokens = signed_up(&app, &email).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let forgot = app
        .post_json("/api/v1/auth/forgot-password", &json!({"email": email}))
        .await;
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let unknown = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({"email": unique_email("nobody")}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::ACCEPTED, "never reveals");
    let token = mail_token(&app, &email, "password_reset").await;

    let weak = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "password": "weak"}),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(weak).await, "weak_password");

    let new_password = "Better2Horse";
    let reset = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "password": new_password}),
        )
        .await;
    assert_eq!(
        reset.status(),
        StatusCode::OK,
        "the weak try left the token usable"
    );
    let again = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "password": "Another3Horse"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(again).await, "invalid_token");

    assert_eq!(
        login(&app, &email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, &email, new_password).await.status(),
        StatusCode::OK
    );
    let old = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "refresh tokens from before the reset are revoked"
    );
}

#[tokio::test]
async fn a_seat_token_is_refused_where_an_access_token_is_required() {
    let app = spawn_app().await;
    let license = app.create_license(1).await;
    let acquired = app.acquire_ok(&license.key, "machine-1").await;
    let seat_token = acquired["token"].as_str().unwrap();
    let response = me(&app, seat_token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer",
        "401s carry the bearer challenge"
    );
    assert_eq!(error_code(response).await, "unauthorized");
}

#[tokio::test]
async fn an_access_token_is_refused_where_a_seat_token_is_required() {
    let app = spawn_app().await;
    let tokens = signed_up(&app, &unique_email("confused")).await;
    let access = tokens["access_token"].as_str().unwrap();
    let license = app.create_license(1).await;
    let acquired = app.acquire_ok(&license.key, "machine-1").await;
    let session = acquired["session_id"].as_str().unwrap();
    let heartbeat = app.heartbeat(session, access).await;
    assert_eq!(heartbeat.status(), StatusCode::UNAUTHORIZED);
    let release = app.release(session, access).await;
    assert_eq!(release.status(), StatusCode::UNAUTHORIZED);
    // The session is untouched by the refused calls.
    assert_eq!(app.heartbeat_of(&acquired).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_and_foreign_bearer_credentials_get_401() {
    let app = spawn_app().await;
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.",
    ] {
        let response = app
            .client
            .get(app.url("/api/v1/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    let none = app.get("/api/v1/auth/me").await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_access_token_of_another_deployment_is_refused() {
    let app = spawn_app().await;
    let email = unique_email("other");
    let tokens = signed_up(&app, &email).await;
    // Another server with its own access-token key.
    let other = spawn_app_with(AppOptions::default()).await;
    let response = me(&other, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logins_past_the_per_ip_limit_get_429_with_retry_after() {
    let app = spawn_app_with(AppOptions {
        overrides: vec![("rate_limits.login_per_ip", "2/min".into())],
        ..AppOptions::default()
    })
    .await;
    for _ in 0..2 {
        let response = login(&app, &unique_email("x"), PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = login(&app, &unique_email("x"), PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited).await, "rate_limited");
}

#[tokio::test]
async fn forgot_password_past_the_per_account_limit_gets_429() {
    let app = spawn_app_with(AppOptions {
        overrides: vec![("rate_limits.forgot_password_per_account", "1/hour".into())],
        ..AppOptions::default()
    })
    .await;
    let email = unique_email("forgot");
    let body = json!({"email": email});
    let first = app.post_json("/api/v1/auth/forgot-password", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let body = json!({"email": email.to_uppercase()});
    let second = app.post_json("/api/v1/auth/forgot-password", &body).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
}
