//! The conformance suite of [`DeadlineStore`]: every check is written once
//! and run against SQLite on a temporary file and PostgreSQL on a fresh
//! database of the throwaway server from `scripts/services.sh`.
//!
//! A subject has two store instances on one database, as two nodes would:
//! "a crash between claim and effect" is one instance claiming and never
//! completing, and the other taking over when the lease ends.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::future::join_all;
use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, License, LicenseId, LicenseStatus, LicenseUpdate,
    NewLicense, Subscription, SubscriptionStatus,
};
use seatwarden_actors::ports::{
    ClaimedDeadline, DeadlineEffect, DeadlineKind, MailFilter, MailKind, NewMail, StartOutcome,
    Store,
};

use support::backends::TwoNodes as Subject;

async fn sqlite() -> Subject {
    support::backends::two_sqlite().await
}

async fn postgres() -> Subject {
    support::backends::two_postgres().await
}

subject_conformance! {
    a_license_with_an_expiry_schedules_its_expiry_and_its_warning => check_license_schedules,
    an_expiry_is_claimable_when_due_and_its_warning_a_lead_before => check_due_and_lead,
    a_deadline_claimed_by_a_node_that_crashed_is_fired_by_another_once_its_lease_ends => check_crash_between_claim_and_effect,
    two_concurrent_claimers_never_get_the_same_deadline => check_concurrent_claims,
    completing_a_deadline_commits_its_effect_in_the_same_transaction => check_complete_effect,
    moving_a_deadline_rearms_it_and_voids_the_claim_on_the_old_moment => check_reschedule,
    a_failed_deadline_comes_back_at_its_retry_or_is_given_up => check_fail,
    the_next_deadline_is_the_earliest_moment_one_becomes_claimable => check_next,
    a_subscription_schedules_its_trial_end_and_grace_end_with_its_changes => check_subscription_schedules,
}

// ---------------------------------------------------------------------------
// Fixtures

const LEAD: StdDuration = StdDuration::from_secs(3600);

/// A fixed instant with a microsecond part, plus `secs` seconds.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(secs)
}

fn new_license(org: seatwarden_actors::domain::OrgId, expires: Option<i64>) -> NewLicense {
    NewLicense {
        org_id: org,
        key_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        key_hint: "…WXYZ".to_owned(),
        seats: 2,
        tier: "pro".to_owned(),
        features: vec![],
        expires_at: expires.map(at),
        offline_grace_secs: None,
        offline_overdraft: 0,
        max_machines: None,
        requires_user: false,
        max_borrow_hours: 0,
    }
}

/// A license expiring at `at(expires)`.
async fn license(s: &dyn Store, expires: i64) -> License {
    let org = s.create_org("Acme").await.expect("org");
    s.create_license(new_license(org.id, Some(expires)))
        .await
        .expect("license")
}

async fn claim(s: &dyn Store, now: i64, lead: StdDuration, lease: i64) -> Vec<ClaimedDeadline> {
    s.claim_deadlines(at(now), lead, at(lease), 100)
        .await
        .expect("claim")
}

fn kinds(claimed: &[ClaimedDeadline]) -> Vec<(DeadlineKind, String)> {
    claimed
        .iter()
        .map(|c| (c.deadline.kind, c.deadline.subject.clone()))
        .collect()
}

fn audit(license: &License, event: AuditEvent) -> ActionAudit {
    ActionAudit {
        at: at(0),
        event,
        actor_id: None,
        org_id: Some(license.org_id),
        license_id: Some(license.id),
        client: ClientInfo::default(),
        detail: None,
    }
}

/// Suspends `license`, audits it and mails `to`: an effect whose every part
/// can be seen afterwards.
fn suspension(license: &License, to: &str) -> DeadlineEffect {
    DeadlineEffect {
        license: Some((
            license.id,
            LicenseUpdate {
                status: Some(LicenseStatus::Suspended),
                ..LicenseUpdate::default()
            },
        )),
        audits: vec![audit(license, AuditEvent::LicenseSuspended)],
        mail: vec![NewMail::new(
            MailKind::LicenseSuspended,
            to,
            serde_json::json!({"org_name": "Acme", "plan_name": "Pro"}),
        )],
        ..DeadlineEffect::default()
    }
}

async fn mails_to(s: &dyn Store, to: &str) -> usize {
    s.email_log(&MailFilter {
        recipient: Some(to.to_owned()),
        limit: 100,
        ..MailFilter::default()
    })
    .await
    .expect("email log")
    .entries
    .len()
}

// ---------------------------------------------------------------------------
// Checks

async fn check_license_schedules(s: &Subject) {
    let l = license(s.store.as_ref(), 86_400).await;
    let deadlines = s.store.deadlines_of(&l.id.to_string()).await.unwrap();
    let mut got: Vec<_> = deadlines
        .iter()
        .map(|d| (d.kind, d.due_at, d.fired_at))
        .collect();
    got.sort_by_key(|(k, ..)| k.as_str());
    assert_eq!(
        got,
        vec![
            (DeadlineKind::Expiry, at(86_400), None),
            (DeadlineKind::ExpiryWarning, at(86_400), None),
        ]
    );
    let org = s.store.create_org("Perpetual").await.unwrap();
    let perpetual = s
        .store
        .create_license(new_license(org.id, None))
        .await
        .unwrap();
    assert!(
        s.store
            .deadlines_of(&perpetual.id.to_string())
            .await
            .unwrap()
            .is_empty(),
        "a license without an expiry has no deadline"
    );
}

async fn check_due_and_lead(s: &Subject) {
    let l = license(s.store.as_ref(), 10_000).await;
    let id = l.id.to_string();
    // More than the lead before: nothing.
    assert!(claim(s.store.as_ref(), 0, LEAD, 20_000).await.is_empty());
    // Within the lead of the expiry: the warning only.
    let warned = claim(s.store.as_ref(), 7_000, LEAD, 20_000).await;
    assert_eq!(
        kinds(&warned),
        vec![(DeadlineKind::ExpiryWarning, id.clone())]
    );
    assert_eq!(warned[0].deadline.attempts, 1);
    // At the expiry: the expiry (the warning is still held by its claim).
    let expired = claim(s.store.as_ref(), 10_000, LEAD, 20_000).await;
    assert_eq!(kinds(&expired), vec![(DeadlineKind::Expiry, id)]);
    assert!(
        claim(s.store.as_ref(), 10_001, LEAD, 20_000)
            .await
            .is_empty()
    );
}

async fn check_crash_between_claim_and_effect(s: &Subject) {
    let l = license(s.store.as_ref(), 100).await;
    let expiry = |claimed: Vec<ClaimedDeadline>| -> Vec<ClaimedDeadline> {
        claimed
            .into_iter()
            .filter(|c| c.deadline.kind == DeadlineKind::Expiry)
            .collect()
    };
    // Node A claims the expiry (and its warning) until t=200, then dies
    // before its effect.
    let crashed = expiry(claim(s.store.as_ref(), 150, StdDuration::ZERO, 200).await);
    assert_eq!(crashed.len(), 1);
    // Node B sees nothing while A's lease holds...
    assert!(
        claim(s.other.as_ref(), 199, StdDuration::ZERO, 300)
            .await
            .is_empty()
    );
    // ...and takes it over when it ends: a second attempt, a new token.
    let taken = expiry(claim(s.other.as_ref(), 201, StdDuration::ZERO, 300).await);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].deadline.attempts, 2);
    assert_ne!(taken[0].claim, crashed[0].claim);
    // A, back from the dead, can't fire it: nothing of its effect lands.
    let stale = s
        .store
        .complete_deadline(&crashed[0], &suspension(&l, "a@example.com"), at(202))
        .await
        .unwrap();
    assert!(!stale, "a lapsed claim must not complete");
    assert_eq!(
        s.store.license(l.id).await.unwrap().unwrap().status,
        LicenseStatus::Active
    );
    assert_eq!(mails_to(s.store.as_ref(), "a@example.com").await, 0);
    // B fires it, once.
    assert!(
        s.other
            .complete_deadline(&taken[0], &suspension(&l, "b@example.com"), at(203))
            .await
            .unwrap()
    );
    assert!(
        !s.other
            .complete_deadline(&taken[0], &suspension(&l, "b@example.com"), at(204))
            .await
            .unwrap(),
        "a fired deadline can't be fired again"
    );
    assert_eq!(mails_to(s.store.as_ref(), "b@example.com").await, 1);
    assert!(expiry(claim(s.store.as_ref(), 10_000, StdDuration::ZERO, 20_000).await).is_empty());
    let expiry = s
        .store
        .deadlines_of(&l.id.to_string())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeadlineKind::Expiry)
        .unwrap();
    assert_eq!(expiry.fired_at, Some(at(203)));
}

async fn check_concurrent_claims(s: &Subject) {
    let org = s.store.create_org("Many").await.unwrap();
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let l = s
            .store
            .create_license(new_license(org.id, Some(10)))
            .await
            .unwrap();
        ids.insert(l.id.to_string());
    }
    let claimer = |store: Arc<dyn Store>| async move {
        let mut mine = Vec::new();
        loop {
            let got = store
                .claim_deadlines(at(20), StdDuration::ZERO, at(1_000), 3)
                .await
                .expect("claim");
            if got.is_empty() {
                return mine;
            }
            mine.extend(
                got.into_iter()
                    .map(|c| (c.deadline.kind, c.deadline.subject)),
            );
        }
    };
    let results = join_all([
        tokio::spawn(claimer(s.store.clone())),
        tokio::spawn(claimer(s.other.clone())),
        tokio::spawn(claimer(s.store.clone())),
        tokio::spawn(claimer(s.other.clone())),
    ])
    .await;
    let all: Vec<_> = results.into_iter().flat_map(|r| r.unwrap()).collect();
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a deadline was claimed twice");
    // Each license's expiry and warning (both due), all of them.
    assert_eq!(unique.len(), 40);
    let subjects: HashSet<String> = unique.into_iter().map(|(_, s)| s).collect();
    assert_eq!(subjects, ids);
}

async fn check_complete_effect(s: &Subject) {
    let l = license(s.store.as_ref(), 100).await;
    let claimed = claim(s.store.as_ref(), 100, StdDuration::ZERO, 1_000).await;
    let expiry = claimed
        .iter()
        .find(|c| c.deadline.kind == DeadlineKind::Expiry)
        .unwrap();
    assert!(
        s.store
            .complete_deadline(expiry, &suspension(&l, "owner@example.com"), at(101))
            .await
            .unwrap()
    );
    let now = s.store.license(l.id).await.unwrap().unwrap();
    assert_eq!(now.status, LicenseStatus::Suspended);
    assert_eq!(mails_to(s.store.as_ref(), "owner@example.com").await, 1);
    // A skip fires the deadline and writes nothing else.
    let warning = claimed
        .iter()
        .find(|c| c.deadline.kind == DeadlineKind::ExpiryWarning)
        .unwrap();
    assert!(
        s.store
            .complete_deadline(warning, &DeadlineEffect::skip("expired already"), at(102))
            .await
            .unwrap()
    );
    let all = s.store.deadlines_of(&l.id.to_string()).await.unwrap();
    assert!(all.iter().all(|d| d.fired_at.is_some()), "{all:?}");
    // An effect on a license that does not exist fails whole: the
    // deadline stays claimed, as it was.
    let other = license(s.store.as_ref(), 100).await;
    let c = claim(s.store.as_ref(), 100, StdDuration::ZERO, 1_000).await;
    let c = c
        .iter()
        .find(|c| c.deadline.subject == other.id.to_string())
        .unwrap();
    let mut ghost = suspension(&other, "ghost@example.com");
    ghost.license = Some((LicenseId::new(), LicenseUpdate::default()));
    assert!(s.store.complete_deadline(c, &ghost, at(103)).await.is_err());
    assert_eq!(mails_to(s.store.as_ref(), "ghost@example.com").await, 0);
    let pending = s.store.deadlines_of(&other.id.to_string()).await.unwrap();
    assert!(pending.iter().all(|d| d.fired_at.is_none()));
}

async fn check_reschedule(s: &Subject) {
    let l = license(s.store.as_ref(), 100).await;
    let claimed = claim(s.store.as_ref(), 100, StdDuration::ZERO, 1_000).await;
    let expiry = claimed
        .into_iter()
        .find(|c| c.deadline.kind == DeadlineKind::Expiry)
        .unwrap();
    // A renewal moves the expiry while the old moment is being fired.
    let renew = |t: i64| LicenseUpdate {
        expires_at: Some(Some(at(t))),
        ..LicenseUpdate::default()
    };
    s.other.update_license(l.id, &renew(5_000)).await.unwrap();
    assert!(
        !s.store
            .complete_deadline(&expiry, &DeadlineEffect::default(), at(101))
            .await
            .unwrap(),
        "the claim on the old moment is void"
    );
    let moved = s.store.deadlines_of(&l.id.to_string()).await.unwrap();
    for d in &moved {
        assert_eq!(
            (d.due_at, d.fired_at, d.attempts),
            (at(5_000), None, 0),
            "{d:?}"
        );
    }
    // Fired at the new moment, scheduling that same moment again keeps it
    // fired: it never fires twice.
    let again = claim(s.store.as_ref(), 5_000, StdDuration::ZERO, 6_000).await;
    assert_eq!(again.len(), 2);
    for c in &again {
        assert!(
            s.store
                .complete_deadline(c, &DeadlineEffect::default(), at(5_001))
                .await
                .unwrap()
        );
    }
    s.store.update_license(l.id, &renew(5_000)).await.unwrap();
    assert!(
        claim(s.store.as_ref(), 9_000, LEAD, 10_000)
            .await
            .is_empty()
    );
    // Removing the expiry keeps the fired history and schedules nothing.
    s.store
        .update_license(
            l.id,
            &LicenseUpdate {
                expires_at: Some(None),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap();
    let kept = s.store.deadlines_of(&l.id.to_string()).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|d| d.fired_at.is_some()));
}

async fn check_fail(s: &Subject) {
    let l = license(s.store.as_ref(), 100).await;
    let claimed = claim(s.store.as_ref(), 100, StdDuration::ZERO, 1_000).await;
    let (expiry, warning) = match claimed[0].deadline.kind {
        DeadlineKind::Expiry => (&claimed[0], &claimed[1]),
        _ => (&claimed[1], &claimed[0]),
    };
    assert!(
        s.store
            .fail_deadline(expiry, "Stripe: unreachable", Some(at(300)), at(101))
            .await
            .unwrap()
    );
    assert!(
        s.store
            .fail_deadline(warning, "unknown license", None, at(101))
            .await
            .unwrap()
    );
    // The retry waits for its time, even past the lease.
    assert!(
        claim(s.other.as_ref(), 299, StdDuration::ZERO, 2_000)
            .await
            .is_empty()
    );
    let retried = claim(s.other.as_ref(), 300, StdDuration::ZERO, 2_000).await;
    assert_eq!(
        kinds(&retried),
        vec![(DeadlineKind::Expiry, l.id.to_string())]
    );
    assert_eq!(retried[0].deadline.attempts, 2);
    assert_eq!(
        retried[0].deadline.last_error.as_deref(),
        Some("Stripe: unreachable")
    );
    // The given-up warning is fired with its error kept, never claimed.
    let given_up = s
        .store
        .deadlines_of(&l.id.to_string())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.kind == DeadlineKind::ExpiryWarning)
        .unwrap();
    assert_eq!(given_up.fired_at, Some(at(101)));
    assert_eq!(given_up.last_error.as_deref(), Some("unknown license"));
    // A stale claim can't fail it either.
    assert!(
        !s.store
            .fail_deadline(expiry, "late", None, at(400))
            .await
            .unwrap()
    );
}

async fn check_next(s: &Subject) {
    assert_eq!(s.store.next_deadline(at(0), LEAD).await.unwrap(), None);
    let _l = license(s.store.as_ref(), 10_000).await;
    // The warning comes first, a lead before the expiry.
    assert_eq!(
        s.store.next_deadline(at(0), LEAD).await.unwrap(),
        Some(at(10_000 - 3_600))
    );
    assert_eq!(
        s.store
            .next_deadline(at(0), StdDuration::ZERO)
            .await
            .unwrap(),
        Some(at(10_000))
    );
    // Both claimed until t=20,000: nothing is claimable before then, and
    // the next moment is not in the past (no busy loop).
    let claimed = claim(s.store.as_ref(), 10_000, LEAD, 20_000).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        s.store.next_deadline(at(10_001), LEAD).await.unwrap(),
        Some(at(20_000))
    );
}

async fn check_subscription_schedules(s: &Subject) {
    let store = s.store.as_ref();
    let org = store.create_org("Subscribed").await.unwrap();
    let now = at(0);
    let sub = Subscription {
        id: format!("sub_{}", uuid::Uuid::new_v4().simple()),
        org_id: org.id,
        customer_id: "cus_1".into(),
        plan_id: "pro".into(),
        interval: "month".into(),
        quantity: 1,
        status: SubscriptionStatus::Trialing,
        current_period_start: now,
        current_period_end: at(30 * 86_400),
        trial_end: Some(at(14 * 86_400)),
        license_id: LicenseId::new(),
        failed_payments: 0,
        grace_ends_at: None,
        canceled_at: None,
        last_event_at: now,
        created_at: now,
        updated_at: now,
    };
    let started = store
        .start_subscription(
            &sub,
            new_license(org.id, Some(33 * 86_400)),
            audit(
                &License {
                    id: sub.license_id,
                    org_id: org.id,
                    key_hint: String::new(),
                    seats: 1,
                    tier: String::new(),
                    features: vec![],
                    status: LicenseStatus::Active,
                    expires_at: None,
                    created_at: now,
                    offline_grace_secs: None,
                    offline_overdraft: 0,
                    max_machines: None,
                    requires_user: false,
                    max_borrow_hours: 0,
                },
                AuditEvent::LicenseIssued,
            ),
            &[],
        )
        .await
        .unwrap();
    let StartOutcome::Started { license, .. } = started else {
        panic!("a new subscription starts");
    };
    assert_eq!(
        license.id, sub.license_id,
        "the license takes the chosen id"
    );
    let found = store.subscription_for_license(license.id).await.unwrap();
    assert_eq!(found.map(|s| s.id), Some(sub.id.clone()));
    assert!(
        store
            .subscription_for_license(LicenseId::new())
            .await
            .unwrap()
            .is_none()
    );
    let trial: Vec<_> = store
        .deadlines_of(&sub.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.due_at))
        .collect();
    assert_eq!(trial, vec![(DeadlineKind::TrialEnd, at(14 * 86_400))]);
    assert_eq!(
        store
            .deadlines_of(&license.id.to_string())
            .await
            .unwrap()
            .len(),
        2,
        "the license's expiry and warning"
    );
    // Trial over and a payment failed: the trial's deadline goes, a grace
    // period's end comes.
    let mut past_due = sub.clone();
    past_due.status = SubscriptionStatus::PastDue;
    past_due.grace_ends_at = Some(at(21 * 86_400));
    store
        .change_subscription(&past_due, &LicenseUpdate::default(), vec![], None)
        .await
        .unwrap();
    let now: Vec<_> = store
        .deadlines_of(&sub.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.due_at))
        .collect();
    assert_eq!(now, vec![(DeadlineKind::GraceEnd, at(21 * 86_400))]);
    // Paid: no grace period, no deadline.
    let mut paid = past_due.clone();
    paid.status = SubscriptionStatus::Active;
    paid.grace_ends_at = None;
    store
        .change_subscription(&paid, &LicenseUpdate::default(), vec![], None)
        .await
        .unwrap();
    assert!(store.deadlines_of(&sub.id).await.unwrap().is_empty());
}
