"""Verifying seat tokens and license files against a public key.

Both are compact JWS signed by one of the server's keys; only the header's
``typ`` tells them apart (``JWT`` for a seat token, ``license+jwt`` for a
license file). Verification is strict on purpose and identical online and
offline: the algorithm is the key's (RS256 for an RSA key, ES256 for a
P-256 key, EdDSA for an Ed25519 key; never ``none``, never HMAC with the
public key as secret, never what the header alone asks for), a ``kid``
that names a key of the JWKS, ``iss`` = ``seatwarden``, and the
ids the caller expects. Expiry is checked by the caller against its own
(injectable) clock, because what an expired token *means* depends on the
situation: refused when the server just handed it to us, "offline grace
used up" when we could not reach the server to renew it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jwt

from .errors import InvalidToken

#: The algorithms the server signs with.
ALGORITHMS = ("RS256", "ES256", "EdDSA")
ISSUER = "seatwarden"
SEAT_TOKEN_TYP = "JWT"
LICENSE_FILE_TYP = "license+jwt"


@dataclass(frozen=True)
class TokenHeader:
    alg: str
    kid: str
    typ: str | None


def key_algorithm(key: Any) -> str:
    """The one algorithm a public key verifies: decided by the key, never
    by the token."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise InvalidToken(f"the verifying key is of no supported type ({type(key).__name__})")


@dataclass(frozen=True)
class SeatClaims:
    """The verified claims of a seat token."""

    session_id: str
    license_id: str
    org_id: str
    hardware_id: str
    tier: str
    features: tuple[str, ...]
    max_seats: int
    iat: int
    exp: int
    lease_exp: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    def expired(self, now: float) -> bool:
        return now >= self.exp


@dataclass(frozen=True)
class LicenseClaims:
    """The verified claims of a license file."""

    license_id: str
    org_id: str
    tier: str
    features: tuple[str, ...]
    seats: int
    max_machines: int | None
    requires_user: bool
    status: str
    license_expires_at: int | None
    iat: int
    exp: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    def expired(self, now: float) -> bool:
        """The file's own end, or the license's expiry, has passed."""
        if now >= self.exp:
            return True
        return self.license_expires_at is not None and now >= self.license_expires_at


def read_header(token: str, expected_typ: str) -> TokenHeader:
    """Reads and checks the unverified header: enough to pick the key.

    Refuses any algorithm the server never signs with before any crypto
    runs, so that a token claiming ``alg: none`` or ``HS256`` never reaches
    a verifier. (Whether the algorithm is its key's is checked with the
    key, in :func:`verify_seat_token` and :func:`verify_license_file`.)
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("the token is not a well-formed JWS") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidToken("the token is not signed with RS256, ES256 or EdDSA")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("the token names no signing key (kid)")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise InvalidToken("the token's typ is not a string")
    if expected_typ == LICENSE_FILE_TYP and typ != LICENSE_FILE_TYP:
        raise InvalidToken("not a license file (typ is not license+jwt)")
    if expected_typ == SEAT_TOKEN_TYP and typ not in (None, SEAT_TOKEN_TYP):
        raise InvalidToken("not a seat token (a license file is not a seat token)")
    return TokenHeader(alg=alg, kid=kid, typ=typ)


def _decode(token: str, key: Any, required: list[str]) -> dict[str, Any]:
    algorithm = key_algorithm(key)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=ISSUER,
            options={
                "require": required,
                # The caller checks exp with its own clock; iat and nbf
                # would only make a client whose clock runs slow refuse a
                # genuine token.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
            },
        )
    except jwt.InvalidIssuerError:
        raise InvalidToken("the token was not issued by seatwarden") from None
    except jwt.MissingRequiredClaimError as e:
        raise InvalidToken(f"the token lacks the {e.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken(f"the token's algorithm is not its key's ({algorithm})") from None
    except jwt.PyJWTError as e:
        raise InvalidToken(f"the token does not verify ({type(e).__name__})") from None
    return claims


def _str(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise InvalidToken(f"the token's {name!r} claim is not a string")
    return value


def _int(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(f"the token's {name!r} claim is not an integer")
    return value


def _features(claims: dict[str, Any]) -> tuple[str, ...]:
    value = claims.get("features", [])
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise InvalidToken("the token's 'features' claim is not a list of names")
    return tuple(value)


def verify_seat_token(
    token: str,
    key: Any,
    *,
    session_id: str | None = None,
    license_id: str | None = None,
    hardware_id: str | None = None,
) -> SeatClaims:
    """Verifies a seat token's signature and claims (not its expiry).

    ``session_id``, ``license_id`` and ``hardware_id``, when given, must
    match: a genuine token of another session (or machine) is refused as
    surely as a forged one.
    """
    read_header(token, SEAT_TOKEN_TYP)
    claims = _decode(token, key, ["exp", "iat", "iss", "sub"])
    seat = SeatClaims(
        session_id=_str(claims, "session_id"),
        license_id=_str(claims, "license_id"),
        org_id=_str(claims, "org_id"),
        hardware_id=_str(claims, "hardware_id"),
        tier=_str(claims, "tier"),
        features=_features(claims),
        max_seats=_int(claims, "max_seats"),
        iat=_int(claims, "iat"),
        exp=_int(claims, "exp"),
        lease_exp=_int(claims, "lease_exp") if "lease_exp" in claims else 0,
        raw=claims,
    )
    if claims.get("sub") != seat.session_id:
        raise InvalidToken("the token's subject is not its session")
    if session_id is not None and seat.session_id != session_id:
        raise InvalidToken("the token belongs to another session")
    if license_id is not None and seat.license_id != license_id:
        raise InvalidToken("the token belongs to another license")
    if hardware_id is not None and seat.hardware_id != hardware_id:
        raise InvalidToken("the token belongs to another machine")
    return seat


def verify_license_file(token: str, key: Any, *, license_id: str | None = None) -> LicenseClaims:
    """Verifies a license file's signature and claims (not its expiry)."""
    read_header(token, LICENSE_FILE_TYP)
    claims = _decode(token, key, ["exp", "iat", "iss", "sub"])
    max_machines = claims.get("max_machines")
    expires = claims.get("license_expires_at")
    lic = LicenseClaims(
        license_id=_str(claims, "license_id"),
        org_id=_str(claims, "org_id"),
        tier=_str(claims, "tier"),
        features=_features(claims),
        seats=_int(claims, "seats"),
        max_machines=max_machines if isinstance(max_machines, int) else None,
        requires_user=bool(claims.get("requires_user", False)),
        status=_str(claims, "status"),
        license_expires_at=expires if isinstance(expires, int) else None,
        iat=_int(claims, "iat"),
        exp=_int(claims, "exp"),
        raw=claims,
    )
    if claims.get("sub") != lic.license_id:
        raise InvalidToken("the license file's subject is not its license")
    if license_id is not None and lic.license_id != license_id:
        raise InvalidToken("the license file is another license's")
    return lic


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload without any check: for display and diagnostics only."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        import base64

        data = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
