"""A stepped system clock or a jumping CSMS clock, end to end.

Timers run on the local (monotonic) clock and OCPP timestamps on real time; a
transaction keeps the timeline it started on. So whatever either clock does during a
session: MeterValues keep their rate, Heartbeats and response timeouts keep firing, no
message is dated before its transaction's start, and stop − start is the real duration.
"""
from datetime import datetime, timezone

import pytest

from chargepoint.clock import VirtualClock
from tests.harness import wait_until

SAMPLE_S = 60
#: The CSMS's clock runs this far ahead of the virtual clock (plus any test's jump).
AHEAD_S = 60 * 86400.0


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def boot(csms, firmware, ocpp=None, shift=None):
    """Firmware on a virtual clock whose CSMS tells virtual time + AHEAD_S + shift[0]."""
    clock = VirtualClock()
    shift = shift if shift is not None else [0.0]
    csms.now = lambda: datetime.fromtimestamp(clock.now() + AHEAD_S + shift[0], timezone.utc)
    csms.heartbeat_interval = 300
    fw = firmware({"ocpp": {"MeterValueSampleInterval": SAMPLE_S,
                            "ClockAlignedDataInterval": 0, **(ocpp or {})}}, clock=clock)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw


def charge(fw, csms, tag="TAG1"):
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()
    start = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    fw.settle()
    return start


def stop(fw, csms, tag="TAG1"):
    fw.sim.tap(tag)
    fw.settle()
    return csms.wait_for("StopTransaction")


def transaction_times(csms) -> list[float]:
    """The timestamps of the (one) transaction's messages, in order of arrival."""
    out = []
    for rec in csms.received.snapshot():
        if rec.action == "StartTransaction" or rec.action == "StopTransaction":
            out.append(epoch(rec["timestamp"]))
        elif rec.action == "MeterValues" and "transactionId" in rec.payload:
            out += [epoch(v["timestamp"]) for v in rec["meterValue"]]
    return out


def assert_on_one_timeline(csms):
    """Messages in order of time, none before the start; transactionData likewise."""
    times = transaction_times(csms)
    assert times == sorted(times)
    start = epoch(csms.records("StartTransaction")[0]["timestamp"])
    assert min(times) == start
    for stop in csms.records("StopTransaction"):
        data = [epoch(v["timestamp"]) for v in stop.get("transactionData", [])]
        assert data == sorted(data) and all(start <= t <= times[-1] for t in data)


@pytest.mark.parametrize("step", [-3600.0, 86400.0], ids=["back-1h", "forward-1d"])
def test_a_stepped_system_clock_changes_nothing_in_a_session(csms, firmware, step):
    fw = boot(csms, firmware, {"StopTxnSampledData": "Energy.Active.Import.Register"})
    start = charge(fw, csms)
    t0 = fw.clock.now()
    fw.advance(150)                                           # samples at +60, +120
    fw.clock.step_wall(step)
    fw.runtime.wake()
    fw.settle()
    beats = len(csms.records("Heartbeat"))
    fw.advance(600)                                           # samples up to +720
    end = stop(fw, csms)
    elapsed = fw.clock.now() - t0

    samples = [r for r in csms.records("MeterValues") if "transactionId" in r.payload]
    assert len(samples) == 12                                 # one a minute, step or not
    assert len(csms.records("Heartbeat")) >= beats + 2        # every 300 s of local time
    assert epoch(end["timestamp"]) - epoch(start["timestamp"]) == pytest.approx(elapsed)
    assert_on_one_timeline(csms)
    assert [epoch(r["meterValue"][0]["timestamp"]) - epoch(start["timestamp"])
            for r in samples] == pytest.approx([SAMPLE_S * k for k in range(1, 13)])
    assert not csms.violations


def test_the_response_timeout_fires_after_the_system_clock_stepped_back(csms, firmware):
    """A MeterValues the CSMS never answers is timed out after response_timeout_s of
    local time and sent again, though the system clock went back an hour."""
    fw = boot(csms, firmware)
    charge(fw, csms)
    fw.clock.step_wall(-3600)
    csms.respond = {"MeterValues": False}
    fw.advance(SAMPLE_S)
    first = csms.wait_for("MeterValues")
    fw.advance(5)                                              # response_timeout_s
    csms.respond = True
    fw.advance(60)                                             # TransactionMessageRetryInterval
    assert wait_until(lambda: [r.unique_id for r in csms.records("MeterValues")].count(
        first.unique_id) == 2)


@pytest.mark.parametrize("jump", [86400.0, -1800.0], ids=["forward-1d", "back-30min"])
def test_a_jumping_csms_clock_keeps_each_transaction_on_its_timeline(csms, firmware, jump,
                                                                     caplog):
    shift = [0.0]
    fw = boot(csms, firmware, {"StopTxnSampledData": "Energy.Active.Import.Register"},
              shift=shift)
    start = charge(fw, csms)
    t0 = fw.clock.now()
    fw.advance(150)
    shift[0] = jump                                   # the CSMS's next currentTime jumps
    fw.advance(300)                                   # a Heartbeat brings it
    assert fw.station.services.clock.csms_offset == pytest.approx(AHEAD_S + jump)
    assert f"CSMS clock differs by {jump:+.0f} s" in caplog.text
    fw.advance(200)
    end = stop(fw, csms)
    assert epoch(end["timestamp"]) - epoch(start["timestamp"]) == pytest.approx(
        fw.clock.now() - t0)
    assert_on_one_timeline(csms)
    # What is not part of the transaction follows the CSMS's new time.
    fw.sim.unplug(1)
    fw.settle()
    available = csms.wait_for("StatusNotification", lambda r: r["status"] == "Available",
                              after=len(csms.received) - 3)
    assert epoch(available["timestamp"]) == pytest.approx(fw.clock.now() + AHEAD_S + jump,
                                                          abs=0.01)


@pytest.mark.parametrize("told", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])
def test_an_absurd_csms_time_is_refused_and_transactions_still_start(csms, firmware, told,
                                                                     caplog):
    fw = boot(csms, firmware)
    sane = fw.station.services.clock.csms_offset
    csms.now = lambda: datetime.fromisoformat(told.replace("Z", "+00:00"))
    fw.advance(300)                                            # a Heartbeat tells it
    assert csms.records("Heartbeat")
    assert fw.station.services.clock.csms_offset == sane
    assert "not believed" in caplog.text
    start = charge(fw, csms)
    assert epoch(start["timestamp"]) == pytest.approx(fw.clock.now() + AHEAD_S, abs=0.01)
    fw.advance(SAMPLE_S)
    assert csms.wait_for("MeterValues")
    assert not csms.violations


def test_the_real_process_keeps_sampling_across_a_system_clock_step(csms, tmp_path):
    """The real firmware on the wall clock, its system clock stepped back an hour through
    the simulated charger mid-session: MeterValues keep coming every second, dated after
    the start and in order."""
    from bench._common import FirmwareProcess

    proc = FirmwareProcess(tmp_path, csms.url, ocpp={"MeterValueSampleInterval": 1,
                                                     "ClockAlignedDataInterval": 0})
    proc.start()
    try:
        start = proc.charge(csms)
        csms.wait_for("MeterValues", timeout=10)
        proc.sim("clock-step", "-3600")
        mark = len(csms.received)
        assert wait_until(lambda: len(csms.records("MeterValues", after=mark)) >= 3,
                          timeout=10), proc.tail()
        assert "system clock stepped -3600" in proc.log.read_text()
        proc.sim("tap", "TAG1")
        end = csms.wait_for("StopTransaction", timeout=10)
    finally:
        assert proc.stop() == 0
    assert_on_one_timeline(csms)
    assert epoch(end["timestamp"]) > epoch(start["timestamp"]) + 3


def test_a_power_loss_stop_is_dated_on_its_transactions_timeline(csms, firmware):
    """After a power cut the charger restarts on its own clock (here 60 days behind the
    CSMS) before the CSMS tells the time: the PowerLoss StopTransaction is still dated
    after the start and at the last sample that reached the disk, never before them."""
    fw = boot(csms, firmware)
    start = charge(fw, csms)
    fw.advance(2 * SAMPLE_S + 10)
    last = csms.wait_for("MeterValues", lambda r: len(csms.records("MeterValues")) >= 2)
    fw.settle()
    fw.cut_power()
    csms.stop()
    fw.start()                                   # nobody to tell it the time yet
    fw.settle()
    csms.start()
    end = csms.wait_for("StopTransaction", timeout=10)
    assert end["reason"] == "PowerLoss"
    assert end["timestamp"] == csms.records("MeterValues")[-1]["meterValue"][0]["timestamp"]
    assert epoch(end["timestamp"]) == epoch(start["timestamp"]) + 2 * SAMPLE_S
    assert last
    assert_on_one_timeline(csms)
