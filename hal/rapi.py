"""OpenEVSE RAPI framing: command encoding, line splitting, response parsing (pure).

A RAPI message is one ASCII line: `$CC arg arg^XX\\r`. Per the RAPI documentation in
the OpenEVSE firmware (rapi_proc.h), `^XX` is the 8-bit XOR of every character before
the `^` (recommended; RAPI >= 2.0 boards append it to every response and notification),
`*XX` is the legacy 8-bit sum, and very old boards send no checksum at all. RAPI 3
adds an optional ` :SS` sequence id before the checksum. Written by hand: the protocol
is a line of text, and no maintained Python library for it builds on pyserial.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Checksum = Literal["xor", "additive"]

#: EVSE states (EVSE_STATE_xxx in the firmware).
STATE_UNKNOWN = 0x00
STATE_A = 0x01                 # not connected
STATE_B = 0x02                 # connected, not charging
STATE_C = 0x03                 # charging
STATE_D = 0x04                 # ventilation required
STATE_DIODE_CHECK_FAILED = 0x05
STATE_GFCI_FAULT = 0x06
STATE_NO_GROUND = 0x07
STATE_STUCK_RELAY = 0x08
STATE_GFI_TEST_FAILED = 0x09
STATE_OVER_TEMPERATURE = 0x0A
STATE_OVER_CURRENT = 0x0B
STATE_RELAY_CLOSURE_FAULT = 0x0E
STATE_SLEEPING = 0xFE
STATE_DISABLED = 0xFF

STATE_NAMES: dict[int, str] = {
    STATE_UNKNOWN: "starting",
    STATE_A: "not connected",
    STATE_B: "connected",
    STATE_C: "charging",
    STATE_D: "ventilation required",
    STATE_DIODE_CHECK_FAILED: "diode check failed",
    STATE_GFCI_FAULT: "GFCI fault",
    STATE_NO_GROUND: "no ground",
    STATE_STUCK_RELAY: "stuck relay",
    STATE_GFI_TEST_FAILED: "GFI self-test failed",
    STATE_OVER_TEMPERATURE: "over temperature",
    STATE_OVER_CURRENT: "over current",
    STATE_RELAY_CLOSURE_FAULT: "relay closure fault",
    STATE_SLEEPING: "sleeping",
    STATE_DISABLED: "disabled",
}

#: Volatile flag bits ($GS / $AT vflags).
VFLAG_CHARGING_ON = 0x0040     # relay closed
VFLAG_EV_CONNECTED = 0x0100    # valid only while the pilot is not at -12 V

#: Notifications a board sends on its own (any A-prefixed kind, and these).
_NOTIFICATIONS = frozenset({"ST", "WF"})

MAX_LINE = 64


class RapiError(ValueError):
    """A line that is not a valid RAPI message."""


def xor_checksum(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def sum_checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_command(cmd: str, *args: object, checksum: Checksum = "xor") -> bytes:
    """`$CMD args^XX\\r` (or `*XX` with the legacy additive checksum)."""
    if len(cmd) != 2 or not cmd.isalnum():
        raise ValueError(f"RAPI commands are two characters, not {cmd!r}")
    body = ("$" + " ".join([cmd, *map(str, args)])).encode("ascii")
    if checksum == "xor":
        return body + b"^%02X\r" % xor_checksum(body)
    return body + b"*%02X\r" % sum_checksum(body)


@dataclass(frozen=True)
class Message:
    kind: str                      # "OK", "NK", "AT", "ST", ...
    args: tuple[str, ...] = ()
    checked: bool = False          # carried a checksum (which matched)
    sequence: Optional[int] = None

    @property
    def is_response(self) -> bool:
        return self.kind in ("OK", "NK")

    @property
    def ok(self) -> bool:
        return self.kind == "OK"

    @property
    def is_notification(self) -> bool:
        return self.kind.startswith("A") or self.kind in _NOTIFICATIONS


def parse_line(line: bytes) -> Message:
    """Parse one line (from `$` up to, not including, the CR)."""
    if not line.startswith(b"$"):
        raise RapiError("does not start with '$'")
    checked = False
    if len(line) >= 4 and line[-3:-2] in (b"^", b"*"):
        body, mark, given = line[:-3], line[-3:-2], line[-2:]
        try:
            expected = int(given, 16)
        except ValueError:
            raise RapiError(f"checksum {given!r} is not hex") from None
        actual = xor_checksum(body) if mark == b"^" else sum_checksum(body)
        if actual != expected:
            raise RapiError(f"checksum {given.decode(errors='replace')} != {actual:02X}")
        checked = True
    else:
        body = line
    try:
        text = body[1:].decode("ascii")
    except UnicodeDecodeError:
        raise RapiError("not ASCII") from None
    if not text.isprintable():
        raise RapiError("control characters in line")
    tokens = text.split()
    if not tokens or len(tokens[0]) != 2 or not tokens[0].isalnum():
        raise RapiError(f"no two-character kind in {text!r}")
    sequence = None
    if len(tokens) > 1 and tokens[-1].startswith(":"):
        try:
            sequence = int(tokens[-1][1:], 16)
        except ValueError:
            raise RapiError(f"bad sequence id {tokens[-1]!r}") from None
        tokens.pop()
    return Message(tokens[0].upper(), tuple(tokens[1:]), checked, sequence)


class LineSplitter:
    """Cuts lines out of the byte stream: a `$` always starts a new line (as in the
    firmware), CR or LF ends it; bytes outside a line and overlong lines are dropped."""

    def __init__(self) -> None:
        self._line: Optional[bytearray] = None

    def reset(self) -> None:
        self._line = None

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        for b in data:
            if b == 0x24:                                  # '$'
                self._line = bytearray(b"$")
            elif b in (0x0D, 0x0A):
                if self._line is not None:
                    lines.append(bytes(self._line))
                self._line = None
            elif self._line is not None:
                self._line.append(b)
                if len(self._line) > MAX_LINE:
                    self._line = None
        return lines


def parse_state(token: str) -> int:
    """An EVSE state token. Current firmware prints it in hex (`%02x`), old firmware
    in decimal; the two readings never both name a known state ("10" is 0x10, unknown,
    or 10, over temperature), so the known one is taken."""
    readings = []
    for base in (16, 10):
        try:
            readings.append(int(token, base))
        except ValueError:
            pass
    for value in readings:
        if value in STATE_NAMES:
            return value
    for value in readings:
        if 0 <= value <= 0xFF:
            return value
    raise RapiError(f"bad EVSE state {token!r}")


def _hex(token: str) -> int:
    try:
        return int(token, 16)
    except ValueError:
        raise RapiError(f"bad hex field {token!r}") from None


def _int(token: str) -> int:
    try:
        return int(token, 10)
    except ValueError:
        raise RapiError(f"bad number {token!r}") from None


@dataclass(frozen=True)
class EvseStatus:
    evse_state: int
    pilot_state: Optional[int] = None      # the EVSE state the pilot alone indicates
    vflags: Optional[int] = None
    current_capacity: Optional[int] = None
    ev_connected: Optional[bool] = None    # from vflags or $G0; None if not known

    @property
    def name(self) -> str:
        return STATE_NAMES.get(self.evse_state, f"state {self.evse_state:#04x}")


def _status(evse: int, pilot: Optional[int], vflags: Optional[int],
            capacity: Optional[int]) -> EvseStatus:
    connected = None if vflags is None else bool(vflags & VFLAG_EV_CONNECTED)
    return EvseStatus(evse, pilot, vflags, capacity, connected)


def status_from_gs(args: tuple[str, ...]) -> EvseStatus:
    """`$OK evsestate elapsed [pilotstate vflags]` (the last two since RAPI 2.x)."""
    if len(args) < 2:
        raise RapiError(f"$GS answer too short: {args}")
    evse = parse_state(args[0])
    _int(args[1])
    if len(args) >= 4:
        return _status(evse, parse_state(args[2]), _hex(args[3]), None)
    return _status(evse, None, None, None)


def status_from_at(args: tuple[str, ...]) -> EvseStatus:
    """`$AT evsestate pilotstate currentcapacity vflags`."""
    if len(args) < 4:
        raise RapiError(f"$AT notification too short: {args}")
    return _status(parse_state(args[0]), parse_state(args[1]), _hex(args[3]), _int(args[2]))


def status_from_st(args: tuple[str, ...]) -> EvseStatus:
    """`$ST state` (older boards' state-change notification)."""
    if not args:
        raise RapiError("$ST without a state")
    return EvseStatus(parse_state(args[0]))


def energy_from_gu(args: tuple[str, ...]) -> tuple[float, float]:
    """`$OK Wattseconds Whacc` -> (session Wh, accumulated Wh)."""
    if len(args) < 2:
        raise RapiError(f"$GU answer too short: {args}")
    ws, wh = _int(args[0]), _int(args[1])
    if ws < 0 or wh < 0:
        raise RapiError(f"negative energy in $GU answer: {args}")
    return ws / 3600.0, float(wh)


def current_voltage_from_gg(args: tuple[str, ...]) -> tuple[Optional[float], Optional[float]]:
    """`$OK milliamps millivolts` -> (A, V); -1 (no ammeter/voltmeter) -> None."""
    if not args:
        raise RapiError("$GG answer empty")
    ma = _int(args[0])
    mv = _int(args[1]) if len(args) > 1 else -1
    return (ma / 1000.0 if ma >= 0 else None), (mv / 1000.0 if mv >= 0 else None)
