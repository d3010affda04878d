//! [`Outbox`] on SQLite.
//!
//! Every write goes through the single writer connection, so a claim (one
//! `UPDATE ... RETURNING`) is atomic within this process, and SQLite's
//! write lock makes it atomic across processes sharing the file: two
//! claimers can never take the same message.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::ports::{MailFilter, MailPage, NewMail, Outbox, QueuedMail, StoreError};
use sqlx::Sqlite;
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{
    Arg, DbTime, DbUuid, QueuedRow, claim_outbox_sql, claimed, db_error, email_log, insert_outbox,
    mail_page, mark_failed, mark_sent, queued_mail_columns, release_mail, schedule_retry,
};

/// The single writer needs no row locks.
const CLAIM: &str = claim_outbox_sql!("");

/// Whether a fenced update found its row.
fn changed(
    result: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
) -> Result<bool, StoreError> {
    Ok(result.map_err(db_error)?.rows_affected() > 0)
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue(&self, mail: &NewMail) -> Result<(), StoreError> {
        insert_outbox::<Sqlite>(mail)
            .execute(&self.writer)
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
                .fetch_all(&self.writer)
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
            mark_sent::<Sqlite>(id, claim, at)
                .execute(&self.writer)
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
            schedule_retry::<Sqlite>(id, claim, error, next_attempt_at)
                .execute(&self.writer)
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
            mark_failed::<Sqlite>(id, claim, error, at)
                .execute(&self.writer)
                .await,
        )
    }

    async fn release(&self, id: Uuid, claim: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        changed(
            release_mail::<Sqlite>(id, claim, now)
                .execute(&self.writer)
                .await,
        )
    }

    async fn email_log(&self, filter: &MailFilter) -> Result<MailPage, StoreError> {
        mail_page(
            email_log::<Sqlite>(filter).fetch_all(&self.reader).await,
            filter,
        )
    }
}
