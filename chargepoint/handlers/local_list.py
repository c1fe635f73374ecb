"""SendLocalList and GetLocalListVersion (the list: chargepoint/model/local_list.py).

With `LocalPreAuthorize` a valid listed id starts at once, and offline
`LocalAuthorizeOffline` admits it; ids on the list are not cached
(chargepoint/model/authorization.py). `LocalAuthListEnabled` false switches the list off
without forgetting it (GetLocalListVersion then answers -1).
"""
from __future__ import annotations

import logging

from chargepoint.model.local_list import ListTooLong
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.local_list")


def get_local_list_version(services: Services, payload: dict) -> dict:
    return {"listVersion": services.local_list.version()}


def send_local_list(services: Services, payload: dict) -> dict:
    local_list = services.local_list
    if not local_list.enabled:
        return {"status": "NotSupported"}
    version = payload["listVersion"]
    entries = payload.get("localAuthorizationList") or []
    full = payload["updateType"] == "Full"
    limit = services.keys.int("SendLocalListMaxLength")
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
        services.authorization.update_local_list(version, entries, full)
    except ListTooLong as exc:
        log.warning("SendLocalList refused: %s", exc)
        return {"status": "Failed"}
    log.info("local authorization list %s update to version %d: %d entries sent, %d held",
             "full" if full else "differential", version, len(entries), local_list.size())
    return {"status": "Accepted"}
