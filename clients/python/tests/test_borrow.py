"""Borrowing: a seat held on purpose for hours, offline, returned early."""

from __future__ import annotations

import time

import pytest
from conftest import ClientFactory
from harness import Backend, Server, Servers

from seatwarden_client import (
    BorrowingDisabled,
    BorrowTooLong,
    InvalidHours,
    NoSeatsAvailable,
)

SETTINGS: dict[str, str | int] = {
    "SEATS__LEASE_TTL_SECS": 4,
    "SEATS__HEARTBEAT_INTERVAL_SECS": 1,
    "SEATS__TOKEN_SKEW_SECS": 1,
}


@pytest.fixture(scope="module")
def server(servers: Servers) -> Server:
    return servers.start(Backend("embedded"), SETTINGS, name="borrow")


def test_a_borrowed_seat_needs_no_heartbeats_and_its_token_lasts_exactly_the_loan(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, max_borrow_hours=8)
    client = make_client(server.url, lic.key)

    seat = client.borrow(2)

    assert seat.borrowed and seat.borrowed_until is not None
    assert abs(seat.borrowed_until.timestamp() - (time.time() + 2 * 3600)) < 60
    # The token is valid exactly as long as the loan: no grace, no skew.
    assert abs((seat.token_expires_at - seat.borrowed_until).total_seconds()) < 1
    assert client.core.next_beat_delay() is None
    assert client.heartbeat().session_id == seat.session_id
    with pytest.raises(NoSeatsAvailable):
        make_client(server.url, lic.key).acquire()


def test_a_borrowed_seat_outlives_the_process_and_is_returned_early(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, max_borrow_hours=8)
    first = make_client(server.url, lic.key)
    seat = first.borrow(1)
    first.close()  # leaving does not return a borrowed seat
    with pytest.raises(NoSeatsAvailable):
        make_client(server.url, lic.key).acquire()

    later = make_client(server.url, lic.key, hardware_id=first.hardware_id)
    kept = later.borrowed()
    assert kept is not None and kept.session_id == seat.session_id
    assert later.acquire().session_id == seat.session_id, "acquire uses the loan"

    returned = later.release()
    assert returned is not None and returned.session_id == seat.session_id
    assert later.borrowed() is None
    assert make_client(server.url, lic.key).acquire().created, "the seat is free again"


def test_a_borrowed_seat_validates_with_the_server_stopped(
    servers: Servers, make_client: ClientFactory
) -> None:
    server = servers.start(Backend("embedded"), SETTINGS, name="borrow-offline")
    try:
        lic = server.license(seats=1, max_borrow_hours=8)
        client = make_client(server.url, lic.key)
        seat = client.borrow(3)
        server.kill()
        later = make_client(server.url, lic.key, hardware_id=client.hardware_id)
        result = later.validate()
        assert (result.valid, result.source) == (True, "token")
        assert later.check().session_id == seat.session_id
    finally:
        server.stop()


def test_borrowing_is_refused_when_the_license_allows_none(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1)
    with pytest.raises(BorrowingDisabled) as refused:
        make_client(server.url, lic.key).borrow(1)
    assert refused.value.status == 403


def test_borrowing_longer_than_the_license_allows_raises_borrow_too_long_with_the_limit(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, max_borrow_hours=4)
    with pytest.raises(BorrowTooLong) as refused:
        make_client(server.url, lic.key).borrow(5)
    assert refused.value.status == 400
    assert refused.value.max_borrow_hours == 4


def test_hours_that_are_not_a_whole_positive_number_are_refused_before_any_request(
    make_client: ClientFactory,
) -> None:
    client = make_client("http://127.0.0.1:9", "CODITECT-0000-0000-0000-0000-0000")
    for hours in (0, -1, 1.5, True):
        with pytest.raises(InvalidHours):
            client.borrow(hours)  # type: ignore[arg-type]
