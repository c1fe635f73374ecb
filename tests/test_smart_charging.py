"""Smart charging end to end: the real firmware loop against the loopback CSMS, on the
simulated charger, with a virtual clock. Named after the official OCTT 1.6 charge-point
test cases (TC_056-060, 066, 067, 072, 082) where there is one.

The CSMS tells the charger a time OFFSET (a fraction of a second included) ahead of the
virtual clock, so profile dates are computed from `csms.now()` and every local/station
time conversion in the firmware is exercised; `fw.advance` moves both alike.
"""
import copy
from datetime import datetime, timezone

import pytest
from ocpp.exceptions import OCPPError

from chargepoint import actions as act
from chargepoint.clock import VirtualClock
from hal.interfaces import duty_cycle_for_current
from tests.harness import BASE_SETTINGS

CP = "CP-1"
CPMAX, TXDEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"
#: Station time at boot: Monday 2026-03-02 21:30:00.25 UTC.
OFFSET = datetime(2026, 3, 2, 21, 30, tzinfo=timezone.utc).timestamp() + 0.25 \
    - VirtualClock().now()
THREE_PHASE_W = 230 * 3


# --------------------------------------------------------------------------- set-up helpers

def connector(cid=1, **changes) -> dict:
    conn = copy.deepcopy(BASE_SETTINGS["connectors"][0])
    conn["id"] = cid
    conn.update(changes)
    return conn


def boot(csms, firmware, ocpp=None, connectors=None):
    """A firmware whose CSMS runs OFFSET ahead of the virtual clock, every connector
    reported."""
    clock = VirtualClock()
    shift = [0.0]                     # a later correction of the CSMS's clock, in seconds
    csms.heartbeat_interval = 86400   # hours of virtual time without a heartbeat every 300 s
    csms.now = lambda: datetime.fromtimestamp(clock.now() + OFFSET + shift[0], timezone.utc)
    overrides = {"ocpp": {"MeterValueSampleInterval": 0, **(ocpp or {})}}
    if connectors is not None:
        overrides["connectors"] = connectors
    fw = firmware(overrides, clock=clock)
    for conn in connectors or [connector()]:
        csms.wait_for("StatusNotification", lambda r, cid=conn["id"]: r["connectorId"] == cid)
    fw.settle()
    assert fw.station.services.clock.offset == pytest.approx(OFFSET)
    fw.csms_shift = shift
    return fw


def now(csms) -> float:
    return csms.now().timestamp()


def run_to(fw, csms, t):
    """Advance to station time `t`."""
    fw.advance(t - now(csms))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def body(pid, purpose, periods, *, stack=0, kind="Absolute", unit="A", start=None,
         duration=None, valid_from=None, valid_to=None, recurrency=None, tx_id=None,
         min_rate=None) -> dict:
    """csChargingProfiles; `periods` is [(startPeriod, limit[, numberPhases])]."""
    sched = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})}
        for p in periods]}
    for key, value in (("startSchedule", start and iso(start)), ("duration", duration),
                       ("minChargingRate", min_rate)):
        if value is not None:
            sched[key] = value
    out = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
           "chargingProfileKind": kind, "chargingSchedule": sched}
    for key, value in (("validFrom", valid_from and iso(valid_from)),
                       ("validTo", valid_to and iso(valid_to)),
                       ("recurrencyKind", recurrency), ("transactionId", tx_id)):
        if value is not None:
            out[key] = value
    return out


def set_profile(csms, cid, profile) -> str:
    return csms.call(CP, "SetChargingProfile",
                     {"connectorId": cid, "csChargingProfiles": profile})["status"]


def composite(csms, cid=1, duration=600, unit=None) -> dict:
    payload = {"connectorId": cid, "duration": duration}
    if unit is not None:
        payload["chargingRateUnit"] = unit
    return csms.call(CP, "GetCompositeSchedule", payload)


def periods(csms, cid=1, duration=600, unit=None) -> list:
    answer = composite(csms, cid, duration, unit)
    assert answer["status"] == "Accepted"
    return answer["chargingSchedule"]["chargingSchedulePeriod"]


def clear(csms, **criteria) -> str:
    return csms.call(CP, "ClearChargingProfile", criteria)["status"]


def hw(fw, cid=1) -> dict:
    return fw.sim.status()["connectors"][str(cid)]


def offered(fw, cid=1):
    return hw(fw, cid)["offered_a"]


def status(csms, cid=1) -> str:
    return [r for r in csms.records("StatusNotification") if r["connectorId"] == cid][-1]["status"]


def charge(fw, csms, cid=1, tag="TAG1"):
    """Plug in, present `tag`: the StartTransaction, once the connector is Charging."""
    mark = len(csms.received)
    fw.sim.plug(cid)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()
    begin = csms.wait_for("StartTransaction", lambda r: r["connectorId"] == cid, after=mark)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == cid
                  and r["status"] == "Charging", after=mark)
    fw.settle()
    return begin


def tx_id(begin) -> int:
    return begin.reply["transactionId"]


def record_turns(fw) -> list:
    """From now on, the actions of each turn of the firmware's loop, one list per turn."""
    turns = []
    station = fw.station
    handle = station.handle

    def recording(event, t, *wall):
        out = handle(event, t, *wall)
        turns.append(list(out))
        return out

    station.handle = recording
    return turns


# --------------------------------------------------------------------------- the profile

def test_supported_feature_profiles_and_the_smart_charging_keys(csms, firmware):
    boot(csms, firmware)
    keys = {k["key"]: k for k in csms.call(CP, "GetConfiguration", {})["configurationKey"]}
    assert "SmartCharging" in keys["SupportedFeatureProfiles"]["value"].split(",")
    assert {name: keys[name]["value"] for name in (
        "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
        "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled")} == {
        "ChargeProfileMaxStackLevel": "8",
        "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
        "ChargingScheduleMaxPeriods": "24", "MaxChargingProfilesInstalled": "16"}
    assert all(keys[name]["readonly"] for name in (
        "ChargeProfileMaxStackLevel", "ChargingScheduleMaxPeriods"))


# --------------------------------------------------------------------------- TC_056 / 057 / 058

@pytest.mark.parametrize("unit,limit,amps", [("A", 6, 6.0), ("W", 6000, 6000 / 690)])
def test_tc_056_tx_default_profile(csms, firmware, unit, limit, amps):
    """A TxDefaultProfile without startSchedule runs from its installation for its
    duration; the composite shows it, then the rating; the next session obeys it."""
    fw = boot(csms, firmware)
    installed = now(csms)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, limit, 3)], unit=unit,
                                     duration=300)) == "Accepted"
    fw.advance(10)
    answer = composite(csms, 1, 600, unit)
    assert answer["status"] == "Accepted" and answer["connectorId"] == 1
    sched = answer["chargingSchedule"]
    assert sched["duration"] == 600 and sched["chargingRateUnit"] == unit
    assert abs(epoch(sched["startSchedule"]) - now(csms)) <= 1
    assert abs(epoch(answer["scheduleStart"]) - now(csms)) <= 1
    rating = 32.0 if unit == "A" else 32.0 * THREE_PHASE_W
    assert sched["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": float(limit)},
                                               {"startPeriod": 290, "limit": rating}]
    charge(fw, csms)
    assert offered(fw) == pytest.approx(amps)
    assert hw(fw)["power_w"] == pytest.approx(amps * THREE_PHASE_W)
    run_to(fw, csms, installed + 300)
    assert offered(fw) == 32.0
    csms.assert_no_violations()


@pytest.mark.parametrize("unit,limit,amps", [("A", 6, 6.0), ("W", 6000, 6000 / 690)])
def test_tc_057_tx_profile_during_a_transaction(csms, firmware, unit, limit, amps):
    fw = boot(csms, firmware)
    begin = charge(fw, csms)
    assert offered(fw) == 32.0
    start = now(csms)
    assert set_profile(csms, 1, body(1, TX, [(0, limit, 3)], unit=unit, start=start,
                                     duration=300, tx_id=tx_id(begin))) == "Accepted"
    fw.settle()
    assert offered(fw) == pytest.approx(amps)
    assert hw(fw)["current_a"] == pytest.approx(amps)
    answer = composite(csms, 1, 400, unit)
    sched = answer["chargingSchedule"]
    assert answer["connectorId"] == 1 and sched["duration"] == 400
    assert sched["chargingRateUnit"] == unit
    assert abs(epoch(sched["startSchedule"]) - now(csms)) <= 1
    assert sched["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": float(limit)},
        {"startPeriod": 300, "limit": 32.0 if unit == "A" else 32.0 * THREE_PHASE_W}]
    run_to(fw, csms, start + 300)
    assert offered(fw) == 32.0
    csms.assert_no_violations()


def test_tc_058_1_tx_profile_without_a_transaction_is_rejected(csms, firmware):
    fw = boot(csms, firmware)
    fw.sim.plug(1)                                   # plugged in, but no transaction
    fw.settle()
    for profile in (body(1, TX, [(0, 6)], tx_id=1), body(1, TX, [(0, 6)])):
        assert set_profile(csms, 1, profile) == "Rejected"
    assert set_profile(csms, 0, body(1, TX, [(0, 6)])) == "Rejected"
    assert periods(csms) == [{"startPeriod": 0, "limit": 32.0}]
    assert clear(csms) == "Unknown"                  # nothing was installed


def test_tc_058_2_tx_profile_for_another_transaction_is_rejected(csms, firmware):
    fw = boot(csms, firmware)
    begin = charge(fw, csms)
    assert set_profile(csms, 1, body(1, TX, [(0, 6)], tx_id=tx_id(begin) + 1)) == "Rejected"
    fw.settle()
    assert offered(fw) == 32.0
    assert periods(csms) == [{"startPeriod": 0, "limit": 32.0}]
    assert set_profile(csms, 1, body(1, TX, [(0, 6)], tx_id=tx_id(begin))) == "Accepted"


# --------------------------------------------------------------------------- TC_082

def test_tc_082_tx_default_profile_during_a_transaction_applies_in_the_same_turn(
        csms, firmware):
    fw = boot(csms, firmware)
    charge(fw, csms)
    assert offered(fw) == 32.0
    turns = record_turns(fw)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 6)], start=now(csms))) == "Accepted"
    fw.settle()
    answered = [i for i, turn in enumerate(turns) for a in turn
                if isinstance(a, act.SendFrame) and a.text.startswith("[3,")]
    assert len(answered) == 1
    assert act.OfferCurrent(1, 6.0) in turns[answered[0]]       # with the answer itself
    assert offered(fw) == 6.0 and hw(fw)["current_a"] == 6.0
    assert periods(csms, duration=300) == [{"startPeriod": 0, "limit": 6.0}]
    assert status(csms) == "Charging"


# --------------------------------------------------------------------------- TC_066

@pytest.mark.parametrize("unit", ["A", "W"])
def test_tc_066_get_composite_schedule_combines_the_purposes(csms, firmware, unit):
    """OCTT TC_066 (with the OCA's 2025 correction of its 2.0.1 twin TC_K_41: the
    TxDefaultProfile applies again after the TxProfile's 260 s); x = 5 s."""
    fw = boot(csms, firmware)
    begin = charge(fw, csms)
    scale = 1000 if unit == "W" else 1
    s = now(csms)
    valid = {"valid_from": s, "valid_to": s + 401}

    def periods_of(starts, limits):
        return [(a, b * scale, 3) for a, b in zip(starts, limits)]

    assert set_profile(csms, 0, body(1, CPMAX, periods_of([0], [10]), unit=unit, start=s,
                                     duration=86400)) == "Accepted"
    assert set_profile(csms, 1, body(2, TXDEFAULT, periods_of(
        [0, 60, 120, 180, 260], [6, 10, 8, 15, 8]), unit=unit, start=s, duration=300,
        **valid)) == "Accepted"
    assert set_profile(csms, 1, body(3, TX, periods_of(
        [0, 50, 140, 200, 240], [8, 11, 16, 6, 12]), unit=unit, start=s, duration=260,
        tx_id=tx_id(begin), **valid)) == "Accepted"
    fw.advance(5)
    answer = composite(csms, 1, 400, unit)
    assert answer["status"] == "Accepted" and answer["connectorId"] == 1
    sched = answer["chargingSchedule"]
    assert sched["duration"] == 400 and sched["chargingRateUnit"] == unit
    assert abs(epoch(sched["startSchedule"]) - now(csms)) <= 1
    assert sched["chargingSchedulePeriod"] == [
        {"startPeriod": start, "limit": float(limit * scale)}
        for start, limit in [(0, 8), (45, 10), (195, 6), (235, 10), (255, 8), (295, 10)]]
    if unit == "A":                                  # and the pilot follows it, on time
        seen = [offered(fw)]
        for t in (50, 200, 240, 260, 300, 401):
            run_to(fw, csms, s + t)
            seen.append(offered(fw))
        assert seen == [8.0, 10.0, 6.0, 10.0, 8.0, 10.0, 10.0]
    csms.assert_no_violations()


# --------------------------------------------------------------------------- TC_067

def test_tc_067_clear_charging_profile(csms, firmware):
    fw = boot(csms, firmware)
    s = now(csms)
    valid = {"valid_from": s, "valid_to": s + 401}
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 6), (60, 8), (200, 10)], stack=1,
                                     start=s, duration=400)) == "Accepted"
    assert set_profile(csms, 1, body(2, TXDEFAULT, [(0, 7), (100, 9)], stack=0, start=s,
                                     duration=400, **valid)) == "Accepted"
    assert set_profile(csms, 0, body(3, CPMAX, [(0, 11), (200, 12)], start=s, duration=86400,
                                     **valid)) == "Accepted"
    fw.advance(5)
    assert periods(csms, duration=350) == [{"startPeriod": 0, "limit": 6.0},
                                           {"startPeriod": 55, "limit": 8.0},
                                           {"startPeriod": 195, "limit": 10.0}]
    assert clear(csms, id=1) == "Accepted"                                   # step 1
    assert periods(csms, duration=350) == [{"startPeriod": 0, "limit": 7.0},
                                           {"startPeriod": 95, "limit": 9.0}]
    assert clear(csms, chargingProfilePurpose=TXDEFAULT, stackLevel=0) == "Accepted"  # step 5
    assert periods(csms, duration=350) == [{"startPeriod": 0, "limit": 11.0},
                                           {"startPeriod": 195, "limit": 12.0}]
    assert clear(csms) == "Accepted"                                          # step 9
    assert periods(csms, duration=350) == [{"startPeriod": 0, "limit": 32.0}]
    # nothing left to match
    assert clear(csms) == "Unknown"
    assert clear(csms, id=1) == "Unknown"
    assert clear(csms, connectorId=1, chargingProfilePurpose=TX) == "Unknown"


def test_clear_by_each_criterion_only_removes_what_matches(csms, firmware):
    fw = boot(csms, firmware, connectors=[connector(1), connector(2)])
    s = now(csms)
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 20)], start=s)) == "Accepted"
    assert set_profile(csms, 0, body(2, TXDEFAULT, [(0, 10)], start=s)) == "Accepted"
    assert set_profile(csms, 1, body(3, TXDEFAULT, [(0, 16)], start=s)) == "Accepted"
    assert set_profile(csms, 1, body(4, TXDEFAULT, [(0, 8)], stack=2, start=s)) == "Accepted"
    fw.settle()
    assert periods(csms, 1) == [{"startPeriod": 0, "limit": 8.0}]
    assert clear(csms, stackLevel=2) == "Accepted"                  # only id 4
    assert periods(csms, 1) == [{"startPeriod": 0, "limit": 16.0}]
    assert clear(csms, connectorId=1) == "Accepted"                 # id 3; 0's default stays
    assert periods(csms, 1) == [{"startPeriod": 0, "limit": 10.0}]
    assert clear(csms, connectorId=1) == "Unknown"
    assert clear(csms, connectorId=0, chargingProfilePurpose=CPMAX) == "Accepted"
    assert periods(csms, 0) == [{"startPeriod": 0, "limit": 64.0}]  # both ratings
    assert periods(csms, 2) == [{"startPeriod": 0, "limit": 10.0}]
    assert clear(csms, chargingProfilePurpose=TXDEFAULT, stackLevel=0) == "Accepted"
    assert periods(csms, 2) == [{"startPeriod": 0, "limit": 32.0}]


# --------------------------------------------------------------------------- TC_072

def test_tc_072_the_higher_stack_level_rules_while_valid_then_the_lower(csms, firmware):
    fw = boot(csms, firmware)
    charge(fw, csms)
    s = now(csms)
    valid = {"valid_from": s, "valid_to": s + 401}
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 6), (100, 8), (200, 10)], stack=0,
                                     start=s, duration=400, **valid)) == "Accepted"
    assert set_profile(csms, 1, body(2, TXDEFAULT, [(0, 7), (100, 9)], stack=1, start=s,
                                     duration=150, **valid)) == "Accepted"
    fw.advance(5)
    assert periods(csms, duration=350) == [{"startPeriod": 0, "limit": 7.0},
                                           {"startPeriod": 95, "limit": 9.0},
                                           {"startPeriod": 145, "limit": 8.0},
                                           {"startPeriod": 195, "limit": 10.0}]
    seen = [offered(fw)]
    for t in (100, 150, 200, 400):
        run_to(fw, csms, s + t)
        seen.append(offered(fw))
    assert seen == [7.0, 9.0, 8.0, 10.0, 32.0]
    csms.assert_no_violations()


# --------------------------------------------------------------------------- TC_059 / 060

def test_tc_059_remote_start_with_a_tx_profile(csms, firmware):
    """The TxProfile comes with RemoteStartTransaction and runs from the transaction's
    start (Relative): 10 A, after 600 s 16 A, after 1200 s the rating; it ends with the
    transaction."""
    fw = boot(csms, firmware)
    fw.sim.plug(1)
    fw.settle()
    mark = len(csms.received)
    profile = body(9, TX, [(0, 10), (600, 16)], kind="Relative", duration=1200)
    assert csms.call(CP, "RemoteStartTransaction", {
        "connectorId": 1, "idTag": "REMOTE1", "chargingProfile": profile})["status"] == \
        "Accepted"
    begin = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    started = epoch(begin["timestamp"])
    assert offered(fw) == 10.0
    answer = composite(csms, 1, 1800)
    assert answer["status"] == "Accepted"
    assert abs(epoch(answer["chargingSchedule"]["startSchedule"]) - now(csms)) <= 1
    assert answer["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 10.0}, {"startPeriod": 600, "limit": 16.0},
        {"startPeriod": 1200, "limit": 32.0}]
    run_to(fw, csms, started + 600)
    assert offered(fw) == 16.0
    run_to(fw, csms, started + 1200)
    assert offered(fw) == 32.0
    assert csms.call(CP, "RemoteStopTransaction",
                     {"transactionId": tx_id(begin)})["status"] == "Accepted"
    csms.wait_for("StopTransaction")
    fw.settle()
    assert clear(csms, id=9) == "Unknown"            # ended with its transaction
    csms.assert_no_violations()


@pytest.mark.parametrize("purpose", [TXDEFAULT, CPMAX])
def test_tc_060_remote_start_with_another_purpose_is_rejected(csms, firmware, purpose):
    fw = boot(csms, firmware)
    fw.sim.plug(1)
    fw.settle()
    mark = len(csms.received)
    try:
        answer = csms.call(CP, "RemoteStartTransaction", {
            "connectorId": 1, "idTag": "REMOTE1",
            "chargingProfile": body(9, purpose, [(0, 10)])})["status"]
    except OCPPError as exc:                          # the OCTT allows this answer too
        answer = exc.code
    assert answer in ("Rejected", "PropertyConstraintViolation")
    fw.settle()
    assert csms.records("StartTransaction", after=mark) == []
    assert clear(csms) == "Unknown"                  # nothing installed
    assert periods(csms) == [{"startPeriod": 0, "limit": 32.0}]


@pytest.mark.parametrize("tag,wait", [("TAG1", 31), ("REMOTE1", 120)])
def test_a_remote_start_profile_that_never_started_does_not_limit_a_later_session(
        csms, firmware, tag, wait):
    """RemoteStartTransaction with a TxProfile, but no EV comes within ConnectionTimeOut:
    a later local session (another card, or the same card long after) is not bound by it."""
    fw = boot(csms, firmware, ocpp={"ConnectionTimeOut": 30})
    profile = body(9, TX, [(0, 10)], kind="Relative")
    assert csms.call(CP, "RemoteStartTransaction", {
        "connectorId": 1, "idTag": "REMOTE1", "chargingProfile": profile})["status"] == \
        "Accepted"
    fw.settle()
    fw.advance(wait)
    assert fw.station.services.plug_wait.pending is None
    charge(fw, csms, tag=tag)
    assert offered(fw) == 32.0
    assert clear(csms, id=9) == "Unknown"


def test_remote_start_profile_above_the_stack_limit_is_rejected(csms, firmware):
    fw = boot(csms, firmware)
    fw.sim.plug(1)
    fw.settle()
    mark = len(csms.received)
    assert csms.call(CP, "RemoteStartTransaction", {
        "connectorId": 1, "idTag": "REMOTE1",
        "chargingProfile": body(9, TX, [(0, 10)], stack=9)})["status"] == "Rejected"
    fw.settle()
    assert csms.records("StartTransaction", after=mark) == []


# --------------------------------------------------------------------------- enforcement

def test_zero_amps_suspends_charging_and_a_higher_limit_resumes_it(csms, firmware):
    fw = boot(csms, firmware, ocpp={"MeterValueSampleInterval": 60})
    charge(fw, csms)
    s = float(int(now(csms)) + 1)          # a whole second: profiles change on whole seconds
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 32), (600, 0), (1200, 16)],
                                     start=s)) == "Accepted"
    run_to(fw, csms, s + 600)
    mark = len(csms.received)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEVSE")
    state = hw(fw)
    assert state["offered_a"] is None and state["contactor"] == "open"
    assert state["power_w"] == 0 and state["current_a"] == 0
    paused_at = state["energy_wh"]
    run_to(fw, csms, s + 1199)
    assert hw(fw)["energy_wh"] == paused_at
    registers = [float(sv["value"]) for r in csms.records("MeterValues", after=mark)
                 for sv in r["meterValue"][0]["sampledValue"]
                 if sv.get("measurand", "Energy.Active.Import.Register") ==
                 "Energy.Active.Import.Register"]
    assert len(registers) >= 9 and len(set(registers)) == 1
    assert registers[0] == pytest.approx(paused_at, abs=0.1)
    assert fw.station.services.connectors[1].tx is not None       # the transaction stays open
    run_to(fw, csms, s + 1200)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    assert offered(fw) == 16.0 and hw(fw)["contactor"] == "closed"
    run_to(fw, csms, s + 1260)
    assert hw(fw)["energy_wh"] == pytest.approx(paused_at + 16 * THREE_PHASE_W * 60 / 3600)
    csms.assert_no_violations()


def test_below_min_charging_rate_nothing_is_offered(csms, firmware):
    fw = boot(csms, firmware)
    charge(fw, csms)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 8)], start=now(csms),
                                     min_rate=10)) == "Accepted"
    fw.settle()
    assert offered(fw) is None and hw(fw)["contactor"] == "open"
    assert status(csms) == "SuspendedEVSE"
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 12)], start=now(csms),
                                     min_rate=10)) == "Accepted"
    fw.settle()
    assert offered(fw) == 12.0
    assert status(csms) == "Charging"


@pytest.mark.parametrize("phases,volts,watts,number_phases", [
    (1, 230.0, 3680, None),      # a single-phase connector: 3680 W / 230 V = 16 A
    (3, 230.0, 11040, None),     # three phases: 11040 W / 690 V = 16 A
    (1, 120.0, 1920, 3),         # never more phases than the connector has
])
def test_limits_in_watts_use_the_connectors_phases_and_voltage(
        csms, firmware, phases, volts, watts, number_phases):
    fw = boot(csms, firmware, connectors=[connector(phases=phases, nominal_voltage_v=volts)])
    charge(fw, csms)
    period = (0, watts) if number_phases is None else (0, watts, number_phases)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [period], unit="W",
                                     start=now(csms))) == "Accepted"
    fw.settle()
    assert offered(fw) == pytest.approx(16.0)
    assert hw(fw)["power_w"] == pytest.approx(watts)
    shown = {"numberPhases": phases} if phases != 3 else {}
    assert periods(csms, unit="A") == [{"startPeriod": 0, "limit": 16.0, **shown}]
    assert periods(csms, unit="W") == [{"startPeriod": 0, "limit": float(watts), **shown}]


def test_charge_point_max_profile_is_shared_between_charging_connectors(csms, firmware):
    fw = boot(csms, firmware, connectors=[connector(1), connector(2)])
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 40)], start=now(csms))) == "Accepted"
    charge(fw, csms, 1, "TAG1")
    assert offered(fw, 1) == 32.0                     # alone: its rating
    charge(fw, csms, 2, "TAG2")
    assert (offered(fw, 1), offered(fw, 2)) == (20.0, 20.0)
    assert hw(fw, 1)["power_w"] + hw(fw, 2)["power_w"] == 40 * THREE_PHASE_W
    assert periods(csms, 0) == [{"startPeriod": 0, "limit": 40.0}]
    assert periods(csms, 1) == [{"startPeriod": 0, "limit": 32.0}]   # the cap, unshared
    # below 6 A each: nobody charges; the transactions stay open
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 10)], start=now(csms))) == "Accepted"
    fw.settle()
    assert (offered(fw, 1), offered(fw, 2)) == (None, None)
    assert (status(csms, 1), status(csms, 2)) == ("SuspendedEVSE", "SuspendedEVSE")
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 24)], start=now(csms))) == "Accepted"
    fw.settle()
    assert (offered(fw, 1), offered(fw, 2)) == (12.0, 12.0)
    mark = len(csms.received)
    fw.sim.tap("TAG2")                                # the second session ends
    fw.settle()
    csms.wait_for("StopTransaction", after=mark)
    fw.settle()
    assert offered(fw, 1) == 24.0 and offered(fw, 2) is None
    csms.assert_no_violations()


def test_the_offer_never_exceeds_the_rating_or_the_cable(csms, firmware):
    socket = connector(2, fixed_cable=False, lock={"type": "sim", "cable_ampacity_a": 13})
    fw = boot(csms, firmware, connectors=[connector(1, max_current_a=16), socket])
    s = now(csms)
    assert set_profile(csms, 0, body(1, TXDEFAULT, [(0, 32), (600, 10)], start=s)) == \
        "Accepted"
    charge(fw, csms, 1, "TAG1")
    charge(fw, csms, 2, "TAG2")
    assert (offered(fw, 1), offered(fw, 2)) == (16.0, 13.0)
    assert periods(csms, 1, duration=1200) == [{"startPeriod": 0, "limit": 16.0},
                                               {"startPeriod": 600, "limit": 10.0}]
    run_to(fw, csms, s + 600)
    assert (offered(fw, 1), offered(fw, 2)) == (10.0, 10.0)


@pytest.mark.parametrize("amps,duty", [(6, 10.0), (16, 26.667), (32, 53.333), (51, 85.0),
                                       (63, 89.2), (80, 96.0), (100, 96.0)])
def test_pilot_duty_cycle_follows_iec_61851_1(amps, duty):
    assert duty_cycle_for_current(amps) == pytest.approx(duty, abs=0.001)


def test_no_duty_cycle_below_six_amps():
    with pytest.raises(ValueError):
        duty_cycle_for_current(5.9)


def test_the_profile_limit_reaches_the_pilot(csms, firmware):
    """6, 16, 32 and 63 A from a profile are what the pilot offers (the PWM backend's
    duty cycle for each is checked in tests/hal/test_pilot_pwm.py)."""
    fast = connector(max_current_a=63, pilot={"type": "sim", "ev_max_current_a": 63})
    fw = boot(csms, firmware, connectors=[fast])
    charge(fw, csms)
    for amps, duty in ((6, 10.0), (16, 26.667), (32, 53.333), (63, 89.2)):
        assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, amps)], start=now(csms))) == \
            "Accepted"
        fw.settle()
        assert offered(fw) == amps and hw(fw)["current_a"] == amps
        assert duty_cycle_for_current(offered(fw)) == pytest.approx(duty, abs=0.001)


def test_daily_default_follows_the_clock_across_midnight(csms, firmware):
    """A daily TxDefaultProfile from Monday 00:00: 16 A, 8 A from 01:00, 12 A from 22:00;
    a session from Monday 21:30 follows it into Tuesday, where it restarts at midnight."""
    fw = boot(csms, firmware)
    monday = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
    assert set_profile(csms, 0, body(1, TXDEFAULT, [(0, 16), (3600, 8), (22 * 3600, 12)],
                                     kind="Recurring", recurrency="Daily",
                                     start=monday)) == "Accepted"
    charge(fw, csms)
    assert offered(fw) == 8.0
    assert periods(csms, duration=4 * 3600) == [{"startPeriod": 0, "limit": 8.0},
                                                {"startPeriod": 1800, "limit": 12.0},
                                                {"startPeriod": 9000, "limit": 16.0},
                                                {"startPeriod": 12600, "limit": 8.0}]
    seen = []
    for t in (22 * 3600 - 1, 22 * 3600, 24 * 3600 - 1, 24 * 3600, 25 * 3600):
        run_to(fw, csms, monday + t)
        seen.append(offered(fw))
    assert seen == [8.0, 12.0, 12.0, 16.0, 8.0]


def test_relative_default_runs_from_each_transactions_start(csms, firmware):
    fw = boot(csms, firmware)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10), (300, 20)],
                                     kind="Relative")) == "Accepted"
    fw.advance(1000)                                  # installed long before the session
    begin = charge(fw, csms)
    started = epoch(begin["timestamp"])
    assert offered(fw) == 10.0
    fw.advance(100)
    assert periods(csms, duration=600) == [{"startPeriod": 0, "limit": 10.0},
                                           {"startPeriod": 200, "limit": 20.0}]
    run_to(fw, csms, started + 300)
    assert offered(fw) == 20.0


def test_clearing_a_tx_profile_restores_the_default_at_once(csms, firmware):
    fw = boot(csms, firmware)
    begin = charge(fw, csms)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 16)], start=now(csms))) == "Accepted"
    assert set_profile(csms, 1, body(2, TX, [(0, 8)], tx_id=tx_id(begin))) == "Accepted"
    fw.settle()
    assert offered(fw) == 8.0
    assert clear(csms, chargingProfilePurpose=TX) == "Accepted"
    fw.settle()
    assert offered(fw) == 16.0


def test_a_clock_correction_applies_the_limit_of_the_new_time(csms, firmware):
    """The CSMS's clock moves an hour ahead; the next Heartbeat brings the charger to
    the profile's period of the new time without waiting for the old deadline."""
    fw = boot(csms, firmware)
    s = now(csms)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 32), (3600, 10)], start=s)) == \
        "Accepted"
    charge(fw, csms)
    fw.advance(60)
    assert offered(fw) == 32.0
    fw.csms_shift[0] = 3600.0
    assert csms.call(CP, "TriggerMessage", {"requestedMessage": "Heartbeat"})["status"] == \
        "Accepted"
    csms.wait_for("Heartbeat")
    fw.settle()
    assert fw.station.services.clock.offset == pytest.approx(OFFSET + 3600)
    assert offered(fw) == 10.0


# --------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("how", ["cut_power", "restart"])
def test_profiles_survive_a_restart_except_tx_profiles(csms, firmware, how):
    fw = boot(csms, firmware)
    s = now(csms)
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 20)], start=s)) == "Accepted"
    assert set_profile(csms, 1, body(2, TXDEFAULT, [(0, 16)], start=s)) == "Accepted"
    begin = charge(fw, csms)
    assert set_profile(csms, 1, body(3, TX, [(0, 10)], start=s, tx_id=tx_id(begin))) == \
        "Accepted"
    fw.settle()
    assert offered(fw) == 10.0
    mark = len(csms.received)
    if how == "cut_power":
        fw.cut_power()
        fw.start()
    else:
        fw.restart()
    csms.wait_for("BootNotification", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark)
    fw.settle()                                           # a new simulator: nothing plugged
    assert periods(csms) == [{"startPeriod": 0, "limit": 16.0}]
    assert clear(csms, id=3) == "Unknown"                  # ended with its transaction
    charge(fw, csms)
    assert offered(fw) == 16.0
    assert clear(csms, id=2) == "Accepted"
    fw.settle()
    assert offered(fw) == 20.0                              # the cap is still there


def test_absolute_profile_keeps_its_installation_time_across_a_restart(csms, firmware):
    """Without startSchedule an Absolute profile starts when it was installed, and a
    restart does not start it again."""
    fw = boot(csms, firmware)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)], duration=3600)) == "Accepted"
    fw.advance(600)
    mark = len(csms.received)
    fw.restart()
    csms.wait_for("BootNotification", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark)
    fw.settle()
    assert periods(csms, duration=3600) == [{"startPeriod": 0, "limit": 10.0},
                                            {"startPeriod": 3000, "limit": 32.0}]


def test_a_tx_profile_ends_with_its_transaction(csms, firmware):
    fw = boot(csms, firmware)
    begin = charge(fw, csms)
    assert set_profile(csms, 1, body(3, TX, [(0, 10)], tx_id=tx_id(begin))) == "Accepted"
    fw.settle()
    assert offered(fw) == 10.0
    mark = len(csms.received)
    fw.sim.tap("TAG1")
    fw.settle()
    csms.wait_for("StopTransaction", after=mark)
    fw.sim.unplug(1)
    fw.settle()
    assert clear(csms, id=3) == "Unknown"
    charge(fw, csms)
    assert offered(fw) == 32.0


# --------------------------------------------------------------------------- limits

def test_the_chargers_limits_reject_profiles(csms, firmware):
    boot(csms, firmware, ocpp={"MaxChargingProfilesInstalled": 3,
                               "ChargingScheduleAllowedChargingRateUnit": "Current"})
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)], stack=9)) == "Rejected"
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)], stack=8)) == "Accepted"
    many = [(60 * k, 10 + k % 2) for k in range(25)]
    assert set_profile(csms, 1, body(2, TXDEFAULT, many)) == "Rejected"
    assert set_profile(csms, 1, body(2, TXDEFAULT, many[:24])) == "Accepted"
    assert set_profile(csms, 1, body(3, TXDEFAULT, [(0, 6900)], unit="W")) == "Rejected"
    assert set_profile(csms, 1, body(3, TXDEFAULT, [(0, 10)], stack=3)) == "Accepted"
    # three installed: a fourth is one too many, a replacement is not
    assert set_profile(csms, 1, body(4, TXDEFAULT, [(0, 10)], stack=4)) == "Rejected"
    assert set_profile(csms, 1, body(3, TXDEFAULT, [(0, 12)], stack=3)) == "Accepted"
    assert set_profile(csms, 1, body(5, TXDEFAULT, [(0, 14)], stack=3)) == "Accepted"
    assert clear(csms, id=3) == "Unknown"                   # 5 replaced it
    # and the rules of the profile itself
    assert set_profile(csms, 1, body(6, CPMAX, [(0, 10)])) == "Rejected"
    assert set_profile(csms, 7, body(6, TXDEFAULT, [(0, 10)])) == "Rejected"


def test_profiles_the_schema_lets_through_but_ocpp_forbids_are_rejected(csms, firmware):
    """No periods, a negative stack level, periods out of order or not from 0, a negative
    limit, a Recurring profile without startSchedule: Rejected, not an error."""
    fw = boot(csms, firmware)
    s = now(csms)
    bad = [body(1, TXDEFAULT, []), body(1, TXDEFAULT, [(0, 10)], stack=-1),
           body(1, TXDEFAULT, [(60, 10)]), body(1, TXDEFAULT, [(0, 10), (0, 12)]),
           body(1, TXDEFAULT, [(0, 10), (120, 12), (60, 8)]), body(1, TXDEFAULT, [(0, -1)]),
           body(1, TXDEFAULT, [(0, 10)], kind="Recurring", recurrency="Daily"),
           body(1, TXDEFAULT, [(0, 10)], kind="Recurring", start=s)]
    for profile in bad:
        assert set_profile(csms, 1, profile) == "Rejected", profile
    assert clear(csms) == "Unknown"
    fw.settle()
    assert fw.runtime is not None and csms.connected(CP)


def test_impossible_phases_or_a_negative_duration_are_rejected(csms, firmware):
    boot(csms, firmware)
    for phases in (0, 4, -1):
        assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10, phases)])) == "Rejected"
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)], duration=-1)) == "Rejected"
    assert clear(csms) == "Unknown"
    for phases in (1, 2, 3):
        assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10, phases)])) == "Accepted"


def test_remote_start_profile_is_checked_like_any_other(csms, firmware):
    """A RemoteStartTransaction's TxProfile that SetChargingProfile would reject makes the
    remote start Rejected: unit not allowed, periods not from 0, one profile too many."""
    fw = boot(csms, firmware, ocpp={"ChargingScheduleAllowedChargingRateUnit": "Current",
                                    "MaxChargingProfilesInstalled": 1})
    fw.sim.plug(1)
    fw.settle()
    mark = len(csms.received)

    def remote(profile):
        return csms.call(CP, "RemoteStartTransaction", {
            "connectorId": 1, "idTag": "REMOTE1", "chargingProfile": profile})["status"]

    assert remote(body(9, TX, [(0, 6900)], unit="W")) == "Rejected"
    assert remote(body(9, TX, [(60, 10)])) == "Rejected"
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 20)])) == "Accepted"
    assert remote(body(9, TX, [(0, 10)])) == "Rejected"
    fw.settle()
    assert csms.records("StartTransaction", after=mark) == []


def test_a_change_more_than_the_timer_horizon_ahead_is_still_awaited(csms, firmware):
    """A profile that starts in nine days: the charger keeps a timer running so that a
    session still open then is limited on time."""
    fw = boot(csms, firmware)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)],
                                     start=now(csms) + 9 * 86400)) == "Accepted"
    fw.settle()
    due = fw.station.services.timers.when("smart-charging")
    assert due is not None and due + OFFSET <= now(csms) + 9 * 86400


def test_composite_periods_are_counted_from_the_start_schedule_it_reports(csms, firmware):
    """The station's clock has a fraction of a second; startSchedule is given in whole
    seconds, so the periods must count from that very second: startSchedule + startPeriod
    is the instant the limit changes."""
    fw = boot(csms, firmware)
    half_past = datetime(2026, 3, 2, 21, 30, tzinfo=timezone.utc).timestamp()
    change = half_past + 1800
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 8), (1800, 12)],
                                     start=half_past)) == "Accepted"
    for minute, fraction in ((10, 0.0), (11, 0.5), (12, 0.75)):
        run_to(fw, csms, half_past + minute * 60 + fraction)
        answer = composite(csms, 1, 3600)
        sched = answer["chargingSchedule"]
        assert sched["startSchedule"] == answer["scheduleStart"]
        (first, second) = sched["chargingSchedulePeriod"]
        assert first["limit"] == 8.0 and second["limit"] == 12.0
        assert epoch(sched["startSchedule"]) + second["startPeriod"] == change, fraction


@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.5, 0.6, 0.999])
def test_get_composite_schedule_reports_the_limit_in_force_on_whole_seconds(
        csms, firmware, fraction):
    """A profile installed `fraction` s into a second and GetCompositeSchedule asked in that
    same second: no phantom period of the connector's rating (48 A) before it, nothing
    shifted by a second, whatever the fraction; startSchedule is that whole second."""
    fw = boot(csms, firmware, connectors=[connector(max_current_a=48)])
    second = float(int(now(csms))) + 60
    run_to(fw, csms, second + fraction)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 6), (60, 10), (120, 8)],
                                     duration=260)) == "Accepted"
    answer = composite(csms, 1, 400)
    assert epoch(answer["scheduleStart"]) == second
    assert answer["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 6.0}, {"startPeriod": 60, "limit": 10.0},
        {"startPeriod": 120, "limit": 8.0}, {"startPeriod": 260, "limit": 48.0}]


def test_composite_schedule_of_connector_zero_and_an_unknown_connector(csms, firmware):
    boot(csms, firmware, connectors=[connector(1), connector(2)])
    assert periods(csms, 0) == [{"startPeriod": 0, "limit": 64.0}]
    assert set_profile(csms, 0, body(1, CPMAX, [(0, 40)], start=now(csms))) == "Accepted"
    assert periods(csms, 0) == [{"startPeriod": 0, "limit": 40.0}]
    assert periods(csms, 1) == [{"startPeriod": 0, "limit": 32.0}]
    assert composite(csms, 3)["status"] == "Rejected"


# --------------------------------------------------------------------------- bounded work

def test_sixteen_daily_profiles_and_a_composite_for_ten_thousand_days(csms, firmware):
    """The most the charger accepts (16 profiles of 24 periods, recurring every day) and a
    GetCompositeSchedule for 864,000,000 s: the answer is the first ChargingScheduleMaxPeriods
    periods, exact, with the duration they reach; the loop stays free, so the unplug that
    follows opens the contactor and ends the session."""
    fw = boot(csms, firmware)
    monday = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
    for pid in range(1, 17):
        purpose, stack = (CPMAX, pid - 1) if pid <= 9 else (TXDEFAULT, pid - 10)
        if pid == 9:                   # the ruling cap: 8 A + 1 A per hour of the day
            hours = [(h * 3600, 8 + h) for h in range(24)]
        else:                          # the rest change too, each at its own minute
            hours = [(0, 40)] + [(h * 3600 + pid * 60, 40 + h) for h in range(1, 24)]
        assert set_profile(csms, 0, body(pid, purpose, hours, stack=stack, kind="Recurring",
                                         recurrency="Daily", start=monday)) == "Accepted"
    begin = charge(fw, csms)
    assert offered(fw) == 8 + 21                     # 21:30
    answer = composite(csms, 1, 864_000_000)
    assert answer["status"] == "Accepted"
    sched = answer["chargingSchedule"]
    s = epoch(answer["scheduleStart"])
    assert abs(s - now(csms)) <= 1 and sched["startSchedule"] == answer["scheduleStart"]
    hour = int((s - monday) // 3600)                 # the hour of the day when asked
    boundaries = [monday + (hour + k) * 3600 for k in range(1, 25)]
    assert sched["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 8.0 + hour % 24}] + [
        {"startPeriod": int(b - s), "limit": 8.0 + (hour + k) % 24}
        for k, b in enumerate(boundaries[:23], start=1)]
    assert len(sched["chargingSchedulePeriod"]) == 24        # ChargingScheduleMaxPeriods
    assert sched["duration"] == int(boundaries[23] - s)      # where a 25th would begin
    mark = len(csms.received)
    fw.sim.unplug(1)
    fw.settle()
    assert hw(fw)["contactor"] == "open"
    stop = csms.wait_for("StopTransaction", after=mark)
    assert stop["transactionId"] == tx_id(begin) and stop["reason"] == "EVDisconnected"
    csms.assert_no_violations()


def test_a_composite_reaches_at_most_a_week_and_a_negative_duration_is_rejected(
        csms, firmware):
    boot(csms, firmware)
    assert set_profile(csms, 1, body(1, TXDEFAULT, [(0, 10)], start=now(csms))) == "Accepted"
    answer = composite(csms, 1, 864_000_000, "A")
    assert answer["chargingSchedule"]["duration"] == 7 * 86400
    assert answer["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 10.0}]
    assert composite(csms, 1, 7 * 86400)["chargingSchedule"]["duration"] == 7 * 86400
    assert composite(csms, 1, 0)["chargingSchedule"]["duration"] == 0
    assert composite(csms, 1, -1) == {"status": "Rejected"}
    csms.assert_no_violations()
