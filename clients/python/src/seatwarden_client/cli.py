"""``seatctl``: seats from the command line, and around any command.

::

    seatctl status                       # the license, this machine, borrowed seat, queue
    seatctl validate                     # exit 0 when the license is usable here
    seatctl activate [--name NAME]       # take a machine slot
    seatctl borrow --hours 8             # hold a seat offline, e.g. for a flight
    seatctl return                       # give the borrowed seat back
    seatctl queue status | leave         # this machine's place in the seat queue
    seatctl run [--wait] [--warn-secs 30] -- CMD ARGS...

``run`` is for CI jobs and wrappers: it acquires a seat (queueing with
``--wait``), runs CMD with heartbeats going, releases the seat when CMD
exits, and exits with CMD's exit code (128+N when a signal N ended it).
When the seat is lost (revoked, the license suspended, the offline grace
used up) it warns on stderr and ends CMD with SIGTERM after
``--warn-secs``. SIGTERM and SIGHUP sent to seatctl are passed on to CMD
(and SIGINT too, unless a terminal already sent it to CMD).

Output is for people by default; ``--json`` prints one JSON object per
command on stdout (for ``run``: JSON lines on stderr; stdout is CMD's).
Errors go to stderr with exit status 1 (2 for usage and configuration).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from types import FrameType
from typing import Any, TextIO

from . import __version__
from .client import LicenseClient
from .config import ConfigError, Settings, load
from .errors import (
    LicenseExpiredOffline,
    NoSeatsAvailable,
    QueueTicketNotFound,
    SeatwardenError,
    ServerUnreachable,
)
from .models import QueueStatus, iso

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 127


class Output:
    """Prints for people or for scripts."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.json = as_json
        self.out = out
        self.err = err

    def result(self, data: dict[str, Any], human: str) -> None:
        if self.json:
            print(json.dumps(data, sort_keys=True), file=self.out)
        else:
            print(human, file=self.out)

    def notice(self, event: str, human: str, **data: Any) -> None:
        """A progress or warning line on stderr."""
        if self.json:
            print(json.dumps({"event": event, **data}, sort_keys=True), file=self.err)
        else:
            print(f"seatctl: {human}", file=self.err)
        self.err.flush()

    def error(self, code: str, message: str) -> None:
        if self.json:
            print(json.dumps({"error": code, "message": message}), file=self.err)
        else:
            print(f"seatctl: error: {message} ({code})", file=self.err)


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """The shared options, accepted before or after the command."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--url", default=default, help="the seatwarden server (SEATWARDEN_URL)")
    parser.add_argument(
        "--license-key",
        default=default,
        help="the license key (prefer SEATWARDEN_LICENSE_KEY: flags show in ps)",
    )
    parser.add_argument("--app", default=default, help="application name (salts the hardware id)")
    parser.add_argument("--cache-dir", default=default, help="where tokens and keys are cached")
    parser.add_argument("--hardware-id", default=default, help="override the machine fingerprint")
    parser.add_argument(
        "--config", default=default, help="config file (default: ~/.config/seatwarden/config.toml)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log what the client does (never keys or tokens)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seatctl", description="Floating-license seats from seatwarden."
    )
    parser.add_argument("--version", action="version", version=f"seatctl {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _add_common(sub, top=False)
        return sub

    activate = command("activate", "activate this machine on the license")
    activate.add_argument("--name", help="a name for this machine (default: the host name)")
    activate.add_argument("--platform", help="e.g. linux-x86_64 (default: this one)")
    command("status", "show the license, this machine, a borrowed seat and the queue")
    command("validate", "exit 0 when the license is usable on this machine")
    borrow = command("borrow", "borrow a seat for offline use")
    borrow.add_argument("--hours", type=int, required=True, help="how long (whole hours)")
    command("return", "give a borrowed seat back early")
    queue = command("queue", "this machine's place in the seat queue")
    queue.add_argument("action", choices=["status", "leave"])
    run = command("run", "run a command holding a seat")
    run.add_argument("--wait", action="store_true", help="queue for a seat when none is free")
    run.add_argument(
        "--wait-timeout", type=float, default=None, help="give up queueing after this many seconds"
    )
    run.add_argument(
        "--warn-secs",
        type=float,
        default=30.0,
        help="after losing the seat, end CMD with SIGTERM after this long (default 30)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def _settings(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    from pathlib import Path

    flags = {
        "url": args.url,
        "license_key": args.license_key,
        "app": args.app,
        "cache_dir": args.cache_dir,
        "hardware_id": args.hardware_id,
    }
    return load(flags, path=Path(args.config) if args.config else None)


def _client(settings: Settings, **kwargs: Any) -> LicenseClient:
    return LicenseClient(
        settings.url,
        settings.license_key,
        app=settings.app,
        hardware_id=settings.hardware_id,
        cache_dir=settings.cache_dir,
        **kwargs,
    )


def _when(value: Any) -> str:
    return value if isinstance(value, str) else "-"


# --- commands -----------------------------------------------------------------


def cmd_activate(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    import platform as _platform
    import socket

    with closing(_client(settings)) as client:
        machine = client.activate(
            name=args.name or socket.gethostname(),
            platform=args.platform or f"{sys.platform}-{_platform.machine()}",
        )
    out.result(
        machine,
        f"machine {machine.get('name') or client.hardware_id} activated"
        f" (id {machine.get('id')}, since {_when(machine.get('activated_at'))})",
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    with closing(_client(settings)) as client:
        data: dict[str, Any] = {"url": settings.url, "hardware_id": client.hardware_id}
        lines = [f"server:        {settings.url}", f"machine:       {client.hardware_id}"]
        try:
            lic = client.license_status()
            data["license"] = lic.as_dict()
            state = "valid" if lic.valid else "NOT valid"
            extra = f", expires {iso(lic.expires_at)}" if lic.expires_at else ""
            activated = (
                f"; machine activated: {'yes' if lic.machine_activated else 'no'}"
                if lic.machine_activated is not None
                else ""
            )
            lines.append(f"license:       {lic.status} ({state}{extra}){activated}")
        except ServerUnreachable as e:
            data["license"] = None
            data["error"] = {"error": e.code, "message": e.message}
            lines.append("license:       unknown (server unreachable)")
        try:
            borrowed = client.borrowed()
        except SeatwardenError:
            borrowed = None
        data["borrowed"] = borrowed.as_dict() if borrowed else None
        lines.append(
            f"borrowed seat: session {borrowed.session_id} until {iso(borrowed.borrowed_until)}"
            if borrowed
            else "borrowed seat: none"
        )
        queue = _queue_status(client)
        data["queue"] = queue.as_dict() if queue else None
        lines.append(_queue_line(queue))
    out.result(data, "\n".join(lines))
    return EXIT_OK


def _queue_status(client: LicenseClient) -> QueueStatus | None:
    if client.core.pending_ticket() is None:
        return None
    try:
        return client.poll_queue()
    except QueueTicketNotFound:
        return None


def _queue_line(queue: QueueStatus | None) -> str:
    if queue is None:
        return "queue:         not waiting"
    if queue.ready:
        return f"queue:         a seat is held for this machine until {iso(queue.hold_expires_at)}"
    eta = f", about {int(queue.estimated_wait_secs)} s" if queue.estimated_wait_secs else ""
    of = f" of {queue.queue_length}" if queue.queue_length else ""
    return f"queue:         position {queue.position}{of}{eta}"


def cmd_validate(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    with closing(_client(settings)) as client:
        result = client.validate()
    human = (
        f"valid ({result.status}, checked by {result.source})"
        if result.valid
        else f"not valid: {result.status}"
    )
    out.result(result.as_dict(), human)
    return EXIT_OK if result.valid else EXIT_ERROR


def cmd_borrow(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    with closing(_client(settings)) as client:
        seat = client.borrow(args.hours)
    out.result(
        seat.as_dict(),
        f"borrowed a seat until {iso(seat.borrowed_until)} (session {seat.session_id});"
        " give it back early with `seatctl return`",
    )
    return EXIT_OK


def cmd_return(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    with closing(_client(settings)) as client:
        seat = client.borrowed()
        if seat is None:
            out.error("not_borrowed", "this machine has no borrowed seat on this license")
            return EXIT_ERROR
        released = client.release()
    data = released.as_dict() if released else {"session_id": seat.session_id}
    out.result(data, f"returned the borrowed seat (session {seat.session_id})")
    return EXIT_OK


def cmd_queue(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    with closing(_client(settings)) as client:
        if args.action == "leave":
            if client.core.pending_ticket() is None:
                out.result({"left": False}, "not waiting in a queue")
                return EXIT_OK
            left = client.leave_queue()
            out.result({"left": left}, "left the queue" if left else "was not in the queue")
            return EXIT_OK
        queue = _queue_status(client)
    out.result(
        {"queued": queue is not None, "queue": queue.as_dict() if queue else None},
        _queue_line(queue).replace("queue:         ", ""),
    )
    return EXIT_OK


class ProgressLine:
    """The queue position on one stderr line (rewritten on a terminal)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.tty = out.err.isatty() and not out.json
        self.last: tuple[int | None, str] | None = None

    def update(self, status: QueueStatus) -> None:
        key = (status.position, status.state)
        if key == self.last:
            return
        self.last = key
        if status.ready:
            text = "a seat is free; claiming it"
        else:
            eta = (
                f" (about {int(status.estimated_wait_secs)} s)"
                if status.estimated_wait_secs
                else ""
            )
            text = f"waiting for a seat: position {status.position} in the queue{eta}"
        if self.tty:
            self.out.err.write(f"\rseatctl: {text}\x1b[K")
            self.out.err.flush()
        else:
            self.out.notice(
                "queue",
                text,
                position=status.position,
                state=status.state,
                estimated_wait_secs=status.estimated_wait_secs,
            )

    def done(self) -> None:
        if self.tty and self.last is not None:
            self.out.err.write("\n")
            self.out.err.flush()


def cmd_run(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        out.error("usage", "seatctl run needs a command: seatctl run [--wait] -- CMD ARGS...")
        return EXIT_USAGE
    lost = threading.Event()
    lost_errors: list[SeatwardenError] = []

    def on_lost(error: SeatwardenError) -> None:
        lost_errors.append(error)
        lost.set()

    client = _client(settings, on_lost=on_lost)
    progress = ProgressLine(out)
    try:
        try:
            seat = client.acquire(
                wait=args.wait, timeout=args.wait_timeout, on_progress=progress.update
            )
        except KeyboardInterrupt:
            # Give the place in line up now rather than after three
            # missed polls.
            if client.core.pending_ticket() is not None:
                try:
                    client.leave_queue()
                except SeatwardenError:
                    pass
            raise
        finally:
            progress.done()
        out.notice(
            "acquired",
            f"seat acquired (session {seat.session_id}, {seat.seats_used or '?'}"
            f" of {seat.max_seats} in use)",
            session_id=seat.session_id,
            seats_used=seat.seats_used,
            max_seats=seat.max_seats,
        )
        # The command learns its session, not the key: build logs print
        # environments.
        env = {k: v for k, v in os.environ.items() if k != "SEATWARDEN_LICENSE_KEY"}
        env["SEATWARDEN_SESSION_ID"] = seat.session_id
        try:
            child = subprocess.Popen(cmd, env=env)
        except OSError as e:
            out.error("command_failed", f"cannot run {cmd[0]}: {e.strerror or e}")
            return EXIT_NOT_FOUND
        with _forwarded_signals(child):
            client.start(handle_signals=False)
            code = _supervise(child, client, lost, lost_errors, args.warn_secs, out, cmd[0])
        return code
    finally:
        client.close()


def _supervise(
    child: subprocess.Popen[bytes],
    client: LicenseClient,
    lost: threading.Event,
    lost_errors: list[SeatwardenError],
    warn_secs: float,
    out: Output,
    name: str,
) -> int:
    """Waits for the command; ends it once the seat is lost and the
    warning time has passed. Returns the exit status to exit with."""
    end_at: float | None = None
    terminated_at: float | None = None
    was_offline = False
    while True:
        try:
            code = child.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        offline = client.status().offline
        if offline and not was_offline:
            seat = client.seat
            until = iso(seat.token_expires_at) if seat else "-"
            out.notice(
                "offline",
                f"cannot reach the license server; the seat holds offline until {until}",
                until=until,
            )
        elif was_offline and not offline and client.seat is not None:
            out.notice("online", "the license server is reachable again")
        was_offline = offline
        if lost.is_set() and end_at is None:
            error = lost_errors[0] if lost_errors else LicenseExpiredOffline("seat lost")
            out.notice(
                "seat_lost",
                f"the seat was lost ({error.code}: {error.message});"
                f" ending {name} in {warn_secs:g} s",
                error=error.code,
                message=error.message,
                warn_secs=warn_secs,
            )
            end_at = now + warn_secs
        if end_at is not None and terminated_at is None and now >= end_at:
            out.notice("terminating", f"sending SIGTERM to {name}", pid=child.pid)
            child.terminate()
            terminated_at = now
        if terminated_at is not None and now - terminated_at > 10:
            child.kill()
    return code if code >= 0 else 128 - code


class _forwarded_signals:
    """Passes SIGTERM and SIGHUP (and SIGINT when no terminal sent it to
    the whole process group) on to the command."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.previous: dict[int, Any] = {}

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self.child.poll() is None:
            self.child.send_signal(signum)

    def __enter__(self) -> None:
        wanted = [signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):
            wanted.append(signal.SIGHUP)
        for sig in wanted:
            self.previous[sig] = signal.signal(sig, self._forward)
        # A Ctrl-C at a terminal reaches the command by itself (same
        # process group); seatctl just must not die of it first.
        interactive = sys.stdin is not None and sys.stdin.isatty()
        self.previous[signal.SIGINT] = signal.signal(
            signal.SIGINT, signal.SIG_IGN if interactive else self._forward
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


COMMANDS = {
    "activate": cmd_activate,
    "status": cmd_status,
    "validate": cmd_validate,
    "borrow": cmd_borrow,
    "return": cmd_return,
    "queue": cmd_queue,
    "run": cmd_run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json, sys.stdout, sys.stderr)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="seatctl: %(message)s", stream=sys.stderr)
    try:
        settings, warnings = _settings(args)
    except ConfigError as e:
        out.error("config", str(e))
        return EXIT_USAGE
    for warning in warnings:
        out.notice("config_warning", warning, message=warning)
    handler = COMMANDS[args.command]
    try:
        return handler(args, settings, out)
    except NoSeatsAvailable as e:
        out.error(e.code, f"{e.message} ({e.seats_used} of {e.max_seats} seats in use)")
        return EXIT_ERROR
    except SeatwardenError as e:
        out.error(e.code, e.message)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
