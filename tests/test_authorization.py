"""Authorization end to end: Authorize, the authorization cache and the offline rules
(TC_007, TC_061, TC_023), and the cache's bound at unit level.

The cache is read from the SQLite file through a second connection (WAL), so the tests
see what survives a restart rather than what the core holds in memory.
"""
import json
import sqlite3
from datetime import datetime, timezone

import pytest
from ocpp.exceptions import InternalError

from chargepoint.clock import VirtualClock
from chargepoint.csms.server import NO_RESPONSE
from tests.harness import STATION_NOW, wait_until

PAST = "2020-01-01T00:00:00Z"
FUTURE = "2030-01-01T00:00:00Z"


def start_firmware(csms, firmware, ocpp=None):
    fw = firmware({"ocpp": {"MeterValueSampleInterval": 0, **(ocpp or {})}})
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw


def actions(csms, after=0):
    return [r.action for r in csms.records(after=after)]


def cache(fw):
    """The auth_cache table as {idTag: idTagInfo}, read from the database file."""
    db = sqlite3.connect(f"file:{fw.settings.storage.path}?mode=ro", uri=True)
    try:
        return {tag: json.loads(info) for tag, info in
                db.execute("SELECT id_tag, info FROM auth_cache").fetchall()}
    finally:
        db.close()


def tap(fw, tag):
    fw.sim.tap(tag)
    fw.settle()


def plug(fw):
    fw.sim.plug(1)
    fw.settle()


def authorize_while_unplugged(fw, csms, tag):
    """Present `tag` with no EV: the CSMS's answer lands in the cache; the id then lapses
    after ConnectionTimeOut."""
    mark = len(csms.received)
    tap(fw, tag)
    csms.wait_for("Authorize", lambda r: r["idTag"] == tag, after=mark)
    fw.settle()
    fw.advance(fw.station.services.keys.int("ConnectionTimeOut") + 1)
    assert fw.station.services.plug_wait.pending is None


def go_offline(fw, csms):
    csms.stop(graceful=False)
    assert wait_until(lambda: not fw.station.rpc.connected)
    fw.settle()


def come_back(fw, csms):
    mark = len(csms.received)
    csms.start()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark,
                  timeout=10)
    fw.settle()
    return mark


def charging(fw):
    return fw.station.services.connectors[1].tx is not None


# ------------------------------------------------------------------------ filling the cache
def test_cache_is_filled_from_authorize_conf(csms, firmware):
    csms.authorize_response = {"idTagInfo": {"status": "Accepted", "expiryDate": FUTURE,
                                             "parentIdTag": "FLEET"}}
    fw = start_firmware(csms, firmware)
    authorize_while_unplugged(fw, csms, "TAG1")
    assert cache(fw) == {"TAG1": {"status": "Accepted", "expiryDate": FUTURE,
                                  "parentIdTag": "FLEET"}}


def test_cache_is_refreshed_from_start_transaction_conf(csms, firmware):
    """StartTransaction.conf's idTagInfo is newer than Authorize.conf's and replaces it."""
    csms.authorize_response = {"idTagInfo": {"status": "Accepted"}}
    csms.start_transaction_response = {"idTagInfo": {"status": "Accepted",
                                                     "expiryDate": FUTURE,
                                                     "parentIdTag": "FLEET"}}
    fw = start_firmware(csms, firmware)
    plug(fw)
    tap(fw, "TAG1")
    csms.wait_for("StartTransaction")
    fw.settle()
    assert cache(fw)["TAG1"] == {"status": "Accepted", "expiryDate": FUTURE,
                                 "parentIdTag": "FLEET"}


def test_cache_is_filled_from_start_transaction_conf_without_authorize(csms, firmware):
    """A remote start without AuthorizeRemoteTxRequests sends no Authorize: only the
    StartTransaction.conf can teach the cache about the id."""
    fw = start_firmware(csms, firmware, {"AuthorizeRemoteTxRequests": False})
    plug(fw)
    csms.start_transaction_response = {"idTagInfo": {"status": "Accepted",
                                                     "expiryDate": FUTURE}}
    assert csms.call("CP-1", "RemoteStartTransaction",
                     {"idTag": "REMOTE1", "connectorId": 1}) == {"status": "Accepted"}
    csms.wait_for("StartTransaction")
    fw.settle()
    assert "Authorize" not in actions(csms)
    assert cache(fw) == {"REMOTE1": {"status": "Accepted", "expiryDate": FUTURE}}


def test_cache_is_refreshed_from_stop_transaction_conf(csms, firmware):
    csms.stop_transaction_response = {"idTagInfo": {"status": "Blocked"}}
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True})
    plug(fw)
    tap(fw, "TAG1")
    csms.wait_for("StartTransaction")
    fw.settle()
    assert cache(fw)["TAG1"]["status"] == "Accepted"
    tap(fw, "TAG1")
    csms.wait_for("StopTransaction")
    fw.settle()
    assert cache(fw)["TAG1"] == {"status": "Blocked"}
    # A blocked cache entry is not valid: the next tap asks the CSMS again.
    fw.sim.unplug(1)
    fw.settle()
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("Authorize", lambda r: r["idTag"] == "TAG1", after=mark)


# ------------------------------------------------------------------------ TC_007
def test_tc007_cached_id_with_local_pre_authorize_starts_without_authorize(csms, firmware):
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    plug(fw)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing")
    mark = len(csms.received)
    tap(fw, "TAG1")
    start = csms.wait_for("StartTransaction", after=mark)
    assert start["idTag"] == "TAG1" and start["connectorId"] == 1
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    assert "Authorize" not in actions(csms, after=mark)
    # StartTransaction is stamped with the instant the card was presented: no time
    # passed waiting for an answer.
    assert start["timestamp"] == fw.station.services.clock.timestamp()
    csms.assert_no_violations()


def test_tc007_remote_start_with_cached_id_and_local_pre_authorize(csms, firmware):
    """The official steps: cable first, RemoteStartTransaction for a cached id."""
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True,
                                         "AuthorizeRemoteTxRequests": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    plug(fw)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Preparing")
    mark = len(csms.received)
    assert csms.call("CP-1", "RemoteStartTransaction",
                     {"idTag": "TAG1", "connectorId": 1}) == {"status": "Accepted"}
    start = csms.wait_for("StartTransaction", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging", after=mark)
    fw.settle()
    assert start.reply["idTagInfo"]["status"] == "Accepted"
    assert "Authorize" not in actions(csms, after=mark)
    csms.assert_no_violations()


def test_without_local_pre_authorize_a_cached_id_is_still_authorized_online(csms, firmware):
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": False})
    authorize_while_unplugged(fw, csms, "TAG1")
    assert "TAG1" in cache(fw)
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("StartTransaction", after=mark)
    fw.settle()
    assert [a for a in actions(csms, after=mark) if a in ("Authorize", "StartTransaction")] \
        == ["Authorize", "StartTransaction"]


# ------------------------------------------------------------------------ cache switched off
def test_cache_disabled_remembers_nothing(csms, firmware):
    fw = start_firmware(csms, firmware, {"AuthorizationCacheEnabled": False,
                                         "LocalPreAuthorize": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    plug(fw)
    tap(fw, "TAG1")
    csms.wait_for("StartTransaction")
    tap(fw, "TAG1")
    csms.wait_for("StopTransaction")
    fw.settle()
    assert cache(fw) == {}
    fw.sim.unplug(1)
    fw.settle()
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")                       # pre-authorize has nothing to go on
    csms.wait_for("Authorize", after=mark)


@pytest.mark.parametrize("allow_unknown", [False, True])
def test_cache_disabled_offline_cached_id_counts_as_unknown(csms, firmware, allow_unknown):
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": allow_unknown})
    authorize_while_unplugged(fw, csms, "TAG1")
    assert "TAG1" in cache(fw)
    csms.call("CP-1", "ChangeConfiguration", {"key": "AuthorizationCacheEnabled",
                                              "value": "false"})
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "TAG1")
    assert charging(fw) is allow_unknown


# ------------------------------------------------------------------------ offline rules
@pytest.mark.parametrize("local_offline", [True, False])
def test_local_authorize_offline(csms, firmware, local_offline):
    fw = start_firmware(csms, firmware, {"LocalAuthorizeOffline": local_offline,
                                         "AllowOfflineTxForUnknownId": False})
    authorize_while_unplugged(fw, csms, "TAG1")
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "TAG1")
    assert charging(fw) is local_offline
    assert (fw.sim.status()["connectors"]["1"]["contactor"] == "closed") is local_offline
    mark = come_back(fw, csms)
    fw.settle()
    starts = [r for r in csms.records("StartTransaction", after=mark)]
    assert len(starts) == (1 if local_offline else 0)
    # An offline start is not authorized again once the link is back (TC_037_1).
    assert "Authorize" not in actions(csms, after=mark)
    csms.assert_no_violations()


@pytest.mark.parametrize("allow_unknown", [True, False])
def test_allow_offline_tx_for_unknown_id(csms, firmware, allow_unknown):
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": allow_unknown})
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "STRANGER")
    assert charging(fw) is allow_unknown
    mark = come_back(fw, csms)
    starts = csms.records("StartTransaction", after=mark)
    assert [s["idTag"] for s in starts] == (["STRANGER"] if allow_unknown else [])
    csms.assert_no_violations()


def test_unknown_id_offline_with_local_authorize_offline_off(csms, firmware):
    """LocalAuthorizeOffline concerns known ids; an unknown one follows
    AllowOfflineTxForUnknownId alone."""
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": True,
                                         "LocalAuthorizeOffline": False})
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "STRANGER")
    assert charging(fw)


@pytest.mark.parametrize("status", ["Blocked", "Invalid", "Expired"])
def test_offline_a_cached_refusal_wins_over_allow_unknown(csms, firmware, status):
    """An id the CSMS refused is known, not unknown: AllowOfflineTxForUnknownId does not
    let it in."""
    csms.authorize_response = {"idTagInfo": {"status": status}}
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    assert cache(fw)["TAG1"]["status"] == status
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "TAG1")
    assert not charging(fw)


# ------------------------------------------------------------------------ expiry
def test_expired_cache_entry_is_authorized_online_again(csms, firmware):
    csms.authorize_response = {"idTagInfo": {"status": "Accepted", "expiryDate": PAST}}
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    assert cache(fw)["TAG1"]["expiryDate"] == PAST
    csms.authorize_response = {"idTagInfo": {"status": "Accepted", "expiryDate": FUTURE}}
    csms.start_transaction_response = {"idTagInfo": {"status": "Accepted",
                                                     "expiryDate": FUTURE}}
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("Authorize", lambda r: r["idTag"] == "TAG1", after=mark)
    csms.wait_for("StartTransaction", after=mark)
    fw.settle()
    assert cache(fw)["TAG1"]["expiryDate"] == FUTURE


def test_expired_cache_entry_is_refused_offline(csms, firmware):
    csms.authorize_response = {"idTagInfo": {"status": "Accepted", "expiryDate": PAST}}
    fw = start_firmware(csms, firmware, {"LocalAuthorizeOffline": True,
                                         "AllowOfflineTxForUnknownId": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "TAG1")
    assert not charging(fw)


def test_cache_entry_expires_while_cached(csms, firmware):
    """Valid when cached, expired half an hour later by the charger's clock."""
    clock = VirtualClock()
    csms.now = lambda: datetime.fromtimestamp(clock.now(), timezone.utc)
    soon = "2026-01-01T00:30:00Z"
    csms.authorize_response = {"idTagInfo": {"status": "Accepted", "expiryDate": soon}}
    fw = firmware({"ocpp": {"LocalPreAuthorize": True}}, clock=clock)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    authorize_while_unplugged(fw, csms, "TAG1")
    mark = len(csms.received)
    tap(fw, "TAG1")                       # still valid: accepted from the cache
    assert fw.station.services.plug_wait.pending is not None
    assert "Authorize" not in actions(csms, after=mark)
    fw.advance(1800)
    assert fw.station.services.plug_wait.pending is None
    tap(fw, "TAG1")                       # expired now: ask the CSMS
    csms.wait_for("Authorize", lambda r: r["idTag"] == "TAG1", after=mark)


# ------------------------------------------------------------------------ no answer / errors
@pytest.mark.parametrize("cached,allow_unknown,starts", [
    (True, False, True),          # a valid cache entry decides
    (False, True, True),          # unknown id, allowed
    (False, False, False),        # unknown id, not allowed
])
def test_authorize_without_answer_falls_back_to_the_offline_decision(
        csms, firmware, cached, allow_unknown, starts):
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": allow_unknown,
                                         "LocalAuthorizeOffline": True})
    if cached:
        authorize_while_unplugged(fw, csms, "TAG1")
    csms.handlers["Authorize"] = lambda cp_id, payload: NO_RESPONSE
    plug(fw)
    mark = len(csms.received)
    fw.sim.tap("TAG1")
    csms.wait_for("Authorize", after=mark)
    # While the Authorize is outstanding the loop is never idle, so step the clock by hand;
    # a CALL of the CSMS's, answered after the tick, shows the loop has handled the tick.
    timeout = fw.settings.csms.response_timeout_s
    fw.clock.advance(timeout - 0.5)
    fw.runtime.wake()
    csms.call("CP-1", "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert not charging(fw) and not fw.station.services.connectors[1].starting
    fw.clock.advance(0.5)
    fw.runtime.wake()
    fw.settle()
    assert charging(fw) is starts
    assert len(csms.records("StartTransaction", after=mark)) == (1 if starts else 0)


def test_authorize_callerror_falls_back_to_the_offline_decision(csms, firmware):
    def broken(cp_id, payload):
        raise InternalError(description="authorization backend down")

    fw = start_firmware(csms, firmware, {"LocalAuthorizeOffline": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    csms.handlers["Authorize"] = broken
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("StartTransaction", lambda r: r["idTag"] == "TAG1", after=mark)
    tap(fw, "STRANGER")                   # not cached, AllowOfflineTxForUnknownId false
    fw.settle()
    assert fw.station.services.connectors[1].tx.id_tag == "TAG1"


@pytest.mark.parametrize("status", ["Blocked", "Expired", "Invalid"])
def test_tc023_authorize_refused_starts_nothing(csms, firmware, status):
    csms.authorize_response = {"idTagInfo": {"status": status}}
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True,
                                         "AllowOfflineTxForUnknownId": True})
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("Authorize", after=mark)
    fw.settle()
    fw.advance(5)
    assert not charging(fw)
    assert "StartTransaction" not in actions(csms)
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"
    assert cache(fw)["TAG1"] == {"status": status}
    # Refused again on the next tap (the refusal is not a valid cache entry).
    mark = len(csms.received)
    tap(fw, "TAG1")
    csms.wait_for("Authorize", after=mark)
    fw.settle()
    assert not charging(fw)
    csms.assert_no_violations()


# ------------------------------------------------------------------------ TC_061 ClearCache
def test_tc061_clear_cache(csms, firmware):
    fw = start_firmware(csms, firmware, {"LocalPreAuthorize": True,
                                         "AuthorizationCacheEnabled": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    authorize_while_unplugged(fw, csms, "TAG2")
    assert set(cache(fw)) == {"TAG1", "TAG2"}
    assert csms.call("CP-1", "ClearCache", {}) == {"status": "Accepted"}
    assert cache(fw) == {}
    plug(fw)
    mark = len(csms.received)
    tap(fw, "TAG1")
    auth = csms.wait_for("Authorize", after=mark)
    assert auth["idTag"] == "TAG1" and auth.reply["idTagInfo"]["status"] == "Accepted"
    csms.wait_for("StartTransaction", after=mark)
    csms.assert_no_violations()


def test_tc061_clear_cache_offline_afterwards_refuses_the_id(csms, firmware):
    fw = start_firmware(csms, firmware, {"LocalAuthorizeOffline": True})
    authorize_while_unplugged(fw, csms, "TAG1")
    assert csms.call("CP-1", "ClearCache", {}) == {"status": "Accepted"}
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "TAG1")
    assert not charging(fw)


def test_clear_cache_rejected_when_the_cache_is_disabled(csms, firmware):
    fw = start_firmware(csms, firmware)
    authorize_while_unplugged(fw, csms, "TAG1")
    assert csms.call("CP-1", "ChangeConfiguration", {"key": "AuthorizationCacheEnabled",
                                                     "value": "false"}) == {"status": "Accepted"}
    assert csms.call("CP-1", "ClearCache", {}) == {"status": "Rejected"}


# ------------------------------------------------------------------------ the bound (unit)
NOW = STATION_NOW


def cached_tags(st):
    return {tag for (tag,) in st.services.store.execute("SELECT id_tag FROM auth_cache").fetchall()}


def fill(st, count, at):
    """`count` cache rows refreshed at `at`, written in one commit (the bound is checked
    by `remember`)."""
    with st.services.store.transaction():
        for i in range(count):
            st.services.store.execute("INSERT INTO auth_cache(id_tag, info, updated) VALUES(?, ?, ?)",
                             (f"OLD{i:04d}", '{"status":"Accepted"}', at + i))


def test_cache_keeps_at_most_cache_max_entries(station):
    from chargepoint.model import authorization as authorize

    fill(station, authorize.CACHE_MAX_ENTRIES, NOW - 10_000)
    assert len(cached_tags(station)) == authorize.CACHE_MAX_ENTRIES
    station.services.authorization.remember("NEW", {"status": "Accepted"})
    tags = cached_tags(station)
    assert len(tags) == authorize.CACHE_MAX_ENTRIES
    assert "NEW" in tags and "OLD0000" not in tags      # the least recently refreshed goes
    assert "OLD0001" in tags


def test_cache_bound_keeps_the_newest_entry_when_refreshed_in_the_same_instant(
        station, monkeypatch):
    """Entries refreshed in one and the same second must not push the newest one out."""
    from chargepoint.model import authorization as authorize

    monkeypatch.setattr(authorize, "CACHE_MAX_ENTRIES", 5)
    for i in range(12):
        station.services.authorization.remember(f"TAG{i:02d}", {"status": "Accepted"})
        assert f"TAG{i:02d}" in cached_tags(station)
        assert len(cached_tags(station)) == min(i + 1, 5)


def test_cache_bound_counts_a_reconfirmed_entry_as_refreshed(station, monkeypatch):
    """An id the CSMS confirmed again, unchanged, is as fresh as a new one."""
    from chargepoint.model import authorization as authorize

    monkeypatch.setattr(authorize, "CACHE_MAX_ENTRIES", 3)
    for i, tag in enumerate(["A", "B", "C"]):
        station.services.clock.local = NOW + i
        station.services.authorization.remember(tag, {"status": "Accepted"})
    station.services.clock.local = NOW + 10
    station.services.authorization.remember("A", {"status": "Accepted"})     # A used again today
    station.services.clock.local = NOW + 11
    station.services.authorization.remember("D", {"status": "Accepted"})
    assert cached_tags(station) == {"A", "C", "D"}


def test_cache_disabled_remember_writes_nothing(station):
    station.services.keys.change("AuthorizationCacheEnabled", "false")
    station.services.authorization.remember("TAG1", {"status": "Accepted"})
    assert cached_tags(station) == set()
    assert station.services.authorization.cache_get("TAG1") is None


@pytest.mark.parametrize("spelling", ["True", "TRUE", " true "])
def test_offline_keys_from_config_toml_written_as_strings(csms, firmware, spelling):
    """config.toml may spell a boolean as a string; what the check accepts must apply."""
    fw = start_firmware(csms, firmware, {"AllowOfflineTxForUnknownId": spelling})
    got = csms.call("CP-1", "GetConfiguration", {"key": ["AllowOfflineTxForUnknownId"]})
    assert got["configurationKey"][0]["value"] == "true"
    go_offline(fw, csms)
    plug(fw)
    tap(fw, "STRANGER")
    assert charging(fw)
