"""Frame fuzzing: random and mutated OCPP-J frames from the Central System's side, sent to
the real firmware process over a real WebSocket.

    .venv/bin/python bench/fuzz_frames.py                       # 100,000 frames, seed 1
    .venv/bin/python bench/fuzz_frames.py --frames 2000 --seed 7
    .venv/bin/python bench/fuzz_frames.py --quick               # 2,000 frames

A minimal CSMS on the `websockets` library (no `ocpp` library, no validation on the way
out) accepts the firmware (`python -m chargepoint run`, simulated hardware, one connector,
tests/crash_driver.py `Charger`), answers its own CALLs, and sends it frames in batches,
each batch closed by a marker CALL whose answer says that everything before it has been
read (the firmware answers in order). The frames are:

- random text and random bytes (binary frames), now and then a text frame that is not
  UTF-8 (fatal to a WebSocket link by RFC 6455: the firmware must reconnect);
- broken JSON: valid frames truncated, with a character deleted, inserted or replaced;
- valid JSON of the wrong shape: not an array, wrong MessageTypeId, wrong length, ids
  that are not strings of 1 to 36 characters, actions that are not strings, payloads
  that are not objects;
- CALLs for every OCPP 1.6 action (and the security extensions, the charge point's own
  actions, unknown ones) with payloads mutated from valid examples: fields removed,
  added or of another type, huge strings, deep nesting, huge and non-finite numbers
  (NaN, Infinity, 1e400, integers of thousands of digits), control characters, unpaired
  surrogates and other unicode; a few unmutated;
- CALLRESULTs and CALLERRORs with unknown ids.

A frame is a well-formed CALL when it parses as JSON (as Python reads it, NaN included)
into `[2, id, action, {...}]` with MessageTypeId the number 2 (2.0 is the same JSON
number), a string id of 1 to 36 characters and a string action. Frames are at most 1 MiB
(the link reads a frame whole before the charger can refuse it by size). Checked:

- every well-formed CALL gets exactly one answer, a CALLRESULT or a CALLERROR with its
  id, whatever the action and payload; a CALLERROR carries an OCPP 1.6 error code, a
  CALLRESULT is valid against the action's schema;
- nothing else is answered more than once, no CALLRESULT or CALLERROR from us is
  answered, no answer carries an id we never sent;
- the process never dies; the link stays up, except after a frame that must end it (a
  text frame that is not UTF-8, an accepted Reset, a new AuthorizationKey), and then the
  firmware reconnects;
- afterwards (availability, profiles, reservations, the local list and the keys put
  back) a charging session runs from tap to tap with its StartTransaction, MeterValues
  and StopTransaction, and a Heartbeat arrives.

Accepted Resets restart the firmware in the same process (exec); the benchmark counts them.
The frames and answers of a batch that broke a rule are written to the work directory.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import datetime
import json
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import table, torture_report  # noqa: E402
from chargepoint.transport import FRAME_CAP_FACTOR  # noqa: E402
from chargepoint.protocol import ocppj  # noqa: E402
from tests.crash_driver import Charger  # noqa: E402

CP_ID = "CP-FUZZ"
#: Ids of the CALLs the benchmark itself sends (markers, restoring, the final checks).
MARK_PREFIX = "mark-"
FINAL_TAG = "FINAL01"
#: The largest frame sent: four times the firmware's own limit (config.py's default
#: `max_frame_bytes`, 262,144), so that refusals by size are tested too.
MAX_SENT = 4 * 262144
#: Frames larger than this end the link unread (chargepoint/transport.py).
FRAME_CAP = FRAME_CAP_FACTOR * 262144

ERROR_CODES = frozenset({
    "NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
    "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
    "TypeConstraintViolation", "GenericError"})

# ------------------------------------------------------------------------------ examples
FUTURE = "2030-01-01T00:00:00Z"
PAST = "2020-01-01T00:00:00Z"
SCHEDULE = {"chargingRateUnit": "A", "duration": 3600, "startSchedule": PAST,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
                                       {"startPeriod": 600, "limit": 10.5}],
            "minChargingRate": 6.0}
PROFILE = {"chargingProfileId": 11, "stackLevel": 1, "chargingProfilePurpose":
           "TxDefaultProfile", "chargingProfileKind": "Absolute", "validFrom": PAST,
           "validTo": FUTURE, "chargingSchedule": SCHEDULE}
TX_PROFILE = {"chargingProfileId": 12, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
              "chargingProfileKind": "Relative", "chargingSchedule": {
                  "chargingRateUnit": "W", "chargingSchedulePeriod": [
                      {"startPeriod": 0, "limit": 7400.0}]}}
MAX_PROFILE = {"chargingProfileId": 13, "stackLevel": 0, "chargingProfilePurpose":
               "ChargePointMaxProfile", "chargingProfileKind": "Recurring",
               "recurrencyKind": "Daily", "chargingSchedule": {
                   "chargingRateUnit": "A", "startSchedule": PAST, "duration": 86400,
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}]}}
CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
HASH = {"hashAlgorithm": "SHA256", "issuerNameHash": "a" * 64, "issuerKeyHash": "b" * 64,
        "serialNumber": "01"}

#: Valid payloads of every action; each frame starts from one of these.
EXAMPLES: dict[str, list[dict]] = {
    "CancelReservation": [{"reservationId": 7}],
    "ChangeAvailability": [{"connectorId": 0, "type": "Operative"},
                           {"connectorId": 1, "type": "Inoperative"}],
    "ChangeConfiguration": [{"key": k, "value": v} for k, v in (
        ("HeartbeatInterval", "300"), ("MeterValueSampleInterval", "1"),
        ("ConnectionTimeOut", "60"), ("LocalAuthorizeOffline", "true"),
        ("LocalPreAuthorize", "false"), ("AuthorizationCacheEnabled", "true"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import"),
        ("ClockAlignedDataInterval", "0"), ("WebSocketPingInterval", "0"),
        ("TransactionMessageAttempts", "3"), ("LocalAuthListEnabled", "true"),
        ("StopTransactionOnEVSideDisconnect", "true"), ("NoSuchKey", "1"),
        ("GetConfigurationMaxKeys", "50"), ("NumberOfConnectors", "2"))],
    "ClearCache": [{}],
    "ClearChargingProfile": [{}, {"id": 11}, {"connectorId": 1, "chargingProfilePurpose":
                                              "TxDefaultProfile", "stackLevel": 1}],
    "DataTransfer": [{"vendorId": "com.example", "messageId": "ping", "data": "hello"},
                     {"vendorId": "x"}],
    "GetCompositeSchedule": [{"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"},
                             {"connectorId": 0, "duration": 60}],
    "GetConfiguration": [{}, {"key": ["HeartbeatInterval", "NoSuchKey"]}],
    "GetDiagnostics": [{"location": "ftp://example.com/diag", "retries": 1,
                        "retryInterval": 10, "startTime": PAST, "stopTime": FUTURE}],
    "GetLocalListVersion": [{}],
    "RemoteStartTransaction": [{"idTag": "FUZZTAG", "connectorId": 1},
                               {"idTag": "FUZZTAG", "chargingProfile": TX_PROFILE}],
    "RemoteStopTransaction": [{"transactionId": 1}],
    "ReserveNow": [{"connectorId": 1, "expiryDate": FUTURE, "idTag": "FUZZTAG",
                    "reservationId": 7},
                   {"connectorId": 0, "expiryDate": FUTURE, "idTag": "FUZZTAG",
                    "parentIdTag": "PARENT", "reservationId": 8}],
    "Reset": [{"type": "Soft"}, {"type": "Hard"}],
    "SendLocalList": [{"listVersion": 2, "updateType": "Full", "localAuthorizationList": [
                          {"idTag": "LOCAL1", "idTagInfo": {"status": "Accepted",
                                                            "expiryDate": FUTURE,
                                                            "parentIdTag": "PARENT"}}]},
                      {"listVersion": 3, "updateType": "Differential",
                       "localAuthorizationList": [{"idTag": "LOCAL2"}]}],
    "SetChargingProfile": [{"connectorId": 1, "csChargingProfiles": PROFILE},
                           {"connectorId": 0, "csChargingProfiles": MAX_PROFILE},
                           {"connectorId": 1, "csChargingProfiles":
                            dict(TX_PROFILE, transactionId=1)}],
    "TriggerMessage": [{"requestedMessage": m} for m in (
        "BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
        "Heartbeat", "StatusNotification")] + [
        {"requestedMessage": "MeterValues", "connectorId": 1},
        {"requestedMessage": "StatusNotification", "connectorId": 1}],
    "UnlockConnector": [{"connectorId": 1}],
    "UpdateFirmware": [{"location": "http://example.com/fw.bin", "retrieveDate": FUTURE,
                        "retries": 2}],
    # The security whitepaper's requests (schemas in the ocpp package)
    "CertificateSigned": [{"certificateChain": CERT}],
    "DeleteCertificate": [{"certificateHashData": HASH}],
    "ExtendedTriggerMessage": [{"requestedMessage": "Heartbeat"}],
    "GetInstalledCertificateIds": [{"certificateType": "CentralSystemRootCertificate"}],
    "GetLog": [{"logType": "DiagnosticsLog", "requestId": 1,
                "log": {"remoteLocation": "ftp://example.com/log"}}],
    "InstallCertificate": [{"certificateType": "CentralSystemRootCertificate",
                            "certificate": CERT}],
    "SignedUpdateFirmware": [{"requestId": 1, "firmware": {
        "location": "http://example.com/fw", "retrieveDateTime": FUTURE,
        "signingCertificate": CERT, "signature": "c2ln"}}],
    # The charge point's own actions, sent the wrong way, and actions OCPP does not know
    "BootNotification": [{"chargePointVendor": "v", "chargePointModel": "m"}],
    "Heartbeat": [{}],
    "Authorize": [{"idTag": "X"}],
    "StatusNotification": [{"connectorId": 1, "errorCode": "NoError", "status": "Available"}],
    "StartTransaction": [{"connectorId": 1, "idTag": "X", "meterStart": 0,
                          "timestamp": PAST}],
    "MakeCoffee": [{"strength": 3}],
    "getconfiguration": [{}],
    "": [{}],
}
#: How often each action is picked, relative to 1: an accepted Reset restarts the firmware
#: (a second or so), so it is kept rare.
WEIGHTS = {"Reset": 0.05, "MakeCoffee": 0.3, "getconfiguration": 0.2, "": 0.2}


class Raw:
    """JSON text put into a frame as it stands (what json.dumps cannot write)."""

    def __init__(self, text: str):
        self.text = text


def dumps(value: Any, ascii_only: bool = False) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=ascii_only) + ":"
                              + dumps(v, ascii_only) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


#: Numbers JSON (or Python's reading of it) makes awkward.
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "-1e308", "1e-400",
           "-0", "-0.0", "0.1e1", "1E2", "4.9e-324", "9007199254740993", "2147483648",
           "-2147483649", "18446744073709551616", "123456789012345678901234567890",
           "1" + "0" * 5000, "-" + "9" * 4400, "0.30000000000000004", "1.5", "-1"]
#: Strings as JSON text: escapes Python keeps as unpaired surrogates, NULs, quotes.
ESCAPED = ['"\\ud800"', '"\\udfff"', '"a\\udc00b"', '"\\ud83d"', '"\\u0000"',
           '"a\\"b"', '"\\\\"', '"\\/"', '"\\ufeff"', '"\\u202e"', '"\\b\\f\\n\\r\\t"']
UNICODE = ["é", "日本語", "🔌⚡", "\u202eRTL", "e\u0301", "\x00", "\u2028\u2029", "\ufeff",
           "Ω" * 300, "\U0010ffff", "\x7f\x1b[31m", "Ĳ", "ß", "İ", " ", "", "null", "0",
           "2030-13-45T99:99:99Z", "2026-02-30T00:00:00Z", "1970-01-01T00:00:00Z",
           "9999-12-31T23:59:59.999999999Z", "-1", "true", "[]", "{}", "%s%n", "../../etc"]


def random_unicode(rng: random.Random, size: int) -> str:
    out = []
    for _ in range(size):
        plane = rng.random()
        if plane < 0.6:
            out.append(chr(rng.randrange(0x20, 0x7f)))
        elif plane < 0.7:
            out.append(chr(rng.randrange(0, 0x20)))
        elif plane < 0.9:
            out.append(chr(rng.randrange(0x80, 0xd800)))
        else:
            out.append(chr(rng.randrange(0xe000, 0x110000)))
    return "".join(out)


def deep(rng: random.Random) -> Raw:
    depth = rng.choice((20, 100, 500, 990, 1500, 5000, 100000))
    kind = rng.random()
    if kind < 0.5:
        return Raw("[" * depth + "]" * depth)
    if kind < 0.8:
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw('[{"a":' * (depth // 2) + "null" + "}]" * (depth // 2))


# ------------------------------------------------------------------------------ frames
@dataclass
class Frame:
    data: Any                     # str (text frame) or bytes
    text: bool                    # sent as a text frame
    kind: str                     # the generator's category
    cls: str = "none"             # "expect", "may", "none" or "fatal"
    uid: Optional[str] = None     # the id an answer would carry
    action: Optional[str] = None
    payload: Any = None


#: The id at the start of a broken CALL, as a reader of the text can see it: a JSON
#: string of 1 to 36 characters or escapes.
_READABLE_ID = re.compile(
    r'^\s*\[\s*2\s*,\s*("(?:[^"\\]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})){1,36}")')


def classify(frame: Frame) -> Frame:
    """Whether an answer is required ("expect"), allowed ("may": a broken frame whose id
    can be read, at most one answer), wrong ("none") or the link must end ("fatal")."""
    if not frame.text:
        frame.cls = "none"
        return frame
    data = frame.data
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > FRAME_CAP:                # refused from its header: the link ends
        frame.cls = "fatal"
        return frame
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            frame.cls = "fatal"
            return frame
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        match = _READABLE_ID.match(data[:300])
        frame.cls, frame.uid = ("may", json.loads(match.group(1), strict=False)) if match \
            else ("none", None)
        return frame
    if isinstance(msg, list) and len(msg) >= 2 and isinstance(msg[1], str):
        frame.uid = msg[1]
    if (isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and type(msg[0]) is not bool
            and isinstance(msg[1], str) and 1 <= len(msg[1]) <= 36
            and isinstance(msg[2], str) and isinstance(msg[3], dict)):
        frame.cls, frame.action, frame.payload = "expect", msg[2], msg[3]
    elif (isinstance(msg, list) and msg and msg[0] in (3, 4)) or frame.uid is None:
        frame.cls = "none"                        # an answer, or nothing to answer to
    else:
        frame.cls = "may"                         # broken CALL with a readable id
        if frame.uid is not None and not 1 <= len(frame.uid) <= 36:
            frame.cls, frame.uid = "none", None
    return frame


class FrameGen:
    """Seeded frames; every id a frame carries is new, so each answer names one frame."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.actions = sorted(EXAMPLES)
        self.weights = [WEIGHTS.get(a, 1.0) for a in self.actions]
        self._ids: set[str] = set()

    def new_id(self, prefix: str = "f") -> str:
        while True:
            uid = f"{prefix}{self.rng.getrandbits(40):010x}"
            if uid not in self._ids:
                self._ids.add(uid)
                return uid

    def next(self) -> Frame:
        while True:
            frame = self._next()
            if len(frame.data) <= MAX_SENT:
                return frame

    def _next(self) -> Frame:
        r = self.rng.random()
        if r < 0.05:
            frame = self.random_text()
        elif r < 0.07:
            frame = self.binary()
        elif r < 0.0705:
            frame = Frame(bytes([0x5b, 0x32, 0x2c, 0x22]) + self.rng.randbytes(8) + b"\xff\xfe",
                          True, "not-utf8")
        elif r < 0.19:
            frame = self.broken_json()
        elif r < 0.31:
            frame = self.wrong_shape()
        elif r < 0.37:
            frame = self.odd_id()
        elif r < 0.44:
            frame = self.answer()
        else:
            frame = self.call()
        return classify(frame)

    # -- payloads
    def example(self) -> tuple[str, dict]:
        action = self.rng.choices(self.actions, self.weights)[0]
        return action, copy.deepcopy(self.rng.choice(EXAMPLES[action]))

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            return Raw(rng.choice(NUMBERS))
        if r < 0.25:
            return Raw(rng.choice(ESCAPED))
        if r < 0.4:
            return rng.choice(UNICODE)
        if r < 0.5:
            return random_unicode(rng, rng.randrange(0, 40))
        if r < 0.6:
            return rng.choice((None, True, False, 0, -1, 1, 2**31, -2**63, 0.5, 1e300))
        if r < 0.65:
            return self.huge_string()
        if r < 0.7:
            return deep(rng)
        if r < 0.85 and depth < 3:
            return [self.value(depth + 1) for _ in range(rng.randrange(0, 4))]
        if depth < 3:
            return {self.key(): self.value(depth + 1) for _ in range(rng.randrange(0, 4))}
        return rng.randrange(-5, 100)

    def key(self) -> str:
        return self.rng.choice(("x", "vendorExtra", "", "key", "idTag", "connectorId", "é",
                                "\x00", "a" * 300, "__proto__", "constructor"))

    def huge_string(self) -> Any:
        rng = self.rng
        size = rng.choice((1000, 5000, 20000, 60000)) if rng.random() < 0.98 else \
            rng.choice((200000, 300000))
        text = rng.choice(("A", "é", "🔌", "\\")) * size
        return text

    def mutate(self, payload: Any) -> Any:
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            paths = list(_paths(payload))
            path = rng.choice(paths)
            op = rng.random()
            if not path:                                    # the whole payload
                if op < 0.3:
                    payload = {}
                elif op < 0.6 and isinstance(payload, dict):
                    payload[self.key()] = self.value()
                else:
                    payload = {self.key(): self.value() for _ in range(rng.randrange(1, 4))}
                continue
            parent = _get(payload, path[:-1])
            leaf = path[-1]
            if op < 0.2 and isinstance(parent, dict):
                del parent[leaf]                            # a field left out
            elif op < 0.3 and isinstance(parent, dict):
                parent[self.key()] = self.value()           # a field added
            elif op < 0.7:
                parent[leaf] = self.value()                 # another type or value
            elif op < 0.8:
                current = parent[leaf]
                if isinstance(current, str):
                    parent[leaf] = current + rng.choice(UNICODE)
                elif isinstance(current, (int, float)) and not isinstance(current, bool):
                    parent[leaf] = rng.choice((current + 1, -current, current * 1000,
                                               current + 0.5, str(current)))
                else:
                    parent[leaf] = self.value()
            elif op < 0.9 and isinstance(parent[leaf], list):
                parent[leaf] = parent[leaf] * rng.choice((0, 2, 50, 1000))
            else:
                parent[leaf] = rng.choice((Raw(rng.choice(NUMBERS)), Raw(rng.choice(ESCAPED)),
                                           deep(rng), self.huge_string()))
        return payload

    # -- categories
    def call(self) -> Frame:
        action, payload = self.example()
        mutated = self.rng.random() < 0.9
        if mutated:
            payload = self.mutate(payload)
        uid = self.new_id()
        text = dumps([2, uid, action, payload], ascii_only=self.rng.random() < 0.3)
        if self.rng.random() < 0.05:
            text = " \n" + text.replace(",", " ,\t") + "\r\n"   # whitespace is allowed
        return Frame(text, True, "call-mutated" if mutated else "call-valid")

    def random_text(self) -> Frame:
        size = self.rng.choice((0, 1, 5, 50, 500))
        return Frame(random_unicode(self.rng, size), True, "random-text")

    def binary(self) -> Frame:
        if self.rng.random() < 0.5:
            data = self.rng.randbytes(self.rng.choice((0, 1, 16, 400)))
        else:
            data = json.dumps([2, self.new_id(), "Heartbeat", {}]).encode()
        return Frame(data, False, "binary")

    def broken_json(self) -> Frame:
        rng = self.rng
        action, payload = self.example()
        text = dumps([2, self.new_id("j"), action, payload])
        op = rng.random()
        at = rng.randrange(0, len(text) + 1)
        if op < 0.3:
            text = text[:at]
        elif op < 0.5:
            text = text[:at] + text[at + 1:]
        elif op < 0.7:
            text = text[:at] + rng.choice('[]{},:"\\ x0\x00\'') + text[at:]
        elif op < 0.8:
            text = text.replace('"', "'")
        elif op < 0.9:
            text = text[:-1] + ",]"
        else:
            text = text + rng.choice(("x", "]", " []", "\x00", "{"))
        return Frame(text, True, "broken-json")

    def wrong_shape(self) -> Frame:
        rng = self.rng
        uid = self.new_id("w")
        action, payload = self.example()
        shapes = [
            2, "2", None, True, 1.5, {}, {"2": uid}, [], [2], [2, uid], [2, uid, action],
            [2, uid, action, payload, {}], [2, uid, action, payload, payload, 1],
            ["2", uid, action, payload], [2.0, uid, action, payload], [True, uid, action, payload],
            [0, uid, action, payload], [1, uid, action, payload], [5, uid, action, payload],
            [-2, uid, action, payload], [2 ** 70, uid, action, payload],
            [None, uid, action, payload], [2, uid, 123, payload], [2, uid, None, payload],
            [2, uid, [action], payload], [2, uid, {"a": action}, payload],
            [2, uid, action, []], [2, uid, action, "{}"], [2, uid, action, None],
            [2, uid, action, 0], [2, uid, action, [payload]],
            [[2, uid, action, payload]], {"frame": [2, uid, action, payload]},
            [3, uid], [3, uid, payload, {}], [4, uid], [4, uid, 123, "", {}],
            [4, uid, "GenericError"], [4, uid, "GenericError", None, None],
        ]
        return Frame(dumps(rng.choice(shapes)), True, "wrong-shape")

    def odd_id(self) -> Frame:
        rng = self.rng
        n = self.new_id("")
        ids = [Raw(json.dumps("é" + n, ensure_ascii=False)), Raw(json.dumps('a"b' + n)),
               Raw(json.dumps("a\\b" + n)), Raw('"\\ud800' + n + '"'),
               Raw('"' + n + '\\udfff"'), Raw(json.dumps(" " + n)), Raw(json.dumps(n + "\x00")),
               Raw(json.dumps(("id" + n).ljust(36, "x"))), Raw(json.dumps("🔌" + n)),
               # not ids: too long, empty, other types
               Raw(json.dumps(("id" + n).ljust(37, "x"))), Raw('""'),
               Raw(str(int(n[:8], 16))), None, Raw("[" + json.dumps(n) + "]"),
               Raw('{"id":' + json.dumps(n) + "}"), True]
        action, payload = self.example()
        if rng.random() < 0.3:
            payload = self.mutate(payload)
        return Frame(dumps([2, rng.choice(ids), action, payload]), True, "odd-id")

    def answer(self) -> Frame:
        rng = self.rng
        uid = self.new_id("r")
        shapes = [[3, uid, {}], [3, uid, {"status": "Accepted"}], [3, uid, self.value()],
                  [4, uid, "GenericError", "", {}], [4, uid, "NoSuchCode", "x", {}],
                  [4, uid, "InternalError", self.value(), self.value()],
                  [3, uid, {"currentTime": "2030-01-01T00:00:00Z"}],
                  [3, uid, {"idTagInfo": {"status": "Accepted"}, "transactionId": 5}]]
        return Frame(dumps(rng.choice(shapes)), True, "answer-unknown-id")


def _paths(node: Any, path: tuple = ()):
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, path + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _paths(child, path + (i,))


def _get(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


# ------------------------------------------------------------------------------ the CSMS
def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class FuzzCsms:
    """A raw OCPP-J endpoint: answers the firmware's CALLs, hands its answers to waiters."""

    def __init__(self):
        self.conn = None
        self.connections = 0
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        #: Every answer from the firmware: id -> list of parsed frames.
        self.answers: dict[Any, list] = collections.defaultdict(list)
        self.waiters: dict[Any, asyncio.Future] = {}
        self.calls: list[tuple[float, str, dict]] = []    # (monotonic, action, payload)
        self.bad_frames: list[str] = []                   # unparseable frames from it
        #: Connections whose every received frame has been read (their handler ended).
        self.drained: set = set()
        self.tx_ids = 0
        self.server = None
        self.port = 0

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        self.server = await serve(self._handle, "127.0.0.1", 0, subprotocols=["ocpp1.6"],
                                  ping_interval=None, compression=None, max_size=None,
                                  max_queue=None)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, conn) -> None:
        old = self.conn
        self.conn = conn
        self.connections += 1
        self.closed.clear()
        self.connected.set()
        if old is not None:
            await old.close()
        try:
            async for text in conn:
                self._frame(conn, text)
        except Exception:
            pass
        finally:
            self.drained.add(conn)
            if self.conn is conn:
                self.conn = None
                self.connected.clear()
                self.closed.set()
                for waiter in self.waiters.values():
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("link closed"))

    def _frame(self, conn, text) -> None:
        try:
            msg = json.loads(text)
            kind = msg[0]
        except Exception:
            self.bad_frames.append(repr(text)[:300])
            return
        if kind == 2 and len(msg) == 4:
            _, uid, action, payload = msg
            self.calls.append((time.monotonic(), action, payload))
            asyncio.ensure_future(self._send(conn, [3, uid, self._reply(action)]))
            return
        if kind in (3, 4) and len(msg) >= 3:
            uid = msg[1]
            try:
                self.answers[uid].append(msg)
            except TypeError:                     # an unhashable id
                self.bad_frames.append(repr(text)[:300])
                return
            waiter = self.waiters.pop(uid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            return
        self.bad_frames.append(repr(text)[:300])

    async def _send(self, conn, frame) -> None:
        try:
            await conn.send(json.dumps(frame))
        except Exception:
            pass

    def _reply(self, action: str) -> dict:
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": _now_iso(), "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": _now_iso()}
        if action in ("Authorize", "StopTransaction"):
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            self.tx_ids += 1
            return {"transactionId": self.tx_ids, "idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        return {}

    async def call(self, action: str, payload: dict, timeout: float = 10.0) -> list:
        """A well-formed CALL of ours; its answer (raises TimeoutError, ConnectionError)."""
        conn = self.conn
        if conn is None:
            raise ConnectionError("not connected")
        uid = f"{MARK_PREFIX}{time.monotonic_ns():x}"
        future = asyncio.get_running_loop().create_future()
        self.waiters[uid] = future
        await conn.send(json.dumps([2, uid, action, payload]))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiters.pop(uid, None)

    async def wait_call(self, action: str, since: float, timeout: float,
                        predicate=lambda p: True) -> Optional[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, name, payload in self.calls:
                if at >= since and name == action and isinstance(payload, dict) \
                        and predicate(payload):
                    return payload
            await asyncio.sleep(0.05)
        return None


# ------------------------------------------------------------------------------ the run
@dataclass
class FuzzResult:
    seed: int
    frames: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    classes: collections.Counter = field(default_factory=collections.Counter)
    answered: int = 0                 # well-formed CALLs answered exactly once
    callresults: int = 0
    callerrors: collections.Counter = field(default_factory=collections.Counter)
    may_answered: int = 0             # broken frames with a readable id that were answered
    excused: int = 0                  # left unanswered by a link a frame was meant to end
    missing: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    wrongly_answered: list = field(default_factory=list)
    stray: list = field(default_factory=list)
    bad_answers: list = field(default_factory=list)
    drops_expected: int = 0
    drops_unexpected: int = 0
    reconnects: int = 0
    resets: int = 0
    deaths: int = 0
    logged_errors: int = 0
    final_session: bool = False
    heartbeat: bool = False
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return (f"{self.frames} frames ({self.bytes_sent / 1e6:.1f} MB) in {self.seconds:.1f} s "
                f"= {rate:,.0f} frames/s; {self.classes['expect']} well-formed CALLs, "
                f"{self.answered} answered exactly once ({self.callresults} CALLRESULT, "
                f"{sum(self.callerrors.values())} CALLERROR), {len(self.missing)} unanswered, "
                f"{len(self.duplicated)} answered twice, {self.excused} left unanswered by a "
                f"link a frame was meant to end; {self.may_answered} of "
                f"{self.classes['may']} broken frames with a readable id answered; "
                f"{len(self.wrongly_answered)} answers to frames that must not be answered, "
                f"{len(self.stray)} stray answers, {len(self.bad_answers)} malformed answers; "
                f"{self.drops_expected} link drops by fatal frames, {self.drops_unexpected} "
                f"unexpected; {self.resets} resets; {self.deaths} process deaths; "
                f"{self.logged_errors} exceptions logged; final session "
                f"{'ok' if self.final_session else 'FAILED'}, heartbeat "
                f"{'ok' if self.heartbeat else 'MISSING'}")


MARKER = ("GetConfiguration", {"key": ["HeartbeatInterval"]})


def _may_end_link(frame: Frame) -> bool:
    if frame.cls == "fatal" or frame.action == "Reset":
        return True
    return frame.action == "ChangeConfiguration" and isinstance(frame.payload, dict) and \
        frame.payload.get("key") == "AuthorizationKey"


def _fatal_answer(frame: Frame, answer: list) -> bool:
    """An answer after which the firmware drops the link on purpose."""
    if answer[0] != 3 or not isinstance(answer[2], dict):
        return False
    status = answer[2].get("status")
    if frame.action == "Reset":
        return status == "Accepted"
    if frame.action == "ChangeConfiguration" and isinstance(frame.payload, dict):
        return frame.payload.get("key") == "AuthorizationKey" and \
            status in ("Accepted", "RebootRequired")
    return False


class Fuzzer:
    def __init__(self, frames: int, seed: int, workdir: Path, batch: int = 100,
                 progress=None):
        self.total = frames
        self.rng = random.Random(seed)
        self.gen = FrameGen(self.rng)
        self.workdir = workdir
        self.batch = batch
        self.progress = progress or (lambda text: None)
        self.result = FuzzResult(seed)
        self.csms = FuzzCsms()
        self.charger: Optional[Charger] = None
        #: Sent frames that carry an id, by id, and the ids of each batch not judged yet.
        self.by_id: dict[Any, Frame] = {}
        self.batch_ids: dict[int, list] = {}
        self.checked: set = set()
        self.reserved: set = set()
        #: An answer (accepted Reset, new AuthorizationKey) or a frame (not UTF-8) was
        #: meant to end the link; the next drop is expected.
        self.drop_expected = False

    # -- the process
    def _spawn(self) -> None:
        charger = Charger(self.workdir, self.csms.url, cp_id=CP_ID)
        # A Hard Reset runs the reboot command: here a harmless one, after which no system
        # stop comes, so the firmware restarts itself at once rather than waiting for one.
        text = charger.config.read_text()
        charger.config.write_text(text.replace(
            "[system]\n", '[system]\nreboot_command = ["true"]\nreboot_wait_s = 0\n', 1))
        charger.spawn()
        self.charger = charger

    def _alive(self) -> bool:
        return self.charger.proc.poll() is None

    # -- the run
    async def run(self) -> FuzzResult:
        res = self.result
        await self.csms.start()
        self._spawn()
        try:
            await asyncio.wait_for(self.csms.connected.wait(), 20)
            await self._settle()
            keys = await self._keys()
            started = time.monotonic()
            number = 0
            last_report = started
            pending: list[Frame] = []
            made = 0
            while made < self.total or pending:
                frame = self.gen.next() if made < self.total else None
                made += frame is not None
                # A frame that may end the link goes alone, after a marker: what came
                # before it is all answered, what it leaves unanswered is itself.
                alone = frame is not None and _may_end_link(frame)
                if pending and (alone or frame is None or len(pending) >= self.batch):
                    number += 1
                    await self._batch(number, pending)
                    pending = []
                if alone:
                    number += 1
                    await self._batch(number, [frame])
                elif frame is not None:
                    pending.append(frame)
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    self.progress(f"  {res.frames} frames, "
                                  f"{res.frames / (last_report - started):,.0f}/s, "
                                  f"{len(res.problems)} problems")
            res.seconds = time.monotonic() - started
            await asyncio.sleep(1.0)                   # late (deferred) answers
            self._account()
            await self._restore(keys)
            await self._final_session()
        finally:
            if self.charger is not None:
                if not self._alive():
                    res.deaths += 1
                    res.problems.append(f"the firmware died (exit code "
                                        f"{self.charger.proc.returncode})")
                self.charger.terminate()
            await self.csms.stop()
            res.logged_errors = self._logged_errors()
            if res.logged_errors:
                res.problems.append(f"{res.logged_errors} exceptions in the firmware's log")
        return res

    async def _settle(self) -> None:
        """Until the firmware answers a marker (booted, statuses sent)."""
        for _ in range(100):
            try:
                await self.csms.call(*MARKER, timeout=5)
                return
            except (ConnectionError, TimeoutError):
                await asyncio.sleep(0.2)
        raise RuntimeError("the firmware never answered:\n" + self.charger.tail())

    async def _batch(self, number: int, frames: list[Frame]) -> None:
        res = self.result
        conn = self.csms.conn
        ids = self.batch_ids[number] = []
        try:
            if conn is None:
                raise ConnectionError("not connected at the start of the batch")
            for frame in frames:
                if frame.uid is not None and frame.uid not in self.by_id:
                    self.by_id[frame.uid] = frame
                    ids.append(frame.uid)
                # Counted and judged before the send: the firmware may refuse a fatal frame
                # from its header and close the link while the rest is still being written.
                res.frames += 1
                res.bytes_sent += len(frame.data)
                res.kinds[frame.kind] += 1
                res.classes[frame.cls] += 1
                if frame.cls == "fatal":
                    self.drop_expected = True
                await conn.send(frame.data, text=frame.text)
                if frame.cls == "fatal":
                    break                          # the link is gone: wait for the next
            if self.drop_expected:
                raise ConnectionError("a frame that ends the link was sent")
            await self.csms.call(*MARKER, timeout=30)
        except Exception as exc:  # noqa: BLE001 - a closed link, a timeout: judged below
            await self._recover(number, conn, frames, exc)
            return
        self._note_fatal_answers(frames)
        self._account(number)

    def _note_fatal_answers(self, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.uid is not None and any(_fatal_answer(frame, answer) for answer in
                                             self.csms.answers.get(frame.uid, [])):
                self.drop_expected = True

    async def _recover(self, number: int, conn, frames: list[Frame], exc) -> None:
        """The batch did not end with the marker's answer: a dropped link (meant or not),
        a dead process, or no answer while the link stayed up."""
        res = self.result
        # A send on a closed link fails at once, while answers that arrived before the
        # close may still wait in the connection's queue: judge after they are read.
        deadline = time.monotonic() + 5
        while conn is not None and conn not in self.csms.drained \
                and conn.state.name != "OPEN" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._note_fatal_answers(frames)
        if not self._alive():
            res.deaths += 1
            res.problems.append(f"batch {number}: the firmware died (exit code "
                                f"{self.charger.proc.returncode}):\n{self.charger.tail()}")
            self._dump(number, frames, "death")
            self._spawn()
        elif conn is not None and self.csms.conn is conn and not self.drop_expected:
            res.problems.append(f"batch {number}: the marker got no answer while the link "
                                f"stayed up ({exc!r})")
            self._dump(number, frames, "stuck")
            self._account(number)
            return
        deadline = time.monotonic() + 30
        while self.csms.conn is None or self.csms.conn is conn:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {number}: no reconnect after the link dropped "
                                   f"({exc!r}):\n{self.charger.tail()}")
            await asyncio.sleep(0.02)
        await self._settle()
        res.reconnects += 1
        if self.drop_expected:
            res.drops_expected += 1
        else:
            res.drops_unexpected += 1
            res.problems.append(f"batch {number}: the link dropped after no frame that "
                                f"should end it ({exc!r})")
            self._dump(number, frames, "drop")
        self.drop_expected = False
        self._account(number, excused=True)

    def _account(self, batch: Optional[int] = None, excused: bool = False) -> None:
        """Judge the answers to the frames of `batch` (None: every frame not judged yet,
        at the end). With `excused`, the link went down during the batch on purpose:
        what it left unanswered is not missing."""
        res = self.result
        final = batch is None
        ids = list(self.by_id) if final else self.batch_ids.pop(batch, [])
        for uid in ids:
            if uid in self.checked:
                continue
            frame = self.by_id[uid]
            answers = self.csms.answers.get(uid, [])
            if frame.cls == "expect" and not answers:
                if excused:
                    res.excused += 1
                    self.checked.add(uid)
                    continue
                if not final and frame.action == "UnlockConnector":
                    continue                         # may be answered later (Deferred)
                res.missing.append(uid)
                res.problems.append(f"no answer to {_short(frame.data)}")
            self.checked.add(uid)
            for answer in answers:
                self._judge(frame, answer)
            if len(answers) > 1:
                res.duplicated.append(uid)
                res.problems.append(f"{len(answers)} answers to {_short(frame.data)}")
            elif answers and frame.cls == "expect":
                res.answered += 1
            elif answers and frame.cls == "may":
                res.may_answered += 1
            elif answers and frame.cls in ("none", "fatal"):
                res.wrongly_answered.append(uid)
                res.problems.append(f"answered {_short(frame.data)} with {answers[0]!r:.200}")
        if final:
            for uid in list(self.csms.answers):
                if uid not in self.by_id and not (isinstance(uid, str)
                                                  and uid.startswith(MARK_PREFIX)):
                    res.stray.append(uid)
                    res.problems.append(f"an answer with an id never sent: "
                                        f"{self.csms.answers[uid][0]!r:.200}")
            for text in self.csms.bad_frames:
                res.bad_answers.append(text)
                res.problems.append(f"a frame from the firmware that is not OCPP-J: {text}")

    def _judge(self, frame: Frame, answer: list) -> None:
        res = self.result
        problem = None
        if answer[0] == 3:
            if len(answer) != 3 or not isinstance(answer[2], dict):
                problem = "a CALLRESULT that is not [3, id, {...}]"
            elif frame.cls == "expect":
                res.callresults += 1
                if frame.action in ocppj.CSMS_ACTIONS:
                    try:
                        ocppj.validate_payload(ocppj.CALLRESULT, frame.action, answer[2])
                    except Exception as exc:
                        problem = f"a CALLRESULT that breaks the schema ({exc})"
                else:
                    problem = f"a CALLRESULT to {frame.action!r}, not a CSMS request"
                if frame.action == "ReserveNow" and answer[2].get("status") == "Accepted":
                    self.reserved.add(frame.payload.get("reservationId"))
                if _fatal_answer(frame, answer):
                    res.resets += frame.action == "Reset"
        else:
            if len(answer) != 5 or answer[2] not in ERROR_CODES or \
                    not isinstance(answer[3], str) or not isinstance(answer[4], dict):
                problem = "a CALLERROR that is not [4, id, OCPP 1.6 code, text, {...}]"
            elif frame.cls == "expect":
                res.callerrors[answer[2]] += 1
                if answer[2] == "InternalError":
                    problem = "InternalError (a handler raised)"
        if problem is not None:
            res.bad_answers.append(frame.uid)
            res.problems.append(f"{problem}: {_short(frame.data)} -> {answer!r:.300}")

    def _dump(self, number: int, frames: list[Frame], why: str) -> None:
        path = self.workdir / f"batch-{number:06d}-{why}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            for frame in frames:
                answers = self.csms.answers.get(frame.uid, []) if frame.uid is not None else []
                data = frame.data if isinstance(frame.data, str) else \
                    frame.data.decode("latin-1")
                out.write(json.dumps({"kind": frame.kind, "cls": frame.cls, "text": frame.text,
                                      "data": data[:5000], "answers": answers},
                                     default=repr) + "\n")

    def _logged_errors(self) -> int:
        count = 0
        for log in sorted(self.workdir.glob("run-*.log")):
            text = log.read_text(errors="replace")
            count += text.count("Traceback (most recent call last)")
        return count

    # -- afterwards
    async def _keys(self) -> dict[str, str]:
        answer = await self.csms.call("GetConfiguration", {})
        return {k["key"]: k.get("value") for k in answer[2]["configurationKey"]
                if not k.get("readonly") and "value" in k}

    async def _restore(self, keys: dict[str, str]) -> None:
        """Undo what the accepted CALLs changed, through well-formed CALLs of a CSMS."""
        csms, res = self.csms, self.result
        steps = [("ChangeAvailability", {"connectorId": 0, "type": "Operative"}),
                 ("ChangeAvailability", {"connectorId": 1, "type": "Operative"}),
                 ("ClearChargingProfile", {}),
                 ("SendLocalList", {"listVersion": 1000000, "updateType": "Full"}),
                 ("ClearCache", {})]
        steps += [("CancelReservation", {"reservationId": r}) for r in sorted(
            r for r in self.reserved if isinstance(r, int) and not isinstance(r, bool))]
        now = await self._keys()
        steps += [("ChangeConfiguration", {"key": k, "value": v}) for k, v in keys.items()
                  if now.get(k) != v and k != "AuthorizationKey"]
        for action, payload in steps:
            try:
                answer = await csms.call(action, payload)
            except (ConnectionError, TimeoutError) as exc:
                res.problems.append(f"restoring: {action} {payload} got no answer ({exc!r})")
                await self._settle()
                continue
            if answer[0] != 3:
                res.problems.append(f"restoring: {action} {payload} -> {answer}")

    async def _final_session(self) -> None:
        csms, res, charger = self.csms, self.result, self.charger
        since = time.monotonic()
        answer = await csms.call("ChangeConfiguration", {"key": "HeartbeatInterval",
                                                         "value": "1"})
        res.heartbeat = answer[0] == 3 and await csms.wait_call("Heartbeat", since, 10) \
            is not None
        await csms.call("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "300"})
        for attempt in range(3):
            since = time.monotonic()
            await asyncio.to_thread(charger.sim, "plug", "1")
            await asyncio.sleep(0.3)
            await asyncio.to_thread(charger.sim, "tap", FINAL_TAG)
            start = await csms.wait_call("StartTransaction", since, 10)
            if start is None:
                await asyncio.to_thread(charger.sim, "unplug", "1")
                continue
            if start.get("idTag") != FINAL_TAG:      # a RemoteStart the fuzzing accepted
                await asyncio.to_thread(charger.sim, "unplug", "1")
                await csms.wait_call("StopTransaction", since, 10)
                continue
            await asyncio.sleep(2.5)
            await asyncio.to_thread(charger.sim, "tap", FINAL_TAG)
            stop = await csms.wait_call("StopTransaction", since, 10)
            meter = await csms.wait_call("MeterValues", since, 1,
                                         lambda p: p.get("transactionId") is not None)
            await asyncio.to_thread(charger.sim, "unplug", "1")
            res.final_session = (stop is not None and meter is not None
                                 and stop["meterStop"] > start["meterStart"])
            break
        if not res.final_session:
            res.problems.append("the charging session after the fuzzing failed:\n"
                                + charger.tail())
        if not res.heartbeat:
            res.problems.append("no Heartbeat after the fuzzing")


def _short(data: Any, limit: int = 160) -> str:
    text = data if isinstance(data, str) else repr(data)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def fuzz(frames: int, seed: int, workdir: Path, batch: int = 100, progress=None) -> FuzzResult:
    """Run the fuzzing against a fresh firmware in `workdir`; the result, problems listed."""
    return asyncio.run(Fuzzer(frames, seed, workdir, batch, progress).run())


# ------------------------------------------------------------------------------ report
def rows(res: FuzzResult) -> list[tuple[str, str]]:
    """The report's table: what was checked, and what was found."""
    expect = res.classes["expect"]
    errors = sum(res.callerrors.values())
    return [
        ("frames sent", f"{res.frames:,} ({res.bytes_sent / 1e6:,.1f} MB) in "
                        f"{res.seconds:,.1f} s: {res.frames / max(res.seconds, 1e-9):,.0f}/s"),
        ("well-formed CALLs", f"{expect:,}"),
        ("… answered exactly once", f"{res.answered:,} ({res.callresults:,} CALLRESULT, "
                                    f"{errors:,} CALLERROR)"),
        ("… unanswered", f"{len(res.missing)}"),
        ("… answered more than once", f"{len(res.duplicated)}"),
        ("… cut off by a link a frame had to end", f"{res.excused}"),
        ("broken CALLs with a readable id answered", f"{res.may_answered:,} of "
                                                     f"{res.classes['may']:,}"),
        ("frames answered that must not be", f"{len(res.wrongly_answered)}"),
        ("answers with an unknown id, malformed, or breaking the schema",
         f"{len(res.stray)}, {len(res.bad_answers)}"),
        ("link drops after a frame that must end the link / others",
         f"{res.drops_expected} / {res.drops_unexpected}"),
        ("accepted Resets (the firmware restarts in its process)", f"{res.resets}"),
        ("process deaths", f"{res.deaths}"),
        ("exceptions in the firmware's log", f"{res.logged_errors}"),
        ("a session and a Heartbeat afterwards", "yes" if res.final_session and res.heartbeat
         else "NO"),
    ]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100,
                        help="frames between two markers (default 100)")
    parser.add_argument("--quick", action="store_true", help="2,000 frames (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR, "
                                      "removed unless something failed)")
    args = parser.parse_args(argv)
    frames = 2000 if args.quick else args.frames
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fuzz-frames-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"fuzz_frames: {frames:,} frames, seed {args.seed}, work directory {workdir}",
          flush=True)
    res = fuzz(frames, args.seed, workdir, args.batch,
               progress=lambda text: print(text, flush=True))
    command = f".venv/bin/python bench/fuzz_frames.py --frames {frames} --seed {args.seed}"
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(res.kinds.items()))
    codes = ", ".join(f"{k} {v:,}" for k, v in sorted(res.callerrors.items()))
    body = (table(("", "result"), rows(res))
            + f"\n\nFrames by kind: {kinds}. CALLERRORs by code: {codes}.")
    figures = {k: dict(v) if isinstance(v, collections.Counter) else v
               for k, v in vars(res).items()}
    return torture_report(res, "Frame fuzzing", command, body, args.json, workdir,
                          bool(args.dir), figures)


if __name__ == "__main__":
    sys.exit(main())
