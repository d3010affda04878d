"""The parts that need no server: fingerprints, tokens, retries, errors,
configuration, directories, exit hooks."""

from __future__ import annotations

import os
import random
import signal
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from seatwarden_client import (
    BorrowTooLong,
    InvalidRequest,
    InvalidToken,
    LicenseSuspended,
    NoSeatsAvailable,
    RateLimited,
    RetryPolicy,
    SeatwardenError,
    ServerError,
    ServerUnavailable,
    SessionRevoked,
    default_cache_dir,
    default_config_dir,
    fingerprint,
    hardware_id,
)
from seatwarden_client.cache import CacheDir
from seatwarden_client.config import ConfigError, load
from seatwarden_client.core import ClientCore
from seatwarden_client.errors import error_from_response, redact
from seatwarden_client.jwks import parse_jwks
from seatwarden_client.lifecycle import ExitGuard
from seatwarden_client.models import parse_time
from seatwarden_client.retry import parse_retry_after
from seatwarden_client.tokens import verify_license_file, verify_seat_token

KEY = "CODITECT-D5RA-9NWH-CKX0-TH7D-1WP4"


# --- hardware fingerprint -------------------------------------------------------


def test_the_hardware_id_env_override_wins() -> None:
    assert hardware_id("app", env={"SEATWARDEN_HARDWARE_ID": "ci-7"}) == "ci-7"


def test_the_hardware_id_is_a_stable_salted_hash_of_the_machine_id(tmp_path: Path) -> None:
    first = hardware_id("acme-cad", env={}, cache=CacheDir(tmp_path))
    assert first == hardware_id("acme-cad", env={}, cache=CacheDir(tmp_path))
    assert len(first) == 64 and int(first, 16) >= 0
    assert first != hardware_id("other-app", env={}, cache=CacheDir(tmp_path)), "salted per app"
    fact = fingerprint.machine_fact()
    if fact is not None:
        assert fact[1] not in first, "the raw machine id never leaves the machine"


def test_the_hardware_id_prefers_machine_id_over_the_mac_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr(fingerprint, "_read_machine_id_file", lambda: "abc123")
    monkeypatch.setattr(fingerprint, "_burned_in_mac", lambda: "0011223344ff")
    with_machine_id = hardware_id("app", env={})
    assert with_machine_id == fingerprint.derive("app", "machine-id", "abc123")
    # A network change (another MAC) leaves it alone.
    monkeypatch.setattr(fingerprint, "_burned_in_mac", lambda: "66778899aabb")
    assert hardware_id("app", env={}) == with_machine_id


def test_without_any_machine_fact_a_random_id_is_kept_in_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fingerprint, "machine_fact", lambda: None)
    cache = CacheDir(tmp_path / "c")
    first = hardware_id("app", env={}, cache=cache)
    assert first == hardware_id("app", env={}, cache=CacheDir(tmp_path / "c"))
    assert stat.S_IMODE(os.stat(tmp_path / "c" / fingerprint.FALLBACK_FILE).st_mode) == 0o600


def test_a_random_or_locally_administered_mac_is_not_an_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("uuid.getnode", lambda: 0x0200_0000_0001)
    assert fingerprint._burned_in_mac() is None
    monkeypatch.setattr("uuid.getnode", lambda: 0x0100_0000_0001)
    assert fingerprint._burned_in_mac() is None
    monkeypatch.setattr("uuid.getnode", lambda: 0x0011_2233_4455)
    assert fingerprint._burned_in_mac() == "001122334455"


# --- directories ----------------------------------------------------------------------


def test_the_cache_and_config_directories_follow_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/x/config")
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert default_cache_dir() == Path("/x/cache/seatwarden")
        assert default_config_dir() == Path("/x/config/seatwarden")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", "/home/ada")
    if os.uname().sysname == "Linux":
        assert default_cache_dir() == Path("/home/ada/.cache/seatwarden")
        assert default_config_dir() == Path("/home/ada/.config/seatwarden")


def test_cache_files_are_private_and_written_whole(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path / "cache")
    path = cache.write_json("a.json", {"token": "x"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    assert cache.read_json("a.json") == {"token": "x"}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["a.json"]
    (tmp_path / "cache" / "bad.json").write_text("{not json")
    assert cache.read_json("bad.json") is None
    assert cache.read_json("missing.json") is None


# --- tokens ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def seat_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    sid = str(uuid.uuid4())
    claims = {
        "iss": "seatwarden",
        "sub": sid,
        "session_id": sid,
        "license_id": "lic-1",
        "org_id": "org-1",
        "hardware_id": "hw-1",
        "tier": "pro",
        "features": ["export"],
        "max_seats": 3,
        "iat": now,
        "exp": now + 60,
        "lease_exp": now + 30,
    }
    claims.update(overrides)
    return claims


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any], **header: Any) -> str:
    headers = {"kid": "k1", "typ": "JWT", **header}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def test_a_genuine_seat_token_verifies(signing_key: rsa.RSAPrivateKey) -> None:
    claims = seat_claims()
    token = sign(signing_key, claims)
    verified = verify_seat_token(
        token,
        signing_key.public_key(),
        session_id=claims["session_id"],
        license_id="lic-1",
        hardware_id="hw-1",
    )
    assert verified.features == ("export",) and verified.max_seats == 3


@pytest.mark.parametrize(
    "case",
    [
        "alg none",
        "hs256 with the public key",
        "another issuer",
        "another session",
        "another machine",
        "a license file",
        "no kid",
        "another key",
        "subject not the session",
    ],
)
def test_a_seat_token_that_lies_is_refused(signing_key: rsa.RSAPrivateKey, case: str) -> None:
    claims = seat_claims()
    sid = claims["session_id"]
    public = signing_key.public_key()
    expect = {"session_id": sid, "license_id": "lic-1", "hardware_id": "hw-1"}
    if case == "alg none":
        token = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    elif case == "hs256 with the public key":
        import base64
        import hashlib
        import hmac
        import json

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        from cryptography.hazmat.primitives import serialization

        secret = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        token = f"{head}.{body}.{b64(mac)}"
    elif case == "another issuer":
        token = sign(signing_key, seat_claims(iss="evil", sub=sid, session_id=sid))
    elif case == "another session":
        token = sign(signing_key, claims)
        expect["session_id"] = "someone-else"
    elif case == "another machine":
        token = sign(signing_key, seat_claims(hardware_id="hw-2", sub=sid, session_id=sid))
    elif case == "a license file":
        token = sign(signing_key, claims, typ="license+jwt")
    elif case == "no kid":
        token = jwt.encode(claims, signing_key, algorithm="RS256")
    elif case == "another key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = sign(other, claims)
    else:
        token = sign(signing_key, seat_claims(sub="x", session_id=sid))
    with pytest.raises(InvalidToken) as refused:
        verify_seat_token(token, public, **expect)
    assert token not in str(refused.value)


def test_a_license_file_verifies_and_a_seat_token_is_not_one(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    now = int(time.time())
    file_claims = {
        "iss": "seatwarden",
        "sub": "lic-1",
        "license_id": "lic-1",
        "org_id": "org-1",
        "tier": "pro",
        "features": [],
        "seats": 5,
        "max_machines": None,
        "requires_user": False,
        "status": "active",
        "license_expires_at": None,
        "iat": now,
        "exp": now + 86400,
    }
    text = sign(signing_key, file_claims, typ="license+jwt")
    verified = verify_license_file(text, signing_key.public_key(), license_id="lic-1")
    assert verified.seats == 5 and not verified.expired(time.time())
    with pytest.raises(InvalidToken):
        verify_license_file(sign(signing_key, file_claims), signing_key.public_key())


# --- retries ---------------------------------------------------------------------------------


def test_the_retry_policy_is_bounded_and_respects_retry_after() -> None:
    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=4.0, rng=random.Random(1))
    assert policy.delay(0, None) is not None and 0.5 <= policy.delay(0, None) <= 1.0  # type: ignore[operator]
    assert 5.0 <= policy.delay(1, 5.0) <= 6.0  # type: ignore[operator]
    assert policy.delay(2, None) is None, "three attempts: two retries"
    assert RetryPolicy(max_retry_after=10).delay(0, 11) is None
    assert RetryPolicy(attempts=1).delay(0, None) is None


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:10 GMT", now=1_800_000_000.0) is not None
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert parse_retry_after(when, now=now) == pytest.approx(30, abs=1)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (409, "no_seats_available", NoSeatsAvailable),
        (403, "license_suspended", LicenseSuspended),
        (410, "session_revoked", SessionRevoked),
        (400, "borrow_too_long", BorrowTooLong),
        (429, "rate_limited", RateLimited),
        (503, "ledger_unavailable", ServerUnavailable),
        (503, "store_unavailable", ServerUnavailable),
        (503, "something_new", ServerUnavailable),
        (400, "invalid_something_new", InvalidRequest),
        (502, None, ServerError),
    ],
)
def test_each_error_code_maps_to_its_exception_class(
    status: int, code: str | None, cls: type[SeatwardenError]
) -> None:
    body = {"error": code, "message": "m", "seats_used": 2, "max_seats": 2} if code else "<html>"
    error = error_from_response(status, body)
    assert type(error) is cls
    assert error.status == status
    if code:
        assert error.code == code


def test_no_seats_available_carries_the_counts() -> None:
    error = error_from_response(
        409,
        {
            "error": "no_seats_available",
            "message": "all 2 seats are in use",
            "seats_used": 2,
            "max_seats": 2,
        },
    )
    assert isinstance(error, NoSeatsAvailable)
    assert (error.seats_used, error.max_seats) == (2, 2)


def test_secrets_are_redacted_from_error_messages_and_details_in_any_case() -> None:
    error = error_from_response(
        400,
        {"error": "invalid_body", "message": f"bad key {KEY.lower()}!", "echo": KEY},
        secrets=[KEY, None, "short"],
    )
    for text in (str(error), repr(error), error.message, str(error.details)):
        assert KEY not in text and KEY.lower() not in text
    assert "[redacted]" in error.message
    assert redact("a short one", ["short"]) == "a short one", "too short to be a secret"


def test_a_client_never_shows_its_key_in_its_repr(tmp_path: Path) -> None:
    from seatwarden_client.clock import SYSTEM_CLOCK

    core = ClientCore("http://x", KEY, hardware_id="hw", cache_dir=tmp_path, clock=SYSTEM_CLOCK)
    assert KEY not in repr(core)
    assert repr(core).count("1WP4") == 1


# --- times -------------------------------------------------------------------------------------


def test_server_times_parse_on_every_supported_python() -> None:
    a = parse_time("2026-11-26T22:14:37.334Z")
    b = parse_time("2026-11-26T22:14:37.334123456+00:00")
    c = parse_time("2026-11-26T22:15:12Z")
    assert a is not None and b is not None and c is not None
    assert a.microsecond == 334000 and b.microsecond == 334123
    assert (c - a).total_seconds() == pytest.approx(34.666)
    assert parse_time("nonsense") is None and parse_time(None) is None


# --- configuration ------------------------------------------------------------------------------


def test_configuration_takes_flags_then_env_then_the_file(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('url = "http://file"\nlicense_key = "FILE-KEY"\napp = "file-app"\n')
    file.chmod(0o600)
    env = {"SEATWARDEN_URL": "http://env", "SEATWARDEN_LICENSE_KEY": "ENV-KEY"}

    settings, warnings = load({"url": "http://flag"}, env=env, path=file)
    assert (settings.url, settings.license_key, settings.app) == (
        "http://flag",
        "ENV-KEY",
        "file-app",
    )
    assert dict(settings.sources) == {"url": "flag", "license_key": "env", "app": "file"}
    assert warnings == []
    assert "ENV-KEY" not in repr(settings)

    from_file, _ = load({}, env={}, path=file)
    assert (from_file.url, from_file.license_key) == ("http://file", "FILE-KEY")


def test_a_config_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('url = "http://file"\nlicense_key = "FILE-KEY"\ncolour = "blue"\n')
    file.chmod(0o644)
    _, warnings = load({}, env={}, path=file)
    assert any("chmod 600" in w for w in warnings)
    assert any("colour" in w for w in warnings)


def test_missing_or_broken_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SEATWARDEN_URL"):
        load({}, env={}, path=tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="SEATWARDEN_LICENSE_KEY"):
        load({"url": "http://x"}, env={}, path=tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("url = ")
    with pytest.raises(ConfigError, match="cannot read"):
        load({}, env={}, path=broken)


def test_the_config_file_location_follows_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "seatwarden").mkdir()
    (tmp_path / "seatwarden" / "config.toml").write_text('url = "http://xdg"\nlicense_key = "K"\n')
    settings, _ = load({}, env=dict(os.environ))
    assert settings.url == "http://xdg"


# --- exit hooks ----------------------------------------------------------------------------------


def test_the_signal_hook_releases_then_chains_to_the_previous_handler(tmp_path: Path) -> None:
    from seatwarden_client.clock import SYSTEM_CLOCK

    core = ClientCore(
        "http://127.0.0.1:9", KEY, hardware_id="hw", cache_dir=tmp_path, clock=SYSTEM_CLOCK
    )
    calls: list[str] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append("previous"))
    try:
        guard = ExitGuard(
            core, before_release=lambda: calls.append("release"), signals=(signal.SIGUSR1,)
        )
        guard.install()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == ["release", "previous"]
        guard.uninstall()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == ["release", "previous", "previous"], "our hook is gone"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_es256_and_eddsa_tokens_verify_with_their_key_and_no_other_algorithm() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    claims = seat_claims()
    sid = claims["session_id"]
    expect = {"session_id": sid, "license_id": "lic-1", "hardware_id": "hw-1"}
    headers = {"kid": "k1", "typ": "JWT"}
    es_token = jwt.encode(claims, p256, algorithm="ES256", headers=headers)
    ed_token = jwt.encode(claims, ed, algorithm="EdDSA", headers=headers)
    assert verify_seat_token(es_token, p256.public_key(), **expect).session_id == sid
    assert verify_seat_token(ed_token, ed.public_key(), **expect).session_id == sid

    # The key decides the algorithm: another key type, or a header that
    # names another algorithm than the key's, is refused.
    for token, key in [(es_token, ed.public_key()), (ed_token, p256.public_key())]:
        with pytest.raises(InvalidToken):
            verify_seat_token(token, key, **expect)
    p384 = ec.generate_private_key(ec.SECP384R1())
    es384 = jwt.encode(claims, p384, algorithm="ES384", headers=headers)
    with pytest.raises(InvalidToken):
        verify_seat_token(es384, p384.public_key(), **expect)


def test_the_jwks_keeps_keys_of_the_servers_three_algorithms_and_ignores_others() -> None:
    def jwk_of(key: Any, alg: str, kid: str) -> dict[str, Any]:
        import json

        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key))
        return {**jwk, "alg": alg, "kid": kid, "use": "sig"}

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    body = {
        "keys": [
            jwk_of(rsa_key, "RS256", "rsa"),
            jwk_of(p256, "ES256", "p256"),
            jwk_of(ed, "EdDSA", "ed"),
            jwk_of(p384, "ES384", "p384"),
            {**jwk_of(p256, "ES256", "p256-as-rs"), "alg": "RS256"},
            {**jwk_of(rsa_key, "RS256", "rsa-enc"), "use": "enc"},
            {**jwk_of(ed, "EdDSA", "ed-no-crv"), "crv": "X25519"},
        ]
    }
    assert sorted(parse_jwks(body)) == ["ed", "p256", "rsa"]
