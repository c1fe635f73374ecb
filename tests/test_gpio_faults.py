"""A GPIO chip the firmware may not open (a plain Debian without the udev rule): the charger
starts, reaches the CSMS and reports the connector Faulted, naming the chip; it never closes
the contactor nor starts a session on it; once the chip opens (the udev rule applied later)
the connector is Available, without a restart.

The chip is gpiozero's mock pins behind a file whose mode says who may open it, loaded by
name as gpiozero loads any pin factory (tests/closed_chip.py): the firmware's own code,
from the pin factory up, is what runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero import Device

from chargepoint.csms.server import LocalCsms
from hal.gpio_reopen import ReopeningContactor
from hal.gpio_settings import FIX_PERMISSION
from tests.closed_chip import CHIP_ENV, install, make_chip
from tests.harness import base_connector, statuses, wait_status

ROOT = Path(__file__).resolve().parents[1]
CP = "CP-1"


def gpio_connector() -> dict:
    return base_connector(contactor={"type": "gpio", "pin": 17})


def test_a_contactor_on_a_chip_it_cannot_open_is_faulted_refuses_a_session_then_recovers(
        firmware, csms, chip):
    fw = firmware({"connectors": [gpio_connector()], "gpio": {"retry_s": 1}})
    fault = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                          and r["status"] == "Faulted", timeout=10)
    assert fault["errorCode"] == "PowerSwitchFailure"
    assert fault["info"] == f"cannot open {chip}"[:50]
    assert fault["vendorErrorCode"] == FIX_PERMISSION
    contactor = fw.runtime.hardware.connectors[1].contactor
    assert isinstance(contactor, ReopeningContactor)

    fw.sim.plug(1)
    assert csms.call(CP, "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 1}) == \
        {"status": "Rejected"}
    fw.sim.tap("TAG1")
    fw.advance(5)
    assert csms.records("StartTransaction") == []
    assert not contactor.commanded_closed
    fw.sim.unplug(1)
    fw.advance(1)

    mark = len(csms.records())
    chip.chmod(0o660)                       # the udev rule, applied while it runs
    wait_status(csms, "Available", after=mark)
    assert "Faulted" not in statuses(csms, after=mark)
    assert contactor.device is not None and not Device.pin_factory.pin(17).state


def test_an_s0_meter_on_a_chip_it_cannot_open_is_a_meter_failure_then_recovers(
        firmware, csms, chip, tmp_path):
    fw = firmware({"connectors": [base_connector(meter={
        "type": "s0", "pin": 26, "state_file": str(tmp_path / "s0.json")})],
        "gpio": {"retry_s": 1}})
    fault = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                          and r["status"] == "Faulted", timeout=10)
    assert fault["errorCode"] == "PowerMeterFailure"
    assert fault["info"].startswith(f"cannot open {chip}"[:40])
    fw.sim.plug(1)
    fw.sim.tap("TAG1")
    fw.advance(0.5)
    assert csms.records("StartTransaction") == []
    fw.sim.unplug(1)

    mark = len(csms.records())
    chip.chmod(0o660)                       # the udev rule, applied while it runs
    fw.advance(2)
    wait_status(csms, "Available", after=mark)
    assert "Faulted" not in statuses(csms, after=mark)


# --------------------------------------------------------------------------- the process
CONFIG = """\
[csms]
url = "{url}"
charge_point_id = "{cp}"
reconnect_min_s = 0.05
reconnect_max_s = 0.2

[storage]
path = "{db}"

[system]
sim_socket = "{sock}"

[gpio]
retry_s = 1

[[connectors]]
id = 1

[connectors.meter]
type = "sim"

[connectors.contactor]
type = "gpio"
pin = 17

[connectors.pilot]
type = "sim"

[connectors.indicator]
type = "gpio"
pin = 5
"""


@pytest.fixture
def process_env(tmp_path):
    chip = make_chip(tmp_path / "gpiochip0")
    site = install(tmp_path / "site")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(GPIOZERO_PIN_FACTORY="closedchip", PYTHONPATH=f"{site}{os.pathsep}{ROOT}",
               PYTHONUNBUFFERED="1", **{CHIP_ENV: str(chip)})
    return chip, env


def test_the_firmware_starts_on_a_chip_it_cannot_open_and_check_says_it_is_not_well(
        tmp_path, process_env):
    chip, env = process_env
    csms = LocalCsms(host="127.0.0.1", port=0)
    csms.start()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url=csms.url, cp=CP, db=tmp_path / "cp.db",
                                    sock=tmp_path / "sim.sock"))
    check = subprocess.run([sys.executable, "-m", "chargepoint", "check", "--config",
                            str(config)], cwd="/", env=env, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 78, check.stdout + check.stderr
    [fault] = [line for line in check.stdout.splitlines() if line.startswith("fault: ")]
    assert f"Permission denied: '{chip}'" in fault and "reports the connectors" in fault
    assert "the firmware would start, but not in a good state: 1 fault" in check.stdout

    log = tmp_path / "firmware.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "run", "--config",
                                 str(config)], cwd="/", env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        fault = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                              and r["status"] == "Faulted", timeout=30, cp_id=CP)
        # The contactor and the light each report theirs; the connector shows the one that
        # says most (OtherError says least).
        assert fault["errorCode"] == "PowerSwitchFailure", fault
        assert fault["info"] == f"cannot open {chip}"[:50]
        text = log.read_text()
        told = [line for line in text.splitlines() if f"Permission denied: '{chip}'" in line]
        assert len(told) == 1, text                # one clear line for the chip
        assert "connector 1 contactor: " in told[0] and "tried again every 1 s" in told[0]

        mark = len(csms.records())
        chip.chmod(0o660)
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                      and r["status"] == "Available", timeout=30, after=mark, cp_id=CP)
        assert proc.poll() is None                  # the same process: no restart
        assert "Traceback" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        csms.stop(graceful=False)
    assert proc.returncode == 0, log.read_text()


def test_check_counts_an_s0_meter_and_a_pwm_adc_pilot_on_a_closed_chip_as_faults(
        tmp_path, process_env):
    """Like a contactor, an S0 meter and a pwm_adc pilot start as connector faults on a chip
    they cannot open: `check` says so with a `fault:` line, not an `error:`."""
    chip, env = process_env
    config = tmp_path / "config.toml"
    text = CONFIG.format(url="ws://127.0.0.1:9/ocpp", cp=CP, db=tmp_path / "cp.db",
                         sock=tmp_path / "sim.sock")
    text = text.replace('[connectors.meter]\ntype = "sim"',
                        f'[connectors.meter]\ntype = "s0"\npin = 26\n'
                        f'state_file = "{tmp_path / "s0.json"}"')
    text = text.replace('[connectors.contactor]\ntype = "gpio"\npin = 17',
                        '[connectors.contactor]\ntype = "sim"')
    text = text.replace('[connectors.pilot]\ntype = "sim"',
                        f'[connectors.pilot]\ntype = "pwm_adc"\nsysfs_root = "{tmp_path}"')
    text = text.replace('[connectors.indicator]\ntype = "gpio"\npin = 5\n', '')
    config.write_text(text)
    check = subprocess.run([sys.executable, "-m", "chargepoint", "check", "--config",
                            str(config)], cwd="/", env=env, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 78, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert not [line for line in lines if line.startswith("error: ")], check.stdout
    [fault] = [line for line in lines if line.startswith("fault: ")]
    assert "connectors[id=1].meter (and 1 more)" in fault and f"'{chip}'" in fault
    assert "the firmware would start, but not in a good state: 1 fault" in check.stdout
