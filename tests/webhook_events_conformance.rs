//! The conformance suite of [`WebhookEventStore`]: every check is written
//! once and run against SQLite on a temporary file and PostgreSQL on a
//! fresh database of the throwaway server from `scripts/services.sh`.
//!
//! A subject has two store instances on one database, as two nodes (or two
//! processes sharing a SQLite file) would.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::future::join_all;
use seatwarden_actors::domain::{ActionAudit, AuditEvent, ClientInfo};
use seatwarden_actors::ports::{
    ClaimedEvent, NewWebhookEvent, WebhookEventQuery, WebhookEventStore, WebhookStatus,
};
use support::backends::TwoNodes;

struct Subject {
    store: Arc<dyn WebhookEventStore>,
    /// Another node's view of the same database.
    other: Arc<dyn WebhookEventStore>,
    _nodes: TwoNodes,
}

impl From<TwoNodes> for Subject {
    fn from(nodes: TwoNodes) -> Self {
        Self {
            store: nodes.store.clone(),
            other: nodes.other.clone(),
            _nodes: nodes,
        }
    }
}

async fn sqlite() -> Subject {
    support::backends::two_sqlite().await.into()
}

async fn postgres() -> Subject {
    support::backends::two_postgres().await.into()
}

subject_conformance! {
    a_recorded_event_is_pending_and_claimed_with_its_payload_as_attempt_one => check_record_and_claim,
    recording_the_same_event_id_again_changes_nothing => check_duplicate,
    an_unreadable_event_is_kept_as_failed_and_never_claimed => check_unreadable,
    claims_take_due_events_oldest_created_first_up_to_the_limit => check_order_and_limit,
    a_claimed_event_comes_back_when_its_claimers_lease_ends => check_expired_claim,
    two_concurrent_claimers_never_get_the_same_event => check_concurrent_claims,
    a_processed_event_is_settled_and_never_claimed_again => check_processed,
    a_failed_event_is_due_again_at_its_retry_or_never => check_failed,
    a_stale_claim_cannot_settle_an_event_claimed_again_or_replayed => check_fencing,
    replay_makes_any_event_due_at_once_and_keeps_its_attempts => check_replay,
    a_released_event_is_due_at_once_and_its_attempt_is_given_back => check_release,
    events_list_newest_received_first_with_filters_and_pages => check_list,
}

// ---------------------------------------------------------------------------
// Fixtures

/// A fixed instant with a microsecond part, plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(secs)
}

/// An event `id` of `kind`, created at `at(created)` and received at
/// `at(received)`.
fn event(id: &str, kind: &str, created: i64, received: i64) -> NewWebhookEvent {
    NewWebhookEvent {
        id: id.to_owned(),
        kind: kind.to_owned(),
        created: at(created),
        payload: format!(r#"{{"id":"{id}","type":"{kind}","object":"event"}}"#),
        received_at: at(received),
        unreadable: None,
    }
}

/// An operator's replay, as the admin API audits it.
fn replayed() -> ActionAudit {
    ActionAudit {
        at: at(0),
        event: AuditEvent::WebhookReplayed,
        actor_id: None,
        org_id: None,
        license_id: None,
        client: ClientInfo::default(),
        detail: Some("evt".into()),
    }
}

async fn record(s: &Subject, e: &NewWebhookEvent) -> bool {
    s.store.record(e).await.expect("record")
}

async fn claim(
    store: &dyn WebhookEventStore,
    now: i64,
    lease: i64,
    limit: u32,
) -> Vec<ClaimedEvent> {
    store
        .claim(at(now), at(now + lease), limit)
        .await
        .expect("claim")
}

fn ids(claimed: &[ClaimedEvent]) -> Vec<&str> {
    claimed.iter().map(|c| c.event.id.as_str()).collect()
}

// ---------------------------------------------------------------------------
// Checks

async fn check_record_and_claim(s: &Subject) {
    let e = event("evt_1", "invoice.paid", 0, 1);
    assert!(record(s, &e).await);
    let stored = s.store.get("evt_1").await.unwrap().expect("recorded");
    assert_eq!(stored.status, WebhookStatus::Pending);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.next_attempt_at, Some(at(1)));
    assert_eq!(stored.payload, e.payload);
    assert_eq!(stored.created, at(0));

    let claimed = claim(&*s.store, 1, 30, 10).await;
    assert_eq!(ids(&claimed), ["evt_1"]);
    let got = &claimed[0].event;
    assert_eq!(got.status, WebhookStatus::Processing);
    assert_eq!(got.attempts, 1);
    assert_eq!(got.kind, "invoice.paid");
    assert_eq!(got.payload, e.payload);
    assert_eq!(got.next_attempt_at, Some(at(31)));
    assert!(s.store.get("evt_404").await.unwrap().is_none());
}

async fn check_duplicate(s: &Subject) {
    assert!(record(s, &event("evt_1", "invoice.paid", 0, 1)).await);
    let claimed = claim(&*s.store, 1, 30, 10).await;
    assert!(
        s.store
            .mark_processed("evt_1", claimed[0].claim, at(2))
            .await
            .unwrap()
    );
    // Redelivered, even with another body: nothing changes.
    let mut again = event("evt_1", "invoice.payment_failed", 5, 6);
    again.payload = "{}".into();
    assert!(!record(s, &again).await);
    assert!(!s.other.record(&again).await.unwrap());
    let stored = s.store.get("evt_1").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Processed);
    assert_eq!(stored.kind, "invoice.paid");
    assert_ne!(stored.payload, "{}");
    assert!(claim(&*s.store, 100, 30, 10).await.is_empty());
}

async fn check_unreadable(s: &Subject) {
    let mut e = event("evt_bad", "invoice.paid", 0, 1);
    e.unreadable = Some("missing field `lines`".into());
    assert!(record(s, &e).await);
    let stored = s.store.get("evt_bad").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some("missing field `lines`"));
    assert_eq!(stored.next_attempt_at, None);
    assert_eq!(stored.payload, e.payload, "kept, to replay later");
    assert!(claim(&*s.store, 1_000, 30, 10).await.is_empty());
}

async fn check_order_and_limit(s: &Subject) {
    // Received in one order, created in another: created decides.
    record(s, &event("evt_c", "x", 30, 1)).await;
    record(s, &event("evt_a", "x", 10, 2)).await;
    record(s, &event("evt_b", "x", 20, 3)).await;
    record(s, &event("evt_later", "x", 0, 100)).await;

    assert_eq!(
        ids(&claim(&*s.store, 50, 1000, 2).await),
        ["evt_a", "evt_b"]
    );
    assert_eq!(ids(&claim(&*s.store, 50, 1000, 10).await), ["evt_c"]);
    // Not due before it was received.
    assert!(claim(&*s.store, 50, 1000, 10).await.is_empty());
    assert_eq!(ids(&claim(&*s.store, 100, 1000, 10).await), ["evt_later"]);
}

async fn check_expired_claim(s: &Subject) {
    record(s, &event("evt_1", "x", 0, 0)).await;
    let first = claim(&*s.store, 0, 30, 10).await;
    assert_eq!(first.len(), 1);
    assert!(claim(&*s.other, 29, 30, 10).await.is_empty());
    let second = claim(&*s.other, 30, 30, 10).await;
    assert_eq!(ids(&second), ["evt_1"]);
    assert_eq!(second[0].event.attempts, 2);
    assert_ne!(first[0].claim, second[0].claim);
}

async fn check_concurrent_claims(s: &Subject) {
    for i in 0..40 {
        record(s, &event(&format!("evt_{i:02}"), "x", i, 0)).await;
    }
    let claims = (0..8).map(|i| {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            s.other.clone()
        };
        async move { claim(&*store, 1, 60, 7).await }
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for got in join_all(claims).await {
        for c in got {
            total += 1;
            assert!(
                seen.insert(c.event.id.clone()),
                "{} claimed twice",
                c.event.id
            );
        }
    }
    assert_eq!(total, 40);
}

async fn check_processed(s: &Subject) {
    record(s, &event("evt_1", "x", 0, 0)).await;
    let c = claim(&*s.store, 0, 30, 10).await.remove(0);
    assert!(
        s.store
            .mark_processed("evt_1", c.claim, at(5))
            .await
            .unwrap()
    );
    let stored = s.store.get("evt_1").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Processed);
    assert_eq!(stored.processed_at, Some(at(5)));
    assert_eq!(stored.next_attempt_at, None);
    assert_eq!(stored.attempts, 1);
    // Settling twice does nothing more; it is never due again.
    assert!(
        !s.store
            .mark_processed("evt_1", c.claim, at(6))
            .await
            .unwrap()
    );
    assert!(claim(&*s.store, 10_000, 30, 10).await.is_empty());
}

async fn check_failed(s: &Subject) {
    record(s, &event("evt_retry", "x", 0, 0)).await;
    record(s, &event("evt_dead", "x", 1, 0)).await;
    let claimed = claim(&*s.store, 0, 30, 10).await;
    let (retry, dead) = (&claimed[0], &claimed[1]);
    assert!(
        s.store
            .mark_failed("evt_retry", retry.claim, "store unavailable", Some(at(60)))
            .await
            .unwrap()
    );
    assert!(
        s.store
            .mark_failed("evt_dead", dead.claim, "no such plan", None)
            .await
            .unwrap()
    );
    let stored = s.store.get("evt_retry").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some("store unavailable"));
    assert_eq!(stored.next_attempt_at, Some(at(60)));

    assert!(claim(&*s.store, 59, 30, 10).await.is_empty());
    let again = claim(&*s.store, 60, 30, 10).await;
    assert_eq!(ids(&again), ["evt_retry"]);
    assert_eq!(again[0].event.attempts, 2);
    let dead = s.store.get("evt_dead").await.unwrap().unwrap();
    assert_eq!(dead.next_attempt_at, None);
    assert_eq!(dead.last_error.as_deref(), Some("no such plan"));
}

async fn check_fencing(s: &Subject) {
    record(s, &event("evt_1", "x", 0, 0)).await;
    let stale = claim(&*s.store, 0, 30, 10).await.remove(0);
    let current = claim(&*s.other, 30, 30, 10).await.remove(0);
    assert!(
        !s.store
            .mark_processed("evt_1", stale.claim, at(31))
            .await
            .unwrap()
    );
    assert!(
        !s.store
            .mark_failed("evt_1", stale.claim, "late", None)
            .await
            .unwrap()
    );
    assert_eq!(
        s.store.get("evt_1").await.unwrap().unwrap().status,
        WebhookStatus::Processing
    );
    // A replay voids the current claim too.
    assert!(s.store.replay("evt_1", at(40), &replayed()).await.unwrap());
    assert!(
        !s.other
            .mark_processed("evt_1", current.claim, at(41))
            .await
            .unwrap()
    );
    assert_eq!(
        s.store.get("evt_1").await.unwrap().unwrap().status,
        WebhookStatus::Pending
    );
}

async fn check_replay(s: &Subject) {
    record(s, &event("evt_1", "x", 0, 0)).await;
    let c = claim(&*s.store, 0, 30, 10).await.remove(0);
    s.store
        .mark_processed("evt_1", c.claim, at(1))
        .await
        .unwrap();

    assert!(s.store.replay("evt_1", at(100), &replayed()).await.unwrap());
    let stored = s.store.get("evt_1").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Pending);
    assert_eq!(stored.next_attempt_at, Some(at(100)));
    assert_eq!(stored.attempts, 1);
    let again = claim(&*s.other, 100, 1000, 10).await;
    assert_eq!(ids(&again), ["evt_1"]);
    assert_eq!(again[0].event.attempts, 2);

    // An unreadable event can be replayed once the server reads it.
    let mut bad = event("evt_bad", "x", 0, 0);
    bad.unreadable = Some("bad shape".into());
    record(s, &bad).await;
    assert!(
        s.store
            .replay("evt_bad", at(200), &replayed())
            .await
            .unwrap()
    );
    assert_eq!(ids(&claim(&*s.store, 200, 30, 10).await), ["evt_bad"]);

    assert!(!s.store.replay("evt_404", at(1), &replayed()).await.unwrap());
}

async fn check_list(s: &Subject) {
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            "invoice.paid"
        } else {
            "invoice.payment_failed"
        };
        record(s, &event(&format!("evt_{i}"), kind, 0, i)).await;
    }
    let c = claim(&*s.store, 10, 30, 1).await.remove(0);
    s.store
        .mark_processed(&c.event.id, c.claim, at(11))
        .await
        .unwrap();

    let all = s
        .store
        .list(&WebhookEventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<&str> = all.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(order, ["evt_4", "evt_3", "evt_2", "evt_1", "evt_0"]);
    assert_eq!(all.next, None);

    let paid = s
        .store
        .list(&WebhookEventQuery {
            kind: Some("invoice.paid".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<&str> = paid.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(order, ["evt_4", "evt_2", "evt_0"]);

    let processed = s
        .store
        .list(&WebhookEventQuery {
            status: Some(WebhookStatus::Processed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(processed.items.len(), 1);
    assert_eq!(processed.items[0].id, c.event.id);

    // Pages of two, following the cursor.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .store
            .list(&WebhookEventQuery {
                limit: 2,
                before: before.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["evt_4", "evt_3", "evt_2", "evt_1", "evt_0"]);
}

async fn check_release(s: &Subject) {
    record(s, &event("evt_1", "x", 0, 0)).await;
    let c = claim(&*s.store, 0, 1000, 10).await.remove(0);
    assert!(s.store.release("evt_1", c.claim, at(5)).await.unwrap());
    let stored = s.store.get("evt_1").await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Pending);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.next_attempt_at, Some(at(5)));
    // Released once; the old claim can't release or settle it again.
    assert!(!s.store.release("evt_1", c.claim, at(6)).await.unwrap());
    let again = claim(&*s.other, 5, 1000, 10).await;
    assert_eq!(again[0].event.attempts, 1);
    assert!(!s.store.release("evt_1", c.claim, at(7)).await.unwrap());
    assert!(
        !s.store
            .mark_processed("evt_1", c.claim, at(7))
            .await
            .unwrap()
    );
}
