"""The outbox keeps a window of its queue in memory and the rest on disk (a real SQLite
file, a small window): order, unique ids, the deferred deletion, burying a discarded
StartTransaction's later messages and rows added by another connection all hold across
the window's edge."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from chargepoint.model.outbox import Outbox, discarded_with
from chargepoint.store import Store

WINDOW = 8


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "cp.db")
    yield s
    s.close()


def fill(outbox: Outbox, n: int, tx_local=1, action="MeterValues", start=0) -> list:
    return [outbox.produce(action, {"connectorId": 1, "n": start + i}, tx_local, 0.0)
            for i in range(n)]


def rows(store, table="outbox") -> list:
    return store.execute(f"SELECT unique_id, action FROM {table} ORDER BY seq").fetchall()


def drain(outbox: Outbox, check=None) -> list:
    """Deliver everything as the station does (head, ready, delivered), in order."""
    out = []
    while (head := outbox.ready(0.0)) is not None:
        assert head is outbox.head()
        out.append((head.unique_id, head.payload["n"]))
        outbox.delivered(head)
        assert outbox.in_memory <= WINDOW
        if check:
            check()
    outbox.flush()
    return out


def test_a_backlog_larger_than_the_window_stays_on_disk_and_drains_in_order(store):
    outbox = Outbox(store, window=WINDOW)
    produced = fill(outbox, 5 * WINDOW + 3)
    assert len(outbox) == 5 * WINDOW + 3 and outbox.in_memory == WINDOW
    assert [i.unique_id for i in outbox] == [i.unique_id for i in produced]
    delivered = drain(outbox)
    assert delivered == [(i.unique_id, n) for n, i in enumerate(produced)]
    assert len(outbox) == 0 and not rows(store)


def test_a_restart_loads_only_the_window_and_keeps_unique_ids_and_attempts(store, tmp_path):
    outbox = Outbox(store, window=WINDOW)
    produced = fill(outbox, 3 * WINDOW)
    head = outbox.head()
    outbox.failed(head, "InternalError", 10.0, 5, 60)
    again = Outbox(store, window=WINDOW)
    assert len(again) == 3 * WINDOW and again.in_memory == WINDOW
    first = again.head()
    assert (first.unique_id, first.attempts, first.next_attempt) == (head.unique_id, 1, 70.0)
    assert again.ready(69.0) is None and again.ready(70.0) is first
    assert [u for u, _ in drain_from(again, 70.0)] == [i.unique_id for i in produced]


def drain_from(outbox, now):
    out = []
    while (head := outbox.ready(now)) is not None:
        out.append((head.unique_id, head.payload["n"]))
        outbox.delivered(head)
    return out


def test_at_most_the_last_delivered_message_is_left_on_disk(store):
    """The deletion of a delivered message is folded into the next commit: a crash can
    repeat only that one, also where the window is topped up from disk."""
    outbox = Outbox(store, window=WINDOW)
    fill(outbox, 3 * WINDOW)
    for _ in range(WINDOW):                     # across the edge of the first window
        head = outbox.ready(0.0)
        outbox.delivered(head)
        on_disk = [u for u, _ in rows(store)]
        assert on_disk[0] == head.unique_id and len(on_disk) == len(outbox) + 1
    crashed = Outbox(store, window=WINDOW)      # what a crash leaves: one repeat at most
    assert len(crashed) == len(outbox) + 1


def test_a_discarded_start_takes_its_later_messages_from_memory_and_disk(store):
    outbox = Outbox(store, window=WINDOW)
    start = outbox.produce("StartTransaction", {"n": -1}, 7, 0.0)
    ours = fill(outbox, 3 * WINDOW, tx_local=7)
    theirs = fill(outbox, 3, tx_local=8, start=1000)
    ours.append(outbox.produce("StopTransaction", {"n": 999}, 7, 0.0))
    buried = outbox.failed(start, "InternalError", 0.0, 1, 60)
    assert buried[0] is start
    dead = store.execute("SELECT unique_id, reason FROM outbox_dead ORDER BY seq").fetchall()
    assert [u for u, _ in dead] == [start.unique_id] + [i.unique_id for i in ours]
    assert {r for _, r in dead[1:]} == {discarded_with(start.unique_id)}
    assert len(outbox) == 3
    assert drain(outbox) == [(i.unique_id, i.payload["n"]) for i in theirs]


def test_a_given_up_message_keeps_its_transaction_id_in_outbox_dead(store):
    outbox = Outbox(store, window=WINDOW)
    stop = outbox.produce("StopTransaction", {"meterStop": 5}, 3, 0.0)
    outbox.failed(stop, "closed", 0.0, 1, 60, transaction_id=4242)
    (payload,) = store.execute("SELECT payload FROM outbox_dead").fetchone()
    assert json.loads(payload) == {"meterStop": 5, "transactionId": 4242}


@pytest.mark.parametrize("queued", [0, 3, 3 * WINDOW])
def test_rows_added_by_another_connection_join_the_end_of_the_queue(store, tmp_path, queued):
    """An operator re-queues a message while the firmware runs (chargepoint/outbox_admin.py):
    the firmware notices it through data_version, with an empty, a partly filled or an
    overflowing window, and sends it after what it had queued."""
    outbox = Outbox(store, window=WINDOW)
    produced = fill(outbox, queued)
    with closing(sqlite3.connect(tmp_path / "cp.db", isolation_level=None)) as other:
        other.execute("INSERT INTO outbox(unique_id, action, payload, tx_local, created) "
                      "VALUES('operator-1', 'MeterValues', '{\"n\": -5}', 1, 0)")
    later = fill(outbox, 2, start=100)
    assert len(outbox) == queued + 3
    assert [u for u, _ in drain(outbox)] == [i.unique_id for i in produced] + [
        "operator-1"] + [i.unique_id for i in later]


def test_rows_added_by_another_connection_after_the_queue_ran_empty(store, tmp_path):
    """Once the table is empty SQLite hands out low seqs again: the row is still seen."""
    outbox = Outbox(store, window=WINDOW)
    fill(outbox, 2)
    drain(outbox)
    assert not rows(store)
    with closing(sqlite3.connect(tmp_path / "cp.db", isolation_level=None)) as other:
        other.execute("INSERT INTO outbox(unique_id, action, payload, tx_local, created) "
                      "VALUES('operator-2', 'MeterValues', '{\"n\": 1}', 1, 0)")
    assert outbox.head().unique_id == "operator-2" and len(outbox) == 1


def test_iterating_reads_the_whole_queue_and_leaves_the_window_alone(store):
    outbox = Outbox(store, window=WINDOW)
    produced = fill(outbox, 2 * WINDOW + 1)
    assert [i.payload["n"] for i in outbox] == list(range(2 * WINDOW + 1))
    assert outbox.in_memory == WINDOW
    assert [u for u, _ in drain(outbox)] == [i.unique_id for i in produced]
