//! The conformance suite of [`PlanStore`], run on SQLite (file and memory)
//! and PostgreSQL, like `store_conformance`.

mod support;

use std::sync::Arc;

use chrono::{Duration, SubsecRound, Utc};
use futures::future::join_all;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, BillingInterval, ClientInfo, NewPlan, PlanId, PlanPatch,
};
use seatwarden_actors::ports::{PlanChange, Store, StoreError};

store_conformance! {
    a_created_plan_reads_back_as_it_was_returned => check_create_and_read,
    a_plan_id_is_taken_once_even_after_retirement => check_conflict,
    listings_go_by_monthly_price_then_id_and_leave_out_retired_plans => check_listing_order,
    an_update_changes_only_the_fields_it_names => check_partial_update,
    an_update_that_would_break_a_rule_writes_nothing => check_invalid_update,
    racing_updates_of_one_plan_both_apply => check_concurrent_updates,
    retiring_is_idempotent_and_keeps_the_first_time => check_retire,
    seeding_inserts_missing_plans_and_never_overwrites => check_seed,
    racing_seeds_insert_each_plan_once => check_concurrent_seeds,
}

// ---------------------------------------------------------------------------
// Fixtures

fn id(s: &str) -> PlanId {
    PlanId::parse(s).expect("a valid plan id")
}

fn new_plan(slug: &str, monthly: i64) -> NewPlan {
    NewPlan {
        id: id(slug),
        name: format!("Plan {slug}"),
        currency: "usd".to_owned(),
        monthly_price_cents: monthly,
        annual_price_cents: Some(monthly * 10),
        seats: 3,
        trial_days: 14,
        stripe_price_monthly: format!("price_{slug}_monthly"),
        stripe_price_annual: Some(format!("price_{slug}_annual")),
        features: vec!["floating seats".to_owned(), "email support".to_owned()],
    }
}

fn audit(event: AuditEvent) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event,
        actor_id: Some(uuid::Uuid::new_v4()),
        org_id: None,
        license_id: None,
        client: ClientInfo::default(),
        detail: None,
    }
}

async fn create(store: &dyn Store, plan: NewPlan) {
    store
        .create_plan(plan, audit(AuditEvent::PlanCreated))
        .await
        .expect("create plan");
}

async fn ids(store: &dyn Store, include_retired: bool) -> Vec<String> {
    store
        .plans(include_retired)
        .await
        .expect("list plans")
        .into_iter()
        .map(|p| p.id.to_string())
        .collect()
}

async fn update(store: &dyn Store, slug: &str, patch: &PlanPatch) -> PlanChange {
    store
        .update_plan(&id(slug), patch, audit(AuditEvent::PlanUpdated))
        .await
        .expect("update plan")
}

// ---------------------------------------------------------------------------
// Checks

async fn check_create_and_read(store: Arc<dyn Store>) {
    let created = store
        .create_plan(new_plan("pro", 9900), audit(AuditEvent::PlanCreated))
        .await
        .unwrap();
    assert_eq!(created.id, id("pro"));
    assert_eq!(created.features, ["floating seats", "email support"]);
    assert_eq!(created.retired_at, None);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        created.price_for(BillingInterval::Year),
        Some((99_000, "price_pro_annual"))
    );
    assert_eq!(store.plan(&id("pro")).await.unwrap(), Some(created.clone()));
    assert_eq!(store.plans(false).await.unwrap(), vec![created]);
    assert_eq!(store.plan(&id("nope")).await.unwrap(), None);

    // Monthly only: no annual price, no annual Stripe price.
    let monthly = NewPlan {
        annual_price_cents: None,
        stripe_price_annual: None,
        features: Vec::new(),
        ..new_plan("basic", 500)
    };
    create(&*store, monthly).await;
    let read = store.plan(&id("basic")).await.unwrap().unwrap();
    assert_eq!(read.price_for(BillingInterval::Year), None);
    assert!(read.features.is_empty());
}

async fn check_conflict(store: Arc<dyn Store>) {
    create(&*store, new_plan("pro", 9900)).await;
    let again = store
        .create_plan(new_plan("pro", 1), audit(AuditEvent::PlanCreated))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    store
        .retire_plan(&id("pro"), Utc::now(), audit(AuditEvent::PlanRetired))
        .await
        .unwrap();
    let after_retirement = store
        .create_plan(new_plan("pro", 1), audit(AuditEvent::PlanCreated))
        .await;
    assert!(
        matches!(after_retirement, Err(StoreError::Conflict(_))),
        "{after_retirement:?}"
    );
    assert_eq!(
        store
            .plan(&id("pro"))
            .await
            .unwrap()
            .unwrap()
            .monthly_price_cents,
        9900
    );
}

async fn check_listing_order(store: Arc<dyn Store>) {
    // Ties on price go by id, bytewise ('-' before letters) on both
    // backends, whatever PostgreSQL's locale.
    for (slug, price) in [
        ("enterprise", 29_900),
        ("teama", 4900),
        ("starter", 2900),
        ("team-b", 4900),
        ("pro", 9900),
        ("team-a", 4900),
        ("legacy", 100),
    ] {
        create(&*store, new_plan(slug, price)).await;
    }
    store
        .retire_plan(&id("legacy"), Utc::now(), audit(AuditEvent::PlanRetired))
        .await
        .unwrap();
    assert_eq!(
        ids(&*store, false).await,
        ["starter", "team-a", "team-b", "teama", "pro", "enterprise"]
    );
    assert_eq!(
        ids(&*store, true).await,
        [
            "legacy",
            "starter",
            "team-a",
            "team-b",
            "teama",
            "pro",
            "enterprise"
        ]
    );

    // A price change moves a plan.
    let cheaper = PlanPatch {
        monthly_price_cents: Some(1000),
        ..PlanPatch::default()
    };
    assert!(matches!(
        update(&*store, "pro", &cheaper).await,
        PlanChange::Changed(_)
    ));
    assert_eq!(ids(&*store, false).await[0], "pro");
}

async fn check_partial_update(store: Arc<dyn Store>) {
    create(&*store, new_plan("pro", 9900)).await;
    let before = store.plan(&id("pro")).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let patch = PlanPatch {
        name: Some("Pro (2027)".to_owned()),
        seats: Some(12),
        features: Some(vec!["everything".to_owned()]),
        ..PlanPatch::default()
    };
    let PlanChange::Changed(changed) = update(&*store, "pro", &patch).await else {
        panic!("not changed");
    };
    assert_eq!(changed.name, "Pro (2027)");
    assert_eq!(changed.seats, 12);
    assert_eq!(changed.features, ["everything"]);
    assert_eq!(changed.monthly_price_cents, before.monthly_price_cents);
    assert_eq!(changed.annual_price_cents, before.annual_price_cents);
    assert_eq!(changed.stripe_price_monthly, before.stripe_price_monthly);
    assert_eq!(changed.trial_days, before.trial_days);
    assert_eq!(changed.created_at, before.created_at);
    assert!(changed.updated_at > before.updated_at);
    assert_eq!(store.plan(&id("pro")).await.unwrap(), Some(changed));

    // Selling monthly only: the annual price and its Stripe price go together.
    let monthly_only = PlanPatch {
        annual_price_cents: Some(None),
        stripe_price_annual: Some(None),
        ..PlanPatch::default()
    };
    let PlanChange::Changed(changed) = update(&*store, "pro", &monthly_only).await else {
        panic!("not changed");
    };
    assert_eq!(changed.price_for(BillingInterval::Year), None);
    assert_eq!(
        store
            .plan(&id("pro"))
            .await
            .unwrap()
            .unwrap()
            .annual_price_cents,
        None
    );

    // A retired plan may be corrected; it stays retired.
    let retired_at = Utc::now().trunc_subsecs(6);
    store
        .retire_plan(&id("pro"), retired_at, audit(AuditEvent::PlanRetired))
        .await
        .unwrap();
    let rename = PlanPatch {
        name: Some("Pro (retired)".to_owned()),
        ..PlanPatch::default()
    };
    let PlanChange::Changed(changed) = update(&*store, "pro", &rename).await else {
        panic!("not changed");
    };
    assert_eq!(changed.retired_at, Some(retired_at));

    assert_eq!(update(&*store, "nope", &rename).await, PlanChange::NotFound);
}

async fn check_invalid_update(store: Arc<dyn Store>) {
    create(&*store, new_plan("pro", 9900)).await;
    let before = store.plan(&id("pro")).await.unwrap().unwrap();
    for (patch, field) in [
        (
            // The annual Stripe price would be left behind.
            PlanPatch {
                annual_price_cents: Some(None),
                ..PlanPatch::default()
            },
            "stripe_price_annual",
        ),
        (
            PlanPatch {
                seats: Some(0),
                name: Some("Zero".to_owned()),
                ..PlanPatch::default()
            },
            "seats",
        ),
        (
            PlanPatch {
                monthly_price_cents: Some(-5),
                ..PlanPatch::default()
            },
            "monthly_price_cents",
        ),
    ] {
        match update(&*store, "pro", &patch).await {
            PlanChange::Invalid(e) => assert_eq!(e.field, field, "{e}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(store.plan(&id("pro")).await.unwrap(), Some(before));
}

async fn check_concurrent_updates(store: Arc<dyn Store>) {
    create(&*store, new_plan("pro", 9900)).await;
    // Open the pool's connections first, so that the updates below really
    // run at once rather than one per fresh connection.
    join_all((0..8).map(|_| {
        let store = store.clone();
        async move { store.plans(true).await.expect("list") }
    }))
    .await;
    // Each patch rewrites the whole row from what it read: without the row
    // lock, a rename that read the row before a seat change committed
    // would write the old seats back (and the reverse). With it, each
    // patch sees the one before, so every answer after the first of each
    // kind carries both kinds of change.
    let patches: Vec<PlanPatch> = (0..16)
        .map(|i| {
            if i % 2 == 0 {
                PlanPatch {
                    name: Some(format!("Pro {i}")),
                    ..PlanPatch::default()
                }
            } else {
                PlanPatch {
                    seats: Some(20 + i),
                    ..PlanPatch::default()
                }
            }
        })
        .collect();
    let outcomes = join_all(patches.iter().map(|patch| {
        let store = store.clone();
        async move {
            store
                .update_plan(&id("pro"), patch, audit(AuditEvent::PlanUpdated))
                .await
        }
    }))
    .await;
    let mut answers = Vec::new();
    for outcome in outcomes {
        let PlanChange::Changed(plan) = outcome.expect("update") else {
            panic!("not changed");
        };
        answers.push(plan);
    }
    // In commit order (updated_at is taken under the lock).
    answers.sort_by_key(|p| p.updated_at);
    let renamed = |p: &seatwarden_actors::domain::Plan| p.name != "Plan pro";
    let reseated = |p: &seatwarden_actors::domain::Plan| p.seats != 3;
    for pair in answers.windows(2) {
        assert!(
            (renamed(&pair[1]) || !renamed(&pair[0]))
                && (reseated(&pair[1]) || !reseated(&pair[0])),
            "an update undid an earlier one: {:?} then {:?}",
            (&pair[0].name, pair[0].seats),
            (&pair[1].name, pair[1].seats)
        );
    }
    let last = answers.last().unwrap();
    assert_eq!(store.plan(&id("pro")).await.unwrap().as_ref(), Some(last));
    assert!(renamed(last) && reseated(last), "{last:?}");
}

async fn check_retire(store: Arc<dyn Store>) {
    create(&*store, new_plan("pro", 9900)).await;
    let first = Utc::now().trunc_subsecs(6);
    let retired = store
        .retire_plan(&id("pro"), first, audit(AuditEvent::PlanRetired))
        .await
        .unwrap()
        .expect("the plan");
    assert_eq!(retired.retired_at, Some(first));
    assert!(retired.is_retired());

    let again = store
        .retire_plan(
            &id("pro"),
            first + Duration::hours(1),
            audit(AuditEvent::PlanRetired),
        )
        .await
        .unwrap()
        .expect("the plan");
    assert_eq!(again, retired);
    assert_eq!(store.plan(&id("pro")).await.unwrap(), Some(retired));
    assert!(ids(&*store, false).await.is_empty());

    let unknown = store
        .retire_plan(&id("nope"), first, audit(AuditEvent::PlanRetired))
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

async fn check_seed(store: Arc<dyn Store>) {
    let defaults = vec![
        new_plan("starter", 2900),
        new_plan("pro", 9900),
        new_plan("enterprise", 29_900),
    ];
    let inserted = store.seed_plans(&defaults).await.unwrap();
    assert_eq!(inserted, [id("starter"), id("pro"), id("enterprise")]);
    assert_eq!(ids(&*store, false).await, ["starter", "pro", "enterprise"]);

    // An administrator edits one and retires another; a restart seeds again.
    let edit = PlanPatch {
        monthly_price_cents: Some(10_900),
        ..PlanPatch::default()
    };
    assert!(matches!(
        update(&*store, "pro", &edit).await,
        PlanChange::Changed(_)
    ));
    store
        .retire_plan(&id("starter"), Utc::now(), audit(AuditEvent::PlanRetired))
        .await
        .unwrap();
    let before: Vec<_> = store.plans(true).await.unwrap();

    let mut next = defaults.clone();
    next.push(new_plan("team", 4900));
    let inserted = store.seed_plans(&next).await.unwrap();
    assert_eq!(inserted, [id("team")]);
    let after = store.plans(true).await.unwrap();
    for plan in &before {
        assert!(after.contains(plan), "{} changed by seeding", plan.id);
    }
    assert_eq!(
        store
            .plan(&id("pro"))
            .await
            .unwrap()
            .unwrap()
            .monthly_price_cents,
        10_900
    );
    assert!(
        store
            .plan(&id("starter"))
            .await
            .unwrap()
            .unwrap()
            .is_retired()
    );
    assert!(store.seed_plans(&next).await.unwrap().is_empty());
    assert!(store.seed_plans(&[]).await.unwrap().is_empty());
}

async fn check_concurrent_seeds(store: Arc<dyn Store>) {
    let defaults: Vec<NewPlan> = (0..5)
        .map(|i| new_plan(&format!("plan-{i}"), 1000 + i))
        .collect();
    let seeds = join_all((0..4).map(|_| {
        let store = store.clone();
        let defaults = defaults.clone();
        async move { store.seed_plans(&defaults).await }
    }))
    .await;
    let mut inserted: Vec<String> = seeds
        .into_iter()
        .flat_map(|s| s.expect("seed"))
        .map(|id| id.to_string())
        .collect();
    inserted.sort();
    assert_eq!(inserted, ["plan-0", "plan-1", "plan-2", "plan-3", "plan-4"]);
    assert_eq!(ids(&*store, false).await.len(), 5);
}
