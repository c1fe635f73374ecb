"""The local authorization list: SendLocalList and GetLocalListVersion.

The CSMS installs a list of ids with their idTagInfo, whole (Full) or as changes
(Differential, each with a higher `listVersion`; an entry without idTagInfo removes
the id). The list is one SQLite table replaced or patched inside one transaction,
so a power cut in the middle of an update leaves the old list whole.

The list is consulted before the authorization cache (chargepoint/operations/
authorize.py `local_entry`): with `LocalPreAuthorize` a valid listed id starts at
once, and offline `LocalAuthorizeOffline` admits it. Ids on the list are not cached.
`LocalAuthListEnabled` false switches the list off without forgetting it
(GetLocalListVersion then answers -1).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Optional

from chargepoint.operations.registry import PROFILES, handles

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.local_list")

PROFILES.append("LocalAuthListManagement")

_VERSION_KEY = "local_list_version"


class LocalList:
    """The installed list, read from SQLite on every lookup (no copy to go stale)."""

    def __init__(self, st: "Station"):
        self.st = st

    @property
    def enabled(self) -> bool:
        return self.st.keys.bool("LocalAuthListEnabled")

    def lookup(self, id_tag: str) -> Optional[dict]:
        if not self.enabled:
            return None
        row = self.st.store.execute("SELECT info FROM local_list WHERE id_tag=?",
                                    (id_tag,)).fetchone()
        return None if row is None else json.loads(row[0])

    def size(self) -> int:
        return self.st.store.execute("SELECT COUNT(*) FROM local_list").fetchone()[0]

    def version(self) -> int:
        """-1 when switched off, 0 when empty, else the version of the last update."""
        if not self.enabled:
            return -1
        if self.size() == 0:
            return 0
        return int(self.st.store.get_state(_VERSION_KEY, 0))

    def update(self, version: int, entries: list[dict], full: bool) -> str:
        """Apply one SendLocalList; returns its UpdateStatus."""
        store = self.st.store
        with store.transaction():
            if full:
                store.execute("DELETE FROM local_list")
            for entry in entries:
                id_tag, info = entry["idTag"], entry.get("idTagInfo")
                if info is None:
                    store.execute("DELETE FROM local_list WHERE id_tag=?", (id_tag,))
                else:
                    store.execute("INSERT INTO local_list(id_tag, info) VALUES(?, ?) "
                                  "ON CONFLICT(id_tag) DO UPDATE SET info=excluded.info",
                                  (id_tag, json.dumps(info, separators=(",", ":"))))
            size = store.execute("SELECT COUNT(*) FROM local_list").fetchone()[0]
            limit = self.st.keys.int("LocalAuthListMaxLength")
            if size > limit:
                raise _TooLong(f"the list would hold {size} ids, more than "
                               f"LocalAuthListMaxLength ({limit})")
            store.set_state(_VERSION_KEY, version)
            # Ids now on the list leave the cache: the list wins and is not duplicated.
            store.execute("DELETE FROM auth_cache WHERE id_tag IN "
                          "(SELECT id_tag FROM local_list)")
        return "Accepted"


class _TooLong(Exception):
    pass


def install(st: "Station") -> None:
    st.local_list = LocalList(st)


@handles("GetLocalListVersion")
def get_local_list_version(st: "Station", payload: dict) -> dict:
    return {"listVersion": st.local_list.version()}


@handles("SendLocalList")
def send_local_list(st: "Station", payload: dict) -> dict:
    local_list: LocalList = st.local_list
    if not local_list.enabled:
        return {"status": "NotSupported"}
    version = payload["listVersion"]
    entries = payload.get("localAuthorizationList") or []
    full = payload["updateType"] == "Full"
    limit = st.keys.int("SendLocalListMaxLength")
    if len(entries) > limit:
        log.warning("SendLocalList with %d entries refused (SendLocalListMaxLength %d)",
                    len(entries), limit)
        return {"status": "Failed"}
    if len({e["idTag"].upper() for e in entries}) != len(entries):
        log.warning("SendLocalList refused: an idTag appears twice")
        return {"status": "Failed"}
    if full and any(e.get("idTagInfo") is None for e in entries):
        log.warning("SendLocalList refused: a Full update entry has no idTagInfo")
        return {"status": "Failed"}
    if not full and version <= local_list.version():
        log.warning("differential SendLocalList version %d is not above the installed %d",
                    version, local_list.version())
        return {"status": "VersionMismatch"}
    try:
        status = local_list.update(version, entries, full)
    except _TooLong as exc:
        log.warning("SendLocalList refused: %s", exc)
        return {"status": "Failed"}
    log.info("local authorization list %s update to version %d: %d entries sent, %d held",
             "full" if full else "differential", version, len(entries), local_list.size())
    return {"status": status}
