"""Trying a CSMS of one's own: `run` and `demo` take `--url` and `--id` (or
$CHARGEPOINT_URL and $CHARGEPOINT_ID), `demo --config` keeps the file's CSMS, and the
demo's hint is a command that works from another terminal. Real processes, the loopback
CSMS standing in for "yours"."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.demo_process import ChargepointProcess

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 20


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{probe.getsockname()[1]}/ocpp"


def _config(tmp_path: Path, url: str, cp_id: str = "CP-FILE", system: str = "") -> Path:
    """The shipped config.toml (simulated hardware) with this URL, id and private paths."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('url = "ws://127.0.0.1:9000/ocpp"', f'url = "{url}"')
    text = text.replace('charge_point_id = "CP-1"', f'charge_point_id = "{cp_id}"')
    text = text.replace("[storage]", f'[storage]\npath = "{tmp_path / "cp.db"}"')
    text = text.replace("[system]\nreboot_command = [\"systemctl\", \"reboot\"]",
                        f'[system]\nsim_socket = "{tmp_path / "sim.sock"}"\n{system}')
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


class Chargepoint(ChargepointProcess):
    """`python -m chargepoint ARGS` in its own process group, output collected, without
    the CSMS or systemd settings of the test run's environment."""

    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None):
        environ = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
        for name in ("CHARGEPOINT_URL", "CHARGEPOINT_ID", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            environ.pop(name, None)
        environ.update(env or {})
        super().__init__(list(args), tmp_path, environ)

    def output(self) -> str:
        return self.text

    def wait_line(self, pattern: str, timeout: float = WAIT_S) -> re.Match:
        return super().wait_line(pattern, timeout)

    def interrupt(self, timeout: float = WAIT_S) -> int:
        return super().interrupt(timeout)


@pytest.fixture
def launch(tmp_path):
    started: list[Chargepoint] = []

    def make(*args: str, env: dict | None = None) -> Chargepoint:
        started.append(Chargepoint(tmp_path, *args, env=env))
        return started[-1]

    yield make
    for cp in started:
        cp.kill()


def test_demo_with_url_and_id_uses_that_csms_and_its_hint_works_from_any_shell(
        tmp_path, csms, launch):
    demo = launch("demo", "--url", csms.url, "--id", "CP-MINE")
    boot = csms.wait_for("BootNotification", timeout=WAIT_S)
    assert boot.cp_id == "CP-MINE"
    hint = demo.wait_line(r"In another terminal try:  (.+) plug 1 ;")
    assert "Local CSMS listening" not in demo.output()
    # The hint as typed in a terminal whose PATH knows nothing of this installation.
    shell = dict(os.environ, PATH="/usr/bin:/bin", XDG_RUNTIME_DIR=str(tmp_path))
    typed = subprocess.run(f"{hint.group(1)} status", shell=True, env=shell, cwd="/",
                           capture_output=True, text=True, timeout=WAIT_S)
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert typed.stdout.startswith("conn  pilot")
    assert re.search(r"link to ws://127\.0\.0\.1:\d+/ocpp/CP-MINE: connected", typed.stdout)
    demo.wait_line(r"chargepoint.rpc: -> \[2,")            # every frame is logged
    assert demo.interrupt() == 0
    assert "Demo stopped." in demo.output()


def test_demo_config_keeps_the_files_csms(tmp_path, csms, launch):
    """Before, `demo --config FILE` quietly put the bundled CSMS in place of FILE's."""
    config = _config(tmp_path, csms.url, "CP-FILE")
    demo = launch("demo", "--config", str(config))
    assert csms.wait_for("BootNotification", timeout=WAIT_S).cp_id == "CP-FILE"
    assert "Local CSMS listening" not in demo.output()
    assert demo.interrupt() == 0


def test_demo_without_url_or_config_still_brings_its_own_csms(tmp_path, launch):
    """./config.toml (the shipped one) gives the charger; the bundled CSMS takes the place
    of its URL, as the README's demo needs."""
    _config(tmp_path, "ws://127.0.0.1:9000/ocpp", "CP-HERE")
    demo = launch("demo", "--heartbeat", "1")
    demo.wait_line(r"Local CSMS listening on ws://127\.0\.0\.1:\d+/ocpp; charge point CP-HERE")
    demo.wait_line(r"CP-HERE → Heartbeat")
    assert demo.interrupt() == 0


def test_a_hard_reset_restarts_the_demo_and_never_runs_the_reboot_command(
        tmp_path, csms, launch):
    marker = tmp_path / "rebooted"
    config = _config(tmp_path, csms.url, system=f"reboot_command = [\"sh\", \"-c\", "
                                                f"\"echo reboot >> '{marker}'\"]")
    demo = launch("demo", "--config", str(config))
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=WAIT_S)
    mark = len(csms.received)
    assert csms.call("CP-FILE", "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    csms.wait_for("BootNotification", timeout=WAIT_S, after=mark)
    assert not marker.exists()
    assert "restarting the firmware (hard reset)" in demo.output()
    assert demo.interrupt() == 0


def test_run_takes_the_csms_from_the_environment_and_the_options_win(tmp_path, csms, launch):
    config = _config(tmp_path, _dead_url(), "CP-FILE")
    env = {"CHARGEPOINT_URL": csms.url, "CHARGEPOINT_ID": "CP-ENV"}
    run = launch("run", "--config", str(config), env=env)
    assert csms.wait_for("BootNotification", timeout=WAIT_S).cp_id == "CP-ENV"
    run.wait_line(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} INFO    chargepoint: chargepoint "
                  r"\S+ starting as CP-ENV, CSMS ws://")
    assert run.interrupt() == 0
    mark = len(csms.received)
    again = launch("run", "--config", str(config), "--id", "CP-OPTION", env=env)
    assert csms.wait_for("BootNotification", timeout=WAIT_S, after=mark).cp_id == "CP-OPTION"
    assert again.interrupt() == 0


@pytest.mark.parametrize("args,env,said", [
    (["--url", "http://csms.example/ocpp"], {}, "chargepoint: --url: must be a ws:// or wss:// "
                                                "URL, got 'http://csms.example/ocpp'"),
    ([], {"CHARGEPOINT_ID": "my charger"}, "chargepoint: $CHARGEPOINT_ID: 1-48 characters"),
    (["--url", "wss://csms.example/ocpp"], {}, "chargepoint: --url: security profile 0 uses "
                                               "ws://; use profile 2 or 3 for wss://"),
])
@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_bad_url_or_id_stops_with_where_it_came_from(tmp_path, launch, command, args, env,
                                                       said):
    config = _config(tmp_path, _dead_url())
    cp = launch(command, "--config", str(config), *args, env=env)
    assert cp.proc.wait(timeout=WAIT_S) == 2
    assert said in cp.output()

