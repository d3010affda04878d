//! Machines activated on licenses, and the deactivations that free them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{ActionAudit, LicenseId, Machine, MachineId, NewMachine};

/// What an activation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The machine was not activated before; it is now.
    Activated(Machine),
    /// The machine was already activated: nothing changed.
    AlreadyActive(Machine),
    /// The license has `max_machines` and that many are activated.
    LimitReached { max_machines: u32 },
    /// No such license.
    LicenseNotFound,
}

/// What a deactivation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deactivation {
    /// The machine is no longer activated; its slot is free.
    Deactivated(Machine),
    /// No such machine on that license.
    NotFound,
    /// `max_per_day` deactivations of the license happened within the last
    /// 24 hours; the oldest of them leaves the window at `retry_at`.
    LimitReached { retry_at: DateTime<Utc> },
}

/// Durable machine activations.
///
/// Contract, checked by `tests/machines_conformance.rs` on every backend:
///
/// - A license never has more activated machines than its `max_machines`
///   at the moment of an activation, however many activations race: each
///   activation reads the count and inserts under the license's lock
///   (PostgreSQL: a row lock on the license; SQLite: the single writer).
/// - Activating a machine twice is not an error and changes nothing.
/// - Deactivations are counted per license over a sliding 24 hours, and
///   counted in the same transaction that deletes the machine, so no
///   number of concurrent deactivations passes the limit.
/// - Every change appends its audit entry in its own transaction.
#[async_trait]
pub trait MachineStore: Send + Sync + 'static {
    /// Activates `machine` on the license (see [`Activation`]). `audit` is
    /// written only when a machine is newly activated; its `at` is the
    /// activation time.
    async fn activate_machine(
        &self,
        license: LicenseId,
        machine: NewMachine,
        audit: ActionAudit,
    ) -> Result<Activation, StoreError>;

    /// Whether the machine is activated on the license: one index probe,
    /// for the acquire path.
    async fn machine_activated(
        &self,
        license: LicenseId,
        hardware_id: &str,
    ) -> Result<bool, StoreError>;

    /// The license's machines, oldest activation first.
    async fn machines(&self, license: LicenseId) -> Result<Vec<Machine>, StoreError>;

    /// Deactivates a machine of the license unless `max_per_day` (if any)
    /// deactivations of that license happened in the 24 hours before
    /// `audit.at`. `audit` is written only when the machine is deactivated.
    async fn deactivate_machine(
        &self,
        license: LicenseId,
        machine: MachineId,
        max_per_day: Option<u32>,
        audit: ActionAudit,
    ) -> Result<Deactivation, StoreError>;
}
