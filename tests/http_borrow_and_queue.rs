//! Borrowing a seat for offline work, and waiting in a license's line for
//! one, over HTTP on the embedded server: the answers, the bad input, the
//! session list, the metrics and an administrator's revoke. FIFO order and
//! holds across nodes are shown by `tests/ledger_line_conformance.rs` (both
//! ledgers, two Redis clients) and by the Python client's two-node tests.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use support::people::{error_code, platform_admin};
use support::{AppOptions, TestApp, TestLicense, eventually, spawn_app_with};

const WAIT: Duration = Duration::from_secs(10);

/// An embedded server whose freed seats are held for 1 s and whose
/// waiting clients poll every second.
async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        overrides: vec![("queue.hold_secs", 1.into()), ("queue.poll_secs", 1.into())],
        ..AppOptions::default()
    })
    .await
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn borrow(
    app: &TestApp,
    license: &TestLicense,
    hw: &str,
    hours: Value,
) -> (StatusCode, Value) {
    let body = json!({"license_key": license.key, "hardware_id": hw, "hours": hours});
    json_of(app.post_json("/api/v1/licenses/borrow", &body).await).await
}

async fn acquire(app: &TestApp, body: Value) -> (StatusCode, Value) {
    json_of(app.post_json("/api/v1/licenses/acquire", &body).await).await
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is a timestamp"))
        .parse()
        .unwrap()
}

fn metric(metrics: &str, name: &str, license: &TestLicense) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&license.id.to_string()))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn sessions(app: &TestApp, license: &TestLicense) -> Vec<Value> {
    let out = seatwarden::cli::run_admin(
        app.store.as_ref(),
        &app.settings.licenses.key_prefix,
        seatwarden::cli::Command::License(seatwarden::cli::LicenseCommand::Sessions {
            license: license.id,
        }),
    )
    .await
    .unwrap();
    out["sessions"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// Borrowing

#[tokio::test]
async fn borrowing_is_refused_until_the_license_allows_it() {
    let app = app().await;
    let license = app.create_license(2).await;
    let (status, body) = borrow(&app, &license, "laptop", json!(4)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "borrowing_disabled");

    app.set_max_borrow_hours(license.id, 8).await;
    let (status, body) = eventually(WAIT, || async {
        let answer = borrow(&app, &license, "laptop", json!(4)).await;
        (answer.0 == StatusCode::CREATED).then_some(answer)
    })
    .await
    .expect("the new policy reaches the server");
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_borrow_too_long_or_of_no_hours_is_a_400_that_changes_nothing() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.set_max_borrow_hours(license.id, 8).await;

    let (status, body) = borrow(&app, &license, "laptop", json!(9)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "borrow_too_long");
    assert_eq!(body["max_borrow_hours"], 8);
    for (hours, code) in [
        (json!(0), "invalid_hours"),
        (json!(100_000), "invalid_hours"),
        (json!(-1), "invalid_body"),
        (json!(1.5), "invalid_body"),
        (json!("8"), "invalid_body"),
    ] {
        let (status, body) = borrow(&app, &license, "laptop", hours.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hours}: {body}");
        assert_eq!(body["error"], code, "{hours}: {body}");
    }
    let body =
        json!({"license_key": license.key, "hardware_id": "laptop", "hours": 2, "wait": true});
    let response = app.post_json("/api/v1/licenses/borrow", &body).await;
    assert_eq!(
        error_code(response).await,
        "invalid_body",
        "a borrow does not wait"
    );

    // Nothing was taken: the one seat is still free.
    let (status, _) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "desk"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_borrowed_seat_needs_no_heartbeats_and_its_token_ends_with_the_borrow() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.set_max_borrow_hours(license.id, 72).await;
    let before = Utc::now();
    let (status, seat) = borrow(&app, &license, "laptop", json!(48)).await;
    assert_eq!(status, StatusCode::CREATED, "{seat}");

    let until = time(&seat["borrowed_until"]);
    let hours = (until - before).num_minutes() as f64 / 60.0;
    assert!((47.9..=48.1).contains(&hours), "borrowed for {hours} h");
    assert_eq!(time(&seat["expires_at"]), until);
    assert_eq!(
        time(&seat["token_expires_at"]).timestamp(),
        until.timestamp(),
        "the token is valid exactly as long as the borrow"
    );
    let claims = app.signer.verify(seat["token"].as_str().unwrap()).unwrap();
    assert!(claims.borrowed);
    assert_eq!(claims.exp, until.timestamp());

    // A heartbeat neither shortens the borrow nor re-signs its token.
    let (status, beat) = json_of(app.heartbeat_of(&seat).await).await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    assert_eq!(time(&beat["expires_at"]), until);
    assert!(beat.get("token").is_none(), "{beat}");

    // It counts against the seats, and shows as borrowed.
    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "desk"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let listed = sessions(&app, &license).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(time(&listed[0]["borrowed_until"]), until);
    assert_eq!(
        metric(
            &app.metrics().await,
            "seatwarden_borrowed_sessions",
            &license
        ),
        Some(1.0)
    );

    // Borrowing again keeps the same seat and its end.
    let (status, again) = borrow(&app, &license, "laptop", json!(1)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["session_id"], seat["session_id"]);
    assert_eq!(time(&again["borrowed_until"]), until);
}

#[tokio::test]
async fn a_machine_that_holds_a_seat_borrows_that_same_seat() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.set_max_borrow_hours(license.id, 8).await;
    let seat = app.acquire_ok(&license.key, "laptop").await;
    let (status, borrowed) = borrow(&app, &license, "laptop", json!(8)).await;
    assert_eq!(status, StatusCode::OK, "{borrowed}");
    assert_eq!(borrowed["session_id"], seat["session_id"]);
    let until = time(&borrowed["borrowed_until"]);
    assert!(until > Utc::now() + chrono::Duration::hours(7));
    let listed = sessions(&app, &license).await;
    assert_eq!(time(&listed[0]["borrowed_until"]), until);
    assert_eq!(time(&listed[0]["lease_expires_at"]), until);
}

#[tokio::test]
async fn returning_a_borrowed_seat_early_frees_it_for_the_next_machine() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.set_max_borrow_hours(license.id, 8).await;
    let (_, seat) = borrow(&app, &license, "laptop", json!(8)).await;
    assert_eq!(
        metric(
            &app.metrics().await,
            "seatwarden_borrowed_sessions",
            &license
        ),
        Some(1.0)
    );
    let (status, released) = json_of(app.release_of(&seat).await).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["end_reason"], "released");

    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "desk"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        metric(
            &app.metrics().await,
            "seatwarden_borrowed_sessions",
            &license
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_platform_administrator_takes_a_borrowed_seat_back() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.set_max_borrow_hours(license.id, 8).await;
    let (_, seat) = borrow(&app, &license, "laptop", json!(8)).await;
    let path = format!(
        "/api/v1/admin/sessions/{}",
        seat["session_id"].as_str().unwrap()
    );

    // Nobody else may: no credential is a 401, the seat token is no
    // administrator's.
    let anonymous = app.client.delete(app.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let holder = app
        .client
        .delete(app.url(&path))
        .bearer_auth(seat["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(holder.status(), StatusCode::UNAUTHORIZED);

    let admin = platform_admin(&app).await;
    let (status, revoked) = json_of(
        app.client
            .delete(app.url(&path))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(
        (revoked["status"].as_str(), revoked["end_reason"].as_str()),
        (Some("ended"), Some("revoked"))
    );

    let (status, beat) = json_of(app.heartbeat_of(&seat).await).await;
    assert_eq!(status, StatusCode::GONE, "{beat}");
    assert_eq!(beat["error"], "session_revoked");
    let (status, _) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "desk"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "the seat is free again");

    let unknown = format!("/api/v1/admin/sessions/{}", uuid::Uuid::new_v4());
    let response = app
        .client
        .delete(app.url(&unknown))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, "session_not_found");
    let response = app
        .client
        .delete(app.url("/api/v1/admin/sessions/not-a-session"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_platform_administrator_sets_the_borrowing_policy_on_the_admin_api() {
    let app = app().await;
    let license = app.create_license(1).await;
    let admin = platform_admin(&app).await;
    let path = format!("/api/v1/admin/licenses/{}", license.id);
    let patch = |body: Value| {
        app.client
            .patch(app.url(&path))
            .bearer_auth(&admin.token)
            .json(&body)
            .send()
    };
    let (status, body) = json_of(patch(json!({"max_borrow_hours": 12})).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["max_borrow_hours"], 12);
    let (status, body) = json_of(patch(json!({"max_borrow_hours": 9000})).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_max_borrow_hours");

    let issued = app
        .client
        .post(app.url("/api/v1/admin/licenses"))
        .bearer_auth(&admin.token)
        .json(&json!({"org_id": license.org, "seats": 2, "max_borrow_hours": 24}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(issued).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["max_borrow_hours"], 24);
    let key = body["key"].as_str().unwrap();
    let (status, body) = json_of(
        app.post_json(
            "/api/v1/licenses/borrow",
            &json!({"license_key": key, "hardware_id": "laptop", "hours": 24}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

// ---------------------------------------------------------------------------
// The seat queue

async fn poll(app: &TestApp, ticket: &Value) -> (StatusCode, Value) {
    let path = format!("/api/v1/licenses/queue/{}", ticket.as_str().unwrap());
    json_of(app.get(&path).await).await
}

#[tokio::test]
async fn a_full_license_queues_a_waiting_machine_and_holds_the_freed_seat_for_it() {
    let app = app().await;
    let license = app.create_license(1).await;
    let holder = app.acquire_ok(&license.key, "holder").await;

    let (status, place) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "waiter", "wait": true}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{place}");
    assert_eq!(place["position"], 1);
    assert_eq!(place["state"], "waiting");
    assert_eq!(place["poll_after_secs"], 1);
    assert_eq!(place["queue_length"], 1);
    assert!(place.get("hold_expires_at").is_none(), "{place}");
    let ticket = place["queue_ticket"].clone();

    // Waiting again keeps the same ticket; an outsider gets the 409.
    let (status, again) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "waiter", "wait": true}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["queue_ticket"], ticket);
    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "outsider"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, polled) = poll(&app, &ticket).await;
    assert_eq!(
        (status, polled["state"].as_str()),
        (StatusCode::OK, Some("waiting"))
    );

    // The seat frees: it is held for the ticket, not for the outsider.
    app.release_of(&holder).await;
    let (status, ready) = poll(&app, &ticket).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["state"], "ready");
    assert!(time(&ready["hold_expires_at"]) > Utc::now() - chrono::Duration::seconds(1));
    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "outsider"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, seat) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "waiter", "queue_ticket": ticket}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{seat}");
    let (status, gone) = poll(&app, &ticket).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    assert_eq!(gone["error"], "queue_ticket_not_found");

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "seatwarden_queue_length", &license),
        Some(0.0)
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("seatwarden_queue_wait_seconds_count")
                || l.starts_with("seatwarden_queue_wait_seconds{")),
        "the wait is measured"
    );
}

#[tokio::test]
async fn a_head_that_does_not_claim_its_held_seat_in_time_loses_its_place() {
    let app = app().await;
    let license = app.create_license(1).await;
    let holder = app.acquire_ok(&license.key, "holder").await;
    let (_, first) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "dawdler", "wait": true}),
    )
    .await;
    let (_, second) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "patient", "wait": true}),
    )
    .await;
    assert_eq!(second["position"], 2);
    app.release_of(&holder).await;
    let (_, ready) = poll(&app, &first["queue_ticket"]).await;
    assert_eq!(ready["state"], "ready");

    // The dawdler never claims; within its hold plus the patient one's
    // polls, the seat passes on.
    let next = eventually(WAIT, || async {
        let (_, p) = poll(&app, &second["queue_ticket"]).await;
        (p["state"] == "ready").then_some(p)
    })
    .await
    .expect("the seat is held for the next ticket");
    assert_eq!(next["position"], 1);
    let (status, body) = poll(&app, &first["queue_ticket"]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "dawdler", "queue_ticket": first["queue_ticket"]}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("queue_ticket_not_found"))
    );
    let (status, _) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "patient"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the machine's own ticket claims without being named"
    );
}

#[tokio::test]
async fn a_ticket_is_bound_to_its_machine_and_anything_else_is_no_ticket() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.acquire_ok(&license.key, "holder").await;
    let (_, place) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "waiter", "wait": true}),
    )
    .await;
    let ticket = place["queue_ticket"].as_str().unwrap().to_owned();

    let (status, body) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "thief", "queue_ticket": ticket}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("queue_ticket_not_found"))
    );
    for bad in [
        "nonsense",
        "a.b.c",
        &format!("{ticket}.extra"),
        &"x".repeat(300),
    ] {
        let (status, body) = acquire(
            &app,
            json!({"license_key": license.key, "hardware_id": "waiter", "queue_ticket": bad}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        let (status, body) = json_of(app.get(&format!("/api/v1/licenses/queue/{bad}")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        assert_eq!(body["error"], "queue_ticket_not_found");
    }
    // A ticket is sealed: naming another organization (or anything else)
    // in a real ticket is refused before any organization is looked up.
    let stranger = uuid::Uuid::new_v4();
    let forged = format!("{stranger}{}", &ticket[36..]);
    let (status, _) = json_of(app.get(&format!("/api/v1/licenses/queue/{forged}")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!app.coordinator.org_actor_running(stranger.into()));

    // The waiter is still in line.
    let (status, polled) = poll(&app, &json!(ticket)).await;
    assert_eq!(
        (status, polled["position"].as_u64()),
        (StatusCode::OK, Some(1))
    );
}

#[tokio::test]
async fn leaving_the_line_is_idempotent_and_moves_the_next_ticket_up() {
    let app = app().await;
    let license = app.create_license(1).await;
    app.acquire_ok(&license.key, "holder").await;
    let (_, first) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "a", "wait": true}),
    )
    .await;
    let (_, second) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "b", "wait": true}),
    )
    .await;
    let path = format!(
        "/api/v1/licenses/queue/{}",
        first["queue_ticket"].as_str().unwrap()
    );
    for left in [true, false] {
        let (status, body) = json_of(app.client.delete(app.url(&path)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["left"], left);
    }
    let (_, polled) = poll(&app, &second["queue_ticket"]).await;
    assert_eq!(polled["position"], 1);
}

#[tokio::test]
async fn waiting_on_a_license_with_a_free_seat_is_an_ordinary_acquire() {
    let app = app().await;
    let license = app.create_license(1).await;
    let (status, seat) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "a", "wait": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{seat}");
    assert!(seat["token"].is_string());
}

#[tokio::test]
async fn suspending_a_license_empties_its_line() {
    let app = app().await;
    let license = app.create_license(1).await;
    let holder = app.acquire_ok(&license.key, "holder").await;
    let (_, place) = acquire(
        &app,
        json!({"license_key": license.key, "hardware_id": "waiter", "wait": true}),
    )
    .await;
    app.update_license(license.id, None, Some("suspended"))
        .await;
    // The holder's heartbeat answers from the ledger: once it is refused,
    // the ledger has dropped the license's leases, and its line with them.
    eventually(WAIT, || async {
        let status = app.heartbeat_of(&holder).await.status();
        (status == StatusCode::FORBIDDEN).then_some(())
    })
    .await
    .expect("the suspension reaches the ledger");
    let (status, body) = eventually(WAIT, || async {
        let answer = poll(&app, &place["queue_ticket"]).await;
        (answer.0 != StatusCode::OK).then_some(answer)
    })
    .await
    .expect("the suspension reaches the line");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "license_suspended");
    app.update_license(license.id, None, Some("active")).await;
    let (status, body) = eventually(WAIT, || async {
        let answer = poll(&app, &place["queue_ticket"]).await;
        (answer.0 != StatusCode::FORBIDDEN).then_some(answer)
    })
    .await
    .expect("the reactivation reaches the server");
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("queue_ticket_not_found"))
    );
}
