"""One module per group of OCPP operations; each registers the CSMS requests it answers.

To find what happens when the CSMS sends an action, grep for `@handles("<Action>")`.
The rest of the core: chargepoint/station.py (dispatch, RPC, timers) and
chargepoint/connector.py (status, faults, the contactor/pilot safety rule).

- boot.py            BootNotification, Heartbeat (charger-initiated)
- status.py          StatusNotification (charger-initiated)
- authorize.py       Authorize, the authorization cache, offline rules; ClearCache
- transactions.py    StartTransaction, StopTransaction, power-loss recovery
- metering.py        MeterValues: sampled, clock-aligned, StopTransaction.transactionData
- remote.py          RemoteStartTransaction, RemoteStopTransaction
- reset.py           Reset (Soft, Hard)
- unlock.py          UnlockConnector
- availability.py    ChangeAvailability
- reservation.py     ReserveNow, CancelReservation
- local_list.py      SendLocalList, GetLocalListVersion
- smart_charging.py  Set/ClearChargingProfile, GetCompositeSchedule, the limit on the pilot
- configuration.py   GetConfiguration, ChangeConfiguration
- data_transfer.py   DataTransfer (both ways) and the vendor registry
- trigger.py         TriggerMessage

The driver's side of a session (tags, plugging in and out) is chargepoint/sessions.py;
the durable queue of transaction messages is chargepoint/outbox.py.
"""
from __future__ import annotations

from chargepoint.operations.registry import HANDLERS, PROFILES, Deferred, handles  # noqa: F401


def load_all() -> None:
    """Import every operation module so their handlers register."""
    from chargepoint.operations import (authorize, availability, boot,  # noqa: F401
                                        configuration, data_transfer, local_list, metering,
                                        remote, reservation, reset, smart_charging, status,
                                        transactions, trigger, unlock)
