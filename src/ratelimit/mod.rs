//! Rate limits: how many requests of one kind one client may make.
//!
//! A rate limit is an HTTP concern (it protects endpoints, not seats), so the
//! port lives here rather than in `actors/`. Two implementations:
//!
//! - [`local::LocalRateLimiter`]: in-process (governor's keyed GCRA), for
//!   the embedded default, where one process serves everything;
//! - [`redis::RedisRateLimiter`]: one Lua script (`lua/ratelimit.lua`), so
//!   that a limit holds across every node together.
//!
//! Both implement the same generic cell rate algorithm (GCRA) with the same
//! arithmetic, checked by one conformance suite (`tests/ratelimit_conformance.rs`):
//! a limit of `N` per period allows a burst of `N` at once, then one request
//! per *emission interval* `T = period / N` (rounded up to whole
//! milliseconds). The state per (limit, key) is one number, the theoretical
//! arrival time `tat`:
//!
//! ```text
//! tat   = stored tat, or now if none (a fresh key)
//! if now < tat - T * (N - 1):  refuse; retry after (tat - T * (N - 1)) - now
//! else:                        allow;  tat = max(tat, now) + T
//! ```
//!
//! A key whose `tat` has passed is indistinguishable from a fresh one, so it
//! may be forgotten: Redis keys expire then, and the in-process maps drop
//! such entries on housekeeping. Memory stays bounded by the keys active
//! within one period.
//!
//! Applying a limit to a route is one line in its handler:
//! `ctx.rate_limit(Limit::AcquirePerMachine, &key).await?` (see
//! [`crate::http::AppState::rate_limit`]), or the filter
//! `.and(rate_limit_by_ip(&ctx, Limit::RegisterPerIp))` for per-IP limits
//! ([`crate::http::rate_limit_by_ip`]).

pub mod local;
pub mod redis;

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One kind of rate limit: what is counted, and per what.
///
/// Each has its quota in `[rate_limits]` under [`Limit::name`], and a policy
/// for when the shared store (Redis) fails, [`Limit::on_outage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Login attempts per client IP (password guessing from one place).
    LoginPerIp,
    /// Login attempts per account (guessing one account from many places).
    LoginPerAccount,
    /// Registrations per client IP.
    RegisterPerIp,
    /// Password-reset requests per account (each one sends an email).
    ForgotPasswordPerAccount,
    /// License validations per license key.
    ValidatePerKey,
    /// Activations per license key.
    ActivatePerKey,
    /// Seat acquisitions per (license key, hardware id).
    AcquirePerMachine,
    /// Heartbeats per session. Not counted by a [`RateLimiter`]: the seat
    /// ledger enforces it in the heartbeat's own call ([`Rate::throttle`],
    /// docs/decisions.md 59).
    HeartbeatPerSession,
    /// Invitation acceptances per client IP: tokens are unguessable, but
    /// nobody should get to try many.
    AcceptInvitationPerIp,
}

/// What a limit does while the shared store can't be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutagePolicy {
    /// Allow: the request goes through unlimited.
    Open,
    /// Count in this process instead: the limit holds per node (so at most
    /// nodes × quota across the deployment) until the store is back.
    Local,
}

impl Limit {
    /// Every limit, in [`Limit::index`] order.
    pub const ALL: [Limit; 9] = [
        Limit::LoginPerIp,
        Limit::LoginPerAccount,
        Limit::RegisterPerIp,
        Limit::ForgotPasswordPerAccount,
        Limit::ValidatePerKey,
        Limit::ActivatePerKey,
        Limit::AcquirePerMachine,
        Limit::HeartbeatPerSession,
        Limit::AcceptInvitationPerIp,
    ];

    /// The setting's name in `[rate_limits]`, the `limit` label of metrics,
    /// and part of the Redis key.
    pub const fn name(self) -> &'static str {
        match self {
            Limit::LoginPerIp => "login_per_ip",
            Limit::LoginPerAccount => "login_per_account",
            Limit::RegisterPerIp => "register_per_ip",
            Limit::ForgotPasswordPerAccount => "forgot_password_per_account",
            Limit::ValidatePerKey => "validate_per_key",
            Limit::ActivatePerKey => "activate_per_key",
            Limit::AcquirePerMachine => "acquire_per_machine",
            Limit::HeartbeatPerSession => "heartbeat_per_session",
            Limit::AcceptInvitationPerIp => "accept_invitation_per_ip",
        }
    }

    /// Position in [`Limit::ALL`], for per-limit tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// What the limit does when Redis fails (see docs/decisions.md).
    ///
    /// Limits that guard credentials and email (login, register, forgot
    /// password) fall back to counting per node: failing open would let a
    /// Redis outage open the door to password guessing, and failing closed
    /// would lock every user out. Limits on license operations fail open:
    /// acquire and heartbeat need Redis (the seat ledger) anyway, so an
    /// outage already answers them with 503, and validate and activate are
    /// guarded by the license's own key.
    pub const fn on_outage(self) -> OutagePolicy {
        match self {
            Limit::LoginPerIp
            | Limit::LoginPerAccount
            | Limit::RegisterPerIp
            | Limit::ForgotPasswordPerAccount
            | Limit::AcceptInvitationPerIp => OutagePolicy::Local,
            Limit::ValidatePerKey
            | Limit::ActivatePerKey
            | Limit::AcquirePerMachine
            | Limit::HeartbeatPerSession => OutagePolicy::Open,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A quota: `count` requests per `period`, or no limit at all.
///
/// Written in settings as `"5/min"`, `"3/hour"`, `"60/sec"`, `"100/day"`
/// (also `s`, `m`, `h`, `d`), or `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Rate {
    Off,
    Every { count: NonZeroU32, period: Duration },
}

impl Rate {
    pub fn per(count: u32, period: Duration) -> Self {
        match NonZeroU32::new(count) {
            Some(count) if !period.is_zero() => Rate::Every { count, period },
            _ => Rate::Off,
        }
    }

    /// The GCRA parameters both implementations use, `None` when off.
    pub fn gcra(self) -> Option<Gcra> {
        match self {
            Rate::Off => None,
            Rate::Every { count, period } => {
                let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
                let interval_ms = period_ms.div_ceil(u64::from(count.get())).max(1);
                Some(Gcra {
                    interval_ms,
                    burst: count,
                })
            }
        }
    }
}

impl Rate {
    /// The same limit as a per-session heartbeat throttle, which the seat
    /// ledger enforces itself; `None` when off.
    pub fn throttle(self) -> Option<seatwarden_actors::ports::Throttle> {
        self.gcra().map(|g| seatwarden_actors::ports::Throttle {
            interval: Duration::from_millis(g.interval_ms),
            burst: g.burst.get(),
        })
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Rate::Off);
        }
        let bad = || format!("{s:?} is not a rate: write N/sec, N/min, N/hour, N/day or off");
        let (count, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        let count = NonZeroU32::new(count).ok_or_else(|| format!("{s:?}: use off, not 0"))?;
        Ok(Rate::Every {
            count,
            period: Duration::from_secs(secs),
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Off => f.write_str("off"),
            Rate::Every { count, period } => write!(f, "{count}/{}s", period.as_secs()),
        }
    }
}

/// The GCRA parameters of a [`Rate`], in whole milliseconds so that the
/// in-process limiter and the Redis script compute exactly the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: one request's worth of time; the steady rate is one per `T`.
    pub interval_ms: u64,
    /// `N`: requests allowed at once from a fresh key.
    pub burst: NonZeroU32,
}

impl Gcra {
    /// `T * (N - 1)`: how far ahead of now the arrival time may run.
    pub fn tolerance_ms(self) -> u64 {
        self.interval_ms
            .saturating_mul(u64::from(self.burst.get() - 1))
    }
}

/// The quota of every [`Limit`], from `[rate_limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates([Rate; Limit::ALL.len()]);

impl Rates {
    /// Every limit off.
    pub fn off() -> Self {
        Self([Rate::Off; Limit::ALL.len()])
    }

    pub fn get(&self, limit: Limit) -> Rate {
        self.0[limit.index()]
    }

    pub fn with(mut self, limit: Limit, rate: Rate) -> Self {
        self.0[limit.index()] = rate;
        self
    }
}

/// `[rate_limits]`: one [`Rate`] per [`Limit`], named by [`Limit::name`].
#[derive(Clone, Debug, Deserialize)]
pub struct RateLimitSettings {
    /// `false` turns every limit off at once.
    pub enabled: bool,
    pub login_per_ip: Rate,
    pub login_per_account: Rate,
    pub register_per_ip: Rate,
    pub forgot_password_per_account: Rate,
    pub validate_per_key: Rate,
    pub activate_per_key: Rate,
    pub acquire_per_machine: Rate,
    pub heartbeat_per_session: Rate,
    pub accept_invitation_per_ip: Rate,
}

impl RateLimitSettings {
    pub fn rates(&self) -> Rates {
        if !self.enabled {
            return Rates::off();
        }
        Rates([
            self.login_per_ip,
            self.login_per_account,
            self.register_per_ip,
            self.forgot_password_per_account,
            self.validate_per_key,
            self.activate_per_key,
            self.acquire_per_machine,
            self.heartbeat_per_session,
            self.accept_invitation_per_ip,
        ])
    }
}

/// What a client is counted by, hashed: a SHA-256 prefix of the key's
/// parts, so that neither Redis nor memory ever holds a license key, an
/// email or an IP in clear, and every key has the same small size.
///
/// Build it from parts in their canonical form (a normalized license key,
/// a lower-cased email), or a client could dodge the limit by spelling the
/// same thing differently.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey([u8; 16]);

impl RateKey {
    /// Starts a key; add its parts with [`RateKeyBuilder::part`].
    pub fn builder() -> RateKeyBuilder {
        RateKeyBuilder(Sha256::new())
    }

    /// A key of one part.
    pub fn of(part: impl AsRef<[u8]>) -> Self {
        Self::builder().part(part).finish()
    }

    /// The key as 32 hex digits, as it appears in Redis.
    pub fn to_hex(self) -> String {
        use std::fmt::Write;
        let mut hex = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

impl fmt::Debug for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateKey({})", self.to_hex())
    }
}

/// Hashes the parts of a [`RateKey`] as they come, without joining them.
pub struct RateKeyBuilder(Sha256);

impl RateKeyBuilder {
    /// Adds a part. Parts are length-prefixed, so `("ab", "c")` and
    /// `("a", "bc")` are different keys.
    pub fn part(mut self, part: impl AsRef<[u8]>) -> Self {
        let part = part.as_ref();
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part);
        self
    }

    pub fn finish(self) -> RateKey {
        let digest = self.0.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        RateKey(key)
    }
}

/// The outcome of counting one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the next request of this key would be allowed after
    /// `retry_after` (more than zero).
    Limited {
        retry_after: Duration,
    },
}

/// A rate limiter: counts requests per ([`Limit`], [`RateKey`]).
///
/// The contract, checked by `tests/ratelimit_conformance.rs` on every
/// implementation:
///
/// - a limit of `N` per period (see [`Rate::gcra`]) allows `N` requests of
///   a fresh key at once, and refuses the next with a `retry_after` equal
///   to the time until one more would be allowed;
/// - one more request is allowed every emission interval `T` after that;
///   a refused request counts for nothing;
/// - keys are independent of one another, and limits of one another (the
///   same key under two limits is two counters);
/// - a limit set to `off` allows everything and stores nothing;
/// - time is the limiter's [`Clock`], so that tests can step it;
/// - a backend that fails applies the limit's [`OutagePolicy`]: `check`
///   itself never fails.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` under `limit`.
    async fn check(&self, limit: Limit, key: &RateKey) -> Decision;
}

/// The time rate limits are counted in: milliseconds since the Unix epoch.
///
/// A port so that tests can step time instead of sleeping. With Redis, each
/// node's clock is sent to the script (see docs/decisions.md on why not
/// Redis `TIME`).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at the system's current time, so that Redis keys written
    /// under it expire like real ones.
    pub fn new() -> Self {
        Self(AtomicU64::new(SystemClock.now_ms()))
    }

    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_from_count_and_unit() {
        assert_eq!(
            "5/min".parse::<Rate>().unwrap(),
            Rate::per(5, Duration::from_secs(60))
        );
        assert_eq!(
            " 3 / hour ".parse::<Rate>().unwrap(),
            Rate::per(3, Duration::from_secs(3600))
        );
        assert_eq!(
            "60/s".parse::<Rate>().unwrap(),
            Rate::per(60, Duration::from_secs(1))
        );
        assert_eq!("OFF".parse::<Rate>().unwrap(), Rate::Off);
        for bad in ["", "5", "5/fortnight", "x/min", "0/min", "-1/min"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_emission_interval_is_the_period_over_the_count_rounded_up() {
        let g = Rate::per(5, Duration::from_secs(60)).gcra().unwrap();
        assert_eq!(
            (g.interval_ms, g.burst.get(), g.tolerance_ms()),
            (12_000, 5, 48_000)
        );
        let g = Rate::per(7, Duration::from_secs(60)).gcra().unwrap();
        assert_eq!(g.interval_ms, 8_572);
        let g = Rate::per(1_000_000, Duration::from_secs(1)).gcra().unwrap();
        assert_eq!(g.interval_ms, 1);
        assert_eq!(Rate::Off.gcra(), None);
    }

    #[test]
    fn keys_differ_by_how_parts_are_split() {
        let ab_c = RateKey::builder().part("ab").part("c").finish();
        let a_bc = RateKey::builder().part("a").part("bc").finish();
        assert_ne!(ab_c, a_bc);
        assert_eq!(ab_c, RateKey::builder().part("ab").part("c").finish());
        assert_eq!(RateKey::of("x").to_hex().len(), 32);
    }
}
