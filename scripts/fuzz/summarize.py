#!/usr/bin/env python3
"""Lists the distinct failures and errors of a scripts/fuzz.sh run.

    python3 scripts/fuzz/summarize.py LOGS_DIR

Reads LOGS_DIR/<deployment>/<pass>/events.ndjson (Schemathesis' NDJSON
report) and prints, per deployment and pass, each distinct failure once
(operation, check, failure title and status), with one request that shows
it as a curl command and the response's status and body. Schemathesis' own
output, with its reproduction commands, is in schemathesis.txt beside it.
Exits 0; fuzz.sh decides the verdict.
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
from pathlib import Path


def _body(blob: object) -> bytes | None:
    if isinstance(blob, dict) and "$base64" in blob:
        return base64.b64decode(blob["$base64"])
    if isinstance(blob, str):
        return blob.encode()
    return None


def _curl(request: dict) -> str:
    parts = ["curl", "-X", request.get("method", "GET")]
    for name, values in (request.get("headers") or {}).items():
        if name.lower() in ("user-agent", "accept-encoding", "accept", "connection", "content-length"):
            continue
        if name.lower().startswith("x-schemathesis"):
            continue
        for value in values if isinstance(values, list) else [values]:
            parts += ["-H", f"{name}: {value}"]
    body = _body(request.get("body"))
    if body is not None:
        parts += ["-d", body.decode("utf-8", "backslashreplace")]
    parts.append(request.get("uri", "?"))
    return " ".join(shlex.quote(p) for p in parts)


def _short(text: str, limit: int = 600) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def summarize(events: Path) -> tuple[list[dict], list[str]]:
    failures: dict[tuple, dict] = {}
    errors: list[str] = []
    for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind, data = next(iter(event.items()))
        if kind == "NonFatalError":
            value = data.get("value") or {}
            label = data.get("label") or ""
            errors.append(
                f"{label} ({data.get('phase')} phase): {value.get('type', '')}: {_short(str(value.get('message', '')), 300)}"
            )
            continue
        if kind != "ScenarioFinished":
            continue
        recorder = data.get("recorder") or {}
        cases = recorder.get("cases") or {}
        interactions = recorder.get("interactions") or {}
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                if check.get("status") != "failure":
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                interaction = interactions.get(case_id) or {}
                response = interaction.get("response") or {}
                status = response.get("status_code")
                operation = failure.get("operation") or recorder.get("label", "?")
                key = (operation, check.get("name"), failure.get("title"), status)
                entry = failures.get(key)
                if entry is None:
                    body = _body(response.get("content")) or b""
                    phase = data.get("phase")
                    value = (cases.get(case_id) or {}).get("value") or {}
                    meta = value.get("meta") or {}
                    failures[key] = {
                        "operation": operation,
                        "check": check.get("name"),
                        "title": failure.get("title"),
                        "message": failure.get("message") or "",
                        "status": status,
                        "phase": phase,
                        "mode": (meta.get("generation") or {}).get("mode"),
                        "curl": _curl(interaction.get("request") or {}),
                        "response": body.decode("utf-8", "backslashreplace"),
                        "count": 1,
                    }
                else:
                    entry["count"] += 1
    return list(failures.values()), errors


def main() -> None:
    root = Path(sys.argv[1])
    total = 0
    for events in sorted(root.glob("*/*/events.ndjson")):
        deployment, pass_ = events.parent.parent.name, events.parent.name
        failures, errors = summarize(events)
        if not failures and not errors:
            continue
        print(f"\n-- {deployment} / {pass_}: {len(failures)} distinct failure(s), {len(errors)} error(s)")
        for n, f in enumerate(failures, 1):
            total += 1
            print(f"{n}. {f['operation']}  [{f['check']}] {f['title']} (status {f['status']}, "
                  f"{f['phase']} phase, {f['mode']}, seen {f['count']}x)")
            if f["message"]:
                print("   " + _short(f["message"], 800))
            print("   request:  " + f["curl"])
            print("   response: " + _short(f["response"]))
        for e in errors:
            print("   error: " + e)
    if total:
        print(f"\n{total} distinct failure(s) in all; full output in {root}/*/*/schemathesis.txt")


if __name__ == "__main__":
    main()
