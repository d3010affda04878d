"""What the client hands back: seats, queue positions, validations.

Plain frozen dataclasses, parsed from the server's JSON in one place. A
token never shows in a ``repr`` (``field(repr=False)``): these objects get
printed and logged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import SeatwardenError
from .tokens import LicenseClaims, SeatClaims

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 as the server writes it (``2026-11-26T22:14:37.334Z``) to an
    aware datetime. Python 3.10's ``fromisoformat`` takes neither ``Z`` nor
    fractions of other than 3 or 6 digits, hence the normalizing."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _require_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise SeatwardenError(f"the server's answer lacks {name!r}", code="server_error")
    return value


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Seat:
    """A held seat: the session, its lease, and its verified token.

    ``token_expires_at`` is the verified token's ``exp``: how long the app
    may run without reaching the server. ``expires_at`` is the lease's end
    as the server last said it. A borrowed seat has ``borrowed_until``
    (and needs no heartbeats until then).
    """

    session_id: str
    license_id: str
    org_id: str
    hardware_id: str
    expires_at: datetime | None
    heartbeat_interval_secs: float
    max_seats: int
    tier: str
    features: tuple[str, ...]
    token_expires_at: datetime
    seats_used: int | None = None
    borrowed_until: datetime | None = None
    created: bool = False
    claims: SeatClaims | None = field(default=None, repr=False, compare=False)
    token: str = field(default="", repr=False, compare=False)

    @property
    def borrowed(self) -> bool:
        return self.borrowed_until is not None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json`` output and logs: everything but the token."""
        out = {k: v for k, v in asdict(self).items() if k not in ("token", "claims")}
        for k in ("expires_at", "token_expires_at", "borrowed_until"):
            out[k] = iso(out[k])
        out["features"] = list(self.features)
        out["borrowed"] = self.borrowed
        return out


@dataclass(frozen=True)
class QueueStatus:
    """A place in a license's seat queue. ``position`` 1 is the head;
    ``state`` is ``waiting`` or ``ready`` (a seat is held for this ticket
    until ``hold_expires_at``)."""

    queue_ticket: str
    position: int | None
    state: str
    poll_after_secs: float
    estimated_wait_secs: float | None = None
    hold_expires_at: datetime | None = None
    queue_length: int | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @classmethod
    def parse(cls, body: dict[str, Any], default_state: str = "waiting") -> QueueStatus:
        poll = body.get("poll_after_secs")
        est = body.get("estimated_wait_secs")
        state = body.get("state")
        return cls(
            queue_ticket=_require_str(body, "queue_ticket"),
            position=_int_or_none(body.get("position")),
            state=state if isinstance(state, str) else default_state,
            poll_after_secs=float(poll) if isinstance(poll, (int, float)) else 1.0,
            estimated_wait_secs=float(est) if isinstance(est, (int, float)) else None,
            hold_expires_at=parse_time(body.get("hold_expires_at")),
            queue_length=_int_or_none(body.get("queue_length")),
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hold_expires_at"] = iso(self.hold_expires_at)
        return out


@dataclass(frozen=True)
class Validation:
    """Whether the license is usable here.

    ``source`` says who answered: ``token`` when a held seat token was
    verified locally (offline-capable), ``server`` for ``POST
    /licenses/validate``.
    """

    valid: bool
    status: str
    source: str
    expires_at: datetime | None = None
    machine_activated: bool | None = None
    claims: SeatClaims | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "status": self.status,
            "source": self.source,
            "expires_at": iso(self.expires_at),
            "machine_activated": self.machine_activated,
        }


@dataclass(frozen=True)
class Release:
    """A released session: when, and how it ended (``released``, or how it
    had ended before)."""

    session_id: str
    ended_at: datetime | None
    end_reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "ended_at": iso(self.ended_at),
            "end_reason": self.end_reason,
        }


@dataclass(frozen=True)
class LicenseFile:
    """A signed license file and its verified claims."""

    license_id: str
    kid: str
    claims: LicenseClaims
    text: str = field(repr=False)


@dataclass(frozen=True)
class SeatStatus:
    """What the client knows right now, without asking the server."""

    held: bool
    hardware_id: str
    seat: Seat | None
    offline: bool
    offline_since: datetime | None
    last_contact: datetime | None
    lost: str | None
    heartbeating: bool
    queue: QueueStatus | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "held": self.held,
            "hardware_id": self.hardware_id,
            "seat": self.seat.as_dict() if self.seat else None,
            "offline": self.offline,
            "offline_since": iso(self.offline_since),
            "last_contact": iso(self.last_contact),
            "lost": self.lost,
            "heartbeating": self.heartbeating,
            "queue": self.queue.as_dict() if self.queue else None,
        }
