//! Machines, validation, signed license files and licenses that require
//! identity, over HTTP.

mod support;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

use support::people::{audit_actors, error_code, license_of, owner, platform_admin};
use support::{AppOptions, TestApp, TestLicense, spawn_app, spawn_app_with};

async fn activate(app: &TestApp, key: &str, hw: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/licenses/activate",
        &json!({"license_key": key, "hardware_id": hw, "name": "build box", "platform": "linux-x86_64"}),
    )
    .await
}

async fn deactivate(
    app: &TestApp,
    lic: &TestLicense,
    machine: &str,
    bearer: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .delete(app.url(&format!("/api/v1/licenses/{}/machines/{machine}", lic.id)));
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    request.send().await.unwrap()
}

async fn validate(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/api/v1/licenses/validate", &body).await
}

async fn file(app: &TestApp, id: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/api/v1/licenses/{id}/file")));
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    request.send().await.unwrap()
}

async fn acquire_as(app: &TestApp, key: &str, hw: &str, bearer: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/licenses/acquire"))
        .bearer_auth(bearer)
        .json(&json!({"license_key": key, "hardware_id": hw}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn activating_a_machine_records_it_once_and_again_returns_the_same_machine() {
    let app = spawn_app().await;
    let lic = app.create_license_policy(2, Some(2), false).await;

    let first = activate(&app, &lic.key, "hw-1").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["hardware_id"], "hw-1");
    assert_eq!(first["license_id"], lic.id.to_string());
    assert_eq!(first["name"], "build box");
    assert_eq!(first["platform"], "linux-x86_64");

    let again = activate(&app, &lic.key, "hw-1").await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let events: Vec<String> = audit_actors(&app, &lic.id.to_string())
        .await
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(events, vec!["MACHINE_ACTIVATED"]);
}

#[tokio::test]
async fn activation_past_the_limit_is_409_and_unactivated_machines_may_not_acquire() {
    let app = spawn_app().await;
    let lic = app.create_license_policy(5, Some(2), false).await;

    let refused = app.acquire(&lic.key, "a").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(refused).await, "machine_not_activated");

    assert_eq!(activate(&app, &lic.key, "a").await.status(), 201);
    assert_eq!(activate(&app, &lic.key, "b").await.status(), 201);
    let over = activate(&app, &lic.key, "c").await;
    assert_eq!(over.status(), StatusCode::CONFLICT);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"], "machine_limit_reached");
    assert_eq!(body["max_machines"], 2);

    assert_eq!(app.acquire(&lic.key, "a").await.status(), 201);
    assert_eq!(
        error_code(app.acquire(&lic.key, "c").await).await,
        "machine_not_activated"
    );

    // Without max_machines nothing changes: any machine acquires.
    let free = app.create_license(2).await;
    assert_eq!(app.acquire(&free.key, "anything").await.status(), 201);

    // Bad input is a 400, an unknown key a 404.
    let bad = activate(&app, &lic.key, "").await;
    assert_eq!(error_code(bad).await, "invalid_hardware_id");
    let unknown = activate(&app, "CODITECT-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ", "a").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn owners_admins_and_the_key_free_a_slot_and_others_cannot() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let eve = owner(&app, "eve").await;
    let root = platform_admin(&app).await;
    let lic = license_of(&app, ada.org.unwrap(), Some(1), false).await;

    let a: Value = activate(&app, &lic.key, "a").await.json().await.unwrap();
    let a_id = a["id"].as_str().unwrap();

    assert_eq!(deactivate(&app, &lic, a_id, None).await.status(), 401);
    assert_eq!(
        deactivate(&app, &lic, a_id, Some("not-a-credential"))
            .await
            .status(),
        401
    );
    let other_org = deactivate(&app, &lic, a_id, Some(&eve.token)).await;
    assert_eq!(
        other_org.status(),
        StatusCode::NOT_FOUND,
        "tenant isolation"
    );
    let other_key = app.create_license(1).await;
    assert_eq!(
        deactivate(&app, &lic, a_id, Some(&other_key.key))
            .await
            .status(),
        404
    );

    let by_owner = deactivate(&app, &lic, a_id, Some(&ada.token)).await;
    assert_eq!(by_owner.status(), StatusCode::OK);
    assert_eq!(by_owner.json::<Value>().await.unwrap()["deactivated"], true);
    assert_eq!(
        error_code(deactivate(&app, &lic, a_id, Some(&ada.token)).await).await,
        "machine_not_found"
    );
    assert_eq!(
        error_code(app.acquire(&lic.key, "a").await).await,
        "machine_not_activated"
    );

    let b: Value = activate(&app, &lic.key, "b").await.json().await.unwrap();
    let b_id = b["id"].as_str().unwrap();
    assert_eq!(
        deactivate(&app, &lic, b_id, Some(&lic.key)).await.status(),
        200,
        "the machine itself, with the license key"
    );
    let c: Value = activate(&app, &lic.key, "c").await.json().await.unwrap();
    assert_eq!(
        deactivate(&app, &lic, c["id"].as_str().unwrap(), Some(&root.token))
            .await
            .status(),
        200
    );

    let entries = audit_actors(&app, &lic.id.to_string()).await;
    let deactivations: Vec<Option<String>> = entries
        .into_iter()
        .filter(|(e, _)| e == "MACHINE_DEACTIVATED")
        .map(|(_, actor)| actor)
        .collect();
    assert_eq!(
        deactivations,
        vec![Some(ada.id.clone()), None, Some(root.id.clone())]
    );
}

#[tokio::test]
async fn deactivations_past_the_daily_limit_get_429_except_for_platform_admins() {
    let app = spawn_app_with(AppOptions {
        overrides: vec![("licenses.deactivations_per_day", 2.into())],
        ..AppOptions::default()
    })
    .await;
    let ada = owner(&app, "ada").await;
    let root = platform_admin(&app).await;
    let lic = license_of(&app, ada.org.unwrap(), Some(1), false).await;

    for hw in ["a", "b"] {
        let m: Value = activate(&app, &lic.key, hw).await.json().await.unwrap();
        let r = deactivate(&app, &lic, m["id"].as_str().unwrap(), Some(&ada.token)).await;
        assert_eq!(r.status(), 200);
    }
    let m: Value = activate(&app, &lic.key, "c").await.json().await.unwrap();
    let id = m["id"].as_str().unwrap();
    let refused = deactivate(&app, &lic, id, Some(&lic.key)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after > 23 * 3600 && retry_after <= 24 * 3600,
        "{retry_after}"
    );
    assert_eq!(error_code(refused).await, "deactivation_limit_reached");
    assert_eq!(
        app.acquire(&lic.key, "c").await.status(),
        201,
        "still active"
    );

    assert_eq!(
        deactivate(&app, &lic, id, Some(&root.token)).await.status(),
        200
    );
}

#[tokio::test]
async fn validate_reveals_only_validity_status_expiry_and_activation() {
    let app = spawn_app().await;
    let lic = app
        .create_license_with(2, Some("2099-01-01T00:00:00Z"))
        .await;

    let body: Value = validate(&app, json!({"license_key": lic.key}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"valid": true, "status": "active", "expires_at": "2099-01-01T00:00:00Z"})
    );

    let limited = app.create_license_policy(2, Some(1), false).await;
    let unactivated: Value = validate(
        &app,
        json!({"license_key": limited.key, "hardware_id": "m1"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        unactivated,
        json!({"valid": false, "status": "active", "machine_activated": false})
    );
    activate(&app, &limited.key, "m1").await;
    let activated: Value = validate(
        &app,
        json!({"license_key": limited.key, "hardware_id": "m1"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        activated,
        json!({"valid": true, "status": "active", "machine_activated": true})
    );

    app.update_license(lic.id, None, Some("suspended")).await;
    let suspended: Value = support::eventually(std::time::Duration::from_secs(5), || async {
        let b: Value = validate(&app, json!({"license_key": lic.key}))
            .await
            .json()
            .await
            .ok()?;
        (b["status"] == "suspended").then_some(b)
    })
    .await
    .expect("the suspension reaches validate");
    assert_eq!(suspended["valid"], false);

    let unknown: Value = validate(
        &app,
        json!({"license_key": "CODITECT-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(unknown, json!({"valid": false, "status": "not_found"}));

    let bad = validate(&app, json!({"license_key": lic.key, "extra": 1})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_body");
}

#[tokio::test]
async fn validate_is_rate_limited_per_key() {
    let app = spawn_app_with(AppOptions {
        overrides: vec![("rate_limits.validate_per_key", "2/min".into())],
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let other = app.create_license(1).await;
    for _ in 0..2 {
        assert_eq!(
            validate(&app, json!({"license_key": lic.key}))
                .await
                .status(),
            200
        );
    }
    let limited = validate(&app, json!({"license_key": lic.key.to_lowercase()})).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        validate(&app, json!({"license_key": other.key}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_license_file_verifies_offline_against_the_published_jwks() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let eve = owner(&app, "eve").await;
    let lic = license_of(&app, ada.org.unwrap(), Some(3), false).await;
    let id = lic.id.to_string();

    assert_eq!(file(&app, &id, None).await.status(), 401);
    assert_eq!(file(&app, &id, Some(&eve.token)).await.status(), 404);
    let other = app.create_license(1).await;
    assert_eq!(file(&app, &id, Some(&other.key)).await.status(), 404);
    assert_eq!(
        file(&app, &uuid::Uuid::new_v4().to_string(), Some(&ada.token))
            .await
            .status(),
        404
    );
    assert_eq!(file(&app, &id, Some(&ada.token)).await.status(), 200);

    let response = file(&app, &id, Some(&lic.key)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let jws = body["license_file"].as_str().unwrap();

    // Offline, as a client would: the JWKS and any JOSE library.
    let jwks: JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jws).unwrap();
    assert_eq!(header.typ.as_deref(), Some("license+jwt"));
    let kid = header.kid.expect("a kid");
    assert_eq!(kid, app.signer.kid());
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["seatwarden"]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(jws, &key, &validation)
        .expect("the file verifies")
        .claims;
    assert_eq!(claims["license_id"], id);
    assert_eq!(claims["org_id"], ada.org.unwrap().to_string());
    assert_eq!(claims["tier"], "pro");
    assert_eq!(claims["features"], json!(["export"]));
    assert_eq!(claims["seats"], 5);
    assert_eq!(claims["max_machines"], 3);
    assert_eq!(claims["license_expires_at"], Value::Null);
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 30 * 86_400);

    // Altered by one byte, it no longer verifies.
    let mut tampered = jws.to_owned();
    tampered.replace_range(tampered.len() - 2.., "AA");
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation).is_err());
}

#[tokio::test]
async fn a_license_file_is_refused_as_a_seat_token() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let acquired = app.acquire_ok(&lic.key, "m1").await;
    let session = acquired["session_id"].as_str().unwrap();
    let body: Value = file(&app, &lic.id.to_string(), Some(&lic.key))
        .await
        .json()
        .await
        .unwrap();
    let jws = body["license_file"].as_str().unwrap();

    let beat = app.heartbeat(session, jws).await;
    assert_eq!(beat.status(), StatusCode::UNAUTHORIZED);
    let release = app.release(session, jws).await;
    assert_eq!(release.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.heartbeat_of(&acquired).await.status(), 200);
}

#[tokio::test]
async fn a_license_that_requires_identity_takes_only_its_own_organization() {
    let app = spawn_app().await;
    let ada = owner(&app, "ada").await;
    let eve = owner(&app, "eve").await;
    let lic = license_of(&app, ada.org.unwrap(), None, true).await;

    let anonymous = app.acquire(&lic.key, "m1").await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(anonymous).await, "identity_required");

    let garbage = acquire_as(&app, &lic.key, "m1", "nonsense").await;
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(garbage).await, "unauthorized");

    let stranger = acquire_as(&app, &lic.key, "m1", &eve.token).await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(stranger).await, "forbidden");

    assert_eq!(
        acquire_as(&app, &lic.key, "m1", &ada.token).await.status(),
        201
    );

    // A license that does not require identity ignores a credential's
    // rights, but names a valid access token's user in its audit log.
    let open = app.create_license(3).await;
    assert_eq!(
        acquire_as(&app, &open.key, "m1", "nonsense").await.status(),
        201
    );
    assert_eq!(
        acquire_as(&app, &open.key, "m2", &eve.token).await.status(),
        201
    );
    let acquired: Vec<Option<String>> = audit_actors(&app, &open.id.to_string())
        .await
        .into_iter()
        .filter(|(event, _)| event == "LICENSE_ACQUIRED")
        .map(|(_, actor)| actor)
        .collect();
    assert_eq!(acquired, [None, Some(eve.id.clone())]);
}
