"""PN532 reader: framing, response parsing, and the reader against a simulated PN532
speaking the HSU protocol on a real pseudo-terminal."""
from __future__ import annotations

import queue
import threading

import pytest
from hypothesis import given, strategies as st

from hal.events import FaultCode, HardwareFault, TagPresented
from hal.factory import BuildContext, parse_device
from hal.rfid.pn532 import (ACK, NACK, Frame, FrameParser, Pn532Settings, ProtocolError,
                            encode_frame, parse_target_uid)
from hal.settings import SettingsError
from tests.hal.serial_sim import PtyDevice

UID4 = bytes.fromhex("DEADBEEF")
UID7 = bytes.fromhex("04A1B2C3D4E5F6")


def pn532_frame(body: bytes) -> bytes:
    """A normal information frame, built here independently of the code under test."""
    return (bytes([0, 0, 0xFF, len(body), (0x100 - len(body)) & 0xFF]) + body
            + bytes([(0x100 - sum(body) % 256) % 256, 0]))


# --------------------------------------------------------------------------- framing

def test_encodes_the_documented_inlistpassivetarget_frame():
    assert encode_frame(0xD4, bytes([0x4A, 0x01, 0x00])) == bytes.fromhex(
        "0000FF04FCD44A0100E100")
    assert encode_frame(0xD4, bytes([0x14, 0x01, 0x14, 0x01])) == bytes.fromhex(
        "0000FF05FBD414011401 0200".replace(" ", ""))


def test_parser_finds_ack_nack_and_frames_split_anywhere():
    response = pn532_frame(bytes([0xD5, 0x15]))
    stream = ACK + response + NACK
    for cut in range(len(stream) + 1):
        p = FrameParser()
        items = p.feed(stream[:cut]) + p.feed(stream[cut:])
        assert items == ["ack", Frame(0xD5, bytes([0x15])), "nack"], cut


def test_parser_counts_a_corrupted_frame_and_skips_it():
    bad = bytearray(pn532_frame(bytes([0xD5, 0x4B, 0x00])))
    bad[-2] ^= 0x01                                  # data checksum
    p = FrameParser()
    assert p.feed(bytes(bad) + pn532_frame(bytes([0xD5, 0x15]))) == [Frame(0xD5, b"\x15")]
    assert p.corrupt == 1


def test_a_stale_half_frame_does_not_swallow_the_next_response():
    p = FrameParser()
    assert p.feed(bytes.fromhex("0000FF50B0D54B")) == []    # header promising 80 bytes
    assert p.feed(ACK + pn532_frame(bytes([0xD5, 0x15]))) == ["ack", Frame(0xD5, b"\x15")]


@given(st.binary(max_size=300).filter(lambda g: b"\x00\xff" not in g))
def test_noise_before_a_frame_is_skipped(noise):
    response = pn532_frame(bytes([0xD5, 0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04]) + UID4)
    assert FrameParser().feed(noise + response) == [
        Frame(0xD5, bytes([0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04]) + UID4)]


@given(st.binary(max_size=400))
def test_arbitrary_noise_never_crashes_and_yields_only_frames_on_the_wire(noise):
    p = FrameParser()
    for item in p.feed(noise[:150]) + p.feed(noise[150:]):
        if isinstance(item, Frame):
            assert pn532_frame(bytes([item.tfi]) + item.data) in noise
        else:
            assert (ACK if item == "ack" else NACK)[1:] in noise


# --------------------------------------------------------------------------- responses

@pytest.mark.parametrize("data, uid", [
    (bytes([0x00]), None),
    (bytes([0x01, 0x01, 0x00, 0x04, 0x08, 0x04]) + UID4, UID4),
    (bytes([0x01, 0x01, 0x00, 0x44, 0x00, 0x07]) + UID7, UID7),
    (bytes([0x01, 0x01, 0x00, 0x44, 0x00, 0x0A]) + bytes(range(10)), bytes(range(10))),
    (bytes([0x01, 0x01, 0x00, 0x04, 0x20, 0x04]) + UID4 + bytes.fromhex("0578807002"), UID4),
])
def test_uid_from_inlistpassivetarget(data, uid):
    assert parse_target_uid(data) == uid


@pytest.mark.parametrize("data", [b"", bytes([0x01, 0x01, 0x00]),
                                  bytes([0x01, 0x01, 0x00, 0x04, 0x08, 0x05]) + bytes(5),
                                  bytes([0x01, 0x01, 0x00, 0x04, 0x08, 0x07]) + UID4])
def test_malformed_target_data_is_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        parse_target_uid(data)


# --------------------------------------------------------------------------- settings

def test_settings_from_config_table():
    s = parse_device("reader", {"type": "pn532", "port": "/dev/ttyUSB0",
                                "poll_interval_ms": 150}, "readers[0]")
    assert s == Pn532Settings(port="/dev/ttyUSB0", baudrate=115200, poll_interval_ms=150,
                              removal_s=0.5)


def test_removal_must_span_two_polls():
    with pytest.raises(SettingsError) as err:
        parse_device("reader", {"type": "pn532", "port": "/dev/x", "poll_interval_ms": 400,
                                "removal_s": 0.5}, "readers[1]")
    assert err.value.key == "readers[1].removal_s"


# --------------------------------------------------------------------------- simulated PN532

class SimPn532:
    """A PN532 in HSU mode: asleep until woken by 0x55 0x55, answers InListPassiveTarget
    only after SAMConfiguration, ACKs each valid command, resends its last response on
    a NACK. Knobs simulate a card in the field, line corruption and a dead chip."""

    def __init__(self) -> None:
        self.uid: bytes | None = None
        self.silent = False
        self.corrupt_responses = 0
        self.nack_commands = 0
        self.awake = False
        self.sam_configured = False
        self.host_nacks = 0
        self.wakeups = 0
        self.polls = 0
        self._buf = bytearray()
        self._last = b""
        self._cond = threading.Condition()

    def wait_polls(self, n: int, timeout: float = 5.0) -> None:
        """Wait for `n` more InListPassiveTarget requests: the reader has then handled
        every answer given before the last of them."""
        with self._cond:
            target = self.polls + n
            assert self._cond.wait_for(lambda: self.polls >= target, timeout), "no polls"

    def __call__(self, data: bytes) -> bytes:
        if self.silent:
            self._buf.clear()
            return b""
        if b"\x55\x55" in data:
            self.awake = True
            self.wakeups += 1
        self._buf += data
        out = bytearray()
        while True:
            i = self._buf.find(b"\x00\xff")
            if i < 0 or len(self._buf) < i + 5:
                break
            length, lcs = self._buf[i + 2], self._buf[i + 3]
            if (length, lcs) == (0x00, 0xFF):            # host ACK: abort, nothing to do
                del self._buf[:i + 5]
                continue
            if (length, lcs) == (0xFF, 0x00):            # host NACK: send again
                del self._buf[:i + 5]
                self.host_nacks += 1
                out += self._line(self._last)
                continue
            if len(self._buf) < i + 6 + length:
                break
            body = bytes(self._buf[i + 4:i + 4 + length])
            dcs = self._buf[i + 4 + length]
            del self._buf[:i + 6 + length]
            if (length + lcs) % 256 or (sum(body) + dcs) % 256 or body[0] != 0xD4:
                continue                                  # the chip ignores bad frames
            if not self.awake:
                continue
            if self.nack_commands:
                self.nack_commands -= 1
                out += NACK
                continue
            out += ACK
            reply = self._answer(body[1], body[2:])
            if reply is None:
                continue
            self._last = pn532_frame(bytes([0xD5]) + reply)
            out += self._line(self._last)
        return bytes(out)

    def _line(self, frame: bytes) -> bytes:
        """What arrives at the host: the frame, or it with a damaged data checksum."""
        if frame and self.corrupt_responses:
            self.corrupt_responses -= 1
            return frame[:-2] + bytes([frame[-2] ^ 0x5A, 0])
        return frame

    def _answer(self, cmd: int, params: bytes) -> bytes | None:
        if cmd == 0x14 and params[:1] == b"\x01":
            self.sam_configured = True
            return bytes([0x15])
        if cmd == 0x32:
            return bytes([0x33])
        if cmd == 0x4A and params == bytes([0x01, 0x00]) and self.sam_configured:
            with self._cond:
                self.polls += 1
                self._cond.notify_all()
            if self.uid is None:
                return bytes([0x4B, 0x00])
            sens_res = b"\x00\x04" if len(self.uid) == 4 else b"\x00\x44"
            sel_res = b"\x08" if len(self.uid) == 4 else b"\x00"
            return bytes([0x4B, 0x01, 0x01]) + sens_res + sel_res + bytes([len(self.uid)]) + self.uid
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, tmp_path, clock=None):
        self.events: queue.Queue = queue.Queue()
        self.link = tmp_path / "ttyNFC"
        self.sim = SimPn532()
        self.device = PtyDevice(self.link, self.sim)
        ctx = BuildContext(connector_id=0, emit=self.events.put,
                           **({"clock": clock} if clock else {}))
        self.reader = Pn532Settings(port=str(self.link), poll_interval_ms=20,
                                    removal_s=0.5).build(ctx)

    def start(self):
        self.reader.start()

    def drain(self) -> list:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def next_event(self, timeout: float = 5.0):
        return self.events.get(timeout=timeout)

    def replug(self):
        self.sim = SimPn532()                              # powered up again: asleep
        self.device = PtyDevice(self.link, self.sim)

    def close(self):
        self.reader.close()
        self.device.close()


@pytest.fixture
def harness(tmp_path):
    clock = FakeClock()
    h = Harness(tmp_path, clock)
    h.clock = clock
    h.start()
    yield h
    h.close()


def _fault(ev) -> tuple:
    assert isinstance(ev, HardwareFault), ev
    return ev.connector_id, ev.code, ev.active


def test_wakes_and_configures_the_chip_then_polls_without_tags(harness):
    harness.sim.wait_polls(3)
    assert harness.device.received.startswith(b"\x55\x55")
    assert harness.sim.sam_configured
    assert harness.drain() == []


def test_card_held_is_one_presentation_and_counts_again_after_removal(harness):
    sim, clock = harness.sim, harness.clock
    sim.uid = UID4
    sim.wait_polls(3)
    clock.now = 0.25                                     # still held
    sim.wait_polls(3)
    assert harness.drain() == [TagPresented("DEADBEEF")]
    sim.uid = None                                       # taken away
    sim.wait_polls(2)
    clock.now = 1.0                                      # absent for more than 0.5 s
    sim.uid = UID4
    sim.wait_polls(2)
    assert harness.drain() == [TagPresented("DEADBEEF")]


def test_seven_byte_uid(harness):
    harness.sim.uid = UID7
    assert harness.next_event() == TagPresented("04A1B2C3D4E5F6")


def test_corrupted_response_is_asked_for_again(harness):
    harness.sim.wait_polls(1)
    harness.sim.corrupt_responses = 1
    harness.sim.uid = UID4
    assert harness.next_event() == TagPresented("DEADBEEF")
    assert harness.sim.host_nacks == 1


def test_nacked_command_is_sent_again(harness):
    harness.sim.wait_polls(1)
    harness.sim.nack_commands = 1
    harness.sim.uid = UID7
    assert harness.next_event() == TagPresented("04A1B2C3D4E5F6")


def test_persistent_corruption_is_a_fault_cleared_when_the_line_is_clean(harness):
    harness.sim.wait_polls(1)
    harness.sim.corrupt_responses = 10_000
    assert _fault(harness.next_event()) == (0, FaultCode.READER_FAILURE, True)
    harness.sim.corrupt_responses = 0
    assert _fault(harness.next_event()) == (0, FaultCode.READER_FAILURE, False)
    harness.sim.uid = UID4
    assert harness.next_event() == TagPresented("DEADBEEF")


def test_silent_chip_is_one_fault_and_is_woken_again_when_it_answers(harness):
    harness.sim.wait_polls(1)
    wakeups = harness.sim.wakeups
    harness.sim.silent = True
    assert _fault(harness.next_event()) == (0, FaultCode.READER_FAILURE, True)
    harness.sim.awake = harness.sim.sam_configured = False       # it had browned out
    harness.sim.silent = False
    assert _fault(harness.next_event()) == (0, FaultCode.READER_FAILURE, False)
    assert harness.sim.wakeups > wakeups
    harness.sim.uid = UID4
    assert harness.next_event() == TagPresented("DEADBEEF")
    assert harness.drain() == []


def test_unplugged_adapter_is_a_fault_and_recovers(tmp_path):
    h = Harness(tmp_path)                                  # real clock: reopen backoff runs
    h.start()
    try:
        h.sim.wait_polls(1)
        h.device.vanish()
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, True)
        h.replug()
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, False)
        h.sim.uid = UID4
        assert h.next_event() == TagPresented("DEADBEEF")
        assert h.drain() == []
    finally:
        h.close()
