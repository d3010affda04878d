//! The messages the actors understand and the answers the coordinator
//! hands back. A leaf module: actor modules import it, never each other,
//! so the supervision tree has no import cycles.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{ActorRef, RpcReplyPort};

use crate::domain::{AuditEntry, EndReason, License, LicenseId, OrgId, SessionId, TicketId};
use crate::error::CoordinatorError;
use crate::ports::Place;
use crate::root::Subsystem;

/// A granted, renewed or reclaimed seat.
#[derive(Clone, Debug)]
pub struct Acquired {
    /// `false` when the machine already held a session (live, or lapsed
    /// within its grace), which was extended instead.
    pub created: bool,
    pub session_id: SessionId,
    pub hardware_id: String,
    pub expires_at: DateTime<Utc>,
    pub license: Arc<License>,
    pub seats_used: u32,
    /// Set when the seat was borrowed by this request: it is held with no
    /// heartbeats until then (also `expires_at`).
    pub borrowed_until: Option<DateTime<Utc>>,
}

/// How a machine asks for a seat, beyond a plain acquire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeatRequest {
    /// Wait in the license's line when no seat is free, instead of being
    /// refused.
    pub wait: bool,
    /// The ticket this request claims a seat with.
    pub ticket: Option<TicketId>,
    /// Borrow the seat for this long: held with no heartbeats. The license's
    /// `max_borrow_hours` bounds it.
    pub borrow: Option<Duration>,
}

/// The answer to a [`SeatRequest`]: a seat, or a place in line.
#[derive(Clone, Debug)]
pub enum Admission {
    Seat(Acquired),
    Queued(Queued),
}

/// A machine's place in a license's line.
#[derive(Clone, Debug)]
pub struct Queued {
    pub license: Arc<License>,
    pub place: Place,
}

/// An extended lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat {
    pub session_id: SessionId,
    pub expires_at: DateTime<Utc>,
}

/// An ended session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub session_id: SessionId,
    pub ended_at: DateTime<Utc>,
    pub reason: EndReason,
}

/// What a seat token says about its session: enough to route heartbeat and
/// release without reading the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRef {
    pub org: OrgId,
    pub license: LicenseId,
    pub session: SessionId,
    pub hardware_id: String,
}

/// Messages of an organization's actor.
pub enum OrgMessage {
    /// The license, from the actor's cache or the store.
    License(
        LicenseId,
        RpcReplyPort<Result<Arc<License>, CoordinatorError>>,
    ),
    /// A lease the ledger extended; written to the store in the next batch.
    Beat {
        session: SessionId,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// A refused acquisition's audit entry; written subject to the
    /// per-license rate bound.
    AcquireFailed(AuditEntry),
    /// The license changed: drop it from the cache.
    Invalidate(LicenseId),
    /// Periodic housekeeping: flush batched heartbeats, stop when idle.
    Tick,
    /// Test-only fault hook: panics inside the handler, as a bug would.
    /// Ignored unless `CoordinatorSettings::fault_hooks` is set.
    InjectPanic,
}

/// Messages of the organization supervisor.
pub enum OrgSupervisorMessage {
    /// The organization's actor, spawning it if none runs.
    Get(OrgId, RpcReplyPort<Result<ActorRef<OrgMessage>, String>>),
    /// How many organization actors run.
    Count(RpcReplyPort<usize>),
}

/// Messages of the cluster-wide sweeper.
pub enum SweeperMessage {
    /// Claim due sessions and settle them against the ledger.
    Sweep,
}

/// Messages of the license watcher.
pub enum WatcherMessage {
    /// Poll the store for license changes.
    Poll,
}

/// Messages of the mailer.
pub enum MailerMessage {
    /// The periodic look at the outbox; schedules the next one.
    Poll,
    /// Mail was just enqueued: look at the outbox now rather than at the
    /// next poll. Cheap and idempotent; kicks while busy add nothing.
    Kick,
    /// Send the next message of the claimed batch. One message per
    /// message, so that a stop waits for the send in flight only.
    SendNext,
}

/// Messages of the root supervisor.
///
/// They name subsystems by [`Subsystem`], which lives beside its spawn arms
/// in the root's module, so that adding a subsystem touches one file.
pub enum RootMessage {
    /// Operator action: stop the subsystem's subtree, then start it afresh
    /// with a fresh restart budget (also when it is down). Answers once it
    /// runs again, or why it could not be brought back. Live sessions
    /// survive: they are held by the ledger and the store, not by actors.
    Restart(Subsystem, RpcReplyPort<Result<(), String>>),
    /// Test-only fault hook: while set, the subsystem panics whenever it
    /// starts. Answers `false`, doing nothing, unless
    /// `CoordinatorSettings::fault_hooks` is set.
    InjectFault(Subsystem, bool, RpcReplyPort<bool>),
}

/// Messages of the renewals subsystem.
pub enum RenewalMessage {
    /// Look for due deadlines, fire them, and sleep until the next one.
    Tick,
}

/// Messages of the webhooks subsystem.
pub enum WebhookMessage {
    /// The periodic look for due events (retries, other nodes' events).
    Poll,
    /// An event was just recorded on this node: look now.
    Kick,
    /// Process the next event of the claimed batch.
    ProcessNext,
}
