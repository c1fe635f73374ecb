"""GetConfiguration / ChangeConfiguration over the wire (TC_019, TC_021, TC_040), and the
reference page docs/configuration.md held to KEY_SPECS.

tests/test_ocpp_keys.py checks the key table itself (bounds, persistence of OcppKeys);
here the same rules are seen as a Central System sees them: through the real firmware
loop, the JSON schemas, the simulated meter's measurands and the log.
"""
import logging
import re
from pathlib import Path

import pytest
from ocpp.exceptions import OCPPError

from chargepoint.ocpp_keys import KEY_SPECS
from chargepoint.handlers import PROFILES

CP = "CP-1"
SECRET = "Zq7-secret-key-0123456789"  # 25 characters: a valid AuthorizationKey

#: OCPP 1.6 keys by feature profile, with the access the specification gives them
#: (True: read-only, False: read-write, None: either is allowed). Core as in the
#: TC_019 validation table plus the optional Core keys the firmware implements.
REQUIRED_KEYS = {
    "Core": {
        "AllowOfflineTxForUnknownId": False, "AuthorizationCacheEnabled": False,
        "AuthorizeRemoteTxRequests": None, "BlinkRepeat": False,
        "ClockAlignedDataInterval": False, "ConnectionTimeOut": False,
        "ConnectorPhaseRotation": False, "GetConfigurationMaxKeys": True,
        "HeartbeatInterval": False, "LightIntensity": False, "LocalAuthorizeOffline": False,
        "LocalPreAuthorize": False, "MeterValuesAlignedData": False,
        "MeterValuesAlignedDataMaxLength": True, "MeterValuesSampledData": False,
        "MeterValuesSampledDataMaxLength": True, "MeterValueSampleInterval": False,
        "MinimumStatusDuration": False, "NumberOfConnectors": True, "ResetRetries": False,
        "StopTransactionOnEVSideDisconnect": False, "StopTransactionOnInvalidId": False,
        "StopTxnAlignedData": False, "StopTxnSampledData": False,
        "SupportedFeatureProfiles": True, "TransactionMessageAttempts": False,
        "TransactionMessageRetryInterval": False, "UnlockConnectorOnEVSideDisconnect": None,
        "WebSocketPingInterval": False,
    },
    "LocalAuthListManagement": {
        "LocalAuthListEnabled": False, "LocalAuthListMaxLength": True,
        "SendLocalListMaxLength": True,
    },
    "Reservation": {"ReserveConnectorZeroSupported": True},
    "SmartCharging": {
        "ChargeProfileMaxStackLevel": True, "ChargingScheduleAllowedChargingRateUnit": True,
        "ChargingScheduleMaxPeriods": True, "MaxChargingProfilesInstalled": True,
    },
    "FirmwareManagement": {},
    "RemoteTrigger": {},
}
#: Security whitepaper keys (not a SupportedFeatureProfiles entry). The whitepaper makes
#: SecurityProfile read-write for upgrades (TC_083); this firmware keeps it read-only.
SECURITY_KEYS = {"SecurityProfile": None, "CpoName": False}


def boot(csms, firmware, overrides=None):
    fw = firmware(overrides)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw


def get(csms, keys=None) -> dict:
    return csms.call(CP, "GetConfiguration", {} if keys is None else {"key": keys})


def change(csms, key, value) -> str:
    return csms.call(CP, "ChangeConfiguration", {"key": key, "value": value})["status"]


def listed(answer) -> dict:
    return {entry["key"]: entry for entry in answer.get("configurationKey", [])}


def frames_from_charger(csms) -> str:
    return "\n".join(str(entry.text) for entry in csms.log if entry.direction == "in")


# --------------------------------------------------------------------------- GetConfiguration

def test_tc019_get_configuration_lists_the_keys_of_every_supported_profile(csms, firmware):
    """The official steps: SupportedFeatureProfiles alone, then everything, then
    GetConfigurationMaxKeys, then as many keys of the full list as that allows."""
    fw = boot(csms, firmware, {"csms": {"authorization_key": SECRET}})

    first = get(csms, ["SupportedFeatureProfiles"])
    assert "unknownKey" not in first
    assert list(listed(first)) == ["SupportedFeatureProfiles"]
    profiles = listed(first)["SupportedFeatureProfiles"]["value"].split(",")
    assert profiles == ["Core", *PROFILES]

    everything = get(csms)
    assert "unknownKey" not in everything
    entries = listed(everything)
    assert len(entries) == len(everything["configurationKey"]), "a key is listed twice"
    expected = dict(SECURITY_KEYS)
    for profile in profiles:
        assert profile in REQUIRED_KEYS, f"unknown feature profile {profile!r}"
        expected.update(REQUIRED_KEYS[profile])
    missing = sorted(set(expected) - set(entries))
    assert not missing, f"required keys of {profiles} not listed: {missing}"
    wrong = {key: entries[key]["readonly"] for key, readonly in expected.items()
             if readonly is not None and entries[key]["readonly"] is not readonly}
    assert not wrong, f"wrong readonly flag: {wrong}"
    for key, entry in entries.items():
        assert entry["readonly"] is KEY_SPECS[key].readonly
        assert entry["value"] == fw.runtime.keys.raw(key)
    assert entries["NumberOfConnectors"]["value"] == "1"
    # The write-only key is never shown with a value, nor does its value ever go out.
    assert "value" not in entries.get("AuthorizationKey", {})
    assert SECRET not in frames_from_charger(csms)

    limit = int(listed(get(csms, ["GetConfigurationMaxKeys"]))["GetConfigurationMaxKeys"]
                ["value"])
    picked = list(entries)[:min(limit, len(entries))]
    last = get(csms, picked)
    assert "unknownKey" not in last
    assert list(listed(last)) == picked
    csms.assert_no_violations()


def test_listed_keys_come_back_in_order_with_unknown_ones_apart(csms, firmware):
    boot(csms, firmware, {"csms": {"authorization_key": SECRET}})
    answer = get(csms, ["MeterValueSampleInterval", "NoSuchKey", "HeartbeatInterval",
                        "AuthorizationKey", "heartbeatinterval", "NoSuchKey"])
    assert answer["configurationKey"] == [
        {"key": "MeterValueSampleInterval", "readonly": False, "value": "60"},
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "AuthorizationKey", "readonly": False},  # known, its value never leaves
    ]
    assert answer["unknownKey"] == ["NoSuchKey"]       # heartbeatinterval: HeartbeatInterval
    only_unknown = get(csms, ["Testing"])
    assert only_unknown == {"unknownKey": ["Testing"]}
    assert SECRET not in frames_from_charger(csms)
    csms.assert_no_violations()


def test_more_keys_than_get_configuration_max_keys_is_refused(csms, firmware):
    """Exactly GetConfigurationMaxKeys names are answered; one more is an
    OccurenceConstraintViolation, not a silently shortened answer."""
    fw = boot(csms, firmware)
    limit = fw.runtime.keys.int("GetConfigurationMaxKeys")
    names = list(KEY_SPECS)
    names += [f"Unknown{i}" for i in range(limit - len(names))]
    answer = get(csms, names)
    assert len(answer["configurationKey"]) + len(answer["unknownKey"]) == limit
    with pytest.raises(OCPPError) as refused:
        get(csms, names + ["OneTooMany"])
    assert refused.value.code == "OccurenceConstraintViolation"
    assert fw.station.rpc.connected  # the charger goes on answering
    assert get(csms, ["HeartbeatInterval"])["configurationKey"][0]["value"] == "300"


# --------------------------------------------------------------------------- ChangeConfiguration

def test_tc021_changed_keys_survive_a_restart_and_take_effect(csms, firmware):
    """TC_021 (change, read back), then a restart: the CSMS's values win over the
    config.toml ones and sampling follows them in the next transaction."""
    fw = boot(csms, firmware, {"ocpp": {"MeterValueSampleInterval": 60}})
    assert change(csms, "MeterValueSampleInterval", "20") == "Accepted"
    assert get(csms, ["MeterValueSampleInterval"])["configurationKey"] == [
        {"key": "MeterValueSampleInterval", "readonly": False, "value": "20"}]
    assert change(csms, "MeterValuesSampledData",
                  "Energy.Active.Import.Register, Voltage") == "Accepted"
    assert change(csms, "LocalPreAuthorize", "TRUE") == "Accepted"

    mark = len(csms.received)
    fw.restart()
    csms.wait_for("BootNotification", after=mark)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, after=mark)
    fw.settle()
    values = {key: entry["value"] for key, entry in listed(get(
        csms, ["MeterValueSampleInterval", "MeterValuesSampledData", "LocalPreAuthorize"])
    ).items()}
    assert values == {"MeterValueSampleInterval": "20",
                      "MeterValuesSampledData": "Energy.Active.Import.Register,Voltage",
                      "LocalPreAuthorize": "true"}

    fw.sim.plug(1)
    fw.settle()
    fw.sim.tap("TAG1")
    fw.settle()
    start = csms.wait_for("StartTransaction")
    csms.wait_for("StatusNotification", lambda r: r["status"] == "Charging")
    fw.settle()
    fw.advance(60)
    samples = [r for r in csms.records("MeterValues", after=start.index)
               if r.get("transactionId") == start.reply["transactionId"]]
    assert len(samples) == 3
    for record in samples:
        values = record["meterValue"][0]["sampledValue"]
        assert {v.get("context") for v in values} == {"Sample.Periodic"}
        assert {v.get("measurand", "Energy.Active.Import.Register") for v in values} >= {
            "Energy.Active.Import.Register", "Voltage"}
    csms.assert_no_violations()


NINE = ",".join(["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
                 "Voltage", "Frequency", "Current.Offered", "Power.Offered",
                 "Energy.Active.Import.Register", "Voltage"])


@pytest.mark.parametrize("key,value,status", [
    ("Testing", "true", "NotSupported"),                                  # TC_040_1
    ("MeterValueSampleInterval", "-1", "Rejected"),                       # TC_040_2
    ("GetConfigurationMaxKeys", "100", "Rejected"),                       # read-only
    ("SupportedFeatureProfiles", "Core", "Rejected"),
    ("NumberOfConnectors", "1", "Rejected"),
    ("MeterValuesSampledData", "Energy.Active.Import.Register,Temperature", "Rejected"),
    ("MeterValuesAlignedData", "SoC", "Rejected"),                        # not this meter
    ("StopTxnSampledData", "Voltage,Frequency", "Accepted"),              # this meter has them
    ("MeterValuesAlignedData", NINE, "Rejected"),                         # > MaxLength (8)
    ("MeterValuesAlignedData", NINE.rsplit(",", 1)[0], "Accepted"),       # exactly 8
    ("LocalPreAuthorize", "1", "Rejected"),
    ("StopTransactionOnInvalidId", "", "Rejected"),
    ("AuthorizeRemoteTxRequests", "False", "Accepted"),
    ("HeartbeatInterval", "86401", "Rejected"),
    ("HeartbeatInterval", "86400", "Accepted"),
    ("ConnectionTimeOut", "0", "Rejected"),
    ("ConnectionTimeOut", "30.5", "Rejected"),
    ("ConnectionTimeOut", "1_0", "Rejected"),                             # not an OCPP integer
    ("ConnectionTimeOut", "\u0661\u0660", "Rejected"),                    # nor other digits
    ("ResetRetries", "11", "Rejected"),
    ("LightIntensity", "101", "Rejected"),
    ("WebSocketPingInterval", "-5", "Rejected"),
    ("CpoName", "x" * 101, "Rejected"),
    ("ConnectorPhaseRotation", "1.RST", "Accepted"),
    ("ConnectorPhaseRotation", "1.RST,1", "Rejected"),
])
def test_change_configuration_answers(csms, firmware, key, value, status):
    """What the CSMS hears, and that a refused value changes nothing, not even on disk."""
    fw = boot(csms, firmware)
    before = get(csms, [key])
    assert change(csms, key, value) == status
    after = get(csms, [key])
    if status == "Accepted":
        assert listed(after)[key]["value"] == fw.runtime.keys.raw(key)
    else:
        assert after == before
        if key in KEY_SPECS:
            assert fw.runtime.store.load_config().get(key) is None
    csms.assert_no_violations()


def test_authorization_key_is_never_logged(csms, firmware, caplog):
    """Not when accepted, not when refused, not with every frame logged, whatever the order
    of the members of the CALL's payload; and the charger reconnects with the new key."""
    caplog.set_level(logging.DEBUG)
    fw = boot(csms, firmware, {"log": {"frames": True}})
    short = SECRET[:12]
    assert change(csms, "AuthorizationKey", short) == "Rejected"
    assert csms.call(CP, "ChangeConfiguration",
                     {"value": SECRET, "key": "AuthorizationKey"}) == {"status": "Accepted"}
    csms.wait_connected(CP, count=2)
    fw.settle()
    assert fw.runtime.keys.raw("AuthorizationKey") == SECRET
    assert "AuthorizationKey" in caplog.text  # the changes are logged, by name
    firmware_records = [r for r in caplog.records  # not the test CSMS's own logging
                        if not r.name.startswith(("chargepoint.csms", "websockets."))]
    leaks = [f"{r.name}: {r.getMessage()}" for r in firmware_records
             if SECRET in r.getMessage() or short in r.getMessage()]
    assert not leaks
    assert SECRET not in frames_from_charger(csms)


@pytest.mark.parametrize("frame", [
    '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"%s"}]',
    '[2,"1","ChangeConfiguration",{"value": "%s", "key": "AuthorizationKey"}]',
    '[2,"1","ChangeConfiguration",{"key":"Authorization\\u004bey","value":"%s"}]',
    '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"%s"',   # not JSON
])
def test_frame_log_never_shows_the_authorization_key(frame):
    """JSON does not fix the order of members nor how a name is spelt."""
    from chargepoint.protocol.redaction import redact

    shown = redact(frame % SECRET)
    assert SECRET not in shown and "***" in shown


# --------------------------------------------------------------------------- key names

def test_configuration_key_names_compare_without_regard_to_case(csms, firmware):
    """Key names are CiString50: ChangeConfiguration and GetConfiguration find a key however
    the CSMS cases it; the answer, the database and the charger's reaction use the charger's
    own spelling, and a key asked for twice in two cases is answered once."""
    fw = boot(csms, firmware)
    assert change(csms, "ConnectionTimeout", "45") == "Accepted"
    assert fw.runtime.keys.int("ConnectionTimeOut") == 45
    stored = fw.runtime.store.load_config()
    assert stored.get("ConnectionTimeOut") == "45" and "ConnectionTimeout" not in stored
    assert get(csms, ["connectiontimeout", "NoSuchKey", "CONNECTIONTIMEOUT", "nosuchkey"]) == {
        "configurationKey": [{"key": "ConnectionTimeOut", "readonly": False, "value": "45"}],
        "unknownKey": ["NoSuchKey"]}
    assert change(csms, "numberofconnectors", "2") == "Rejected"        # read-only, known
    assert change(csms, "heartbeatINTERVAL", "0") == "Rejected"         # out of bounds
    assert change(csms, "Blin\u212aRepeat", "4") == "NotSupported"  # Kelvin sign: lower() is k

    mark = len(csms.received)
    assert change(csms, "HEARTBEATINTERVAL", "120") == "Accepted"      # takes effect at once
    fw.advance(119)
    assert not csms.records("Heartbeat", after=mark)
    fw.advance(1)
    csms.wait_for("Heartbeat", after=mark)
    csms.assert_no_violations()


def test_authorization_key_changed_in_another_case_is_never_logged(csms, firmware, caplog):
    caplog.set_level(logging.DEBUG)
    fw = boot(csms, firmware, {"log": {"frames": True}})
    assert change(csms, "authorizationKEY", SECRET) == "Accepted"
    csms.wait_connected(CP, count=2)
    fw.settle()
    assert fw.runtime.keys.raw("AuthorizationKey") == SECRET
    leaks = [f"{r.name}: {r.getMessage()}" for r in caplog.records
             if not r.name.startswith(("chargepoint.csms", "websockets."))
             and SECRET in r.getMessage()]
    assert not leaks
    assert get(csms, ["AUTHORIZATIONKEY"])["configurationKey"] == [
        {"key": "AuthorizationKey", "readonly": False}]


@pytest.mark.parametrize("frame", [
    '[2,"1","ChangeConfiguration",{"key":"authorizationkey","value":"%s"}]',
    '[2,"1","ChangeConfiguration",{"value": "%s", "key": "AUTHORIZATIONKEY"}]',
    '[2,"1","ChangeConfiguration",{"key":"authorization\\u004bEY","value":"%s"}]',
    '[2,"1","ChangeConfiguration",{"key":"authorizationKey","value":"%s"',   # not JSON
])
def test_frame_log_never_shows_the_authorization_key_whatever_the_case_of_its_name(frame):
    from chargepoint.protocol.redaction import redact

    shown = redact(frame % SECRET)
    assert SECRET not in shown and "***" in shown


# --------------------------------------------------------------------------- the reference page

DOC = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()

#: Keys whose first value is not KEY_SPECS' default but comes from the installation.
RUNTIME_DEFAULTS = {
    "NumberOfConnectors": "number of [[connectors]]",
    "SupportedFeatureProfiles": "what is implemented",
    "SecurityProfile": "csms.security_profile",
    "AuthorizationKey": "csms.authorization_key",
}


def _documented_keys() -> dict[str, list[str]]:
    section = DOC[DOC.index("## OCPP configuration keys"):]
    rows: dict[str, list[str]] = {}
    header = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            continue
        if header is None:
            header = cells
            continue
        match = re.fullmatch(r"`(\w+)`", cells[0])
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = cells
    assert header == ["key", "type", "default", "bounds", "readonly", "reboot", "profile"]
    return rows


def _facts(spec) -> list[str]:
    """The row docs/configuration.md must show for one KeySpec."""
    kind = {"bool": "boolean", "int": "integer", "str": "string"}.get(spec.kind)
    if spec.kind == "csl":
        kind = "CSL of measurands" if spec.items == "measurand" else "CSL"
    default = RUNTIME_DEFAULTS.get(spec.name, spec.default or "(empty)")
    if spec.kind == "csl" and spec.max_length_key:
        bounds = f"≤ {spec.max_length_key}"
    elif spec.kind == "str":
        bounds = f"{spec.min_length}–{spec.max_str} chars"
    elif spec.minimum is not None and spec.maximum is not None:
        bounds = f"{spec.minimum}…{spec.maximum}"
    elif spec.minimum is not None:
        bounds = f"≥ {spec.minimum}"
    elif spec.maximum is not None:
        bounds = f"≤ {spec.maximum}"
    else:
        bounds = ""
    readonly = "write-only" if spec.write_only else ("yes" if spec.readonly else "no")
    return [f"`{spec.name}`", kind, default, bounds, readonly,
            "yes" if spec.reboot_required else "no", spec.profile]


def test_docs_give_every_ocpp_key_its_type_default_bounds_and_flags():
    rows = _documented_keys()
    assert sorted(rows) == sorted(KEY_SPECS), "docs/configuration.md and KEY_SPECS differ"
    wrong = {name: (rows[name], _facts(spec)) for name, spec in KEY_SPECS.items()
             if rows[name] != _facts(spec)}
    assert not wrong, "documented row != KEY_SPECS:\n" + "\n".join(
        f"  {name}: documented {doc}, expected {want}" for name, (doc, want) in wrong.items())
