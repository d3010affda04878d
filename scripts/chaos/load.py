"""The chaos run's moving parts, all on one asyncio loop: machines that
acquire, heartbeat, release (or vanish), an administrator who
force-releases, samplers of the ledger and the store, and the fault
injector. Everything that happens is written as JSON lines:

- ``requests.jsonl``: every HTTP attempt, with send and receive times
  (``t0``, ``t1``, Unix seconds), node, status or transport error, the
  error code and the fields the checks need;
- ``intents.jsonl``: what a machine meant (abandon a session, give up);
- ``samples.jsonl``: live-seat counts seen at an instant;
- ``faults.jsonl``: each fault with its window.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster import SHUTDOWN_GRACE_SECS, Node, Postgres, Proxy, Redis, log
from netutil import Resp, Response, TransportError, http_request


def parse_ts(s: str | None) -> float | None:
    """RFC 3339 (any number of fraction digits) to Unix seconds."""
    if not s:
        return None
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        return None
    base, frac, tz = m.groups()
    tz = "+00:00" if tz == "Z" else tz
    t = datetime.fromisoformat(base + tz).timestamp()
    if frac:
        t += float("0" + frac)
    return t


class Recorder:
    def __init__(self, work: Path) -> None:
        self.files = {name: open(work / f"{name}.jsonl", "a", buffering=1)
                      for name in ("requests", "intents", "samples", "faults")}
        self.counts: dict[str, int] = {}

    def write(self, stream: str, /, **fields: Any) -> None:
        self.files[stream].write(json.dumps(fields, separators=(",", ":")) + "\n")
        self.counts[stream] = self.counts.get(stream, 0) + 1

    def close(self) -> None:
        for f in self.files.values():
            f.close()


@dataclass
class License:
    index: int
    id: str
    key: str
    org_id: str
    seats: int


@dataclass
class Held:
    """A session a machine holds, as the administrator sees it."""

    session: str
    license: License
    hw: str
    revoked: bool = False


@dataclass
class Settings:
    duration: float
    lease_ttl: int
    heartbeat: int
    sweep: int
    seed: int
    machines_per_seat: float = 2.0
    abandon_p: float = 0.12
    hold: tuple[float, float] = (2.0, 8.0)
    force_every: tuple[float, float] = (2.0, 4.0)
    timeout: float = 30.0


class Run:
    def __init__(self, *, settings: Settings, rec: Recorder, nodes: list[Node], redis: Redis,
                 pg: Postgres, proxy: Proxy, licenses: list[License], owner: dict[str, str],
                 ops_token: str, rng: random.Random) -> None:
        self.s = settings
        self.rec = rec
        self.nodes = nodes
        self.redis = redis
        self.pg = pg
        self.proxy = proxy
        self.licenses = licenses
        self.owner = owner
        self.ops_token = ops_token
        self.rng = rng
        self.stopping = asyncio.Event()
        self.held: dict[str, Held] = {}
        self.start = time.time()
        self.machine_seq = 0
        self.fault_busy = asyncio.Lock()

    # --- HTTP with logging ----------------------------------------------------------

    async def call(self, op: str, node: int, method: str, path: str, *, body: Any = None,
                   token: str | None = None, log_fields: dict[str, Any] | None = None,
                   keep: tuple[str, ...] = ()) -> tuple[Response | None, dict[str, Any]]:
        headers = {"authorization": f"Bearer {token}"} if token else None
        t0 = time.time()
        entry: dict[str, Any] = {"op": op, "node": node}
        if log_fields:
            entry.update(log_fields)
        r: Response | None = None
        try:
            r = await http_request(method, self.nodes[node].port, path, json_body=body,
                                   headers=headers, timeout=self.s.timeout)
        except TransportError as e:
            entry["err"] = e.kind
            entry["detail"] = e.detail[:200]
        t1 = time.time()
        entry["t0"] = round(t0, 6)
        entry["t1"] = round(t1, 6)
        data: Any = None
        if r is not None:
            entry["status"] = r.status
            data = r.json()
            if isinstance(data, dict):
                if "error" in data:
                    entry["code"] = data.get("error")
                    if r.status >= 500 or r.status in (404, 401, 403, 400, 429):
                        entry["message"] = str(data.get("message", ""))[:200]
                for k in keep:
                    if k in data and not isinstance(data[k], (dict, list)):
                        entry["body_status" if k == "status" else k] = data[k]
                for k in ("expires_at", "ended_at"):
                    if k in entry and isinstance(entry[k], str):
                        entry[k[:-3] if k.endswith("_at") else k] = parse_ts(entry[k])
            elif r.status >= 500:
                entry["message"] = r.body[:200].decode(errors="replace")
            if "retry-after" in r.headers:
                entry["retry_after"] = r.headers["retry-after"]
        self.rec.write("requests", **entry)
        return r, entry

    def pick_node(self, avoid: int | None = None) -> int:
        choices = [i for i in range(len(self.nodes)) if i != avoid]
        return self.rng.choice(choices)

    async def sleep(self, secs: float) -> bool:
        """Sleeps unless the run is stopping; True if it stopped."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, secs))
            return True
        except asyncio.TimeoutError:
            return False

    # --- machines --------------------------------------------------------------------

    def new_hw(self, lic: License) -> str:
        self.machine_seq += 1
        return f"chaos-l{lic.index}-m{self.machine_seq}"

    async def machine(self, lic: License) -> None:
        hw = self.new_hw(lic)
        await asyncio.sleep(self.rng.uniform(0, 2))
        while not self.stopping.is_set():
            got = await self.acquire(lic, hw)
            if got is None:
                return
            session, token = got
            abandon = self.rng.random() < self.s.abandon_p
            hold = self.rng.uniform(1.0, 4.0) if abandon else self.rng.uniform(*self.s.hold)
            held = Held(session, lic, hw)
            self.held[session] = held
            outcome, token = await self.keep(lic, hw, session, token, hold)
            self.held.pop(session, None)
            if outcome == "lost":
                # The lease is gone (410, or another refusal): acquire again.
                pass
            elif abandon:
                # The machine dies silently: no release, no more heartbeats.
                # A new machine takes its place (a new hardware id), so that
                # nothing renews the abandoned lease.
                self.rec.write("intents", kind="abandon", t=time.time(), session=session,
                               license=lic.id, hw=hw)
                hw = self.new_hw(lic)
            else:
                await self.release(lic, hw, session, token)
            if await self.sleep(self.rng.uniform(0.3, 2.0)):
                return

    async def acquire(self, lic: License, hw: str) -> tuple[str, str] | None:
        avoid = None
        while not self.stopping.is_set():
            node = self.pick_node(avoid)
            avoid = None
            r, e = await self.call(
                "acquire", node, "POST", "/api/v1/licenses/acquire",
                body={"license_key": lic.key, "hardware_id": hw, "client_version": "chaos"},
                log_fields={"license": lic.id, "hw": hw},
                keep=("session_id", "expires_at", "seats_used", "max_seats"))
            if r is None:
                avoid = node
                if await self.sleep(self.rng.uniform(0.1, 0.3)):
                    return None
                continue
            if r.status in (200, 201):
                d = r.json()
                return str(d["session_id"]), str(d["token"])
            if r.status == 409:
                delay = self.rng.uniform(0.5, 1.5)
            elif r.status == 503:
                avoid = node
                delay = self.rng.uniform(0.5, 1.5)
            else:
                delay = 1.0
            if await self.sleep(delay):
                return None
        return None

    async def keep(self, lic: License, hw: str, session: str, token: str,
                   hold: float) -> tuple[str, str]:
        """Heartbeats every interval until the hold is over (or the run
        stops): ("held", token), or ("lost", token) once the lease is gone."""
        end = time.monotonic() + hold
        interval = float(self.s.heartbeat)
        path = f"/api/v1/licenses/sessions/{session}/heartbeat"
        while True:
            wait = min(interval * self.rng.uniform(0.8, 1.0), max(0.0, end - time.monotonic()))
            if await self.sleep(wait) or time.monotonic() >= end:
                return "held", token
            node = self.pick_node()
            r, e = await self.call("heartbeat", node, "POST", path, token=token,
                                   log_fields={"license": lic.id, "hw": hw, "session": session},
                                   keep=("expires_at",))
            if r is None or r.status in (503, 429):
                continue
            if r.status == 200:
                d = r.json() or {}
                if d.get("token"):
                    token = str(d["token"])
                continue
            return "lost", token

    async def release(self, lic: License, hw: str, session: str, token: str) -> None:
        """Gives the seat back, retried across nodes until answered."""
        path = f"/api/v1/licenses/sessions/{session}"
        avoid = None
        for attempt in range(10):
            node = self.pick_node(avoid)
            r, e = await self.call("release", node, "DELETE", path, token=token,
                                   log_fields={"license": lic.id, "hw": hw, "session": session,
                                               "attempt": attempt},
                                   keep=("ended_at", "end_reason"))
            if r is not None and r.status != 503:
                return
            avoid = node
            await asyncio.sleep(min(2.0, 0.25 * (attempt + 1)) * self.rng.uniform(0.5, 1.0))
        self.rec.write("intents", kind="release_gave_up", t=time.time(), session=session,
                       license=lic.id, hw=hw)

    # --- the administrator -------------------------------------------------------------

    async def admin(self) -> None:
        while not await self.sleep(self.rng.uniform(*self.s.force_every)):
            candidates = [h for h in self.held.values() if not h.revoked]
            if not candidates:
                continue
            h = self.rng.choice(candidates)
            h.revoked = True
            path = f"/api/v1/licenses/{h.license.id}/sessions/{h.session}"
            avoid = None
            for attempt in range(12):
                node = self.pick_node(avoid)
                r, e = await self.call(
                    "force_release", node, "DELETE", path, token=self.owner["access_token"],
                    log_fields={"license": h.license.id, "hw": h.hw, "session": h.session,
                                "attempt": attempt},
                    keep=("ended_at", "end_reason", "status"))
                if r is not None and r.status == 401:
                    await self.login(node)
                    continue
                if r is not None and r.status not in (503,):
                    break
                avoid = node
                if self.stopping.is_set() and attempt > 3:
                    break
                await asyncio.sleep(min(2.0, 0.3 * (attempt + 1)))

    async def login(self, node: int) -> None:
        r, _ = await self.call("login", node, "POST", "/api/v1/auth/login",
                               body={"email": self.owner["email"],
                                     "password": self.owner["password"]})
        if r is not None and r.status == 200:
            self.owner["access_token"] = str(r.json()["access_token"])

    # --- samplers --------------------------------------------------------------------

    async def redis_sampler(self) -> None:
        """Live leases per license, read from Redis itself (not through the
        proxy) in one script, at one Redis instant."""
        keys = [f"sw:{{{lic.org_id}}}:lic:{lic.id}:leases" for lic in self.licenses]
        script = ("local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + "
                  "math.floor(tonumber(t[2]) / 1000) local out = {t[1], t[2]} "
                  "for i, k in ipairs(KEYS) do out[#out + 1] = redis.call('ZCOUNT', k, "
                  "'(' .. string.format('%.0f', now), '+inf') end return out")
        r = Resp(self.redis.port)
        try:
            while not self.stopping.is_set() or not self._samplers_done.is_set():
                try:
                    out = await r.call("EVAL", script, len(keys), *keys, timeout=1.0)
                    t = int(out[0]) + int(out[1]) / 1e6
                    counts = {lic.id: int(c) for lic, c in zip(self.licenses, out[2:], strict=True)}
                    self.rec.write("samples", src="redis", t=round(t, 6), counts=counts)
                except Exception:
                    pass
                await asyncio.sleep(0.25)
        finally:
            await r.close()

    async def api_sampler(self) -> None:
        """Open sessions of a license through GET .../sessions?status=live;
        those whose recorded lease outlives the answer were all live at once
        (the store's lease end never runs ahead of the ledger's, and a
        record is ended before its seat is freed)."""
        i = 0
        while not self._samplers_done.is_set():
            lic = self.licenses[i % len(self.licenses)]
            node = i % len(self.nodes)
            i += 1
            path = f"/api/v1/licenses/{lic.id}/sessions?status=live&limit=200"
            r, e = await self.call("list_sessions", node, "GET", path,
                                   token=self.owner["access_token"],
                                   log_fields={"license": lic.id})
            if r is not None and r.status == 200:
                items = (r.json() or {}).get("items", [])
                t1 = e["t1"]
                live = [it["id"] for it in items
                        if it.get("status") == "live"
                        and (parse_ts(it.get("lease_expires_at")) or 0) > t1]
                self.rec.write("samples", src="api", t=t1, node=node,
                               counts={lic.id: len(live)}, sessions={lic.id: live})
            elif r is not None and r.status == 401:
                await self.login(node)
            await asyncio.sleep(0.3)

    async def psql_sampler(self) -> None:
        ids = ",".join(f"'{lic.id}'" for lic in self.licenses)
        sql = ("SELECT json_build_object('t', extract(epoch from clock_timestamp()), 'rows', "
               "COALESCE(json_agg(json_build_object('l', license_id, 'n', n, 's', s)), '[]')) "
               "FROM (SELECT license_id, count(*) AS n, array_agg(id) AS s FROM sessions "
               f"WHERE license_id IN ({ids}) AND ended_at IS NULL "
               "AND lease_expires_at > clock_timestamp() GROUP BY license_id) x")
        while not self._samplers_done.is_set():
            try:
                out = json.loads(await self.pg.psql(sql, timeout=10))
                counts = {lic.id: 0 for lic in self.licenses}
                sessions = {}
                for row in out["rows"]:
                    counts[row["l"]] = row["n"]
                    sessions[row["l"]] = row["s"]
                self.rec.write("samples", src="store", t=round(float(out["t"]), 6),
                               counts=counts, sessions=sessions)
            except Exception:
                pass
            await asyncio.sleep(2.0)

    async def metrics_sampler(self) -> None:
        """Each node's seat gauge: the live count its last ledger call saw."""
        ours = {lic.id for lic in self.licenses}
        pat = re.compile(r'^seatwarden_seats_in_use\{([^}]*)\}\s+(\S+)', re.M)
        i = 0
        while not self._samplers_done.is_set():
            node = i % len(self.nodes)
            i += 1
            t0 = time.time()
            try:
                r = await http_request("GET", self.nodes[node].port, "/metrics", timeout=10)
            except TransportError:
                r = None
            if r is not None and r.status == 200:
                counts = {}
                for labels, value in pat.findall(r.body.decode(errors="replace")):
                    m = re.search(r'license_id="([^"]+)"', labels)
                    if m and m.group(1) in ours:
                        counts[m.group(1)] = int(float(value))
                self.rec.write("samples", src="metrics", t=round(t0, 6), node=node, counts=counts)
            await asyncio.sleep(2.0)

    # --- faults ------------------------------------------------------------------------

    def fault(self, kind: str, t0: float, t1: float, **detail: Any) -> None:
        self.rec.write("faults", kind=kind, t0=round(t0, 6), t1=round(t1, 6), **detail)
        log(f"fault {kind} {detail or ''} from +{t0 - self.start:.1f}s for {t1 - t0:.1f}s")

    async def kill_node(self) -> None:
        node = self.nodes[self.rng.randrange(len(self.nodes))]
        t0 = time.time()
        node.kill()
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))  # the node is down this long
        try:
            await node.start(timeout=120)
        finally:
            self.fault("kill_node", t0, time.time(), node=node.index)

    async def redis_restart(self) -> None:
        t0 = time.time()
        await self.redis.stop()
        t_down = time.time()
        await asyncio.sleep(self.rng.uniform(0.5, 1.5))  # Redis is down this long
        try:
            await self.redis.start()
        finally:
            self.fault("redis_restart", t0, time.time(), stopped_at=round(t_down, 6))

    async def pg_restart(self) -> None:
        t0 = time.time()
        await self.pg.stop("fast")
        t_down = time.time()
        await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        try:
            await self.pg.start()
        finally:
            self.fault("pg_restart", t0, time.time(), stopped_at=round(t_down, 6))

    async def redis_stall(self) -> None:
        t0 = time.time()
        self.proxy.stall()
        try:
            await asyncio.sleep(self.rng.uniform(2.5, 4.0))
        finally:
            self.proxy.resume()
            self.fault("redis_stall", t0, time.time())

    async def orgs_restart(self) -> None:
        node = self.rng.randrange(len(self.nodes))
        t0 = time.time()
        r, e = await self.call("ops_restart", node, "POST", "/api/v1/ops/subsystems/orgs/restart",
                               token=self.ops_token, keep=("name", "status", "restarts"))
        self.fault("orgs_restart", t0, time.time(), node=node,
                   answer=e.get("status"), err=e.get("err"))

    async def rolling_restart(self) -> None:
        """Every node in turn: SIGTERM (a graceful stop, as an orchestrator
        sends), then started again. Clients may see connections refused by
        the stopped node, and nothing else: no 5xx, no lost session."""
        for node in self.nodes:
            t0 = time.time()
            started = time.monotonic()
            code = await node.stop(timeout=SHUTDOWN_GRACE_SECS + 10)
            took = time.monotonic() - started
            try:
                await node.start(timeout=120)
            finally:
                self.fault("rolling_restart", t0, time.time(), node=node.index,
                           exit=code, stop_secs=round(took, 3))

    FAULTS = ("kill_node", "redis_restart", "pg_restart", "redis_stall", "orgs_restart",
              "rolling_restart")

    async def injector(self, plan: list[tuple[float, str]]) -> None:
        for at, kind in plan:
            delay = self.start + at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await getattr(self, kind)()
            except Exception as e:  # noqa: BLE001
                self.rec.write("faults", kind=kind, t0=time.time(), t1=time.time(),
                               failed=f"{type(e).__name__}: {e}")
                log(f"fault {kind} failed: {e}")
                raise

    def plan(self) -> list[tuple[float, str]]:
        d = self.s.duration
        warmup = max(5.0, 0.1 * d)
        cooldown = max(8.0, 0.15 * d)
        rounds = max(1, int(d // 60))
        kinds: list[str] = []
        for _ in range(rounds):
            k = list(self.FAULTS)
            self.rng.shuffle(k)
            kinds += k
        span = max(1.0, d - warmup - cooldown)
        step = span / len(kinds)
        return [(warmup + i * step + self.rng.uniform(0, step * 0.3), k)
                for i, k in enumerate(kinds)]

    async def watchdog(self) -> None:
        """Notices a node or Redis that exits by itself (a crash), records it
        and starts it again so that the run goes on."""
        while not self._samplers_done.is_set():
            for node in self.nodes:
                if not node.expected_down and node.proc is not None and node.proc.poll() is not None:
                    t = time.time()
                    code = node.proc.returncode
                    self.rec.write("faults", kind="unexpected_exit", t0=t, t1=t, node=node.index,
                                   code=code)
                    log(f"{node.name} exited by itself with {code}")
                    node.expected_down = True
                    try:
                        await node.start()
                    except Exception as e:  # noqa: BLE001
                        log(f"could not restart {node.name}: {e}")
            await asyncio.sleep(0.5)

    # --- the whole run --------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self._samplers_done = asyncio.Event()
        self.start = time.time()
        plan = self.plan()
        log("fault plan: " + ", ".join(f"+{at:.0f}s {k}" for at, k in plan))
        machines = []
        for lic in self.licenses:
            n = int(round(lic.seats * self.s.machines_per_seat)) + 1
            machines += [asyncio.create_task(self.machine(lic)) for _ in range(n)]
        background = [asyncio.create_task(c) for c in (
            self.redis_sampler(), self.api_sampler(), self.psql_sampler(),
            self.metrics_sampler(), self.watchdog())]
        admin = asyncio.create_task(self.admin())
        injector = asyncio.create_task(self.injector(plan))
        await asyncio.sleep(self.s.duration)
        load_end = time.time()
        # Faults finish what they started (a node comes back) before the end.
        try:
            await asyncio.wait_for(injector, timeout=180)
        except Exception as e:  # noqa: BLE001
            log(f"fault injector: {type(e).__name__}: {e}")
        self.stopping.set()
        log(f"load stopped at +{time.time() - self.start:.0f}s; releasing held seats")
        done, pending = await asyncio.wait(machines + [admin], timeout=120)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                log(f"a load task failed: {t.exception()!r}")
        stopped = time.time()
        drain = await self.drain()
        self._samplers_done.set()
        await asyncio.gather(*background, return_exceptions=True)
        return {"start": self.start, "load_end": load_end, "stopped": stopped,
                "plan": plan, "drain": drain,
                "unfinished_tasks": len(pending)}

    async def drain(self) -> dict[str, Any]:
        """After the load: polls (bounded) until the store has no open session
        of our licenses and the ledger no live lease."""
        bound = self.s.lease_ttl + 3 * self.s.sweep + 30
        ids = ",".join(f"'{lic.id}'" for lic in self.licenses)
        t_start = time.time()
        deadline = time.monotonic() + bound
        open_n = ledger_n = None
        keys = [f"sw:{{{lic.org_id}}}:lic:{lic.id}:leases" for lic in self.licenses]
        script = ("local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + "
                  "math.floor(tonumber(t[2]) / 1000) local n = 0 for i, k in ipairs(KEYS) do "
                  "n = n + redis.call('ZCOUNT', k, '(' .. string.format('%.0f', now), '+inf') "
                  "end return n")
        r = Resp(self.redis.port)
        try:
            while True:
                try:
                    open_n = int((await self.pg.psql(
                        f"SELECT count(*) FROM sessions WHERE license_id IN ({ids}) "
                        "AND ended_at IS NULL", timeout=10)).strip())
                    ledger_n = int(await r.call("EVAL", script, len(keys), *keys))
                except Exception:  # noqa: BLE001
                    pass
                if open_n == 0 and ledger_n == 0:
                    break
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.5)
        finally:
            await r.close()
        return {"bound": bound, "took": round(time.time() - t_start, 3),
                "open_sessions": open_n, "live_leases": ledger_n}
