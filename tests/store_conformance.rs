//! The conformance suite of [`Store`]: every check is written once, as an
//! `async fn check_*(store: &dyn Store)`, and run against each backend:
//! SQLite on a temporary file, SQLite in memory, and PostgreSQL on a fresh
//! database of the throwaway server from `scripts/services.sh`.
//!
//! Every test gets its own empty database, so checks may assert on global
//! answers such as `orgs_with_open_sessions`.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::future::join_all;
use seatwarden::store::postgres::PostgresStore;
use seatwarden::store::sqlite::SqliteStore;
use seatwarden_actors::domain::{
    AuditEntry, AuditEvent, ClientInfo, EndReason, License, LicenseId, LicenseStatus,
    LicenseUpdate, NewLicense, Org, OrgId, SessionId, SessionRecord,
};
use seatwarden_actors::ports::{
    EndOutcome, LicenseStore, Retirement, Store, StoreError, StoredKey,
};
use serde_json::json;

use support::backends::{postgres, sqlite_file, sqlite_memory};

/// Generates, for each backend, one `#[tokio::test]` per check, named by
/// the sentence on the left: `sqlite::<sentence>`, `sqlite_memory::<sentence>`
/// and `postgres::<sentence>`.
macro_rules! conformance {
    ($($name:ident => $check:ident,)*) => {
        conformance!(@backend sqlite, sqlite_file, $($name => $check,)*);
        conformance!(@backend sqlite_memory, sqlite_memory, $($name => $check,)*);
        conformance!(@backend postgres, postgres, $($name => $check,)*);
    };
    (@backend $backend:ident, $open:ident, $($name:ident => $check:ident,)*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = super::$open().await;
                    super::$check(&*subject.store).await;
                }
            )*
        }
    };
}

conformance! {
    answers_a_ping => check_ping,
    a_created_org_can_be_read_back => check_create_org,
    an_unknown_org_reads_as_none => check_unknown_org,
    a_created_license_is_active_and_can_be_read_by_id_and_by_key_hash => check_create_license,
    licenses_of_an_org_are_listed_oldest_first => check_licenses_for_org,
    updating_a_license_changes_only_the_given_fields => check_update_license,
    a_plan_change_gives_a_license_its_tier_and_features => check_update_tier_and_features,
    a_license_for_an_unknown_org_is_not_found => check_license_for_unknown_org,
    a_second_license_with_the_same_key_hash_is_a_conflict => check_duplicate_key_hash,
    unknown_licenses_and_sessions_read_as_none => check_unknown_license_and_session,
    starting_a_session_stores_it_with_its_audit_entry => check_start_session,
    starting_a_session_twice_is_a_conflict_and_writes_no_second_audit_entry => check_duplicate_session,
    a_session_of_an_unknown_license_is_not_found_and_writes_no_audit_entry => check_session_for_unknown_license,
    the_key_set_keeps_one_active_key_and_retires_only_inactive_ones => check_key_set,
    of_racing_rotations_exactly_one_active_key_remains => check_racing_rotations,
    resealing_replaces_only_the_sealed_keys_and_all_or_nothing => check_reseal,
    adopting_an_unrecorded_session_records_it_once_with_one_audit_entry => check_adopt_session,
    adopting_a_recorded_session_leaves_it_as_it_is => check_adopt_recorded,
    adopting_on_a_license_that_is_not_active_writes_nothing => check_adopt_refused,
    of_a_start_and_an_adoption_racing_for_one_session_exactly_one_records_it => check_adopt_races_start,
    fifty_concurrent_session_starts_all_succeed => check_concurrent_starts,
    heartbeats_move_the_heartbeat_and_the_lease_forward => check_heartbeat_moves_forward,
    a_late_heartbeat_never_moves_a_lease_back => check_late_heartbeat,
    heartbeats_for_ended_or_unknown_sessions_are_ignored => check_heartbeat_ignores_ended,
    ending_a_session_records_when_and_why_with_one_audit_entry => check_end_session,
    ending_a_session_twice_keeps_the_first_ended_at => check_end_twice,
    ending_an_unknown_session_returns_none_and_writes_nothing => check_end_unknown,
    of_ten_racing_ends_of_one_session_exactly_one_ends_it => check_racing_ends,
    open_sessions_are_those_of_the_org_still_open_oldest_first => check_open_sessions,
    orgs_with_open_sessions_lists_each_such_org_once => check_orgs_with_open_sessions,
    sessions_of_a_license_are_listed_newest_first_open_and_ended => check_sessions_for_license,
    audit_entries_come_back_in_the_order_they_were_written => check_audit_order,
    features_metadata_and_client_info_round_trip => check_json_round_trip,
    timestamps_round_trip_to_the_microsecond => check_timestamp_precision,
    a_sweep_claim_returns_due_open_sessions_once_until_the_claim_passes => check_claim_sweep,
    concurrent_sweep_claims_never_return_one_session_twice => check_concurrent_claims,
    every_license_change_takes_a_higher_revision => check_license_revisions,
    suspending_a_license_ends_its_open_sessions_as_revoked => check_suspension_revokes,
    a_session_of_a_license_that_is_not_active_is_refused_and_writes_nothing => check_start_on_suspended,
    the_offline_policy_round_trips_and_can_go_back_to_the_default => check_offline_policy,
    the_borrowing_policy_round_trips => check_borrow_policy,
    a_borrowed_session_is_counted_until_its_end_and_its_lease_only_moves_forward => check_borrowed_sessions,
    ended_among_and_open_sessions_of_license_tell_ended_from_open => check_ended_among,
}

// ---------------------------------------------------------------------------
// Fixtures

/// A fixed instant with a millisecond part, plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap()
        + Duration::milliseconds(535)
        + Duration::seconds(secs)
}

fn new_license(org: OrgId, seats: u32) -> NewLicense {
    NewLicense {
        org_id: org,
        key_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        key_hint: "…WXYZ".to_owned(),
        seats,
        tier: "pro".to_owned(),
        features: vec!["export".to_owned(), "gpu".to_owned()],
        expires_at: Some(at(86_400)),
        offline_grace_secs: None,
        offline_overdraft: 0,
        max_machines: None,
        requires_user: false,
        max_borrow_hours: 0,
    }
}

async fn org_with_license(store: &dyn Store) -> (Org, License) {
    let org = store.create_org("Acme").await.expect("create org");
    let license = store
        .create_license(new_license(org.id, 5))
        .await
        .expect("create license");
    (org, license)
}

fn session(license: &License, hardware_id: &str, started: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        license_id: license.id,
        org_id: license.org_id,
        hardware_id: hardware_id.to_owned(),
        started_at: started,
        last_heartbeat_at: started,
        lease_expires_at: started + Duration::seconds(60),
        ended_at: None,
        end_reason: None,
        client: ClientInfo {
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("seatwarden-client/1.2".to_owned()),
        },
        metadata: Some(json!({"app": "cad", "version": "4.2.0"})),
        borrowed_until: None,
    }
}

fn acquired(s: &SessionRecord) -> AuditEntry {
    AuditEntry {
        at: s.started_at,
        event: AuditEvent::LicenseAcquired,
        org_id: s.org_id,
        license_id: s.license_id,
        session_id: Some(s.id),
        hardware_id: Some(s.hardware_id.clone()),
        client: s.client.clone(),
        detail: None,
        actor_id: None,
    }
}

fn released(s: &SessionRecord, when: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        at: when,
        event: AuditEvent::LicenseReleased,
        detail: Some("client_release".to_owned()),
        ..acquired(s)
    }
}

async fn start(store: &dyn Store, s: &SessionRecord) {
    store
        .start_session(s, &acquired(s))
        .await
        .expect("start session");
}

async fn get_session(store: &dyn Store, id: SessionId) -> SessionRecord {
    store
        .session(id)
        .await
        .expect("read session")
        .expect("session exists")
}

/// The audit entries of `license` about session `id`.
async fn audit_of(store: &dyn Store, license: LicenseId, id: SessionId) -> Vec<AuditEntry> {
    store
        .audit_for_license(license)
        .await
        .expect("read audit")
        .into_iter()
        .filter(|e| e.session_id == Some(id))
        .collect()
}

fn ids(sessions: &[SessionRecord]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

// ---------------------------------------------------------------------------
// Organizations and licenses

async fn check_ping(store: &dyn Store) {
    store.ping().await.expect("ping");
}

async fn check_create_org(store: &dyn Store) {
    let before = Utc::now() - Duration::seconds(1);
    let org = store.create_org("Acme Corp").await.unwrap();
    assert_eq!(org.name, "Acme Corp");
    assert!(org.created_at >= before && org.created_at <= Utc::now());
    assert_eq!(store.org(org.id).await.unwrap(), Some(org.clone()));

    let other = store.create_org("Acme Corp").await.unwrap();
    assert_ne!(other.id, org.id, "each org gets a fresh id");
}

async fn check_unknown_org(store: &dyn Store) {
    assert_eq!(store.org(OrgId::new()).await.unwrap(), None);
}

async fn check_create_license(store: &dyn Store) {
    let org = store.create_org("Acme").await.unwrap();
    let new = new_license(org.id, 3);
    let license = store.create_license(new.clone()).await.unwrap();

    assert_eq!(license.org_id, org.id);
    assert_eq!(license.key_hint, new.key_hint);
    assert_eq!(license.seats, 3);
    assert_eq!(license.tier, "pro");
    assert_eq!(license.features, new.features);
    assert_eq!(license.status, LicenseStatus::Active);
    assert_eq!(license.expires_at, new.expires_at);

    assert_eq!(
        store.license(license.id).await.unwrap(),
        Some(license.clone())
    );
    assert_eq!(
        store.license_by_key_hash(&new.key_hash).await.unwrap(),
        Some(license.clone())
    );
    assert_eq!(
        store.license_by_key_hash("no-such-hash").await.unwrap(),
        None
    );

    let perpetual = store
        .create_license(NewLicense {
            expires_at: None,
            features: vec![],
            ..new_license(org.id, 1)
        })
        .await
        .unwrap();
    let read = store.license(perpetual.id).await.unwrap().unwrap();
    assert_eq!(read.expires_at, None);
    assert_eq!(read.features, Vec::<String>::new());
}

async fn check_update_tier_and_features(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let changed = store
        .update_license(
            license.id,
            &LicenseUpdate {
                seats: Some(3),
                tier: Some("starter".into()),
                features: Some(vec!["email support".into()]),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            changed.seats,
            changed.tier.as_str(),
            changed.features.clone()
        ),
        (3, "starter", vec!["email support".to_owned()])
    );
    assert_eq!(changed.status, license.status);
    assert_eq!(
        store.license(license.id).await.unwrap(),
        Some(changed.clone())
    );
    // Left out, they stay; an empty list empties.
    let kept = store
        .update_license(
            license.id,
            &LicenseUpdate {
                seats: Some(4),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kept.tier, kept.features), (changed.tier, changed.features));
    let emptied = store
        .update_license(
            license.id,
            &LicenseUpdate {
                features: Some(vec![]),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(emptied.features.is_empty());
}

async fn check_update_license(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;

    let suspended = store
        .update_license(
            license.id,
            &LicenseUpdate {
                status: Some(LicenseStatus::Suspended),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suspended.status, LicenseStatus::Suspended);
    assert_eq!(suspended.seats, license.seats);
    assert_eq!(suspended.expires_at, license.expires_at);

    let reseated = store
        .update_license(
            license.id,
            &LicenseUpdate {
                seats: Some(1),
                expires_at: Some(None),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reseated.seats, 1);
    assert_eq!(reseated.expires_at, None);
    assert_eq!(reseated.status, LicenseStatus::Suspended);
    assert_eq!(store.license(license.id).await.unwrap(), Some(reseated));

    let dated = store
        .update_license(
            license.id,
            &LicenseUpdate {
                expires_at: Some(Some(at(2_000_000_000))),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dated.expires_at, Some(at(2_000_000_000)));

    let zero = LicenseUpdate {
        seats: Some(0),
        ..LicenseUpdate::default()
    };
    assert!(store.update_license(license.id, &zero).await.is_err());
    let unknown = store
        .update_license(LicenseId::new(), &LicenseUpdate::default())
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

async fn check_licenses_for_org(store: &dyn Store) {
    let org = store.create_org("Acme").await.unwrap();
    let other = store.create_org("Other").await.unwrap();
    let mut created = Vec::new();
    for seats in 1..=3 {
        created.push(
            store
                .create_license(new_license(org.id, seats))
                .await
                .unwrap(),
        );
        store
            .create_license(new_license(other.id, seats))
            .await
            .unwrap();
    }
    assert_eq!(store.licenses_for_org(org.id).await.unwrap(), created);
    assert!(
        store
            .licenses_for_org(OrgId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn check_license_for_unknown_org(store: &dyn Store) {
    let err = store
        .create_license(new_license(OrgId::new(), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn check_duplicate_key_hash(store: &dyn Store) {
    let org = store.create_org("Acme").await.unwrap();
    let first = new_license(org.id, 1);
    let original = store.create_license(first.clone()).await.unwrap();
    let err = store
        .create_license(NewLicense {
            seats: 9,
            ..first.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.license_by_key_hash(&first.key_hash).await.unwrap(),
        Some(original)
    );
    assert_eq!(store.licenses_for_org(org.id).await.unwrap().len(), 1);
}

async fn check_unknown_license_and_session(store: &dyn Store) {
    assert_eq!(store.license(LicenseId::new()).await.unwrap(), None);
    assert_eq!(store.session(SessionId::new()).await.unwrap(), None);
    assert!(
        store
            .sessions_for_license(LicenseId::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .audit_for_license(LicenseId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// Starting sessions

async fn check_start_session(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    store.start_session(&s, &acquired(&s)).await.unwrap();

    assert_eq!(get_session(store, s.id).await, s);
    assert!(get_session(store, s.id).await.is_open());
    assert_eq!(
        store.audit_for_license(license.id).await.unwrap(),
        vec![acquired(&s)]
    );
}

async fn check_duplicate_session(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;

    let again = SessionRecord {
        hardware_id: "hw-2".to_owned(),
        ..s.clone()
    };
    let err = store
        .start_session(&again, &acquired(&again))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(get_session(store, s.id).await, s, "the first one stays");
    assert_eq!(audit_of(store, license.id, s.id).await, vec![acquired(&s)]);
}

fn stored_key(kid: &str, created: DateTime<Utc>) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        algorithm: "RS256".into(),
        public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
        sealed_private: vec![0, 1, 2, 255],
        created_at: created,
        active: false,
        retired_at: None,
    }
}

async fn check_key_set(store: &dyn Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    assert!(
        store
            .add_signing_key(&stored_key("k1", at(0)), true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_signing_key(&stored_key("k1", at(1)), true)
            .await
            .unwrap(),
        "same kid"
    );
    assert!(
        store
            .add_signing_key(&stored_key("k2", at(5)), true)
            .await
            .unwrap()
    );
    let keys = store.signing_keys().await.unwrap();
    let shape: Vec<(&str, bool)> = keys.iter().map(|k| (k.kid.as_str(), k.active)).collect();
    assert_eq!(shape, vec![("k1", false), ("k2", true)], "oldest first");
    assert_eq!(keys[0].sealed_private, vec![0, 1, 2, 255]);
    assert_eq!(keys[0].created_at, at(0));

    assert_eq!(
        store.retire_signing_key("k2", at(9)).await.unwrap(),
        Retirement::Active
    );
    assert_eq!(
        store.retire_signing_key("nope", at(9)).await.unwrap(),
        Retirement::NotFound
    );
    assert_eq!(
        store.retire_signing_key("k1", at(9)).await.unwrap(),
        Retirement::Retired
    );
    assert_eq!(
        store.retire_signing_key("k1", at(10)).await.unwrap(),
        Retirement::AlreadyRetired
    );
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0].retired_at, Some(at(9)));
    assert_eq!(keys[1].retired_at, None);
    // An added key that is not activated leaves the active one alone.
    assert!(
        store
            .add_signing_key(&stored_key("k3", at(11)), false)
            .await
            .unwrap()
    );
    let active: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.active)
        .map(|k| k.kid)
        .collect();
    assert_eq!(active, vec!["k2".to_owned()]);
}

async fn check_reseal(store: &dyn Store) {
    for (i, kid) in ["k-a", "k-b"].into_iter().enumerate() {
        let key = stored_key(kid, at(i as i64));
        assert!(store.add_signing_key(&key, i == 1).await.unwrap());
    }
    let before = store.signing_keys().await.unwrap();

    // One unknown kid: nothing changes.
    let err = store
        .reseal_signing_keys(&[("k-a".into(), vec![9]), ("k-nope".into(), vec![9])])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.signing_keys().await.unwrap(), before);

    store
        .reseal_signing_keys(&[("k-a".into(), vec![7, 7]), ("k-b".into(), vec![8])])
        .await
        .unwrap();
    let after = store.signing_keys().await.unwrap();
    let expected: Vec<StoredKey> = before
        .iter()
        .map(|k| StoredKey {
            sealed_private: if k.kid == "k-a" { vec![7, 7] } else { vec![8] },
            ..k.clone()
        })
        .collect();
    assert_eq!(after, expected, "only the sealed halves changed");
}

async fn check_racing_rotations(store: &dyn Store) {
    let rotations = (0..8).map(|i| {
        let key = stored_key(&format!("race-{i}"), at(i));
        async move { store.add_signing_key(&key, true).await }
    });
    let results = futures::future::join_all(rotations).await;
    // Every rotation lands, one after another; the last one is active.
    assert!(results.iter().all(|r| matches!(r, Ok(true))), "{results:?}");
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 8, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.active).count(), 1, "{keys:?}");

    // Nodes starting at once seed an empty set with the same key: one
    // adds it, the others are told it is there. None fails.
    let seeds = (0..8).map(|_| {
        let key = stored_key("race-seed", at(20));
        async move { store.add_signing_key(&key, true).await }
    });
    let results = futures::future::join_all(seeds).await;
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(true))).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let keys = store.signing_keys().await.unwrap();
    let active: Vec<_> = keys.iter().filter(|k| k.active).collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    assert_eq!(active[0].kid, "race-seed");
}

async fn check_adopt_session(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    assert!(store.adopt_session(&s, &acquired(&s)).await.unwrap());
    assert_eq!(get_session(store, s.id).await, s);
    assert_eq!(audit_of(store, license.id, s.id).await, vec![acquired(&s)]);

    // Adopting again, as every later renewal does, changes nothing.
    let later = SessionRecord {
        started_at: at(5),
        lease_expires_at: at(500),
        ..s.clone()
    };
    assert!(
        store
            .adopt_session(&later, &acquired(&later))
            .await
            .unwrap()
    );
    assert_eq!(get_session(store, s.id).await, s);
    assert_eq!(audit_of(store, license.id, s.id).await, vec![acquired(&s)]);
}

async fn check_adopt_recorded(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;
    store
        .end_session(s.id, at(10), EndReason::Released, &released(&s, at(10)))
        .await
        .unwrap();
    let before = get_session(store, s.id).await;
    let again = SessionRecord {
        started_at: at(20),
        ..s.clone()
    };
    assert!(
        store
            .adopt_session(&again, &acquired(&again))
            .await
            .unwrap()
    );
    assert_eq!(
        get_session(store, s.id).await,
        before,
        "an ended record stays ended"
    );
    assert_eq!(audit_of(store, license.id, s.id).await.len(), 2);
}

async fn check_adopt_refused(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let suspend = LicenseUpdate {
        status: Some(LicenseStatus::Suspended),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &suspend).await.unwrap();
    let s = session(&license, "hw-1", at(0));
    assert!(!store.adopt_session(&s, &acquired(&s)).await.unwrap());
    assert_eq!(store.session(s.id).await.unwrap(), None);
    assert!(audit_of(store, license.id, s.id).await.is_empty());

    let ghost = License {
        id: LicenseId::new(),
        ..license
    };
    let s = session(&ghost, "hw-1", at(0));
    let err = store.adopt_session(&s, &acquired(&s)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

/// The node that granted a lease writes its record while another node,
/// answering the same machine's renewal, adopts it: one record and one
/// audit entry, whichever comes first, and the start that loses says
/// `Conflict` (which the coordinator takes as recorded).
async fn check_adopt_races_start(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    for _ in 0..10 {
        let s = session(&license, "hw-1", at(0));
        let entry = acquired(&s);
        let (started, adopted) = tokio::join!(
            store.start_session(&s, &entry),
            store.adopt_session(&s, &entry)
        );
        assert!(adopted.unwrap());
        match started {
            Ok(true) | Err(StoreError::Conflict(_)) => {}
            other => panic!("start_session: {other:?}"),
        }
        assert_eq!(get_session(store, s.id).await, s);
        assert_eq!(audit_of(store, license.id, s.id).await, vec![acquired(&s)]);
    }
}

async fn check_session_for_unknown_license(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let ghost = License {
        id: LicenseId::new(),
        ..license
    };
    let s = session(&ghost, "hw-1", at(0));
    let err = store.start_session(&s, &acquired(&s)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.session(s.id).await.unwrap(), None);
    assert!(store.audit_for_license(ghost.id).await.unwrap().is_empty());
}

async fn check_concurrent_starts(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let sessions: Vec<SessionRecord> = (0..50)
        .map(|i| session(&license, &format!("hw-{i}"), at(i)))
        .collect();
    let results = join_all(
        sessions
            .iter()
            .map(|s| async move { store.start_session(s, &acquired(s)).await }),
    )
    .await;
    for r in results {
        r.expect("every concurrent start succeeds");
    }
    assert_eq!(
        store.sessions_for_license(license.id).await.unwrap().len(),
        50
    );
    assert_eq!(store.audit_for_license(license.id).await.unwrap().len(), 50);
}

// ---------------------------------------------------------------------------
// Heartbeats

async fn check_heartbeat_moves_forward(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let a = session(&license, "hw-a", at(0));
    let b = session(&license, "hw-b", at(0));
    start(store, &a).await;
    start(store, &b).await;

    store
        .record_heartbeats(&[(a.id, at(30), at(90)), (b.id, at(31), at(91))])
        .await
        .unwrap();
    let a2 = get_session(store, a.id).await;
    assert_eq!(
        (a2.last_heartbeat_at, a2.lease_expires_at),
        (at(30), at(90))
    );
    let b2 = get_session(store, b.id).await;
    assert_eq!(
        (b2.last_heartbeat_at, b2.lease_expires_at),
        (at(31), at(91))
    );
    assert_eq!(
        SessionRecord {
            last_heartbeat_at: a.last_heartbeat_at,
            lease_expires_at: a.lease_expires_at,
            ..a2
        },
        a,
        "nothing else changes"
    );

    store.record_heartbeats(&[]).await.unwrap();
}

async fn check_late_heartbeat(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;
    store
        .record_heartbeats(&[(s.id, at(60), at(120))])
        .await
        .unwrap();

    // A write from an earlier flush arrives late.
    store
        .record_heartbeats(&[(s.id, at(30), at(90))])
        .await
        .unwrap();
    let read = get_session(store, s.id).await;
    assert_eq!(
        (read.last_heartbeat_at, read.lease_expires_at),
        (at(60), at(120))
    );

    // Within one batch the latest wins, whatever the order.
    store
        .record_heartbeats(&[(s.id, at(90), at(150)), (s.id, at(75), at(135))])
        .await
        .unwrap();
    let read = get_session(store, s.id).await;
    assert_eq!(
        (read.last_heartbeat_at, read.lease_expires_at),
        (at(90), at(150))
    );

    // Each timestamp only moves forward, even when the other does.
    store
        .record_heartbeats(&[(s.id, at(100), at(130))])
        .await
        .unwrap();
    let read = get_session(store, s.id).await;
    assert_eq!(
        (read.last_heartbeat_at, read.lease_expires_at),
        (at(100), at(150))
    );
}

async fn check_heartbeat_ignores_ended(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;
    store
        .end_session(s.id, at(10), EndReason::Released, &released(&s, at(10)))
        .await
        .unwrap();
    let ended = get_session(store, s.id).await;

    store
        .record_heartbeats(&[(s.id, at(30), at(90)), (SessionId::new(), at(30), at(90))])
        .await
        .expect("unknown ids are ignored, not an error");
    assert_eq!(get_session(store, s.id).await, ended);
}

// ---------------------------------------------------------------------------
// Ending sessions

async fn check_end_session(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;

    let outcome = store
        .end_session(s.id, at(42), EndReason::Expired, &released(&s, at(42)))
        .await
        .unwrap()
        .expect("the session is known");
    let expected = SessionRecord {
        ended_at: Some(at(42)),
        end_reason: Some(EndReason::Expired),
        ..s.clone()
    };
    assert_eq!(outcome, EndOutcome::Ended(expected.clone()));
    assert_eq!(get_session(store, s.id).await, expected);
    assert_eq!(
        audit_of(store, license.id, s.id).await,
        vec![acquired(&s), released(&s, at(42))]
    );
}

async fn check_end_twice(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;

    let first = store
        .end_session(s.id, at(10), EndReason::Released, &released(&s, at(10)))
        .await
        .unwrap()
        .unwrap();
    let EndOutcome::Ended(first) = first else {
        panic!("the first end ends the session: {first:?}");
    };
    let second = store
        .end_session(s.id, at(20), EndReason::Revoked, &released(&s, at(20)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, EndOutcome::AlreadyEnded(first.clone()));
    assert_eq!(second.record().ended_at, Some(at(10)));
    assert_eq!(second.record().end_reason, Some(EndReason::Released));
    assert_eq!(get_session(store, s.id).await, first);
    assert_eq!(
        audit_of(store, license.id, s.id).await,
        vec![acquired(&s), released(&s, at(10))],
        "exactly one end entry"
    );
}

async fn check_end_unknown(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let ghost = session(&license, "hw-1", at(0));
    let outcome = store
        .end_session(
            ghost.id,
            at(1),
            EndReason::Released,
            &released(&ghost, at(1)),
        )
        .await
        .unwrap();
    assert_eq!(outcome, None);
    assert!(
        store
            .audit_for_license(license.id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn check_racing_ends(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));
    start(store, &s).await;

    let outcomes = join_all((0..10).map(|i| {
        let s = &s;
        async move {
            let reason = if i % 2 == 0 {
                EndReason::Released
            } else {
                EndReason::Expired
            };
            store
                .end_session(s.id, at(100 + i), reason, &released(s, at(100 + i)))
                .await
        }
    }))
    .await;
    let outcomes: Vec<EndOutcome> = outcomes
        .into_iter()
        .map(|o| o.expect("no error").expect("known session"))
        .collect();

    let winners: Vec<&SessionRecord> = outcomes
        .iter()
        .filter_map(|o| match o {
            EndOutcome::Ended(r) => Some(r),
            EndOutcome::AlreadyEnded(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].clone();
    for o in &outcomes {
        assert_eq!(o.record(), &winner, "everyone sees the winner's end");
    }
    assert_eq!(get_session(store, s.id).await, winner);
    let ends: Vec<AuditEntry> = audit_of(store, license.id, s.id)
        .await
        .into_iter()
        .filter(|e| e.event == AuditEvent::LicenseReleased)
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(Some(ends[0].at), winner.ended_at);
}

// ---------------------------------------------------------------------------
// Listings

async fn check_open_sessions(store: &dyn Store) {
    let (org, license) = org_with_license(store).await;
    let second_license = store.create_license(new_license(org.id, 2)).await.unwrap();
    let (_, elsewhere) = org_with_license(store).await;

    let newer = session(&license, "hw-newer", at(20));
    let older = session(&second_license, "hw-older", at(10));
    let closed = session(&license, "hw-closed", at(5));
    let foreign = session(&elsewhere, "hw-foreign", at(1));
    for s in [&newer, &older, &closed, &foreign] {
        start(store, s).await;
    }
    store
        .end_session(
            closed.id,
            at(30),
            EndReason::Released,
            &released(&closed, at(30)),
        )
        .await
        .unwrap();

    let open = store.open_sessions(org.id).await.unwrap();
    assert_eq!(open, vec![older.clone(), newer.clone()]);
    assert!(open.iter().all(SessionRecord::is_open));
    assert!(store.open_sessions(OrgId::new()).await.unwrap().is_empty());
}

async fn check_orgs_with_open_sessions(store: &dyn Store) {
    assert!(store.orgs_with_open_sessions().await.unwrap().is_empty());

    let (busy, busy_license) = org_with_license(store).await;
    let (done, done_license) = org_with_license(store).await;
    let (_idle, _) = org_with_license(store).await;
    for i in 0..3 {
        start(store, &session(&busy_license, &format!("hw-{i}"), at(i))).await;
    }
    let finished = session(&done_license, "hw-x", at(0));
    start(store, &finished).await;
    store
        .end_session(
            finished.id,
            at(5),
            EndReason::Expired,
            &released(&finished, at(5)),
        )
        .await
        .unwrap();

    assert_eq!(
        store.orgs_with_open_sessions().await.unwrap(),
        vec![busy.id]
    );
    assert_ne!(busy.id, done.id);
}

async fn check_sessions_for_license(store: &dyn Store) {
    let (org, license) = org_with_license(store).await;
    let other = store.create_license(new_license(org.id, 1)).await.unwrap();
    let first = session(&license, "hw-1", at(0));
    let second = session(&license, "hw-2", at(10));
    let third = session(&license, "hw-3", at(20));
    for s in [&second, &first, &third] {
        start(store, s).await;
    }
    start(store, &session(&other, "hw-other", at(15))).await;
    let EndOutcome::Ended(second_ended) = store
        .end_session(
            second.id,
            at(25),
            EndReason::Revoked,
            &released(&second, at(25)),
        )
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("second was open");
    };

    let listed = store.sessions_for_license(license.id).await.unwrap();
    assert_eq!(listed, vec![third.clone(), second_ended, first.clone()]);
    assert_eq!(ids(&listed), vec![third.id, second.id, first.id]);
}

async fn check_audit_order(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let s = session(&license, "hw-1", at(0));

    // Written in an order that is neither time order nor id order.
    let failed = AuditEntry {
        at: at(50),
        event: AuditEvent::LicenseAcquisitionFailed,
        org_id: license.org_id,
        license_id: license.id,
        session_id: None,
        hardware_id: Some("hw-9".to_owned()),
        client: ClientInfo::default(),
        detail: Some("no_seats_available".to_owned()),
        actor_id: None,
    };
    let bare = AuditEntry {
        at: at(5),
        event: AuditEvent::SessionExpired,
        hardware_id: None,
        detail: None,
        ..failed.clone()
    };
    store.append_audit(&failed).await.unwrap();
    start(store, &s).await;
    store.append_audit(&bare).await.unwrap();
    store
        .end_session(s.id, at(60), EndReason::Released, &released(&s, at(60)))
        .await
        .unwrap();
    let elsewhere = AuditEntry {
        license_id: LicenseId::new(),
        ..failed.clone()
    };
    store.append_audit(&elsewhere).await.unwrap();

    assert_eq!(
        store.audit_for_license(license.id).await.unwrap(),
        vec![failed, acquired(&s), bare, released(&s, at(60))]
    );
}

// ---------------------------------------------------------------------------
// Round trips

async fn check_json_round_trip(store: &dyn Store) {
    let org = store.create_org("Ünïcødé “Org”").await.unwrap();
    assert_eq!(
        store.org(org.id).await.unwrap().unwrap().name,
        "Ünïcødé “Org”"
    );

    let features = vec![
        "sso".to_owned(),
        "with \"quotes\", commas and ünïcødé".to_owned(),
        String::new(),
    ];
    let license = store
        .create_license(NewLicense {
            features: features.clone(),
            ..new_license(org.id, 7)
        })
        .await
        .unwrap();
    assert_eq!(
        store.license(license.id).await.unwrap().unwrap().features,
        features
    );

    let rich = SessionRecord {
        metadata: Some(json!({
            "os": {"name": "linux", "kernel": "6.8"},
            "plugins": ["a", "b"],
            "build": 42,
            "ratio": 0.5,
            "beta": true,
            "note": null,
        })),
        ..session(&license, "hw-rich", at(0))
    };
    let bare = SessionRecord {
        metadata: None,
        client: ClientInfo::default(),
        ..session(&license, "hw-bare", at(1))
    };
    let scalar = SessionRecord {
        metadata: Some(json!("just a string")),
        ..session(&license, "hw-scalar", at(2))
    };
    for s in [&rich, &bare, &scalar] {
        start(store, s).await;
        assert_eq!(&get_session(store, s.id).await, s);
    }
}

async fn check_timestamp_precision(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let micros =
        Utc.with_ymd_and_hms(2031, 12, 31, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    let s = SessionRecord {
        started_at: micros,
        last_heartbeat_at: micros + Duration::microseconds(1),
        lease_expires_at: micros + Duration::milliseconds(1),
        ..session(&license, "hw-1", micros)
    };
    start(store, &s).await;
    assert_eq!(get_session(store, s.id).await, s);

    // Comparisons in the store follow time order across a second boundary
    // and down to one microsecond.
    store
        .record_heartbeats(&[(s.id, micros, micros + Duration::microseconds(999))])
        .await
        .unwrap();
    assert_eq!(
        get_session(store, s.id).await,
        s,
        "an earlier lease is ignored"
    );
    let later = micros + Duration::microseconds(1001);
    store
        .record_heartbeats(&[(s.id, later, later)])
        .await
        .unwrap();
    let read = get_session(store, s.id).await;
    assert_eq!(
        (read.last_heartbeat_at, read.lease_expires_at),
        (later, later)
    );

    let created = store.license(license.id).await.unwrap().unwrap();
    assert_eq!(created.created_at, license.created_at);
    assert_eq!(created.expires_at, Some(at(86_400)));
}

// ---------------------------------------------------------------------------
// Backend-specific behaviour

/// Two stores on one file behave like two server processes sharing it: each
/// has its own writer connection, so they really contend for SQLite's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_stores_on_one_file_write_concurrently_without_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/shared.db", dir.path().display());
    let a: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let (_, license) = org_with_license(&*a).await;

    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let s = session(&license, &format!("hw-{i}"), at(i));
            tokio::spawn(async move {
                store.start_session(&s, &acquired(&s)).await?;
                store
                    .record_heartbeats(&[(s.id, at(i + 30), at(i + 90))])
                    .await?;
                store
                    .end_session(
                        s.id,
                        at(i + 60),
                        EndReason::Released,
                        &released(&s, at(i + 60)),
                    )
                    .await
            })
        })
        .collect();
    for t in join_all(tasks).await {
        let outcome = t.unwrap().expect("no `database is locked`");
        assert!(matches!(outcome, Some(EndOutcome::Ended(_))));
    }
    assert_eq!(b.sessions_for_license(license.id).await.unwrap().len(), 60);
    assert_eq!(a.audit_for_license(license.id).await.unwrap().len(), 120);
}

#[tokio::test]
async fn a_reopened_sqlite_file_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dirs/keep.db", dir.path().display());
    let org = {
        let store = SqliteStore::connect(&url).await.unwrap();
        store.create_org("Durable").await.unwrap()
    };
    let store = SqliteStore::connect(&url)
        .await
        .expect("migrations rerun cleanly");
    assert_eq!(store.org(org.id).await.unwrap(), Some(org));
}

/// Server processes starting together all run the migrations at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_connecting_at_once_all_migrate_the_same_database() {
    let url = support::services::fresh_postgres_db().await;
    let stores = join_all((0..6).map(|_| PostgresStore::connect(&url, 2))).await;
    let stores: Vec<PostgresStore> = stores
        .into_iter()
        .map(|s| s.expect("concurrent migration succeeds"))
        .collect();
    let org = stores[0].create_org("Shared").await.unwrap();
    for store in &stores {
        assert_eq!(store.org(org.id).await.unwrap(), Some(org.clone()));
    }
}

#[tokio::test]
async fn postgres_connection_errors_do_not_reveal_the_password() {
    let admin = support::services::fresh_postgres_db().await;
    let (base, _) = admin.rsplit_once('@').unwrap();
    let (_, host_and_db) = admin.rsplit_once('@').unwrap();
    let (host, _) = host_and_db.split_once('/').unwrap();
    let user = base.trim_start_matches("postgres://");
    for url in [
        format!("postgres://{user}:Sup3rSecret@{host}/no_such_database"),
        "postgres://someone:Sup3rSecret@127.0.0.1:1/db".to_owned(),
    ] {
        let err = match PostgresStore::connect(&url, 1).await {
            Ok(_) => panic!("connecting to {url} should fail"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("Sup3rSecret"), "{shown}");
        assert!(!shown.contains(&url), "{shown}");
    }
}

#[tokio::test]
async fn sqlite_errors_do_not_reveal_the_url() {
    let err = match SqliteStore::connect("sqlite:///proc/definitely/not/writable/x.db").await {
        Ok(_) => panic!("the directory cannot be created"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("definitely"), "{shown}");
}

// ---------------------------------------------------------------------------
// The cluster-wide sweep, license revisions and suspension

fn due_ids(mut c: Vec<seatwarden_actors::ports::SweepCandidate>) -> Vec<SessionId> {
    c.sort_by_key(|c| c.id);
    c.into_iter().map(|c| c.id).collect()
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<SessionId> {
    ids.sort();
    ids
}

async fn check_claim_sweep(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let mut sessions = Vec::new();
    for (hw, lease) in [("hw-1", 60), ("hw-2", 120), ("hw-3", 90), ("hw-4", 600)] {
        let mut s = session(&license, hw, at(0));
        s.lease_expires_at = at(lease);
        start(store, &s).await;
        sessions.push(s);
    }
    let [s1, s2, s3, s4] = [0, 1, 2, 3].map(|i| sessions[i].clone());
    store
        .end_session(s3.id, at(100), EndReason::Released, &released(&s3, at(100)))
        .await
        .unwrap();

    // Due and open: s1 and s2; s3 ended, s4 not due.
    let claimed = store.claim_sweep(at(200), at(300), 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let c1 = claimed.iter().find(|c| c.id == s1.id).expect("s1 claimed");
    assert_eq!(
        (
            c1.org_id,
            c1.license_id,
            c1.hardware_id.as_str(),
            c1.lease_expires_at
        ),
        (s1.org_id, s1.license_id, "hw-1", s1.lease_expires_at)
    );
    assert_eq!(due_ids(claimed), sorted(vec![s1.id, s2.id]));
    // Claimed: nobody else gets them until the claim passes.
    assert!(
        store
            .claim_sweep(at(250), at(350), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        due_ids(store.claim_sweep(at(300), at(400), 10).await.unwrap()),
        sorted(vec![s1.id, s2.id])
    );

    // Rescheduled and heartbeaten sessions are due later.
    store.reschedule_sweep(&[(s1.id, at(1000))]).await.unwrap();
    store
        .record_heartbeats(&[(s2.id, at(400), at(2000))])
        .await
        .unwrap();
    assert_eq!(
        due_ids(store.claim_sweep(at(700), at(800), 10).await.unwrap()),
        vec![s4.id]
    );
    assert_eq!(
        due_ids(store.claim_sweep(at(1500), at(1600), 10).await.unwrap()),
        sorted(vec![s1.id, s4.id])
    );
    // A batch is bounded by its limit.
    assert_eq!(
        store
            .claim_sweep(at(5000), at(5100), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn check_concurrent_claims(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    for i in 0..50 {
        start(store, &session(&license, &format!("hw-{i}"), at(0))).await;
    }
    let claims = join_all((0..4).map(|_| store.claim_sweep(at(200), at(300), 20))).await;
    let mut all: Vec<SessionId> = claims
        .into_iter()
        .flat_map(|c| c.expect("claim"))
        .map(|c| c.id)
        .collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(all.len(), total, "a session was claimed twice");
    assert_eq!(total, 50);
}

async fn check_license_revisions(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let before = store.license_revision().await.unwrap();
    let seats = LicenseUpdate {
        seats: Some(7),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &seats).await.unwrap();
    let first = store.license_changes_since(before, 100).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].revision > before);
    assert_eq!(first[0].license.seats, 7);

    store.update_license(license.id, &seats).await.unwrap();
    let second = store
        .license_changes_since(first[0].revision, 100)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].revision > first[0].revision);
    assert_eq!(store.license_revision().await.unwrap(), second[0].revision);
    assert!(
        store
            .license_changes_since(second[0].revision, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn check_suspension_revokes(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let (a, b, gone) = (
        session(&license, "hw-a", at(0)),
        session(&license, "hw-b", at(1)),
        session(&license, "hw-c", at(2)),
    );
    for s in [&a, &b, &gone] {
        start(store, s).await;
    }
    store
        .end_session(
            gone.id,
            at(10),
            EndReason::Released,
            &released(&gone, at(10)),
        )
        .await
        .unwrap();

    let suspend = LicenseUpdate {
        status: Some(LicenseStatus::Suspended),
        ..LicenseUpdate::default()
    };
    let updated = store
        .update_license(license.id, &suspend)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.status, LicenseStatus::Suspended);
    for s in [&a, &b] {
        let record = get_session(store, s.id).await;
        assert_eq!(record.end_reason, Some(EndReason::Revoked), "{record:?}");
        let audit = audit_of(store, license.id, s.id).await;
        assert_eq!(
            audit.last().map(|e| e.event),
            Some(AuditEvent::SessionRevoked)
        );
    }
    let untouched = get_session(store, gone.id).await;
    assert_eq!(untouched.end_reason, Some(EndReason::Released));
    assert_eq!(audit_of(store, license.id, gone.id).await.len(), 2);

    // Other changes revoke nothing.
    let active = LicenseUpdate {
        status: Some(LicenseStatus::Active),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &active).await.unwrap();
    let c = session(&license, "hw-d", at(3));
    start(store, &c).await;
    let seats = LicenseUpdate {
        seats: Some(9),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &seats).await.unwrap();
    assert!(get_session(store, c.id).await.is_open());
}

async fn check_offline_policy(store: &dyn Store) {
    let org = store.create_org("Acme").await.unwrap();
    let created = store
        .create_license(NewLicense {
            offline_grace_secs: Some(600),
            offline_overdraft: 2,
            ..new_license(org.id, 3)
        })
        .await
        .unwrap();
    let read = store.license(created.id).await.unwrap().unwrap();
    assert_eq!(
        (read.offline_grace_secs, read.offline_overdraft),
        (Some(600), 2)
    );
    assert_eq!(read, created);

    let back = LicenseUpdate {
        offline_grace_secs: Some(None),
        offline_overdraft: Some(0),
        ..LicenseUpdate::default()
    };
    let updated = store
        .update_license(created.id, &back)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.offline_grace_secs, updated.offline_overdraft),
        (None, 0)
    );
    assert_eq!(updated.seats, 3, "other fields unchanged");
}

async fn check_start_on_suspended(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let suspend = LicenseUpdate {
        status: Some(LicenseStatus::Suspended),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &suspend).await.unwrap();
    let s = session(&license, "hw-1", at(0));
    assert!(!store.start_session(&s, &acquired(&s)).await.unwrap());
    assert!(store.session(s.id).await.unwrap().is_none());
    assert!(audit_of(store, license.id, s.id).await.is_empty());

    let active = LicenseUpdate {
        status: Some(LicenseStatus::Active),
        ..LicenseUpdate::default()
    };
    store.update_license(license.id, &active).await.unwrap();
    assert!(store.start_session(&s, &acquired(&s)).await.unwrap());
}

async fn check_borrow_policy(store: &dyn Store) {
    let org = store.create_org("Acme").await.unwrap();
    let created = store
        .create_license(NewLicense {
            max_borrow_hours: 72,
            ..new_license(org.id, 3)
        })
        .await
        .unwrap();
    assert_eq!(created.max_borrow_hours, 72);
    assert_eq!(store.license(created.id).await.unwrap().unwrap(), created);
    let off = LicenseUpdate {
        max_borrow_hours: Some(0),
        ..LicenseUpdate::default()
    };
    let updated = store
        .update_license(created.id, &off)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((updated.max_borrow_hours, updated.seats), (0, 3));
}

async fn check_borrowed_sessions(store: &dyn Store) {
    let (org, license) = org_with_license(store).await;
    let borrowed = SessionRecord {
        lease_expires_at: at(3 * 3600),
        borrowed_until: Some(at(3 * 3600)),
        ..session(&license, "laptop", at(0))
    };
    start(store, &borrowed).await;
    let plain = session(&license, "desk", at(0));
    start(store, &plain).await;
    assert_eq!(
        get_session(store, borrowed.id).await.borrowed_until,
        Some(at(3 * 3600)),
        "a borrow is recorded with the session"
    );
    assert_eq!(
        store.borrowed_counts(at(60)).await.unwrap(),
        vec![(org.id, license.id, 1)]
    );
    assert!(
        store
            .borrowed_counts(at(3 * 3600))
            .await
            .unwrap()
            .is_empty(),
        "a borrow that has run out is not counted"
    );

    // The plain session is borrowed later, for longer: its lease moves out.
    assert!(store.borrow_session(plain.id, at(7200)).await.unwrap());
    let now_borrowed = get_session(store, plain.id).await;
    assert_eq!(now_borrowed.borrowed_until, Some(at(7200)));
    assert_eq!(now_borrowed.lease_expires_at, at(7200));
    assert_eq!(
        store.borrowed_counts(at(60)).await.unwrap(),
        vec![(org.id, license.id, 2)]
    );
    // A borrow never moves a lease back.
    assert!(store.borrow_session(borrowed.id, at(60)).await.unwrap());
    assert_eq!(
        get_session(store, borrowed.id).await.lease_expires_at,
        at(3 * 3600)
    );

    // Ended sessions are not counted, and cannot be borrowed.
    store
        .end_session(
            plain.id,
            at(120),
            EndReason::Released,
            &released(&plain, at(120)),
        )
        .await
        .unwrap();
    assert!(!store.borrow_session(plain.id, at(9000)).await.unwrap());
    assert_eq!(
        store.borrowed_counts(at(130)).await.unwrap(),
        vec![(org.id, license.id, 1)]
    );
}

async fn check_ended_among(store: &dyn Store) {
    let (_, license) = org_with_license(store).await;
    let open = session(&license, "open", at(0));
    let ended = session(&license, "ended", at(0));
    start(store, &open).await;
    start(store, &ended).await;
    store
        .end_session(
            ended.id,
            at(5),
            EndReason::Released,
            &released(&ended, at(5)),
        )
        .await
        .unwrap();
    let open_now = store.open_sessions_of_license(license.id).await.unwrap();
    assert_eq!(
        open_now.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![open.id]
    );
    let unknown = SessionId::new();
    assert_eq!(
        store
            .ended_among(&[open.id, ended.id, unknown])
            .await
            .unwrap(),
        vec![ended.id]
    );
    assert!(store.ended_among(&[]).await.unwrap().is_empty());
}
