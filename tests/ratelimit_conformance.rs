//! The conformance suite of [`RateLimiter`]: every check is written once and
//! run against each backend, the in-process [`LocalRateLimiter`] and the
//! [`RedisRateLimiter`] (on the throwaway server from `scripts/services.sh`).
//!
//! Time is a [`ManualClock`] that the checks step: no check waits for a
//! real second to pass. Checks isolate themselves with fresh random keys.

mod support;

use std::sync::Arc;
use std::time::Duration;

use seatwarden::ratelimit::local::LocalRateLimiter;
use seatwarden::ratelimit::redis::RedisRateLimiter;
use seatwarden::ratelimit::{Decision, Limit, ManualClock, Rate, RateKey, RateLimiter, Rates};

type Limiter = Arc<dyn RateLimiter>;

/// The quotas every check runs with.
fn rates() -> Rates {
    Rates::off()
        // T = 20 s, a burst of 3.
        .with(
            Limit::AcquirePerMachine,
            Rate::per(3, Duration::from_secs(60)),
        )
        // T = 500 ms, a burst of 2.
        .with(
            Limit::HeartbeatPerSession,
            Rate::per(2, Duration::from_secs(1)),
        )
        // T = 1 h, a burst of 1.
        .with(
            Limit::LoginPerAccount,
            Rate::per(1, Duration::from_secs(3600)),
        )
    // LoginPerIp stays off.
}

/// The Redis key `limit` stores `key` under, at the quota of [`rates`].
fn stored_name(limit: Limit, key: &RateKey) -> String {
    let gcra = rates().get(limit).gcra().expect("a limit that is on");
    seatwarden::ratelimit::redis::RedisRateLimiter::redis_key(limit, gcra, key)
}

const ACQUIRE_T: Duration = Duration::from_secs(20);

fn fresh_key() -> RateKey {
    RateKey::of(uuid::Uuid::new_v4().as_bytes())
}

// ---------------------------------------------------------------------------
// Backends

/// `n` handles on one in-process limiter: several callers of one process.
async fn local_nodes(n: usize, clock: Arc<ManualClock>) -> Vec<Limiter> {
    let limiter: Limiter = Arc::new(LocalRateLimiter::new(rates(), clock));
    vec![limiter; n]
}

/// `n` limiters with their own connections to the test Redis: several
/// server nodes.
async fn redis_nodes(n: usize, clock: Arc<ManualClock>) -> Vec<Limiter> {
    let url = support::services::redis_url();
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let limiter =
            RedisRateLimiter::connect(&url, Duration::from_secs(2), rates(), clock.clone())
                .await
                .expect("connect to the test Redis");
        nodes.push(Arc::new(limiter) as Limiter);
    }
    nodes
}

/// `n` limiters with their own connections to the test Redis Cluster.
async fn cluster_nodes(n: usize, clock: Arc<ManualClock>) -> Vec<Limiter> {
    let target = support::services::redis_cluster();
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let limiter =
            RedisRateLimiter::open(&target, Duration::from_secs(2), rates(), clock.clone())
                .await
                .expect("connect to the test Redis Cluster");
        nodes.push(Arc::new(limiter) as Limiter);
    }
    nodes
}

/// Generates, for each backend, one `#[tokio::test]` per check, named by
/// the sentence on the left: `local::<sentence>`, `redis::<sentence>` and
/// `redis_cluster::<sentence>`.
/// `one:` checks get one limiter, `nodes:` checks two; both get the clock.
macro_rules! conformance {
    (
        one: { $($name:ident => $check:ident,)* }
        nodes: { $($mname:ident => $mcheck:ident,)* }
    ) => {
        conformance!(@backend local, local_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
        conformance!(@backend redis, redis_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
        conformance!(@backend redis_cluster, cluster_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
    };
    (
        @backend $backend:ident, $nodes:ident,
        one: { $($name:ident => $check:ident,)* }
        nodes: { $($mname:ident => $mcheck:ident,)* }
    ) => {
        mod $backend {
            use std::sync::Arc;
            use seatwarden::ratelimit::ManualClock;
            $(
                #[tokio::test]
                async fn $name() {
                    let clock = Arc::new(ManualClock::new());
                    let limiter = super::$nodes(1, clock.clone()).await.remove(0);
                    super::$check(limiter, clock).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $mname() {
                    let clock = Arc::new(ManualClock::new());
                    super::$mcheck(super::$nodes(2, clock.clone()).await, clock).await;
                }
            )*
        }
    };
}

conformance! {
    one: {
        a_fresh_key_is_allowed_a_burst_of_the_limit_and_the_next_is_refused => burst_then_refused,
        one_more_request_is_allowed_each_emission_interval => refills_one_per_interval,
        a_refused_request_counts_for_nothing => refusals_are_free,
        an_idle_key_refills_to_the_full_burst_and_no_further => refills_to_burst,
        keys_are_counted_independently => keys_independent,
        limits_are_counted_independently => limits_independent,
        a_limit_that_is_off_allows_everything => off_allows_everything,
        decisions_match_the_reference_gcra_on_an_irregular_schedule => matches_reference_model,
    }
    nodes: {
        a_limit_holds_across_two_callers_together => holds_across_nodes,
    }
}

async fn check(limiter: &Limiter, limit: Limit, key: &RateKey) -> Decision {
    limiter.check(limit, key).await
}

fn limited(retry_after: Duration) -> Decision {
    Decision::Limited { retry_after }
}

async fn burst_then_refused(limiter: Limiter, _clock: Arc<ManualClock>) {
    let key = fresh_key();
    for i in 0..3 {
        assert_eq!(
            check(&limiter, Limit::AcquirePerMachine, &key).await,
            Decision::Allowed,
            "request {i} of the burst"
        );
    }
    // Three in at once put the arrival time at now + 3T; one more fits
    // once it is within 2T of now, i.e. after T.
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        limited(ACQUIRE_T)
    );
}

async fn refills_one_per_interval(limiter: Limiter, clock: Arc<ManualClock>) {
    let key = fresh_key();
    for _ in 0..3 {
        check(&limiter, Limit::AcquirePerMachine, &key).await;
    }
    clock.advance(ACQUIRE_T - Duration::from_millis(1));
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        limited(Duration::from_millis(1)),
        "1 ms short of the interval"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        Decision::Allowed
    );
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        limited(ACQUIRE_T),
        "the refilled one is used up"
    );
}

async fn refusals_are_free(limiter: Limiter, clock: Arc<ManualClock>) {
    let key = fresh_key();
    for _ in 0..3 {
        check(&limiter, Limit::AcquirePerMachine, &key).await;
    }
    for _ in 0..20 {
        assert!(matches!(
            check(&limiter, Limit::AcquirePerMachine, &key).await,
            Decision::Limited { .. }
        ));
        clock.advance(Duration::from_millis(500));
    }
    // 10 s of refusals later, 10 s are left of the interval: no more.
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        limited(Duration::from_secs(10))
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        Decision::Allowed
    );
}

async fn refills_to_burst(limiter: Limiter, clock: Arc<ManualClock>) {
    let key = fresh_key();
    for _ in 0..3 {
        check(&limiter, Limit::AcquirePerMachine, &key).await;
    }
    // Two intervals give two requests back.
    clock.advance(2 * ACQUIRE_T);
    for _ in 0..2 {
        assert_eq!(
            check(&limiter, Limit::AcquirePerMachine, &key).await,
            Decision::Allowed
        );
    }
    assert!(matches!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        Decision::Limited { .. }
    ));
    // A long idle time gives back the burst, and not a request more.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        assert_eq!(
            check(&limiter, Limit::AcquirePerMachine, &key).await,
            Decision::Allowed
        );
    }
    assert_eq!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        limited(ACQUIRE_T)
    );
}

async fn keys_independent(limiter: Limiter, _clock: Arc<ManualClock>) {
    let (a, b) = (fresh_key(), fresh_key());
    for _ in 0..3 {
        check(&limiter, Limit::AcquirePerMachine, &a).await;
    }
    assert!(matches!(
        check(&limiter, Limit::AcquirePerMachine, &a).await,
        Decision::Limited { .. }
    ));
    for _ in 0..3 {
        assert_eq!(
            check(&limiter, Limit::AcquirePerMachine, &b).await,
            Decision::Allowed
        );
    }
}

async fn limits_independent(limiter: Limiter, _clock: Arc<ManualClock>) {
    let key = fresh_key();
    for _ in 0..3 {
        check(&limiter, Limit::AcquirePerMachine, &key).await;
    }
    assert!(matches!(
        check(&limiter, Limit::AcquirePerMachine, &key).await,
        Decision::Limited { .. }
    ));
    assert_eq!(
        check(&limiter, Limit::LoginPerAccount, &key).await,
        Decision::Allowed
    );
    assert_eq!(
        check(&limiter, Limit::LoginPerAccount, &key).await,
        limited(Duration::from_secs(3600)),
        "a burst of one"
    );
    for _ in 0..2 {
        assert_eq!(
            check(&limiter, Limit::HeartbeatPerSession, &key).await,
            Decision::Allowed
        );
    }
}

async fn off_allows_everything(limiter: Limiter, _clock: Arc<ManualClock>) {
    let key = fresh_key();
    for _ in 0..1000 {
        assert_eq!(
            check(&limiter, Limit::LoginPerIp, &key).await,
            Decision::Allowed
        );
    }
}

/// GCRA as the documentation states it, on plain integers.
struct Model {
    interval_ms: u64,
    tolerance_ms: u64,
    tat: Option<u64>,
}

impl Model {
    fn check(&mut self, now: u64) -> Decision {
        let tat = self.tat.unwrap_or(now);
        let earliest = tat.saturating_sub(self.tolerance_ms);
        if now < earliest {
            return limited(Duration::from_millis(earliest - now));
        }
        self.tat = Some(tat.max(now) + self.interval_ms);
        Decision::Allowed
    }
}

async fn matches_reference_model(limiter: Limiter, clock: Arc<ManualClock>) {
    let key = fresh_key();
    // HeartbeatPerSession: 2/sec, T = 500 ms, tolerance 500 ms.
    let mut model = Model {
        interval_ms: 500,
        tolerance_ms: 500,
        tat: None,
    };
    let start = seatwarden::ratelimit::Clock::now_ms(clock.as_ref());
    // A fixed pseudo-random schedule: bursts, short gaps and long ones.
    let mut seed: u64 = 0x5eed;
    let (mut allowed, mut refused) = (0, 0);
    for i in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let step = match (seed >> 33) % 10 {
            0..=3 => 0,
            4..=7 => (seed >> 40) % 300,
            _ => (seed >> 40) % 2000,
        };
        clock.advance(Duration::from_millis(step));
        let now = seatwarden::ratelimit::Clock::now_ms(clock.as_ref()) - start;
        let expected = model.check(now);
        let got = check(&limiter, Limit::HeartbeatPerSession, &key).await;
        assert_eq!(got, expected, "request {i} at {now} ms");
        match got {
            Decision::Allowed => allowed += 1,
            Decision::Limited { .. } => refused += 1,
        }
    }
    assert!(
        allowed > 50 && refused > 50,
        "{allowed} allowed, {refused} refused"
    );
}

async fn holds_across_nodes(nodes: Vec<Limiter>, clock: Arc<ManualClock>) {
    let key = fresh_key();
    let mut allowed = 0;
    for i in 0..10 {
        if check(&nodes[i % 2], Limit::AcquirePerMachine, &key).await == Decision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "the burst, across both");
    clock.advance(ACQUIRE_T);
    assert_eq!(
        check(&nodes[1], Limit::AcquirePerMachine, &key).await,
        Decision::Allowed
    );
    assert_eq!(
        check(&nodes[0], Limit::AcquirePerMachine, &key).await,
        limited(ACQUIRE_T)
    );
}

// ---------------------------------------------------------------------------
// What only one backend has

mod redis_only {
    use super::*;
    use support::services::{OwnRedis, redis_url};

    async fn redis() -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn pttl(con: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
        ::redis::cmd("PTTL")
            .arg(key)
            .query_async(con)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_key_expires_when_its_arrival_time_passes() {
        let clock = Arc::new(ManualClock::new());
        let limiter = redis_nodes(1, clock).await.remove(0);
        let mut con = redis().await;
        let key = fresh_key();
        let name = stored_name(Limit::AcquirePerMachine, &key);

        limiter.check(Limit::AcquirePerMachine, &key).await;
        let one = pttl(&mut con, &name).await;
        assert!(0 < one && one <= 20_000, "after one request: {one} ms");
        for _ in 0..2 {
            limiter.check(Limit::AcquirePerMachine, &key).await;
        }
        let three = pttl(&mut con, &name).await;
        assert!(
            59_000 < three && three <= 60_000,
            "after the burst: {three} ms"
        );
        // A refusal writes nothing.
        limiter.check(Limit::AcquirePerMachine, &key).await;
        assert!(pttl(&mut con, &name).await <= three);
    }

    #[tokio::test]
    async fn a_key_is_gone_once_it_would_be_fresh_again() {
        let clock = Arc::new(ManualClock::new());
        let limiter = redis_nodes(1, clock).await.remove(0);
        let mut con = redis().await;
        let key = fresh_key();
        let name = stored_name(Limit::HeartbeatPerSession, &key);

        limiter.check(Limit::HeartbeatPerSession, &key).await;
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(&name)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(exists);
        // T is 500 ms of real time for Redis' own expiry.
        let gone = support::eventually(Duration::from_secs(5), || {
            let mut con = con.clone();
            let name = name.clone();
            async move {
                let exists: bool = ::redis::cmd("EXISTS")
                    .arg(&name)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                (!exists).then_some(())
            }
        })
        .await;
        assert!(gone.is_some(), "{name} never expired");
    }

    #[tokio::test]
    async fn keys_name_the_limit_and_a_hash_never_the_client_s_secret() {
        let clock = Arc::new(ManualClock::new());
        let limiter = redis_nodes(1, clock).await.remove(0);
        let secret = format!("CODITECT-{}", uuid::Uuid::new_v4().simple());
        let key = RateKey::builder().part(&secret).part("machine-1").finish();
        limiter.check(Limit::AcquirePerMachine, &key).await;

        let mut con = redis().await;
        let found: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("sw:rl:acquire_per_machine:*:{}", key.to_hex()))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let name = &found[0];
        // sw:rl:<limit>:<burst>x<interval ms>:<hash>
        let rest = name.strip_prefix("sw:rl:acquire_per_machine:").unwrap();
        let (quota, hash) = rest.split_once(':').unwrap();
        assert_eq!(quota, "3x20000", "{name}");
        assert!(
            hash.len() == 32 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
        assert!(!name.contains(&secret));
        let value: String = ::redis::cmd("GET")
            .arg(name)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(value.parse::<u64>().is_ok(), "the value is a time: {value}");
    }

    #[tokio::test]
    async fn a_changed_quota_starts_every_key_afresh() {
        let clock = Arc::new(ManualClock::new());
        let strict = Rates::off().with(Limit::LoginPerIp, Rate::per(1, Duration::from_secs(3600)));
        let relaxed = Rates::off().with(Limit::LoginPerIp, Rate::per(100, Duration::from_secs(60)));
        let connect = |rates| {
            let clock = clock.clone();
            async move {
                let limiter =
                    RedisRateLimiter::connect(&redis_url(), Duration::from_secs(2), rates, clock)
                        .await
                        .unwrap();
                Arc::new(limiter) as Limiter
            }
        };
        let before = connect(strict).await;
        let key = fresh_key();
        assert_eq!(
            check(&before, Limit::LoginPerIp, &key).await,
            Decision::Allowed
        );
        assert!(matches!(
            check(&before, Limit::LoginPerIp, &key).await,
            Decision::Limited { .. }
        ));

        // The operator raises the limit: nobody waits out the old hour.
        let after = connect(relaxed).await;
        assert_eq!(
            check(&after, Limit::LoginPerIp, &key).await,
            Decision::Allowed
        );
    }

    #[tokio::test]
    async fn a_limit_that_is_off_writes_nothing_to_redis() {
        let clock = Arc::new(ManualClock::new());
        let limiter = redis_nodes(1, clock).await.remove(0);
        let key = fresh_key();
        limiter.check(Limit::LoginPerIp, &key).await;
        let mut con = redis().await;
        let names: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("sw:rl:login_per_ip:*:{}", key.to_hex()))
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(names.is_empty(), "{names:?}");
    }

    #[tokio::test]
    async fn while_redis_is_down_login_limits_count_per_node_and_seat_limits_let_requests_through()
    {
        let mut own = OwnRedis::start();
        let clock = Arc::new(ManualClock::new());
        let limiter = RedisRateLimiter::connect(
            &own.url(),
            Duration::from_millis(500),
            rates(),
            clock.clone(),
        )
        .await
        .unwrap();
        let key = fresh_key();
        assert_eq!(
            limiter.check(Limit::LoginPerAccount, &key).await,
            Decision::Allowed,
            "counted in Redis"
        );

        own.kill();

        assert!(
            limiter
                .try_check(Limit::LoginPerAccount, &key)
                .await
                .is_err()
        );
        // Login falls back to this node's own count, which starts fresh:
        // one more (the burst), then refused.
        assert_eq!(
            limiter.check(Limit::LoginPerAccount, &key).await,
            Decision::Allowed
        );
        assert!(matches!(
            limiter.check(Limit::LoginPerAccount, &key).await,
            Decision::Limited { .. }
        ));
        // Acquire fails open: more than its burst gets through.
        for _ in 0..5 {
            assert_eq!(
                limiter.check(Limit::AcquirePerMachine, &key).await,
                Decision::Allowed
            );
        }

        // Once Redis is back, Redis counts again (its data was lost with
        // the crash, so the key starts fresh there).
        own.restart();
        let back = support::eventually(Duration::from_secs(10), || async {
            limiter.try_check(Limit::AcquirePerMachine, &key).await.ok()
        })
        .await;
        assert_eq!(back, Some(Decision::Allowed));
        for _ in 0..2 {
            limiter
                .try_check(Limit::AcquirePerMachine, &key)
                .await
                .unwrap();
        }
        assert!(matches!(
            limiter.check(Limit::AcquirePerMachine, &key).await,
            Decision::Limited { .. }
        ));
    }
}

mod local_only {
    use super::*;

    #[tokio::test]
    async fn housekeeping_forgets_keys_that_are_fresh_again_and_keeps_the_rest() {
        let clock = Arc::new(ManualClock::new());
        let limiter = LocalRateLimiter::new(rates(), clock.clone());
        for _ in 0..100 {
            limiter
                .check(Limit::HeartbeatPerSession, &fresh_key())
                .await;
        }
        let busy = fresh_key();
        for _ in 0..3 {
            limiter.check(Limit::AcquirePerMachine, &busy).await;
        }
        assert_eq!(limiter.len(), 101);

        clock.advance(Duration::from_secs(5));
        limiter.housekeep();

        assert_eq!(limiter.len(), 1, "only the key still within its period");
        assert!(matches!(
            limiter.check(Limit::AcquirePerMachine, &busy).await,
            Decision::Limited { .. }
        ));
    }
}
