"""Where ``seatctl`` finds its server, key and options.

Precedence, highest first: command-line flags, environment variables
(``SEATWARDEN_URL``, ``SEATWARDEN_LICENSE_KEY``, ``SEATWARDEN_APP``,
``SEATWARDEN_CACHE_DIR``; ``SEATWARDEN_HARDWARE_ID`` is read by the
fingerprint itself), then ``config.toml`` in the user's config directory
(``$XDG_CONFIG_HOME/seatwarden/config.toml`` or
``~/.config/seatwarden/config.toml``)::

    url = "https://licenses.example.com"
    license_key = "CODITECT-XXXX-XXXX-XXXX-XXXX-XXXX"
    app = "acme-cad"

The file can hold the license key, so keep it private (``chmod 600``);
``seatctl`` warns when others can read a file that holds one.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import default_config_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_FILE = "config.toml"

ENV_VARS = {
    "url": "SEATWARDEN_URL",
    "license_key": "SEATWARDEN_LICENSE_KEY",
    "app": "SEATWARDEN_APP",
    "cache_dir": "SEATWARDEN_CACHE_DIR",
    "hardware_id": "SEATWARDEN_HARDWARE_ID",
}
KEYS = tuple(ENV_VARS)


class ConfigError(Exception):
    """The configuration is unusable (a missing URL or key, a broken file)."""


@dataclass(frozen=True)
class Settings:
    url: str
    license_key: str
    app: str = "seatwarden"
    cache_dir: str | None = None
    hardware_id: str | None = None
    #: Where each value came from (``flag``, ``env``, ``file``), for
    #: ``seatctl status`` and error messages. Never the values themselves.
    sources: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"Settings(url={self.url!r}, app={self.app!r}, license_key=[redacted])"


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    if env is not None and "XDG_CONFIG_HOME" in env and sys.platform != "win32":
        xdg = env["XDG_CONFIG_HOME"]
        if os.path.isabs(xdg):
            return Path(xdg) / "seatwarden" / CONFIG_FILE
    return default_config_dir() / CONFIG_FILE


def read_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The file's settings and warnings about it; ``{}`` when absent."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}, []
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    warnings = []
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        warnings.append(f"{path}: unknown settings ignored: {', '.join(unknown)}")
    if "license_key" in data and os.name == "posix":
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{path} holds a license key and others can read it; chmod 600 it")
    for key, value in data.items():
        if key in KEYS and not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
    return {k: v for k, v in data.items() if k in KEYS}, warnings


def load(
    flags: Mapping[str, str | None],
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> tuple[Settings, list[str]]:
    """Merges flags, environment and file; returns settings and warnings."""
    environ = os.environ if env is None else env
    file_path = path or default_config_path(environ)
    from_file, warnings = read_file(file_path)
    values: dict[str, str] = {}
    sources: list[tuple[str, str]] = []
    for key in KEYS:
        flag = flags.get(key)
        env_value = environ.get(ENV_VARS[key])
        if flag:
            values[key], source = flag, "flag"
        elif env_value:
            values[key], source = env_value, "env"
        elif from_file.get(key):
            values[key], source = from_file[key], "file"
        else:
            continue
        sources.append((key, source))
    if not values.get("url"):
        raise ConfigError(
            f"no server URL: pass --url, set SEATWARDEN_URL, or put url in {file_path}"
        )
    if not values.get("license_key"):
        raise ConfigError(
            "no license key: set SEATWARDEN_LICENSE_KEY, pass --license-key,"
            f" or put license_key in {file_path}"
        )
    return (
        Settings(
            url=values["url"],
            license_key=values["license_key"],
            app=values.get("app", "seatwarden"),
            cache_dir=values.get("cache_dir"),
            hardware_id=values.get("hardware_id"),
            sources=tuple(sources),
        ),
        warnings,
    )
