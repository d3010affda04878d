//! [`MachineStore`] on both backends.
//!
//! As in [`super::accounts`], every statement is dialect-free and each body
//! is written once, generic over the backend, in [`Machines`]; the only
//! per-backend piece is how the license row is locked, which
//! [`machine_store_impl!`] is given. An activation or deactivation first
//! takes that lock, then counts and writes: PostgreSQL serializes the
//! changes of one license on its row (`FOR NO KEY UPDATE`, which waits only
//! for other changes, never for readers), and SQLite runs every write
//! transaction alone (`BEGIN IMMEDIATE`), so the plain read suffices there.
//!
//! [`MachineStore`]: seatwarden_actors::ports::MachineStore

use std::marker::PhantomData;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use seatwarden_actors::domain::{ActionAudit, LicenseId, Machine, MachineId, NewMachine, OrgId};
use seatwarden_actors::ports::{Activation, Deactivation, StoreError};
use sqlx::{Executor, FromRow, IntoArguments};

use super::accounts::insert_action;
use super::{Arg, Backend, DbTime, DbUuid, all, db_error};

macro_rules! machine_columns {
    () => {
        "id, license_id, hardware_id, name, platform, activated_at"
    };
}

/// Locks the license row (SQLite: the write lock is already held).
pub(crate) const LOCK_LICENSE_SQLITE: &str =
    "SELECT org_id, max_machines FROM licenses WHERE id = $1";
pub(crate) const LOCK_LICENSE_POSTGRES: &str =
    "SELECT org_id, max_machines FROM licenses WHERE id = $1 FOR NO KEY UPDATE";

const MACHINE_BY_HARDWARE: &str = concat!(
    "SELECT ",
    machine_columns!(),
    " FROM machines WHERE license_id = $1 AND hardware_id = $2"
);
const MACHINE_BY_ID: &str = concat!(
    "SELECT ",
    machine_columns!(),
    " FROM machines WHERE license_id = $1 AND id = $2"
);
const MACHINES_OF_LICENSE: &str = concat!(
    "SELECT ",
    machine_columns!(),
    " FROM machines WHERE license_id = $1 ORDER BY activated_at, id"
);
const MACHINE_ACTIVATED: &str =
    "SELECT COUNT(*) FROM machines WHERE license_id = $1 AND hardware_id = $2";
const COUNT_MACHINES: &str = "SELECT COUNT(*) FROM machines WHERE license_id = $1";
const INSERT_MACHINE: &str = concat!(
    "INSERT INTO machines (",
    machine_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);
const DELETE_MACHINE: &str = "DELETE FROM machines WHERE license_id = $1 AND id = $2";
const INSERT_DEACTIVATION: &str =
    "INSERT INTO machine_deactivations (license_id, at) VALUES ($1, $2)";
const COUNT_DEACTIVATIONS: &str =
    "SELECT COUNT(*) FROM machine_deactivations WHERE license_id = $1 AND at > $2";
const OLDEST_DEACTIVATION: &str = "SELECT at FROM machine_deactivations \
     WHERE license_id = $1 AND at > $2 ORDER BY at LIMIT 1";

/// The window deactivations are counted in.
const DEACTIVATION_WINDOW: TimeDelta = TimeDelta::hours(24);

#[derive(FromRow)]
pub(crate) struct MachineRow {
    id: DbUuid,
    license_id: DbUuid,
    hardware_id: String,
    name: Option<String>,
    platform: Option<String>,
    activated_at: DateTime<Utc>,
}

impl TryFrom<MachineRow> for Machine {
    type Error = StoreError;
    fn try_from(r: MachineRow) -> Result<Self, StoreError> {
        Ok(Machine {
            id: MachineId(r.id.0),
            license_id: LicenseId(r.license_id.0),
            hardware_id: r.hardware_id,
            name: r.name,
            platform: r.platform,
            activated_at: r.activated_at,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct MaxMachinesRow {
    org_id: DbUuid,
    max_machines: Option<i32>,
}

#[derive(FromRow)]
pub(crate) struct AtRow {
    at: DateTime<Utc>,
}

/// The statement bodies of [`MachineStore`], generic over the backend.
///
/// [`MachineStore`]: seatwarden_actors::ports::MachineStore
pub(crate) struct Machines<DB>(PhantomData<DB>);

impl<DB> Machines<DB>
where
    DB: Backend,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    MachineRow: for<'r> FromRow<'r, DB::Row>,
    MaxMachinesRow: for<'r> FromRow<'r, DB::Row>,
    AtRow: for<'r> FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    async fn count(
        conn: &mut DB::Connection,
        q: super::QueryAs<DB, (i64,)>,
    ) -> Result<i64, StoreError> {
        let (n,) = q.fetch_one(&mut *conn).await.map_err(db_error)?;
        Ok(n)
    }

    /// Takes the license's lock; `None` for an unknown license, else its
    /// machine limit. Fills in the audit entry's license and organization,
    /// so that every entry about a license names both.
    async fn lock_license(
        conn: &mut DB::Connection,
        lock_sql: &'static str,
        license: LicenseId,
        audit: &mut ActionAudit,
    ) -> Result<Option<Option<i32>>, StoreError> {
        let row: Option<MaxMachinesRow> = sqlx::query_as::<DB, MaxMachinesRow>(lock_sql)
            .arg(DbUuid::from(license))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| {
            audit.license_id = Some(license);
            audit.org_id = Some(OrgId(r.org_id.0));
            r.max_machines
        }))
    }

    pub(crate) async fn activate_machine(
        conn: &mut DB::Connection,
        lock_sql: &'static str,
        license: LicenseId,
        machine: NewMachine,
        mut audit: ActionAudit,
    ) -> Result<Activation, StoreError> {
        // The precision both backends keep, so what is returned is what is read.
        audit.at = audit.at.trunc_subsecs(6);
        let Some(max) = Self::lock_license(conn, lock_sql, license, &mut audit).await? else {
            return Ok(Activation::LicenseNotFound);
        };
        let existing: Option<MachineRow> = sqlx::query_as::<DB, MachineRow>(MACHINE_BY_HARDWARE)
            .arg(DbUuid::from(license))
            .arg(machine.hardware_id.clone())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        if let Some(row) = existing {
            return Ok(Activation::AlreadyActive(row.try_into()?));
        }
        if let Some(max) = max {
            let q = sqlx::query_as::<DB, (i64,)>(COUNT_MACHINES).arg(DbUuid::from(license));
            if Self::count(conn, q).await? >= i64::from(max) {
                return Ok(Activation::LimitReached {
                    max_machines: u32::try_from(max).unwrap_or(0),
                });
            }
        }
        let activated = Machine {
            id: MachineId::new(),
            license_id: license,
            hardware_id: machine.hardware_id,
            name: machine.name,
            platform: machine.platform,
            activated_at: audit.at,
        };
        sqlx::query(INSERT_MACHINE)
            .arg(DbUuid::from(activated.id))
            .arg(DbUuid::from(license))
            .arg(activated.hardware_id.clone())
            .arg(activated.name.clone())
            .arg(activated.platform.clone())
            .arg(DbTime(activated.activated_at))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        audit
            .detail
            .get_or_insert_with(|| format!("machine={}", activated.id));
        insert_action::<DB>(&audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Activation::Activated(activated))
    }

    pub(crate) async fn machine_activated(
        conn: &mut DB::Connection,
        license: LicenseId,
        hardware_id: &str,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query_as::<DB, (i64,)>(MACHINE_ACTIVATED)
            .arg(DbUuid::from(license))
            .arg(hardware_id.to_owned());
        Ok(Self::count(conn, q).await? > 0)
    }

    pub(crate) async fn machines(
        conn: &mut DB::Connection,
        license: LicenseId,
    ) -> Result<Vec<Machine>, StoreError> {
        all(sqlx::query_as::<DB, MachineRow>(MACHINES_OF_LICENSE)
            .arg(DbUuid::from(license))
            .fetch_all(&mut *conn)
            .await)
    }

    pub(crate) async fn deactivate_machine(
        conn: &mut DB::Connection,
        lock_sql: &'static str,
        license: LicenseId,
        machine: MachineId,
        max_per_day: Option<u32>,
        mut audit: ActionAudit,
    ) -> Result<Deactivation, StoreError> {
        audit.at = audit.at.trunc_subsecs(6);
        if Self::lock_license(conn, lock_sql, license, &mut audit)
            .await?
            .is_none()
        {
            return Ok(Deactivation::NotFound);
        }
        let found: Option<MachineRow> = sqlx::query_as::<DB, MachineRow>(MACHINE_BY_ID)
            .arg(DbUuid::from(license))
            .arg(DbUuid::from(machine))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
        let Some(found) = found else {
            return Ok(Deactivation::NotFound);
        };
        let window_start = audit.at - DEACTIVATION_WINDOW;
        if let Some(max) = max_per_day {
            let q = sqlx::query_as::<DB, (i64,)>(COUNT_DEACTIVATIONS)
                .arg(DbUuid::from(license))
                .arg(DbTime(window_start));
            if Self::count(conn, q).await? >= i64::from(max) {
                let oldest: Option<AtRow> = sqlx::query_as::<DB, AtRow>(OLDEST_DEACTIVATION)
                    .arg(DbUuid::from(license))
                    .arg(DbTime(window_start))
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_error)?;
                // With a limit of 0 nothing is in the window: never.
                let retry_at = oldest.map_or(audit.at + DEACTIVATION_WINDOW, |o| {
                    o.at + DEACTIVATION_WINDOW
                });
                return Ok(Deactivation::LimitReached { retry_at });
            }
        }
        sqlx::query(DELETE_MACHINE)
            .arg(DbUuid::from(license))
            .arg(DbUuid::from(machine))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        sqlx::query(INSERT_DEACTIVATION)
            .arg(DbUuid::from(license))
            .arg(DbTime(audit.at))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        insert_action::<DB>(&audit)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Deactivation::Deactivated(found.try_into()?))
    }
}

/// `impl MachineStore for $store`, with `$lock` the statement that locks a
/// license row on this backend; `$store` has `write_tx()` and `read_conn()`
/// as for [`super::accounts::account_store_impl`].
macro_rules! machine_store_impl {
    ($store:ty, $db:ty, $lock:expr) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::MachineStore for $store {
            async fn activate_machine(
                &self,
                license: seatwarden_actors::domain::LicenseId,
                machine: seatwarden_actors::domain::NewMachine,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::ports::Activation, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::machines::Machines::<$db>::activate_machine(
                    &mut tx, $lock, license, machine, audit,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }

            async fn machine_activated(
                &self,
                license: seatwarden_actors::domain::LicenseId,
                hardware_id: &str,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                let mut conn = self.read_conn().await?;
                $crate::store::machines::Machines::<$db>::machine_activated(
                    &mut conn,
                    license,
                    hardware_id,
                )
                .await
            }

            async fn machines(
                &self,
                license: seatwarden_actors::domain::LicenseId,
            ) -> Result<Vec<seatwarden_actors::domain::Machine>, seatwarden_actors::ports::StoreError>
            {
                let mut conn = self.read_conn().await?;
                $crate::store::machines::Machines::<$db>::machines(&mut conn, license).await
            }

            async fn deactivate_machine(
                &self,
                license: seatwarden_actors::domain::LicenseId,
                machine: seatwarden_actors::domain::MachineId,
                max_per_day: Option<u32>,
                audit: seatwarden_actors::domain::ActionAudit,
            ) -> Result<seatwarden_actors::ports::Deactivation, seatwarden_actors::ports::StoreError>
            {
                let mut tx = self.write_tx().await?;
                let out = $crate::store::machines::Machines::<$db>::deactivate_machine(
                    &mut tx,
                    $lock,
                    license,
                    machine,
                    max_per_day,
                    audit,
                )
                .await?;
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(out)
            }
        }
    };
}
pub(crate) use machine_store_impl;
