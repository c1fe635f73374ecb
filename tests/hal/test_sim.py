"""The simulated charger: EV behaviour, exact energy, faults — all on a fake clock."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.events import CableDetected, FaultCode, HardwareFault, PilotStateChanged, TagPresented
from hal.factory import build_hardware, parse_device
from hal.interfaces import IndicatorColour, MeterUnavailable, PilotState
from hal.settings import SettingsError
from hal.sim import (SimCharger, SimContactorSettings, SimError, SimIndicatorSettings,
                     SimLockSettings, SimMeterSettings, SimPilotSettings, SimReaderSettings)

A, B, C, F = PilotState.A, PilotState.B, PilotState.C, PilotState.F


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Rig:
    """Simulated hardware built the way the firmware builds it, plus what it emitted."""

    def __init__(self, clock=None, connectors=1, phases=3, max_current_a=32.0,
                 pilot=None, meter=None, contactor=None, lock=True):
        self.clock = clock or FakeClock()
        self.events: list = []
        specs = [SimpleNamespace(
            id=i, phases=phases, nominal_voltage_v=230.0, max_current_a=max_current_a,
            meter=meter or SimMeterSettings(), contactor=contactor or SimContactorSettings(),
            pilot=pilot or SimPilotSettings(),
            lock=lock if isinstance(lock, SimLockSettings) else SimLockSettings() if lock else None,
            indicator=SimIndicatorSettings()) for i in range(1, connectors + 1)]
        self.hw = build_hardware(specs, [SimReaderSettings()], emit=self.events.append,
                                 clock=self.clock)
        self.sim: SimCharger = self.hw.simulator
        self.hw.start()

    def conn(self, cid=1):
        return self.hw.connectors[cid]

    def take(self) -> list:
        taken, self.events[:] = list(self.events), []
        return taken

    def charging(self, amps=16.0, cid=1):
        """Plug, offer, close: the usual way into state C with power flowing."""
        self.sim.plug(cid)
        self.conn(cid).pilot.set_max_current(amps)
        self.conn(cid).contactor.set_closed(True)
        self.take()


def test_start_reports_initial_state_and_plug_gives_b():
    rig = Rig(connectors=2)
    assert rig.take() == [PilotStateChanged(1, A), PilotStateChanged(2, A)]
    rig.sim.plug(2)                                  # a socket outlet: the cable goes in first
    assert rig.take() == [CableDetected(2, 32.0), PilotStateChanged(2, B)]
    assert rig.conn(2).pilot.state() == B
    assert rig.conn(1).pilot.state() == A


def test_offer_gives_c_and_energy_is_integrated_exactly():
    rig = Rig()
    rig.sim.plug(1)
    rig.take()
    rig.conn().pilot.set_max_current(16)
    assert rig.take() == [PilotStateChanged(1, C)]
    rig.clock.advance(600)                           # contactor still open: nothing drawn
    assert rig.conn().meter.read().energy_import_wh == 0
    rig.conn().contactor.set_closed(True)
    rig.clock.advance(3600)
    reading = rig.conn().meter.read()
    assert reading.energy_import_wh == 11040.0       # 16 A x 230 V x 3 phases x 1 h
    assert reading.power_w == 11040.0
    assert reading.current_a == (16.0, 16.0, 16.0)
    assert reading.voltage_v == (230.0, 230.0, 230.0)
    assert reading.frequency_hz == 50.0
    assert reading.time == rig.clock.t
    rig.conn().contactor.set_closed(False)
    rig.clock.advance(3600)
    reading = rig.conn().meter.read()
    assert reading.energy_import_wh == 11040.0
    assert reading.power_w == 0 and reading.current_a == (0.0, 0.0, 0.0)


def test_meter_supplies_its_measurands_and_starts_at_initial_wh():
    rig = Rig(meter=SimMeterSettings(initial_wh=1234.5))
    meter = rig.conn().meter
    assert meter.measurands == {"Energy.Active.Import.Register", "Power.Active.Import",
                                "Current.Import", "Voltage", "Frequency"}
    assert meter.read().energy_import_wh == 1234.5
    rig.charging()
    rig.clock.advance(1800)
    assert meter.read().energy_import_wh == 1234.5 + 5520.0


def test_current_is_limited_by_ev_and_connector_and_ev_phases():
    rig = Rig(max_current_a=20.0, pilot=SimPilotSettings(ev_phases=1))
    rig.charging(amps=32)
    reading = rig.conn().meter.read()
    assert reading.current_a == (20.0, 0.0, 0.0)     # connector rated 20 A, EV on L1 only
    assert reading.power_w == 20 * 230.0
    rig2 = Rig(pilot=SimPilotSettings(ev_max_current_a=10))
    rig2.charging(amps=16)
    assert rig2.conn().meter.read().current_a == (10.0, 10.0, 10.0)


def test_lower_offer_changes_power_from_that_instant():
    rig = Rig()
    rig.charging(amps=16)
    rig.clock.advance(1800)
    rig.conn().pilot.set_max_current(8)
    rig.clock.advance(1800)
    assert rig.conn().meter.read().energy_import_wh == 5520.0 + 8 * 230 * 3 / 2


def _scenario(read_times: list[float]) -> tuple[float, list]:
    """Fixed commands at fixed instants, reads wherever the caller says; returns the
    final register and the events emitted."""
    rig = Rig(pilot=SimPilotSettings(battery_wh=20000, initial_soc=50, ev_reaction_s=1.5))
    t0 = rig.clock.t
    script = [
        (0.0, lambda: rig.sim.plug(1)),
        (10.0, lambda: rig.conn().pilot.set_max_current(16)),
        (20.0, lambda: rig.conn().contactor.set_closed(True)),
        (700.0, lambda: rig.sim.ev_suspend(1)),
        (1000.5, lambda: rig.sim.ev_resume(1)),
        (2000.25, lambda: rig.conn().pilot.set_max_current(10)),
        # the battery fills at about 4519 s; these come after it
        (6000.0, lambda: rig.conn().pilot.set_max_current(None)),
        (6100.0, lambda: rig.conn().contactor.set_closed(False)),
    ]
    steps = [(t, 0, action) for t, action in script]
    steps += [(t, 1, lambda: rig.conn().meter.read()) for t in read_times]
    for t, _, action in sorted(steps, key=lambda s: (s[0], s[1])):
        rig.clock.t = t0 + t
        action()
    rig.clock.t = t0 + 7200.0
    return rig.conn().meter.read().energy_import_wh, rig.events


_BASELINE = _scenario([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=7200, allow_nan=False), max_size=40))
def test_read_times_do_not_change_energy_or_events(read_times):
    assert _scenario(read_times) == _BASELINE


def test_baseline_scenario_charges_what_its_segments_say():
    energy, events = _BASELINE
    # 16 A from 11.5 s (reaction) to 700 s, and from 1002 s to 2000.25 s; then 10 A
    # until the 10 kWh the battery still takes are in.
    assert energy == pytest.approx(10000.0, abs=1e-6)
    assert [e.state for e in events if isinstance(e, PilotStateChanged)] == \
        [A, B, C, B, C, B]


def test_battery_fills_at_the_exact_instant():
    rig = Rig(pilot=SimPilotSettings(battery_wh=10000, initial_soc=50))
    rig.charging(amps=16)
    t_start = rig.clock.t
    t_full = t_start + 5000 * 3600 / 11040            # 5 kWh gap at 11.04 kW
    rig.clock.t = t_full - 1
    reading = rig.conn().meter.read()
    assert reading.energy_import_wh == pytest.approx(11040 * (t_full - 1 - t_start) / 3600)
    assert rig.conn().pilot.state() == C
    rig.clock.t = t_full + 3600                       # an hour later, nothing polled since
    assert rig.take() == []                           # events come with the next call
    rig.sim.update()
    assert rig.take() == [PilotStateChanged(1, B)]
    reading = rig.conn().meter.read()
    assert reading.energy_import_wh == pytest.approx(5000.0, abs=1e-9)
    assert reading.power_w == 0
    assert rig.sim.status()["connectors"]["1"]["soc_percent"] == 100.0
    rig.conn().pilot.set_max_current(None)            # a full EV does not ask again
    rig.conn().pilot.set_max_current(16)
    assert rig.conn().pilot.state() == B and rig.take() == []


def test_full_battery_is_reported_by_a_meter_read_too():
    rig = Rig(pilot=SimPilotSettings(battery_wh=1000, initial_soc=0))
    rig.charging(amps=16)
    rig.clock.advance(3600)
    rig.conn().meter.read()
    assert rig.take() == [PilotStateChanged(1, B)]


def test_replug_brings_a_car_at_the_initial_charge():
    rig = Rig(pilot=SimPilotSettings(battery_wh=1000, initial_soc=50))
    rig.charging(amps=16)
    rig.clock.advance(3600)
    rig.conn().contactor.set_closed(False)
    rig.sim.unplug(1)
    rig.sim.plug(1)
    assert rig.sim.status()["connectors"]["1"]["soc_percent"] == 50.0
    assert rig.conn().pilot.state() == C


def test_offer_below_six_amps_or_none_sends_the_ev_to_b():
    rig = Rig()
    rig.charging(amps=16)
    rig.conn().pilot.set_max_current(5)
    assert rig.take() == [PilotStateChanged(1, B)]
    assert rig.conn().meter.read().power_w == 0
    rig.conn().pilot.set_max_current(6)
    assert rig.take() == [PilotStateChanged(1, C)]
    rig.conn().pilot.set_max_current(None)
    assert rig.take() == [PilotStateChanged(1, B)]
    with pytest.raises(ValueError):
        rig.conn().pilot.set_max_current(-1)


def test_reaction_delay_postpones_c_and_the_power():
    rig = Rig(pilot=SimPilotSettings(ev_reaction_s=2))
    rig.sim.plug(1)
    rig.conn().contactor.set_closed(True)
    rig.take()
    rig.conn().pilot.set_max_current(16)
    assert rig.conn().pilot.state() == B
    rig.clock.advance(1.5)
    rig.sim.update()
    assert rig.take() == []
    rig.clock.advance(3600.5)
    assert rig.conn().meter.read().energy_import_wh == 11040.0   # from 2 s on
    assert rig.take() == [PilotStateChanged(1, C)]


def test_ev_suspend_and_resume():
    rig = Rig()
    rig.charging()
    rig.sim.ev_suspend(1)
    assert rig.take() == [PilotStateChanged(1, B)]
    rig.clock.advance(3600)
    assert rig.conn().meter.read().energy_import_wh == 0
    rig.sim.ev_resume(1)
    assert rig.take() == [PilotStateChanged(1, C)]
    rig.conn().pilot.set_max_current(None)
    rig.take()
    rig.sim.ev_suspend(1)
    rig.sim.ev_resume(1)                              # nothing offered: stays in B
    assert rig.conn().pilot.state() == B and rig.take() == []


def test_unplug_gives_a_and_stops_power():
    rig = Rig(lock=False)
    rig.charging()
    rig.sim.unplug(1)
    assert rig.take() == [PilotStateChanged(1, A)]
    assert rig.conn().meter.read().power_w == 0
    with pytest.raises(SimError, match="no EV"):
        rig.sim.unplug(1)


def test_a_locked_plug_cannot_be_pulled_out():
    rig = Rig()
    rig.sim.plug(1)
    assert rig.conn().lock.set_locked(True) is True
    assert rig.conn().lock.is_locked() is True
    with pytest.raises(SimError, match="locked"):
        rig.sim.unplug(1)
    rig.conn().lock.set_locked(False)
    rig.sim.unplug(1)
    assert rig.conn().pilot.state() == A


def test_ev_side_unplug_leaves_the_cable_in_a_locked_socket():
    """TC_005: the driver unplugs at the car; the socket end stays locked in the charger."""
    rig = Rig()
    rig.charging()
    rig.conn().lock.set_locked(True)
    assert rig.conn().pilot.cable_ampacity() == 32.0
    rig.sim.unplug(1, side="ev")                      # allowed although locked
    assert rig.take() == [PilotStateChanged(1, A)]
    assert rig.conn().meter.read().power_w == 0
    status = rig.sim.status()["connectors"]["1"]
    assert status["plugged"] is False and status["cable_in_socket"] is True
    assert rig.conn().pilot.cable_ampacity() == 32.0
    with pytest.raises(SimError, match="no EV"):
        rig.sim.unplug(1, side="ev")
    with pytest.raises(SimError, match="locked"):
        rig.sim.unplug(1, side="socket")
    with pytest.raises(SimError, match="locked"):
        rig.sim.unplug(1)
    assert rig.take() == []
    rig.conn().lock.set_locked(False)
    rig.sim.unplug(1, side="socket")
    assert rig.take() == [CableDetected(1, None)]
    assert rig.conn().pilot.cable_ampacity() is None
    assert rig.sim.status()["connectors"]["1"]["cable_in_socket"] is False
    with pytest.raises(SimError, match="no cable"):
        rig.sim.unplug(1, side="socket")
    with pytest.raises(SimError, match="no EV"):
        rig.sim.unplug(1)


def test_the_ev_comes_back_to_the_cable_left_in_the_socket():
    rig = Rig()
    rig.sim.plug(1)
    rig.sim.unplug(1, side="ev")
    rig.take()
    rig.sim.plug(1)                                   # the same cable: no new detection
    assert rig.take() == [PilotStateChanged(1, B)]


def test_default_unplug_pulls_both_ends():
    rig = Rig()
    rig.take()
    rig.sim.plug(1)
    rig.sim.unplug(1)
    assert rig.take() == [CableDetected(1, 32.0), PilotStateChanged(1, B),
                          PilotStateChanged(1, A), CableDetected(1, None)]
    rig.sim.plug(1)
    rig.sim.unplug(1, side="ev")
    rig.take()
    rig.sim.unplug(1)                                 # only the cable was left
    assert rig.take() == [CableDetected(1, None)]


def test_socket_end_first_disconnects_the_ev_too():
    rig = Rig()
    rig.charging()
    rig.sim.unplug(1, side="socket")
    assert rig.take() == [PilotStateChanged(1, A), CableDetected(1, None)]
    assert rig.conn().meter.read().power_w == 0


def test_a_forced_unplug_pulls_a_locked_cable_out():
    rig = Rig()
    rig.sim.plug(1)
    rig.conn().lock.set_locked(True)
    rig.take()
    rig.sim.unplug(1, force=True)
    assert rig.take() == [PilotStateChanged(1, A), CableDetected(1, None)]


def test_a_fixed_cable_reports_no_cable_and_has_no_socket_end():
    rig = Rig(lock=False)
    rig.take()
    rig.sim.plug(1)
    assert rig.take() == [PilotStateChanged(1, B)]
    assert rig.conn().pilot.cable_ampacity() is None
    assert rig.sim.status()["connectors"]["1"]["cable_in_socket"] is None
    with pytest.raises(SimError, match="fixed"):
        rig.sim.unplug(1, side="socket")
    with pytest.raises(SimError, match="side"):
        rig.sim.unplug(1, side="middle")
    rig.sim.unplug(1, side="ev")                      # the same as a plain unplug
    assert rig.take() == [PilotStateChanged(1, A)]


def test_cable_ampacity_is_configurable():
    rig = Rig(lock=SimLockSettings(cable_ampacity_a=20.0))
    rig.take()
    rig.sim.plug(1)
    assert rig.take() == [CableDetected(1, 20.0), PilotStateChanged(1, B)]
    assert parse_device("lock", {"type": "sim", "cable_ampacity_a": 63}, "l") == \
        SimLockSettings(cable_ampacity_a=63.0)
    with pytest.raises(SettingsError) as err:
        parse_device("lock", {"type": "sim", "cable_ampacity_a": 25}, "l")
    assert err.value.key == "l.cable_ampacity_a"


def test_commands_refuse_nonsense():
    rig = Rig()
    rig.sim.plug(1)
    with pytest.raises(SimError, match="already"):
        rig.sim.plug(1)
    with pytest.raises(SimError, match="no simulated connector 7"):
        rig.sim.plug(7)
    with pytest.raises(SimError, match="unknown fault"):
        rig.sim.fault("smoke", 1)
    with pytest.raises(SimError, match="connector 0"):
        rig.sim.fault("meter", 0)
    with pytest.raises(SimError):
        rig.sim.tap("has space")
    with pytest.raises(SimError):
        rig.sim.tap("X" * 21)
    rig.sim.unplug(1)
    with pytest.raises(SimError, match="no EV"):
        rig.sim.ev_suspend(1)


def test_tap_emits_tag_presented():
    rig = Rig()
    rig.take()
    rig.hw.readers[0].tap("04A1B2C3")
    assert rig.take() == [TagPresented("04A1B2C3", reader="sim")]


@pytest.mark.parametrize("what,code", [
    ("ground", FaultCode.GROUND_FAILURE),
    ("overcurrent", FaultCode.OVER_CURRENT_FAILURE),
    ("temperature", FaultCode.HIGH_TEMPERATURE),
])
def test_reported_faults_come_and_go(what, code):
    rig = Rig(connectors=2)
    rig.take()
    rig.sim.fault(what, 2)
    rig.sim.fault(what, 2)                            # already active: no second event
    assert [(e.connector_id, e.code, e.active) for e in rig.take()] == [(2, code, True)]
    assert rig.sim.status()["connectors"]["2"]["faults"] == [what]
    rig.sim.clear_fault(what, 2)
    rig.sim.clear_fault(what, 2)
    assert [(e.connector_id, e.code, e.active) for e in rig.take()] == [(2, code, False)]
    rig.sim.fault(what, 0)                            # charger-wide
    assert [(e.connector_id, e.code, e.active) for e in rig.take()] == [(0, code, True)]
    assert rig.sim.status()["faults"] == [what]


def test_meter_fault_makes_reads_fail_while_energy_still_counts():
    rig = Rig()
    rig.charging()
    rig.sim.fault("meter", 1)
    assert rig.take() == []                           # the meter poller reports it
    rig.clock.advance(1800)
    with pytest.raises(MeterUnavailable):
        rig.conn().meter.read()
    rig.clock.advance(1800)
    rig.sim.clear_fault("meter", 1)
    assert rig.conn().meter.read().energy_import_wh == 11040.0


def test_lock_fault_makes_locking_fail():
    rig = Rig()
    rig.take()
    rig.sim.fault("lock", 1)
    assert rig.take() == [HardwareFault(1, FaultCode.CONNECTOR_LOCK_FAILURE, True,
                                        info="connector lock does not move (simulated)")]
    assert rig.conn().lock.set_locked(True) is False
    assert rig.conn().lock.is_locked() is False
    rig.sim.clear_fault("lock", 1)
    assert [e.active for e in rig.take()] == [False]
    assert rig.conn().lock.set_locked(True) is True


def test_welded_contactor_stays_closed_and_keeps_feeding_the_ev():
    rig = Rig()
    rig.charging()
    contactor = rig.conn().contactor
    assert contactor.feedback_closed() is True
    rig.sim.fault("contactor-welded", 1)
    assert [(e.code, e.active) for e in rig.take()] == [(FaultCode.POWER_SWITCH_FAILURE, True)]
    contactor.set_closed(False)
    assert contactor.commanded_closed is False
    assert contactor.feedback_closed() is True
    rig.clock.advance(3600)
    assert rig.conn().meter.read().energy_import_wh == 11040.0
    rig.sim.clear_fault("contactor-welded", 1)
    assert [(e.code, e.active) for e in rig.take()] == [(FaultCode.POWER_SWITCH_FAILURE, False)]
    assert contactor.feedback_closed() is False
    rig.clock.advance(3600)
    assert rig.conn().meter.read().energy_import_wh == 11040.0


def test_contactor_configured_welded_reports_on_start():
    rig = Rig(contactor=SimContactorSettings(welded=True))
    assert HardwareFault(1, FaultCode.POWER_SWITCH_FAILURE, True,
                         info="contactor welded (simulated)") in rig.take()
    assert rig.conn().contactor.feedback_closed() is True


def test_pilot_fault_gives_f_and_no_power_until_cleared():
    rig = Rig()
    rig.charging()
    rig.sim.fault("pilot", 1)
    events = rig.take()
    assert [(e.code, e.active) for e in events if isinstance(e, HardwareFault)] == \
        [(FaultCode.EV_COMMUNICATION_ERROR, True)]
    assert events[-1] == PilotStateChanged(1, F)
    assert rig.conn().meter.read().power_w == 0
    rig.sim.clear_fault("pilot", 1)
    events = rig.take()
    assert events[0].active is False and events[-1] == PilotStateChanged(1, C)
    assert rig.conn().meter.read().power_w == 11040.0


def test_status_is_json_and_shows_everything():
    rig = Rig()
    rig.charging()
    rig.conn().lock.set_locked(True)
    rig.conn().indicator.show(IndicatorColour.CHARGING)
    rig.clock.advance(360)
    status = json.loads(json.dumps(rig.sim.status()))
    assert status["connectors"]["1"] == {
        "connector_id": 1, "plugged": True, "pilot": "C", "ev_suspended": False,
        "offered_a": 16.0, "contactor": "closed", "contactor_feedback": "closed",
        "lock": "locked", "cable_in_socket": True, "energy_wh": pytest.approx(1104.0), "power_w": 11040.0,
        "current_a": 16.0, "soc_percent": pytest.approx(20 + 100 * 1104 / 60000),
        "faults": [], "indicator": "charging"}


def test_settings_parse_and_reject_bad_values():
    pilot = parse_device("pilot", {"type": "sim", "battery_wh": 40000, "initial_soc": 80,
                                   "ev_phases": 1}, "connectors[0].pilot")
    assert pilot == SimPilotSettings(battery_wh=40000.0, initial_soc=80.0, ev_phases=1)
    for key, value in [("battery_wh", 0), ("initial_soc", 101), ("ev_phases", 4),
                       ("ev_max_current_a", 5), ("ev_reaction_s", -1)]:
        with pytest.raises(SettingsError) as err:
            parse_device("pilot", {"type": "sim", key: value}, "connectors[0].pilot")
        assert err.value.key == f"connectors[0].pilot.{key}"
    with pytest.raises(SettingsError) as err:
        parse_device("meter", {"type": "sim", "initial_wh": -1}, "m")
    assert err.value.key == "m.initial_wh"
    assert parse_device("contactor", {"type": "sim", "welded": True}, "c").welded is True
    for kind in ("lock", "indicator", "reader"):
        assert parse_device(kind, {"type": "sim"}, kind) is not None
