#!/usr/bin/env python3
"""Seeds a running seatwarden server for fuzzing and prints what the fuzzer
needs as JSON (ids, keys and tokens) on stdout.

    python3 scripts/fuzz/seed.py --url http://127.0.0.1:PORT \
        --bin SEATWARDEN_BIN --data-dir DIR

The server must run with rate limits off and mail going to .eml files in
DIR/outbox/ (no mail.smtp_url), which is where the verification link is read
from. The CLI (`admin create`) is run with the caller's environment, so the
SEATWARDEN__* variables that point the server at its database must be set.

What it makes, all through the public API except the administrator:
  * a platform administrator (CLI) and its access token;
  * a verified user who owns an organization (register, verify, login);
  * license A (1000 seats, at most 2 machines, borrowing on) issued to that
    organization by the administrator, with an activated machine holding a
    live session (for the seat-token routes);
  * license C (50 seats, no machine limit) with two live sessions, for the
    force-release and admin-revoke routes to end;
  * license D (5 seats, requires_user, borrowing on), which wants a
    member's access token on acquire;
  * license B (1 seat, held) with a queue ticket waiting for it;
  * an invitation and an API key of the organization.
Only stdlib, so it runs with any Python 3.10+.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADMIN_EMAIL = "fuzz-root@example.com"
ADMIN_PASSWORD = "Admin1Password"
USER_EMAIL = "fuzz-ada@example.com"
USER_PASSWORD = "Correct1Horse"


class Api:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        token: str | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
    ) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if status not in expect:
            raise SystemExit(
                f"seed: {method} {path} answered {status}, wanted {expect}: {raw[:500]!r}"
            )
        return json.loads(raw) if raw else {}


def wait_for(what: str, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"seed: timed out waiting for {what}")
        time.sleep(0.1)


def verification_token(outbox: Path, address: str) -> str | None:
    """The swe_ token of the newest verification mail to `address`."""
    for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address not in str(msg.get("To", "")):
            continue
        texts = []
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                texts.append(part.get_content())
        m = re.search(r"verify-email\?token=(swe_[A-Za-z0-9_\-]+)", "\n".join(texts))
        if m:
            return m.group(1)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    api = Api(args.url)
    outbox = Path(args.data_dir) / "outbox"

    # --- the platform administrator (CLI; the password on stdin) -----------
    out = subprocess.run(
        [args.bin, "admin", "create", "--email", ADMIN_EMAIL, "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=args.data_dir,
    )
    if out.returncode != 0:
        raise SystemExit(f"seed: admin create failed: {out.stderr.strip()}")
    admin = api.call("POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    admin_token = admin["access_token"]

    # --- a verified user owning an organization ----------------------------
    api.call(
        "POST",
        "/api/v1/auth/register",
        {
            "email": USER_EMAIL,
            "password": USER_PASSWORD,
            "full_name": "Ada Fuzz",
            "organization_name": "Fuzz Engines",
        },
    )
    token = wait_for("the verification mail", lambda: verification_token(outbox, USER_EMAIL))
    api.call("GET", f"/api/v1/auth/verify-email?token={token}")
    login = api.call("POST", "/api/v1/auth/login", {"email": USER_EMAIL, "password": USER_PASSWORD})
    access = login["access_token"]
    me = api.call("GET", "/api/v1/auth/me", token=access)
    org_id = me["organizations"][0]["org_id"]

    # --- license A: many seats, a machine limit, borrowing on ---------------
    lic_a = api.call(
        "POST",
        "/api/v1/admin/licenses",
        {"org_id": org_id, "seats": 1000, "tier": "pro", "features": ["export", "sso"], "max_machines": 2},
        token=admin_token,
    )
    out = subprocess.run(
        [args.bin, "license", "update", "--id", lic_a["id"], "--max-borrow-hours", "72"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=args.data_dir,
    )
    if out.returncode != 0:
        raise SystemExit(f"seed: license update failed: {out.stderr.strip()}")
    machine = api.call(
        "POST",
        "/api/v1/licenses/activate",
        {"license_key": lic_a["key"], "hardware_id": "fuzz-laptop", "name": "fuzz laptop", "platform": "linux-x86_64"},
    )
    # The seat-token routes' session is on the activated machine (license A
    # limits machines; the other slot is left for the fuzzer's activations).
    seat = api.call(
        "POST",
        "/api/v1/licenses/acquire",
        {"license_key": lic_a["key"], "hardware_id": "fuzz-laptop", "client_version": "1.0", "os": "linux"},
    )
    # Sessions for the routes that end them: on license C (no machine limit).
    lic_c = api.call(
        "POST",
        "/api/v1/admin/licenses",
        {"org_id": org_id, "seats": 50, "tier": "pro", "features": ["export"]},
        token=admin_token,
    )
    victim = api.call("POST", "/api/v1/licenses/acquire", {"license_key": lic_c["key"], "hardware_id": "fuzz-victim-1"})
    admin_victim = api.call("POST", "/api/v1/licenses/acquire", {"license_key": lic_c["key"], "hardware_id": "fuzz-victim-2"})

    # License D wants a member's access token on acquire.
    lic_d = api.call(
        "POST",
        "/api/v1/admin/licenses",
        {"org_id": org_id, "seats": 5, "tier": "pro", "requires_user": True, "max_borrow_hours": 24},
        token=admin_token,
    )

    # --- license B: one seat, held, and a ticket waiting for it --------------
    lic_b = api.call("POST", "/api/v1/admin/licenses", {"org_id": org_id, "seats": 1, "tier": "starter"}, token=admin_token)
    api.call("POST", "/api/v1/licenses/acquire", {"license_key": lic_b["key"], "hardware_id": "fuzz-holder"})
    queued = api.call(
        "POST",
        "/api/v1/licenses/acquire",
        {"license_key": lic_b["key"], "hardware_id": "fuzz-waiter", "wait": True},
        expect=(202,),
    )

    # --- an invitation and an API key ----------------------------------------
    invitation = api.call(
        "POST", f"/api/v1/orgs/{org_id}/invitations", {"email": "fuzz-grace@example.com", "role": "member"}, token=access
    )
    api_key = api.call("POST", f"/api/v1/orgs/{org_id}/api-keys", {"name": "fuzz", "role": "member"}, token=access)

    plans = api.call("GET", "/api/v1/plans")
    subsystems = api.call("GET", "/api/v1/ops/subsystems", token=admin_token)

    json.dump(
        {
            "access_token": access,
            "refresh_token": login["refresh_token"],
            "admin_token": admin_token,
            "user_id": me["id"],
            "org_id": org_id,
            "license_id": lic_a["id"],
            "license_key": lic_a["key"],
            "machine_id": machine["id"],
            "session_id": seat["session_id"],
            "seat_token": seat["token"],
            "victim_license_id": lic_c["id"],
            "victim_license_key": lic_c["key"],
            "victim_session_id": victim["session_id"],
            "admin_victim_session_id": admin_victim["session_id"],
            "user_license_id": lic_d["id"],
            "user_license_key": lic_d["key"],
            "queue_license_id": lic_b["id"],
            "queue_license_key": lic_b["key"],
            "queue_ticket": queued["queue_ticket"],
            "invitation_id": invitation["id"],
            "api_key_id": api_key["id"],
            "api_key": api_key.get("key"),
            "plan_ids": [p["id"] for p in plans.get("items", [])],
            "subsystems": [s["name"] for s in subsystems.get("subsystems", [])],
        },
        sys.stdout,
        indent=2,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
