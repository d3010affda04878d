"""Schemathesis hooks for scripts/fuzz.sh: let generated requests reach real
objects, and aim some of them at what databases choke on.

About half the time a generated container (path parameters, query, JSON
body) goes out unchanged, so the 404 and 400 paths are fuzzed as they come.
Otherwise one variant of it is sent:

  * real values: path parameters, a few query parameters, license keys,
    the refresh token, org ids and redirect URLs swapped for what
    scripts/fuzz/seed.py made (the file named by SW_FUZZ_SEED), so that
    requests get past the 404s to the code behind them;
  * a NUL byte: one field (a string, or every string inside an array or an
    object, keys of nested objects included) with "\\x00" appended, on top
    of the generated or the real values. PostgreSQL refuses NUL in text
    and jsonb where SQLite stores it, so this finds input that one
    deployment takes and the other answers with a 5xx;
  * boundary date-times in date-time fields (year 0000, 9999 with a
    -23:59 offset, which is year 10000 in UTC).

All choices go through Hypothesis strategies (flatmap), never `random`, so
runs stay reproducible with --seed.

A failure filter also drops one documented 5xx: see filter_failure below.

Loaded by `st run` through SCHEMATHESIS_HOOKS=seatwarden_hooks, with this
folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import schemathesis
from hypothesis import strategies as st

with open(os.environ["SW_FUZZ_SEED"], encoding="utf-8") as f:
    SEED: dict[str, Any] = json.load(f)

# Fields that take an RFC 3339 date-time, in bodies and queries.
DATE_FIELDS = frozenset(
    {"expires_at", "expires_before", "expires_after", "started_after", "started_before", "from", "to"}
)
BOUNDARY_DATES = (
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
)
# Where the redirect URLs of checkout and the portal must point
# (billing.allowed_redirect_origins' default).
BACK_URL = "http://127.0.0.1:8080/billing/done"


def _path(context) -> str:
    return context.operation.path if context.operation is not None else ""


def _with_nul(value: Any, nested: bool = False) -> Any:
    """`value` with a NUL byte appended to each string in it (and to the
    keys of nested objects; a top-level key is a field name)."""
    if isinstance(value, str):
        return value + "\x00"
    if isinstance(value, list):
        return [_with_nul(v, True) for v in value]
    if isinstance(value, dict):
        return {(k + "\x00" if nested else k): _with_nul(v, True) for k, v in value.items()}
    return value


def _has_string(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list):
        return any(_has_string(v) for v in value)
    if isinstance(value, dict):
        return bool(value) and (any(isinstance(k, str) for k in value) or any(_has_string(v) for v in value.values()))
    return False


def _variants(
    generated: Any,
    real: list[dict[str, Any]],
    *,
    add_missing: bool = False,
    nul: bool = True,
    dates: bool = True,
) -> st.SearchStrategy:
    """The generated container, or one of its variants (see the module's
    docstring). `real` lists sets of real values: a key mapped to a value
    sets it (only if the container has the key, unless `add_missing`), a
    key mapped to None removes it."""
    if not isinstance(generated, dict):
        return st.just(generated)
    bases: list[tuple[dict[str, Any], frozenset[str]]] = [(generated, frozenset())]
    for values in real:
        body = dict(generated)
        touched = set()
        for key, value in values.items():
            if value is None:
                if key in body:
                    del body[key]
                    touched.add(key)
            elif key in body or add_missing:
                body[key] = value
                touched.add(key)
        if touched:
            bases.append((body, frozenset(touched)))
    variants = [body for body, _ in bases[1:]]
    for body, touched in bases:
        for key, value in body.items():
            if key in touched:
                continue
            if nul and _has_string(value):
                variants.append({**body, key: _with_nul(value)})
            if dates and key in DATE_FIELDS:
                variants.extend({**body, key: d} for d in BOUNDARY_DATES)
    if not variants:
        return st.just(generated)
    return st.one_of(st.just(generated), st.sampled_from(variants))


def _real_path_parameters(path: str) -> list[dict[str, str]]:
    """Sets of real values for the path parameters of `path` (a template
    such as /api/v1/orgs/{id}/members/{user_id}); each set is consistent
    (a session of that license, a machine of that license)."""
    s = SEED
    if path.startswith("/api/v1/orgs/{id}"):
        return [
            {
                "id": s["org_id"],
                "user_id": s["user_id"],
                "invitation_id": s["invitation_id"],
                "key_id": s["api_key_id"],
            }
        ]
    if path.startswith("/api/v1/licenses/sessions/{id}"):
        return [{"id": s["session_id"]}]
    if path.startswith("/api/v1/licenses/queue/{ticket}"):
        return [{"ticket": s["queue_ticket"]}]
    if path == "/api/v1/licenses/{id}/sessions/{session_id}":
        # Force-release ends a session: not the one the seat-token routes use.
        return [{"id": s["victim_license_id"], "session_id": s["victim_session_id"]}]
    if path == "/api/v1/licenses/{id}/machines/{machine_id}":
        return [{"id": s["license_id"], "machine_id": s["machine_id"]}]
    if path.startswith("/api/v1/licenses/{id}") or path.startswith("/api/v1/admin/licenses/{id}"):
        return [{"id": s[k]} for k in ("license_id", "queue_license_id", "victim_license_id", "user_license_id")]
    if path == "/api/v1/admin/sessions/{id}":
        return [{"id": s["admin_victim_session_id"]}]
    if re.match(r"^/api/v1/(admin/)?plans/\{id\}", path):
        return [{"id": p} for p in s["plan_ids"]]
    if path == "/api/v1/ops/subsystems/{name}/restart":
        return [{"name": n} for n in s["subsystems"]]
    return []


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    return _variants(path_parameters, _real_path_parameters(_path(context)), dates=False)


@schemathesis.hook
def flatmap_query(context, query):
    s = SEED
    return _variants(query, [{"org_id": s["org_id"], "license_id": s["license_id"], "user_id": s["user_id"]}])


def _real_bodies(path: str) -> tuple[list[dict[str, Any]], bool]:
    """Real values for the JSON body of `path`, and whether they may add
    fields the generated body lacks."""
    s = SEED
    if path in ("/api/v1/auth/refresh", "/api/v1/auth/logout"):
        return [{"refresh_token": s["refresh_token"]}], False
    if path == "/api/v1/admin/licenses":
        return [{"org_id": s["org_id"]}], False
    if path in ("/api/v1/checkout/session", "/api/v1/billing/portal"):
        # On the allowed redirect origins, so requests get past the URL
        # checks to the plan, the membership and the payment gateway.
        return [
            {"org_id": s["org_id"], "plan_id": p, "success_url": BACK_URL, "cancel_url": BACK_URL, "return_url": BACK_URL}
            for p in s["plan_ids"]
        ], False
    if path == "/api/v1/licenses/acquire":
        return [
            # The seeded machine on license A (machines limited): 200, its
            # lease extended.
            {"license_key": s["license_key"], "hardware_id": "fuzz-laptop", "queue_ticket": None, "wait": None},
            # Any machine on license C (no machine limit): 201 until its
            # seats are gone, then 409 (or 202 with "wait"); with metadata,
            # which the NUL variant then reaches.
            {"license_key": s["victim_license_key"], "queue_ticket": None},
            {"license_key": s["victim_license_key"], "queue_ticket": None, "metadata": {"app": "fuzz"}},
            # License D (requires_user): no credential here, so 401.
            {"license_key": s["user_license_key"], "queue_ticket": None},
            # The ticket waiting on license B, from its machine.
            {"license_key": s["queue_license_key"], "hardware_id": "fuzz-waiter", "queue_ticket": s["queue_ticket"]},
            {"license_key": s["queue_license_key"], "queue_ticket": None},
        ], True
    if path in ("/api/v1/licenses/borrow", "/api/v1/licenses/activate", "/api/v1/licenses/validate"):
        return [
            {"license_key": s["license_key"], "hardware_id": "fuzz-laptop"},
            {"license_key": s["license_key"]},
            {"license_key": s["victim_license_key"]},
            {"license_key": s["user_license_key"]},
        ], False
    return [], False


@schemathesis.hook
def flatmap_body(context, body):
    real, add_missing = _real_bodies(_path(context))
    return _variants(body, real, add_missing=add_missing)


# 503 `billing_disabled` is what the billing routes (Stripe checkout, the
# billing portal, the Stripe webhook) document for a server with no
# `stripe.*` keys, which the fuzzed servers are: billing is off by default.
# It is a declared answer about the configuration, not a server fault, so
# not_a_server_error does not count it. SW_FUZZ_STRICT_5XX=1 counts it too.
_BILLING_PATHS = ("/api/v1/checkout/session", "/api/v1/billing/portal", "/api/v1/webhooks/stripe")
_STRICT_5XX = os.environ.get("SW_FUZZ_STRICT_5XX") == "1"


def _error_code(response) -> str | None:
    try:
        body = json.loads(response.content or b"")
    except (ValueError, TypeError):
        return None
    return body.get("error") if isinstance(body, dict) else None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if _STRICT_5XX or response is None:
        return True
    if (
        _path(context) in _BILLING_PATHS
        and getattr(failure, "code", None) == "ST101"
        and response.status_code == 503
        and _error_code(response) == "billing_disabled"
    ):
        return False
    return True
