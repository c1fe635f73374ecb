"""RDM6300 reader: frame parsing, and the reader on a real pseudo-terminal."""
from __future__ import annotations

import itertools
import queue
import random
import time

import pytest
from hypothesis import given, strategies as st

from hal.events import FaultCode, HardwareFault, TagPresented
from hal.factory import BuildContext, parse_device
from hal.rfid.rdm6300 import FrameParser, Rdm6300Settings, decode_frame, id_tag_for
from hal.settings import SettingsError
from tests.hal.serial_sim import PtyDevice


def frame(data_hex: str, checksum: int | None = None) -> bytes:
    """An RDM6300 frame as the module sends it (built here, independently of the parser)."""
    data = bytes.fromhex(data_hex)
    if checksum is None:
        checksum = 0
        for b in data:
            checksum ^= b
    return b"\x02" + (data_hex.upper() + f"{checksum:02X}").encode() + b"\x03"


CARD = "67003B51C6"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- frames

def test_datasheet_example_checksum():
    assert frame(CARD) == b"\x0267003B51C6CB\x03"
    assert decode_frame(frame(CARD)) == bytes.fromhex(CARD)


@pytest.mark.parametrize("bad", [
    frame(CARD, checksum=0xCC),                      # wrong checksum
    b"\x0267003B51C6CB\x02",                         # wrong end byte
    b"\x0267003B51 6CB\x03",                         # not hex (fromhex would skip the space)
    b"\x0267003B51C6CB",                             # short
])
def test_invalid_frames_are_rejected(bad):
    assert decode_frame(bad) is None


def test_id_formats():
    payload = bytes.fromhex(CARD)
    assert id_tag_for(payload, "full") == "67003B51C6"
    assert id_tag_for(payload, "uid4") == "003B51C6"
    assert id_tag_for(bytes.fromhex("0a00ff00be"), "full") == "0A00FF00BE"


def test_parser_resynchronises_after_half_frames_bad_checksums_and_noise():
    p = FrameParser()
    stream = (b"\x02670" + frame("1122334455", checksum=0) + b"\xff\x00\x03junk\x02"
              + frame(CARD))
    assert p.feed(stream) == [bytes.fromhex(CARD)]
    assert p.rejected >= 2


def test_parser_joins_a_frame_split_across_reads():
    p = FrameParser()
    f = frame(CARD)
    assert p.feed(f[:5]) == []
    assert p.feed(f[5:13]) == []
    assert p.feed(f[13:] + f) == [bytes.fromhex(CARD)] * 2


def _valid_frames_in(data: bytes) -> list[bytes]:
    """Every 14-byte window of `data` that is a valid frame (frames cannot overlap)."""
    return [decode_frame(data[i:i + 14]) for i in range(len(data))
            if decode_frame(data[i:i + 14]) is not None]


@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_garbage_never_crashes_or_invents_tags_and_a_good_frame_after_it_is_found(
        garbage, cuts):
    p = FrameParser()
    stream = garbage + frame(CARD)
    out: list[bytes] = []
    pos = 0
    for n in cuts:                                   # arbitrary read boundaries
        out += p.feed(stream[pos:pos + n])
        pos += n
    out += p.feed(stream[pos:])
    assert out[-1] == bytes.fromhex(CARD)
    assert out == _valid_frames_in(stream)           # nothing that was not on the wire


# --------------------------------------------------------------------------- settings

def test_settings_from_config_table():
    s = parse_device("reader", {"type": "rdm6300", "port": "/dev/ttyAMA0",
                                "removal_s": 0.8, "id_format": "uid4"}, "readers[0]")
    assert s == Rdm6300Settings(port="/dev/ttyAMA0", baudrate=9600, removal_s=0.8,
                                id_format="uid4")


@pytest.mark.parametrize("table, key", [
    ({"type": "rdm6300"}, "readers[0].port"),
    ({"type": "rdm6300", "port": "/dev/x", "id_format": "decimal"}, "readers[0].id_format"),
    ({"type": "rdm6300", "port": "/dev/x", "removal_s": 0}, "readers[0].removal_s"),
    ({"type": "rdm6300", "port": "/dev/x", "baudrate": -1}, "readers[0].baudrate"),
])
def test_bad_settings_name_the_key(table, key):
    with pytest.raises(SettingsError) as err:
        parse_device("reader", table, "readers[0]")
    assert err.value.key == key


# --------------------------------------------------------------------------- on a pty

class Harness:
    def __init__(self, tmp_path, clock=None, **settings):
        self.events: queue.Queue = queue.Queue()
        self.link = tmp_path / "ttyRFID"
        self.device = PtyDevice(self.link)
        ctx = BuildContext(connector_id=0, emit=self.events.put,
                           **({"clock": clock} if clock else {}))
        self.reader = Rdm6300Settings(port=str(self.link), **settings).build(ctx)
        self._markers = (f"FF{n:08X}" for n in itertools.count())
        self._old_markers: set[str] = set()

    def start(self):
        """Start the reader and make sure it listens: pyserial discards input when it
        opens a port, so bytes written before that moment would be lost."""
        self.reader.start()
        assert self.sync() == []

    def next_event(self, timeout: float = 5.0):
        return self.events.get(timeout=timeout)

    def sync(self) -> list:
        """Present a marker card and return the events before it: everything written
        earlier has then been processed (the port delivers bytes in order). The marker
        is repeated, as a reader does while a card stays in the field, until seen."""
        marker = next(self._markers)
        before = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            self.device.write(frame(marker))
            try:
                ev = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if ev in (TagPresented(marker), TagPresented(marker[2:])):   # full / uid4
                self._old_markers |= {marker, marker[2:]}
                return before
            if isinstance(ev, TagPresented) and ev.id_tag in self._old_markers:
                continue                             # a late repeat of an earlier marker
            before.append(ev)
        raise AssertionError(f"marker never seen; events so far: {before}")

    def close(self):
        self.reader.close()
        self.device.close()


@pytest.fixture
def clock():
    return FakeClock()


def test_card_held_is_one_presentation_and_counts_again_after_removal(tmp_path, clock):
    h = Harness(tmp_path, clock=clock, removal_s=0.5)
    h.start()
    try:
        clock.now = 0.0
        h.device.write(frame(CARD) * 3)
        assert h.sync() == [TagPresented(CARD)]
        for t in (0.25, 0.5, 0.75):                  # still held: frames keep coming
            clock.now = t
            h.device.write(frame(CARD) * 3)
            assert h.sync() == []
        clock.now = 1.25                             # absent for 0.5 s, presented again
        h.device.write(frame(CARD))
        assert h.sync() == [TagPresented(CARD)]
    finally:
        h.close()


def test_garbage_half_frames_and_bad_checksums_on_the_line(tmp_path, clock):
    h = Harness(tmp_path, clock=clock, id_format="uid4")
    h.start()
    try:
        noise = random.Random(6300).randbytes(2000)
        h.device.write(noise + b"\x0267003B" + frame(CARD, checksum=0x00) + noise[:100])
        assert h.sync() == []                        # no false tags, still alive
        h.device.write(noise[:50] + frame(CARD))
        assert h.sync() == [TagPresented("003B51C6")]
    finally:
        h.close()


def _fault(ev) -> tuple:
    assert isinstance(ev, HardwareFault), ev
    return ev.connector_id, ev.code, ev.active


def test_unplugged_reader_is_one_fault_and_recovers_by_itself(tmp_path):
    h = Harness(tmp_path)                            # real clock: the reopen backoff runs
    h.start()
    try:
        h.device.write(frame(CARD))
        assert h.next_event() == TagPresented(CARD)
        h.device.vanish()                            # USB adapter pulled out
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, True)
        h.device = PtyDevice(h.link)                 # plugged back, same udev path
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, False)
        h.device.write(frame("0102030405"))
        assert h.next_event() == TagPresented("0102030405")
        assert h.events.empty()                      # one fault, one clearance
    finally:
        h.close()


def test_missing_port_at_start_is_a_fault_until_it_appears(tmp_path):
    h = Harness(tmp_path)
    h.device.vanish()
    h.reader.start()
    try:
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, True)
        h.device = PtyDevice(h.link)
        assert _fault(h.next_event()) == (0, FaultCode.READER_FAILURE, False)
        h.device.write(frame(CARD))
        assert h.next_event() == TagPresented(CARD)
    finally:
        h.close()


def test_close_stops_the_thread_promptly(tmp_path):
    h = Harness(tmp_path)
    h.start()
    h.device.write(frame(CARD))
    assert h.next_event() == TagPresented(CARD)
    started = time.monotonic()
    h.reader.close()
    assert time.monotonic() - started < 0.5
    h.device.write(frame("0102030405"))              # nobody reads any more
    with pytest.raises(queue.Empty):
        h.events.get(timeout=0.2)
    h.device.close()
