"""Authorize, the authorization cache and the offline rules: may this idTag charge now?

Online, the CSMS decides (Authorize.req), unless `LocalPreAuthorize` lets a valid
local entry (local list, then cache) start at once. Offline, or when the CSMS
does not answer, a valid local entry admits the id if `LocalAuthorizeOffline`, and an
id known nowhere is admitted only if `AllowOfflineTxForUnknownId`. Every idTagInfo
the CSMS sends (Authorize, StartTransaction and StopTransaction confirmations)
refreshes the cache when `AuthorizationCacheEnabled`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from chargepoint.calls import DRIVER
from chargepoint.clock import try_parse_utc
from chargepoint.operations.registry import handles
from chargepoint.write_faults import is_storage_fault

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.authorize")

#: Most entries kept in the authorization cache; the least recently refreshed go first.
CACHE_MAX_ENTRIES = 1000


@dataclass(frozen=True)
class Decision:
    accepted: bool
    #: The idTagInfo behind the decision (status, parentIdTag, expiryDate).
    info: dict
    #: "csms", "list", "cache", or "unknown-offline" (AllowOfflineTxForUnknownId).
    source: str

    @property
    def parent_id_tag(self) -> Optional[str]:
        return self.info.get("parentIdTag")


def id_key(id_tag: Optional[str]) -> Optional[str]:
    """IdToken is a CiString20: compare ids without regard to (ASCII) case."""
    return None if id_tag is None else id_tag.upper()


def same_id(a: Optional[str], b: Optional[str]) -> bool:
    return a is not None and b is not None and a.upper() == b.upper()


def _expiry(info: dict) -> Optional[float]:
    return try_parse_utc(info.get("expiryDate"))


def is_valid(st: "Station", info: dict) -> bool:
    """Accepted and not expired by the charger's clock."""
    if info.get("status") != "Accepted":
        return False
    expiry = _expiry(info)
    return expiry is None or not st.time_known or expiry > st.station_time()


# -------------------------------------------------------------------- the cache
def cache_get(st: "Station", id_tag: str) -> Optional[dict]:
    if not st.keys.bool("AuthorizationCacheEnabled"):
        return None
    row = st.store.execute("SELECT info FROM auth_cache WHERE id_tag=?", (id_tag,)).fetchone()
    return None if row is None else json.loads(row[0])


def remember(st: "Station", id_tag: str, info: dict) -> None:
    """Cache the CSMS's latest word on `id_tag` (not for ids of the local list).

    The cache only saves asking again: a failed write leaves it as it was and does not
    hold up what the answer decides (a de-authorization, a start)."""
    try:
        _remember(st, id_tag, info)
    except Exception as exc:
        if not is_storage_fault(exc):
            raise
        st.storage_failed(exc)


def _remember(st: "Station", id_tag: str, info: dict) -> None:
    if not st.keys.bool("AuthorizationCacheEnabled"):
        return
    local_list = getattr(st, "local_list", None)
    if local_list is not None and local_list.lookup(id_tag) is not None:
        return
    text = json.dumps(info, separators=(",", ":"), sort_keys=True)
    row = st.store.execute("SELECT info FROM auth_cache WHERE id_tag=?", (id_tag,)).fetchone()
    if row is not None and row[0] == text:
        # Unchanged, but refreshed all the same: the bound forgets the least recently
        # refreshed first, so an id the CSMS keeps confirming must not age.
        st.store.execute("UPDATE auth_cache SET updated=? WHERE id_tag=?", (st.now, id_tag))
        return
    with st.store.transaction():
        st.store.execute("INSERT INTO auth_cache(id_tag, info, updated) VALUES(?, ?, ?) "
                         "ON CONFLICT(id_tag) DO UPDATE SET info=excluded.info, "
                         "updated=excluded.updated", (id_tag, text, st.now))
        # The entry just written stays whatever ties in `updated` (refreshed in the same
        # instant): the others make up the rest of the bound.
        st.store.execute("DELETE FROM auth_cache WHERE id_tag IN (SELECT id_tag FROM auth_cache "
                         "WHERE id_tag != ? ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                         (id_tag, CACHE_MAX_ENTRIES - 1))


def clear_cache(st: "Station") -> None:
    st.store.execute("DELETE FROM auth_cache")


@handles("ClearCache")
def clear_cache_request(st: "Station", payload: dict) -> dict:
    if not st.keys.bool("AuthorizationCacheEnabled"):
        return {"status": "Rejected"}
    clear_cache(st)
    log.info("authorization cache cleared by the CSMS")
    return {"status": "Accepted"}


# -------------------------------------------------------------------- deciding
def local_entry(st: "Station", id_tag: str) -> Optional[tuple[dict, str]]:
    """(idTagInfo, "list" | "cache") known locally for `id_tag`; the local list wins."""
    local_list = getattr(st, "local_list", None)
    if local_list is not None:
        info = local_list.lookup(id_tag)
        if info is not None:
            return info, "list"
    info = cache_get(st, id_tag)
    return (info, "cache") if info is not None else None


def decide_offline(st: "Station", id_tag: str) -> Decision:
    """The decision without the CSMS (spec 3.5: local authorization, unknown ids)."""
    local = local_entry(st, id_tag)
    if local is not None:
        info, source = local
        if not st.keys.bool("LocalAuthorizeOffline"):
            return Decision(False, {"status": "Invalid"}, source)
        if not is_valid(st, info):
            status = "Expired" if info.get("status") == "Accepted" else info.get("status")
            return Decision(False, {**info, "status": status}, source)
        return Decision(True, info, source)
    if st.keys.bool("AllowOfflineTxForUnknownId"):
        return Decision(True, {"status": "Accepted"}, "unknown-offline")
    return Decision(False, {"status": "Invalid"}, "unknown-offline")


def authorize(st: "Station", id_tag: str, done: Callable[[Decision], None]) -> None:
    """Decide on `id_tag` and call `done(decision)` (at once, or when the CSMS answers)."""
    online = st.connected and st.accepted
    if not online:
        decision = decide_offline(st, id_tag)
        log.info("idTag %s %s offline (%s)", id_tag,
                 "accepted" if decision.accepted else "refused", decision.source)
        done(decision)
        return
    if st.keys.bool("LocalPreAuthorize"):
        local = local_entry(st, id_tag)
        if local is not None and is_valid(st, local[0]):
            done(Decision(True, local[0], local[1]))
            return

    def answered(payload: dict) -> None:
        info = payload["idTagInfo"]
        remember(st, id_tag, info)
        log.info("idTag %s: CSMS says %s", id_tag, info.get("status"))
        done(Decision(info.get("status") == "Accepted", info, "csms"))

    def failed(reason: str) -> None:
        decision = decide_offline(st, id_tag)
        log.warning("Authorize for %s failed (%s); decided offline: %s", id_tag, reason,
                    "accepted" if decision.accepted else "refused")
        done(decision)

    # The Authorize lane: someone waits at the charger (chargepoint/station.py, whose turn).
    st.send_call("Authorize", {"idTag": id_tag}, on_result=answered, on_error=failed,
                 lane=DRIVER)
