"""MeterValues end to end on a virtual clock: sampled (TC_070), clock-aligned (TC_071),
stop data, triggered values and key changes, checked against the simulated meter.

The CSMS's clock follows the virtual clock, so the charger's station time equals the
virtual time and every expected timestamp can be computed exactly.
"""
from datetime import datetime, timezone

import pytest

from chargepoint.clock import VirtualClock

T0 = 1_767_225_600.0          # 2026-01-01T00:00:00Z, the VirtualClock's start
INITIAL_WH = 12345.6          # a register that is not zero, so offsets would show
THREE_PHASE_W = 3 * 32 * 230  # what the simulated EV draws on the default connector

ALL_SIM = ("Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage,"
           "Frequency,Current.Offered,Power.Offered")


@pytest.fixture(autouse=True)
def every_message_valid(csms):
    """Whatever a test checks, every MeterValues (and all else) must pass the schemas."""
    yield
    csms.assert_no_violations()


def sim_connector(cid, **extra):
    return {"id": cid, "fixed_cable": True, "meter": {"type": "sim", "initial_wh": INITIAL_WH},
            "contactor": {"type": "sim"}, "pilot": {"type": "sim"},
            "indicator": {"type": "sim"}, **extra}


def start_firmware(csms, firmware, ocpp=None, connectors=None, drift=lambda: 0.0):
    """A firmware whose CSMS tells the virtual time (plus `drift()` seconds)."""
    clock = VirtualClock()
    csms.now = lambda: datetime.fromtimestamp(clock.now() + drift(), timezone.utc)
    overrides = {"ocpp": {"MeterValueSampleInterval": 0, "ClockAlignedDataInterval": 0,
                          **(ocpp or {})},
                 "connectors": connectors or [sim_connector(1)]}
    fw = firmware(overrides, clock=clock)
    ids = [c["id"] for c in overrides["connectors"]]
    for cid in ids:
        csms.wait_for("StatusNotification", lambda r, cid=cid: r["connectorId"] == cid)
    fw.settle()
    return fw


def run_to(fw, t):
    """Advance the virtual clock to the absolute instant `t`."""
    fw.advance(t - fw.clock.now())


def start_charging(fw, csms, cid=1, tag="TAG1"):
    fw.sim.plug(cid)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()
    start = csms.wait_for("StartTransaction", lambda r: r["connectorId"] == cid)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == cid
                  and r["status"] == "Charging")
    fw.settle()
    return start


def epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def meter_values(csms, context=None, cid=None):
    """MeterValues received (each carries one meterValue), optionally filtered."""
    out = []
    for rec in csms.received.snapshot():
        if rec.action != "MeterValues" or (cid is not None and rec["connectorId"] != cid):
            continue
        if context is None or rec["meterValue"][0]["sampledValue"][0]["context"] == context:
            out.append(rec)
    return out


def values(rec_or_mv, measurand):
    mv = rec_or_mv["meterValue"][0] if "meterValue" in rec_or_mv else rec_or_mv
    return [sv for sv in mv["sampledValue"] if sv.get("measurand") == measurand]


def energy(rec_or_mv):
    (sv,) = values(rec_or_mv, "Energy.Active.Import.Register")
    assert sv["unit"] == "Wh"
    return float(sv["value"])


def register(fw, cid=1):
    return fw.sim.status()["connectors"][str(cid)]["energy_wh"]


def change(csms, key, value):
    return csms.call("CP-1", "ChangeConfiguration", {"key": key, "value": str(value)})["status"]


# ------------------------------------------------------------------------ TC_070 sampled
def test_tc070_sampled_every_interval_from_the_start_with_the_register_at_that_instant(
        csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 30})
    run_to(fw, T0 + 7)                     # the transaction starts off any round number
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    assert started == T0 + 7
    assert start["meterStart"] == round(INITIAL_WH)

    seen = []
    for k in range(1, 5):
        run_to(fw, started + 30 * k)
        got = meter_values(csms)
        assert len(got) == k
        rec = got[-1]
        seen.append(rec)
        # The sample was taken when it was due, and the register then is what it says.
        assert epoch(rec["meterValue"][0]["timestamp"]) == started + 30 * k
        assert energy(rec) == pytest.approx(register(fw), abs=0.001)
    assert len(meter_values(csms)) == 4
    assert energy(seen[-1]) == pytest.approx(INITIAL_WH + THREE_PHASE_W * 120 / 3600, abs=0.001)

    tx_id = start.reply["transactionId"]
    for rec in seen:
        assert rec["connectorId"] == 1 and rec["transactionId"] == tx_id
        assert len(rec["meterValue"]) == 1
        svs = rec["meterValue"][0]["sampledValue"]
        assert [sv["measurand"] for sv in svs] == ["Energy.Active.Import.Register"]
        assert {sv["context"] for sv in svs} == {"Sample.Periodic"}
    run_to(fw, started + 149)
    assert len(meter_values(csms)) == 4    # nothing between the due instants
    csms.assert_no_violations()


@pytest.mark.parametrize("measurands", [
    "Energy.Active.Import.Register",
    "Power.Active.Import,Energy.Active.Import.Register",
    "Frequency",
    ALL_SIM,
])
def test_tc070_one_sampled_value_per_configured_measurand(csms, firmware, measurands):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60})
    assert change(csms, "MeterValuesSampledData", measurands) == "Accepted"
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    svs = rec["meterValue"][0]["sampledValue"]
    wanted = measurands.split(",")
    per_phase = {"Current.Import", "Voltage"}
    expected = [m for m in wanted for _ in range(3 if m in per_phase else 1)]
    assert [sv["measurand"] for sv in svs] == expected
    assert all(sv["context"] == "Sample.Periodic" for sv in svs)
    csms.assert_no_violations()


def test_tc070_empty_sampled_data_key_means_the_energy_register(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "MeterValuesSampledData": "Power.Active.Import"})
    assert change(csms, "MeterValuesSampledData", "") == "Accepted"
    got = csms.call("CP-1", "GetConfiguration", {"key": ["MeterValuesSampledData"]})
    assert got["configurationKey"][0]["value"] == ""
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    svs = rec["meterValue"][0]["sampledValue"]
    assert [(sv["measurand"], sv["context"]) for sv in svs] == [
        ("Energy.Active.Import.Register", "Sample.Periodic")]
    assert energy(rec) == pytest.approx(register(fw), abs=0.001)
    csms.assert_no_violations()


def test_measurand_lists_from_config_toml_may_have_spaces(csms, firmware):
    """"a, b" in config.toml is the list a, b; no item may be silently dropped."""
    fw = start_firmware(csms, firmware, {
        "MeterValueSampleInterval": 60,
        "MeterValuesSampledData": "Energy.Active.Import.Register, Power.Active.Import"})
    got = csms.call("CP-1", "GetConfiguration", {"key": ["MeterValuesSampledData"]})
    assert got["configurationKey"][0]["value"] == \
        "Energy.Active.Import.Register,Power.Active.Import"
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    assert [sv["measurand"] for sv in rec["meterValue"][0]["sampledValue"]] == [
        "Energy.Active.Import.Register", "Power.Active.Import"]
    csms.assert_no_violations()


def test_no_sampled_values_when_the_interval_is_zero(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 0})
    start_charging(fw, csms)
    fw.advance(3600)
    assert meter_values(csms) == []


# ------------------------------------------------------------------------ phases and units
def test_three_phase_labels_units_and_values_match_the_meter(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "MeterValuesSampledData": ALL_SIM})
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    sim = fw.sim.status()["connectors"]["1"]

    currents = values(rec, "Current.Import")
    assert [(sv["phase"], sv["unit"]) for sv in currents] == [("L1", "A"), ("L2", "A"),
                                                              ("L3", "A")]
    assert [float(sv["value"]) for sv in currents] == [sim["current_a"]] * 3 == [32.0] * 3
    voltages = values(rec, "Voltage")
    assert [(sv["phase"], sv["unit"]) for sv in voltages] == [("L1-N", "V"), ("L2-N", "V"),
                                                              ("L3-N", "V")]
    assert [float(sv["value"]) for sv in voltages] == [230.0] * 3
    (power,) = values(rec, "Power.Active.Import")
    assert power["unit"] == "W" and float(power["value"]) == sim["power_w"] == THREE_PHASE_W
    assert "phase" not in power
    (wh,) = values(rec, "Energy.Active.Import.Register")
    assert wh["unit"] == "Wh" and "phase" not in wh
    (hz,) = values(rec, "Frequency")
    assert float(hz["value"]) == 50.0
    for sv in rec["meterValue"][0]["sampledValue"]:
        assert sv["format"] == "Raw" and sv["location"] == "Outlet"
    csms.assert_no_violations()


def test_single_phase_ev_on_three_phase_connector_reports_every_phase(csms, firmware):
    """The meter measures three phases whatever the EV draws: L2/L3 read 0 A."""
    conn = sim_connector(1, pilot={"type": "sim", "ev_phases": 1, "ev_max_current_a": 16})
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "MeterValuesSampledData": "Current.Import,"
                                         "Energy.Active.Import.Register"},
                        connectors=[conn])
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    currents = values(rec, "Current.Import")
    assert [(sv["phase"], float(sv["value"])) for sv in currents] == [
        ("L1", 16.0), ("L2", 0.0), ("L3", 0.0)]
    assert energy(rec) == pytest.approx(INITIAL_WH + 16 * 230 * 60 / 3600, abs=0.001)
    csms.assert_no_violations()


def test_single_phase_connector_has_only_l1(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "MeterValuesSampledData": "Current.Import,Voltage,"
                                         "Power.Offered"},
                        connectors=[sim_connector(1, phases=1)])
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    assert [sv["phase"] for sv in values(rec, "Current.Import")] == ["L1"]
    assert [sv["phase"] for sv in values(rec, "Voltage")] == ["L1-N"]
    (offered,) = values(rec, "Power.Offered")
    assert float(offered["value"]) == 32 * 230
    csms.assert_no_violations()


@pytest.mark.parametrize("max_a", [32, 16])
def test_current_and_power_offered(csms, firmware, max_a):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "MeterValuesSampledData": "Current.Offered,"
                                         "Power.Offered"},
                        connectors=[sim_connector(1, max_current_a=max_a)])
    start = start_charging(fw, csms)
    run_to(fw, epoch(start["timestamp"]) + 60)
    rec = csms.wait_for("MeterValues")
    (amps,) = values(rec, "Current.Offered")
    (watts,) = values(rec, "Power.Offered")
    assert amps["unit"] == "A" and float(amps["value"]) == max_a
    assert float(amps["value"]) == fw.sim.status()["connectors"]["1"]["offered_a"]
    assert watts["unit"] == "W" and float(watts["value"]) == max_a * 3 * 230
    csms.assert_no_violations()


# ------------------------------------------------------------------------ TC_071 clock-aligned
def test_tc071_aligned_on_the_quarter_hours_during_a_transaction(csms, firmware):
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 900,
                                         "MeterValuesAlignedData": "Energy.Active.Import.Register,"
                                         "Power.Active.Import"})
    run_to(fw, T0 + 100)
    start = start_charging(fw, csms)
    tx_id = start.reply["transactionId"]
    registers = []
    for k in range(1, 5):                       # 00:15, 00:30, 00:45, 01:00
        run_to(fw, T0 + 900 * k)
        assert len(meter_values(csms)) == k
        registers.append(register(fw))
    fw.advance(899)
    got = meter_values(csms)
    assert [r["meterValue"][0]["timestamp"] for r in got] == [
        "2026-01-01T00:15:00.000Z", "2026-01-01T00:30:00.000Z",
        "2026-01-01T00:45:00.000Z", "2026-01-01T01:00:00.000Z"]
    for rec, wh in zip(got, registers):
        assert rec["transactionId"] == tx_id and rec["connectorId"] == 1
        svs = rec["meterValue"][0]["sampledValue"]
        assert [sv["measurand"] for sv in svs] == ["Energy.Active.Import.Register",
                                                   "Power.Active.Import"]
        assert {sv["context"] for sv in svs} == {"Sample.Clock"}
        assert energy(rec) == pytest.approx(wh, abs=0.001)
    assert energy(got[0]) == pytest.approx(INITIAL_WH + THREE_PHASE_W * 800 / 3600, abs=0.001)
    csms.assert_no_violations()


def test_tc071_empty_aligned_data_key_means_the_energy_register(csms, firmware):
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 60,
                                         "MeterValuesAlignedData": ""})
    run_to(fw, T0 + 60)
    rec = csms.wait_for("MeterValues")
    assert [(sv["measurand"], sv["context"]) for sv in rec["meterValue"][0]["sampledValue"]] \
        == [("Energy.Active.Import.Register", "Sample.Clock")]
    assert energy(rec) == pytest.approx(INITIAL_WH, abs=0.001)
    csms.assert_no_violations()


def test_tc071_aligned_for_every_connector_with_and_without_a_transaction(csms, firmware):
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 600},
                        connectors=[sim_connector(1), sim_connector(2)])
    run_to(fw, T0 + 300)
    start = start_charging(fw, csms, cid=2)
    run_to(fw, T0 + 1800)
    got = meter_values(csms)
    assert all(r["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock" for r in got)
    for cid in (1, 2):
        mine = [r for r in got if r["connectorId"] == cid]
        assert [epoch(r["meterValue"][0]["timestamp"]) - T0 for r in mine] == [600, 1200, 1800]
    idle = [r for r in got if r["connectorId"] == 1]
    busy = [r for r in got if r["connectorId"] == 2]
    assert all("transactionId" not in r for r in idle)
    assert all(energy(r) == pytest.approx(INITIAL_WH, abs=0.001) for r in idle)
    assert all(r["transactionId"] == start.reply["transactionId"] for r in busy)
    assert [energy(r) for r in busy] == pytest.approx(
        [INITIAL_WH + THREE_PHASE_W * (t - 300) / 3600 for t in (600, 1200, 1800)], abs=0.001)
    assert not any(r["connectorId"] == 0 for r in got)
    csms.assert_no_violations()


def test_tc071_idle_aligned_values_are_not_replayed_after_an_offline_period(csms, firmware):
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 300})
    run_to(fw, T0 + 300)
    csms.wait_for("MeterValues")
    csms.stop(graceful=False)
    fw.settle()
    run_to(fw, T0 + 1500)                       # 600, 900, 1200 and 1500 pass offline
    mark = len(csms.received)
    csms.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark,
                  timeout=10)
    fw.settle()
    run_to(fw, T0 + 1800)
    csms.wait_for("MeterValues", after=mark)
    fw.settle()
    stamps = [epoch(r["meterValue"][0]["timestamp"]) - T0 for r in meter_values(csms)]
    assert stamps == [300, 1800]
    csms.assert_no_violations()


def test_aligned_values_of_a_transaction_are_queued_while_offline(csms, firmware):
    """Unlike idle values, a transaction's aligned values are transaction messages."""
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 300})
    run_to(fw, T0 + 60)
    start = start_charging(fw, csms)
    csms.stop(graceful=False)
    fw.settle()
    run_to(fw, T0 + 900)
    csms.start()
    csms.wait_for("MeterValues", lambda r: epoch(r["meterValue"][0]["timestamp"]) == T0 + 900,
                  timeout=10)
    got = meter_values(csms)
    assert [epoch(r["meterValue"][0]["timestamp"]) - T0 for r in got] == [300, 600, 900]
    assert all(r["transactionId"] == start.reply["transactionId"] for r in got)
    assert [energy(r) for r in got] == pytest.approx(
        [INITIAL_WH + THREE_PHASE_W * (t - 60) / 3600 for t in (300, 600, 900)], abs=0.001)
    csms.assert_no_violations()


def test_aligned_timestamps_stay_on_the_boundary_after_a_small_clock_correction(
        csms, firmware):
    """A heartbeat that moves the clock by less than the re-arm threshold must not move
    the clock-aligned timestamps off the boundary."""
    drift = {"s": 0.0}
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 900,
                                         "HeartbeatInterval": 300},
                        drift=lambda: drift["s"])
    drift["s"] = 0.25                           # the CSMS's clock runs 0.25 s ahead
    run_to(fw, T0 + 300)
    csms.wait_for("Heartbeat")
    fw.settle()
    run_to(fw, T0 + 1800)
    got = meter_values(csms)
    assert [r["meterValue"][0]["timestamp"] for r in got] == [
        "2026-01-01T00:15:00.000Z", "2026-01-01T00:30:00.000Z"]
    csms.assert_no_violations()


# ------------------------------------------------------------------------ both at once
def test_sampled_and_aligned_together_keep_their_own_schedules(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 240,
                                         "ClockAlignedDataInterval": 900,
                                         "MeterValuesSampledData": "Energy.Active.Import.Register,"
                                         "Current.Import",
                                         "MeterValuesAlignedData": "Energy.Active.Import.Register"})
    run_to(fw, T0 + 100)
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    instants = sorted({started + 240 * k for k in range(1, 8)} | {T0 + 900, T0 + 1800})
    registers = {}
    for t in instants:
        run_to(fw, t)
        registers[t] = register(fw)
    fw.settle()
    sampled = meter_values(csms, "Sample.Periodic")
    aligned = meter_values(csms, "Sample.Clock")
    assert [epoch(r["meterValue"][0]["timestamp"]) for r in sampled] == [
        started + 240 * k for k in range(1, 8)]
    assert [epoch(r["meterValue"][0]["timestamp"]) for r in aligned] == [T0 + 900, T0 + 1800]
    for rec in sampled + aligned:
        assert energy(rec) == pytest.approx(registers[epoch(rec["meterValue"][0]["timestamp"])],
                                            abs=0.001)
    assert all(len(values(r, "Current.Import")) == 3 for r in sampled)
    assert all(values(r, "Current.Import") == [] for r in aligned)
    # Delivered in the order they were taken.
    stamps = [epoch(r["meterValue"][0]["timestamp"]) for r in meter_values(csms)]
    assert stamps == sorted(stamps)
    csms.assert_no_violations()


# ------------------------------------------------------------------------ stop data
def test_stop_transaction_data_from_sampled_and_aligned_keys(csms, firmware):
    fw = start_firmware(csms, firmware, {
        "MeterValueSampleInterval": 120, "ClockAlignedDataInterval": 300,
        "MeterValuesSampledData": "Current.Import",
        "MeterValuesAlignedData": "Voltage",
        "StopTxnSampledData": "Energy.Active.Import.Register,Power.Active.Import",
        "StopTxnAlignedData": "Energy.Active.Import.Register"})
    run_to(fw, T0 + 50)
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    run_to(fw, T0 + 640)
    fw.sim.tap("TAG1")
    fw.settle()
    stop = csms.wait_for("StopTransaction")
    assert stop["transactionId"] == start.reply["transactionId"]
    data = stop["transactionData"]
    contexts = [mv["sampledValue"][0]["context"] for mv in data]
    stamps = [epoch(mv["timestamp"]) for mv in data]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
    assert stamps[0] == started and stamps[-1] == epoch(stop["timestamp"]) == T0 + 640
    assert stamps == sorted(stamps)
    assert [(c, t - T0) for c, t in zip(contexts[1:-1], stamps[1:-1])] == [
        ("Sample.Periodic", 170), ("Sample.Periodic", 290), ("Sample.Clock", 300),
        ("Sample.Periodic", 410), ("Sample.Periodic", 530), ("Sample.Clock", 600)]
    for mv, context in zip(data, contexts):
        assert {sv["context"] for sv in mv["sampledValue"]} == {context}
        measurands = [sv["measurand"] for sv in mv["sampledValue"]]
        if context == "Sample.Clock":
            assert measurands == ["Energy.Active.Import.Register"]
        else:
            assert measurands == ["Energy.Active.Import.Register", "Power.Active.Import"]
        assert energy(mv) == pytest.approx(INITIAL_WH + THREE_PHASE_W
                                           * (epoch(mv["timestamp"]) - started) / 3600,
                                           abs=0.001)
    assert energy(data[0]) == pytest.approx(INITIAL_WH, abs=0.001)
    assert round(energy(data[-1])) == stop["meterStop"]
    csms.assert_no_violations()


def test_no_transaction_data_when_the_stop_keys_are_empty(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60,
                                         "ClockAlignedDataInterval": 60})
    start_charging(fw, csms)
    fw.advance(300)
    fw.sim.tap("TAG1")
    fw.settle()
    stop = csms.wait_for("StopTransaction")
    assert "transactionData" not in stop
    csms.assert_no_violations()


# ------------------------------------------------------------------------ TriggerMessage
def test_trigger_meter_values_for_connector_1_during_a_transaction(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 0,
                                         "MeterValuesSampledData": "Energy.Active.Import.Register,"
                                         "Power.Active.Import"})
    start = start_charging(fw, csms)
    run_to(fw, T0 + 1234)
    answer = csms.call("CP-1", "TriggerMessage", {"requestedMessage": "MeterValues",
                                                  "connectorId": 1})
    assert answer == {"status": "Accepted"}
    rec = csms.wait_for("MeterValues")
    assert rec["connectorId"] == 1 and rec["transactionId"] == start.reply["transactionId"]
    assert epoch(rec["meterValue"][0]["timestamp"]) == T0 + 1234
    svs = rec["meterValue"][0]["sampledValue"]
    assert [sv["measurand"] for sv in svs] == ["Energy.Active.Import.Register",
                                               "Power.Active.Import"]
    assert {sv["context"] for sv in svs} == {"Trigger"}
    assert energy(rec) == pytest.approx(register(fw), abs=0.001)
    assert energy(rec) > INITIAL_WH
    fw.settle()
    assert len(meter_values(csms)) == 1
    csms.assert_no_violations()


def test_trigger_meter_values_outside_a_transaction(csms, firmware):
    fw = start_firmware(csms, firmware)
    answer = csms.call("CP-1", "TriggerMessage", {"requestedMessage": "MeterValues",
                                                  "connectorId": 1})
    assert answer == {"status": "Accepted"}
    rec = csms.wait_for("MeterValues")
    assert rec["connectorId"] == 1 and "transactionId" not in rec
    assert energy(rec) == pytest.approx(INITIAL_WH, abs=0.001)
    assert csms.call("CP-1", "TriggerMessage", {"requestedMessage": "MeterValues",
                                                "connectorId": 7}) == {"status": "Rejected"}
    fw.settle()
    assert len(meter_values(csms)) == 1
    # Without a connectorId: every connector, never connector 0.
    assert csms.call("CP-1", "TriggerMessage",
                     {"requestedMessage": "MeterValues"}) == {"status": "Accepted"}
    fw.settle()
    assert [r["connectorId"] for r in meter_values(csms)] == [1, 1]
    assert meter_values(csms)[-1]["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    csms.assert_no_violations()


# ------------------------------------------------------------------------ key changes
def test_change_sample_interval_applies_to_the_next_transaction(csms, firmware):
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60})
    assert change(csms, "MeterValueSampleInterval", 45) == "Accepted"
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    run_to(fw, started + 180)
    assert [epoch(r["meterValue"][0]["timestamp"]) - started
            for r in meter_values(csms)] == [45, 90, 135, 180]
    csms.assert_no_violations()


def test_change_sample_interval_during_a_transaction(csms, firmware):
    """A running transaction follows the new interval at once, on the grid counted from
    its start; 0 stops its sampling."""
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60})
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    run_to(fw, started + 70)
    assert change(csms, "MeterValueSampleInterval", 20) == "Accepted"
    run_to(fw, started + 160)
    assert [epoch(r["meterValue"][0]["timestamp"]) - started
            for r in meter_values(csms)] == [60, 80, 100, 120, 140, 160]
    assert change(csms, "MeterValueSampleInterval", 0) == "Accepted"
    run_to(fw, started + 600)
    assert len(meter_values(csms)) == 6
    csms.assert_no_violations()


def test_sampling_switched_on_during_a_transaction_starts(csms, firmware):
    """MeterValueSampleInterval 0 -> 30 while charging: samples follow without waiting
    for a new transaction."""
    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 0})
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    run_to(fw, started + 100)
    assert change(csms, "MeterValueSampleInterval", 30) == "Accepted"
    run_to(fw, started + 180)
    got = meter_values(csms)
    assert [epoch(r["meterValue"][0]["timestamp"]) - started for r in got] == [120, 150, 180]
    for rec in got:
        assert rec["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"
        assert energy(rec) == pytest.approx(INITIAL_WH + THREE_PHASE_W * (
            epoch(rec["meterValue"][0]["timestamp"]) - started) / 3600, abs=0.001)
    csms.assert_no_violations()


def test_change_clock_aligned_interval_takes_effect(csms, firmware):
    fw = start_firmware(csms, firmware, {"ClockAlignedDataInterval": 0})
    run_to(fw, T0 + 1000)
    assert meter_values(csms) == []
    assert change(csms, "ClockAlignedDataInterval", 600) == "Accepted"
    run_to(fw, T0 + 2400)                       # 1200, 1800, 2400
    assert change(csms, "ClockAlignedDataInterval", 900) == "Accepted"
    run_to(fw, T0 + 3600)                       # 2700, 3600
    assert change(csms, "ClockAlignedDataInterval", 0) == "Accepted"
    run_to(fw, T0 + 7200)
    stamps = [epoch(r["meterValue"][0]["timestamp"]) - T0 for r in meter_values(csms)]
    assert stamps == [1200, 1800, 2400, 2700, 3600]
    assert all(r["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
               for r in meter_values(csms))
    csms.assert_no_violations()


def test_sampling_switched_off_still_bounds_what_a_power_cut_loses(csms, firmware):
    """With sampling switched off during a transaction the running reading must still
    reach the disk every CHECKPOINT_S, or a power cut bills only the energy up to the
    last sample."""
    from chargepoint.model.metering import CHECKPOINT_S

    fw = start_firmware(csms, firmware, {"MeterValueSampleInterval": 60})
    start = start_charging(fw, csms)
    started = epoch(start["timestamp"])
    run_to(fw, started + 60)
    assert change(csms, "MeterValueSampleInterval", 0) == "Accepted"
    run_to(fw, started + 3600)
    # A checkpoint stores the poller's latest reading; the poller runs on real time, so
    # hand the loop a reading of this virtual instant before the next checkpoint is due.
    fw.runtime.meter_poller.poll_once()
    fw.settle()
    at_3600 = register(fw)
    run_to(fw, started + 3600 + CHECKPOINT_S)
    fw.cut_power()
    mark = len(csms.received)
    fw.start()
    stop = csms.wait_for("StopTransaction", after=mark, timeout=10)
    assert stop["reason"] == "PowerLoss"
    assert stop["meterStop"] >= round(at_3600)
    csms.assert_no_violations()
