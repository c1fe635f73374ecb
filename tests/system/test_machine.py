"""The firmware as a systemd service on a real Debian 12 machine (qemu): installed by the
guide, READY and STATUS, the hardened unit working, a charging session metered by Modbus
meters on a UART and on a USB serial adapter, clean stops and restarts, the watchdog, and
power cuts that lose the guest's unwritten data.

Every test uses the machine of tests/system/conftest.py and leaves the service running
with no transaction open. The journal and console of a failed run are in the machine's
work directory (docs/vm.md, "Running it").
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest

from tests.system.conftest import CP_ID, Machine

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


def grow(meter, kwh: float) -> float:
    """Raise the meter's register by `kwh` (a register never goes back: the firmware
    reports a meter that does as failed); returns the new register in kWh."""
    meter.kwh = round(meter.kwh + kwh, 3)
    meter.set(import_kwh=meter.kwh, power=7000.0)
    return meter.kwh


def wh(kwh: float) -> int:
    return round(kwh * 1000)


def start_session(vm: Machine, csms, connector: int = 1, tag: str = "VMTAG1"):
    """Plug, present a tag; the StartTransaction the CSMS accepted."""
    csms.wait_connected(CP_ID, timeout=120)
    deadline = time.monotonic() + 60
    while vm.run(f"{CLI} sim status", timeout=60).returncode:
        assert time.monotonic() < deadline, "the simulated charger never answered"
        time.sleep(1)
    mark = len(csms.received)
    sim(vm, "plug", str(connector))
    sim(vm, "tap", tag)
    start = csms.wait_for("StartTransaction", lambda r: r["connectorId"] == connector,
                          timeout=60, after=mark, cp_id=CP_ID)
    deadline = time.monotonic() + 10
    while start.reply is None:              # recorded as it arrives, answered just after
        assert time.monotonic() < deadline, "the CSMS never answered the StartTransaction"
        time.sleep(0.05)
    return start


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
    start_kwh = grow(meter, 0.5)
    time.sleep(3)                                   # the firmware reads each meter every second
    start = start_session(machine, csms, connector)
    transaction_id = start.reply["transactionId"]
    assert start["meterStart"] == wh(start_kwh)
    end_kwh = grow(meter, 1.25)
    sample = csms.wait_for(
        "MeterValues", lambda r: r.get("transactionId") == transaction_id
        and energy(r["meterValue"][0]) == wh(end_kwh), timeout=60, cp_id=CP_ID)
    assert sample["connectorId"] == connector
    stop = end_session(machine, csms, transaction_id, connector)
    assert stop["meterStop"] == wh(end_kwh)
    assert_in_time_order(messages_of(csms, transaction_id))


# --------------------------------------------------------------------------- stopping

def wait_service(vm: Machine, predicate, timeout: float, *props: str) -> dict[str, str]:
    """The unit's properties once `predicate` holds for them."""
    deadline = time.monotonic() + timeout
    while True:
        state = service(vm, "ActiveState", "SubState", "MainPID", "NRestarts", *props)
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"the service never got there within {timeout:.0f} s: {state}")
        time.sleep(1)


@pytest.mark.parametrize("command", ["restart", "stop"])
def test_a_clean_stop_delivers_stop_transaction_before_the_link_closes(machine, csms, meters,
                                                                        command):
    """systemctl stop/restart with the CSMS up: the StopTransaction (Reboot) reaches the
    CSMS on the link that was open, before the service is down (docs/delivery.md)."""
    _, meter = meters["uart"]
    grow(meter, 0.5)
    time.sleep(3)
    start = start_session(machine, csms)
    transaction_id = start.reply["transactionId"]
    connections = csms.connection_count(CP_ID)
    end_kwh = grow(meter, 0.5)
    time.sleep(3)
    machine.run(f"systemctl {command} chargepoint", timeout=120, check=True)
    # systemctl has returned: the old process is gone, and what it delivered is in.
    in_time = [r for r in messages_of(csms, transaction_id) if r.action == "StopTransaction"]
    if command == "stop":
        machine.run("systemctl start chargepoint", timeout=120, check=True)
    stop = csms.wait_for("StopTransaction", lambda r: r["transactionId"] == transaction_id,
                         timeout=120, cp_id=CP_ID)
    assert stop["reason"] == "Reboot" and stop["meterStop"] == wh(end_kwh)
    assert_in_time_order(messages_of(csms, transaction_id))
    assert in_time, (f"the StopTransaction reached the CSMS only after `systemctl {command}` "
                     f"had returned, on connection {csms.connection_count(CP_ID)} "
                     f"(the service's was {connections})")


def test_the_watchdog_restarts_a_stopped_main_loop(machine, csms, meters):
    """SIGSTOP: no WATCHDOG=1 any more; after WatchdogSec systemd kills the process and
    starts it again, and the open transaction ends with PowerLoss at the last reading that
    reached the disk (docs/delivery.md), dated after everything else of it."""
    _, meter = meters["uart"]
    grow(meter, 0.5)
    time.sleep(3)
    start = start_session(machine, csms)
    transaction_id = start.reply["transactionId"]
    end_kwh = grow(meter, 0.75)
    csms.wait_for("MeterValues", lambda r: r.get("transactionId") == transaction_id
                  and energy(r["meterValue"][0]) == wh(end_kwh), timeout=60, cp_id=CP_ID)
    before = service(machine, "MainPID", "NRestarts")
    stopped_at = time.monotonic()
    machine.run(f"kill -STOP {before['MainPID']}", check=True)
    after = wait_service(machine, lambda s: s["NRestarts"] != before["NRestarts"]
                         and s["ActiveState"] == "active" and s["MainPID"] not in ("0", before["MainPID"]),
                         timeout=150)
    took = time.monotonic() - stopped_at
    print(f"the watchdog restarted the service {took:.0f} s after SIGSTOP")
    machine.timings.setdefault("SIGSTOP to the restarted service", took)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    journal = machine.journal("-u", "chargepoint", "-b")
    assert "Watchdog timeout" in journal, journal[-3000:]
    stop = csms.wait_for("StopTransaction", lambda r: r["transactionId"] == transaction_id,
                         timeout=120, cp_id=CP_ID)
    assert stop["reason"] == "PowerLoss" and stop["meterStop"] == wh(end_kwh)
    assert_in_time_order(messages_of(csms, transaction_id))


# --------------------------------------------------------------------------- Hard Reset

def test_a_hard_reset_reboots_the_machine_through_the_polkit_rule(machine, csms):
    """Reset Hard: the service's user runs `systemctl reboot`, which logind allows only
    through the guide's polkit rule; the machine reboots and the firmware comes back."""
    csms.wait_connected(CP_ID, timeout=120)
    allowed = machine.run("sudo -u chargepoint sh -c 'pkcheck --action-id "
                          "org.freedesktop.login1.reboot --process $$' && echo allowed")
    assert "allowed" in allowed.stdout, allowed
    boot = machine.boot_id()
    mark = len(csms.received)
    assert csms.call(CP_ID, "Reset", {"type": "Hard"}, timeout=30) == {"status": "Accepted"}
    started = time.monotonic()
    deadline = started + 300
    while True:
        try:
            if machine.boot_id() != boot:
                break
        except Exception:                   # the agent is away while the machine reboots
            pass
        assert time.monotonic() < deadline, \
            "the machine did not reboot:\n" + machine.journal("-u", "chargepoint", "-b")[-3000:]
        time.sleep(2)
    machine.timings.setdefault("reboot by Hard Reset", time.monotonic() - started)
    csms.wait_for("BootNotification", timeout=180, after=mark, cp_id=CP_ID)
    previous = machine.journal("-b", "-1")
    assert "running systemctl reboot (attempt 1 of" in previous, previous[-3000:]
    # The reboot went through at once: the firmware neither restarted itself meanwhile
    # nor held the shutdown up until systemd killed it.
    assert "restarting the firmware" not in previous, previous[-3000:]
    assert "stop-sigterm' timed out" not in previous, previous[-3000:]


# --------------------------------------------------------------------------- power cuts

QUEUED = """
import json, sqlite3
con = sqlite3.connect("file:/var/lib/chargepoint/chargepoint.db?mode=ro", uri=True)
print(json.dumps([[a, json.loads(p)] for a, p in
                  con.execute("SELECT action, payload FROM outbox ORDER BY seq")]))
"""


def queued(vm: Machine) -> list:
    """[action, payload] of every message in the firmware's queue, as committed."""
    return json.loads(vm.run("python3 -", input=QUEUED, check=True).stdout)


def queued_energies(vm: Machine) -> list[float]:
    return [energy(p["meterValue"][0]) for a, p in queued(vm) if a == "MeterValues"]


def wait_queued(vm: Machine, wh: float, timeout: float = 60) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        found = queued_energies(vm)
        if wh in found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no MeterValues with {wh} Wh reached the queue: {found}")
        time.sleep(1)


@pytest.mark.parametrize("moment", ["after-the-start", "after-samples", "while-sampling"])
def test_a_power_cut_mid_transaction_loses_nothing(machine, csms, meters, moment):
    """qemu killed with the CSMS away, the disk in cache=writeback: what the guest had not
    written is lost. After the next boot the queued MeterValues and the StopTransaction
    (PowerLoss) arrive in order, billed as the meter grew up to the last reading on disk."""
    _, meter = meters["uart"]
    register = grow(meter, 0.5)
    time.sleep(3)
    start = start_session(machine, csms)
    transaction_id = start.reply["transactionId"]
    assert start["meterStart"] == wh(register)
    mark = len(csms.received)
    csms.stop(graceful=False)
    on_disk = []
    if moment in ("after-samples", "while-sampling"):
        for _ in range(2):
            register = grow(meter, 0.5)
            on_disk = wait_queued(machine, wh(register))
    if moment == "while-sampling":
        register = grow(meter, 0.5)
        time.sleep(5)                   # about one sample interval: the sample may be written
    machine.power_cut()
    csms.start()
    machine.timings.setdefault("boot after a power cut", machine.boot())
    stop = csms.wait_for("StopTransaction", lambda r: r["transactionId"] == transaction_id,
                         timeout=180, after=mark, cp_id=CP_ID)
    assert stop["reason"] == "PowerLoss"
    delivered = [energy(v) for r in messages_of(csms, transaction_id, after=mark)
                 if r.action == "MeterValues" for v in r.payload["meterValue"]]
    # Everything that was on the disk before the cut arrives, once and in order.
    assert delivered[:len(on_disk)] == on_disk, (delivered, on_disk)
    assert delivered == sorted(delivered)
    last = delivered[-1] if delivered else start["meterStart"]
    assert stop["meterStop"] == last
    if moment == "while-sampling":
        # The last step reached the disk or not; never more than one sample lost.
        assert stop["meterStop"] in (wh(register - 0.5), wh(register))
    else:
        assert stop["meterStop"] == wh(register)                # billed = the meter's growth
    assert_in_time_order(messages_of(csms, transaction_id))
    state = service(machine, "ActiveState", "NRestarts")
    assert state["ActiveState"] == "active"
