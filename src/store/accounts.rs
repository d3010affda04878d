//! [`AccountStore`] on both backends.
//!
//! Every statement here is dialect-free (`$N` placeholders, `RETURNING`,
//! `lower()`), so the bodies are written once, generic over the backend, in
//! [`Accounts`]. Each backend only says how it opens a write transaction
//! and a read connection, and [`account_store_impl!`] writes the thin
//! [`AccountStore`] impl that opens, calls and commits.
//!
//! Row locks where two nodes could race: presenting one refresh token
//! twice at once, or two failed logins crossing the lockout threshold
//! together. PostgreSQL gets them from `UPDATE ... RETURNING` (the second
//! writer waits for the first and then sees its result); SQLite serializes
//! every write transaction anyway.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, Credentials, LockoutPolicy, Membership, NewAccount,
    NewRefreshToken, NewUserToken, Org, OrgId, Role, TokenPurpose, User, UserId,
};
use seatwarden_actors::ports::{MailFor, NewMail, RefreshOutcome, StoreError};
use sqlx::{Executor, FromRow, IntoArguments};

use super::{Arg, Backend, DbTime, DbUuid, all, db_error, insert_org, insert_outbox, new_org, now};

macro_rules! user_columns {
    () => {
        "id, email, full_name, email_verified_at, is_platform_admin, created_at"
    };
}

const INSERT_USER: &str = "INSERT INTO users (id, email, email_lower, password_hash, full_name, \
     email_verified_at, is_platform_admin, created_at) VALUES ($1, $2, lower($2), $3, $4, $5, $6, $7)";
const INSERT_MEMBER: &str =
    "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)";
const INSERT_USER_TOKEN: &str = "INSERT INTO user_tokens (token_hash, user_id, purpose, \
     expires_at, created_at) VALUES ($1, $2, $3, $4, $5)";
const USE_USER_TOKEN: &str = "UPDATE user_tokens SET used_at = $3 \
     WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
     RETURNING user_id";
const USER_TOKEN_LIVE: &str = "SELECT user_id FROM user_tokens \
     WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3";
const USER_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
const CREDENTIALS_BY_EMAIL: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash, locked_until FROM users WHERE email_lower = lower($1)"
);
const MEMBERSHIPS: &str = "SELECT m.org_id, o.name AS org_name, m.role FROM org_members m \
     JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.name, m.org_id";
const VERIFY_USER: &str = concat!(
    "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $1 \
     RETURNING ",
    user_columns!()
);
const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2, locked_until = NULL WHERE id = $1";
const FORGET_FAILURES: &str = "DELETE FROM login_failures WHERE user_id = $1";
const REVOKE_USER_REFRESH: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE user_id = $1 AND revoked_at IS NULL";
/// Takes the user's row lock (PostgreSQL) before counting failures, so two
/// concurrent failures cannot both cross the threshold.
const LOCK_USER: &str = concat!(
    "UPDATE users SET locked_until = locked_until WHERE id = $1 RETURNING ",
    user_columns!(),
    ", password_hash, locked_until"
);
const INSERT_FAILURE: &str = "INSERT INTO login_failures (user_id, at) VALUES ($1, $2)";
const FORGET_OLD_FAILURES: &str = "DELETE FROM login_failures WHERE user_id = $1 AND at <= $2";
const COUNT_FAILURES: &str = "SELECT COUNT(*) FROM login_failures WHERE user_id = $1 AND at > $2";
const LOCK_UNTIL: &str = "UPDATE users SET locked_until = $2 WHERE id = $1";
const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family_id, user_id, \
     expires_at, created_at) VALUES ($1, $2, $3, $4, $5)";
const USE_REFRESH: &str = "UPDATE refresh_tokens SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING family_id, user_id";
const REFRESH_BY_HASH: &str =
    "SELECT family_id, user_id, used_at FROM refresh_tokens WHERE token_hash = $1";
const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE family_id = $1 AND revoked_at IS NULL";
const INSERT_ACTION: &str = "INSERT INTO audit_log (at, event, org_id, license_id, ip, \
     user_agent, detail, actor_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The statement bodies of [`AccountStore`], generic over the backend.
///
/// [`AccountStore`]: seatwarden_actors::ports::AccountStore
pub(crate) struct Accounts<DB>(PhantomData<DB>);

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: DbUuid,
    email: String,
    full_name: String,
    email_verified_at: Option<DateTime<Utc>>,
    is_platform_admin: bool,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: UserId(r.id.0),
            email: r.email,
            full_name: r.full_name,
            email_verified_at: r.email_verified_at,
            platform_admin: r.is_platform_admin,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
    locked_until: Option<DateTime<Utc>>,
}

impl From<CredentialsRow> for Credentials {
    fn from(r: CredentialsRow) -> Self {
        Credentials {
            user: r.user.into(),
            password_hash: r.password_hash,
            locked_until: r.locked_until,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct MembershipRow {
    org_id: DbUuid,
    org_name: String,
    role: String,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;
    fn try_from(r: MembershipRow) -> Result<Self, StoreError> {
        Ok(Membership {
            org_id: OrgId(r.org_id.0),
            org_name: r.org_name,
            role: r
                .role
                .parse::<Role>()
                .map_err(|e| StoreError::Corrupt(format!("org_members.role: {e}")))?,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct RefreshRow {
    family_id: DbUuid,
    user_id: DbUuid,
    used_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
pub(crate) struct UsedRefreshRow {
    family_id: DbUuid,
    user_id: DbUuid,
}

#[derive(FromRow)]
pub(crate) struct UserIdRow {
    user_id: DbUuid,
}

/// [`INSERT_ACTION`] with its values bound.
pub(crate) fn insert_action<DB: Backend>(a: &ActionAudit) -> super::Query<DB> {
    sqlx::query(INSERT_ACTION)
        .arg(DbTime(a.at))
        .arg(a.event.as_str().to_owned())
        .arg(a.org_id.map(DbUuid::from))
        .arg(a.license_id.map(DbUuid::from))
        .arg(a.client.ip.clone())
        .arg(a.client.user_agent.clone())
        .arg(a.detail.clone())
        .arg(a.actor_id.map(DbUuid))
}

/// An audit entry for `user`, with no client.
fn action(event: AuditEvent, user: UserId, at: DateTime<Utc>) -> ActionAudit {
    ActionAudit {
        at,
        event,
        actor_id: Some(user.0),
        org_id: None,
        license_id: None,
        client: ClientInfo::default(),
        detail: None,
    }
}

impl<DB> Accounts<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    UserRow: for<'r> FromRow<'r, DB::Row>,
    CredentialsRow: for<'r> FromRow<'r, DB::Row>,
    MembershipRow: for<'r> FromRow<'r, DB::Row>,
    RefreshRow: for<'r> FromRow<'r, DB::Row>,
    UsedRefreshRow: for<'r> FromRow<'r, DB::Row>,
    UserIdRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    async fn exec(conn: &mut DB::Connection, q: super::Query<DB>) -> Result<(), StoreError> {
        conn.execute(q).await.map_err(db_error).map(drop)
    }

    async fn insert_user(
        conn: &mut DB::Connection,
        user: &User,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(INSERT_USER)
            .arg(DbUuid(user.id.0))
            .arg(user.email.clone())
            .arg(password_hash.to_owned())
            .arg(user.full_name.clone())
            .arg(user.email_verified_at.map(DbTime))
            .arg(user.platform_admin)
            .arg(DbTime(user.created_at));
        Self::exec(conn, q).await
    }

    async fn insert_token(
        conn: &mut DB::Connection,
        user: UserId,
        token: &NewUserToken,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(INSERT_USER_TOKEN)
            .arg(token.token_hash.clone())
            .arg(DbUuid(user.0))
            .arg(token.purpose.as_str().to_owned())
            .arg(DbTime(token.expires_at))
            .arg(DbTime(at));
        Self::exec(conn, q).await
    }

    async fn enqueue(conn: &mut DB::Connection, mail: &NewMail) -> Result<(), StoreError> {
        Self::exec(conn, insert_outbox::<DB>(mail)).await
    }

    async fn append(conn: &mut DB::Connection, entry: &ActionAudit) -> Result<(), StoreError> {
        Self::exec(conn, insert_action::<DB>(entry)).await
    }

    async fn user_by_id(conn: &mut DB::Connection, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as::<DB, UserRow>(USER_BY_ID)
            .arg(DbUuid(id.0))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.map(User::from))
    }

    pub(crate) async fn create_account(
        conn: &mut DB::Connection,
        account: NewAccount,
        verify: NewUserToken,
        mail: NewMail,
        mut audit: ActionAudit,
    ) -> Result<(User, Org), StoreError> {
        let at = now();
        let user = User {
            id: UserId::new(),
            email: account.email,
            full_name: account.full_name,
            email_verified_at: None,
            platform_admin: false,
            created_at: at,
        };
        // The user first: a taken address fails here, before anything else.
        Self::insert_user(conn, &user, &account.password_hash).await?;
        let org = new_org(&account.org_name);
        Self::exec(conn, insert_org::<DB>(&org)).await?;
        let member = sqlx::query(INSERT_MEMBER)
            .arg(DbUuid::from(org.id))
            .arg(DbUuid(user.id.0))
            .arg(Role::Owner.as_str().to_owned())
            .arg(DbTime(at));
        Self::exec(conn, member).await?;
        Self::insert_token(conn, user.id, &verify, at).await?;
        Self::enqueue(conn, &mail).await?;
        audit.actor_id = Some(user.id.0);
        audit.org_id = Some(org.id);
        Self::append(conn, &audit).await?;
        Ok((user, org))
    }

    pub(crate) async fn create_platform_admin(
        conn: &mut DB::Connection,
        email: &str,
        full_name: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let at = now();
        let user = User {
            id: UserId::new(),
            email: email.to_owned(),
            full_name: full_name.to_owned(),
            email_verified_at: Some(at),
            platform_admin: true,
            created_at: at,
        };
        Self::insert_user(conn, &user, password_hash).await?;
        Ok(user)
    }

    pub(crate) async fn credentials(
        conn: &mut DB::Connection,
        email: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let row: Option<CredentialsRow> =
            sqlx::query_as::<DB, CredentialsRow>(CREDENTIALS_BY_EMAIL)
                .arg(email.to_owned())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        Ok(row.map(Credentials::from))
    }

    pub(crate) async fn notify_existing(
        conn: &mut DB::Connection,
        email: &str,
        mail: MailFor<'_>,
    ) -> Result<bool, StoreError> {
        let Some(found) = Self::credentials(conn, email).await? else {
            return Ok(false);
        };
        Self::enqueue(conn, &mail(&found.user)).await?;
        Ok(true)
    }

    pub(crate) async fn user(
        conn: &mut DB::Connection,
        id: UserId,
    ) -> Result<Option<User>, StoreError> {
        Self::user_by_id(conn, id).await
    }

    pub(crate) async fn memberships(
        conn: &mut DB::Connection,
        user: UserId,
    ) -> Result<Vec<Membership>, StoreError> {
        all(sqlx::query_as::<DB, MembershipRow>(MEMBERSHIPS)
            .arg(DbUuid(user.0))
            .fetch_all(&mut *conn)
            .await)
    }

    pub(crate) async fn issue_user_token(
        conn: &mut DB::Connection,
        user: UserId,
        token: NewUserToken,
        mail: MailFor<'_>,
        audit: Option<ActionAudit>,
    ) -> Result<(), StoreError> {
        let Some(found) = Self::user_by_id(conn, user).await? else {
            return Err(StoreError::NotFound(format!("user {user}")));
        };
        Self::insert_token(conn, user, &token, now()).await?;
        Self::enqueue(conn, &mail(&found)).await?;
        if let Some(audit) = audit {
            Self::append(conn, &audit).await?;
        }
        Ok(())
    }

    async fn use_token(
        conn: &mut DB::Connection,
        token_hash: &str,
        purpose: TokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        let row: Option<UserIdRow> = sqlx::query_as::<DB, UserIdRow>(USE_USER_TOKEN)
            .arg(token_hash.to_owned())
            .arg(purpose.as_str().to_owned())
            .arg(DbTime(at))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| UserId(r.user_id.0)))
    }

    pub(crate) async fn verify_email(
        conn: &mut DB::Connection,
        token_hash: &str,
        at: DateTime<Utc>,
        welcome: MailFor<'_>,
    ) -> Result<Option<User>, StoreError> {
        let Some(id) = Self::use_token(conn, token_hash, TokenPurpose::VerifyEmail, at).await?
        else {
            return Ok(None);
        };
        let row: Option<UserRow> = sqlx::query_as::<DB, UserRow>(VERIFY_USER)
            .arg(DbUuid(id.0))
            .arg(DbTime(at))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        let Some(user) = row.map(User::from) else {
            return Err(StoreError::Corrupt(format!("token of unknown user {id}")));
        };
        Self::enqueue(conn, &welcome(&user)).await?;
        Self::append(conn, &action(AuditEvent::EmailVerified, id, at)).await?;
        Ok(Some(user))
    }

    pub(crate) async fn user_token_live(
        conn: &mut DB::Connection,
        token_hash: &str,
        purpose: TokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row: Option<UserIdRow> = sqlx::query_as::<DB, UserIdRow>(USER_TOKEN_LIVE)
            .arg(token_hash.to_owned())
            .arg(purpose.as_str().to_owned())
            .arg(DbTime(at))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    pub(crate) async fn reset_password(
        conn: &mut DB::Connection,
        token_hash: &str,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        let Some(id) = Self::use_token(conn, token_hash, TokenPurpose::ResetPassword, at).await?
        else {
            return Ok(None);
        };
        let q = sqlx::query(SET_PASSWORD)
            .arg(DbUuid(id.0))
            .arg(password_hash.to_owned());
        Self::exec(conn, q).await?;
        Self::exec(conn, sqlx::query(FORGET_FAILURES).arg(DbUuid(id.0))).await?;
        let q = sqlx::query(REVOKE_USER_REFRESH)
            .arg(DbUuid(id.0))
            .arg(DbTime(at));
        Self::exec(conn, q).await?;
        Self::append(conn, &action(AuditEvent::PasswordReset, id, at)).await?;
        Ok(Some(id))
    }

    pub(crate) async fn record_login_failure(
        conn: &mut DB::Connection,
        user: UserId,
        policy: LockoutPolicy,
        audit: ActionAudit,
        locked: MailFor<'_>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at = audit.at;
        let row: Option<CredentialsRow> = sqlx::query_as::<DB, CredentialsRow>(LOCK_USER)
            .arg(DbUuid(user.0))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        let Some(current) = row.map(Credentials::from) else {
            return Err(StoreError::NotFound(format!("user {user}")));
        };
        Self::append(conn, &audit).await?;
        if current.locked_until.is_some_and(|until| until > at) {
            return Ok(None);
        }
        let window_start = at - policy.window;
        let q = sqlx::query(FORGET_OLD_FAILURES)
            .arg(DbUuid(user.0))
            .arg(DbTime(window_start));
        Self::exec(conn, q).await?;
        let q = sqlx::query(INSERT_FAILURE)
            .arg(DbUuid(user.0))
            .arg(DbTime(at));
        Self::exec(conn, q).await?;
        let (failures,): (i64,) = sqlx::query_as::<DB, (i64,)>(COUNT_FAILURES)
            .arg(DbUuid(user.0))
            .arg(DbTime(window_start))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if failures < i64::from(policy.max_failures) {
            return Ok(None);
        }
        let until = at + policy.lock_for;
        let q = sqlx::query(LOCK_UNTIL)
            .arg(DbUuid(user.0))
            .arg(DbTime(until));
        Self::exec(conn, q).await?;
        // A lock starts a fresh count: the next window begins after it.
        Self::exec(conn, sqlx::query(FORGET_FAILURES).arg(DbUuid(user.0))).await?;
        let mut entry = action(AuditEvent::AccountLocked, user, at);
        entry.client = audit.client.clone();
        entry.detail = Some(format!("failures={failures}"));
        Self::append(conn, &entry).await?;
        Self::enqueue(conn, &locked(&current.user)).await?;
        Ok(Some(until))
    }

    pub(crate) async fn clear_login_failures(
        conn: &mut DB::Connection,
        user: UserId,
    ) -> Result<(), StoreError> {
        Self::exec(conn, sqlx::query(FORGET_FAILURES).arg(DbUuid(user.0))).await
    }

    async fn insert_refresh(
        conn: &mut DB::Connection,
        token: &NewRefreshToken,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(INSERT_REFRESH)
            .arg(token.token_hash.clone())
            .arg(DbUuid(token.family_id))
            .arg(DbUuid(token.user_id.0))
            .arg(DbTime(token.expires_at))
            .arg(DbTime(at));
        Self::exec(conn, q).await
    }

    pub(crate) async fn issue_refresh_token(
        conn: &mut DB::Connection,
        token: NewRefreshToken,
    ) -> Result<(), StoreError> {
        Self::insert_refresh(conn, &token, now()).await
    }

    pub(crate) async fn rotate_refresh_token(
        conn: &mut DB::Connection,
        presented_hash: &str,
        mut next: NewRefreshToken,
        at: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let used: Option<UsedRefreshRow> = sqlx::query_as::<DB, UsedRefreshRow>(USE_REFRESH)
            .arg(presented_hash.to_owned())
            .arg(DbTime(at))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        if let Some(used) = used {
            next.family_id = used.family_id.0;
            next.user_id = UserId(used.user_id.0);
            Self::insert_refresh(conn, &next, at).await?;
            return Ok(RefreshOutcome::Rotated(next.user_id));
        }
        let known: Option<RefreshRow> = sqlx::query_as::<DB, RefreshRow>(REFRESH_BY_HASH)
            .arg(presented_hash.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        match known {
            Some(row) if row.used_at.is_some() => {
                let q = sqlx::query(REVOKE_FAMILY)
                    .arg(row.family_id)
                    .arg(DbTime(at));
                Self::exec(conn, q).await?;
                let user = UserId(row.user_id.0);
                let mut entry = action(AuditEvent::RefreshTokenReused, user, at);
                entry.detail = Some("family_revoked".to_owned());
                Self::append(conn, &entry).await?;
                Ok(RefreshOutcome::Reused(user))
            }
            _ => Ok(RefreshOutcome::Invalid),
        }
    }

    pub(crate) async fn revoke_refresh_family(
        conn: &mut DB::Connection,
        presented_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let known: Option<RefreshRow> = sqlx::query_as::<DB, RefreshRow>(REFRESH_BY_HASH)
            .arg(presented_hash.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        let Some(row) = known else {
            return Ok(false);
        };
        let q = sqlx::query(REVOKE_FAMILY)
            .arg(row.family_id)
            .arg(DbTime(at));
        Self::exec(conn, q).await?;
        Ok(true)
    }

    pub(crate) async fn append_action(
        conn: &mut DB::Connection,
        entry: &ActionAudit,
    ) -> Result<(), StoreError> {
        Self::append(conn, entry).await
    }
}

/// `impl AccountStore for $store`, where `$store` has `write_tx()` (a
/// transaction holding the backend's write lock, if it has one) and
/// `read_conn()` (a pooled connection for reads). Each method opens what
/// it needs, calls the body in [`Accounts`], and commits.
macro_rules! account_store_impl {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::AccountStore for $store {
            async fn create_account(
                &self,
                account: seatwarden_actors::domain::NewAccount,
                verify: seatwarden_actors::domain::NewUserToken,
                mail: seatwarden_actors::ports::NewMail,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<(seatwarden_actors::domain::User, seatwarden_actors::domain::Org), seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::create_account(&mut tx, account, verify, mail, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn create_platform_admin(
                &self,
                email: &str,
                full_name: &str,
                password_hash: &str,
            ) -> Result<seatwarden_actors::domain::User, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::create_platform_admin(&mut tx, email, full_name, password_hash).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn notify_existing(
                &self,
                email: &str,
                mail: seatwarden_actors::ports::MailFor<'_>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::notify_existing(&mut tx, email, mail).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn credentials(
                &self,
                email: &str,
            ) -> Result<Option<seatwarden_actors::domain::Credentials>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::accounts::Accounts::<$db>::credentials(&mut conn, email).await
            }

            async fn user(
                &self,
                id: seatwarden_actors::domain::UserId,
            ) -> Result<Option<seatwarden_actors::domain::User>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::accounts::Accounts::<$db>::user(&mut conn, id).await
            }

            async fn memberships(
                &self,
                user: seatwarden_actors::domain::UserId,
            ) -> Result<Vec<seatwarden_actors::domain::Membership>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::accounts::Accounts::<$db>::memberships(&mut conn, user).await
            }

            async fn issue_user_token(
                &self,
                user: seatwarden_actors::domain::UserId,
                token: seatwarden_actors::domain::NewUserToken,
                mail: seatwarden_actors::ports::MailFor<'_>,
                audit: Option<seatwarden_actors::domain::ActionAudit>,
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                $crate::store::accounts::Accounts::<$db>::issue_user_token(&mut tx, user, token, mail, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)
            }

            async fn verify_email(
                &self,
                token_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
                welcome: seatwarden_actors::ports::MailFor<'_>,
            ) -> Result<Option<seatwarden_actors::domain::User>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::verify_email(&mut tx, token_hash, now, welcome).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn user_token_live(
                &self,
                token_hash: &str,
                purpose: seatwarden_actors::domain::TokenPurpose,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::accounts::Accounts::<$db>::user_token_live(&mut conn, token_hash, purpose, now).await
            }

            async fn reset_password(
                &self,
                token_hash: &str,
                password_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<seatwarden_actors::domain::UserId>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::reset_password(&mut tx, token_hash, password_hash, now).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn record_login_failure(
                &self,
                user: seatwarden_actors::domain::UserId,
                policy: seatwarden_actors::domain::LockoutPolicy,
                audit: seatwarden_actors::domain::ActionAudit,
                locked: seatwarden_actors::ports::MailFor<'_>,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::record_login_failure(&mut tx, user, policy, audit, locked).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn clear_login_failures(
                &self,
                user: seatwarden_actors::domain::UserId,
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                $crate::store::accounts::Accounts::<$db>::clear_login_failures(&mut tx, user).await?;
                tx.commit().await.map_err($crate::store::db_error)
            }

            async fn issue_refresh_token(
                &self,
                token: seatwarden_actors::domain::NewRefreshToken,
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                $crate::store::accounts::Accounts::<$db>::issue_refresh_token(&mut tx, token).await?;
                tx.commit().await.map_err($crate::store::db_error)
            }

            async fn rotate_refresh_token(
                &self,
                presented_hash: &str,
                next: seatwarden_actors::domain::NewRefreshToken,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<seatwarden_actors::ports::RefreshOutcome, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::rotate_refresh_token(&mut tx, presented_hash, next, now).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn revoke_refresh_family(
                &self,
                presented_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::accounts::Accounts::<$db>::revoke_refresh_family(&mut tx, presented_hash, now).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn append_action(
                &self,
                entry: &seatwarden_actors::domain::ActionAudit,
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                $crate::store::accounts::Accounts::<$db>::append_action(&mut tx, entry).await?;
                tx.commit().await.map_err($crate::store::db_error)
            }
        }
    };
}
pub(crate) use account_store_impl;
