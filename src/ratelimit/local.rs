//! The in-process rate limiter: one governor keyed limiter per [`Limit`].
//!
//! governor implements the same GCRA as `lua/ratelimit.lua` (allow while
//! `now >= tat - T * (N - 1)`, then `tat = max(tat, now) + T`); it is given
//! the quota as the same whole-millisecond interval the script gets, and
//! our [`Clock`] in place of its own, so both compute the same answers at
//! the same instants. Each key's state is one atomic word in a sharded map.
//!
//! Keys whose arrival time has passed carry no information; housekeeping
//! ([`LocalRateLimiter::housekeep`], run by [`LocalRateLimiter::spawn_housekeeping`])
//! drops them, so memory follows the keys active within one period.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use governor::Quota;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;

use super::{Clock, Decision, Limit, RateKey, RateLimiter, Rates};
use crate::telemetry::RATE_LIMITED;

/// How often the housekeeping task drops stale keys.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// governor's view of our [`Clock`]: a `Duration` since the Unix epoch,
/// in whole milliseconds like the Redis script's `now_ms`.
#[derive(Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

type Keyed = governor::RateLimiter<
    RateKey,
    DashMapStateStore<RateKey>,
    GovernorClock,
    NoOpMiddleware<Duration>,
>;

/// A [`RateLimiter`] within one process.
pub struct LocalRateLimiter {
    /// By [`Limit::index`]; `None` for limits that are off.
    limiters: [Option<Keyed>; Limit::ALL.len()],
    clock: Arc<dyn Clock>,
}

impl LocalRateLimiter {
    pub fn new(rates: Rates, clock: Arc<dyn Clock>) -> Self {
        let limiters = Limit::ALL.map(|limit| {
            let gcra = rates.get(limit).gcra()?;
            let quota = Quota::with_period(Duration::from_millis(gcra.interval_ms))
                .expect("the interval is at least 1 ms")
                .allow_burst(gcra.burst);
            Some(Keyed::dashmap_with_clock(
                quota,
                GovernorClock(clock.clone()),
            ))
        });
        Self { limiters, clock }
    }

    /// Counts a request; the shared logic of [`RateLimiter::check`] and of
    /// the Redis limiter's fallback.
    pub fn decide(&self, limit: Limit, key: &RateKey) -> Decision {
        let Some(limiter) = &self.limiters[limit.index()] else {
            return Decision::Allowed;
        };
        match limiter.check_key(key) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => {
                let now = Duration::from_millis(self.clock.now_ms());
                // At least 1 ms: a refusal always names a later time.
                let retry_after = not_until.wait_time_from(now).max(Duration::from_millis(1));
                metrics::counter!(RATE_LIMITED, "limit" => limit.name()).increment(1);
                Decision::Limited { retry_after }
            }
        }
    }

    /// Forgets keys that are back to a fresh state, and gives their memory
    /// back.
    pub fn housekeep(&self) {
        for limiter in self.limiters.iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held, over all limits (for tests and housekeeping checks).
    pub fn len(&self) -> usize {
        self.limiters.iter().flatten().map(Keyed::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs [`Self::housekeep`] every `every` for as long as the limiter is
    /// alive (the task holds only a weak reference).
    pub fn spawn_housekeeping(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.housekeep();
            }
        });
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, limit: Limit, key: &RateKey) -> Decision {
        self.decide(limit, key)
    }
}
