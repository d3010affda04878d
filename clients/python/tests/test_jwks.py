"""The JWKS cache: one fetch an hour, private files, and key rotation."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import ClientFactory
from harness import Backend, FakeClock, FaultProxy, Server, Servers, iter_files

JWKS = "/.well-known/jwks.json"
# Licenses here allow two hours offline, so that tokens outlive a clock
# moved an hour ahead.
GRACE_SECS = 7200


@pytest.fixture(scope="module")
def server(servers: Servers) -> Server:
    return servers.start(
        Backend("embedded"),
        {"SEATS__LEASE_TTL_SECS": 30, "SEATS__HEARTBEAT_INTERVAL_SECS": 10},
        key="first",
    )


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    """Counts the JWKS fetches."""
    counting = FaultProxy(server.url).start()
    yield counting
    counting.stop()


def test_the_jwks_is_fetched_once_within_the_hour_and_kept_private_on_disk(
    server: Server, proxy: FaultProxy, make_client: ClientFactory, cache_dir: Path
) -> None:
    lic = server.license(seats=3, offline_grace_secs=GRACE_SECS)
    clock = FakeClock()
    first = make_client(proxy.url, lic.key, clock=clock)
    first.acquire()
    first.heartbeat()
    first.validate()
    assert proxy.hits[JWKS] == 1

    # Another process on this machine, 59 minutes later: the disk copy.
    clock.advance(59 * 60)
    second = make_client(proxy.url, lic.key, clock=clock)
    second.acquire()
    second.validate()
    assert proxy.hits[JWKS] == 1

    # Past the hour, the next token to verify refreshes the set.
    clock.advance(2 * 60)
    third = make_client(proxy.url, lic.key, clock=clock)
    third.acquire()
    assert proxy.hits[JWKS] == 2

    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    files = list(iter_files(cache_dir))
    assert any(f.name.startswith("jwks-") for f in files)
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_a_rotated_signing_key_is_fetched_when_a_token_names_an_unknown_kid(
    servers: Servers, make_client: ClientFactory, algorithm: str
) -> None:
    server = servers.start(
        Backend("embedded"),
        {"SEATS__LEASE_TTL_SECS": 30, "SEATS__HEARTBEAT_INTERVAL_SECS": 10},
        key=f"before-rotation-{algorithm}",
        name=f"rotating-{algorithm}",
    )
    proxy = FaultProxy(server.url).start()
    try:
        lic = server.license(seats=2)
        client = make_client(proxy.url, lic.key)
        seat = client.acquire()
        leaving = make_client(proxy.url, lic.key)
        leaving.acquire()
        old_kid = jwt.get_unverified_header(seat.token)["kid"]
        assert proxy.hits[JWKS] == 1

        # Rotate, then retire the old key: the running server picks both up
        # within signing.reload_secs, and refuses what the old key signed.
        # From RS256 to a key of `algorithm`: the client verifies whichever
        # algorithm the new key has.
        rotate = ["--bits", "2048"] if algorithm == "RS256" else ["--algorithm", algorithm]
        server.cli("keys", "rotate", *rotate)
        server.cli("keys", "retire", old_kid)
        deadline = time.monotonic() + 15
        while True:
            new_kids = [k["kid"] for k in httpx.get(f"{server.url}{JWKS}").json()["keys"]]
            if old_kid not in new_kids:
                break
            assert time.monotonic() < deadline, "the server kept the retired key"
            time.sleep(0.1)
        assert len(new_kids) == 1

        # The server refuses the old token (401); the client acquires again
        # and verifies the new token after fetching the new key.
        renewed = client.heartbeat()
        assert renewed.session_id == seat.session_id
        assert jwt.get_unverified_header(renewed.token)["kid"] in new_kids
        assert jwt.get_unverified_header(renewed.token)["alg"] == algorithm
        assert proxy.hits[JWKS] == 2
        assert set(new_kids) <= set(client.core.jwks.kids())
        assert client.validate().source == "token"

        # A seat whose token the server no longer accepts is still released
        # (the client takes it up with a fresh token first).
        released = leaving.release()
        assert released is not None and released.end_reason == "released"
        assert [s["id"] for s in server.live_sessions(lic.id)] == [seat.session_id]
    finally:
        proxy.stop()
        server.stop()
