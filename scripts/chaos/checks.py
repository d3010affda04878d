"""The chaos run's verdict, from its files alone:

    python3 scripts/chaos/checks.py WORK_DIR [--slack SECS]

Reads ``meta.json``, ``requests.jsonl``, ``intents.jsonl``,
``samples.jsonl``, ``faults.jsonl`` and the store's dump
(``sessions.jsonl``, ``audit.jsonl``), prints the tables and every
violation with its evidence, and exits 1 if there is any.

Every check is meant to be sound: it reports only what cannot happen if
the server keeps its promises, whatever the timing (a loaded machine
makes more 410s and timeouts, never a violation). The reasoning rests on
these facts of the design (docs/decisions.md 1, 19, 20, 46, 74, 77):

- the ledger never shortens a lease; a lease leaves it only when it lapses,
  or when a release, a force-release or an acquire's rollback frees it;
- release and force-release end the record *before* freeing the lease, so
  a record's ``ended_at`` (taken before the write) precedes the free;
- acquire takes the seat *before* writing the record, and its 201 carries
  the lease end the ledger computed (its ``TIME`` + the TTL): the grant
  instant is exactly ``expires_at - lease_ttl``;
- lease ends the store holds come from the ledger, so they never run
  ahead of it; all clocks here are the one host clock.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

DEFAULT_SLACK = 5.0

# Which fault makes which 503 acceptable.
ALLOWED_503 = {
    "ledger_unavailable": {"redis_restart", "redis_stall"},
    "store_unavailable": {"pg_restart"},
    "busy": {"orgs_restart"},
}

# What each operation may answer at all (503s and transport errors are
# judged against the fault windows separately).
EXPECTED = {
    "acquire": {"201", "200", "409 no_seats_available"},
    "heartbeat": {"200", "410 session_expired", "410 session_revoked"},
    "release": {"200"},
    "force_release": {"200"},
    "list_sessions": {"200"},
    "login": {"200"},
    "ops_restart": {"200"},
}


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def outcome(r: dict[str, Any]) -> str:
    if "err" in r:
        return f"ERR {r['err']}"
    s = str(r.get("status"))
    return f"{s} {r['code']}" if r.get("code") else s


class Report:
    def __init__(self) -> None:
        self.violations: dict[str, list[str]] = defaultdict(list)
        self.warnings: dict[str, list[str]] = defaultdict(list)

    def violation(self, kind: str, text: str) -> None:
        self.violations[kind].append(text)

    def warning(self, kind: str, text: str) -> None:
        self.warnings[kind].append(text)


def j(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def analyse(work: Path, slack: float = DEFAULT_SLACK, examples: int = 5) -> int:
    meta = json.loads((work / "meta.json").read_text())
    reqs = load_jsonl(work / "requests.jsonl")
    intents = load_jsonl(work / "intents.jsonl")
    samples = load_jsonl(work / "samples.jsonl")
    faults = load_jsonl(work / "faults.jsonl")
    sessions = {s["id"]: s for s in load_jsonl(work / "sessions.jsonl")}
    audit = load_jsonl(work / "audit.jsonl")
    run = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    ttl = float(meta["lease_ttl"])
    seats = {lic["id"]: lic["seats"] for lic in meta["licenses"]}
    t_start = run.get("start", meta.get("created", 0))
    rep = Report()

    def rel(t: float | None) -> str:
        return "-" if t is None else f"+{t - t_start:.3f}s"

    # --- fault windows ---------------------------------------------------------------
    windows = [f for f in faults if "t0" in f and "t1" in f]
    for f in faults:
        if f.get("failed"):
            rep.violation("fault could not be injected or undone", j(f))
        if f["kind"] == "unexpected_exit":
            rep.violation("node exited by itself", j(f))
        if f["kind"] == "orgs_restart" and f.get("answer") != 200:
            rep.violation("orgs restart through the ops API failed", j(f))
        if f["kind"] == "rolling_restart" and f.get("exit") != 0:
            rep.violation("a node stopped with SIGTERM did not exit cleanly in its grace", j(f))

    def overlaps(r: dict[str, Any], f: dict[str, Any], extra: float) -> bool:
        return r["t0"] <= f["t1"] + extra and r["t1"] >= f["t0"]

    def fault_for_503(r: dict[str, Any]) -> dict[str, Any] | None:
        kinds = ALLOWED_503.get(r.get("code") or "", set())
        for f in windows:
            if f["kind"] in kinds and overlaps(r, f, slack):
                return f
            if f["kind"] == "unexpected_exit" and overlaps(r, f, slack):
                return f
        return None

    def node_down(r: dict[str, Any]) -> dict[str, Any] | None:
        for f in windows:
            if f["kind"] in ("kill_node", "rolling_restart", "unexpected_exit") \
                    and f.get("node") == r["node"] \
                    and overlaps(r, f, 1.0):
                return f
        return None

    def any_fault(r: dict[str, Any]) -> dict[str, Any] | None:
        for f in windows:
            if overlaps(r, f, slack):
                return f
        return None

    # --- the request table and per-request checks ----------------------------------------
    table: Counter[tuple[str, str]] = Counter()
    in_window: Counter[tuple[str, str]] = Counter()
    for r in reqs:
        op, out = r["op"], outcome(r)
        table[(op, out)] += 1
        if any_fault(r):
            in_window[(op, out)] += 1
        status = r.get("status")
        if "err" in r:
            if r["err"] in ("refused", "reset", "eof"):
                if not node_down(r):
                    rep.violation("connection failed while no node was down", j(r))
            elif r["err"] == "timeout":
                if not any_fault(r):
                    rep.warning("request timed out outside any fault window", j(r))
            else:
                rep.violation("transport failure of an unexpected kind", j(r))
            continue
        if status is not None and status >= 500 and status != 503:
            rep.violation(f"HTTP {status}", j(r))
            continue
        if status == 503:
            if not fault_for_503(r):
                rep.violation("503 outside the window of a fault that explains it", j(r))
            continue
        if out not in EXPECTED.get(op, {out}):
            sid = r.get("session") or r.get("session_id")
            note = " (its session has no record)" if sid and sid not in sessions else ""
            rep.violation(f"unexpected answer to {op}: {out}{note}", j(r))

    # --- what clients learned, per session -------------------------------------------------
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reqs:
        sid = r.get("session") or r.get("session_id")
        if sid:
            by_session[sid].append(r)
    for lst in by_session.values():
        lst.sort(key=lambda r: r["t0"])

    def ok(r: dict[str, Any]) -> bool:
        return r.get("status") in (200, 201) and "err" not in r

    def by_session_all(sid: str) -> list[dict[str, Any]]:
        return by_session.get(sid, [])

    acquired_201: dict[str, dict[str, Any]] = {}
    answered: set[str] = set()
    for r in reqs:
        if r["op"] == "acquire" and ok(r) and r.get("session_id"):
            answered.add(r["session_id"])
            if r["status"] == 201 and r["session_id"] not in acquired_201:
                acquired_201[r["session_id"]] = r

    # Lost acquires: every session answered 201 (or 200) has a record.
    by_hw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reqs:
        if r["op"] == "acquire" and r.get("hw"):
            by_hw[r["hw"]].append(r)
    reported_orphans: set[str] = set()
    for r in reqs:
        if r["op"] == "acquire" and ok(r) and r.get("session_id") not in sessions:
            kind = ("acquire answered 201 but the session has no record" if r["status"] == 201
                    else "acquire answered 200 (renewal) with a session that has no record")
            text = j(r)
            if r["session_id"] not in reported_orphans:
                reported_orphans.add(r["session_id"])
                # The attempts of the same machine just before: the one that
                # took the seat without writing its record is among them.
                before = [x for x in by_hw[r["hw"]] if x["t0"] < r["t0"]][-3:]
                text += "".join(f"\n      earlier attempt {j(x)}" for x in before)
                text += (f"\n      every request of session {r['session_id']}: "
                         + ", ".join(f"{x['op']} {outcome(x)}" for x in by_session_all(r["session_id"])))
            rep.violation(kind, text)

    # Lost releases: every 200 release / force-release has its ended record,
    # with the end it answered.
    for r in reqs:
        if r["op"] not in ("release", "force_release") or not ok(r):
            continue
        s = sessions.get(r["session"])
        if s is None:
            rep.violation(f"{r['op']} answered 200 for a session with no record", j(r))
            continue
        if s.get("ended") is None:
            rep.violation(f"{r['op']} answered 200 but the record is not ended",
                          f"{j(r)}\n      row {j(s)}")
            continue
        if r.get("end_reason") and r["end_reason"] != s.get("end_reason"):
            rep.violation(f"{r['op']} answered end_reason {r['end_reason']} but the record says "
                          f"{s.get('end_reason')}", f"{j(r)}\n      row {j(s)}")
        elif r.get("ended") is not None and abs(r["ended"] - float(s["ended"])) > 0.002:
            rep.violation(f"{r['op']} answered an ended_at the record does not have",
                          f"{j(r)}\n      row {j(s)}")

    # Heartbeats against what the client knew.
    for lst in by_session.values():
        known_exp: float | None = None
        end_asked_at: float | None = None  # first release/force-release attempt sent
        revoke_asked_at: float | None = None
        events = sorted(lst, key=lambda r: r["t0"])
        for r in events:
            op = r["op"]
            if op in ("release", "force_release"):
                end_asked_at = r["t0"] if end_asked_at is None else min(end_asked_at, r["t0"])
                if op == "force_release":
                    revoke_asked_at = (r["t0"] if revoke_asked_at is None
                                       else min(revoke_asked_at, r["t0"]))
        for r in events:
            op = r["op"]
            if op == "heartbeat":
                # What the client knew when it sent this heartbeat: answers
                # received before it.
                known = [float(x["expires"]) for x in events
                         if x["t1"] < r["t0"] and ok(x) and x["op"] in ("acquire", "heartbeat")
                         and x.get("expires") is not None]
                known_exp = max(known) if known else None
                done = [x["t1"] for x in events if x["t1"] < r["t0"] and ok(x)
                        and x["op"] in ("release", "force_release")]
                if ok(r) and done:
                    rep.violation("heartbeat answered 200 after the session was released or "
                                  "force-released (200)", f"{j(r)}\n      ended by answer at "
                                  f"{min(done):.6f}")
                if r.get("status") == 410 and r.get("code") == "session_expired":
                    freed_by_us = end_asked_at is not None and end_asked_at < r["t1"]
                    if known_exp is not None and r["t1"] < known_exp - 0.002 and not freed_by_us:
                        rep.violation(
                            "heartbeat answered 410 session_expired while the lease was live "
                            "(answered before the lease end the ledger had given)",
                            f"{j(r)}\n      lease known to end at {known_exp:.6f} "
                            f"({known_exp - r['t1']:.3f} s after the answer)")
                if r.get("status") == 410 and r.get("code") == "session_revoked":
                    if revoke_asked_at is None or revoke_asked_at > r["t1"]:
                        rep.violation("heartbeat answered 410 session_revoked but nobody "
                                      "force-released the session", j(r))

    # --- the store's records --------------------------------------------------------------
    abandoned = {i["session"]: i for i in intents if i["kind"] == "abandon"}
    lost_expired = {r["session"] for r in reqs if r["op"] == "heartbeat"
                    and r.get("status") == 410 and r.get("code") == "session_expired"}
    release_asked = {r["session"] for r in reqs if r["op"] == "release"}
    revoke_asked = {r["session"] for r in reqs if r["op"] == "force_release"}
    seen_ok = {sid for sid, lst in by_session.items() if any(ok(x) for x in lst)}
    audit_by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in audit:
        if a.get("session_id"):
            audit_by_session[a["session_id"]].append(a)

    end_event = {"released": "LICENSE_RELEASED", "expired": "SESSION_EXPIRED",
                 "revoked": "SESSION_REVOKED"}
    drain = run.get("drain", {})
    for sid, s in sessions.items():
        reason = s.get("end_reason")
        if s.get("ended") is None:
            rep.violation(f"session still open {drain.get('took', '?')} s after the load "
                          f"stopped (bound {drain.get('bound', '?')} s)", f"row {j(s)}")
            continue
        if sid in abandoned:
            if reason != "expired" and not (reason == "revoked" and sid in revoke_asked):
                rep.violation("an abandoned session (heartbeats stopped) did not end as expired",
                              f"row {j(s)}\n      intent {j(abandoned[sid])}")
        if sid in lost_expired and reason != "expired" and not (
                reason == "revoked" and sid in revoke_asked) and not (
                reason == "released" and sid in release_asked):
            rep.violation("a session answered 410 session_expired ended otherwise",
                          f"row {j(s)}")
        if reason == "released" and sid not in release_asked:
            rep.violation("session ended as released though nobody released it", f"row {j(s)}")
        if reason == "revoked" and sid not in revoke_asked:
            rep.violation("session ended as revoked though nobody force-released it",
                          f"row {j(s)}")
        if sid not in seen_ok and reason != "expired":
            rep.violation("a session no client was told of did not end as expired",
                          f"row {j(s)}")
        # The audit log: one acquisition, one end of the right kind, in order.
        entries = audit_by_session.get(sid, [])
        acq = [a for a in entries if a["event"] == "LICENSE_ACQUIRED"]
        ends = [a for a in entries if a["event"] in end_event.values()]
        if len(acq) != 1:
            rep.violation("session without exactly one LICENSE_ACQUIRED audit entry",
                          f"row {j(s)}\n      audit {j(entries)}")
        if len(ends) != 1 or ends[0]["event"] != end_event.get(reason or ""):
            rep.violation("session's end and its audit entries disagree",
                          f"row {j(s)}\n      audit {j(entries)}")
        elif acq and acq[0]["id"] > ends[0]["id"]:
            rep.violation("session's end was audited before its acquisition",
                          f"row {j(s)}\n      audit {j(entries)}")
        # A record closed as expired while its lease was still live: a
        # heartbeat sent after the close that was answered 200.
        if reason == "expired" and ends:
            closed_at = float(ends[0]["at"])
            for r in by_session.get(sid, []):
                if r["op"] == "heartbeat" and ok(r) and r["t0"] > closed_at:
                    rep.violation("session closed as expired while its lease was live "
                                  "(a later heartbeat was answered 200)",
                                  f"{j(r)}\n      row {j(s)}\n      audit {j(ends[0])}")
                    break
    for a in audit:
        sid = a.get("session_id")
        if a["event"] in ("LICENSE_ACQUIRED",) + tuple(end_event.values()) and sid \
                and sid not in sessions:
            rep.violation("audit entry of a session that has no record", j(a))
    if drain and (drain.get("live_leases") or 0) > 0:
        rep.violation("live leases left in the ledger after the drain", j(drain))

    # --- over-allocation: sampled instants ----------------------------------------------------
    sample_max: dict[str, int] = Counter()
    sample_n: Counter[str] = Counter()
    for smp in samples:
        sample_n[smp["src"]] += 1
        for lic, n in smp.get("counts", {}).items():
            sample_max[smp["src"]] = max(sample_max[smp["src"]], n - seats.get(lic, n))
            if lic in seats and n > seats[lic]:
                rep.violation(f"over-allocation seen by the {smp['src']} sampler",
                              f"license {lic} has {seats[lic]} seats; {j(smp)}")

    # --- over-allocation: the replayed history ----------------------------------------------
    # Each session is certainly live over [from, until): from the earliest
    # instant an answer proves it held a seat, until the earliest instant it
    # can have stopped (see the module docstring). More than `seats` such
    # intervals overlapping is a real over-allocation.
    intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    uncertain = 0
    for sid, s in sessions.items():
        lst = by_session.get(sid, [])
        starts = []
        if sid in acquired_201 and acquired_201[sid].get("expires") is not None:
            starts.append(acquired_201[sid]["expires"] - ttl)
        starts += [x["t1"] for x in lst if ok(x) and x["op"] in ("acquire", "heartbeat")]
        if not starts:
            uncertain += 1
            continue
        g = min(starts)
        exps = [float(s["lease_exp"])] + [x["expires"] for x in lst if ok(x)
                                          and x["op"] in ("acquire", "heartbeat")
                                          and x.get("expires") is not None]
        until = max(exps)
        if s.get("end_reason") in ("released", "revoked") and s.get("ended") is not None:
            until = min(until, float(s["ended"]))
        if until > g:
            intervals[s["license_id"]].append((g, until, sid))
    replay_peak: dict[str, int] = {}
    for lic, ivs in intervals.items():
        points = sorted([(a, 1, sid) for a, b, sid in ivs] + [(b, -1, sid) for a, b, sid in ivs],
                        key=lambda p: (p[0], p[1]))
        live: set[str] = set()
        peak = 0
        reported = 0
        for t, d, sid in points:
            if d < 0:
                live.discard(sid)
                continue
            live.add(sid)
            peak = max(peak, len(live))
            if len(live) > seats[lic] and reported < 3:
                reported += 1
                detail = [f"license {lic} has {seats[lic]} seats; at {t:.6f} ({rel(t)}) "
                          f"{len(live)} sessions were certainly live:"]
                for other in sorted(live):
                    lo, hi, _ = next(iv for iv in ivs if iv[2] == other)
                    detail.append(f"      {other} live over [{lo:.6f}, {hi:.6f}) "
                                  f"row {j(sessions[other])}")
                    for x in by_session.get(other, [])[:6]:
                        detail.append(f"        {j(x)}")
                rep.violation("over-allocation in the replayed history", "\n".join(detail))
        replay_peak[lic] = peak

    # --- warnings and facts ------------------------------------------------------------------
    for r in reqs:
        if r["op"] == "acquire" and r.get("status") == 201 and r.get("expires") is not None \
                and r["expires"] < r["t1"]:
            rep.warning("acquire answered 201 with a lease that had already lapsed", j(r))
    for i in intents:
        if i["kind"] == "release_gave_up":
            rep.warning("a release was given up after 10 attempts", j(i))

    reasons = Counter(s.get("end_reason") or "open" for s in sessions.values())
    expire_lag = []
    for sid, s in sessions.items():
        if s.get("end_reason") == "expired":
            ends = [a for a in audit_by_session.get(sid, []) if a["event"] == "SESSION_EXPIRED"]
            lst = by_session.get(sid, [])
            exps = [float(s["lease_exp"])] + [x["expires"] for x in lst if ok(x)
                                              and x.get("expires") is not None]
            if ends:
                expire_lag.append(float(ends[0]["at"]) - max(exps))
    expire_lag.sort()

    # --- print -------------------------------------------------------------------------------
    w = sys.stdout
    print("", file=w)
    print(f"== seatwarden chaos run: {meta['duration']:.0f} s of load, 3 nodes, "
          f"{len(meta['licenses'])} licenses ({sum(seats.values())} seats), seed {meta['seed']}",
          file=w)
    print(f"   lease TTL {meta['lease_ttl']} s, heartbeat {meta['heartbeat']} s, sweep "
          f"{meta['sweep']} s; fault slack {slack:.0f} s; work dir {work}", file=w)
    print("", file=w)
    print("Requests (by operation and answer; 'in fault' = overlapping a fault window):", file=w)
    print(f"  {'operation':<14} {'answer':<34} {'count':>7} {'in fault':>9}", file=w)
    for op in ("acquire", "heartbeat", "release", "force_release", "list_sessions", "login",
               "ops_restart"):
        rows = sorted((o, n) for (p, o), n in table.items() if p == op)
        for o, n in rows:
            print(f"  {op:<14} {o:<34} {n:>7} {in_window[(op, o)]:>9}", file=w)
    for (p, o), n in sorted(table.items()):
        if p not in EXPECTED:
            print(f"  {p:<14} {o:<34} {n:>7} {in_window[(p, o)]:>9}", file=w)
    print(f"  {'total':<14} {'':<34} {sum(table.values()):>7}", file=w)
    print("", file=w)
    print("Faults injected:", file=w)
    print(f"  {'#':>2} {'fault':<16} {'target':<8} {'start':>9} {'length':>8}  notes", file=w)
    for n, f in enumerate(sorted(faults, key=lambda f: f["t0"]), 1):
        target = f"node{f['node']}" if "node" in f else {"redis_restart": "redis",
                                                          "redis_stall": "redis",
                                                          "pg_restart": "postgres"}.get(
                                                              f["kind"], "-")
        notes = []
        if f["kind"] == "orgs_restart":
            notes.append(f"answer {f.get('answer') or f.get('err')}")
        if f.get("stopped_at"):
            notes.append(f"down {f['t1'] - f['stopped_at']:.1f} s")
        if f.get("failed"):
            notes.append(f"FAILED: {f['failed']}")
        if f["kind"] == "unexpected_exit":
            notes.append(f"exit code {f.get('code')}")
        print(f"  {n:>2} {f['kind']:<16} {target:<8} {rel(f['t0']):>9} "
              f"{f['t1'] - f['t0']:>7.1f}s  {'; '.join(notes)}", file=w)
    print("", file=w)
    print("Sessions and samples:", file=w)
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    print(f"  sessions in the store: {len(sessions)} ({by_reason});"
          f" abandoned on purpose: {len(abandoned)}; told to no client: "
          f"{len(set(sessions) - seen_ok)}; without a certain live interval: {uncertain}", file=w)
    print("  samples: " + ", ".join(f"{k} {v}" for k, v in sorted(sample_n.items()))
          + "; highest (live - seats) seen per sampler: "
          + ", ".join(f"{k} {v:+d}" for k, v in sorted(sample_max.items())), file=w)
    peaks = ", ".join(f"{replay_peak.get(lic['id'], 0)}/{lic['seats']}" for lic in meta["licenses"])
    print(f"  replayed history, peak certainly-live sessions / seats per license: {peaks}",
          file=w)
    if expire_lag:
        print(f"  expired sessions closed after their last known lease end: median "
              f"{expire_lag[len(expire_lag) // 2]:.2f} s, max {expire_lag[-1]:.2f} s", file=w)
    if drain:
        print(f"  drain after the load: {drain.get('took')} s (bound {drain.get('bound')} s); "
              f"open sessions {drain.get('open_sessions')}, live leases "
              f"{drain.get('live_leases')}", file=w)
    print("", file=w)
    if rep.warnings:
        print("Warnings (not violations):", file=w)
        for kind, items in sorted(rep.warnings.items()):
            print(f"  {len(items):>5}  {kind}", file=w)
            for it in items[:2]:
                print("         " + it.replace("\n", "\n     "), file=w)
        print("", file=w)
    total = sum(len(v) for v in rep.violations.values())
    print(f"Violations: {total}", file=w)
    for kind, items in sorted(rep.violations.items()):
        print(f"  {len(items):>5}  {kind}", file=w)
        for it in items[:examples]:
            print("         " + it.replace("\n", "\n     "), file=w)
        if len(items) > examples:
            print(f"         ... {len(items) - examples} more", file=w)
    print("", file=w)
    return 1 if total else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--slack", type=float, default=DEFAULT_SLACK)
    ap.add_argument("--examples", type=int, default=5)
    a = ap.parse_args()
    sys.exit(analyse(a.work, a.slack, a.examples))


if __name__ == "__main__":
    main()
