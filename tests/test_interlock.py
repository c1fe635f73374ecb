"""The interlock (chargepoint/interlock.py): a hardware event that the safety rule says
rules a closed contactor out opens it in the thread that reports it, before the loop's
turn, so a loop held up by the card (a commit waiting on a locked or stalled database)
cannot keep the contactor closed."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from chargepoint.interlock import Interlock, contactors_to_open
from hal.events import FaultCode, HardwareFault, MeterSampled, PilotStateChanged
from hal.interfaces import Contactor, MeterReading, PilotState
from tests.harness import in_a_commit, wait_until

CP = "CP-1"


@pytest.mark.parametrize("state", [PilotState.A, PilotState.B, PilotState.E, PilotState.F])
def test_a_pilot_leaving_c_and_d_rules_its_contactor_out(state):
    assert contactors_to_open(PilotStateChanged(2, state), [1, 2]) == (2,)


@pytest.mark.parametrize("state", [PilotState.C, PilotState.D])
def test_a_pilot_asking_for_power_opens_nothing(state):
    assert contactors_to_open(PilotStateChanged(2, state), [1, 2]) == ()


def test_a_blocking_fault_opens_its_connector_and_on_connector_0_every_outlet():
    assert contactors_to_open(HardwareFault(1, FaultCode.GROUND_FAILURE, True), [1, 2]) == (1,)
    assert contactors_to_open(HardwareFault(0, FaultCode.HIGH_TEMPERATURE, True),
                              [1, 2]) == (1, 2)


@pytest.mark.parametrize("event", [
    HardwareFault(1, FaultCode.GROUND_FAILURE, False),          # a fault that clears
    HardwareFault(0, FaultCode.READER_FAILURE, True),           # charging goes on without
    HardwareFault(0, FaultCode.INTERNAL_ERROR, True),           # the card: in memory
    MeterSampled(1, MeterReading(time=1.0, energy_import_wh=10.0)),
])
def test_what_the_safety_rule_leaves_alone_opens_nothing(event):
    assert contactors_to_open(event, [1, 2]) == ()


class Relay(Contactor):
    """A contactor's relay as its driver sees it (the hardware, stood in for)."""

    def __init__(self, closed: bool, fails: bool = False):
        self.closed = closed
        self.fails = fails
        self.commands: list[bool] = []

    def set_closed(self, closed: bool) -> None:
        if self.fails:
            raise OSError("the relay driver does not answer")
        self.commands.append(closed)
        self.closed = closed

    @property
    def commanded_closed(self) -> bool:
        return self.closed


def test_the_interlock_only_opens_and_only_what_is_closed(caplog):
    one, two, three = Relay(True), Relay(False), Relay(True, fails=True)
    interlock = Interlock()
    interlock.observe(PilotStateChanged(1, PilotState.B))       # before the build: nothing
    interlock.attach({1: one, 2: two, 3: three})
    interlock.observe(PilotStateChanged(1, PilotState.C))
    assert one.commands == []
    interlock.observe(HardwareFault(0, FaultCode.OVER_CURRENT_FAILURE, True))
    assert one.commands == [False] and two.commands == [] and not one.closed
    assert interlock.opened == 1
    assert "connector 3: the contactor could not be opened at once" in caplog.text


def test_an_unplug_opens_the_contactor_while_the_loop_waits_for_the_database(csms, firmware):
    """The loop is held in a commit (another connection holds the database's write lock,
    as a stalled card would hold the commit): unplugging the charging EV opens the
    contactor at once, not after the commit. Once the lock goes, the core catches up: the
    transaction ends as it always does."""
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.sim.plug(1)
    fw.sim.tap("04A1B2C3")
    assert wait_until(lambda: fw.sim.status()["connectors"]["1"]["contactor"] == "closed", 10)
    csms.wait_for("StartTransaction", timeout=10)
    opens_before = fw.runtime.turns.contactor_opens
    blocker = sqlite3.connect(fw.settings.storage.path, isolation_level=None)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(csms.call(
        CP, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"},
        timeout=30)))
    try:
        blocker.execute("BEGIN IMMEDIATE")
        caller.start()
        assert wait_until(lambda: in_a_commit(fw._thread), timeout=10)
        fw.sim.unplug(1)
        assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"
        assert in_a_commit(fw._thread) and not answers, "the loop was not held"
        assert fw.runtime.turns.contactor_opens == opens_before   # not the loop's doing
        assert fw.runtime.interlock.opened == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        caller.join(timeout=30)
    assert answers == [{"status": "Accepted"}]
    stop = csms.wait_for("StopTransaction", timeout=10)
    assert stop["reason"] == "EVDisconnected"
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"
