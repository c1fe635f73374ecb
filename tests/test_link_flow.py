"""The hand-overs between the loop and the link: the bounded send buffer, the frame credits,
and the link thread that stops reading while the loop is behind (real sockets, no process)."""
import queue
import threading
import time

import pytest

from chargepoint import events as ev
from chargepoint.config import CsmsSettings
from chargepoint.link_flow import FrameCredits, SendBuffer
from chargepoint.transport import Transport
from tests.harness import wait_until
from tests.hostile_csms import HostileCsms

TEXT, PONG = 1, 0xA


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# ---------------------------------------------------------------------------- SendBuffer
def test_send_buffer_refuses_beyond_its_frame_bound_and_keeps_what_it_has():
    buf = SendBuffer(max_frames=3, max_bytes=1000)
    assert all(buf.put(TEXT, b"x") for _ in range(3))
    assert not buf.put(TEXT, b"y")
    assert buf.frames == 3 and buf.bytes == 3
    assert [buf.take(0).payload for _ in range(3)] == [b"x"] * 3
    assert buf.take(0) is None


def test_send_buffer_bounds_the_bytes_behind_the_next_frame_whatever_its_size():
    buf = SendBuffer(max_frames=100, max_bytes=10)
    assert buf.put(TEXT, b"a" * 50)                    # the next to go: any size
    assert buf.put(TEXT, b"b" * 6) and buf.put(TEXT, b"c" * 4)
    assert not buf.put(TEXT, b"d")                    # 11 bytes behind the head
    assert buf.bytes == 60
    buf.take(0)                                       # "b" heads now, "c" is behind it
    assert buf.put(TEXT, b"e" * 6) and not buf.put(TEXT, b"f")


def test_control_frames_go_first_and_have_their_own_small_bound():
    clock = Clock()
    buf = SendBuffer(max_frames=2, max_bytes=100, max_control=2, clock=clock)
    assert buf.put(TEXT, b"data")
    clock.t = 101.0
    assert buf.put_control(PONG, b"1") and buf.put_control(PONG, b"2")
    assert not buf.put_control(PONG, b"3")            # a ping flood cannot grow it
    assert buf.oldest() == 100.0                      # the data frame waits longest
    assert [buf.take(0).payload for _ in range(3)] == [b"1", b"2", b"data"]


def test_take_waits_until_a_frame_a_wake_or_the_timeout():
    buf = SendBuffer()
    assert buf.take(0.01) is None
    threading.Timer(0.05, buf.put, (TEXT, b"late")).start()
    assert buf.take(10).payload == b"late"
    threading.Timer(0.05, buf.wake).start()
    assert buf.take(10) is None                       # woken, nothing to take


def test_a_sealed_buffer_refuses_new_frames_but_gives_out_what_it_holds():
    buf = SendBuffer()
    buf.put(TEXT, b"last words")
    buf.seal()
    assert not buf.put(TEXT, b"more") and not buf.put_control(PONG)
    assert buf.take(0).payload == b"last words"
    buf.close()
    assert buf.take(10) is None                       # closed: returns at once


# ---------------------------------------------------------------------------- FrameCredits
def test_credits_bound_the_frames_in_flight_and_ignore_extra_releases():
    credits = FrameCredits(limit=2)
    assert credits.acquire(0) and credits.acquire(0)
    assert not credits.acquire(0.01)
    credits.release()
    assert credits.acquire(0)
    credits.release(), credits.release(), credits.release()     # one more than taken
    assert credits.in_flight == 0
    assert credits.acquire(0) and credits.acquire(0) and not credits.acquire(0)


def test_a_waiting_acquire_returns_when_a_credit_is_released():
    credits = FrameCredits(limit=1)
    credits.acquire(0)
    threading.Timer(0.05, credits.release).start()
    assert credits.acquire(10)


# ---------------------------------------------------------------------------- the link
@pytest.fixture
def hostile():
    csms = HostileCsms().start()
    yield csms
    csms.stop()


def _transport(csms: HostileCsms, **settings) -> tuple[Transport, "queue.SimpleQueue"]:
    events: "queue.SimpleQueue" = queue.SimpleQueue()
    base = dict(url=csms.url, charge_point_id="CP-1", reconnect_min_s=0.05,
                reconnect_max_s=0.2)
    transport = Transport(CsmsSettings(**{**base, **settings}), events.put, password=str,
                          ping_interval_s=0)
    return transport, events


def _drain(events) -> list:
    out = []
    while not events.empty():
        out.append(events.get())
    return out


def _wait_event(events, kind, predicate=lambda e: True, timeout: float = 10.0):
    """The first event of `kind` satisfying `predicate` (others are dropped)."""
    found = []

    def look():
        found.extend(e for e in _drain(events) if isinstance(e, kind) and predicate(e))
        return bool(found)

    assert wait_until(look, timeout), f"no {kind.__name__} within {timeout} s"
    return found[0]


def test_the_link_reads_no_further_while_its_frames_wait_in_the_loop(hostile):
    """Nothing hands the credits back: after FRAMES_IN_FLIGHT frames the link stops
    reading, so the CSMS's later frames stay in TCP, not in this process; each frame the
    loop handles lets exactly one more in."""
    transport, events = _transport(hostile)
    transport.start()
    try:
        hostile.wait_connected()
        _wait_event(events, ev.Connected)
        op = hostile.flood("Heartbeat", {}, count=50)
        assert op.wait(10)
        frames: list = []

        def got(n):
            frames.extend(e for e in _drain(events) if isinstance(e, ev.FrameReceived))
            return len(frames) >= n

        limit = transport._credits.limit
        assert wait_until(lambda: got(limit))
        assert not wait_until(lambda: got(limit + 1), timeout=0.5)
        assert len(frames) == limit
        transport.frame_handled()
        assert wait_until(lambda: got(limit + 1))
        assert not wait_until(lambda: got(limit + 2), timeout=0.3)
        handled = 1
        while len(frames) < 50:                       # the loop handles them one by one
            seen = len(frames)
            for _ in range(seen - handled):
                transport.frame_handled()
            handled = seen
            assert wait_until(lambda: got(seen + 1)), f"stuck after {seen} frames"
        assert [f.text for f in frames] == [f'[2,"f{i}","Heartbeat",{{}}]' for i in range(50)]
    finally:
        transport.close()


def test_send_never_waits_for_a_csms_that_stopped_reading(hostile):
    """The CSMS reads nothing: the loop's sends go to the bounded buffer, and once it is
    full `send` refuses and the link is dropped; the loop's thread is never held."""
    transport, events = _transport(hostile, send_timeout_s=60)
    transport.start()
    try:
        hostile.wait_connected()
        _wait_event(events, ev.Connected)
        hostile.stop_reading()
        frame = '[3,"x",{"data":"' + "A" * 60_000 + '"}]'
        accepted = 0
        for _ in range(10_000):
            if not transport.send(frame):
                break
            accepted += 1
        assert 0 < accepted < 10_000
        assert "the CSMS is not reading" in _wait_event(events, ev.Disconnected).reason
        hostile.wait_connected(2)                     # and it comes back
    finally:
        transport.close()


def test_a_csms_that_stops_reading_loses_the_link_after_send_timeout(hostile):
    """Never enough frames to fill the buffer (one more only when the writer has taken
    the last), but none written for send_timeout_s: the writer drops the link itself."""
    transport, events = _transport(hostile, send_timeout_s=0.5)
    transport.start()
    try:
        hostile.wait_connected()
        _wait_event(events, ev.Connected)
        hostile.stop_reading()
        frame = '[3,"x",{"data":"' + "A" * 60_000 + '"}]'
        deadline = time.monotonic() + 60
        gone = []
        while not gone and time.monotonic() < deadline:
            link = transport._link
            if link is not None and link.buffer.frames == 0:
                transport.send(frame)
            time.sleep(0.002)                         # pacing only
            gone = [e for e in _drain(events) if isinstance(e, ev.Disconnected)]
        assert gone, "the link was never dropped"
        reason = gone[0].reason
        assert "took no frame for 0.5 s" in reason, reason
    finally:
        transport.close()
