"""The OCPP configuration keys: one table of types, bounds and flags, values in SQLite.

GetConfiguration / ChangeConfiguration (chargepoint/handlers/configuration.py)
read and write through `OcppKeys`; the rest of the firmware reads typed values
(`keys.int("HeartbeatInterval")`). Values are stored as the strings that travel
on the wire, so what the CSMS set is exactly what it reads back after a restart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

#: The measurands OCPP 1.6 defines (section 7.31).
ALL_MEASURANDS = frozenset({
    "Current.Export", "Current.Import", "Current.Offered",
    "Energy.Active.Export.Register", "Energy.Active.Import.Register",
    "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register",
    "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
    "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval",
    "Frequency", "Power.Active.Export", "Power.Active.Import", "Power.Factor",
    "Power.Offered", "Power.Reactive.Export", "Power.Reactive.Import", "RPM", "SoC",
    "Temperature", "Voltage",
})

#: Measurands the firmware derives itself, whatever the meter offers.
DERIVED_MEASURANDS = frozenset({"Current.Offered", "Power.Offered"})

PHASE_ROTATIONS = frozenset({"NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"})

CSL_MAX_LENGTH = 8

#: An integer as OCPP sends it: ASCII digits only (int() alone also takes "1_0" or "١٠").
_INTEGER = re.compile(r"[+-]?[0-9]+")


class KeyError_(ValueError):
    """A value a key cannot take; the message says why."""


@dataclass(frozen=True)
class KeySpec:
    name: str
    kind: str                       # "bool" | "int" | "str" | "csl"
    default: str
    readonly: bool = False
    reboot_required: bool = False
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    write_only: bool = False        # never returned by GetConfiguration, never logged
    profile: str = "Core"
    #: For "csl": what each item may be; "measurand" items are checked against the hardware.
    items: Optional[str] = None
    #: For "csl": the key holding the maximum number of items.
    max_length_key: Optional[str] = None
    min_length: int = 0             # for "str"
    max_str: int = 500


def _specs(*specs: KeySpec) -> dict[str, KeySpec]:
    return {s.name: s for s in specs}


def key_id(name: str) -> str:
    """Key names are CiString50 (printable ASCII): they compare without regard to case, so
    `ConnectionTimeout` names `ConnectionTimeOut`. A non-ASCII name matches no key."""
    return name.lower() if name.isascii() else name


def find_spec(specs: dict[str, KeySpec], name: str) -> Optional[KeySpec]:
    """The spec `name` designates in `specs`, whatever its case; None if it names none."""
    spec = specs.get(name)
    if spec is not None:
        return spec
    wanted = key_id(name)
    return next((s for n, s in specs.items() if key_id(n) == wanted), None)


KEY_SPECS: dict[str, KeySpec] = _specs(
    # -- Core profile (OCPP 1.6 section 9.1)
    KeySpec("AllowOfflineTxForUnknownId", "bool", "false"),
    KeySpec("AuthorizationCacheEnabled", "bool", "true"),
    KeySpec("AuthorizeRemoteTxRequests", "bool", "true"),
    KeySpec("BlinkRepeat", "int", "3", minimum=0, maximum=100),
    KeySpec("ClockAlignedDataInterval", "int", "0", minimum=0, maximum=86400),
    KeySpec("ConnectionTimeOut", "int", "60", minimum=1, maximum=3600),
    KeySpec("ConnectorPhaseRotation", "csl", "0.Unknown", items="phase_rotation",
            max_length_key="ConnectorPhaseRotationMaxLength"),
    KeySpec("ConnectorPhaseRotationMaxLength", "int", str(CSL_MAX_LENGTH), readonly=True),
    KeySpec("GetConfigurationMaxKeys", "int", "100", readonly=True),
    KeySpec("HeartbeatInterval", "int", "300", minimum=1, maximum=86400),
    KeySpec("LightIntensity", "int", "100", minimum=0, maximum=100),
    KeySpec("LocalAuthorizeOffline", "bool", "true"),
    KeySpec("LocalPreAuthorize", "bool", "false"),
    KeySpec("MaxEnergyOnInvalidId", "int", "0", minimum=0, maximum=1_000_000),
    KeySpec("MeterValuesAlignedData", "csl", "Energy.Active.Import.Register", items="measurand",
            max_length_key="MeterValuesAlignedDataMaxLength"),
    KeySpec("MeterValuesAlignedDataMaxLength", "int", str(CSL_MAX_LENGTH), readonly=True),
    KeySpec("MeterValuesSampledData", "csl", "Energy.Active.Import.Register", items="measurand",
            max_length_key="MeterValuesSampledDataMaxLength"),
    KeySpec("MeterValuesSampledDataMaxLength", "int", str(CSL_MAX_LENGTH), readonly=True),
    KeySpec("MeterValueSampleInterval", "int", "60", minimum=0, maximum=86400),
    KeySpec("MinimumStatusDuration", "int", "0", minimum=0, maximum=3600),
    KeySpec("NumberOfConnectors", "int", "1", readonly=True),
    KeySpec("ResetRetries", "int", "3", minimum=0, maximum=10),
    KeySpec("StopTransactionOnEVSideDisconnect", "bool", "true"),
    KeySpec("StopTransactionOnInvalidId", "bool", "true"),
    KeySpec("StopTxnAlignedData", "csl", "", items="measurand",
            max_length_key="StopTxnAlignedDataMaxLength"),
    KeySpec("StopTxnAlignedDataMaxLength", "int", str(CSL_MAX_LENGTH), readonly=True),
    KeySpec("StopTxnSampledData", "csl", "", items="measurand",
            max_length_key="StopTxnSampledDataMaxLength"),
    KeySpec("StopTxnSampledDataMaxLength", "int", str(CSL_MAX_LENGTH), readonly=True),
    KeySpec("SupportedFeatureProfiles", "csl", "Core", readonly=True),
    KeySpec("SupportedFeatureProfilesMaxLength", "int", "6", readonly=True),
    # 10 attempts at 60 s x attempts: a CSMS that answers nothing gives nothing up for 50
    # minutes (docs/delivery.md, "A CSMS that stalls"); 3 gave up after 4.5 minutes.
    KeySpec("TransactionMessageAttempts", "int", "10", minimum=1, maximum=100),
    KeySpec("TransactionMessageRetryInterval", "int", "60", minimum=1, maximum=86400),
    KeySpec("UnlockConnectorOnEVSideDisconnect", "bool", "true"),
    KeySpec("WebSocketPingInterval", "int", "60", minimum=0, maximum=3600),
    # -- Local Auth List Management profile (OCPP 1.6 section 9.2)
    KeySpec("LocalAuthListEnabled", "bool", "true", profile="LocalAuthListManagement"),
    KeySpec("LocalAuthListMaxLength", "int", "10000", readonly=True,
            profile="LocalAuthListManagement"),
    KeySpec("SendLocalListMaxLength", "int", "1000", readonly=True,
            profile="LocalAuthListManagement"),
    # -- Reservation profile (OCPP 1.6 section 9.3)
    KeySpec("ReserveConnectorZeroSupported", "bool", "true", readonly=True,
            profile="Reservation"),
    # -- Smart Charging profile (OCPP 1.6 section 9.4)
    KeySpec("ChargeProfileMaxStackLevel", "int", "8", readonly=True, profile="SmartCharging"),
    KeySpec("ChargingScheduleAllowedChargingRateUnit", "csl", "Current,Power", readonly=True,
            profile="SmartCharging"),
    KeySpec("ChargingScheduleMaxPeriods", "int", "24", readonly=True, profile="SmartCharging"),
    KeySpec("MaxChargingProfilesInstalled", "int", "16", readonly=True,
            profile="SmartCharging"),
    # -- Security whitepaper keys usable with 1.6
    # SecurityProfile is changed only through chargepoint/model/security_profile.py (upgrades).
    KeySpec("SecurityProfile", "int", "0", minimum=0, maximum=3, profile="Security"),
    KeySpec("AuthorizationKey", "str", "", write_only=True, min_length=16, max_str=40,
            profile="Security"),
    KeySpec("CpoName", "str", "", max_str=100, profile="Security"),
    KeySpec("AdditionalRootCertificateCheck", "bool", "false", readonly=True,
            profile="Security"),
    KeySpec("CertificateSignedMaxChainSize", "int", "10000", readonly=True, profile="Security"),
    KeySpec("CertificateStoreMaxLength", "int", "20", readonly=True, profile="Security"),
)

#: An AuthorizationKey written as hex (as the whitepaper sets it): 16 to 20 bytes.
_HEX_KEY = re.compile(r"(?:[0-9A-Fa-f]{2}){16,20}")


def authorization_password(value: str) -> bytes:
    """The Basic auth password an AuthorizationKey stands for: 32 to 40 hex digits are the
    hex form of a 16-20 byte key (the whitepaper's), any other value is the key itself."""
    return bytes.fromhex(value) if _HEX_KEY.fullmatch(value) else value.encode("utf-8")


def _check_item(kind: Optional[str], item: str, measurands: Optional[frozenset[str]]) -> None:
    if kind == "measurand":
        if item not in ALL_MEASURANDS:
            raise KeyError_(f"{item!r} is not an OCPP 1.6 measurand")
        if measurands is not None and item not in measurands | DERIVED_MEASURANDS:
            raise KeyError_(f"{item!r} is not offered by this charger's meters "
                            f"(offered: {', '.join(sorted(measurands | DERIVED_MEASURANDS))})")
    elif kind == "phase_rotation":
        connector, dot, rotation = item.partition(".")
        if not (dot and connector.isdigit() and rotation in PHASE_ROTATIONS):
            raise KeyError_(f"{item!r} is not <connector>.<rotation> with rotation one of "
                            f"{', '.join(sorted(PHASE_ROTATIONS))}")


def validate_value(spec: KeySpec, value: str, measurands: Optional[frozenset[str]],
                   max_items: Optional[int] = None) -> str:
    """Return the canonical text for `value`, or raise KeyError_ saying why not."""
    if spec.kind == "bool":
        if value.strip().lower() not in ("true", "false"):
            raise KeyError_(f"{spec.name} takes true or false, not {value!r}")
        return value.strip().lower()
    if spec.kind == "int":
        try:
            if not _INTEGER.fullmatch(value.strip()):
                raise ValueError(value)
            number = int(value.strip())
        except ValueError:
            raise KeyError_(f"{spec.name} takes an integer, not {value!r}") from None
        if spec.minimum is not None and number < spec.minimum:
            raise KeyError_(f"{spec.name} must be at least {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise KeyError_(f"{spec.name} must be at most {spec.maximum}")
        return str(number)
    if spec.kind == "csl":
        items = [i.strip() for i in value.split(",") if i.strip()]
        if max_items is not None and len(items) > max_items:
            raise KeyError_(f"{spec.name} takes at most {max_items} items")
        for item in items:
            _check_item(spec.items, item, measurands)
        return ",".join(items)
    if not spec.min_length <= len(value) <= spec.max_str:
        raise KeyError_(f"{spec.name} must be {spec.min_length} to {spec.max_str} characters")
    return value


class OcppKeys:
    """Typed access to the OCPP keys, persisted through `store` (see chargepoint.store)."""

    def __init__(self, store, initial: dict[str, str], fixed: dict[str, str],
                 measurands: Optional[frozenset[str]] = None,
                 extra_specs: Iterable[KeySpec] = ()):
        """`initial`: first values from config.toml (a CSMS change wins over them).
        `fixed`: values dictated by the build (NumberOfConnectors, SupportedFeatureProfiles)."""
        self._store = store
        self.specs = dict(KEY_SPECS)
        self.specs.update({s.name: s for s in extra_specs})
        #: key_id(name) -> spec: every lookup by a name from outside goes through `spec`.
        self._by_id = {key_id(name): spec for name, spec in self.specs.items()}
        self.measurands = measurands
        saved = store.load_config()
        self._values: dict[str, str] = {}
        for name, spec in self.specs.items():
            if name in fixed:
                self._values[name] = fixed[name]
            elif name in saved and not spec.readonly:
                self._values[name] = saved[name]
            else:
                self._values[name] = initial.get(name, spec.default)
        self._listeners: list[Callable[[str, str], None]] = []

    # -- typed reads
    def raw(self, name: str) -> str:
        return self._values[name]

    def int(self, name: str) -> int:
        return int(self._values[name])

    def bool(self, name: str) -> bool:
        return self._values[name] == "true"

    def list(self, name: str) -> list[str]:
        return [i for i in self._values[name].split(",") if i]

    # -- the CSMS's view
    def visible(self) -> list[KeySpec]:
        return [s for s in self.specs.values() if not s.write_only]

    def spec(self, name: str) -> Optional[KeySpec]:
        """The key a CSMS's `name` designates, whatever its case (`spec.name` is how this
        charger spells it); None for a key it does not have."""
        return self._by_id.get(key_id(name))

    def _check(self, name: str, value: str) -> tuple[str, str]:
        """("Accepted", canonical value) or (refusal status, the reason why)."""
        spec = self.spec(name)
        if spec is None:
            return "NotSupported", "unknown key"
        if spec.readonly:
            return "Rejected", "read-only"
        max_items = int(self._values[spec.max_length_key]) if spec.max_length_key else None
        try:
            return "Accepted", validate_value(spec, value, self.measurands, max_items)
        except KeyError_ as exc:
            return "Rejected", str(exc)

    def change(self, name: str, value: str) -> str:
        """Apply ChangeConfiguration (`name` in any case); returns the OCPP
        ConfigurationStatus. Stored and announced under the charger's own spelling."""
        status, canonical = self._check(name, value)
        if status != "Accepted":
            return status
        spec = self.spec(name)
        self._store.save_config(spec.name, canonical)    # memory follows the disk
        self._values[spec.name] = canonical
        for listener in self._listeners:
            listener(spec.name, canonical)
        return "RebootRequired" if spec.reboot_required else "Accepted"

    def why_rejected(self, name: str, value: str) -> str:
        """Human explanation for a refused change (for the log); "" if it is acceptable."""
        status, text = self._check(name, value)
        return "" if status == "Accepted" else text

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)
