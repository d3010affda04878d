"""The chaos run's driver; scripts/chaos.sh runs it (see there for usage).

    python3 scripts/chaos/chaos.py --work DIR [--duration SECS] [--seed N]

Starts PostgreSQL, Redis (AOF: appendonly yes, appendfsync everysec), a
stall proxy in front of Redis and three seatwarden nodes (all on free
loopback ports, everything under DIR), registers an organization owner,
creates licenses with few seats, drives load and faults for the duration,
waits (bounded) for every session to be closed, dumps the store's sessions
and audit log, stops everything and prints the verdict of checks.py.
Exit status: 0 no violation, 1 violations, 2 the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checks  # noqa: E402
from cluster import REPO, Node, Pids, Postgres, Proxy, Redis, log, node_env  # noqa: E402
from load import License, Recorder, Run, Settings  # noqa: E402
from netutil import http_request  # noqa: E402

LICENSE_SEATS = (2, 3, 2, 3, 2)


class Cluster:
    def __init__(self, work: Path, binary: Path, s: Settings) -> None:
        self.work = work
        self.binary = binary
        self.s = s
        self.pids = Pids(work / "pids")
        self.pg = Postgres(work, self.pids)
        self.redis = Redis(work, self.pids)
        self.proxy: Proxy | None = None
        self.nodes: list[Node] = []
        self.ops_token = secrets.token_hex(24)

    async def up(self) -> None:
        log(f"starting PostgreSQL on port {self.pg.port}")
        await self.pg.init()
        await self.pg.start()
        await self.pg.create_database()
        log(f"starting Redis (AOF) on port {self.redis.port}")
        await self.redis.start()
        self.proxy = Proxy(self.work, self.redis.port, self.pids)
        await self.proxy.start()
        log(f"Redis stall proxy on port {self.proxy.port}")
        env = node_env(work=self.work, database_url=self.pg.url, redis_url=self.proxy.url,
                       ops_token=self.ops_token, lease_ttl=self.s.lease_ttl,
                       heartbeat=self.s.heartbeat, sweep=self.s.sweep)
        self.nodes = [Node(i, self.work, self.binary, env, self.pids) for i in range(3)]
        # The first node migrates the database and writes the signing key
        # the others share; then the other two start together.
        await self.nodes[0].start()
        await asyncio.gather(*(n.start() for n in self.nodes[1:]))
        log("nodes ready on ports " + ", ".join(str(n.port) for n in self.nodes))

    async def down(self) -> None:
        for n in self.nodes:
            try:
                await n.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {n.name}: {e}")
        if self.proxy:
            self.proxy.stop()
        try:
            await self.redis.stop()
        except Exception as e:  # noqa: BLE001
            log(f"stopping redis: {e}")
        try:
            await self.pg.stop("immediate")
        except Exception as e:  # noqa: BLE001
            log(f"stopping postgres: {e}")

    def kill_all(self) -> None:
        """Last resort (an exception, a signal): nothing may be left behind."""
        for n in self.nodes:
            n.kill()
        if self.proxy:
            self.proxy.stop()
        self.redis.kill()
        try:
            self.pg.stop_now()
        except Exception:  # noqa: BLE001
            pass


async def setup_owner(node: Node) -> dict[str, str]:
    """An organization owner, signed up through the API (force-release needs
    an owner's or admin's access token)."""
    owner = {"email": f"owner-{secrets.token_hex(4)}@example.com", "password": "Chaos1Password"}
    r = await http_request("POST", node.port, "/api/v1/auth/register", json_body={
        "email": owner["email"], "password": owner["password"], "full_name": "Chaos Owner",
        "organization_name": "Chaos Ltd"}, timeout=120)
    if r.status != 202:
        raise RuntimeError(f"register answered {r.status}: {r.body[:300]!r}")
    r = await http_request("POST", node.port, "/api/v1/auth/login", json_body={
        "email": owner["email"], "password": owner["password"]}, timeout=120)
    if r.status != 200:
        raise RuntimeError(f"login answered {r.status}: {r.body[:300]!r}")
    owner["access_token"] = str(r.json()["access_token"])
    r = await http_request("GET", node.port, "/api/v1/auth/me",
                           headers={"authorization": f"Bearer {owner['access_token']}"})
    if r.status != 200:
        raise RuntimeError(f"me answered {r.status}: {r.body[:300]!r}")
    owner["org_id"] = str(r.json()["organizations"][0]["org_id"])
    return owner


async def dump_store(pg: Postgres, work: Path, licenses: list[License]) -> None:
    ids = ",".join(f"'{lic.id}'" for lic in licenses)
    queries = {
        "sessions": (
            "SELECT row_to_json(t) FROM (SELECT id, license_id, hardware_id, "
            "extract(epoch from started_at) AS started, "
            "extract(epoch from last_heartbeat_at) AS last_hb, "
            "extract(epoch from lease_expires_at) AS lease_exp, "
            "extract(epoch from ended_at) AS ended, end_reason, "
            "extract(epoch from sweep_at) AS sweep_at, "
            "started_at::text AS started_at_text, ended_at::text AS ended_at_text "
            f"FROM sessions WHERE license_id IN ({ids}) ORDER BY started_at, id) t"),
        "audit": (
            "SELECT row_to_json(t) FROM (SELECT id, extract(epoch from at) AS at, event, "
            "license_id, session_id, hardware_id, detail, actor_id "
            f"FROM audit_log WHERE license_id IN ({ids}) ORDER BY id) t"),
    }
    for name, sql in queries.items():
        out = await pg.psql(sql, timeout=120)
        (work / f"{name}.jsonl").write_text(out if out.endswith("\n") or not out else out + "\n")


async def amain(a: argparse.Namespace) -> int:
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    binary = Path(a.bin).resolve()
    if not os.access(binary, os.X_OK):
        log(f"no seatwarden binary at {binary}; build it or set SEATWARDEN_BIN")
        return 2
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    s = Settings(duration=float(a.duration), lease_ttl=a.lease_ttl, heartbeat=a.heartbeat,
                 sweep=a.sweep, seed=seed)
    log(f"work dir {work}, binary {binary}, duration {a.duration:.0f} s, seed {seed}")
    cluster = Cluster(work, binary, s)
    rec = Recorder(work)
    finished = False
    try:
        await cluster.up()
        assert cluster.proxy is not None
        owner = await setup_owner(cluster.nodes[0])
        licenses = []
        for i, seats in enumerate(LICENSE_SEATS):
            created = await cluster.nodes[0].cli("license", "create", "--org", owner["org_id"],
                                                 "--seats", str(seats), "--tier", "pro")
            licenses.append(License(i, str(created["id"]), str(created["key"]), owner["org_id"],
                                    seats))
        meta = {
            "created": time.time(), "duration": s.duration, "seed": seed,
            "lease_ttl": s.lease_ttl, "heartbeat": s.heartbeat, "sweep": s.sweep,
            "binary": str(binary),
            "licenses": [{"index": lic.index, "id": lic.id, "org_id": lic.org_id,
                          "seats": lic.seats} for lic in licenses],
            "nodes": [{"index": n.index, "port": n.port} for n in cluster.nodes],
            "redis_port": cluster.redis.port, "proxy_port": cluster.proxy.port,
            "pg_port": cluster.pg.port,
        }
        (work / "meta.json").write_text(json.dumps(meta, indent=2))
        run = Run(settings=s, rec=rec, nodes=cluster.nodes, redis=cluster.redis, pg=cluster.pg,
                  proxy=cluster.proxy, licenses=licenses, owner=owner,
                  ops_token=cluster.ops_token, rng=rng)
        log(f"load: {len(licenses)} licenses, {sum(LICENSE_SEATS)} seats, "
            f"{sum(int(round(x * s.machines_per_seat)) + 1 for x in LICENSE_SEATS)} machines")
        result = await run.run()
        (work / "run.json").write_text(json.dumps(result, indent=2))
        log(f"drain: {result['drain']}")
        await dump_store(cluster.pg, work, licenses)
        finished = True
    finally:
        rec.close()
        if finished:
            await cluster.down()
        else:
            cluster.kill_all()
    return checks.analyse(work, a.slack)


def main() -> None:
    ap = argparse.ArgumentParser(description="seatwarden chaos run")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--bin", default=os.environ.get("SEATWARDEN_BIN")
                    or str(REPO / "target" / "debug" / "seatwarden"))
    ap.add_argument("--lease-ttl", type=int, default=4)
    ap.add_argument("--heartbeat", type=int, default=1)
    ap.add_argument("--sweep", type=int, default=1)
    ap.add_argument("--slack", type=float, default=checks.DEFAULT_SLACK)
    a = ap.parse_args()

    def on_signal(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        code = asyncio.run(amain(a))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        code = 2
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
