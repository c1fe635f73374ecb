"""Offline behaviour and the durable transaction queue, end to end (TC_032_2, TC_036-039).

The loopback CSMS is taken away (`csms.stop`) and brought back on the same port; the
firmware runs on a virtual clock, and the CSMS's clock follows it (plus a fixed offset
where a test needs one), so every timestamp on the wire can be checked exactly.
"""
from __future__ import annotations

import json
import logging
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
    assert wait_until(lambda: not fw.station.rpc.connected, timeout=5)
    fw.settle()


def link_up(csms, fw) -> int:
    """The CSMS is back; returns the index of the first record received from now on."""
    mark = len(csms.received)
    csms.start()
    csms.wait_connected(CP, timeout=10)
    assert wait_until(lambda: fw.station.rpc.connected, timeout=5)
    return mark


def drained(fw, timeout=10.0) -> bool:
    """Every queued transaction message has been confirmed by the CSMS."""
    ok = wait_until(lambda: len(fw.station.services.outbox) == 0 and fw.station.rpc.connected
                    and fw.runtime.quiescent(), timeout=timeout)
    fw.settle()
    return ok


def undelivered_on_disk(fw, csms) -> list:
    """Outbox rows the CSMS has not confirmed. (The last confirmed row's deletion may be
    deferred to the next commit by design: at most that one message repeats after a crash.)"""
    confirmed = {r.unique_id for r in csms.received if r.reply is not None}
    return [row for row in db(fw, "SELECT action, unique_id FROM outbox")
            if row[1] not in confirmed]


def fresh_reading(fw, cid=1) -> float:
    """Have the meter poller read now (it polls on real time, the test runs on virtual)."""
    fw.runtime.meter_poller.request()
    assert wait_until(lambda: fw.station.services.connectors[cid].reading.time >= fw.clock.now())
    fw.settle()
    return fw.station.services.connectors[cid].reading.energy_import_wh


def plug_and_tap(fw, tag="TAG1", cid=1):
    fw.sim.plug(cid)
    fw.settle()
    fw.sim.tap(tag)
    fw.settle()


def running(fw, cid=1):
    assert wait_until(lambda: fw.station.services.connectors[cid].tx is not None), "no transaction"
    fw.settle()
    return fw.station.services.connectors[cid].tx


def stopped(fw, cid=1):
    assert wait_until(lambda: fw.station.services.connectors[cid].tx is None), "transaction still open"
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


# -------------------------------------------------------------------- TC_037 - TC_039
def _cache_tag(csms, fw, tag):
    """Put `tag` in the authorization cache the way it gets there: an Authorize.conf."""
    fw.sim.tap(tag)                       # no EV: it is authorized, then waits for a plug
    csms.wait_for("Authorize", lambda r: r["idTag"] == tag)
    fw.settle()
    fw.advance(fw.runtime.keys.int("ConnectionTimeOut"))   # let the wait for a plug lapse
    assert fw.station.services.plug_wait.pending is None


@pytest.mark.parametrize("how", ["cache", "unknown-id"])
def test_tc037_1_offline_start_with_a_valid_id(csms, firmware, how):
    """An id valid offline (cached, or any id with AllowOfflineTxForUnknownId) starts
    charging at once; StartTransaction with its original time goes out on reconnect."""
    ocpp = {"AllowOfflineTxForUnknownId": how == "unknown-id"}
    fw = boot(csms, firmware, ocpp)
    if how == "cache":
        _cache_tag(csms, fw, "TAG1")
    link_down(csms, fw)
    plug_and_tap(fw, "TAG1")
    tx = running(fw)
    started_at = fw.clock.now()
    assert fw.sim.contactor_commanded(1), "charging must begin while offline"
    assert db(fw, "SELECT action FROM outbox") == [("StartTransaction",)]
    fw.advance(30)

    csms.start_transaction_response = {"transactionId": 77, "idTagInfo": {"status": "Accepted"}}
    mark = link_up(csms, fw)
    assert drained(fw)
    start = csms.wait_for("StartTransaction", after=mark)
    assert start["idTag"] == "TAG1" and start["connectorId"] == 1
    assert start["timestamp"] == iso(started_at)
    assert "Authorize" not in [r.action for r in records(csms, after=mark)]
    assert sns(csms, 1, after=mark) == ["Charging"]
    assert tx.transaction_id == 77
    assert db(fw, "SELECT transaction_id FROM transactions") == [(77,)]
    assert fw.sim.contactor_commanded(1)
    assert not csms.violations


def test_tc037_1_offline_start_refused_for_an_unknown_id(csms, firmware):
    """Counter-check: without AllowOfflineTxForUnknownId an unknown id starts nothing."""
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": False})
    link_down(csms, fw)
    plug_and_tap(fw, "STRANGER")
    fw.advance(5)
    assert fw.station.services.connectors[1].tx is None
    assert not fw.sim.contactor_commanded(1)
    assert not db(fw, "SELECT * FROM outbox")


def _offline_start_answered_invalid(csms, firmware, stop_on_invalid):
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "StopTransactionOnInvalidId": stop_on_invalid,
                               "MaxEnergyOnInvalidId": 0})
    link_down(csms, fw)
    plug_and_tap(fw, "BADTAG")
    running(fw)
    fw.advance(30)
    assert fw.sim.contactor_commanded(1)
    csms.start_transaction_response = {"transactionId": 5, "idTagInfo": {"status": "Invalid"}}
    mark = link_up(csms, fw)
    csms.wait_for("StartTransaction", after=mark)
    assert drained(fw)
    return fw, mark


def test_tc037_2_offline_start_invalid_id_keeps_transaction_suspended(csms, firmware):
    """StopTransactionOnInvalidId=false: the transaction stays open but no energy flows."""
    fw, mark = _offline_start_answered_invalid(csms, firmware, False)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "SuspendedEVSE", after=mark)
    fw.settle()
    assert sns(csms, 1, after=mark) == ["Charging", "SuspendedEVSE"]
    assert not fw.sim.contactor_commanded(1)
    assert fw.station.services.connectors[1].tx is not None
    assert "StopTransaction" not in [r.action for r in records(csms, after=mark)]
    fw.advance(120)                        # still open, still no energy
    assert fw.station.services.connectors[1].tx is not None and not fw.sim.contactor_commanded(1)
    # The CSMS's verdict is cached: the same id is refused offline from now on.
    (info,) = db(fw, "SELECT info FROM auth_cache WHERE id_tag='BADTAG'")[0]
    assert json.loads(info)["status"] == "Invalid"
    assert not csms.violations


def test_tc037_3_offline_start_invalid_id_stops_deauthorized(csms, firmware):
    """StopTransactionOnInvalidId=true: StopTransaction reason DeAuthorized, Finishing."""
    fw, mark = _offline_start_answered_invalid(csms, firmware, True)
    stop = csms.wait_for("StopTransaction", after=mark)
    assert stop["reason"] == "DeAuthorized" and stop["transactionId"] == 5
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Finishing", after=mark)
    fw.settle()
    assert sns(csms, 1, after=mark) == ["Charging", "Finishing"]
    assert not fw.sim.contactor_commanded(1)
    assert fw.station.services.connectors[1].tx is None
    assert not db(fw, "SELECT * FROM transactions")
    assert not csms.violations


def test_tc038_offline_stop(csms, firmware):
    """A transaction stopped by its id while offline: StopTransaction (Local, with the
    transactionId the CSMS gave online) goes out on reconnect; the connector is Finishing."""
    fw = boot(csms, firmware)
    start = start_online(csms, fw)
    tid = start.reply["transactionId"]
    link_down(csms, fw)
    fw.advance(90)
    fw.sim.tap("TAG1")
    stopped(fw)
    stopped_at = fw.clock.now()
    assert not fw.sim.contactor_commanded(1)
    assert [a for (a,) in db(fw, "SELECT action FROM outbox ORDER BY seq")] == \
        ["MeterValues", "StopTransaction"]

    mark = link_up(csms, fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["MeterValues", "StopTransaction"]
    stop = msgs[-1]
    assert stop["reason"] == "Local" and stop["idTag"] == "TAG1"
    assert stop["transactionId"] == tid and msgs[0]["transactionId"] == tid
    assert stop["timestamp"] == iso(stopped_at)
    assert stop["meterStop"] >= energy(msgs[0]) > start["meterStart"]
    assert sns(csms, 1, after=mark) == ["Finishing"]
    assert not db(fw, "SELECT * FROM transactions")
    assert not csms.violations


def test_tc039_whole_transaction_offline(csms, firmware):
    """Start, samples and stop all offline: delivered in order after the reconnect, the
    transactionId from StartTransaction.conf filled into every later message."""
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True})
    link_down(csms, fw)
    plug_and_tap(fw, "TAG9")
    running(fw)
    t0 = fw.clock.now()
    fw.advance(150)                                          # samples at +60 and +120
    fw.sim.tap("TAG9")
    stopped(fw)
    fw.sim.unplug(1)
    fw.settle()
    on_disk = db(fw, "SELECT action, unique_id, payload FROM outbox ORDER BY seq")
    assert [a for a, _, _ in on_disk] == ["StartTransaction", "MeterValues", "MeterValues",
                                         "StopTransaction"]
    assert all("transactionId" not in p for _, _, p in on_disk), "no made-up transactionId"

    csms.start_transaction_response = {"transactionId": 4242,
                                       "idTagInfo": {"status": "Accepted"}}
    mark = link_up(csms, fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [(m.action, m.unique_id) for m in msgs] == [(a, u) for a, u, _ in on_disk]
    start, mv1, mv2, stop = msgs
    assert start["timestamp"] == iso(t0) and "transactionId" not in start.payload
    assert [m["transactionId"] for m in (mv1, mv2, stop)] == [4242] * 3
    assert [m["meterValue"][0]["timestamp"] for m in (mv1, mv2)] == [iso(t0 + 60),
                                                                     iso(t0 + 120)]
    assert stop["timestamp"] == iso(t0 + 150) and stop["reason"] == "Local"
    assert start["meterStart"] < energy(mv1) < energy(mv2) <= stop["meterStop"]
    assert sns(csms, 1, after=mark) == ["Available"]
    assert not db(fw, "SELECT * FROM transactions")
    assert not fw.station.services.transactions.ledger.by_local
    assert not csms.violations


# -------------------------------------------------------------------- power cut, reboot
def test_tc032_2_power_cut_stops_the_transaction_with_power_loss(csms, firmware):
    """After a power cut the open transaction is stopped with reason PowerLoss at the last
    reading that reached the disk; messages queued before the cut are all delivered."""
    fw = boot(csms, firmware)
    start = start_online(csms, fw)
    tid = start.reply["transactionId"]
    fw.advance(60)
    csms.wait_for("MeterValues")
    link_down(csms, fw)
    fw.advance(60)                                           # one sample queued offline
    fw.advance(30)                                           # energy the disk never saw
    assert fw.sim.read_meter(1).energy_import_wh > \
        float(db(fw, "SELECT last_wh FROM transactions")[0][0])
    queued = db(fw, "SELECT action, unique_id FROM outbox ORDER BY seq")
    assert [a for a, _ in queued] == ["MeterValues"]
    fw.cut_power()

    fw.start()                                               # boots while the CSMS is away
    fw.settle()
    fw.sim.plug(1)                                           # the driver comes back
    fw.settle()
    mark = link_up(csms, fw)
    assert drained(fw)
    after = records(csms, after=mark)
    assert after[0].action == "BootNotification"
    first_tx = next(i for i, r in enumerate(after) if r.action in ("MeterValues",
                                                                  "StopTransaction"))
    # Statuses of every connector come with the boot (OCTT: 1 is Preparing, Finishing or
    # Charging; the EV showed up after the boot here, so Preparing).
    boot_sns = {r["connectorId"]: r["status"] for r in after[:first_tx]
                if r.action == "StatusNotification"}
    assert boot_sns == {0: "Available", 1: "Preparing"}
    msgs = tx_messages(csms, after=mark)
    assert [(m.action, m.unique_id) for m in msgs] == queued + [
        ("StopTransaction", msgs[-1].unique_id)]
    mv, stop = msgs
    assert stop["reason"] == "PowerLoss" and stop["transactionId"] == tid
    assert stop["meterStop"] == round(energy(mv))
    assert stop["timestamp"] == mv["meterValue"][0]["timestamp"]
    assert "StartTransaction" not in [m.action for m in msgs]
    assert fw.station.services.connectors[1].tx is None and not fw.sim.contactor_commanded(1)
    assert not db(fw, "SELECT * FROM transactions")
    assert not csms.violations


def test_clean_restart_during_a_transaction_stops_it_with_reason_reboot(csms, firmware):
    """A clean stop ends the transaction itself (Reboot), so no PowerLoss stop follows."""
    fw = boot(csms, firmware)
    start = start_online(csms, fw)
    fw.advance(90)
    mv = csms.wait_for("MeterValues")
    stopped_at = fw.clock.now()
    latest = fresh_reading(fw)
    mark = len(csms.received)
    fw.restart()
    csms.wait_for("BootNotification", after=mark, timeout=10)
    stop = csms.wait_for("StopTransaction", after=mark)
    assert drained(fw)
    assert stop["reason"] == "Reboot"
    assert stop["transactionId"] == start.reply["transactionId"]
    assert stop["timestamp"] == iso(stopped_at)
    assert stop["meterStop"] == round(latest) > energy(mv)
    assert [r.action for r in tx_messages(csms, after=mark)] == ["StopTransaction"]
    assert not db(fw, "SELECT * FROM transactions")
    assert not csms.violations


# -------------------------------------------------------------------- retries
class Script:
    """A CSMS handler that plays given answers in turn, then `then` (default: accept)."""

    def __init__(self, *answers, then=None):
        self.answers = list(answers)
        self.then = then
        self.calls = 0

    def __call__(self, cp_id, payload):
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else self.then
        if isinstance(answer, Exception):
            raise answer
        return answer


def jump(fw, seconds):
    """Move virtual time while a CALL of ours is left unanswered on purpose (`advance`
    would wait for that answer in each settle); the caller waits for the effect."""
    fw.clock.advance(seconds)
    fw.runtime.wake()


def outbox_row(fw, action):
    return db(fw, "SELECT unique_id, attempts, next_attempt FROM outbox WHERE action=?",
              (action,))


def dead(fw):
    return db(fw, "SELECT action, unique_id, attempts, reason FROM outbox_dead ORDER BY seq")


def test_callerror_is_retried_after_interval_times_attempts_with_the_same_id(csms, firmware):
    """A CALLERROR is a failed attempt: the retry waits RetryInterval x attempts, keeps the
    unique id, and nothing behind it overtakes it."""
    csms.handlers["StartTransaction"] = Script(
        InternalError(description="database busy"), InternalError(description="again"),
        then={"transactionId": 900, "idTagInfo": {"status": "Accepted"}})
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 3,
                               "TransactionMessageRetryInterval": 30,
                               "MeterValueSampleInterval": 20})
    plug_and_tap(fw)
    first = csms.wait_for("StartTransaction")
    t0 = fw.clock.now()
    fw.settle()
    assert first.error and first.error[0] == "InternalError"
    assert outbox_row(fw, "StartTransaction") == [(first.unique_id, 1, t0 + 30)]
    assert fw.sim.contactor_commanded(1), "charging goes on while the CSMS is unsure"

    fw.advance(29)
    assert len(records(csms, "StartTransaction")) == 1
    assert not records(csms, "MeterValues"), "a later message overtook the StartTransaction"
    fw.advance(1)
    second = csms.wait_for("StartTransaction", after=first.index + 1)
    fw.settle()
    assert second.unique_id == first.unique_id and second.payload == first.payload
    assert outbox_row(fw, "StartTransaction") == [(first.unique_id, 2, t0 + 30 + 60)]

    fw.advance(59)
    assert len(records(csms, "StartTransaction")) == 2
    fw.advance(1)
    assert drained(fw)
    starts = records(csms, "StartTransaction")
    assert len(starts) == 3 and {s.unique_id for s in starts} == {first.unique_id}
    assert starts[-1].reply["transactionId"] == 900
    msgs = tx_messages(csms)
    assert [m.action for m in msgs] == ["StartTransaction"] * 3 + ["MeterValues"] * 4
    assert [m["meterValue"][0]["timestamp"] for m in msgs[3:]] == [
        iso(t0 + 20 * k) for k in range(1, 5)]
    assert all(m["transactionId"] == 900 for m in msgs[3:])
    assert not dead(fw)


def test_start_given_up_after_max_attempts_takes_its_messages_to_outbox_dead(csms, firmware):
    """After TransactionMessageAttempts failures the StartTransaction, and the messages of
    its transaction that could never carry a transactionId, move to outbox_dead; the next
    transaction flows normally."""
    csms.handlers["StartTransaction"] = lambda cp_id, p: (
        (_ for _ in ()).throw(InternalError(description="no")) if p["idTag"] == "DOOMED"
        else {"transactionId": 31, "idTagInfo": {"status": "Accepted"}})
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 30,
                               "MeterValueSampleInterval": 20})
    plug_and_tap(fw, "DOOMED")
    first = csms.wait_for("StartTransaction")
    fw.advance(25)                                           # a sample queues behind it
    fw.sim.tap("DOOMED")                                     # stopped before the retry
    stopped(fw)
    fw.sim.unplug(1)
    fw.settle()
    fw.advance(5)                                            # the retry fails: give up
    assert len(records(csms, "StartTransaction")) == 2
    buried = dead(fw)
    assert [(a, n) for a, _, n, _ in buried] == [("StartTransaction", 2), ("MeterValues", 0),
                                                ("StopTransaction", 0)]
    assert buried[0][1] == first.unique_id and buried[0][3] == "InternalError"
    assert all(first.unique_id in reason for _, _, _, reason in buried[1:])
    assert not db(fw, "SELECT * FROM outbox")
    assert [r.action for r in tx_messages(csms)] == ["StartTransaction"] * 2

    mark = len(csms.received)
    start_online(csms, fw, "GOOD")
    fw.advance(20)
    fw.sim.tap("GOOD")
    stopped(fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["StartTransaction", "MeterValues", "StopTransaction"]
    assert msgs[0]["idTag"] == "GOOD"
    assert msgs[1]["transactionId"] == msgs[2]["transactionId"] == 31
    assert len(dead(fw)) == 3
    assert not csms.violations


def test_start_given_up_while_its_transaction_goes_on_blocks_nothing(csms, firmware):
    """The StartTransaction of a running transaction is given up; its StopTransaction, which
    can never carry a transactionId, follows it to outbox_dead (an outbox sequence number
    reused after the queue ran empty must not clash there) and the next transaction flows."""
    csms.handlers["StartTransaction"] = Script(InternalError(description="no"),
                                               then={"transactionId": 8,
                                                     "idTagInfo": {"status": "Accepted"}})
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 1, "MeterValueSampleInterval": 20})
    plug_and_tap(fw, "LOST")
    first = csms.wait_for("StartTransaction")
    fw.settle()
    assert [(a, u) for a, u, _, _ in dead(fw)] == [("StartTransaction", first.unique_id)]
    fw.advance(45)                                           # the transaction goes on
    fw.sim.tap("LOST")
    stopped(fw)
    fw.sim.unplug(1)
    fw.settle()
    assert [(a, n, r) for a, _, n, r in dead(fw)] == [
        ("StartTransaction", 1, "InternalError"), ("StopTransaction", 1, "no transactionId")]
    assert not db(fw, "SELECT * FROM outbox") and not len(fw.station.services.outbox)
    sent = tx_messages(csms)
    assert "StopTransaction" not in [m.action for m in sent]
    assert all("transactionId" not in m.payload for m in sent), "a made-up transactionId"

    mark = len(csms.received)
    start_online(csms, fw, "NEXT")
    fw.sim.tap("NEXT")
    stopped(fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["StartTransaction", "StopTransaction"]
    assert msgs[1]["transactionId"] == 8
    assert not csms.violations


@pytest.mark.parametrize("stop", ["queued behind it", "made after it was given up"])
def test_a_stop_whose_start_was_given_up_is_kept_and_logged_beside_it(csms, firmware, caplog,
                                                                      stop):
    """A StopTransaction can never carry the transactionId the CSMS never gave: once its
    StartTransaction is given up, it is not sent but kept in outbox_dead with it, and an
    ERROR line names both unique ids, so an operator can reconcile the session's billing."""
    caplog.set_level(logging.INFO)
    csms.handlers["StartTransaction"] = Script(then=InternalError(description="no"))
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 30})
    plug_and_tap(fw, "LOST")
    first = csms.wait_for("StartTransaction")
    fw.settle()
    if stop == "queued behind it":
        fw.sim.tap("LOST")
        stopped(fw)
    fw.advance(30)                                           # the retry fails: given up
    if stop == "made after it was given up":
        fw.sim.tap("LOST")
        stopped(fw)
    buried = dead(fw)
    assert [a for a, _, _, _ in buried] == ["StartTransaction", "StopTransaction"]
    start_uid, stop_uid = buried[0][1], buried[1][1]
    assert start_uid == first.unique_id
    assert "StopTransaction" not in [r.action for r in csms.received]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith("chargepoint.") and not r.name.startswith("chargepoint.csms")]
    assert [m for m in errors if start_uid in m and stop_uid in m], errors


def test_meter_values_given_up_go_alone_to_outbox_dead(csms, firmware):
    """Only a StartTransaction takes later messages with it: a MeterValues given up is
    buried alone and the rest of its transaction is delivered."""
    csms.handlers["MeterValues"] = Script(InternalError(description="full"),
                                          InternalError(description="full"), then={})
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 5,
                               "MeterValueSampleInterval": 20})
    start = start_online(csms, fw)
    t0 = fw.clock.now()
    fw.advance(20)
    doomed = csms.wait_for("MeterValues")
    fw.advance(10)                                           # retry at +25 fails: given up
    assert [(a, u, n) for a, u, n, _ in dead(fw)] == [("MeterValues", doomed.unique_id, 2)]
    fw.advance(10)
    fw.sim.tap("TAG1")
    stopped(fw)
    assert drained(fw)
    msgs = tx_messages(csms)
    assert [m.action for m in msgs] == ["StartTransaction", "MeterValues", "MeterValues",
                                        "MeterValues", "StopTransaction"]
    assert msgs[1].unique_id == msgs[2].unique_id == doomed.unique_id
    assert msgs[3]["meterValue"][0]["timestamp"] == iso(t0 + 40)
    assert msgs[4]["transactionId"] == start.reply["transactionId"]
    assert len(dead(fw)) == 1
    assert not csms.violations


def test_timeout_counts_as_an_attempt(csms, firmware):
    """No answer within the response timeout (link up) is a failed attempt like a
    CALLERROR: retried with the same id, and given up after the last attempt."""
    csms.handlers["StartTransaction"] = lambda cp_id, p: NO_RESPONSE
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 10})
    assert fw.settings.csms.response_timeout_s == 5
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap("TAG1")
    first = csms.wait_for("StartTransaction")
    t0 = fw.clock.now()
    assert wait_until(lambda: fw.station.services.timers.when("rpc-timeout") == t0 + 5)
    assert outbox_row(fw, "StartTransaction") == [(first.unique_id, 0, 0.0)]
    jump(fw, 5)                                              # the timeout
    assert wait_until(lambda: outbox_row(fw, "StartTransaction") == [
        (first.unique_id, 1, t0 + 5 + 10)])
    fw.advance(9)
    assert len(records(csms, "StartTransaction")) == 1
    jump(fw, 1)
    second = csms.wait_for("StartTransaction", after=first.index + 1)
    assert second.unique_id == first.unique_id
    jump(fw, 5)                                              # second timeout: the last one
    assert wait_until(lambda: dead(fw) == [("StartTransaction", first.unique_id, 2,
                                            "timeout")])
    assert fw.station.rpc.connected, "a timeout must not be mistaken for a lost link"


@pytest.mark.parametrize("action", ["StartTransaction", "MeterValues", "StopTransaction"])
def test_message_in_flight_when_the_link_drops_is_resent_with_the_same_id(
        csms, firmware, action):
    """A lost link is not an attempt (one attempt allowed here, so counting it would
    discard the message); after the reconnect the same unique id goes out again."""
    script = csms.handlers[action] = Script(NO_RESPONSE, then=None)
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 1})
    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap("TAG1")
    if action != "StartTransaction":
        csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
        fw.settle()
        fw.advance(59)
        jump(fw, 1)                                          # the sample
    if action == "StopTransaction":
        csms.wait_for("MeterValues")
        fw.settle()
        fw.sim.tap("TAG1")
    lost = csms.wait_for(action)
    assert wait_until(lambda: script.calls == 1)            # the CSMS chose not to answer
    assert fw.station.busy(), "the message should await its answer"
    link_down(csms, fw)
    assert outbox_row(fw, action)[0][:2] == (lost.unique_id, 0)
    assert not dead(fw)

    mark = link_up(csms, fw)
    again = csms.wait_for(action, after=mark)
    assert drained(fw)
    assert again.unique_id == lost.unique_id and again.payload == lost.payload
    assert again.reply is not None
    assert not dead(fw) and not undelivered_on_disk(fw, csms)
    assert not csms.violations


def test_retry_state_survives_a_power_cut(csms, firmware):
    """Attempts and the next attempt's time are in the row: after a power cut the retry
    neither comes early nor starts counting again."""
    csms.handlers["StartTransaction"] = Script(then=InternalError(description="no"))
    fw = boot(csms, firmware, {"TransactionMessageAttempts": 2,
                               "TransactionMessageRetryInterval": 60})
    plug_and_tap(fw)
    first = csms.wait_for("StartTransaction")
    t0 = fw.clock.now()
    fw.advance(10)
    assert outbox_row(fw, "StartTransaction") == [(first.unique_id, 1, t0 + 60)]
    fw.cut_power()

    mark = len(csms.received)
    fw.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark)
    fw.settle()
    assert len(records(csms, "StartTransaction")) == 1, "retried before its time"
    assert outbox_row(fw, "StartTransaction") == [(first.unique_id, 1, t0 + 60)]
    fw.advance(t0 + 59 - fw.clock.now())
    assert len(records(csms, "StartTransaction")) == 1, "retried before its time"
    fw.advance(1)
    starts = records(csms, "StartTransaction")
    assert [s.unique_id for s in starts] == [first.unique_id] * 2
    # The second failure was the last allowed: the count went on from before the cut.
    assert [(a, u, n) for a, u, n, _ in dead(fw)] == [
        ("StartTransaction", first.unique_id, 2),
        ("StopTransaction", dead(fw)[1][1], 0)]            # the PowerLoss stop went with it
    assert json.loads(db(fw, "SELECT payload FROM outbox_dead WHERE action='StopTransaction'")
                      [0][0])["reason"] == "PowerLoss"
    assert not db(fw, "SELECT * FROM outbox")
    assert "StopTransaction" not in [r.action for r in csms.received]


def test_message_in_flight_at_a_power_cut_is_resent_with_the_same_id(csms, firmware):
    """A message sent but not confirmed when the power went is sent again after the boot,
    with the same unique id, before the PowerLoss stop."""
    script = csms.handlers["MeterValues"] = Script(NO_RESPONSE, then=None)
    fw = boot(csms, firmware)
    start = start_online(csms, fw)
    fw.advance(59)
    jump(fw, 1)
    lost = csms.wait_for("MeterValues")
    assert wait_until(lambda: script.calls == 1)
    fw.cut_power()

    mark = len(csms.received)
    fw.start()
    stop = csms.wait_for("StopTransaction", after=mark, timeout=10)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [(m.action, m.unique_id) for m in msgs] == [("MeterValues", lost.unique_id),
                                                      ("StopTransaction", stop.unique_id)]
    assert msgs[0].payload == lost.payload
    assert stop["reason"] == "PowerLoss" and stop["meterStop"] == round(energy(lost))
    assert stop["transactionId"] == start.reply["transactionId"]
    assert not csms.violations


# -------------------------------------------------------------------- unknown clock
CSMS_EPOCH = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def test_timestamps_made_before_the_clock_is_known_are_corrected_on_sending(csms, firmware):
    """A controller without RTC boots near 1970. A transaction run before the CSMS told the
    time is delivered with the CSMS's clock applied to every timestamp, never a 1970 one."""
    boot_time = 1000.0
    clock = VirtualClock(start=boot_time)
    offset = CSMS_EPOCH - boot_time                # CSMS time = local time + offset
    csms.stop()
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "StopTxnSampledData": REGISTER},
              clock=clock, csms_offset=offset)
    fw.settle()
    assert not fw.station.services.clock.known
    plug_and_tap(fw, "EARLY")
    running(fw)
    t0 = clock.now()
    fw.advance(130)                                          # samples at +60 and +120
    fw.sim.tap("EARLY")
    stopped(fw)
    fw.sim.unplug(1)
    fw.settle()
    fw.advance(20)
    stored = [p for (p,) in db(fw, "SELECT payload FROM outbox ORDER BY seq")]
    assert all("1970" not in p for p in stored)
    assert json.loads(stored[0])["timestamp"] == f"$local:{t0!r}"

    mark = link_up(csms, fw)
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["StartTransaction", "MeterValues", "MeterValues",
                                        "StopTransaction"]
    start, mv1, mv2, stop = msgs
    assert start["timestamp"] == iso(t0 + offset)
    assert [m["meterValue"][0]["timestamp"] for m in (mv1, mv2)] == [
        iso(t0 + offset + 60), iso(t0 + offset + 120)]
    assert stop["timestamp"] == iso(t0 + offset + 130)
    data_stamps = [v["timestamp"] for v in stop["transactionData"]]
    assert data_stamps == [iso(t0 + offset), iso(t0 + offset + 60), iso(t0 + offset + 120),
                           iso(t0 + offset + 130)]
    for record in records(csms, after=0):
        assert "1970" not in json.dumps(record.payload), record
        assert "$local" not in json.dumps(record.payload), record
    assert not csms.violations


def test_system_clock_set_while_offline_moves_the_queued_timestamps(csms, firmware):
    """The system clock is set (NTP) while offline, before the CSMS told the time: what was
    stamped by the old clock keeps meaning the same instant, and no 1970 date goes out."""
    clock = VirtualClock(start=1000.0)
    csms.stop()
    fw = boot(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                               "StopTxnSampledData": REGISTER}, clock=clock)
    fw.settle()
    plug_and_tap(fw, "EARLY")
    running(fw)
    t0 = clock.now()
    fw.advance(130)                                          # samples at +60 and +120
    jump = CSMS_EPOCH - clock.now()
    clock.step_wall(jump)                                    # NTP sets the system clock
    fw.runtime.wake()
    fw.settle()
    assert fw.station.services.clock.known
    fw.advance(70)                                           # a sample at +180, new clock
    fw.sim.tap("EARLY")
    stopped(fw)
    fw.sim.unplug(1)
    fw.settle()

    mark = link_up(csms, fw)                                 # the CSMS agrees with NTP
    assert drained(fw)
    msgs = tx_messages(csms, after=mark)
    assert [m.action for m in msgs] == ["StartTransaction"] + ["MeterValues"] * 3 + [
        "StopTransaction"]
    real = t0 + jump
    assert msgs[0]["timestamp"] == iso(real)
    assert [m["meterValue"][0]["timestamp"] for m in msgs[1:4]] == [
        iso(real + 60), iso(real + 120), iso(real + 180)]
    assert msgs[-1]["timestamp"] == iso(real + 200)
    assert [v["timestamp"] for v in msgs[-1]["transactionData"]] == [
        iso(real + k) for k in (0, 60, 120, 180, 200)]
    for record in records(csms):
        assert "1970" not in json.dumps(record.payload), record
    assert not csms.violations


# -------------------------------------------------------------------- volume
def test_many_queued_messages_are_all_delivered_once_in_order(csms, firmware):
    """500 samples from a long offline period: every one arrives, once, in order."""
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 10})
    start = start_online(csms, fw)
    t0 = fw.clock.now()
    link_down(csms, fw)
    fw.advance(500 * 10)
    on_disk = db(fw, "SELECT unique_id FROM outbox WHERE action='MeterValues' ORDER BY seq")
    assert len(on_disk) == 500

    mark = link_up(csms, fw)
    assert drained(fw, timeout=30)
    mvs = records(csms, "MeterValues", after=mark)
    assert [m.unique_id for m in mvs] == [u for (u,) in on_disk]
    assert len({m.unique_id for m in mvs}) == 500
    assert [m["meterValue"][0]["timestamp"] for m in mvs] == [
        iso(t0 + 10 * k) for k in range(1, 501)]
    values = [energy(m) for m in mvs]
    assert values == sorted(values) and values[0] > start["meterStart"]
    assert all(m["transactionId"] == start.reply["transactionId"] for m in mvs)
    assert not undelivered_on_disk(fw, csms)
    assert not csms.violations


def test_a_transaction_id_beyond_64_bits_survives_a_power_cut(csms, firmware):
    """OCPP does not bound transactionId; SQLite integers stop at 64 bits. A CSMS that
    hands out 2**70 still gets it back on the PowerLoss StopTransaction after a cut."""
    huge = 2 ** 70
    csms.start_transaction_response = {"transactionId": huge,
                                       "idTagInfo": {"status": "Accepted"}}
    fw = boot(csms, firmware)
    start_online(csms, fw)
    assert wait_until(lambda: fw.station.services.connectors[1].tx.transaction_id == huge)
    fw.settle()
    fw.cut_power()
    mark = len(csms.received)
    fw.start()
    stop = csms.wait_for("StopTransaction", after=mark)
    assert stop["reason"] == "PowerLoss" and stop["transactionId"] == huge
    # Recorded the first time: the StartTransaction is not sent again after the cut.
    assert len(csms.records("StartTransaction")) == 1
