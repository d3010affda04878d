"""Fixtures: real servers per module, isolated homes, clients that clean up.

Servers are shared by the tests of a module where they can be (each test
makes its own organization and license, so tests never see each other's
seats); a test that stops or reconfigures its server starts its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Backend, Servers, make_backend

from seatwarden_client import AsyncLicenseClient, LicenseClient


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache and config directories, and none of
    the developer's SEATWARDEN_* settings."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in (
        "SEATWARDEN_URL",
        "SEATWARDEN_LICENSE_KEY",
        "SEATWARDEN_APP",
        "SEATWARDEN_CACHE_DIR",
        "SEATWARDEN_HARDWARE_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.close()


@pytest.fixture(scope="module", params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Both deployments: SQLite with the in-process ledger, and
    PostgreSQL with Redis (a fresh database per module)."""
    return make_backend(str(request.param))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "client-cache"


ClientFactory = Callable[..., LicenseClient]


@pytest.fixture
def make_client(cache_dir: Path) -> Iterator[ClientFactory]:
    """Builds clients (a distinct machine each, unless told) and closes
    them (releasing their seats) after the test."""
    made: list[LicenseClient] = []

    def make(url: str, key: str, **kwargs: Any) -> LicenseClient:
        kwargs.setdefault("hardware_id", f"machine-{uuid.uuid4().hex[:12]}")
        kwargs.setdefault("cache_dir", cache_dir)
        kwargs.setdefault("app", "pytest")
        kwargs.setdefault("timeout", 5.0)
        client = LicenseClient(url, key, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


AsyncClientFactory = Callable[..., AsyncLicenseClient]


@pytest.fixture
def make_async_client(cache_dir: Path) -> AsyncClientFactory:
    """Builds async clients; the test closes them (inside its event loop)."""

    def make(url: str, key: str, **kwargs: Any) -> AsyncLicenseClient:
        kwargs.setdefault("hardware_id", f"machine-{uuid.uuid4().hex[:12]}")
        kwargs.setdefault("cache_dir", cache_dir)
        kwargs.setdefault("app", "pytest")
        kwargs.setdefault("timeout", 5.0)
        return AsyncLicenseClient(url, key, **kwargs)

    return make
