"""Simulated Modbus RTU meters on a pseudo-terminal, for tests.

The client under test opens a real serial device (the slave end of a pty, reached through a
symlink so the "adapter" can be unplugged and plugged back); a responder thread answers on
the master end for every simulated meter on that bus.

Hand-written RTU responder rather than a pymodbus server: the client under test is pymodbus,
so an independent encoder (struct + our own CRC, values laid out from the makers' manuals)
keeps a shared mistake from cancelling itself out, and fault injection (silence, garbage,
bad CRC, late answers) needs byte-level control that the server's datastore API does not give.
"""
from __future__ import annotations

import math
import os
import select
import struct
import termios
import threading
import tty
from collections import deque
from pathlib import Path
from typing import Iterable, Optional, Sequence

HOLDING = 3
INPUT = 4

NORMAL = "normal"
SILENT = "silent"            # unplugged meter / broken A-B pair: no answer at all
GARBAGE = "garbage"          # line noise instead of a frame
BAD_CRC = "bad_crc"          # a correct answer whose CRC got corrupted on the wire
EXCEPTION = "exception"      # a Modbus exception response (see SimMeter.exception_code)
MODES = (NORMAL, SILENT, GARBAGE, BAD_CRC, EXCEPTION)

GARBAGE_BYTES = bytes.fromhex("5aa500ff1337deadbeef00")


def crc16(frame: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first as sent on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def words_of(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def f32(value: float) -> list[int]:
    """IEEE-754 float32, high word first."""
    return words_of(struct.pack(">f", value))


def int_words(value: int, count: int, signed: bool, low_first: bool = False) -> list[int]:
    words = words_of(value.to_bytes(2 * count, "big", signed=signed))
    return words[::-1] if low_first else words


class SimMeter:
    """One slave address: its registers and how it misbehaves."""

    def __init__(self, address: int):
        self.address = address
        self.registers: dict[int, dict[int, int]] = {HOLDING: {}, INPUT: {}}
        self.mode = NORMAL
        self.exception_code = 4
        self.delay_s = 0.0                      # answer late (after the client gave up)
        self.answer: Optional[bytes] = None     # send exactly these bytes instead
        self._once: deque[str] = deque()
        self._lock = threading.Lock()

    def define(self, function: int, start: int, count: int) -> None:
        """Make registers exist (reading undefined ones answers "illegal data address")."""
        with self._lock:
            for a in range(start, start + count):
                self.registers[function].setdefault(a, 0)

    def set_words(self, function: int, address: int, words: Sequence[int]) -> None:
        with self._lock:
            for i, w in enumerate(words):
                self.registers[function][address + i] = w & 0xFFFF

    def fail_next(self, *modes: str) -> None:
        """Misbehave for the next requests only, then answer normally again."""
        with self._lock:
            self._once.extend(modes)

    def respond(self, function: int, start: int, count: int) -> Optional[bytes]:
        """The bytes to put on the wire for this request (None: stay silent)."""
        with self._lock:
            mode = self._once.popleft() if self._once else self.mode
            if self.answer is not None:
                return self.answer
            if mode == SILENT:
                return None
            if mode == GARBAGE:
                return GARBAGE_BYTES
            if mode == EXCEPTION:
                return self._frame(bytes([function | 0x80, self.exception_code]))
            regs = self.registers.get(function, {})
            if function not in (HOLDING, INPUT) or not 1 <= count <= 125:
                return self._frame(bytes([function | 0x80, 3]))
            if any(a not in regs for a in range(start, start + count)):
                return self._frame(bytes([function | 0x80, 2]))
            data = b"".join(regs[a].to_bytes(2, "big") for a in range(start, start + count))
            frame = self._frame(bytes([function, len(data)]) + data)
            if mode == BAD_CRC:
                frame = frame[:-1] + bytes([frame[-1] ^ 0x5A])
            return frame

    def _frame(self, pdu: bytes) -> bytes:
        body = bytes([self.address]) + pdu
        return body + crc16(body)


class Sdm630(SimMeter):
    """Eastron SDM630 input registers, float32 high word first (SDM630 Modbus manual)."""

    def __init__(self, address: int = 1, **values):
        super().__init__(address)
        for start in (0x0000, 0x0034, 0x0046):      # the groups the meter defines around ours
            self.define(INPUT, start, 0x12 if start == 0 else 6)
        self.set(voltage=(230.1, 231.2, 229.3), current=(15.5, 16.25, 0.0), power=7250.5,
                 frequency=50.02, import_kwh=1234.5, export_kwh=2.25)
        self.set(**values)

    def set(self, *, voltage: Optional[Iterable[float]] = None,
            current: Optional[Iterable[float]] = None, power: Optional[float] = None,
            frequency: Optional[float] = None, import_kwh: Optional[float] = None,
            export_kwh: Optional[float] = None) -> None:
        for base, triple in ((0x0000, voltage), (0x0006, current)):
            if triple is not None:
                for i, v in enumerate(triple):
                    self.set_words(INPUT, base + 2 * i, f32(v))
        for addr, v in ((0x0034, power), (0x0046, frequency), (0x0048, import_kwh),
                        (0x004A, export_kwh)):
            if v is not None:
                self.set_words(INPUT, addr, f32(v))


class Sdm120(SimMeter):
    """Eastron SDM120 (single phase): only the registers its manual lists."""

    def __init__(self, address: int = 1, **values):
        super().__init__(address)
        for addr in (0x0000, 0x0006, 0x000C, 0x0012, 0x0018, 0x001E, 0x0024):
            self.define(INPUT, addr, 2)
        self.define(INPUT, 0x0046, 6)
        self.set(voltage=232.4, current=9.75, power=2265.9, frequency=49.98, import_kwh=88.125,
                 export_kwh=0.0)
        self.set(**values)

    def set(self, *, voltage=None, current=None, power=None, frequency=None, import_kwh=None,
            export_kwh=None) -> None:
        for addr, v in ((0x0000, voltage), (0x0006, current), (0x000C, power),
                        (0x0046, frequency), (0x0048, import_kwh), (0x004A, export_kwh)):
            if v is not None:
                self.set_words(INPUT, addr, f32(v))


class AbbB23(SimMeter):
    """ABB B23 holding registers, big-endian integers (B2x Modbus register map)."""

    U32_NA = 0xFFFFFFFF
    U64_NA = 0xFFFFFFFFFFFFFFFF

    def __init__(self, address: int = 1, **values):
        super().__init__(address)
        self.define(HOLDING, 0x5000, 0x18)     # active/reactive import, export, net energies
        self.define(HOLDING, 0x5B00, 0x30)     # instantaneous values incl. L-L V, VA, VAr, PF
        self.set(voltage=(230.4, 229.9, 231.0), current=(31.95, 32.01, 31.88), power=22105.37,
                 frequency=50.01, import_kwh=12345678.91, export_kwh=0.5)
        self.set(**values)

    def set(self, *, voltage=None, current=None, power=None, frequency=None, import_kwh=None,
            export_kwh=None) -> None:
        for base, triple, factor in ((0x5B00, voltage, 10), (0x5B0C, current, 100)):
            if triple is not None:
                for i, v in enumerate(triple):
                    self.set_words(HOLDING, base + 2 * i, int_words(round(v * factor), 2, False))
        if power is not None:
            self.set_words(HOLDING, 0x5B14, int_words(round(power * 100), 2, True))
        if frequency is not None:
            self.set_words(HOLDING, 0x5B2C, [round(frequency * 100)])
        for addr, v in ((0x5000, import_kwh), (0x5004, export_kwh)):
            if v is not None:
                self.set_words(HOLDING, addr, int_words(round(v * 100), 4, False))


class Em340(SimMeter):
    """Carlo Gavazzi EM340 input registers: INT32 with the LOW word first."""

    def __init__(self, address: int = 1, **values):
        super().__init__(address)
        self.define(INPUT, 0x0000, 0x36)       # V, A, W, VA, var, PF, sequence, Hz, kWh (+)
        self.define(INPUT, 0x004E, 4)          # kWh (-) TOT, kvarh (-) TOT
        self.set(voltage=(229.8, 230.6, 231.1), current=(10.123, 9.987, 10.05), power=-1234.5,
                 frequency=50.1, import_kwh=123456.7, export_kwh=42.3)
        self.set(**values)

    def set(self, *, voltage=None, current=None, power=None, frequency=None, import_kwh=None,
            export_kwh=None) -> None:
        def s32(addr: int, value: float, factor: float) -> None:
            self.set_words(INPUT, addr, int_words(round(value * factor), 2, True, low_first=True))

        for base, triple, factor in ((0x0000, voltage, 10), (0x000C, current, 1000)):
            if triple is not None:
                for i, v in enumerate(triple):
                    s32(base + 2 * i, v, factor)
        if power is not None:
            s32(0x0028, power, 10)
        if frequency is not None:
            self.set_words(INPUT, 0x0033, [round(frequency * 10)])
        if import_kwh is not None:
            s32(0x0034, import_kwh, 10)
        if export_kwh is not None:
            s32(0x004E, export_kwh, 10)


class SimBus:
    """An RS-485 bus on a pseudo-terminal: `port` is what the client opens."""

    def __init__(self, directory: Path, name: str = "ttySIM0"):
        self.port = str(Path(directory) / name)
        self.meters: dict[int, SimMeter] = {}
        self.requests: list[tuple[int, int, int, int]] = []   # (address, function, start, count)
        self.changed = threading.Condition()
        self._io = threading.Lock()
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._plugged = threading.Event()
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        self._timers: list[threading.Timer] = []
        self.plug()
        self._thread = threading.Thread(target=self._serve, name="modbus-sim", daemon=True)
        self._thread.start()

    def add(self, meter: SimMeter) -> SimMeter:
        self.meters[meter.address] = meter
        return meter

    # ----------------------------------------------------------------- adapter plug
    def plug(self) -> None:
        """A new pty appears under the same name (adapter plugged in)."""
        master, slave = os.openpty()
        tty.setraw(slave)           # no echo or newline mangling before the client opens it
        link = self.port + ".new"
        os.symlink(os.ttyname(slave), link)
        os.replace(link, self.port)
        with self._io:
            self._master, self._slave = master, slave
        self._plugged.set()
        os.write(self._wake_w, b"x")

    def unplug(self) -> None:
        """The adapter vanishes: the client's open handle fails and the name is gone."""
        with self._io:
            self._plugged.clear()
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
        if os.path.lexists(self.port):
            os.unlink(self.port)
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._stop = True
        self._plugged.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for t in self._timers:
            t.cancel()
        self.unplug()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ----------------------------------------------------------------- observation
    def line_speed(self) -> int:
        """The baud rate the client set on the serial device."""
        with self._io:
            speed = termios.tcgetattr(self._slave)[5]
        return next(int(name[1:]) for name in dir(termios)
                    if name[1:].isdigit() and name.startswith("B")
                    and getattr(termios, name) == speed)

    def wait_requests(self, n: int, timeout: float = 2.0) -> bool:
        """Wait until at least `n` requests arrived in total."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.requests) >= n, timeout)

    # ----------------------------------------------------------------- responder
    def _serve(self) -> None:
        buf = b""
        while not self._stop:
            fd = self._master
            if fd is None:
                self._plugged.wait()
                buf = b""
                continue
            ready, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
                continue
            with self._io:
                if self._master != fd:
                    continue
                try:
                    buf += os.read(fd, 1024)
                except OSError:
                    continue
            buf = self._handle(buf)

    def _handle(self, buf: bytes) -> bytes:
        # Read requests (function 3/4) are always 8 bytes; a real slave would frame by the
        # 3.5-character silence instead, which a pty cannot reproduce.
        while len(buf) >= 8:
            frame, buf = buf[:8], buf[8:]
            if crc16(frame[:6]) != frame[6:]:
                return b""                  # resynchronise on the next request
            address, function = frame[0], frame[1]
            start, count = struct.unpack(">HH", frame[2:6])
            with self.changed:
                self.requests.append((address, function, start, count))
                self.changed.notify_all()
            meter = self.meters.get(address)
            if meter is None:
                continue                    # nobody at this address: silence
            answer = meter.respond(function, start, count)
            if answer is None:
                continue
            if meter.delay_s:
                timer = threading.Timer(meter.delay_s, self._send, (answer,))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
            else:
                self._send(answer)
        return buf

    def _send(self, data: bytes) -> None:
        with self._io:
            if self._master is not None:
                try:
                    os.write(self._master, data)
                except OSError:
                    pass


def nan_words() -> list[int]:
    return f32(math.nan)
