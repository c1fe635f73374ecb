"""Boot, registration and heartbeat against the loopback CSMS, on a virtual clock."""
from datetime import datetime

import pytest

from chargepoint import __version__
from tests.harness import wait_until


def actions(csms):
    return [r.action for r in csms.received]


def test_tc001_cold_boot_accepted_reports_status_and_heartbeats(csms, firmware):
    csms.boot_response = {"status": "Accepted", "interval": 120}
    fw = firmware()
    boot = csms.wait_for("BootNotification")
    assert boot["chargePointVendor"] == "TestVendor"
    assert boot["chargePointModel"] == "TestModel"
    assert boot["chargePointSerialNumber"] == "SN-1"
    assert boot["firmwareVersion"]
    s0 = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 0)
    s1 = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    for sn in (s0, s1):
        assert sn["status"] == "Available" and sn["errorCode"] == "NoError"
        assert datetime.fromisoformat(sn["timestamp"].replace("Z", "+00:00")).year >= 2020
    fw.settle()
    assert actions(csms) == ["BootNotification", "StatusNotification", "StatusNotification"]
    assert fw.runtime.keys.int("HeartbeatInterval") == 120

    fw.advance(119)
    assert "Heartbeat" not in actions(csms)
    fw.advance(1)
    assert actions(csms).count("Heartbeat") == 1
    fw.advance(120 * 5)
    assert actions(csms).count("Heartbeat") == 6
    assert not csms.violations


def test_a_makers_firmware_version_carries_the_release_number(csms, firmware):
    """`firmware_version = "ACME-{version}"`: the maker's name, and still a new string
    with each release, so the Central System sees an update take."""
    firmware({"identity": {"firmware_version": "ACME-{version}"}})
    boot = csms.wait_for("BootNotification")
    assert boot["firmwareVersion"] == f"ACME-{__version__}"


def test_boot_rejected_sends_nothing_else_and_retries_after_interval(csms, firmware):
    answers = iter([{"status": "Rejected", "interval": 60},
                    {"status": "Accepted", "interval": 300}])
    csms.boot_response = lambda cp_id, payload: next(answers)
    fw = firmware()
    csms.wait_for("BootNotification")
    fw.advance(59)
    assert actions(csms) == ["BootNotification"]
    # A CSMS-side trigger of StatusNotification is not possible while Rejected; the
    # charger stays silent until the retry.
    fw.advance(1)
    assert wait_until(lambda: actions(csms)[:2] == ["BootNotification", "BootNotification"])
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    assert fw.station.services.link.registration == "Accepted"


def test_tc002_pending_answers_configuration_and_trigger_then_retries(csms, firmware):
    answers = iter([{"status": "Pending", "interval": 30},
                    {"status": "Accepted", "interval": 300}])
    csms.boot_response = lambda cp_id, payload: next(answers)
    fw = firmware()
    csms.wait_for("BootNotification")
    fw.settle()
    every = csms.call("CP-1", "GetConfiguration", {})          # the OCTT's step: no key
    assert {"key": "HeartbeatInterval", "readonly": False, "value": "300"} in \
        every["configurationKey"] and not every.get("unknownKey")
    got = csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert got["configurationKey"] == [{"key": "HeartbeatInterval", "readonly": False,
                                        "value": "300"}]
    assert csms.call("CP-1", "ChangeConfiguration",
                     {"key": "MeterValueSampleInterval", "value": "30"}) == {"status": "Accepted"}
    assert csms.call("CP-1", "TriggerMessage",
                     {"requestedMessage": "Heartbeat"}) == {"status": "Accepted"}
    csms.wait_for("Heartbeat")
    fw.settle()
    # Nothing but what was asked for: no status notifications while Pending.
    assert actions(csms) == ["BootNotification", "Heartbeat"]
    fw.advance(30)
    assert wait_until(lambda: actions(csms).count("BootNotification") == 2)
    csms.wait_for("StatusNotification")
    assert fw.runtime.keys.int("MeterValueSampleInterval") == 30


def test_boot_without_answer_is_retried(csms, firmware):
    from chargepoint.csms.server import NO_RESPONSE

    answers = iter([NO_RESPONSE])
    csms.handlers["BootNotification"] = lambda cp_id, payload: next(
        answers, {"status": "Accepted", "interval": 300})
    fw = firmware({"csms": {"response_timeout_s": 10}})
    csms.wait_for("BootNotification")
    fw.advance(10)  # the timeout
    fw.advance(30)  # the retry delay
    assert wait_until(lambda: actions(csms).count("BootNotification") == 2)
    csms.wait_for("StatusNotification")


def test_clock_offset_from_boot_current_time(csms, firmware):
    from datetime import timezone

    csms.now = lambda: datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    firmware()
    sn = csms.wait_for("StatusNotification")
    assert sn["timestamp"].startswith("2031-05-06T07:08:09")


def test_timestamps_are_never_1970_before_the_clock_is_known(tmp_path, csms):
    """A controller without RTC boots at the epoch: statuses carry no timestamp until the
    CSMS tells the time, and never a 1970 one."""
    from chargepoint.station import Station, StationConfig
    from chargepoint.model.connector import ConnectorInfo
    from chargepoint.ocpp_keys import OcppKeys
    from chargepoint.store import Store

    store = Store(tmp_path / "s.db")
    keys = OcppKeys(store, {}, {})
    st = Station(StationConfig("CP", {"chargePointVendor": "v", "chargePointModel": "m"},
                               [ConnectorInfo(1)]), keys, store, now=120.0)
    assert st.services.clock.timestamp() is None
    assert "timestamp" not in st.services.status_reports.payload(1)
    st.services.timekeeping.set_csms_time("2026-03-01T10:00:00Z")
    assert st.services.status_reports.payload(1)["timestamp"].startswith("2026-03-01T10:00:00")


@pytest.mark.parametrize("interval", [30, 3600])
def test_heartbeat_interval_change_reschedules(csms, firmware, interval):
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    assert csms.call("CP-1", "ChangeConfiguration",
                     {"key": "HeartbeatInterval", "value": str(interval)})["status"] == "Accepted"
    fw.advance(interval - 1)
    assert "Heartbeat" not in actions(csms)
    fw.advance(1)
    assert actions(csms).count("Heartbeat") == 1
