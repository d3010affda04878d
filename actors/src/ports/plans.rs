//! The plan catalogue: seeded from configuration, edited by platform
//! administrators, read by everyone (and by checkout).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{ActionAudit, InvalidPlan, NewPlan, Plan, PlanId, PlanPatch};

/// What [`PlanStore::update_plan`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanChange {
    /// The plan as changed.
    Changed(Plan),
    /// No plan has that id; nothing was written.
    NotFound,
    /// The plan with the patch applied would break a rule; nothing was
    /// written.
    Invalid(InvalidPlan),
}

/// The durable catalogue of plans.
///
/// # Contract
///
/// - **Plans are never deleted.** A retired plan stays readable by id, so
///   that subscriptions on it can show what they bought.
/// - **Listings are ordered** by monthly price, then id (ascending).
/// - **Changes are audited in their transaction.** Create, update and
///   retire take the administrator's [`ActionAudit`] (the store sets its
///   `detail` to name the plan) and write it with the change, or not at
///   all when nothing changed. Seeding writes a `PLAN_CREATED` entry with
///   no actor for each plan it inserts.
/// - **Seeding never overwrites.** [`seed_plans`](PlanStore::seed_plans)
///   inserts the plans whose id is missing and leaves every existing row,
///   retired or edited, as it is: configuration seeds the catalogue, the
///   database is the truth afterwards. Concurrent seeds (nodes starting
///   together) insert each plan once.
/// - **Timestamps** are the store's clock at microsecond precision:
///   `created_at` and `updated_at` on insert, `updated_at` on each update.
///   Retiring sets `retired_at` (and `updated_at`) to the given time.
#[async_trait]
pub trait PlanStore: Send + Sync + 'static {
    /// Every plan, retired ones only when `include_retired`, by monthly
    /// price then id.
    async fn plans(&self, include_retired: bool) -> Result<Vec<Plan>, StoreError>;

    /// One plan, retired or not.
    async fn plan(&self, id: &PlanId) -> Result<Option<Plan>, StoreError>;

    /// Inserts a plan (valid: the caller ran [`NewPlan::validate`]) and its
    /// audit entry. `Conflict` when a plan (retired or not) has its id.
    async fn create_plan(&self, plan: NewPlan, audit: ActionAudit) -> Result<Plan, StoreError>;

    /// Applies `patch` to the plan under a lock on its row, so that
    /// concurrent patches apply one after the other and the result of
    /// each is validated whole ([`PlanPatch::apply`]). A retired plan may
    /// be changed too; it stays retired.
    async fn update_plan(
        &self,
        id: &PlanId,
        patch: &PlanPatch,
        audit: ActionAudit,
    ) -> Result<PlanChange, StoreError>;

    /// Retires the plan at `at`: `None` for an unknown id. Idempotent: a
    /// plan retired already keeps its first `retired_at`, is returned as
    /// it is, and no audit entry is written for the repeat.
    async fn retire_plan(
        &self,
        id: &PlanId,
        at: DateTime<Utc>,
        audit: ActionAudit,
    ) -> Result<Option<Plan>, StoreError>;

    /// Inserts each of `plans` whose id no row has, in one transaction;
    /// the ids inserted, in the order given.
    async fn seed_plans(&self, plans: &[NewPlan]) -> Result<Vec<PlanId>, StoreError>;
}
