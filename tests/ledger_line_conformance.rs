//! The conformance suite of [`SeatLedger`]'s line for seats (the seat queue)
//! and of its rule that a lease is never shortened: every check is written
//! once and run against each backend, the in-process [`MemoryLedger`] and
//! the [`RedisLedger`] (on the throwaway server from `scripts/services.sh`).
//!
//! Tests isolate themselves with fresh organization and license ids. Waiting
//! for a hold or a patience to run out is done by bounded polling of the
//! ledger itself, never by a sleep that correctness depends on; the only
//! timed waits are the polling loops' own pauses, and the loop that checks
//! that a polled ticket keeps its place for longer than its patience.
//!
//! Self-contained on purpose: it needs only the test Redis's URL and a
//! polling helper, the two pieces of `tests/support` it mirrors below.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{LicenseId, OrgId, SessionId, TicketId};
use seatwarden_actors::ports::{
    BeatOutcome, LeaseGrant, LeaseRequest, LineRequest, LineRules, Place, SeatLedger, TicketPoll,
};

mod support;

use support::seeded::{cluster_nodes, memory_nodes, redis_nodes};

type Ledger = Arc<dyn SeatLedger>;

const LONG: Duration = Duration::from_secs(60);
const POLL_FOR: Duration = Duration::from_secs(5);
/// A hold or a patience short enough to run out within a test.
const SHORT: Duration = Duration::from_millis(300);
/// A borrowed seat: an acquire with a TTL of hours.
const BORROW: Duration = Duration::from_secs(4 * 3600);
/// Rules under which nothing runs out during a test.
const PATIENT: LineRules = LineRules {
    hold: LONG,
    patience: LONG,
    max_len: 1000,
};

// ---------------------------------------------------------------------------
// Backends

/// Generates, for each backend, one `#[tokio::test]` per check, named by
/// the sentence on the left: `memory::<sentence>` and `redis::<sentence>`.
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
        machines_that_join_a_full_license_wait_in_line_with_one_ticket_each => check_join_places,
        a_freed_seat_goes_to_the_head_of_the_line_that_claims_it_with_its_ticket => check_fifo_named,
        the_head_of_the_line_claims_its_seat_without_naming_its_ticket => check_fifo_unnamed,
        as_many_tickets_hold_a_seat_as_seats_are_free => check_several_holds,
        a_graced_lease_is_reclaimed_only_from_a_seat_no_ticket_holds => check_graced_reclaim,
        a_head_that_does_not_claim_its_seat_in_time_loses_its_place_to_the_next => check_hold_runs_out,
        a_ticket_not_polled_within_its_patience_leaves_the_line_and_a_polled_one_stays => check_patience,
        leaving_the_line_is_idempotent_and_moves_the_tickets_behind_up => check_leave,
        a_claim_with_another_machines_ticket_or_an_unknown_one_finds_no_ticket => check_foreign_claims,
        a_join_beyond_the_longest_line_is_refused_as_full => check_max_len,
        revoking_a_license_drops_its_line => check_revoke_drops_line,
        renewals_need_no_seat_and_newcomers_never_jump_the_line => check_renewal_and_newcomers,
        a_borrowed_lease_is_never_shortened_by_heartbeats_or_acquires => check_borrow_keeps_its_end,
        a_normal_lease_is_extended_by_heartbeats_but_never_shortened => check_normal_lease_extends,
    }
    nodes: {
        concurrent_joins_across_nodes_give_one_ticket_per_machine_and_seats_in_ticket_order => check_concurrent_joins,
    }
}

// ---------------------------------------------------------------------------
// Helpers

struct License {
    org: OrgId,
    license: LicenseId,
    max_seats: u32,
    grace: Duration,
    overdraft: u32,
    rules: LineRules,
}

impl License {
    fn new(max_seats: u32) -> Self {
        Self::with_rules(max_seats, PATIENT)
    }

    fn with_rules(max_seats: u32, rules: LineRules) -> Self {
        Self {
            org: OrgId::new(),
            license: LicenseId::new(),
            max_seats,
            grace: Duration::ZERO,
            overdraft: 0,
            rules,
        }
    }

    /// A request that neither joins nor names a ticket.
    fn request(&self, hardware_id: &str, ttl: Duration) -> LeaseRequest {
        LeaseRequest {
            org: self.org,
            license: self.license,
            session: SessionId::new(),
            hardware_id: hardware_id.to_owned(),
            max_seats: self.max_seats,
            ttl,
            grace: self.grace,
            overdraft: self.overdraft,
            line: LineRequest {
                rules: self.rules,
                join: None,
                claim: None,
            },
        }
    }

    /// Sends an acquire; returns the session id it proposed and the answer.
    async fn send(
        &self,
        ledger: &Ledger,
        hardware_id: &str,
        ttl: Duration,
        join: Option<TicketId>,
        claim: Option<TicketId>,
    ) -> (SessionId, LeaseGrant) {
        let mut req = self.request(hardware_id, ttl);
        req.line.join = join;
        req.line.claim = claim;
        let grant = ledger.acquire(&req).await.expect("acquire");
        (req.session, grant)
    }

    /// A plain acquire: no join, no named ticket.
    async fn acquire(&self, ledger: &Ledger, hardware_id: &str) -> LeaseGrant {
        self.send(ledger, hardware_id, LONG, None, None).await.1
    }

    /// Acquires a seat that must be granted; returns its session and expiry.
    async fn grant(
        &self,
        ledger: &Ledger,
        hardware_id: &str,
        ttl: Duration,
    ) -> (SessionId, DateTime<Utc>) {
        match self.send(ledger, hardware_id, ttl, None, None).await {
            (session, LeaseGrant::Granted { expires_at, .. }) => (session, expires_at),
            (_, other) => panic!("expected a grant for {hardware_id}, got {other:?}"),
        }
    }

    /// An acquire that joins the line under a fresh ticket id; returns that
    /// id and the answer.
    async fn join(&self, ledger: &Ledger, hardware_id: &str) -> (TicketId, LeaseGrant) {
        let ticket = TicketId::new();
        let (_, grant) = self
            .send(ledger, hardware_id, LONG, Some(ticket), None)
            .await;
        (ticket, grant)
    }

    /// Joins a line that must take the machine; returns its place.
    async fn queue(&self, ledger: &Ledger, hardware_id: &str) -> Place {
        match self.join(ledger, hardware_id).await {
            (ticket, LeaseGrant::Queued(place)) => {
                assert_eq!(
                    place.ticket, ticket,
                    "a first join gets the ticket it asked for"
                );
                place
            }
            (_, other) => panic!("expected {hardware_id} to be queued, got {other:?}"),
        }
    }

    /// An acquire that claims with `ticket` and does not join.
    async fn claim(
        &self,
        ledger: &Ledger,
        hardware_id: &str,
        ticket: TicketId,
    ) -> (SessionId, LeaseGrant) {
        self.send(ledger, hardware_id, LONG, None, Some(ticket))
            .await
    }

    async fn poll(&self, ledger: &Ledger, ticket: TicketId) -> Option<Place> {
        ledger
            .poll_ticket(&TicketPoll {
                org: self.org,
                license: self.license,
                ticket,
                max_seats: self.max_seats,
                overdraft: self.overdraft,
                grace: self.grace,
                rules: self.rules,
            })
            .await
            .expect("poll_ticket")
    }

    async fn leave(&self, ledger: &Ledger, ticket: TicketId) -> bool {
        ledger
            .leave_line(self.org, self.license, ticket)
            .await
            .expect("leave_line")
    }

    async fn heartbeat(
        &self,
        ledger: &Ledger,
        session: SessionId,
        ttl: Duration,
    ) -> Option<DateTime<Utc>> {
        match ledger
            .heartbeat(self.org, self.license, session, ttl, None)
            .await
            .expect("heartbeat")
        {
            BeatOutcome::Extended(expires_at) => Some(expires_at),
            BeatOutcome::Gone => None,
            other => panic!("an unthrottled heartbeat answered {other:?}"),
        }
    }

    async fn release(&self, ledger: &Ledger, session: SessionId) -> bool {
        ledger
            .release(self.org, self.license, session)
            .await
            .expect("release")
            .held
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

/// A place that holds no seat.
fn waiting(ticket: TicketId, position: u32, length: u32) -> Place {
    Place {
        ticket,
        position,
        hold_until: None,
        length,
    }
}

fn full(seats_used: u32, queued: u32) -> LeaseGrant {
    LeaseGrant::Full {
        seats_used,
        graced: 0,
        queued,
    }
}

/// Asserts that a hold seen by a call made after `before` started with that
/// call: it lasts `hold` from about then (the ledger's clock is Redis's or
/// this process's, on this machine; 100 ms of slack for the call itself).
fn assert_hold_starts_now(hold_until: DateTime<Utc>, before: DateTime<Utc>, hold: Duration) {
    let hold = chrono::Duration::from_std(hold).unwrap();
    let slack = chrono::Duration::milliseconds(100);
    let after = Utc::now();
    assert!(
        hold_until >= before + hold - slack && hold_until <= after + hold + slack,
        "a hold of {hold} seen between {before} and {after} lasts until {hold_until}"
    );
}

/// Asserts a grant to a ticket: a new lease with `seats_used` seats used
/// and `queued` tickets left in line. Returns how long it waited.
fn assert_granted_to_ticket(grant: &LeaseGrant, seats_used: u32, queued: u32) -> Duration {
    match grant {
        LeaseGrant::Granted {
            seats_used: used,
            graced: 0,
            waited: Some(waited),
            queued: left,
            ..
        } if (*used, *left) == (seats_used, queued) => *waited,
        other => panic!(
            "expected a grant to a ticket with {seats_used} seats used and {queued} queued, got {other:?}"
        ),
    }
}

/// Polls `probe` every 50 ms for up to 5 s until it yields a value (as
/// `support::eventually`).
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + POLL_FOR;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Joining, places and the order of the line

async fn check_join_places(ledger: Ledger) {
    let lic = License::new(1);
    lic.grant(&ledger, "holder", LONG).await;

    let (a, first) = lic.join(&ledger, "a").await;
    assert_eq!(first, LeaseGrant::Queued(waiting(a, 1, 1)));
    let (b, second) = lic.join(&ledger, "b").await;
    assert_eq!(second, LeaseGrant::Queued(waiting(b, 2, 2)));

    // Without a join, a machine is refused, told how long the line is.
    assert_eq!(lic.acquire(&ledger, "c").await, full(1, 2));

    // The same machine joining again gets its ticket back, not a second one.
    let (unused, again) = lic.join(&ledger, "a").await;
    assert_ne!(unused, a);
    assert_eq!(again, LeaseGrant::Queued(waiting(a, 1, 2)));
    assert_eq!(lic.poll(&ledger, unused).await, None, "no second ticket");
    assert_eq!(lic.poll(&ledger, a).await, Some(waiting(a, 1, 2)));
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 2, 2)));
    // A refused machine took no place either.
    assert_eq!(lic.acquire(&ledger, "c").await, full(1, 2));
}

async fn check_fifo_named(ledger: Ledger) {
    check_fifo(ledger, true).await;
}

async fn check_fifo_unnamed(ledger: Ledger) {
    check_fifo(ledger, false).await;
}

/// One seat, held; `a` then `b` wait. The freed seat is held for `a`,
/// which takes it naming its ticket or not (`named`), and nobody else.
async fn check_fifo(ledger: Ledger, named: bool) {
    let lic = License::new(1);
    let (holder, _) = lic.grant(&ledger, "holder", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;

    assert!(lic.release(&ledger, holder).await);
    let before = Utc::now();
    let head = lic.poll(&ledger, a).await.expect("a is in line");
    assert_eq!((head.ticket, head.position, head.length), (a, 1, 2));
    let held_until = head.hold_until.expect("the freed seat is held for a");
    assert_hold_starts_now(held_until, before, lic.rules.hold);
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 2, 2)));
    // A hold starts once: polling again does not move it.
    assert_eq!(
        lic.poll(&ledger, a).await.and_then(|p| p.hold_until),
        Some(held_until)
    );

    // b's claim is refused: the seat is a's.
    assert_eq!(lic.claim(&ledger, "b", b).await.1, full(0, 2));
    let (_, b_joins) = lic
        .send(&ledger, "b", LONG, Some(TicketId::new()), Some(b))
        .await;
    assert_eq!(b_joins, LeaseGrant::Queued(waiting(b, 2, 2)));
    // So is an outsider's plain acquire.
    assert_eq!(lic.acquire(&ledger, "outsider").await, full(0, 2));

    let (a_session, grant) = if named {
        lic.claim(&ledger, "a", a).await
    } else {
        lic.send(&ledger, "a", LONG, None, None).await
    };
    let waited = assert_granted_to_ticket(&grant, 1, 1);
    assert!(waited < POLL_FOR * 2, "{waited:?}");
    assert_eq!(lic.poll(&ledger, a).await, None, "a left the line");
    assert_eq!(
        lic.live(&ledger)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        vec![a_session]
    );

    // b is the head now, but holds nothing until a seat frees.
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 1, 1)));
    assert_eq!(lic.claim(&ledger, "b", b).await.1, full(1, 1));
    assert!(lic.release(&ledger, a_session).await);
    let next = lic.poll(&ledger, b).await.expect("b is in line");
    assert_eq!((next.position, next.length), (1, 1));
    assert!(next.hold_until.is_some(), "{next:?}");
    assert_eq!(lic.acquire(&ledger, "outsider").await, full(0, 1));
    let grant = lic.claim(&ledger, "b", b).await.1;
    assert_granted_to_ticket(&grant, 1, 0);
}

async fn check_several_holds(ledger: Ledger) {
    let mut lic = License::new(3);
    let mut sessions = Vec::new();
    for hw in ["x", "y", "z"] {
        sessions.push(lic.grant(&ledger, hw, LONG).await.0);
    }
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;
    let c = lic.queue(&ledger, "c").await.ticket;

    // Two seats free: the first two tickets hold one each, the third none.
    assert!(lic.release(&ledger, sessions[0]).await);
    assert!(lic.release(&ledger, sessions[1]).await);
    for (ticket, position) in [(a, 1), (b, 2)] {
        let place = lic.poll(&ledger, ticket).await.expect("in line");
        assert_eq!((place.position, place.length), (position, 3));
        assert!(place.hold_until.is_some(), "{place:?}");
    }
    assert_eq!(lic.poll(&ledger, c).await, Some(waiting(c, 3, 3)));
    assert_eq!(lic.acquire(&ledger, "outsider").await, full(1, 3));
    assert_eq!(lic.claim(&ledger, "c", c).await.1, full(1, 3));

    // Fewer seats, fewer holds: a hold ends when its seat is no longer free.
    lic.max_seats = 2;
    assert!(
        lic.poll(&ledger, a)
            .await
            .and_then(|p| p.hold_until)
            .is_some()
    );
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 2, 3)));
    lic.max_seats = 1;
    assert_eq!(lic.poll(&ledger, a).await, Some(waiting(a, 1, 3)));
    assert_eq!(lic.claim(&ledger, "a", a).await.1, full(1, 3));
    lic.max_seats = 3;

    // Either holder may claim first.
    let grant = lic.claim(&ledger, "b", b).await.1;
    assert_granted_to_ticket(&grant, 2, 2);
    let grant = lic.claim(&ledger, "a", a).await.1;
    assert_granted_to_ticket(&grant, 3, 1);
    assert_eq!(lic.poll(&ledger, c).await, Some(waiting(c, 1, 1)));
}

async fn check_graced_reclaim(ledger: Ledger) {
    // One seat, and an overdraft of one beside graced leases.
    let mut lic = License::new(1);
    lic.grace = LONG;
    lic.overdraft = 1;
    let (g, _) = lic.grant(&ledger, "g", SHORT).await;
    let a = lic.queue(&ledger, "a").await.ticket;

    // g lapses into its grace: the live seat frees and is held for a.
    let held = poll(
        "g's lease to lapse and the seat to be held for a",
        || async {
            let place = lic.poll(&ledger, a).await.expect("a is in line");
            place.hold_until.map(|_| place)
        },
    )
    .await;
    assert_eq!((held.position, held.length), (1, 1));
    assert!(lic.heartbeat(&ledger, g, LONG).await.is_none(), "g lapsed");

    // g may not reclaim the seat held for a; joining, it waits behind a.
    assert_eq!(
        lic.acquire(&ledger, "g").await,
        LeaseGrant::Full {
            seats_used: 0,
            graced: 1,
            queued: 1
        }
    );
    let g_ticket = lic.queue(&ledger, "g").await.ticket;
    assert_eq!(
        lic.poll(&ledger, g_ticket).await,
        Some(waiting(g_ticket, 2, 2))
    );

    match lic.claim(&ledger, "a", a).await {
        (
            a_session,
            LeaseGrant::Granted {
                seats_used: 1,
                graced: 1,
                waited: Some(_),
                queued: 1,
                ..
            },
        ) => {
            // The seat that frees next goes to g's ticket: g's graced lease
            // comes back, under its own session.
            assert_eq!(
                lic.poll(&ledger, g_ticket).await,
                Some(waiting(g_ticket, 1, 1))
            );
            assert!(lic.release(&ledger, a_session).await);
            assert!(
                lic.poll(&ledger, g_ticket)
                    .await
                    .and_then(|p| p.hold_until)
                    .is_some()
            );
            assert_eq!(
                lic.acquire(&ledger, "outsider").await,
                LeaseGrant::Full {
                    seats_used: 0,
                    graced: 1,
                    queued: 1
                }
            );
            match lic.acquire(&ledger, "g").await {
                LeaseGrant::Renewed {
                    session,
                    seats_used: 1,
                    graced: 0,
                    ..
                } => assert_eq!(session, g),
                other => panic!("expected g's lease back, got {other:?}"),
            }
            assert_eq!(lic.poll(&ledger, g_ticket).await, None, "g left the line");
        }
        (_, other) => panic!("expected a grant to a's ticket, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Holds and patience

async fn check_hold_runs_out(ledger: Ledger) {
    let lic = License::with_rules(
        1,
        LineRules {
            hold: SHORT,
            ..PATIENT
        },
    );
    let (holder, _) = lic.grant(&ledger, "holder", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;
    assert!(lic.release(&ledger, holder).await);
    let before = Utc::now();
    let a_held_until = lic
        .poll(&ledger, a)
        .await
        .and_then(|p| p.hold_until)
        .expect("the freed seat is held for a");
    assert_hold_starts_now(a_held_until, before, SHORT);

    // a never claims; once its hold runs out, b holds the seat.
    let b_place = poll("the seat to be held for b", || async {
        let place = lic.poll(&ledger, b).await.expect("b keeps its place");
        if place.hold_until.is_some() {
            Some(place)
        } else {
            assert_eq!(place, waiting(b, 2, 2), "b waits behind a meanwhile");
            None
        }
    })
    .await;
    assert_eq!((b_place.position, b_place.length), (1, 1));
    let b_held_until = b_place.hold_until.expect("held");
    // By the ledger's clock, b's hold started no earlier than a's ended.
    assert!(
        b_held_until >= a_held_until + chrono::Duration::from_std(SHORT).unwrap(),
        "a's hold until {a_held_until}, b's until {b_held_until}"
    );

    // a lost its place.
    assert_eq!(lic.poll(&ledger, a).await, None);
    assert_eq!(lic.claim(&ledger, "a", a).await.1, LeaseGrant::NoTicket);
    assert_eq!(lic.acquire(&ledger, "a").await, full(0, 1));
    assert_eq!(lic.acquire(&ledger, "outsider").await, full(0, 1));

    let grant = lic.claim(&ledger, "b", b).await.1;
    let waited = assert_granted_to_ticket(&grant, 1, 0);
    assert!(waited >= SHORT, "b waited at least a's hold: {waited:?}");
}

async fn check_patience(ledger: Ledger) {
    let lic = License::with_rules(
        1,
        LineRules {
            patience: SHORT,
            ..PATIENT
        },
    );
    lic.grant(&ledger, "holder", LONG).await;
    let started = Instant::now();
    // b joins first and is never heard of again; a joins behind it and
    // polls; c joins last and renews its place by joining again.
    let b = lic.queue(&ledger, "b").await.ticket;
    let a = lic.queue(&ledger, "a").await.ticket;
    let c = lic.queue(&ledger, "c").await.ticket;
    assert_eq!(lic.poll(&ledger, a).await, Some(waiting(a, 2, 3)));

    let place = poll("b to run out of patience", || async {
        assert!(
            matches!(lic.join(&ledger, "c").await.1, LeaseGrant::Queued(p) if p.ticket == c),
            "c, joining again, keeps its place"
        );
        let place = lic
            .poll(&ledger, a)
            .await
            .expect("a, polled, keeps its place");
        (place.position == 1).then_some(place)
    })
    .await;
    assert_eq!(place, waiting(a, 1, 2));
    // b left no earlier than its patience ran out (a little slack for the
    // test's clock against the ledger's).
    let elapsed = started.elapsed();
    assert!(
        elapsed + Duration::from_millis(20) >= SHORT,
        "b left after {elapsed:?}"
    );
    assert_eq!(lic.claim(&ledger, "b", b).await.1, LeaseGrant::NoTicket);
    assert_eq!(lic.poll(&ledger, b).await, None);

    // a and c keep their places for as long as they are heard of, well past
    // their patience.
    while started.elapsed() < SHORT * 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            lic.join(&ledger, "c").await.1,
            LeaseGrant::Queued(waiting(c, 2, 2))
        );
        assert_eq!(lic.poll(&ledger, a).await, Some(waiting(a, 1, 2)));
    }
}

// ---------------------------------------------------------------------------
// Leaving, foreign claims, the longest line and revocation

async fn check_leave(ledger: Ledger) {
    let lic = License::new(1);
    let (holder, _) = lic.grant(&ledger, "holder", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;
    let c = lic.queue(&ledger, "c").await.ticket;

    assert!(lic.leave(&ledger, a).await);
    assert!(!lic.leave(&ledger, a).await, "leaving twice");
    assert_eq!(lic.poll(&ledger, a).await, None);
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 1, 2)));
    assert_eq!(lic.poll(&ledger, c).await, Some(waiting(c, 2, 2)));
    assert_eq!(lic.claim(&ledger, "a", a).await.1, LeaseGrant::NoTicket);
    assert!(
        !lic.leave(&ledger, TicketId::new()).await,
        "an unknown ticket"
    );
    let other = License::new(1);
    assert!(!other.leave(&ledger, b).await, "another license's ticket");
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 1, 2)));

    // A holder that leaves passes the held seat on.
    assert!(lic.release(&ledger, holder).await);
    assert!(
        lic.poll(&ledger, b)
            .await
            .and_then(|p| p.hold_until)
            .is_some()
    );
    assert!(lic.leave(&ledger, b).await);
    let next = lic.poll(&ledger, c).await.expect("c is in line");
    assert_eq!((next.position, next.length), (1, 1));
    assert!(next.hold_until.is_some(), "{next:?}");
    assert!(lic.leave(&ledger, c).await);

    // An empty line holds nothing: the free seat goes to whoever asks.
    match lic.acquire(&ledger, "outsider").await {
        LeaseGrant::Granted {
            seats_used: 1,
            waited: None,
            queued: 0,
            ..
        } => {}
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn check_foreign_claims(ledger: Ledger) {
    let lic = License::new(1);
    let (holder, _) = lic.grant(&ledger, "holder", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;

    // Another machine in line, or one outside it, claiming a's ticket.
    assert_eq!(lic.claim(&ledger, "b", a).await.1, LeaseGrant::NoTicket);
    assert_eq!(lic.claim(&ledger, "c", a).await.1, LeaseGrant::NoTicket);
    // A ticket that was never issued, even by a machine that has one.
    assert_eq!(
        lic.claim(&ledger, "a", TicketId::new()).await.1,
        LeaseGrant::NoTicket
    );
    assert_eq!(
        lic.claim(&ledger, "c", TicketId::new()).await.1,
        LeaseGrant::NoTicket
    );
    // Nothing moved.
    assert_eq!(lic.poll(&ledger, a).await, Some(waiting(a, 1, 2)));
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 2, 2)));

    // Not even a seat held for a goes to a foreign claim.
    assert!(lic.release(&ledger, holder).await);
    assert!(
        lic.poll(&ledger, a)
            .await
            .and_then(|p| p.hold_until)
            .is_some()
    );
    assert_eq!(lic.claim(&ledger, "b", a).await.1, LeaseGrant::NoTicket);
    assert_eq!(lic.claim(&ledger, "c", a).await.1, LeaseGrant::NoTicket);
    assert!(lic.live(&ledger).await.is_empty());
    let grant = lic.claim(&ledger, "a", a).await.1;
    assert_granted_to_ticket(&grant, 1, 1);
}

async fn check_max_len(ledger: Ledger) {
    let lic = License::with_rules(
        1,
        LineRules {
            max_len: 2,
            ..PATIENT
        },
    );
    lic.grant(&ledger, "holder", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;

    let (c, refused) = lic.join(&ledger, "c").await;
    assert_eq!(refused, full(1, 2));
    assert_eq!(lic.poll(&ledger, c).await, None);
    // A machine already in line keeps being answered its place.
    assert_eq!(
        lic.join(&ledger, "a").await.1,
        LeaseGrant::Queued(waiting(a, 1, 2))
    );

    // Once there is room, the join is taken.
    assert!(lic.leave(&ledger, a).await);
    let (c, joined) = lic.join(&ledger, "c").await;
    assert_eq!(joined, LeaseGrant::Queued(waiting(c, 2, 2)));
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 1, 2)));
}

async fn check_revoke_drops_line(ledger: Ledger) {
    let lic = License::new(2);
    let (first, _) = lic.grant(&ledger, "first", LONG).await;
    lic.grant(&ledger, "second", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;
    // One seat frees, and is held for a.
    assert!(lic.release(&ledger, first).await);
    assert!(
        lic.poll(&ledger, a)
            .await
            .and_then(|p| p.hold_until)
            .is_some()
    );

    assert_eq!(
        ledger.revoke_license(lic.org, lic.license).await.unwrap(),
        1
    );
    assert_eq!(lic.poll(&ledger, a).await, None);
    assert_eq!(lic.poll(&ledger, b).await, None);
    assert_eq!(lic.claim(&ledger, "a", a).await.1, LeaseGrant::NoTicket);
    assert!(!lic.leave(&ledger, b).await);

    // A reactivated license starts with an empty line.
    match lic.acquire(&ledger, "c").await {
        LeaseGrant::Granted {
            seats_used: 1,
            waited: None,
            queued: 0,
            ..
        } => {}
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn check_renewal_and_newcomers(ledger: Ledger) {
    let lic = License::new(2);
    let (first, _) = lic.grant(&ledger, "first", LONG).await;
    let (second, _) = lic.grant(&ledger, "second", LONG).await;
    let a = lic.queue(&ledger, "a").await.ticket;
    let b = lic.queue(&ledger, "b").await.ticket;

    // A live lease renews while tickets wait: it needs no seat.
    assert!(matches!(
        lic.acquire(&ledger, "first").await,
        LeaseGrant::Renewed { session, seats_used: 2, graced: 0, .. } if session == first
    ));
    assert!(lic.heartbeat(&ledger, first, LONG).await.is_some());

    // A seat frees: it is held for a, and the renewal still succeeds.
    assert!(lic.release(&ledger, second).await);
    assert!(
        lic.poll(&ledger, a)
            .await
            .and_then(|p| p.hold_until)
            .is_some()
    );
    assert!(matches!(
        lic.acquire(&ledger, "first").await,
        LeaseGrant::Renewed { session, seats_used: 1, graced: 0, .. } if session == first
    ));
    assert_eq!(lic.poll(&ledger, b).await, Some(waiting(b, 2, 2)));

    // Newcomers do not jump the line: neither a new machine nor the one that
    // just released its seat.
    assert_eq!(lic.acquire(&ledger, "newcomer").await, full(1, 2));
    assert_eq!(lic.acquire(&ledger, "second").await, full(1, 2));
    let (c, queued) = lic.join(&ledger, "newcomer").await;
    assert_eq!(queued, LeaseGrant::Queued(waiting(c, 3, 3)));
    assert!(lic.live(&ledger).await.iter().all(|(s, _)| *s == first));

    let grant = lic.claim(&ledger, "a", a).await.1;
    assert_granted_to_ticket(&grant, 2, 2);
}

// ---------------------------------------------------------------------------
// A lease is never shortened

async fn check_borrow_keeps_its_end(ledger: Ledger) {
    let lic = License::new(2);
    let (borrowed, end) = lic.grant(&ledger, "borrower", BORROW).await;
    assert!(end > Utc::now() + chrono::Duration::hours(3), "{end}");

    // Its machine keeps heartbeating with the usual short TTL.
    for ttl in [Duration::from_secs(1), LONG] {
        assert_eq!(
            lic.heartbeat(&ledger, borrowed, ttl).await,
            Some(end),
            "a heartbeat with a TTL of {ttl:?} keeps the borrow's end"
        );
    }
    // Or acquires again, as at start-up.
    for ttl in [Duration::from_secs(1), LONG] {
        match lic.send(&ledger, "borrower", ttl, None, None).await.1 {
            LeaseGrant::Renewed {
                session,
                expires_at,
                seats_used: 1,
                graced: 0,
            } => {
                assert_eq!(session, borrowed);
                assert_eq!(expires_at, end, "an acquire with a TTL of {ttl:?}");
            }
            other => panic!("expected a renewal, got {other:?}"),
        }
    }
    assert_eq!(lic.live(&ledger).await, vec![(borrowed, end)]);

    // A longer borrow does extend it.
    match lic
        .send(&ledger, "borrower", BORROW * 2, None, None)
        .await
        .1
    {
        LeaseGrant::Renewed {
            session,
            expires_at,
            ..
        } => {
            assert_eq!(session, borrowed);
            assert!(
                expires_at > end + chrono::Duration::hours(3),
                "{expires_at}"
            );
        }
        other => panic!("expected a renewal, got {other:?}"),
    }
}

async fn check_normal_lease_extends(ledger: Ledger) {
    let lic = License::new(1);
    let (session, expiry) = lic.grant(&ledger, "a", Duration::from_secs(10)).await;
    let extended = lic
        .heartbeat(&ledger, session, LONG)
        .await
        .expect("a live lease accepts heartbeats");
    assert!(
        extended >= expiry + chrono::Duration::seconds(49),
        "{extended}"
    );

    // A shorter TTL afterwards leaves the expiry where it is.
    assert_eq!(
        lic.heartbeat(&ledger, session, Duration::from_secs(5))
            .await,
        Some(extended)
    );
    assert!(matches!(
        lic.send(&ledger, "a", Duration::from_secs(5), None, None).await.1,
        LeaseGrant::Renewed { session: s, expires_at, .. } if s == session && expires_at == extended
    ));
    assert_eq!(lic.live(&ledger).await, vec![(session, extended)]);

    // A longer one extends it again.
    let further = lic
        .heartbeat(&ledger, session, LONG * 2)
        .await
        .expect("still live");
    assert!(
        further >= extended + chrono::Duration::seconds(59),
        "{further}"
    );
}

// ---------------------------------------------------------------------------
// Concurrency

async fn check_concurrent_joins(nodes: Vec<Ledger>) {
    const MACHINES: usize = 20;
    let lic = Arc::new(License::new(1));
    let (holder, _) = lic.grant(&nodes[0], "holder", LONG).await;

    // Every machine joins twice at once, through different nodes.
    let tasks: Vec<_> = (0..MACHINES * 2)
        .map(|i| {
            let machine = i % MACHINES;
            let ledger = nodes[(machine + i / MACHINES) % nodes.len()].clone();
            let lic = lic.clone();
            tokio::spawn(async move {
                let hw = format!("machine-{machine}");
                let ticket = TicketId::new();
                let (_, grant) = lic.send(&ledger, &hw, LONG, Some(ticket), None).await;
                (machine, ticket, grant)
            })
        })
        .collect();

    let mut answers: BTreeMap<usize, Vec<(TicketId, Place)>> = BTreeMap::new();
    for task in tasks {
        match task.await.expect("task") {
            (machine, asked, LeaseGrant::Queued(place)) => {
                answers.entry(machine).or_default().push((asked, place));
            }
            (machine, _, other) => panic!("machine {machine} was not queued: {other:?}"),
        }
    }

    // One ticket per machine, one of the two it asked for, at one place.
    let mut by_position: BTreeMap<u32, (usize, TicketId)> = BTreeMap::new();
    for (machine, pair) in &answers {
        let [(asked_1, first), (asked_2, second)] = pair.as_slice() else {
            panic!("machine {machine} got {pair:?}");
        };
        assert_eq!(first.ticket, second.ticket, "machine {machine}: one ticket");
        assert_eq!(first.position, second.position, "machine {machine}");
        assert!(
            [*asked_1, *asked_2].contains(&first.ticket),
            "machine {machine}"
        );
        assert!(first.hold_until.is_none() && second.hold_until.is_none());
        let clash = by_position.insert(first.position, (*machine, first.ticket));
        assert_eq!(clash, None, "two machines at position {}", first.position);
    }
    assert_eq!(answers.len(), MACHINES);
    assert_eq!(
        by_position.keys().copied().collect::<Vec<_>>(),
        (1..=MACHINES as u32).collect::<Vec<_>>()
    );
    let tickets: BTreeSet<TicketId> = by_position.values().map(|(_, t)| *t).collect();
    assert_eq!(tickets.len(), MACHINES);

    // Every node sees the same line.
    for (i, node) in nodes.iter().enumerate() {
        for (&position, &(machine, ticket)) in &by_position {
            assert_eq!(
                lic.poll(node, ticket).await,
                Some(waiting(ticket, position, MACHINES as u32)),
                "node {i}, machine {machine}"
            );
        }
    }

    // Seats freed one at a time go out in ticket order.
    let order: Vec<(usize, TicketId)> = by_position.values().copied().collect();
    let mut current = holder;
    for (k, &(machine, ticket)) in order.iter().enumerate() {
        let node = &nodes[k % nodes.len()];
        assert!(lic.release(node, current).await, "seat {k} frees");
        let left = (MACHINES - k) as u32;
        if let Some(&(behind, behind_ticket)) = order.get(k + 1) {
            let behind_hw = format!("machine-{behind}");
            assert_eq!(
                lic.claim(&nodes[(k + 1) % nodes.len()], &behind_hw, behind_ticket)
                    .await
                    .1,
                full(0, left),
                "machine {behind} claims before machine {machine}"
            );
        }
        assert_eq!(lic.acquire(node, "outsider").await, full(0, left));
        let hw = format!("machine-{machine}");
        let (session, grant) = lic.claim(node, &hw, ticket).await;
        assert_granted_to_ticket(&grant, 1, left - 1);
        current = session;
    }
    for node in &nodes {
        let live: Vec<SessionId> = lic.live(node).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(live, vec![current]);
    }
}
