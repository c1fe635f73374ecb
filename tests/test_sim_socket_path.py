"""Where the simulator's control socket goes when `[system] sim_socket` is unset.

The unit runs the service with PrivateTmp=yes, so a socket under /tmp would be out
of every other process's sight: the service serves it in its RuntimeDirectory=
(/run/chargepoint, given as $RUNTIME_DIRECTORY), and `chargepoint sim` run by
hand looks there while that directory exists.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hal.sim_control import SERVICE_RUNTIME_DIR, SimNotRunning, default_socket_path, send_command
from tests.harness import wait_until
from tests.test_systemd import values

ROOT = Path(__file__).resolve().parents[1]
FALLBACK = f"/tmp/chargepoint-{os.getuid()}/sim.sock"


def test_the_service_directory_is_the_units_runtime_directory():
    assert values("RuntimeDirectory") == ["chargepoint"]
    assert SERVICE_RUNTIME_DIR == "/run/chargepoint"
    assert values("PrivateTmp") == ["yes"]          # why /tmp cannot be the default


@pytest.mark.parametrize("client", [False, True])
def test_runtime_directory_wins(tmp_path, client):
    env = {"RUNTIME_DIRECTORY": "/run/chargepoint:/run/other", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(client, env, str(tmp_path)) == "/run/chargepoint/sim.sock"


def test_own_service_directory_serves_and_is_looked_in(tmp_path):
    service = tmp_path / "run-chargepoint"
    service.mkdir(mode=0o750)
    env = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(False, env, str(service)) == f"{service}/sim.sock"
    assert default_socket_path(True, env, str(service)) == f"{service}/sim.sock"


@pytest.fixture
def others_directory(tmp_path):
    """A directory that exists and belongs to another user (as the service's does)."""
    if os.getuid() != 0:
        return "/"
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o750)
    os.chown(directory, 65534, 65534)
    return str(directory)


def test_another_users_service_directory_is_only_looked_in(others_directory):
    """`sudo -u pi chargepoint run` does not serve there (it could not), but
    `chargepoint sim` looks there: that is where the running service is."""
    env = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(False, env, others_directory) == \
        "/run/user/7/chargepoint/sim.sock"
    assert default_socket_path(True, env, others_directory) == \
        os.path.join(others_directory, "sim.sock")


@pytest.mark.parametrize("client", [False, True])
def test_without_a_service_directory_the_per_user_places(tmp_path, client):
    missing = str(tmp_path / "absent")
    assert default_socket_path(client, {"XDG_RUNTIME_DIR": "/run/user/7"}, missing) == \
        "/run/user/7/chargepoint/sim.sock"
    assert default_socket_path(client, {}, missing) == FALLBACK


def test_the_firmware_under_systemd_serves_where_chargepoint_sim_looks(tmp_path, csms):
    """The real process with the environment the unit gives it, and the path the CLI
    would take with that directory present as /run/chargepoint."""
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    text = (ROOT / "config.toml").read_text()
    text = text.replace('url = "ws://127.0.0.1:9000/ocpp"', f'url = "{csms.url}"')
    assert "sim_socket" not in text
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_RUNTIME_DIR", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(RUNTIME_DIRECTORY=str(run), STATE_DIRECTORY=str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "run", "--config",
                             str(config)], env=env, cwd=run, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    path = default_socket_path(client=True, environ={}, service_dir=str(run))

    def answers() -> bool:
        try:
            return send_command(path, "status", [])["ok"]
        except SimNotRunning:
            return False

    try:
        assert wait_until(answers, timeout=30, interval=0.05)
        assert os.listdir(run) == ["sim.sock"]
        assert (tmp_path / "state" / "chargepoint.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
