"""TriggerMessage: the CSMS asks for a message now (Remote Trigger profile).

The answer goes out first; the requested message follows it. Triggered messages
may be sent while the BootNotification is still Pending: the CSMS asked for them.
A trigger for a message of which one is already waiting to be sent (a StatusNotification
of the same connector, a Heartbeat) is merged into it and answered Accepted; when the
queue of outgoing CALLs is full it is answered Rejected (chargepoint/protocol/calls.py), so a
CSMS that triggers faster than it answers gets no growing backlog.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from chargepoint.model.link import OTHER
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.trigger")


def _boot(services: Services, connector_id: Optional[int]) -> bool:
    # Not ahead of everything as on connecting: a CSMS triggering it over and over must
    # not hold up the transaction queue.
    return services.boot.send_boot(lane=OTHER)


def _heartbeat(services: Services, connector_id: Optional[int]) -> bool:
    return services.boot.send_heartbeat(before_accept=True)


def _status(services: Services, connector_id: Optional[int]) -> bool:
    ids = sorted(services.connectors) if connector_id is None else [connector_id]
    return all([services.status_reports.send(cid, before_accept=True) for cid in ids])


def _meter_values(services: Services, connector_id: Optional[int]) -> bool:
    return services.metering.trigger(connector_id)


def _diagnostics(services: Services, connector_id: Optional[int]) -> bool:
    return services.link.send_call("DiagnosticsStatusNotification",
                                   {"status": services.diagnostics.status},
                                   before_accept=True)


def _firmware(services: Services, connector_id: Optional[int]) -> bool:
    return services.link.send_call("FirmwareStatusNotification",
                                   {"status": services.firmware.status},
                                   before_accept=True)


#: requestedMessage -> sender(services, connector_id or None) -> whether it will go.
TRIGGERS: dict[str, Callable[[Services, Optional[int]], bool]] = {
    "BootNotification": _boot,
    "Heartbeat": _heartbeat,
    "StatusNotification": _status,
    "MeterValues": _meter_values,
    "DiagnosticsStatusNotification": _diagnostics,
    "FirmwareStatusNotification": _firmware,
}


def answer_trigger(services: Services, payload: dict,
                   senders: dict[str, Callable[[Services, Optional[int]], bool]],
                   operation: str) -> dict:
    """TriggerMessage's answer, and ExtendedTriggerMessage's with its own `senders`: the
    requested message sent, unless it is unknown, for a connector there is not, or the
    queue of outgoing CALLs is full."""
    name = payload["requestedMessage"]
    connector_id = payload.get("connectorId")
    sender = senders.get(name)
    if sender is None:
        return {"status": "NotImplemented"}
    if connector_id is not None and connector_id not in services.connectors:
        return {"status": "Rejected"}
    if not sender(services, connector_id):
        log.warning("%s(%s) rejected: the queue of outgoing CALLs is full", operation, name)
        return {"status": "Rejected"}
    return {"status": "Accepted"}


def trigger_message(services: Services, payload: dict) -> dict:
    return answer_trigger(services, payload, TRIGGERS, "TriggerMessage")
