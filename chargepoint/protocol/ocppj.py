"""OCPP-J framing, schema validation and CALLERROR mapping, without any I/O.

`parse_frame` turns a text frame into a `Call`, `CallResult` or `CallError`, or
raises `FrameError` carrying the CALLERROR to answer. Payloads are checked
against the official OCPP 1.6 JSON schemas shipped in the `ocpp` package
(`get_validator`). The framing itself is hand-written because the
`ocpp` package's `unpack` maps malformed frames to 2.0-style error codes and
cannot keep the unique id of a frame whose payload is broken.
"""
from __future__ import annotations

import decimal
import json
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import ocpp  # the package only, for its schema files
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError as SchemaError

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
#: The official OCPP 1.6 schemas as the `ocpp` package ships them, read from here: its
#: `ocpp.messages` and `ocpp.v16` modules would load asyncio and the library's own
#: ChargePoint, about 3 MiB of memory the firmware never uses.
SCHEMA_DIR = os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas")
#: Every action with a schema there (the same names as the package's v16 `Action` enum).
KNOWN_ACTIONS = frozenset(name[:-len(".json")].removesuffix("Response")
                          for name in os.listdir(SCHEMA_DIR)
                          if name.endswith(".json")) | CSMS_ACTIONS

#: Schemas with `multipleOf: 0.1` must be checked on Decimals, not binary floats.
_DECIMAL_SCHEMAS = {(CALL, "SetChargingProfile"), (CALL, "RemoteStartTransaction"),
                    (CALLRESULT, "GetCompositeSchedule")}

_ID_PREFIX = re.compile(r'^\s*\[\s*2\s*,\s*("(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})){1,36}")')

_validators: dict[tuple[str, bool], Draft4Validator] = {}


def get_validator(message_type: int, action: str, decimals: bool = False) -> Draft4Validator:
    """The Draft 4 validator of `action`'s CALL or CALLRESULT schema, read once.

    With `decimals` the schema's numbers are Decimals (for `multipleOf`). An action
    without a schema raises OSError (FileNotFoundError)."""
    name = action + "Response" if message_type == CALLRESULT else action
    validator = _validators.get((name, decimals))
    if validator is None:
        with open(os.path.join(SCHEMA_DIR, name + ".json"), encoding="utf-8-sig") as f:
            schema = json.loads(f.read(), parse_float=decimal.Decimal if decimals else float)
        validator = _validators[(name, decimals)] = Draft4Validator(schema)
    return validator


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


def _encode(frame: list) -> str:
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    if _SURROGATE.search(text):
        # A lone surrogate (read from a "\ud800" escape, as in the unique id of a CALL
        # we answer) cannot be sent as UTF-8; JSON's own escapes carry it unchanged.
        text = json.dumps(frame, separators=(",", ":"))
    return text


def encode_call(unique_id: str, action: str, payload: dict) -> str:
    return _encode([CALL, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict) -> str:
    return _encode([CALLRESULT, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str = "",
                 details: Optional[dict] = None) -> str:
    return _encode([CALLERROR, unique_id, code, description[:255], details or {}])


class _Numbers:
    """json.loads hooks that note the numbers JSON cannot carry and Python reads anyway:
    NaN, Infinity, -Infinity, and literals beyond the double range (1e400 reads as inf);
    and integers beyond 64 bits, which no field can hold (SQLite stores 64)."""

    __slots__ = ("odd", "big")

    def __init__(self) -> None:
        self.odd = self.big = ""

    def integer(self, text: str) -> int:
        value = int(text)
        if not -2 ** 63 <= value < 2 ** 63:
            self.big = text if len(text) <= 24 else text[:20] + "…"
        return value

    def constant(self, name: str) -> float:
        self.odd = name
        return float(name)

    def real(self, text: str) -> float:
        value = float(text)
        if math.isinf(value):
            self.odd = text[:24]
        return value


#: A JSON escape of a UTF-16 surrogate; alone (not as half of a pair) Python reads it
#: into a string that is not Unicode text and cannot be encoded as UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(node: Any) -> bool:
    """Whether a string (key or value) of a parsed frame holds an unpaired surrogate."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def guess_unique_id(text: str) -> Optional[str]:
    """The unique id of a CALL too broken to parse, if its start is readable (a broken
    CALLRESULT or CALLERROR is dropped: an answer is never answered)."""
    match = _ID_PREFIX.match(text[:300])
    if match is None:
        return None
    # The id as a JSON string, escapes and all ("a\"b", "\u00e9"), read as the CSMS wrote it.
    return json.loads(match.group(1), strict=False)


def parse_frame(text: str, max_bytes: int = 262144) -> Frame:
    """Parse one OCPP-J frame. Raises FrameError with the CALLERROR to answer."""
    if len(text) > max_bytes:
        raise FrameError("FormationViolation", f"frame of {len(text)} characters exceeds "
                         f"the {max_bytes} limit", guess_unique_id(text))
    numbers = _Numbers()
    try:
        msg = json.loads(text, parse_constant=numbers.constant, parse_float=numbers.real,
                         parse_int=numbers.integer)
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
        if _SURROGATE_ESCAPE.search(text) and _has_surrogate(msg):
            raise FrameError("FormationViolation", "a string holds an unpaired UTF-16 "
                             "surrogate escape: not Unicode text", uid)
        if numbers.odd:
            raise FrameError("FormationViolation", f"payload holds the number {numbers.odd}, "
                             f"which JSON cannot carry", uid)
        if numbers.big:
            raise FrameError("PropertyConstraintViolation", f"payload holds the integer "
                             f"{numbers.big}, beyond 64 bits", uid)
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


#: Keywords that reject nothing: annotations, "definitions" (reached through "$ref"),
#: "format" (the Draft 4 validator of `get_validator` has no format checker) and
#: "additionalItems" (ignored unless "items" is a list, which `_compile` does not take).
_INERT = frozenset({"$schema", "$id", "id", "title", "description", "javaType", "format",
                    "definitions", "additionalItems"})

#: Draft 4 types as jsonschema's checker tests them, as Python classes; a bool (an int to
#: Python) is only of type "boolean". "number" is stricter (no Decimal).
_TYPES: dict[str, tuple] = {"string": (str,), "object": (dict,), "array": (list,),
                            "boolean": (bool,), "null": (type(None),), "integer": (int,),
                            "number": (int, float)}

Check = Callable[[Any, bool], bool]
_FAST: dict[tuple[int, str], Optional[Check]] = {}


def _compile(schema: Any, root: dict, refs: tuple = ()) -> Optional[Check]:
    """A predicate `check(instance, strict)` that is True only for instances the Draft 4
    validator finds no error in (with strict=False: none but additionalProperties),
    built for the keywords the OCPP 1.6 schemas use. None when the schema uses anything
    else (multipleOf, patternProperties, …): then jsonschema alone decides.

    It may say False for a valid instance (e.g. a Decimal where a number is due); the
    caller then asks jsonschema, which also words every error. Validating an ordinary
    message this way costs a few microseconds instead of tens to over a hundred.
    """
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:                         # Draft 4: $ref replaces its siblings
        ref, prefix, defs = schema["$ref"], "#/definitions/", root.get("definitions")
        if not (isinstance(ref, str) and ref.startswith(prefix) and isinstance(defs, dict)
                and ref[len(prefix):] in defs) or ref in refs:
            return None
        return _compile(defs[ref[len(prefix):]], root, refs + (ref,))
    classes: Optional[tuple] = None
    bool_ok = True
    allowed: Optional[frozenset] = None
    max_length: Optional[int] = None
    min_items: Optional[int] = None
    required: frozenset = frozenset()
    subs: dict[str, Check] = {}
    closed = False
    item_check: Optional[Check] = None
    for key, arg in schema.items():
        if key in _INERT:
            continue
        if key == "type":
            kinds = [arg] if isinstance(arg, str) else arg
            if not isinstance(kinds, list) or not kinds or any(k not in _TYPES for k in kinds):
                return None
            classes = tuple(c for k in kinds for c in _TYPES[k])
            bool_ok = "boolean" in kinds
        elif key == "enum":
            if not isinstance(arg, list) or not all(type(e) is str for e in arg):
                return None
            allowed = frozenset(arg)
        elif key in ("maxLength", "minItems"):
            if type(arg) is not int:
                return None
            if key == "maxLength":
                max_length = arg
            else:
                min_items = arg
        elif key == "required":
            if not isinstance(arg, list) or not all(isinstance(n, str) for n in arg):
                return None
            required = frozenset(arg)
        elif key == "properties":
            if not isinstance(arg, dict):
                return None
            for name, sub in arg.items():
                check = _compile(sub, root, refs)
                if check is None:
                    return None
                subs[name] = check
        elif key == "additionalProperties":
            if arg is not True and (arg is not False or
                                    not isinstance(schema.get("properties", {}), dict)):
                return None
            closed = arg is False
        elif key == "items":
            item_check = _compile(arg, root, refs) if isinstance(arg, dict) else None
            if item_check is None:
                return None
        else:
            return None
    known = frozenset(schema.get("properties", {})) if closed else frozenset()

    def check(v: Any, strict: bool) -> bool:
        if classes is not None and (not isinstance(v, classes) or
                                    (not bool_ok and v.__class__ is bool)):
            return False
        if allowed is not None and not (isinstance(v, str) and v in allowed):
            return False
        if isinstance(v, str):
            return max_length is None or len(v) <= max_length
        if isinstance(v, dict):
            if required and not v.keys() >= required:
                return False
            if closed and strict and not v.keys() <= known:
                return False
            if subs:
                for name, value in v.items():
                    sub = subs.get(name)
                    if sub is not None and not sub(value, strict):
                        return False
        elif isinstance(v, list):
            if min_items is not None and len(v) < min_items:
                return False
            if item_check is not None:
                for value in v:
                    if not item_check(value, strict):
                        return False
        return True
    return check


def validate_payload(message_type: int, action: str, payload: Any, strict: bool = True) -> None:
    """Check `payload` against the official schema; raises OcppError on violation.

    `strict=False` tolerates properties the schema does not define (vendors add them).
    """
    if (message_type, action) in _DECIMAL_SCHEMAS:
        validator = get_validator(message_type, action, decimals=True)
        payload = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    else:
        validator = get_validator(message_type, action)
        key = (message_type, action)
        if key not in _FAST:
            _FAST[key] = _compile(validator.schema, validator.schema)
        fast = _FAST[key]
        if fast is not None and fast(payload, strict):
            return                      # valid: jsonschema would find nothing either
    try:
        errors = sorted(validator.iter_errors(payload), key=lambda e: e.path)
    except decimal.InvalidOperation:
        # multipleOf 0.1 on a Decimal whose quotient has more digits than the context
        # holds (a limit of 1e308): no charging value is that large.
        raise OcppError("PropertyConstraintViolation", "a number is too large to be "
                        "checked as a multiple of 0.1") from None
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
