"""ChangeAvailability: take a connector, or the whole charger (0), in or out of service
(the rules, stored and scheduled changes: chargepoint/model/availability.py)."""
from __future__ import annotations

from chargepoint.model.services import Services


def change_availability(services: Services, payload: dict) -> dict:
    cid, kind = payload["connectorId"], payload["type"]
    if cid not in services.connectors:
        return {"status": "Rejected"}
    return {"status": services.availability.change(cid, kind == "Operative")}
