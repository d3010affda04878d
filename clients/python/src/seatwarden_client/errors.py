"""Exceptions: one class per server error code, plus the client's own.

The server answers every error as ``{"error": "<code>", "message": "<text>"}``
and the code is the stable part, so the mapping is by code, not by status.
An application catches what it can act on (``NoSeatsAvailable``: wait or
queue; ``SessionGone``: acquire again; ``LicenseUnusable``: tell the user)
and lets the rest surface as ``SeatwardenError``.

Secrets never reach an exception: every message passes through
:func:`redact` with the license key and tokens the client holds, because
exception texts end up in logs, crash reports and bug trackers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Returns ``text`` with every occurrence of each secret replaced.

    Secrets shorter than 8 characters are left alone: replacing them would
    mangle ordinary words without protecting anything worth protecting.
    The comparison is case-insensitive because the server forgives the
    case of license keys, and may echo them back in either.
    """
    for secret in secrets:
        if not secret or len(secret) < 8:
            continue
        lowered = text.lower()
        needle = secret.lower()
        if needle not in lowered:
            continue
        out: list[str] = []
        start = 0
        while True:
            index = lowered.find(needle, start)
            if index < 0:
                break
            out.append(text[start:index])
            out.append(REDACTED)
            start = index + len(needle)
        out.append(text[start:])
        text = "".join(out)
    return text


class SeatwardenError(Exception):
    """Base of every error this package raises.

    ``code`` is the server's error code (or the client's own, such as
    ``server_unreachable``); ``status`` the HTTP status, ``None`` when no
    response was involved; ``details`` the remaining fields of the error
    body (``seats_used``, ``end_reason``, ...).
    """

    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r},"
            f" message={self.message!r})"
        )


# --- request problems -------------------------------------------------------


class InvalidRequest(SeatwardenError):
    """400: the server refused the request's shape (``invalid_body``,
    ``invalid_hardware_id``, ...). A bug in the caller or this client."""

    default_code = "invalid_body"


class Unauthorized(SeatwardenError):
    """401: the seat token (or access token) is missing, invalid or another
    session's."""

    default_code = "unauthorized"


class IdentityRequired(Unauthorized):
    """401: the license requires a logged-in member of its organization."""

    default_code = "identity_required"


class Forbidden(SeatwardenError):
    """403 ``forbidden``: the credential is not allowed to do this."""

    default_code = "forbidden"


# --- the license -------------------------------------------------------------


class LicenseNotFound(SeatwardenError):
    """404: no license has this key."""

    default_code = "license_not_found"


class LicenseUnusable(SeatwardenError):
    """403: the license exists but grants no seats now. Its live sessions
    have ended too; their next heartbeat gets the same error."""


class LicenseSuspended(LicenseUnusable):
    default_code = "license_suspended"


class LicenseExpired(LicenseUnusable):
    default_code = "license_expired"


class LicenseInactive(LicenseUnusable):
    default_code = "license_inactive"


class MachineNotActivated(SeatwardenError):
    """403: the license limits machines and this one is not activated."""

    default_code = "machine_not_activated"


class MachineLimitReached(SeatwardenError):
    """409: every machine slot of the license is taken."""

    default_code = "machine_limit_reached"

    @property
    def max_machines(self) -> int | None:
        value = self.details.get("max_machines")
        return value if isinstance(value, int) else None


class NoSeatsAvailable(SeatwardenError):
    """409: every seat is in use. Wait, queue (``acquire(wait=True)``) or
    tell the user who holds them."""

    default_code = "no_seats_available"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = 409,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code=code, status=status, details=details, retry_after=retry_after
        )
        used = self.details.get("seats_used")
        limit = self.details.get("max_seats")
        self.seats_used: int | None = used if isinstance(used, int) else None
        self.max_seats: int | None = limit if isinstance(limit, int) else None


# --- the session ---------------------------------------------------------------


class SessionNotFound(SeatwardenError):
    """404: the server knows no such session."""

    default_code = "session_not_found"


class SessionGone(SeatwardenError):
    """410: the session is over; the seat is no longer held. Acquire again
    (or tell the user, for ``SessionRevoked``)."""

    @property
    def end_reason(self) -> str | None:
        value = self.details.get("end_reason")
        return value if isinstance(value, str) else None


class SessionExpired(SessionGone):
    """The lease lapsed (heartbeats stopped for longer than the lease)."""

    default_code = "session_expired"


class SessionEnded(SessionGone):
    """The session was released."""

    default_code = "session_ended"


class SessionRevoked(SessionGone):
    """An owner or administrator took the seat back."""

    default_code = "session_revoked"


# --- borrowing and queueing ------------------------------------------------------


class BorrowingDisabled(SeatwardenError):
    """403: the license allows no borrowing (its ``max_borrow_hours`` is 0)."""

    default_code = "borrowing_disabled"


class BorrowTooLong(SeatwardenError):
    """400: more hours than the license's ``max_borrow_hours``."""

    default_code = "borrow_too_long"

    @property
    def max_borrow_hours(self) -> int | None:
        value = self.details.get("max_borrow_hours")
        return value if isinstance(value, int) else None


class InvalidHours(InvalidRequest):
    """400: ``hours`` must be a whole number of at least 1."""

    default_code = "invalid_hours"


class QueueTicketNotFound(SeatwardenError):
    """404: the queue ticket is unknown or dropped out (it missed three
    polls, or its hold expired)."""

    default_code = "queue_ticket_not_found"


class QueueTimeout(SeatwardenError):
    """``acquire(wait=True, timeout=...)`` waited in the queue for longer
    than its timeout; the ticket has been given up."""

    default_code = "queue_timeout"


# --- transient trouble ------------------------------------------------------------


class RateLimited(SeatwardenError):
    """429 after the configured retries; ``retry_after`` says when the
    server would take the next request."""

    default_code = "rate_limited"


class ServerUnavailable(SeatwardenError):
    """503 after the configured retries (``ledger_unavailable``,
    ``store_unavailable``, ``busy``)."""

    default_code = "server_unavailable"


class ServerUnreachable(SeatwardenError):
    """No answer at all: connection refused, DNS, timeout. The client keeps
    running on its verified token until the token's ``exp``."""

    default_code = "server_unreachable"


class ServerError(SeatwardenError):
    """Any other answer that is not a success: a 5xx without a known code,
    or a body that is not seatwarden's JSON."""

    default_code = "server_error"


# --- the client's own ------------------------------------------------------------------


class InvalidToken(SeatwardenError):
    """A seat token or license file failed verification: a bad signature,
    an unknown ``kid``, another algorithm than RS256, the wrong issuer,
    session or license. Refused even offline: a token we can't verify is
    no better than none."""

    default_code = "invalid_token"


class LicenseExpiredOffline(SeatwardenError):
    """The server could not be reached and the seat token's ``exp`` has
    passed: the offline grace the license allows is used up."""

    default_code = "license_expired_offline"


class NotAcquired(SeatwardenError):
    """The operation needs a held seat and none is held."""

    default_code = "not_acquired"


ERRORS_BY_CODE: dict[str, type[SeatwardenError]] = {
    "invalid_body": InvalidRequest,
    "invalid_license_key": InvalidRequest,
    "invalid_hardware_id": InvalidRequest,
    "invalid_client_version": InvalidRequest,
    "invalid_os": InvalidRequest,
    "invalid_hostname": InvalidRequest,
    "invalid_metadata": InvalidRequest,
    "invalid_name": InvalidRequest,
    "invalid_platform": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "unauthorized": Unauthorized,
    "invalid_credentials": Unauthorized,
    "identity_required": IdentityRequired,
    "forbidden": Forbidden,
    "license_not_found": LicenseNotFound,
    "license_suspended": LicenseSuspended,
    "license_expired": LicenseExpired,
    "license_inactive": LicenseInactive,
    "machine_not_activated": MachineNotActivated,
    "machine_limit_reached": MachineLimitReached,
    "no_seats_available": NoSeatsAvailable,
    "session_not_found": SessionNotFound,
    "session_expired": SessionExpired,
    "session_ended": SessionEnded,
    "session_revoked": SessionRevoked,
    "borrowing_disabled": BorrowingDisabled,
    "borrow_too_long": BorrowTooLong,
    "invalid_hours": InvalidHours,
    "queue_ticket_not_found": QueueTicketNotFound,
    "rate_limited": RateLimited,
    "ledger_unavailable": ServerUnavailable,
    "store_unavailable": ServerUnavailable,
    "busy": ServerUnavailable,
}

# Status codes whose unknown error codes still have an obvious class.
_ERRORS_BY_STATUS: dict[int, type[SeatwardenError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    410: SessionGone,
    429: RateLimited,
    503: ServerUnavailable,
}


def error_from_response(
    status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
) -> SeatwardenError:
    """Builds the exception for an error answer, secrets redacted."""
    secrets = tuple(secrets)
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        code: str = body["error"]
        raw_message = body.get("message")
        message = raw_message if isinstance(raw_message, str) else code
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
    else:
        code = "server_error" if status >= 500 else f"http_{status}"
        message = f"unexpected HTTP {status} answer"
        details = {}
    cls = (
        ERRORS_BY_CODE.get(code)
        or _ERRORS_BY_STATUS.get(status)
        or (ServerError if status >= 500 else SeatwardenError)
    )
    # Details are data for programs; a string in them is redacted too.
    clean = {k: redact(v, secrets) if isinstance(v, str) else v for k, v in details.items()}
    return cls(
        redact(message, secrets),
        code=code,
        status=status,
        details=clean,
        retry_after=retry_after,
    )
