"""When to retry a request, and how long to wait first.

Only 429 and 503 are retried: they are the server saying "not now", with
``Retry-After`` telling when. Everything else is an answer. A connection
failure is not retried here either: the caller decides (the heartbeat
loop keeps going on its token; a one-off call reports it at once instead
of hanging a command line for a minute).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

RETRYABLE_STATUSES = frozenset({429, 503})


class Random(Protocol):
    """The part of :class:`random.Random` the policy uses (injectable)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    ``attempts`` counts every try, the first included, so 1 means "never
    retry". Without ``Retry-After`` the n-th wait is a random point in
    ``[backoff/2, backoff]`` with ``backoff = min(max_delay, base_delay *
    2**n)``: jitter keeps many clients that failed together from coming
    back together. With ``Retry-After`` the wait is that long plus up to
    ``base_delay`` of jitter, never less than the server asked for. A
    ``Retry-After`` beyond ``max_retry_after`` is not waited out at all:
    the error is raised so that a person or a scheduler can decide.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    rng: Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """The wait before retry number ``retry`` (0-based), or ``None``
        when no retry should happen."""
        if retry + 1 >= self.attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return retry_after + self.rng.uniform(0.0, self.base_delay)
        backoff = min(self.max_delay, self.base_delay * (2**retry))
        return self.rng.uniform(backoff / 2, backoff)


NO_RETRIES = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now is None:
        import time

        now = time.time()
    return max(0.0, when.timestamp() - now)
