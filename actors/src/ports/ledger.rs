//! The seat ledger: who holds which seat until when.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{LicenseId, OrgId, SessionId, TicketId};

/// A failure of the seat ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger could not be reached; the caller should retry later.
    #[error("seat ledger unavailable: {0}")]
    Unavailable(String),
    /// The ledger answered something impossible (a bad id or timestamp): a
    /// bug or corrupted data, never worth a retry.
    #[error("seat ledger returned bad data: {0}")]
    Corrupt(String),
}

/// A request for a seat.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub org: OrgId,
    pub license: LicenseId,
    /// The id the new session gets if a seat is granted.
    pub session: SessionId,
    pub hardware_id: String,
    pub max_seats: u32,
    pub ttl: Duration,
    /// The license's offline grace: how long a lapsed lease keeps its token
    /// valid, and so keeps counting against `max_seats + overdraft`. The
    /// ledger remembers the latest value per license and applies it to
    /// every later call on the license.
    pub grace: Duration,
    /// How many leases beyond `max_seats` may be held at once by lapsed
    /// leases within their grace.
    pub overdraft: u32,
    /// The license's line for seats: its rules, and whether this request
    /// joins it or claims a place in it.
    pub line: LineRequest,
}

/// The rules of a license's line for seats (the seat queue). Passed with
/// every call that may change the line, like the grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRules {
    /// How long a freed seat is held for the ticket it was given to. A
    /// ticket that does not claim it in time leaves the line, and the seat
    /// is held for the next one.
    pub hold: Duration,
    /// How long a ticket stays in line after it joined or was last polled.
    pub patience: Duration,
    /// The longest a line may grow; a join beyond it is refused as full.
    pub max_len: u32,
}

impl Default for LineRules {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(30),
            patience: Duration::from_secs(15),
            max_len: 1000,
        }
    }
}

/// What an acquire does with the line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineRequest {
    pub rules: LineRules,
    /// If no seat is free for this machine, join the line under this new
    /// ticket (or answer with the ticket the machine already has).
    pub join: Option<TicketId>,
    /// The ticket the caller claims a seat with. A machine that has a
    /// ticket claims with it even if it does not name it.
    pub claim: Option<TicketId>,
}

/// A place in a license's line, as the ledger sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub ticket: TicketId,
    /// 1 is the head of the line.
    pub position: u32,
    /// Set while a freed seat is held for this ticket: until when.
    pub hold_until: Option<DateTime<Utc>>,
    /// How many tickets are in line.
    pub length: u32,
}

/// The answer to a [`LeaseRequest`]. `seats_used` counts live leases;
/// `graced` counts lapsed leases still within their grace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseGrant {
    /// A new lease under the requested session id.
    Granted {
        expires_at: DateTime<Utc>,
        seats_used: u32,
        graced: u32,
        /// When the seat went to a ticket: how long it waited in line.
        waited: Option<Duration>,
        /// How many tickets are left in line.
        queued: u32,
    },
    /// This hardware id already held a lease on the license, live or within
    /// its grace; it was extended (made live again) and keeps its original
    /// session id.
    Renewed {
        session: SessionId,
        expires_at: DateTime<Utc>,
        seats_used: u32,
        graced: u32,
    },
    /// Every seat is taken by a live lease, or live and graced leases
    /// together fill `max_seats + overdraft`, or the free seats are held
    /// for tickets ahead in line (or the line is full).
    Full {
        seats_used: u32,
        graced: u32,
        queued: u32,
    },
    /// No seat for this machine now; it waits in line (a new ticket, or
    /// the one it had, its patience renewed).
    Queued(Place),
    /// The claimed ticket is not in line (never was, left, dropped out, or
    /// is another machine's).
    NoTicket,
    /// The ledger does not hold this license's leases (it lost its data:
    /// Redis restarted empty, failed over to a lagging replica, evicted);
    /// nothing was done. [`SeatLedger::seed`] it from the store and ask
    /// again.
    Unseeded,
}

/// A per-session limit on heartbeats, enforced by the ledger in the same
/// atomic call that extends the lease, so that a heartbeat costs one round
/// trip whatever the deployment.
///
/// The generic cell rate algorithm (GCRA), as in the HTTP rate limiters:
/// `burst` beats at once, then one per `interval`. The state per session is
/// one theoretical arrival time `tat`:
///
/// ```text
/// tat = stored tat, or now if none
/// if now < tat - interval * (burst - 1):  throttle; retry after that - now
/// else:                                   allow;    tat = max(tat, now) + interval
/// ```
///
/// The state lives and dies with the session's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The emission interval (at least 1 ms).
    pub interval: Duration,
    /// How many beats may come at once (at least 1).
    pub burst: u32,
}

impl Throttle {
    /// The burst tolerance `interval * (burst - 1)`, in milliseconds.
    pub fn tolerance_ms(&self) -> i64 {
        self.interval_ms()
            .saturating_mul(i64::from(self.burst.max(1) - 1))
    }

    /// The emission interval in whole milliseconds, at least 1.
    pub fn interval_ms(&self) -> i64 {
        i64::try_from(self.interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// The answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeatOutcome {
    /// The lease was live and now expires at this instant.
    Extended(DateTime<Utc>),
    /// The lease is unknown, released or lapsed (graced leases included:
    /// they are reclaimed through `acquire`).
    Gone,
    /// The lease is live but the session is over its [`Throttle`]: nothing
    /// changed, not even the throttle's state.
    Throttled { retry_after: Duration },
    /// As [`LeaseGrant::Unseeded`]: seed the license, then beat again.
    Unseeded,
}

/// The answer to a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freed {
    /// A lease was held, live or within its grace, and now is not.
    pub held: bool,
    /// The license's live leases after the release.
    pub live: u32,
    /// Its lapsed leases still within their grace after the release.
    pub graced: u32,
}

/// A lease to seed a license with: an open session as the store has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedLease {
    pub session: SessionId,
    pub hardware_id: String,
    pub expires_at: DateTime<Utc>,
}

/// What the ledger holds of some sessions of one license, for the sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStates {
    /// The ledger's clock when it answered.
    pub now: DateTime<Utc>,
    /// The grace the ledger applies to this license.
    pub grace: Duration,
    /// Live leases of the license.
    pub live: u32,
    /// Lapsed leases of the license still within their grace.
    pub graced: u32,
    /// For each session asked about, in order: its lease expiry if the
    /// ledger still holds it (live, or lapsed within `grace`), else `None`.
    pub expiries: Vec<Option<DateTime<Utc>>>,
}

/// The live leases: which machine holds which seat until when.
///
/// The ledger is the single source of truth for *live* seats; the store only
/// keeps history. Contract shared by every implementation:
///
/// - **Invariant:** a license never has more live leases than `max_seats`,
///   and never more live plus graced leases than `max_seats + overdraft`,
///   however many processes call the ledger at once.
/// - A lease is live while `now < expires_at`, with `now` taken from one
///   clock shared by all callers (Redis `TIME`, or the process clock for the
///   in-process ledger), so skew between nodes cannot stretch or cut it.
/// - A lapsed lease frees its live seat by itself: no sweeper and no client
///   call is needed. It stays *graced* (still counted against the overdraft
///   bound) until `expires_at + grace`, then is forgotten. Heartbeats never
///   revive a lapsed lease; only its own machine's acquire reclaims it.
/// - At most one lease (live or graced) per `(license, hardware_id)`.
/// - Lowering `max_seats` never evicts leases; it only refuses new ones
///   until usage is below the limit.
/// - **A lease is never shortened** by an acquire or a heartbeat: each sets
///   the expiry to the later of the current one and `now + ttl`. A borrowed
///   lease (an acquire with a TTL of hours) therefore keeps its end however
///   its machine heartbeats or acquires meanwhile.
///
/// **The line (seat queue).** Per license, a FIFO line of tickets, one per
/// machine. Every call that passes [`LineRules`] first *settles* the line:
/// leases past their grace are forgotten; tickets whose patience ran out
/// (`now >= deadline`) or whose hold ran out without a claim leave it; then
/// with `room = min(max_seats - live, max_seats + overdraft - (live +
/// graced))` free seats, the first `min(room, length)` tickets hold one each
/// (a hold that starts gets `now + hold`), and the tickets behind hold none.
/// Then:
/// - an acquire without a ticket gets a new lease only if a seat is free
///   beyond the held ones (a graced lease is reclaimed likewise); a renewal
///   of a live lease needs no seat and always succeeds;
/// - an acquire whose machine has a ticket claims with it: a holding
///   ticket turns into a lease and leaves the line; a waiting one is
///   answered with its place (and its patience renewed) if the request
///   joins, else refused as full;
/// - a join by a machine without a ticket appends one, if the line is
///   shorter than `max_len`.
///
/// So the line is FIFO across every caller: nobody outside it takes a seat
/// while a ticket waits, and seats go to tickets in the order they joined.
#[async_trait]
pub trait SeatLedger: Send + Sync + 'static {
    /// Checks that the ledger answers. Used by `/health/ready`.
    async fn ping(&self) -> Result<(), LedgerError>;

    /// Grants, renews (or reclaims) or refuses a seat, atomically.
    async fn acquire(&self, req: &LeaseRequest) -> Result<LeaseGrant, LedgerError>;

    /// Extends a live lease to `now + ttl`, if `throttle` (when given)
    /// allows one more beat of this session: [`BeatOutcome::Extended`] with
    /// the new expiry, [`BeatOutcome::Gone`] if the lease is not live (a
    /// gone lease is reported as gone, never as throttled), or
    /// [`BeatOutcome::Throttled`], which changes nothing.
    async fn heartbeat(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
        ttl: Duration,
        throttle: Option<Throttle>,
    ) -> Result<BeatOutcome, LedgerError>;

    /// Frees the seat. Answers whether a lease was held (live or graced;
    /// not for an unknown, already released or forgotten lease) and the
    /// license's live and graced leases after the release, which keep the
    /// seat gauges true the moment a seat comes back. Idempotent.
    async fn release(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
    ) -> Result<Freed, LedgerError>;

    /// The live leases of a license with their expiry, in no particular
    /// order. Lapsed leases are never returned.
    async fn live_leases(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, LedgerError>;

    /// What the ledger holds of `sessions` (all of one license), forgetting
    /// leases past their grace first.
    async fn lease_states(
        &self,
        org: OrgId,
        license: LicenseId,
        sessions: &[SessionId],
    ) -> Result<LeaseStates, LedgerError>;

    /// Drops every lease of the license (suspension, deactivation), and
    /// its line, and returns how many leases were held. Idempotent.
    async fn revoke_license(&self, org: OrgId, license: LicenseId) -> Result<u32, LedgerError>;

    /// Settles the line (see the trait docs) and answers where the ticket
    /// stands, renewing its patience; `None` if it is not in line.
    async fn poll_ticket(&self, poll: &TicketPoll) -> Result<Option<Place>, LedgerError>;

    /// Takes `ticket` out of the line. Returns whether it was in it.
    /// Idempotent.
    async fn leave_line(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<bool, LedgerError>;

    /// Puts back the leases of a license this ledger reported as
    /// [`LeaseGrant::Unseeded`] (or [`BeatOutcome::Unseeded`]): the open
    /// sessions of the store. Leases past `grace` are skipped; of two of one
    /// machine the later wins. Until a license is seeded, acquires and
    /// heartbeats on it do nothing, so a ledger that lost its data never
    /// grants a seat that a live session holds. Returns how many leases it
    /// put back, or `None` if the license was seeded already (by another
    /// node): then nothing is written.
    ///
    /// A ledger that cannot lose its data (the in-process one, restored at
    /// start) is always seeded.
    async fn seed(
        &self,
        org: OrgId,
        license: LicenseId,
        grace: Duration,
        leases: &[SeedLease],
    ) -> Result<Option<u32>, LedgerError>;
}

/// A poll of a ticket: the license's seat policy, which settling the line
/// needs, and the line's rules.
#[derive(Clone, Debug)]
pub struct TicketPoll {
    pub org: OrgId,
    pub license: LicenseId,
    pub ticket: TicketId,
    pub max_seats: u32,
    pub overdraft: u32,
    pub grace: Duration,
    pub rules: LineRules,
}
