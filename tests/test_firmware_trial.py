"""The update's steps around the switch, on the station core fed events directly (no loop,
no link): what each stored step and each trial outcome lead to after a restart, as the
runtime would start the core with the release records it read (`RunningRelease`).

The core answers with actions; here a small CSMS answers its CALLs as the loopback one
would (BootNotification Accepted, every notification acknowledged), so the whole
sequence of notifications is seen as the CSMS would see it.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional

import pytest

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint.model.connector import ConnectorInfo
from chargepoint.model.firmware import STATE_KEY, RunningRelease
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.station import Station, StationConfig
from chargepoint.store import Store
from tests.harness import STATION_NOW

OLD, NEW = "1.4.0", "1.5.0"
NOW_ISO = "2026-01-01T00:00:00Z"


class Core:
    """A Station on a real database, and the CSMS's side of its CALLs."""

    def __init__(self, path, release: RunningRelease, connectors: int = 1):
        self.store = Store(path)
        keys = OcppKeys(self.store, {}, {})
        self.station = Station(StationConfig(
            "CP", {"chargePointVendor": "v", "chargePointModel": "m",
                   "firmwareVersion": release.version},
            [ConnectorInfo(i, max_current_a=32) for i in range(1, connectors + 1)],
            release=release), keys, self.store, STATION_NOW)
        self.now = STATION_NOW
        self.calls: list[tuple[str, dict]] = []
        self.actions: list = []
        #: Actions the CSMS does not answer.
        self.silent: set[str] = set()

    def feed(self, event) -> list:
        out = self.station.handle(event, self.now)
        self.actions += out
        for action in out:
            if isinstance(action, act.SendFrame):
                frame = json.loads(action.text)
                if frame[0] == 2:
                    self.calls.append((frame[2], frame[3]))
                    if frame[2] not in self.silent:
                        self.feed(ev.FrameReceived(json.dumps([3, frame[1],
                                                               self._answer(frame[2])])))
        return out

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            deadline = self.station.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.feed(ev.Tick())
        self.now = target
        self.feed(ev.Tick())

    @staticmethod
    def _answer(action: str) -> dict:
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": NOW_ISO, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": NOW_ISO}
        return {}

    def boot(self) -> None:
        self.feed(ev.Tick())
        self.feed(ev.Connected())

    def fsn(self) -> list[str]:
        return [p["status"] for a, p in self.calls if a == "FirmwareStatusNotification"]

    def of(self, kind) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def row(self) -> Optional[dict]:
        return self.store.get_state(STATE_KEY)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def cores(tmp_path):
    made = []

    def make(release: RunningRelease, row: Optional[dict] = None, connectors: int = 1):
        path = tmp_path / "cp.db"
        if row is not None:
            seed = Store(path)
            seed.set_state(STATE_KEY, row)
            seed.close()
        core = Core(path, release, connectors)
        made.append(core)
        return core

    yield make
    for core in made:
        core.close()


def row(phase: str, version: Optional[str] = NEW, **extra) -> dict:
    out = {"id": uuid.uuid4().hex[:16], "location": "http://127.0.0.1/r.cpr",
           "retrieve": STATION_NOW, "retries": 0, "interval": 60, "attempts": 1,
           "phase": phase, "from": OLD, **extra}
    if version is not None:
        out["version"] = version
    return out


# ------------------------------------------------------------------------------ installing
def test_installed_and_switched_asks_for_a_restart_once_installing_is_heard(cores):
    core = cores(RunningRelease(OLD), row("downloaded", version=None))
    core.boot()
    core.advance(1)
    assert core.fsn() == ["Installing"]         # the latest step, not those it replaced
    (install,) = core.of(act.InstallFirmware)
    core.feed(ev.FirmwareInstalled(install.request_id, True, version=NEW))
    core.advance(1)
    assert core.of(act.Restart) == [act.Restart("release")]
    assert core.row()["phase"] == "activated" and core.row()["version"] == NEW


def test_an_installation_that_fails_reports_it_and_frees_the_connectors(cores):
    core = cores(RunningRelease(OLD), row("downloaded", version=None), connectors=2)
    core.boot()
    assert core.station.services.availability.updating
    core.advance(1)
    (install,) = core.of(act.InstallFirmware)
    core.feed(ev.FirmwareInstalled(install.request_id, False,
                                   reason="bundle.cpr: hash mismatch"))
    assert core.fsn() == ["Installing", "InstallationFailed"]
    assert not core.station.services.availability.updating
    assert core.row() is None
    assert not core.of(act.Restart)


# ------------------------------------------------------------------------------ the trial
def test_the_new_release_tests_itself_once_accepted_then_reports_installed(cores):
    core = cores(RunningRelease(NEW, on_trial=True), row("activated"))
    core.feed(ev.Tick())
    assert not core.of(act.TestRelease)              # not before the CSMS accepted it
    core.boot()
    assert core.of(act.TestRelease) == [act.TestRelease()]
    assert core.fsn() == []                          # Installing went before the restart
    core.feed(ev.ReleaseTested(True))
    assert core.fsn() == ["Installed"]
    sent = [a for a, _ in core.calls]
    assert sent.index("StatusNotification") < sent.index("FirmwareStatusNotification")
    assert core.row() is None


def test_a_release_that_fails_its_self_test_is_rolled_back(cores):
    core = cores(RunningRelease(NEW, on_trial=True), row("activated"))
    core.boot()
    core.feed(ev.ReleaseTested(False, "module chargepoint.releases does not import"))
    (rollback,) = core.of(act.RollBackRelease)
    assert "module chargepoint.releases does not import" in rollback.reason
    assert core.row()["phase"] == "rolling-back"


def test_a_rollback_waits_for_a_running_transaction(cores):
    core = cores(RunningRelease(NEW, on_trial=True), row("activated"))
    core.boot()
    services = core.station.services
    conn = services.connectors[1]
    conn.tx = object()                     # a transaction runs (its facts are not needed)
    core.feed(ev.ReleaseTested(False, "the database is damaged"))
    assert not core.of(act.RollBackRelease)
    conn.tx = None
    services.firmware.transaction_ended()
    core.advance(1)
    assert len(core.of(act.RollBackRelease)) == 1


def test_a_trial_without_an_update_request_is_still_tested_and_committed(cores):
    """A release switched to by hand (on trial, no UpdateFirmware behind it)."""
    core = cores(RunningRelease(NEW, on_trial=True))
    core.boot()
    assert core.of(act.TestRelease)
    core.feed(ev.ReleaseTested(True))
    assert core.fsn() == []


# ------------------------------------------------------------------------------ after a restart
def test_back_on_the_old_release_after_a_rollback_reports_installation_failed(cores):
    core = cores(RunningRelease(OLD, rolled_back=(NEW, "crashed at import")),
                 row("activated"))
    core.boot()
    assert core.fsn() == ["InstallationFailed"]
    assert core.row() is None
    assert not core.of(act.TestRelease)


def test_a_rollback_by_the_firmware_itself_ends_in_installation_failed(cores):
    core = cores(RunningRelease(OLD, rolled_back=(NEW, "self-test failed")),
                 row("rolling-back", why="self-test failed"))
    core.boot()
    assert core.fsn() == ["InstallationFailed"]
    assert not core.station.services.availability.updating


def test_a_release_committed_before_the_csms_heard_of_it_reports_installed(cores):
    core = cores(RunningRelease(NEW), row("activated"))
    core.boot()
    assert core.fsn() == ["Installed"]
    assert core.row() is None


def test_an_installation_cut_short_on_the_old_release_is_done_again(cores):
    core = cores(RunningRelease(OLD), row("installing", version=None))
    core.boot()
    core.advance(1)
    assert len(core.of(act.InstallFirmware)) == 1
    assert core.fsn()[-1] == "Installing"


def test_a_cut_after_the_switch_before_it_was_recorded_carries_on_as_a_trial(cores):
    core = cores(RunningRelease(NEW, on_trial=True),
                 row("installing", version=None))
    core.boot()
    assert core.of(act.TestRelease)
    assert core.row()["phase"] == "activated" and core.row()["version"] == NEW
    core.feed(ev.ReleaseTested(True))
    assert core.fsn()[-1] == "Installed"


def test_the_final_status_is_told_again_until_the_csms_answered_it(cores, tmp_path):
    core = cores(RunningRelease(OLD), row("done", final="DownloadFailed"))
    core.feed(ev.Tick())
    assert core.row()["final"] == "DownloadFailed"          # offline: kept
    core.boot()
    assert core.fsn() == ["DownloadFailed"]
    assert core.row() is None


@pytest.mark.parametrize("phase, status", [("scheduled", "Idle"), ("retry", "Downloading"),
                                           ("downloaded", "Downloaded"),
                                           ("activated", "Installing")])
def test_trigger_message_reports_the_step(cores, phase, status):
    core = cores(RunningRelease(OLD if phase != "activated" else NEW, on_trial=True) if phase == "activated"
                 else RunningRelease(OLD), row(phase, next=STATION_NOW + 3600))
    assert core.station.services.firmware.status == status


def test_a_final_status_the_csms_does_not_answer_is_told_again(cores):
    core = cores(RunningRelease(OLD), row("done", final="InstallationFailed"))
    core.silent.add("FirmwareStatusNotification")
    core.boot()
    assert core.fsn() == ["InstallationFailed"]
    core.silent.clear()
    core.advance(30)                                 # the CALL times out
    assert core.row() is not None and core.fsn() == ["InstallationFailed"]
    core.advance(60)                                 # told again
    assert core.fsn() == ["InstallationFailed", "InstallationFailed"]
    assert core.row() is None
