"""GetConfiguration and ChangeConfiguration over the keys in `chargepoint.ocpp_keys`.

Key names are CiString50: a key asked for or changed in any case is found
(`OcppKeys.spec`), and the answer spells it as this charger does.
"""
from __future__ import annotations

import logging
from chargepoint.model.services import Services
from chargepoint.ocpp_keys import OcppKeys, key_id
from chargepoint.protocol.ocppj import OcppError

log = logging.getLogger("chargepoint.configuration")


def _entry(keys: OcppKeys, name: str) -> dict:
    spec = keys.specs[name]
    entry = {"key": name, "readonly": spec.readonly}
    if not spec.write_only:  # AuthorizationKey: known, but its value never leaves
        entry["value"] = keys.raw(name)
    return entry


def get_configuration(services: Services, payload: dict) -> dict:
    keys = services.keys
    wanted = payload.get("key")
    if not wanted:
        return {"configurationKey": [_entry(keys, s.name) for s in keys.visible()]}
    limit = keys.int("GetConfigurationMaxKeys")
    if len(wanted) > limit:
        raise OcppError("OccurenceConstraintViolation",
                        f"at most {limit} keys per request (GetConfigurationMaxKeys)")
    known: dict[str, None] = {}                 # in the order asked, each key once
    unknown: dict[str, str] = {}                # key_id -> the first spelling asked
    for name in wanted:
        spec = keys.spec(name)
        if spec is not None:
            known.setdefault(spec.name)
        else:
            unknown.setdefault(key_id(name), name)
    answer: dict = {}
    if known:
        answer["configurationKey"] = [_entry(keys, k) for k in known]
    if unknown:
        answer["unknownKey"] = list(unknown.values())
    return answer


def change_configuration(services: Services, payload: dict) -> dict:
    keys = services.keys
    key, value = payload["key"], payload["value"]
    spec = keys.spec(key)
    if spec is not None and spec.name == "SecurityProfile":
        return _security_profile(services, value)
    status = keys.change(key, value)
    shown = "***" if spec is not None and spec.write_only else repr(value)
    key = key if spec is None else spec.name
    if status in ("Accepted", "RebootRequired"):
        log.info("configuration %s set to %s (%s)", key, shown, status)
    else:
        log.warning("configuration %s = %s %s: %s", key, shown, status,
                    keys.why_rejected(key, value) or "not supported")
    return {"status": status}


def _security_profile(services: Services, value: str) -> dict:
    """Upgrades only, once their prerequisites are there (chargepoint/model/security_profile.py)."""
    status, why = services.security_profile.change(value)
    if status == "Accepted":
        log.info("configuration SecurityProfile set to %r (Accepted)", value)
    else:
        log.warning("configuration SecurityProfile = %r %s: %s", value, status, why)
    return {"status": status}
