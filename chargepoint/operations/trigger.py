"""TriggerMessage: the CSMS asks for a message now (Remote Trigger profile).

The answer goes out first; the requested message follows it. Triggered messages
may be sent while the BootNotification is still Pending: the CSMS asked for them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from chargepoint.operations.registry import PROFILES, handles

if TYPE_CHECKING:
    from chargepoint.station import Station

PROFILES.append("RemoteTrigger")

#: requestedMessage -> sender(station, connector_id or None); one per triggerable message.
TRIGGERS: dict[str, Callable[["Station", "int | None"], None]] = {}

def trigger(name: str):
    def register(func):
        TRIGGERS[name] = func
        return func
    return register


@trigger("BootNotification")
def _boot(st: "Station", connector_id) -> None:
    from chargepoint.operations import boot

    boot.send_boot(st)


@trigger("Heartbeat")
def _heartbeat(st: "Station", connector_id) -> None:
    from chargepoint.operations import boot

    boot.send_heartbeat(st, before_accept=True)


@trigger("StatusNotification")
def _status(st: "Station", connector_id) -> None:
    from chargepoint.operations import status

    ids = sorted(st.connectors) if connector_id is None else [connector_id]
    for cid in ids:
        status.send(st, cid, before_accept=True)


@trigger("MeterValues")
def _meter_values(st: "Station", connector_id) -> None:
    from chargepoint.operations import metering

    metering.trigger(st, connector_id)


@trigger("DiagnosticsStatusNotification")
def _diagnostics(st: "Station", connector_id) -> None:
    st.send_call("DiagnosticsStatusNotification", {"status": st.diagnostics_status},
                 before_accept=True)


@trigger("FirmwareStatusNotification")
def _firmware(st: "Station", connector_id) -> None:
    st.send_call("FirmwareStatusNotification", {"status": st.firmware_status},
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
    sender(st, connector_id)
    return {"status": "Accepted"}
