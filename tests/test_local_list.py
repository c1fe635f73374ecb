"""The local authorization list end to end (TC_042, TC_043, TC_008): SendLocalList Full and
Differential, GetLocalListVersion, the limits, how the list authorizes online and offline
and beside the cache, and that an update is all or nothing on disk.

Most tests run the firmware loop in process against the loopback CSMS on a virtual clock.
The last one runs the real `python -m chargepoint run` process and SIGKILLs it at seeded
random moments around a large SendLocalList, then reads its SQLite file.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.harness import wait_until

CP = "CP-1"
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers

def boot(csms, firmware, ocpp=None):
    """A firmware booted and reporting connector 1 Available."""
    fw = firmware({"ocpp": ocpp} if ocpp else None)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw


def entry(tag, status="Accepted", **info) -> dict:
    return {"idTag": tag, "idTagInfo": {"status": status, **info}}


def send_list(csms, version, entries=None, update="Full", cp=CP) -> str:
    payload = {"listVersion": version, "updateType": update}
    if entries is not None:
        payload["localAuthorizationList"] = entries
    return csms.call(cp, "SendLocalList", payload, timeout=20)["status"]


def list_version(csms, cp=CP) -> int:
    return csms.call(cp, "GetLocalListVersion", {})["listVersion"]


def read_db(path, sql, params=()):
    with closing(sqlite3.connect(str(path))) as con:
        return con.execute(sql, params).fetchall()


def on_disk(path) -> tuple:
    """(version stored, {idTag: idTagInfo}) as the SQLite file holds them."""
    rows = read_db(path, "SELECT id_tag, info FROM local_list")
    version = read_db(path, "SELECT value FROM state WHERE key='local_list_version'")
    return (json.loads(version[0][0]) if version else None,
            {tag: json.loads(info) for tag, info in rows})


def db_path(fw):
    return fw.settings.storage.path


def cached(fw) -> dict:
    return {tag: json.loads(info)
            for tag, info in read_db(db_path(fw), "SELECT id_tag, info FROM auth_cache")}


def act(fw, action, *args, **kwargs):
    result = action(*args, **kwargs)
    fw.settle()
    return result


def link_down(csms, fw):
    csms.stop(graceful=False)
    assert wait_until(lambda: not fw.station.rpc.connected, timeout=5)
    fw.settle()


def link_up(csms, fw):
    csms.start()
    csms.wait_connected(CP, timeout=10)
    assert wait_until(lambda: fw.station.rpc.connected and fw.station.services.link.accepted, timeout=5)
    fw.settle()


def tx_running(fw, cid=1) -> bool:
    fw.settle()
    return fw.station.services.connectors[cid].tx is not None


def tx_tag(fw, cid=1):
    tx = fw.station.services.connectors[cid].tx
    return None if tx is None else tx.id_tag


def present(fw, tag, cid=1):
    """An EV plugged in at `cid` (if none is) and `tag` presented; returns whether a
    transaction runs for it afterwards."""
    if not fw.sim.status()["connectors"][str(cid)]["plugged"]:
        act(fw, fw.sim.plug, cid)
    act(fw, fw.sim.tap, tag)
    fw.advance(2)
    return tx_tag(fw, cid) == tag


# --------------------------------------------------------------------------- TC_042

def test_tc_042_1_list_disabled_version_is_minus_one(csms, firmware):
    """LocalAuthListEnabled false: -1, even with a list installed before; switched on again,
    the list and its version are back (switching off does not forget it)."""
    fw = boot(csms, firmware, ocpp={"LocalAuthListEnabled": False})
    assert list_version(csms) == -1
    assert csms.call(CP, "ChangeConfiguration", {"key": "LocalAuthListEnabled",
                                                 "value": "true"})["status"] == "Accepted"
    assert send_list(csms, 3, [entry("A")]) == "Accepted"
    assert list_version(csms) == 3
    assert csms.call(CP, "ChangeConfiguration", {"key": "LocalAuthListEnabled",
                                                 "value": "false"})["status"] == "Accepted"
    assert list_version(csms) == -1
    assert on_disk(db_path(fw)) == (3, {"A": {"status": "Accepted"}})
    assert csms.call(CP, "ChangeConfiguration", {"key": "LocalAuthListEnabled",
                                                 "value": "true"})["status"] == "Accepted"
    assert list_version(csms) == 3


def test_tc_042_2_empty_list_version_is_zero(csms, firmware):
    """Nothing installed: 0. A Full update with listVersion 1 and no list: Accepted, still 0
    (an empty list has version 0), and it empties a list that was there."""
    fw = boot(csms, firmware)
    assert list_version(csms) == 0
    assert send_list(csms, 1) == "Accepted"
    assert list_version(csms) == 0
    assert send_list(csms, 4, [entry("A")]) == "Accepted"
    assert list_version(csms) == 4
    assert send_list(csms, 5) == "Accepted"
    assert list_version(csms) == 0
    assert on_disk(db_path(fw))[1] == {}


# --------------------------------------------------------------------------- TC_043

def test_tc_043_full_then_differential(csms, firmware):
    """Full then Differential, both Accepted; the list holds both updates and a listed id is
    authorized locally (LocalPreAuthorize: no Authorize.req, although the CSMS would now
    refuse it)."""
    fw = boot(csms, firmware, ocpp={"LocalPreAuthorize": True})
    assert send_list(csms, 1, [entry("A"), entry("B", "Blocked")]) == "Accepted"
    assert send_list(csms, 2, [entry("C", parentIdTag="P")], update="Differential") \
        == "Accepted"
    assert list_version(csms) == 2
    assert on_disk(db_path(fw)) == (2, {"A": {"status": "Accepted"},
                                        "B": {"status": "Blocked"},
                                        "C": {"status": "Accepted", "parentIdTag": "P"}})
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    mark = len(csms.received)
    assert present(fw, "C")
    begin = csms.wait_for("StartTransaction", after=mark)
    assert begin["idTag"] == "C"
    assert csms.records("Authorize", after=mark) == []
    assert not csms.violations


def test_tc_043_1_list_disabled_is_not_supported(csms, firmware):
    fw = boot(csms, firmware, ocpp={"LocalAuthListEnabled": False})
    assert send_list(csms, 1, [entry("A")]) == "NotSupported"
    assert on_disk(db_path(fw)) == (None, {})


def test_tc_043_2_version_mismatch(csms, firmware):
    """The OCTT sequence: Full 2, Differential 5, Differential 4 -> VersionMismatch, and the
    list stays at 5 with nothing of the refused update in it."""
    fw = boot(csms, firmware)
    assert send_list(csms, 2, [entry("A")]) == "Accepted"
    assert list_version(csms) == 2
    assert send_list(csms, 5, [entry("B")], update="Differential") == "Accepted"
    assert list_version(csms) == 5
    assert send_list(csms, 4, [entry("C")], update="Differential") == "VersionMismatch"
    assert list_version(csms) == 5
    assert send_list(csms, 5, [entry("C")], update="Differential") == "VersionMismatch"
    assert on_disk(db_path(fw)) == (5, {"A": {"status": "Accepted"},
                                        "B": {"status": "Accepted"}})


OLD = [entry("OLD1"), entry("OLD2", "Blocked")]


@pytest.mark.parametrize("case", ["over-send-max", "over-list-max-full",
                                  "over-list-max-differential", "duplicate-id"])
def test_tc_043_3_failed_leaves_the_old_list(csms, firmware, case):
    """SendLocalList that cannot be installed: Failed, and the list installed before is
    unchanged (entries and version): too many entries for SendLocalListMaxLength, a list
    that would be longer than LocalAuthListMaxLength (Full or Differential), an idTag twice."""
    fw = boot(csms, firmware, ocpp={"SendLocalListMaxLength": 6, "LocalAuthListMaxLength": 5})
    assert send_list(csms, 1, OLD) == "Accepted"
    before = on_disk(db_path(fw))
    new = [entry(f"N{i}") for i in range(7)]
    if case == "over-send-max":
        status = send_list(csms, 2, new[:7])
    elif case == "over-list-max-full":
        status = send_list(csms, 2, new[:6])
    elif case == "over-list-max-differential":
        status = send_list(csms, 2, new[:4], update="Differential")   # 2 + 4 > 5
    else:
        status = send_list(csms, 2, new[:2] + [entry("N0", "Blocked")])
    assert status == "Failed"
    assert list_version(csms) == 1
    assert on_disk(db_path(fw)) == before == (1, {"OLD1": {"status": "Accepted"},
                                                  "OLD2": {"status": "Blocked"}})


def test_list_of_exactly_the_maximum_lengths_is_accepted(csms, firmware):
    """SendLocalListMaxLength entries in one request are Accepted; a list of exactly
    LocalAuthListMaxLength ids too, and a differential that keeps it there (one in, one
    out), while one more id is Failed."""
    fw = boot(csms, firmware, ocpp={"SendLocalListMaxLength": 5, "LocalAuthListMaxLength": 5})
    assert send_list(csms, 1, [entry(f"T{i}") for i in range(5)]) == "Accepted"
    assert len(on_disk(db_path(fw))[1]) == 5
    assert send_list(csms, 2, [{"idTag": "T0"}, entry("T5")], update="Differential") \
        == "Accepted"
    assert sorted(on_disk(db_path(fw))[1]) == ["T1", "T2", "T3", "T4", "T5"]
    assert send_list(csms, 3, [entry("T6")], update="Differential") == "Failed"
    assert list_version(csms) == 2


def test_differential_entry_without_info_deletes_the_id(csms, firmware):
    """A differential entry without idTagInfo removes that id (and only it); an id not on
    the list is simply not there afterwards; a listed id given new info is updated."""
    fw = boot(csms, firmware, ocpp={"LocalPreAuthorize": True})
    assert send_list(csms, 1, [entry("A"), entry("B"), entry("C")]) == "Accepted"
    assert send_list(csms, 2, [{"idTag": "A"}, {"idTag": "NEVER"}, entry("C", "Blocked")],
                     update="Differential") == "Accepted"
    assert on_disk(db_path(fw)) == (2, {"B": {"status": "Accepted"},
                                        "C": {"status": "Blocked"}})
    # A is no longer known locally: the CSMS is asked, and its refusal counts.
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    mark = len(csms.received)
    assert not present(fw, "A")
    assert [a["idTag"] for a in csms.records("Authorize", after=mark)] == ["A"]


# --------------------------------------------------------------------------- TC_008 and use

def test_tc_008_remote_start_with_an_id_from_the_list(csms, firmware):
    """LocalPreAuthorize, no cache, AuthorizeRemoteTxRequests: the official steps. The listed
    id starts at once on RemoteStartTransaction, without an Authorize.req."""
    fw = boot(csms, firmware, ocpp={"LocalPreAuthorize": True, "AuthorizationCacheEnabled": False,
                                    "LocalAuthListEnabled": True,
                                    "AuthorizeRemoteTxRequests": True})
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}   # must not be asked
    assert list_version(csms) == 0
    assert send_list(csms, 1, [entry("VALID1")]) == "Accepted"
    mark = len(csms.received)
    act(fw, fw.sim.plug, 1)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing", after=mark)
    assert csms.call(CP, "RemoteStartTransaction",
                     {"idTag": "VALID1", "connectorId": 1})["status"] == "Accepted"
    begin = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    assert begin["idTag"] == "VALID1" and begin.reply["idTagInfo"]["status"] == "Accepted"
    assert csms.records("Authorize", after=mark) == []
    assert not csms.violations


def test_tc_008_local_start_needs_local_pre_authorize(csms, firmware):
    """Without LocalPreAuthorize a listed id is still sent to the CSMS online (and the CSMS
    decides); with it, the list answers at once. A listed Blocked id is not started locally."""
    fw = boot(csms, firmware, ocpp={"LocalPreAuthorize": False})
    assert send_list(csms, 1, [entry("A"), entry("B", "Blocked")]) == "Accepted"
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    mark = len(csms.received)
    assert not present(fw, "A")
    assert [a["idTag"] for a in csms.records("Authorize", after=mark)] == ["A"]

    assert csms.call(CP, "ChangeConfiguration", {"key": "LocalPreAuthorize",
                                                 "value": "true"})["status"] == "Accepted"
    mark = len(csms.received)
    assert not present(fw, "B")                       # Blocked: the CSMS is asked, says no
    assert [a["idTag"] for a in csms.records("Authorize", after=mark)] == ["B"]
    mark = len(csms.received)
    assert present(fw, "A")
    assert csms.records("Authorize", after=mark) == []


@pytest.mark.parametrize("local_authorize_offline", [True, False])
def test_tc_008_offline_start_with_an_id_from_the_list(csms, firmware, local_authorize_offline):
    """Offline, LocalAuthorizeOffline admits a valid listed id (and not an unknown, a Blocked
    or an expired one); the StartTransaction reaches the CSMS once it is back. With
    LocalAuthorizeOffline false the listed id is refused too."""
    fw = boot(csms, firmware, ocpp={"LocalAuthorizeOffline": local_authorize_offline,
                                    "AllowOfflineTxForUnknownId": False})
    past = "2020-01-01T00:00:00Z"
    assert send_list(csms, 1, [entry("LISTED"), entry("BLOCKED", "Blocked"),
                               entry("OLD", expiryDate=past)]) == "Accepted"
    link_down(csms, fw)
    assert not present(fw, "UNKNOWN")
    assert not present(fw, "BLOCKED")
    assert not present(fw, "OLD")
    assert present(fw, "LISTED") == local_authorize_offline
    if not local_authorize_offline:
        return
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "closed"
    mark = len(csms.received)
    link_up(csms, fw)
    begin = csms.wait_for("StartTransaction", after=mark)
    assert begin["idTag"] == "LISTED"


def test_the_list_wins_over_the_cache_and_listed_ids_are_not_cached(csms, firmware):
    """X and Y are cached Accepted from the CSMS; the list then says X is Blocked. Offline, X
    is refused (the list wins; X also left the cache) while Y, only cached, starts. Online,
    the CSMS's answers for listed ids are not cached; for other ids they are."""
    fw = boot(csms, firmware, ocpp={"AuthorizationCacheEnabled": True,
                                    "LocalAuthorizeOffline": True, "ConnectionTimeOut": 10})
    for tag in ("X", "Y"):
        act(fw, fw.sim.tap, tag)                       # Authorize, then nobody plugs in
        fw.advance(11)
    assert cached(fw) == {"X": {"status": "Accepted"}, "Y": {"status": "Accepted"}}
    assert send_list(csms, 1, [entry("X", "Blocked"), entry("Z")]) == "Accepted"
    assert cached(fw) == {"Y": {"status": "Accepted"}}

    act(fw, fw.sim.tap, "Z")                           # listed: the CSMS's answer is not kept
    fw.advance(11)
    assert [a["idTag"] for a in csms.records("Authorize")] == ["X", "Y", "Z"]
    assert "Z" not in cached(fw)

    link_down(csms, fw)
    # Even a stale cache entry for X (written behind the list's back) does not admit it.
    with closing(sqlite3.connect(db_path(fw))) as con:
        con.execute("INSERT INTO auth_cache(id_tag, info, updated) VALUES('X', ?, 0)",
                    (json.dumps({"status": "Accepted"}),))
        con.commit()
    assert not present(fw, "X")
    assert present(fw, "Y")


def test_the_list_survives_a_power_cut(csms, firmware):
    """After a power cut the list and its version are still there and still authorize."""
    fw = boot(csms, firmware, ocpp={"LocalPreAuthorize": True})
    assert send_list(csms, 7, [entry("A"), entry("B", "Blocked")]) == "Accepted"
    fw.cut_power()
    mark = len(csms.received)
    fw.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark)
    fw.settle()
    assert list_version(csms) == 7
    csms.authorize_response = {"idTagInfo": {"status": "Invalid"}}
    mark = len(csms.received)
    assert present(fw, "A")
    assert csms.records("Authorize", after=mark) == []


# --------------------------------------------------------------------------- SIGKILL

KILL_CP = "CP-KILL"
KILL_MAX = 1000                        # SendLocalListMaxLength (the default)
KILL_ROUNDS = 6
WAIT_S = 20


class Charger:
    """`chargepoint run` in its own process group, on simulated hardware."""

    def __init__(self, tmp_path: Path, csms_url: str):
        self.db = tmp_path / "cp.db"
        self.config = tmp_path / "config.toml"
        self.config.write_text(f"""
[csms]
url = "{csms_url}"
charge_point_id = "{KILL_CP}"
reconnect_min_s = 0.05
reconnect_max_s = 0.2
response_timeout_s = 5

[storage]
path = "{self.db}"

[log]
level = "warning"

[system]
sim_socket = "{tmp_path / 'sim.sock'}"

[ocpp]
WebSocketPingInterval = 0
SendLocalListMaxLength = {KILL_MAX}

[[connectors]]
id = 1
fixed_cable = true
meter = {{ type = "sim" }}
contactor = {{ type = "sim" }}
pilot = {{ type = "sim" }}
indicator = {{ type = "sim" }}
""")
        self.proc = None

    def start(self) -> None:
        env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargepoint", "run", "--config", str(self.config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)


def _registered(csms, after: int) -> None:
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=WAIT_S,
                  after=after, cp_id=KILL_CP)


def _full_list(prefix: str) -> dict:
    return {f"{prefix}-{i:04d}": {"status": "Accepted" if i % 3 else "Blocked",
                                  "parentIdTag": prefix}
            for i in range(KILL_MAX)}


def _as_entries(tags: dict) -> list:
    return [{"idTag": tag, "idTagInfo": info} for tag, info in tags.items()]


@pytest.fixture
def kill_charger(tmp_path, csms):
    cp = Charger(tmp_path, csms.url)
    yield cp
    cp.kill()


def test_sigkill_during_a_full_update_leaves_the_old_or_the_new_list(csms, kill_charger):
    """A Full SendLocalList of SendLocalListMaxLength ids replaces a list as large, and the
    real process is SIGKILLed at a seeded random moment around the request. On disk there
    is then either the old list with its version or the new one with its, never a mix; an
    update the CSMS saw Accepted is the new one; after a restart GetLocalListVersion agrees
    with the file."""
    cp, rng = kill_charger, random.Random(20240611)
    cp.start()
    _registered(csms, 0)
    lists = {1: _full_list("V1")}
    assert send_list(csms, 1, _as_entries(lists[1]), cp=KILL_CP) == "Accepted"
    # How long one update takes here, request to answer: the kills spread around it.
    took = time.monotonic()
    lists[2] = _full_list("V2")
    assert send_list(csms, 2, _as_entries(lists[2]), cp=KILL_CP) == "Accepted"
    took = time.monotonic() - took
    installed = 2
    for round_ in range(KILL_ROUNDS):
        new = installed + 1
        lists[new] = _full_list(f"V{new}")
        answer: dict = {}

        def send(version=new, tags=lists[new]):
            try:
                answer["status"] = send_list(csms, version, _as_entries(tags), cp=KILL_CP)
            except Exception as exc:           # the connection dies with the process
                answer["error"] = exc

        delay = rng.uniform(0.0, 1.5 * took)
        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(delay)                      # real process, real time: the kill moment
        cp.kill()
        sender.join(timeout=WAIT_S)
        assert not sender.is_alive()

        version, tags = on_disk(cp.db)
        assert (version, tags) in ((installed, lists[installed]), (new, lists[new])), (
            f"round {round_}: a mixed list after a kill {delay:.3f} s into the request: "
            f"version {version}, {len(tags)} ids, "
            f"{sum(t.startswith(f'V{new}-') for t in tags)} of them new")
        if answer.get("status") == "Accepted":
            assert version == new, "an update answered Accepted was lost"
        installed = version

        mark = len(csms.received)
        cp.start()
        _registered(csms, mark)
        assert list_version(csms, cp=KILL_CP) == installed


def test_ids_match_without_regard_to_case(csms, firmware):
    """IdToken is a CiString20: a list entry sent in lower case admits the card that reads
    in upper case, a second entry differing only in case is a duplicate, and the same card
    in another case stops the transaction it started."""
    fw = boot(csms, firmware, ocpp={"LocalAuthorizeOffline": True,
                                    "AllowOfflineTxForUnknownId": False})
    assert send_list(csms, 1, [entry("abc123"), entry("ABC123")]) == "Failed"
    assert send_list(csms, 1, [entry("abc123")]) == "Accepted"
    link_down(csms, fw)
    assert present(fw, "ABC123")
    act(fw, fw.sim.tap, "Abc123")
    fw.advance(2)
    assert not tx_running(fw)
