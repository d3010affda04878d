//! The HTTP API on the production backends: real Redis and PostgreSQL.

mod support;

use std::time::Duration;

use serde_json::Value;

use seatwarden_actors::domain::{AuditEvent, EndReason};
use support::services::{OwnRedis, fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, eventually, ids, spawn_app_with};

async fn shared_app(lease_ttl_secs: u64) -> TestApp {
    spawn_app_with(AppOptions {
        backend: Backend::Shared {
            database_url: fresh_postgres_db().await,
            redis_url: redis_url(),
        },
        lease_ttl_secs,
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn acquire_heartbeat_and_release_work_on_redis_and_postgres() {
    let app = shared_app(360).await;
    let lic = app.create_license(1).await;

    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 409);
    let renewed = app.acquire(&lic.key, "m1").await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(app.heartbeat(id, token).await.status(), 200);
    let first: Value = app.release(id, token).await.json().await.unwrap();
    let second: Value = app.release(id, token).await.json().await.unwrap();
    assert_eq!(first["ended_at"], second["ended_at"]);
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);

    let record = app
        .store
        .session(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.end_reason, Some(EndReason::Released));
    let events: Vec<AuditEvent> = app
        .store
        .audit_for_license(lic.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        vec![
            AuditEvent::LicenseAcquired,
            AuditEvent::LicenseAcquisitionFailed,
            AuditEvent::LicenseReleased,
            AuditEvent::LicenseAcquired
        ]
    );
}

#[tokio::test]
async fn on_redis_a_silent_session_frees_its_seat_and_is_recorded_as_expired() {
    let app = shared_app(1).await;
    let lic = app.create_license(1).await;
    let s = app.acquire_ok(&lic.key, "m1").await;
    let (id, token) = ids(&s);

    let freed = eventually(Duration::from_secs(10), || async {
        (app.acquire(&lic.key, "m2").await.status() == 201).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the seat was never freed");
    assert_eq!(app.heartbeat(id, token).await.status(), 410);
    let closed = eventually(Duration::from_secs(10), || async {
        app.store
            .session(id.parse().unwrap())
            .await
            .unwrap()?
            .end_reason
    })
    .await;
    assert_eq!(closed, Some(EndReason::Expired));
}

#[tokio::test]
async fn when_redis_goes_away_acquire_gets_503_with_retry_after_and_recovers() {
    let mut redis = OwnRedis::start();
    let app = spawn_app_with(AppOptions {
        backend: Backend::Shared {
            database_url: fresh_postgres_db().await,
            redis_url: redis.url(),
        },
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(2).await;
    let s = app.acquire_ok(&lic.key, "m1").await;

    redis.kill();

    let refused = app.acquire(&lic.key, "m2").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "ledger_unavailable");
    let hb = app.heartbeat_of(&s).await;
    assert_eq!(hb.status(), 503);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["ledger"], "unavailable");
    assert_eq!(ready["database"], "ok");

    // An empty Redis comes back (as after a failover without persistence):
    // the server recovers by itself, and the NOSCRIPT fallback reloads the
    // scripts.
    redis.restart();
    let recovered = eventually(Duration::from_secs(15), || async {
        (app.acquire(&lic.key, "m2").await.status() == 201).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "never recovered after Redis came back");
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
}
