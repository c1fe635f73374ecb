"""ClearCache: the CSMS empties the authorization cache (chargepoint/model/authorization.py)."""
from __future__ import annotations

from chargepoint.model.services import Services


def clear_cache(services: Services, payload: dict) -> dict:
    return {"status": "Accepted" if services.authorization.clear_cache() else "Rejected"}
