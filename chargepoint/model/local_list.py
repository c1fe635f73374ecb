"""The local authorization list: ids the CSMS installed, with their idTagInfo.

The CSMS installs a list of ids with their idTagInfo, whole (Full) or as changes
(Differential, each with a higher `listVersion`; an entry without idTagInfo removes
the id). The list is one SQLite table (owned here) replaced or patched inside one
transaction, so a power cut in the middle of an update leaves the old list whole.
`LocalAuthListEnabled` false switches the list off without forgetting it (the version
then reads -1). It is consulted before the authorization cache
(chargepoint/model/authorization.py).
"""
from __future__ import annotations

import json
from typing import Optional

from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store

_VERSION_KEY = "local_list_version"


class ListTooLong(Exception):
    """The update would leave more ids than `LocalAuthListMaxLength`."""


class LocalList:
    """The installed list, read from SQLite on every lookup (no copy to go stale)."""

    def __init__(self, keys: OcppKeys, store: Store):
        self._keys = keys
        self._store = store

    @property
    def enabled(self) -> bool:
        return self._keys.bool("LocalAuthListEnabled")

    def lookup(self, id_tag: str) -> Optional[dict]:
        if not self.enabled:
            return None
        row = self._store.execute("SELECT info FROM local_list WHERE id_tag=?",
                                  (id_tag,)).fetchone()
        return None if row is None else json.loads(row[0])

    def size(self) -> int:
        return self._store.execute("SELECT COUNT(*) FROM local_list").fetchone()[0]

    def version(self) -> int:
        """-1 when switched off, 0 when empty, else the version of the last update."""
        if not self.enabled:
            return -1
        if self.size() == 0:
            return 0
        return int(self._store.get_state(_VERSION_KEY, 0))

    def update(self, version: int, entries: list[dict], full: bool) -> None:
        """Apply one SendLocalList whole, or raise ListTooLong and change nothing (call
        inside the caller's `store.transaction()` to join its other writes)."""
        store = self._store
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
            limit = self._keys.int("LocalAuthListMaxLength")
            if size > limit:
                raise ListTooLong(f"the list would hold {size} ids, more than "
                                  f"LocalAuthListMaxLength ({limit})")
            store.set_state(_VERSION_KEY, version)
