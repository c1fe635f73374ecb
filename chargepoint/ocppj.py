"""OCPP-J framing, schema validation and CALLERROR mapping, without any I/O.

`parse_frame` turns a text frame into a `Call`, `CallResult` or `CallError`, or
raises `FrameError` carrying the CALLERROR to answer. Payloads are checked
against the official OCPP 1.6 JSON schemas shipped in the `ocpp` package
(`ocpp.messages.get_validator`). The framing itself is hand-written because the
`ocpp` package's `unpack` maps malformed frames to 2.0-style error codes and
cannot keep the unique id of a frame whose payload is broken.
"""
from __future__ import annotations

import decimal
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Union

from jsonschema.exceptions import ValidationError as SchemaError
from ocpp.messages import get_validator
from ocpp.v16.enums import Action

log = logging.getLogger(__name__)

CALL, CALLRESULT, CALLERROR = 2, 3, 4

#: Every action OCPP 1.6 defines, by direction.
CSMS_ACTIONS = frozenset({
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
    "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
    "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction",
    "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage",
    "UnlockConnector", "UpdateFirmware",
    # OCPP 1.6 security whitepaper extensions (schemas ship with the ocpp package)
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
    "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
})
KNOWN_ACTIONS = frozenset(a.value for a in Action) | CSMS_ACTIONS

#: Schemas with `multipleOf: 0.1` must be checked on Decimals, not binary floats.
_DECIMAL_SCHEMAS = {(CALL, "SetChargingProfile"), (CALL, "RemoteStartTransaction"),
                    (CALLRESULT, "GetCompositeSchedule")}

_ID_PREFIX = re.compile(r'^\s*\[\s*[234]\s*,\s*"([^"\\]{1,36})"')


class OcppError(Exception):
    """An error to answer with a CALLERROR (code is an OCPP 1.6 ErrorCode)."""

    def __init__(self, code: str, description: str = "", details: Optional[dict] = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


class FrameError(OcppError):
    """A frame that cannot be processed; `unique_id` is what to answer to (or None)."""

    def __init__(self, code: str, description: str, unique_id: Optional[str],
                 answerable: bool = True):
        super().__init__(code, description)
        self.unique_id = unique_id
        self.answerable = answerable


@dataclass(frozen=True)
class Call:
    unique_id: str
    action: str
    payload: dict


@dataclass(frozen=True)
class CallResult:
    unique_id: str
    payload: Any


@dataclass(frozen=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: Any


Frame = Union[Call, CallResult, CallError]


def new_unique_id() -> str:
    return str(uuid.uuid4())


def encode_call(unique_id: str, action: str, payload: dict) -> str:
    return json.dumps([CALL, unique_id, action, payload], separators=(",", ":"),
                      ensure_ascii=False)


def encode_result(unique_id: str, payload: dict) -> str:
    return json.dumps([CALLRESULT, unique_id, payload], separators=(",", ":"),
                      ensure_ascii=False)


def encode_error(unique_id: str, code: str, description: str = "",
                 details: Optional[dict] = None) -> str:
    return json.dumps([CALLERROR, unique_id, code, description[:255], details or {}],
                      separators=(",", ":"), ensure_ascii=False)


def guess_unique_id(text: str) -> Optional[str]:
    """The unique id of a frame too broken to parse, if its start is readable."""
    match = _ID_PREFIX.match(text[:200])
    return match.group(1) if match else None


def parse_frame(text: str, max_bytes: int = 262144) -> Frame:
    """Parse one OCPP-J frame. Raises FrameError with the CALLERROR to answer."""
    if len(text) > max_bytes:
        raise FrameError("FormationViolation", f"frame of {len(text)} characters exceeds "
                         f"the {max_bytes} limit", guess_unique_id(text))
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        uid = guess_unique_id(text)
        raise FrameError("FormationViolation", "frame is not valid JSON", uid,
                         answerable=uid is not None) from None
    if not isinstance(msg, list) or not msg:
        raise FrameError("FormationViolation", "frame is not a JSON array", None, False)
    type_id = msg[0]
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) and 0 < len(msg[1]) <= 36 \
        else None
    if type_id not in (CALL, CALLRESULT, CALLERROR) or isinstance(type_id, bool):
        raise FrameError("FormationViolation", f"unknown MessageTypeId {type_id!r}", uid,
                         answerable=uid is not None)
    if uid is None:
        raise FrameError("FormationViolation", "UniqueId must be a string of 1 to 36 "
                         "characters", None, False)
    if type_id == CALL:
        if len(msg) != 4:
            raise FrameError("ProtocolError" if len(msg) < 4 else "FormationViolation",
                             f"a CALL has 4 elements, this one has {len(msg)}", uid)
        _, _, action, payload = msg
        if not isinstance(action, str):
            raise FrameError("FormationViolation", "Action must be a string", uid)
        if not isinstance(payload, dict):
            raise FrameError("FormationViolation", "payload must be a JSON object", uid)
        return Call(uid, action, payload)
    if type_id == CALLRESULT:
        if len(msg) != 3:
            raise FrameError("FormationViolation", "a CALLRESULT has 3 elements", uid, False)
        return CallResult(uid, msg[2])
    if len(msg) != 5 or not isinstance(msg[2], str):
        raise FrameError("FormationViolation", "a CALLERROR has 5 elements", uid, False)
    return CallError(uid, msg[2], str(msg[3]), msg[4])


def _schema_error_code(err: SchemaError) -> str:
    return {
        "required": "OccurenceConstraintViolation",
        "minItems": "OccurenceConstraintViolation",
        "maxItems": "OccurenceConstraintViolation",
        "type": "TypeConstraintViolation",
        "additionalProperties": "FormationViolation",
    }.get(err.validator, "PropertyConstraintViolation")


_STRING_PROBLEMS = {"maxLength": "longer than {} characters",
                    "minLength": "shorter than {} characters",
                    "enum": "not one of {}", "type": "not of type {}",
                    "pattern": "does not match {}", "format": "not a valid {}"}


def _describe(err: SchemaError) -> str:
    """The violation in words, without quoting a string value: it may be a secret
    (a too-long AuthorizationKey must not reach the log or the CSMS's error text)."""
    where = "/".join(str(p) for p in err.absolute_path)
    message = err.message
    if isinstance(err.instance, str) and err.validator in _STRING_PROBLEMS:
        message = "value " + _STRING_PROBLEMS[err.validator].format(err.validator_value)
    return f"{where}: {message}" if where else message


def validate_payload(message_type: int, action: str, payload: Any, strict: bool = True) -> None:
    """Check `payload` against the official schema; raises OcppError on violation.

    `strict=False` tolerates properties the schema does not define (vendors add them).
    """
    if (message_type, action) in _DECIMAL_SCHEMAS:
        validator = get_validator(message_type, action, "1.6", parse_float=decimal.Decimal)
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    else:
        validator = get_validator(message_type, action, "1.6")
    errors = sorted(validator.iter_errors(payload), key=lambda e: e.path)
    if not strict:
        errors = [e for e in errors if e.validator != "additionalProperties"]
    if errors:
        # Report the most specific problem first: type before value checks.
        order = ["type", "required", "additionalProperties"]
        errors.sort(key=lambda e: order.index(e.validator) if e.validator in order else 9)
        first = errors[0]
        raise OcppError(_schema_error_code(first), _describe(first)[:255])


def check_outgoing(message_type: int, action: str, payload: Any) -> bool:
    """Validate something we are about to send; a failure is our bug, logged loudly."""
    try:
        validate_payload(message_type, action, payload)
    except OcppError as exc:
        log.error("BUG: outgoing %s%s violates the OCPP 1.6 schema: %s", action,
                  "" if message_type == CALL else " response", exc)
        return False
    except OSError:
        log.error("BUG: no schema for outgoing %s", action)
        return False
    return True
