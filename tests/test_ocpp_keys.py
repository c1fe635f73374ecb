"""OCPP configuration keys: types, bounds, flags, persistence in a real SQLite file."""
import pytest

from chargepoint.ocpp_keys import KEY_SPECS, OcppKeys
from chargepoint.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "cp.db")
    yield s
    s.close()


def make(store, initial=None, measurands=frozenset({"Energy.Active.Import.Register",
                                                    "Power.Active.Import"})):
    return OcppKeys(store, initial or {}, {"NumberOfConnectors": "2"}, measurands=measurands)


@pytest.mark.parametrize("key,value,status", [
    ("MeterValueSampleInterval", "-1", "Rejected"),
    ("MeterValueSampleInterval", "abc", "Rejected"),
    ("MeterValueSampleInterval", "15", "Accepted"),
    ("HeartbeatInterval", "0", "Rejected"),
    ("LocalPreAuthorize", "TRUE", "Accepted"),
    ("LocalPreAuthorize", "yes", "Rejected"),
    ("NumberOfConnectors", "3", "Rejected"),
    ("NoSuchKey", "1", "NotSupported"),
    ("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import", "Accepted"),
    ("MeterValuesSampledData", "Voltage", "Rejected"),          # the meter does not offer it
    ("MeterValuesSampledData", "Current.Offered", "Accepted"),  # derived by the firmware
    ("MeterValuesSampledData", "Bogus.Measurand", "Rejected"),
    ("MeterValuesSampledData", ",".join(["Power.Active.Import"] * 9), "Rejected"),  # > max length
    ("ConnectorPhaseRotation", "0.RST,1.RST,2.TSR", "Accepted"),
    ("ConnectorPhaseRotation", "1.XYZ", "Rejected"),
    ("AuthorizationKey", "short", "Rejected"),
    ("AuthorizationKey", "a" * 20, "Accepted"),
])
def test_change(store, key, value, status):
    assert make(store).change(key, value) == status


def test_values_survive_a_restart_and_beat_config_defaults(tmp_path):
    store = Store(tmp_path / "cp.db")
    keys = make(store, {"HeartbeatInterval": "600"})
    assert keys.int("HeartbeatInterval") == 600
    assert keys.change("HeartbeatInterval", "90") == "Accepted"
    assert keys.change("LocalPreAuthorize", "True") == "Accepted"
    store.close()
    store = Store(tmp_path / "cp.db")
    keys = make(store, {"HeartbeatInterval": "600"})
    assert keys.int("HeartbeatInterval") == 90
    assert keys.bool("LocalPreAuthorize") is True
    assert keys.raw("LocalPreAuthorize") == "true"
    store.close()


def test_fixed_values_win_over_stored_ones(store):
    keys = make(store)
    assert keys.int("NumberOfConnectors") == 2


def test_write_only_key_is_not_visible(store):
    keys = make(store)
    assert "AuthorizationKey" not in {s.name for s in keys.visible()}


def test_every_spec_default_is_valid():
    from chargepoint.ocpp_keys import validate_value

    for spec in KEY_SPECS.values():
        if spec.kind != "str" or spec.default:
            validate_value(spec, spec.default, measurands=None)
