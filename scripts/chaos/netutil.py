"""Small asyncio network clients for the chaos run, stdlib only.

- :func:`http_request`: one HTTP/1.1 request on a fresh connection
  (``Connection: close``). A fresh connection per request keeps failures
  unambiguous: a refused connection means the request never reached the
  node; a reset or a timeout means its outcome is unknown.
- :class:`Resp`: a minimal Redis (RESP2) client, for reading the ledger
  straight from Redis (not through the stall proxy).
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any


class TransportError(Exception):
    """The request got no HTTP answer. ``kind`` is one of ``refused``,
    ``reset``, ``timeout``, ``eof`` or ``other``."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def _kind_of(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(e, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return "other"


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise TransportError("other", f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers until the empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return Response(status, headers, body)


async def http_request(
    method: str,
    port: int,
    path: str,
    *,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
    host: str = "127.0.0.1",
) -> Response:
    """One request; raises :class:`TransportError` when no answer came."""
    body = b""
    hdrs = {"host": f"{host}:{port}", "connection": "close", "user-agent": "seatwarden-chaos"}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs["content-type"] = "application/json"
    if body or method in ("POST", "PUT", "PATCH"):
        hdrs["content-length"] = str(len(body))
    if headers:
        hdrs.update({k.lower(): v for k, v in headers.items()})
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    data = raw.encode("latin-1") + b"\r\n" + body

    async def run() -> Response:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            await writer.drain()
            return await _read_response(reader)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass

    try:
        return await asyncio.wait_for(run(), timeout)
    except TransportError:
        raise
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure is a transport failure
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise TransportError(_kind_of(e), f"{type(e).__name__}: {e}") from None


# --- Redis ----------------------------------------------------------------------


class RespError(Exception):
    pass


def _encode(*args: Any) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


class Resp:
    """A blocking-free RESP2 client on one connection (one command at a time)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass
        self.reader = self.writer = None

    async def _read(self) -> Any:
        assert self.reader is not None
        line = await self.reader.readuntil(b"\r\n")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = await self.reader.readexactly(n + 2)
            return data[:-2].decode()
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [await self._read() for _ in range(n)]
        raise RespError(f"bad RESP type {line!r}")

    async def call(self, *args: Any, timeout: float = 2.0) -> Any:
        async def run() -> Any:
            if self.writer is None:
                await self._connect()
            assert self.writer is not None
            self.writer.write(_encode(*args))
            await self.writer.drain()
            return await self._read()

        try:
            return await asyncio.wait_for(run(), timeout)
        except RespError:
            raise
        except BaseException:
            await self.close()
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
