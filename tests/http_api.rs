//! The HTTP API on the embedded default (SQLite + in-process ledger).

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use seatwarden_actors::domain::{AuditEvent, EndReason};
use support::{AppOptions, eventually, ids, spawn_app, spawn_app_with};

#[tokio::test]
async fn acquiring_a_seat_returns_201_with_the_session_and_a_token() {
    let app = spawn_app().await;
    let lic = app.create_license(3).await;

    let body = app.acquire_ok(&lic.key, "machine-1").await;

    assert_eq!(body["license_id"], lic.id.to_string());
    assert_eq!(body["org_id"], lic.org.to_string());
    assert_eq!(body["hardware_id"], "machine-1");
    assert_eq!(body["seats_used"], 1);
    assert_eq!(body["max_seats"], 3);
    assert_eq!(body["heartbeat_interval_secs"], 300);
    assert!(body["session_id"].as_str().unwrap().len() == 36);
    let expires: chrono::DateTime<chrono::Utc> =
        body["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::seconds(300) && ttl <= chrono::Duration::seconds(361),
        "{ttl}"
    );
    let claims = app
        .signer
        .verify(body["token"].as_str().unwrap())
        .expect("token verifies");
    assert_eq!(claims.session_id, body["session_id"].as_str().unwrap());
    assert_eq!(claims.hardware_id, "machine-1");
    assert_eq!(claims.tier, "pro");
    assert_eq!(claims.features, vec!["export", "sso"]);
    assert_eq!(claims.max_seats, 3);
}

#[tokio::test]
async fn the_token_verifies_offline_against_the_published_jwks() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let body = app.acquire_ok(&lic.key, "machine-1").await;
    let token = body["token"].as_str().unwrap();

    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("token names its key");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's kid is in the JWKS");
    assert_eq!(jwk["alg"], "RS256");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "sub"]);
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).expect("verifies against the JWKS");
    let claims = data.claims;
    for claim in [
        "session_id",
        "license_id",
        "org_id",
        "hardware_id",
        "tier",
        "features",
        "max_seats",
        "iat",
        "exp",
    ] {
        assert!(
            claims.get(claim).is_some(),
            "claim {claim} missing from {claims}"
        );
    }
    // Strict offline policy by default: the token expires with its lease,
    // plus a clock-skew allowance of at most a minute.
    let exp = claims["exp"].as_i64().unwrap();
    let lease_end = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        exp >= lease_end && exp <= lease_end + 60,
        "exp {exp}, lease {lease_end}"
    );
    assert_eq!(claims["lease_exp"].as_i64(), Some(lease_end));

    let pem = app.get("/api/v1/licenses/public-key").await;
    assert_eq!(pem.status(), 200);
    let pem = pem.text().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let from_pem = DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::decode::<Value>(token, &from_pem, &validation).expect("verifies against the PEM");
}

#[tokio::test]
async fn acquiring_again_from_the_same_machine_returns_the_same_session_with_200() {
    let app = spawn_app().await;
    let lic = app.create_license(2).await;
    let first = app.acquire_ok(&lic.key, "machine-1").await;

    let again = app.acquire(&lic.key, "machine-1").await;

    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["session_id"], first["session_id"]);
    assert_eq!(again["seats_used"], 1);
    assert!(again["expires_at"].as_str().unwrap() >= first["expires_at"].as_str().unwrap());
}

#[tokio::test]
async fn acquiring_beyond_the_seat_count_is_refused_with_409_and_the_counts() {
    let app = spawn_app().await;
    let lic = app.create_license(2).await;
    app.acquire_ok(&lic.key, "m1").await;
    app.acquire_ok(&lic.key, "m2").await;

    let refused = app.acquire(&lic.key, "m3").await;

    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "no_seats_available");
    assert_eq!(body["seats_used"], 2);
    assert_eq!(body["max_seats"], 2);
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn an_unknown_license_key_gets_404() {
    let app = spawn_app().await;
    let response = app.acquire("CODITECT-AAAA-BBBB-CCCC-DDDD-EEEE", "m1").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "license_not_found");
}

#[tokio::test]
async fn an_expired_license_gets_403_license_expired() {
    let app = spawn_app().await;
    let lic = app
        .create_license_with(2, Some("2020-01-01T00:00:00Z"))
        .await;
    let response = app.acquire(&lic.key, "m1").await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "license_expired");
}

#[tokio::test]
async fn suspended_and_inactive_licenses_refuse_new_seats_with_403() {
    let app = spawn_app().await;
    let lic = app.create_license(2).await;
    app.acquire_ok(&lic.key, "m1").await;

    app.update_license(lic.id, None, Some("suspended")).await;
    assert_error(app.acquire(&lic.key, "m2").await, 403, "license_suspended").await;
    app.update_license(lic.id, None, Some("inactive")).await;
    assert_error(app.acquire(&lic.key, "m2").await, 403, "license_inactive").await;
    // Suspension also ends live sessions (seat_promises proves it); this
    // test holds the refusal of new seats, audited with their reasons.

    app.update_license(lic.id, None, Some("active")).await;
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);
    let failed = app
        .store
        .audit_for_license(lic.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::LicenseAcquisitionFailed)
        .filter_map(|e| e.detail)
        .collect::<Vec<_>>();
    assert_eq!(failed, vec!["license_suspended", "license_inactive"]);
}

#[tokio::test]
async fn lowering_seats_never_evicts_but_refuses_new_seats_until_under_the_limit() {
    let app = spawn_app().await;
    let lic = app.create_license(3).await;
    let sessions: Vec<Value> = futures::future::join_all((1..=3).map(|i| {
        let app = &app;
        let key = lic.key.clone();
        async move { app.acquire_ok(&key, &format!("m{i}")).await }
    }))
    .await;

    app.update_license(lic.id, Some(1), None).await;

    for s in &sessions {
        let beat = app.heartbeat_of(s).await;
        assert_eq!(beat.status(), 200, "a live session was evicted");
    }
    let refused = app.acquire(&lic.key, "m4").await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["seats_used"], 3);
    assert_eq!(body["max_seats"], 1);
    // The same machines still renew.
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 200);
    for s in &sessions[..2] {
        assert_eq!(app.release_of(s).await.status(), 200);
    }
    assert_eq!(
        app.acquire(&lic.key, "m4").await.status(),
        409,
        "still at the limit of 1"
    );
    assert_eq!(
        app.release(
            sessions[2]["session_id"].as_str().unwrap(),
            sessions[2]["token"].as_str().unwrap()
        )
        .await
        .status(),
        200
    );
    assert_eq!(app.acquire(&lic.key, "m4").await.status(), 201);
}

#[tokio::test]
async fn a_license_key_typed_in_lower_case_still_works() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let response = app.acquire(&lic.key.to_lowercase(), "m1").await;
    assert_eq!(response.status(), 201);
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_acquire_bodies_get_400_with_a_json_error() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let url = app.url("/api/v1/licenses/acquire");

    let not_json = app
        .client
        .post(&url)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 400, "invalid_body").await;
    let missing = app
        .post_json("/api/v1/licenses/acquire", &json!({"license_key": lic.key}))
        .await;
    assert_error(missing, 400, "invalid_body").await;
    let wrong_type = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": 7, "hardware_id": "m"}),
        )
        .await;
    assert_error(wrong_type, 400, "invalid_body").await;
    let empty_hw = app.acquire(&lic.key, "").await;
    assert_error(empty_hw, 400, "invalid_hardware_id").await;
    let long_hw = app.acquire(&lic.key, &"h".repeat(257)).await;
    assert_error(long_hw, 400, "invalid_hardware_id").await;
    let control_hw = app.acquire(&lic.key, "m\u{7}1").await;
    assert_error(control_hw, 400, "invalid_hardware_id").await;
    let empty_key = app.acquire("", "m1").await;
    assert_error(empty_key, 400, "invalid_license_key").await;
    let bad_meta = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": lic.key, "hardware_id": "m", "metadata": "x"}),
        )
        .await;
    assert_error(bad_meta, 400, "invalid_body").await;

    // None of that took a seat.
    let ok = app.acquire(&lic.key, &"h".repeat(256)).await;
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn a_body_over_16_kib_gets_413_even_when_chunked() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let padding = "x".repeat(17 * 1024);
    let big = json!({"license_key": lic.key, "hardware_id": "m1", "metadata": {"pad": padding}});

    let sized = app.post_json("/api/v1/licenses/acquire", &big).await;
    assert_error(sized, 413, "payload_too_large").await;

    let bytes = serde_json::to_vec(&big).unwrap();
    let stream = futures::stream::iter(
        bytes
            .chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = app
        .client
        .post(app.url("/api/v1/licenses/acquire"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_error(chunked, 413, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors_and_a_405_says_what_is_allowed() {
    let app = spawn_app().await;
    let missing = app.get("/api/v1/nope").await;
    assert_error(missing, 404, "not_found").await;
    let wrong = app.get("/api/v1/licenses/acquire").await;
    assert_eq!(wrong.headers()["allow"], "POST");
    assert_error(wrong, 405, "method_not_allowed").await;
    let session = format!("/api/v1/licenses/sessions/{}", uuid::Uuid::new_v4());
    let wrong = app.get(&session).await;
    assert_eq!(wrong.headers()["allow"], "DELETE");
    assert_error(wrong, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_heartbeat_extends_the_lease() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);

    let beat = app.heartbeat(id, token).await;

    assert_eq!(beat.status(), 200);
    let beat: Value = beat.json().await.unwrap();
    assert_eq!(beat["session_id"], id);
    assert_eq!(beat["heartbeat_interval_secs"], 300);
    assert!(beat["expires_at"].as_str().unwrap() >= s["expires_at"].as_str().unwrap());

    let patch = app
        .client
        .patch(app.url(&format!("/api/v1/licenses/sessions/{id}/heartbeat")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
}

#[tokio::test]
async fn heartbeats_need_the_sessions_own_token() {
    let app = spawn_app().await;
    let lic = app.create_license(2).await;
    let a = app.acquire_ok(&lic.key, "m1").await;
    let b = app.acquire_ok(&lic.key, "m2").await;
    let a_id = a["session_id"].as_str().unwrap();
    let hb_url = app.url(&format!("/api/v1/licenses/sessions/{a_id}/heartbeat"));

    let no_token = app.client.post(&hb_url).send().await.unwrap();
    assert_error(no_token, 401, "unauthorized").await;
    let garbage = app.heartbeat(a_id, "not.a.jwt").await;
    assert_error(garbage, 401, "unauthorized").await;
    let others = app.heartbeat(a_id, b["token"].as_str().unwrap()).await;
    assert_error(others, 401, "unauthorized").await;
    let release_with_others = app.release(a_id, b["token"].as_str().unwrap()).await;
    assert_error(release_with_others, 401, "unauthorized").await;

    // The session is untouched by all that.
    assert_eq!(
        app.heartbeat(a_id, a["token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unknown_session_gets_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/licenses/sessions/{unknown}/heartbeat")))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "session_not_found").await;
    let not_a_uuid = app
        .client
        .delete(app.url("/api/v1/licenses/sessions/zzz"))
        .send()
        .await
        .unwrap();
    assert_error(not_a_uuid, 404, "session_not_found").await;
}

#[tokio::test]
async fn release_is_idempotent_and_frees_the_seat() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 409);

    let first = app.release(id, token).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let second = app.release(id, token).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();

    assert_eq!(first["session_id"], id);
    assert_eq!(first["ended_at"], second["ended_at"]);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);
    let after = app.heartbeat(id, token).await;
    assert_error(after, 410, "session_ended").await;
}

#[tokio::test]
async fn a_session_whose_heartbeats_stop_frees_its_seat_by_itself() {
    let app = spawn_app_with(AppOptions {
        lease_ttl_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 409);

    let freed = eventually(Duration::from_secs(10), || async {
        (app.acquire(&lic.key, "m2").await.status() == 201).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the seat was never freed");

    let beat = app.heartbeat(id, token).await;
    assert_error(beat, 410, "session_expired").await;

    // The durable record is closed as expired, with an audit entry.
    let session_id = id.parse().unwrap();
    let closed = eventually(Duration::from_secs(10), || async {
        let record = app.store.session(session_id).await.unwrap()?;
        record.ended_at.map(|_| record)
    })
    .await
    .expect("the record was closed");
    assert_eq!(closed.end_reason, Some(EndReason::Expired));
    let audit = app.store.audit_for_license(lic.id).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.event == AuditEvent::SessionExpired && e.session_id == Some(session_id))
    );
    // Released after expiry: still 200, with the expiry's end time.
    let release = app.release(id, token).await;
    assert_eq!(release.status(), 200);
    let release: Value = release.json().await.unwrap();
    assert_eq!(release["end_reason"], "expired");
}

#[tokio::test]
async fn lapsed_sessions_are_closed_as_expired_without_any_request() {
    let app = spawn_app_with(AppOptions {
        lease_ttl_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let session_id = s["session_id"].as_str().unwrap().parse().unwrap();

    let closed = eventually(Duration::from_secs(10), || async {
        app.store.session(session_id).await.unwrap()?.ended_at
    })
    .await;

    assert!(
        closed.is_some(),
        "the sweeper never closed the lapsed session"
    );
}

#[tokio::test]
async fn the_audit_log_records_who_acquired_failed_and_released() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let s = app
        .client
        .post(app.url("/api/v1/licenses/acquire"))
        .header("user-agent", "acme-cad/4.2")
        .json(&json!({"license_key": lic.key, "hardware_id": "m1", "client_version": "4.2", "os": "linux"}))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 201);
    let s: Value = s.json().await.unwrap();
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 409);
    assert_eq!(app.release_of(&s).await.status(), 200);

    let audit = app.store.audit_for_license(lic.id).await.unwrap();
    let events: Vec<AuditEvent> = audit.iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        vec![
            AuditEvent::LicenseAcquired,
            AuditEvent::LicenseAcquisitionFailed,
            AuditEvent::LicenseReleased
        ]
    );
    assert_eq!(audit[0].client.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(audit[0].client.user_agent.as_deref(), Some("acme-cad/4.2"));
    assert_eq!(audit[0].hardware_id.as_deref(), Some("m1"));
    assert_eq!(audit[1].hardware_id.as_deref(), Some("m2"));
    assert_eq!(audit[1].detail.as_deref(), Some("no_seats_available"));

    let record = app
        .store
        .session(s["session_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.client.user_agent.as_deref(), Some("acme-cad/4.2"));
    assert_eq!(record.metadata.as_ref().unwrap()["os"], "linux");
    assert_eq!(record.end_reason, Some(EndReason::Released));
}

#[tokio::test]
async fn behind_a_proxy_the_client_ip_comes_from_x_forwarded_for() {
    let app = spawn_app_with(AppOptions {
        client_ip: "x_forwarded_for",
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let response = app
        .client
        .post(app.url("/api/v1/licenses/acquire"))
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
        .json(&json!({"license_key": lic.key, "hardware_id": "m1"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let record = app
        .store
        .session(body["session_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.client.ip.as_deref(), Some("203.0.113.9"));
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let app = spawn_app().await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["ledger"], "ok");
}

#[tokio::test]
async fn metrics_expose_seats_results_latency_and_actors() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    app.acquire(&lic.key, "m2").await;
    app.heartbeat_of(&s).await;
    app.release_of(&s).await;

    let text = app.metrics().await;

    let license = lic.id.to_string();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        text.lines().any(|l| l.starts_with("seatwarden_seat_limit{")
            && l.contains(&license)
            && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("seatwarden_seats_in_use{") && l.contains(&license)),
        "{text}"
    );
    assert!(
        has("seatwarden_acquire_total{result=\"created\"}"),
        "{text}"
    );
    assert!(
        has("seatwarden_acquire_total{result=\"no_seats_available\"}"),
        "{text}"
    );
    assert!(has("seatwarden_heartbeat_total{result=\"ok\"}"), "{text}");
    assert!(has("seatwarden_release_total{result=\"ok\"}"), "{text}");
    assert!(
        has("seatwarden_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(has("seatwarden_org_actors"), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("seatwarden_"),
            "metric without prefix: {line}"
        );
    }
}

#[tokio::test]
async fn a_panicking_org_actor_is_restarted_without_losing_live_sessions() {
    let app = spawn_app_with(AppOptions {
        fault_hooks: true,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(2).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);
    let restarts_before = restarts(&app.metrics().await);
    let before = app
        .coordinator
        .org_actor_id(lic.org)
        .expect("the org actor runs");

    app.coordinator.inject_panic(lic.org).await.unwrap();

    let restarted = eventually(Duration::from_secs(10), || async {
        (restarts(&app.metrics().await) > restarts_before).then_some(())
    })
    .await;
    assert!(restarted.is_some(), "no restart was recorded");
    let after = app
        .coordinator
        .org_actor_id(lic.org)
        .expect("the org actor runs again");
    assert_ne!(after, before, "the actor was not replaced");
    // The live session survived: heartbeats work and it still holds its seat.
    assert_eq!(app.heartbeat(id, token).await.status(), 200);
    let again: Value = app.acquire(&lic.key, "m1").await.json().await.unwrap();
    assert_eq!(again["session_id"], id);
    let other = app.acquire_ok(&lic.key, "m2").await;
    assert_eq!(other["seats_used"], 2);
    assert_eq!(app.acquire(&lic.key, "m3").await.status(), 409);
}

fn restarts(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("seatwarden_actor_restarts_total{actor=\"org\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_fault_hook_does_nothing_unless_enabled() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let before = app
        .coordinator
        .org_actor_id(lic.org)
        .expect("the org actor runs");

    app.coordinator.inject_panic(lic.org).await.unwrap();

    // The heartbeat queues behind the fault request in the same mailbox: had
    // the hook fired, it would fail, or reach a restarted actor.
    assert_eq!(app.heartbeat_of(&s).await.status(), 200);
    assert_eq!(
        app.coordinator.org_actor_id(lic.org),
        Some(before),
        "the org actor was replaced, so the disabled hook fired"
    );
}

#[tokio::test]
async fn restarting_the_embedded_server_keeps_every_live_session() {
    let app = spawn_app().await;
    let lic = app.create_license(2).await;
    let kept = app.acquire_ok(&lic.key, "m1").await;
    let released = app.acquire_ok(&lic.key, "m2").await;
    assert_eq!(app.release_of(&released).await.status(), 200);

    let app = app.restart().await;

    assert_eq!(
        app.heartbeat_of(&kept).await.status(),
        200,
        "the live session was lost"
    );
    let again: Value = app.acquire(&lic.key, "m1").await.json().await.unwrap();
    assert_eq!(again["session_id"], kept["session_id"]);
    assert_eq!(
        again["seats_used"], 1,
        "the released seat came back as live"
    );
    assert_eq!(app.heartbeat_of(&released).await.status(), 410);
}

#[tokio::test]
async fn an_idle_org_actor_stops_and_comes_back_on_the_next_request() {
    let app = spawn_app_with(AppOptions {
        org_idle_timeout_secs: 0,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    assert!(app.coordinator.org_actor_running(lic.org));
    assert_eq!(app.release_of(&s).await.status(), 200);

    let stopped = eventually(Duration::from_secs(10), || async {
        (!app.coordinator.org_actor_running(lic.org)).then_some(())
    })
    .await;
    assert!(stopped.is_some(), "the idle org actor never stopped");

    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);
    assert!(app.coordinator.org_actor_running(lic.org));
}

#[tokio::test]
async fn a_live_session_outlives_its_idle_org_actor() {
    let app = spawn_app_with(AppOptions {
        org_idle_timeout_secs: 0,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    assert_eq!(app.heartbeat_of(&s).await.status(), 200);

    // The actor holds only caches and batched writes: once those are
    // flushed it stops when idle, and the ledger keeps the seat.
    let stopped = eventually(Duration::from_secs(10), || async {
        (!app.coordinator.org_actor_running(lic.org)).then_some(())
    })
    .await;
    assert!(stopped.is_some(), "the idle org actor never stopped");
    assert_eq!(app.heartbeat_of(&s).await.status(), 200);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 409);
    let record = app
        .store
        .session(s["session_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.is_open(), "{record:?}");
}
