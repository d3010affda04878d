"""The blocking client: :class:`LicenseClient`.

It drives the flows of :class:`~.core.ClientCore` with ``httpx.Client``
and adds what only a thread-based program needs: a background heartbeat
thread, and the context-manager and decorator forms.

::

    client = LicenseClient("https://licenses.example.com", key, app="acme-cad")
    with client:                 # acquire + heartbeats; release on exit
        run_the_app()
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from . import transport
from .clock import SYSTEM_CLOCK, Clock
from .core import ClientCore, ProgressCallback
from .errors import SeatwardenError
from .lifecycle import ExitGuard
from .models import LicenseFile, QueueStatus, Release, Seat, SeatStatus, Validation
from .protocol import Flow, T
from .retry import RetryPolicy

log = logging.getLogger("seatwarden_client")

P = ParamSpec("P")
R = TypeVar("R")

LostCallback = Callable[[SeatwardenError], None]


class LicenseClient:
    """A floating-license seat for this process, on a seatwarden server.

    ``url`` is the server's base URL; ``license_key`` the key as issued;
    ``app`` names the application (it salts the hardware id and shows in
    the User-Agent). ``hardware_id`` defaults to this machine's fingerprint
    (or ``SEATWARDEN_HARDWARE_ID``), ``cache_dir`` to the per-user cache
    directory. ``wait`` makes the context-manager and decorator forms
    queue for a seat instead of failing with ``NoSeatsAvailable``.
    ``on_lost`` is called (from the heartbeat thread) with the error when
    the seat is lost while heartbeating.

    ``clock``, ``retry`` and ``http_client`` are for tests and special
    deployments: time, retry policy and the HTTP client are injectable.
    """

    def __init__(
        self,
        url: str,
        license_key: str,
        app: str = "seatwarden",
        hardware_id: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        client_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        access_token: str | None = None,
        wait: bool = False,
        wait_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = transport.DEFAULT_TIMEOUT_SECS,
        clock: Clock = SYSTEM_CLOCK,
        jwks_ttl: float = 3600.0,
        heartbeat_jitter: float = 0.2,
        report_host: bool = True,
        on_lost: LostCallback | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._core = ClientCore(
            url,
            license_key,
            app=app,
            hardware_id=hardware_id,
            cache_dir=cache_dir,
            client_version=client_version,
            metadata=metadata,
            access_token=access_token,
            retry=retry,
            clock=clock,
            jwks_ttl=jwks_ttl,
            heartbeat_jitter=heartbeat_jitter,
            report_host=report_host,
        )
        self._clock = clock
        self._wait = wait
        self._wait_timeout = wait_timeout
        self._on_lost = on_lost
        self._owns_http = http_client is None
        self._http = http_client or transport.new_client(url, app, timeout)
        # One flow at a time: the heartbeat thread and the application share
        # the seat's state. Re-entrant for signal handlers in the main thread.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = ExitGuard(self._core, before_release=self._stop.set)

    def __repr__(self) -> str:
        return f"LicenseClient({self._core!r})"

    # --- plumbing ---------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        with self._lock:
            return transport.run(flow, self._http, self._clock.sleep)

    @property
    def core(self) -> ClientCore:
        """The shared state (for diagnostics and tests)."""
        return self._core

    @property
    def hardware_id(self) -> str:
        return self._core.hardware_id

    @property
    def seat(self) -> Seat | None:
        return self._core.seat

    # --- operations ---------------------------------------------------------

    def acquire(
        self,
        wait: bool = False,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Seat:
        """Acquires a seat; ``NoSeatsAvailable`` when the license is full.

        With ``wait=True``, queues instead and returns once a seat is this
        machine's (``on_progress`` hears each queue position;
        ``QueueTimeout`` after ``timeout`` seconds).
        """
        return self._run(self._core.acquire_flow(wait, timeout, on_progress))

    def heartbeat(self) -> Seat:
        """Extends the lease now. Raises only when the seat is lost; an
        unreachable server leaves it held until the token expires
        (:class:`LicenseExpiredOffline` after that)."""
        return self._run(self._core.heartbeat_flow())

    def release(self) -> Release | None:
        """Gives the seat back (a borrowed one too); ``None`` if none was held."""
        return self._run(self._core.release_flow())

    def borrow(self, hours: int) -> Seat:
        """Borrows a seat for ``hours`` hours: it needs no heartbeats, works
        offline until ``borrowed_until``, and is kept in the cache directory
        for later processes until :meth:`release` returns it."""
        return self._run(self._core.borrow_flow(hours))

    def borrowed(self) -> Seat | None:
        """The seat this machine has borrowed on this license, if any."""
        return self._run(self._core.borrowed_flow())

    def validate(self) -> Validation:
        """Is the license usable here? Verifies the held seat token locally
        against the JWKS (works offline); without a seat, asks the server."""
        return self._run(self._core.validate_flow())

    def license_status(self) -> Validation:
        """The server's view of the license for this machine, always asked."""
        return self._run(self._core.server_validation_flow())

    def status(self) -> SeatStatus:
        """What the client knows now: the seat, whether the server is
        reachable, why a seat was lost. No request is made."""
        return self._core.status(heartbeating=self.heartbeating)

    def check(self) -> Seat:
        """The held seat, or raises the error that lost it."""
        return self._core.check()

    def activate(self, name: str | None = None, platform: str | None = None) -> dict[str, Any]:
        """Activates this machine on the license (for licenses that limit
        machines)."""
        return self._run(self._core.activate_flow(name, platform))

    def license_file(self, license_id: str | None = None) -> LicenseFile:
        """Fetches and verifies the signed license file."""
        return self._run(self._core.license_file_flow(license_id))

    def verify_license_file(self, text: str, license_id: str | None = None) -> LicenseFile:
        """Verifies a stored license file (offline, with the cached JWKS)."""
        return self._run(self._core.verify_license_file_flow(text, license_id))

    def join_queue(self) -> Seat | QueueStatus:
        """A seat if one is free, else a place in the queue."""
        return self._run(self._core.join_queue_flow())

    def poll_queue(self, ticket: str | None = None) -> QueueStatus:
        return self._run(self._core.poll_queue_flow(ticket))

    def claim(self, ticket: str | None = None) -> Seat:
        """Claims the seat held for a ``ready`` queue ticket."""
        return self._run(self._core.claim_flow(ticket))

    def leave_queue(self, ticket: str | None = None) -> bool:
        return self._run(self._core.leave_queue_flow(ticket))

    # --- background heartbeats -------------------------------------------------

    @property
    def heartbeating(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, *, wait: bool | None = None, handle_signals: bool = True) -> Seat:
        """Acquires a seat if none is held and heartbeats it in a daemon
        thread, every ``heartbeat_interval_secs`` less up to 20% jitter.

        With ``handle_signals`` the seat is released at exit and on
        SIGTERM/SIGINT (the previous handlers still run afterwards).
        """
        seat = self._core.seat
        if seat is None:
            seat = self.acquire(
                wait=self._wait if wait is None else wait, timeout=self._wait_timeout
            )
        if handle_signals:
            self._guard.install()
        if seat.borrowed or self.heartbeating:
            return seat
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat_loop, name="seatwarden-heartbeat", daemon=True
        )
        self._thread.start()
        return seat

    def stop(self) -> None:
        """Stops the heartbeat thread and removes the exit hooks; the seat
        stays held (until :meth:`release` or its lease's end)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None
        self._guard.uninstall()

    def _beat_loop(self) -> None:
        while True:
            delay = self._core.next_beat_delay()
            if delay is None or self._stop.wait(delay):
                return
            try:
                self.heartbeat()
            except SeatwardenError as e:
                if self._stop.is_set():
                    return
                self._notify_lost(e)
                return
            except Exception as e:  # noqa: BLE001 - a bug must not kill silently
                log.exception("heartbeat failed unexpectedly")
                error = SeatwardenError(
                    f"heartbeat failed unexpectedly ({type(e).__name__})", code="client_error"
                )
                self._core.lose(error)
                self._notify_lost(error)
                return

    def _notify_lost(self, error: SeatwardenError) -> None:
        if self._on_lost is not None:
            try:
                self._on_lost(error)
            except Exception:  # noqa: BLE001
                log.exception("the on_lost callback failed")

    # --- forms ----------------------------------------------------------------------

    def close(self) -> None:
        """Stops heartbeats, releases a held (not borrowed) seat, and closes
        the HTTP client."""
        self.stop()
        try:
            self._release_unless_borrowed()
        finally:
            if self._owns_http:
                self._http.close()

    def _release_unless_borrowed(self) -> None:
        seat = self._core.seat
        if seat is None or seat.borrowed:
            return
        try:
            self.release()
        except SeatwardenError as e:
            log.warning("could not release the seat: %s", self._core.scrub(str(e)))

    def __enter__(self) -> Seat:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._release_unless_borrowed()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorator: the function runs holding a seat."""

        @functools.wraps(fn)
        def licensed(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return licensed
