//! [`Outbox`] on PostgreSQL.
//!
//! Several nodes claim from one table: the claim locks the rows it takes
//! with `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint sets
//! without waiting on each other, and a row another claim committed is
//! re-checked against the due time it now has (a lease in the future), so
//! it is skipped too.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::ports::{MailFilter, MailPage, NewMail, Outbox, QueuedMail, StoreError};
use sqlx::Postgres;
use uuid::Uuid;

use super::PostgresStore;
use crate::store::{
    Arg, DbTime, DbUuid, QueuedRow, claim_outbox_sql, claimed, db_error, email_log, insert_outbox,
    mail_page, mark_failed, mark_sent, queued_mail_columns, release_mail, schedule_retry,
};

const CLAIM: &str = claim_outbox_sql!(" FOR UPDATE SKIP LOCKED");

/// Whether a fenced update found its row.
fn changed(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> Result<bool, StoreError> {
    Ok(result.map_err(db_error)?.rows_affected() > 0)
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn enqueue(&self, mail: &NewMail) -> Result<(), StoreError> {
        insert_outbox::<Postgres>(mail)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        claimed(
            sqlx::query_as::<_, QueuedRow>(CLAIM)
                .arg(DbTime(now))
                .arg(DbTime(lease_until))
                .arg(i64::from(limit))
                .arg(DbUuid(Uuid::new_v4()))
                .fetch_all(&self.pool)
                .await,
        )
    }

    async fn mark_sent(
        &self,
        id: Uuid,
        claim: Uuid,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        changed(
            mark_sent::<Postgres>(id, claim, at)
                .execute(&self.pool)
                .await,
        )
    }

    async fn schedule_retry(
        &self,
        id: Uuid,
        claim: Uuid,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        changed(
            schedule_retry::<Postgres>(id, claim, error, next_attempt_at)
                .execute(&self.pool)
                .await,
        )
    }

    async fn mark_failed(
        &self,
        id: Uuid,
        claim: Uuid,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        changed(
            mark_failed::<Postgres>(id, claim, error, at)
                .execute(&self.pool)
                .await,
        )
    }

    async fn release(&self, id: Uuid, claim: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        changed(
            release_mail::<Postgres>(id, claim, now)
                .execute(&self.pool)
                .await,
        )
    }

    async fn email_log(&self, filter: &MailFilter) -> Result<MailPage, StoreError> {
        mail_page(
            email_log::<Postgres>(filter).fetch_all(&self.pool).await,
            filter,
        )
    }
}
