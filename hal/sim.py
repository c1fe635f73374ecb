"""A simulated charger: an EV model and simulated devices, for desktops and tests.

One `SimCharger` per firmware (shared between all `type = "sim"` devices through
`BuildContext.shared_object("sim", ...)`) holds one `SimConnector` per connector:
the plug, the EV's pilot behaviour and battery, the contactor, the lock, the
indicator and the energy register. It has no thread and never sleeps: every
change is a method call, and time comes only from the injected clock, so the
firmware's end-to-end tests can run hours of charging against a virtual clock
in milliseconds.

Energy is integrated exactly: power is constant between state changes, so each
connector keeps the start of its current constant-power *segment* and a reading
is a pure function of that segment and `now`. A state change (contactor,
offered current, suspension, a full battery, ...) first closes the segment at
its own instant. The result is the same whatever the read interval, and the
instant the battery becomes full is computed, not sampled.

All public methods take one re-entrant lock: the control socket
(`hal.sim_control`) calls them from its own thread while the firmware's loop
reads the devices.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hal.events import CableDetected, FaultCode, HardwareFault, PilotStateChanged, TagPresented
from hal.interfaces import (Clock, Contactor, ConnectorLock, EnergyMeter, Emit, EVInterface,
                            IdReader, Indicator, IndicatorColour, MeterReading,
                            MeterUnavailable, PilotState, monotonic_clock)

log = logging.getLogger(__name__)

MIN_OFFER_A = 6.0
"""IEC 61851-1: below 6 A there is no valid duty cycle, so the EV must not draw."""

FREQUENCY_HZ = 50.0

#: Injectable faults and the OCPP error code each one reports (None: the firmware's
#: meter poller notices a silent meter itself, so the sim only makes read() raise).
FAULTS: dict[str, Optional[FaultCode]] = {
    "meter": None,
    "contactor-welded": FaultCode.POWER_SWITCH_FAILURE,
    "lock": FaultCode.CONNECTOR_LOCK_FAILURE,
    "ground": FaultCode.GROUND_FAILURE,
    "pilot": FaultCode.EV_COMMUNICATION_ERROR,
    "overcurrent": FaultCode.OVER_CURRENT_FAILURE,
    "temperature": FaultCode.HIGH_TEMPERATURE,
}

#: Which end of the cable `unplug` pulls: both (the default), the EV end only (the cable
#: stays in a socket outlet), or the socket end.
UNPLUG_SIDES = ("both", "ev", "socket")

#: Cable ampacities a PP resistor can code (IEC 61851-1).
CABLE_AMPACITIES = (13.0, 20.0, 32.0, 63.0)

#: Faults that may also be injected charger-wide, on connector 0.
CHARGER_FAULTS = frozenset({"ground", "overcurrent", "temperature"})

_FAULT_INFO = {
    "contactor-welded": "contactor welded (simulated)",
    "lock": "connector lock does not move (simulated)",
    "ground": "ground fault (simulated)",
    "pilot": "EV diode missing on the control pilot (simulated)",
    "overcurrent": "over-current (simulated)",
    "temperature": "over-temperature (simulated)",
}


class SimError(ValueError):
    """A command the simulated charger cannot carry out; the text says why."""


# --------------------------------------------------------------------------- the model

class SimConnector:
    """One connector's state. Only `SimCharger` mutates it, under its lock."""

    def __init__(self, connector_id: int, phases: int, nominal_voltage_v: float,
                 max_current_a: float, now: float):
        self.connector_id = connector_id
        self.phases = phases
        self.nominal_voltage_v = nominal_voltage_v
        self.max_current_a = max_current_a
        # EV (overridden by SimPilotSettings)
        self.ev_max_current_a = 32.0
        self.ev_phases: Optional[int] = None          # None: the connector's phases
        self.battery_wh = 60000.0
        self.initial_soc = 20.0
        self.ev_reaction_s = 0.0
        # which devices are simulated
        self.pilot_fitted = False
        self.lock_fitted = False                      # a socket outlet (its cable detachable)
        self.cable_ampacity_a = 32.0                  # what the cable's PP resistor codes
        # state
        self.plugged = False                          # the EV end of the cable is in the EV
        self.cable_in_socket = False                  # socket outlets only
        self.ev_suspended = False
        self.ev_requesting = False                    # EV shows C (power wanted)
        self.c_due: Optional[float] = None            # when the EV will switch B -> C
        self.offered_a: Optional[float] = None
        self.commanded_closed = False
        self.locked = False
        self.indicator: Optional[str] = None
        self.faults: set[str] = set()
        self.reported_pilot: Optional[PilotState] = None
        # the current constant-power segment
        self.seg_t0 = now
        self.seg_energy_wh = 0.0                       # import register at seg_t0
        self.seg_battery_wh = 0.0                      # battery content at seg_t0
        self.power_w = 0.0

    # --- derived state

    @property
    def contactor_physically_closed(self) -> bool:
        """Welded contacts stay closed whatever the command."""
        return self.commanded_closed or "contactor-welded" in self.faults

    @property
    def drawing_phases(self) -> int:
        return min(self.ev_phases or self.phases, self.phases)

    @property
    def full(self) -> bool:
        return self.seg_battery_wh >= self.battery_wh

    def pilot_state(self) -> PilotState:
        if not self.plugged:
            return PilotState.A
        if "pilot" in self.faults:
            return PilotState.F
        return PilotState.C if self.ev_requesting else PilotState.B

    def drawn_current_a(self) -> float:
        """Per-phase current the EV draws in the current segment."""
        if self.power_w <= 0:
            return 0.0
        return min(self.offered_a or 0.0, self.ev_max_current_a, self.max_current_a)

    def energy_at(self, now: float) -> tuple[float, float]:
        """(import register, battery content) at `now` within the current segment."""
        dt = max(0.0, now - self.seg_t0)
        delta = self.power_w * dt / 3600.0
        return self.seg_energy_wh + delta, min(self.battery_wh, self.seg_battery_wh + delta)

    def soc_percent(self, now: float) -> Optional[float]:
        if not self.plugged:
            return None
        return 100.0 * self.energy_at(now)[1] / self.battery_wh


class SimCharger:
    """The shared simulated charger: EV models and devices of every connector."""

    def __init__(self, clock: Clock = monotonic_clock, emit: Optional[Emit] = None):
        self._clock = clock
        self._emit = emit or (lambda event: None)
        self._mutex = threading.RLock()
        self._pending: deque = deque()
        self._connectors: dict[int, SimConnector] = {}
        self._charger_faults: set[str] = set()
        #: Steps the firmware's view of the system clock (set by the runtime): a
        #: simulated RTC that an operator or NTP sets, without root or the real clock.
        self.step_system_clock: Optional[Callable[[float], None]] = None

    # --- set-up (called by the settings' build methods)

    def add_connector(self, connector_id: int, phases: int = 3, nominal_voltage_v: float = 230.0,
                      max_current_a: float = 32.0) -> SimConnector:
        """Get or create a connector's model; every simulated device of it calls this."""
        if connector_id < 1:
            raise ValueError(f"connector ids start at 1, got {connector_id}")
        with self._mutex:
            conn = self._connectors.get(connector_id)
            if conn is None:
                conn = SimConnector(connector_id, phases, nominal_voltage_v, max_current_a,
                                    self._clock())
                self._connectors[connector_id] = conn
            return conn

    def configure_ev(self, connector_id: int, *, ev_max_current_a: float = 32.0,
                     ev_phases: Optional[int] = None, battery_wh: float = 60000.0,
                     initial_soc: float = 20.0, ev_reaction_s: float = 0.0) -> None:
        with self._mutex:
            conn = self._conn(connector_id)
            conn.pilot_fitted = True
            conn.ev_max_current_a = ev_max_current_a
            conn.ev_phases = ev_phases
            conn.battery_wh = battery_wh
            conn.initial_soc = initial_soc
            conn.ev_reaction_s = ev_reaction_s

    def configure_meter(self, connector_id: int, initial_wh: float) -> None:
        with self._mutex:
            conn, now = self._prepare(connector_id)
            self._close_segment(conn, now)
            conn.seg_energy_wh = initial_wh

    def configure_contactor(self, connector_id: int, welded: bool) -> None:
        """A contactor configured welded reports its fault on `start()`."""
        with self._mutex:
            if welded:
                self._set_fault(self._conn(connector_id), "contactor-welded", True)

    def configure_lock(self, connector_id: int, cable_ampacity_a: float = 32.0) -> None:
        """A lock makes the connector a socket outlet: the driver brings the cable, whose
        presence (and ampacity) the connector reports as `CableDetected`."""
        with self._mutex:
            conn = self._conn(connector_id)
            conn.lock_fitted = True
            conn.cable_ampacity_a = cable_ampacity_a

    @property
    def connector_ids(self) -> list[int]:
        with self._mutex:
            return sorted(self._connectors)

    def start(self) -> None:
        """Emit what set-up left pending (a contactor configured welded)."""
        self.update()

    def close(self) -> None:
        pass

    # --- time

    def update(self) -> None:
        """Advance every connector to now and emit pending events. Cheap: the
        firmware's loop calls it periodically so a full battery shows up in time."""
        with self._mutex:
            now = self._clock()
            for conn in self._connectors.values():
                self._advance(conn, now)
            self._flush()

    # --- the driver and the EV (the control socket's commands)

    def plug(self, connector_id: int, soc: Optional[float] = None) -> dict:
        """Plug an EV in; each plug brings a car at the configured (or given) charge."""
        with self._mutex:
            conn, now = self._prepare(connector_id)
            if conn.plugged:
                raise SimError(f"connector {connector_id}: an EV is already plugged in")
            soc = conn.initial_soc if soc is None else float(soc)
            if not 0 <= soc <= 100:
                raise SimError(f"state of charge must be 0-100 %, got {soc}")
            self._close_segment(conn, now)
            if conn.lock_fitted and not conn.cable_in_socket:
                self._set_cable(conn, True)           # the socket end goes in first
            conn.plugged = True
            conn.ev_suspended = False
            conn.seg_battery_wh = conn.battery_wh * soc / 100.0
            self._reconsider(conn, now)
            return self._finish(conn)

    def unplug(self, connector_id: int, force: bool = False, side: str = "both") -> dict:
        """Unplug; a locked plug cannot be pulled out (unless `force`: a broken lock).

        `side` says which end of a socket outlet's cable is pulled: "both" (the EV's and
        the socket's), "ev" (the EV end only: allowed while locked, the cable stays in the
        socket, as when a driver unplugs at the car) or "socket" (the cable leaves the
        socket, and the EV if it was still attached). On a fixed cable "ev" is the same as
        "both" and "socket" is refused.
        """
        if side not in UNPLUG_SIDES:
            raise SimError(f"unplug side must be one of {', '.join(UNPLUG_SIDES)}, "
                           f"got {side!r}")
        with self._mutex:
            conn, now = self._prepare(connector_id)
            socket_outlet = conn.lock_fitted
            if side == "socket" and not socket_outlet:
                raise SimError(f"connector {connector_id} has no socket outlet (no lock "
                               f"fitted): its cable is fixed")
            if side == "socket" and not conn.cable_in_socket:
                raise SimError(f"connector {connector_id}: no cable is in the socket")
            if side != "socket" and not conn.plugged and not (side == "both"
                                                              and conn.cable_in_socket):
                raise SimError(f"connector {connector_id}: no EV is plugged in")
            pulls_socket_end = socket_outlet and side != "ev"
            if pulls_socket_end and conn.locked and not force:
                raise SimError(f"connector {connector_id}: the plug is locked in; "
                               f"stop the charging session first")
            if conn.plugged:
                conn.plugged = False
                conn.ev_suspended = False
                self._reconsider(conn, now)
            if pulls_socket_end:
                self._set_cable(conn, False)
            return self._finish(conn)

    def ev_suspend(self, connector_id: int) -> dict:
        """The EV pauses (pilot B) although current is offered: SuspendedEV."""
        with self._mutex:
            conn, now = self._prepare(connector_id)
            self._need_plugged(conn)
            conn.ev_suspended = True
            self._reconsider(conn, now)
            return self._finish(conn)

    def ev_resume(self, connector_id: int) -> dict:
        with self._mutex:
            conn, now = self._prepare(connector_id)
            self._need_plugged(conn)
            conn.ev_suspended = False
            self._reconsider(conn, now)
            return self._finish(conn)

    def tap(self, id_tag: str) -> dict:
        """Present an RFID card to the (simulated) reader."""
        id_tag = str(id_tag)
        if not 1 <= len(id_tag) <= 20 or not id_tag.isprintable() or any(c.isspace()
                                                                        for c in id_tag):
            raise SimError(f"an id tag is 1-20 printable characters without spaces, "
                           f"got {id_tag!r}")
        with self._mutex:
            self.update()                            # earlier events first
            self._pending.append(TagPresented(id_tag, reader="sim"))
            self._flush()
            return {"id_tag": id_tag}

    def fault(self, what: str, connector_id: int) -> dict:
        return self._fault_command(what, connector_id, True)

    def clear_fault(self, what: str, connector_id: int) -> dict:
        return self._fault_command(what, connector_id, False)

    def connector_status(self, connector_id: int) -> dict:
        """One connector as `status` shows it, now."""
        with self._mutex:
            conn, now = self._prepare(connector_id)
            self._flush()
            return self._conn_status(conn, now)

    def status(self) -> dict:
        """Everything a person wants to see, as plain JSON-able values."""
        with self._mutex:
            now = self._clock()
            for conn in self._connectors.values():
                self._advance(conn, now)
            self._flush()
            return {
                "time": now,
                "faults": sorted(self._charger_faults),
                "connectors": {str(cid): self._conn_status(conn, now)
                               for cid, conn in sorted(self._connectors.items())},
            }

    # --- device side (called by the Sim* devices)

    def offer(self, connector_id: int, amps: Optional[float]) -> None:
        if amps is not None and (math.isnan(amps) or amps < 0):
            raise ValueError(f"offered current must be >= 0 A or None, got {amps}")
        with self._mutex:
            conn, now = self._prepare(connector_id)
            conn.offered_a = None if amps is None else float(amps)
            self._reconsider(conn, now)
            self._flush()

    def pilot_state(self, connector_id: int) -> PilotState:
        with self._mutex:
            conn, _ = self._prepare(connector_id)
            self._flush()
            return conn.pilot_state()

    def start_pilot(self, connector_id: int) -> None:
        """Report the initial pilot state, whatever was reported before."""
        with self._mutex:
            conn, _ = self._prepare(connector_id)
            self._flush()
            conn.reported_pilot = conn.pilot_state()
            self._pending.append(PilotStateChanged(connector_id, conn.reported_pilot))
            self._flush()

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        with self._mutex:
            conn, now = self._prepare(connector_id)
            conn.commanded_closed = bool(closed)
            self._reconsider(conn, now)
            self._flush()

    def contactor_commanded(self, connector_id: int) -> bool:
        with self._mutex:
            return self._conn(connector_id).commanded_closed

    def contactor_feedback(self, connector_id: int) -> bool:
        with self._mutex:
            conn, _ = self._prepare(connector_id)
            self._flush()
            return conn.contactor_physically_closed

    def set_locked(self, connector_id: int, locked: bool) -> bool:
        with self._mutex:
            conn, _ = self._prepare(connector_id)
            self._flush()
            if "lock" in conn.faults:
                return False
            conn.locked = bool(locked)
            return True

    def is_locked(self, connector_id: int) -> bool:
        with self._mutex:
            return self._conn(connector_id).locked

    def cable_ampacity(self, connector_id: int) -> Optional[float]:
        """The PP ampacity the connector sees (None: fixed cable or no cable)."""
        with self._mutex:
            conn = self._conn(connector_id)
            return conn.cable_ampacity_a if conn.cable_in_socket else None

    def show(self, connector_id: int, colour: IndicatorColour) -> None:
        with self._mutex:
            self._conn(connector_id).indicator = IndicatorColour(colour).value

    def read_meter(self, connector_id: int) -> MeterReading:
        with self._mutex:
            conn, now = self._prepare(connector_id)
            self._flush()
            if "meter" in conn.faults:
                raise MeterUnavailable(f"simulated meter of connector {connector_id} is silent")
            energy, _ = conn.energy_at(now)
            amps = conn.drawn_current_a()
            currents = tuple(amps if i < conn.drawing_phases else 0.0 for i in range(conn.phases))
            return MeterReading(
                time=now,
                energy_import_wh=energy,
                power_w=conn.power_w,
                current_a=currents,
                voltage_v=tuple(conn.nominal_voltage_v for _ in range(conn.phases)),
                frequency_hz=FREQUENCY_HZ,
            )

    # --- internals (all called with the mutex held)

    def _conn(self, connector_id: Any) -> SimConnector:
        try:
            cid = int(connector_id)
        except (TypeError, ValueError):
            raise SimError(f"a connector id is a number, got {connector_id!r}") from None
        conn = self._connectors.get(cid)
        if conn is None:
            known = ", ".join(str(c) for c in sorted(self._connectors)) or "none"
            raise SimError(f"no simulated connector {cid} (connectors: {known})")
        return conn

    def _prepare(self, connector_id: Any) -> tuple[SimConnector, float]:
        conn = self._conn(connector_id)
        now = self._clock()
        self._advance(conn, now)
        return conn, now

    def _finish(self, conn: SimConnector) -> dict:
        self._flush()
        return self._conn_status(conn, self._clock())

    @staticmethod
    def _need_plugged(conn: SimConnector) -> None:
        if not conn.plugged:
            raise SimError(f"connector {conn.connector_id}: no EV is plugged in")

    def _advance(self, conn: SimConnector, now: float) -> None:
        """Bring the model to `now`, stopping at each instant the EV changes by itself
        (its delayed B -> C, its battery becoming full) to start a new segment there."""
        while True:
            if conn.c_due is not None and conn.c_due <= now:
                t = max(conn.c_due, conn.seg_t0)
                conn.c_due = None
                self._close_segment(conn, t)
                conn.ev_requesting = True
                self._start_segment(conn)
                self._note_pilot(conn)
                continue
            if conn.power_w > 0:
                gap = conn.battery_wh - conn.seg_battery_wh
                t_full = conn.seg_t0 + gap * 3600.0 / conn.power_w
                if t_full <= now:
                    conn.seg_energy_wh += gap
                    conn.seg_battery_wh = conn.battery_wh
                    conn.seg_t0 = t_full
                    conn.ev_requesting = False
                    conn.power_w = 0.0
                    self._note_pilot(conn)
                    continue
            return

    def _close_segment(self, conn: SimConnector, t: float) -> None:
        conn.seg_energy_wh, conn.seg_battery_wh = conn.energy_at(t)
        conn.seg_t0 = max(t, conn.seg_t0)

    def _start_segment(self, conn: SimConnector) -> None:
        """Power of the segment starting at seg_t0, from the state at that instant."""
        drawing = (conn.ev_requesting and conn.plugged and "pilot" not in conn.faults
                   and conn.contactor_physically_closed)
        if not drawing:
            conn.power_w = 0.0
            return
        amps = min(conn.offered_a or 0.0, conn.ev_max_current_a, conn.max_current_a)
        conn.power_w = amps * conn.nominal_voltage_v * conn.drawing_phases

    def _reconsider(self, conn: SimConnector, now: float) -> None:
        """After a change at `now`: end the segment, let the EV decide, start a new one."""
        self._close_segment(conn, now)
        wants = (conn.plugged and not conn.ev_suspended and not conn.full
                 and "pilot" not in conn.faults
                 and conn.offered_a is not None and conn.offered_a >= MIN_OFFER_A)
        if not wants:
            conn.ev_requesting = False
            conn.c_due = None
        elif not conn.ev_requesting and conn.c_due is None:
            if conn.ev_reaction_s > 0:
                conn.c_due = now + conn.ev_reaction_s
            else:
                conn.ev_requesting = True
        self._start_segment(conn)
        self._note_pilot(conn)

    def _set_cable(self, conn: SimConnector, present: bool) -> None:
        conn.cable_in_socket = present
        self._pending.append(CableDetected(conn.connector_id,
                                           conn.cable_ampacity_a if present else None))

    def _note_pilot(self, conn: SimConnector) -> None:
        state = conn.pilot_state()
        if conn.pilot_fitted and state != conn.reported_pilot:
            conn.reported_pilot = state
            self._pending.append(PilotStateChanged(conn.connector_id, state))

    def _flush(self) -> None:
        # Emitting under the (re-entrant) lock keeps events in order across threads.
        while self._pending:
            self._emit(self._pending.popleft())

    def _fault_command(self, what: str, connector_id: Any, active: bool) -> dict:
        if what not in FAULTS:
            raise SimError(f"unknown fault {what!r} (choose from: {', '.join(FAULTS)})")
        with self._mutex:
            try:
                cid = int(connector_id)
            except (TypeError, ValueError):
                raise SimError(f"a connector id is a number, got {connector_id!r}") from None
            if cid == 0:
                if what not in CHARGER_FAULTS:
                    raise SimError(f"fault {what!r} belongs to a connector, not to the "
                                   f"whole charger (connector 0)")
                self.update()                        # earlier events first
                if (what in self._charger_faults) != active:
                    (self._charger_faults.add if active else self._charger_faults.discard)(what)
                    self._pending.append(HardwareFault(0, FAULTS[what], active,
                                                       info=_FAULT_INFO[what]))
                    self._flush()
                return {"faults": sorted(self._charger_faults)}
            conn, _ = self._prepare(cid)
            if what == "lock" and not conn.lock_fitted:
                raise SimError(f"connector {cid} has no connector lock (a fixed cable has "
                               f"none), so its lock cannot fail; fault lock needs a socket "
                               f'outlet: fixed_cable = false and [connectors.lock] type = "sim"')
            self._set_fault(conn, what, active)
            self._flush()
            return self._conn_status(conn, self._clock())

    def _set_fault(self, conn: SimConnector, what: str, active: bool) -> None:
        if (what in conn.faults) == active:
            return                                   # no change, no event
        now = self._clock()
        self._advance(conn, now)
        (conn.faults.add if active else conn.faults.discard)(what)
        code = FAULTS[what]
        if code is not None:
            self._pending.append(HardwareFault(conn.connector_id, code, active,
                                               info=_FAULT_INFO[what]))
        self._reconsider(conn, now)

    def _conn_status(self, conn: SimConnector, now: float) -> dict:
        energy, _ = conn.energy_at(now)
        soc = conn.soc_percent(now)
        return {
            "connector_id": conn.connector_id,
            "plugged": conn.plugged,
            "pilot": conn.pilot_state().value,
            "ev_suspended": conn.ev_suspended,
            "offered_a": conn.offered_a,
            "contactor": "closed" if conn.commanded_closed else "open",
            "contactor_feedback": "closed" if conn.contactor_physically_closed else "open",
            "lock": (("locked" if conn.locked else "unlocked") if conn.lock_fitted else None),
            "cable_in_socket": conn.cable_in_socket if conn.lock_fitted else None,
            "energy_wh": energy,
            "power_w": conn.power_w,
            "current_a": conn.drawn_current_a(),
            "soc_percent": soc,
            "faults": sorted(conn.faults),
            "indicator": conn.indicator,
        }


# --------------------------------------------------------------------------- devices

class SimMeter(EnergyMeter):
    """The connector's energy meter: an exact integral of the EV's power."""

    measurands = frozenset({"Energy.Active.Import.Register", "Power.Active.Import",
                            "Current.Import", "Voltage", "Frequency"})

    def __init__(self, sim: SimCharger, connector_id: int, register_file: str = ""):
        self.sim = sim
        self.connector_id = connector_id
        self.register_file = register_file

    def read(self) -> MeterReading:
        reading = self.sim.read_meter(self.connector_id)
        if self.register_file:
            # Kept before the reading is handed out, so no reading the firmware stored
            # can exceed the register after a restart (a real meter keeps it in itself).
            tmp = f"{self.register_file}.tmp"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(repr(reading.energy_import_wh))
            os.replace(tmp, self.register_file)
        return reading


class SimContactor(Contactor):
    """A contactor whose mirror contact follows the command, unless welded."""

    def __init__(self, sim: SimCharger, connector_id: int):
        self.sim = sim
        self.connector_id = connector_id

    def set_closed(self, closed: bool) -> None:
        self.sim.set_contactor(self.connector_id, closed)

    @property
    def commanded_closed(self) -> bool:
        return self.sim.contactor_commanded(self.connector_id)

    def feedback_closed(self) -> Optional[bool]:
        return self.sim.contactor_feedback(self.connector_id)

    def close(self) -> None:
        self.sim.set_contactor(self.connector_id, False)


class SimLock(ConnectorLock):
    def __init__(self, sim: SimCharger, connector_id: int):
        self.sim = sim
        self.connector_id = connector_id

    def set_locked(self, locked: bool) -> bool:
        return self.sim.set_locked(self.connector_id, locked)

    def is_locked(self) -> Optional[bool]:
        return self.sim.is_locked(self.connector_id)


class SimPilot(EVInterface):
    """The control pilot as the simulated EV answers it."""

    def __init__(self, sim: SimCharger, connector_id: int):
        self.sim = sim
        self.connector_id = connector_id

    def set_max_current(self, amps: Optional[float]) -> None:
        self.sim.offer(self.connector_id, amps)

    def state(self) -> PilotState:
        return self.sim.pilot_state(self.connector_id)

    def cable_ampacity(self) -> Optional[float]:
        return self.sim.cable_ampacity(self.connector_id)

    def start(self) -> None:
        self.sim.start_pilot(self.connector_id)

    def close(self) -> None:
        self.sim.offer(self.connector_id, None)


class SimIndicator(Indicator):
    """Records the colour, visible in `SimCharger.status()`."""

    def __init__(self, sim: SimCharger, connector_id: int):
        self.sim = sim
        self.connector_id = connector_id

    def show(self, colour: IndicatorColour) -> None:
        self.sim.show(self.connector_id, colour)


class SimReader(IdReader):
    """A card reader that `tap()` (or `chargepoint sim tap`) presents cards to."""

    def __init__(self, sim: SimCharger):
        self.sim = sim

    def tap(self, id_tag: str) -> None:
        self.sim.tap(id_tag)


# --------------------------------------------------------------------------- settings

def _sim(ctx) -> SimCharger:
    return ctx.shared_object("sim", lambda: SimCharger(clock=ctx.clock, emit=ctx.emit))


def _connector(ctx) -> SimCharger:
    sim = _sim(ctx)
    sim.add_connector(ctx.connector_id, phases=ctx.phases,
                      nominal_voltage_v=ctx.nominal_voltage_v, max_current_a=ctx.max_current_a)
    return sim


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


@dataclass
class SimMeterSettings:
    initial_wh: float = 0.0          # the import register when the firmware starts
    register_file: str = ""          # keeps the register across restarts (then initial_wh
                                     # only applies while the file does not exist yet)

    def __post_init__(self):
        if not _finite(self.initial_wh) or self.initial_wh < 0:
            raise ValueError(f"initial_wh: must be a number >= 0, got {self.initial_wh}")

    def build(self, ctx) -> SimMeter:
        sim = _connector(ctx)
        initial = self.initial_wh
        if self.register_file:
            try:
                with open(self.register_file, encoding="ascii") as f:
                    initial = float(f.read().strip())
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                raise ValueError(f"register_file: cannot read {self.register_file}: "
                                 f"{exc}") from None
        sim.configure_meter(ctx.connector_id, initial)
        return SimMeter(sim, ctx.connector_id, self.register_file)


@dataclass
class SimContactorSettings:
    welded: bool = False             # start with welded contacts (reports PowerSwitchFailure)

    def build(self, ctx) -> SimContactor:
        sim = _connector(ctx)
        sim.configure_contactor(ctx.connector_id, self.welded)
        return SimContactor(sim, ctx.connector_id)


@dataclass
class SimLockSettings:
    cable_ampacity_a: float = 32.0   # what the driver's cable codes on PP (13, 20, 32, 63 A)

    def __post_init__(self):
        if self.cable_ampacity_a not in CABLE_AMPACITIES:
            raise ValueError(f"cable_ampacity_a: must be one of 13, 20, 32, 63 (A), "
                             f"got {self.cable_ampacity_a}")

    def build(self, ctx) -> SimLock:
        sim = _connector(ctx)
        sim.configure_lock(ctx.connector_id, float(self.cable_ampacity_a))
        return SimLock(sim, ctx.connector_id)


@dataclass
class SimPilotSettings:
    ev_max_current_a: float = 32.0   # the EV's on-board charger limit, per phase
    ev_phases: Optional[int] = None  # phases the EV draws on; default: the connector's
    battery_wh: float = 60000.0      # usable battery capacity
    initial_soc: float = 20.0        # percent, for each EV plugged in
    ev_reaction_s: float = 0.0       # delay before the EV answers an offer with state C

    def __post_init__(self):
        if not _finite(self.ev_max_current_a) or not 6 <= self.ev_max_current_a <= 80:
            raise ValueError(f"ev_max_current_a: must be 6-80 A, got {self.ev_max_current_a}")
        if self.ev_phases is not None and self.ev_phases not in (1, 2, 3):
            raise ValueError(f"ev_phases: must be 1, 2 or 3, got {self.ev_phases}")
        if not _finite(self.battery_wh) or self.battery_wh <= 0:
            raise ValueError(f"battery_wh: must be > 0, got {self.battery_wh}")
        if not _finite(self.initial_soc) or not 0 <= self.initial_soc <= 100:
            raise ValueError(f"initial_soc: must be 0-100 (percent), got {self.initial_soc}")
        if not _finite(self.ev_reaction_s) or not 0 <= self.ev_reaction_s <= 60:
            raise ValueError(f"ev_reaction_s: must be 0-60 s, got {self.ev_reaction_s}")

    def build(self, ctx) -> SimPilot:
        sim = _connector(ctx)
        sim.configure_ev(ctx.connector_id, ev_max_current_a=self.ev_max_current_a,
                         ev_phases=self.ev_phases, battery_wh=self.battery_wh,
                         initial_soc=self.initial_soc, ev_reaction_s=self.ev_reaction_s)
        return SimPilot(sim, ctx.connector_id)


@dataclass
class SimIndicatorSettings:
    def build(self, ctx) -> SimIndicator:
        return SimIndicator(_connector(ctx), ctx.connector_id)


@dataclass
class SimReaderSettings:
    def build(self, ctx) -> SimReader:
        return SimReader(_sim(ctx))
