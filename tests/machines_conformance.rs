//! The conformance suite of [`MachineStore`] (and of the cross-tenant
//! [`AdminStore`] reads and audited changes), run on SQLite (file and
//! memory) and PostgreSQL, like `store_conformance`.

mod support;

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, License, LicenseStatus, LicenseUpdate, NewLicense,
    NewMachine, OrgId,
};
use seatwarden_actors::ports::{
    Activation, Deactivation, LicenseFilter, PageRequest, Store, StoreError,
};

store_conformance! {
    a_license_keeps_its_machine_limit_and_identity_requirement => check_license_policy,
    activating_twice_returns_the_same_machine => check_activate_twice,
    activation_stops_at_the_machine_limit => check_machine_limit,
    an_unknown_license_activates_nothing => check_unknown_license,
    racing_activations_never_pass_the_limit => check_concurrent_activations,
    racing_activations_of_one_machine_make_one_machine => check_concurrent_same_machine,
    deactivation_frees_the_slot_once => check_deactivate,
    deactivations_are_limited_per_license_over_a_sliding_day => check_deactivation_limit,
    racing_deactivations_never_pass_the_daily_limit => check_concurrent_deactivations,
    listings_page_newest_first_with_search_and_filters => check_listings,
    issue_and_change_are_audited_with_the_actor => check_audited_changes,
    analytics_count_active_licenses_and_open_seats => check_analytics,
}

// ---------------------------------------------------------------------------
// Fixtures

fn new_license(org: OrgId, max_machines: Option<u32>) -> NewLicense {
    NewLicense {
        org_id: org,
        key_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        key_hint: "…WXYZ".to_owned(),
        seats: 5,
        tier: "pro".to_owned(),
        features: vec!["export".to_owned()],
        expires_at: None,
        offline_grace_secs: None,
        offline_overdraft: 0,
        max_machines,
        requires_user: false,
        max_borrow_hours: 0,
    }
}

async fn license(store: &dyn Store, max_machines: Option<u32>) -> License {
    let org = store.create_org("Acme").await.expect("create org");
    store
        .create_license(new_license(org.id, max_machines))
        .await
        .expect("create license")
}

fn machine(hw: &str) -> NewMachine {
    NewMachine {
        hardware_id: hw.to_owned(),
        name: Some(format!("host {hw}")),
        platform: Some("linux-x86_64".to_owned()),
    }
}

fn audit(event: AuditEvent) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event,
        actor_id: None,
        org_id: None,
        license_id: None,
        client: ClientInfo::default(),
        detail: None,
    }
}

async fn activate(store: &dyn Store, license: &License, hw: &str) -> Activation {
    store
        .activate_machine(license.id, machine(hw), audit(AuditEvent::MachineActivated))
        .await
        .expect("activate")
}

fn activated(a: Activation) -> seatwarden_actors::domain::Machine {
    match a {
        Activation::Activated(m) => m,
        other => panic!("expected a new activation, got {other:?}"),
    }
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        search: None,
        limit,
        after: None,
    }
}

// ---------------------------------------------------------------------------
// Checks

async fn check_license_policy(store: Arc<dyn Store>) {
    let org = store.create_org("Acme").await.unwrap();
    let created = store
        .create_license(NewLicense {
            requires_user: true,
            ..new_license(org.id, Some(3))
        })
        .await
        .unwrap();
    let read = store.license(created.id).await.unwrap().unwrap();
    assert_eq!((read.max_machines, read.requires_user), (Some(3), true));
    assert_eq!(read, created);

    let lifted = store
        .update_license(
            created.id,
            &LicenseUpdate {
                max_machines: Some(None),
                requires_user: Some(false),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lifted.max_machines, lifted.requires_user), (None, false));

    let seats_only = store
        .update_license(
            created.id,
            &LicenseUpdate {
                seats: Some(9),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (seats_only.max_machines, seats_only.requires_user),
        (None, false),
        "fields not named are left as they are"
    );
    let zero = LicenseUpdate {
        max_machines: Some(Some(0)),
        ..LicenseUpdate::default()
    };
    assert!(store.update_license(created.id, &zero).await.is_err());
}

async fn check_activate_twice(store: Arc<dyn Store>) {
    let lic = license(&*store, Some(2)).await;
    let first = activated(activate(&*store, &lic, "hw-1").await);
    assert_eq!(first.hardware_id, "hw-1");
    assert_eq!(first.name.as_deref(), Some("host hw-1"));
    assert_eq!(first.platform.as_deref(), Some("linux-x86_64"));
    match activate(&*store, &lic, "hw-1").await {
        Activation::AlreadyActive(m) => assert_eq!(m, first),
        other => panic!("expected the same machine, got {other:?}"),
    }
    assert!(store.machine_activated(lic.id, "hw-1").await.unwrap());
    assert!(!store.machine_activated(lic.id, "hw-2").await.unwrap());
    assert_eq!(store.machines(lic.id).await.unwrap(), vec![first.clone()]);

    let entries: Vec<_> = store
        .audit_for_license(lic.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::MachineActivated)
        .collect();
    assert_eq!(entries.len(), 1, "a repeated activation writes no entry");
    assert_eq!(
        entries[0].detail.as_deref(),
        Some(format!("machine={}", first.id).as_str())
    );
}

async fn check_machine_limit(store: Arc<dyn Store>) {
    let lic = license(&*store, Some(2)).await;
    activated(activate(&*store, &lic, "a").await);
    activated(activate(&*store, &lic, "b").await);
    assert_eq!(
        activate(&*store, &lic, "c").await,
        Activation::LimitReached { max_machines: 2 }
    );
    assert!(!store.machine_activated(lic.id, "c").await.unwrap());

    let unlimited = license(&*store, None).await;
    for i in 0..5 {
        activated(activate(&*store, &unlimited, &format!("m{i}")).await);
    }
    assert_eq!(store.machines(unlimited.id).await.unwrap().len(), 5);
}

async fn check_unknown_license(store: Arc<dyn Store>) {
    let ghost = License {
        id: seatwarden_actors::domain::LicenseId::new(),
        ..license(&*store, Some(1)).await
    };
    assert_eq!(
        activate(&*store, &ghost, "a").await,
        Activation::LicenseNotFound
    );
    assert!(store.machines(ghost.id).await.unwrap().is_empty());
}

async fn check_concurrent_activations(store: Arc<dyn Store>) {
    let lic = license(&*store, Some(3)).await;
    let outcomes = join_all((0..20).map(|i| {
        let store = store.clone();
        let lic = lic.clone();
        tokio::spawn(async move { activate(&*store, &lic, &format!("hw-{i}")).await })
    }))
    .await;
    let outcomes: Vec<Activation> = outcomes.into_iter().map(|o| o.unwrap()).collect();
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o, Activation::Activated(_)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == Activation::LimitReached { max_machines: 3 })
        .count();
    assert_eq!((granted, refused), (3, 17), "{outcomes:?}");
    assert_eq!(store.machines(lic.id).await.unwrap().len(), 3);
}

async fn check_concurrent_same_machine(store: Arc<dyn Store>) {
    let lic = license(&*store, Some(5)).await;
    let outcomes = join_all((0..10).map(|_| {
        let store = store.clone();
        let lic = lic.clone();
        tokio::spawn(async move { activate(&*store, &lic, "same").await })
    }))
    .await;
    let outcomes: Vec<Activation> = outcomes.into_iter().map(|o| o.unwrap()).collect();
    let new = outcomes
        .iter()
        .filter(|o| matches!(o, Activation::Activated(_)))
        .count();
    let again = outcomes
        .iter()
        .filter(|o| matches!(o, Activation::AlreadyActive(_)))
        .count();
    assert_eq!((new, again), (1, 9), "{outcomes:?}");
    assert_eq!(store.machines(lic.id).await.unwrap().len(), 1);
}

async fn deactivate(
    store: &dyn Store,
    license: &License,
    machine: seatwarden_actors::domain::MachineId,
    limit: Option<u32>,
    at: chrono::DateTime<Utc>,
) -> Deactivation {
    let mut entry = audit(AuditEvent::MachineDeactivated);
    entry.at = at;
    store
        .deactivate_machine(license.id, machine, limit, entry)
        .await
        .expect("deactivate")
}

async fn check_deactivate(store: Arc<dyn Store>) {
    let lic = license(&*store, Some(1)).await;
    let m = activated(activate(&*store, &lic, "a").await);
    assert_eq!(
        activate(&*store, &lic, "b").await,
        Activation::LimitReached { max_machines: 1 }
    );
    assert_eq!(
        deactivate(&*store, &lic, m.id, Some(10), Utc::now()).await,
        Deactivation::Deactivated(m.clone())
    );
    assert!(!store.machine_activated(lic.id, "a").await.unwrap());
    assert_eq!(
        deactivate(&*store, &lic, m.id, Some(10), Utc::now()).await,
        Deactivation::NotFound
    );
    activated(activate(&*store, &lic, "b").await);

    let other = license(&*store, Some(1)).await;
    let theirs = activated(activate(&*store, &other, "x").await);
    assert_eq!(
        deactivate(&*store, &lic, theirs.id, None, Utc::now()).await,
        Deactivation::NotFound,
        "a machine of another license is not found through this one"
    );
    assert!(store.machine_activated(other.id, "x").await.unwrap());
}

async fn check_deactivation_limit(store: Arc<dyn Store>) {
    let lic = license(&*store, None).await;
    let mut machines = Vec::new();
    for i in 0..5 {
        machines.push(activated(activate(&*store, &lic, &format!("m{i}")).await));
    }
    let t0 = Utc::now();
    let first = t0;
    assert!(matches!(
        deactivate(&*store, &lic, machines[0].id, Some(2), first).await,
        Deactivation::Deactivated(_)
    ));
    assert!(matches!(
        deactivate(
            &*store,
            &lic,
            machines[1].id,
            Some(2),
            t0 + Duration::hours(1)
        )
        .await,
        Deactivation::Deactivated(_)
    ));
    let refused = deactivate(
        &*store,
        &lic,
        machines[2].id,
        Some(2),
        t0 + Duration::hours(2),
    )
    .await;
    match refused {
        Deactivation::LimitReached { retry_at } => {
            let expected = first + Duration::hours(24);
            assert!(
                (retry_at - expected).num_milliseconds().abs() < 1,
                "{retry_at} != {expected}"
            );
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    assert!(store.machine_activated(lic.id, "m2").await.unwrap());
    // Without a limit (platform administrators) it goes through.
    assert!(matches!(
        deactivate(&*store, &lic, machines[2].id, None, t0 + Duration::hours(2)).await,
        Deactivation::Deactivated(_)
    ));
    // Once the first leaves the 24 hours, one more is allowed; the third,
    // unlimited one counts too: it freed a slot like any other.
    let later = t0 + Duration::hours(24) + Duration::minutes(30);
    assert!(matches!(
        deactivate(&*store, &lic, machines[3].id, Some(2), later).await,
        Deactivation::LimitReached { .. }
    ));
    let later = t0 + Duration::hours(25) + Duration::minutes(1);
    assert!(matches!(
        deactivate(&*store, &lic, machines[3].id, Some(2), later).await,
        Deactivation::Deactivated(_)
    ));
}

async fn check_concurrent_deactivations(store: Arc<dyn Store>) {
    let lic = license(&*store, None).await;
    let mut machines = Vec::new();
    for i in 0..6 {
        machines.push(activated(activate(&*store, &lic, &format!("m{i}")).await));
    }
    let now = Utc::now();
    let outcomes = join_all(machines.iter().map(|m| {
        let store = store.clone();
        let lic = lic.clone();
        let id = m.id;
        tokio::spawn(async move { deactivate(&*store, &lic, id, Some(2), now).await })
    }))
    .await;
    let done = outcomes
        .into_iter()
        .filter(|o| matches!(o.as_ref().unwrap(), Deactivation::Deactivated(_)))
        .count();
    assert_eq!(done, 2);
    assert_eq!(store.machines(lic.id).await.unwrap().len(), 4);
}

async fn check_listings(store: Arc<dyn Store>) {
    let mut orgs = Vec::new();
    for name in ["Alpha 50% Co", "Beta", "Gamma", "alphabet"] {
        orgs.push(store.create_org(name).await.unwrap());
    }
    // Newest first, two by two, to the end.
    let first = store.list_orgs(&page(2)).await.unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        vec!["alphabet", "Gamma"]
    );
    let second = store
        .list_orgs(&PageRequest {
            after: first.next,
            ..page(2)
        })
        .await
        .unwrap();
    assert_eq!(
        second
            .items
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Beta", "Alpha 50% Co"]
    );
    assert_eq!(second.next, None, "the last page has no cursor");
    let exact = store.list_orgs(&page(4)).await.unwrap();
    assert_eq!(exact.items.len(), 4);
    assert_eq!(exact.next, None, "no cursor when nothing follows");

    // Search: case-insensitive substring, wildcards taken literally.
    let alpha = store
        .list_orgs(&PageRequest {
            search: Some("ALPHA".into()),
            ..page(10)
        })
        .await
        .unwrap();
    assert_eq!(alpha.items.len(), 2);
    let percent = store
        .list_orgs(&PageRequest {
            search: Some("50%".into()),
            ..page(10)
        })
        .await
        .unwrap();
    assert_eq!(percent.items.len(), 1);
    let underscore = store
        .list_orgs(&PageRequest {
            search: Some("_".into()),
            ..page(10)
        })
        .await
        .unwrap();
    assert!(underscore.items.is_empty());

    // Licenses by organization, status and tier.
    let a = store
        .create_license(new_license(orgs[0].id, None))
        .await
        .unwrap();
    let b = store
        .create_license(NewLicense {
            tier: "enterprise".into(),
            ..new_license(orgs[0].id, None)
        })
        .await
        .unwrap();
    let c = store
        .create_license(new_license(orgs[1].id, None))
        .await
        .unwrap();
    store
        .update_license(
            c.id,
            &LicenseUpdate {
                status: Some(LicenseStatus::Suspended),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap();
    let list = |f: LicenseFilter| {
        let store = store.clone();
        async move {
            store
                .list_licenses(&f, &page(10))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|l| l.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(LicenseFilter::default()).await, vec![c.id, b.id, a.id]);
    assert_eq!(
        list(LicenseFilter {
            org_id: Some(orgs[0].id),
            ..LicenseFilter::default()
        })
        .await,
        vec![b.id, a.id]
    );
    assert_eq!(
        list(LicenseFilter {
            status: Some(LicenseStatus::Suspended),
            ..LicenseFilter::default()
        })
        .await,
        vec![c.id]
    );
    assert_eq!(
        list(LicenseFilter {
            org_id: Some(orgs[0].id),
            tier: Some("pro".into()),
            ..LicenseFilter::default()
        })
        .await,
        vec![a.id]
    );

    // Users: the one platform admin there is, found by name or address.
    let admin = store
        .create_platform_admin("Root@Example.com", "Rita Root", "hash")
        .await
        .unwrap();
    let users = store
        .list_users(&PageRequest {
            search: Some("rita".into()),
            ..page(10)
        })
        .await
        .unwrap();
    assert_eq!(users.items, vec![admin.clone()]);
    let by_mail = store
        .list_users(&PageRequest {
            search: Some("root@EXAMPLE".into()),
            ..page(10)
        })
        .await
        .unwrap();
    assert_eq!(by_mail.items, vec![admin]);
}

async fn check_audited_changes(store: Arc<dyn Store>) {
    let org = store.create_org("Acme").await.unwrap();
    let actor = uuid::Uuid::new_v4();
    let mut entry = audit(AuditEvent::LicenseIssued);
    entry.actor_id = Some(actor);
    let issued = store
        .issue_license(new_license(org.id, Some(2)), entry.clone())
        .await
        .unwrap();
    assert_eq!(
        store.license(issued.id).await.unwrap(),
        Some(issued.clone())
    );

    let mut change = audit(AuditEvent::LicenseUpdated);
    change.actor_id = Some(actor);
    let updated = store
        .update_license_audited(
            issued.id,
            &LicenseUpdate {
                seats: Some(8),
                ..LicenseUpdate::default()
            },
            change.clone(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.seats, 8);
    let events: Vec<AuditEvent> = store
        .audit_for_license(issued.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        vec![AuditEvent::LicenseIssued, AuditEvent::LicenseUpdated]
    );

    let unknown = store
        .update_license_audited(
            seatwarden_actors::domain::LicenseId::new(),
            &LicenseUpdate {
                seats: Some(8),
                ..LicenseUpdate::default()
            },
            change,
        )
        .await
        .unwrap();
    assert_eq!(unknown, None);
    let err = store
        .issue_license(new_license(OrgId::new(), None), entry)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn check_analytics(store: Arc<dyn Store>) {
    let now = Utc::now();
    let org = store.create_org("Acme").await.unwrap();
    store.create_org("Other").await.unwrap();
    store
        .create_platform_admin("a@example.com", "A", "hash")
        .await
        .unwrap();
    let live = store
        .create_license(new_license(org.id, None))
        .await
        .unwrap();
    let expired = store
        .create_license(NewLicense {
            expires_at: Some(now - Duration::days(1)),
            ..new_license(org.id, None)
        })
        .await
        .unwrap();
    let suspended = store
        .create_license(new_license(org.id, None))
        .await
        .unwrap();
    store
        .update_license(
            suspended.id,
            &LicenseUpdate {
                status: Some(LicenseStatus::Suspended),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap();
    let month_start = now - Duration::days(1);
    let a = store.analytics(now, month_start).await.unwrap();
    assert_eq!((a.orgs, a.users, a.signups_this_month), (2, 1, 1));
    assert_eq!(
        (a.active_licenses, a.seats_total, a.seats_in_use),
        (1, 5, 0)
    );
    let later = store.analytics(now, now + Duration::days(1)).await.unwrap();
    assert_eq!(later.signups_this_month, 0);
    let _ = (live, expired);
}
