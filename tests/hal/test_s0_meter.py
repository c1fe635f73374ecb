"""S0 pulse meter on gpiozero's mock pins, with a fake clock and a real state file."""
from __future__ import annotations

import json
import logging

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from hal.factory import BuildContext, parse_device
from hal.meters.s0 import S0Meter, S0MeterSettings
from hal.settings import SettingsError

PIN = 26


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def pins():
    Device.ensure_pin_factory()
    assert isinstance(Device.pin_factory, MockFactory)
    yield Device.pin_factory
    Device.pin_factory.reset()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state" / "s0.json"


@pytest.fixture
def make(pins, clock, state):
    built: list[S0Meter] = []

    def make(**kw) -> S0Meter:
        kw.setdefault("pin", PIN)
        kw.setdefault("state_file", str(state))
        ctx = BuildContext(connector_id=1, emit=lambda e: None, clock=clock)
        meter = S0MeterSettings(**kw).build(ctx)
        built.append(meter)
        return meter

    yield make
    for meter in built:
        meter.close()


class Line:
    """The meter's opto output as the pin sees it (pull-up wiring: a pulse pulls it low)."""

    def __init__(self, pins, clock, active_low: bool = True):
        self.pin = pins.pin(PIN)
        self.clock = clock
        self.active_low = active_low

    def on(self) -> None:
        self.pin.drive_low() if self.active_low else self.pin.drive_high()

    def off(self) -> None:
        self.pin.drive_high() if self.active_low else self.pin.drive_low()

    def pulse(self, width: float = 0.05, then_wait: float = 0.0) -> None:
        self.on()
        self.clock.advance(width)
        self.off()
        self.clock.advance(then_wait)


def test_pulses_become_energy(make, pins, clock):
    meter = make()
    line = Line(pins, clock)
    assert meter.read().energy_import_wh == 0
    for _ in range(5):
        line.pulse(then_wait=1.0)
    reading = meter.read()
    assert reading.energy_import_wh == 5.0
    assert reading.time == clock.now
    assert meter.measurands == {"Energy.Active.Import.Register", "Power.Active.Import"}


def test_other_pulse_rates(make, pins, clock):
    meter = make(pulses_per_kwh=800)
    line = Line(pins, clock)
    for _ in range(4):
        line.pulse(then_wait=0.5)
    assert meter.read().energy_import_wh == 5.0          # 1.25 Wh per pulse


def test_power_from_the_last_interval_then_decaying_to_zero(make, pins, clock):
    meter = make()
    line = Line(pins, clock)
    assert meter.read().power_w is None                  # nothing known yet
    line.pulse(width=0.05, then_wait=0.45)               # leading edges 0.5 s apart
    assert meter.read().power_w is None                  # one pulse is no interval
    line.pulse(width=0.05, then_wait=0.1)
    assert meter.read().power_w == 7200.0                # 3600 × 1 Wh / 0.5 s
    clock.advance(1.85)                                  # 2 s since the last pulse
    assert meter.read().power_w == 1800.0                # at most what 2 s allow
    clock.advance(71)                                    # 73 s: bound below 50 W, idle
    assert meter.read().power_w == 0.0


def test_no_pulses_at_all_reads_zero_power_after_a_while(make, clock):
    meter = make()
    clock.advance(71)
    assert meter.read().power_w is None                  # 3600 / 71 s > 50 W: could be charging
    clock.advance(2)
    assert meter.read().power_w == 0.0


def test_short_glitches_are_not_pulses(make, pins, clock):
    meter = make(min_pulse_ms=30)
    line = Line(pins, clock)
    line.pulse(width=0.029, then_wait=1.0)               # too short
    line.pulse(width=0.030, then_wait=1.0)               # exactly the minimum
    assert meter.read().energy_import_wh == 1.0


def test_contact_bounce_and_dropouts_count_once(make, pins, clock):
    meter = make(min_pulse_ms=30)
    line = Line(pins, clock)
    # Bounce on the leading edge: on 1 ms, off 1 ms, then a clean 60 ms pulse.
    line.pulse(width=0.001, then_wait=0.001)
    line.pulse(width=0.060, then_wait=1.0)
    assert meter.read().energy_import_wh == 1.0
    # A 1 ms dropout in the middle of a 100 ms pulse.
    line.pulse(width=0.050, then_wait=0.001)
    line.pulse(width=0.050, then_wait=1.0)
    assert meter.read().energy_import_wh == 2.0
    # A spike in the pause right after a pulse is part of that pulse, not a new one.
    line.pulse(width=0.050, then_wait=0.010)
    line.pulse(width=0.040, then_wait=1.0)
    assert meter.read().energy_import_wh == 3.0
    # A legal pause (>= 30 ms) separates two pulses.
    line.pulse(width=0.040, then_wait=0.030)
    line.pulse(width=0.040, then_wait=1.0)
    assert meter.read().energy_import_wh == 5.0


def test_pull_down_wiring_counts_high_pulses(make, pins, clock):
    meter = make(pull_up=False)
    line = Line(pins, clock, active_low=False)
    line.pulse(then_wait=1.0)
    line.pulse(then_wait=1.0)
    assert meter.read().energy_import_wh == 2.0


def test_count_survives_a_restart(make, pins, clock, state):
    meter = make()
    line = Line(pins, clock)
    for _ in range(7):
        line.pulse(then_wait=0.2)
    meter.close()
    assert json.loads(state.read_text())["pulses"] == 7
    assert not state.with_name(state.name + ".tmp").exists()
    again = make()
    assert again.read().energy_import_wh == 7.0
    Line(pins, clock).pulse(then_wait=0.2)
    assert again.read().energy_import_wh == 8.0


def test_writes_are_batched_by_time_and_by_count(make, pins, clock, state):
    meter = make(persist_interval_s=60, persist_pulses=10)
    line = Line(pins, clock)
    meter.read()
    assert not state.exists()                            # nothing to save yet
    for _ in range(3):
        line.pulse(then_wait=1.0)
    meter.read()
    assert not state.exists()                            # 3 pulses, 3 s: not due
    clock.advance(60)
    meter.read()
    assert json.loads(state.read_text())["pulses"] == 3  # due by time
    for _ in range(9):
        line.pulse(then_wait=0.1)
    meter.read()
    assert json.loads(state.read_text())["pulses"] == 3  # 9 unsaved: not due
    line.pulse(then_wait=0.1)
    meter.read()
    assert json.loads(state.read_text())["pulses"] == 13  # 10 unsaved: due by count


def test_missing_state_file_starts_from_zero_with_a_warning(make, caplog):
    with caplog.at_level(logging.WARNING, logger="hal.meters.s0"):
        meter = make()
    assert meter.read().energy_import_wh == 0
    assert "no saved pulse count" in caplog.text


@pytest.mark.parametrize("content", [
    "", "{", "[]", '{"pulses": -4, "pulses_per_kwh": 1000}', '{"pulses": "12"}',
    '{"pulses": 1.5, "pulses_per_kwh": 1000}', '{"pulses_per_kwh": 1000}', "\x00\xff"])
def test_corrupt_state_file_starts_from_zero_and_is_kept(make, state, caplog, content):
    state.parent.mkdir(parents=True)
    state.write_text(content, encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="hal.meters.s0"):
        meter = make()
    assert meter.read().energy_import_wh == 0
    assert "corrupt" in caplog.text
    assert state.with_name(state.name + ".corrupt").read_text(encoding="latin-1") == content


def test_changed_pulse_rate_keeps_the_energy(make, state, caplog):
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pulses": 5000, "pulses_per_kwh": 1000}))
    with caplog.at_level(logging.WARNING, logger="hal.meters.s0"):
        meter = make(pulses_per_kwh=500)
    assert meter.read().energy_import_wh == 5000.0
    assert "imp/kWh" in caplog.text


def test_unwritable_state_file_does_not_stop_metering(make, pins, clock, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    meter = make(state_file=str(blocker / "s0.json"), persist_interval_s=1)
    line = Line(pins, clock)
    with caplog.at_level(logging.WARNING, logger="hal.meters.s0"):
        for _ in range(3):
            line.pulse(then_wait=2.0)
            assert meter.read().energy_import_wh > 0
    assert caplog.text.count("cannot save the pulse count") == 1


def test_default_state_file_lives_in_the_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert S0MeterSettings(pin=5).state_path(2) == tmp_path / "s0-connector-2.json"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert str(S0MeterSettings(pin=5).state_path(2)) == "var/s0-connector-2.json"


def test_settings_from_toml():
    s = parse_device("meter", {"type": "s0", "pin": 17, "pulses_per_kwh": 2000,
                               "pull_up": False, "state_file": "/var/lib/x.json"}, "c.meter")
    assert s == S0MeterSettings(pin=17, pulses_per_kwh=2000, pull_up=False,
                                state_file="/var/lib/x.json")
    assert (s.min_pulse_ms, s.persist_interval_s, s.persist_pulses) == (30, 60.0, 100)


@pytest.mark.parametrize("key, value", [
    ("pin", 28), ("pin", -1), ("pulses_per_kwh", 0), ("min_pulse_ms", 0),
    ("persist_interval_s", 0), ("persist_pulses", 0), ("pull_up", "yes"), ("pin", "GPIO17")])
def test_bad_settings_name_the_key(key, value):
    table = {"type": "s0", "pin": 17, key: value}
    with pytest.raises(SettingsError) as info:
        parse_device("meter", table, "connectors[0].meter")
    assert info.value.key == f"connectors[0].meter.{key}"
