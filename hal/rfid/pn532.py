"""NXP PN532 13.56 MHz reader on its UART (HSU), 115200 8N1, polling ISO 14443-A cards.

Frames are `00 00 FF LEN LCS TFI DATA DCS 00` (TFI D4 host to PN532, D5 back); every
command is acknowledged with `00 00 FF 00 FF 00` before its response. The framing is
written by hand: the maintained Python libraries either bring their own transport
(nfcpy) or target CircuitPython buses (adafruit-circuitpython-pn532), not pyserial.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Union

from hal.interfaces import Clock, Emit, HardwareError
from hal.rfid.serial_reader import SerialTagReader
from hal.serial_port import PORT_ERRORS

log = logging.getLogger(__name__)

TFI_HOST = 0xD4
TFI_PN532 = 0xD5
TFI_ERROR = 0x7F                      # "syntax error" application frame: 00 00 FF 01 FF 7F 81 00
ACK = bytes([0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00])
NACK = bytes([0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00])
#: HSU wake-up: 0x55 0x55 then zeros long enough for the oscillator to start.
WAKEUP = bytes([0x55, 0x55]) + bytes(14)

CMD_SAM_CONFIGURATION = 0x14
CMD_RF_CONFIGURATION = 0x32
CMD_IN_LIST_PASSIVE_TARGET = 0x4A

#: SAMConfiguration: normal mode, virtual-card timeout 1 s, use the IRQ pin.
SAM_NORMAL = bytes([0x01, 0x14, 0x01])
#: RFConfiguration item 5 (MaxRetries): ATR 0xFF, PSL 1, passive activation 1. The
#: default passive-activation retry count is infinite, so without this an
#: InListPassiveTarget with no card in the field would never answer.
RF_MAX_RETRIES = bytes([0x05, 0xFF, 0x01, 0x01])
#: InListPassiveTarget: at most one target, 106 kbps type A.
LIST_ONE_TYPE_A = bytes([0x01, 0x00])

ACK_TIMEOUT_S = 0.1
RESPONSE_TIMEOUT_S = 0.5
ATTEMPTS = 2                          # per command, before the poll counts as failed
FAILED_POLLS_BEFORE_FAULT = 3
_MAX_BUFFER = 1024


class ProtocolError(HardwareError):
    """The PN532 answered, but not with what the protocol allows."""


@dataclass(frozen=True)
class Frame:
    tfi: int
    data: bytes                        # after the TFI, before the DCS


Item = Union[Frame, str]               # a Frame, "ack" or "nack"


def encode_frame(tfi: int, data: bytes) -> bytes:
    """A normal information frame carrying TFI + data."""
    body = bytes([tfi]) + data
    if len(body) > 255:
        raise ValueError("frame too long for a normal information frame")
    return (bytes([0x00, 0x00, 0xFF, len(body), (-len(body)) & 0xFF]) + body
            + bytes([(-sum(body)) & 0xFF, 0x00]))


class FrameParser:
    """Finds ACK, NACK and information frames in a byte stream.

    Resynchronises on the start code `00 FF`: a candidate whose length or data
    checksum is wrong is skipped, and a candidate still waiting for bytes is given up
    as soon as a complete valid frame follows it (a stale half frame must not swallow
    the next response). `corrupt` counts frames whose header was right but whose data
    checksum was not, so that the caller can ask for a retransmission.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.corrupt = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Item]:
        self._buf += data
        items: list[Item] = []
        pos = 0
        waiting_at: Optional[int] = None
        while True:
            i = self._buf.find(b"\x00\xff", pos)
            if i < 0:
                break
            result = self._try(i)
            if result is None:                     # incomplete
                if waiting_at is None:
                    waiting_at = i
                pos = i + 1
            elif result is False:                  # not a frame here
                pos = i + 1
            else:
                item, end = result
                items.append(item)
                del self._buf[:end]
                pos, waiting_at = 0, None
        if waiting_at is not None:
            keep_from = waiting_at
        elif self._buf.endswith(b"\x00"):
            keep_from = len(self._buf) - 1         # may be the first byte of a start code
        else:
            keep_from = len(self._buf)
        del self._buf[:keep_from]
        if len(self._buf) > _MAX_BUFFER:
            self._buf.clear()
        return items

    def _try(self, i: int):
        """(item, end) for a frame at start code i; None if incomplete; False if not one."""
        buf = self._buf
        if i + 5 > len(buf):
            return None
        length, lcs = buf[i + 2], buf[i + 3]
        if (length, lcs) in ((0x00, 0xFF), (0xFF, 0x00)):
            if buf[i + 4] != 0x00:
                return False
            return ("ack" if length == 0 else "nack"), i + 5
        if length == 0 or (length + lcs) & 0xFF:
            return False                            # includes extended frames (FF FF)
        end = i + 4 + length + 2
        if end > len(buf):
            return None
        body = buf[i + 4:i + 4 + length]
        if (sum(body) + buf[i + 4 + length]) & 0xFF:
            self.corrupt += 1
            return False
        if buf[end - 1] != 0x00 or body[0] not in (TFI_HOST, TFI_PN532, TFI_ERROR):
            return False
        return Frame(body[0], bytes(body[1:])), end


def parse_target_uid(data: bytes) -> Optional[bytes]:
    """NFCID1 from an InListPassiveTarget response (the bytes after D5 4B), or None
    when no card answered. Layout: NbTg, Tg, SENS_RES (2), SEL_RES, NFCIDLength, NFCID1."""
    if not data:
        raise ProtocolError("empty InListPassiveTarget response")
    if data[0] == 0:
        return None
    if len(data) < 6:
        raise ProtocolError(f"short InListPassiveTarget response {data.hex()}")
    n = data[5]
    if n not in (4, 7, 10) or len(data) < 6 + n:
        raise ProtocolError(f"bad NFCID1 length in {data.hex()}")
    return bytes(data[6:6 + n])


@dataclass
class Pn532Settings:
    """`[[readers]] type = "pn532"`."""

    port: str
    baudrate: int = 115200
    poll_interval_ms: int = 200
    removal_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port: must name a serial device, e.g. /dev/ttyUSB0")
        if self.baudrate <= 0:
            raise ValueError("baudrate: must be positive")
        if not 20 <= self.poll_interval_ms <= 5000:
            raise ValueError("poll_interval_ms: must be between 20 and 5000")
        if not 0.05 <= self.removal_s <= 60:
            raise ValueError("removal_s: must be between 0.05 and 60 seconds")
        if self.removal_s * 1000 < 2 * self.poll_interval_ms:
            raise ValueError("removal_s: must be at least two poll intervals, or a card "
                             "held still would count as presented again on every poll")

    def build(self, ctx) -> "Pn532Reader":
        return Pn532Reader(self, ctx.emit, ctx.clock)


class Pn532Reader(SerialTagReader):
    """Polls for a type A card every `poll_interval_ms` on a daemon thread and emits one
    TagPresented per presentation. Timeouts, NACKs and checksum errors are retried;
    a port that fails, or polls failing several times running, raise READER_FAILURE,
    cleared by the next good poll (the PN532 is woken and configured again first)."""

    def __init__(self, settings: Pn532Settings, emit: Emit, clock: Clock):
        super().__init__("pn532", settings.port, settings.baudrate, settings.removal_s, emit,
                         clock, read_timeout_s=0.02)
        self._settings = settings
        self._parser = FrameParser()
        self._configured = False
        self._failed_polls = 0

    # ------------------------------------------------------------------ poll loop

    def _step(self, stopping) -> None:
        port = self._open_port(stopping)
        if port is None:
            return
        try:
            uid = self._poll(port)
        except PORT_ERRORS as exc:
            self._port.broken(exc)
            self._configured = False
            self._fault.set(True, f"reader port: {exc}")
            return
        except HardwareError as exc:
            self._configured = False          # wake it up and configure it again
            self._failed_polls += 1
            log.debug("PN532 poll failed (%d): %s", self._failed_polls, exc)
            if self._failed_polls >= FAILED_POLLS_BEFORE_FAULT:
                self._fault.set(True, f"PN532: {exc}")
        else:
            self._failed_polls = 0
            self._fault.set(False)
            if uid is not None:
                self._present(uid.hex().upper())
        stopping.wait(self._settings.poll_interval_ms / 1000)

    def _poll(self, port) -> Optional[bytes]:
        if not self._configured:
            self._command(port, CMD_SAM_CONFIGURATION, SAM_NORMAL, wakeup=True)
            self._command(port, CMD_RF_CONFIGURATION, RF_MAX_RETRIES)
            self._configured = True
        return parse_target_uid(self._command(port, CMD_IN_LIST_PASSIVE_TARGET,
                                              LIST_ONE_TYPE_A))

    # ------------------------------------------------------------------ one command

    def _command(self, port, cmd: int, params: bytes, wakeup: bool = False) -> bytes:
        """Send a command; return the response data after the response code."""
        frame = encode_frame(TFI_HOST, bytes([cmd]) + params)
        last = "no answer"
        for _ in range(ATTEMPTS):
            port.reset_input_buffer()
            self._parser.reset()
            port.write((WAKEUP + frame) if wakeup else frame)
            try:
                return self._exchange(port, cmd)
            except ProtocolError as exc:
                last = str(exc)
                port.write(ACK)               # an ACK from the host aborts the command
        raise ProtocolError(f"command {cmd:02X}: {last}")

    def _exchange(self, port, cmd: int) -> bytes:
        """Wait for the ACK, then the response; NACK a garbled response (the PN532 then
        sends it again). The response is accepted even if its ACK was lost."""
        acked = False
        deadline = time.monotonic() + ACK_TIMEOUT_S
        corrupt_seen = self._parser.corrupt
        resends = 0
        while time.monotonic() < deadline:
            data = port.read(1)
            if not data:
                continue
            data += port.read(port.in_waiting)
            for item in self._parser.feed(data):
                if item == "ack" and not acked:
                    acked = True
                    deadline = time.monotonic() + RESPONSE_TIMEOUT_S
                elif item == "nack":
                    raise ProtocolError("NACK (command garbled on the line)")
                elif isinstance(item, Frame):
                    if item.tfi == TFI_ERROR:
                        raise ProtocolError("PN532 reported a syntax error")
                    if item.tfi == TFI_PN532 and item.data[:1] == bytes([cmd + 1]):
                        return item.data[1:]
            if self._parser.corrupt != corrupt_seen:
                corrupt_seen = self._parser.corrupt
                if resends == 2:
                    raise ProtocolError("response checksum wrong")
                resends += 1
                port.write(NACK)
                deadline = time.monotonic() + RESPONSE_TIMEOUT_S
        raise ProtocolError("no response" if acked else "no ACK")
