"""The two clocks without a loop: local (monotonic) time for deadlines, real time for OCPP.

Unit tests of chargepoint/model/clock.py (StationClock) and of the core fed events directly.
"""
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chargepoint import events as ev
from chargepoint.model.clock import (EARLIEST_CSMS_TIME, LATEST_CSMS_TIME, StationClock,
                                       iso)
from tests.harness import STATION_NOW

BOOT_1970 = 1000.0


def test_local_time_without_a_trustworthy_wall_clock_is_unknown():
    clock = StationClock(BOOT_1970, BOOT_1970)
    assert not clock.known and clock.timestamp() is None
    assert clock.set_csms_time("2026-03-01T10:00:00Z")
    assert clock.timestamp() == "2026-03-01T10:00:00.000Z"


def test_a_system_clock_set_from_1970_is_adopted_while_the_csms_is_silent():
    clock = StationClock(BOOT_1970, BOOT_1970)
    assert clock.observe(BOOT_1970 + 10, STATION_NOW)      # NTP sets the clock
    assert clock.known
    assert clock.utc(BOOT_1970 + 10) == STATION_NOW
    assert clock.utc(BOOT_1970) == STATION_NOW - 10       # a mark taken before the step


@pytest.mark.parametrize("step", [-3600.0, 86400.0])
def test_a_stepped_system_clock_is_ignored_once_the_csms_told_the_time(step, caplog):
    clock = StationClock(STATION_NOW, STATION_NOW)
    clock.set_csms_time(iso(STATION_NOW + 5))
    with caplog.at_level(logging.WARNING):
        moved = clock.observe(STATION_NOW + 60, STATION_NOW + 60 + step)
    assert not moved
    assert clock.utc() == STATION_NOW + 65
    assert "system clock stepped" in caplog.text


def test_a_stepped_system_clock_is_followed_while_the_csms_has_not_told_the_time():
    clock = StationClock(STATION_NOW, STATION_NOW)
    assert clock.observe(STATION_NOW + 60, STATION_NOW + 60 - 3600)
    assert clock.utc() == STATION_NOW + 60 - 3600


def test_small_differences_are_not_steps():
    clock = StationClock(STATION_NOW, STATION_NOW)
    assert not clock.observe(STATION_NOW + 60, STATION_NOW + 60.4)
    assert clock.utc() == STATION_NOW + 60


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
                                  "2100-01-01T00:00:00Z", "2025-12-31T23:59:59Z",
                                  "not a time", "2026-13-01T00:00:00Z"])
def test_a_csms_time_outside_the_sane_window_is_refused(text, caplog):
    clock = StationClock(STATION_NOW, STATION_NOW)
    clock.set_csms_time(iso(STATION_NOW))
    with caplog.at_level(logging.WARNING):
        assert not clock.set_csms_time(text)
    assert clock.csms_offset == 0.0
    assert "clock unchanged" in caplog.text


def test_the_window_edges():
    clock = StationClock(STATION_NOW, STATION_NOW)
    clock.set_csms_time(iso(EARLIEST_CSMS_TIME))
    assert clock.csms_offset == EARLIEST_CSMS_TIME - STATION_NOW
    assert not clock.set_csms_time(iso(LATEST_CSMS_TIME))
    assert clock.set_csms_time(iso(LATEST_CSMS_TIME - 1))
    assert clock.utc() == LATEST_CSMS_TIME - 1


def test_a_large_correction_by_the_csms_is_logged(caplog):
    clock = StationClock(STATION_NOW, STATION_NOW)
    clock.set_csms_time(iso(STATION_NOW))
    with caplog.at_level(logging.WARNING):
        assert clock.set_csms_time(iso(STATION_NOW + 86400))
    assert "differs by +86400 s" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        clock.set_csms_time(iso(STATION_NOW + 86400 + 2))
    assert not caplog.text


@given(anchor=st.floats(EARLIEST_CSMS_TIME, LATEST_CSMS_TIME),
       started=st.floats(0, 1e9), elapsed=st.floats(-1e6, 1e7))
def test_a_transaction_timeline_never_goes_before_its_start(anchor, started, elapsed):
    at = StationClock.on_anchor(anchor, started, started + elapsed)
    assert at >= anchor
    if elapsed >= 0:
        assert at == pytest.approx(anchor + elapsed)


# ------------------------------------------------------------------ the core, fed directly

def test_timers_run_on_local_time_whatever_the_system_clock_does(station):
    """A Heartbeat-like deadline set before a step of the system clock falls due after the
    same local time, in either direction."""
    fired = []
    station.services.timers.set("probe", STATION_NOW + 30, lambda: fired.append(station.services.clock.now))
    station.handle(ev.Tick(), STATION_NOW + 10, STATION_NOW + 10 - 3600)
    assert not fired
    station.handle(ev.Tick(), STATION_NOW + 30, STATION_NOW + 30 - 3600)
    assert fired == [STATION_NOW + 30]
    station.services.timers.set("probe", STATION_NOW + 60, lambda: fired.append(station.services.clock.now))
    station.handle(ev.Tick(), STATION_NOW + 40, STATION_NOW + 40 + 86400)
    assert len(fired) == 1
    station.handle(ev.Tick(), STATION_NOW + 60, STATION_NOW + 60 + 86400)
    assert fired[-1] == STATION_NOW + 60
