//! [`SubscriptionStore`](seatwarden_actors::ports::SubscriptionStore) on
//! both backends, written once: [`Billing`] holds the statement bodies,
//! generic over the backend, and [`billing_store_impl!`] wraps them in each
//! backend's transactions and pools.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{
    ActionAudit, License, LicenseId, LicenseUpdate, NewLicense, OrgId, Subscription,
    SubscriptionCounts, SubscriptionGroup, SubscriptionStatus,
};
use seatwarden_actors::ports::{NewMail, StartOutcome, StoreError};
use sqlx::{Executor, FromRow, IntoArguments};

use super::accounts::{UserRow, insert_action};
use super::admin::Admin;
use super::{
    Arg, Backend, DbTime, DbUuid, LicenseRow, OrgRow, RevokedRow, db_error, insert_outbox_once, one,
};

macro_rules! subscription_columns {
    () => {
        "id, org_id, customer_id, plan_id, interval, quantity, status, current_period_start, \
         current_period_end, trial_end, license_id, failed_payments, grace_ends_at, canceled_at, \
         last_event_at, created_at, updated_at"
    };
}

const CUSTOMER_FOR_ORG: &str = "SELECT customer_id FROM billing_customers WHERE org_id = $1";
const ORG_FOR_CUSTOMER: &str = "SELECT org_id FROM billing_customers WHERE customer_id = $1";
const RECORD_CUSTOMER: &str = "INSERT INTO billing_customers (org_id, customer_id, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (org_id) DO NOTHING";
const ORG_EXISTS: &str = "SELECT COUNT(*) FROM orgs WHERE id = $1";
const SUBSCRIPTION: &str = concat!(
    "SELECT ",
    subscription_columns!(),
    " FROM subscriptions WHERE id = $1"
);
const SUBSCRIPTION_FOR_ORG: &str = concat!(
    "SELECT ",
    subscription_columns!(),
    " FROM subscriptions WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
);
const SUBSCRIPTION_FOR_LICENSE: &str = concat!(
    "SELECT ",
    subscription_columns!(),
    " FROM subscriptions WHERE license_id = $1"
);
const INSERT_SUBSCRIPTION: &str = concat!(
    "INSERT INTO subscriptions (",
    subscription_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);

const GROUPS: &str = "SELECT plan_id, interval, status, COUNT(*), COALESCE(SUM(quantity), 0) \
     FROM subscriptions GROUP BY plan_id, interval, status";
const NEW_SINCE: &str = "SELECT COUNT(*) FROM subscriptions WHERE created_at >= $1";
const CHURNED_SINCE: &str = "SELECT COUNT(*) FROM subscriptions WHERE canceled_at >= $1";
const LIVE_AT: &str = "SELECT COUNT(*) FROM subscriptions WHERE created_at < $1 \
     AND (canceled_at IS NULL OR canceled_at >= $1) \
     AND status NOT IN ('incomplete', 'incomplete_expired')";

const CHANGE_SUBSCRIPTION: &str = "UPDATE subscriptions SET plan_id = $2, interval = $3, \
     quantity = $4, status = $5, current_period_start = $6, current_period_end = $7, \
     trial_end = $8, failed_payments = $9, grace_ends_at = $10, canceled_at = $11, \
     last_event_at = $12, updated_at = $13 WHERE id = $1";

#[derive(sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    id: String,
    org_id: DbUuid,
    customer_id: String,
    plan_id: String,
    interval: String,
    quantity: i32,
    status: String,
    current_period_start: DateTime<Utc>,
    current_period_end: DateTime<Utc>,
    trial_end: Option<DateTime<Utc>>,
    license_id: DbUuid,
    failed_payments: i32,
    grace_ends_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    last_event_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;

    fn try_from(r: SubscriptionRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("unreadable subscription {}: {what}", r.id));
        let status: SubscriptionStatus = r.status.parse().map_err(|_| corrupt("status"))?;
        let quantity = u32::try_from(r.quantity).map_err(|_| corrupt("quantity"))?;
        let failed = u32::try_from(r.failed_payments).map_err(|_| corrupt("failed_payments"))?;
        Ok(Subscription {
            id: r.id,
            org_id: OrgId(r.org_id.0),
            customer_id: r.customer_id,
            plan_id: r.plan_id,
            interval: r.interval,
            quantity,
            status,
            current_period_start: r.current_period_start,
            current_period_end: r.current_period_end,
            trial_end: r.trial_end,
            license_id: LicenseId(r.license_id.0),
            failed_payments: failed,
            grace_ends_at: r.grace_ends_at,
            canceled_at: r.canceled_at,
            last_event_at: r.last_event_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A count that must fit a non-negative `integer` column.
fn int(n: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Conflict(format!("{n} is too large for {what}")))
}

/// The statement bodies of [`SubscriptionStore`], generic over the backend.
///
/// [`SubscriptionStore`]: seatwarden_actors::ports::SubscriptionStore
pub(crate) struct Billing<DB>(PhantomData<DB>);

impl<DB> Billing<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    SubscriptionRow: for<'r> FromRow<'r, DB::Row>,
    UserRow: for<'r> FromRow<'r, DB::Row>,
    OrgRow: for<'r> FromRow<'r, DB::Row>,
    LicenseRow: for<'r> FromRow<'r, DB::Row>,
    RevokedRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (i64, i64): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (DbUuid,): FromRow<'r, DB::Row>,
    for<'r> (String, String, String, i64, i64): FromRow<'r, DB::Row>,
{
    pub(crate) async fn customer_for_org(
        conn: &mut DB::Connection,
        org: OrgId,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as::<DB, (String,)>(CUSTOMER_FOR_ORG)
            .arg(DbUuid::from(org))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.map(|(c,)| c))
    }

    pub(crate) async fn org_for_customer(
        conn: &mut DB::Connection,
        customer: &str,
    ) -> Result<Option<OrgId>, StoreError> {
        let row: Option<(DbUuid,)> = sqlx::query_as::<DB, (DbUuid,)>(ORG_FOR_CUSTOMER)
            .arg(customer.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.map(|(id,)| OrgId(id.0)))
    }

    /// Inside the caller's write transaction.
    pub(crate) async fn record_customer(
        conn: &mut DB::Connection,
        org: OrgId,
        customer: &str,
    ) -> Result<String, StoreError> {
        let (exists,): (i64,) = sqlx::query_as::<DB, (i64,)>(ORG_EXISTS)
            .arg(DbUuid::from(org))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("organization {org}")));
        }
        sqlx::query(RECORD_CUSTOMER)
            .arg(DbUuid::from(org))
            .arg(customer.to_owned())
            .arg(DbTime(Utc::now()))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Self::customer_for_org(conn, org)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no customer recorded for {org}")))
    }

    pub(crate) async fn subscription(
        conn: &mut DB::Connection,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        one(sqlx::query_as::<DB, SubscriptionRow>(SUBSCRIPTION)
            .arg(id.to_owned())
            .fetch_optional(&mut *conn)
            .await)
    }

    pub(crate) async fn subscription_for_org(
        conn: &mut DB::Connection,
        org: OrgId,
    ) -> Result<Option<Subscription>, StoreError> {
        one(sqlx::query_as::<DB, SubscriptionRow>(SUBSCRIPTION_FOR_ORG)
            .arg(DbUuid::from(org))
            .fetch_optional(&mut *conn)
            .await)
    }

    pub(crate) async fn subscription_for_license(
        conn: &mut DB::Connection,
        license: LicenseId,
    ) -> Result<Option<Subscription>, StoreError> {
        one(
            sqlx::query_as::<DB, SubscriptionRow>(SUBSCRIPTION_FOR_LICENSE)
                .arg(DbUuid::from(license))
                .fetch_optional(&mut *conn)
                .await,
        )
    }

    pub(crate) async fn counts(
        conn: &mut DB::Connection,
        month_start: DateTime<Utc>,
    ) -> Result<SubscriptionCounts, StoreError> {
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as::<DB, (String, String, String, i64, i64)>(GROUPS)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let mut groups = Vec::with_capacity(rows.len());
        for (plan_id, interval, status, n, quantity) in rows {
            groups.push(SubscriptionGroup {
                status: status.parse().map_err(|_| {
                    StoreError::Corrupt(format!("a subscription has the status {status:?}"))
                })?,
                plan_id,
                interval,
                subscriptions: count(n),
                quantity: count(quantity),
            });
        }
        let since = |sql: &'static str| sqlx::query_as::<DB, (i64,)>(sql).arg(DbTime(month_start));
        let (new,) = since(NEW_SINCE)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let (churned,) = since(CHURNED_SINCE)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let (live,) = since(LIVE_AT)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(SubscriptionCounts {
            groups,
            new_this_month: count(new),
            churned_this_month: count(churned),
            live_at_month_start: count(live),
        })
    }

    /// Inside the caller's write transaction, which it commits.
    pub(crate) async fn change_subscription(
        conn: &mut DB::Connection,
        update_license_sql: &'static str,
        s: &Subscription,
        license: &LicenseUpdate,
        audits: Vec<ActionAudit>,
        mail: Option<&NewMail>,
    ) -> Result<Option<License>, StoreError> {
        let Some(stored) = Self::subscription(conn, &s.id).await? else {
            return Ok(None);
        };
        sqlx::query(CHANGE_SUBSCRIPTION)
            .arg(s.id.clone())
            .arg(s.plan_id.clone())
            .arg(s.interval.clone())
            .arg(int(s.quantity, "quantity")?)
            .arg(s.status.as_str().to_owned())
            .arg(DbTime(s.current_period_start))
            .arg(DbTime(s.current_period_end))
            .arg(s.trial_end.map(DbTime))
            .arg(int(s.failed_payments, "failed_payments")?)
            .arg(s.grace_ends_at.map(DbTime))
            .arg(s.canceled_at.map(DbTime))
            .arg(DbTime(s.last_event_at))
            .arg(DbTime(s.updated_at))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        super::deadlines::schedule_subscription::<DB>(conn, s).await?;
        let Some(updated) =
            super::update_license_in::<DB>(conn, update_license_sql, stored.license_id, license)
                .await?
        else {
            return Err(StoreError::Corrupt(format!(
                "subscription {} names a missing license",
                s.id
            )));
        };
        for mut audit in audits {
            audit.org_id = Some(updated.org_id);
            audit.license_id = Some(updated.id);
            insert_action::<DB>(&audit)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        if let Some(mail) = mail {
            insert_outbox_once::<DB>(mail)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(Some(updated))
    }

    /// Inside the caller's write transaction, which it commits.
    pub(crate) async fn start_subscription(
        conn: &mut DB::Connection,
        subscription: &Subscription,
        license: NewLicense,
        audit: ActionAudit,
        mails: &[NewMail],
    ) -> Result<StartOutcome, StoreError> {
        if let Some(existing) = Self::subscription(conn, &subscription.id).await? {
            return Ok(StartOutcome::AlreadyStarted(existing));
        }
        let license =
            Admin::<DB>::issue_license_as(conn, subscription.license_id, license, audit).await?;
        let mut s = subscription.clone();
        s.license_id = license.id;
        sqlx::query(INSERT_SUBSCRIPTION)
            .arg(s.id.clone())
            .arg(DbUuid::from(s.org_id))
            .arg(s.customer_id.clone())
            .arg(s.plan_id.clone())
            .arg(s.interval.clone())
            .arg(int(s.quantity, "quantity")?)
            .arg(s.status.as_str().to_owned())
            .arg(DbTime(s.current_period_start))
            .arg(DbTime(s.current_period_end))
            .arg(s.trial_end.map(DbTime))
            .arg(DbUuid::from(s.license_id))
            .arg(int(s.failed_payments, "failed_payments")?)
            .arg(s.grace_ends_at.map(DbTime))
            .arg(s.canceled_at.map(DbTime))
            .arg(DbTime(s.last_event_at))
            .arg(DbTime(s.created_at))
            .arg(DbTime(s.updated_at))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        super::deadlines::schedule_subscription::<DB>(conn, &s).await?;
        for mail in mails {
            insert_outbox_once::<DB>(mail)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(StartOutcome::Started {
            subscription: s,
            license,
        })
    }
}

/// `impl SubscriptionStore for $store`, through its `write_tx` and
/// `read_conn`.
macro_rules! billing_store_impl {
    ($store:ty, $db:ty, $update:expr) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::SubscriptionStore for $store {
            async fn customer_for_org(
                &self,
                org: seatwarden_actors::domain::OrgId,
            ) -> Result<Option<String>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::customer_for_org(&mut conn, org).await
            }

            async fn record_customer(
                &self,
                org: seatwarden_actors::domain::OrgId,
                customer: &str,
            ) -> Result<String, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out =
                    $crate::store::billing::Billing::<$db>::record_customer(&mut tx, org, customer)
                        .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn org_for_customer(
                &self,
                customer: &str,
            ) -> Result<Option<seatwarden_actors::domain::OrgId>, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::org_for_customer(&mut conn, customer).await
            }

            async fn start_subscription(
                &self,
                subscription: &seatwarden_actors::domain::Subscription,
                license: seatwarden_actors::domain::NewLicense,
                audit: seatwarden_actors::domain::ActionAudit,
                mails: &[seatwarden_actors::ports::NewMail],
            ) -> Result<seatwarden_actors::ports::StartOutcome, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::billing::Billing::<$db>::start_subscription(
                    &mut tx,
                    subscription,
                    license,
                    audit,
                    mails,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn change_subscription(
                &self,
                subscription: &seatwarden_actors::domain::Subscription,
                license: &seatwarden_actors::domain::LicenseUpdate,
                audits: Vec<seatwarden_actors::domain::ActionAudit>,
                mail: Option<&seatwarden_actors::ports::NewMail>,
            ) -> Result<Option<seatwarden_actors::domain::License>, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::billing::Billing::<$db>::change_subscription(
                    &mut tx,
                    $update,
                    subscription,
                    license,
                    audits,
                    mail,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn subscription(
                &self,
                id: &str,
            ) -> Result<
                Option<seatwarden_actors::domain::Subscription>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::subscription(&mut conn, id).await
            }

            async fn subscription_for_license(
                &self,
                license: seatwarden_actors::domain::LicenseId,
            ) -> Result<
                Option<seatwarden_actors::domain::Subscription>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::subscription_for_license(&mut conn, license)
                    .await
            }

            async fn subscription_counts(
                &self,
                month_start: chrono::DateTime<chrono::Utc>,
            ) -> Result<
                seatwarden_actors::domain::SubscriptionCounts,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::counts(&mut conn, month_start).await
            }

            async fn subscription_for_org(
                &self,
                org: seatwarden_actors::domain::OrgId,
            ) -> Result<
                Option<seatwarden_actors::domain::Subscription>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::billing::Billing::<$db>::subscription_for_org(&mut conn, org).await
            }
        }
    };
}

pub(crate) use billing_store_impl;
