"""Running without the server: the offline grace, and tokens that lie.

The servers here have a 2 s lease with heartbeats every second and a 1 s
clock-skew allowance; licenses allow 3 s offline. A seat token then lives
about 2 + 3 + 1 = 6 s past the last heartbeat, so the grace runs out
within seconds of stopping the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from conftest import ClientFactory
from harness import Backend, FaultProxy, Server, Servers, tamper, wait_until

from seatwarden_client import (
    InvalidToken,
    LicenseExpiredOffline,
    SeatwardenError,
    ServerUnreachable,
)

SETTINGS: dict[str, str | int] = {
    "SEATS__LEASE_TTL_SECS": 2,
    "SEATS__HEARTBEAT_INTERVAL_SECS": 1,
    "SEATS__TOKEN_SKEW_SECS": 1,
}
GRACE_SECS = 3


@pytest.fixture
def server(servers: Servers) -> Iterator[Server]:
    """A server of the test's own: these tests stop it."""
    server = servers.start(Backend("embedded"), SETTINGS)
    yield server
    server.stop()


def test_the_app_keeps_its_seat_offline_until_the_token_expires_then_raises_license_expired_offline(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, offline_grace_secs=GRACE_SECS)
    lost: list[SeatwardenError] = []
    client = make_client(server.url, lic.key, on_lost=lost.append)
    seat = client.start(handle_signals=False)
    claims = seat.claims
    assert claims is not None
    assert claims.exp - claims.lease_exp == GRACE_SECS + 1, "grace plus the skew allowance"

    server.kill()

    wait_until(lambda: client.status().offline, timeout=5, message="the client to notice")
    held = client.check()
    assert held.session_id == seat.session_id
    token_exp = held.token_expires_at.timestamp()
    assert time.time() < token_exp, "still within the grace"
    assert client.validate().source == "token", "verifies offline against the cached JWKS"

    wait_until(lambda: lost, timeout=15, message="the offline grace to run out")
    assert time.time() >= token_exp - 0.01, "not a moment before the token's exp"
    assert isinstance(lost[0], LicenseExpiredOffline)
    assert "expired" in str(lost[0])
    with pytest.raises(LicenseExpiredOffline):
        client.check()
    assert client.status().lost == "license_expired_offline"


def test_a_seat_is_taken_up_again_when_the_server_returns_within_the_grace(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, offline_grace_secs=GRACE_SECS)
    client = make_client(server.url, lic.key)
    seat = client.start(handle_signals=False)

    server.stop()
    wait_until(lambda: client.status().offline, timeout=5, message="the client to notice")
    server.start()

    wait_until(lambda: not client.status().offline, timeout=10, message="the client to reconnect")
    assert client.check().session_id == seat.session_id, "the same session, reclaimed"
    assert [s["id"] for s in server.live_sessions(lic.id)] == [seat.session_id]


def test_heartbeat_without_the_server_returns_the_held_seat_until_exp(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, offline_grace_secs=GRACE_SECS)
    client = make_client(server.url, lic.key)
    seat = client.acquire()
    server.kill()

    assert client.heartbeat().session_id == seat.session_id
    assert client.status().offline
    with pytest.raises(ServerUnreachable):
        client.license_status()


def test_a_tampered_token_from_the_server_is_refused(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    proxy = FaultProxy(server.url)
    proxy.rewrite = lambda path, sent, body: (
        {**body, "token": tamper(body["token"])} if "token" in body else body
    )
    proxy.start()
    try:
        client = make_client(proxy.url, lic.key)
        with pytest.raises(InvalidToken):
            client.acquire()
        assert client.seat is None
    finally:
        proxy.stop()


def test_a_tampered_token_is_refused_even_offline(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, offline_grace_secs=GRACE_SECS)
    client = make_client(server.url, lic.key)
    seat = client.acquire()
    server.kill()

    # Someone edits the token held in memory to stretch its exp.
    client.core._seat = replace(seat, token=tamper(seat.token))
    with pytest.raises(InvalidToken):
        client.validate()
    assert client.seat is None
    with pytest.raises(InvalidToken):
        client.check()


def test_a_license_file_verifies_offline_and_a_tampered_one_is_refused(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=3, features="export")
    client = make_client(server.url, lic.key)
    fetched = client.license_file(license_id=lic.id)
    assert fetched.claims.license_id == lic.id
    assert fetched.claims.seats == 3
    assert fetched.claims.features == ("export",)
    text = fetched.text

    server.kill()
    offline = make_client(server.url, lic.key, cache_dir=client.core.cache.path)
    again = offline.verify_license_file(text, license_id=lic.id)
    assert again.claims == fetched.claims
    with pytest.raises(InvalidToken):
        offline.verify_license_file(tamper(text))
    with pytest.raises(InvalidToken):
        offline.verify_license_file(text, license_id="00000000-0000-0000-0000-000000000000")
