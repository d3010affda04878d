//! The embedded store: one SQLite file, shared by every process that opens
//! it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{
    ActionAudit, AuditEntry, EndReason, License, LicenseId, LicenseUpdate, NewLicense, Org, OrgId,
    SessionId, SessionRecord,
};
use seatwarden_actors::ports::{
    EndOutcome, LicenseChange, LicenseStore, SessionStore, StoreError, SweepCandidate,
};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use super::{
    AUDIT_OF_LICENSE, AuditRow, DbTime, DbUuid, LICENSE_BY_ID, LICENSE_BY_KEY_HASH,
    LICENSE_CHANGES, LICENSE_REVISION, LicenseChangeRow, LicenseRow, ORG_BY_ID,
    ORGS_WITH_OPEN_SESSIONS, OrgRow, SESSION_BY_ID, SessionRow, SweepRow, all, db_error,
    end_session_in, insert_audit, insert_license, insert_org, merge_heartbeats, migrate_error,
    new_license, new_org, one, start_session_in, sweep_columns, update_license_in,
    update_license_sql,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another process's write lock before
/// failing with `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections for reads. WAL lets readers run alongside the writer.
const READERS: u32 = 4;

/// [`Store`] on SQLite.
///
/// # Concurrency
///
/// SQLite allows one writer at a time. To never surface `database is
/// locked`, writes are serialized twice over:
///
/// - **Within this process** every write goes through `writer`, a pool of
///   exactly one connection. Concurrent writers queue for that connection in
///   the pool (in FIFO order, with the pool's acquire timeout) instead of
///   racing for SQLite's lock, so they never meet `SQLITE_BUSY` at all.
///   Reads use `reader`, a separate pool of [`READERS`] connections opened
///   with `query_only`; in WAL mode they see the latest committed state and
///   neither block nor are blocked by the writer.
/// - **Across processes** sharing the file, every connection has a
///   [`BUSY_TIMEOUT`], and every multi-statement write transaction starts
///   with `BEGIN IMMEDIATE`. A deferred `BEGIN` would take a read snapshot
///   first and try to upgrade it to a write lock later; if another process
///   committed in between, SQLite fails that upgrade with `SQLITE_BUSY`
///   immediately, without consulting the busy timeout. `BEGIN IMMEDIATE`
///   takes the write lock up front, where the busy timeout applies.
///   Single-statement writes take the lock at their start and also wait.
///
/// Timestamps are stored as fixed-width UTC RFC 3339 text with microseconds
/// (see [`super`]), so text comparison is time comparison.
///
/// An in-memory database (`sqlite::memory:`) exists only as long as a
/// connection to it is open, and each connection would otherwise get its
/// own; there, one connection serves both reads and writes and is never
/// closed.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if missing) and migrates
    /// the database at `url`, for example `sqlite://./data/seatwarden.db`
    /// or `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("invalid SQLite URL".to_owned()))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let dir = base
            .get_filename()
            .parent()
            .filter(|d| !in_memory && !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the database directory: {e}"))
            })?;
        }

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(db_error)?;
        MIGRATOR.run(&writer).await.map_err(migrate_error)?;

        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READERS)
                .connect_with(base.pragma("query_only", "ON"))
                .await
                .map_err(db_error)?
        };
        Ok(Self { writer, reader })
    }

    /// Starts a write transaction holding SQLite's write lock.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)
    }

    /// A connection for reads, which never waits for the writer.
    async fn read_conn(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.reader.acquire().await.map_err(db_error)
    }
}

super::webhooks::webhook_store_impl!(
    SqliteStore,
    Sqlite,
    writer = writer,
    reader = reader,
    lock = ""
);
super::keys::key_store_impl!(SqliteStore, reader = reader);

super::outbox::outbox_store_impl!(
    SqliteStore,
    Sqlite,
    writer = writer,
    reader = reader,
    lock = ""
);
super::accounts::account_store_impl!(SqliteStore, Sqlite);
super::billing::billing_store_impl!(SqliteStore, Sqlite, UPDATE_LICENSE);
super::deadlines::deadline_store_impl!(SqliteStore, Sqlite, UPDATE_LICENSE, lock = "");
super::orgs::org_store_impl!(SqliteStore, Sqlite);
super::machines::machine_store_impl!(SqliteStore, Sqlite, super::machines::LOCK_LICENSE_SQLITE);
super::admin::admin_store_impl!(SqliteStore, Sqlite, UPDATE_LICENSE);
super::plans::plan_store_impl!(SqliteStore, Sqlite, super::plans::LOCK_PLAN_SQLITE);

const LICENSES_OF_ORG: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE org_id = ?1 ORDER BY created_at, rowid"
);
const HEARTBEAT: &str = "UPDATE sessions \
     SET last_heartbeat_at = max(last_heartbeat_at, ?2), \
         lease_expires_at = max(lease_expires_at, ?3), \
         sweep_at = max(sweep_at, ?3) \
     WHERE id = ?1 AND ended_at IS NULL \
       AND (last_heartbeat_at < ?2 OR lease_expires_at < ?3)";
/// Runs under SQLite's write lock, so the next revision is simply one more
/// than the highest.
const UPDATE_LICENSE: &str =
    update_license_sql!("(SELECT COALESCE(MAX(revision), 0) + 1 FROM licenses)");
/// One writer at a time: no row locks needed for the claim to be atomic.
const CLAIM_SWEEP: &str = concat!(
    "UPDATE sessions SET sweep_at = ?2 WHERE id IN (SELECT id FROM sessions \
     WHERE ended_at IS NULL AND sweep_at <= ?1 ORDER BY sweep_at LIMIT ?3) RETURNING ",
    sweep_columns!()
);
const RESCHEDULE_SWEEP: &str =
    "UPDATE sessions SET sweep_at = ?2 WHERE id = ?1 AND ended_at IS NULL";
const OPEN_SESSIONS_OF_ORG: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = ?1 AND ended_at IS NULL ORDER BY started_at, rowid"
);
const SESSIONS_OF_LICENSE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE license_id = ?1 ORDER BY started_at DESC, rowid DESC"
);

#[async_trait]
impl LicenseStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn create_org(&self, name: &str) -> Result<Org, StoreError> {
        let org = new_org(name);
        insert_org(&org)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(org)
    }

    async fn org(&self, id: OrgId) -> Result<Option<Org>, StoreError> {
        one(sqlx::query_as::<_, OrgRow>(ORG_BY_ID)
            .bind(DbUuid::from(id))
            .fetch_optional(&self.reader)
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
            super::deadlines::schedule_license::<Sqlite>(&mut tx, &license).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(license)
    }

    async fn license(&self, id: LicenseId) -> Result<Option<License>, StoreError> {
        one(sqlx::query_as::<_, LicenseRow>(LICENSE_BY_ID)
            .bind(DbUuid::from(id))
            .fetch_optional(&self.reader)
            .await)
    }

    async fn update_license(
        &self,
        id: LicenseId,
        update: &LicenseUpdate,
    ) -> Result<Option<License>, StoreError> {
        let mut tx = self.write_tx().await?;
        let license = update_license_in::<Sqlite>(&mut tx, UPDATE_LICENSE, id, update).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(license)
    }

    async fn license_by_key_hash(&self, key_hash: &str) -> Result<Option<License>, StoreError> {
        one(sqlx::query_as::<_, LicenseRow>(LICENSE_BY_KEY_HASH)
            .bind(key_hash.to_owned())
            .fetch_optional(&self.reader)
            .await)
    }

    async fn licenses_for_org(&self, org: OrgId) -> Result<Vec<License>, StoreError> {
        all(sqlx::query_as::<_, LicenseRow>(LICENSES_OF_ORG)
            .bind(DbUuid::from(org))
            .fetch_all(&self.reader)
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
            .fetch_all(&self.reader)
            .await)
    }

    async fn license_revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, i64>(LICENSE_REVISION)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn start_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let started = start_session_in::<Sqlite>(&mut tx, session, audit, false).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(started)
    }

    async fn adopt_session(
        &self,
        session: &SessionRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let recorded = start_session_in::<Sqlite>(&mut tx, session, audit, true).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(recorded)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        one(sqlx::query_as::<_, SessionRow>(SESSION_BY_ID)
            .bind(DbUuid::from(id))
            .fetch_optional(&self.reader)
            .await)
    }

    async fn record_heartbeats(
        &self,
        beats: &[(SessionId, DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (id, at, lease_expires_at) in merge_heartbeats(beats) {
            sqlx::query(HEARTBEAT)
                .bind(DbUuid::from(id))
                .bind(DbTime(at))
                .bind(DbTime(lease_expires_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn end_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        reason: EndReason,
        audit: &AuditEntry,
    ) -> Result<Option<EndOutcome>, StoreError> {
        let mut tx = self.write_tx().await?;
        let outcome = end_session_in::<Sqlite>(&mut tx, id, ended_at, reason, audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(outcome)
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        ended_at: DateTime<Utc>,
        audit: &ActionAudit,
    ) -> Result<Option<EndOutcome>, StoreError> {
        let mut tx = self.write_tx().await?;
        let outcome =
            super::orgs::Orgs::<Sqlite>::revoke_session(&mut tx, id, ended_at, audit).await?;
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
            .bind(DbTime(now))
            .bind(DbTime(claim_until))
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await)
    }

    async fn reschedule_sweep(&self, at: &[(SessionId, DateTime<Utc>)]) -> Result<(), StoreError> {
        if at.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (id, when) in at {
            sqlx::query(RESCHEDULE_SWEEP)
                .bind(DbUuid::from(*id))
                .bind(DbTime(*when))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn open_sessions(&self, org: OrgId) -> Result<Vec<SessionRecord>, StoreError> {
        all(sqlx::query_as::<_, SessionRow>(OPEN_SESSIONS_OF_ORG)
            .bind(DbUuid::from(org))
            .fetch_all(&self.reader)
            .await)
    }

    async fn open_sessions_of_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        all(
            sqlx::query_as::<_, SessionRow>(crate::store::OPEN_SESSIONS_OF_LICENSE)
                .bind(DbUuid::from(license))
                .fetch_all(&self.reader)
                .await,
        )
    }

    async fn orgs_with_open_sessions(&self) -> Result<Vec<OrgId>, StoreError> {
        let ids = sqlx::query_scalar::<_, DbUuid>(ORGS_WITH_OPEN_SESSIONS)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(ids.into_iter().map(|id| OrgId(id.0)).collect())
    }

    async fn sessions_for_license(
        &self,
        license: LicenseId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        all(sqlx::query_as::<_, SessionRow>(SESSIONS_OF_LICENSE)
            .bind(DbUuid::from(license))
            .fetch_all(&self.reader)
            .await)
    }

    async fn borrow_session(
        &self,
        id: SessionId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let open = crate::store::borrow_session_in::<Sqlite>(&mut tx, id, until).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(open)
    }

    async fn borrowed_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OrgId, LicenseId, u32)>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        crate::store::borrowed_counts_in::<Sqlite>(&mut conn, now).await
    }

    async fn ended_among(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        let mut ended = Vec::new();
        // SQLite binds at most 32766 parameters; chunks keep far below.
        for chunk in ids.chunks(500) {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT id FROM sessions WHERE ended_at IS NOT NULL AND id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(DbUuid::from(*id));
            }
            query.push(")");
            let rows: Vec<DbUuid> = query
                .build_query_scalar()
                .fetch_all(&self.reader)
                .await
                .map_err(db_error)?;
            ended.extend(rows.into_iter().map(|id| SessionId(id.0)));
        }
        Ok(ended)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        insert_audit(entry)
            .execute(&self.writer)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn audit_for_license(&self, license: LicenseId) -> Result<Vec<AuditEntry>, StoreError> {
        all(sqlx::query_as::<_, AuditRow>(AUDIT_OF_LICENSE)
            .bind(DbUuid::from(license))
            .fetch_all(&self.reader)
            .await)
    }
}
