//! [`DeadlineStore`](seatwarden_actors::ports::DeadlineStore) on both
//! backends, written once, and the scheduling that the license and
//! subscription writes call inside their own transactions.
//!
//! Claims lock their rows as the webhook inbox does (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL; nothing on SQLite, whose single writer serializes
//! claims). Completing a deadline updates its row first, fenced by the
//! claim's token, and commits the effect in the same transaction: a
//! claimer whose deadline was claimed by another after its lease ended, or
//! was moved or cancelled meanwhile, writes nothing at all.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use seatwarden_actors::domain::{License, Subscription, SubscriptionStatus};
use seatwarden_actors::ports::{
    ClaimedDeadline, Deadline, DeadlineEffect, DeadlineKind, StoreError,
};
use sqlx::{Executor, FromRow, IntoArguments};

use super::accounts::insert_action;
use super::{Arg, Backend, DbTime, DbUuid, LicenseRow, RevokedRow, db_error, insert_outbox_once};

macro_rules! deadline_columns {
    () => {
        "kind, subject, due_at, fired_at, attempts, last_error, claim_token"
    };
}
pub(crate) use deadline_columns;

/// The claim: due rows not held by a live claim or a pending retry, one
/// more attempt, held until the lease ends, a fresh token. Bind now, the
/// warning horizon (now + lead), lease end, limit, token.
macro_rules! claim_deadlines_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE deadlines SET attempts = attempts + 1, not_before = $3, claim_token = $5 \
             WHERE (kind, subject) IN (SELECT kind, subject FROM deadlines \
             WHERE fired_at IS NULL AND due_at <= $2 \
             AND (kind = 'expiry_warning' OR due_at <= $1) \
             AND (not_before IS NULL OR not_before <= $1) \
             ORDER BY due_at LIMIT $4",
            $lock,
            ") RETURNING ",
            $crate::store::deadlines::deadline_columns!()
        )
    };
}
pub(crate) use claim_deadlines_sql;

/// (Re)schedules one deadline. Moving it re-arms it (pending, no attempts,
/// no claim: a claimer of the old moment can no longer complete it);
/// scheduling it at the moment it already has changes nothing, so a fired
/// deadline stays fired.
const SCHEDULE: &str = "INSERT INTO deadlines (kind, subject, due_at) VALUES ($1, $2, $3) \
     ON CONFLICT (kind, subject) DO UPDATE SET due_at = excluded.due_at, fired_at = NULL, \
     attempts = 0, last_error = NULL, claim_token = NULL, not_before = NULL \
     WHERE deadlines.due_at <> excluded.due_at";
/// Cancels a pending deadline; a fired one stays, as history.
const CANCEL: &str = "DELETE FROM deadlines WHERE kind = $1 AND subject = $2 AND fired_at IS NULL";
const COMPLETE: &str = "UPDATE deadlines SET fired_at = $4, claim_token = NULL, not_before = NULL \
     WHERE kind = $1 AND subject = $2 AND claim_token = $3 AND fired_at IS NULL RETURNING subject";
const FAIL: &str = "UPDATE deadlines SET last_error = $4, not_before = $5, fired_at = $6, \
     claim_token = NULL WHERE kind = $1 AND subject = $2 AND claim_token = $3 \
     AND fired_at IS NULL RETURNING subject";
/// A trial's end as the provider reports it, applied only while the
/// record still says trialing (an event may have got there first).
const END_TRIAL: &str = "UPDATE subscriptions SET status = $2, updated_at = $3 \
     WHERE id = $1 AND status = 'trialing'";
/// The earliest pending deadline not held back, of the warnings or of the
/// rest (bind now, then the kind test's value).
const NEXT_FREE: &str = "SELECT MIN(due_at) FROM deadlines WHERE fired_at IS NULL \
     AND (not_before IS NULL OR not_before <= $1) AND (kind = 'expiry_warning') = $2";
/// The earliest moment a held-back deadline is released.
const NEXT_HELD: &str =
    "SELECT MIN(not_before) FROM deadlines WHERE fired_at IS NULL AND not_before > $1";
const OF_SUBJECT: &str = concat!(
    "SELECT ",
    deadline_columns!(),
    " FROM deadlines WHERE subject = $1 ORDER BY kind"
);

#[derive(sqlx::FromRow)]
pub(crate) struct DeadlineRow {
    kind: String,
    subject: String,
    due_at: DateTime<Utc>,
    fired_at: Option<DateTime<Utc>>,
    attempts: i32,
    last_error: Option<String>,
    claim_token: Option<DbUuid>,
}

impl TryFrom<DeadlineRow> for Deadline {
    type Error = StoreError;

    fn try_from(r: DeadlineRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!(
                "unreadable deadline {}/{}: {what}",
                r.kind, r.subject
            ))
        };
        Ok(Deadline {
            kind: r.kind.parse().map_err(|_| corrupt("kind"))?,
            attempts: u32::try_from(r.attempts).map_err(|_| corrupt("attempts"))?,
            subject: r.subject,
            due_at: r.due_at,
            last_error: r.last_error,
            fired_at: r.fired_at,
        })
    }
}

/// Claimed rows, earliest first (a claim's `RETURNING` has no order).
pub(crate) fn claimed(
    fetched: Result<Vec<DeadlineRow>, sqlx::Error>,
) -> Result<Vec<ClaimedDeadline>, StoreError> {
    let mut claimed = Vec::new();
    for row in fetched.map_err(db_error)? {
        let claim = row.claim_token.as_ref().map(|t| t.0).ok_or_else(|| {
            StoreError::Corrupt(format!("claimed deadline {} has no token", row.subject))
        })?;
        claimed.push(ClaimedDeadline {
            deadline: Deadline::try_from(row)?,
            claim,
        });
    }
    claimed.sort_by(|a, b| {
        (a.deadline.due_at, a.deadline.kind.as_str())
            .cmp(&(b.deadline.due_at, b.deadline.kind.as_str()))
    });
    Ok(claimed)
}

/// Schedules `kind` for `subject` at `due`, or cancels it when `None`.
async fn set<DB>(
    conn: &mut DB::Connection,
    kind: DeadlineKind,
    subject: String,
    due: Option<DateTime<Utc>>,
) -> Result<(), StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let q = match due {
        Some(at) => sqlx::query(SCHEDULE)
            .arg(kind.as_str().to_owned())
            .arg(subject)
            .arg(DbTime(at)),
        None => sqlx::query(CANCEL)
            .arg(kind.as_str().to_owned())
            .arg(subject),
    };
    q.execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}

/// A license's deadlines, as its expiry now says: inside the
/// transaction that wrote the license.
pub(crate) async fn schedule_license<DB>(
    conn: &mut DB::Connection,
    license: &License,
) -> Result<(), StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let subject = license.id.to_string();
    for kind in [DeadlineKind::Expiry, DeadlineKind::ExpiryWarning] {
        set::<DB>(conn, kind, subject.clone(), license.expires_at).await?;
    }
    Ok(())
}

/// A subscription's deadlines, as its grace period and trial now say:
/// inside the transaction that wrote the subscription.
pub(crate) async fn schedule_subscription<DB>(
    conn: &mut DB::Connection,
    s: &Subscription,
) -> Result<(), StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    set::<DB>(conn, DeadlineKind::GraceEnd, s.id.clone(), s.grace_ends_at).await?;
    let trial = s
        .trial_end
        .filter(|_| s.status == SubscriptionStatus::Trialing);
    set::<DB>(conn, DeadlineKind::TrialEnd, s.id.clone(), trial).await
}

/// The statement bodies, generic over the backend.
pub(crate) struct Deadlines<DB>(PhantomData<DB>);

impl<DB> Deadlines<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DeadlineRow: for<'r> FromRow<'r, DB::Row>,
    LicenseRow: for<'r> FromRow<'r, DB::Row>,
    RevokedRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (Option<DateTime<Utc>>,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    /// Inside the caller's write transaction, which it commits only on
    /// `Ok(true)`.
    pub(crate) async fn complete(
        conn: &mut DB::Connection,
        update_license_sql: &'static str,
        c: &ClaimedDeadline,
        effect: &DeadlineEffect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let fenced: Option<(String,)> = sqlx::query_as::<DB, (String,)>(COMPLETE)
            .arg(c.deadline.kind.as_str().to_owned())
            .arg(c.deadline.subject.clone())
            .arg(DbUuid(c.claim))
            .arg(DbTime(now))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        if fenced.is_none() {
            return Ok(false);
        }
        if let Some((id, update)) = &effect.license
            && super::update_license_in::<DB>(conn, update_license_sql, *id, update)
                .await?
                .is_none()
        {
            return Err(StoreError::NotFound(format!("license {id}")));
        }
        if let Some((id, status)) = &effect.trial_over {
            sqlx::query(END_TRIAL)
                .arg(id.clone())
                .arg(status.as_str().to_owned())
                .arg(DbTime(now))
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        for audit in &effect.audits {
            insert_action::<DB>(audit)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        for mail in &effect.mail {
            insert_outbox_once::<DB>(mail)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(true)
    }

    pub(crate) async fn fail(
        conn: &mut DB::Connection,
        c: &ClaimedDeadline,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done: Option<(String,)> = sqlx::query_as::<DB, (String,)>(FAIL)
            .arg(c.deadline.kind.as_str().to_owned())
            .arg(c.deadline.subject.clone())
            .arg(DbUuid(c.claim))
            .arg(error.to_owned())
            .arg(retry_at.map(DbTime))
            .arg(retry_at.is_none().then_some(DbTime(now)))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(done.is_some())
    }

    pub(crate) async fn next(
        conn: &mut DB::Connection,
        now: DateTime<Utc>,
        warning_lead: Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let min = |sql: &'static str, warnings: Option<bool>| {
            let q = sqlx::query_as::<DB, (Option<DateTime<Utc>>,)>(sql).arg(DbTime(now));
            match warnings {
                Some(w) => q.arg(w),
                None => q,
            }
        };
        let (others,) = min(NEXT_FREE, Some(false))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let (warnings,) = min(NEXT_FREE, Some(true))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let (held,) = min(NEXT_HELD, None)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let lead = TimeDelta::from_std(warning_lead).unwrap_or(TimeDelta::MAX);
        let warnings = warnings.map(|due| due.checked_sub_signed(lead).unwrap_or(due));
        Ok([others, warnings, held].into_iter().flatten().min())
    }

    pub(crate) async fn of_subject(
        conn: &mut DB::Connection,
        subject: &str,
    ) -> Result<Vec<Deadline>, StoreError> {
        super::all(
            sqlx::query_as::<DB, DeadlineRow>(OF_SUBJECT)
                .arg(subject.to_owned())
                .fetch_all(&mut *conn)
                .await,
        )
    }
}

/// `impl DeadlineStore for $store`, through its `write_tx` and `read_conn`;
/// `$update` is the backend's `update_license` statement, `$lock` what a
/// claim appends to its row selection.
macro_rules! deadline_store_impl {
    ($store:ty, $db:ty, $update:expr, lock = $lock:literal) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::DeadlineStore for $store {
            async fn claim_deadlines(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                warning_lead: std::time::Duration,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<
                Vec<seatwarden_actors::ports::ClaimedDeadline>,
                seatwarden_actors::ports::StoreError,
            > {
                use $crate::store::Arg;
                const CLAIM: &str = $crate::store::deadlines::claim_deadlines_sql!($lock);
                let lead = chrono::TimeDelta::from_std(warning_lead).unwrap_or(chrono::TimeDelta::MAX);
                let horizon = now.checked_add_signed(lead).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                let mut tx = self.write_tx().await?;
                let claimed = $crate::store::deadlines::claimed(
                    sqlx::query_as::<_, $crate::store::deadlines::DeadlineRow>(CLAIM)
                        .arg($crate::store::DbTime(now))
                        .arg($crate::store::DbTime(horizon))
                        .arg($crate::store::DbTime(lease_until))
                        .arg(i64::from(limit))
                        .arg($crate::store::DbUuid(uuid::Uuid::new_v4()))
                        .fetch_all(&mut *tx)
                        .await,
                )?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(claimed)
            }

            async fn complete_deadline(
                &self,
                claimed: &seatwarden_actors::ports::ClaimedDeadline,
                effect: &seatwarden_actors::ports::DeadlineEffect,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let done = $crate::store::deadlines::Deadlines::<$db>::complete(
                    &mut tx, $update, claimed, effect, now,
                )
                .await?;
                if done {
                    tx.commit().await.map_err($crate::store::db_error)?;
                }
                Ok(done)
            }

            async fn fail_deadline(
                &self,
                claimed: &seatwarden_actors::ports::ClaimedDeadline,
                error: &str,
                retry_at: Option<chrono::DateTime<chrono::Utc>>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let done = $crate::store::deadlines::Deadlines::<$db>::fail(
                    &mut tx, claimed, error, retry_at, now,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(done)
            }

            async fn next_deadline(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                warning_lead: std::time::Duration,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::deadlines::Deadlines::<$db>::next(&mut conn, now, warning_lead).await
            }

            async fn deadlines_of(
                &self,
                subject: &str,
            ) -> Result<Vec<seatwarden_actors::ports::Deadline>, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::deadlines::Deadlines::<$db>::of_subject(&mut conn, subject).await
            }
        }
    };
}

pub(crate) use deadline_store_impl;
