"""The operator commands on the durable queue, run as the operator runs them (a process on
the real database): `chargepoint outbox list [--dead]` and `chargepoint outbox resend`,
with the service stopped. (With the service running: tests/test_delivery.py.)"""
from __future__ import annotations

import json
from contextlib import closing
import subprocess
import sys
from pathlib import Path

import pytest

from chargepoint.model.outbox import Outbox
from chargepoint.outbox_admin import list_messages, open_database
from chargepoint.store import Store

ROOT = Path(__file__).resolve().parents[1]


def operator_config(path: Path, db: str, url: str = "ws://127.0.0.1:9/ocpp") -> Path:
    """A config.toml naming database `db`: all the operator commands need."""
    path.write_text(f'''
[csms]
url = "{url}"

[storage]
path = "{db}"

[[connectors]]
id = 1
[connectors.meter]
type = "sim"
[connectors.contactor]
type = "sim"
[connectors.pilot]
type = "sim"
''')
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    return operator_config(tmp_path / "config.toml", "cp.db")


def cli(config: Path, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chargepoint", "outbox", *words, "--config",
                           str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def given_up(config):
    """A database as a stopped firmware leaves it: transaction 1's StartTransaction was
    given up with its MeterValues and StopTransaction, and a later MeterValues of it for
    want of a transactionId; transaction 2 (transactionId 42) lost its StopTransaction;
    one MeterValues of transaction 2 still waits."""
    store = Store(config.parent / "cp.db")
    outbox = Outbox(store)
    for local_id, tid in ((1, None), (2, 42)):
        store.execute("INSERT INTO transactions(local_id, connector_id, id_tag, meter_start, "
                      "started, last_wh, last_ts, stopped, transaction_id) "
                      "VALUES(?, 1, 'T', 0, 0, 0, 0, 1, ?)", (local_id, tid))
    start = outbox.produce("StartTransaction", {"connectorId": 1, "idTag": "T",
                                                "meterStart": 0, "timestamp": "x"}, 1, 0.0)
    outbox.produce("MeterValues", {"connectorId": 1, "meterValue": []}, 1, 0.0)
    outbox.produce("StopTransaction", {"meterStop": 9, "timestamp": "x"}, 1, 0.0)
    outbox.failed(start, "InternalError", 1_767_225_600.0, 1, 60)
    late = outbox.produce("MeterValues", {"connectorId": 1, "meterValue": []}, 1, 0.0)
    outbox.failed(late, "no transactionId", 1_767_225_600.0, 1, 0)   # as the station does
    stop = outbox.produce("StopTransaction", {"meterStop": 7, "timestamp": "x"}, 2, 0.0)
    outbox.failed(stop, "the CSMS closed the link on it 3 times in a row", 1_767_225_700.0,
                  1, 60, transaction_id=42)
    outbox.produce("MeterValues", {"connectorId": 1, "meterValue": []}, 2, 0.0)
    store.close()
    return {"start": start.unique_id, "stop": stop.unique_id}


def test_list_shows_what_was_given_up_and_what_waits(config, given_up):
    dead = cli(config, "list", "--dead")
    assert dead.returncode == 0, dead.stderr
    lines = dead.stdout.splitlines()
    assert lines[0] == "5 message(s) given up (outbox_dead):"
    assert [line.split()[1] for line in lines[2:]] == ["StartTransaction", "MeterValues",
                                                       "StopTransaction", "MeterValues",
                                                       "StopTransaction"]
    assert given_up["stop"] in lines[-1] and " 42 " in lines[-1] and "closed the link" in lines[-1]
    assert f"StartTransaction {given_up['start']} was discarded" in lines[3]
    queued = cli(config, "list")
    assert queued.returncode == 0 and queued.stdout.startswith("1 message(s) queued")
    limited = json.loads(cli(config, "list", "--dead", "--limit", "2", "--json").stdout)
    assert limited["total"] == 5 and len(limited["messages"]) == 2


def test_resend_puts_a_start_back_with_the_messages_given_up_with_it(config, given_up):
    ids = {m["unique_id"]: m["id"] for m in json.loads(
        cli(config, "list", "--dead", "--json").stdout)["messages"]}
    follower = [m for m in json.loads(cli(config, "list", "--dead", "--json").stdout)[
        "messages"] if m["action"] == "MeterValues"][0]
    refused = cli(config, "resend", str(follower["id"]))
    assert refused.returncode == 1
    assert f"resend that one (ID {ids[given_up['start']]})" in refused.stderr

    again = cli(config, "resend", given_up["start"])            # by its unique id
    assert again.returncode == 0, again.stderr
    assert "4 message(s) queued again" in again.stdout
    with closing(open_database(config.parent / "cp.db")) as con:
        queued = list_messages(con)
        assert [(m.action, m.attempts) for m in queued] == [
            ("MeterValues", 0), ("StartTransaction", 0), ("MeterValues", 0),
            ("StopTransaction", 0), ("MeterValues", 0)]
        assert queued[1].unique_id == given_up["start"]
        assert [m.action for m in list_messages(con, dead=True)] == ["StopTransaction"]
    # A stopped firmware picks them up when it starts: the queue as it will be sent.
    store = Store(config.parent / "cp.db")
    assert [i.unique_id for i in Outbox(store)][1] == given_up["start"]
    store.close()


def test_bad_requests_get_a_clear_answer_and_change_nothing(config, given_up, tmp_path):
    before = cli(config, "list", "--dead").stdout
    unknown = cli(config, "resend", "999")
    assert unknown.returncode == 1 and "no given-up message 999" in unknown.stderr
    assert cli(config, "list", "--dead").stdout == before
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text(config.read_text().replace('path = "cp.db"', 'path = "none.db"'))
    missing = cli(elsewhere, "list")
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists(), "the command must not create a database"
    broken = tmp_path / "broken.toml"
    broken.write_text("[csms]\nurl = 5\n")
    assert cli(broken, "list").returncode == 78
