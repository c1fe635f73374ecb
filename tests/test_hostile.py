"""The real firmware process against a hostile CSMS (tests/hostile_csms.py): whatever the CSMS
does, the loop keeps turning, the contactor opens when the EV leaves, memory stays bounded,
and the link is dropped and made again.

Latencies are the firmware's own accounting (chargepoint/turns.py, read from the sim
control socket); timings of the link come from the CSMS's connection log.
"""
import re

import pytest

from bench.hostile import Rig, composite, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kwargs) -> Rig:
        made.append(Rig(tmp_path / f"rig{len(made)}", **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _log(r: Rig) -> str:
    return r.fw.log.read_text(errors="replace")


def test_the_contactor_opens_within_100_ms_during_a_flood_the_csms_does_not_read(rig):
    """GetConfiguration CALLs as fast as the socket takes them, the CSMS reading none of
    the answers: before, the loop blocked in a send and the contactor opened 22.8 s after
    the unplug. Now the link is dropped, the loop never waits, and the StopTransaction
    reaches the CSMS on the next connection."""
    r = rig(csms={"send_timeout_s": 2}).start()
    op = r.csms.flood("GetConfiguration", {}, stop_reading=True)
    assert wait_until(lambda: op.sent >= 200, 10)
    assert r.csms.connections[0].closed is None        # the flood is on
    opened_ms = r.unplug()
    assert opened_ms is not None, "the contactor did not open"
    assert opened_ms < 100, r.loop()
    assert r.loop()["contactor_opens"] == 1
    r.csms.wait_connected(2, timeout=30)
    reason = wait_until(r.disconnects, 5)[0]
    assert "the CSMS is not reading" in reason or "took no frame" in reason, reason
    stop = r.csms.wait_for("StopTransaction", timeout=30)
    assert stop.connection >= 2 and stop.payload["reason"] == "EVDisconnected"
    assert r.fw.proc.poll() is None


def test_memory_stays_bounded_under_a_huge_fragmented_message_and_large_frames_unread(rig):
    """A 200 MB message in 1 MB fragments ends the link once the fragments pass
    4 x max_frame_bytes; then 150 frames of 900 KB while the CSMS reads nothing are read
    4 at a time and each answered, and the process stays under 80 MiB."""
    r = rig().start()
    huge = r.csms.send_fragmented(200 * 10 ** 6, 10 ** 6)
    r.csms.wait_closed(1, timeout=30)
    assert huge.wait(10) and huge.sent_bytes < 20 * 10 ** 6
    assert "more than 1048576 bytes (in fragments)" in wait_until(r.disconnects, 5)[0]
    r.csms.wait_connected(2, timeout=30)
    r.csms.wait_for("StatusNotification", lambda c: c.connection == 2, timeout=10)
    large = r.csms.send_large_frames(150, 900_000, stop_reading=True)
    assert large.wait(120) and large.sent == 150, large.error
    rss_mib = r.peak_rss_mib()
    assert rss_mib < 80, rss_mib
    r.csms.resume_reading()                               # every one of them was answered
    answered = lambda: {a.frame[1] for a in r.csms.answers if a.connection == 2}  # noqa
    assert wait_until(lambda: len(answered()) >= 150, 30), len(answered())
    assert answered() >= {f"big{i}" for i in range(150)}
    assert all(a.frame[:1] == [4] and a.frame[2] == "FormationViolation"
               for a in r.csms.answers if a.frame[1].startswith("big"))
    assert r.csms.connections[1].closed is None


def test_a_trickled_frame_loses_the_link_within_frame_timeout_s(rig):
    """A CALL written a byte every 2 s: dropped frame_timeout_s after its first byte (the
    writer looks at the deadline at least once a second), while the loop keeps turning."""
    r = rig(csms={"frame_timeout_s": 2}).start()
    op = r.csms.trickle(interval_s=2.0)
    opened_ms = r.unplug()
    assert opened_ms is not None and opened_ms < 100, r.loop()
    closed = r.csms.wait_closed(1, timeout=30)
    assert 2.0 <= closed.closed - op.started < 4.0
    assert "took more than 2 s to arrive" in wait_until(r.disconnects, 5)[0]
    r.csms.wait_connected(2, timeout=30)


def test_pings_and_the_pong_timeout_go_on_while_a_frame_trickles_in(rig):
    """frame_timeout_s is long, but a ping goes out while the trickle holds the reader,
    and no pong comes back (it would be queued behind the trickled frame): the pong
    timeout ends the link."""
    r = rig(csms={"frame_timeout_s": 60, "pong_timeout_s": 1},
            ocpp={"WebSocketPingInterval": 1}).start(charging=False)
    op = r.csms.trickle(interval_s=2.0)
    closed = r.csms.wait_closed(1, timeout=30)
    assert closed.closed - op.started < 5.0
    assert "no pong within 1 s" in wait_until(r.disconnects, 5)[0]


def test_a_503_retry_after_is_honoured_and_every_refusal_logged(rig):
    """Three handshakes refused with 503 and Retry-After: 1, where the back-off alone
    would retry within 0.05-0.2 s; the connection log shows the waits, and each refusal
    is in the log at ERROR (a summary line at most every link_failures_every_s)."""
    r = rig(log={"link_failures_every_s": 0.5}, reconnect_max_s=5)
    r.csms.refuse(3, 503, retry_after="1")
    r.start(charging=False)
    shakes = r.csms.handshakes
    assert [h.status for h in shakes[:4]] == [503, 503, 503, 101]
    gaps = [b.time - a.time for a, b in zip(shakes, shakes[1:4])]
    assert all(gap >= 1.0 for gap in gaps), gaps
    errors = re.findall(r"ERROR +chargepoint.transport: (.*HTTP 503.*)", _log(r))
    assert len(errors) >= 2, _log(r)
    assert "retry after 1 s" in errors[0]
    assert "connected after 3 failed attempts" in _log(r)


def test_the_contactor_opens_within_100_ms_after_a_huge_get_composite_schedule(rig):
    """16 recurring profiles within the advertised limits, then GetCompositeSchedule with
    duration 864,000,000 s: before, the loop computed for 86 s and the contactor opened
    82.8 s late. Now the answer is bounded, the worst turn of the loop stays under 100 ms
    and the unplug that follows opens the contactor within 100 ms."""
    r = rig().start()
    opened_ms, outcome = composite(r, quick=False)
    assert opened_ms is not None and opened_ms < 100, (opened_ms, r.loop())
    assert "answered after" in outcome and "link kept" in outcome, outcome
    assert r.loop()["worst_turn_ms"] < 100, r.loop()
    assert r.fw.proc.poll() is None
