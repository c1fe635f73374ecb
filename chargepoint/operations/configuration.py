"""GetConfiguration and ChangeConfiguration over the keys in `chargepoint.ocpp_keys`.

Key names are CiString50: a key asked for or changed in any case is found
(`OcppKeys.spec`), and the answer spells it as this charger does.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chargepoint.ocpp_keys import key_id
from chargepoint.ocppj import OcppError
from chargepoint.operations.registry import handles

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.configuration")


def _entry(st: "Station", name: str) -> dict:
    spec = st.keys.specs[name]
    entry = {"key": name, "readonly": spec.readonly}
    if not spec.write_only:  # AuthorizationKey: known, but its value never leaves
        entry["value"] = st.keys.raw(name)
    return entry


@handles("GetConfiguration")
def get_configuration(st: "Station", payload: dict) -> dict:
    wanted = payload.get("key")
    if not wanted:
        return {"configurationKey": [_entry(st, s.name) for s in st.keys.visible()]}
    limit = st.keys.int("GetConfigurationMaxKeys")
    if len(wanted) > limit:
        raise OcppError("OccurenceConstraintViolation",
                        f"at most {limit} keys per request (GetConfigurationMaxKeys)")
    known: dict[str, None] = {}                 # in the order asked, each key once
    unknown: dict[str, str] = {}                # key_id -> the first spelling asked
    for name in wanted:
        spec = st.keys.spec(name)
        if spec is not None:
            known.setdefault(spec.name)
        else:
            unknown.setdefault(key_id(name), name)
    answer: dict = {}
    if known:
        answer["configurationKey"] = [_entry(st, k) for k in known]
    if unknown:
        answer["unknownKey"] = list(unknown.values())
    return answer


@handles("ChangeConfiguration")
def change_configuration(st: "Station", payload: dict) -> dict:
    key, value = payload["key"], payload["value"]
    status = st.keys.change(key, value)
    spec = st.keys.spec(key)
    shown = "***" if spec is not None and spec.write_only else repr(value)
    key = key if spec is None else spec.name
    if status in ("Accepted", "RebootRequired"):
        log.info("configuration %s set to %s (%s)", key, shown, status)
    else:
        log.warning("configuration %s = %s %s: %s", key, shown, status,
                    st.keys.why_rejected(key, value) or "not supported")
    return {"status": status}
