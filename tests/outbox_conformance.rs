//! The conformance suite of [`Outbox`]: every check is written once, as an
//! `async fn check_*(subject: &Subject)`, and run against each backend:
//! SQLite on a temporary file and PostgreSQL on a fresh database of the
//! throwaway server from `scripts/services.sh`.
//!
//! A subject has two store instances on one database, as two nodes (or
//! two processes sharing a SQLite file) would, and a raw connection to
//! look at what the port never shows: a message's template data.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::future::join_all;
use seatwarden::store::postgres::PostgresStore;
use seatwarden::store::sqlite::SqliteStore;
use seatwarden_actors::ports::{
    MailFilter, MailKind, MailStatus, NewMail, Outbox, QueuedMail, StoreError,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Pool size of each PostgreSQL store under test.
const PG_CONNECTIONS: u32 = 4;

// ---------------------------------------------------------------------------
// Backends

/// What a check reads the database with, past the port.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The outbox under test: two instances on one database, and whatever
/// must live as long as they do.
struct Subject {
    outbox: Arc<dyn Outbox>,
    /// Another node's (or process's) view of the same database.
    other: Arc<dyn Outbox>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

impl Subject {
    /// A message's stored template data.
    async fn data(&self, id: Uuid) -> Value {
        match &self.raw {
            Raw::Sqlite(pool) => {
                let text: String = sqlx::query_scalar("SELECT data FROM outbox WHERE id = ?1")
                    .bind(id.hyphenated().to_string())
                    .fetch_one(pool)
                    .await
                    .expect("read data");
                serde_json::from_str(&text).expect("data is JSON")
            }
            Raw::Postgres(pool) => {
                sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
                    "SELECT data FROM outbox WHERE id = $1",
                )
                .bind(id)
                .fetch_one(pool)
                .await
                .expect("read data")
                .0
            }
        }
    }
}

async fn sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/seatwarden.db", dir.path().display());
    let outbox = SqliteStore::connect(&url).await.expect("open SQLite file");
    let other = SqliteStore::connect(&url).await.expect("open SQLite again");
    let raw = sqlx::SqlitePool::connect(&url).await.expect("raw SQLite");
    Subject {
        outbox: Arc::new(outbox),
        other: Arc::new(other),
        raw: Raw::Sqlite(raw),
        _dir: Some(dir),
    }
}

async fn postgres() -> Subject {
    let url = support::services::fresh_postgres_db().await;
    let outbox = PostgresStore::connect(&url, PG_CONNECTIONS)
        .await
        .expect("connect to the test PostgreSQL");
    let other = PostgresStore::connect(&url, PG_CONNECTIONS)
        .await
        .expect("connect again");
    let raw = sqlx::PgPool::connect(&url).await.expect("raw PostgreSQL");
    Subject {
        outbox: Arc::new(outbox),
        other: Arc::new(other),
        raw: Raw::Postgres(raw),
        _dir: None,
    }
}

subject_conformance! {
    an_enqueued_message_is_claimed_with_its_data_as_attempt_one => check_claim,
    a_duplicate_message_id_is_a_conflict => check_duplicate,
    only_due_messages_are_claimed_oldest_due_first_up_to_the_limit => check_due_and_limit,
    a_claimed_message_is_hidden_until_its_claim_expires_then_claimable_again => check_expired_claim,
    two_concurrent_claimers_never_get_the_same_message => check_concurrent_claims,
    marking_a_message_sent_settles_it_and_clears_its_data => check_sent,
    a_retry_records_the_error_and_makes_the_message_due_at_its_time => check_retry,
    failing_a_message_keeps_its_error_and_clears_its_data => check_failed,
    a_released_message_is_due_at_once_and_its_attempt_is_given_back => check_release,
    a_stale_claim_can_neither_settle_nor_release_a_message_claimed_again => check_fencing,
    the_email_log_lists_newest_first_with_filters_and_pages => check_email_log,
    the_backlog_counts_pending_mail_claimed_or_not_and_dates_the_oldest => check_backlog,
}

// ---------------------------------------------------------------------------
// Fixtures

/// A fixed instant with a microsecond part, plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(secs)
}

/// A verification message to `to`, created at `at(created)`, with a token.
fn mail(to: &str, created: i64) -> NewMail {
    NewMail {
        created_at: at(created),
        ..NewMail::new(
            MailKind::Verify,
            to,
            json!({"full_name": "Ada", "token": format!("secret-{to}")}),
        )
    }
}

async fn enqueue(s: &Subject, m: &NewMail) {
    s.outbox.enqueue(m).await.expect("enqueue");
}

async fn claim(outbox: &dyn Outbox, now: i64, lease: i64, limit: u32) -> Vec<QueuedMail> {
    outbox
        .claim(at(now), at(now + lease), limit)
        .await
        .expect("claim")
}

async fn log_entry(s: &Subject, id: Uuid) -> seatwarden_actors::ports::MailRecord {
    let page = s
        .outbox
        .email_log(&MailFilter {
            limit: 1000,
            ..MailFilter::default()
        })
        .await
        .expect("email log");
    page.entries
        .into_iter()
        .find(|e| e.id == id)
        .expect("the message is in the log")
}

// ---------------------------------------------------------------------------
// Checks

async fn check_claim(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let claimed = claim(s.outbox.as_ref(), 1, 60, 10).await;
    assert_eq!(claimed.len(), 1);
    let q = &claimed[0];
    assert_eq!(q.id, m.id);
    assert_eq!(q.kind, MailKind::Verify);
    assert_eq!(q.to, "ada@example.com");
    assert_eq!(q.data, m.data);
    assert_eq!(q.attempt, 1);
    assert_eq!(q.created_at, m.created_at);
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.status, MailStatus::Pending);
    assert_eq!(entry.attempts, 1);
    assert_eq!(
        entry.next_attempt_at,
        at(61),
        "due again when the claim ends"
    );
}

async fn check_duplicate(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    assert!(matches!(
        s.outbox.enqueue(&m).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn check_due_and_limit(s: &Subject) {
    let first = mail("first@example.com", 0);
    let second = mail("second@example.com", 1);
    let later = mail("later@example.com", 50);
    for m in [&later, &second, &first] {
        enqueue(s, m).await;
    }
    let claimed = claim(s.outbox.as_ref(), 10, 60, 1).await;
    assert_eq!(claimed.iter().map(|q| q.id).collect::<Vec<_>>(), [first.id]);
    let claimed = claim(s.outbox.as_ref(), 10, 60, 10).await;
    assert_eq!(
        claimed.iter().map(|q| q.id).collect::<Vec<_>>(),
        [second.id],
        "the message due at 50 s is not due at 10 s"
    );
}

async fn check_expired_claim(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let first = claim(s.outbox.as_ref(), 1, 30, 10).await;
    assert_eq!(first.len(), 1);
    assert!(claim(s.other.as_ref(), 2, 30, 10).await.is_empty());
    assert!(claim(s.other.as_ref(), 30, 30, 10).await.is_empty());
    // The first claimer died: at the end of its claim another takes over.
    let second = claim(s.other.as_ref(), 31, 30, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, m.id);
    assert_eq!(second[0].attempt, 2, "the lost attempt counts");
    assert_ne!(second[0].claim, first[0].claim);
    assert_eq!(second[0].data, m.data, "the data stays until it is settled");
}

async fn check_concurrent_claims(s: &Subject) {
    const MESSAGES: usize = 60;
    let mut all = HashSet::new();
    for i in 0..MESSAGES {
        let m = mail(&format!("user{i}@example.com"), i as i64 % 5);
        all.insert(m.id);
        enqueue(s, &m).await;
    }
    // Eight claimers, alternating between the two instances, each claiming
    // small batches until nothing is left.
    let claimers = (0..8).map(|n| {
        let outbox = if n % 2 == 0 {
            s.outbox.clone()
        } else {
            s.other.clone()
        };
        async move {
            let mut got = Vec::new();
            loop {
                let batch = claim(outbox.as_ref(), 10, 60, 3).await;
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|q| q.id));
            }
        }
    });
    let claimed: Vec<Uuid> = join_all(claimers).await.into_iter().flatten().collect();
    let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), distinct.len(), "a message was claimed twice");
    assert_eq!(distinct, all, "every message was claimed");
}

async fn check_backlog(s: &Subject) {
    use seatwarden_actors::ports::OutboxBacklog;
    assert_eq!(s.outbox.backlog().await.unwrap(), OutboxBacklog::default());
    let (first, second, third) = (
        mail("a@example.com", 5),
        mail("b@example.com", 7),
        mail("c@example.com", 9),
    );
    for m in [&second, &first, &third] {
        enqueue(s, m).await;
    }
    let backlog = s.outbox.backlog().await.unwrap();
    assert_eq!(backlog.pending, 3);
    assert_eq!(backlog.oldest, Some(at(5)));

    // Claimed is still pending; sent and given up are not.
    let mut claimed = claim(s.outbox.as_ref(), 10, 60, 10).await;
    assert_eq!(s.outbox.backlog().await.unwrap().pending, 3);
    claimed.sort_by_key(|q| q.created_at);
    let (a, b) = (&claimed[0], &claimed[1]);
    assert!(s.outbox.mark_sent(a.id, a.claim, at(11)).await.unwrap());
    assert!(
        s.outbox
            .mark_failed(b.id, b.claim, "refused", at(11))
            .await
            .unwrap()
    );
    let backlog = s.outbox.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1);
    assert_eq!(backlog.oldest, Some(at(9)));
}

async fn check_sent(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let q = claim(s.outbox.as_ref(), 1, 60, 10).await.remove(0);
    assert!(s.outbox.mark_sent(q.id, q.claim, at(2)).await.unwrap());
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.status, MailStatus::Sent);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.sent_at, Some(at(2)));
    assert_eq!(entry.kind, MailKind::Verify);
    assert_eq!(entry.recipient, "ada@example.com");
    assert_eq!(s.data(m.id).await, json!({}), "the token is gone");
    assert!(
        claim(s.outbox.as_ref(), 1000, 60, 10).await.is_empty(),
        "a sent message is never claimed again"
    );
    assert!(
        !s.outbox.mark_sent(q.id, q.claim, at(3)).await.unwrap(),
        "settling twice changes nothing"
    );
}

async fn check_retry(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let q = claim(s.outbox.as_ref(), 1, 60, 10).await.remove(0);
    assert!(
        s.outbox
            .schedule_retry(q.id, q.claim, "connection refused", at(20))
            .await
            .unwrap()
    );
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.status, MailStatus::Pending);
    assert_eq!(entry.last_error.as_deref(), Some("connection refused"));
    assert_eq!(entry.next_attempt_at, at(20));
    assert!(claim(s.outbox.as_ref(), 19, 60, 10).await.is_empty());
    let again = claim(s.other.as_ref(), 20, 60, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].data, m.data, "a retry keeps the data");
}

async fn check_failed(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let q = claim(s.outbox.as_ref(), 1, 60, 10).await.remove(0);
    assert!(
        s.outbox
            .mark_failed(q.id, q.claim, "550 no such user", at(2))
            .await
            .unwrap()
    );
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.status, MailStatus::Failed);
    assert_eq!(entry.last_error.as_deref(), Some("550 no such user"));
    assert_eq!(entry.sent_at, None);
    assert_eq!(s.data(m.id).await, json!({}), "the token is gone");
    assert!(claim(s.outbox.as_ref(), 1000, 60, 10).await.is_empty());
}

async fn check_release(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let q = claim(s.outbox.as_ref(), 1, 60, 10).await.remove(0);
    assert!(s.outbox.release(q.id, q.claim, at(2)).await.unwrap());
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.attempts, 0, "an untried message costs no attempt");
    let again = claim(s.other.as_ref(), 2, 60, 10).await;
    assert_eq!(again.len(), 1, "due at once, not when the claim would end");
    assert_eq!(again[0].attempt, 1);
}

async fn check_fencing(s: &Subject) {
    let m = mail("ada@example.com", 0);
    enqueue(s, &m).await;
    let stale = claim(s.outbox.as_ref(), 1, 10, 10).await.remove(0);
    let fresh = claim(s.other.as_ref(), 11, 60, 10).await.remove(0);
    let o = s.outbox.as_ref();
    assert!(!o.mark_sent(stale.id, stale.claim, at(12)).await.unwrap());
    assert!(
        !o.schedule_retry(stale.id, stale.claim, "x", at(99))
            .await
            .unwrap()
    );
    assert!(
        !o.mark_failed(stale.id, stale.claim, "x", at(12))
            .await
            .unwrap()
    );
    assert!(!o.release(stale.id, stale.claim, at(12)).await.unwrap());
    let entry = log_entry(s, m.id).await;
    assert_eq!(entry.status, MailStatus::Pending);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_error, None);
    assert!(
        s.other
            .mark_sent(fresh.id, fresh.claim, at(13))
            .await
            .unwrap()
    );
    // A release after the claim was settled is refused too: the message is
    // not resurrected.
    assert!(!o.release(fresh.id, fresh.claim, at(14)).await.unwrap());
    assert_eq!(log_entry(s, m.id).await.status, MailStatus::Sent);
}

async fn check_email_log(s: &Subject) {
    // Five messages, one a second; two to bob, one of them an invitation.
    let mut ms = Vec::new();
    for (i, to) in [
        "ann@x.test",
        "bob@x.test",
        "cy@x.test",
        "bob@x.test",
        "di@x.test",
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = mail(to, i as i64);
        if i == 3 {
            m.kind = MailKind::Invitation;
        }
        enqueue(s, &m).await;
        ms.push(m);
    }
    // Settle the oldest as sent.
    let q = claim(s.outbox.as_ref(), 0, 60, 1).await.remove(0);
    assert_eq!(q.id, ms[0].id);
    s.outbox.mark_sent(q.id, q.claim, at(1)).await.unwrap();

    let ids = |entries: &[seatwarden_actors::ports::MailRecord]| {
        entries.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let first = s
        .outbox
        .email_log(&MailFilter {
            limit: 2,
            ..MailFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first.entries), [ms[4].id, ms[3].id], "newest first");
    let cursor = first.next.expect("more pages");
    // The cursor survives its text form, as an API would hand it out.
    let cursor = cursor.to_string().parse().expect("cursor round-trips");
    let second = s
        .outbox
        .email_log(&MailFilter {
            limit: 2,
            after: Some(cursor),
            ..MailFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&second.entries), [ms[2].id, ms[1].id]);
    let last = s
        .outbox
        .email_log(&MailFilter {
            limit: 2,
            after: second.next,
            ..MailFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&last.entries), [ms[0].id]);
    assert_eq!(last.next, None, "the last page says so");

    let filtered = |f: MailFilter| async move {
        ids(&s
            .outbox
            .email_log(&MailFilter { limit: 100, ..f })
            .await
            .unwrap()
            .entries)
    };
    assert_eq!(
        filtered(MailFilter {
            recipient: Some("bob@x.test".into()),
            ..MailFilter::default()
        })
        .await,
        [ms[3].id, ms[1].id]
    );
    assert_eq!(
        filtered(MailFilter {
            kind: Some(MailKind::Invitation),
            ..MailFilter::default()
        })
        .await,
        [ms[3].id]
    );
    assert_eq!(
        filtered(MailFilter {
            status: Some(MailStatus::Sent),
            ..MailFilter::default()
        })
        .await,
        [ms[0].id]
    );
    assert_eq!(
        filtered(MailFilter {
            status: Some(MailStatus::Pending),
            recipient: Some("bob@x.test".into()),
            kind: Some(MailKind::Verify),
            ..MailFilter::default()
        })
        .await,
        [ms[1].id]
    );
}
