"""The meter poller: readings become events, failures become one fault and one clear."""
from __future__ import annotations

import queue
import time
from typing import Optional

import pytest

from hal.events import FaultCode, HardwareFault, MeterSampled
from hal.factory import BuildContext
from hal.interfaces import EnergyMeter, MeterReading, MeterUnavailable
from hal.meter_poller import MeterPoller
from hal.meters.modbus import ModbusMeterSettings
from modbus_sim import NORMAL, SILENT, Sdm630, SimBus


class ScriptedMeter(EnergyMeter):
    """A backend whose next outcomes are given: a reading, or an exception to raise."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.reads = 0

    def read(self) -> MeterReading:
        self.reads += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return MeterReading(time=float(self.reads), energy_import_wh=outcome)


def faults(events, connector_id: Optional[int] = None):
    return [(e.active, e.info) for e in events if isinstance(e, HardwareFault)
            and (connector_id is None or e.connector_id == connector_id)]


def samples(events, connector_id: int):
    return [e.reading.energy_import_wh for e in events
            if isinstance(e, MeterSampled) and e.connector_id == connector_id]


def test_readings_are_forwarded_per_connector():
    events: list = []
    poller = MeterPoller({1: ScriptedMeter(10.0), 2: ScriptedMeter(20.0)}, events.append, 10)
    poller.poll_once()
    poller.poll_once()
    assert events == [MeterSampled(1, MeterReading(1.0, 10.0)),
                      MeterSampled(2, MeterReading(1.0, 20.0)),
                      MeterSampled(1, MeterReading(2.0, 10.0)),
                      MeterSampled(2, MeterReading(2.0, 20.0))]


def test_fault_raised_once_and_cleared_once():
    down = MeterUnavailable("no answer within 0.5 s after 3 attempt(s) (meter 1 on /dev/x)")
    meter = ScriptedMeter(1.0, down, down, down, 2.0, 3.0)
    events: list = []
    poller = MeterPoller({1: meter}, events.append, 10)
    for _ in range(6):
        poller.poll_once()
    kinds = [(type(e).__name__, getattr(e, "active", None)) for e in events]
    assert kinds == [("MeterSampled", None), ("HardwareFault", True),
                     ("HardwareFault", False), ("MeterSampled", None), ("MeterSampled", None)]
    raised = events[1]
    assert raised.code is FaultCode.POWER_METER_FAILURE and raised.connector_id == 1
    assert raised.info.startswith("no answer within 0.5 s") and len(raised.info) <= 50
    assert events[2] == HardwareFault(1, FaultCode.POWER_METER_FAILURE, active=False)


def test_unexpected_exception_is_a_fault_and_polling_goes_on():
    broken = ScriptedMeter(RuntimeError("driver bug"), RuntimeError("driver bug"), 5.0)
    healthy = ScriptedMeter(7.0)
    events: list = []
    poller = MeterPoller({1: broken, 2: healthy}, events.append, 10)
    for _ in range(3):
        poller.poll_once()
    assert faults(events, 1) == [(True, "RuntimeError: driver bug"), (False, "")]
    assert samples(events, 1) == [5.0]
    assert samples(events, 2) == [7.0, 7.0, 7.0]
    assert faults(events, 2) == []


def test_a_failing_emit_does_not_stop_polling():
    calls: list = []

    def emit(event):
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("queue closed")

    poller = MeterPoller({1: ScriptedMeter(1.0)}, emit, 10)
    poller.poll_once()
    poller.poll_once()
    assert len(calls) == 2


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        MeterPoller({}, lambda e: None, 0)


def test_thread_polls_steadily_and_stops_promptly():
    events: queue.Queue = queue.Queue()
    meter = ScriptedMeter(MeterUnavailable("down"), 4.0)
    poller = MeterPoller({1: meter}, events.put, interval_s=0.02)
    poller.start()
    try:
        seen = [events.get(timeout=2) for _ in range(5)]
    finally:
        poller.close()
    assert seen[0] == HardwareFault(1, FaultCode.POWER_METER_FAILURE, True, "down")
    assert seen[1] == HardwareFault(1, FaultCode.POWER_METER_FAILURE, False)
    assert all(isinstance(e, MeterSampled) for e in seen[2:])


def test_close_does_not_wait_for_the_interval():
    events: queue.Queue = queue.Queue()
    poller = MeterPoller({1: ScriptedMeter(1.0)}, events.put, interval_s=60)
    poller.start()
    assert isinstance(events.get(timeout=2), MeterSampled)      # polls at once on start
    start = time.monotonic()
    poller.close()
    assert time.monotonic() - start < 1.0
    assert events.empty()


def test_a_silent_modbus_meter_faults_and_recovers(tmp_path):
    sim = SimBus(tmp_path)
    device = sim.add(Sdm630(1))
    ctx = BuildContext(connector_id=1, emit=lambda e: None)
    meter = ModbusMeterSettings(model="sdm630", port=sim.port, timeout_s=0.05,
                                retries=0).build(ctx)
    events: list = []
    poller = MeterPoller({1: meter}, events.append, 1.0)
    try:
        poller.poll_once()
        device.mode = SILENT
        poller.poll_once()
        poller.poll_once()
        device.mode = NORMAL
        poller.poll_once()
    finally:
        meter.close()
        sim.close()
    assert [type(e).__name__ for e in events] == [
        "MeterSampled", "HardwareFault", "HardwareFault", "MeterSampled"]
    assert [active for active, _ in faults(events)] == [True, False]
    assert events[1].info.startswith("no answer within 0.05 s")
    assert samples(events, 1) == [1234500.0, 1234500.0]
