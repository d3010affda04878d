"""Real seatwarden servers for the tests, and the tools around them.

Every server is the real binary (``SEATWARDEN_BIN``, default
``<repo>/target/debug/seatwarden``) started as a process on a free
loopback port, configured only through ``SEATWARDEN__*`` variables, the way
an operator would. Organizations and licenses are created with the same
binary's bootstrap commands. Nothing here sleeps for correctness: waits
are bounded polls with a deadline (:func:`wait_until`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("SEATWARDEN_BIN") or REPO / "target" / "debug" / "seatwarden")
TEMPLATES = REPO / "config" / "templates" / "email"
REDIS_URL = os.environ.get("SEATWARDEN_TEST_REDIS_URL")
PG_URL = os.environ.get("SEATWARDEN_TEST_PG_URL")
SHARED_SKIP_REASON = (
    "SEATWARDEN_TEST_REDIS_URL and SEATWARDEN_TEST_PG_URL are not set"
    " (source scripts/services.sh to run the Redis+PostgreSQL tests)"
)

# Every rate limit the server has, switched (practically) off so that tests
# never meet one by accident; a test that wants one sets it.
RATE_LIMITS = (
    "login_per_ip",
    "login_per_account",
    "register_per_ip",
    "forgot_password_per_account",
    "validate_per_key",
    "activate_per_key",
    "acquire_per_machine",
    "heartbeat_per_session",
    "accept_invitation_per_ip",
)

ADMIN_PASSWORD = "Admin1Password"


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {message}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_signing_key(path: Path) -> Path:
    """A fresh 2048-bit RSA key as PKCS#8 PEM (the server's own 4096-bit
    default takes seconds to generate)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Backend:
    """Where a server keeps its data: ``embedded`` (SQLite in its data dir
    and the in-process ledger) or ``shared`` (PostgreSQL and Redis)."""

    name: str
    database_url: str | None = None
    redis_url: str | None = None

    @property
    def shared(self) -> bool:
        return self.name == "shared"


def fresh_database() -> Backend:
    """A new PostgreSQL database on the test server, and the test Redis.
    Keys in Redis are per organization, and every test makes its own."""
    assert PG_URL and REDIS_URL, SHARED_SKIP_REASON
    name = f"sw_py_{uuid.uuid4().hex[:16]}"
    subprocess.run(
        ["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    parts = urllib.parse.urlsplit(PG_URL)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    return Backend("shared", database_url=url, redis_url=REDIS_URL)


def make_backend(name: str) -> Backend:
    """``embedded``, or ``shared`` on a fresh database (the test is skipped
    when the runner provides no PostgreSQL and Redis)."""
    if name == "shared":
        if not (PG_URL and REDIS_URL):
            import pytest

            pytest.skip(SHARED_SKIP_REASON)
        return fresh_database()
    return Backend("embedded")


@dataclass(frozen=True)
class License:
    id: str
    key: str
    org_id: str
    seats: int


class Server:
    """One seatwarden process."""

    def __init__(
        self,
        root: Path,
        backend: Backend,
        settings: dict[str, str | int],
        key_path: Path,
        name: str = "node",
    ) -> None:
        self.root = root
        self.backend = backend
        self.name = name
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.key_path = key_path
        self.port = free_port()
        self.settings = dict(settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"{name}.log"
        self._admin_token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SEATWARDEN__") and k != "RUST_LOG"
        }
        values: dict[str, str | int] = {
            "DATA_DIR": str(self.data_dir),
            "HTTP__LISTEN": f"127.0.0.1:{self.port}",
            "SIGNING__KEY_PATH": str(self.key_path),
            "SIGNING__RSA_BITS": 2048,
            "MAIL__TEMPLATE_DIR": str(TEMPLATES),
            "SEATS__SWEEP_INTERVAL_SECS": 1,
            "SEATS__LICENSE_WATCH_MS": 100,
            "LOG__LEVEL": "info",
        }
        for limit in RATE_LIMITS:
            values[f"RATE_LIMITS__{limit.upper()}"] = "1000000/sec"
        if self.backend.shared:
            assert self.backend.database_url and self.backend.redis_url
            values["DATABASE__URL"] = self.backend.database_url
            values["REDIS__URL"] = self.backend.redis_url
            # Nodes of one deployment share the access-token key.
            values["AUTH__ACCESS_TOKEN_SECRET"] = hashlib.sha256(
                f"py test access key {self.backend.database_url}".encode()
            ).hexdigest()
        values.update(self.settings)
        env.update({f"SEATWARDEN__{k}": str(v) for k, v in values.items()})
        return env

    def start(self, timeout: float = 60.0) -> Server:
        assert self.proc is None, "already running"
        assert BIN.exists(), f"no seatwarden binary at {BIN}; build it or set SEATWARDEN_BIN"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN)],
            env=self.env,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"seatwarden {self.name} exited with {proc.returncode}:\n{self.log_tail()}"
                )
            try:
                r = httpx.get(f"{self.url}/health/ready", timeout=1.0)
            except httpx.TransportError:
                return False
            return r.status_code == 200

        try:
            wait_until(ready, timeout=timeout, interval=0.05, message=f"{self.name} to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """Stops the process at once (SIGKILL): a crash, or a network cut."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self, **changes: str | int) -> Server:
        self.stop()
        self.settings.update(changes)
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- the bootstrap commands -------------------------------------------------

    def cli(self, *args: str, input: str | None = None) -> Any:
        out = subprocess.run(
            [str(BIN), *args],
            env=self.env,
            cwd=self.data_dir,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"seatwarden {' '.join(args)} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def org(self, name: str | None = None) -> str:
        return str(self.cli("org", "create", "--name", name or f"org-{uuid.uuid4().hex[:8]}")["id"])

    def license(
        self,
        seats: int = 1,
        *,
        org: str | None = None,
        tier: str = "pro",
        features: str = "export,sso",
        offline_grace_secs: int | None = None,
        max_borrow_hours: int | None = None,
        max_machines: int | None = None,
    ) -> License:
        org_id = org or self.org()
        args = ["license", "create", "--org", org_id, "--seats", str(seats), "--tier", tier]
        if features:
            args += ["--features", features]
        if offline_grace_secs is not None:
            args += ["--offline-grace-secs", str(offline_grace_secs)]
        if max_borrow_hours is not None:
            args += ["--max-borrow-hours", str(max_borrow_hours)]
        if max_machines is not None:
            args += ["--max-machines", str(max_machines)]
        created = self.cli(*args)
        return License(id=created["id"], key=created["key"], org_id=org_id, seats=seats)

    def update_license(self, license_id: str, *args: str) -> Any:
        return self.cli("license", "update", "--id", license_id, *args)

    def sessions(self, license_id: str) -> list[dict[str, Any]]:
        return list(self.cli("license", "sessions", "--license", license_id)["sessions"])

    def live_sessions(self, license_id: str) -> list[dict[str, Any]]:
        return [s for s in self.sessions(license_id) if s.get("live")]

    def admin_token(self) -> str:
        """A platform administrator's access token (the admin is created
        on first use)."""
        if self._admin_token is None:
            email = f"root-{uuid.uuid4().hex[:8]}@example.com"
            self.cli(
                "admin", "create", "--email", email, "--password-stdin", input=ADMIN_PASSWORD + "\n"
            )
            r = httpx.post(
                f"{self.url}/api/v1/auth/login",
                json={"email": email, "password": ADMIN_PASSWORD},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            self._admin_token = str(r.json()["access_token"])
        return self._admin_token


class Servers:
    """Starts servers for a test module and stops them all at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Server] = []
        self._keys: dict[str, Path] = {}

    def key(self, name: str = "default") -> Path:
        """A signing key file per name: two servers given one name share it
        (as the nodes of one deployment must)."""
        if name not in self._keys:
            self._keys[name] = write_signing_key(self.root / "keys" / f"{name}.pem")
        return self._keys[name]

    def start(
        self,
        backend: Backend,
        settings: dict[str, str | int] | None = None,
        *,
        key: str = "default",
        name: str | None = None,
    ) -> Server:
        name = name or f"{backend.name}-{len(self.started)}"
        server = Server(self.root / name, backend, settings or {}, self.key(key), name=name)
        self.started.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.started:
            server.stop()


# --- a proxy that injects faults -------------------------------------------------


@dataclass
class Fault:
    path_prefix: str
    status: int
    times: int
    retry_after: str | None
    code: str
    method: str | None = None


@dataclass
class FaultProxy:
    """An HTTP proxy in front of a real server that can answer chosen
    requests itself (a 503 with ``Retry-After``, say), rewrite JSON answers
    (``rewrite(path, request_json, response_json)``), and counts what
    passes, by path."""

    upstream: str
    hits: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    rewrite: Callable[[str, Any, dict[str, Any]], dict[str, Any]] | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(
        self,
        path_prefix: str,
        status: int = 503,
        times: int = 1,
        retry_after: str | None = "1",
        code: str = "ledger_unavailable",
        method: str | None = None,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(path_prefix, status, times, retry_after, code, method))

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (
                    fault.times > 0
                    and path.startswith(fault.path_prefix)
                    and (fault.method is None or fault.method == method)
                ):
                    fault.times -= 1
                    return fault
        return None

    def start(self) -> FaultProxy:
        proxy = self
        upstream = urllib.parse.urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with proxy._lock:
                    proxy.hits[path] += 1
                fault = proxy._fault_for(self.command, path)
                if fault is not None:
                    payload = json.dumps(
                        {"error": fault.code, "message": "injected by the test proxy"}
                    ).encode()
                    self.send_response(fault.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    if fault.retry_after is not None:
                        self.send_header("retry-after", fault.retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(
                    upstream.hostname or "127.0.0.1", upstream.port, timeout=30
                )
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection", "content-length")
                    }
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    out_headers = [
                        (k, v)
                        for k, v in response.getheaders()
                        if k.lower() not in ("content-length", "connection", "transfer-encoding")
                    ]
                    status = response.status
                finally:
                    conn.close()
                if proxy.rewrite is not None and data:
                    try:
                        parsed = json.loads(data)
                    except ValueError:
                        parsed = None
                    try:
                        sent = json.loads(body) if body else None
                    except ValueError:
                        sent = None
                    if isinstance(parsed, dict):
                        data = json.dumps(proxy.rewrite(path, sent, parsed)).encode()
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- time under the test's control ------------------------------------------------------


class FakeClock:
    """Wall time that starts now and moves only when told (or slept)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def time(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._offset += seconds


class RecordingClock:
    """The real clock, with every sleep recorded (and really taken)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            time.sleep(seconds)


def tamper(token: str) -> str:
    """The same token with one claim changed (the signature no longer fits)."""
    import base64

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["max_seats"] = int(claims.get("max_seats", 1)) + 100
    claims["exp"] = int(claims["exp"]) + 86400
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


def copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
