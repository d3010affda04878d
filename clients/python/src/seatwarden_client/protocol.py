"""The protocol as sans-IO flows, shared by the sync and async clients.

Each operation (acquire, heartbeat, a queue wait, a JWKS refresh, ...) is
written once, as a generator that *yields* what it needs done (a
:class:`Call` to make, a :class:`Sleep` to take) and is *sent* the result
(a :class:`Reply`, or ``None`` after a sleep). A network failure is thrown
into the generator as :class:`~.errors.ServerUnreachable`. The two drivers
in :mod:`.transport` (one blocking on ``httpx.Client``, one awaiting
``httpx.AsyncClient``) are the only code that differs between
:class:`~.client.LicenseClient` and :class:`~.aio.AsyncLicenseClient`, so
retries, queue waits, offline handling and token checks can't drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import SeatwardenError, error_from_response
from .retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """An HTTP request for the driver to make, relative to the base URL."""

    method: str
    path: str
    json: Mapping[str, Any] | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Sleep:
    """A pause for the driver to take (a retry delay, a queue poll)."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, parsed JSON body (``None`` if not JSON) and
    headers with lower-case names."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Step = Call | Sleep
Flow = Generator[Step, Reply | None, T]


def request(
    call: Call,
    policy: RetryPolicy,
    secrets: Callable[[], Iterable[str | None]],
    now: Callable[[], float] | None = None,
) -> Flow[Reply]:
    """Makes ``call``; retries 429 and 503 as ``policy`` allows.

    Returns any 2xx reply; raises the mapped exception for every other
    answer (redacting ``secrets()`` from its message).
    """
    retry = 0
    while True:
        reply = yield call
        assert reply is not None, "the driver must answer a Call with a Reply"
        if reply.ok:
            return reply
        retry_after = parse_retry_after(reply.headers.get("retry-after"), now() if now else None)
        if reply.status in RETRYABLE_STATUSES:
            delay = policy.delay(retry, retry_after)
            if delay is not None:
                yield Sleep(delay)
                retry += 1
                continue
        raise error_from_response(
            reply.status, reply.body, retry_after=retry_after, secrets=secrets()
        )


def body_of(reply: Reply) -> dict[str, Any]:
    """The reply's JSON object, or a clear error when it is something else
    (a proxy's HTML page, say)."""
    if not isinstance(reply.body, dict):
        raise SeatwardenError(
            f"the server answered HTTP {reply.status} without a JSON object",
            code="server_error",
            status=reply.status,
        )
    return reply.body
