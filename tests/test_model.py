"""The model's services alone (chargepoint/model/), built by `build_services` on a real
SQLite file, with the RPC endpoint as their link and no Station, socket or thread.

Each test drives one service through its own methods and reads the facts, the actions
(`services.effects`) and the CALLs queued on the endpoint.
"""
from __future__ import annotations

import json

import pytest

from chargepoint import actions as act
from chargepoint.model.authorization import Decision
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import ConnectorInfo
from chargepoint.model.plug_wait import Pending
from chargepoint.model.reservations import Reservation
from chargepoint.model.services import Services, build_services
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.protocol.rpc import RpcEndpoint
from chargepoint.store import Store
from hal import events as he
from hal.interfaces import MeterReading, PilotState

NOW = 1_000.0
WALL = 1_780_000_000.0          # 2026-05-28: a system clock that looks set
BOOT = {"chargePointVendor": "v", "chargePointModel": "m"}


def build(tmp_path, ocpp=None, connectors=2, endpoint=None):
    store = Store(tmp_path / "cp.db")
    keys = OcppKeys(store, ocpp or {}, {})
    rpc = endpoint or RpcEndpoint()
    infos = [ConnectorInfo(i, max_current_a=32.0, has_lock=False)
             for i in range(1, connectors + 1)]
    return build_services(keys, store, StationClock(NOW, WALL), rpc, infos, BOOT, 30.0), rpc


@pytest.fixture
def services(tmp_path) -> Services:
    return build(tmp_path)[0]


def reading(wh: float) -> MeterReading:
    return MeterReading(energy_import_wh=wh, time=NOW)


def online(services: Services, rpc: RpcEndpoint) -> None:
    rpc.connection_made()
    services.link.registration = "Accepted"


# ------------------------------------------------------------------ connectors and view
def test_a_connector_offers_current_only_to_an_authorized_transaction(services):
    conn, view = services.connectors[1], services.view
    conn.pilot = PilotState.C
    assert view.offered_current(conn) is None and not view.contactor_closed(conn)
    assert view.status(conn) == "Preparing"
    services.transactions.begin(1, "TAG", None, 100.0)
    conn.tx = services.transactions.ledger.open_transactions()[0]
    assert view.offered_current(conn) == 32.0 and view.contactor_closed(conn)
    assert view.status(conn) == "Charging"
    conn.cable_ampacity = 20.0
    assert view.offered_current(conn) == 20.0
    conn.apply_fault(he.HardwareFault(1, he.FaultCode.GROUND_FAILURE, True, "x"))
    assert view.status(conn) == "Faulted" and view.offered_current(conn) is None


def test_changed_marks_a_connector_once_until_taken(services):
    connectors = services.connectors
    connectors.take_changed()
    connectors[1].changed()
    connectors[1].changed()
    assert connectors.take_changed() == {1}
    assert connectors.take_changed() == set()


# ------------------------------------------------------------------ availability
def test_availability_is_scheduled_while_busy_and_applied_when_the_transaction_ends(tmp_path):
    services, _ = build(tmp_path)
    conn = services.connectors[1]
    conn.starting = True
    assert services.availability.change(1, False) == "Scheduled"
    assert conn.operative
    conn.starting = False
    services.availability.apply_scheduled()
    assert not conn.operative and services.view.status(conn) == "Unavailable"
    again, _ = build(tmp_path)                      # stored: a restart keeps it
    assert not again.connectors[1].operative


def test_the_charger_going_out_takes_no_new_session(services):
    services.connectors[2].starting = True
    assert services.availability.change(0, False) == "Scheduled"
    assert not services.availability.idle(services.connectors[1])


# ------------------------------------------------------------------ reservations
def test_a_reservation_admits_its_id_or_its_group_only(services):
    conn = services.connectors[1]
    services.reservations.add(Reservation(7, 1, "TAG1", "GROUP", WALL + 3600))
    reservations = services.reservations
    assert reservations.reserved(conn) and services.view.status(conn) == "Reserved"
    assert reservations.free_for(conn, "tag1", None)
    assert reservations.free_for(conn, "OTHER", "group")
    assert not reservations.free_for(conn, "OTHER", None)
    assert reservations.free_for(services.connectors[2], "OTHER", None)


def test_a_reservation_of_connector_zero_holds_the_last_free_connector(services):
    services.reservations.add(Reservation(8, 0, "TAG1", None, WALL + 3600))
    one, two = services.connectors[1], services.connectors[2]
    assert not services.reservations.reserved(one)
    two.starting = True                              # only connector 1 is left free
    assert services.reservations.reserved(one)
    assert services.reservations.match(one, "TAG1", None).reservation_id == 8


def test_a_reservation_expires_on_its_timer(services):
    services.clock.set_csms_time("2026-05-28T00:00:00Z")
    services.reservations.add(Reservation(9, 1, "TAG1", None,
                                          services.clock.station_time() + 60))
    services.timers.fire_due(NOW + 59)
    assert 9 in services.reservations.active
    services.timers.fire_due(NOW + 61)
    assert services.reservations.active == {}


# ------------------------------------------------------------------ plug wait
def test_an_accepted_id_waits_connection_timeout_for_a_plug(tmp_path):
    services, _ = build(tmp_path, {"ConnectionTimeOut": "30"})
    decision = Decision(True, {"status": "Accepted"}, "csms")
    services.plug_wait.wait(Pending("TAG1", decision))
    assert services.view.status(services.connectors[1]) == "Preparing"
    services.timers.fire_due(NOW + 31)
    assert services.plug_wait.pending is None
    assert services.view.status(services.connectors[1]) == "Available"


# ------------------------------------------------------------------ authorization
def test_offline_rules_decide_without_the_csms(tmp_path):
    services, _ = build(tmp_path, {"AllowOfflineTxForUnknownId": "false",
                                   "LocalAuthorizeOffline": "true"})
    auth = services.authorization
    assert not auth.decide_offline("UNKNOWN").accepted
    services.keys.change("AllowOfflineTxForUnknownId", "true")
    assert auth.decide_offline("UNKNOWN").source == "unknown-offline"
    auth.remember("CACHED", {"status": "Blocked"})
    decision = auth.decide_offline("CACHED")
    assert not decision.accepted and decision.source == "cache"


def test_offline_authorize_decides_at_once_and_online_asks_the_csms(tmp_path):
    services, rpc = build(tmp_path)
    decisions = []
    services.keys.change("AllowOfflineTxForUnknownId", "true")
    services.authorization.authorize("T1", decisions.append)
    assert decisions[-1].source == "unknown-offline" and not rpc.busy()
    online(services, rpc)
    services.authorization.authorize("T2", decisions.append)
    assert rpc.queued_actions() == ["Authorize"] and len(decisions) == 1


def test_a_local_list_update_takes_its_ids_out_of_the_cache(services):
    auth = services.authorization
    auth.remember("TAG1", {"status": "Accepted"})
    auth.update_local_list(1, [{"idTag": "TAG1", "idTagInfo": {"status": "Blocked"}}], True)
    assert auth.cache_get("TAG1") is None
    assert auth.local_entry("TAG1") == ({"status": "Blocked"}, "list")


# ------------------------------------------------------------------ transactions
def test_a_transaction_begins_and_ends_with_its_messages_in_one_queue(services):
    tx = services.transactions.begin(1, "TAG1", None, 1000.4)
    services.transactions.end(tx, "Local", 1500.0)
    queued = [(i.action, i.payload) for i in services.outbox]
    assert [a for a, _ in queued] == ["StartTransaction", "StopTransaction"]
    assert queued[0][1]["meterStart"] == 1000 and queued[1][1]["meterStop"] == 1500
    assert tx.local_id in services.transactions.ledger.stopped


def test_a_transaction_timestamp_never_precedes_its_start(services):
    tx = services.transactions.begin(1, "TAG1", None, 0.0)
    services.clock.observe(NOW + 10, WALL - 3600)       # the system clock set back an hour
    assert services.transactions.stamp(NOW + 10, tx) > services.transactions.stamp(NOW, tx)


def test_a_start_confirmation_gives_the_id_and_may_deauthorize(services):
    tx = services.transactions.begin(1, "TAG1", None, 0.0)
    head = services.outbox.head()
    confirmed = services.transactions.delivered(head, {"transactionId": 42,
                                                       "idTagInfo": {"status": "Blocked"}})
    assert tx.transaction_id == 42 and confirmed.deauthorized
    assert confirmed.id_tag == "TAG1" and len(services.outbox) == 0


# ------------------------------------------------------------------ sessions
def test_a_plug_then_an_offline_tag_start_a_transaction_on_a_fresh_reading(tmp_path):
    services, _ = build(tmp_path, {"AllowOfflineTxForUnknownId": "true"})
    conn = services.connectors[1]
    services.sessions.on_hardware(conn, he.PilotStateChanged(1, PilotState.B))
    services.effects.take()
    services.sessions.on_tag("TAG1")
    assert services.effects.take() == [act.ReadMeter(1)] and conn.starting
    services.sessions.on_hardware(conn, he.MeterSampled(1, reading(2000.0)))
    assert conn.tx is not None and conn.tx.meter_start_wh == 2000
    assert [i.action for i in services.outbox] == ["StartTransaction"]


def test_a_blocking_fault_stops_the_transaction_with_its_reason(tmp_path):
    services, _ = build(tmp_path)
    conn = services.connectors[1]
    conn.pilot = PilotState.C
    conn.tx = services.transactions.begin(1, "TAG1", None, 0.0)
    services.sessions.on_hardware(conn, he.HardwareFault(1, he.FaultCode.GROUND_FAILURE,
                                                         True, "x"))
    assert conn.tx.stopping and conn.tx.stop_reason == "EmergencyStop"
    services.sessions.on_hardware(conn, he.MeterSampled(1, reading(10.0)))
    stop = [i.payload for i in services.outbox if i.action == "StopTransaction"]
    assert stop and stop[0]["reason"] == "EmergencyStop" and conn.tx is None


# ------------------------------------------------------------------ status reports, boot
def test_statuses_are_reported_only_online_and_only_when_they_change(tmp_path):
    services, rpc = build(tmp_path)
    services.status_reports.report(1)
    assert not rpc.busy()
    online(services, rpc)
    services.status_reports.report(1)
    services.status_reports.report(1)
    assert rpc.queued_actions() == ["StatusNotification"]


def test_an_accepted_boot_sets_the_clock_and_schedules_the_heartbeat(tmp_path):
    services, rpc = build(tmp_path)
    rpc.connection_made()
    services.boot.connected()
    out = rpc.next_call(NOW, False, services.delivery)
    assert out.action == "BootNotification"
    rpc.receive(json.dumps([3, out.unique_id, {"status": "Accepted", "interval": 60,
                                               "currentTime": "2026-06-01T00:00:00Z"}]))
    out.on_result({"status": "Accepted", "interval": 60,
                   "currentTime": "2026-06-01T00:00:00Z"})
    assert services.link.accepted and services.clock.csms_offset is not None
    assert services.timers.when("heartbeat") == NOW + 60
    assert rpc.queued_actions().count("StatusNotification") == 3


# ------------------------------------------------------------------ metering
def test_a_sample_is_due_every_interval_from_the_transaction_start(tmp_path):
    services, _ = build(tmp_path, {"MeterValueSampleInterval": "60"})
    conn = services.connectors[1]
    conn.tx = services.transactions.begin(1, "TAG1", None, 0.0)
    services.metering.transaction_started(conn, conn.tx)
    assert services.timers.when("sample:1") == NOW + 60
    services.clock.observe(NOW + 60)
    services.timers.fire_due(NOW + 60)
    services.sessions.on_hardware(conn, he.MeterSampled(1, reading(500.0)))
    values = [i.payload for i in services.outbox if i.action == "MeterValues"]
    assert values[0]["meterValue"][0]["sampledValue"][0]["value"] == "500"
    assert services.timers.when("sample:1") == NOW + 120
