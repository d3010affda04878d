//! [`AdminStore`] on both backends: the cross-tenant listings, written once
//! generic over the backend like [`super::accounts`].
//!
//! Listings are newest first with keyset pagination on `(created_at, id)`:
//! a page costs one index range scan however deep it is, and rows created
//! while someone pages never shift the next page. Optional filters are
//! written `($n IS NULL OR column = $n)`, so each listing is one fixed
//! statement with no SQL built at run time.
//!
//! [`AdminStore`]: seatwarden_actors::ports::AdminStore

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{
    ActionAudit, License, LicenseId, LicenseUpdate, NewLicense, Org, User,
};
use seatwarden_actors::ports::{Analytics, LicenseFilter, Page, PageRequest, StoreError};
use sqlx::{Executor, FromRow, IntoArguments};

use super::accounts::{UserRow, insert_action};
use super::{
    Arg, Backend, DbTime, DbUuid, LicenseRow, OrgRow, RevokedRow, db_error, insert_license,
    new_license, update_license_in,
};

/// The keyset condition after the cursor `($2, $3)` (both NULL: none).
macro_rules! after_cursor {
    ($t:literal, $id:literal) => {
        concat!(
            "($",
            $t,
            " IS NULL OR created_at < $",
            $t,
            " OR (created_at = $",
            $t,
            " AND id < $",
            $id,
            "))"
        )
    };
}

const LIST_USERS: &str = concat!(
    "SELECT id, email, full_name, email_verified_at, is_platform_admin, created_at FROM users \
     WHERE ($1 IS NULL OR lower(email) LIKE $1 ESCAPE '\\' OR lower(full_name) LIKE $1 ESCAPE '\\') \
     AND ",
    after_cursor!("2", "3"),
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);
const LIST_ORGS: &str = concat!(
    "SELECT ",
    org_columns!(),
    " FROM orgs WHERE ($1 IS NULL OR lower(name) LIKE $1 ESCAPE '\\') AND ",
    after_cursor!("2", "3"),
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);
const LIST_LICENSES: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR tier = $3) AND ",
    after_cursor!("4", "5"),
    " ORDER BY created_at DESC, id DESC LIMIT $6"
);
const COUNT_ORGS: &str = "SELECT COUNT(*) FROM orgs";
const COUNT_USERS: &str = "SELECT COUNT(*) FROM users";
const COUNT_SIGNUPS: &str = "SELECT COUNT(*) FROM users WHERE created_at >= $1";
const ACTIVE_LICENSES: &str = "SELECT COUNT(*), COALESCE(SUM(seats), 0) FROM licenses \
     WHERE status = 'active' AND (expires_at IS NULL OR expires_at > $1)";
const SEATS_IN_USE: &str = "SELECT COUNT(*) FROM sessions s JOIN licenses l ON l.id = s.license_id \
     WHERE s.ended_at IS NULL AND l.status = 'active' \
     AND (l.expires_at IS NULL OR l.expires_at > $1)";

/// `%text%` in lower case for `LIKE ... ESCAPE '\'`, with the pattern's own
/// characters escaped, so a search for `50%` finds just that.
fn like_pattern(search: Option<&str>) -> Option<String> {
    let search = search?.trim();
    if search.is_empty() {
        return None;
    }
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Some(pattern)
}

/// Splits the `limit + 1` rows fetched into a page and its cursor.
fn page<T>(
    mut items: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = more.then(|| items.last().map(&key)).flatten();
    Page { items, next }
}

/// The statement bodies of [`AdminStore`], generic over the backend.
///
/// [`AdminStore`]: seatwarden_actors::ports::AdminStore
pub(crate) struct Admin<DB>(PhantomData<DB>);

impl<DB> Admin<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    UserRow: for<'r> FromRow<'r, DB::Row>,
    OrgRow: for<'r> FromRow<'r, DB::Row>,
    LicenseRow: for<'r> FromRow<'r, DB::Row>,
    RevokedRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (i64, i64): FromRow<'r, DB::Row>,
{
    fn cursor(p: &PageRequest) -> (Option<DbTime>, Option<DbUuid>) {
        (
            p.after.map(|(t, _)| DbTime(t)),
            p.after.map(|(_, id)| DbUuid(id)),
        )
    }

    pub(crate) async fn list_users(
        conn: &mut DB::Connection,
        p: &PageRequest,
    ) -> Result<Page<User>, StoreError> {
        let (t, id) = Self::cursor(p);
        let rows: Vec<UserRow> = sqlx::query_as::<DB, UserRow>(LIST_USERS)
            .arg(like_pattern(p.search.as_deref()))
            .arg(t)
            .arg(id)
            .arg(i64::from(p.limit) + 1)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        let users = rows.into_iter().map(User::from).collect();
        Ok(page(users, p.limit, |u: &User| (u.created_at, u.id.0)))
    }

    pub(crate) async fn list_orgs(
        conn: &mut DB::Connection,
        p: &PageRequest,
    ) -> Result<Page<Org>, StoreError> {
        let (t, id) = Self::cursor(p);
        let rows: Vec<OrgRow> = sqlx::query_as::<DB, OrgRow>(LIST_ORGS)
            .arg(like_pattern(p.search.as_deref()))
            .arg(t)
            .arg(id)
            .arg(i64::from(p.limit) + 1)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        let orgs = rows
            .into_iter()
            .map(Org::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(orgs, p.limit, |o: &Org| (o.created_at, o.id.0)))
    }

    pub(crate) async fn list_licenses(
        conn: &mut DB::Connection,
        f: &LicenseFilter,
        p: &PageRequest,
    ) -> Result<Page<License>, StoreError> {
        let (t, id) = Self::cursor(p);
        let rows: Vec<LicenseRow> = sqlx::query_as::<DB, LicenseRow>(LIST_LICENSES)
            .arg(f.org_id.map(DbUuid::from))
            .arg(f.status.map(|s| s.as_str().to_owned()))
            .arg(f.tier.clone())
            .arg(t)
            .arg(id)
            .arg(i64::from(p.limit) + 1)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        let licenses = rows
            .into_iter()
            .map(License::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(licenses, p.limit, |l: &License| {
            (l.created_at, l.id.0)
        }))
    }

    pub(crate) async fn issue_license(
        conn: &mut DB::Connection,
        new: NewLicense,
        audit: ActionAudit,
    ) -> Result<License, StoreError> {
        Self::issue_license_as(conn, LicenseId::new(), new, audit).await
    }

    /// [`Self::issue_license`] under an id the caller chose (billing signs
    /// the license's file before the license is written).
    pub(crate) async fn issue_license_as(
        conn: &mut DB::Connection,
        id: LicenseId,
        new: NewLicense,
        mut audit: ActionAudit,
    ) -> Result<License, StoreError> {
        let (mut license, key_hash) = new_license(new);
        license.id = id;
        insert_license::<DB>(&license, &key_hash)?
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        if license.expires_at.is_some() {
            super::deadlines::schedule_license::<DB>(conn, &license).await?;
        }
        audit.org_id = Some(license.org_id);
        audit.license_id = Some(license.id);
        insert_action::<DB>(&audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(license)
    }

    pub(crate) async fn update_license_audited(
        conn: &mut DB::Connection,
        update_sql: &'static str,
        id: LicenseId,
        update: &LicenseUpdate,
        mut audit: ActionAudit,
    ) -> Result<Option<License>, StoreError> {
        let Some(license) = update_license_in::<DB>(conn, update_sql, id, update).await? else {
            return Ok(None);
        };
        audit.org_id = Some(license.org_id);
        audit.license_id = Some(license.id);
        insert_action::<DB>(&audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Some(license))
    }

    async fn count(
        conn: &mut DB::Connection,
        q: super::QueryAs<DB, (i64,)>,
    ) -> Result<u64, StoreError> {
        let (n,) = q.fetch_one(&mut *conn).await.map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn analytics(
        conn: &mut DB::Connection,
        now: DateTime<Utc>,
        month_start: DateTime<Utc>,
    ) -> Result<Analytics, StoreError> {
        let orgs = Self::count(conn, sqlx::query_as(COUNT_ORGS)).await?;
        let users = Self::count(conn, sqlx::query_as(COUNT_USERS)).await?;
        let signups_this_month = Self::count(
            conn,
            sqlx::query_as::<DB, (i64,)>(COUNT_SIGNUPS).arg(DbTime(month_start)),
        )
        .await?;
        let (active, seats): (i64, i64) = sqlx::query_as::<DB, (i64, i64)>(ACTIVE_LICENSES)
            .arg(DbTime(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        let seats_in_use = Self::count(
            conn,
            sqlx::query_as::<DB, (i64,)>(SEATS_IN_USE).arg(DbTime(now)),
        )
        .await?;
        Ok(Analytics {
            orgs,
            users,
            signups_this_month,
            active_licenses: u64::try_from(active).unwrap_or(0),
            seats_total: u64::try_from(seats).unwrap_or(0),
            seats_in_use,
        })
    }
}

/// `impl AdminStore for $store`, with `$update` the backend's
/// `update_license` statement (its revision differs per backend).
macro_rules! admin_store_impl {
    ($store:ty, $db:ty, $update:expr) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::AdminStore for $store {
            async fn list_users(
                &self,
                page: &seatwarden_actors::ports::PageRequest,
            ) -> Result<
                seatwarden_actors::ports::Page<seatwarden_actors::domain::User>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::admin::Admin::<$db>::list_users(&mut conn, page).await
            }

            async fn list_orgs(
                &self,
                page: &seatwarden_actors::ports::PageRequest,
            ) -> Result<
                seatwarden_actors::ports::Page<seatwarden_actors::domain::Org>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::admin::Admin::<$db>::list_orgs(&mut conn, page).await
            }

            async fn list_licenses(
                &self,
                filter: &seatwarden_actors::ports::LicenseFilter,
                page: &seatwarden_actors::ports::PageRequest,
            ) -> Result<
                seatwarden_actors::ports::Page<seatwarden_actors::domain::License>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut conn = self.read_conn().await?;
                $crate::store::admin::Admin::<$db>::list_licenses(&mut conn, filter, page).await
            }

            async fn issue_license(
                &self,
                new: seatwarden_actors::domain::NewLicense,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::domain::License, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out =
                    $crate::store::admin::Admin::<$db>::issue_license(&mut tx, new, audit).await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn update_license_audited(
                &self,
                id: seatwarden_actors::domain::LicenseId,
                update: &seatwarden_actors::domain::LicenseUpdate,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<
                Option<seatwarden_actors::domain::License>,
                seatwarden_actors::ports::StoreError,
            > {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::admin::Admin::<$db>::update_license_audited(
                    &mut tx, $update, id, update, audit,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn analytics(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                month_start: chrono::DateTime<chrono::Utc>,
            ) -> Result<seatwarden_actors::ports::Analytics, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::admin::Admin::<$db>::analytics(&mut conn, now, month_start).await
            }
        }
    };
}
pub(crate) use admin_store_impl;

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn search_patterns_escape_like_wildcards_and_ignore_case() {
        assert_eq!(like_pattern(Some("Acme")).as_deref(), Some("%acme%"));
        assert_eq!(
            like_pattern(Some("50%_\\")).as_deref(),
            Some("%50\\%\\_\\\\%")
        );
        assert_eq!(like_pattern(Some("  ")), None);
        assert_eq!(like_pattern(None), None);
    }
}
