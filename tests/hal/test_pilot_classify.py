"""Pilot arithmetic: window edges, diode check, PP decoding, ADC conversion."""
import math

import pytest

from hal.interfaces import PilotState
from hal.pilot_classify import (CP_WINDOWS, ampacity_for_ohms, classify_cp, cp_volts,
                                diode_present, pp_ohms)


@pytest.mark.parametrize("volts,state", [
    (12.0, PilotState.A), (11.4, PilotState.A), (12.6, PilotState.A),
    (9.0, PilotState.B), (8.36, PilotState.B), (9.56, PilotState.B),
    (6.0, PilotState.C), (5.48, PilotState.C), (6.49, PilotState.C),
    (3.0, PilotState.D), (2.62, PilotState.D), (3.25, PilotState.D),
    (0.0, PilotState.E), (-1.0, PilotState.E),
    (-12.0, PilotState.F),
])
def test_states_by_high_plateau(volts, state):
    assert classify_cp(volts) is state


@pytest.mark.parametrize("volts", [11.3, 12.7, 10.5, 8.3, 9.6, 7.0, 5.4, 6.5, 4.5, 2.6, 3.3,
                                   1.6, -5.0, -14.0, math.nan, math.inf])
def test_between_windows_is_unclassified(volts):
    assert classify_cp(volts) is None


def test_windows_do_not_overlap():
    spans = sorted((low, high) for _, low, high in CP_WINDOWS)
    for (_, high), (low, _) in zip(spans, spans[1:]):
        assert high < low


def test_diode_check():
    assert diode_present(-12.0)
    assert diode_present(-11.0)
    assert not diode_present(-8.8)        # EV without diode in B: 2.74 k against the 1 k source
    assert not diode_present(0.0)


def test_cp_conversion_of_the_reference_level_shifter():
    # 100 k from CP, 22 k to 3.3 V, 33 k to GND: the node voltage for a CP voltage.
    def node(cp):
        g = 1 / 100 + 1 / 22 + 1 / 33
        return (cp / 100 + 3.3 / 22) / g
    for cp in (-12.0, -3.0, 0.0, 6.0, 9.0, 12.0):
        assert cp_volts(node(cp) / 3.3) == pytest.approx(cp, abs=0.01)
    assert 0 < node(-12) / 3.3 < node(12) / 3.3 < 1


def test_cp_conversion_with_own_calibration():
    assert cp_volts(0.5, scale=24.0, offset=-12.0) == pytest.approx(0.0)
    assert cp_volts(1.0, scale=24.0, offset=-12.0) == pytest.approx(12.0)


@pytest.mark.parametrize("ohms,amps", [
    (1500, 13.0), (2459, 13.0), (936, 13.0),
    (680, 20.0), (308, 20.0),
    (220, 32.0), (140, 32.0),
    (100, 63.0), (80, 63.0),
    (2460, None), (5000, None), (79, None), (0, None), (math.inf, None),
])
def test_pp_ampacity_windows(ohms, amps):
    # At a shared edge the lower ampacity wins: the safe side.
    assert ampacity_for_ohms(ohms) == amps


@pytest.mark.parametrize("ohms", [100.0, 220.0, 680.0, 1500.0])
def test_pp_resistance_from_divider(ohms):
    pullup = 1000.0
    fraction = ohms / (ohms + pullup)               # pull-up to the ADC reference
    assert pp_ohms(fraction, pullup) == pytest.approx(ohms)


def test_pp_with_pullup_to_5v_and_adc_at_3v3():
    ohms, pullup = 220.0, 330.0
    volts = 5.0 * ohms / (ohms + pullup)
    assert pp_ohms(volts / 3.3, pullup, pullup_volts=5.0, adc_vref_volts=3.3) \
        == pytest.approx(ohms)


def test_pp_open_and_short():
    assert pp_ohms(1.0, 1000.0) == math.inf
    assert pp_ohms(0.0, 1000.0) == 0.0
    assert ampacity_for_ohms(pp_ohms(1.0, 1000.0)) is None
