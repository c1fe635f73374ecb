"""RDM6300 125 kHz (EM4100) reader on a UART, 9600 8N1.

While a card is in the field the module repeats a 14-byte frame: 0x02, ten ASCII hex
digits (a version/customer byte and the 4-byte card number), two ASCII hex digits of
the XOR of those five bytes, 0x03. The frame is parsed by hand: it is trivial, and no
maintained Python library for this reader builds on pyserial.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Optional

from hal.interfaces import Clock, Emit
from hal.rfid.serial_reader import SerialTagReader
from hal.serial_port import PORT_ERRORS

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
FRAME_LEN = 14
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def decode_frame(frame: bytes) -> Optional[bytes]:
    """The five data bytes of a valid frame, or None."""
    if len(frame) != FRAME_LEN or frame[0] != STX or frame[-1] != ETX:
        return None
    digits = frame[1:13]
    if not all(b in _HEX for b in digits):
        return None
    raw = bytes.fromhex(digits.decode("ascii"))
    data, checksum = raw[:5], raw[5]
    xor = 0
    for b in data:
        xor ^= b
    return data if xor == checksum else None


class FrameParser:
    """Cuts frames out of a byte stream. Anything that is not a valid frame (noise,
    half frames, bad checksums) is dropped and parsing resumes at the next 0x02."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.rejected = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """Append `data`; return the data bytes of each complete valid frame."""
        self._buf += data
        frames: list[bytes] = []
        while True:
            start = self._buf.find(STX)
            if start < 0:
                self._buf.clear()
                return frames
            del self._buf[:start]
            if len(self._buf) < FRAME_LEN:
                return frames
            payload = decode_frame(bytes(self._buf[:FRAME_LEN]))
            if payload is None:
                self.rejected += 1
                del self._buf[:1]          # resynchronise on the next start byte
                continue
            frames.append(payload)
            del self._buf[:FRAME_LEN]


def id_tag_for(payload: bytes, id_format: str) -> str:
    """"full": all five bytes (10 hex digits, as printed by most readers and
    management systems); "uid4": the 4-byte card number only (8 hex digits)."""
    data = payload if id_format == "full" else payload[1:]
    return data.hex().upper()


@dataclass
class Rdm6300Settings:
    """`[[readers]] type = "rdm6300"`."""

    port: str
    baudrate: int = 9600
    removal_s: float = 0.5
    id_format: Literal["full", "uid4"] = "full"

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port: must name a serial device, e.g. /dev/ttyAMA0")
        if self.baudrate <= 0:
            raise ValueError("baudrate: must be positive")
        if not 0.05 <= self.removal_s <= 60:
            raise ValueError("removal_s: must be between 0.05 and 60 seconds")

    def build(self, ctx) -> "Rdm6300Reader":
        return Rdm6300Reader(self, ctx.emit, ctx.clock)


class Rdm6300Reader(SerialTagReader):
    """Reads frames on a daemon thread and emits one TagPresented per presentation.
    A port that cannot be opened or fails is a READER_FAILURE fault until it reopens.
    (A silent reader is normal: the module only talks while a card is present.)"""

    def __init__(self, settings: Rdm6300Settings, emit: Emit, clock: Clock):
        super().__init__("rdm6300", settings.port, settings.baudrate, settings.removal_s,
                         emit, clock)
        self._settings = settings
        self._parser = FrameParser()

    def _step(self, stopping) -> None:
        port = self._open_port(stopping)
        if port is None:
            return
        self._fault.set(False)
        try:
            data = port.read(1)
            if data:
                data += port.read(port.in_waiting)
        except PORT_ERRORS as exc:
            self._port.broken(exc)
            self._parser.reset()
            self._fault.set(True, f"reader port: {exc}")
            return
        if not data:
            return
        now = self._clock()
        for payload in self._parser.feed(data):
            self._present(id_tag_for(payload, self._settings.id_format), now)
