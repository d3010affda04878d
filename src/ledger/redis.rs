//! The Redis seat ledger, shared by every node of a deployment.
//!
//! Each operation is one Lua script from `lua/`, so it is atomic on the
//! server and reads one clock, Redis `TIME`. Key layout, per license:
//!
//! | key                                   | type | content                        |
//! |---------------------------------------|------|--------------------------------|
//! | `sw:{<org>}:lic:<license>:leases`     | ZSET | session id → lease expiry (ms) |
//! | `sw:{<org>}:lic:<license>:hw`         | HASH | hardware id → session id       |
//! | `sw:{<org>}:lic:<license>:sess`       | HASH | session id → hardware id       |
//! | `sw:{<org>}:lic:<license>:grace`      | STR  | the license's offline grace (ms) |
//! | `sw:{<org>}:lic:<license>:beats`      | HASH | session id → heartbeat throttle state |
//! | `sw:{<org>}:lic:<license>:seeded`     | STR  | present while the leases are this ledger's (see `SeatLedger::seed`) |
//! | `sw:{<org>}:lic:<license>:line`       | ZSET | ticket → order of joining (FIFO) |
//! | `sw:{<org>}:lic:<license>:patience`   | ZSET | ticket → when it leaves unless polled (ms) |
//! | `sw:{<org>}:lic:<license>:holds`      | ZSET | ticket → until when a seat is held for it (ms) |
//! | `sw:{<org>}:lic:<license>:tickets`    | HASH | ticket → joined and hardware id; hardware id → ticket |
//!
//! The `{<org>}` hash tag puts all keys of an organization in one cluster
//! slot, and scripts receive every key they touch in `KEYS`, so they run on
//! Redis Cluster too. Expiry lives in the ZSET scores: scripts forget members
//! past their grace (`score <= now - grace`) before counting, so a holder that dies frees its seat
//! by itself, and nothing like an `INCR` counter can drift. The lease keys
//! (and the seed marker) get a `PEXPIRE` a little beyond the furthest lease,
//! refreshed on each write, and the line's keys one beyond its last ticket's
//! patience and hold, so an idle license leaves no garbage behind.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{RedisError, Script, ScriptInvocation};
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId, TicketId};
use seatwarden_actors::ports::{
    BeatOutcome, Freed, LeaseGrant, LeaseRequest, LeaseStates, LedgerError, Place, SeatLedger,
    SeedLease, Throttle, TicketPoll,
};

use super::{from_ms, grace_ms, ttl_ms};
use crate::redact::scrub;
use crate::redis_link::{self, RedisLink, RedisTarget};

/// How long a call may take, connection included, before it fails with
/// [`LedgerError::Unavailable`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the keys of a license outlive its furthest lease.
const KEY_GRACE_MS: i64 = 5_000;

/// One operation's script: `lua/lease.lua` (the clock, purge and cleanup
/// rules every operation shares) followed by the operation itself.
macro_rules! ledger_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../../lua/lease.lua"),
                include_str!(concat!("../../lua/", $file))
            ))
        })
    };
}

// Each script is hashed once; `invoke_async` runs it by EVALSHA and, on
// NOSCRIPT (empty script cache after a restart, failover or SCRIPT FLUSH),
// loads it and retries.
static ACQUIRE: LazyLock<Script> = ledger_script!("acquire.lua");
static HEARTBEAT: LazyLock<Script> = ledger_script!("heartbeat.lua");
static RELEASE: LazyLock<Script> = ledger_script!("release.lua");
static LIVE: LazyLock<Script> = ledger_script!("live.lua");
static STATES: LazyLock<Script> = ledger_script!("states.lua");
static REVOKE: LazyLock<Script> = ledger_script!("revoke.lua");
static POLL: LazyLock<Script> = ledger_script!("poll.lua");
static LEAVE: LazyLock<Script> = ledger_script!("leave.lua");
static SEED: LazyLock<Script> = ledger_script!("seed.lua");

/// A [`SeatLedger`] on Redis (7 or newer, standalone or Redis Cluster with
/// one slot per organization).
///
/// Holds one multiplexed [`RedisLink`], which reconnects by itself after
/// the server goes away (and follows a cluster's slots); cloning the ledger
/// shares it.
#[derive(Clone)]
pub struct RedisLedger {
    con: RedisLink,
    timeout: Duration,
    /// Strings to scrub from error messages (the URL's password).
    secrets: Vec<String>,
    /// Key names per license, made once: the hot paths format none.
    keys: Arc<Mutex<HashMap<(OrgId, LicenseId), KeyNames>>>,
}

/// The key names of one license, in script order.
type KeyNames = Arc<[String; ALL_KEYS]>;

/// Keys of a license: the leases' five, the seed marker, the line's four.
const ALL_KEYS: usize = 10;
/// The keys a script that touches only the leases needs (Redis Cluster
/// wants every key a script touches declared; these scripts touch no
/// other).
const LEASE_KEYS: usize = 6;

/// Bound on the key-name cache; it is cleared when full.
const KEY_NAMES_LIMIT: usize = 100_000;

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its client info may carry credentials.
        f.debug_struct("RedisLedger")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) with
    /// [`DEFAULT_TIMEOUT`] per call.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        Self::connect_with_timeout(url, DEFAULT_TIMEOUT).await
    }

    /// Connects to `url`; every later call, and this connection attempt,
    /// fails with [`LedgerError::Unavailable`] after `timeout` instead of
    /// hanging. Error messages never contain the URL's password.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Self, LedgerError> {
        Self::open(&RedisTarget::Single(url.to_owned()), timeout).await
    }

    /// Connects to one server or a cluster; otherwise as
    /// [`RedisLedger::connect_with_timeout`].
    pub async fn open(target: &RedisTarget, timeout: Duration) -> Result<Self, LedgerError> {
        let (con, secrets) = redis_link::connect(target, timeout)
            .await
            .map_err(LedgerError::Unavailable)?;
        Ok(Self {
            con,
            timeout,
            secrets,
            keys: Arc::default(),
        })
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Differences between the server's persistence and eviction settings
    /// and what the ledger needs; see [`redis_link::durability_warnings`].
    pub async fn durability_warnings(&self) -> Vec<String> {
        let mut con = self.con.clone();
        redis_link::durability_warnings(&mut con, self.timeout).await
    }

    /// The keys of a license, in the order every script expects them.
    pub fn license_keys(org: OrgId, license: LicenseId) -> [String; ALL_KEYS] {
        let prefix = key_prefix(org, license);
        [
            "leases", "hw", "sess", "grace", "beats", "seeded", "line", "patience", "holds",
            "tickets",
        ]
        .map(|name| format!("{prefix}:{name}"))
    }

    /// The license's key names, from the cache.
    fn key_names(&self, org: OrgId, license: LicenseId) -> KeyNames {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = keys.get(&(org, license)) {
            return k.clone();
        }
        if keys.len() >= KEY_NAMES_LIMIT {
            keys.clear();
        }
        let k = Arc::new(Self::license_keys(org, license));
        keys.insert((org, license), k.clone());
        k
    }

    fn error(&self, e: RedisError) -> LedgerError {
        LedgerError::Unavailable(scrub(&format!("Redis: {e}"), &self.secrets))
    }

    /// Runs a script with the license's keys, bounded by the timeout.
    ///
    /// If the timeout fires after the script reached the server, its effect
    /// may still happen (a grant the caller never hears of). That is safe:
    /// such a lease lapses by itself, and a retry from the same hardware id
    /// renews it instead of taking a second seat.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &mut ScriptInvocation<'_>,
        org: OrgId,
        license: LicenseId,
    ) -> Result<T, LedgerError> {
        self.run_with(invocation, org, license, ALL_KEYS).await
    }

    /// [`RedisLedger::run`] for a script that touches the leases only (not
    /// the line): it gets the first [`LEASE_KEYS`] keys, which keeps the
    /// hot paths' requests as small as before the line existed.
    async fn run_leases<T: redis::FromRedisValue>(
        &self,
        invocation: &mut ScriptInvocation<'_>,
        org: OrgId,
        license: LicenseId,
    ) -> Result<T, LedgerError> {
        self.run_with(invocation, org, license, LEASE_KEYS).await
    }

    async fn run_with<T: redis::FromRedisValue>(
        &self,
        invocation: &mut ScriptInvocation<'_>,
        org: OrgId,
        license: LicenseId,
        count: usize,
    ) -> Result<T, LedgerError> {
        let keys = self.key_names(org, license);
        for key in &keys[..count] {
            invocation.key(key.as_str());
        }
        let mut con = self.con.clone();
        self.bounded(invocation.invoke_async(&mut con)).await
    }

    /// Waits for a Redis call for at most the per-call timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LedgerError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(LedgerError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// `sw:{<org>}:lic:<license>`: the hash tag keeps an organization's keys in
/// one cluster slot.
pub fn key_prefix(org: OrgId, license: LicenseId) -> String {
    format!("sw:{{{org}}}:lic:{license}")
}

fn parse_session(session: &str) -> Result<SessionId, LedgerError> {
    session
        .parse()
        .map_err(|_| LedgerError::Corrupt(format!("ledger holds a bad session id {session:?}")))
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[async_trait]
impl SeatLedger for RedisLedger {
    async fn ping(&self) -> Result<(), LedgerError> {
        let mut con = self.con.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut con))
            .await
            .map(drop)
    }

    async fn acquire(&self, req: &LeaseRequest) -> Result<LeaseGrant, LedgerError> {
        let rules = &req.line.rules;
        let ticket = |t: Option<TicketId>| t.map(|t| t.to_string()).unwrap_or_default();
        let (code, id, a, b, c, queued, waited): (i64, String, i64, i64, i64, i64, i64) = self
            .run(
                ACQUIRE
                    .arg(req.session.to_string())
                    .arg(req.hardware_id.as_str())
                    .arg(ttl_ms(req.ttl))
                    .arg(req.max_seats)
                    .arg(KEY_GRACE_MS)
                    .arg(grace_ms(req.grace))
                    .arg(req.overdraft)
                    .arg(ttl_ms(rules.hold))
                    .arg(ttl_ms(rules.patience))
                    .arg(rules.max_len)
                    .arg(ticket(req.line.join))
                    .arg(ticket(req.line.claim)),
                req.org,
                req.license,
            )
            .await?;
        let (seats_used, graced, queued) = (to_u32(b), to_u32(c), to_u32(queued));
        match code {
            0 => Ok(LeaseGrant::Full {
                seats_used,
                graced,
                queued,
            }),
            1 => Ok(LeaseGrant::Granted {
                expires_at: from_ms(a)?,
                seats_used,
                graced,
                waited: u64::try_from(waited).ok().map(Duration::from_millis),
                queued,
            }),
            2 => Ok(LeaseGrant::Renewed {
                session: parse_session(&id)?,
                expires_at: from_ms(a)?,
                seats_used,
                graced,
            }),
            3 => Ok(LeaseGrant::Queued(Place {
                ticket: parse_ticket(&id)?,
                position: to_u32(a),
                hold_until: hold_until(b)?,
                length: to_u32(c),
            })),
            4 => Ok(LeaseGrant::NoTicket),
            5 => Ok(LeaseGrant::Unseeded),
            other => Err(LedgerError::Corrupt(format!(
                "acquire script returned unknown code {other}"
            ))),
        }
    }

    async fn heartbeat(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
        ttl: Duration,
        throttle: Option<Throttle>,
    ) -> Result<BeatOutcome, LedgerError> {
        // No throttle is an interval of 0, which the script skips.
        let (interval, tolerance) =
            throttle.map_or((0, 0), |t| (t.interval_ms(), t.tolerance_ms()));
        let (code, value): (i64, i64) = self
            .run_leases(
                HEARTBEAT
                    .arg(session.to_string())
                    .arg(ttl_ms(ttl))
                    .arg(KEY_GRACE_MS)
                    .arg(interval)
                    .arg(tolerance),
                org,
                license,
            )
            .await?;
        match code {
            0 => Ok(BeatOutcome::Gone),
            1 => from_ms(value).map(BeatOutcome::Extended),
            2 => Ok(BeatOutcome::Throttled {
                retry_after: Duration::from_millis(u64::try_from(value).unwrap_or(0)),
            }),
            3 => Ok(BeatOutcome::Unseeded),
            other => Err(LedgerError::Corrupt(format!(
                "heartbeat script returned unknown code {other}"
            ))),
        }
    }

    async fn release(
        &self,
        org: OrgId,
        license: LicenseId,
        session: SessionId,
    ) -> Result<Freed, LedgerError> {
        let (held, live, graced): (i64, u32, u32) = self
            .run_leases(&mut RELEASE.arg(session.to_string()), org, license)
            .await?;
        Ok(Freed {
            held: held == 1,
            live,
            graced,
        })
    }

    async fn live_leases(
        &self,
        org: OrgId,
        license: LicenseId,
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, LedgerError> {
        let rows: Vec<(String, i64)> = self
            .run_leases(&mut LIVE.prepare_invoke(), org, license)
            .await?;
        rows.into_iter()
            .map(|(session, expires_ms)| Ok((parse_session(&session)?, from_ms(expires_ms)?)))
            .collect()
    }

    async fn lease_states(
        &self,
        org: OrgId,
        license: LicenseId,
        sessions: &[SessionId],
    ) -> Result<LeaseStates, LedgerError> {
        let mut invocation = STATES.prepare_invoke();
        for s in sessions {
            invocation.arg(s.to_string());
        }
        let row: Vec<i64> = self.run_leases(&mut invocation, org, license).await?;
        let [now, grace, live, graced, expiries @ ..] = row.as_slice() else {
            return Err(LedgerError::Corrupt(
                "states script returned too little".into(),
            ));
        };
        if expiries.len() != sessions.len() {
            return Err(LedgerError::Corrupt(
                "states script returned the wrong number of sessions".into(),
            ));
        }
        Ok(LeaseStates {
            now: from_ms(*now)?,
            grace: Duration::from_millis(u64::try_from(*grace).unwrap_or(0)),
            live: to_u32(*live),
            graced: to_u32(*graced),
            expiries: expiries
                .iter()
                .map(|&ms| {
                    if ms < 0 {
                        Ok(None)
                    } else {
                        from_ms(ms).map(Some)
                    }
                })
                .collect::<Result<_, _>>()?,
        })
    }

    async fn revoke_license(&self, org: OrgId, license: LicenseId) -> Result<u32, LedgerError> {
        let held: i64 = self.run(&mut REVOKE.prepare_invoke(), org, license).await?;
        Ok(to_u32(held))
    }

    async fn poll_ticket(&self, poll: &TicketPoll) -> Result<Option<Place>, LedgerError> {
        let (position, hold, length): (i64, i64, i64) = self
            .run(
                POLL.arg(poll.ticket.to_string())
                    .arg(poll.max_seats)
                    .arg(poll.overdraft)
                    .arg(grace_ms(poll.grace))
                    .arg(ttl_ms(poll.rules.hold))
                    .arg(ttl_ms(poll.rules.patience))
                    .arg(KEY_GRACE_MS),
                poll.org,
                poll.license,
            )
            .await?;
        if position <= 0 {
            return Ok(None);
        }
        Ok(Some(Place {
            ticket: poll.ticket,
            position: to_u32(position),
            hold_until: hold_until(hold)?,
            length: to_u32(length),
        }))
    }

    async fn seed(
        &self,
        org: OrgId,
        license: LicenseId,
        grace: Duration,
        leases: &[SeedLease],
    ) -> Result<Option<u32>, LedgerError> {
        let mut invocation = SEED.prepare_invoke();
        invocation.arg(grace_ms(grace)).arg(KEY_GRACE_MS);
        for lease in leases {
            invocation
                .arg(lease.session.to_string())
                .arg(lease.hardware_id.as_str())
                .arg(lease.expires_at.timestamp_millis());
        }
        let put: i64 = self.run_leases(&mut invocation, org, license).await?;
        Ok(u32::try_from(put).ok())
    }

    async fn leave_line(
        &self,
        org: OrgId,
        license: LicenseId,
        ticket: TicketId,
    ) -> Result<bool, LedgerError> {
        self.run(&mut LEAVE.arg(ticket.to_string()), org, license)
            .await
    }
}

fn parse_ticket(ticket: &str) -> Result<TicketId, LedgerError> {
    ticket
        .parse()
        .map_err(|_| LedgerError::Corrupt(format!("ledger holds a bad ticket id {ticket:?}")))
}

/// A hold's end from a script: 0 for none.
fn hold_until(ms: i64) -> Result<Option<DateTime<Utc>>, LedgerError> {
    if ms <= 0 {
        return Ok(None);
    }
    from_ms(ms).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_license_share_the_organization_hash_tag() {
        let (org, license) = (OrgId::new(), LicenseId::new());
        for key in RedisLedger::license_keys(org, license) {
            assert!(
                key.starts_with(&format!("sw:{{{org}}}:lic:{license}:")),
                "{key}"
            );
        }
    }
}
