"""Offline behaviour and the durable transaction queue, end to end (TC_032_2, TC_036-039).

The loopback CSMS is taken away (`csms.stop`) and brought back on the same port; the
firmware runs on a virtual clock, and the CSMS's clock follows it (plus a fixed offset
where a test needs one), so every timestamp on the wire can be checked exactly.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timezone

import pytest
from ocpp.exceptions import InternalError

from chargepoint.clock import VirtualClock
from chargepoint.csms.server import NO_RESPONSE
from tests.harness import wait_until

UTC = timezone.utc
CP = "CP-1"
REGISTER = "Energy.Active.Import.Register"


# -------------------------------------------------------------------- helpers
def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def records(csms, action=None, after=0):
    return csms.records(action, after=after)


def sns(csms, cid=1, after=0):
    return [r["status"] for r in csms.records("StatusNotification", after=after)
            if r["connectorId"] == cid]


def energy(mv) -> float:
    """The register value of a MeterValues.req (one meterValue, default measurand)."""
    (value,) = mv["meterValue"]
    (sample,) = [s for s in value["sampledValue"] if s.get("measurand", REGISTER) == REGISTER]
    return float(sample["value"])


def db(fw, sql, params=()):
    """Read the firmware's SQLite file from the test's own connection."""
    with closing(sqlite3.connect(fw.settings.storage.path)) as con:
        return con.execute(sql, params).fetchall()


def boot(csms, firmware, ocpp=None, clock=None, csms_offset=0.0, start=True, **overrides):
    """A firmware on a virtual clock whose CSMS tells the virtual time (+ `csms_offset`)."""
    clock = clock or VirtualClock()
    csms.now = lambda: datetime.fromtimestamp(clock.now() + csms_offset, UTC)
    fw = firmware({"ocpp": {"MeterValueSampleInterval": 60, **(ocpp or {})}, **overrides},
                  clock=clock, start=start)
    if start and csms.running:
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
        fw.settle()
    return fw


def link_down(csms, fw):
    """The network goes away (an abort, as a broken link looks to the charger)."""
    csms.stop(graceful=False)
    assert wait_until(lambda: not fw.station.connected, timeout=5)
    fw.settle()


def link_up(csms, fw) -> int:
    """The CSMS is back; returns the index of the first record received from now on."""
    mark = len(csms.received)
    csms.start()
    csms.wait_connected(CP, timeout=10)
    assert wait_until(lambda: fw.station.connected, timeout=5)
    return mark


def drained(fw, timeout=10.0) -> bool:
    """Every queued transaction message has been confirmed by the CSMS."""
    ok = wait_until(lambda: len(fw.station.outbox) == 0 and fw.station.connected
                    and fw.runtime.quiescent(), timeout=timeout)
    fw.settle()
    return ok


def undelivered_on_disk(fw, csms) -> list:
    """Outbox rows the CSMS has not confirmed. (The last confirmed row's deletion may be
    deferred to the next commit by design: at most that one message repeats after a crash.)"""
    confirmed = {r.unique_id for r in csms.received if r.reply is not None}
    return [row for row in db(fw, "SELECT action, unique_id FROM outbox")
            if row[1] not in confirmed]


def plug_and_tap(fw, tag="TAG1", cid=1):
    fw.sim.plug(cid)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()


def running(fw, cid=1):
    assert wait_until(lambda: fw.station.connectors[cid].tx is not None), "no transaction"
    fw.settle()
    return fw.station.connectors[cid].tx


def stopped(fw, cid=1):
    assert wait_until(lambda: fw.station.connectors[cid].tx is None), "transaction still open"
    fw.settle()


def start_online(csms, fw, tag="TAG1"):
    mark = len(csms.received)
    plug_and_tap(fw, tag)
    start = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    return start


def tx_messages(csms, after=0):
    return csms.records(("StartTransaction", "MeterValues", "StopTransaction"), after=after)


# -------------------------------------------------------------------- TC_036
def test_tc036_meter_values_queued_while_offline_go_first_in_order(csms, firmware):
    """Samples taken during a connection loss reach the CSMS in order, with the instants
    they were taken, before any newer sample; statuses are reported afresh, not replayed."""
    fw = boot(csms, firmware)
    start = start_online(csms, fw)
    t0 = fw.clock.now()
    fw.advance(60)
    online_mv = csms.wait_for("MeterValues")
    assert online_mv["meterValue"][0]["timestamp"] == iso(t0 + 60)

    link_down(csms, fw)
    fw.advance(4 * 60)                                      # four samples while offline
    queued = db(fw, "SELECT action, unique_id FROM outbox ORDER BY seq")
    assert [a for a, _ in queued] == ["MeterValues"] * 4
    fw.sim.ev_suspend(1)                                    # a status change while offline
    fw.settle()

    mark = link_up(csms, fw)
    assert drained(fw)
    fw.advance(60)                                          # a new sample after the backlog
    csms.wait_for("MeterValues", after=mark + 1, predicate=lambda r: r["meterValue"][0][
        "timestamp"] == iso(t0 + 6 * 60))
    fw.settle()

    mvs = records(csms, "MeterValues", after=mark)
    stamps = [epoch(m["meterValue"][0]["timestamp"]) for m in mvs]
    assert stamps == [t0 + 60 * k for k in range(2, 7)], stamps
    assert [m.unique_id for m in mvs[:4]] == [uid for _, uid in queued]
    assert all(m["transactionId"] == start.reply["transactionId"] for m in mvs)
    values = [energy(m) for m in [online_mv, *mvs]]
    assert values == sorted(values) and values[0] < values[3]
    # Statuses: the current one once after the reconnect, never what happened offline.
    assert sns(csms, 1, after=mark) == ["SuspendedEV"]
    assert sns(csms, 0, after=mark) == ["Available"]
    assert "Charging" not in sns(csms, 1, after=mark)
    assert not undelivered_on_disk(fw, csms)
    assert not csms.violations
