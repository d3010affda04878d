"""The asyncio client: :class:`AsyncLicenseClient`, the same API awaited.

It drives the same flows as :class:`~.client.LicenseClient` (see
:mod:`.protocol`) on ``httpx.AsyncClient``; heartbeats run as an asyncio
task instead of a thread. :meth:`AsyncLicenseClient.status` and
:meth:`~AsyncLicenseClient.check` make no request and are plain methods.

::

    async with AsyncLicenseClient(url, key, app="acme-render") as seat:
        await render()
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
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


class AsyncLicenseClient:
    """The asyncio twin of :class:`~.client.LicenseClient`; see there for
    the parameters. ``sleep`` is the awaitable sleep (injectable)."""

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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jwks_ttl: float = 3600.0,
        heartbeat_jitter: float = 0.2,
        report_host: bool = True,
        on_lost: LostCallback | None = None,
        http_client: httpx.AsyncClient | None = None,
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
        self._sleep = sleep
        self._wait = wait
        self._wait_timeout = wait_timeout
        self._on_lost = on_lost
        self._owns_http = http_client is None
        self._http = http_client or transport.new_async_client(url, app, timeout)
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._guard = ExitGuard(self._core)

    def __repr__(self) -> str:
        return f"AsyncLicenseClient({self._core!r})"

    async def _run(self, flow: Flow[T]) -> T:
        # Created lazily: a lock made outside a running loop binds to the
        # wrong one on Python 3.10.
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await transport.run_async(flow, self._http, self._sleep)

    @property
    def core(self) -> ClientCore:
        return self._core

    @property
    def hardware_id(self) -> str:
        return self._core.hardware_id

    @property
    def seat(self) -> Seat | None:
        return self._core.seat

    # --- operations (see LicenseClient for what each does) -------------------

    async def acquire(
        self,
        wait: bool = False,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Seat:
        return await self._run(self._core.acquire_flow(wait, timeout, on_progress))

    async def heartbeat(self) -> Seat:
        return await self._run(self._core.heartbeat_flow())

    async def release(self) -> Release | None:
        return await self._run(self._core.release_flow())

    async def borrow(self, hours: int) -> Seat:
        return await self._run(self._core.borrow_flow(hours))

    async def borrowed(self) -> Seat | None:
        return await self._run(self._core.borrowed_flow())

    async def validate(self) -> Validation:
        return await self._run(self._core.validate_flow())

    async def license_status(self) -> Validation:
        return await self._run(self._core.server_validation_flow())

    def status(self) -> SeatStatus:
        return self._core.status(heartbeating=self.heartbeating)

    def check(self) -> Seat:
        return self._core.check()

    async def activate(
        self, name: str | None = None, platform: str | None = None
    ) -> dict[str, Any]:
        return await self._run(self._core.activate_flow(name, platform))

    async def license_file(self, license_id: str | None = None) -> LicenseFile:
        return await self._run(self._core.license_file_flow(license_id))

    async def verify_license_file(self, text: str, license_id: str | None = None) -> LicenseFile:
        return await self._run(self._core.verify_license_file_flow(text, license_id))

    async def join_queue(self) -> Seat | QueueStatus:
        return await self._run(self._core.join_queue_flow())

    async def poll_queue(self, ticket: str | None = None) -> QueueStatus:
        return await self._run(self._core.poll_queue_flow(ticket))

    async def claim(self, ticket: str | None = None) -> Seat:
        return await self._run(self._core.claim_flow(ticket))

    async def leave_queue(self, ticket: str | None = None) -> bool:
        return await self._run(self._core.leave_queue_flow(ticket))

    # --- background heartbeats -------------------------------------------------

    @property
    def heartbeating(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, *, wait: bool | None = None, handle_signals: bool = True) -> Seat:
        """Acquires if needed and heartbeats in an asyncio task."""
        seat = self._core.seat
        if seat is None:
            seat = await self.acquire(
                wait=self._wait if wait is None else wait, timeout=self._wait_timeout
            )
        if handle_signals:
            self._guard.install()
        if seat.borrowed or self.heartbeating:
            return seat
        self._task = asyncio.get_running_loop().create_task(
            self._beat_loop(), name="seatwarden-heartbeat"
        )
        return seat

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._guard.uninstall()

    async def _beat_loop(self) -> None:
        while True:
            delay = self._core.next_beat_delay()
            if delay is None:
                return
            await asyncio.sleep(delay)
            try:
                await self.heartbeat()
            except SeatwardenError as e:
                self._notify_lost(e)
                return
            except Exception as e:  # noqa: BLE001
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

    # --- forms --------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.stop()
        try:
            await self._release_unless_borrowed()
        finally:
            if self._owns_http:
                await self._http.aclose()

    async def _release_unless_borrowed(self) -> None:
        seat = self._core.seat
        if seat is None or seat.borrowed:
            return
        try:
            await self.release()
        except SeatwardenError as e:
            log.warning("could not release the seat: %s", self._core.scrub(str(e)))

    async def __aenter__(self) -> Seat:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        await self._release_unless_borrowed()

    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorator for coroutine functions: they run holding a seat."""

        @functools.wraps(fn)
        async def licensed(*args: P.args, **kwargs: P.kwargs) -> R:
            async with self:
                return await fn(*args, **kwargs)

        return licensed
