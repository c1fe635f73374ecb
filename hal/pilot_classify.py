"""Pure arithmetic of the pilot front end: ADC fraction -> volts -> IEC 61851-1 state,
the EV diode check, and the proximity-pilot resistor -> cable ampacity.

Kept free of I/O so that every window edge is tested without hardware.

Control pilot conversion
------------------------
The CP line swings +-12 V; an MCP3008 sees 0..3.3 V through a resistor level
shifter, which is linear: `volts = raw_fraction * cp_scale + cp_offset`,
raw_fraction being the ADC reading divided by full scale (0..1).

Reference design (a three-resistor shifter as used on Raspberry Pi EVSE boards):
CP --100 k-- node --22 k-- 3.3 V, node --33 k-- GND. Solving the node gives
node = 0.1166 * CP + 1.749 V, i.e. -12 V -> 0.35 V and +12 V -> 3.15 V, which
leaves head-room at both rails, and inverted:

    CP = raw_fraction * 28.3 - 15.0       (cp_scale = 28.3, cp_offset = -15.0)

Other boards differ: calibrate with two known voltages (state A reads +12 V
with the pilot at 100 % duty; the low plateau reads -12 V with PWM and no EV).

Proximity pilot conversion
--------------------------
PP-PE holds the cable's coding resistor; the board pulls PP up to
`pullup_volts` through `pullup_ohms` and the ADC reads the divider:
V = pullup_volts * R / (R + pullup_ohms), hence R = pullup_ohms * V / (pullup_volts - V).
"""
from __future__ import annotations

import math
from typing import Optional

from hal.interfaces import PilotState

#: Reference-design conversion (see module docstring).
DEFAULT_CP_SCALE = 28.3
DEFAULT_CP_OFFSET = -15.0

#: High-plateau windows (volts), IEC 61851-1 as used by open EVSE designs. E and F
#: have no published window here; +-1.5 V around nominal is our choice, leaving
#: every gap between windows unclassified (reported as an EV communication error).
CP_WINDOWS: tuple[tuple[PilotState, float, float], ...] = (
    (PilotState.A, 11.4, 12.6),
    (PilotState.B, 8.36, 9.56),
    (PilotState.C, 5.48, 6.49),
    (PilotState.D, 2.62, 3.25),
    (PilotState.E, -1.5, 1.5),
    (PilotState.F, -13.5, -10.5),
)

#: While PWM runs the low plateau must be about -12 V; an EV without its diode
#: pulls it to roughly -9 V (B) or -6 V (C). Above this it is a diode fault.
DIODE_LOW_MAX_V = -10.5

#: Coding resistor windows (ohms, low inclusive) -> cable ampacity (amps).
PP_WINDOWS: tuple[tuple[float, float, float], ...] = (
    (936.0, 2460.0, 13.0),
    (308.0, 936.0, 20.0),
    (140.0, 308.0, 32.0),
    (80.0, 140.0, 63.0),
)


def cp_volts(raw_fraction: float, scale: float = DEFAULT_CP_SCALE,
             offset: float = DEFAULT_CP_OFFSET) -> float:
    """Pilot voltage for an ADC reading (0..1 of full scale)."""
    return raw_fraction * scale + offset


def classify_cp(high_plateau_v: float) -> Optional[PilotState]:
    """The state for a high-plateau voltage, or None between windows (an EV
    communication error: a wrong resistor, a bad contact, a miscalibration)."""
    if not math.isfinite(high_plateau_v):
        return None
    for state, low, high in CP_WINDOWS:
        if low <= high_plateau_v <= high:
            return state
    return None


def diode_present(low_plateau_v: float) -> bool:
    """True when the low plateau (measured while PWM runs) shows the EV's diode."""
    return low_plateau_v <= DIODE_LOW_MAX_V


def pp_ohms(raw_fraction: float, pullup_ohms: float, pullup_volts: float = 3.3,
            adc_vref_volts: float = 3.3) -> float:
    """PP-PE resistance from the ADC reading; `math.inf` for an open PP (no plug)."""
    volts = raw_fraction * adc_vref_volts
    if volts <= 0:
        return 0.0
    if volts >= pullup_volts:
        return math.inf
    return pullup_ohms * volts / (pullup_volts - volts)


def ampacity_for_ohms(ohms: float) -> Optional[float]:
    """Cable ampacity coded by the PP resistor, None when no window matches
    (no plug, open or shorted PP)."""
    for low, high, amps in PP_WINDOWS:
        if low <= ohms < high:
            return amps
    return None
