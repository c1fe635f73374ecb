"""OCTT TC_044_1 with the real process: an UpdateFirmware that really switches the running
firmware to a release built from this checkout by `chargepoint release build`; and the
same update refused by the new release's self-test, ending back on the old release with
InstallationFailed; and the demo updated from its own Central System."""
from __future__ import annotations

import pytest

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint.csms.operator import Operator
from tests import release_harness as harness
from tests.demo_process import Demo

NEXT = f"{__version__}.7"
FAILS_SELF_TEST = f"{__version__}.8"

pytestmark = pytest.mark.timeout(300)
CP = "CP-U1"


@pytest.fixture(scope="module")
def bundles(bundle_shelf):
    return {NEXT: bundle_shelf.get(NEXT),
            FAILS_SELF_TEST: bundle_shelf.get(FAILS_SELF_TEST, harness.SELF_TEST_FAILS)}


@pytest.fixture
def csms(csms):
    """conftest.py's loopback CSMS, with Heartbeats out of the way of a release's steps."""
    csms.boot_response = {"status": "Accepted", "interval": 300}
    return csms


def fsn(csms, after=0) -> list[str]:
    return [r["status"] for r in csms.records("FirmwareStatusNotification", after=after)]


def run(tmp_path, csms):
    state = tmp_path / "state"
    state.mkdir()
    return harness.HandRun(tmp_path, harness.write_config(tmp_path, csms.url, CP),
                           state).start(), state


def test_tc_044_1_the_update_switches_the_running_firmware_to_the_new_release(
        bundles, csms, tmp_path):
    firmware, state = run(tmp_path, csms)
    operator = Operator(csms, tmp_path / "operator", printer=lambda line: None)
    try:
        csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == __version__,
                      timeout=60)
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=30)
        mark = len(csms.received)
        operator.update_firmware(CP, bundles[NEXT])
        installed = csms.wait_for("FirmwareStatusNotification",
                                  lambda r: r["status"] == "Installed", after=mark,
                                  timeout=240)
        assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing", "Installed"]
        boot = csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == NEXT,
                             after=mark)
        installing = csms.wait_for("FirmwareStatusNotification",
                                   lambda r: r["status"] == "Installing", after=mark)
        assert installing.index < boot.index < installed.index
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                      and r["status"] == "Available", after=boot.index)
        # Committed by the new release itself: no trial left, the new one current.
        assert guard.read_trial(state) is None
        assert guard.current_version(state) == NEXT
        assert not csms.violations
    finally:
        operator.stop()
        firmware.stop()
        firmware.kill()
    assert "Traceback" not in firmware.text()


def test_a_release_that_fails_its_self_test_comes_back_as_installation_failed(
        bundles, csms, tmp_path):
    firmware, state = run(tmp_path, csms)
    operator = Operator(csms, tmp_path / "operator", printer=lambda line: None)
    try:
        csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == __version__,
                      timeout=60)
        mark = len(csms.received)
        operator.update_firmware(CP, bundles[FAILS_SELF_TEST])
        csms.wait_for("FirmwareStatusNotification",
                      lambda r: r["status"] == "InstallationFailed", after=mark, timeout=240)
        versions = [r["firmwareVersion"] for r in csms.records("BootNotification",
                                                                  after=mark)]
        assert versions == [FAILS_SELF_TEST, __version__]
        assert fsn(csms, mark) == ["Downloading", "Downloaded", "Installing",
                                   "InstallationFailed"]
        assert guard.current_version(state) == __version__
        rollback = guard.read_rollback(state)
        assert rollback.version == FAILS_SELF_TEST
        assert "fails on purpose" in rollback.reason
    finally:
        operator.stop()
        firmware.stop()
        firmware.kill()
    assert "self-test failed: the self-test of this release fails on purpose" in \
        firmware.text()


def test_the_demo_is_updated_from_its_own_central_system(bundles, tmp_path):
    """`chargepoint demo`, its operator typing `update-firmware BUNDLE`: the demo's firmware
    fetches the bundle from the demo's own file server, switches, and the demo's Central
    System (which stays) hears the new release boot and Installed."""
    env = harness.clean_env(XDG_RUNTIME_DIR=str(tmp_path))
    demo = Demo(["--heartbeat", "30", "--state-dir", str(tmp_path / "demo")], cwd=tmp_path,
                env=env)
    try:
        demo.wait_for("connector 1: Available", timeout=60)
        demo.type(f"update-firmware {bundles[NEXT]}")
        demo.wait_for("UpdateFirmware sent to CP-DEMO", timeout=60)
        demo.wait_for(f"firmware={NEXT}", timeout=240)
        demo.wait_for("Installed", timeout=60)
    finally:
        demo.interrupt(timeout=40)
    text = demo.text
    assert text.index("Installing") < text.index(f"firmware={NEXT}") < text.rindex("Installed")
    assert guard.current_version(tmp_path / "demo") == NEXT
