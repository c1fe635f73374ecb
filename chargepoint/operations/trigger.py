"""TriggerMessage: the CSMS asks for a message now (Remote Trigger profile).

The answer goes out first; the requested message follows it. Triggered messages
may be sent while the BootNotification is still Pending: the CSMS asked for them.
A trigger for a message of which one is already waiting to be sent (a StatusNotification
of the same connector, a Heartbeat) is merged into it and answered Accepted; when the
queue of outgoing CALLs is full it is answered Rejected (chargepoint/calls.py), so a
CSMS that triggers faster than it answers gets no growing backlog.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from chargepoint.calls import OTHER
from chargepoint.operations.registry import PROFILES, handles

if TYPE_CHECKING:
    from chargepoint.station import Station

log = logging.getLogger("chargepoint.trigger")

PROFILES.append("RemoteTrigger")

#: requestedMessage -> sender(station, connector_id or None) -> whether it will go; one
#: per triggerable message.
TRIGGERS: dict[str, Callable[["Station", "int | None"], bool]] = {}

def trigger(name: str):
    def register(func):
        TRIGGERS[name] = func
        return func
    return register


@trigger("BootNotification")
def _boot(st: "Station", connector_id) -> bool:
    from chargepoint.operations import boot

    # Not ahead of everything as on connecting: a CSMS triggering it over and over must
    # not hold up the transaction queue.
    return boot.send_boot(st, lane=OTHER)


@trigger("Heartbeat")
def _heartbeat(st: "Station", connector_id) -> bool:
    from chargepoint.operations import boot

    return boot.send_heartbeat(st, before_accept=True)


@trigger("StatusNotification")
def _status(st: "Station", connector_id) -> bool:
    from chargepoint.operations import status

    ids = sorted(st.connectors) if connector_id is None else [connector_id]
    return all([status.send(st, cid, before_accept=True) for cid in ids])


@trigger("MeterValues")
def _meter_values(st: "Station", connector_id) -> bool:
    from chargepoint.operations import metering

    return metering.trigger(st, connector_id)


@trigger("DiagnosticsStatusNotification")
def _diagnostics(st: "Station", connector_id) -> bool:
    return st.send_call("DiagnosticsStatusNotification", {"status": st.diagnostics_status},
                        before_accept=True)


@trigger("FirmwareStatusNotification")
def _firmware(st: "Station", connector_id) -> bool:
    return st.send_call("FirmwareStatusNotification", {"status": st.firmware_status},
                        before_accept=True)


@handles("TriggerMessage")
def trigger_message(st: "Station", payload: dict) -> dict:
    name = payload["requestedMessage"]
    connector_id = payload.get("connectorId")
    sender = TRIGGERS.get(name)
    if sender is None:
        return {"status": "NotImplemented"}
    if connector_id is not None and connector_id not in st.connectors:
        return {"status": "Rejected"}
    if not sender(st, connector_id):
        log.warning("TriggerMessage(%s) rejected: %d CALLs are already waiting", name,
                    len(st.calls))
        return {"status": "Rejected"}
    return {"status": "Accepted"}
