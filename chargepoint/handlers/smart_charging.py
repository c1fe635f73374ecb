"""SetChargingProfile, ClearChargingProfile, GetCompositeSchedule (the profiles and their
limit on the pilot: chargepoint/model/smart_charging.py)."""
from __future__ import annotations

import logging

from chargepoint.model import charging_profiles as cp
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.smart_charging")


def set_charging_profile(services: Services, payload: dict) -> dict:
    smart = services.smart
    cid = payload["connectorId"]
    body = payload["csChargingProfiles"]
    if cid not in services.connectors:
        return {"status": "Rejected"}
    why = smart.why_invalid(cid, body)
    if why:
        log.warning("SetChargingProfile %s rejected: %s", body["chargingProfileId"], why)
        return {"status": "Rejected"}
    conn = services.connectors[cid]
    tx_local = conn.tx.local_id if body["chargingProfilePurpose"] == "TxProfile" else None
    smart.install(cp.Profile.from_ocpp(cid, body, services.clock.station_time()), tx_local)
    log.info("charging profile %d (%s, stack %d) installed on connector %d",
             body["chargingProfileId"], body["chargingProfilePurpose"], body["stackLevel"], cid)
    return {"status": "Accepted"}


def clear_charging_profile(services: Services, payload: dict) -> dict:
    smart = services.smart
    doomed = smart.matching(payload.get("id"), payload.get("connectorId"),
                            payload.get("chargingProfilePurpose"), payload.get("stackLevel"))
    if not doomed:
        return {"status": "Unknown"}
    smart.clear(doomed)
    log.info("cleared charging profile(s) %s", ", ".join(str(p.profile_id) for p in doomed))
    return {"status": "Accepted"}


def get_composite_schedule(services: Services, payload: dict) -> dict:
    cid = payload["connectorId"]
    if cid not in services.connectors:
        return {"status": "Rejected"}
    unit = payload.get("chargingRateUnit") or "A"
    duration = payload["duration"]
    if duration < 0:
        log.warning("GetCompositeSchedule rejected: a negative duration (%d s)", duration)
        return {"status": "Rejected"}
    start, result = services.smart.composite(cid, duration, unit)
    reach = int(result.duration)
    if reach < duration:
        why = (f"the charger looks at most {cp.COMPOSITE_HORIZON_S} s ahead"
               if reach == cp.COMPOSITE_HORIZON_S else
               f"ChargingScheduleMaxPeriods ({len(result.periods)}) periods reach that far")
        log.info("GetCompositeSchedule for %d s on connector %d answered for its first %d s: "
                 "%s", duration, cid, reach, why)
    return {"status": "Accepted", "connectorId": cid, "scheduleStart": cp.format_time(start),
            "chargingSchedule": {"duration": reach, "startSchedule": cp.format_time(start),
                                 "chargingRateUnit": unit,
                                 "chargingSchedulePeriod": result.periods}}
