"""OCPP-J framing and schema mapping (pure functions)."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from chargepoint.protocol import ocppj
from chargepoint.transport import reconnect_delay


def test_round_trip():
    text = ocppj.encode_call("abc", "Heartbeat", {})
    assert ocppj.parse_frame(text) == ocppj.Call("abc", "Heartbeat", {})
    assert ocppj.parse_frame(ocppj.encode_result("abc", {"a": 1})) == ocppj.CallResult("abc",
                                                                                         {"a": 1})
    err = ocppj.parse_frame(ocppj.encode_error("abc", "GenericError", "boom"))
    assert err == ocppj.CallError("abc", "GenericError", "boom", {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10),
                                                                      children, max_size=5),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_parse_never_raises_anything_but_frame_error(text):
    try:
        frame = ocppj.parse_frame(text)
    except ocppj.FrameError as exc:
        assert exc.code in {"FormationViolation", "ProtocolError"}
        if exc.answerable:
            assert exc.unique_id
    else:
        assert isinstance(frame, (ocppj.Call, ocppj.CallResult, ocppj.CallError))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ocppj.CSMS_ACTIONS - {"CertificateSigned"})), json_values)
def test_validation_raises_only_ocpp_errors(action, payload):
    if not isinstance(payload, dict):
        return
    try:
        ocppj.validate_payload(ocppj.CALL, action, payload)
    except ocppj.OcppError as exc:
        assert exc.code in {"FormationViolation", "OccurenceConstraintViolation",
                            "TypeConstraintViolation", "PropertyConstraintViolation"}


def test_lenient_mode_tolerates_extra_properties():
    payload = {"key": "HeartbeatInterval", "value": "60", "vendorExtra": 1}
    with pytest.raises(ocppj.OcppError, match="FormationViolation"):
        ocppj.validate_payload(ocppj.CALL, "ChangeConfiguration", payload)
    ocppj.validate_payload(ocppj.CALL, "ChangeConfiguration", payload, strict=False)


def test_decimal_schemas_accept_one_decimal_limits():
    profile = {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 21.4}]}}}
    ocppj.validate_payload(ocppj.CALL, "SetChargingProfile", profile)


def test_outgoing_violation_is_logged_loudly(caplog):
    assert not ocppj.check_outgoing(ocppj.CALL, "StatusNotification", {"connectorId": 1})
    assert "BUG" in caplog.text


@given(st.integers(min_value=0, max_value=200),
       st.floats(min_value=0.01, max_value=10), st.floats(min_value=10, max_value=600),
       st.floats(min_value=0, max_value=1, exclude_max=True))
def test_reconnect_delay_is_bounded_and_jittered(attempt, lo, hi, r):
    d = reconnect_delay(attempt, lo, hi, lambda: r)
    cap = min(hi, lo * 2 ** attempt)
    assert cap / 2 <= d <= cap <= hi


def test_reconnect_delay_grows_exponentially():
    mids = [reconnect_delay(n, 1, 300, lambda: 1.0) for n in range(10)]
    assert mids == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
