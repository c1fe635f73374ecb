"""Reservations end to end (TC_046-053): ReserveNow for a connector and for connector 0,
CancelReservation, expiry, who may start on a reserved connector, and persistence.

The real firmware loop runs against the loopback CSMS on the simulated charger with a
virtual clock. The CSMS's clock follows the virtual one but runs an hour ahead of the
charger's own clock, so an expiry only comes out right when it is compared with the
CSMS's time (which the firmware adopts from BootNotification / Heartbeat), as OCPP wants.
Expiry dates are therefore always computed from `csms.now()`.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest

from chargepoint.clock import VirtualClock
from tests.harness import base_connector, statuses, wait_status, wait_until

UTC = timezone.utc
CP = "CP-1"
#: How far the CSMS's clock runs ahead of the charger's own.
CSMS_AHEAD_S = 3600.0


# --------------------------------------------------------------------------- set-up helpers


TWO_CONNECTORS = [base_connector(id=1), base_connector(id=2)]


def boot(csms, firmware, ocpp=None, connectors=None, csms_ahead=CSMS_AHEAD_S):
    """A firmware on a virtual clock, booted and reporting every connector Available."""
    clock = VirtualClock()
    csms.now = lambda: datetime.fromtimestamp(clock.now() + csms_ahead, UTC)
    overrides = {}
    if ocpp:
        overrides["ocpp"] = ocpp
    if connectors is not None:
        overrides["connectors"] = connectors
    fw = firmware(overrides, clock=clock)
    for conn in connectors or [base_connector()]:
        csms.wait_for("StatusNotification", lambda r, cid=conn["id"]: r["connectorId"] == cid)
    fw.settle()
    return fw


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reserve(csms, connector_id=1, id_tag="RES1", reservation_id=11, expires_in=3600.0,
            parent=None) -> str:
    """ReserveNow with an expiryDate `expires_in` seconds after the CSMS's now."""
    payload = {"connectorId": connector_id, "idTag": id_tag, "reservationId": reservation_id,
               "expiryDate": iso(csms.now() + timedelta(seconds=expires_in))}
    if parent is not None:
        payload["parentIdTag"] = parent
    return csms.call(CP, "ReserveNow", payload)["status"]


def cancel(csms, reservation_id) -> str:
    return csms.call(CP, "CancelReservation", {"reservationId": reservation_id})["status"]


def remote_start(csms, id_tag, connector_id=1) -> str:
    return csms.call(CP, "RemoteStartTransaction",
                     {"idTag": id_tag, "connectorId": connector_id})["status"]


def change_availability(csms, cid, kind) -> str:
    return csms.call(CP, "ChangeAvailability", {"connectorId": cid, "type": kind})["status"]


def act(fw, action, *args, **kwargs):
    """Do something to the simulated charger and let the firmware react to it."""
    result = action(*args, **kwargs)
    fw.settle()
    return result


def db(fw, sql, params=()):
    """Read the firmware's SQLite file from the test's own connection."""
    with closing(sqlite3.connect(fw.settings.storage.path)) as con:
        return con.execute(sql, params).fetchall()


def stored(fw) -> list[tuple]:
    return db(fw, "SELECT reservation_id, connector_id, id_tag FROM reservations "
                  "ORDER BY reservation_id")


def starts(csms, after=0):
    return csms.records("StartTransaction", after=after)


def refused(fw, csms, tag, cid=1):
    """`tag` is presented with an EV plugged in at `cid`: nothing starts there."""
    mark = len(csms.received)
    plugged = fw.sim.status()["connectors"][str(cid)]["plugged"]
    if not plugged:
        act(fw, fw.sim.plug, cid)
    act(fw, fw.sim.tap, tag)
    fw.advance(5)
    assert starts(csms, mark) == [], f"{tag} started on a connector held for someone else"
    assert fw.station.services.connectors[cid].tx is None
    assert fw.sim.status()["connectors"][str(cid)]["contactor"] == "open"
    if not plugged:
        act(fw, fw.sim.unplug, cid)


def started_with(csms, tag, cid=1, after=0):
    """The StartTransaction of `tag`, once the CSMS hears Charging on `cid`."""
    begin = csms.wait_for("StartTransaction", lambda r: r["idTag"] == tag, after=after)
    wait_status(csms, "Charging", cid, after=after)
    assert begin["connectorId"] == cid
    return begin


# --------------------------------------------------------------------------- TC_046

def test_tc_046_1_reserved_connector_local_start(csms, firmware):
    """Reserved for RES1: another card starts nothing (and is not even sent to the CSMS,
    OCTT step 5); RES1 is authorized, Preparing, and plugging in starts a transaction that
    carries the reservationId: Reserved -> Preparing -> Charging."""
    fw = boot(csms, firmware)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 46) == "Accepted"
    wait_status(csms, "Reserved", after=mark)
    assert stored(fw) == [(46, 1, "RES1")]

    act(fw, fw.sim.tap, "OTHER")
    fw.advance(5)
    assert statuses(csms, after=mark) == ["Reserved"]
    assert fw.station.services.plug_wait.pending is None

    act(fw, fw.sim.tap, "RES1")
    wait_status(csms, "Preparing", after=mark)
    assert [a["idTag"] for a in csms.records("Authorize", after=mark)] == ["RES1"]
    act(fw, fw.sim.plug, 1)
    begin = started_with(csms, "RES1", after=mark)
    assert begin["reservationId"] == 46
    assert statuses(csms, after=mark) == ["Reserved", "Preparing", "Charging"]
    assert stored(fw) == []                            # used up
    assert not csms.violations


def test_tc_046_1_other_id_with_ev_plugged_in_does_not_start(csms, firmware):
    """An EV already plugged in at the reserved connector does not let another id start."""
    fw = boot(csms, firmware)
    assert reserve(csms, 1, "RES1", 46) == "Accepted"
    wait_status(csms, "Reserved")
    act(fw, fw.sim.plug, 1)
    refused(fw, csms, "OTHER")
    mark = len(csms.received)
    act(fw, fw.sim.tap, "RES1")
    assert started_with(csms, "RES1", after=mark)["reservationId"] == 46


def test_tc_046_2_remote_start_on_the_reserved_connector(csms, firmware):
    """RemoteStartTransaction for another id on the reserved connector is Rejected; for the
    reserved id it is Accepted and its StartTransaction carries the reservationId."""
    fw = boot(csms, firmware, ocpp={"AuthorizeRemoteTxRequests": True})
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 462) == "Accepted"
    wait_status(csms, "Reserved", after=mark)

    assert remote_start(csms, "OTHER") == "Rejected"
    fw.settle()
    assert remote_start(csms, "RES1") == "Accepted"
    wait_status(csms, "Preparing", after=mark)
    act(fw, fw.sim.plug, 1)
    begin = started_with(csms, "RES1", after=mark)
    assert begin["reservationId"] == 462 and begin["idTag"] == "RES1"
    assert statuses(csms, after=mark) == ["Reserved", "Preparing", "Charging"]
    assert stored(fw) == []
    assert not csms.violations


def test_reserved_id_that_lapses_leaves_the_connector_reserved(csms, firmware):
    """The reserved id presented but nobody plugs in within ConnectionTimeOut: Preparing,
    then Reserved again (not Available), and the reservation still holds."""
    fw = boot(csms, firmware, ocpp={"ConnectionTimeOut": 30})
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 45) == "Accepted"
    act(fw, fw.sim.tap, "RES1")
    wait_status(csms, "Preparing", after=mark)
    fw.advance(31)
    assert statuses(csms, after=mark) == ["Reserved", "Preparing", "Reserved"]
    assert stored(fw) == [(45, 1, "RES1")]
    refused(fw, csms, "OTHER")


def test_reservation_holds_offline(csms, firmware):
    """Offline, the reservation still decides: an unknown id (admitted offline by
    AllowOfflineTxForUnknownId) does not start on the reserved connector, the reserved id
    does, and its StartTransaction reaches the CSMS later with the reservationId."""
    fw = boot(csms, firmware, ocpp={"AllowOfflineTxForUnknownId": True})
    assert reserve(csms, 1, "RES1", 44) == "Accepted"
    wait_status(csms, "Reserved")
    csms.stop(graceful=False)
    assert wait_until(lambda: not fw.station.rpc.connected)
    fw.settle()
    refused(fw, csms, "OTHER")
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "RES1")
    assert wait_until(lambda: fw.station.services.connectors[1].tx is not None)
    assert stored(fw) == []
    mark = len(csms.received)
    csms.start()
    begin = csms.wait_for("StartTransaction", after=mark, timeout=10)
    assert begin["idTag"] == "RES1" and begin["reservationId"] == 44


# --------------------------------------------------------------------------- TC_047

def test_tc_047_reservation_expires(csms, firmware):
    """At expiryDate (by the CSMS's clock) the connector is Available again and another id
    charges there without a reservationId."""
    fw = boot(csms, firmware)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 47, expires_in=600) == "Accepted"
    wait_status(csms, "Reserved", after=mark)
    fw.advance(598)
    assert statuses(csms, after=mark) == ["Reserved"]
    assert stored(fw) == [(47, 1, "RES1")]
    fw.advance(3)
    wait_status(csms, "Available", after=mark)
    assert statuses(csms, after=mark) == ["Reserved", "Available"]
    assert stored(fw) == []

    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "OTHER")
    begin = started_with(csms, "OTHER", after=mark)
    assert "reservationId" not in begin
    assert not csms.violations


def test_expiry_date_already_past_is_rejected(csms, firmware):
    """An expiryDate before the CSMS's now is Rejected, even though by the charger's own
    clock (an hour behind) it still lies ahead."""
    fw = boot(csms, firmware)
    assert reserve(csms, 1, "RES1", 5, expires_in=-60) == "Rejected"
    fw.settle()
    assert stored(fw) == []
    assert statuses(csms) == ["Available"]


# --------------------------------------------------------------------------- TC_048

def test_tc_048_1_faulted_connector(csms, firmware):
    fw = boot(csms, firmware)
    act(fw, fw.sim.fault, "temperature", 1)
    wait_status(csms, "Faulted")
    assert reserve(csms, 1) == "Faulted"
    fw.settle()
    assert stored(fw) == []


@pytest.mark.parametrize("occupation", ["plugged", "charging", "id-waiting"])
def test_tc_048_2_occupied_connector(csms, firmware, occupation):
    """An EV plugged in (Preparing), a transaction running, or an accepted id waiting for
    its plug (Preparing, identification first): Occupied, and the waiting id still starts."""
    fw = boot(csms, firmware)
    if occupation == "id-waiting":
        act(fw, fw.sim.tap, "TAG1")
    else:
        act(fw, fw.sim.plug, 1)
    if occupation == "charging":
        act(fw, fw.sim.tap, "TAG1")
        started_with(csms, "TAG1")
    else:
        wait_status(csms, "Preparing")
    assert reserve(csms, 1) == "Occupied"
    fw.settle()
    assert stored(fw) == []
    if occupation == "id-waiting":
        act(fw, fw.sim.plug, 1)
        assert "reservationId" not in started_with(csms, "TAG1")


def test_tc_048_3_unavailable_connector(csms, firmware):
    fw = boot(csms, firmware)
    assert change_availability(csms, 1, "Inoperative") == "Accepted"
    wait_status(csms, "Unavailable")
    assert reserve(csms, 1) == "Unavailable"
    fw.settle()
    assert stored(fw) == []


def test_tc_048_4_connector_zero_not_supported_is_rejected(csms, firmware):
    """ReserveConnectorZeroSupported false (set in config.toml, read-only): a reservation of
    connector 0 is Rejected, one of a real connector is still Accepted; an unknown
    connector is Rejected too."""
    fw = boot(csms, firmware, ocpp={"ReserveConnectorZeroSupported": False})
    got = csms.call(CP, "GetConfiguration", {"key": ["ReserveConnectorZeroSupported"]})
    assert got["configurationKey"][0] == {"key": "ReserveConnectorZeroSupported",
                                          "readonly": True, "value": "false"}
    assert reserve(csms, 0, reservation_id=1) == "Rejected"
    assert reserve(csms, 7, reservation_id=2) == "Rejected"
    fw.settle()
    assert stored(fw) == []
    assert reserve(csms, 1, reservation_id=3) == "Accepted"
    assert stored(fw) == [(3, 1, "RES1")]


# --------------------------------------------------------------------------- TC_049 / 050

def test_tc_049_connector_zero_with_the_other_connector_unavailable(csms, firmware):
    """Two connectors, 2 Unavailable: a reservation of connector 0 leaves one free connector,
    so it shows Reserved and only the reserved id starts there, with the reservationId."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    assert change_availability(csms, 2, "Inoperative") == "Accepted"
    wait_status(csms, "Unavailable", cid=2)
    mark = len(csms.received)
    assert reserve(csms, 0, "RES1", 49) == "Accepted"
    wait_status(csms, "Reserved", cid=1, after=mark)
    assert stored(fw) == [(49, 0, "RES1")]

    refused(fw, csms, "OTHER")
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "RES1")
    begin = started_with(csms, "RES1", after=mark)
    assert begin["reservationId"] == 49
    assert stored(fw) == []
    assert statuses(csms, cid=2, after=mark) == []     # 2 stays Unavailable, untouched
    assert not csms.violations


def test_connector_zero_keeps_one_connector_free(csms, firmware):
    """Two free connectors and one reservation of connector 0: neither shows Reserved and
    another id may charge; once only one free connector remains, it shows Reserved and
    admits the reserved id only."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    mark = len(csms.received)
    assert reserve(csms, 0, "RES1", 50) == "Accepted"
    fw.settle()
    assert statuses(csms, 1, mark) == [] and statuses(csms, 2, mark) == []

    act(fw, fw.sim.plug, 2)
    act(fw, fw.sim.tap, "OTHER")
    begin = started_with(csms, "OTHER", cid=2, after=mark)
    assert "reservationId" not in begin
    wait_status(csms, "Reserved", cid=1, after=mark)
    assert stored(fw) == [(50, 0, "RES1")]

    refused(fw, csms, "OTHER2", cid=1)
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "RES1")
    assert started_with(csms, "RES1", cid=1, after=mark)["reservationId"] == 50
    assert stored(fw) == []


@pytest.mark.parametrize("cause", ["inoperative", "fault"])
def test_connector_zero_holds_the_last_free_connector_when_another_drops_out(
        csms, firmware, cause):
    """A connector-0 reservation on two free connectors: when connector 2 goes out of
    service (ChangeAvailability or a fault), connector 1 is the last free one and reports
    Reserved at once; when 2 is back, 1 is Available again."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    mark = len(csms.received)
    assert reserve(csms, 0, "RES1", 52) == "Accepted"
    fw.settle()
    assert statuses(csms, 1, mark) == []
    if cause == "inoperative":
        assert change_availability(csms, 2, "Inoperative") == "Accepted"
        wait_status(csms, "Unavailable", cid=2, after=mark)
    else:
        act(fw, fw.sim.fault, "temperature", 2)
        wait_status(csms, "Faulted", cid=2, after=mark)
    wait_status(csms, "Reserved", cid=1, after=mark)
    refused(fw, csms, "OTHER")

    if cause == "inoperative":
        assert change_availability(csms, 2, "Operative") == "Accepted"
    else:
        act(fw, fw.sim.clear_fault, "temperature", 2)
    wait_status(csms, "Available", cid=2, after=mark)
    wait_status(csms, "Available", cid=1, after=mark)
    assert statuses(csms, 1, mark) == ["Reserved", "Available"]


@pytest.mark.parametrize("connectors", [1, 2])
def test_direct_reservation_cannot_take_the_connector_zero_reservation_s_last_connector(
        csms, firmware, connectors):
    """Once a connector-0 reservation holds the last free connector, ReserveNow for that
    connector (another reservationId) is Occupied; with a spare connector it is Accepted."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS[:connectors])
    assert reserve(csms, 0, "RES0", 80) == "Accepted"
    if connectors == 2:
        assert reserve(csms, 1, "RES1", 81) == "Accepted"
    assert reserve(csms, connectors, "RES2", 82) == "Occupied"
    fw.settle()
    assert [r[0] for r in stored(fw)] == ([80, 81] if connectors == 2 else [80])
    mark = len(csms.received)
    act(fw, fw.sim.plug, connectors)
    act(fw, fw.sim.tap, "RES0")
    assert started_with(csms, "RES0", cid=connectors, after=mark)["reservationId"] == 80


def test_connector_zero_reservation_used_on_any_connector(csms, firmware):
    """The reserved id may use a connector-0 reservation on whichever connector it likes,
    even while more connectors are free than reservations hold."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    assert reserve(csms, 0, "RES1", 51) == "Accepted"
    fw.settle()
    mark = len(csms.received)
    act(fw, fw.sim.plug, 2)
    act(fw, fw.sim.tap, "RES1")
    assert started_with(csms, "RES1", cid=2, after=mark)["reservationId"] == 51
    assert stored(fw) == []
    assert statuses(csms, cid=1, after=mark) == []     # nothing held any more


def test_tc_050_1_charger_faulted(csms, firmware):
    fw = boot(csms, firmware)
    act(fw, fw.sim.fault, "ground", 0)
    wait_status(csms, "Faulted", cid=0)
    assert reserve(csms, 0) == "Faulted"
    fw.settle()
    assert stored(fw) == []


def test_tc_050_2_all_connectors_occupied(csms, firmware):
    """Every connector occupied (one charging, one with an EV waiting): Occupied; with one of
    them free again the same request is Accepted."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "TAG1")
    started_with(csms, "TAG1")
    act(fw, fw.sim.plug, 2)
    wait_status(csms, "Preparing", cid=2)
    assert reserve(csms, 0) == "Occupied"
    fw.settle()
    assert stored(fw) == []
    act(fw, fw.sim.unplug, 2)
    assert reserve(csms, 0) == "Accepted"


def test_tc_050_3_charger_unavailable(csms, firmware):
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    assert change_availability(csms, 0, "Inoperative") == "Accepted"
    wait_status(csms, "Unavailable", cid=2)
    assert reserve(csms, 0) == "Unavailable"
    fw.settle()
    assert stored(fw) == []


def test_tc_050_4_connector_zero_rejected(csms, firmware):
    """ReserveConnectorZeroSupported false: connector 0 is Rejected even with every connector
    free; with it true the same request is Accepted."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS,
              ocpp={"ReserveConnectorZeroSupported": False})
    assert reserve(csms, 0, reservation_id=504) == "Rejected"
    fw.settle()
    assert stored(fw) == []
    fw.stop()
    fw.settings.ocpp["ReserveConnectorZeroSupported"] = "true"
    mark = len(csms.received)
    fw.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 2, after=mark)
    fw.settle()
    assert reserve(csms, 0, reservation_id=504) == "Accepted"


# --------------------------------------------------------------------------- TC_051 / 052

def test_tc_051_cancel_reservation(csms, firmware):
    """CancelReservation: Accepted, Available again, and another id charges without a
    reservationId."""
    fw = boot(csms, firmware)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 51) == "Accepted"
    wait_status(csms, "Reserved", after=mark)
    assert cancel(csms, 51) == "Accepted"
    wait_status(csms, "Available", after=mark)
    assert statuses(csms, after=mark) == ["Reserved", "Available"]
    assert stored(fw) == []

    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "OTHER")
    assert "reservationId" not in started_with(csms, "OTHER", after=mark)
    assert not csms.violations


def test_tc_052_cancel_unknown_reservation_is_rejected(csms, firmware):
    """An unknown reservationId is Rejected and the existing reservation stays in force."""
    fw = boot(csms, firmware)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 52) == "Accepted"
    wait_status(csms, "Reserved", after=mark)
    assert cancel(csms, 99) == "Rejected"
    fw.settle()
    assert statuses(csms, after=mark) == ["Reserved"]
    assert stored(fw) == [(52, 1, "RES1")]
    refused(fw, csms, "OTHER")
    assert cancel(csms, 52) == "Accepted"
    assert cancel(csms, 52) == "Rejected"               # already gone


# --------------------------------------------------------------------------- TC_053

def test_tc_053_use_by_parent_id_tag(csms, firmware):
    """Reserved for RES1 with parentIdTag GROUP: MEMBER, whose Authorize.conf gives GROUP,
    starts on the reserved connector with the reservationId; OTHER (another group) does not."""
    fw = boot(csms, firmware)
    parents = {"MEMBER": "GROUP", "OTHER": "ELSEWHERE"}
    csms.authorize_response = lambda cp, payload: {"idTagInfo": {
        "status": "Accepted", "parentIdTag": parents.get(payload["idTag"], "NONE")}}
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 53, parent="GROUP") == "Accepted"
    wait_status(csms, "Reserved", after=mark)

    refused(fw, csms, "OTHER")
    assert statuses(csms, after=mark)[-1] == "Reserved"
    mark = len(csms.received)
    act(fw, fw.sim.tap, "MEMBER")
    wait_status(csms, "Preparing", after=mark)
    act(fw, fw.sim.plug, 1)
    begin = started_with(csms, "MEMBER", after=mark)
    assert begin["reservationId"] == 53
    assert stored(fw) == []
    assert not csms.violations


@pytest.mark.parametrize("authorize_remote", [True, False])
def test_reservations_with_a_parent_id_tag_admit_remote_starts_too(csms, firmware,
                                                                    authorize_remote):
    """Reserved for RES1 with parentIdTag GROUP (section 5.13), as for a card presented there:
    a RemoteStartTransaction for an id whose parent is unknown is Accepted and the parent is
    learnt with an Authorize.req, whatever AuthorizeRemoteTxRequests; OTHER (ELSEWHERE) then
    starts nothing and, known from the cache, is Rejected at once; MEMBER (GROUP) starts on
    the reserved connector with the reservationId."""
    fw = boot(csms, firmware, ocpp={"AuthorizeRemoteTxRequests": authorize_remote})
    parents = {"MEMBER": "GROUP", "OTHER": "ELSEWHERE"}
    csms.authorize_response = lambda cp, payload: {"idTagInfo": {
        "status": "Accepted", "parentIdTag": parents[payload["idTag"]]}}
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 53, parent="GROUP") == "Accepted"
    wait_status(csms, "Reserved", after=mark)

    assert remote_start(csms, "OTHER") == "Accepted"
    assert csms.wait_for("Authorize", after=mark)["idTag"] == "OTHER"
    act(fw, fw.sim.plug, 1)
    fw.advance(5)
    assert starts(csms, mark) == [] and fw.sim.status()["connectors"]["1"]["contactor"] == "open"
    asked = len(csms.records("Authorize"))
    assert remote_start(csms, "OTHER") == "Rejected"
    fw.settle()
    assert len(csms.records("Authorize")) == asked
    assert stored(fw) == [(53, 1, "RES1")]

    assert remote_start(csms, "MEMBER") == "Accepted"
    begin = started_with(csms, "MEMBER", after=mark)
    assert begin["reservationId"] == 53
    assert [a["idTag"] for a in csms.records("Authorize", after=mark)] == ["OTHER", "MEMBER"]
    assert stored(fw) == []
    assert not csms.violations


# --------------------------------------------------------------------------- replacing

def test_same_reservation_id_replaces_the_old_reservation(csms, firmware):
    """ReserveNow with a reservationId already in use replaces that reservation (id and
    expiry); a different reservationId on the same connector is Occupied."""
    fw = boot(csms, firmware)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 60, expires_in=600) == "Accepted"
    wait_status(csms, "Reserved", after=mark)
    assert reserve(csms, 1, "RES2", 61, expires_in=1800) == "Occupied"
    assert reserve(csms, 1, "RES2", 60, expires_in=1800) == "Accepted"
    assert stored(fw) == [(60, 1, "RES2")]

    fw.advance(700)                                    # past the first expiry
    assert statuses(csms, after=mark) == ["Reserved"]
    refused(fw, csms, "RES1")
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "RES2")
    assert started_with(csms, "RES2", after=mark)["reservationId"] == 60


def test_same_reservation_id_moves_to_another_connector(csms, firmware):
    """Re-using a reservationId for another connector frees the first one."""
    fw = boot(csms, firmware, connectors=TWO_CONNECTORS)
    mark = len(csms.received)
    assert reserve(csms, 1, "RES1", 62) == "Accepted"
    wait_status(csms, "Reserved", cid=1, after=mark)
    assert reserve(csms, 2, "RES1", 62) == "Accepted"
    wait_status(csms, "Reserved", cid=2, after=mark)
    wait_status(csms, "Available", cid=1, after=mark)
    assert stored(fw) == [(62, 2, "RES1")]


# --------------------------------------------------------------------------- persistence

def test_reservation_survives_a_power_cut(csms, firmware):
    """After a power cut the reservation is still there: Reserved at boot, another id is
    refused, the reserved id starts with the reservationId."""
    fw = boot(csms, firmware)
    assert reserve(csms, 1, "RES1", 70) == "Accepted"
    wait_status(csms, "Reserved")
    fw.cut_power()

    mark = len(csms.received)
    fw.start()
    csms.wait_for("BootNotification", after=mark)
    wait_status(csms, "Reserved", after=mark)
    fw.settle()
    assert stored(fw) == [(70, 1, "RES1")]
    refused(fw, csms, "OTHER")
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    act(fw, fw.sim.tap, "RES1")
    assert started_with(csms, "RES1", after=mark)["reservationId"] == 70


def test_reservation_expires_on_time_after_a_power_cut(csms, firmware):
    """The expiry timer is re-armed after a power cut, still by the CSMS's clock."""
    fw = boot(csms, firmware)
    assert reserve(csms, 1, "RES1", 71, expires_in=900) == "Accepted"
    wait_status(csms, "Reserved")
    fw.advance(300)
    fw.cut_power()

    mark = len(csms.received)
    fw.start()
    wait_status(csms, "Reserved", after=mark)
    fw.advance(598)
    assert statuses(csms, after=mark) == ["Reserved"]
    assert stored(fw) == [(71, 1, "RES1")]
    fw.advance(3)
    wait_status(csms, "Available", after=mark)
    assert stored(fw) == []


def test_reservation_that_expired_while_off_is_gone(csms, firmware):
    """A reservation whose expiryDate passed while the charger was off is not restored."""
    fw = boot(csms, firmware)
    assert reserve(csms, 1, "RES1", 72, expires_in=600) == "Accepted"
    wait_status(csms, "Reserved")
    fw.cut_power()
    fw.clock.advance(1200)

    mark = len(csms.received)
    fw.start()
    wait_status(csms, "Available", after=mark)
    fw.settle()
    assert "Reserved" not in statuses(csms, after=mark)
    assert stored(fw) == []
