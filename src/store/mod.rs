//! Durable storage: one implementation of [`seatwarden_actors::ports::Store`]
//! per backend, each with its own migrations folder.
//!
//! The backends own their connection set-up, their read queries and their
//! transaction handling, which is where SQLite and PostgreSQL really differ.
//! What is the same for both lives here: how ids and timestamps travel in
//! and out of the database, the row structs and their conversion into
//! domain types, the statements that need no dialect (written with `$N`
//! placeholders, which both drivers accept), the bodies of the two write
//! transactions (which each backend opens and commits in its own way), and
//! the mapping of driver errors.
//!
//! Timestamps are always UTC. PostgreSQL keeps them as `timestamptz`
//! (microseconds); SQLite keeps them as fixed-width RFC 3339 text with six
//! fractional digits and a `Z` (`2024-05-01T12:00:00.123456Z`), so that
//! both backends keep the same precision and plain text comparison and
//! `ORDER BY` in SQLite agree with time order.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use seatwarden_actors::domain::{
    ApiKeyId, AuditEntry, AuditEvent, ClientInfo, EndReason, InvitationId, License, LicenseId,
    LicenseStatus, LicenseUpdate, MachineId, NewLicense, Org, OrgId, SessionId, SessionRecord,
    UserId,
};
use seatwarden_actors::ports::{
    EndOutcome, LicenseChange, MailCursor, MailFilter, MailPage, MailRecord, NewMail, QueuedMail,
    StoreError, SweepCandidate,
};
use sqlx::encode::IsNull;
use sqlx::error::{BoxDynError, ErrorKind};
use sqlx::postgres::{PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

// Column lists, shared by the `SELECT`s of both backends and by the
// `INSERT`s below. Their order is the bind order of `insert_*`.
macro_rules! org_columns {
    () => {
        "id, name, created_at"
    };
}
macro_rules! license_columns {
    () => {
        "id, org_id, key_hint, seats, tier, features, status, expires_at, created_at, \
         offline_grace_secs, offline_overdraft, max_machines, requires_user, max_borrow_hours"
    };
}
macro_rules! session_columns {
    () => {
        "id, license_id, org_id, hardware_id, started_at, last_heartbeat_at, \
         lease_expires_at, ended_at, end_reason, ip, user_agent, metadata, borrowed_until"
    };
}
macro_rules! audit_columns {
    () => {
        "at, event, org_id, license_id, session_id, hardware_id, ip, user_agent, detail, actor_id"
    };
}

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod billing;
pub(crate) mod deadlines;
pub(crate) mod keys;
pub(crate) mod machines;
pub(crate) mod orgs;
pub(crate) mod outbox;
pub(crate) mod plans;
pub mod postgres;
pub mod sqlite;
pub(crate) mod webhooks;

/// Inserts an org; see [`insert_org`].
const INSERT_ORG: &str = concat!(
    "INSERT INTO orgs (",
    org_columns!(),
    ") VALUES ($1, $2, $3)"
);
/// Inserts a license; see [`insert_license`].
const INSERT_LICENSE: &str = concat!(
    "INSERT INTO licenses (",
    license_columns!(),
    ", key_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);
/// Inserts a session; see [`bind_session`]. The sweep first looks at it
/// when its lease runs out (`sweep_at`, bound last).
macro_rules! insert_session_sql {
    () => {
        concat!(
            "INSERT INTO sessions (",
            session_columns!(),
            ", sweep_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )
    };
}
const INSERT_SESSION: &str = insert_session_sql!();
/// Appends an audit entry; see [`insert_audit`].
const INSERT_AUDIT: &str = concat!(
    "INSERT INTO audit_log (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);

/// A new session and its audit entry in one PostgreSQL statement, so that
/// acquire costs one round trip: bind [`bind_session`] then [`bind_audit`].
/// A duplicate id fails the whole statement.
///
/// Both rows are written only while the license is active, checked under a
/// share lock on the license row: a suspension (which ends open sessions in
/// the same transaction that changes the status) either commits first, and
/// this writes nothing, or waits for this and then ends the new session too.
/// Nothing is ever left open on a license that no longer grants seats.
pub(crate) const START_SESSION_ONE_STATEMENT: &str = concat!(
    start_session_cte!(""),
    " INSERT INTO audit_log (",
    audit_columns!(),
    ") SELECT $15, $16, $17, $18, $19, $20, $21, $22, $23, $24 FROM s"
);

/// The part both one-statement starts share: the active license under a
/// share lock (`l`), and the session inserted from it (`s`, its id), with
/// `$on_conflict` between the insert and its `RETURNING`.
macro_rules! start_session_cte {
    ($on_conflict:literal) => {
        concat!(
            "WITH l AS (SELECT id FROM licenses WHERE id = $2 AND status = 'active' FOR SHARE), \
             s AS (INSERT INTO sessions (",
            session_columns!(),
            ", sweep_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
             FROM l ",
            $on_conflict,
            " RETURNING id)"
        )
    };
}
use start_session_cte;

/// [`START_SESSION_ONE_STATEMENT`] for `adopt_session`: an id recorded
/// already is left alone (and gets no second audit entry). It answers the
/// license's status (NULL for an unknown license) and whether it inserted:
/// on an active license, a session it did not insert was recorded before,
/// as the conflict is the only other way for the insert to do nothing.
pub(crate) const ADOPT_SESSION_ONE_STATEMENT: &str = concat!(
    start_session_cte!("ON CONFLICT (id) DO NOTHING"),
    ", a AS (INSERT INTO audit_log (",
    audit_columns!(),
    ") SELECT $15, $16, $17, $18, $19, $20, $21, $22, $23, $24 FROM s RETURNING 1) \
     SELECT (SELECT status FROM licenses WHERE id = $2), (SELECT COUNT(*) FROM a)"
);

/// [`INSERT_SESSION`] that leaves a recorded id alone.
const INSERT_SESSION_IF_NEW: &str = concat!(
    insert_session_sql!(),
    " ON CONFLICT (id) DO NOTHING RETURNING id"
);

/// A license's status, to tell an unknown license from one that no longer
/// grants seats.
pub(crate) const LICENSE_STATUS: &str = "SELECT status FROM licenses WHERE id = $1";

/// What a `start_session` that wrote nothing means: an unknown license is
/// `NotFound`, a license that is not active is `Ok(false)`.
pub(crate) fn start_refused(
    status: Option<String>,
    license: LicenseId,
) -> Result<bool, StoreError> {
    match status {
        None => Err(StoreError::NotFound(format!("license {license}"))),
        Some(_) => Ok(false),
    }
}

/// Ends an open session and appends its audit entry in one statement; no
/// row when the session is unknown or already ended (then nothing is
/// written). Bind id, ended_at, reason, then [`bind_audit`].
pub(crate) const END_SESSION_ONE_STATEMENT: &str = concat!(
    "WITH e AS (UPDATE sessions SET ended_at = $2, end_reason = $3 \
     WHERE id = $1 AND ended_at IS NULL RETURNING ",
    session_columns!(),
    "), a AS (INSERT INTO audit_log (",
    audit_columns!(),
    ") SELECT $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM e) SELECT ",
    session_columns!(),
    " FROM e"
);

/// Changes the given fields of a license and gives it the revision that
/// `$revision` computes (each backend has its own sequence); see
/// [`update_license_in`].
macro_rules! update_license_sql {
    ($revision:literal) => {
        concat!(
            "UPDATE licenses SET seats = COALESCE($2, seats), status = COALESCE($3, status), \
             expires_at = CASE WHEN $4 = 1 THEN $5 ELSE expires_at END, \
             offline_grace_secs = CASE WHEN $6 = 1 THEN $7 ELSE offline_grace_secs END, \
             offline_overdraft = COALESCE($8, offline_overdraft), \
             max_machines = CASE WHEN $9 = 1 THEN $10 ELSE max_machines END, \
             requires_user = COALESCE($11, requires_user), \
             tier = COALESCE($12, tier), features = COALESCE($13, features), \
             max_borrow_hours = COALESCE($14, max_borrow_hours), \
             revision = ",
            $revision,
            " WHERE id = $1 RETURNING ",
            license_columns!()
        )
    };
}
pub(crate) use update_license_sql;

/// Ends the open sessions of a license as revoked, returning what their
/// audit entries need.
const REVOKE_OPEN_SESSIONS: &str = "UPDATE sessions SET ended_at = $2, end_reason = 'revoked' \
     WHERE license_id = $1 AND ended_at IS NULL RETURNING id, org_id, hardware_id";

/// Licenses changed after a revision, in revision order.
pub(crate) const LICENSE_CHANGES: &str = concat!(
    "SELECT ",
    license_columns!(),
    ", revision FROM licenses WHERE revision > $1 ORDER BY revision LIMIT $2"
);
/// The highest license revision.
pub(crate) const LICENSE_REVISION: &str = "SELECT COALESCE(MAX(revision), 0) FROM licenses";

/// What a sweep claim returns of each session.
macro_rules! sweep_columns {
    () => {
        "id, org_id, license_id, hardware_id, lease_expires_at"
    };
}
pub(crate) use sweep_columns;

// Reads whose SQL is the same in both dialects. Those whose tie-breakers
// differ (SQLite's `rowid` versus PostgreSQL's `id`) stay with each backend.

/// An org by id.
pub(crate) const ORG_BY_ID: &str = concat!("SELECT ", org_columns!(), " FROM orgs WHERE id = $1");
/// A license by id.
pub(crate) const LICENSE_BY_ID: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE id = $1"
);
/// A license by the hash of its key.
pub(crate) const LICENSE_BY_KEY_HASH: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE key_hash = $1"
);
/// The open sessions of a license (index `sessions_open_by_license`).
pub(crate) const OPEN_SESSIONS_OF_LICENSE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE license_id = $1 AND ended_at IS NULL"
);
/// Organizations with at least one open session.
pub(crate) const ORGS_WITH_OPEN_SESSIONS: &str =
    "SELECT DISTINCT org_id FROM sessions WHERE ended_at IS NULL ORDER BY org_id";
/// A license's audit entries in the order they were written.
pub(crate) const AUDIT_OF_LICENSE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_log WHERE license_id = $1 ORDER BY id"
);

/// A session by id.
pub(crate) const SESSION_BY_ID: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = $1"
);

/// Ends an open session and returns it; returns nothing if the session is
/// unknown or already ended. See [`end_session_in`].
const END_OPEN_SESSION: &str = concat!(
    "UPDATE sessions SET ended_at = $2, end_reason = $3 \
     WHERE id = $1 AND ended_at IS NULL RETURNING ",
    session_columns!()
);

// ---------------------------------------------------------------------------
// Column types shared by both backends

/// A UUID: native `uuid` in PostgreSQL, hyphenated lower-case text in
/// SQLite (sqlx would otherwise store a 16-byte blob there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DbUuid(pub Uuid);

macro_rules! db_uuid_from {
    ($($id:ty),*) => {$(
        impl From<$id> for DbUuid {
            fn from(id: $id) -> Self {
                Self(id.0)
            }
        }
    )*};
}
db_uuid_from!(
    OrgId,
    LicenseId,
    SessionId,
    UserId,
    InvitationId,
    ApiKeyId,
    MachineId
);

impl Type<Sqlite> for DbUuid {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbUuid {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbUuid {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(Uuid::parse_str(text)?))
    }
}

impl Type<Postgres> for DbUuid {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbUuid {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbUuid {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

/// A timestamp to bind: `timestamptz` in PostgreSQL, fixed-width RFC 3339
/// text in SQLite (see the module docs). Reading back uses plain
/// `DateTime<Utc>`, which sqlx parses from that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DbTime(pub DateTime<Utc>);

/// The SQLite text form of a timestamp: always 27 characters, so that text
/// order is time order.
pub(crate) fn sqlite_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(sqlite_timestamp(self.0), buf)
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

/// The current time at the precision both backends keep (microseconds),
/// so that a value returned by a `create_*` call equals the one read back.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

// ---------------------------------------------------------------------------
// Binding rows to the shared INSERTs

/// A query of backend `DB`, with owned arguments.
pub(crate) type Query<DB> = sqlx::query::Query<'static, DB, <DB as Database>::Arguments>;
/// A query of backend `DB` returning rows of type `O`.
pub(crate) type QueryAs<DB, O> = sqlx::query::QueryAs<'static, DB, O, <DB as Database>::Arguments>;

/// "`DB` can bind a `T`". A supertrait of [`Backend`], so that generic code
/// bounded by `DB: Backend` can bind every column type without repeating
/// the bounds (bounds on other types in a where clause would not carry
/// over to callers; supertraits do).
pub(crate) trait BindTo<T>: Database {
    fn bind_to(q: Query<Self>, value: T) -> Query<Self>;
    fn bind_as<O>(q: QueryAs<Self, O>, value: T) -> QueryAs<Self, O>;
}

impl<DB: Database, T> BindTo<T> for DB
where
    T: for<'e> Encode<'e, DB> + Type<DB> + 'static,
{
    fn bind_to(q: Query<DB>, value: T) -> Query<DB> {
        q.bind(value)
    }
    fn bind_as<O>(q: QueryAs<DB, O>, value: T) -> QueryAs<DB, O> {
        q.bind(value)
    }
}

/// A database that can bind every column type of the shared statements.
pub(crate) trait Backend:
    BindTo<DbUuid>
    + BindTo<Option<DbUuid>>
    + BindTo<DbTime>
    + BindTo<Option<DbTime>>
    + BindTo<String>
    + BindTo<Option<String>>
    + BindTo<i32>
    + BindTo<i64>
    + BindTo<Option<i64>>
    + BindTo<bool>
    + BindTo<Option<bool>>
    + BindTo<i64>
    + BindTo<Option<i32>>
    + BindTo<i64>
    + BindTo<Json<Vec<String>>>
    + BindTo<Option<Json<Vec<String>>>>
    + BindTo<Option<Json<serde_json::Value>>>
{
}
impl Backend for Sqlite {}
impl Backend for Postgres {}

/// `q.arg(v)`: [`sqlx::query::Query::bind`] for generic backends.
pub(crate) trait Arg<DB: Database> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: BindTo<T>;
}

impl<DB: Database> Arg<DB> for Query<DB> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: BindTo<T>,
    {
        DB::bind_to(self, value)
    }
}

impl<DB: Database, O> Arg<DB> for QueryAs<DB, O> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: BindTo<T>,
    {
        DB::bind_as(self, value)
    }
}

fn bind_client<DB: Backend, Q: Arg<DB>>(q: Q, client: &ClientInfo) -> Q {
    q.arg(client.ip.clone()).arg(client.user_agent.clone())
}

/// [`INSERT_ORG`] with its values bound.
pub(crate) fn insert_org<DB: Backend>(org: &Org) -> Query<DB> {
    sqlx::query(INSERT_ORG)
        .arg(DbUuid::from(org.id))
        .arg(org.name.clone())
        .arg(DbTime(org.created_at))
}

/// A count that must fit a non-negative `integer` column.
fn count(n: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Conflict(format!("{n} is too large for {what}")))
}

/// The body of `update_license`, on a connection inside the backend's
/// write transaction (which the caller commits): the update under a new
/// revision (`sql` from [`update_license_sql`]); when a status or expiry
/// change leaves the license refusing seats (suspended, inactive, expired),
/// the end of its open sessions as revoked with their audit entries; and
/// when the expiry changes, its deadlines rescheduled.
pub(crate) async fn update_license_in<DB>(
    conn: &mut DB::Connection,
    sql: &'static str,
    id: LicenseId,
    update: &LicenseUpdate,
) -> Result<Option<License>, StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    LicenseRow: for<'r> FromRow<'r, DB::Row>,
    RevokedRow: for<'r> FromRow<'r, DB::Row>,
{
    let seats = update
        .seats
        .map(|n| {
            count(n, "seats").and_then(|n| {
                (n > 0)
                    .then_some(n)
                    .ok_or_else(|| StoreError::Conflict(format!("{n} is not a valid seat count")))
            })
        })
        .transpose()?;
    let grace = update
        .offline_grace_secs
        .flatten()
        .map(|g| count(g, "offline_grace_secs"))
        .transpose()?;
    let overdraft = update
        .offline_overdraft
        .map(|o| count(o, "offline_overdraft"))
        .transpose()?;
    let machines = update
        .max_machines
        .flatten()
        .map(|m| count(m, "max_machines"))
        .transpose()?;
    let borrow = update
        .max_borrow_hours
        .map(|h| count(h, "max_borrow_hours"))
        .transpose()?;
    let license: Option<License> = one(sqlx::query_as::<DB, LicenseRow>(sql)
        .arg(DbUuid::from(id))
        .arg(seats)
        .arg(update.status.map(|s| s.as_str().to_owned()))
        .arg(i32::from(update.expires_at.is_some()))
        .arg(update.expires_at.flatten().map(DbTime))
        .arg(i32::from(update.offline_grace_secs.is_some()))
        .arg(grace)
        .arg(overdraft)
        .arg(i32::from(update.max_machines.is_some()))
        .arg(machines)
        .arg(update.requires_user)
        .arg(update.tier.clone())
        .arg(update.features.clone().map(Json))
        .arg(borrow)
        .fetch_optional(&mut *conn)
        .await)?;
    let Some(license) = license else {
        return Ok(None);
    };
    let at = now();
    let refusal = license.refusal(at);
    if (update.status.is_some() || update.expires_at.is_some())
        && let Some(refusal) = refusal
    {
        let revoked: Vec<RevokedRow> = sqlx::query_as(REVOKE_OPEN_SESSIONS)
            .arg(DbUuid::from(id))
            .arg(DbTime(at))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        for r in revoked {
            let entry = AuditEntry {
                at,
                event: AuditEvent::SessionRevoked,
                org_id: OrgId(r.org_id.0),
                license_id: id,
                session_id: Some(SessionId(r.id.0)),
                hardware_id: Some(r.hardware_id),
                client: ClientInfo::default(),
                detail: Some(refusal.code().to_owned()),
                actor_id: None,
            };
            insert_audit::<DB>(&entry)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
    }
    if update.expires_at.is_some() {
        deadlines::schedule_license::<DB>(conn, &license).await?;
    }
    Ok(Some(license))
}

/// [`INSERT_LICENSE`] with its values bound.
pub(crate) fn insert_license<DB: Backend>(
    license: &License,
    key_hash: &str,
) -> Result<Query<DB>, StoreError> {
    let seats = count(license.seats, "seats")?;
    let grace = license
        .offline_grace_secs
        .map(|g| count(g, "offline_grace_secs"))
        .transpose()?;
    let overdraft = count(license.offline_overdraft, "offline_overdraft")?;
    let machines = license
        .max_machines
        .map(|m| count(m, "max_machines"))
        .transpose()?;
    Ok(sqlx::query(INSERT_LICENSE)
        .arg(DbUuid::from(license.id))
        .arg(DbUuid::from(license.org_id))
        .arg(license.key_hint.clone())
        .arg(seats)
        .arg(license.tier.clone())
        .arg(Json(license.features.clone()))
        .arg(license.status.as_str().to_owned())
        .arg(license.expires_at.map(DbTime))
        .arg(DbTime(license.created_at))
        .arg(grace)
        .arg(overdraft)
        .arg(machines)
        .arg(license.requires_user)
        .arg(count(license.max_borrow_hours, "max_borrow_hours")?)
        .arg(key_hash.to_owned()))
}

/// [`INSERT_SESSION`] with its values bound.
pub(crate) fn insert_session<DB: Backend>(s: &SessionRecord) -> Query<DB> {
    bind_session(sqlx::query(INSERT_SESSION), s)
}

/// Binds a session's 14 values, in the order of [`INSERT_SESSION`].
pub(crate) fn bind_session<DB: Backend, Q: Arg<DB>>(q: Q, s: &SessionRecord) -> Q {
    let q = q
        .arg(DbUuid::from(s.id))
        .arg(DbUuid::from(s.license_id))
        .arg(DbUuid::from(s.org_id))
        .arg(s.hardware_id.clone())
        .arg(DbTime(s.started_at))
        .arg(DbTime(s.last_heartbeat_at))
        .arg(DbTime(s.lease_expires_at))
        .arg(s.ended_at.map(DbTime))
        .arg(s.end_reason.map(|r| r.as_str().to_owned()));
    bind_client(q, &s.client)
        .arg(s.metadata.clone().map(Json))
        .arg(s.borrowed_until.map(DbTime))
        .arg(DbTime(s.lease_expires_at))
}

/// [`INSERT_AUDIT`] with its values bound.
pub(crate) fn insert_audit<DB: Backend>(a: &AuditEntry) -> Query<DB> {
    bind_audit(sqlx::query(INSERT_AUDIT), a)
}

/// Binds an audit entry's 10 values, in the order of [`INSERT_AUDIT`].
pub(crate) fn bind_audit<DB: Backend, Q: Arg<DB>>(q: Q, a: &AuditEntry) -> Q {
    let q = q
        .arg(DbTime(a.at))
        .arg(a.event.as_str().to_owned())
        .arg(DbUuid::from(a.org_id))
        .arg(DbUuid::from(a.license_id))
        .arg(a.session_id.map(DbUuid::from))
        .arg(a.hardware_id.clone());
    bind_client(q, &a.client)
        .arg(a.detail.clone())
        .arg(a.actor_id.map(DbUuid))
}

/// Enqueues a message in the outbox; run it inside the transaction of the
/// change that causes the message, so that both commit or neither does.
const INSERT_OUTBOX: &str = "INSERT INTO outbox (id, kind, recipient, data, status, attempts, \
     next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)";
/// [`INSERT_OUTBOX`], but a mail id already queued is not queued again: a
/// mail whose id derives from what caused it (`NewMail::once`) goes out
/// once however often that cause is applied.
const INSERT_OUTBOX_ONCE: &str = "INSERT INTO outbox (id, kind, recipient, data, status, \
     attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) \
     ON CONFLICT (id) DO NOTHING";

/// [`INSERT_OUTBOX`] with its values bound.
pub(crate) fn insert_outbox<DB: Backend>(mail: &NewMail) -> Query<DB> {
    bind_outbox(INSERT_OUTBOX, mail)
}

/// [`INSERT_OUTBOX_ONCE`] with its values bound: for mail that billing's
/// events and deadlines cause.
pub(crate) fn insert_outbox_once<DB: Backend>(mail: &NewMail) -> Query<DB> {
    bind_outbox(INSERT_OUTBOX_ONCE, mail)
}

fn bind_outbox<DB: Backend>(sql: &'static str, mail: &NewMail) -> Query<DB> {
    sqlx::query(sql)
        .arg(DbUuid(mail.id))
        .arg(mail.kind.as_str().to_owned())
        .arg(mail.to.clone())
        .arg(Some(Json(mail.data.clone())))
        .arg(DbTime(mail.created_at))
}

// ---------------------------------------------------------------------------
// The outbox: statements shared by both backends (the claim differs; each
// backend has its own). Every settling statement is fenced by the claim's
// token and only touches pending rows.

/// What a claim returns of each message.
macro_rules! queued_mail_columns {
    () => {
        "id, kind, recipient, data, attempts, claim_token, created_at"
    };
}
pub(crate) use queued_mail_columns;

/// The claim's `SET` clause: one more attempt, the lease as both the
/// claim's end and the next due time (so the due index alone finds what
/// is claimable again), and the claim's token. Bind now, lease end, limit,
/// token.
macro_rules! claim_outbox_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE outbox SET attempts = attempts + 1, claimed_until = $2, \
             next_attempt_at = $2, claim_token = $4 \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $3",
            $lock,
            ") RETURNING ",
            $crate::store::queued_mail_columns!()
        )
    };
}
pub(crate) use claim_outbox_sql;

const MARK_SENT: &str = "UPDATE outbox SET status = 'sent', sent_at = $3, next_attempt_at = $3, \
     data = '{}', claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";
const SCHEDULE_RETRY: &str = "UPDATE outbox SET last_error = $3, next_attempt_at = $4, \
     claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";
const MARK_FAILED: &str = "UPDATE outbox SET status = 'failed', last_error = $3, \
     next_attempt_at = $4, data = '{}', claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";
/// The untried attempt is given back, so a release costs no attempt.
const RELEASE_MAIL: &str = "UPDATE outbox SET attempts = attempts - 1, next_attempt_at = $3, \
     claimed_until = NULL, claim_token = NULL \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";
/// A page of the email log; each filter applies only when bound.
const EMAIL_LOG: &str = "SELECT id, kind, recipient, status, attempts, last_error, created_at, \
     next_attempt_at, sent_at FROM email_log \
     WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) \
     AND ($3 IS NULL OR recipient = $3) \
     AND ($4 IS NULL OR (created_at, id) < ($4, $5)) \
     ORDER BY created_at DESC, id DESC LIMIT $6";

/// The most entries one page of the email log lists.
const EMAIL_LOG_MAX_PAGE: u32 = 1000;

/// [`MARK_SENT`] with its values bound.
pub(crate) fn mark_sent<DB: Backend>(id: Uuid, claim: Uuid, at: DateTime<Utc>) -> Query<DB> {
    sqlx::query(MARK_SENT)
        .arg(DbUuid(id))
        .arg(DbUuid(claim))
        .arg(DbTime(at))
}

/// [`SCHEDULE_RETRY`] with its values bound.
pub(crate) fn schedule_retry<DB: Backend>(
    id: Uuid,
    claim: Uuid,
    error: &str,
    at: DateTime<Utc>,
) -> Query<DB> {
    sqlx::query(SCHEDULE_RETRY)
        .arg(DbUuid(id))
        .arg(DbUuid(claim))
        .arg(error.to_owned())
        .arg(DbTime(at))
}

/// [`MARK_FAILED`] with its values bound.
pub(crate) fn mark_failed<DB: Backend>(
    id: Uuid,
    claim: Uuid,
    error: &str,
    at: DateTime<Utc>,
) -> Query<DB> {
    sqlx::query(MARK_FAILED)
        .arg(DbUuid(id))
        .arg(DbUuid(claim))
        .arg(error.to_owned())
        .arg(DbTime(at))
}

/// [`RELEASE_MAIL`] with its values bound.
pub(crate) fn release_mail<DB: Backend>(id: Uuid, claim: Uuid, now: DateTime<Utc>) -> Query<DB> {
    sqlx::query(RELEASE_MAIL)
        .arg(DbUuid(id))
        .arg(DbUuid(claim))
        .arg(DbTime(now))
}

/// [`EMAIL_LOG`] with the filter bound; it reads one entry more than the
/// page, which tells [`mail_page`] whether another page follows.
pub(crate) fn email_log<DB: Backend>(filter: &MailFilter) -> QueryAs<DB, MailLogRow>
where
    MailLogRow: for<'r> FromRow<'r, DB::Row>,
{
    let limit = filter.limit.clamp(1, EMAIL_LOG_MAX_PAGE);
    sqlx::query_as::<DB, MailLogRow>(EMAIL_LOG)
        .arg(filter.status.map(|s| s.as_str().to_owned()))
        .arg(filter.kind.map(|k| k.as_str().to_owned()))
        .arg(filter.recipient.clone())
        .arg(filter.after.map(|c| DbTime(c.created_at)))
        .arg(filter.after.map(|c| DbUuid(c.id)))
        .arg(i64::from(limit) + 1)
}

/// The page of the email log that [`email_log`] read.
pub(crate) fn mail_page(
    fetched: Result<Vec<MailLogRow>, sqlx::Error>,
    filter: &MailFilter,
) -> Result<MailPage, StoreError> {
    let limit = filter.limit.clamp(1, EMAIL_LOG_MAX_PAGE) as usize;
    let mut entries: Vec<MailRecord> = all(fetched)?;
    let next = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        let last = &entries[limit - 1];
        MailCursor {
            created_at: last.created_at,
            id: last.id,
        }
    });
    Ok(MailPage { entries, next })
}

/// Claimed rows as messages, oldest first (`RETURNING` has no order).
pub(crate) fn claimed(
    fetched: Result<Vec<QueuedRow>, sqlx::Error>,
) -> Result<Vec<QueuedMail>, StoreError> {
    let mut mail: Vec<QueuedMail> = all(fetched)?;
    mail.sort_by_key(|m| (m.created_at, m.id));
    Ok(mail)
}

/// The org a `create_org` call inserts.
pub(crate) fn new_org(name: &str) -> Org {
    Org {
        id: OrgId::new(),
        name: name.to_owned(),
        created_at: now(),
    }
}

/// The license a `create_license` call inserts, and its key hash.
pub(crate) fn new_license(new: NewLicense) -> (License, String) {
    let license = License {
        id: LicenseId::new(),
        org_id: new.org_id,
        key_hint: new.key_hint,
        seats: new.seats,
        tier: new.tier,
        features: new.features,
        status: LicenseStatus::Active,
        expires_at: new.expires_at,
        created_at: now(),
        offline_grace_secs: new.offline_grace_secs,
        offline_overdraft: new.offline_overdraft,
        max_machines: new.max_machines,
        requires_user: new.requires_user,
        max_borrow_hours: new.max_borrow_hours,
    };
    (license, new.key_hash)
}

/// The body of `start_session` (and, with `adopt`, of `adopt_session`) on
/// a connection inside the backend's write transaction: nothing is written
/// unless the license is active (the write lock orders this against a
/// suspension). A duplicate id fails the insert, so no audit entry is
/// written for it; with `adopt` a recorded id is left alone instead, and
/// still no audit entry is written.
pub(crate) async fn start_session_in<DB>(
    conn: &mut DB::Connection,
    session: &SessionRecord,
    audit: &AuditEntry,
    adopt: bool,
) -> Result<bool, StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    (DbUuid,): for<'r> FromRow<'r, DB::Row>,
{
    let status: Option<(String,)> = sqlx::query_as::<DB, (String,)>(LICENSE_STATUS)
        .arg(DbUuid::from(session.license_id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    if status
        .as_ref()
        .is_none_or(|(s,)| s != LicenseStatus::Active.as_str())
    {
        return start_refused(status.map(|(s,)| s), session.license_id);
    }
    let inserted = if adopt {
        let row: Option<(DbUuid,)> = bind_session(sqlx::query_as(INSERT_SESSION_IF_NEW), session)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        row.is_some()
    } else {
        insert_session::<DB>(session)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        true
    };
    if inserted {
        insert_audit::<DB>(audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(true)
}

/// Marks an open session borrowed until `$2`, its borrow, lease and sweep
/// moved forward to it (never back). See `SessionStore::borrow_session`.
const BORROW_SESSION: &str = "UPDATE sessions SET borrowed_until = \
     CASE WHEN borrowed_until IS NULL OR borrowed_until < $2 THEN $2 ELSE borrowed_until END, \
     lease_expires_at = CASE WHEN lease_expires_at < $2 THEN $2 ELSE lease_expires_at END, \
     sweep_at = CASE WHEN sweep_at < $2 THEN $2 ELSE sweep_at END \
     WHERE id = $1 AND ended_at IS NULL RETURNING id";

/// Open borrowed seats per license (index `sessions_open_borrowed`).
const BORROWED_COUNTS: &str = "SELECT org_id, license_id, COUNT(*) FROM sessions \
     WHERE ended_at IS NULL AND borrowed_until IS NOT NULL AND borrowed_until > $1 \
     GROUP BY org_id, license_id";

/// The body of `borrow_session`, on a write connection.
pub(crate) async fn borrow_session_in<DB>(
    conn: &mut DB::Connection,
    id: SessionId,
    until: DateTime<Utc>,
) -> Result<bool, StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (DbUuid,): for<'r> FromRow<'r, DB::Row>,
{
    let done: Option<(DbUuid,)> = sqlx::query_as(BORROW_SESSION)
        .arg(DbUuid::from(id))
        .arg(DbTime(until))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(done.is_some())
}

/// The body of `borrowed_counts`.
pub(crate) async fn borrowed_counts_in<DB>(
    conn: &mut DB::Connection,
    now: DateTime<Utc>,
) -> Result<Vec<(OrgId, LicenseId, u32)>, StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (DbUuid, DbUuid, i64): for<'r> FromRow<'r, DB::Row>,
{
    let rows: Vec<(DbUuid, DbUuid, i64)> = sqlx::query_as(BORROWED_COUNTS)
        .arg(DbTime(now))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(org, license, n)| {
            (
                OrgId(org.0),
                LicenseId(license.0),
                u32::try_from(n).unwrap_or(u32::MAX),
            )
        })
        .collect())
}

/// The body of `end_session`, on a connection inside the backend's write
/// transaction (which the caller commits).
///
/// The `UPDATE ... WHERE ended_at IS NULL` decides who ends the session:
/// SQLite runs it under the write lock; in PostgreSQL a concurrent end
/// holds the row lock, and this statement waits for it and re-checks the
/// committed row. The follow-up read is a separate statement so that under
/// READ COMMITTED it sees that other caller's committed end (within one
/// statement PostgreSQL would still show the snapshot from before it).
pub(crate) async fn end_session_in<DB>(
    conn: &mut DB::Connection,
    id: SessionId,
    ended_at: DateTime<Utc>,
    reason: EndReason,
    audit: &AuditEntry,
) -> Result<Option<EndOutcome>, StoreError>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    SessionRow: for<'r> FromRow<'r, DB::Row>,
{
    let ended: Option<SessionRow> = sqlx::query_as(END_OPEN_SESSION)
        .arg(DbUuid::from(id))
        .arg(DbTime(ended_at))
        .arg(reason.as_str().to_owned())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    if let Some(row) = ended {
        insert_audit::<DB>(audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        return Ok(Some(EndOutcome::Ended(row.try_into()?)));
    }
    let current: Option<SessionRecord> = one(sqlx::query_as::<DB, SessionRow>(SESSION_BY_ID)
        .arg(DbUuid::from(id))
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(current.map(EndOutcome::AlreadyEnded))
}

/// Heartbeats merged per session (latest of each timestamp wins) and sorted
/// by id, so that a batch touches each row once and always in the same
/// order.
pub(crate) fn merge_heartbeats(
    beats: &[(SessionId, DateTime<Utc>, DateTime<Utc>)],
) -> Vec<(SessionId, DateTime<Utc>, DateTime<Utc>)> {
    let mut merged: BTreeMap<SessionId, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for &(id, at, lease) in beats {
        merged
            .entry(id)
            .and_modify(|(a, l)| {
                *a = (*a).max(at);
                *l = (*l).max(lease);
            })
            .or_insert((at, lease));
    }
    merged.into_iter().map(|(id, (a, l))| (id, a, l)).collect()
}

// ---------------------------------------------------------------------------
// Rows and their conversion into domain types

#[derive(sqlx::FromRow)]
pub(crate) struct OrgRow {
    id: DbUuid,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct LicenseRow {
    id: DbUuid,
    org_id: DbUuid,
    key_hint: String,
    seats: i32,
    tier: String,
    features: Json<Vec<String>>,
    status: String,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    offline_grace_secs: Option<i32>,
    offline_overdraft: i32,
    max_machines: Option<i32>,
    requires_user: bool,
    max_borrow_hours: i32,
}

#[derive(sqlx::FromRow)]
pub(crate) struct LicenseChangeRow {
    #[sqlx(flatten)]
    license: LicenseRow,
    revision: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RevokedRow {
    id: DbUuid,
    org_id: DbUuid,
    hardware_id: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SweepRow {
    id: DbUuid,
    org_id: DbUuid,
    license_id: DbUuid,
    hardware_id: String,
    lease_expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id: DbUuid,
    license_id: DbUuid,
    org_id: DbUuid,
    hardware_id: String,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
    lease_expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    end_reason: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    metadata: Option<Json<serde_json::Value>>,
    borrowed_until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    at: DateTime<Utc>,
    event: String,
    org_id: DbUuid,
    license_id: DbUuid,
    session_id: Option<DbUuid>,
    hardware_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
    actor_id: Option<DbUuid>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct QueuedRow {
    id: DbUuid,
    kind: String,
    recipient: String,
    data: Json<serde_json::Value>,
    attempts: i32,
    claim_token: Option<DbUuid>,
    created_at: DateTime<Utc>,
}

/// The outbox's backlog: pending messages and the oldest one's enqueue
/// time (index `outbox_due` covers the filter).
pub(crate) const OUTBOX_BACKLOG: &str =
    "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'";

#[derive(sqlx::FromRow)]
pub(crate) struct MailLogRow {
    id: DbUuid,
    kind: String,
    recipient: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what} row: {detail}"))
}

impl TryFrom<LicenseChangeRow> for LicenseChange {
    type Error = StoreError;
    fn try_from(r: LicenseChangeRow) -> Result<Self, StoreError> {
        Ok(LicenseChange {
            revision: r.revision,
            license: r.license.try_into()?,
        })
    }
}

impl TryFrom<SweepRow> for SweepCandidate {
    type Error = StoreError;
    fn try_from(r: SweepRow) -> Result<Self, StoreError> {
        Ok(SweepCandidate {
            id: SessionId(r.id.0),
            org_id: OrgId(r.org_id.0),
            license_id: LicenseId(r.license_id.0),
            hardware_id: r.hardware_id,
            lease_expires_at: r.lease_expires_at,
        })
    }
}

impl TryFrom<QueuedRow> for QueuedMail {
    type Error = StoreError;
    fn try_from(r: QueuedRow) -> Result<Self, StoreError> {
        Ok(QueuedMail {
            id: r.id.0,
            kind: r.kind.parse().map_err(|e| corrupt("outbox", e))?,
            to: r.recipient,
            data: r.data.0,
            attempt: u32::try_from(r.attempts).map_err(|e| corrupt("outbox", e))?,
            claim: r
                .claim_token
                .ok_or_else(|| corrupt("outbox", "a claimed message has no claim token"))?
                .0,
            created_at: r.created_at,
        })
    }
}

impl TryFrom<MailLogRow> for MailRecord {
    type Error = StoreError;
    fn try_from(r: MailLogRow) -> Result<Self, StoreError> {
        Ok(MailRecord {
            id: r.id.0,
            kind: r.kind.parse().map_err(|e| corrupt("outbox", e))?,
            recipient: r.recipient,
            status: r.status.parse().map_err(|e| corrupt("outbox", e))?,
            attempts: u32::try_from(r.attempts).map_err(|e| corrupt("outbox", e))?,
            last_error: r.last_error,
            created_at: r.created_at,
            next_attempt_at: r.next_attempt_at,
            sent_at: r.sent_at,
        })
    }
}

impl TryFrom<OrgRow> for Org {
    type Error = StoreError;
    fn try_from(r: OrgRow) -> Result<Self, StoreError> {
        Ok(Org {
            id: OrgId(r.id.0),
            name: r.name,
            created_at: r.created_at,
        })
    }
}

impl TryFrom<LicenseRow> for License {
    type Error = StoreError;
    fn try_from(r: LicenseRow) -> Result<Self, StoreError> {
        Ok(License {
            id: LicenseId(r.id.0),
            org_id: OrgId(r.org_id.0),
            key_hint: r.key_hint,
            seats: u32::try_from(r.seats).map_err(|e| corrupt("license", e))?,
            tier: r.tier,
            features: r.features.0,
            status: r
                .status
                .parse::<LicenseStatus>()
                .map_err(|e| corrupt("license", e))?,
            expires_at: r.expires_at,
            created_at: r.created_at,
            offline_grace_secs: r
                .offline_grace_secs
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt("license", e))?,
            offline_overdraft: u32::try_from(r.offline_overdraft)
                .map_err(|e| corrupt("license", e))?,
            max_machines: r
                .max_machines
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt("license", e))?,
            requires_user: r.requires_user,
            max_borrow_hours: u32::try_from(r.max_borrow_hours)
                .map_err(|e| corrupt("license", e))?,
        })
    }
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        Ok(SessionRecord {
            id: SessionId(r.id.0),
            license_id: LicenseId(r.license_id.0),
            org_id: OrgId(r.org_id.0),
            hardware_id: r.hardware_id,
            started_at: r.started_at,
            last_heartbeat_at: r.last_heartbeat_at,
            lease_expires_at: r.lease_expires_at,
            ended_at: r.ended_at,
            end_reason: r
                .end_reason
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| corrupt("session", e))?,
            client: ClientInfo {
                ip: r.ip,
                user_agent: r.user_agent,
            },
            metadata: r.metadata.map(|m| m.0),
            borrowed_until: r.borrowed_until,
        })
    }
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(AuditEntry {
            at: r.at,
            event: r.event.parse().map_err(|e| corrupt("audit", e))?,
            org_id: OrgId(r.org_id.0),
            license_id: LicenseId(r.license_id.0),
            session_id: r.session_id.map(|id| SessionId(id.0)),
            hardware_id: r.hardware_id,
            client: ClientInfo {
                ip: r.ip,
                user_agent: r.user_agent,
            },
            detail: r.detail,
            actor_id: r.actor_id.map(|id| id.0),
        })
    }
}

/// Converts the result of a `fetch_optional`.
pub(crate) fn one<R, T>(fetched: Result<Option<R>, sqlx::Error>) -> Result<Option<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    fetched.map_err(db_error)?.map(T::try_from).transpose()
}

/// Converts the result of a `fetch_all`.
pub(crate) fn all<R, T>(fetched: Result<Vec<R>, sqlx::Error>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    fetched
        .map_err(db_error)?
        .into_iter()
        .map(T::try_from)
        .collect()
}

// ---------------------------------------------------------------------------
// Errors

/// Maps a driver error: unique violation → `Conflict`, foreign-key
/// violation → `NotFound`, anything else → `Unavailable`. Messages come from
/// the database or name the failure class; they never carry the connection
/// URL (configuration errors, which might quote it, are reported without
/// detail).
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
            ErrorKind::ForeignKeyViolation => StoreError::NotFound(db.message().to_owned()),
            _ => StoreError::Unavailable(db.message().to_owned()),
        },
        sqlx::Error::Configuration(_) => {
            StoreError::Unavailable("invalid database configuration".to_owned())
        }
        sqlx::Error::Tls(_) => StoreError::Unavailable("TLS error talking to the database".into()),
        sqlx::Error::Io(io) => {
            StoreError::Unavailable(format!("cannot talk to the database: {}", io.kind()))
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Maps a failure to run the migrations.
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => db_error(e),
        other => StoreError::Unavailable(format!("migrations failed: {other}")),
    }
}
