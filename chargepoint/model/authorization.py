"""May this idTag charge now? The authorization cache, the local list and the offline rules.

Online, the CSMS decides (Authorize.req), unless `LocalPreAuthorize` lets a valid
local entry (local list, then cache) start at once. Offline, or when the CSMS
does not answer, a valid local entry admits the id if `LocalAuthorizeOffline`, and an
id known nowhere is admitted only if `AllowOfflineTxForUnknownId`. Every idTagInfo
the CSMS sends (Authorize, StartTransaction and StopTransaction confirmations)
refreshes the cache when `AuthorizationCacheEnabled`. This module owns the
`auth_cache` table; the list is chargepoint/model/local_list.py.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable, Optional

from chargepoint.clock import try_parse_utc
from chargepoint.model.clock import StationClock
from chargepoint.model.link import DRIVER, Link
from chargepoint.model.local_list import LocalList
from chargepoint.model.write_faults import WriteFaults, is_storage_fault
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store

log = logging.getLogger("chargepoint.authorize")

#: Most entries kept in the authorization cache; the least recently refreshed go first.
CACHE_MAX_ENTRIES = 1000


@dataclass(frozen=True)
class Decision:
    accepted: bool
    #: The idTagInfo behind the decision (status, parentIdTag, expiryDate).
    info: dict
    #: "csms", "list", "cache", "remote" or "unknown-offline" (AllowOfflineTxForUnknownId).
    source: str

    @property
    def parent_id_tag(self) -> Optional[str]:
        return self.info.get("parentIdTag")


def id_key(id_tag: Optional[str]) -> Optional[str]:
    """IdToken is a CiString20: compare ids without regard to (ASCII) case."""
    return None if id_tag is None else id_tag.upper()


def same_id(a: Optional[str], b: Optional[str]) -> bool:
    return a is not None and b is not None and a.upper() == b.upper()


class Authorization:
    """Decisions on idTags, and the cache behind them. Loop thread only."""

    def __init__(self, keys: OcppKeys, store: Store, clock: StationClock, link: Link,
                 local_list: LocalList, write_faults: WriteFaults):
        self._keys = keys
        self._store = store
        self._clock = clock
        self._link = link
        self.local_list = local_list
        self._write_faults = write_faults

    def is_valid(self, info: dict) -> bool:
        """Accepted and not expired by the charger's clock."""
        if info.get("status") != "Accepted":
            return False
        expiry = try_parse_utc(info.get("expiryDate"))
        return expiry is None or not self._clock.known or expiry > self._clock.station_time()

    # ---------------------------------------------------------------- the cache
    def cache_get(self, id_tag: str) -> Optional[dict]:
        if not self._keys.bool("AuthorizationCacheEnabled"):
            return None
        row = self._store.execute("SELECT info FROM auth_cache WHERE id_tag=?",
                                  (id_tag,)).fetchone()
        return None if row is None else json.loads(row[0])

    def remember(self, id_tag: str, info: dict) -> None:
        """Cache the CSMS's latest word on `id_tag` (not for ids of the local list).

        The cache only saves asking again: a failed write leaves it as it was and does not
        hold up what the answer decides (a de-authorization, a start)."""
        try:
            self._remember(id_tag, info)
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            self._write_faults.failed(exc)

    def _remember(self, id_tag: str, info: dict) -> None:
        if not self._keys.bool("AuthorizationCacheEnabled"):
            return
        if self.local_list.lookup(id_tag) is not None:
            return
        store = self._store
        now = self._clock.now
        text = json.dumps(info, separators=(",", ":"), sort_keys=True)
        row = store.execute("SELECT info FROM auth_cache WHERE id_tag=?", (id_tag,)).fetchone()
        if row is not None and row[0] == text:
            # Unchanged, but refreshed all the same: the bound forgets the least recently
            # refreshed first, so an id the CSMS keeps confirming must not age.
            store.execute("UPDATE auth_cache SET updated=? WHERE id_tag=?", (now, id_tag))
            return
        with store.transaction():
            store.execute("INSERT INTO auth_cache(id_tag, info, updated) VALUES(?, ?, ?) "
                          "ON CONFLICT(id_tag) DO UPDATE SET info=excluded.info, "
                          "updated=excluded.updated", (id_tag, text, now))
            # The entry just written stays whatever ties in `updated` (refreshed in the
            # same instant): the others make up the rest of the bound.
            store.execute("DELETE FROM auth_cache WHERE id_tag IN (SELECT id_tag FROM "
                          "auth_cache WHERE id_tag != ? ORDER BY updated DESC LIMIT -1 "
                          "OFFSET ?)", (id_tag, CACHE_MAX_ENTRIES - 1))

    def clear_cache(self) -> bool:
        """ClearCache: False when the cache is switched off."""
        if not self._keys.bool("AuthorizationCacheEnabled"):
            return False
        self._store.execute("DELETE FROM auth_cache")
        log.info("authorization cache cleared by the CSMS")
        return True

    def update_local_list(self, version: int, entries: list[dict], full: bool) -> None:
        """Apply one SendLocalList (raises local_list.ListTooLong, changing nothing). Ids
        now on the list leave the cache in the same commit: the list wins and is not
        duplicated."""
        with self._store.transaction():
            self.local_list.update(version, entries, full)
            for entry in entries:
                if entry.get("idTagInfo") is not None:
                    self._store.execute("DELETE FROM auth_cache WHERE id_tag=?",
                                        (entry["idTag"],))

    # ---------------------------------------------------------------- deciding
    def local_entry(self, id_tag: str) -> Optional[tuple[dict, str]]:
        """(idTagInfo, "list" | "cache") known locally for `id_tag`; the local list wins."""
        info = self.local_list.lookup(id_tag)
        if info is not None:
            return info, "list"
        info = self.cache_get(id_tag)
        return (info, "cache") if info is not None else None

    def known_parent(self, id_tag: str) -> tuple[bool, Optional[str]]:
        """(known, parentIdTag) of `id_tag` from a valid local entry (list, then cache)."""
        local = self.local_entry(id_tag)
        if local is None or not self.is_valid(local[0]):
            return False, None
        return True, local[0].get("parentIdTag")

    def decide_offline(self, id_tag: str) -> Decision:
        """The decision without the CSMS (spec 3.5: local authorization, unknown ids)."""
        keys = self._keys
        local = self.local_entry(id_tag)
        if local is not None:
            info, source = local
            if not keys.bool("LocalAuthorizeOffline"):
                return Decision(False, {"status": "Invalid"}, source)
            if not self.is_valid(info):
                status = "Expired" if info.get("status") == "Accepted" else info.get("status")
                return Decision(False, {**info, "status": status}, source)
            return Decision(True, info, source)
        if keys.bool("AllowOfflineTxForUnknownId"):
            return Decision(True, {"status": "Accepted"}, "unknown-offline")
        return Decision(False, {"status": "Invalid"}, "unknown-offline")

    def authorize(self, id_tag: str, done: Callable[[Decision], None]) -> None:
        """Decide on `id_tag` and call `done(decision)` (at once, or when the CSMS answers)."""
        if not self._link.online:
            decision = self.decide_offline(id_tag)
            log.info("idTag %s %s offline (%s)", id_tag,
                     "accepted" if decision.accepted else "refused", decision.source)
            done(decision)
            return
        if self._keys.bool("LocalPreAuthorize"):
            local = self.local_entry(id_tag)
            if local is not None and self.is_valid(local[0]):
                done(Decision(True, local[0], local[1]))
                return

        def answered(payload: dict) -> None:
            info = payload["idTagInfo"]
            self.remember(id_tag, info)
            log.info("idTag %s: CSMS says %s", id_tag, info.get("status"))
            done(Decision(info.get("status") == "Accepted", info, "csms"))

        def failed(reason: str) -> None:
            decision = self.decide_offline(id_tag)
            log.warning("Authorize for %s failed (%s); decided offline: %s", id_tag, reason,
                        "accepted" if decision.accepted else "refused")
            done(decision)

        # The Authorize lane: someone waits at the charger (chargepoint/protocol/rpc.py).
        self._link.send_call("Authorize", {"idTag": id_tag}, on_result=answered,
                             on_error=failed, lane=DRIVER)
