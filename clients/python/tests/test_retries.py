"""429 and 503: retried with backoff and jitter, Retry-After respected,
attempts bounded.

The 429s are real: the server's acquire limit is one per second per
machine. The 503s come from a proxy in front of the real server that
answers the first requests itself, the way a node answers while its
ledger is down (``ledger_unavailable`` with ``Retry-After``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from conftest import ClientFactory
from harness import Backend, FakeClock, FaultProxy, RecordingClock, Server, Servers

from seatwarden_client import RateLimited, RetryPolicy, ServerUnavailable

ACQUIRE = "/api/v1/licenses/acquire"


@pytest.fixture(scope="module")
def server(servers: Servers) -> Server:
    return servers.start(
        Backend("embedded"),
        {
            "SEATS__LEASE_TTL_SECS": 30,
            "SEATS__HEARTBEAT_INTERVAL_SECS": 10,
            "RATE_LIMITS__ACQUIRE_PER_MACHINE": "1/sec",
        },
    )


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    faulty = FaultProxy(server.url).start()
    yield faulty
    faulty.stop()


def test_a_real_429_is_waited_out_for_retry_after_and_the_request_then_succeeds(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = RecordingClock()
    client = make_client(server.url, lic.key, clock=clock)
    first = client.acquire()

    started = time.monotonic()
    again = client.acquire()  # over the limit: 429, Retry-After: 1
    elapsed = time.monotonic() - started

    assert again.session_id == first.session_id and not again.created
    assert len(clock.sleeps) == 1
    assert 1.0 <= clock.sleeps[0] <= 1.5, "Retry-After plus at most base_delay of jitter"
    assert elapsed >= 1.0


def test_a_429_beyond_the_retry_budget_raises_rate_limited_with_retry_after(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key, retry=RetryPolicy(attempts=1))
    client.acquire()
    with pytest.raises(RateLimited) as limited:
        client.acquire()
    assert limited.value.status == 429
    assert limited.value.retry_after == 1


def test_a_retry_after_longer_than_the_client_will_wait_is_raised_at_once(
    server: Server, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = FakeClock()
    client = make_client(
        proxy.url, lic.key, clock=clock, retry=RetryPolicy(attempts=5, max_retry_after=60)
    )
    proxy.fail(ACQUIRE, status=429, times=1, retry_after="3600", code="rate_limited")
    with pytest.raises(RateLimited) as limited:
        client.acquire()
    assert limited.value.retry_after == 3600
    assert clock.sleeps == []


def test_a_503_is_retried_after_retry_after_and_then_succeeds(
    server: Server, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = FakeClock()
    client = make_client(proxy.url, lic.key, clock=clock, retry=RetryPolicy(attempts=4))
    proxy.fail(ACQUIRE, status=503, times=2, retry_after="2")

    seat = client.acquire()

    assert seat.created
    assert proxy.hits[ACQUIRE] == 3
    assert len(clock.sleeps) == 2
    assert all(2.0 <= s <= 2.5 for s in clock.sleeps), clock.sleeps


def test_a_503_without_retry_after_backs_off_exponentially_with_jitter(
    server: Server, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=1.5, rng=random.Random(7))
    client = make_client(proxy.url, lic.key, clock=clock, retry=policy)
    proxy.fail(ACQUIRE, status=503, times=4, retry_after=None)

    client.acquire()

    assert proxy.hits[ACQUIRE] == 5
    bounds = [(0.25, 0.5), (0.5, 1.0), (0.75, 1.5), (0.75, 1.5)]  # capped at max_delay
    assert len(clock.sleeps) == 4
    for slept, (low, high) in zip(clock.sleeps, bounds, strict=True):
        assert low <= slept <= high, clock.sleeps


def test_a_persistent_503_gives_up_after_the_configured_attempts(
    server: Server, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = FakeClock()
    client = make_client(proxy.url, lic.key, clock=clock, retry=RetryPolicy(attempts=3))
    proxy.fail(ACQUIRE, status=503, times=100, retry_after="1")

    with pytest.raises(ServerUnavailable) as unavailable:
        client.acquire()

    assert unavailable.value.status == 503
    assert unavailable.value.code == "ledger_unavailable"
    assert unavailable.value.retry_after == 1
    assert proxy.hits[ACQUIRE] == 3
    assert len(clock.sleeps) == 2


def test_a_heartbeat_answered_503_keeps_the_seat_on_its_token(
    server: Server, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    clock = FakeClock()
    client = make_client(proxy.url, lic.key, clock=clock, retry=RetryPolicy(attempts=2))
    seat = client.acquire()
    proxy.fail(f"/api/v1/licenses/sessions/{seat.session_id}/heartbeat", times=2)

    # Both attempts of this heartbeat get a 503: not fatal.
    assert client.heartbeat().session_id == seat.session_id
    assert client.status().offline
    assert proxy.hits[f"/api/v1/licenses/sessions/{seat.session_id}/heartbeat"] == 2
    # The next one gets through.
    assert client.heartbeat().session_id == seat.session_id
    assert not client.status().offline
