"""OpenEVSE controller board over its serial RAPI protocol: pilot, relay and meter.

The board generates the control pilot, switches its own relay and runs its own safety
checks (GFCI, ground, stuck relay, temperature); the Pi offers current (`$SC` + `$FE`)
or withdraws it (`$FS`, sleep: steady +12 V, relay open) and watches the state. One
`OpenEvseBoard` per serial port is shared by the pilot and the meter of a connector.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Literal, Optional

from hal.events import FaultCode, HardwareFault, PilotStateChanged
from hal.interfaces import (Clock, Contactor, EnergyMeter, EVInterface, Emit, HardwareError,
                            MeterReading, MeterUnavailable, PilotState)
from hal import rapi
from hal.rapi import EvseStatus, Message, RapiError
from hal.serial_port import PORT_ERRORS, DeviceThread, SerialPort

log = logging.getLogger(__name__)

#: Board states that are faults, with the OCPP error code they report as.
BOARD_FAULTS: dict[int, FaultCode] = {
    rapi.STATE_DIODE_CHECK_FAILED: FaultCode.EV_COMMUNICATION_ERROR,
    rapi.STATE_GFCI_FAULT: FaultCode.GROUND_FAILURE,
    rapi.STATE_NO_GROUND: FaultCode.GROUND_FAILURE,
    rapi.STATE_STUCK_RELAY: FaultCode.POWER_SWITCH_FAILURE,
    rapi.STATE_GFI_TEST_FAILED: FaultCode.GROUND_FAILURE,
    rapi.STATE_OVER_TEMPERATURE: FaultCode.HIGH_TEMPERATURE,
    rapi.STATE_OVER_CURRENT: FaultCode.OVER_CURRENT_FAILURE,
    rapi.STATE_RELAY_CLOSURE_FAULT: FaultCode.POWER_SWITCH_FAILURE,
}
_PILOT_BY_STATE = {rapi.STATE_A: PilotState.A, rapi.STATE_B: PilotState.B,
                   rapi.STATE_C: PilotState.C, rapi.STATE_D: PilotState.D}
_NORMAL_STATES = frozenset({rapi.STATE_UNKNOWN, *_PILOT_BY_STATE,
                            rapi.STATE_SLEEPING, rapi.STATE_DISABLED})
_ASLEEP = (rapi.STATE_SLEEPING, rapi.STATE_DISABLED)

FAILED_POLLS_BEFORE_FAULT = 3
MIN_AMPS = 6


class LinkDown(HardwareError):
    """The serial port itself is gone (unplugged adapter, port cannot be opened)."""


class OpenEvseBoard:
    """Sends one RAPI command at a time and waits for its `$OK`/`$NK`. Notifications
    (`$AT`, `$ST`, `$AB`) arriving meanwhile go to the listeners, which must not send
    commands themselves. Thread-safe; shared by every device on the port."""

    def __init__(self, port: str, baudrate: int = 115200, timeout_s: float = 0.5,
                 checksum: rapi.Checksum = "xor", clock: Clock = time.monotonic):
        self.timeout_s = timeout_s
        self.checksum = checksum
        self._port = SerialPort(port, baudrate, read_timeout_s=0.02, clock=clock)
        self._splitter = rapi.LineSplitter()
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Message], None]] = []
        self._checksummed = False          # the board checksums its lines: require it
        self._users = 0
        self.bad_lines = 0
        #: The last state read ($GS) or announced ($AT); None until the board answered.
        self.last_status: Optional[EvseStatus] = None

    # ------------------------------------------------------------------ sharing

    def acquire(self) -> "OpenEvseBoard":
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users <= 0:
                self._port.close()

    def close(self) -> None:
        with self._lock:
            self._port.close()

    def add_listener(self, listener: Callable[[Message], None]) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ transport

    def command(self, cmd: str, *args: object, now: Optional[float] = None) -> Message:
        """Send `$cmd args` and return the board's answer ($OK or $NK)."""
        with self._lock:
            port = self._port.get(now)
            if port is None:
                raise LinkDown(f"cannot open {self._port.url}: {self._port.last_error}")
            try:
                if port.in_waiting:
                    self._lines(port.read(port.in_waiting))   # stale: notifications only
                port.write(rapi.encode_command(cmd, *args, checksum=self.checksum))
                deadline = time.monotonic() + self.timeout_s
                while time.monotonic() < deadline:
                    data = port.read(1)
                    if data:
                        data += port.read(port.in_waiting)
                        for msg in self._lines(data):
                            return msg
            except PORT_ERRORS as exc:
                self._port.broken(exc, now)
                self._splitter.reset()
                raise LinkDown(f"{self._port.url}: {exc}") from exc
            raise HardwareError(f"${cmd}: no valid answer within {self.timeout_s:g} s")

    def _lines(self, data: bytes) -> list[Message]:
        """Parse lines, dispatch notifications; return the responses among them."""
        responses = []
        for line in self._splitter.feed(data):
            try:
                msg = rapi.parse_line(line)
            except RapiError as exc:
                self.bad_lines += 1
                log.debug("dropped RAPI line %r: %s", line, exc)
                continue
            if msg.checked:
                self._checksummed = True
            elif self._checksummed:        # a checksummed board never omits it: noise
                self.bad_lines += 1
                continue
            if msg.is_response:
                responses.append(msg)
            elif msg.is_notification:
                if msg.kind == "AT":
                    try:
                        self.last_status = rapi.status_from_at(msg.args)
                    except RapiError:
                        pass
                for listener in self._listeners:
                    listener(msg)
        return responses

    # ------------------------------------------------------------------ typed commands

    def _ok(self, cmd: str, *args: object, now: Optional[float] = None) -> Message:
        msg = self.command(cmd, *args, now=now)
        if not msg.ok:
            raise HardwareError(f"${cmd} refused: ${msg.kind} {' '.join(msg.args)}".strip())
        return msg

    def set_current_capacity(self, amps: int, now: Optional[float] = None) -> Optional[int]:
        """`$SC amps V` (V: volatile, so frequent changes do not wear the EEPROM).
        Returns the capacity the board set (it clamps to its range and answers $NK
        then), or None when it refused without saying (over temperature)."""
        msg = self.command("SC", amps, "V", now=now)
        if msg.args:
            try:
                return int(msg.args[0])
            except ValueError:
                raise HardwareError(f"$SC answer {msg.args!r}") from None
        if msg.ok:
            return amps
        return None

    def enable(self, now: Optional[float] = None) -> None:
        self._ok("FE", now=now)

    def sleep(self, now: Optional[float] = None) -> None:
        self._ok("FS", now=now)

    def disable(self, now: Optional[float] = None) -> None:
        self._ok("FD", now=now)

    def get_state(self, now: Optional[float] = None) -> EvseStatus:
        """`$GS`; on old boards that give no vflags, `$G0` tells whether an EV is
        connected while the board sleeps."""
        status = self._parse(rapi.status_from_gs, self._ok("GS", now=now))
        if status.ev_connected is None and status.evse_state in _ASLEEP:
            g0 = self._ok("G0", now=now)
            if g0.args and g0.args[0] in ("0", "1"):
                status = replace(status, ev_connected=g0.args[0] == "1")
        self.last_status = status
        return status

    def get_energy(self, now: Optional[float] = None) -> tuple[float, float]:
        """`$GU` -> (Wh this session, Wh accumulated over finished sessions)."""
        return self._parse(rapi.energy_from_gu, self._ok("GU", now=now))

    def get_current_voltage(self, now: Optional[float] = None
                            ) -> tuple[Optional[float], Optional[float]]:
        """`$GG` -> (A, V), None where the board has no ammeter / voltmeter."""
        return self._parse(rapi.current_voltage_from_gg, self._ok("GG", now=now))

    @staticmethod
    def _parse(parser, msg: Message):
        try:
            return parser(msg.args)
        except RapiError as exc:
            raise HardwareError(str(exc)) from exc


def shared_board(ctx, port: str, baudrate: int, timeout_ms: int,
                 checksum: rapi.Checksum) -> OpenEvseBoard:
    """One board object per port, whichever device is built first."""
    board = ctx.shared_object(
        f"openevse:{port}",
        lambda: OpenEvseBoard(port, baudrate, timeout_ms / 1000, checksum, ctx.clock))
    return board.acquire()


def _check_common(port: str, baudrate: int, timeout_ms: int) -> None:
    if not port:
        raise ValueError("port: must name a serial device, e.g. /dev/ttyUSB0")
    if baudrate <= 0:
        raise ValueError("baudrate: must be positive")
    if not 50 <= timeout_ms <= 10_000:
        raise ValueError("timeout_ms: must be between 50 and 10000")


# --------------------------------------------------------------------------- pilot

@dataclass
class OpenEvseSettings:
    """`[connectors.pilot] type = "openevse"`."""

    port: str
    baudrate: int = 115200
    poll_interval_ms: int = 1000
    timeout_ms: int = 500
    checksum: Literal["xor", "additive"] = "xor"

    def __post_init__(self) -> None:
        _check_common(self.port, self.baudrate, self.timeout_ms)
        if not 100 <= self.poll_interval_ms <= 60_000:
            raise ValueError("poll_interval_ms: must be between 100 and 60000")

    def build(self, ctx) -> "OpenEvsePilot":
        board = shared_board(ctx, self.port, self.baudrate, self.timeout_ms, self.checksum)
        return OpenEvsePilot(board, ctx.connector_id, ctx.emit, ctx.clock,
                             self.poll_interval_ms / 1000)


class OpenEvsePilot(EVInterface):
    """The pilot as an OpenEVSE board drives it.

    `set_max_current` only records the offer and wakes the poll thread, which sends it
    (so the charging logic never blocks on the serial line) and sends it again after
    the board restarted or woke up on its own. Each poll reads `$GS`: PilotStateChanged
    on change, a HardwareFault for the board's fault states, EV_COMMUNICATION_ERROR
    when the board stops answering (the pilot then reads as F: state unknown)."""

    def __init__(self, board: OpenEvseBoard, connector_id: int, emit: Emit, clock: Clock,
                 poll_interval_s: float = 1.0):
        self._board = board
        self._connector_id = connector_id
        self._emit = emit
        self._clock = clock
        self._interval = poll_interval_s
        self._lock = threading.RLock()
        self._state: Optional[PilotState] = None
        self._offer: Optional[int] = None          # amps, None = not allowed
        self._applied = False
        self._board_fault: Optional[tuple[FaultCode, str]] = None
        self._link_fault: Optional[str] = None
        self._active: dict[FaultCode, str] = {}
        self._failed_polls = 0
        self._wake = threading.Event()
        self._thread = DeviceThread(f"openevse pilot {connector_id}", self._step)
        board.add_listener(self._on_notification)

    # ------------------------------------------------------------------ EVInterface

    def set_max_current(self, amps: Optional[float]) -> None:
        if amps is not None:
            if amps < MIN_AMPS:
                raise ValueError(f"{amps} A is below the 6 A minimum the pilot can offer")
            amps = int(math.floor(amps + 1e-9))     # never offer more than allowed
        with self._lock:
            if amps != self._offer:
                self._offer = amps
                self._applied = False
        self._wake.set()

    def state(self) -> PilotState:
        """The last state read from the board; F until it has answered."""
        return self._state or PilotState.F

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._thread.stopping.set()
        self._wake.set()
        self._thread.stop()
        try:
            self._board.sleep()                      # leave the EV in "not allowed"
        except HardwareError as exc:
            log.warning("could not put the OpenEVSE board to sleep: %s", exc)
        self._board.release()

    # ------------------------------------------------------------------ polling

    def _step(self, stopping: threading.Event) -> None:
        self.poll(self._clock())
        if not stopping.is_set():
            self._wake.wait(self._interval)
        self._wake.clear()

    def poll(self, now: Optional[float] = None) -> None:
        """One cycle: send a pending offer, read the state, report changes."""
        now = self._clock() if now is None else now
        try:
            self._apply_offer(now)
            status = self._board.get_state(now)
        except LinkDown as exc:
            self._lost(str(exc))
            return
        except HardwareError as exc:
            self._failed_polls += 1
            log.debug("OpenEVSE poll failed (%d): %s", self._failed_polls, exc)
            if self._failed_polls >= FAILED_POLLS_BEFORE_FAULT:
                self._lost(str(exc))
            return
        with self._lock:
            self._failed_polls = 0
            self._link_fault = None
            self._update(status)

    def _apply_offer(self, now: float) -> None:
        with self._lock:
            if self._applied:
                return
            offer = self._offer
        if offer is None:
            self._board.sleep(now)
        else:
            capacity = self._board.set_current_capacity(offer, now)
            if capacity is not None and capacity > offer:
                # The board's minimum is above what may be offered: do not charge.
                log.error("OpenEVSE set %d A when %d A was asked; keeping it asleep",
                          capacity, offer)
                self._board.sleep(now)
            else:
                self._board.enable(now)
        with self._lock:
            if self._offer == offer:
                self._applied = True

    def _lost(self, reason: str) -> None:
        with self._lock:
            self._link_fault = reason
            self._applied = False                    # the board may restart meanwhile
            self._publish(PilotState.F)
            self._report_faults()

    def _on_notification(self, msg: Message) -> None:
        try:
            if msg.kind == "AT":
                status = rapi.status_from_at(msg.args)
            elif msg.kind == "ST":
                status = rapi.status_from_st(msg.args)
            elif msg.kind == "AB":                   # the board restarted
                with self._lock:
                    self._applied = False
                self._wake.set()
                return
            else:
                return
        except RapiError as exc:
            log.debug("bad notification %s: %s", msg, exc)
            return
        with self._lock:
            self._update(status)

    def _update(self, status: EvseStatus) -> None:
        code = status.evse_state
        if code == rapi.STATE_UNKNOWN:               # still starting up
            return
        if code in BOARD_FAULTS:
            self._board_fault = (BOARD_FAULTS[code], status.name)
        elif code not in _NORMAL_STATES:
            self._board_fault = (FaultCode.OTHER_ERROR, status.name)
        else:
            self._board_fault = None
        pilot = self._pilot_for(status)
        if pilot is not None:
            self._publish(pilot)
        self._report_faults()
        # The board woke up or went to sleep on its own (button, restart, timer):
        # send the offer again on the next poll.
        if self._applied and ((self._offer is None and code in _PILOT_BY_STATE)
                              or (self._offer is not None and code in _ASLEEP)):
            self._applied = False
            self._wake.set()

    def _pilot_for(self, status: EvseStatus) -> Optional[PilotState]:
        code = status.evse_state
        if code in _PILOT_BY_STATE:
            return _PILOT_BY_STATE[code]
        if code in _ASLEEP:
            # Steady +12 V: the vehicle shows as A (absent) or B/C/D (present).
            if status.ev_connected is None:
                return None
            if not status.ev_connected:
                return PilotState.A
            return {rapi.STATE_C: PilotState.C, rapi.STATE_D: PilotState.D}.get(
                status.pilot_state, PilotState.B)
        return PilotState.F                          # a fault: the board holds -12 V

    def _publish(self, state: PilotState) -> None:
        if state != self._state:
            self._state = state
            self._emit(PilotStateChanged(self._connector_id, state))

    def _report_faults(self) -> None:
        wanted: dict[FaultCode, str] = {}
        if self._board_fault is not None:
            code, info = self._board_fault
            wanted[code] = f"OpenEVSE: {info}"
        if self._link_fault is not None:
            wanted[FaultCode.EV_COMMUNICATION_ERROR] = f"OpenEVSE link: {self._link_fault}"
        for code in [c for c in self._active if c not in wanted]:
            del self._active[code]
            self._emit(HardwareFault(self._connector_id, code, False))
        for code, info in wanted.items():
            if code not in self._active:
                self._active[code] = info
                self._emit(HardwareFault(self._connector_id, code, True, info[:50]))


# --------------------------------------------------------------------------- relay

@dataclass
class OpenEvseRelaySettings:
    """`[connectors.contactor] type = "openevse"` (the board's own relay)."""

    port: str
    baudrate: int = 115200
    timeout_ms: int = 500
    checksum: Literal["xor", "additive"] = "xor"

    def __post_init__(self) -> None:
        _check_common(self.port, self.baudrate, self.timeout_ms)

    def build(self, ctx) -> "OpenEvseRelay":
        return OpenEvseRelay(shared_board(ctx, self.port, self.baudrate, self.timeout_ms,
                                          self.checksum))


class OpenEvseRelay(Contactor):
    """The board closes its relay itself when the EV asks for power while current is
    offered, and opens it when the offer is withdrawn (`set_max_current(None)`), so a
    command here is only recorded. The mirror reading is the board's "relay closed"
    flag from its last `$GS` or `$AT` (None on boards too old to report it)."""

    def __init__(self, board: OpenEvseBoard):
        self._board = board
        self._commanded = False

    def set_closed(self, closed: bool) -> None:
        self._commanded = closed

    @property
    def commanded_closed(self) -> bool:
        return self._commanded

    def feedback_closed(self) -> Optional[bool]:
        status = self._board.last_status
        if status is None or status.vflags is None:
            return None
        return bool(status.vflags & rapi.VFLAG_CHARGING_ON)

    def close(self) -> None:
        self._board.release()


# --------------------------------------------------------------------------- meter

@dataclass
class OpenEvseMeterSettings:
    """`[connectors.meter] type = "openevse"`: the board's own energy count (boards
    built with an ammeter and kWh recording)."""

    port: str
    baudrate: int = 115200
    timeout_ms: int = 500
    checksum: Literal["xor", "additive"] = "xor"

    def __post_init__(self) -> None:
        _check_common(self.port, self.baudrate, self.timeout_ms)

    def build(self, ctx) -> "OpenEvseMeter":
        board = shared_board(ctx, self.port, self.baudrate, self.timeout_ms, self.checksum)
        return OpenEvseMeter(board, ctx.clock, ctx.phases)


class OpenEvseMeter(EnergyMeter):
    """Energy from `$GU`, current and voltage from `$GG`.

    The board adds a session's energy to its accumulated total only when the vehicle
    disconnects, so the register is total + session while a vehicle is connected and
    the total alone afterwards; `$GS` is read before and after `$GU` to be sure which.
    The total is truncated to whole Wh at that moment: the register is held rather
    than going back by that fraction."""

    measurands = frozenset({"Energy.Active.Import.Register", "Current.Import", "Voltage"})

    def __init__(self, board: OpenEvseBoard, clock: Clock, phases: int = 1):
        self._board = board
        self._clock = clock
        self._phases = max(1, phases)
        self._last_wh: Optional[float] = None

    def read(self) -> MeterReading:
        try:
            for _ in range(2):
                before = self._board.get_state()
                session_wh, total_wh = self._board.get_energy()
                after = self._board.get_state()
                if self._connected(before) == self._connected(after):
                    break
            else:
                raise MeterUnavailable("vehicle connection changed during the read")
            amps, volts = self._board.get_current_voltage()
        except MeterUnavailable:
            raise
        except HardwareError as exc:
            raise MeterUnavailable(f"OpenEVSE: {exc}") from exc
        energy = total_wh + (session_wh if self._connected(after) else 0.0)
        if self._last_wh is not None and self._last_wh - 1.0 < energy < self._last_wh:
            energy = self._last_wh
        self._last_wh = energy
        pad = (None,) * (self._phases - 1)
        return MeterReading(
            time=self._clock(), energy_import_wh=energy,
            current_a=None if amps is None else (amps, *pad),
            voltage_v=None if volts is None else (volts, *pad))

    @staticmethod
    def _connected(status: EvseStatus) -> bool:
        if status.ev_connected is not None:
            return status.ev_connected
        return status.evse_state in (rapi.STATE_B, rapi.STATE_C, rapi.STATE_D)

    def close(self) -> None:
        self._board.release()
