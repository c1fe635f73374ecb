"""What the CSMS may ask before, while and after it registers the charger (OCPP 1.6 4.2).

One test per row of the table in chargepoint/protocol/registration.py, on the station core fed
frames directly (a fresh core per registration state, its answer compared with the answer
an Accepted one gives); then the rules end to end against the loopback CSMS: Pending
refuses a remote start and a remote stop of a running transaction but serves the
configuration and triggers, Rejected answers nothing at all.
"""
import json

import pytest

from chargepoint import events as ev
from chargepoint import actions as act
from chargepoint.protocol import ocppj
from chargepoint.handlers import HANDLERS
from chargepoint.protocol.registration import REFUSE, SERVE, SILENT, STATES, TABLE, allows, refusal
from tests.harness import STATION_NOW, base_connector, wait_until

CP = "CP-1"

#: A request of each CSMS-initiated action that an Accepted charger would act upon.
SAMPLES = {
    "CancelReservation": {"reservationId": 1},
    "ChangeAvailability": {"connectorId": 1, "type": "Inoperative"},
    "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "120"},
    "ClearCache": {},
    "ClearChargingProfile": {},
    "DataTransfer": {"vendorId": "com.example", "messageId": "x"},
    "GetCompositeSchedule": {"connectorId": 1, "duration": 60},
    "GetConfiguration": {"key": ["HeartbeatInterval"]},
    "GetDiagnostics": {"location": "ftp://127.0.0.1/files/"},
    "GetLocalListVersion": {},
    "RemoteStartTransaction": {"idTag": "TAG1", "connectorId": 1},
    "RemoteStopTransaction": {"transactionId": 1},
    "ReserveNow": {"connectorId": 1, "expiryDate": "2026-01-01T01:00:00Z", "idTag": "TAG1",
                   "reservationId": 1},
    "Reset": {"type": "Soft"},
    "SendLocalList": {"listVersion": 1, "updateType": "Full"},
    "SetChargingProfile": {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Relative", "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                  "limit": 10}]}}},
    "TriggerMessage": {"requestedMessage": "StatusNotification", "connectorId": 1},
    "UnlockConnector": {"connectorId": 1},
    "UpdateFirmware": {"location": "http://127.0.0.1/release.cpr",
                       "retrieveDate": "2026-01-01T00:00:00Z"},
    # Security whitepaper
    "CertificateSigned": {"certificateChain": "not a chain"},
    "DeleteCertificate": {"certificateHashData": {
        "hashAlgorithm": "SHA256", "issuerNameHash": "00", "issuerKeyHash": "00",
        "serialNumber": "1"}},
    "ExtendedTriggerMessage": {"requestedMessage": "Heartbeat"},
    "GetInstalledCertificateIds": {"certificateType": "CentralSystemRootCertificate"},
    "GetLog": {"logType": "SecurityLog", "requestId": 1,
               "log": {"remoteLocation": "http://127.0.0.1/upload"}},
    "InstallCertificate": {"certificateType": "ManufacturerRootCertificate",
                           "certificate": "not a certificate"},
    "SignedUpdateFirmware": {"requestId": 1, "firmware": {
        "location": "http://127.0.0.1/release.tar", "retrieveDateTime": "2026-01-01T00:00:00Z",
        "signingCertificate": "not a certificate", "signature": "c2ln"}},
}


def make_station(tmp_path, registration):
    from chargepoint.model.connector import ConnectorInfo
    from chargepoint.ocpp_keys import OcppKeys
    from chargepoint.station import Station, StationConfig
    from chargepoint.store import Store

    tmp_path.mkdir()
    store = Store(tmp_path / "cp.db")
    st = Station(StationConfig("CP", {"chargePointVendor": "v", "chargePointModel": "m"},
                               [ConnectorInfo(1, max_current_a=32)]),
                 OcppKeys(store, {}, {}), store, STATION_NOW)
    st.services.link.registration = registration
    return st, store


def answer(tmp_path, registration, action, payload):
    """The frame a fresh core in `registration` answers [2, "q1", action, payload] with
    (None: it answers nothing), and the actions that came with it."""
    st, store = make_station(tmp_path / registration, registration)
    try:
        st.handle(ev.Tick(), STATION_NOW)          # the outputs set at start
        out = st.handle(ev.FrameReceived(json.dumps([2, "q1", action, payload])),
                        STATION_NOW + 1)
    finally:
        store.close()
    answers = [json.loads(a.text) for a in out if isinstance(a, act.SendFrame)
               and json.loads(a.text)[:2] in ([3, "q1"], [4, "q1"])]
    assert len(answers) <= 1
    return (answers[0] if answers else None), out


def test_the_table_has_a_row_for_every_csms_initiated_message():
    assert set(TABLE) == ocppj.CSMS_ACTIONS
    assert all(set(row) <= {SERVE, REFUSE, SILENT} for row in TABLE.values())
    assert all(row[STATES.index("Accepted")] == SERVE for row in TABLE.values())
    assert set(SAMPLES) == {a for a in TABLE if a in HANDLERS}   # the rest: NotSupported


@pytest.mark.parametrize("action", sorted(TABLE))
def test_what_each_registration_state_allows(tmp_path, caplog, action):
    """SERVE: the answer an Accepted charger gives; REFUSE: the message's Rejected status
    (or a CALLERROR), nothing set in motion, and the log says why (a remote stop of a
    running transaction is refused end to end below); SILENT: no answer, nothing set in
    motion."""
    payload = SAMPLES.get(action, {})
    accepted, _ = answer(tmp_path, "Accepted", action, payload)
    assert accepted is not None
    for state in ("new", "Pending", "Rejected"):
        got, actions = answer(tmp_path, state, action, payload)
        rule = allows(state, action)
        assert rule == TABLE[action][STATES.index(state)]
        if rule == SERVE:
            assert got == accepted, state
        elif rule == REFUSE:
            if refusal(action) is not None:
                assert got == [3, "q1", refusal(action)], state
            else:
                assert got[:3] == [4, "q1", "GenericError"], state
            assert f"{action} is not allowed while the registration is " in caplog.text
            assert not [a for a in actions if not isinstance(a, (act.SendFrame,
                                                                 act.ReportStatus))]
        else:
            assert got is None, state
            assert not [a for a in actions if not isinstance(a, act.ReportStatus)], state


@pytest.mark.parametrize("action,code", [("NoSuchAction", "NotImplemented"),
                                         ("Heartbeat", "NotSupported")])
def test_other_actions_get_their_callerror_except_while_rejected(tmp_path, action, code):
    for state in STATES:
        got, _ = answer(tmp_path, state, action, {})
        assert (got is None) if state == "Rejected" else (got[:3] == [4, "q1", code]), state


def test_a_refusal_is_the_rejected_status_where_the_answer_has_one():
    assert refusal("RemoteStartTransaction") == {"status": "Rejected"}
    assert refusal("RemoteStopTransaction") == {"status": "Rejected"}
    assert refusal("UnlockConnector") is None          # Unlocked, UnlockFailed, NotSupported
    assert refusal("GetConfiguration") is None


# --------------------------------------------------------------------------- end to end

def charge(fw, csms, tag="TAG1"):
    mark = len(csms.received)
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()
    begin = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    return begin


def test_while_pending_remote_start_and_stop_are_rejected_but_configuration_is_served(
        csms, firmware):
    """A running transaction, then the CSMS triggers a BootNotification and answers Pending:
    RemoteStopTransaction of that transaction and RemoteStartTransaction are Rejected and
    change nothing; GetConfiguration, ChangeConfiguration and TriggerMessage are served.
    Accepted again, the same RemoteStopTransaction stops the transaction."""
    fw = firmware({"connectors": [base_connector(id=1), base_connector(id=2)]})
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 2)
    fw.settle()
    tx_id = charge(fw, csms).reply["transactionId"]

    csms.boot_response = {"status": "Pending", "interval": 60}
    mark = len(csms.received)
    assert csms.call(CP, "TriggerMessage", {"requestedMessage": "BootNotification"}) == {
        "status": "Accepted"}
    csms.wait_for("BootNotification", after=mark)
    fw.settle()
    assert fw.station.services.link.registration == "Pending"

    assert csms.call(CP, "RemoteStopTransaction", {"transactionId": tx_id}) == {
        "status": "Rejected"}
    fw.sim.plug(2)
    fw.settle()
    assert csms.call(CP, "RemoteStartTransaction", {"idTag": "TAG2", "connectorId": 2}) == {
        "status": "Rejected"}
    assert csms.call(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]})[
        "configurationKey"][0]["key"] == "HeartbeatInterval"
    assert csms.call(CP, "ChangeConfiguration", {"key": "MeterValueSampleInterval",
                                                 "value": "0"}) == {"status": "Accepted"}
    assert csms.call(CP, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"}
    csms.wait_for("Heartbeat", after=mark)
    fw.settle()
    status = fw.sim.status()["connectors"]
    assert status["1"]["contactor"] == "closed", "the refused remote stop stopped it"
    assert status["2"]["contactor"] == "open", "the refused remote start started something"
    assert not csms.records(("Authorize", "StopTransaction"), after=mark)

    csms.boot_response = {"status": "Accepted", "interval": 300}
    fw.advance(60)
    assert wait_until(lambda: fw.station.services.link.registration == "Accepted")
    assert csms.call(CP, "RemoteStopTransaction", {"transactionId": tx_id}) == {
        "status": "Accepted"}
    assert csms.wait_for("StopTransaction", after=mark)["reason"] == "Remote"
    csms.assert_no_violations()


def test_while_rejected_no_csms_message_is_answered(csms, firmware):
    """Not a configuration request, not a remote start, not a trigger, not even an unknown
    action's CALLERROR; once Accepted at the next BootNotification, all are answered."""
    csms.boot_response = {"status": "Rejected", "interval": 60}
    fw = firmware()
    csms.wait_for("BootNotification")
    fw.settle()
    assert fw.station.services.link.registration == "Rejected"
    seen = fw.station.rpc.stats["frames_in"]
    calls = [[2, "r1", "GetConfiguration", {}],
             [2, "r2", "RemoteStartTransaction", {"idTag": "TAG1"}],
             [2, "r3", "TriggerMessage", {"requestedMessage": "StatusNotification"}],
             [2, "r4", "NoSuchAction", {}]]
    for call in calls:
        csms.send_raw(CP, json.dumps(call), expect_reply=False)
    assert wait_until(lambda: fw.station.rpc.stats["frames_in"] == seen + len(calls))
    fw.settle()
    from_charger = [json.loads(e.text) for e in csms.log
                    if e.direction == "in" and e.cp_id == CP]
    assert [f for f in from_charger if f[0] != 2] == [], "the charger answered"
    assert [f[2] for f in from_charger] == ["BootNotification"]

    csms.boot_response = {"status": "Accepted", "interval": 300}
    fw.advance(60)
    assert wait_until(lambda: fw.station.services.link.registration == "Accepted")
    assert "configurationKey" in csms.call(CP, "GetConfiguration", {})
