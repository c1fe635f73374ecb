"""DataTransfer both ways, with a small registry for vendor extensions (TC_062).

A vendor module registers what it answers:

    @vendor_message("com.example", "SetLedColour")
    def set_led(services, data):    # data: the request's `data` string or None
        return "Accepted", None     # status, optional response data string

`@vendor_message("com.example")` with no messageId answers every messageId of that
vendor. A request for an unknown vendorId is answered UnknownVendorId, an unknown
messageId of a known vendor UnknownMessageId. `send_data_transfer` sends one to the
CSMS (after BootNotification is accepted; not queued while offline).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from chargepoint.model.link import Link
from chargepoint.model.services import Services

log = logging.getLogger("chargepoint.data_transfer")

VendorHandler = Callable[[Services, Optional[str]], "tuple[str, Optional[str]]"]

#: vendorId -> {messageId or None (any) -> handler}
VENDORS: dict[str, dict[Optional[str], VendorHandler]] = {}


def vendor_message(vendor_id: str, message_id: Optional[str] = None):
    def register(func: VendorHandler) -> VendorHandler:
        VENDORS.setdefault(vendor_id, {})[message_id] = func
        return func
    return register


def data_transfer(services: Services, payload: dict) -> dict:
    vendor_id = payload["vendorId"]
    handlers = VENDORS.get(vendor_id)
    if handlers is None:
        log.info("DataTransfer for unknown vendorId %r", vendor_id)
        return {"status": "UnknownVendorId"}
    message_id = payload.get("messageId")
    handler = handlers.get(message_id) or handlers.get(None)
    if handler is None:
        return {"status": "UnknownMessageId"}
    status, data = handler(services, payload.get("data"))
    answer = {"status": status}
    if data is not None:
        answer["data"] = data
    return answer


def send_data_transfer(link: Link, vendor_id: str, message_id: Optional[str] = None,
                       data: Optional[str] = None,
                       on_result: Optional[Callable[[dict], None]] = None,
                       on_error: Optional[Callable[[str], None]] = None) -> None:
    body = {"vendorId": vendor_id}
    if message_id is not None:
        body["messageId"] = message_id
    if data is not None:
        body["data"] = data
    link.send_call("DataTransfer", body, on_result=on_result, on_error=on_error)
