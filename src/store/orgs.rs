//! [`OrgStore`] on both backends, and the force-release of a session
//! ([`SessionStore::revoke_session`]).
//!
//! As in [`super::accounts`], every statement is dialect-free, so the
//! bodies are written once in [`Orgs`], generic over the backend, and
//! [`org_store_impl!`] writes each backend's thin trait impl.
//!
//! - **Optional filters** are `($n IS NULL OR column = $n)`: one prepared
//!   statement per list, no SQL built at run time. Every list is bounded by
//!   its organization (or license) first, through an index that also
//!   gives its order.
//! - **Keyset pages**: `(time, id) > ($t, $id)` with row values, which
//!   both SQLite (3.15+) and PostgreSQL compare column by column; one more
//!   row than asked is read to tell whether a next page exists.
//! - **The organization's lock**: membership changes start with
//!   `UPDATE orgs SET name = name ... RETURNING`, a no-op write that takes
//!   the org's row lock on PostgreSQL (SQLite's write transaction holds
//!   its database lock already). Two owners demoting each other then run
//!   one after the other, and the second sees that it would leave no owner.
//!
//! [`OrgStore`]: seatwarden_actors::ports::OrgStore
//! [`SessionStore::revoke_session`]: seatwarden_actors::ports::SessionStore::revoke_session

use std::marker::PhantomData;

use chrono::{DateTime, SubsecRound, Utc};
use seatwarden_actors::domain::{
    AcceptOutcome, ActionAudit, ApiKey, ApiKeyId, AuditEvent, AuditFilter, AuditRecord, Invitation,
    InvitationId, InvitationRevoke, InviteOutcome, KeyCursor, License, LicenseFilter, LicenseId,
    Member, MemberChange, NewApiKey, NewInvitation, Org, OrgId, Page, PageRequest, Role,
    SessionFilter, SessionId, SessionRecord, UserId, may_assign,
};
use seatwarden_actors::ports::{EndOutcome, NewMail, StoreError};
use sqlx::{Executor, FromRow, IntoArguments};

use super::{
    Arg, Backend, DbTime, DbUuid, LicenseRow, OrgRow, SESSION_BY_ID, SessionRow, db_error,
    insert_outbox, now, one,
};

macro_rules! member_columns {
    () => {
        "m.user_id, u.email, u.full_name, u.email_verified_at, m.role, m.created_at AS joined_at"
    };
}
macro_rules! invitation_columns {
    () => {
        "id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, accepted_by, \
         revoked_at"
    };
}
macro_rules! api_key_columns {
    () => {
        "id, org_id, name, role, key_hint, created_by, created_at, revoked_at"
    };
}

const ORG_ROLE: &str = "SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2";
/// Takes the organization's row lock (PostgreSQL) for the rest of the
/// transaction; no row when the organization is unknown.
const LOCK_ORG: &str = "UPDATE orgs SET name = name WHERE id = $1 RETURNING id";
const RENAME_ORG: &str = "UPDATE orgs SET name = $2 WHERE id = $1 RETURNING id, name, created_at";
const ORG_NAME: &str = "SELECT name FROM orgs WHERE id = $1";

const MEMBERS_PAGE: &str = concat!(
    "SELECT ",
    member_columns!(),
    " FROM org_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 \
     AND ($2 IS NULL OR (m.created_at, m.user_id) > ($2, $3)) \
     ORDER BY m.created_at, m.user_id LIMIT $4"
);
const MEMBER: &str = concat!(
    "SELECT ",
    member_columns!(),
    " FROM org_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND m.user_id = $2"
);
const COUNT_OWNERS: &str = "SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'";
const SET_ROLE: &str = "UPDATE org_members SET role = $3 WHERE org_id = $1 AND user_id = $2";
const DELETE_MEMBER: &str = "DELETE FROM org_members WHERE org_id = $1 AND user_id = $2";
const INSERT_MEMBER: &str =
    "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)";
const MEMBERS_WITH_EMAIL: &str = "SELECT COUNT(*) FROM org_members m \
     JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email_lower = lower($2)";
const USER_EMAIL_LOWER: &str = "SELECT email_lower FROM users WHERE id = $1";

const INSERT_INVITATION: &str = "INSERT INTO invitations (id, org_id, email, email_lower, role, \
     token_hash, invited_by, created_at, expires_at) \
     VALUES ($1, $2, $3, lower($3), $4, $5, $6, $7, $8)";
const INVITATIONS_PAGE: &str = concat!(
    "SELECT ",
    invitation_columns!(),
    " FROM invitations WHERE org_id = $1 \
     AND ($2 IS NULL OR (created_at, id) > ($2, $3)) ORDER BY created_at, id LIMIT $4"
);
const INVITATION: &str = concat!(
    "SELECT ",
    invitation_columns!(),
    " FROM invitations WHERE org_id = $1 AND id = $2"
);
const REVOKE_INVITATION: &str = concat!(
    "UPDATE invitations SET revoked_at = $3 WHERE org_id = $1 AND id = $2 \
     AND revoked_at IS NULL AND accepted_at IS NULL RETURNING ",
    invitation_columns!()
);
/// The live invitation with this token hash, with its address as the
/// database lower-cases it (the same `lower()` as `users.email_lower`).
const LIVE_INVITATION: &str = concat!(
    "SELECT ",
    invitation_columns!(),
    ", email_lower FROM invitations WHERE token_hash = $1 \
     AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2"
);
/// Spends an invitation; no row when another caller spent it first (on
/// PostgreSQL the second waits for the first's row lock, then re-checks).
const ACCEPT_INVITATION: &str = concat!(
    "UPDATE invitations SET accepted_at = $2, accepted_by = $3 WHERE id = $1 \
     AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2 RETURNING ",
    invitation_columns!()
);

const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, org_id, name, role, key_hash, key_hint, \
     created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const API_KEYS_PAGE: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE org_id = $1 \
     AND ($2 IS NULL OR (created_at, id) > ($2, $3)) ORDER BY created_at, id LIMIT $4"
);
const API_KEY: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE org_id = $1 AND id = $2"
);
const REVOKE_API_KEY: &str = concat!(
    "UPDATE api_keys SET revoked_at = $3 WHERE org_id = $1 AND id = $2 \
     AND revoked_at IS NULL RETURNING ",
    api_key_columns!()
);
const API_KEY_BY_HASH: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
);

const LICENSES_PAGE: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE org_id = $1 \
     AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR tier = $3) \
     AND ($4 IS NULL OR expires_at < $4) \
     AND ($5 IS NULL OR expires_at >= $5) \
     AND ($6 IS NULL OR (created_at, id) > ($6, $7)) \
     ORDER BY created_at, id LIMIT $8"
);
/// Newest first. `$2` is `'live'` or `'ended'`.
const SESSIONS_PAGE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE license_id = $1 \
     AND ($2 IS NULL OR ($2 = 'live') = (ended_at IS NULL)) \
     AND ($3 IS NULL OR hardware_id = $3) \
     AND ($4 IS NULL OR end_reason = $4) \
     AND ($5 IS NULL OR started_at >= $5) \
     AND ($6 IS NULL OR started_at < $6) \
     AND ($7 IS NULL OR (started_at, id) < ($7, $8)) \
     ORDER BY started_at DESC, id DESC LIMIT $9"
);
/// Newest first.
const AUDIT_PAGE: &str = "SELECT id, at, event, actor_id, org_id, license_id, session_id, \
     hardware_id, ip, user_agent, detail FROM audit_log WHERE org_id = $1 \
     AND ($2 IS NULL OR event = $2) \
     AND ($3 IS NULL OR actor_id = $3) \
     AND ($4 IS NULL OR license_id = $4) \
     AND ($5 IS NULL OR at >= $5) \
     AND ($6 IS NULL OR at < $6) \
     AND ($7 IS NULL OR id < $7) \
     ORDER BY id DESC LIMIT $8";

const REVOKE_OPEN_SESSION: &str = concat!(
    "UPDATE sessions SET ended_at = $2, end_reason = 'revoked' \
     WHERE id = $1 AND ended_at IS NULL RETURNING ",
    session_columns!()
);
/// An audit entry with every column a person's action on a session needs.
const INSERT_ACTION: &str = "INSERT INTO audit_log (at, event, org_id, license_id, session_id, \
     hardware_id, ip, user_agent, detail, actor_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// The statement bodies of [`OrgStore`], generic over the backend.
///
/// [`OrgStore`]: seatwarden_actors::ports::OrgStore
pub(crate) struct Orgs<DB>(PhantomData<DB>);

#[derive(FromRow)]
pub(crate) struct MemberRow {
    user_id: DbUuid,
    email: String,
    full_name: String,
    email_verified_at: Option<DateTime<Utc>>,
    role: String,
    joined_at: DateTime<Utc>,
}

#[derive(FromRow)]
pub(crate) struct InvitationRow {
    id: DbUuid,
    org_id: DbUuid,
    email: String,
    role: String,
    invited_by: DbUuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    accepted_by: Option<DbUuid>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
pub(crate) struct LiveInvitationRow {
    #[sqlx(flatten)]
    invitation: InvitationRow,
    email_lower: String,
}

#[derive(FromRow)]
pub(crate) struct ApiKeyRow {
    id: DbUuid,
    org_id: DbUuid,
    name: String,
    role: String,
    key_hint: String,
    created_by: DbUuid,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
pub(crate) struct AuditRecordRow {
    id: i64,
    at: DateTime<Utc>,
    event: String,
    actor_id: Option<DbUuid>,
    org_id: Option<DbUuid>,
    license_id: Option<DbUuid>,
    session_id: Option<DbUuid>,
    hardware_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

fn role(column: &str, value: &str) -> Result<Role, StoreError> {
    value
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;
    fn try_from(r: MemberRow) -> Result<Self, StoreError> {
        Ok(Member {
            user_id: UserId(r.user_id.0),
            email: r.email,
            full_name: r.full_name,
            email_verified: r.email_verified_at.is_some(),
            role: role("org_members.role", &r.role)?,
            joined_at: r.joined_at,
        })
    }
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = StoreError;
    fn try_from(r: InvitationRow) -> Result<Self, StoreError> {
        Ok(Invitation {
            id: InvitationId(r.id.0),
            org_id: OrgId(r.org_id.0),
            email: r.email,
            role: role("invitations.role", &r.role)?,
            invited_by: UserId(r.invited_by.0),
            created_at: r.created_at,
            expires_at: r.expires_at,
            accepted_at: r.accepted_at,
            accepted_by: r.accepted_by.map(|u| UserId(u.0)),
            revoked_at: r.revoked_at,
        })
    }
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKey {
            id: ApiKeyId(r.id.0),
            org_id: OrgId(r.org_id.0),
            name: r.name,
            role: role("api_keys.role", &r.role)?,
            key_hint: r.key_hint,
            created_by: UserId(r.created_by.0),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

impl TryFrom<AuditRecordRow> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: AuditRecordRow) -> Result<Self, StoreError> {
        Ok(AuditRecord {
            id: r.id,
            at: r.at,
            event: r
                .event
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("audit_log.event: {e}")))?,
            actor_id: r.actor_id.map(|a| a.0),
            org_id: r.org_id.map(|o| OrgId(o.0)),
            license_id: r.license_id.map(|l| LicenseId(l.0)),
            session_id: r.session_id.map(|s| SessionId(s.0)),
            hardware_id: r.hardware_id,
            ip: r.ip,
            user_agent: r.user_agent,
            detail: r.detail,
        })
    }
}

/// Converts rows read in page order (one more than `limit` at most) into
/// a page.
fn page<R, T, C>(
    rows: Result<Vec<R>, sqlx::Error>,
    limit: u32,
    key: impl Fn(&T) -> C,
) -> Result<Page<T, C>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    let items = super::all(rows)?;
    Ok(Page::from_rows(items, limit, key))
}

/// `LIMIT` for a page: one row more than asked.
fn fetch_limit(limit: u32) -> i64 {
    i64::from(limit) + 1
}

fn cursor_at(c: Option<KeyCursor>) -> (Option<DbTime>, Option<DbUuid>) {
    (c.map(|c| DbTime(c.at)), c.map(|c| DbUuid(c.id)))
}

/// `audit` completed with what this change is: its event, organization and
/// detail.
fn completed(mut audit: ActionAudit, event: AuditEvent, org: OrgId, detail: String) -> ActionAudit {
    audit.event = event;
    audit.org_id = Some(org);
    audit.detail = Some(detail);
    audit
}

impl<DB> Orgs<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    MemberRow: for<'r> FromRow<'r, DB::Row>,
    InvitationRow: for<'r> FromRow<'r, DB::Row>,
    LiveInvitationRow: for<'r> FromRow<'r, DB::Row>,
    ApiKeyRow: for<'r> FromRow<'r, DB::Row>,
    AuditRecordRow: for<'r> FromRow<'r, DB::Row>,
    LicenseRow: for<'r> FromRow<'r, DB::Row>,
    SessionRow: for<'r> FromRow<'r, DB::Row>,
    OrgRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (DbUuid,): FromRow<'r, DB::Row>,
{
    async fn exec(conn: &mut DB::Connection, q: super::Query<DB>) -> Result<(), StoreError> {
        conn.execute(q).await.map_err(db_error).map(drop)
    }

    /// Appends a person's action; `session` adds the session's id and
    /// hardware id.
    async fn append(
        conn: &mut DB::Connection,
        a: &ActionAudit,
        session: Option<(SessionId, &str)>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(INSERT_ACTION)
            .arg(DbTime(a.at))
            .arg(a.event.as_str().to_owned())
            .arg(a.org_id.map(DbUuid::from))
            .arg(a.license_id.map(DbUuid::from))
            .arg(session.map(|(id, _)| DbUuid::from(id)))
            .arg(session.map(|(_, hw)| hw.to_owned()))
            .arg(a.client.ip.clone())
            .arg(a.client.user_agent.clone())
            .arg(a.detail.clone())
            .arg(a.actor_id.map(DbUuid));
        Self::exec(conn, q).await
    }

    async fn role_of(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Role>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as::<DB, (String,)>(ORG_ROLE)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(user))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        row.map(|(r,)| role("org_members.role", &r)).transpose()
    }

    async fn lock_org(conn: &mut DB::Connection, org: OrgId) -> Result<bool, StoreError> {
        let row: Option<(DbUuid,)> = sqlx::query_as::<DB, (DbUuid,)>(LOCK_ORG)
            .arg(DbUuid::from(org))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    async fn member(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Member>, StoreError> {
        one(sqlx::query_as::<DB, MemberRow>(MEMBER)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(user))
            .fetch_optional(&mut *conn)
            .await)
    }

    async fn owners(conn: &mut DB::Connection, org: OrgId) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as::<DB, (i64,)>(COUNT_OWNERS)
            .arg(DbUuid::from(org))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(n)
    }

    pub(crate) async fn org_role(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Role>, StoreError> {
        Self::role_of(conn, org, user).await
    }

    pub(crate) async fn rename_org(
        conn: &mut DB::Connection,
        org: OrgId,
        name: &str,
        audit: ActionAudit,
    ) -> Result<Option<Org>, StoreError> {
        let renamed: Option<Org> = one(sqlx::query_as::<DB, OrgRow>(RENAME_ORG)
            .arg(DbUuid::from(org))
            .arg(name.to_owned())
            .fetch_optional(&mut *conn)
            .await)?;
        if renamed.is_some() {
            let entry = completed(audit, AuditEvent::OrgRenamed, org, format!("name={name}"));
            Self::append(conn, &entry, None).await?;
        }
        Ok(renamed)
    }

    pub(crate) async fn members(
        conn: &mut DB::Connection,
        org: OrgId,
        req: PageRequest<KeyCursor>,
    ) -> Result<Page<Member, KeyCursor>, StoreError> {
        let (at, id) = cursor_at(req.after);
        let rows = sqlx::query_as::<DB, MemberRow>(MEMBERS_PAGE)
            .arg(DbUuid::from(org))
            .arg(at)
            .arg(id)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |m: &Member| KeyCursor {
            at: m.joined_at,
            id: m.user_id.0,
        })
    }

    /// The checks a role change or removal shares, under the org's lock:
    /// the target is a member, `actor` may give them `next`, and an owner
    /// remains. `Ok(member)` when the change may go ahead.
    async fn check_change(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
        next: Option<Role>,
        actor: Role,
    ) -> Result<Result<Member, MemberChange>, StoreError> {
        if !Self::lock_org(conn, org).await? {
            return Ok(Err(MemberChange::NotMember));
        }
        let Some(member) = Self::member(conn, org, user).await? else {
            return Ok(Err(MemberChange::NotMember));
        };
        if !may_assign(actor, Some(member.role), next) {
            return Ok(Err(MemberChange::Forbidden));
        }
        let demotes_owner = member.role == Role::Owner && next != Some(Role::Owner);
        if demotes_owner && Self::owners(conn, org).await? <= 1 {
            return Ok(Err(MemberChange::LastOwner));
        }
        Ok(Ok(member))
    }

    pub(crate) async fn set_member_role(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
        next: Role,
        actor: Role,
        audit: ActionAudit,
    ) -> Result<MemberChange, StoreError> {
        let mut member = match Self::check_change(conn, org, user, Some(next), actor).await? {
            Ok(member) => member,
            Err(refused) => return Ok(refused),
        };
        if member.role == next {
            return Ok(MemberChange::Changed(member));
        }
        let q = sqlx::query(SET_ROLE)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(user))
            .arg(next.as_str().to_owned());
        Self::exec(conn, q).await?;
        let detail = format!("user_id={user} from={} to={next}", member.role);
        let entry = completed(audit, AuditEvent::MemberRoleChanged, org, detail);
        Self::append(conn, &entry, None).await?;
        member.role = next;
        Ok(MemberChange::Changed(member))
    }

    pub(crate) async fn remove_member(
        conn: &mut DB::Connection,
        org: OrgId,
        user: UserId,
        actor: Role,
        audit: ActionAudit,
    ) -> Result<MemberChange, StoreError> {
        let member = match Self::check_change(conn, org, user, None, actor).await? {
            Ok(member) => member,
            Err(refused) => return Ok(refused),
        };
        let q = sqlx::query(DELETE_MEMBER)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(user));
        Self::exec(conn, q).await?;
        let detail = format!("user_id={user} role={}", member.role);
        let entry = completed(audit, AuditEvent::MemberRemoved, org, detail);
        Self::append(conn, &entry, None).await?;
        Ok(MemberChange::Changed(member))
    }

    pub(crate) async fn create_invitation(
        conn: &mut DB::Connection,
        new: NewInvitation,
        actor: Role,
        mail: NewMail,
        audit: ActionAudit,
    ) -> Result<InviteOutcome, StoreError> {
        if !may_assign(actor, None, Some(new.role)) {
            return Ok(InviteOutcome::Forbidden);
        }
        let (members,): (i64,) = sqlx::query_as::<DB, (i64,)>(MEMBERS_WITH_EMAIL)
            .arg(DbUuid::from(new.org_id))
            .arg(new.email.clone())
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if members > 0 {
            return Ok(InviteOutcome::AlreadyMember);
        }
        let at = now();
        let invitation = Invitation {
            id: InvitationId::new(),
            org_id: new.org_id,
            email: new.email,
            role: new.role,
            invited_by: new.invited_by,
            created_at: at,
            // At the precision both backends keep, as it will read back.
            expires_at: new.expires_at.trunc_subsecs(6),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        let q = sqlx::query(INSERT_INVITATION)
            .arg(DbUuid::from(invitation.id))
            .arg(DbUuid::from(invitation.org_id))
            .arg(invitation.email.clone())
            .arg(invitation.role.as_str().to_owned())
            .arg(new.token_hash)
            .arg(DbUuid::from(invitation.invited_by))
            .arg(DbTime(at))
            .arg(DbTime(invitation.expires_at));
        Self::exec(conn, q).await?;
        Self::exec(conn, insert_outbox::<DB>(&mail)).await?;
        let detail = format!(
            "invitation_id={} email={} role={}",
            invitation.id, invitation.email, invitation.role
        );
        let entry = completed(audit, AuditEvent::InvitationCreated, new.org_id, detail);
        Self::append(conn, &entry, None).await?;
        Ok(InviteOutcome::Invited(invitation))
    }

    pub(crate) async fn invitations(
        conn: &mut DB::Connection,
        org: OrgId,
        req: PageRequest<KeyCursor>,
    ) -> Result<Page<Invitation, KeyCursor>, StoreError> {
        let (at, id) = cursor_at(req.after);
        let rows = sqlx::query_as::<DB, InvitationRow>(INVITATIONS_PAGE)
            .arg(DbUuid::from(org))
            .arg(at)
            .arg(id)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |i: &Invitation| KeyCursor {
            at: i.created_at,
            id: i.id.0,
        })
    }

    pub(crate) async fn revoke_invitation(
        conn: &mut DB::Connection,
        org: OrgId,
        id: InvitationId,
        audit: ActionAudit,
    ) -> Result<Option<InvitationRevoke>, StoreError> {
        let at = audit.at;
        let revoked: Option<Invitation> =
            one(sqlx::query_as::<DB, InvitationRow>(REVOKE_INVITATION)
                .arg(DbUuid::from(org))
                .arg(DbUuid::from(id))
                .arg(DbTime(at))
                .fetch_optional(&mut *conn)
                .await)?;
        if let Some(invitation) = revoked {
            let entry = completed(
                audit,
                AuditEvent::InvitationRevoked,
                org,
                format!("invitation_id={id}"),
            );
            Self::append(conn, &entry, None).await?;
            return Ok(Some(InvitationRevoke::Revoked(invitation)));
        }
        let current: Option<Invitation> = one(sqlx::query_as::<DB, InvitationRow>(INVITATION)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(id))
            .fetch_optional(&mut *conn)
            .await)?;
        Ok(current.map(|i| {
            if i.accepted_at.is_some() {
                InvitationRevoke::AlreadyAccepted(i)
            } else {
                InvitationRevoke::Revoked(i)
            }
        }))
    }

    pub(crate) async fn accept_invitation(
        conn: &mut DB::Connection,
        token_hash: &str,
        user: UserId,
        at: DateTime<Utc>,
        audit: ActionAudit,
    ) -> Result<AcceptOutcome, StoreError> {
        let live: Option<LiveInvitationRow> =
            sqlx::query_as::<DB, LiveInvitationRow>(LIVE_INVITATION)
                .arg(token_hash.to_owned())
                .arg(DbTime(at))
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        let Some(live) = live else {
            return Ok(AcceptOutcome::Invalid);
        };
        let invited_address = live.email_lower;
        let invitation = Invitation::try_from(live.invitation)?;
        let address: Option<(String,)> = sqlx::query_as::<DB, (String,)>(USER_EMAIL_LOWER)
            .arg(DbUuid::from(user))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        match address {
            Some((address,)) if address == invited_address => {}
            _ => return Ok(AcceptOutcome::WrongAccount),
        }
        let org = invitation.org_id;
        if Self::role_of(conn, org, user).await?.is_some() {
            return Ok(AcceptOutcome::AlreadyMember);
        }
        let spent: Option<Invitation> =
            one(sqlx::query_as::<DB, InvitationRow>(ACCEPT_INVITATION)
                .arg(DbUuid::from(invitation.id))
                .arg(DbTime(at))
                .arg(DbUuid::from(user))
                .fetch_optional(&mut *conn)
                .await)?;
        let Some(invitation) = spent else {
            return Ok(AcceptOutcome::Invalid);
        };
        let q = sqlx::query(INSERT_MEMBER)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(user))
            .arg(invitation.role.as_str().to_owned())
            .arg(DbTime(at));
        match Self::exec(conn, q).await {
            // Joined meanwhile through another invitation.
            Err(StoreError::Conflict(_)) => return Ok(AcceptOutcome::AlreadyMember),
            other => other?,
        }
        let (org_name,): (String,) = sqlx::query_as::<DB, (String,)>(ORG_NAME)
            .arg(DbUuid::from(org))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let mut entry = completed(
            audit,
            AuditEvent::InvitationAccepted,
            org,
            format!("invitation_id={} role={}", invitation.id, invitation.role),
        );
        entry.actor_id = Some(user.0);
        Self::append(conn, &entry, None).await?;
        Ok(AcceptOutcome::Joined {
            invitation,
            org_name,
        })
    }

    pub(crate) async fn create_api_key(
        conn: &mut DB::Connection,
        new: NewApiKey,
        audit: ActionAudit,
    ) -> Result<ApiKey, StoreError> {
        if !ApiKey::allowed_role(new.role) {
            return Err(StoreError::Conflict(format!(
                "an API key cannot be {}",
                new.role
            )));
        }
        let key = ApiKey {
            id: ApiKeyId::new(),
            org_id: new.org_id,
            name: new.name,
            role: new.role,
            key_hint: new.key_hint,
            created_by: new.created_by,
            created_at: now(),
            revoked_at: None,
        };
        let q = sqlx::query(INSERT_API_KEY)
            .arg(DbUuid::from(key.id))
            .arg(DbUuid::from(key.org_id))
            .arg(key.name.clone())
            .arg(key.role.as_str().to_owned())
            .arg(new.key_hash)
            .arg(key.key_hint.clone())
            .arg(DbUuid::from(key.created_by))
            .arg(DbTime(key.created_at));
        Self::exec(conn, q).await?;
        let detail = format!("api_key_id={} role={}", key.id, key.role);
        let entry = completed(audit, AuditEvent::ApiKeyCreated, key.org_id, detail);
        Self::append(conn, &entry, None).await?;
        Ok(key)
    }

    pub(crate) async fn api_keys(
        conn: &mut DB::Connection,
        org: OrgId,
        req: PageRequest<KeyCursor>,
    ) -> Result<Page<ApiKey, KeyCursor>, StoreError> {
        let (at, id) = cursor_at(req.after);
        let rows = sqlx::query_as::<DB, ApiKeyRow>(API_KEYS_PAGE)
            .arg(DbUuid::from(org))
            .arg(at)
            .arg(id)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |k: &ApiKey| KeyCursor {
            at: k.created_at,
            id: k.id.0,
        })
    }

    pub(crate) async fn revoke_api_key(
        conn: &mut DB::Connection,
        org: OrgId,
        id: ApiKeyId,
        audit: ActionAudit,
    ) -> Result<Option<ApiKey>, StoreError> {
        let revoked: Option<ApiKey> = one(sqlx::query_as::<DB, ApiKeyRow>(REVOKE_API_KEY)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(id))
            .arg(DbTime(audit.at))
            .fetch_optional(&mut *conn)
            .await)?;
        if let Some(key) = revoked {
            let entry = completed(
                audit,
                AuditEvent::ApiKeyRevoked,
                org,
                format!("api_key_id={id}"),
            );
            Self::append(conn, &entry, None).await?;
            return Ok(Some(key));
        }
        one(sqlx::query_as::<DB, ApiKeyRow>(API_KEY)
            .arg(DbUuid::from(org))
            .arg(DbUuid::from(id))
            .fetch_optional(&mut *conn)
            .await)
    }

    pub(crate) async fn api_key_by_hash(
        conn: &mut DB::Connection,
        key_hash: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        one(sqlx::query_as::<DB, ApiKeyRow>(API_KEY_BY_HASH)
            .arg(key_hash.to_owned())
            .fetch_optional(&mut *conn)
            .await)
    }

    pub(crate) async fn org_licenses(
        conn: &mut DB::Connection,
        org: OrgId,
        filter: &LicenseFilter,
        req: PageRequest<KeyCursor>,
    ) -> Result<Page<License, KeyCursor>, StoreError> {
        let (at, id) = cursor_at(req.after);
        let rows = sqlx::query_as::<DB, LicenseRow>(LICENSES_PAGE)
            .arg(DbUuid::from(org))
            .arg(filter.status.map(|s| s.as_str().to_owned()))
            .arg(filter.tier.clone())
            .arg(filter.expires_before.map(DbTime))
            .arg(filter.expires_after.map(DbTime))
            .arg(at)
            .arg(id)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |l: &License| KeyCursor {
            at: l.created_at,
            id: l.id.0,
        })
    }

    pub(crate) async fn license_sessions(
        conn: &mut DB::Connection,
        license: LicenseId,
        filter: &SessionFilter,
        req: PageRequest<KeyCursor>,
    ) -> Result<Page<SessionRecord, KeyCursor>, StoreError> {
        let (at, id) = cursor_at(req.after);
        let live = filter
            .live
            .map(|live| if live { "live" } else { "ended" }.to_owned());
        let rows = sqlx::query_as::<DB, SessionRow>(SESSIONS_PAGE)
            .arg(DbUuid::from(license))
            .arg(live)
            .arg(filter.hardware_id.clone())
            .arg(filter.end_reason.map(|r| r.as_str().to_owned()))
            .arg(filter.started_after.map(DbTime))
            .arg(filter.started_before.map(DbTime))
            .arg(at)
            .arg(id)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |s: &SessionRecord| KeyCursor {
            at: s.started_at,
            id: s.id.0,
        })
    }

    pub(crate) async fn org_audit(
        conn: &mut DB::Connection,
        org: OrgId,
        filter: &AuditFilter,
        req: PageRequest<i64>,
    ) -> Result<Page<AuditRecord, i64>, StoreError> {
        let rows = sqlx::query_as::<DB, AuditRecordRow>(AUDIT_PAGE)
            .arg(DbUuid::from(org))
            .arg(filter.event.map(|e| e.as_str().to_owned()))
            .arg(filter.actor_id.map(DbUuid))
            .arg(filter.license_id.map(DbUuid::from))
            .arg(filter.from.map(DbTime))
            .arg(filter.to.map(DbTime))
            .arg(req.after)
            .arg(fetch_limit(req.limit))
            .fetch_all(&mut *conn)
            .await;
        page(rows, req.limit, |a: &AuditRecord| a.id)
    }

    /// The body of [`SessionStore::revoke_session`], inside the backend's
    /// write transaction; the same two statements as `end_session_in`, for
    /// the same reasons (see there).
    ///
    /// [`SessionStore::revoke_session`]: seatwarden_actors::ports::SessionStore::revoke_session
    pub(crate) async fn revoke_session(
        conn: &mut DB::Connection,
        id: SessionId,
        ended_at: DateTime<Utc>,
        audit: &ActionAudit,
    ) -> Result<Option<EndOutcome>, StoreError> {
        let ended: Option<SessionRecord> =
            one(sqlx::query_as::<DB, SessionRow>(REVOKE_OPEN_SESSION)
                .arg(DbUuid::from(id))
                .arg(DbTime(ended_at))
                .fetch_optional(&mut *conn)
                .await)?;
        if let Some(record) = ended {
            let mut entry = audit.clone();
            entry.event = AuditEvent::SessionRevoked;
            entry.org_id = Some(record.org_id);
            entry.license_id = Some(record.license_id);
            Self::append(conn, &entry, Some((record.id, &record.hardware_id))).await?;
            return Ok(Some(EndOutcome::Ended(record)));
        }
        let current: Option<SessionRecord> = one(sqlx::query_as::<DB, SessionRow>(SESSION_BY_ID)
            .arg(DbUuid::from(id))
            .fetch_optional(&mut *conn)
            .await)?;
        Ok(current.map(EndOutcome::AlreadyEnded))
    }
}

/// `impl OrgStore for $store`, where `$store` has `write_tx()` and
/// `read_conn()` (see [`super::accounts::account_store_impl`]).
macro_rules! org_store_impl {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::OrgStore for $store {
            async fn org_role(
                &self,
                org: seatwarden_actors::domain::OrgId,
                user: seatwarden_actors::domain::UserId,
            ) -> Result<Option<seatwarden_actors::domain::Role>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::org_role(&mut conn, org, user).await
            }

            async fn rename_org(
                &self,
                org: seatwarden_actors::domain::OrgId,
                name: &str,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<Option<seatwarden_actors::domain::Org>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::rename_org(&mut tx, org, name, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn members(
                &self,
                org: seatwarden_actors::domain::OrgId,
                page: seatwarden_actors::domain::PageRequest<seatwarden_actors::domain::KeyCursor>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::Member, seatwarden_actors::domain::KeyCursor>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::members(&mut conn, org, page).await
            }

            async fn set_member_role(
                &self,
                org: seatwarden_actors::domain::OrgId,
                user: seatwarden_actors::domain::UserId,
                role: seatwarden_actors::domain::Role,
                actor: seatwarden_actors::domain::Role,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::MemberChange, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::set_member_role(&mut tx, org, user, role, actor, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn remove_member(
                &self,
                org: seatwarden_actors::domain::OrgId,
                user: seatwarden_actors::domain::UserId,
                actor: seatwarden_actors::domain::Role,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::MemberChange, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::remove_member(&mut tx, org, user, actor, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn create_invitation(
                &self,
                new: seatwarden_actors::domain::NewInvitation,
                actor: seatwarden_actors::domain::Role,
                mail: seatwarden_actors::ports::NewMail,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::InviteOutcome, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::create_invitation(&mut tx, new, actor, mail, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn invitations(
                &self,
                org: seatwarden_actors::domain::OrgId,
                page: seatwarden_actors::domain::PageRequest<seatwarden_actors::domain::KeyCursor>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::Invitation, seatwarden_actors::domain::KeyCursor>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::invitations(&mut conn, org, page).await
            }

            async fn revoke_invitation(
                &self,
                org: seatwarden_actors::domain::OrgId,
                id: seatwarden_actors::domain::InvitationId,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<Option<seatwarden_actors::domain::InvitationRevoke>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::revoke_invitation(&mut tx, org, id, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn accept_invitation(
                &self,
                token_hash: &str,
                user: seatwarden_actors::domain::UserId,
                now: chrono::DateTime<chrono::Utc>,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::AcceptOutcome, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::accept_invitation(&mut tx, token_hash, user, now, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn create_api_key(
                &self,
                new: seatwarden_actors::domain::NewApiKey,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::ApiKey, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::create_api_key(&mut tx, new, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn api_keys(
                &self,
                org: seatwarden_actors::domain::OrgId,
                page: seatwarden_actors::domain::PageRequest<seatwarden_actors::domain::KeyCursor>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::ApiKey, seatwarden_actors::domain::KeyCursor>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::api_keys(&mut conn, org, page).await
            }

            async fn revoke_api_key(
                &self,
                org: seatwarden_actors::domain::OrgId,
                id: seatwarden_actors::domain::ApiKeyId,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<Option<seatwarden_actors::domain::ApiKey>, seatwarden_actors::ports::StoreError> {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::orgs::Orgs::<$db>::revoke_api_key(&mut tx, org, id, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn api_key_by_hash(
                &self,
                key_hash: &str,
            ) -> Result<Option<seatwarden_actors::domain::ApiKey>, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::api_key_by_hash(&mut conn, key_hash).await
            }

            async fn org_licenses(
                &self,
                org: seatwarden_actors::domain::OrgId,
                filter: &seatwarden_actors::domain::LicenseFilter,
                page: seatwarden_actors::domain::PageRequest<seatwarden_actors::domain::KeyCursor>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::License, seatwarden_actors::domain::KeyCursor>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::org_licenses(&mut conn, org, filter, page).await
            }

            async fn license_sessions(
                &self,
                license: seatwarden_actors::domain::LicenseId,
                filter: &seatwarden_actors::domain::SessionFilter,
                page: seatwarden_actors::domain::PageRequest<seatwarden_actors::domain::KeyCursor>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::SessionRecord, seatwarden_actors::domain::KeyCursor>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::license_sessions(&mut conn, license, filter, page).await
            }

            async fn org_audit(
                &self,
                org: seatwarden_actors::domain::OrgId,
                filter: &seatwarden_actors::domain::AuditFilter,
                page: seatwarden_actors::domain::PageRequest<i64>,
            ) -> Result<
                seatwarden_actors::domain::Page<seatwarden_actors::domain::AuditRecord, i64>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::orgs::Orgs::<$db>::org_audit(&mut conn, org, filter, page).await
            }
        }
    };
}
pub(crate) use org_store_impl;
