"""The server's public keys (JWKS), kept in memory and on disk.

Tokens are verified on every acquire and heartbeat, and offline, so the
keys must be at hand without a request each time. The cache is fresh for
an hour (``ttl``); a token naming a ``kid`` the cache lacks triggers a
refresh at once, which is how a key rotation reaches clients. When the
server can't be reached, keys older than the hour still verify: offline
use outlasting an hour is the point of caching them. Only signing keys of
the three algorithms the server signs with are kept (RSA for RS256, P-256
for ES256, Ed25519 for EdDSA); anything else in the set is ignored.

The cache itself does no I/O on the network: it says what it has and
whether that is fresh, and takes what the caller fetched. The fetch is a
step of the sans-IO flows in :mod:`.protocol`, shared by the sync and
async clients.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import jwt

from .cache import CacheDir, digest
from .clock import Clock
from .errors import InvalidToken

JWKS_PATH = "/.well-known/jwks.json"
DEFAULT_TTL_SECS = 3600.0


@dataclass(frozen=True)
class KeyLookup:
    """What the cache has for a ``kid``: the key (or ``None``), and whether
    the cache is within its TTL."""

    key: Any
    fresh: bool


#: The key type (and curve) each algorithm the server signs with needs.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
}


def jwk_algorithm(jwk: dict[str, Any]) -> str | None:
    """The algorithm a JWK verifies, or ``None`` if it is no key of ours.

    An RSA key without ``alg`` is taken as RS256 (older servers omitted
    nothing, but other issuers do); EC and OKP keys must say theirs.
    """
    alg = jwk.get("alg", "RS256" if jwk.get("kty") == "RSA" else None)
    if not isinstance(alg, str) or alg not in KEY_TYPES or jwk.get("use", "sig") != "sig":
        return None
    kty, crv = KEY_TYPES[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return None
    return alg


def parse_jwks(body: Any) -> dict[str, dict[str, Any]]:
    """The usable keys of a JWK set, by ``kid``."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise InvalidToken("the server's JWKS is not a JWK set")
    keys: dict[str, dict[str, Any]] = {}
    for jwk in body["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or jwk_algorithm(jwk) is None:
            continue
        keys[kid] = jwk
    return keys


class JwksCache:
    """The JWKS of one server, in memory and in ``cache_dir``."""

    def __init__(
        self,
        url: str,
        cache: CacheDir | None,
        clock: Clock,
        ttl: float = DEFAULT_TTL_SECS,
    ) -> None:
        self.url = url.rstrip("/")
        self._cache = cache
        self._clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._jwks: dict[str, dict[str, Any]] = {}
        self._built: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._loaded = False
        #: How many sets were taken from the network by this instance.
        self.fetches = 0

    @property
    def file_name(self) -> str:
        return f"jwks-{digest(self.url)}.json"

    def _load(self) -> None:
        """Reads the disk copy once, on first use."""
        if self._loaded:
            return
        self._loaded = True
        if self._cache is None:
            return
        data = self._cache.read_json(self.file_name)
        if not data or data.get("url") != self.url:
            return
        fetched_at = data.get("fetched_at")
        try:
            keys = parse_jwks(data.get("jwks"))
        except InvalidToken:
            return
        if isinstance(fetched_at, (int, float)):
            self._jwks = keys
            self._fetched_at = float(fetched_at)

    def fresh(self) -> bool:
        with self._lock:
            self._load()
            return self._is_fresh()

    def _is_fresh(self) -> bool:
        if self._fetched_at is None:
            return False
        age = self._clock.time() - self._fetched_at
        # A cache written "in the future" (clock set back) is not trusted
        # to be fresh either.
        return 0 <= age < self.ttl

    def lookup(self, kid: str) -> KeyLookup:
        with self._lock:
            self._load()
            fresh = self._is_fresh()
            jwk = self._jwks.get(kid)
            if jwk is None:
                return KeyLookup(None, fresh)
            key = self._built.get(kid)
            if key is None:
                try:
                    key = jwt.PyJWK(jwk, algorithm=jwk_algorithm(jwk)).key
                except jwt.PyJWTError:
                    return KeyLookup(None, fresh)
                self._built[kid] = key
            return KeyLookup(key, fresh)

    def update(self, body: Any) -> None:
        """Takes a freshly fetched set; writes it to disk (mode 0600)."""
        keys = parse_jwks(body)
        now = self._clock.time()
        with self._lock:
            self._loaded = True
            self._jwks = keys
            self._built = {}
            self._fetched_at = now
            self.fetches += 1
        if self._cache is not None:
            try:
                self._cache.write_json(
                    self.file_name,
                    {"url": self.url, "fetched_at": now, "jwks": body},
                )
            except OSError:
                # A read-only home still verifies, from memory.
                pass

    def kids(self) -> list[str]:
        with self._lock:
            self._load()
            return sorted(self._jwks)
