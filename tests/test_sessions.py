"""Charging sessions end to end: the real firmware loop against the loopback CSMS, on the
simulated charger, with a virtual clock. One test per behaviour, named after the official
OCTT 1.6 charge-point test case where there is one.

Energy is exact in the simulator, so meterStart / meterStop are compared with what the
simulated meter holds: at 32 A on three phases of 230 V an EV draws 22080 W.
"""

import pytest

from hal.sim import SimError
from tests.harness import base_connector, socket_outlet, statuses

CP = "CP-1"
FULL_POWER_W = 32 * 230.0 * 3                 # what the default EV draws at 32 A


# --------------------------------------------------------------------------- set-up helpers


def start(csms, firmware, ocpp=None, connectors=None, **extra):
    """A firmware booted and reporting every connector Available."""
    overrides = dict(extra)
    if ocpp:
        overrides["ocpp"] = ocpp
    if connectors is not None:
        overrides["connectors"] = connectors
    fw = firmware(overrides)
    for conn in connectors or [base_connector()]:
        csms.wait_for("StatusNotification", lambda r, cid=conn["id"]: r["connectorId"] == cid)
    fw.settle()
    return fw


def last_status(csms, cid=1):
    return [r for r in csms.records("StatusNotification") if r["connectorId"] == cid][-1]


def tx_messages(csms) -> list[str]:
    return [r.action for r in csms.records(("StartTransaction", "StopTransaction"))]


def hw(fw, cid=1) -> dict:
    return fw.sim.status()["connectors"][str(cid)]


def energy(fw, cid=1) -> float:
    return hw(fw, cid)["energy_wh"]


def act(fw, action, *args, **kwargs):
    """Do something to the simulated charger and let the firmware react to it."""
    result = action(*args, **kwargs)
    fw.settle()
    return result


def charge(fw, csms, tag="TAG1", cid=1):
    """Plug in, present `tag`: returns the StartTransaction once the CSMS hears Charging."""
    mark = len(csms.received)
    act(fw, fw.sim.plug, cid)
    act(fw, fw.sim.tap, tag)
    begin = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == cid
                  and r["status"] == "Charging", after=mark)
    fw.settle()
    assert hw(fw, cid)["contactor"] == "closed"
    return begin


def assert_power_off(fw, cid=1):
    state = hw(fw, cid)
    assert state["contactor"] == "open"
    assert state["offered_a"] is None
    assert state["power_w"] == 0


def transaction_id(csms, begin) -> int:
    return begin.reply["transactionId"]


# --------------------------------------------------------------------------- starting

def test_tc_003_plug_first(csms, firmware):
    """Plug, then a card: Preparing, Authorize, StartTransaction with the meter's register,
    Charging with the contactor closed; the same card ends it with the energy drawn."""
    fw = start(csms, firmware, connectors=[base_connector(meter={"type": "sim",
                                                                 "initial_wh": 12345.0})])
    act(fw, fw.sim.plug, 1)
    assert statuses(csms) == ["Available", "Preparing"]
    assert not csms.records("Authorize")
    assert_power_off(fw)                               # nobody authorized yet

    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG1")
    begin = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    auth = csms.wait_for("Authorize", after=mark)
    assert auth["idTag"] == "TAG1" and auth.index < begin.index
    assert begin["connectorId"] == 1 and begin["idTag"] == "TAG1"
    assert begin["meterStart"] == 12345
    fw.settle()
    state = hw(fw)
    assert state["pilot"] == "C" and state["contactor"] == "closed"
    assert state["offered_a"] == 32.0 and state["power_w"] == FULL_POWER_W

    fw.advance(1800)
    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    assert end["reason"] == "Local" and end["idTag"] == "TAG1"
    assert end["transactionId"] == transaction_id(csms, begin)
    assert end["meterStop"] == 12345 + 11040 == round(energy(fw))
    assert_power_off(fw)
    act(fw, fw.sim.unplug, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) > 4)
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Finishing", "Available"]
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]
    assert not csms.violations


def test_tc_004_1_identification_first(csms, firmware):
    """A card first: Authorize, Preparing while the id waits for a plug; plugging in within
    ConnectionTimeOut starts the transaction at once."""
    fw = start(csms, firmware, ocpp={"ConnectionTimeOut": 30})
    act(fw, fw.sim.tap, "TAG1")
    assert [r["idTag"] for r in csms.records("Authorize")] == ["TAG1"]
    assert statuses(csms) == ["Available", "Preparing"]
    assert not csms.records("StartTransaction")
    assert_power_off(fw)

    fw.advance(25)
    act(fw, fw.sim.plug, 1)
    begin = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    assert begin["idTag"] == "TAG1" and begin["connectorId"] == 1 and begin["meterStart"] == 0
    assert statuses(csms) == ["Available", "Preparing", "Charging"]
    assert len(csms.records("Authorize")) == 1         # no second Authorize on plugging in
    fw.settle()
    assert hw(fw)["contactor"] == "closed" and hw(fw)["offered_a"] == 32.0


def test_tc_004_2_connection_timeout_lapses(csms, firmware):
    """An accepted id nobody plugs in for lapses after ConnectionTimeOut: Available again,
    and a later plug alone starts nothing."""
    fw = start(csms, firmware, ocpp={"ConnectionTimeOut": 30})
    act(fw, fw.sim.tap, "TAG1")
    assert statuses(csms) == ["Available", "Preparing"]
    fw.advance(29)
    assert statuses(csms) == ["Available", "Preparing"]
    fw.advance(2)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 3)
    assert statuses(csms) == ["Available", "Preparing", "Available"]

    act(fw, fw.sim.plug, 1)
    fw.advance(60)
    assert statuses(csms) == ["Available", "Preparing", "Available", "Preparing"]
    assert not csms.records("StartTransaction")
    assert_power_off(fw)


# --------------------------------------------------------------------------- EV-side disconnect

def test_tc_005_1_ev_side_disconnect_stops_and_unlocks(csms, firmware):
    """StopTransactionOnEVSideDisconnect and UnlockConnectorOnEVSideDisconnect true, socket
    outlet: unplugging at the car stops the transaction (EVDisconnected) and unlocks; the
    cable left in the socket keeps the connector Finishing until it is taken out."""
    fw = start(csms, firmware, connectors=[socket_outlet()],
               ocpp={"StopTransactionOnEVSideDisconnect": True,
                     "UnlockConnectorOnEVSideDisconnect": True, "MinimumStatusDuration": 0})
    begin = charge(fw, csms)
    assert hw(fw)["lock"] == "locked"
    fw.advance(600)

    act(fw, fw.sim.unplug, 1, side="ev")
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    fw.settle()
    assert end["reason"] == "EVDisconnected"
    assert end["transactionId"] == transaction_id(csms, begin)
    assert end["meterStop"] - begin["meterStart"] == round(FULL_POWER_W * 600 / 3600) == 3680
    assert "idTag" not in end
    assert_power_off(fw)
    assert hw(fw)["lock"] == "unlocked" and hw(fw)["cable_in_socket"] is True
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Finishing"]

    fw.advance(120)                                    # the cable is still in the socket
    assert last_status(csms)["status"] == "Finishing"
    act(fw, fw.sim.unplug, 1, side="socket")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 5)
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


def test_tc_005_2_ev_side_disconnect_stops_but_keeps_the_lock(csms, firmware):
    """UnlockConnectorOnEVSideDisconnect false: the transaction stops (EVDisconnected) but the
    cable stays locked in the socket until the CSMS unlocks it (UnlockConnector)."""
    fw = start(csms, firmware, connectors=[socket_outlet()],
               ocpp={"StopTransactionOnEVSideDisconnect": True,
                     "UnlockConnectorOnEVSideDisconnect": False})
    charge(fw, csms)
    fw.advance(60)
    act(fw, fw.sim.unplug, 1, side="ev")
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    fw.settle()
    assert end["reason"] == "EVDisconnected"
    assert_power_off(fw)
    assert hw(fw)["lock"] == "locked"
    with pytest.raises(SimError, match="locked"):
        fw.sim.unplug(1, side="socket")
    fw.advance(300)
    assert hw(fw)["lock"] == "locked"
    assert last_status(csms)["status"] == "Finishing"

    assert csms.call(CP, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    fw.settle()
    assert hw(fw)["lock"] == "unlocked"
    act(fw, fw.sim.unplug, 1, side="socket")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 5)
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


def test_tc_005_3_ev_side_disconnect_keeps_the_transaction(csms, firmware):
    """StopTransactionOnEVSideDisconnect false: the transaction stays open, SuspendedEV with
    info "EV side disconnected", no power, the cable stays locked; a RemoteStopTransaction
    ends it (reason Remote) and the connector is Finishing until the cable is taken out."""
    fw = start(csms, firmware, connectors=[socket_outlet()],
               ocpp={"StopTransactionOnEVSideDisconnect": False,
                     "UnlockConnectorOnEVSideDisconnect": False})
    begin = charge(fw, csms)
    fw.advance(300)
    at_unplug = energy(fw)

    act(fw, fw.sim.unplug, 1, side="ev")
    suspended = csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEV")
    assert suspended.get("info") == "EV side disconnected"
    assert suspended["errorCode"] == "NoError"
    assert hw(fw)["contactor"] == "open" and hw(fw)["power_w"] == 0
    assert hw(fw)["lock"] == "locked"
    fw.advance(600)
    assert not csms.records("StopTransaction")
    assert energy(fw) == at_unplug
    assert last_status(csms)["status"] == "SuspendedEV"

    reply = csms.call(CP, "RemoteStopTransaction",
                      {"transactionId": transaction_id(csms, begin)})
    assert reply == {"status": "Accepted"}
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    fw.settle()
    assert end["reason"] == "Remote"
    assert end["meterStop"] == round(at_unplug)
    assert statuses(csms) == ["Available", "Preparing", "Charging", "SuspendedEV", "Finishing"]
    assert hw(fw)["lock"] == "unlocked"
    act(fw, fw.sim.unplug, 1, side="socket")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 6)


def test_ev_back_after_ev_side_disconnect_resumes_charging(csms, firmware):
    """With the transaction kept open, the EV plugging back in charges on in it."""
    fw = start(csms, firmware, connectors=[socket_outlet()],
               ocpp={"StopTransactionOnEVSideDisconnect": False})
    begin = charge(fw, csms)
    fw.advance(60)
    act(fw, fw.sim.unplug, 1, side="ev")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEV")
    fw.advance(60)
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    assert hw(fw)["contactor"] == "closed"
    fw.advance(1800)
    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    assert end["reason"] == "Local"
    assert end["meterStop"] - begin["meterStart"] == 11040 + 368
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


def test_fixed_cable_unplugged_at_the_ev_stops_and_is_available(csms, firmware):
    """A fixed cable leaves nothing behind: unplugging stops the transaction (EVDisconnected)
    and the connector is Available at once, with no Finishing."""
    fw = start(csms, firmware)
    begin = charge(fw, csms)
    fw.advance(300)
    act(fw, fw.sim.unplug, 1)
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 4)
    assert end["reason"] == "EVDisconnected"
    assert end["meterStop"] - begin["meterStart"] == 1840
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Available"]
    fw.settle()
    assert_power_off(fw)


def test_ev_pausing_is_suspended_ev_and_opens_the_contactor(csms, firmware):
    """The EV stops asking for power (pilot B): SuspendedEV, the contactor opens while the
    offer stays; asking again closes it and Charging resumes in the same transaction."""
    fw = start(csms, firmware)
    begin = charge(fw, csms)
    fw.advance(60)
    act(fw, fw.sim.ev_suspend, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEV")
    state = hw(fw)
    assert state["contactor"] == "open" and state["offered_a"] == 32.0
    fw.advance(600)
    act(fw, fw.sim.ev_resume, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging"
                  and len(statuses(csms)) == 5)
    assert hw(fw)["contactor"] == "closed"
    fw.advance(60)
    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    assert end["meterStop"] - begin["meterStart"] == 2 * 368
    assert statuses(csms) == ["Available", "Preparing", "Charging", "SuspendedEV", "Charging",
                              "Finishing"]
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


# --------------------------------------------------------------------------- refusing to start

def test_tc_023_authorize_invalid_starts_nothing(csms, firmware):
    """An id the CSMS calls Invalid starts no transaction and no power; Preparing remains."""
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    fw = start(csms, firmware, ocpp={"LocalPreAuthorize": True})
    act(fw, fw.sim.plug, 1)
    assert statuses(csms) == ["Available", "Preparing"]
    act(fw, fw.sim.tap, "BAD1")
    auth = csms.wait_for("Authorize")
    assert auth["idTag"] == "BAD1" and auth.reply["idTagInfo"]["status"] == "Invalid"
    fw.advance(120)
    assert not csms.records("StartTransaction")
    assert statuses(csms) == ["Available", "Preparing"]
    assert_power_off(fw)

    act(fw, fw.sim.tap, "BAD1")                        # now cached as Invalid: still nothing
    fw.advance(10)
    assert not csms.records("StartTransaction")
    assert_power_off(fw)


def test_welded_contactor_starts_nothing(csms, firmware):
    """A contactor welded at start-up: Faulted (PowerSwitchFailure), a driver's card is
    not even sent for authorization, and nothing is offered to the EV."""
    fw = start(csms, firmware, connectors=[base_connector(
        contactor={"type": "sim", "welded": True})])
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Faulted" and r["errorCode"] == "PowerSwitchFailure")
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG1")
    fw.advance(60)
    assert not csms.records("StartTransaction")
    assert not csms.records("Authorize")
    assert last_status(csms)["status"] == "Faulted"
    state = hw(fw)
    assert state["contactor"] == "open" and state["offered_a"] is None
    assert state["pilot"] == "B"                       # the EV was never invited to draw


def test_failed_meter_starts_nothing_until_it_answers_again(csms, firmware):
    """A silent meter: Faulted (PowerMeterFailure) and no transaction without a meterStart;
    once it answers again the same card starts one."""
    fw = start(csms, firmware)
    act(fw, fw.sim.fault, "meter", 1)
    failing = csms.wait_for("StatusNotification", lambda r: r["status"] == "Faulted")
    assert failing["errorCode"] == "PowerMeterFailure"
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG1")
    fw.advance(60)
    assert not csms.records("StartTransaction")
    assert last_status(csms)["status"] == "Faulted"
    assert_power_off(fw)

    mark = len(csms.received)
    act(fw, fw.sim.clear_fault, "meter", 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing", after=mark)
    act(fw, fw.sim.tap, "TAG1")
    begin = csms.wait_for("StartTransaction")
    assert begin["meterStart"] == 0
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")


def test_tc_024_lock_failure_starts_nothing(csms, firmware):
    """A remote start waits for the plug; the lock cannot hold it: Faulted with
    ConnectorLockFailure, no transaction and no power."""
    fw = start(csms, firmware, connectors=[socket_outlet()])
    assert csms.call(CP, "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 1}) == \
        {"status": "Accepted"}
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing")
    act(fw, fw.sim.fault, "lock", 1)                   # the plug goes in only halfway
    act(fw, fw.sim.plug, 1)
    faulted = csms.wait_for("StatusNotification", lambda r: r["status"] == "Faulted")
    assert faulted["errorCode"] == "ConnectorLockFailure"
    fw.advance(120)
    assert not csms.records("StartTransaction")
    assert_power_off(fw)
    assert hw(fw)["lock"] == "unlocked"


# --------------------------------------------------------------------------- stopping

def test_tc_068_only_the_same_id_stops(csms, firmware):
    """Another card during the transaction is ignored (no Authorize, no stop); the card that
    started it stops it: StopTransaction with that idTag, then Finishing."""
    fw = start(csms, firmware)
    begin = charge(fw, csms)
    fw.advance(120)
    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG2")
    fw.advance(5)
    assert not csms.records(("Authorize", "StopTransaction"), after=mark)
    assert hw(fw)["contactor"] == "closed"

    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    finishing = csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    assert end["idTag"] == begin["idTag"] == "TAG1"
    assert end["reason"] == "Local"
    assert end["meterStop"] - begin["meterStart"] == round(FULL_POWER_W * 125 / 3600)
    assert finishing.index > begin.index
    assert not csms.records("Authorize", after=mark)
    fw.settle()
    assert_power_off(fw)
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Finishing"]


def test_an_id_presented_while_finishing_starts_a_new_transaction(csms, firmware):
    """Section 4.9, transition F2: with the EV still plugged in after a stop, the same card
    presented again is authorized afresh and starts a new transaction: Finishing, then
    Preparing while it starts, then Charging."""
    fw = start(csms, firmware)
    first = charge(fw, csms)
    fw.advance(60)
    act(fw, fw.sim.tap, "TAG1")
    csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    fw.settle()

    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG1")
    auth = csms.wait_for("Authorize", after=mark)
    again = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    assert auth["idTag"] == again["idTag"] == "TAG1"
    assert transaction_id(csms, again) != transaction_id(csms, first)
    assert again["meterStart"] >= csms.records("StopTransaction")[0]["meterStop"]
    assert hw(fw)["contactor"] == "closed"
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Finishing", "Preparing",
                              "Charging"]


def test_tc_069_same_parent_id_stops_after_authorize(csms, firmware):
    """A card unknown locally is sent for authorization; with the parentIdTag of the running
    transaction it stops it, and StopTransaction names that card. A card of another group
    is authorized too but stops nothing."""
    parents = {"TAG1": "FLEET", "TAG2": "FLEET", "TAG3": "OTHERS"}
    csms.authorize_response = lambda cp, p: {
        "idTagInfo": {"status": "Accepted", "parentIdTag": parents[p["idTag"]]}}
    csms.start_transaction_response = {
        "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}}
    fw = start(csms, firmware)
    begin = charge(fw, csms)

    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG3")
    csms.wait_for("Authorize", lambda r: r["idTag"] == "TAG3", after=mark)
    fw.advance(5)
    assert not csms.records("StopTransaction")
    assert hw(fw)["contactor"] == "closed"

    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG2")
    auth = csms.wait_for("Authorize", after=mark)
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    assert auth["idTag"] == "TAG2" and auth.index < end.index
    assert end["idTag"] == "TAG2"
    assert end["reason"] == "Local"
    assert end["transactionId"] == transaction_id(csms, begin)
    fw.settle()
    assert_power_off(fw)


@pytest.mark.parametrize("told_by", ["StartTransaction.conf", "Authorize.conf"])
def test_the_parent_id_tag_of_start_transaction_conf_counts(csms, firmware, told_by):
    """Section 3.10 (TC_069): the transaction's parentIdTag is the CSMS's latest word on the
    starting id, whether in its Authorize.conf or in the StartTransaction.conf (a conf
    without one leaves the one known): an id of that group is asked for and stops it."""
    parents = {"TAG1": "FLEET" if told_by == "Authorize.conf" else None, "TAG2": "FLEET"}
    csms.authorize_response = lambda cp, p: {"idTagInfo": {
        "status": "Accepted", **({"parentIdTag": parents[p["idTag"]]}
                                 if parents[p["idTag"]] else {})}}
    csms.start_transaction_response = {"idTagInfo": {
        "status": "Accepted", **({"parentIdTag": "FLEET"}
                                 if told_by == "StartTransaction.conf" else {})}}
    fw = start(csms, firmware)
    begin = charge(fw, csms)

    mark = len(csms.received)
    act(fw, fw.sim.tap, "TAG2")
    auth = csms.wait_for("Authorize", after=mark)
    end = csms.wait_for("StopTransaction", after=mark)
    assert auth["idTag"] == "TAG2" and auth.index < end.index
    assert end["idTag"] == "TAG2" and end["reason"] == "Local"
    assert end["transactionId"] == transaction_id(csms, begin)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing", after=mark)
    fw.settle()
    assert_power_off(fw)


def test_tc_069_a_refused_id_of_the_same_group_does_not_stop(csms, firmware):
    """Stopping needs an authorized id: a Blocked card stops nothing, even when the CSMS
    names the transaction's parentIdTag for it, whether it is asked or the cache answers."""
    csms.authorize_response = lambda cp, p: {
        "idTagInfo": {"status": "Accepted" if p["idTag"] == "TAG1" else "Blocked",
                      "parentIdTag": "FLEET"}}
    csms.start_transaction_response = {
        "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}}
    fw = start(csms, firmware)
    charge(fw, csms)
    for _ in range(2):                                 # asked, then known from the cache
        mark = len(csms.received)
        act(fw, fw.sim.tap, "TAG2")
        fw.advance(5)
        assert [r["idTag"] for r in csms.records("Authorize", after=mark)] in (["TAG2"], [])
    assert not csms.records("StopTransaction")
    assert hw(fw)["contactor"] == "closed"
    assert last_status(csms)["status"] == "Charging"


@pytest.mark.parametrize("fault,code,reason", [
    ("ground", "GroundFailure", "EmergencyStop"),
    ("overcurrent", "OverCurrentFailure", "EmergencyStop"),
    ("temperature", "HighTemperature", "Other"),
    ("contactor-welded", "PowerSwitchFailure", "Other"),
])
def test_blocking_fault_during_a_transaction_stops_it(csms, firmware, fault, code, reason):
    """The contactor is commanded open in the turn that learns of the fault, the pilot stops
    offering, and the transaction ends with the reason for that fault."""
    fw = start(csms, firmware)
    begin = charge(fw, csms)
    fw.advance(600)
    at_fault = energy(fw)
    act(fw, fw.sim.fault, fault, 1)
    end = csms.wait_for("StopTransaction")
    faulted = csms.wait_for("StatusNotification", lambda r: r["status"] == "Faulted")
    fw.settle()
    assert end["reason"] == reason
    assert end["meterStop"] == round(at_fault) == begin["meterStart"] + 3680
    assert faulted["errorCode"] == code
    state = hw(fw)
    assert state["contactor"] == "open" and state["offered_a"] is None
    if fault != "contactor-welded":                    # welded contacts still feed the EV
        assert state["power_w"] == 0 and state["contactor_feedback"] == "open"

    mark = len(csms.received)
    act(fw, fw.sim.clear_fault, fault, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing", after=mark)
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


def test_meter_failing_during_a_transaction_stops_it_at_once(csms, firmware):
    """A meter that falls silent stops the transaction (Other) in the same instant, with
    the last reading as meterStop: no waiting for a reading the failed meter cannot give."""
    fw = start(csms, firmware)
    begin = charge(fw, csms)
    fw.advance(600)                                    # the last sample reads 3680 Wh
    act(fw, fw.sim.fault, "meter", 1)
    faulted = csms.wait_for("StatusNotification", lambda r: r["status"] == "Faulted")
    end = csms.wait_for("StopTransaction", timeout=10)  # virtual time stands still
    assert faulted["errorCode"] == "PowerMeterFailure"
    assert end["reason"] == "Other"
    assert end["meterStop"] == begin["meterStart"] + 3680 == round(energy(fw))
    assert end["timestamp"] == faulted["timestamp"]
    fw.settle()
    assert_power_off(fw)


def test_charger_wide_fault_stops_every_transaction(csms, firmware):
    """A ground fault of the whole charger (connector 0) is an emergency stop everywhere."""
    second = base_connector(id=2)
    fw = start(csms, firmware, connectors=[base_connector(), second])
    charge(fw, csms, "TAG1", cid=1)
    charge(fw, csms, "TAG2", cid=2)
    fw.advance(60)
    act(fw, fw.sim.fault, "ground", 0)
    csms.wait_for("StopTransaction", lambda r: len(csms.records("StopTransaction")) == 2)
    fw.settle()
    assert [r["reason"] for r in csms.records("StopTransaction")] == ["EmergencyStop"] * 2
    for cid in (1, 2):
        assert_power_off(fw, cid)


# --------------------------------------------------------------------------- invalid id at start

def test_stop_transaction_on_invalid_id_true_stops_deauthorized(csms, firmware):
    """StartTransaction.conf says Invalid: with StopTransactionOnInvalidId the transaction
    ends at once with reason DeAuthorized and the power goes off."""
    csms.start_transaction_response = {"idTagInfo": {"status": "Invalid"}}
    fw = start(csms, firmware, ocpp={"StopTransactionOnInvalidId": True})
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG1")
    begin = csms.wait_for("StartTransaction")
    end = csms.wait_for("StopTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing")
    fw.settle()
    assert end["reason"] == "DeAuthorized"
    assert end["transactionId"] == transaction_id(csms, begin)
    assert end["meterStop"] == begin["meterStart"]
    assert_power_off(fw)
    assert tx_messages(csms) == ["StartTransaction", "StopTransaction"]


def test_stop_transaction_on_invalid_id_false_suspends_the_evse(csms, firmware):
    """StopTransactionOnInvalidId false, MaxEnergyOnInvalidId 0: the transaction stays open
    but SuspendedEVSE, nothing is offered and no energy flows."""
    csms.start_transaction_response = {"idTagInfo": {"status": "Invalid"}}
    fw = start(csms, firmware, ocpp={"StopTransactionOnInvalidId": False,
                                     "MaxEnergyOnInvalidId": 0})
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG1")
    begin = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEVSE")
    fw.settle()
    assert_power_off(fw)
    fw.advance(600)
    assert energy(fw) == begin["meterStart"]
    assert not csms.records("StopTransaction")
    assert last_status(csms)["status"] == "SuspendedEVSE"

    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    assert end["reason"] == "Local" and end["meterStop"] == begin["meterStart"]


def test_max_energy_on_invalid_id_lets_that_much_flow(csms, firmware):
    """MaxEnergyOnInvalidId 500: charging goes on after the Invalid answer until 500 Wh are
    in (checked at every reading, here every 5 s), then SuspendedEVSE and no power."""
    csms.start_transaction_response = {"idTagInfo": {"status": "Invalid"}}
    fw = start(csms, firmware, ocpp={"StopTransactionOnInvalidId": False,
                                     "MaxEnergyOnInvalidId": 500,
                                     "MeterValueSampleInterval": 5})
    begin = charge(fw, csms)
    fw.advance(60)                                     # 368 Wh: still below the limit
    assert hw(fw)["contactor"] == "closed" and hw(fw)["power_w"] == FULL_POWER_W
    assert last_status(csms)["status"] == "Charging"

    fw.advance(60)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEVSE")
    assert_power_off(fw)
    drawn = energy(fw) - begin["meterStart"]
    assert 500 <= drawn <= 500 + FULL_POWER_W * 5 / 3600
    fw.advance(600)
    assert energy(fw) - begin["meterStart"] == drawn
    assert not csms.records("StopTransaction")

    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    assert end["meterStop"] == round(begin["meterStart"] + drawn)


# --------------------------------------------------------------------------- lock and connectors

def test_socket_outlet_is_locked_during_the_transaction_only(csms, firmware):
    """A socket outlet: unlocked while Preparing, locked from the start of the transaction
    (the cable cannot be pulled out), unlocked when it ends. The cable's PP ampacity caps
    the current offered."""
    fw = start(csms, firmware, connectors=[socket_outlet(lock={"type": "sim",
                                                               "cable_ampacity_a": 20})])
    act(fw, fw.sim.plug, 1)
    assert hw(fw)["lock"] == "unlocked"
    act(fw, fw.sim.tap, "TAG1")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    fw.settle()
    state = hw(fw)
    assert state["lock"] == "locked"
    assert state["offered_a"] == 20.0 and state["power_w"] == 20 * 230.0 * 3
    with pytest.raises(SimError, match="locked"):
        fw.sim.unplug(1)

    act(fw, fw.sim.tap, "TAG1")
    csms.wait_for("StopTransaction")
    fw.settle()
    assert hw(fw)["lock"] == "unlocked"
    act(fw, fw.sim.unplug, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Available"
                  and len(statuses(csms)) == 5)
    assert statuses(csms) == ["Available", "Preparing", "Charging", "Finishing", "Available"]


def test_two_connectors_a_card_goes_where_an_ev_waits(csms, firmware):
    """With two connectors, a card starts on the one with an EV plugged in; the other stays
    Available and dark; each card stops only its own transaction."""
    fw = start(csms, firmware, connectors=[base_connector(), base_connector(id=2)])
    act(fw, fw.sim.plug, 2)
    act(fw, fw.sim.tap, "TAG1")
    first = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 2
                  and r["status"] == "Charging")
    fw.settle()
    assert first["connectorId"] == 2 and first["idTag"] == "TAG1"
    assert statuses(csms, 1) == ["Available"]
    assert hw(fw, 2)["contactor"] == "closed"
    assert_power_off(fw, 1)

    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG2")
    second = csms.wait_for("StartTransaction", lambda r: r["idTag"] == "TAG2")
    assert second["connectorId"] == 1
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Charging")

    fw.advance(600)
    act(fw, fw.sim.tap, "TAG1")
    end = csms.wait_for("StopTransaction")
    fw.settle()
    assert end["transactionId"] == transaction_id(csms, first)
    assert end["meterStop"] - first["meterStart"] == 3680
    assert_power_off(fw, 2)
    assert hw(fw, 1)["contactor"] == "closed"
    assert last_status(csms, 1)["status"] == "Charging"
    assert last_status(csms, 2)["status"] == "Finishing"


def test_two_connectors_identification_first_starts_where_the_ev_arrives(csms, firmware):
    """A card before any EV: both free connectors are Preparing; the one an EV is then
    plugged into starts the transaction and the other goes back to Available."""
    fw = start(csms, firmware, connectors=[base_connector(), base_connector(id=2)])
    act(fw, fw.sim.tap, "TAG1")
    assert statuses(csms, 1)[-1] == "Preparing" and statuses(csms, 2)[-1] == "Preparing"
    act(fw, fw.sim.plug, 2)
    begin = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Available" and len(statuses(csms, 1)) == 3)
    assert begin["connectorId"] == 2
    assert statuses(csms, 1) == ["Available", "Preparing", "Available"]
    fw.settle()
    assert_power_off(fw, 1)
    assert hw(fw, 2)["contactor"] == "closed"

