//! The conformance suite of [`SeatLedger`]: every check is written once and
//! run against each backend, the in-process [`MemoryLedger`] and the
//! [`RedisLedger`] (on the throwaway server from `scripts/services.sh`).
//!
//! Tests isolate themselves with fresh organization and license ids. Waiting
//! for a lease to lapse is done by bounded polling of the ledger itself, never
//! by a sleep that correctness depends on.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use seatwarden::ledger::redis::RedisLedger;
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId};
use seatwarden_actors::ports::{
    BeatOutcome, Freed, LeaseGrant, LeaseRequest, LedgerError, SeatLedger, SeedLease, Throttle,
};

use support::seeded::{cluster_nodes, memory_nodes, redis_nodes};

type Ledger = Arc<dyn SeatLedger>;

const LONG: Duration = Duration::from_secs(60);
const POLL_FOR: Duration = Duration::from_secs(5);
/// Two beats at once, then one a minute: long enough that no test outruns it.
const THROTTLE: Throttle = Throttle {
    interval: Duration::from_secs(60),
    burst: 2,
};

// ---------------------------------------------------------------------------
// Backends

/// Generates, for each backend, one `#[tokio::test]` per check, named by
/// the sentence on the left: `memory::<sentence>`, `redis::<sentence>` and
/// `redis_cluster::<sentence>`.
/// `one:` checks get a single ledger, `nodes:` checks a `Vec` of two.
macro_rules! conformance {
    (
        one: { $($name:ident => $check:ident,)* }
        nodes: { $($mname:ident => $mcheck:ident,)* }
    ) => {
        conformance!(@backend memory, memory_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
        conformance!(@backend redis, redis_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
        conformance!(@backend redis_cluster, cluster_nodes, one: { $($name => $check,)* } nodes: { $($mname => $mcheck,)* });
    };
    (
        @backend $backend:ident, $nodes:ident,
        one: { $($name:ident => $check:ident,)* }
        nodes: { $($mname:ident => $mcheck:ident,)* }
    ) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let ledger = super::$nodes(1).await.remove(0);
                    super::$check(ledger).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $mname() {
                    super::$mcheck(super::$nodes(2).await).await;
                }
            )*
        }
    };
}

conformance! {
    one: {
        the_ledger_answers_pings => check_ping,
        seats_are_granted_until_the_license_is_full => check_grant_then_full,
        the_same_hardware_renews_its_lease_without_taking_another_seat => check_renewal,
        a_heartbeat_extends_a_live_lease => check_heartbeat_extends,
        a_lease_lapses_by_itself_and_frees_its_seat => check_lapse_frees_seat,
        a_heartbeat_after_the_lease_lapsed_returns_none_even_if_nobody_purged => check_heartbeat_after_lapse,
        releasing_a_lapsed_lease_returns_false_and_cleans_it_up => check_release_after_lapse,
        a_heartbeat_for_an_unknown_or_released_session_returns_none => check_heartbeat_unknown,
        release_is_idempotent => check_release_idempotent,
        release_frees_a_seat => check_release_frees_seat,
        a_release_answers_the_live_and_graced_leases_left => check_release_counts,
        releasing_an_unknown_session_returns_false => check_release_unknown,
        hardware_that_released_its_seat_gets_a_new_session_next_time => check_reacquire_after_release,
        lowering_max_seats_never_evicts_but_refuses_new_leases_until_below => check_lower_max_seats,
        live_leases_exclude_lapsed_ones => check_live_excludes_lapsed,
        licenses_and_organizations_do_not_interfere => check_isolation,
        a_license_with_zero_seats_grants_nothing => check_zero_seats,
        a_graced_lease_holds_its_seat_and_only_its_machine_reclaims_it => check_graced_lease,
        a_graced_lease_is_forgotten_when_its_grace_ends => check_grace_ends,
        an_overdraft_admits_new_leases_beside_graced_ones_but_never_more_live => check_overdraft,
        lease_states_tell_live_graced_and_forgotten_sessions_apart => check_lease_states,
        revoking_a_license_drops_every_lease => check_revoke,
        a_throttled_heartbeat_says_how_long_to_wait_and_changes_nothing => check_throttled_beat,
        the_heartbeat_throttle_counts_each_session_alone => check_throttle_per_session,
        a_gone_lease_is_reported_gone_even_when_its_throttle_is_spent => check_gone_before_throttled,
    }
    nodes: {
        concurrent_acquires_never_exceed_max_seats => check_concurrent_distinct_hardware,
        concurrent_acquires_from_one_hardware_id_share_one_lease => check_concurrent_same_hardware,
        the_heartbeat_throttle_holds_across_nodes => check_throttle_across_nodes,
    }
}

// ---------------------------------------------------------------------------
// Helpers

struct License {
    org: OrgId,
    license: LicenseId,
    max_seats: u32,
}

impl License {
    fn new(max_seats: u32) -> Self {
        Self {
            org: OrgId::new(),
            license: LicenseId::new(),
            max_seats,
        }
    }

    fn request(&self, hardware_id: &str, ttl: Duration) -> LeaseRequest {
        LeaseRequest {
            org: self.org,
            license: self.license,
            session: SessionId::new(),
            hardware_id: hardware_id.to_owned(),
            max_seats: self.max_seats,
            ttl,
            grace: Duration::ZERO,
            overdraft: 0,
            line: Default::default(),
        }
    }

    /// A request under an offline policy.
    fn request_graced(
        &self,
        hardware_id: &str,
        ttl: Duration,
        grace: Duration,
        overdraft: u32,
    ) -> LeaseRequest {
        LeaseRequest {
            grace,
            overdraft,
            ..self.request(hardware_id, ttl)
        }
    }

    async fn acquire_graced(
        &self,
        ledger: &Ledger,
        hardware_id: &str,
        ttl: Duration,
        grace: Duration,
        overdraft: u32,
    ) -> (SessionId, LeaseGrant) {
        let req = self.request_graced(hardware_id, ttl, grace, overdraft);
        let grant = ledger.acquire(&req).await.expect("acquire");
        (req.session, grant)
    }

    async fn acquire(&self, ledger: &Ledger, hardware_id: &str, ttl: Duration) -> LeaseGrant {
        ledger
            .acquire(&self.request(hardware_id, ttl))
            .await
            .expect("acquire")
    }

    /// Acquires a seat that must be granted; returns its session and expiry.
    async fn grant(
        &self,
        ledger: &Ledger,
        hardware_id: &str,
        ttl: Duration,
    ) -> (SessionId, DateTime<Utc>) {
        let req = self.request(hardware_id, ttl);
        match ledger.acquire(&req).await.expect("acquire") {
            LeaseGrant::Granted { expires_at, .. } => (req.session, expires_at),
            other => panic!("expected a grant for {hardware_id}, got {other:?}"),
        }
    }

    async fn heartbeat(
        &self,
        ledger: &Ledger,
        session: SessionId,
        ttl: Duration,
    ) -> Option<DateTime<Utc>> {
        match self.beat(ledger, session, ttl, None).await {
            BeatOutcome::Extended(expires_at) => Some(expires_at),
            BeatOutcome::Gone => None,
            other => panic!("an unthrottled heartbeat answered {other:?}"),
        }
    }

    async fn beat(
        &self,
        ledger: &Ledger,
        session: SessionId,
        ttl: Duration,
        throttle: Option<Throttle>,
    ) -> BeatOutcome {
        ledger
            .heartbeat(self.org, self.license, session, ttl, throttle)
            .await
            .expect("heartbeat")
    }

    async fn release(&self, ledger: &Ledger, session: SessionId) -> bool {
        ledger
            .release(self.org, self.license, session)
            .await
            .expect("release")
            .held
    }

    async fn release_freed(&self, ledger: &Ledger, session: SessionId) -> Freed {
        ledger
            .release(self.org, self.license, session)
            .await
            .expect("release")
    }

    async fn live(&self, ledger: &Ledger) -> Vec<(SessionId, DateTime<Utc>)> {
        let mut live = ledger
            .live_leases(self.org, self.license)
            .await
            .expect("live_leases");
        live.sort();
        live
    }
}

/// Polls `probe` (every 50 ms, through the suite-wide helper) for up to
/// 5 s until it yields a value.
async fn poll<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    support::eventually(POLL_FOR, probe)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Returns once, by the ledger's own clock, every lease granted with a TTL of
/// at most `ttl` before this call has lapsed, without touching any license
/// but a fresh probe one (so nothing else gets purged).
///
/// It takes a seat on a fresh one-seat probe license with `ttl` and polls
/// until another machine can take that seat: the probe was granted after the
/// leases in question, with no shorter TTL, so they lapsed no later.
async fn wait_until_lapsed(ledger: &Ledger, ttl: Duration) {
    let probe = License::new(1);
    let (_, probe_expiry) = probe.grant(ledger, "probe-holder", ttl).await;
    let next_expiry = poll("the probe lease to lapse", || async {
        match probe.acquire(ledger, "probe-waiter", ttl).await {
            LeaseGrant::Granted { expires_at, .. } => Some(expires_at),
            _ => None,
        }
    })
    .await;
    assert!(next_expiry - chrono::Duration::from_std(ttl).unwrap() >= probe_expiry);
}

// ---------------------------------------------------------------------------
// Checks

async fn check_ping(ledger: Ledger) {
    ledger.ping().await.expect("ping");
}

async fn check_grant_then_full(ledger: Ledger) {
    let lic = License::new(3);
    for (n, hw) in ["a", "b", "c"].into_iter().enumerate() {
        match lic.acquire(&ledger, hw, LONG).await {
            LeaseGrant::Granted { seats_used, .. } => assert_eq!(seats_used as usize, n + 1),
            other => panic!("expected a grant, got {other:?}"),
        }
    }
    assert_eq!(
        lic.acquire(&ledger, "d", LONG).await,
        LeaseGrant::Full {
            seats_used: 3,
            graced: 0,
            queued: 0
        }
    );
    assert_eq!(lic.live(&ledger).await.len(), 3);
}

async fn check_renewal(ledger: Ledger) {
    let lic = License::new(2);
    let (first, first_expiry) = lic.grant(&ledger, "a", Duration::from_secs(30)).await;

    match lic.acquire(&ledger, "a", Duration::from_secs(120)).await {
        LeaseGrant::Renewed {
            session,
            expires_at,
            seats_used,
            ..
        } => {
            assert_eq!(session, first, "a renewal keeps the original session id");
            assert!(expires_at > first_expiry, "a renewal extends the lease");
            assert_eq!(seats_used, 1, "a renewal does not take another seat");
        }
        other => panic!("expected a renewal, got {other:?}"),
    }
    let live = lic.live(&ledger).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, first);
    assert!(live[0].1 > first_expiry);

    // The renewal left the second seat free, and only that one.
    lic.grant(&ledger, "b", LONG).await;
    assert_eq!(
        lic.acquire(&ledger, "c", LONG).await,
        LeaseGrant::Full {
            seats_used: 2,
            graced: 0,
            queued: 0
        }
    );
    // A full license still renews the seats it holds.
    assert!(matches!(
        lic.acquire(&ledger, "a", LONG).await,
        LeaseGrant::Renewed { session, seats_used: 2, .. } if session == first
    ));
}

async fn check_heartbeat_extends(ledger: Ledger) {
    let lic = License::new(1);
    let (session, expiry) = lic.grant(&ledger, "a", Duration::from_secs(10)).await;
    let extended = lic
        .heartbeat(&ledger, session, LONG)
        .await
        .expect("a live lease accepts heartbeats");
    assert!(extended >= expiry + chrono::Duration::seconds(49));
    assert_eq!(lic.live(&ledger).await, vec![(session, extended)]);

    // A heartbeat never shortens a lease (a borrowed seat keeps its end):
    // it answers the later of the two.
    let kept = lic
        .heartbeat(&ledger, session, Duration::from_secs(5))
        .await
        .expect("still live");
    assert_eq!(kept, extended);
    assert_eq!(lic.live(&ledger).await, vec![(session, extended)]);
}

async fn check_lapse_frees_seat(ledger: Ledger) {
    let lic = License::new(1);
    let ttl = Duration::from_secs(1);
    let (_, first_expiry) = lic.grant(&ledger, "a", ttl).await;
    assert_eq!(
        lic.acquire(&ledger, "b", LONG).await,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 0,
            queued: 0
        }
    );

    let (session, expiry) = poll("the lapsed seat to be granted again", || async {
        let req = lic.request("b", LONG);
        match ledger.acquire(&req).await.expect("acquire") {
            LeaseGrant::Granted {
                expires_at,
                seats_used,
                ..
            } => {
                assert_eq!(seats_used, 1, "the lapsed lease no longer counts");
                Some((req.session, expires_at))
            }
            LeaseGrant::Full { .. } => None,
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
    // By the ledger's clock, the new grant came no earlier than the lapse.
    assert!(expiry - chrono::Duration::from_std(LONG).unwrap() >= first_expiry);
    assert_eq!(lic.live(&ledger).await, vec![(session, expiry)]);
}

async fn check_heartbeat_after_lapse(ledger: Ledger) {
    let lic = License::new(1);
    let ttl = Duration::from_millis(200);
    let (session, _) = lic.grant(&ledger, "a", ttl).await;
    wait_until_lapsed(&ledger, ttl).await;

    // Nothing has touched this license since the grant, so nothing purged it.
    assert_eq!(lic.heartbeat(&ledger, session, LONG).await, None);
    assert_eq!(
        lic.heartbeat(&ledger, session, LONG).await,
        None,
        "a lapsed lease never revives"
    );
    assert!(lic.live(&ledger).await.is_empty());
    // The same hardware gets a new session, not the dead one back.
    let (again, _) = lic.grant(&ledger, "a", LONG).await;
    assert_ne!(again, session);
}

async fn check_release_after_lapse(ledger: Ledger) {
    let lic = License::new(1);
    let ttl = Duration::from_millis(200);
    let (session, _) = lic.grant(&ledger, "a", ttl).await;
    wait_until_lapsed(&ledger, ttl).await;

    assert!(
        !lic.release(&ledger, session).await,
        "a lapsed lease is not live, purged or not"
    );
    assert!(!lic.release(&ledger, session).await);
    assert!(lic.live(&ledger).await.is_empty());
    lic.grant(&ledger, "b", LONG).await;
}

async fn check_heartbeat_unknown(ledger: Ledger) {
    let lic = License::new(1);
    assert_eq!(lic.heartbeat(&ledger, SessionId::new(), LONG).await, None);

    let (session, _) = lic.grant(&ledger, "a", LONG).await;
    assert_eq!(lic.heartbeat(&ledger, SessionId::new(), LONG).await, None);
    assert!(lic.release(&ledger, session).await);
    assert_eq!(lic.heartbeat(&ledger, session, LONG).await, None);
    assert!(lic.live(&ledger).await.is_empty());
}

async fn check_release_idempotent(ledger: Ledger) {
    let lic = License::new(1);
    let (session, _) = lic.grant(&ledger, "a", LONG).await;
    assert!(lic.release(&ledger, session).await);
    assert!(!lic.release(&ledger, session).await);
    assert!(!lic.release(&ledger, session).await);
    assert!(lic.live(&ledger).await.is_empty());
}

async fn check_release_frees_seat(ledger: Ledger) {
    let lic = License::new(1);
    let (session, _) = lic.grant(&ledger, "a", LONG).await;
    assert_eq!(
        lic.acquire(&ledger, "b", LONG).await,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 0,
            queued: 0
        }
    );
    assert!(lic.release(&ledger, session).await);
    let (b, _) = lic.grant(&ledger, "b", LONG).await;
    assert_eq!(
        lic.live(&ledger)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        vec![b]
    );
}

async fn check_release_counts(ledger: Ledger) {
    let lic = License::new(3);
    let (a, _) = lic.acquire_graced(&ledger, "a", SHORT, GRACE, 0).await;
    let (b, _) = lic.acquire_graced(&ledger, "b", LONG, GRACE, 0).await;
    let (_c, _) = lic.acquire_graced(&ledger, "c", LONG, GRACE, 0).await;
    wait_until_lapsed(&ledger, SHORT).await;
    // a lapsed within its grace; b goes; c stays live.
    let freed = |held, live, graced| Freed { held, live, graced };
    assert_eq!(lic.release_freed(&ledger, b).await, freed(true, 1, 1));
    assert_eq!(lic.release_freed(&ledger, b).await, freed(false, 1, 1));
    assert_eq!(lic.release_freed(&ledger, a).await, freed(true, 1, 0));
    assert_eq!(
        License::new(1).release_freed(&ledger, b).await,
        freed(false, 0, 0),
        "a license the ledger never saw"
    );
}

async fn check_release_unknown(ledger: Ledger) {
    let lic = License::new(2);
    assert!(
        !lic.release(&ledger, SessionId::new()).await,
        "unknown license"
    );
    lic.grant(&ledger, "a", LONG).await;
    assert!(
        !lic.release(&ledger, SessionId::new()).await,
        "unknown session"
    );
    assert_eq!(lic.live(&ledger).await.len(), 1);
}

async fn check_reacquire_after_release(ledger: Ledger) {
    let lic = License::new(1);
    let (first, _) = lic.grant(&ledger, "a", LONG).await;
    assert!(lic.release(&ledger, first).await);
    let (second, _) = lic.grant(&ledger, "a", LONG).await;
    assert_ne!(second, first);
    // Releasing the old session again must not disturb the new one.
    assert!(!lic.release(&ledger, first).await);
    assert!(matches!(
        lic.acquire(&ledger, "a", LONG).await,
        LeaseGrant::Renewed { session, .. } if session == second
    ));
}

async fn check_lower_max_seats(ledger: Ledger) {
    let mut lic = License::new(3);
    let mut sessions = Vec::new();
    for hw in ["a", "b", "c"] {
        sessions.push(lic.grant(&ledger, hw, LONG).await.0);
    }

    lic.max_seats = 1;
    assert_eq!(
        lic.acquire(&ledger, "d", LONG).await,
        LeaseGrant::Full {
            seats_used: 3,
            graced: 0,
            queued: 0
        }
    );
    assert_eq!(lic.live(&ledger).await.len(), 3, "nobody was evicted");
    // Holders over the new limit keep renewing.
    assert!(matches!(
        lic.acquire(&ledger, "b", LONG).await,
        LeaseGrant::Renewed { session, seats_used: 3, .. } if session == sessions[1]
    ));
    for session in &sessions {
        assert!(lic.heartbeat(&ledger, *session, LONG).await.is_some());
    }

    assert!(lic.release(&ledger, sessions[0]).await);
    assert_eq!(
        lic.acquire(&ledger, "d", LONG).await,
        LeaseGrant::Full {
            seats_used: 2,
            graced: 0,
            queued: 0
        }
    );
    assert!(lic.release(&ledger, sessions[1]).await);
    assert_eq!(
        lic.acquire(&ledger, "d", LONG).await,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 0,
            queued: 0
        }
    );
    assert!(lic.release(&ledger, sessions[2]).await);
    assert!(matches!(
        lic.acquire(&ledger, "d", LONG).await,
        LeaseGrant::Granted { seats_used: 1, .. }
    ));
}

async fn check_live_excludes_lapsed(ledger: Ledger) {
    let lic = License::new(3);
    let short = Duration::from_millis(200);
    let (long_a, _) = lic.grant(&ledger, "a", LONG).await;
    lic.grant(&ledger, "b", short).await;
    let (long_c, _) = lic.grant(&ledger, "c", LONG).await;
    wait_until_lapsed(&ledger, short).await;

    let mut expected = vec![long_a, long_c];
    expected.sort();
    let live: Vec<SessionId> = lic
        .live(&ledger)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(live, expected);
    let now = Utc::now();
    assert!(lic.live(&ledger).await.iter().all(|(_, exp)| *exp > now));
}

async fn check_isolation(ledger: Ledger) {
    let full = License::new(1);
    let (session, _) = full.grant(&ledger, "a", LONG).await;
    assert_eq!(
        full.acquire(&ledger, "b", LONG).await,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 0,
            queued: 0
        }
    );

    // Another license of the same organization.
    let sibling = License {
        org: full.org,
        license: LicenseId::new(),
        max_seats: 1,
    };
    // The same license id under another organization.
    let other_org = License {
        org: OrgId::new(),
        license: full.license,
        max_seats: 1,
    };
    for lic in [&sibling, &other_org] {
        // The same hardware id is a new lease there, not a renewal.
        let (s, _) = lic.grant(&ledger, "a", LONG).await;
        assert_ne!(s, session);
        assert!(!lic.release(&ledger, session).await);
        assert_eq!(lic.heartbeat(&ledger, session, LONG).await, None);
        assert_eq!(lic.live(&ledger).await.len(), 1);
    }
    assert_eq!(
        full.live(&ledger)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        vec![session]
    );
    assert!(full.release(&ledger, session).await);
    assert_eq!(sibling.live(&ledger).await.len(), 1);
    assert_eq!(other_org.live(&ledger).await.len(), 1);
}

async fn check_zero_seats(ledger: Ledger) {
    let lic = License::new(0);
    assert_eq!(
        lic.acquire(&ledger, "a", LONG).await,
        LeaseGrant::Full {
            seats_used: 0,
            graced: 0,
            queued: 0
        }
    );
    assert!(lic.live(&ledger).await.is_empty());
}

async fn check_concurrent_distinct_hardware(nodes: Vec<Ledger>) {
    let lic = Arc::new(License::new(10));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ledger = nodes[i % nodes.len()].clone();
            let lic = lic.clone();
            tokio::spawn(async move {
                let req = lic.request(&format!("machine-{i}"), LONG);
                (req.session, ledger.acquire(&req).await.expect("acquire"))
            })
        })
        .collect();

    let mut granted = Vec::new();
    let mut full = 0;
    for task in tasks {
        match task.await.expect("task") {
            (session, LeaseGrant::Granted { seats_used, .. }) => {
                assert!((1..=10).contains(&seats_used));
                granted.push(session);
            }
            (_, LeaseGrant::Full { seats_used, .. }) => {
                assert_eq!(seats_used, 10);
                full += 1;
            }
            (_, other) => panic!("distinct hardware ids never renew: {other:?}"),
        }
    }
    assert_eq!(granted.len(), 10);
    assert_eq!(full, 190);

    granted.sort();
    for node in &nodes {
        let live: Vec<SessionId> = lic.live(node).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(live, granted, "every node sees the same 10 leases");
    }
}

async fn check_concurrent_same_hardware(nodes: Vec<Ledger>) {
    let lic = Arc::new(License::new(5));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = nodes[i % nodes.len()].clone();
            let lic = lic.clone();
            tokio::spawn(async move {
                let req = lic.request("the-one-machine", LONG);
                (req.session, ledger.acquire(&req).await.expect("acquire"))
            })
        })
        .collect();

    let mut granted = Vec::new();
    let mut renewed_to = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (session, LeaseGrant::Granted { .. }) => granted.push(session),
            (
                _,
                LeaseGrant::Renewed {
                    session,
                    seats_used,
                    ..
                },
            ) => {
                assert_eq!(seats_used, 1);
                renewed_to.push(session);
            }
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted.len(), 1, "one hardware id holds one lease");
    assert_eq!(renewed_to.len(), 49);
    assert!(renewed_to.iter().all(|s| *s == granted[0]));
    assert_eq!(
        lic.live(&nodes[0])
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        granted
    );
}

// ---------------------------------------------------------------------------
// Redis only

mod redis_only {
    use super::*;

    async fn admin() -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(support::services::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Empties Redis's script cache, as a restart or a failover does.
    async fn flush_scripts(admin: &mut ::redis::aio::MultiplexedConnection) {
        ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(admin)
            .await
            .unwrap();
    }

    /// A port on which nothing listens.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_redis_that_may_lose_or_evict_leases_is_reported_and_a_durable_one_is_not() {
        let redis = support::services::OwnRedis::start();
        let ledger = RedisLedger::connect(&redis.url()).await.unwrap();
        // OwnRedis runs with `--appendonly no` and Redis's default eviction
        // policy (noeviction), so only the persistence is reported.
        let warnings = ledger.durability_warnings().await;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("appendonly"), "{warnings:?}");

        let mut con = ::redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let set = |name: &'static str, value: &'static str| {
            let mut cmd = ::redis::cmd("CONFIG");
            cmd.arg("SET").arg(name).arg(value);
            cmd
        };
        let () = set("maxmemory-policy", "allkeys-lru")
            .query_async(&mut con)
            .await
            .unwrap();
        let warnings = ledger.durability_warnings().await;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[1].contains("maxmemory-policy"), "{warnings:?}");

        for (name, value) in [
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "noeviction"),
        ] {
            let () = set(name, value).query_async(&mut con).await.unwrap();
        }
        assert_eq!(ledger.durability_warnings().await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn calls_keep_working_after_the_script_cache_is_flushed() {
        let ledger: Ledger = support::seeded::Seeded::wrap(Arc::new(
            RedisLedger::connect(&support::services::redis_url())
                .await
                .unwrap(),
        ));
        let lic = License::new(2);
        let (a, _) = lic.grant(&ledger, "a", LONG).await;

        let mut admin = admin().await;
        flush_scripts(&mut admin).await;

        assert!(matches!(
            lic.acquire(&ledger, "a", LONG).await,
            LeaseGrant::Renewed { session, .. } if session == a
        ));
        flush_scripts(&mut admin).await;
        assert!(lic.heartbeat(&ledger, a, LONG).await.is_some());
        flush_scripts(&mut admin).await;
        assert_eq!(lic.live(&ledger).await.len(), 1);
        flush_scripts(&mut admin).await;
        assert!(lic.release(&ledger, a).await);
    }

    /// Heartbeats issued at once share the multiplexed connection; each
    /// must still get its own session's answer, and a flushed script cache
    /// must cost none of them.
    #[tokio::test]
    async fn heartbeats_sent_together_each_get_their_own_answer() {
        let ledger: Ledger = support::seeded::Seeded::wrap(Arc::new(
            RedisLedger::connect(&support::services::redis_url())
                .await
                .unwrap(),
        ));
        let licenses = [License::new(10), License::new(10), License::new(10)];
        let mut sessions = Vec::new();
        for (l, lic) in licenses.iter().enumerate() {
            for h in 0..10 {
                let (session, _) = lic.grant(&ledger, &format!("m{h}"), LONG).await;
                // Every third session is gone before the beats.
                let gone = (l + h) % 3 == 0;
                if gone {
                    assert!(lic.release(&ledger, session).await);
                }
                sessions.push((lic, session, gone));
            }
        }
        let mut admin = admin().await;
        for round in 0..2 {
            if round == 1 {
                flush_scripts(&mut admin).await;
            }
            let beats = futures::future::join_all(
                sessions
                    .iter()
                    .map(|(lic, session, _)| lic.heartbeat(&ledger, *session, LONG)),
            )
            .await;
            for ((_, session, gone), beat) in sessions.iter().zip(beats) {
                assert_eq!(beat.is_none(), *gone, "round {round}, {session}: {beat:?}");
            }
        }
    }

    /// Runs `call`, failing the test if it is still running after 3 s: six
    /// times the ledger timeouts used below, so this bounds a hang, not a
    /// speed.
    async fn within_liveness_bound<T>(call: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .expect("the ledger call hung instead of failing within its timeout")
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_reported_as_unavailable() {
        let url = format!("redis://:hunter2@127.0.0.1:{}", closed_port());
        let connecting = RedisLedger::connect_with_timeout(&url, Duration::from_millis(500));
        match within_liveness_bound(connecting).await {
            Err(LedgerError::Unavailable(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
            }
            Ok(_) => panic!("connected to a closed port"),
            Err(other) => panic!("expected unavailable, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_is_reported_as_unavailable_in_time() {
        // Accepts connections and reads, but never writes a byte back.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = format!("redis://user:hunter2@127.0.0.1:{port}");
        let timeout = Duration::from_millis(300);
        let result = within_liveness_bound(async {
            match RedisLedger::connect_with_timeout(&url, timeout).await {
                Err(e) => Err(e),
                Ok(ledger) => ledger.ping().await,
            }
        })
        .await;
        match result {
            Err(LedgerError::Unavailable(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
            }
            Ok(()) => panic!("a silent server answered"),
            Err(other) => panic!("expected unavailable, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_ledger_whose_redis_goes_away_fails_fast_and_recovers() {
        // A ledger connected through a proxy we can cut.
        let upstream = support::services::redis_url();
        let proxy =
            support::proxy::CuttableProxy::start(support::proxy::host_port(&upstream)).await;
        let port = proxy.port;
        let ledger: Ledger = support::seeded::Seeded::wrap(Arc::new(
            RedisLedger::connect_with_timeout(
                &format!("redis://127.0.0.1:{port}"),
                Duration::from_millis(500),
            )
            .await
            .unwrap(),
        ));
        let lic = License::new(1);
        let (a, _) = lic.grant(&ledger, "a", LONG).await;

        proxy.cut();
        let err =
            within_liveness_bound(ledger.heartbeat(lic.org, lic.license, a, LONG, None)).await;
        assert!(matches!(err, Err(LedgerError::Unavailable(_))), "{err:?}");

        // The connection manager reconnects by itself once Redis is back.
        proxy.restore();
        let beat = poll("the ledger to reconnect", || async {
            ledger
                .heartbeat(lic.org, lic.license, a, LONG, None)
                .await
                .ok()
        })
        .await;
        assert!(
            matches!(beat, BeatOutcome::Extended(_)),
            "the lease survived the outage: {beat:?}"
        );
    }

    #[tokio::test]
    async fn keys_carry_the_organization_hash_tag_and_expire_after_the_last_lease() {
        let ledger: Ledger = support::seeded::Seeded::wrap(Arc::new(
            RedisLedger::connect(&support::services::redis_url())
                .await
                .unwrap(),
        ));
        let lic = License::new(2);
        let (a, _) = lic.grant(&ledger, "a", Duration::from_secs(30)).await;

        let mut admin = admin().await;
        let mut keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("*{}*", lic.org))
            .query_async(&mut admin)
            .await
            .unwrap();
        keys.sort();
        // The throttle's hash appears with the first throttled heartbeat,
        // the line's keys with the first machine that waits.
        let all = RedisLedger::license_keys(lic.org, lic.license).to_vec();
        let later = [":beats", ":line", ":patience", ":holds", ":tickets"];
        let mut expected: Vec<String> = all
            .iter()
            .filter(|k| !later.iter().any(|suffix| k.ends_with(suffix)))
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(keys, expected);
        for key in &keys {
            assert!(key.starts_with(&format!("sw:{{{}}}:", lic.org)), "{key}");
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
            assert!((30_000..=40_000).contains(&ttl), "{key}: {ttl}");
        }

        // A heartbeat moves the furthest lease and the key expiry with it,
        // the throttle's hash included.
        let beat = lic
            .beat(&ledger, a, Duration::from_secs(120), Some(THROTTLE))
            .await;
        assert!(matches!(beat, BeatOutcome::Extended(_)), "{beat:?}");
        let mut keys: Vec<String> = all
            .into_iter()
            .filter(|k| !later[1..].iter().any(|suffix| k.ends_with(suffix)))
            .collect();
        keys.sort();
        for key in &keys {
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
            assert!((120_000..=130_000).contains(&ttl), "{key}: {ttl}");
        }

        // Releasing the last lease leaves only the seed marker, which
        // expires with the keys it vouched for.
        assert!(lic.release(&ledger, a).await);
        let left: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("*{}*", lic.org))
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].ends_with(":seeded"), "{left:?}");
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&left[0])
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!((0..=130_000).contains(&ttl), "the marker expires: {ttl}");
    }

    /// A ledger that holds leases but no seed marker (one upgraded from
    /// before the marker existed) is seeded without losing the expiry it
    /// holds, which is the truth when the store's trails it.
    #[tokio::test]
    async fn seeding_keeps_the_leases_the_ledger_still_holds() {
        let raw: Ledger = Arc::new(
            RedisLedger::connect(&support::services::redis_url())
                .await
                .unwrap(),
        );
        let lic = License::new(1);
        raw.seed(lic.org, lic.license, Duration::ZERO, &[])
            .await
            .unwrap();
        let (a, expires) = lic.grant(&raw, "a", LONG).await;
        let mut admin = admin().await;
        let marker = RedisLedger::license_keys(lic.org, lic.license)
            .into_iter()
            .find(|k| k.ends_with(":seeded"))
            .unwrap();
        let _: i64 = ::redis::cmd("DEL")
            .arg(&marker)
            .query_async(&mut admin)
            .await
            .unwrap();

        let stale = [SeedLease {
            session: a,
            hardware_id: "a".into(),
            expires_at: expires - chrono::Duration::seconds(30),
        }];
        assert_eq!(
            raw.seed(lic.org, lic.license, Duration::ZERO, &stale)
                .await
                .unwrap(),
            Some(0)
        );
        assert_eq!(lic.live(&raw).await, vec![(a, expires)]);
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&marker)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(
            ttl > 50_000,
            "the marker lives as long as the leases: {ttl}"
        );
    }

    /// Redis lost its data (FLUSHALL, as a restart without persistence
    /// would): the ledger refuses to act on the license until it is seeded,
    /// so it never grants a seat a live session holds; seeded from the
    /// store's open sessions, the live ones keep heartbeating.
    #[tokio::test]
    async fn a_ledger_that_lost_its_data_grants_nothing_until_seeded_from_the_store() {
        let raw: Ledger = Arc::new(
            RedisLedger::connect(&support::services::redis_url())
                .await
                .unwrap(),
        );
        let lic = License::new(1);
        // A fresh license is unseeded too; seeding it with nothing lets it work.
        assert_eq!(lic.acquire(&raw, "a", LONG).await, LeaseGrant::Unseeded);
        assert_eq!(
            raw.seed(lic.org, lic.license, Duration::ZERO, &[])
                .await
                .unwrap(),
            Some(0)
        );
        let (a, expires) = lic.grant(&raw, "a", LONG).await;

        // The data is lost (only this license's keys: other tests share
        // the server).
        let mut admin = admin().await;
        for key in RedisLedger::license_keys(lic.org, lic.license) {
            let _: i64 = ::redis::cmd("DEL")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
        assert_eq!(lic.acquire(&raw, "b", LONG).await, LeaseGrant::Unseeded);
        assert_eq!(
            raw.heartbeat(lic.org, lic.license, a, LONG, None)
                .await
                .unwrap(),
            BeatOutcome::Unseeded
        );

        // Seeded with the open session: the seat is a's again, b is refused.
        let open = [SeedLease {
            session: a,
            hardware_id: "a".into(),
            expires_at: expires,
        }];
        assert_eq!(
            raw.seed(lic.org, lic.license, Duration::ZERO, &open)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            raw.seed(lic.org, lic.license, Duration::ZERO, &open)
                .await
                .unwrap(),
            None,
            "a second seed (another node's) writes nothing"
        );
        assert!(matches!(
            raw.heartbeat(lic.org, lic.license, a, LONG, None)
                .await
                .unwrap(),
            BeatOutcome::Extended(_)
        ));
        assert!(matches!(
            lic.acquire(&raw, "b", LONG).await,
            LeaseGrant::Full { seats_used: 1, .. }
        ));
    }
}

// ---------------------------------------------------------------------------
// Offline policy: graced leases, overdraft, states and revocation

const SHORT: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_secs(60);

async fn check_graced_lease(ledger: Ledger) {
    let lic = License::new(1);
    let (a, grant) = lic.acquire_graced(&ledger, "a", SHORT, GRACE, 0).await;
    assert!(matches!(grant, LeaseGrant::Granted { .. }), "{grant:?}");
    wait_until_lapsed(&ledger, SHORT).await;

    // Lapsed: no heartbeat revives it, and it still holds the seat.
    assert_eq!(lic.heartbeat(&ledger, a, LONG).await, None);
    let (_, refused) = lic.acquire_graced(&ledger, "b", LONG, GRACE, 0).await;
    assert_eq!(
        refused,
        LeaseGrant::Full {
            seats_used: 0,
            graced: 1,
            queued: 0
        }
    );
    assert!(lic.live(&ledger).await.is_empty());

    // Its own machine reclaims it, live again, under the same session.
    let (_, again) = lic.acquire_graced(&ledger, "a", LONG, GRACE, 0).await;
    match again {
        LeaseGrant::Renewed {
            session,
            seats_used,
            graced,
            ..
        } => {
            assert_eq!((session, seats_used, graced), (a, 1, 0));
        }
        other => panic!("expected the graced lease back, got {other:?}"),
    }
    assert_eq!(lic.live(&ledger).await.len(), 1);

    // Released, it frees the seat at once.
    assert!(lic.release(&ledger, a).await);
    let (_, b) = lic.acquire_graced(&ledger, "b", LONG, GRACE, 0).await;
    assert!(matches!(b, LeaseGrant::Granted { .. }), "{b:?}");
}

async fn check_grace_ends(ledger: Ledger) {
    let lic = License::new(1);
    let grace = Duration::from_millis(300);
    let (a, _) = lic.acquire_graced(&ledger, "a", SHORT, grace, 0).await;
    wait_until_lapsed(&ledger, SHORT + grace).await;
    let (b, grant) = lic.acquire_graced(&ledger, "b", LONG, grace, 0).await;
    assert!(
        matches!(
            grant,
            LeaseGrant::Granted {
                seats_used: 1,
                graced: 0,
                ..
            }
        ),
        "{grant:?}"
    );
    let states = ledger
        .lease_states(lic.org, lic.license, &[a, b])
        .await
        .unwrap();
    assert_eq!(states.expiries[0], None, "a was forgotten");
    assert!(states.expiries[1].is_some());
    assert!(
        !lic.release(&ledger, a).await,
        "a forgotten lease is not held"
    );
}

async fn check_overdraft(ledger: Ledger) {
    let lic = License::new(1);
    let (a, _) = lic.acquire_graced(&ledger, "a", SHORT, GRACE, 1).await;
    wait_until_lapsed(&ledger, SHORT).await;
    // One graced, no live: the overdraft lets b in.
    let (_, b) = lic.acquire_graced(&ledger, "b", LONG, GRACE, 1).await;
    assert!(
        matches!(
            b,
            LeaseGrant::Granted {
                seats_used: 1,
                graced: 1,
                ..
            }
        ),
        "{b:?}"
    );
    // Live seats are full; the overdraft never adds live ones.
    let (_, c) = lic.acquire_graced(&ledger, "c", LONG, GRACE, 1).await;
    assert_eq!(
        c,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 1,
            queued: 0
        }
    );
    // Nor may a graced machine come back while they are full.
    let (_, back) = lic.acquire_graced(&ledger, "a", LONG, GRACE, 1).await;
    assert_eq!(
        back,
        LeaseGrant::Full {
            seats_used: 1,
            graced: 1,
            queued: 0
        }
    );
    assert!(lic.release(&ledger, a).await, "a graced lease is held");
}

async fn check_lease_states(ledger: Ledger) {
    let lic = License::new(3);
    let (lapsing, _) = lic
        .acquire_graced(&ledger, "lapsing", SHORT, GRACE, 0)
        .await;
    wait_until_lapsed(&ledger, SHORT).await;
    let (live, _) = lic.acquire_graced(&ledger, "live", LONG, GRACE, 0).await;
    let unknown = SessionId::new();
    let states = ledger
        .lease_states(lic.org, lic.license, &[live, lapsing, unknown])
        .await
        .unwrap();
    assert_eq!(states.grace, GRACE);
    assert_eq!((states.live, states.graced), (1, 1));
    let [l, g, u] = states.expiries.as_slice() else {
        panic!("{states:?}")
    };
    assert!(l.is_some_and(|e| e > states.now), "{states:?}");
    assert!(g.is_some_and(|e| e <= states.now), "{states:?}");
    assert_eq!(*u, None);
    // An unknown license holds nothing.
    let other = License::new(1);
    let states = ledger
        .lease_states(other.org, other.license, &[live])
        .await
        .unwrap();
    assert_eq!(states.expiries, vec![None]);
}

async fn check_revoke(ledger: Ledger) {
    let lic = License::new(3);
    let (a, _) = lic.grant(&ledger, "a", LONG).await;
    lic.grant(&ledger, "b", LONG).await;
    assert_eq!(
        ledger.revoke_license(lic.org, lic.license).await.unwrap(),
        2
    );
    assert_eq!(lic.heartbeat(&ledger, a, LONG).await, None);
    assert!(lic.live(&ledger).await.is_empty());
    assert_eq!(
        ledger.revoke_license(lic.org, lic.license).await.unwrap(),
        0
    );
    // The license grants again afterwards (a reactivation).
    lic.grant(&ledger, "a", LONG).await;
}

// ---------------------------------------------------------------------------
// The heartbeat throttle

/// Spends a fresh session's burst of [`THROTTLE`]; returns the last expiry.
async fn spend_burst(lic: &License, ledger: &Ledger, session: SessionId) -> DateTime<Utc> {
    let mut last = None;
    for _ in 0..THROTTLE.burst {
        match lic.beat(ledger, session, LONG, Some(THROTTLE)).await {
            BeatOutcome::Extended(e) => last = Some(e),
            other => panic!("a beat within the burst answered {other:?}"),
        }
    }
    last.expect("a burst of at least one")
}

async fn check_throttled_beat(ledger: Ledger) {
    let lic = License::new(1);
    let (a, _) = lic.grant(&ledger, "a", LONG).await;
    let extended = spend_burst(&lic, &ledger, a).await;

    match lic.beat(&ledger, a, LONG * 10, Some(THROTTLE)).await {
        BeatOutcome::Throttled { retry_after } => {
            // The next beat is due one interval after the burst; a little
            // of it has passed since.
            assert!(retry_after <= THROTTLE.interval, "{retry_after:?}");
            assert!(
                retry_after > THROTTLE.interval - Duration::from_secs(10),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a throttled beat, got {other:?}"),
    }
    // The refused beat did not extend the lease to 10 minutes.
    let live = ledger.live_leases(lic.org, lic.license).await.unwrap();
    assert_eq!(live, vec![(a, extended)]);
    // Nor did it spend anything: refused again, not pushed further out.
    match lic.beat(&ledger, a, LONG, Some(THROTTLE)).await {
        BeatOutcome::Throttled { retry_after } => {
            assert!(retry_after <= THROTTLE.interval, "{retry_after:?}")
        }
        other => panic!("expected a throttled beat, got {other:?}"),
    }
    // Unthrottled callers are not held back by it.
    assert!(lic.heartbeat(&ledger, a, LONG).await.is_some());
}

async fn check_throttle_per_session(ledger: Ledger) {
    let lic = License::new(2);
    let (a, _) = lic.grant(&ledger, "a", LONG).await;
    let (b, _) = lic.grant(&ledger, "b", LONG).await;
    spend_burst(&lic, &ledger, a).await;
    assert!(matches!(
        lic.beat(&ledger, a, LONG, Some(THROTTLE)).await,
        BeatOutcome::Throttled { .. }
    ));
    // b has its own budget, whole.
    spend_burst(&lic, &ledger, b).await;
}

async fn check_gone_before_throttled(ledger: Ledger) {
    let lic = License::new(1);
    let (a, _) = lic.grant(&ledger, "a", LONG).await;
    spend_burst(&lic, &ledger, a).await;
    assert!(lic.release(&ledger, a).await);
    assert_eq!(
        lic.beat(&ledger, a, LONG, Some(THROTTLE)).await,
        BeatOutcome::Gone
    );
    // The machine's next session starts with a whole budget.
    let (again, _) = lic.grant(&ledger, "a", LONG).await;
    spend_burst(&lic, &ledger, again).await;
}

async fn check_throttle_across_nodes(nodes: Vec<Ledger>) {
    let lic = License::new(1);
    let (a, _) = lic.grant(&nodes[0], "a", LONG).await;
    // One beat on each node spends the burst of two...
    for node in &nodes {
        assert!(matches!(
            lic.beat(node, a, LONG, Some(THROTTLE)).await,
            BeatOutcome::Extended(_)
        ));
    }
    // ...so both refuse the third.
    for node in &nodes {
        assert!(matches!(
            lic.beat(node, a, LONG, Some(THROTTLE)).await,
            BeatOutcome::Throttled { .. }
        ));
    }
}
