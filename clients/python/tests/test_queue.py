"""The seat queue: FIFO across nodes, holds that expire, waiting clients.

Two server processes share one PostgreSQL database, one Redis and one
signing key, as the nodes of a deployment do. A freed seat is held for the
head of the line for 2 s (``queue.hold_secs``); tickets are polled every
second (``queue.poll_secs``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from conftest import ClientFactory
from harness import Backend, Server, Servers, make_backend, wait_until

from seatwarden_client import (
    LicenseClient,
    QueueStatus,
    QueueTicketNotFound,
    Seat,
    SeatwardenError,
)

SETTINGS: dict[str, str | int] = {
    "SEATS__LEASE_TTL_SECS": 4,
    "SEATS__HEARTBEAT_INTERVAL_SECS": 1,
    "QUEUE__HOLD_SECS": 2,
    "QUEUE__POLL_SECS": 1,
}


@pytest.fixture(scope="module")
def nodes(servers: Servers) -> tuple[Server, Server]:
    backend = make_backend("shared")
    first = servers.start(backend, SETTINGS, key="cluster", name="node-1")
    second = servers.start(backend, SETTINGS, key="cluster", name="node-2")
    return first, second


def ready_while_polling(
    waiter: LicenseClient, *others: LicenseClient, timeout: float = 10
) -> QueueStatus:
    """Polls ``waiter`` until a seat is held for it, polling ``others``
    too: a ticket that misses three polls drops out of the line."""

    def poll() -> QueueStatus | None:
        for other in others:
            other.poll_queue()
        status = waiter.poll_queue()
        return status if status.ready else None

    found: QueueStatus = wait_until(
        poll, timeout=timeout, interval=0.3, message="a seat to be held for the ticket"
    )
    return found


def queued(result: Seat | QueueStatus) -> QueueStatus:
    assert isinstance(result, QueueStatus), f"expected a place in the queue, got {result!r}"
    return result


def test_two_waiters_on_two_nodes_get_the_seat_in_fifo_order(
    nodes: tuple[Server, Server], make_client: ClientFactory
) -> None:
    one, two = nodes
    lic = one.license(seats=1)
    holder = make_client(one.url, lic.key)
    holder.acquire()
    early = make_client(one.url, lic.key)
    late = make_client(two.url, lic.key)

    first = queued(early.join_queue())
    second = queued(late.join_queue())
    assert (first.position, second.position) == (1, 2)
    assert first.state == second.state == "waiting"
    assert first.poll_after_secs == 1

    holder.release()

    ready = ready_while_polling(early, late)
    assert ready.hold_expires_at is not None
    # The head keeps its place while the seat is held for it.
    behind = late.poll_queue()
    assert (behind.state, behind.position) == ("waiting", 2)
    with pytest.raises(SeatwardenError) as not_yet:
        late.claim()  # not at the head, and no wait: 409
    assert not_yet.value.status == 409

    seat = early.claim()
    assert seat.created

    early.release()
    ready_while_polling(late)
    assert late.claim().created


def test_a_ready_ticket_that_is_not_claimed_passes_the_seat_on_when_its_hold_expires(
    nodes: tuple[Server, Server], make_client: ClientFactory
) -> None:
    one, two = nodes
    lic = one.license(seats=1)
    holder = make_client(one.url, lic.key)
    holder.acquire()
    dawdler = make_client(two.url, lic.key)
    patient = make_client(one.url, lic.key)
    queued(dawdler.join_queue())
    queued(patient.join_queue())

    holder.release()
    ready_while_polling(dawdler, patient)
    # The dawdler never claims (nor polls again); the patient one keeps
    # polling its ticket and gets the seat once the 2 s hold is over.
    ready = ready_while_polling(patient, timeout=15)
    assert ready.hold_expires_at is not None
    assert patient.claim().created
    with pytest.raises(SeatwardenError):
        dawdler.claim()


def test_acquire_with_wait_queues_until_a_seat_is_free_and_reports_progress(
    nodes: tuple[Server, Server], make_client: ClientFactory
) -> None:
    one, two = nodes
    lic = one.license(seats=1)
    holder = make_client(one.url, lic.key)
    holder.acquire()
    waiter = make_client(two.url, lic.key)
    progress: list[QueueStatus] = []
    result: list[Seat | BaseException] = []

    def wait_for_seat() -> None:
        try:
            result.append(waiter.acquire(wait=True, timeout=30, on_progress=progress.append))
        except BaseException as e:  # noqa: BLE001 - reported below
            result.append(e)

    thread = threading.Thread(target=wait_for_seat, daemon=True)
    thread.start()
    wait_until(lambda: progress or result, timeout=10, message="the waiter to be queued")
    assert progress, result
    assert progress[0].position == 1

    holder.release()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(result[0], Seat), result
    assert result[0].created
    assert any(p.ready for p in progress)
    assert waiter.core.pending_ticket() is None


def test_leaving_the_queue_gives_up_the_ticket(
    nodes: tuple[Server, Server], make_client: ClientFactory
) -> None:
    one, two = nodes
    lic = one.license(seats=1)
    make_client(one.url, lic.key).acquire()
    waiter = make_client(two.url, lic.key)
    ticket = queued(waiter.join_queue()).queue_ticket

    assert waiter.leave_queue() is True
    with pytest.raises(QueueTicketNotFound):
        waiter.poll_queue(ticket)


@pytest.fixture
def embedded(servers: Servers) -> Iterator[Server]:
    server = servers.start(Backend("embedded"), SETTINGS, name="embedded-queue")
    yield server
    server.stop()


def test_the_embedded_server_queues_waiting_clients_too(
    embedded: Server, make_client: ClientFactory
) -> None:
    lic = embedded.license(seats=1)
    holder = make_client(embedded.url, lic.key)
    holder.acquire()
    waiter = make_client(embedded.url, lic.key)
    assert queued(waiter.join_queue()).position == 1
    holder.release()
    ready_while_polling(waiter)
    assert waiter.claim().created
