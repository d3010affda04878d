//! The Redis rate limiter: limits that hold across every node together.
//!
//! One key per (limit, key), `sw:rl:<limit>:<32 hex digits>`, holding the
//! GCRA arrival time in ms and expiring when it passes; each check is one
//! run of `lua/ratelimit.lua` by EVALSHA. The script touches that one key
//! only, so it runs on Redis Cluster as it is.
//!
//! When Redis fails (an error or no answer within the timeout), a check
//! applies the limit's [`OutagePolicy`]: allow, or count in this process
//! with a [`LocalRateLimiter`] of the same rates.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::local::LocalRateLimiter;
use super::{Clock, Decision, Gcra, Limit, OutagePolicy, RateKey, RateLimiter, Rates};
use crate::redact::scrub;
use crate::redis_link::{self, RedisLink, RedisTarget};
use crate::telemetry::{RATE_LIMIT_ERRORS, RATE_LIMITED};

static RATELIMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/ratelimit.lua")));

/// A [`RateLimiter`] shared by every node through Redis.
pub struct RedisRateLimiter {
    con: RedisLink,
    timeout: Duration,
    /// Strings to scrub from error messages (the URL's password).
    secrets: Vec<String>,
    rates: Rates,
    clock: Arc<dyn Clock>,
    /// Counts limits whose policy is [`OutagePolicy::Local`] while Redis
    /// fails.
    fallback: Arc<LocalRateLimiter>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its client info may carry credentials.
        f.debug_struct("RedisRateLimiter")
            .field("timeout", &self.timeout)
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to `url`; a check that takes longer than `timeout` counts
    /// as a Redis failure. Error messages never contain the URL's password.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        rates: Rates,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        Self::open(&RedisTarget::Single(url.to_owned()), timeout, rates, clock).await
    }

    /// Connects to one server or a cluster; otherwise as
    /// [`RedisRateLimiter::connect`]. Each check touches one key, so a
    /// cluster spreads the limits over its slots.
    pub async fn open(
        target: &RedisTarget,
        timeout: Duration,
        rates: Rates,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let (con, secrets) = redis_link::connect(target, timeout).await?;
        Ok(Self {
            con,
            timeout,
            secrets,
            rates,
            fallback: Arc::new(LocalRateLimiter::new(rates, clock.clone())),
            clock,
        })
    }

    /// The in-process limiter used during outages, for its housekeeping.
    pub fn fallback(&self) -> &Arc<LocalRateLimiter> {
        &self.fallback
    }

    /// The Redis key of `key` under `limit` at the quota `gcra`.
    ///
    /// The quota is part of the name: a stored arrival time only means
    /// something under the quota that wrote it. Were it left out, raising a
    /// limit from 3/hour to 100/min would keep a client refused for up to
    /// the old hour (its stored `tat` is that far ahead), and two nodes
    /// configured differently would corrupt each other's counts. A changed
    /// quota starts every key afresh instead.
    pub fn redis_key(limit: Limit, gcra: Gcra, key: &RateKey) -> String {
        format!(
            "sw:rl:{}:{}x{}:{}",
            limit.name(),
            gcra.burst,
            gcra.interval_ms,
            key.to_hex()
        )
    }

    /// Counts a request in Redis, with no outage policy: an error when
    /// Redis fails.
    pub async fn try_check(&self, limit: Limit, key: &RateKey) -> Result<Decision, String> {
        let Some(gcra) = self.rates.get(limit).gcra() else {
            return Ok(Decision::Allowed);
        };
        let mut con = self.con.clone();
        let mut invocation = RATELIMIT.key(Self::redis_key(limit, gcra, key));
        invocation
            .arg(self.clock.now_ms())
            .arg(gcra.interval_ms)
            .arg(gcra.tolerance_ms());
        let call = invocation.invoke_async::<(i64, i64)>(&mut con);
        let (allowed, retry_ms) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(scrub(&format!("Redis: {e}"), &self.secrets)),
            Err(_) => return Err(format!("Redis did not answer within {:?}", self.timeout)),
        };
        if allowed == 1 {
            return Ok(Decision::Allowed);
        }
        metrics::counter!(RATE_LIMITED, "limit" => limit.name()).increment(1);
        let retry_ms = u64::try_from(retry_ms).unwrap_or(0).max(1);
        Ok(Decision::Limited {
            retry_after: Duration::from_millis(retry_ms),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, limit: Limit, key: &RateKey) -> Decision {
        match self.try_check(limit, key).await {
            Ok(decision) => decision,
            Err(e) => {
                metrics::counter!(RATE_LIMIT_ERRORS, "limit" => limit.name()).increment(1);
                let policy = limit.on_outage();
                tracing::warn!(error = %e, %limit, ?policy, "rate limit check failed");
                match policy {
                    OutagePolicy::Open => Decision::Allowed,
                    OutagePolicy::Local => self.fallback.decide(limit, key),
                }
            }
        }
    }
}
