//! The in-process seat ledger, for the single-machine embedded default.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId, TicketId};
use seatwarden_actors::ports::{
    BeatOutcome, Freed, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, Place, SeatLedger,
    SeedLease, Throttle, TicketPoll,
};

use super::{from_ms, grace_ms, ttl_ms};

/// Every this many calls, licenses whose leases have all lapsed are dropped,
/// so that idle licenses do not keep memory forever (the counterpart of the
/// key expiry the Redis ledger sets).
const SWEEP_EVERY: u64 = 1024;

/// Live leases held in this process, with the same semantics as the Redis
/// ledger: a lease is live iff `now < expires_at`, lapsed leases are purged
/// before seats are counted, and a lapsed lease never revives.
///
/// The clock is this process's wall clock ([`SystemTime`]) in milliseconds,
/// read inside the critical section so that operations see time in the order
/// they take effect. That makes it the "one clock shared by all callers" of
/// the contract, as long as every caller is in this process: two processes
/// must share a [`super::redis::RedisLedger`] instead.
///
/// The state sits behind a [`std::sync::Mutex`], not a `tokio::sync::Mutex`:
/// every critical section is a few hash-map operations that never `.await`,
/// so the lock is held for microseconds and cannot be held across a
/// suspension point. A blocking mutex is cheaper than an async one there
/// and is what the tokio documentation recommends for such data. The lock
/// is global rather than per license because the sections are this short;
/// contention is not a concern at the request rates one machine serves.
pub struct MemoryLedger {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    licenses: HashMap<(OrgId, LicenseId), Leases>,
    calls: u64,
}

impl State {
    /// Drops a license's entry once it holds nothing, so idle licenses do
    /// not keep memory.
    fn forget_if_empty(&mut self, key: (OrgId, LicenseId)) {
        if self.licenses.get(&key).is_some_and(Leases::is_empty) {
            self.licenses.remove(&key);
        }
    }
}

/// The leases of one license: the in-memory counterpart of the Redis ZSET and
/// its two hashes.
#[derive(Default)]
struct Leases {
    by_session: HashMap<SessionId, Lease>,
    by_hardware: HashMap<String, SessionId>,
    /// The offline grace last passed by an acquire, in ms.
    grace_ms: i64,
    /// Machines waiting for a seat, in the order they joined.
    line: Line,
}

/// A license's line for seats: the in-memory counterpart of the Redis
/// line ZSET and its tickets hash.
#[derive(Default)]
struct Line {
    tickets: VecDeque<Ticket>,
}

struct Ticket {
    id: TicketId,
    hardware_id: String,
    /// The ticket leaves the line at this instant unless polled.
    deadline_ms: i64,
    /// Set while a freed seat is held for it.
    hold_until_ms: Option<i64>,
    joined_ms: i64,
}

impl Line {
    /// Drops tickets whose patience or hold ran out.
    fn drop_lapsed(&mut self, now: i64) {
        self.tickets
            .retain(|t| t.deadline_ms > now && t.hold_until_ms.is_none_or(|h| h > now));
    }

    /// Settles the line with `room` free seats: drops lapsed tickets, then
    /// the first `room` tickets hold a seat (a new hold lasts `hold_ms`) and
    /// the rest hold none. Returns how many tickets hold one.
    fn settle(&mut self, now: i64, room: usize, hold_ms: i64) -> usize {
        self.drop_lapsed(now);
        for (i, t) in self.tickets.iter_mut().enumerate() {
            if i < room {
                t.hold_until_ms.get_or_insert(now + hold_ms);
            } else {
                t.hold_until_ms = None;
            }
        }
        room.min(self.tickets.len())
    }

    fn position_of(&self, hardware_id: &str) -> Option<usize> {
        self.tickets
            .iter()
            .position(|t| t.hardware_id == hardware_id)
    }

    fn position_of_ticket(&self, ticket: TicketId) -> Option<usize> {
        self.tickets.iter().position(|t| t.id == ticket)
    }

    /// The place of the ticket at index `i`.
    fn place(&self, i: usize) -> Result<Place, LedgerError> {
        let t = &self.tickets[i];
        Ok(Place {
            ticket: t.id,
            position: seats(i + 1),
            hold_until: t.hold_until_ms.map(from_ms).transpose()?,
            length: seats(self.tickets.len()),
        })
    }
}

struct Lease {
    hardware_id: String,
    expires_ms: i64,
    /// The heartbeat throttle's theoretical arrival time (see [`Throttle`]);
    /// `None` until the first throttled beat.
    beat_tat_ms: Option<i64>,
}

impl Leases {
    /// Forgets leases past their grace (`expires <= now - grace`) and the
    /// hardware mappings that point to them.
    fn purge(&mut self, now: i64) {
        let cutoff = now - self.grace_ms;
        // One scan; an empty result allocates nothing.
        let gone: Vec<SessionId> = self
            .by_session
            .iter()
            .filter(|(_, lease)| lease.expires_ms <= cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// Live leases (`expires > now`); call after `purge`.
    fn live(&self, now: i64) -> usize {
        self.by_session
            .values()
            .filter(|l| l.expires_ms > now)
            .count()
    }

    /// Removes a lease and, if it still points to it, its hardware mapping.
    fn remove(&mut self, id: SessionId) -> Option<Lease> {
        let lease = self.by_session.remove(&id)?;
        if self.by_hardware.get(&lease.hardware_id) == Some(&id) {
            self.by_hardware.remove(&lease.hardware_id);
        }
        Some(lease)
    }

    /// Adds a lease and points its hardware id at it.
    fn insert(&mut self, session: SessionId, hardware_id: String, expires_ms: i64) {
        self.by_hardware.insert(hardware_id.clone(), session);
        self.by_session.insert(
            session,
            Lease {
                hardware_id,
                expires_ms,
                beat_tat_ms: None,
            },
        );
    }

    /// Whether the entry holds nothing worth keeping (the grace is
    /// re-sent with every acquire).
    fn is_empty(&self) -> bool {
        self.by_session.is_empty() && self.by_hardware.is_empty() && self.line.tickets.is_empty()
    }

    /// Free seats: live seats below `max_seats`, and no more than the
    /// overdraft bound on live and graced leases together allows.
    fn room(&self, now: i64, max_seats: usize, overdraft: usize) -> usize {
        let live = self.live(now);
        let total = self.by_session.len();
        max_seats
            .saturating_sub(live)
            .min((max_seats + overdraft).saturating_sub(total))
    }
}

fn seats(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
        }
    }

    /// Locks the state and reads the clock. No code path can panic while
    /// holding the lock, but if one ever did the maps would still be
    /// consistent (every section leaves them valid between statements), so a
    /// poisoned lock is simply taken over.
    fn lock(&self) -> (MutexGuard<'_, State>, i64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.calls += 1;
        let now = now_ms();
        if state.calls.is_multiple_of(SWEEP_EVERY) {
            state.licenses.retain(|_, leases| {
                leases.purge(now);
                leases.line.drop_lapsed(now);
                !leases.is_empty()
            });
        }
        (state, now)
    }
}

/// A lease to put back into a fresh [`MemoryLedger`].
#[derive(Clone, Debug)]
pub struct RestoredLease {
    pub org: OrgId,
    pub license: LicenseId,
    pub session: SessionId,
    pub hardware_id: String,
    pub expires_at: DateTime<Utc>,
    /// The license's offline grace: a lease lapsed within it is restored
    /// as graced.
    pub grace: Duration,
}

impl MemoryLedger {
    /// Puts back leases recorded elsewhere (the store's open sessions), so
    /// that restarting a single-node server does not throw every client off
    /// its seat. Leases past their grace by now are skipped; of two leases
    /// for one machine the later one wins. Returns how many were restored.
    ///
    /// Only for start-up, before the ledger serves requests: restoring does
    /// not check seat limits, because every restored lease was granted
    /// within them.
    pub fn restore(&self, leases: impl IntoIterator<Item = RestoredLease>) -> usize {
        let (mut state, now) = self.lock();
        let mut restored = 0;
        for lease in leases {
            let expires_ms = lease.expires_at.timestamp_millis();
            if expires_ms + grace_ms(lease.grace) <= now {
                continue;
            }
            let entry = state
                .licenses
                .entry((lease.org, lease.license))
                .or_default();
            if let Some(other) = entry.by_hardware.get(&lease.hardware_id).copied() {
                match entry.by_session.get(&other) {
                    Some(existing) if existing.expires_ms >= expires_ms => continue,
                    _ => {
                        entry.remove(other);
                    }
                }
            }
            entry.grace_ms = entry.grace_ms.max(grace_ms(lease.grace));
            entry.insert(lease.session, lease.hardware_id, expires_ms);
            restored += 1;
        }
        restored
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLedger").finish_non_exhaustive()
    }
}

/// The wall clock in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl SeatLedger for MemoryLedger {
    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn acquire(&self, req: &LeaseRequest) -> Result<LeaseGrant, LedgerError> {
        let ttl = ttl_ms(req.ttl);
        let (mut state, now) = self.lock();
        let leases = state.licenses.entry((req.org, req.license)).or_default();
        let grant = acquire_in(leases, req, now, ttl);
        state.forget_if_empty((req.org, req.license));
        grant
    }

    async fn heartbeat(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
        ttl: Duration,
        throttle: Option<Throttle>,
    ) -> Result<BeatOutcome, LedgerError> {
        let ttl = ttl_ms(ttl);
        let (mut state, now) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(org, license)) else {
            return Ok(BeatOutcome::Gone);
        };
        let expires_ms = match leases.by_session.get_mut(&session) {
            Some(lease) if lease.expires_ms > now => {
                if let Some(throttle) = throttle {
                    let tat = lease.beat_tat_ms.unwrap_or(now);
                    let earliest = tat - throttle.tolerance_ms();
                    if now < earliest {
                        return Ok(BeatOutcome::Throttled {
                            retry_after: Duration::from_millis((earliest - now) as u64),
                        });
                    }
                    lease.beat_tat_ms = Some(tat.max(now) + throttle.interval_ms());
                }
                // Never shorter: a borrowed lease keeps its end.
                lease.expires_ms = lease.expires_ms.max(now + ttl);
                lease.expires_ms
            }
            Some(lease) => {
                // Lapsed: it never revives here. Past its grace it is
                // cleaned up; within, only its machine's acquire reclaims it.
                if lease.expires_ms <= now - leases.grace_ms {
                    leases.remove(session);
                    state.forget_if_empty((org, license));
                }
                return Ok(BeatOutcome::Gone);
            }
            None => return Ok(BeatOutcome::Gone),
        };
        from_ms(expires_ms).map(BeatOutcome::Extended)
    }

    async fn release(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
    ) -> Result<Freed, LedgerError> {
        let (mut state, now) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(org, license)) else {
            return Ok(Freed {
                held: false,
                live: 0,
                graced: 0,
            });
        };
        let cutoff = now - leases.grace_ms;
        let removed = leases.remove(session);
        leases.purge(now);
        let live = leases.live(now);
        let freed = Freed {
            held: removed.is_some_and(|lease| lease.expires_ms > cutoff),
            live: seats(live),
            graced: seats(leases.by_session.len() - live),
        };
        state.forget_if_empty((org, license));
        Ok(freed)
    }

    async fn live_leases(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, LedgerError> {
        let (mut state, now) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(org, license)) else {
            return Ok(Vec::new());
        };
        leases.purge(now);
        let live = leases
            .by_session
            .iter()
            .filter(|(_, lease)| lease.expires_ms > now)
            .map(|(id, lease)| Ok((*id, from_ms(lease.expires_ms)?)))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        state.forget_if_empty((org, license));
        Ok(live)
    }

    async fn lease_states(
        &self,
        org: OrgId,
        license: LicenseId,
        sessions: &[SessionId],
    ) -> Result<LeaseStates, LedgerError> {
        let (mut state, now) = self.lock();
        let (grace, live, graced, expiries) = match state.licenses.get_mut(&(org, license)) {
            Some(leases) => {
                leases.purge(now);
                let live = leases.live(now);
                let expiries = sessions
                    .iter()
                    .map(|id| {
                        leases
                            .by_session
                            .get(id)
                            .map(|l| from_ms(l.expires_ms))
                            .transpose()
                    })
                    .collect::<Result<Vec<_>, LedgerError>>()?;
                let graced = leases.by_session.len() - live;
                (leases.grace_ms, live, graced, expiries)
            }
            None => (0, 0, 0, vec![None; sessions.len()]),
        };
        state.forget_if_empty((org, license));
        Ok(LeaseStates {
            now: from_ms(now)?,
            grace: Duration::from_millis(u64::try_from(grace).unwrap_or(0)),
            live: seats(live),
            graced: seats(graced),
            expiries,
        })
    }

    async fn revoke_license(&self, org: OrgId, license: LicenseId) -> Result<u32, LedgerError> {
        let (mut state, _) = self.lock();
        Ok(state
            .licenses
            .remove(&(org, license))
            .map_or(0, |l| seats(l.by_session.len())))
    }

    async fn poll_ticket(&self, poll: &TicketPoll) -> Result<Option<Place>, LedgerError> {
        let (mut state, now) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(poll.org, poll.license)) else {
            return Ok(None);
        };
        leases.grace_ms = grace_ms(poll.grace);
        leases.purge(now);
        let room = leases.room(now, poll.max_seats as usize, poll.overdraft as usize);
        leases.line.settle(now, room, ttl_ms(poll.rules.hold));
        let place = match leases.line.position_of_ticket(poll.ticket) {
            Some(i) => {
                leases.line.tickets[i].deadline_ms = now + ttl_ms(poll.rules.patience);
                Some(leases.line.place(i)?)
            }
            None => None,
        };
        state.forget_if_empty((poll.org, poll.license));
        Ok(place)
    }

    async fn seed(
        &self,
        _org: OrgId,
        _license: LicenseId,
        _grace: Duration,
        _leases: &[SeedLease],
    ) -> Result<Option<u32>, LedgerError> {
        Ok(None)
    }

    async fn leave_line(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<bool, LedgerError> {
        let (mut state, _) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(org, license)) else {
            return Ok(false);
        };
        let left = match leases.line.position_of_ticket(ticket) {
            Some(i) => leases.line.tickets.remove(i).is_some(),
            None => false,
        };
        state.forget_if_empty((org, license));
        Ok(left)
    }
}

/// [`SeatLedger::acquire`] on one license's state, at `now`, for a lease of
/// `ttl` ms: the rules of the trait's docs, step by step as in
/// `lua/acquire.lua`.
fn acquire_in(
    leases: &mut Leases,
    req: &LeaseRequest,
    now: i64,
    ttl: i64,
) -> Result<LeaseGrant, LedgerError> {
    leases.grace_ms = grace_ms(req.grace);
    leases.purge(now);
    let expires_ms = now + ttl;
    let max_seats = req.max_seats as usize;
    let live = leases.live(now);
    let total = leases.by_session.len();
    let room = leases.room(now, max_seats, req.overdraft as usize);
    let held = leases.line.settle(now, room, ttl_ms(req.line.rules.hold));

    // The machine's ticket, if it has one: named, or found by hardware id.
    let mine = match req.line.claim {
        Some(ticket) => match leases.line.position_of_ticket(ticket) {
            Some(i) if leases.line.tickets[i].hardware_id == req.hardware_id => Some(i),
            _ => return Ok(LeaseGrant::NoTicket),
        },
        None => leases.line.position_of(&req.hardware_id),
    };
    // Whether this request may take a free seat: its ticket holds one, or
    // one is free beyond those held for tickets.
    let holding = mine.is_some_and(|i| i < held);
    let waited = mine.filter(|_| holding).map(|i| {
        Duration::from_millis(u64::try_from(now - leases.line.tickets[i].joined_ms).unwrap_or(0))
    });
    let full = LeaseGrant::Full {
        seats_used: seats(live),
        graced: seats(total - live),
        queued: seats(leases.line.tickets.len()),
    };

    // One lease per hardware id: renew it if live, reclaim it if graced
    // and a live seat is free for it, keeping its session id either way.
    if let Some(&session) = leases.by_hardware.get(&req.hardware_id) {
        match leases.by_session.get(&session).map(|l| l.expires_ms) {
            Some(current) => {
                let was_live = current > now;
                if !(was_live || holding || max_seats.saturating_sub(live) > held) {
                    return Ok(wait_or_refuse(leases, req, mine, now, full));
                }
                if let Some(i) = mine {
                    leases.line.tickets.remove(i);
                }
                let expires = current.max(expires_ms);
                if let Some(lease) = leases.by_session.get_mut(&session) {
                    lease.expires_ms = expires;
                }
                let live = if was_live { live } else { live + 1 };
                return Ok(LeaseGrant::Renewed {
                    session,
                    expires_at: from_ms(expires)?,
                    seats_used: seats(live),
                    graced: seats(total - live),
                });
            }
            // A stale mapping (its lease is gone): drop it.
            None => {
                leases.by_hardware.remove(&req.hardware_id);
            }
        }
    }

    if !(holding || room > held) {
        return Ok(wait_or_refuse(leases, req, mine, now, full));
    }
    if let Some(i) = mine {
        leases.line.tickets.remove(i);
    }
    leases.insert(req.session, req.hardware_id.clone(), expires_ms);
    Ok(LeaseGrant::Granted {
        expires_at: from_ms(expires_ms)?,
        seats_used: seats(live + 1),
        graced: seats(total - live),
        waited,
        queued: seats(leases.line.tickets.len()),
    })
}

/// No seat for this request: its place in line if it joins (renewing the
/// patience of the ticket it has, or appending a new one if the line has
/// room), else `full`.
fn wait_or_refuse(
    leases: &mut Leases,
    req: &LeaseRequest,
    mine: Option<usize>,
    now: i64,
    full: LeaseGrant,
) -> LeaseGrant {
    let Some(new_ticket) = req.line.join else {
        return full;
    };
    let rules = &req.line.rules;
    let line = &mut leases.line;
    let i = match mine {
        Some(i) => i,
        None if line.tickets.len() < rules.max_len as usize => {
            line.tickets.push_back(Ticket {
                id: new_ticket,
                hardware_id: req.hardware_id.clone(),
                deadline_ms: now,
                hold_until_ms: None,
                joined_ms: now,
            });
            line.tickets.len() - 1
        }
        None => return full,
    };
    line.tickets[i].deadline_ms = now + ttl_ms(rules.patience);
    line.place(i).map_or(full, LeaseGrant::Queued)
}
