//! The in-process seat ledger, for the single-machine embedded default.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId};
use seatwarden_actors::ports::{
    BeatOutcome, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, SeatLedger, Throttle,
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
        self.by_session.is_empty() && self.by_hardware.is_empty()
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
        leases.grace_ms = grace_ms(req.grace);
        leases.purge(now);
        let expires_ms = now + ttl;
        let live = leases.live(now);
        let total = leases.by_session.len();
        let max_seats = req.max_seats as usize;

        // One lease per hardware id: renew it if live, reclaim it if graced
        // and a live seat is free, keeping its session id either way.
        if let Some(&held) = leases.by_hardware.get(&req.hardware_id) {
            match leases.by_session.get_mut(&held) {
                Some(lease) => {
                    let was_live = lease.expires_ms > now;
                    if !was_live && live >= max_seats {
                        return Ok(LeaseGrant::Full {
                            seats_used: seats(live),
                            graced: seats(total - live),
                        });
                    }
                    lease.expires_ms = expires_ms;
                    let live = if was_live { live } else { live + 1 };
                    return Ok(LeaseGrant::Renewed {
                        session: held,
                        expires_at: from_ms(expires_ms)?,
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

        let overdraft = req.overdraft as usize;
        if live >= max_seats || total >= max_seats + overdraft {
            let grant = LeaseGrant::Full {
                seats_used: seats(live),
                graced: seats(total - live),
            };
            state.forget_if_empty((req.org, req.license));
            return Ok(grant);
        }

        leases.insert(req.session, req.hardware_id.clone(), expires_ms);
        Ok(LeaseGrant::Granted {
            expires_at: from_ms(expires_ms)?,
            seats_used: seats(live + 1),
            graced: seats(total - live),
        })
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
                lease.expires_ms = now + ttl;
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
    ) -> Result<bool, LedgerError> {
        let (mut state, now) = self.lock();
        let Some(leases) = state.licenses.get_mut(&(org, license)) else {
            return Ok(false);
        };
        let cutoff = now - leases.grace_ms;
        let removed = leases.remove(session);
        state.forget_if_empty((org, license));
        Ok(removed.is_some_and(|lease| lease.expires_ms > cutoff))
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
}
