"""The per-user cache directory, and files in it only the user can read.

What lives there: the JWKS (so that tokens verify offline), a borrowed
session (id and token, so that ``seatctl return`` in another process can
give it back), a pending queue ticket, and a fallback machine id. Tokens
are secrets, hence mode 0600 for files and 0700 for the directory, and
writes go through a temporary file and an atomic rename, so that a reader
in another process never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

APP_DIR = "seatwarden"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seatwarden`` or ``~/.cache/seatwarden`` (Linux and
    other Unixes), ``~/Library/Caches/seatwarden`` (macOS),
    ``%LOCALAPPDATA%\\seatwarden\\Cache`` (Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP_DIR / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_DIR
    return Path.home() / ".cache" / APP_DIR


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/seatwarden`` or ``~/.config/seatwarden``
    (``%APPDATA%\\seatwarden`` on Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / APP_DIR
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR
    return Path.home() / ".config" / APP_DIR


def digest(*parts: str) -> str:
    """A short, stable file-name part derived from ``parts`` (never the
    parts themselves: one of them may be a license key)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


class CacheDir:
    """A directory of small JSON files, private to the user."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"CacheDir({str(self.path)!r})"

    def ensure(self) -> Path:
        """Creates the directory (0700) if needed, and tightens its mode if
        it is ours and looser."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            st = self.path.stat()
            if st.st_uid == os.getuid() and (st.st_mode & 0o777) != 0o700:
                os.chmod(self.path, 0o700)
        return self.path

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The file's object, or ``None`` when it is missing or unreadable
        (a cache is never worth failing over)."""
        try:
            with open(self.path / name, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Writes atomically with mode 0600."""
        directory = self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            if os.name == "posix":
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            target = directory / name
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return target

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.path / name)
        except FileNotFoundError:
            pass
