//! What can go wrong in a license operation, as the coordinator reports it.

use crate::domain::{EndReason, Refusal};
use crate::ports::{LedgerError, StoreError};

/// The outcome of a refused or failed license operation.
///
/// Each variant maps to one HTTP status and error code in the API layer;
/// the coordinator itself knows nothing of HTTP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("no license matches that key")]
    LicenseNotFound,
    #[error("the license is suspended")]
    LicenseSuspended,
    #[error("the license has expired")]
    LicenseExpired,
    #[error("the license is not active")]
    LicenseInactive,
    #[error("every seat is in use ({seats_used} of {max_seats})")]
    NoSeatsAvailable { seats_used: u32, max_seats: u32 },
    /// The license has `max_machines` and this machine is not activated.
    #[error("this machine is not activated on the license")]
    MachineNotActivated,
    /// The license requires identity and no credential came with the request.
    #[error("this license requires an access token or API key of its organization")]
    IdentityRequired,
    /// The license requires identity and the credential is not valid.
    #[error("a valid bearer credential is required")]
    IdentityInvalid,
    /// The license requires identity and the credential is of someone
    /// outside the license's organization.
    #[error("your credentials do not allow this")]
    IdentityForbidden,
    /// Borrowing is off for the license (`max_borrow_hours` is 0).
    #[error("this license does not allow borrowing seats")]
    BorrowingDisabled,
    /// A borrow longer than the license allows.
    #[error("this license allows borrowing a seat for at most {max_hours} hours")]
    BorrowTooLong { max_hours: u32 },
    /// The ticket is not in the license's line (never was, left, dropped
    /// out for missed polls or an unclaimed hold, or is another machine's).
    #[error("no such ticket in the line")]
    TicketNotFound,
    #[error("no such session")]
    SessionNotFound,
    #[error("the session's lease has lapsed")]
    SessionExpired,
    #[error("the session has ended ({})", .0.as_str())]
    SessionEnded(EndReason),
    /// An owner or admin took the seat back (force-release). Its own code,
    /// so that the holder can tell it from a release or an expiry.
    #[error("the session was revoked by an administrator")]
    SessionRevoked,
    /// The session heartbeats faster than its throttle allows.
    #[error("too many heartbeats; retry in {retry_after:?}")]
    Throttled { retry_after: std::time::Duration },
    #[error("the seat ledger is unavailable: {0}")]
    LedgerUnavailable(String),
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The organization's actor did not answer in time or could not be
    /// started; the request may be retried.
    #[error("the coordinator is busy: {0}")]
    Busy(String),
    /// An impossible state or unreadable data: a bug, logged with detail
    /// and never worth a retry.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordinatorError {
    /// The stable, machine-readable code of this error: the `error` field of
    /// API responses and the `detail` of acquisition-failure audit entries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LicenseNotFound => "license_not_found",
            Self::LicenseSuspended => "license_suspended",
            Self::LicenseExpired => "license_expired",
            Self::LicenseInactive => "license_inactive",
            Self::NoSeatsAvailable { .. } => "no_seats_available",
            Self::MachineNotActivated => "machine_not_activated",
            Self::IdentityRequired => "identity_required",
            Self::IdentityInvalid => "unauthorized",
            Self::IdentityForbidden => "forbidden",
            Self::BorrowingDisabled => "borrowing_disabled",
            Self::BorrowTooLong { .. } => "borrow_too_long",
            Self::TicketNotFound => "queue_ticket_not_found",
            Self::SessionNotFound => "session_not_found",
            Self::SessionExpired => "session_expired",
            Self::SessionEnded(_) => "session_ended",
            Self::SessionRevoked => "session_revoked",
            Self::Throttled { .. } => "rate_limited",
            Self::LedgerUnavailable(_) => "ledger_unavailable",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Busy(_) => "busy",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether the error is an outage of a dependency rather than an answer
    /// about the request.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::LedgerUnavailable(_) | Self::StoreUnavailable(_) | Self::Busy(_)
        )
    }
}

impl From<Refusal> for CoordinatorError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Suspended => Self::LicenseSuspended,
            Refusal::Inactive => Self::LicenseInactive,
            Refusal::Expired => Self::LicenseExpired,
        }
    }
}

impl From<LedgerError> for CoordinatorError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Unavailable(m) => Self::LedgerUnavailable(m),
            LedgerError::Corrupt(m) => Self::Internal(format!("seat ledger: {m}")),
        }
    }
}

impl From<StoreError> for CoordinatorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::StoreUnavailable(m),
            // The coordinator never asks for something that can conflict or
            // be missing on a healthy store: seeing it is a bug.
            other => Self::Internal(other.to_string()),
        }
    }
}
