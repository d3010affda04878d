"""Giving the seat back when the process ends.

A seat that is not released stays taken until its lease runs out (six
minutes by default, longer with an offline grace), so the client releases
it at interpreter exit (``atexit``) and on SIGTERM and SIGINT, the ways
processes are usually stopped. The signal handler then passes the signal
on to whatever handler was there before (Python's ``KeyboardInterrupt``
for SIGINT, the application's own, or the default action), so installing
the client never changes how the application stops.

The release at exit runs on a fresh, blocking HTTP client with a short
timeout, never on the client's own connection: a signal can arrive in the
middle of a request on that one, and the event loop of the async client is
usually gone by the time ``atexit`` runs.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import transport
from .core import ClientCore
from .errors import SeatwardenError

log = logging.getLogger("seatwarden_client")

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_TIMEOUT_SECS = 5.0

Handler = Callable[[int, FrameType | None], Any] | int | None


def release_blocking(core: ClientCore, timeout: float = EXIT_TIMEOUT_SECS) -> None:
    """Releases the core's seat (unless borrowed) on a throwaway client,
    logging rather than raising: this runs while the process ends."""
    if core.seat is None or core.seat.borrowed:
        return
    try:
        with transport.new_client(core.url, core.app, timeout) as http:
            transport.run(core.release_for_exit_flow(), http, core.clock.sleep)
    except SeatwardenError as e:
        log.warning("could not release the seat at exit: %s", core.scrub(str(e)))
    except Exception as e:  # noqa: BLE001 - never let exit hooks raise
        log.warning("could not release the seat at exit: %s", type(e).__name__)


class ExitGuard:
    """Installs (and removes) the exit hooks for one client."""

    def __init__(
        self,
        core: ClientCore,
        before_release: Callable[[], None] | None = None,
        signals: tuple[int, ...] = EXIT_SIGNALS,
    ) -> None:
        self._core = core
        self._before_release = before_release
        self._signals = signals
        self._previous: dict[int, Handler] = {}
        self._installed = False
        self._lock = threading.Lock()

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            self._installed = True
            atexit.register(self._at_exit)
            # Signal handlers can only be set from the main thread; a client
            # started elsewhere still releases at exit.
            if threading.current_thread() is threading.main_thread():
                for sig in self._signals:
                    if signal.getsignal(sig) == self._on_signal:
                        continue  # still ours from an install off the main thread
                    try:
                        self._previous[sig] = signal.getsignal(sig)
                        signal.signal(sig, self._on_signal)
                    except (ValueError, OSError):
                        self._previous.pop(sig, None)

    def uninstall(self) -> None:
        with self._lock:
            if not self._installed:
                return
            self._installed = False
            atexit.unregister(self._at_exit)
            # Outside the main thread the handlers can't be changed; they
            # stay, and only release (the seat is then usually gone).
            if threading.current_thread() is threading.main_thread():
                for sig, previous in self._previous.items():
                    # Only put back what we replaced: if the application
                    # installed a handler after us, it stays.
                    if signal.getsignal(sig) == self._on_signal:
                        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
                self._previous.clear()

    def _release(self) -> None:
        if self._before_release is not None:
            try:
                self._before_release()
            except Exception:  # noqa: BLE001 - never let exit hooks raise
                log.debug("stopping the heartbeats at exit failed", exc_info=True)
        release_blocking(self._core)

    def _at_exit(self) -> None:
        self._release()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._release()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
            return
        if previous == signal.SIG_IGN:
            return
        # The default action (for SIGTERM and SIGINT: end the process).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
