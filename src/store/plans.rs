//! [`PlanStore`] on both backends.
//!
//! As in [`super::machines`], every statement is dialect-free and each body
//! is written once, generic over the backend, in [`Plans`]; the only
//! per-backend piece is how an update locks the plan's row, which
//! [`plan_store_impl!`] is given: PostgreSQL takes `FOR UPDATE` on it, so
//! that two patches of one plan apply one after the other and each is
//! validated against the row the other left; SQLite runs every write
//! transaction alone (`BEGIN IMMEDIATE`), so the plain read suffices.
//!
//! Listings order by `(monthly_price_cents, id)`. PostgreSQL's `plans.id`
//! has the `"C"` collation, so ids sort bytewise there as they do in
//! SQLite, whatever the database's locale.
//!
//! [`PlanStore`]: seatwarden_actors::ports::PlanStore

use std::marker::PhantomData;

use chrono::{DateTime, SubsecRound, Utc};
use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, NewPlan, Plan, PlanId, PlanPatch,
};
use seatwarden_actors::ports::{PlanChange, StoreError};
use sqlx::types::Json;
use sqlx::{Executor, FromRow, IntoArguments};

use super::accounts::insert_action;
use super::{Arg, Backend, DbTime, all, db_error, now};

macro_rules! plan_columns {
    () => {
        "id, name, currency, monthly_price_cents, annual_price_cents, seats, trial_days, \
         stripe_price_monthly, stripe_price_annual, features, retired_at, created_at, updated_at"
    };
}

/// Locks a plan's row for an update (SQLite: the write lock is held).
pub(crate) const LOCK_PLAN_SQLITE: &str =
    concat!("SELECT ", plan_columns!(), " FROM plans WHERE id = $1");
pub(crate) const LOCK_PLAN_POSTGRES: &str = concat!(
    "SELECT ",
    plan_columns!(),
    " FROM plans WHERE id = $1 FOR UPDATE"
);

const PLAN_BY_ID: &str = concat!("SELECT ", plan_columns!(), " FROM plans WHERE id = $1");
const PLANS: &str = concat!(
    "SELECT ",
    plan_columns!(),
    " FROM plans WHERE ($1 OR retired_at IS NULL) ORDER BY monthly_price_cents, id"
);
const INSERT_PLAN: &str = concat!(
    "INSERT INTO plans (",
    plan_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
/// Seeding: a plan whose id exists is left alone (and, under concurrent
/// seeds on PostgreSQL, waited for rather than failed on).
const SEED_PLAN: &str = concat!(
    "INSERT INTO plans (",
    plan_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (id) DO NOTHING RETURNING id"
);
/// Every field a patch may set, and `updated_at`.
const UPDATE_PLAN: &str = "UPDATE plans SET name = $2, monthly_price_cents = $3, \
     annual_price_cents = $4, stripe_price_monthly = $5, stripe_price_annual = $6, \
     seats = $7, trial_days = $8, features = $9, updated_at = $10 WHERE id = $1";
const RETIRE_PLAN: &str = concat!(
    "UPDATE plans SET retired_at = $2, updated_at = $2 \
     WHERE id = $1 AND retired_at IS NULL RETURNING ",
    plan_columns!()
);

#[derive(FromRow)]
pub(crate) struct PlanRow {
    id: String,
    name: String,
    currency: String,
    monthly_price_cents: i64,
    annual_price_cents: Option<i64>,
    seats: i32,
    trial_days: i32,
    stripe_price_monthly: String,
    stripe_price_annual: Option<String>,
    features: Json<Vec<String>>,
    retired_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn corrupt(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unreadable plan row: {detail}"))
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;
    fn try_from(r: PlanRow) -> Result<Self, StoreError> {
        Ok(Plan {
            id: PlanId::parse(&r.id).map_err(corrupt)?,
            name: r.name,
            currency: r.currency,
            monthly_price_cents: r.monthly_price_cents,
            annual_price_cents: r.annual_price_cents,
            seats: u32::try_from(r.seats).map_err(corrupt)?,
            trial_days: u32::try_from(r.trial_days).map_err(corrupt)?,
            stripe_price_monthly: r.stripe_price_monthly,
            stripe_price_annual: r.stripe_price_annual,
            features: r.features.0,
            retired_at: r.retired_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A small count as the `integer` both schemas keep it in.
fn int(n: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Conflict(format!("{n} is too large for {what}")))
}

/// A new plan as stored at `at`.
fn stored(new: NewPlan, at: DateTime<Utc>) -> Plan {
    Plan {
        id: new.id,
        name: new.name,
        currency: new.currency,
        monthly_price_cents: new.monthly_price_cents,
        annual_price_cents: new.annual_price_cents,
        seats: new.seats,
        trial_days: new.trial_days,
        stripe_price_monthly: new.stripe_price_monthly,
        stripe_price_annual: new.stripe_price_annual,
        features: new.features,
        retired_at: None,
        created_at: at,
        updated_at: at,
    }
}

/// A statement ([`INSERT_PLAN`] or [`SEED_PLAN`]) with every column of
/// `plan` bound.
fn bind_plan<DB: Backend, Q: Arg<DB>>(q: Q, plan: &Plan) -> Result<Q, StoreError> {
    Ok(q.arg(plan.id.as_str().to_owned())
        .arg(plan.name.clone())
        .arg(plan.currency.clone())
        .arg(plan.monthly_price_cents)
        .arg(plan.annual_price_cents)
        .arg(int(plan.seats, "seats")?)
        .arg(int(plan.trial_days, "trial_days")?)
        .arg(plan.stripe_price_monthly.clone())
        .arg(plan.stripe_price_annual.clone())
        .arg(Json(plan.features.clone()))
        .arg(plan.retired_at.map(DbTime))
        .arg(DbTime(plan.created_at))
        .arg(DbTime(plan.updated_at)))
}

/// The audit entry's detail: which plan, and what about it.
fn detail(id: &PlanId, more: Option<&str>) -> String {
    match more {
        Some(more) => format!("plan={id};{more}"),
        None => format!("plan={id}"),
    }
}

/// The statement bodies of [`PlanStore`], generic over the backend.
///
/// [`PlanStore`]: seatwarden_actors::ports::PlanStore
pub(crate) struct Plans<DB>(PhantomData<DB>);

impl<DB> Plans<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    PlanRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    async fn write_audit(conn: &mut DB::Connection, audit: &ActionAudit) -> Result<(), StoreError> {
        insert_action::<DB>(audit)
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(db_error)
    }

    pub(crate) async fn plans(
        conn: &mut DB::Connection,
        include_retired: bool,
    ) -> Result<Vec<Plan>, StoreError> {
        all(sqlx::query_as::<DB, PlanRow>(PLANS)
            .arg(include_retired)
            .fetch_all(&mut *conn)
            .await)
    }

    pub(crate) async fn plan(
        conn: &mut DB::Connection,
        id: &PlanId,
    ) -> Result<Option<Plan>, StoreError> {
        Self::read(conn, PLAN_BY_ID, id).await
    }

    async fn read(
        conn: &mut DB::Connection,
        sql: &'static str,
        id: &PlanId,
    ) -> Result<Option<Plan>, StoreError> {
        let row: Option<PlanRow> = sqlx::query_as::<DB, PlanRow>(sql)
            .arg(id.as_str().to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        row.map(Plan::try_from).transpose()
    }

    pub(crate) async fn create_plan(
        conn: &mut DB::Connection,
        new: NewPlan,
        mut audit: ActionAudit,
    ) -> Result<Plan, StoreError> {
        let plan = stored(new, now());
        bind_plan::<DB, _>(sqlx::query::<DB>(INSERT_PLAN), &plan)?
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        audit.detail = Some(detail(&plan.id, None));
        Self::write_audit(conn, &audit).await?;
        Ok(plan)
    }

    pub(crate) async fn update_plan(
        conn: &mut DB::Connection,
        lock_sql: &'static str,
        id: &PlanId,
        patch: &PlanPatch,
        mut audit: ActionAudit,
    ) -> Result<PlanChange, StoreError> {
        let Some(plan) = Self::read(conn, lock_sql, id).await? else {
            return Ok(PlanChange::NotFound);
        };
        let next = match patch.apply(&plan, now()) {
            Ok(next) => next,
            Err(invalid) => return Ok(PlanChange::Invalid(invalid)),
        };
        sqlx::query(UPDATE_PLAN)
            .arg(next.id.as_str().to_owned())
            .arg(next.name.clone())
            .arg(next.monthly_price_cents)
            .arg(next.annual_price_cents)
            .arg(next.stripe_price_monthly.clone())
            .arg(next.stripe_price_annual.clone())
            .arg(int(next.seats, "seats")?)
            .arg(int(next.trial_days, "trial_days")?)
            .arg(Json(next.features.clone()))
            .arg(DbTime(next.updated_at))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let changed = format!("changed={}", patch.changed().join(","));
        audit.detail = Some(detail(id, Some(&changed)));
        Self::write_audit(conn, &audit).await?;
        Ok(PlanChange::Changed(next))
    }

    pub(crate) async fn retire_plan(
        conn: &mut DB::Connection,
        id: &PlanId,
        at: DateTime<Utc>,
        mut audit: ActionAudit,
    ) -> Result<Option<Plan>, StoreError> {
        let retired: Option<PlanRow> = sqlx::query_as::<DB, PlanRow>(RETIRE_PLAN)
            .arg(id.as_str().to_owned())
            .arg(DbTime(at.trunc_subsecs(6)))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        match retired {
            Some(row) => {
                audit.detail = Some(detail(id, None));
                Self::write_audit(conn, &audit).await?;
                Ok(Some(row.try_into()?))
            }
            // Unknown, or retired before: as it is.
            None => Self::read(conn, PLAN_BY_ID, id).await,
        }
    }

    pub(crate) async fn seed_plans(
        conn: &mut DB::Connection,
        plans: &[NewPlan],
    ) -> Result<Vec<PlanId>, StoreError> {
        let at = now();
        let mut inserted = Vec::new();
        for new in plans {
            let plan = stored(new.clone(), at);
            let q = sqlx::query_as::<DB, (String,)>(SEED_PLAN);
            let inserted_id: Option<(String,)> = bind_plan::<DB, _>(q, &plan)?
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
            if inserted_id.is_none() {
                continue;
            }
            let audit = ActionAudit {
                at,
                event: AuditEvent::PlanCreated,
                actor_id: None,
                org_id: None,
                license_id: None,
                client: ClientInfo::default(),
                detail: Some(detail(&plan.id, Some("source=config"))),
            };
            Self::write_audit(conn, &audit).await?;
            inserted.push(plan.id);
        }
        Ok(inserted)
    }
}

/// `impl PlanStore for $store`, with `$lock` the statement that reads a
/// plan's row under a lock on this backend; `$store` has `write_tx()` and
/// `read_conn()` as for [`super::accounts::account_store_impl`].
macro_rules! plan_store_impl {
    ($store:ty, $db:ty, $lock:expr) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::PlanStore for $store {
            async fn plans(
                &self,
                include_retired: bool,
            ) -> Result<Vec<seatwarden_actors::domain::Plan>, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::plans::Plans::<$db>::plans(&mut conn, include_retired).await
            }

            async fn plan(
                &self,
                id: &seatwarden_actors::domain::PlanId,
            ) -> Result<
                Option<seatwarden_actors::domain::Plan>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::plans::Plans::<$db>::plan(&mut conn, id).await
            }

            async fn create_plan(
                &self,
                plan: seatwarden_actors::domain::NewPlan,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::Plan, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out =
                    $crate::store::plans::Plans::<$db>::create_plan(&mut tx, plan, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn update_plan(
                &self,
                id: &seatwarden_actors::domain::PlanId,
                patch: &seatwarden_actors::domain::PlanPatch,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::ports::PlanChange, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::plans::Plans::<$db>::update_plan(
                    &mut tx, $lock, id, patch, audit,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn retire_plan(
                &self,
                id: &seatwarden_actors::domain::PlanId,
                at: chrono::DateTime<chrono::Utc>,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<
                Option<seatwarden_actors::domain::Plan>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut tx = self.write_tx().await?;
                let out =
                    $crate::store::plans::Plans::<$db>::retire_plan(&mut tx, id, at, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn seed_plans(
                &self,
                plans: &[seatwarden_actors::domain::NewPlan],
            ) -> Result<Vec<seatwarden_actors::domain::PlanId>, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::plans::Plans::<$db>::seed_plans(&mut tx, plans).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }
        }
    };
}
pub(crate) use plan_store_impl;
