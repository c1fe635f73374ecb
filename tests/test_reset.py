"""Reset (TC_013-016) with the real `chargepoint run` process against the loopback CSMS.

A reset ends the process (soft: `os.execv` of itself; hard: the configured reboot
command, after which the firmware waits for the system's stop, SIGTERM, as a real
reboot sends it; these tests send it and start the charger again, as the boot would),
so only a real subprocess shows that the charger comes back and registers again, and
that nothing of a stopped transaction is lost on the way.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hal.sim_control import send_command
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[1]
CP_ID = "CP-RESET"
TAG = "04A1B2C3"
WAIT_S = 20  # every wait is bounded; a healthy run needs a fraction of this


def _toml_list(items):
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


class Charger:
    """`chargepoint run` in its own process group, its output collected line by line."""

    def __init__(self, tmp_path: Path, csms_url: str, reboot_command, ocpp=None, system=None):
        self.tmp = tmp_path
        self.sim_socket = str(tmp_path / "sim.sock")
        ocpp_lines = "\n".join(f"{key} = {value}" for key, value in
                               {"WebSocketPingInterval": 0, **(ocpp or {})}.items())
        system_lines = "\n".join(f"{key} = {value}" for key, value in (system or {}).items())
        self.config = tmp_path / "config.toml"
        self.config.write_text(f"""
[csms]
url = "{csms_url}"
charge_point_id = "{CP_ID}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
response_timeout_s = 5

[storage]
path = "{tmp_path / 'cp.db'}"

[log]
level = "info"

[system]
reboot_command = {_toml_list(reboot_command)}
sim_socket = "{self.sim_socket}"
{system_lines}

[ocpp]
{ocpp_lines}

[[connectors]]
id = 1
fixed_cable = true
meter = {{ type = "sim" }}
contactor = {{ type = "sim" }}
pilot = {{ type = "sim" }}
indicator = {{ type = "sim" }}

[[readers]]
type = "sim"
""")
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = None

    def start(self) -> "Charger":
        env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargepoint", "run", "--config", str(self.config)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def output(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def count(self, text: str) -> int:
        with self._seen:
            return sum(text in line for line in self.lines)

    def wait_output(self, text: str, times: int = 1, timeout: float = WAIT_S) -> None:
        with self._seen:
            ok = self._seen.wait_for(
                lambda: sum(text in line for line in self.lines) >= times, timeout)
        assert ok, f"{text!r} not seen {times} time(s) in the output:\n{self.output()}"

    def sim(self, cmd: str, *args) -> dict:
        reply = send_command(self.sim_socket, cmd, list(args))
        assert reply["ok"], reply
        return reply["result"]

    def stopped_by_the_system(self) -> int:
        """SIGTERM, as systemd sends it when the reboot stops the service; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT_S)

    def kill(self) -> None:
        """Teardown: end the process group this test started (the charger and any child)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        finally:
            self._reader.join(timeout=5)  # EOF once the process is gone
            if self.proc.stdout is not None and not self._reader.is_alive():
                self.proc.stdout.close()


@pytest.fixture
def charger(tmp_path, csms):
    """Factory: `charger(reboot_command, ocpp=None, system=None)` -> a running, registered
    Charger."""
    started = []

    def make(reboot_command, ocpp=None, system=None):
        cp = Charger(tmp_path, csms.url, reboot_command, ocpp, system)
        started.append(cp)
        cp.start()
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=WAIT_S)
        csms.wait_connected(CP_ID, timeout=WAIT_S)
        return cp

    yield make
    for cp in started:
        cp.kill()


def _recorder(path: Path) -> list[str]:
    """A reboot command that only notes it ran."""
    return ["sh", "-c", f"echo reboot >> '{path}'"]


def _boots(csms) -> list:
    return csms.records("BootNotification", cp_id=CP_ID)


def _wait_second_registration(csms, after: int, status: str = "Available"):
    """The restarted firmware connects anew, boots and reports its connectors."""
    boot = csms.wait_for("BootNotification", timeout=WAIT_S, after=after)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1 and r["status"] == status,
                  timeout=WAIT_S, after=boot.index)
    assert csms.connection_count(CP_ID) == 2
    assert len(_boots(csms)) == 2
    return boot


def _start_transaction(csms, cp: Charger) -> int:
    """Plug in and present a card through the simulator's control socket: Charging."""
    cp.sim("plug", "1")
    cp.sim("tap", TAG)
    start = csms.wait_for("StartTransaction", timeout=WAIT_S)
    assert start["idTag"] == TAG
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", timeout=WAIT_S)
    assert wait_until(lambda: start.reply is not None)      # the CSMS's answer is recorded
    return start.reply["transactionId"]


def _rebooted(csms, cp: Charger, mark: int) -> None:
    """After a Hard Reset's reboot command succeeded: the firmware waits for the system's
    stop instead of starting again; the stop ends it at once (exit 0); then the charger
    starts as it would after the reboot."""
    cp.wait_output("waiting up to 300 s for the system to stop this service")
    assert cp.proc.poll() is None
    assert not csms.records("BootNotification", after=mark), "it must not boot before the stop"
    assert cp.stopped_by_the_system() == 0
    assert cp.count("stopped for the reboot") == 1
    assert cp.count("restarting the firmware") == 0
    cp.start()


def _reset_without_transaction(csms, cp: Charger, kind: str) -> None:
    """The official steps: Inoperative first, reset, the connector is still Unavailable
    after the boot (the availability is persistent), then Operative again."""
    pid = cp.proc.pid
    assert csms.call(CP_ID, "ChangeAvailability",
                     {"connectorId": 1, "type": "Inoperative"}) == {"status": "Accepted"}
    csms.wait_for("StatusNotification",
                  lambda r: r["connectorId"] == 1 and r["status"] == "Unavailable", timeout=WAIT_S)
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": kind}) == {"status": "Accepted"}
    if kind == "Hard":
        _rebooted(csms, cp, mark)
    boot = _wait_second_registration(csms, mark, status="Unavailable")
    assert csms.call(CP_ID, "ChangeAvailability",
                     {"connectorId": 1, "type": "Operative"}) == {"status": "Accepted"}
    csms.wait_for("StatusNotification",
                  lambda r: r["connectorId"] == 1 and r["status"] == "Available", timeout=WAIT_S,
                  after=boot.index)
    if kind == "Soft":
        # os.execv keeps the process: same pid, and it is still running.
        assert cp.proc.poll() is None and cp.proc.pid == pid
        assert cp.count("restarting the firmware (soft reset)") == 1
    assert not csms.records("StopTransaction")
    csms.assert_no_violations()


def test_tc013_hard_reset_without_transaction_runs_the_reboot_command_and_boots(
        tmp_path, csms, charger):
    marker = tmp_path / "rebooted"
    cp = charger(_recorder(marker))
    _reset_without_transaction(csms, cp, "Hard")
    assert marker.read_text() == "reboot\n"
    assert cp.count("hard reset: running sh -c") == 1


def test_tc014_soft_reset_without_transaction_restarts_the_process(tmp_path, csms, charger):
    marker = tmp_path / "rebooted"
    cp = charger(_recorder(marker))
    _reset_without_transaction(csms, cp, "Soft")
    assert not marker.exists(), "a soft reset must not reboot the controller"
    assert cp.count("starting as CP-RESET") == 2


def _reset_during_transaction(tmp_path, csms, charger, kind: str):
    marker = tmp_path / "rebooted"
    rebooted_at_stop: list[bool] = []

    def on_stop(cp_id, payload):
        rebooted_at_stop.append(marker.exists())
        return None  # the default answer

    csms.handlers["StopTransaction"] = on_stop
    cp = charger(_recorder(marker))
    tx_id = _start_transaction(csms, cp)
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": kind}) == {"status": "Accepted"}
    stop = csms.wait_for("StopTransaction", timeout=WAIT_S, after=mark)
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == f"{kind}Reset"
    if kind == "Hard":
        _rebooted(csms, cp, mark)
    boot = _wait_second_registration(csms, mark)
    assert stop.index < boot.index, "StopTransaction must reach the CSMS before the restart"
    assert rebooted_at_stop == [False], "the reboot ran before StopTransaction was delivered"
    finishing = csms.records("StatusNotification", after=mark)
    assert any(r["connectorId"] == 1 and r["status"] == "Finishing" and r.index < boot.index
               for r in finishing), [(r["connectorId"], r["status"]) for r in finishing]
    # Stopped once: no second StopTransaction (PowerLoss, Reboot) after the restart.
    time.sleep(0.5)
    assert len(csms.records("StopTransaction")) == 1
    csms.assert_no_violations()
    return cp, marker


def test_tc015_hard_reset_during_transaction_stops_it_then_reboots(tmp_path, csms, charger):
    cp, marker = _reset_during_transaction(tmp_path, csms, charger, "Hard")
    assert marker.read_text() == "reboot\n"


def test_tc016_soft_reset_during_transaction_stops_it_before_the_new_boot(
        tmp_path, csms, charger):
    cp, marker = _reset_during_transaction(tmp_path, csms, charger, "Soft")
    assert not marker.exists()
    assert cp.count("restarting the firmware (soft reset)") == 1


def test_soft_reset_with_unconfirmed_stop_delivers_it_after_the_restart(tmp_path, csms,
                                                                        charger):
    """A CSMS that never confirms the StopTransaction does not block the reset for longer
    than DRAIN_WAIT_S, and the stop, committed to disk, is delivered after the restart with
    its reason intact, exactly once."""
    from chargepoint.csms.server import NO_RESPONSE
    from chargepoint.handlers.reset import DRAIN_WAIT_S

    csms.handlers["StopTransaction"] = lambda cp_id, payload: (
        NO_RESPONSE if len(_boots(csms)) < 2 else None)
    cp = charger(["true"], ocpp={"TransactionMessageRetryInterval": 1})
    tx_id = _start_transaction(csms, cp)
    mark = len(csms.received)
    asked = time.monotonic()
    assert csms.call(CP_ID, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    boot = _wait_second_registration(csms, mark)
    assert boot.time - asked < DRAIN_WAIT_S + 5
    stops = csms.records("StopTransaction", after=mark)
    assert stops[0].index < boot.index and stops[0].reply is None
    delivered = csms.wait_for("StopTransaction", lambda r: r.index > boot.index,
                              timeout=WAIT_S, after=mark)
    assert (delivered["transactionId"], delivered["reason"]) == (tx_id, "SoftReset")
    assert delivered["meterStop"] == stops[0]["meterStop"]
    time.sleep(0.5)
    assert [r.index for r in csms.records("StopTransaction", after=boot.index)] == \
        [delivered.index]
    csms.assert_no_violations()


def test_a_stop_that_arrives_while_the_reboot_command_runs_ends_the_process(
        tmp_path, csms, charger):
    """`systemctl reboot` returns after systemd has begun stopping services: the SIGTERM
    may reach the firmware while the command still runs. It is kept, and the firmware
    exits once the command returns, without starting again."""
    marker = tmp_path / "rebooted"
    cp = charger(["sh", "-c", f"echo reboot >> '{marker}'; kill -TERM $PPID; sleep 0.3"])
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    assert cp.proc.wait(timeout=WAIT_S) == 0
    assert marker.read_text() == "reboot\n"
    assert cp.count("received SIGTERM; stopping") == 1
    assert cp.count("stopped for the reboot") == 1
    assert cp.count("restarting the firmware") == 0
    assert not csms.records("BootNotification", after=mark)


def test_without_the_systems_stop_after_the_reboot_command_it_restarts_in_place(
        tmp_path, csms, charger):
    """A reboot command that succeeded but brought no stop within `reboot_wait_s` (a
    reboot held up, a command that only pretends): the charger does not stay down, it
    restarts itself and registers again."""
    marker = tmp_path / "rebooted"
    cp = charger(_recorder(marker), system={"reboot_wait_s": 1})
    pid = cp.proc.pid
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    _wait_second_registration(csms, mark)
    assert cp.proc.poll() is None and cp.proc.pid == pid
    assert marker.read_text() == "reboot\n"
    assert cp.count("the system did not stop this service within 1 s of the reboot "
                    "command ([system] reboot_wait_s); restarting the process instead") == 1
    assert cp.count("restarting the firmware (hard reset)") == 1


def test_failing_reboot_command_is_tried_reset_retries_more_times_then_restarts(
        tmp_path, csms, charger):
    """ResetRetries as the CSMS set it (not the config.toml value) counts the retries; when
    every attempt fails the firmware at least restarts itself."""
    counter = tmp_path / "attempts"
    cp = charger(["sh", "-c", f"echo attempt >> '{counter}'; exit 1"], ocpp={"ResetRetries": 5})
    assert csms.call(CP_ID, "ChangeConfiguration",
                     {"key": "ResetRetries", "value": "2"}) == {"status": "Accepted"}
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    _wait_second_registration(csms, mark)
    assert counter.read_text().splitlines() == ["attempt"] * 3
    for attempt in (1, 2, 3):
        assert cp.count(f"(attempt {attempt} of 3)") == 1
    assert cp.count("reboot command failed:") == 3
    assert cp.count("the reboot command failed 3 times; restarting the process instead") == 1
    # The CSMS's value survived the restart.
    got = csms.call(CP_ID, "GetConfiguration", {"key": ["ResetRetries"]})
    assert got["configurationKey"][0]["value"] == "2"
