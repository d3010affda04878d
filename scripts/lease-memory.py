"""Measures Redis memory per live lease through a real server.

    python3 scripts/lease-memory.py [SEATWARDEN_BIN]

Starts its own redis-server and a node on it (SQLite store), fills 50
licenses of 100 seats (the 1M seats / 10k organizations shape: ~100 seats
each) with one acquire and one heartbeat per machine, and prints the growth
of Redis's used_memory per live lease as JSON. docs/capacity.md uses it."""
import json, os, socket, subprocess, sys, tempfile, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/release/seatwarden")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

work = tempfile.mkdtemp(prefix="capm-")
rport = free_port()
redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
time.sleep(0.5)
def rcli(*a):
    return subprocess.check_output(["redis-cli", "-p", str(rport), *a], text=True).strip()
env = {k: v for k, v in os.environ.items() if not k.startswith("SEATWARDEN__")}
env.update({"SEATWARDEN__DATA_DIR": work, "SEATWARDEN__REDIS__URL": f"redis://127.0.0.1:{rport}",
            "SEATWARDEN__SIGNING__RSA_BITS": "2048", "SEATWARDEN__RATE_LIMITS__ENABLED": "false",
            "SEATWARDEN__LOG__LEVEL": "warn"})
def cli(*a):
    return json.loads(subprocess.check_output([BIN, *a], env=env, cwd=REPO))
org = cli("org", "create", "--name", "Capacity")["id"]
keys = [cli("license", "create", "--org", org, "--seats", "100", "--tier", "pro")["key"] for _ in range(50)]
hport = free_port()
env["SEATWARDEN__HTTP__LISTEN"] = f"127.0.0.1:{hport}"
server = subprocess.Popen([BIN, "serve"], env=env, cwd=REPO, stderr=open(f"{work}/server.log", "w"))
base = f"http://127.0.0.1:{hport}"
for _ in range(300):
    try:
        urllib.request.urlopen(base + "/health/ready", timeout=1); break
    except Exception:
        time.sleep(0.2)
# Warm one lease per license so per-license keys exist, then measure.
def acquire(i):
    key = keys[i % 50]
    req = urllib.request.Request(base + "/api/v1/licenses/acquire", data=json.dumps({"license_key": key, "hardware_id": f"m-{i}"}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    hb = urllib.request.Request(base + f"/api/v1/licenses/sessions/{body['session_id']}/heartbeat", data=b"", method="POST", headers={"Authorization": "Bearer " + body["token"]})
    with urllib.request.urlopen(hb, timeout=30) as r2:
        assert r2.status == 200
    return 201
mem0 = int(rcli("info", "memory").split("used_memory:")[1].split()[0])
keys0 = int(rcli("dbsize"))
with ThreadPoolExecutor(16) as ex:
    codes = list(ex.map(acquire, range(5000)))
time.sleep(0.5)
mem1 = int(rcli("info", "memory").split("used_memory:")[1].split()[0])
keys1 = int(rcli("dbsize"))
live = sum(int(rcli("zcard", k)) for k in rcli("--scan", "--pattern", "sw:*:leases").split())
print(json.dumps({"acquired": codes.count(201), "live_leases": live, "redis_keys": keys1 - keys0,
                  "used_memory_delta_bytes": mem1 - mem0, "bytes_per_lease": round((mem1 - mem0) / max(live, 1), 1),
                  "shape": "50 licenses x 100 leases, one org"}))
server.terminate(); server.wait(30); redis.terminate()
