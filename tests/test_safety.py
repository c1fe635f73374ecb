"""The safety rule in the core: the contactor closes only in C/D with a valid authorization,
opens in the same turn that learns the EV left C/D, and opens on any fault."""
import pytest

from chargepoint import actions as act
from chargepoint.events import Tick
from chargepoint.model.transactions import Transaction
from hal import events as he
from hal.interfaces import MeterReading, PilotState
from tests.harness import STATION_NOW, booted, statuses, wait_status

NOW = STATION_NOW
CP = "CP-1"


def hw(actions):
    return [a for a in actions if isinstance(a, (act.SetContactor, act.OfferCurrent))]


def test_starts_fail_safe(station):
    first = hw(station.handle(he.PilotStateChanged(1, PilotState.A), NOW))
    assert station._commanded[1] == (False, None)
    assert all(not getattr(a, "closed", False) for a in first)


def test_no_authorization_no_power(station):
    for state in (PilotState.B, PilotState.C, PilotState.D):
        out = hw(station.handle(he.PilotStateChanged(1, state), NOW))
        assert act.SetContactor(1, True) not in out


def give_transaction(station):
    """A running transaction, as chargepoint.sessions would have started it."""
    station.services.connectors[1].tx = Transaction(1, 1, "TAG", 0, NOW)


def authorize_and_charge(station):
    station.handle(he.PilotStateChanged(1, PilotState.B), NOW)
    give_transaction(station)
    station.services.connectors[1].changed()
    assert hw(station.handle(Tick(), NOW)) == [act.OfferCurrent(1, 32)]
    out = hw(station.handle(he.PilotStateChanged(1, PilotState.C), NOW))
    assert out == [act.SetContactor(1, True)]


@pytest.mark.parametrize("state", [PilotState.A, PilotState.B, PilotState.E, PilotState.F])
def test_leaving_c_opens_in_the_same_turn(station, state):
    authorize_and_charge(station)
    out = hw(station.handle(he.PilotStateChanged(1, state), NOW))
    assert out[0] == act.SetContactor(1, False)


@pytest.mark.parametrize("code", [he.FaultCode.GROUND_FAILURE, he.FaultCode.POWER_METER_FAILURE,
                                  he.FaultCode.POWER_SWITCH_FAILURE,
                                  he.FaultCode.EV_COMMUNICATION_ERROR])
def test_any_fault_opens_and_withdraws_the_offer(station, code):
    authorize_and_charge(station)
    out = hw(station.handle(he.HardwareFault(1, code, True, "x"), NOW))
    assert out == [act.SetContactor(1, False), act.OfferCurrent(1, None)]
    assert station.services.view.status(station.services.connectors[1]) == "Faulted"


def test_offer_never_exceeds_the_cable(station):
    station.handle(he.CableDetected(1, 20.0), NOW)
    give_transaction(station)
    station.handle(he.PilotStateChanged(1, PilotState.B), NOW)
    assert station._commanded[1] == (False, 20.0)


# -- end to end with the simulated charger ---------------------------------------------

def test_plugged_ev_gets_no_power_without_authorization(csms, firmware):
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.sim.plug(1)
    fw.runtime.wake()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1 and
                  r["status"] == "Preparing")
    fw.settle()
    conn = fw.sim.status()["connectors"]["1"]
    assert conn["pilot"] == "B"
    assert conn["contactor"] == "open" and conn["offered_a"] is None
    assert conn["power_w"] == 0


@pytest.mark.parametrize("what,code", [("ground", "GroundFailure"),
                                       ("meter", "PowerMeterFailure"),
                                       ("contactor-welded", "PowerSwitchFailure")])
def test_hardware_fault_becomes_faulted_status_and_clears(csms, firmware, what, code):
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.sim.fault(what, 1)
    fw.runtime.wake()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1 and
                  r["status"] == "Faulted" and r["errorCode"] == code, timeout=10)
    fw.sim.clear_fault(what, 1)
    fw.runtime.wake()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1 and
                  r["status"] == "Available" and r["errorCode"] == "NoError", timeout=10)
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"


def test_tc_041_a_faulted_connector_starts_no_transaction(csms, firmware):
    """OCTT TC_041: a connector in fault reports Faulted; the driver's tag and the CSMS's
    remote start both find it refused, and no transaction starts while the tool waits."""
    fw = booted(csms, firmware)
    mark = len(csms.records())
    fw.sim.fault("ground", 1)
    fw.runtime.wake()
    fault = wait_status(csms, "Faulted", after=mark)
    assert fault["errorCode"] == "GroundFailure"

    fw.sim.plug(1)
    fw.sim.tap("TAG1")
    fw.runtime.wake()
    assert csms.call(CP, "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 1}) == \
        {"status": "Rejected"}
    fw.advance(120)                      # the tool's <Configured Transaction Duration>
    assert csms.records("StartTransaction") == []
    assert set(statuses(csms, after=mark)) == {"Faulted"}
    conn = fw.sim.status()["connectors"]["1"]
    assert conn["contactor"] == "open" and conn["offered_a"] is None


def test_a_failing_timer_callback_does_not_stop_the_core(station, caplog):
    def boom():
        raise RuntimeError("bug in a timer")

    station.services.timers.set("bad", NOW, boom)
    station.services.timers.set("good", NOW + 1, lambda: station.services.effects.emit(act.ReportStatus("still alive")))
    station.handle(Tick(), NOW)
    assert "bug in a timer" in caplog.text
    assert act.ReportStatus("still alive") in station.handle(Tick(), NOW + 1)


def test_a_turn_reconciles_each_connector_once(station):
    """The meter reading that starts a transaction changes the connector several times in
    one turn (no longer starting, a transaction, a current offered): its indicator and its
    StatusNotification still come once, after the outputs."""
    import json

    from chargepoint.events import Connected, FrameReceived

    answers = {"BootNotification": {"status": "Accepted", "interval": 300,
                                    "currentTime": "2026-06-01T00:00:00Z"},
               "Authorize": {"idTagInfo": {"status": "Accepted"}}}

    def turn(event):
        """One event, then the CSMS answers every CALL of ours; the actions of the event's
        own turn."""
        out = station.handle(event, NOW)
        pending = out
        while True:
            calls = [json.loads(a.text) for a in pending if isinstance(a, act.SendFrame)
                     and json.loads(a.text)[0] == 2]
            if not calls:
                return out
            pending = station.handle(FrameReceived(json.dumps(
                [3, calls[0][1], answers.get(calls[0][2], {})])), NOW)

    turn(Connected())
    assert station.services.link.accepted
    turn(he.PilotStateChanged(1, PilotState.C))
    turn(he.TagPresented("TAG1"))
    assert station.services.connectors[1].starting
    out = turn(he.MeterSampled(1, MeterReading(time=NOW, energy_import_wh=10.0)))
    assert station.services.connectors[1].tx is not None
    assert [a for a in out if isinstance(a, act.ShowIndicator)] == [
        act.ShowIndicator(1, "charging")]
    assert hw(out) == [act.OfferCurrent(1, 32), act.SetContactor(1, True)]
    calls = [json.loads(a.text) for a in out if isinstance(a, act.SendFrame)]
    assert [(c[2], c[3]["status"]) for c in calls if c[2] == "StatusNotification"] == [
        ("StatusNotification", "Charging")]
