"""The processes of a chaos run: Redis (AOF), PostgreSQL, the stall proxy
in front of Redis, and the seatwarden nodes. Every pid is also written to
``<work>/pids`` so that ``scripts/chaos.sh`` can clean up if the driver
itself dies. Waits are bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netutil import Resp, TransportError, free_port, http_request

HERE = Path(__file__).resolve().parent
# What a rolling restart's SIGTERM must be done within (http.shutdown_grace_secs).
SHUTDOWN_GRACE_SECS = 5

REPO = HERE.parents[1]


def log(msg: str) -> None:
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


async def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001
            last = e
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}"
                               + (f" (last error: {last})" if last else ""))
        await asyncio.sleep(interval)



async def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`. Returns the exit status
    (negative: killed by that signal), or None if it was not running."""
    if proc is None or proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    return proc.returncode

class Pids:
    """Every process we start, for the shell's trap."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, pid: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{pid}\n")


# --- Redis -------------------------------------------------------------------------


class Redis:
    def __init__(self, work: Path, pids: Pids) -> None:
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.pids = pids

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.proc = proc
        self.pids.add(proc.pid)
        r = Resp(self.port)

        async def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}; "
                                   f"see {self.dir / 'redis.log'}")
            try:
                return await r.call("PING", timeout=1.0) == "PONG"
            except Exception:
                await r.close()
                return False

        try:
            await wait_for(ready, 30, 0.05, "redis to answer PING")
        finally:
            await r.close()

    async def stop(self, timeout: float = 20.0) -> None:
        """A clean shutdown (SIGTERM): Redis writes and fsyncs its AOF."""
        proc, self.proc = self.proc, None
        await terminate(proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


# --- PostgreSQL -------------------------------------------------------------------------


class Postgres:
    """A throwaway cluster owned by the `postgres` user (PostgreSQL refuses
    to run as root), like scripts/services.sh starts."""

    def __init__(self, work: Path, pids: Pids) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")])
        if bins:
            self.bin = Path(bins[-1])
        elif (pg_ctl := shutil.which("pg_ctl")) is not None:
            self.bin = Path(pg_ctl).parent
        else:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
        self.data = work / "pg"
        self.logdir = work / "pglog"
        self.port = free_port()
        self.pids = pids
        self.as_pg: list[str] = []
        if os.geteuid() == 0:
            self.as_pg = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/chaos"

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        p = await asyncio.create_subprocess_exec(
            *self.as_pg, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise RuntimeError(f"{' '.join(args)} timed out") from None
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {out.decode(errors='replace')}")
        return out.decode(errors="replace")

    async def init(self) -> None:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--home-dir", "/var/lib/postgresql",
                                "--shell", "/bin/bash", "postgres"], check=True)
        for d in (self.data, self.logdir):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres")
        await self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                        "-U", "postgres", "--no-sync")

    async def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=300")
        await self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                        str(self.logdir / "pg.log"), "-w", "-t", "60", "start", "-o", opts)
        pidfile = self.data / "postmaster.pid"
        try:
            self.pids.add(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass

    async def stop(self, mode: str = "fast") -> None:
        await self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                        "-t", "60", "stop", check=False)

    def stop_now(self) -> None:
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)

    async def psql(self, sql: str, url: str | None = None, timeout: float = 30.0) -> str:
        """Runs SQL with psql (unaligned, tuples only); returns stdout."""
        p = await asyncio.create_subprocess_exec(
            "psql", url or self.url, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise RuntimeError("psql timed out") from None
        if p.returncode != 0:
            raise RuntimeError(f"psql failed: {err.decode(errors='replace').strip()}")
        return out.decode()

    async def create_database(self) -> None:
        await self.psql("CREATE DATABASE chaos", url=self.admin_url)


# --- the stall proxy ------------------------------------------------------------------------


class Proxy:
    def __init__(self, work: Path, upstream: int, pids: Pids) -> None:
        self.work = work
        self.upstream = upstream
        self.pids = pids
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        port_file = self.work / "proxy.port"
        with open(self.work / "proxy.log", "a") as err:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "redis_proxy.py"), "--upstream", str(self.upstream),
                 "--port-file", str(port_file), "--log", str(self.work / "proxy.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=self.work,
                start_new_session=True)
        self.proc = proc
        self.pids.add(proc.pid)

        async def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("the Redis proxy exited; see proxy.log")
            return port_file.exists()

        await wait_for(up, 20, 0.05, "the Redis proxy")
        self.port = int(port_file.read_text())

    def stall(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


# --- seatwarden nodes -------------------------------------------------------------------


class Node:
    def __init__(self, index: int, work: Path, binary: Path, env: dict[str, str], pids: Pids) -> None:
        self.index = index
        self.name = f"node{index}"
        self.root = work / self.name
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port = free_port()
        self.extra_env = env
        self.pids = pids
        self.proc: subprocess.Popen | None = None
        self.log_path = work / f"{self.name}.log"
        self.expected_down = False
        self.starts = 0

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SEATWARDEN__") and k != "RUST_LOG"}
        env.update(self.extra_env)
        env["NO_COLOR"] = "1"  # plain logs in node*.log
        env["SEATWARDEN__DATA_DIR"] = str(self.data)
        env["SEATWARDEN__HTTP__LISTEN"] = f"127.0.0.1:{self.port}"
        return env

    async def start(self, timeout: float = 120.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"===== chaos: start #{self.starts} at {time.time():.3f} =====\n".encode())
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary)], env=self.env, cwd=self.data,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.pids.add(self.proc.pid)
        proc = self.proc

        async def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.tail()}")
            try:
                r = await http_request("GET", self.port, "/health/ready", timeout=2)
            except TransportError:
                return False
            return r.status == 200

        await wait_for(ready, timeout, 0.1, f"{self.name} to be ready")
        self.expected_down = False

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.expected_down = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    async def stop(self, timeout: float = 25.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit status
        (negative: killed by that signal), or None if it was not running."""
        self.expected_down = True
        proc, self.proc = self.proc, None
        return await terminate(proc, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def cli(self, *args: str, stdin: str | None = None) -> Any:
        p = await asyncio.create_subprocess_exec(
            str(self.binary), *args, env=self.env, cwd=self.data,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(
            p.communicate(stdin.encode() if stdin is not None else None), 120)
        if p.returncode != 0:
            raise RuntimeError(f"seatwarden {' '.join(args)} failed: {err.decode(errors='replace')}")
        return json.loads(out)


def node_env(*, work: Path, database_url: str, redis_url: str, ops_token: str,
             lease_ttl: int, heartbeat: int, sweep: int) -> dict[str, str]:
    values = {
        "DATABASE__URL": database_url,
        "REDIS__URL": redis_url,
        "SIGNING__KEY_PATH": str(work / "signing-key.pem"),
        "SIGNING__RSA_BITS": "2048",
        "MAIL__TEMPLATE_DIR": str(REPO / "config" / "templates" / "email"),
        "AUTH__ACCESS_TOKEN_SECRET": hashlib.sha256(f"chaos {work}".encode()).hexdigest(),
        "OPS__TOKEN": ops_token,
        "SEATS__LEASE_TTL_SECS": str(lease_ttl),
        "SEATS__HEARTBEAT_INTERVAL_SECS": str(heartbeat),
        "SEATS__SWEEP_INTERVAL_SECS": str(sweep),
        "HTTP__SHUTDOWN_GRACE_SECS": str(SHUTDOWN_GRACE_SECS),
        "RATE_LIMITS__ENABLED": "false",
        "LOG__LEVEL": "info",
    }
    return {f"SEATWARDEN__{k}": v for k, v in values.items()}
