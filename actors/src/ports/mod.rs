//! The ports the coordinator needs from the outside world, one trait per
//! role.
//!
//! Each trait states its contract on its methods; every implementation must
//! pass the shared conformance suite in the root crate's `tests/`. The
//! coordinator holds them as `Arc<dyn Trait>`, so only the composition root
//! names a concrete backend.
//!
//! - [`LicenseStore`]: organizations and licenses (durable, rarely written).
//! - [`SessionStore`]: session records and the audit log (durable history).
//! - [`SeatLedger`]: the live leases (the single source of truth for who
//!   holds a seat right now).
//! - [`MachineStore`]: machines activated on licenses.
//! - [`AdminStore`]: the platform's directory (users, organizations and
//!   licenses across tenants) and its numbers, for platform administrators.

mod accounts;
mod admin;
mod ledger;
mod licenses;
mod machines;
mod outbox;
mod sessions;

pub use accounts::{AccountStore, MailFor, RefreshOutcome};
pub use admin::{AdminStore, Analytics, LicenseFilter, Page, PageRequest};
pub use ledger::{LeaseGrant, LeaseRequest, LeaseStates, LedgerError, SeatLedger};
pub use licenses::{LicenseChange, LicenseStore};
pub use machines::{Activation, Deactivation, MachineStore};
pub use outbox::{MailKind, NewMail};
pub use sessions::{EndOutcome, SessionStore, SweepCandidate};

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A referenced row (for example the organization of a new license) does
    /// not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule was broken (for example a duplicate session id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed; the message must not
    /// contain credentials. The caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row could not be read back (a value outside its domain): a bug or
    /// a corrupted database, never worth a retry.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Every store role, for callers (the composition root, the CLI, tests) that use
/// one backend for both roles.
pub trait Store: LicenseStore + SessionStore + AccountStore + MachineStore + AdminStore {}
impl<T: LicenseStore + SessionStore + AccountStore + MachineStore + AdminStore + ?Sized> Store
    for T
{
}
