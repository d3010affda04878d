//! [`Outbox`](seatwarden_actors::ports::Outbox) on both backends, written
//! once: [`outbox_store_impl!`] emits the impl for a store type, given the
//! pools it writes and reads through and how a claim locks its rows.
//!
//! The statements live in the parent module (`insert_outbox`, `claimed`,
//! `mark_sent`, ...); they are dialect-free but for the claim's lock:
//!
//! - **PostgreSQL:** several nodes claim from one table. The claim locks
//!   the rows it takes with `FOR UPDATE SKIP LOCKED`, so concurrent
//!   claimers take disjoint sets without waiting on each other, and a row
//!   another claim committed is re-checked against the due time it now has
//!   (a lease in the future), so it is skipped too.
//! - **SQLite:** every write goes through the single writer connection, so
//!   a claim (one `UPDATE ... RETURNING`) is atomic within this process,
//!   and SQLite's write lock makes it atomic across processes sharing the
//!   file: no row locks are needed.
//!
//! Every settling write (sent, retry, failed, release) is fenced by the
//! claim token and answers whether it found its row.

/// `impl Outbox for $store`: writes through `self.$writer`, reads the email
/// log through `self.$reader`, claims with `$lock` appended to the claim's
/// row selection.
macro_rules! outbox_store_impl {
    ($store:ty, $db:ty, writer = $writer:ident, reader = $reader:ident, lock = $lock:literal) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::Outbox for $store {
            async fn enqueue(
                &self,
                mail: &seatwarden_actors::ports::NewMail,
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                $crate::store::insert_outbox::<$db>(mail)
                    .execute(&self.$writer)
                    .await
                    .map(drop)
                    .map_err($crate::store::db_error)
            }

            async fn claim(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<
                Vec<seatwarden_actors::ports::QueuedMail>,
                seatwarden_actors::ports::StoreError,
            > {
                use $crate::store::Arg;
                const CLAIM: &str = $crate::store::claim_outbox_sql!($lock);
                $crate::store::claimed(
                    sqlx::query_as::<_, $crate::store::QueuedRow>(CLAIM)
                        .arg($crate::store::DbTime(now))
                        .arg($crate::store::DbTime(lease_until))
                        .arg(i64::from(limit))
                        .arg($crate::store::DbUuid(uuid::Uuid::new_v4()))
                        .fetch_all(&self.$writer)
                        .await,
                )
            }

            async fn mark_sent(
                &self,
                id: uuid::Uuid,
                claim: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::mark_sent::<$db>(id, claim, at)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn schedule_retry(
                &self,
                id: uuid::Uuid,
                claim: uuid::Uuid,
                error: &str,
                next_attempt_at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::schedule_retry::<$db>(id, claim, error, next_attempt_at)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn mark_failed(
                &self,
                id: uuid::Uuid,
                claim: uuid::Uuid,
                error: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::mark_failed::<$db>(id, claim, error, at)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn release(
                &self,
                id: uuid::Uuid,
                claim: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let done = $crate::store::release_mail::<$db>(id, claim, now)
                    .execute(&self.$writer)
                    .await;
                Ok(done.map_err($crate::store::db_error)?.rows_affected() > 0)
            }

            async fn email_log(
                &self,
                filter: &seatwarden_actors::ports::MailFilter,
            ) -> Result<seatwarden_actors::ports::MailPage, seatwarden_actors::ports::StoreError>
            {
                $crate::store::mail_page(
                    $crate::store::email_log::<$db>(filter)
                        .fetch_all(&self.$reader)
                        .await,
                    filter,
                )
            }

            async fn backlog(
                &self,
            ) -> Result<seatwarden_actors::ports::OutboxBacklog, seatwarden_actors::ports::StoreError>
            {
                let (pending, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) =
                    sqlx::query_as($crate::store::OUTBOX_BACKLOG)
                        .fetch_one(&self.$reader)
                        .await
                        .map_err($crate::store::db_error)?;
                Ok(seatwarden_actors::ports::OutboxBacklog {
                    pending: u64::try_from(pending).unwrap_or(0),
                    oldest,
                })
            }
        }
    };
}

pub(crate) use outbox_store_impl;
