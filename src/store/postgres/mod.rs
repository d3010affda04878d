//! The production store: one PostgreSQL database shared by every server
//! process.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{
    ActionAudit, AuditEntry, EndReason, License, LicenseId, LicenseStatus, LicenseUpdate,
    NewLicense, Org, OrgId, SessionId, SessionRecord,
};
use seatwarden_actors::ports::{
    EndOutcome, LicenseChange, LicenseStore, SessionStore, StoreError, SweepCandidate,
};
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use uuid::Uuid;

use super::{
    ADOPT_SESSION_ONE_STATEMENT, AUDIT_OF_LICENSE, Arg, AuditRow, DbTime, DbUuid,
    END_SESSION_ONE_STATEMENT, LICENSE_BY_ID, LICENSE_BY_KEY_HASH, LICENSE_CHANGES,
    LICENSE_REVISION, LICENSE_STATUS, LicenseChangeRow, LicenseRow, ORG_BY_ID,
    ORGS_WITH_OPEN_SESSIONS, OrgRow, SESSION_BY_ID, START_SESSION_ONE_STATEMENT, SessionRow,
    SweepRow, all, bind_audit, bind_session, db_error, insert_audit, insert_license, insert_org,
    merge_heartbeats, migrate_error, new_license, new_org, one, start_refused, sweep_columns,
    update_license_in, update_license_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Store`] on PostgreSQL.
///
/// Several server processes may share the database. Migrations run at
/// start-up under sqlx's advisory lock, so processes starting together
/// apply them once. Races on a session are settled by row locks: ending a
/// session is an `UPDATE ... WHERE ended_at IS NULL`, which a concurrent
/// caller waits on and then re-evaluates against the committed row, so
/// exactly one caller sees it open. Heartbeat batches lock their rows in id
/// order before updating, so two batches never deadlock.
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects with a pool of at most `max_connections` and migrates the
    /// database at `url` (`postgres://user:password@host:port/db`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(db_error)?;
        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        Ok(Self { pool })
    }

    /// Starts a transaction (row locks come from its statements).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(db_error)
    }

    /// A pooled connection for reads.
    async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        self.pool.acquire().await.map_err(db_error)
    }
}

super::webhooks::webhook_store_impl!(
    PostgresStore,
    Postgres,
    writer = pool,
    reader = pool,
    lock = " FOR UPDATE SKIP LOCKED"
);
super::keys::key_store_impl!(PostgresStore, reader = pool);

super::outbox::outbox_store_impl!(
    PostgresStore,
    Postgres,
    writer = pool,
    reader = pool,
    lock = " FOR UPDATE SKIP LOCKED"
);
super::accounts::account_store_impl!(PostgresStore, Postgres);
super::billing::billing_store_impl!(PostgresStore, Postgres, UPDATE_LICENSE);
super::deadlines::deadline_store_impl!(
    PostgresStore,
    Postgres,
    UPDATE_LICENSE,
    lock = " FOR UPDATE SKIP LOCKED"
);
super::orgs::org_store_impl!(PostgresStore, Postgres);
super::machines::machine_store_impl!(
    PostgresStore,
    Postgres,
    super::machines::LOCK_LICENSE_POSTGRES
);
super::admin::admin_store_impl!(PostgresStore, Postgres, UPDATE_LICENSE);
super::plans::plan_store_impl!(PostgresStore, Postgres, super::plans::LOCK_PLAN_POSTGRES);

const LICENSES_OF_ORG: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE org_id = $1 ORDER BY created_at, id"
);
const LOCK_OPEN_SESSIONS: &str = "SELECT id FROM sessions \
     WHERE id = ANY($1) AND ended_at IS NULL ORDER BY id FOR UPDATE";
const HEARTBEATS: &str = "UPDATE sessions AS s \
     SET last_heartbeat_at = GREATEST(s.last_heartbeat_at, b.at), \
         lease_expires_at = GREATEST(s.lease_expires_at, b.lease_expires_at), \
         sweep_at = GREATEST(s.sweep_at, b.lease_expires_at) \
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[]) \
          AS b(id, at, lease_expires_at) \
     WHERE s.id = b.id AND s.ended_at IS NULL \
       AND (s.last_heartbeat_at < b.at OR s.lease_expires_at < b.lease_expires_at)";
const UPDATE_LICENSE: &str = update_license_sql!("nextval('license_revisions')");
const CLAIM_SWEEP: &str = concat!(
    "UPDATE sessions SET sweep_at = $2 WHERE id IN (SELECT id FROM sessions \
     WHERE ended_at IS NULL AND sweep_at <= $1 ORDER BY sweep_at LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING ",
    sweep_columns!()
);
const RESCHEDULE_SWEEP: &str = "UPDATE sessions AS s SET sweep_at = b.at \
     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS b(id, at) \
     WHERE s.id = b.id AND s.ended_at IS NULL";
const OPEN_SESSIONS_OF_ORG: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = $1 AND ended_at IS NULL ORDER BY started_at, id"
);
const SESSIONS_OF_LICENSE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE license_id = $1 ORDER BY started_at DESC, id DESC"
);

#[async_trait]
impl LicenseStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn create_org(&self, name: &str) -> Result<Org, StoreError> {
        let org = new_org(name);
        insert_org(&org)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(org)
    }

    async fn org(&self, id: OrgId) -> Result<Option<Org>, StoreError> {
        one(sqlx::query_as::<_, OrgRow>(ORG_BY_ID)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await)
    }

    async fn create_license(&self, new: NewLicense) -> Result<License, StoreError> {
        let (license, key_hash) = new_license(new);
        let mut tx = self.write_tx().await?;
        insert_license(&license, &key_hash)?
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if license.expires_at.is_some() {
            super::deadlines::schedule_license::<Postgres>(&mut tx, &license).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(license)
    }

    async fn license(&self, id: LicenseId) -> Result<Option<License>, StoreError> {
        one(sqlx::query_as::<_, LicenseRow>(LICENSE_BY_ID)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await)
    }

    async fn update_license(
        &self,
        id: LicenseId,
        update: &LicenseUpdate,
    ) -> Result<Option<License>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let license = update_license_in::<Postgres>(&mut tx, UPDATE_LICENSE, id, update).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(license)
    }

    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>, StoreError> {
        one(sqlx::query_as::<_, LicenseRow>(LICENSE_BY_KEY_HASH)
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await)
    }

    async fn licenses_for_org(&self, org: OrgId) -> Result<Vec<License>, StoreError> {
        all(sqlx::query_as::<_, LicenseRow>(LICENSES_OF_ORG)
            .bind(org.0)
            .fetch_all(&self.pool)
            .await)
    }

    async fn license_changes_since(
        &self,
        revision: i64,
        limit: u32,
    ) -> Result<Vec<LicenseChange>, StoreError> {
        all(sqlx::query_as::<_, LicenseChangeRow>(LICENSE_CHANGES)
            .bind(revision)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await)
    }

    async fn license_revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, i64>(LICENSE_REVISION)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    /// One statement, so one round trip: see [`START_SESSION_ONE_STATEMENT`].
    async fn start_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let q = bind_session::<Postgres, _>(sqlx::query(START_SESSION_ONE_STATEMENT), session);
        let written = bind_audit::<Postgres, _>(q, audit)
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
        if written > 0 {
            return Ok(true);
        }
        // Nothing written: the rare path reads why.
        let status = sqlx::query_scalar::<_, String>(LICENSE_STATUS)
            .bind(session.license_id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        start_refused(status, session.license_id)
    }

    /// One statement: see [`ADOPT_SESSION_ONE_STATEMENT`].
    async fn adopt_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let q = bind_session::<Postgres, _>(sqlx::query_as(ADOPT_SESSION_ONE_STATEMENT), session);
        let (status, inserted): (Option<String>, i64) = bind_audit::<Postgres, _>(q, audit)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        if inserted > 0 || status.as_deref() == Some(LicenseStatus::Active.as_str()) {
            return Ok(true);
        }
        start_refused(status, session.license_id)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        one(sqlx::query_as::<_, SessionRow>(SESSION_BY_ID)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await)
    }

    async fn record_heartbeats(
        &self,
        beats: &[(SessionId, DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        let merged = merge_heartbeats(beats);
        let ids: Vec<Uuid> = merged.iter().map(|(id, _, _)| id.0).collect();
        let ats: Vec<DateTime<Utc>> = merged.iter().map(|&(_, at, _)| at).collect();
        let leases: Vec<DateTime<Utc>> = merged.iter().map(|&(_, _, lease)| lease).collect();

        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(LOCK_OPEN_SESSIONS)
            .bind(&ids[..])
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(HEARTBEATS)
            .bind(&ids[..])
            .bind(&ats[..])
            .bind(&leases[..])
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn end_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        reason: EndReason,
        audit: &AuditEntry,
    ) -> Result<Option<EndOutcome>, StoreError> {
        // One statement in the common case. When it ends nothing, a
        // concurrent end won the row lock (the statement waited for it and
        // re-checked the committed row), or the session is unknown; a
        // separate read then sees that committed end.
        let q = sqlx::query_as::<_, SessionRow>(END_SESSION_ONE_STATEMENT)
            .arg(DbUuid::from(id))
            .arg(DbTime(ended_at))
            .arg(reason.as_str().to_owned());
        let ended: Option<SessionRecord> = one(bind_audit::<Postgres, _>(q, audit)
            .fetch_optional(&self.pool)
            .await)?;
        if let Some(record) = ended {
            return Ok(Some(EndOutcome::Ended(record)));
        }
        Ok(self.session(id).await?.map(EndOutcome::AlreadyEnded))
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        audit: &ActionAudit,
    ) -> Result<Option<EndOutcome>, StoreError> {
        let mut tx = self.write_tx().await?;
        let outcome =
            super::orgs::Orgs::<Postgres>::revoke_session(&mut tx, id, ended_at, audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(outcome)
    }

    async fn claim_sweep(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SweepCandidate>, StoreError> {
        all(sqlx::query_as::<_, SweepRow>(CLAIM_SWEEP)
            .bind(now)
            .bind(claim_until)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await)
    }

    async fn reschedule_sweep(&self, at: &[(SessionId, DateTime<Utc>)]) -> Result<(), StoreError> {
        if at.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = at.iter().map(|(id, _)| id.0).collect();
        let times: Vec<DateTime<Utc>> = at.iter().map(|&(_, t)| t).collect();
        sqlx::query(RESCHEDULE_SWEEP)
            .bind(&ids[..])
            .bind(&times[..])
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn open_sessions(&self, org: OrgId) -> Result<Vec<SessionRecord>, StoreError> {
        all(sqlx::query_as::<_, SessionRow>(OPEN_SESSIONS_OF_ORG)
            .bind(org.0)
            .fetch_all(&self.pool)
            .await)
    }

    async fn open_sessions_of_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        all(
            sqlx::query_as::<_, SessionRow>(crate::store::OPEN_SESSIONS_OF_LICENSE)
                .bind(license.0)
                .fetch_all(&self.pool)
                .await,
        )
    }

    async fn orgs_with_open_sessions(&self) -> Result<Vec<OrgId>, StoreError> {
        let ids = sqlx::query_scalar::<_, Uuid>(ORGS_WITH_OPEN_SESSIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(ids.into_iter().map(OrgId).collect())
    }

    async fn sessions_for_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        all(sqlx::query_as::<_, SessionRow>(SESSIONS_OF_LICENSE)
            .bind(license.0)
            .fetch_all(&self.pool)
            .await)
    }

    async fn borrow_session(
        &self,
        id: SessionId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        crate::store::borrow_session_in::<Postgres>(&mut conn, id, until).await
    }

    async fn borrowed_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, LicenseId, u32)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        crate::store::borrowed_counts_in::<Postgres>(&mut conn, now).await
    }

    async fn ended_among(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE id = ANY($1) AND ended_at IS NOT NULL",
        )
        .bind(&ids[..])
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(ended.into_iter().map(SessionId).collect())
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        insert_audit(entry)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn audit_for_license(&self, license: LicenseId) -> Result<Vec<AuditEntry>, StoreError> {
        all(sqlx::query_as::<_, AuditRow>(AUDIT_OF_LICENSE)
            .bind(license.0)
            .fetch_all(&self.pool)
            .await)
    }
}
