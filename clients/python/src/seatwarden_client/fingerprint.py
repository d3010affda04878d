"""The machine's hardware id: what the server counts seats by.

A machine must present the same id across restarts, reboots, network
changes and upgrades of this package, or each start would look like a new
machine and (with a lease still running) take a second seat. So the id
comes from the most stable fact the OS offers, in this order:

1. ``SEATWARDEN_HARDWARE_ID`` in the environment (containers, CI, tests);
2. the OS installation id: ``/etc/machine-id`` or
   ``/var/lib/dbus/machine-id`` (Linux), ``IOPlatformUUID`` (macOS),
   ``MachineGuid`` (Windows);
3. the primary network interface's MAC address, when it is a burned-in
   (universally administered) one; a random MAC would change each boot;
4. a random id created once and kept in the cache directory.

The fact is hashed with a salt naming this scheme and the application, so
the server never sees the raw machine id (which other software may use to
track the machine) and two vendors' apps on one machine send unrelated ids.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Mapping

from .cache import CacheDir

ENV_OVERRIDE = "SEATWARDEN_HARDWARE_ID"
SALT = "seatwarden-hardware-id/v1"
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
FALLBACK_FILE = "machine-id.json"


def _read_machine_id_file() -> str | None:
    for path in MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        # An empty or "uninitialized" file (first boot of an image) is not
        # an identity.
        if value and value != "uninitialized":
            return value
    return None


def _macos_platform_uuid() -> str | None:
    try:
        out = subprocess.run(
            ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'"IOPlatformUUID"\s*=\s*"([^"]+)"', out)
    return match.group(1) if match else None


def _windows_machine_guid() -> str | None:
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        with winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"SOFTWARE\Microsoft\Cryptography",
            0,
            winreg.KEY_READ | winreg.KEY_WOW64_64KEY,  # type: ignore[attr-defined,unused-ignore]
        ) as key:
            value, _ = winreg.QueryValueEx(key, "MachineGuid")  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, OSError):
        return None
    return str(value) if value else None


def _burned_in_mac() -> str | None:
    node = uuid.getnode()
    # uuid.getnode() falls back to a random number with the multicast bit
    # set when it finds no interface; a locally administered address
    # (bit 0x02 of the first octet) is typically randomized per boot or
    # per network. Neither identifies the machine.
    first_octet = (node >> 40) & 0xFF
    if first_octet & 0x01 or first_octet & 0x02:
        return None
    return f"{node:012x}"


def machine_fact() -> tuple[str, str] | None:
    """The most stable machine fact available, as ``(kind, value)``."""
    if sys.platform == "darwin":
        value = _macos_platform_uuid()
        if value:
            return ("platform-uuid", value)
    elif sys.platform == "win32":
        value = _windows_machine_guid()
        if value:
            return ("machine-guid", value)
    else:
        value = _read_machine_id_file()
        if value:
            return ("machine-id", value)
    mac = _burned_in_mac()
    if mac:
        return ("mac", mac)
    return None


def _fallback_id(cache: CacheDir | None) -> str:
    """A random id kept in the cache directory: stable for as long as the
    cache is, which is the best a machine without any identity allows."""
    if cache is not None:
        data = cache.read_json(FALLBACK_FILE)
        if data and isinstance(data.get("id"), str):
            return str(data["id"])
    value = secrets.token_hex(16)
    if cache is not None:
        try:
            cache.write_json(FALLBACK_FILE, {"id": value})
        except OSError:
            pass
    return value


def derive(app: str, kind: str, value: str) -> str:
    """The salted SHA-256 of one fact, hex."""
    material = f"{SALT}\0{app}\0{kind}\0{value}".encode()
    return hashlib.sha256(material).hexdigest()


def hardware_id(
    app: str = "seatwarden",
    *,
    env: Mapping[str, str] | None = None,
    cache: CacheDir | None = None,
) -> str:
    """This machine's hardware id for ``app``."""
    environ = os.environ if env is None else env
    override = environ.get(ENV_OVERRIDE, "").strip()
    if override:
        return override
    fact = machine_fact()
    if fact is None:
        fact = ("fallback", _fallback_id(cache))
    return derive(app, *fact)
