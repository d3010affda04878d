"""A loopback TCP proxy in front of Redis that can stall the network.

    python3 redis_proxy.py --upstream PORT --port-file FILE [--log FILE]

Listens on a free loopback port (written to FILE once listening) and
forwards every connection to 127.0.0.1:PORT. Signals control it:

- SIGUSR1: stall. Bytes already read are held, nothing more is forwarded in
  either direction, and new connections are accepted but not connected
  upstream: what a network partition with TCP retransmission looks like to
  both ends. Nothing is dropped.
- SIGUSR2: resume. Held bytes go on, in order.
- SIGTERM/SIGINT: exit.

When Redis goes away (a restart), the upstream side closes and the proxy
closes the client side, so clients reconnect (through the proxy) as they
would to Redis itself. Runs in its own process so that the chaos driver's
event loop never delays ledger traffic. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time


class StallProxy:
    def __init__(self, upstream: int, log) -> None:
        self.upstream = upstream
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.log = log
        self.connections = 0

    def say(self, msg: str) -> None:
        self.log.write(f"{time.time():.3f} {msg}\n")
        self.log.flush()

    def stall(self) -> None:
        self.flowing.clear()
        self.say("stall")

    def resume(self) -> None:
        self.flowing.set()
        self.say("resume")

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.flowing.wait()
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError as e:
            self.say(f"upstream connect failed: {e}")
            cwriter.close()
            return
        await asyncio.gather(self.pipe(creader, uwriter), self.pipe(ureader, cwriter))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    log = open(args.log, "a") if args.log else sys.stderr
    proxy = StallProxy(args.upstream, log)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.stall)
    loop.add_signal_handler(signal.SIGUSR2, proxy.resume)
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    proxy.say(f"listening on {port}, upstream {args.upstream}")
    await done.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
