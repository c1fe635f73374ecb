"""A/B releases with the real processes: a bundle of another version built as `chargepoint
release build` builds it, installed offline beside the running release, switched to,
tried, committed, or rolled back without a person, by hand and under the unit.

Bundles are built once per module from copies of this checkout (tests/release_harness.py):
NEXT works, BROKEN cannot import its runtime, HANGS stops its main loop after READY=1.
The firmware boots against the bundled loopback CSMS, whose BootNotification tells
which release runs (firmwareVersion).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint import releases
from chargepoint.csms.server import LocalCsms
from tests.harness import wait_until
from tests.release_harness import (BROKEN_IMPORT, HANG, ROOT, SELF_TEST_FAILS, HandRun,
                                   ServiceStandIn, accept_only, clean_env, write_config)

NEXT = f"{__version__}.1"          # the same in tests/test_bundles.py, test_release_kills.py
BROKEN = f"{__version__}.2"
HANGS = f"{__version__}.3"
FAILS = f"{__version__}.4"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bundles(bundle_shelf):
    return {NEXT: bundle_shelf.get(NEXT), BROKEN: bundle_shelf.get(BROKEN, BROKEN_IMPORT),
            HANGS: bundle_shelf.get(HANGS, HANG)}


@pytest.fixture(scope="module")
def installed(bundles, tmp_path_factory):
    """A state directory with the three releases installed, copied for each test."""
    state = tmp_path_factory.mktemp("installed") / "state"
    for bundle in bundles.values():
        releases.install_bundle(bundle, state)
    return state


@pytest.fixture
def csms():
    server = LocalCsms(host="127.0.0.1", port=0)
    server.boot_response = accept_only(__version__)    # the trials here are driven by hand
    server.start()
    yield server
    server.stop(graceful=False)


def state_with_releases(installed: Path, tmp_path: Path) -> Path:
    """This checkout's environment registered as the current release, the others
    installed beside it (a copy of the installed ones, its scripts pointed at itself)."""
    state = tmp_path / "state"
    shutil.copytree(installed, state, symlinks=True)
    for release in (state / "releases").iterdir():
        for script in (release / "bin").iterdir():            # as if installed right there
            if script.is_file() and not script.is_symlink() and script.read_bytes()[:2] == b"#!":
                script.write_text(script.read_text().replace(str(installed), str(state), 1))
    assert guard.adopt(state, sys.prefix) == __version__
    return state


def boot_of(csms, version: str, timeout: float = 60.0, after: int = 0):
    return csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == version,
                         timeout=timeout, after=after)


POLICY = guard.Policy(trial_s=120, trial_starts=2, keep=3, watchdog_s=3)


# ------------------------------------------------------------------------------ by hand

def reset_into_trial(csms, cp_id: str, state, version: str, policy=None) -> int:
    """Put `version` on trial and Soft Reset the running firmware into it: how many frames
    the CSMS had before the reset."""
    releases.start_trial(version, state, policy or POLICY)
    mark = len(csms.received)
    assert csms.call(cp_id, "Reset", {"type": "Soft"})["status"] == "Accepted"
    return mark


def test_a_run_by_hand_switches_to_the_new_release_which_is_committed(installed, csms,
                                                                      tmp_path):
    state = state_with_releases(installed, tmp_path)
    firmware = HandRun(tmp_path, write_config(tmp_path, csms.url, "CP-R1"), state).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R1", state, NEXT)
        boot_of(csms, NEXT, after=mark)
        record = guard.read_trial(state)
        assert record.version == NEXT and record.previous == __version__
        assert record.starts == 1                    # the supervisor counted its launch
        assert guard.commit(state, NEXT) is not None
        assert guard.read_trial(state) is None and guard.current_version(state) == NEXT
        assert firmware.stop() == 0
    finally:
        firmware.kill()
    log = firmware.text()
    assert f"release-guard: release {NEXT} on trial: start 1 of 2" in log
    assert "Traceback" not in log


# ------------------------------------------------------------------------------ the unit

def test_under_the_unit_a_release_that_cannot_import_is_rolled_back(installed, csms,
                                                                    tmp_path):
    state = state_with_releases(installed, tmp_path)
    config = write_config(tmp_path, csms.url, "CP-R2")
    service = ServiceStandIn(tmp_path, config, state).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R2", state, BROKEN)
        boot_of(csms, __version__, after=mark, timeout=90)
        back = releases.trial(state)
        assert not back.on_trial and guard.current_version(state) == __version__
        assert back.last_rollback.version == BROKEN
        assert "did not pass its trial in 2 starts" in back.last_rollback.reason
    finally:
        service.stop()
    text = service.text()
    assert "broken release" in text
    assert f"release {BROKEN} rolled back to {__version__}" in text


def test_under_the_unit_a_release_that_hangs_is_rolled_back(installed, csms, tmp_path):
    state = state_with_releases(installed, tmp_path)
    config = write_config(tmp_path, csms.url, "CP-R3")
    service = ServiceStandIn(tmp_path, config, state, watchdog_s=3).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R3", state, HANGS)
        boot_of(csms, __version__, after=mark, timeout=120)
        back = releases.trial(state)
        assert back.last_rollback.version == HANGS
    finally:
        service.stop()
    assert [how for _, how in service.ends].count("watchdog") >= 2


def test_by_hand_a_release_that_cannot_import_is_rolled_back_by_the_supervisor(
        installed, csms, tmp_path):
    state = state_with_releases(installed, tmp_path)
    firmware = HandRun(tmp_path, write_config(tmp_path, csms.url, "CP-R4"), state).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R4", state, BROKEN)
        boot_of(csms, __version__, after=mark, timeout=90)
        assert releases.trial(state).last_rollback.version == BROKEN
        assert guard.current_version(state) == __version__
        assert firmware.stop() == 0                       # the supervisor stops its child
    finally:
        firmware.kill()
    log = firmware.text()
    assert log.count("ImportError: broken release") == 2      # two starts, then the rollback
    assert f"release {BROKEN} rolled back to {__version__}: it did not pass its trial in " \
           "2 starts" in log


def test_by_hand_a_release_that_hangs_is_killed_and_rolled_back(installed, csms, tmp_path):
    state = state_with_releases(installed, tmp_path)
    firmware = HandRun(tmp_path, write_config(tmp_path, csms.url, "CP-R5"), state).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R5", state, HANGS)
        boot_of(csms, __version__, after=mark, timeout=120)
        assert releases.trial(state).last_rollback.version == HANGS
    finally:
        firmware.kill()
    assert firmware.text().count(f"release {HANGS} on trial did not feed the watchdog for "
                                 "3 s") == 2


@pytest.mark.parametrize("how", ["unit", "hand"])
def test_a_release_that_never_passes_its_trial_is_rolled_back_at_the_deadline(
        installed, csms, tmp_path, how):
    """NEXT runs and reaches the CSMS, but nothing commits it (its self-test never
    passes): after trial_s it is rolled back, in the process itself under the unit, by
    the supervisor (and the process) by hand."""
    state = state_with_releases(installed, tmp_path)
    config = write_config(tmp_path, csms.url, "CP-R6")
    runner = (ServiceStandIn(tmp_path, config, state) if how == "unit"
              else HandRun(tmp_path, config, state)).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R6", state, NEXT, guard.Policy(trial_s=4, trial_starts=3))
        boot_of(csms, NEXT, after=mark)
        back = boot_of(csms, __version__, after=mark, timeout=60)
        rolled = releases.trial(state).last_rollback
        assert rolled.version == NEXT and "did not pass its trial within 4 s" in rolled.reason
        assert back.index > mark
    finally:
        runner.stop() if how == "unit" else runner.kill()


def test_a_release_the_firmware_rolls_back_itself_comes_back_to_the_previous(
        installed, csms, tmp_path):
    """What a failed self-test does: `releases.rollback` with the reason, then a restart."""
    state = state_with_releases(installed, tmp_path)
    firmware = HandRun(tmp_path, write_config(tmp_path, csms.url, "CP-R7"), state).start()
    try:
        boot_of(csms, __version__)
        mark = reset_into_trial(csms, "CP-R7", state, NEXT)
        boot_of(csms, NEXT, after=mark)
        releases.rollback(state, "self-test failed: the database does not open")
        mark = len(csms.received)
        csms.call("CP-R7", "Reset", {"type": "Soft"})
        boot_of(csms, __version__, after=mark)
        found = releases.trial(state)
        assert not found.on_trial and found.last_rollback.version == NEXT
        assert found.last_rollback.reason == "self-test failed: the database does not open"
        assert firmware.stop() == 0
    finally:
        firmware.kill()


def test_a_run_by_hand_after_a_power_cut_resumes_the_trial(installed, csms, tmp_path):
    state = state_with_releases(installed, tmp_path)
    config = write_config(tmp_path, csms.url, "CP-R8")
    firmware = HandRun(tmp_path, config, state).start()
    try:
        boot_of(csms, __version__)
        releases.start_trial(NEXT, state, POLICY)
        csms.call("CP-R8", "Reset", {"type": "Soft"})
        boot_of(csms, NEXT)
    finally:
        firmware.kill()                                     # supervisor and child at once
    mark = len(csms.received)
    firmware = HandRun(tmp_path, config, state).start()     # this checkout, by hand again
    try:
        boot_of(csms, NEXT, after=mark)
        assert guard.read_trial(state).starts == 2
        assert firmware.stop() == 0
    finally:
        firmware.kill()
    assert "a release is on trial and nothing watches its starts: supervising it" \
        in firmware.text()


def test_the_demo_keeps_its_central_system_while_a_release_is_tried(installed, bundle_shelf,
                                                                    tmp_path):
    """The demo with a release on trial in its state directory: the firmware runs in a
    child under the demo's supervision and reaches the demo's own CSMS; not committed, it
    is rolled back and the demo's first release comes back to the same CSMS.

    The demo's CSMS accepts every release, which then self-tests and commits itself: the
    release tried here is one whose self-test fails."""
    state = state_with_releases(installed, tmp_path)
    releases.install_bundle(bundle_shelf.get(FAILS, SELF_TEST_FAILS), state)
    guard.begin_trial(state, FAILS, guard.Policy(trial_s=5, trial_starts=3))
    env = clean_env(XDG_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "demo", "--heartbeat", "5",
                             "--state-dir", str(state)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any(f"firmware={__version__}\n" in line for line in lines)
                          and any(f"firmware={FAILS}\n" in line for line in lines), 90), \
            "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(10)
    text = "".join(lines)
    listening = [line for line in lines if "Local CSMS listening" in line]
    assert len(listening) == 1, text                          # one CSMS all along
    assert text.index(f"firmware={FAILS}\n") < text.index(f"firmware={__version__}\n")
    assert releases.trial(state).last_rollback.version == FAILS
    assert "Demo stopped." in text and "Traceback" not in text
