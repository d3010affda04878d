"""Acquire, heartbeat, release and the license's state, on both deployments."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from conftest import AsyncClientFactory, ClientFactory
from harness import Backend, FaultProxy, Server, Servers, wait_until

from seatwarden_client import (
    InvalidRequest,
    LicenseNotFound,
    LicenseSuspended,
    MachineLimitReached,
    MachineNotActivated,
    NoSeatsAvailable,
    NotAcquired,
    SeatwardenError,
    SessionEnded,
)

SETTINGS: dict[str, str | int] = {
    "SEATS__LEASE_TTL_SECS": 4,
    "SEATS__HEARTBEAT_INTERVAL_SECS": 1,
}


@pytest.fixture(scope="module")
def server(servers: Servers, backend: Backend) -> Server:
    return servers.start(backend, SETTINGS)


def test_a_seat_is_acquired_heartbeated_and_released(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)

    seat = client.acquire()
    assert seat.created
    assert seat.license_id == lic.id and seat.org_id == lic.org_id
    assert (seat.seats_used, seat.max_seats) == (1, 1)
    assert seat.tier == "pro" and seat.features == ("export", "sso")
    assert seat.claims is not None and seat.claims.session_id == seat.session_id
    assert seat.heartbeat_interval_secs == 1
    assert seat.token_expires_at.timestamp() > time.time()

    first_lease = seat.expires_at
    assert first_lease is not None
    renewed = wait_until(
        lambda: (s := client.heartbeat()).expires_at and s.expires_at > first_lease and s,
        timeout=5,
        interval=0.2,
        message="a heartbeat to extend the lease",
    )
    assert renewed.session_id == seat.session_id

    released = client.release()
    assert released is not None
    assert released.session_id == seat.session_id
    assert released.end_reason == "released"
    assert client.seat is None
    assert client.release() is None, "releasing twice is harmless"

    other = make_client(server.url, lic.key)
    assert other.acquire().created, "the released seat is free again"


def test_a_full_license_raises_no_seats_available_with_the_counts(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    make_client(server.url, lic.key).acquire()

    with pytest.raises(NoSeatsAvailable) as refused:
        make_client(server.url, lic.key).acquire()
    assert refused.value.status == 409
    assert refused.value.code == "no_seats_available"
    assert (refused.value.seats_used, refused.value.max_seats) == (1, 1)


def test_acquiring_again_on_the_same_machine_renews_the_same_session(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)
    first = client.acquire()
    again = client.acquire()
    assert again.session_id == first.session_id
    assert first.created and not again.created


def test_the_context_manager_heartbeats_in_the_background_and_releases_on_exit(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)

    with client as seat:
        assert client.heartbeating
        first = seat.expires_at
        assert first is not None
        wait_until(
            lambda: client.seat and client.seat.expires_at and client.seat.expires_at > first,
            timeout=5,
            message="a background heartbeat",
        )
        assert client.check().session_id == seat.session_id

    assert not client.heartbeating
    assert client.seat is None
    assert server.live_sessions(lic.id) == []
    ended = [s for s in server.sessions(lic.id) if s["id"] == seat.session_id]
    assert ended and ended[0]["end_reason"] == "released"


def test_the_decorator_holds_a_seat_while_the_function_runs(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)
    seen: list[str] = []

    @client
    def licensed_work(x: int) -> int:
        seen.append(client.check().session_id)
        with pytest.raises(NoSeatsAvailable):
            make_client(server.url, lic.key).acquire()
        return x * 2

    assert licensed_work(21) == 42
    assert len(seen) == 1
    assert client.seat is None
    make_client(server.url, lic.key).acquire()


def test_an_unknown_key_raises_license_not_found(
    server: Server, make_client: ClientFactory
) -> None:
    client = make_client(server.url, "CODITECT-0000-0000-0000-0000-0000")
    with pytest.raises(LicenseNotFound) as missing:
        client.acquire()
    assert missing.value.status == 404
    with pytest.raises(NotAcquired):
        client.check()


def test_a_hardware_id_the_server_refuses_raises_invalid_request(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key, hardware_id="x" * 300)
    with pytest.raises(InvalidRequest) as refused:
        client.acquire()
    assert refused.value.code == "invalid_hardware_id"
    assert refused.value.status == 400


def test_a_suspended_license_ends_the_seat_and_refuses_new_ones(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=2)
    lost: list[SeatwardenError] = []
    client = make_client(server.url, lic.key, on_lost=lost.append)
    client.start(handle_signals=False)

    server.update_license(lic.id, "--status", "suspended")

    wait_until(lambda: lost, timeout=10, message="the heartbeat thread to report the loss")
    assert isinstance(lost[0], LicenseSuspended)
    assert lost[0].status == 403
    with pytest.raises(LicenseSuspended):
        client.check()
    assert client.status().lost == "license_suspended"
    with pytest.raises(LicenseSuspended):
        make_client(server.url, lic.key).acquire()


def test_heartbeating_a_released_session_raises_session_ended(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    holder = make_client(server.url, lic.key)
    seat = holder.acquire()
    # Another process of this machine (same hardware id) releases the
    # session; this one learns of it on its next heartbeat.
    twin = make_client(server.url, lic.key, hardware_id=holder.hardware_id)
    assert twin.acquire().session_id == seat.session_id
    twin.release()
    with pytest.raises(SessionEnded) as ended:
        holder.heartbeat()
    assert ended.value.status == 410
    assert ended.value.end_reason == "released"


def test_validate_checks_the_held_token_locally_and_asks_the_server_without_a_seat(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)

    asked = client.validate()
    assert (asked.valid, asked.status, asked.source) == (True, "active", "server")

    seat = client.acquire()
    local = client.validate()
    assert (local.valid, local.source) == (True, "token")
    assert local.claims is not None and local.claims.session_id == seat.session_id

    missing = make_client(server.url, "CODITECT-0000-0000-0000-0000-0000").validate()
    assert (missing.valid, missing.status) == (False, "not_found")


def test_machines_must_be_activated_when_the_license_limits_them(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=2, max_machines=1)
    client = make_client(server.url, lic.key)
    with pytest.raises(MachineNotActivated):
        client.acquire()

    machine = client.activate(name="build box", platform="linux-x86_64")
    assert machine["hardware_id"] == client.hardware_id
    assert client.acquire().created
    assert client.license_status().machine_activated is True

    with pytest.raises(MachineLimitReached) as full:
        make_client(server.url, lic.key).activate()
    assert full.value.max_machines == 1


def test_the_async_client_acquires_heartbeats_and_releases(
    server: Server, make_async_client: AsyncClientFactory
) -> None:
    lic = server.license(seats=1)

    async def scenario() -> None:
        client = make_async_client(server.url, lic.key)
        other = make_async_client(server.url, lic.key)
        try:
            async with client as seat:
                assert client.heartbeating
                first = seat.expires_at
                assert first is not None
                deadline = time.monotonic() + 5
                while not (
                    client.seat and client.seat.expires_at and client.seat.expires_at > first
                ):
                    assert time.monotonic() < deadline, "no background heartbeat"
                    await asyncio.sleep(0.05)
                with pytest.raises(NoSeatsAvailable):
                    await other.acquire()
                assert (await client.validate()).source == "token"
            assert client.seat is None
            assert (await other.acquire()).created

            held = other.check().session_id

            @other
            async def work() -> str:
                return other.check().session_id

            # The decorator runs on the seat already held, and releases it.
            assert await work() == held
            assert other.seat is None
        finally:
            await client.aclose()
            await other.aclose()

    asyncio.run(scenario())


def test_no_license_key_or_token_appears_in_errors_reprs_or_logs(
    server: Server, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lic = server.license(seats=1)
    # A proxy that makes the server's error messages echo the key, as a
    # careless server (or a proxy's error page) might.
    proxy = FaultProxy(server.url)

    def echo_key(path: str, sent: Any, body: dict[str, Any]) -> dict[str, Any]:
        if "error" in body and isinstance(sent, dict):
            key = str(sent.get("license_key"))
            body["message"] = f"{body['message']} (key {key.lower()})"
            body["detail"] = f"license_key={key}"
        return body

    proxy.rewrite = echo_key
    proxy.start()
    try:
        holder = make_client(proxy.url, lic.key)
        seat = holder.acquire()
        holder.heartbeat()
        token = seat.token
        assert token
        wrong_key = lic.key[:-4] + "ZZZZ"

        texts: list[str] = [repr(holder), repr(seat), str(seat), json.dumps(seat.as_dict())]
        texts.append(json.dumps(holder.status().as_dict()))
        errors: list[SeatwardenError] = []
        refused = [
            make_client(proxy.url, lic.key),  # 409
            make_client(proxy.url, lic.key, hardware_id="x" * 300),  # 400
            make_client(proxy.url, wrong_key),  # 404
        ]
        for client in refused:
            with pytest.raises(SeatwardenError) as caught:
                client.acquire()
            errors.append(caught.value)
        # The key did reach the error bodies: the client removed it.
        assert any("[redacted]" in e.message for e in errors)
        for e in errors:
            texts += [str(e), repr(e), e.message, json.dumps(e.details)]
        holder.release()
    finally:
        proxy.stop()

    texts += [r.getMessage() for r in caplog.records]
    texts += [caplog.text]
    everything = "\n".join(texts)
    for secret in (lic.key, lic.key.lower(), wrong_key, token, token.split(".")[2]):
        assert secret not in everything


def test_the_seat_token_is_an_rs256_jwt_naming_the_servers_key(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    client = make_client(server.url, lic.key)
    seat = client.acquire()
    header = jwt.get_unverified_header(seat.token)
    assert header["alg"] == "RS256"
    assert header["kid"] in client.core.jwks.kids()
    claims = seat.claims
    assert claims is not None
    assert claims.hardware_id == client.hardware_id
    assert claims.lease_exp <= claims.exp


APP_SCRIPT = """
import sys, time
from seatwarden_client import LicenseClient
url, key, how = sys.argv[1:4]
client = LicenseClient(url, key, app="pytest", hardware_id="exiting-app")
client.start()
print(client.seat.session_id, flush=True)
if how == "exit":
    sys.exit(0)  # no release(): the atexit hook gives the seat back
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["sigterm", "sigint", "exit"])
def test_the_seat_is_released_when_the_process_ends(server: Server, how: str) -> None:
    lic = server.license(seats=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", APP_SCRIPT, server.url, lic.key, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        session_id = proc.stdout.readline().strip()
        assert session_id, proc.stderr.read() if proc.stderr else ""
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigint":
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    # The handlers that were there before still run: the default action
    # for SIGTERM, KeyboardInterrupt for SIGINT.
    # (An uncaught KeyboardInterrupt ends Python by SIGINT, too.)
    expected = {"sigterm": -signal.SIGTERM, "sigint": -signal.SIGINT, "exit": 0}[how]
    assert code == expected, stderr
    if how == "sigint":
        assert "KeyboardInterrupt" in stderr
    (session,) = server.sessions(lic.id)
    assert session["id"] == session_id
    assert session["end_reason"] == "released"
