"""``seatctl``, run as a process, the way CI jobs and people run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ClientFactory
from harness import Backend, Server, Servers, wait_until

from seatwarden_client import NoSeatsAvailable

SEATCTL = Path(sys.executable).with_name("seatctl")
SETTINGS: dict[str, str | int] = {
    "SEATS__LEASE_TTL_SECS": 3,
    "SEATS__HEARTBEAT_INTERVAL_SECS": 1,
    "SEATS__TOKEN_SKEW_SECS": 1,
    "QUEUE__HOLD_SECS": 5,
    "QUEUE__POLL_SECS": 1,
}

# A command that says it is running (writing its session id into a file),
# then runs until it is ended.
LONG_COMMAND = [
    sys.executable,
    "-c",
    "import os, sys, time;"
    "open(sys.argv[1], 'w').write(os.environ['SEATWARDEN_SESSION_ID']);"
    "time.sleep(120)",
]


@pytest.fixture(scope="module")
def server(servers: Servers) -> Server:
    return servers.start(Backend("embedded"), SETTINGS, name="seatctl")


def seatctl_env(url: str, key: str, hardware_id: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SEATWARDEN_URL=url,
        SEATWARDEN_LICENSE_KEY=key,
        SEATWARDEN_HARDWARE_ID=hardware_id or f"ci-runner-{uuid.uuid4().hex[:8]}",
    )
    return env


def seatctl(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SEATCTL), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def json_out(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_seatctl_run_exits_with_the_commands_exit_code_and_releases_its_seat(
    server: Server,
) -> None:
    lic = server.license(seats=1)
    env = seatctl_env(server.url, lic.key)

    # The command sees its session id and not the license key.
    command = (
        "import os, sys;"
        "sys.exit(7 if os.environ.get('SEATWARDEN_SESSION_ID')"
        " and 'SEATWARDEN_LICENSE_KEY' not in os.environ else 3)"
    )
    done = seatctl("run", "--", sys.executable, "-c", command, env=env)

    assert done.returncode == 7, done.stderr
    assert "seat acquired" in done.stderr
    assert server.live_sessions(lic.id) == []
    (session,) = server.sessions(lic.id)
    assert session["end_reason"] == "released"
    assert seatctl("run", "--", "true", env=env).returncode == 0


def test_seatctl_run_refuses_to_start_the_command_when_no_seat_is_free(
    server: Server, make_client: ClientFactory, tmp_path: Path
) -> None:
    lic = server.license(seats=1)
    make_client(server.url, lic.key).acquire()
    marker = tmp_path / "ran"

    done = seatctl(
        "run",
        "--",
        sys.executable,
        "-c",
        f"open({str(marker)!r}, 'w')",
        env=seatctl_env(server.url, lic.key),
    )

    assert done.returncode == 1
    assert "no_seats_available" in done.stderr and "1 of 1" in done.stderr
    assert not marker.exists()


def run_until_lost(
    server: Server, key: str, tmp_path: Path, lose: Any, warn_secs: float = 1.0
) -> tuple[int, str, float]:
    """Starts ``seatctl run`` on the long command, calls ``lose(session_id)``
    once the command runs, and returns the exit status, stderr, and the
    seconds from the loss to seatctl's exit."""
    started = tmp_path / "started"
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as err:
        proc = subprocess.Popen(
            [str(SEATCTL), "run", "--warn-secs", str(warn_secs), "--", *LONG_COMMAND, str(started)],
            env=seatctl_env(server.url, key),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_until(
                lambda: (started.exists() and started.read_text()) or proc.poll() is not None,
                timeout=15,
                message="the command to start",
            )
            assert proc.poll() is None, errors.read_text()
            session_id = started.read_text()
            lost_at = time.monotonic()
            lose(session_id)
            code = proc.wait(timeout=30)
            took = time.monotonic() - lost_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, errors.read_text(), took


def test_seatctl_run_ends_the_command_when_the_license_is_suspended(
    server: Server, tmp_path: Path
) -> None:
    lic = server.license(seats=1)

    code, stderr, took = run_until_lost(
        server,
        lic.key,
        tmp_path,
        lambda session_id: server.update_license(lic.id, "--status", "suspended"),
    )

    assert code == 128 + 15, stderr  # ended with SIGTERM
    assert "the seat was lost (license_suspended" in stderr
    assert "sending SIGTERM" in stderr
    assert took < 15


def test_seatctl_run_ends_the_command_when_an_admin_revokes_the_seat(
    server: Server, tmp_path: Path
) -> None:
    lic = server.license(seats=1)
    admin = server.admin_token()

    def revoke(session_id: str) -> None:
        r = httpx.delete(
            f"{server.url}/api/v1/admin/sessions/{session_id}",
            headers={"authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text

    code, stderr, took = run_until_lost(server, lic.key, tmp_path, revoke)

    assert code == 128 + 15, stderr
    assert "the seat was lost (session_revoked" in stderr
    assert took < 15


def test_seatctl_run_wait_queues_and_shows_its_position(
    server: Server, make_client: ClientFactory, tmp_path: Path
) -> None:
    lic = server.license(seats=1)
    holder = make_client(server.url, lic.key)
    holder.acquire()
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as err:
        proc = subprocess.Popen(
            [str(SEATCTL), "run", "--wait", "--", sys.executable, "-c", "print('licensed')"],
            env=seatctl_env(server.url, lic.key),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            wait_until(
                lambda: "position 1" in errors.read_text() or proc.poll() is not None,
                timeout=15,
                message="seatctl to show its place in the queue",
            )
            assert proc.poll() is None, errors.read_text()
            holder.release()
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, errors.read_text()
    assert out.strip() == "licensed"


def test_seatctl_borrow_and_return_give_the_seat_back_from_another_process(
    server: Server, make_client: ClientFactory
) -> None:
    lic = server.license(seats=1, max_borrow_hours=8)
    env = seatctl_env(server.url, lic.key)

    borrowed = json_out(seatctl("--json", "borrow", "--hours", "2", env=env))
    assert borrowed["borrowed"] is True and borrowed["borrowed_until"]
    assert "token" not in borrowed

    status = json_out(seatctl("status", "--json", env=env))
    assert status["borrowed"]["session_id"] == borrowed["session_id"]
    assert json_out(seatctl("validate", "--json", env=env))["source"] == "token"
    with pytest.raises(NoSeatsAvailable):
        make_client(server.url, lic.key).acquire()

    returned = json_out(seatctl("return", "--json", env=env))
    assert returned["session_id"] == borrowed["session_id"]
    assert make_client(server.url, lic.key).acquire().created
    assert seatctl("return", env=env).returncode == 1, "nothing left to return"


def test_seatctl_status_validate_and_activate_report_in_json_and_for_people(
    server: Server,
) -> None:
    lic = server.license(seats=2, max_machines=2)
    env = seatctl_env(server.url, lic.key, hardware_id="build-box-7")

    status = json_out(seatctl("status", "--json", env=env))
    assert status["hardware_id"] == "build-box-7"
    assert status["license"]["valid"] is False, "not activated yet"
    assert status["license"]["machine_activated"] is False
    assert status["borrowed"] is None and status["queue"] is None

    machine = json_out(seatctl("activate", "--name", "build box", "--json", env=env))
    assert machine["hardware_id"] == "build-box-7" and machine["name"] == "build box"

    valid = seatctl("validate", env=env)
    assert valid.returncode == 0 and valid.stdout.startswith("valid"), valid.stderr
    human = seatctl("status", env=env)
    assert human.returncode == 0
    assert "license:       active (valid" in human.stdout
    assert lic.key not in human.stdout + human.stderr


def test_seatctl_takes_url_and_key_from_the_config_file_below_env_and_flags(
    server: Server, isolated_home: Path
) -> None:
    lic = server.license(seats=1)
    config = isolated_home / ".config" / "seatwarden" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "http://127.0.0.1:9"\nlicense_key = "{lic.key}"\n')
    config.chmod(0o600)
    env = dict(os.environ)
    env["SEATWARDEN_HARDWARE_ID"] = "configured-machine"

    # The file's URL is wrong; the environment's wins over it...
    env["SEATWARDEN_URL"] = server.url
    assert json_out(seatctl("validate", "--json", env=env))["valid"] is True
    # ...and a flag wins over the environment.
    env["SEATWARDEN_URL"] = "http://127.0.0.1:9"
    assert json_out(seatctl("--url", server.url, "validate", "--json", env=env))["valid"] is True
    unreachable = seatctl("validate", env=env)
    assert unreachable.returncode == 1 and "server_unreachable" in unreachable.stderr


def test_seatctl_without_a_server_url_says_where_to_put_one() -> None:
    done = seatctl("status", env=dict(os.environ))
    assert done.returncode == 2
    assert "SEATWARDEN_URL" in done.stderr
