"""The firmware as a systemd service on a real Debian 12 machine (qemu): installed by the
guide, READY and STATUS, the hardened unit working, a charging session metered by Modbus
meters on a UART and on a USB serial adapter, clean stops and restarts, the watchdog, and
power cuts that lose the guest's unwritten data.

Every test uses the machine of tests/system/conftest.py and leaves the service running
with no transaction open. The journal and console of a failed run are in the machine's
work directory (printed at the end; tests/system/README.md).
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest

from tests.system.conftest import CP_ID, Machine, configure, vm_config

CLI = "/opt/chargepoint/venv/bin/chargepoint"
#: Journal lines that mean the sandbox got in the firmware's way.
SANDBOX_TROUBLE = re.compile(r"Permission denied|Operation not permitted|Read-only file system|"
                             r"status=\d+/(?!CONFIG)|Traceback|Failed to set up", re.I)


def sim(vm: Machine, *words: str) -> str:
    return vm.run(f"{CLI} sim {' '.join(words)}", timeout=60, check=True).stdout


def service(vm: Machine, *props: str) -> dict[str, str]:
    out = vm.run(f"systemctl show chargepoint -p {','.join(props)}", check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def energy(meter_value: dict) -> float:
    """The Energy.Active.Import.Register of one meterValue, in Wh."""
    for sampled in meter_value["sampledValue"]:
        if sampled.get("measurand", "Energy.Active.Import.Register") == \
                "Energy.Active.Import.Register":
            factor = 1000.0 if sampled.get("unit") == "kWh" else 1.0
            return float(sampled["value"]) * factor
    raise AssertionError(f"no energy register in {meter_value}")


def messages_of(csms, transaction_id: int, after: int = 0) -> list:
    """Everything received about one transaction, in arrival order."""
    found = []
    for rec in csms.received.snapshot()[after:]:
        if rec.cp_id != CP_ID:
            continue
        if rec.action == "StartTransaction" and rec.reply and \
                rec.reply.get("transactionId") == transaction_id:
            found.append(rec)
        elif rec.action in ("MeterValues", "StopTransaction") and \
                rec.payload.get("transactionId") == transaction_id:
            found.append(rec)
    return found


def assert_in_time_order(records: list) -> None:
    """A transaction's messages never go back in time (start, samples, stop)."""
    stamps = []
    for rec in records:
        if rec.action == "MeterValues":
            stamps += [(when(v["timestamp"]), rec.action) for v in rec.payload["meterValue"]]
        else:
            stamps.append((when(rec.payload["timestamp"]), rec.action))
    assert stamps == sorted(stamps, key=lambda s: s[0]), stamps


def start_session(vm: Machine, csms, connector: int = 1, tag: str = "VMTAG1"):
    """Plug, present a tag; the StartTransaction the CSMS accepted."""
    mark = len(csms.received)
    sim(vm, "plug", str(connector))
    sim(vm, "tap", tag)
    return csms.wait_for("StartTransaction", lambda r: r["connectorId"] == connector,
                         timeout=60, after=mark, cp_id=CP_ID)


def end_session(vm: Machine, csms, transaction_id: int, connector: int = 1):
    mark = len(csms.received)
    sim(vm, "unplug", str(connector))
    return csms.wait_for("StopTransaction", lambda r: r["transactionId"] == transaction_id,
                         timeout=60, after=mark, cp_id=CP_ID)


# --------------------------------------------------------------------------- install

def test_the_install_guide_works_on_debian_12(machine):
    guide = machine.guide.sections
    assert "OK" in guide["release"]                                   # sha256sum -c
    assert "No broken requirements found." in guide["release"]       # pip check
    assert re.search(r"uid=\d+\(chargepoint\)", guide["user"])
    assert "the firmware would start" in guide["preflight"]
    assert guide["service"].strip() == "" or "Created symlink" in guide["service"]
    assert guide["check"].splitlines()[0].split()[:3] == ["conn", "pilot", "offered"]


def test_the_service_is_ready_reports_its_status_and_runs_sandboxed(machine, csms):
    csms.wait_for("BootNotification", timeout=120, cp_id=CP_ID)
    state = service(machine, "Type", "ActiveState", "SubState", "StatusText", "NRestarts",
                    "WatchdogUSec")
    # Type=notify: "active" only after the firmware sent READY=1.
    assert state["Type"] == "notify" and state["ActiveState"] == "active", state
    assert state["StatusText"], state
    assert state["NRestarts"] == "0", state
    assert state["WatchdogUSec"] == "30s", state
    journal = machine.journal("-u", "chargepoint", "-b")
    trouble = [line for line in journal.splitlines() if SANDBOX_TROUBLE.search(line)]
    assert not trouble, "\n".join(trouble)
    security = machine.run("systemd-analyze security --no-pager chargepoint", check=True).stdout
    exposure = float(re.search(r"Overall exposure level for chargepoint.service: ([\d.]+)",
                               security)[1])
    print(f"systemd-analyze security in the guest: {exposure}")
    assert exposure <= 2.5, security


# --------------------------------------------------------------------------- metering

@pytest.mark.parametrize("connector, bus", [(1, "uart"), (2, "usb")])
def test_a_session_metered_over_a_serial_line(machine, csms, meters, connector, bus):
    """meterStart, MeterValues and meterStop are the register of the meter on the host,
    read through the guest's UART (connector 1) or its USB serial adapter (connector 2)."""
    _, meter = meters[bus]
    start_kwh = 1234.5 if bus == "uart" else 2345.6
    meter.set(import_kwh=start_kwh, power=7000.0)
    time.sleep(3)                                   # the firmware reads each meter every second
    start = start_session(machine, csms, connector)
    transaction_id = start.reply["transactionId"]
    assert start["meterStart"] == round(start_kwh * 1000)
    meter.set(import_kwh=start_kwh + 1.25)
    sample = csms.wait_for(
        "MeterValues", lambda r: r.get("transactionId") == transaction_id
        and energy(r["meterValue"][0]) == round((start_kwh + 1.25) * 1000), timeout=60,
        cp_id=CP_ID)
    assert sample["connectorId"] == connector
    stop = end_session(machine, csms, transaction_id, connector)
    assert stop["meterStop"] == round((start_kwh + 1.25) * 1000)
    assert_in_time_order(messages_of(csms, transaction_id))
    meter.set(power=0.0)
