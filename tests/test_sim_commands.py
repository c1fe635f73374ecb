"""`chargepoint sim` against the real firmware process: answers after the firmware
reacted, JSON output, the link dropped and restored on demand, refusals that say why."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench._common import CP_ID, FirmwareProcess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fw(tmp_path, csms):
    proc = FirmwareProcess(tmp_path / "fw", csms.url).start()
    proc.wait_sim()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=10)
    yield proc
    assert proc.stop() == 0, proc.tail()


def sim(fw: FirmwareProcess, *words: str) -> subprocess.CompletedProcess:
    """`chargepoint sim --socket ... WORDS` as an operator types it."""
    return subprocess.run([sys.executable, "-m", "chargepoint", "sim", "--socket",
                           str(fw.sock), *words], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def test_unplug_reports_the_contactor_the_firmware_opened(fw, csms):
    fw.charge(csms)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", timeout=10)
    assert fw.sim("status")["connectors"]["1"]["contactor"] == "closed"
    after = fw.sim("unplug", "1")
    assert (after["pilot"], after["plugged"], after["contactor"]) == ("A", False, "open")
    done = sim(fw, "plug", "1")
    assert done.returncode == 0 and done.stdout.startswith("connector 1: pilot B, EV plugged in")


def test_json_on_every_reporting_command(fw, csms):
    status = sim(fw, "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["connectors"]["1"]["plugged"] is False
    assert shown["link"]["connected"] is True and shown["link"]["url"].endswith("/" + CP_ID)
    assert shown["loop"]["turns"] > 0
    plugged = sim(fw, "--json", "plug", "1")
    assert plugged.returncode == 0 and json.loads(plugged.stdout)["plugged"] is True
    tapped = sim(fw, "tap", "04A1B2C3", "--json")
    assert json.loads(tapped.stdout) == {"id_tag": "04A1B2C3"}
    charger = sim(fw, "fault", "temperature", "0", "--json")
    assert json.loads(charger.stdout) == {"faults": ["temperature"]}


def test_disconnect_holds_the_link_down_until_reconnect(fw, csms):
    start = fw.charge(csms)
    dropped = sim(fw, "disconnect")
    assert dropped.returncode == 0, dropped.stderr
    assert "held down by `chargepoint sim disconnect`" in dropped.stdout
    csms.wait_disconnected(CP_ID, timeout=10)
    fw.sim("unplug", "1")                           # the session ends offline
    shown = json.loads(sim(fw, "status", "--json").stdout)["link"]
    assert (shown["connected"], shown["held"]) == (False, True)
    assert csms.connection_count(CP_ID) == 1        # no attempt while held
    assert not csms.records("StopTransaction")
    mark = len(csms.received)
    back = sim(fw, "reconnect")
    assert back.returncode == 0 and "link to ws://" in back.stdout
    csms.wait_connected(CP_ID, timeout=10, count=2)
    stop = csms.wait_for("StopTransaction", timeout=10, after=mark)
    assert (stop["transactionId"], stop["reason"]) == (start.reply["transactionId"],
                                                      "EVDisconnected")
    assert "disconnected on request (chargepoint sim disconnect)" in fw.log.read_text()


def test_a_lock_fault_on_a_fixed_cable_is_refused_with_the_reason(fw):
    refused = sim(fw, "fault", "lock", "1")
    assert refused.returncode == 1
    assert "connector 1 has no connector lock (a fixed cable has none)" in refused.stderr
    assert fw.sim("status")["connectors"]["1"]["faults"] == []
