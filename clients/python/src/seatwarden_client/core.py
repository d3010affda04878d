"""The client's state and every operation, as sans-IO flows.

:class:`ClientCore` holds what both clients share: the configuration, the
held seat, whether the server is reachable, a pending queue ticket, the
JWKS cache. Each public operation is a generator (see :mod:`.protocol`)
that :class:`~.client.LicenseClient` drives with blocking httpx and
:class:`~.aio.AsyncLicenseClient` drives on asyncio, so the rules below
exist once:

* Every token the server hands out is verified before it is used (RS256,
  ``kid`` in the JWKS, issuer, session, license and machine); a token that
  fails is refused, online or off.
* A heartbeat that can't reach the server (or gets 429/503/5xx after the
  retries) is not fatal: the app keeps running on its verified token until
  the token's ``exp``, then :class:`~.errors.LicenseExpiredOffline`.
* A heartbeat refused with 401 (the server's signing key was rotated) or
  410 ``session_expired`` (the lease lapsed while we were offline) is
  answered by acquiring again, which gives this machine its session back
  when the seat is still free. Revocation, release and an unusable license
  lose the seat for good.
* A borrowed seat is kept in the cache directory (id and token) so that a
  later process (``seatctl return``) can give it back; it needs no
  heartbeats, and leaving a ``with`` block or the process does not return
  it: borrowing is meant to outlive the process.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from . import fingerprint
from .cache import CacheDir, digest
from .clock import Clock
from .errors import (
    InvalidHours,
    InvalidToken,
    LicenseExpiredOffline,
    NotAcquired,
    QueueTicketNotFound,
    QueueTimeout,
    RateLimited,
    SeatwardenError,
    ServerError,
    ServerUnavailable,
    ServerUnreachable,
    SessionExpired,
    SessionNotFound,
    Unauthorized,
    redact,
)
from .jwks import JWKS_PATH, JwksCache
from .models import (
    LicenseFile,
    QueueStatus,
    Release,
    Seat,
    SeatStatus,
    Validation,
    from_timestamp,
    iso,
    parse_time,
)
from .protocol import Call, Flow, Reply, Sleep, body_of, request
from .retry import RetryPolicy
from .tokens import (
    LICENSE_FILE_TYP,
    SEAT_TOKEN_TYP,
    SeatClaims,
    read_header,
    verify_license_file,
    verify_seat_token,
)

log = logging.getLogger("seatwarden_client")

ACQUIRE_PATH = "/api/v1/licenses/acquire"
BORROW_PATH = "/api/v1/licenses/borrow"
VALIDATE_PATH = "/api/v1/licenses/validate"
ACTIVATE_PATH = "/api/v1/licenses/activate"
SESSIONS_PATH = "/api/v1/licenses/sessions"
QUEUE_PATH = "/api/v1/licenses/queue"

#: Errors after which the server may well answer again soon: the app goes
#: on running on its token meanwhile.
TRANSIENT = (ServerUnreachable, ServerUnavailable, RateLimited, ServerError)

ProgressCallback = Callable[[QueueStatus], None]


def _normalize_key(key: str) -> str:
    return key.strip().upper()


def _host_facts() -> dict[str, str]:
    """The optional client facts the server keeps with a session, within
    its limits (os ≤ 128, hostname ≤ 253 characters)."""
    facts = {}
    os_name = f"{platform.system()} {platform.release()}".strip()
    if os_name:
        facts["os"] = os_name[:128]
    host = socket.gethostname()
    if host:
        facts["hostname"] = host[:253]
    return facts


class ClientCore:
    """State and flows shared by the sync and async clients."""

    def __init__(
        self,
        url: str,
        license_key: str,
        *,
        app: str = "seatwarden",
        hardware_id: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        client_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        access_token: str | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock,
        jwks_ttl: float = 3600.0,
        heartbeat_jitter: float = 0.2,
        report_host: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if not url:
            raise ValueError("the server URL is required")
        if not license_key or not license_key.strip():
            raise ValueError("the license key is required")
        self.url = url.rstrip("/")
        self._license_key = license_key.strip()
        self.app = app
        self.cache = CacheDir(cache_dir)
        self.hardware_id = hardware_id or fingerprint.hardware_id(app, cache=self.cache)
        self.client_version = client_version
        self.metadata = dict(metadata) if metadata else None
        self._access_token = access_token
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.jwks = JwksCache(self.url, self.cache, clock, jwks_ttl)
        self.heartbeat_jitter = min(max(heartbeat_jitter, 0.0), 0.9)
        self._facts = _host_facts() if report_host else {}
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._seat: Seat | None = None
        self._offline_since: float | None = None
        self._last_contact: float | None = None
        self._lost: SeatwardenError | None = None
        self._queue: QueueStatus | None = None
        self._restored = False

    # --- bookkeeping ----------------------------------------------------

    def __repr__(self) -> str:
        return f"<seatwarden client {self.url} license …{self.key_hint} session={self.session_id}>"

    @property
    def key_hint(self) -> str:
        """The last four characters of the key, as the server shows it."""
        return self._license_key[-4:]

    @property
    def seat(self) -> Seat | None:
        return self._seat

    @property
    def session_id(self) -> str | None:
        seat = self._seat
        return seat.session_id if seat else None

    @property
    def lost(self) -> SeatwardenError | None:
        """Why the seat was lost, when it was (cleared by the next acquire)."""
        return self._lost

    def secrets(self) -> list[str | None]:
        """Everything that must never appear in a message or log line."""
        seat = self._seat
        return [self._license_key, seat.token if seat else None, self._access_token]

    def scrub(self, text: str) -> str:
        return redact(text, self.secrets())

    def _request(self, call: Call) -> Flow[Reply]:
        return request(call, self.retry, self.secrets, self.clock.time)

    def _contact_ok(self) -> None:
        with self._lock:
            if self._offline_since is not None:
                log.info("seatwarden server reachable again")
            self._offline_since = None
            self._last_contact = self.clock.time()

    def _set_seat(self, seat: Seat) -> None:
        with self._lock:
            self._seat = seat
            self._lost = None

    def lose(self, error: SeatwardenError) -> None:
        """Records that the seat is gone, and why."""
        with self._lock:
            seat = self._seat
            self._seat = None
            self._lost = error
        if seat is not None:
            if seat.borrowed:
                self.cache.remove(self._borrow_file)
            log.warning("seat lost (session %s): %s", seat.session_id, self.scrub(str(error)))

    def _drop_seat(self) -> Seat | None:
        with self._lock:
            seat, self._seat = self._seat, None
        if seat is not None and seat.borrowed:
            self.cache.remove(self._borrow_file)
        return seat

    def status(self, heartbeating: bool = False) -> SeatStatus:
        with self._lock:
            seat = self._seat
            return SeatStatus(
                held=seat is not None,
                hardware_id=self.hardware_id,
                seat=seat,
                offline=self._offline_since is not None,
                offline_since=(
                    from_timestamp(self._offline_since) if self._offline_since else None
                ),
                last_contact=(from_timestamp(self._last_contact) if self._last_contact else None),
                lost=self._lost.code if self._lost else None,
                heartbeating=heartbeating,
                queue=self._queue,
            )

    def check(self) -> Seat:
        """The held seat, or the error that lost it (``NotAcquired`` if none
        was ever held). Apps call it wherever a licensed feature starts."""
        with self._lock:
            seat, lost = self._seat, self._lost
        if seat is not None:
            if seat.token_expires_at.timestamp() <= self.clock.time():
                if self._offline_since is not None or seat.borrowed:
                    raise LicenseExpiredOffline(
                        f"the seat token expired at {iso(seat.token_expires_at)}"
                        " and could not be renewed"
                    )
                # Online, but nobody heartbeated: the lease is long gone.
                raise SessionExpired(
                    f"the seat token expired at {iso(seat.token_expires_at)};"
                    " heartbeat (or start()) to keep a seat"
                )
            return seat
        if lost is not None:
            raise lost
        raise NotAcquired("no seat is held; call acquire() first")

    def next_beat_delay(self) -> float | None:
        """Seconds until the next heartbeat, jittered below the server's
        interval so that clients started together drift apart (never above
        it: the lease is only a little longer than the interval). While
        offline, no later than the token's expiry, so that its end is
        noticed on time. ``None``: nothing to heartbeat."""
        with self._lock:
            seat = self._seat
            offline = self._offline_since is not None
        if seat is None or seat.borrowed:
            return None
        interval = max(0.2, float(seat.heartbeat_interval_secs))
        delay = interval * self._rng.uniform(1.0 - self.heartbeat_jitter, 1.0)
        if offline:
            remaining = seat.token_expires_at.timestamp() - self.clock.time()
            delay = min(delay, max(0.2, remaining + 0.05))
        return delay

    # --- request bodies -----------------------------------------------------

    def _acquire_body(self, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "license_key": self._license_key,
            "hardware_id": self.hardware_id,
        }
        if self.metadata:
            body["metadata"] = self.metadata
        if self.client_version:
            body["client_version"] = self.client_version
        body.update(self._facts)
        body.update(extra)
        return body

    # --- tokens ----------------------------------------------------------------

    def _key_for(self, kid: str) -> Flow[Any]:
        """The public key named ``kid``: from the cache when it is fresh and
        has it; else fetched (an unknown ``kid`` means a rotated key). A
        stale key still serves when the server can't be reached."""
        found = self.jwks.lookup(kid)
        if found.key is not None and found.fresh:
            return found.key
        try:
            reply = yield from self._request(Call("GET", JWKS_PATH))
            self.jwks.update(reply.body)
        except TRANSIENT as e:
            if found.key is not None:
                return found.key
            raise InvalidToken(
                f"the token is signed with key {kid!r}, which is not in the cached JWKS,"
                f" and the JWKS could not be fetched ({e.code})"
            ) from None
        found = self.jwks.lookup(kid)
        if found.key is None:
            raise InvalidToken(f"the token is signed with an unknown key (kid {kid!r})")
        return found.key

    def _verify_seat(
        self, token: str, *, session_id: str | None, license_id: str | None
    ) -> Flow[SeatClaims]:
        header = read_header(token, SEAT_TOKEN_TYP)
        key = yield from self._key_for(header.kid)
        return verify_seat_token(
            token,
            key,
            session_id=session_id,
            license_id=license_id,
            hardware_id=self.hardware_id,
        )

    def _adopt(self, reply: Reply) -> Flow[Seat]:
        """Turns an acquire or borrow answer into the held seat, after
        verifying its token."""
        body = body_of(reply)
        token = body.get("token")
        session_id = body.get("session_id")
        license_id = body.get("license_id")
        if not all(isinstance(v, str) for v in (token, session_id, license_id)):
            raise SeatwardenError(
                "the server's answer lacks the session, license or token",
                code="server_error",
                status=reply.status,
            )
        assert isinstance(token, str) and isinstance(session_id, str)
        assert isinstance(license_id, str)
        claims = yield from self._verify_seat(token, session_id=session_id, license_id=license_id)
        if claims.expired(self.clock.time()):
            raise InvalidToken(
                "the server issued a token that has already expired"
                " (is this machine's clock right?)"
            )
        interval = body.get("heartbeat_interval_secs")
        seats_used = body.get("seats_used")
        borrowed_until = (
            parse_time(body.get("borrowed_until"))
            if (body.get("borrowed") or body.get("borrowed_until"))
            else None
        )
        seat = Seat(
            session_id=session_id,
            license_id=license_id,
            org_id=claims.org_id,
            hardware_id=claims.hardware_id,
            expires_at=parse_time(body.get("expires_at")),
            heartbeat_interval_secs=(
                float(interval) if isinstance(interval, (int, float)) else 300.0
            ),
            max_seats=claims.max_seats,
            tier=claims.tier,
            features=claims.features,
            token_expires_at=from_timestamp(claims.exp),
            seats_used=seats_used if isinstance(seats_used, int) else None,
            borrowed_until=borrowed_until,
            created=reply.status == 201,
            claims=claims,
            token=token,
        )
        self._set_seat(seat)
        self._contact_ok()
        log.info(
            "seat %s: session %s (%s of %s seats)",
            "acquired" if seat.created else "renewed",
            seat.session_id,
            seat.seats_used,
            seat.max_seats,
        )
        return seat

    # --- borrowed seats on disk ---------------------------------------------------

    @property
    def _borrow_file(self) -> str:
        return (
            f"borrowed-{digest(self.url, _normalize_key(self._license_key), self.hardware_id)}.json"
        )

    @property
    def _queue_file(self) -> str:
        return f"queue-{digest(self.url, _normalize_key(self._license_key), self.hardware_id)}.json"

    def _persist_borrowed(self, seat: Seat) -> None:
        self.cache.write_json(
            self._borrow_file,
            {
                "url": self.url,
                "session_id": seat.session_id,
                "license_id": seat.license_id,
                "token": seat.token,
                "borrowed_until": iso(seat.borrowed_until),
                "expires_at": iso(seat.expires_at),
                "heartbeat_interval_secs": seat.heartbeat_interval_secs,
                "seats_used": seat.seats_used,
            },
        )

    def _restore_borrowed(self) -> Flow[None]:
        """Takes up a seat borrowed by an earlier process, once, if its token
        still verifies and has not expired."""
        if self._restored:
            return
        self._restored = True
        if self._seat is not None:
            return
        data = self.cache.read_json(self._borrow_file)
        if not data:
            return
        token = data.get("token")
        session_id = data.get("session_id")
        license_id = data.get("license_id")
        if not (
            isinstance(token, str) and isinstance(session_id, str) and isinstance(license_id, str)
        ):
            self.cache.remove(self._borrow_file)
            return
        try:
            claims = yield from self._verify_seat(
                token, session_id=session_id, license_id=license_id
            )
        except InvalidToken as e:
            log.warning("ignoring the stored borrowed seat: %s", e)
            return
        if claims.expired(self.clock.time()):
            log.info("the borrowed seat %s has ended", session_id)
            self.cache.remove(self._borrow_file)
            return
        interval = data.get("heartbeat_interval_secs")
        seats_used = data.get("seats_used")
        self._set_seat(
            Seat(
                session_id=session_id,
                license_id=license_id,
                org_id=claims.org_id,
                hardware_id=claims.hardware_id,
                expires_at=parse_time(data.get("expires_at")),
                heartbeat_interval_secs=(
                    float(interval) if isinstance(interval, (int, float)) else 300.0
                ),
                max_seats=claims.max_seats,
                tier=claims.tier,
                features=claims.features,
                token_expires_at=from_timestamp(claims.exp),
                seats_used=seats_used if isinstance(seats_used, int) else None,
                borrowed_until=parse_time(data.get("borrowed_until")) or from_timestamp(claims.exp),
                created=False,
                claims=claims,
                token=token,
            )
        )

    def borrowed_flow(self) -> Flow[Seat | None]:
        """The borrowed seat this machine holds for this license, if any."""
        yield from self._restore_borrowed()
        seat = self._seat
        return seat if seat is not None and seat.borrowed else None

    # --- queue tickets on disk --------------------------------------------------------

    def _remember_ticket(self, status: QueueStatus) -> None:
        with self._lock:
            self._queue = status
        try:
            self.cache.write_json(
                self._queue_file, {"url": self.url, "queue_ticket": status.queue_ticket}
            )
        except OSError:
            pass

    def _forget_ticket(self) -> None:
        with self._lock:
            self._queue = None
        self.cache.remove(self._queue_file)

    def pending_ticket(self) -> str | None:
        """This machine's queue ticket for this license: the one being
        waited on here, or one another process stored."""
        with self._lock:
            if self._queue is not None:
                return self._queue.queue_ticket
        data = self.cache.read_json(self._queue_file)
        ticket = data.get("queue_ticket") if data else None
        return ticket if isinstance(ticket, str) else None

    # --- operations --------------------------------------------------------------

    def acquire_flow(
        self,
        wait: bool = False,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Flow[Seat]:
        """Acquires a seat (or renews this machine's live session).

        With ``wait``, a full license puts this machine in the seat queue
        and the flow polls until a seat is held for it, then claims it.
        A still-valid borrowed seat is returned as it is.
        """
        yield from self._restore_borrowed()
        seat = self._seat
        if seat is not None and seat.borrowed:
            if not seat.claims or not seat.claims.expired(self.clock.time()):
                return seat
            self._drop_seat()
        extra: dict[str, Any] = {"wait": True} if wait else {}
        reply = yield from self._request(
            Call("POST", ACQUIRE_PATH, self._acquire_body(**extra), self._access_token)
        )
        if reply.status == 202:
            reply = yield from self._wait_in_queue(reply, timeout, on_progress)
        return (yield from self._adopt(reply))

    def _wait_in_queue(
        self,
        reply: Reply,
        timeout: float | None,
        on_progress: ProgressCallback | None,
    ) -> Flow[Reply]:
        status = QueueStatus.parse(body_of(reply))
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        log.info("no seat free: queued at position %s", status.position)
        try:
            while True:
                self._remember_ticket(status)
                if on_progress is not None:
                    on_progress(status)
                if status.ready:
                    claim = self._acquire_body(queue_ticket=status.queue_ticket, wait=True)
                    reply = yield from self._request(
                        Call("POST", ACQUIRE_PATH, claim, self._access_token)
                    )
                    if reply.status != 202:
                        self._forget_ticket()
                        return reply
                    status = QueueStatus.parse(body_of(reply))
                    continue
                pause = status.poll_after_secs
                if deadline is not None:
                    left = deadline - self.clock.monotonic()
                    if left <= 0:
                        yield from self._leave_quietly(status.queue_ticket)
                        raise QueueTimeout(
                            f"no seat within {timeout} s (last position {status.position})"
                        )
                    pause = min(pause, left)
                yield Sleep(max(0.0, pause))
                reply = yield from self._request(Call("GET", f"{QUEUE_PATH}/{status.queue_ticket}"))
                status = QueueStatus.parse(body_of(reply))
        except QueueTicketNotFound:
            self._forget_ticket()
            raise

    def _leave_quietly(self, ticket: str) -> Flow[None]:
        try:
            yield from self._request(Call("DELETE", f"{QUEUE_PATH}/{ticket}"))
        except SeatwardenError as e:
            log.info("could not leave the queue: %s", self.scrub(str(e)))
        self._forget_ticket()

    def join_queue_flow(self) -> Flow[Seat | QueueStatus]:
        """Asks for a seat, queueing when none is free: the seat if one
        was, else the place in the queue (poll it with ``poll_queue``)."""
        reply = yield from self._request(
            Call("POST", ACQUIRE_PATH, self._acquire_body(wait=True), self._access_token)
        )
        if reply.status == 202:
            status = QueueStatus.parse(body_of(reply))
            self._remember_ticket(status)
            return status
        return (yield from self._adopt(reply))

    def _ticket(self, ticket: str | None) -> str:
        ticket = ticket or self.pending_ticket()
        if not ticket:
            raise QueueTicketNotFound("this machine is not waiting in the queue")
        return ticket

    def poll_queue_flow(self, ticket: str | None = None) -> Flow[QueueStatus]:
        """The current place of a queue ticket (this machine's by default).
        Polling also keeps the ticket alive: one that misses three poll
        intervals drops out."""
        ticket = self._ticket(ticket)
        try:
            reply = yield from self._request(Call("GET", f"{QUEUE_PATH}/{ticket}"))
        except QueueTicketNotFound:
            self._forget_ticket()
            raise
        status = QueueStatus.parse(body_of(reply))
        self._remember_ticket(status)
        return status

    def claim_flow(self, ticket: str | None = None) -> Flow[Seat]:
        """Claims the seat held for a ready ticket (409 if it is not ready)."""
        ticket = self._ticket(ticket)
        reply = yield from self._request(
            Call(
                "POST",
                ACQUIRE_PATH,
                self._acquire_body(queue_ticket=ticket),
                self._access_token,
            )
        )
        self._forget_ticket()
        return (yield from self._adopt(reply))

    def leave_queue_flow(self, ticket: str | None = None) -> Flow[bool]:
        ticket = self._ticket(ticket)
        try:
            reply = yield from self._request(Call("DELETE", f"{QUEUE_PATH}/{ticket}"))
        finally:
            self._forget_ticket()
        return bool(body_of(reply).get("left"))

    def heartbeat_flow(self) -> Flow[Seat]:
        """Extends the lease; adopts a fresh token when the server sends one.

        Raises only when the seat is lost (and records why); trouble
        reaching the server leaves the seat held until its token expires.
        """
        seat = self._seat
        if seat is None:
            raise self._lost or NotAcquired("no seat is held; call acquire() first")
        if seat.borrowed:
            if seat.token_expires_at.timestamp() <= self.clock.time():
                error = LicenseExpiredOffline(
                    f"the borrowed seat ended at {iso(seat.borrowed_until)}"
                )
                self.lose(error)
                raise error
            return seat
        try:
            reply = yield from self._request(
                Call("POST", f"{SESSIONS_PATH}/{seat.session_id}/heartbeat", bearer=seat.token)
            )
        except TRANSIENT as e:
            return self._offline(seat, e)
        except (Unauthorized, SessionExpired) as e:
            # 401: our token is no longer accepted (the signing key was
            # rotated). 410 session_expired: the lease lapsed while we
            # could not reach the server. Either way acquiring again gives
            # this machine its seat back if it is still free.
            log.info("heartbeat refused (%s); acquiring again", e.code)
            try:
                return (yield from self.acquire_flow())
            except SeatwardenError as again:
                if isinstance(again, TRANSIENT):
                    return self._offline(seat, again)
                self.lose(again)
                raise
        except SeatwardenError as e:
            self.lose(e)
            raise
        body = body_of(reply)
        token = body.get("token")
        changes: dict[str, Any] = {}
        if isinstance(token, str) and token != seat.token:
            try:
                claims = yield from self._verify_seat(
                    token, session_id=seat.session_id, license_id=seat.license_id
                )
            except InvalidToken as e:
                self.lose(e)
                raise
            changes.update(token=token, claims=claims, token_expires_at=from_timestamp(claims.exp))
        expires_at = parse_time(body.get("expires_at"))
        if expires_at is not None:
            changes["expires_at"] = expires_at
        interval = body.get("heartbeat_interval_secs")
        if isinstance(interval, (int, float)):
            changes["heartbeat_interval_secs"] = float(interval)
        seat = replace(seat, **changes)
        with self._lock:
            if self._seat is not None and self._seat.session_id == seat.session_id:
                self._seat = seat
        self._contact_ok()
        log.debug("heartbeat: session %s until %s", seat.session_id, iso(seat.expires_at))
        return seat

    def _offline(self, seat: Seat, error: SeatwardenError) -> Seat:
        now = self.clock.time()
        with self._lock:
            first = self._offline_since is None
            if first:
                self._offline_since = now
        if now >= seat.token_expires_at.timestamp():
            since = self._offline_since or now
            expired = LicenseExpiredOffline(
                f"the license server has not been reachable since {iso(from_timestamp(since))}"
                f" ({error.code}) and the seat token expired at {iso(seat.token_expires_at)}"
            )
            self.lose(expired)
            raise expired from None
        if first:
            log.warning(
                "cannot renew the seat (%s); running offline until %s",
                self.scrub(str(error)),
                iso(seat.token_expires_at),
            )
        return seat

    def release_flow(self) -> Flow[Release | None]:
        """Gives the seat back (a borrowed one too). ``None`` when no seat
        was held."""
        yield from self._restore_borrowed()
        seat = self._seat
        if seat is None:
            return None
        try:
            reply = yield from self._request(
                Call("DELETE", f"{SESSIONS_PATH}/{seat.session_id}", bearer=seat.token)
            )
        except Unauthorized:
            self._drop_seat()
            if seat.borrowed:
                raise
            # The server no longer accepts our token: its signing key was
            # rotated. Left alone, the seat would stay taken until its lease
            # (and grace) ran out, so take the session up again with a
            # fresh token, and release that.
            log.info("release refused (401); acquiring again to release")
            seat = yield from self.acquire_flow()
            reply = yield from self._request(
                Call("DELETE", f"{SESSIONS_PATH}/{seat.session_id}", bearer=seat.token)
            )
        except SessionNotFound:
            self._drop_seat()
            raise
        self._drop_seat()
        body = body_of(reply)
        reason = body.get("end_reason")
        log.info("seat released: session %s", seat.session_id)
        return Release(
            session_id=seat.session_id,
            ended_at=parse_time(body.get("ended_at")),
            end_reason=reason if isinstance(reason, str) else "released",
        )

    def borrow_flow(self, hours: int) -> Flow[Seat]:
        """Borrows a seat for ``hours``: held on purpose, no heartbeats
        needed, valid offline until ``borrowed_until``."""
        if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
            raise InvalidHours("hours must be a whole number of at least 1")
        reply = yield from self._request(
            Call("POST", BORROW_PATH, self._acquire_body(hours=hours), self._access_token)
        )
        seat = yield from self._adopt(reply)
        if seat.borrowed_until is None:
            seat = replace(seat, borrowed_until=seat.token_expires_at)
            self._set_seat(seat)
        self._persist_borrowed(seat)
        return seat

    def validate_flow(self) -> Flow[Validation]:
        """Verifies the held token locally (offline-capable); without a
        seat, asks the server about the license."""
        yield from self._restore_borrowed()
        seat = self._seat
        if seat is not None:
            try:
                claims = yield from self._verify_seat(
                    seat.token, session_id=seat.session_id, license_id=seat.license_id
                )
            except InvalidToken as e:
                self.lose(e)
                raise
            if claims.expired(self.clock.time()):
                seat = yield from self.heartbeat_flow()
                claims = seat.claims or claims
                if claims.expired(self.clock.time()):
                    raise LicenseExpiredOffline(
                        f"the seat token expired at {iso(from_timestamp(claims.exp))}"
                    )
            return Validation(
                valid=True,
                status="active",
                source="token",
                expires_at=from_timestamp(claims.exp),
                claims=claims,
            )
        return (yield from self.server_validation_flow())

    def server_validation_flow(self) -> Flow[Validation]:
        """The server's view of the license for this machine
        (``POST /licenses/validate``), whatever seat is held."""
        reply = yield from self._request(
            Call(
                "POST",
                VALIDATE_PATH,
                {"license_key": self._license_key, "hardware_id": self.hardware_id},
            )
        )
        self._contact_ok()
        body = body_of(reply)
        activated = body.get("machine_activated")
        status = body.get("status")
        return Validation(
            valid=body.get("valid") is True,
            status=status if isinstance(status, str) else "unknown",
            source="server",
            expires_at=parse_time(body.get("expires_at")),
            machine_activated=activated if isinstance(activated, bool) else None,
        )

    def activate_flow(
        self, name: str | None = None, platform_name: str | None = None
    ) -> Flow[dict[str, Any]]:
        """Activates this machine on the license (needed by licenses that
        limit machines; harmless on others)."""
        body: dict[str, Any] = {
            "license_key": self._license_key,
            "hardware_id": self.hardware_id,
        }
        if name:
            body["name"] = name[:255]
        if platform_name:
            body["platform"] = platform_name[:64]
        reply = yield from self._request(Call("POST", ACTIVATE_PATH, body))
        self._contact_ok()
        return body_of(reply)

    def license_file_flow(self, license_id: str | None = None) -> Flow[LicenseFile]:
        """Fetches the signed license file and verifies it."""
        seat = self._seat
        license_id = license_id or (seat.license_id if seat else None)
        if not license_id:
            raise NotAcquired("the license id is unknown: acquire a seat or pass license_id")
        reply = yield from self._request(
            Call("GET", f"/api/v1/licenses/{license_id}/file", bearer=self._license_key)
        )
        text = body_of(reply).get("license_file")
        if not isinstance(text, str):
            raise SeatwardenError("the answer has no license file", code="server_error")
        return (yield from self.verify_license_file_flow(text, license_id=license_id))

    def verify_license_file_flow(
        self, text: str, license_id: str | None = None
    ) -> Flow[LicenseFile]:
        """Verifies a license file against the JWKS (cached; fetched only
        for an unknown key). An expired file is refused like a forged one:
        fetch a fresh one."""
        header = read_header(text, LICENSE_FILE_TYP)
        key = yield from self._key_for(header.kid)
        claims = verify_license_file(text, key, license_id=license_id)
        if claims.expired(self.clock.time()):
            raise InvalidToken("the license file (or the license) has expired")
        return LicenseFile(license_id=claims.license_id, kid=header.kid, claims=claims, text=text)

    def release_for_exit_flow(self) -> Flow[Release | None]:
        """What the exit hooks run: releases a seat that is not borrowed."""
        seat = self._seat
        if seat is None or seat.borrowed:
            return None
        return (yield from self.release_flow())
