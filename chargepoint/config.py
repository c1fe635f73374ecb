"""`config.toml` -> typed settings, or a start-up error naming the file, key and reason.

This file holds the static setup of one charger (where the CSMS is, who the
charger is, which hardware is fitted). The OCPP configuration keys that the CSMS
may change live in SQLite instead (`chargepoint.ocpp_keys`); `[ocpp]` here only
gives their first values.
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlparse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hal.factory import parse_device
from hal.settings import SettingsError, parse_table


class ConfigError(Exception):
    """A bad configuration file: says which file, which key and why."""

    def __init__(self, path: str, key: str, reason: str):
        super().__init__(f"{path}: {key}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


@dataclass
class CsmsSettings:
    url: str = "ws://127.0.0.1:9000/ocpp"
    charge_point_id: str = "CP-1"
    #: 0 = plain ws, 1 = ws + Basic auth, 2 = wss + Basic auth, 3 = wss + client certificate.
    security_profile: int = 0
    #: First value of the OCPP key AuthorizationKey (the Basic-auth password), profiles 1-2.
    authorization_key: str = ""
    #: CA bundle that signs the CSMS's server certificate (profiles 2-3); "" = system CAs.
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    #: PEM certificate revocation list(s) the CSMS's certificate is checked against
    #: (profiles 2-3); "" = none.
    crl_file: str = ""
    #: Seconds to wait for the CSMS's answer to one of our CALLs.
    response_timeout_s: float = 30.0
    #: Seconds without a pong after a ping before the link is declared dead.
    pong_timeout_s: float = 15.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    #: Seconds a frame handed to the link may wait to be written; longer means the CSMS
    #: stopped reading, and the link is dropped (never the station loop held up).
    send_timeout_s: float = 20.0
    #: Seconds a message from the CSMS may take from its first byte to its last.
    frame_timeout_s: float = 30.0
    #: Incoming frames larger than this are refused (FormationViolation), never parsed.
    max_frame_bytes: int = 262144
    #: Reject CALLs carrying properties the official schema does not define.
    strict_schema: bool = True

    def __post_init__(self):
        parsed = urlparse(self.url)
        if parsed.scheme not in ("ws", "wss") or not parsed.netloc:
            raise ValueError(f"url: must be a ws:// or wss:// URL, got {self.url!r}")
        if not re.fullmatch(r"[A-Za-z0-9._:@*+\-]{1,48}", self.charge_point_id):
            raise ValueError("charge_point_id: 1-48 characters of letters, digits and ._:@*+- "
                             f"(it becomes part of the URL), got {self.charge_point_id!r}")
        if self.security_profile not in (0, 1, 2, 3):
            raise ValueError(f"security_profile: must be 0, 1, 2 or 3, got {self.security_profile}")
        if self.security_profile in (2, 3) and parsed.scheme != "wss":
            raise ValueError(f"url: security profile {self.security_profile} needs a wss:// URL")
        if self.security_profile in (0, 1) and parsed.scheme != "ws":
            raise ValueError(f"url: security profile {self.security_profile} uses ws://; "
                             "use profile 2 or 3 for wss://")
        if self.security_profile == 3 and not (self.client_cert and self.client_key):
            raise ValueError("client_cert: security profile 3 needs client_cert and client_key")
        if self.crl_file:
            if self.security_profile not in (2, 3):
                raise ValueError("crl_file: used only with TLS (security profile 2 or 3)")
            problem = crl_file_problem(self.crl_file)
            if problem:
                raise ValueError(f"crl_file: {problem}")
        if self.authorization_key and not (16 <= len(self.authorization_key) <= 40):
            raise ValueError("authorization_key: must be 16 to 40 characters (OCPP security "
                             "whitepaper)")
        for name in ("response_timeout_s", "pong_timeout_s", "reconnect_min_s", "reconnect_max_s",
                     "send_timeout_s", "frame_timeout_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name}: must be a number of seconds greater than 0")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must not be below reconnect_min_s")
        if self.max_frame_bytes < 4096:
            raise ValueError("max_frame_bytes: must be at least 4096")


#: One PEM block of a CRL. cryptography loads one CRL per call, and OpenSSL reads every
#: one in the file, so each block is checked.
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


def crl_file_problem(path: str) -> Optional[str]:
    """Why `path` is not a readable PEM file of certificate revocation lists (None: it is)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    from cryptography import x509  # here, not at start: only a configured CRL needs it

    blocks = _PEM_CRL.findall(data)
    if not blocks:
        try:
            x509.load_der_x509_crl(data)
        except ValueError:
            return f"{path} holds no certificate revocation list (PEM, -----BEGIN X509 CRL-----)"
        return (f"{path} is a DER CRL; the charger reads PEM: openssl crl -inform DER "
                f"-in {path} -out crl.pem")
    for block in blocks:
        try:
            x509.load_pem_x509_crl(block)
        except ValueError as exc:
            return f"{path} holds a CRL that does not parse: {exc}"
    return None


@dataclass
class IdentitySettings:
    """What BootNotification tells the CSMS about this charger."""

    vendor: str = "OpenEVSE-Py"
    model: str = "AC-Wallbox"
    serial_number: str = ""          # chargePointSerialNumber
    charge_box_serial_number: str = ""
    firmware_version: str = ""       # "" = this firmware's package version
    iccid: str = ""
    imsi: str = ""
    meter_type: str = ""
    meter_serial_number: str = ""

    def __post_init__(self):
        limits = {"vendor": 20, "model": 20, "serial_number": 25, "charge_box_serial_number": 25,
                  "firmware_version": 50, "iccid": 20, "imsi": 20, "meter_type": 25,
                  "meter_serial_number": 25}
        for name, limit in limits.items():
            if len(getattr(self, name)) > limit:
                raise ValueError(f"{name}: at most {limit} characters (OCPP BootNotification)")
        if not self.vendor or not self.model:
            raise ValueError("vendor: vendor and model must not be empty")


@dataclass
class StorageSettings:
    #: "" = $STATE_DIRECTORY/chargepoint.db under systemd (StateDirectory=), else
    #: var/chargepoint.db beside the configuration file.
    path: str = ""


@dataclass
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: Log every OCPP frame in and out at info level (AuthorizationKey is never logged).
    frames: bool = False
    #: After the first failed connection to the CSMS is logged, further failures are
    #: summed up in one line at most this often (seconds).
    link_failures_every_s: float = 60.0

    def __post_init__(self):
        if not 0 < self.link_failures_every_s < math.inf:
            raise ValueError("link_failures_every_s: must be a number of seconds greater than 0")


@dataclass
class SystemSettings:
    #: Command run for an OCPP Hard Reset (after transactions are stopped and saved).
    reboot_command: list[str] = field(default_factory=lambda: ["systemctl", "reboot"])
    #: Unix socket of the simulated charger's control interface ("" = default location).
    sim_socket: str = ""
    #: A clean stop (SIGTERM) with the CSMS connected waits at most this long (seconds) for
    #: it to confirm the StopTransactions and what is queued before them; offline, or when
    #: this passes, they stay queued for the next start. Below the unit's TimeoutStopSec.
    stop_wait_s: float = 45.0
    #: After a Hard Reset's reboot command succeeded, the firmware waits this long (seconds)
    #: for the system to stop it; if no stop comes, it restarts itself in place.
    reboot_wait_s: float = 300.0

    def __post_init__(self):
        for name in ("stop_wait_s", "reboot_wait_s"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name}: must be a number of seconds, 0 or more")


@dataclass
class ConnectorSettings:
    id: int
    max_current_a: float = 32.0
    phases: int = 3
    nominal_voltage_v: float = 230.0
    #: A tethered cable cannot be unlocked (UnlockConnector answers NotSupported).
    fixed_cable: bool = True
    meter: Any = None
    contactor: Any = None
    pilot: Any = None
    lock: Any = None
    indicator: Any = None

    def __post_init__(self):
        if not 1 <= self.id <= 32:
            raise ValueError(f"id: must be 1 to 32, got {self.id}")
        if self.phases not in (1, 3):
            raise ValueError(f"phases: must be 1 or 3, got {self.phases}")
        if not 6 <= self.max_current_a <= 80:
            raise ValueError(f"max_current_a: must be 6 to 80 A, got {self.max_current_a}")
        if not 100 <= self.nominal_voltage_v <= 280:
            raise ValueError(f"nominal_voltage_v: must be 100 to 280 V, got "
                             f"{self.nominal_voltage_v}")


@dataclass
class Settings:
    csms: CsmsSettings
    identity: IdentitySettings
    storage: StorageSettings
    log: LogSettings
    system: SystemSettings
    connectors: list[ConnectorSettings]
    readers: list[Any]
    #: First values of OCPP configuration keys (strings as on the wire).
    ocpp: dict[str, str]
    source: str = "<defaults>"


_DEVICES = {"meter": True, "contactor": True, "pilot": True, "lock": False, "indicator": False}


def _parse_connector(table: Any, where: str) -> ConnectorSettings:
    if not isinstance(table, dict):
        raise SettingsError(where, "expected a table")
    plain = {k: v for k, v in table.items() if k not in _DEVICES}
    conn = parse_table(ConnectorSettings, plain, where)
    for kind, required in _DEVICES.items():
        if kind in table:
            setattr(conn, kind, parse_device(kind, table[kind], f"{where}.{kind}"))
        elif required:
            raise SettingsError(f"{where}.{kind}", "required table is missing "
                                                   '(e.g. type = "sim")')
    if conn.lock is not None and conn.fixed_cable:
        raise SettingsError(f"{where}.lock", "a fixed cable has no connector lock; "
                                             "set fixed_cable = false or remove the lock")
    return conn


def _parse_ocpp_keys(table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise SettingsError("ocpp", "expected a table of OCPP configuration keys")
    from chargepoint.ocpp_keys import KEY_SPECS, KeyError_, find_spec, validate_value

    out = {}
    for name, value in table.items():
        spec = KEY_SPECS.get(name)
        if spec is None:
            # The CSMS may spell a key in any case (CiString50); this file spells each the
            # one way docs/configuration.md does, so that it reads and greps the same.
            other = find_spec(KEY_SPECS, name)
            raise SettingsError(f"ocpp.{name}", "not an OCPP configuration key this firmware "
                                                "knows (see docs/configuration.md)"
                                if other is None else
                                f"not an OCPP configuration key as spelt: write {other.name}")
        text = str(value).lower() if isinstance(value, bool) else (
            ",".join(value) if isinstance(value, list) else str(value))
        try:
            # The canonical form: "True" must read as true, "a, b" as the items a and b.
            out[name] = validate_value(spec, text, measurands=None)
        except KeyError_ as exc:
            raise SettingsError(f"ocpp.{name}", str(exc)) from None
    return out


def parse_settings(data: dict, source: str = "<config>") -> Settings:
    """Validate a parsed TOML document. Raises ConfigError naming the key."""
    try:
        known = {"csms", "identity", "storage", "log", "system", "connectors", "readers", "ocpp"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(unknown[0], f"unknown section (known: {', '.join(sorted(known))})")

        def section(name, cls):
            table = data.get(name, {})
            if not isinstance(table, dict):
                raise SettingsError(name, "expected a table")
            return parse_table(cls, table, name)

        conns_raw = data.get("connectors")
        if not isinstance(conns_raw, list) or not conns_raw:
            raise SettingsError("connectors", "at least one [[connectors]] table is required")
        connectors = [_parse_connector(t, f"connectors[{i}]") for i, t in enumerate(conns_raw)]
        ids = [c.id for c in connectors]
        if sorted(ids) != list(range(1, len(ids) + 1)):
            raise SettingsError("connectors", f"connector ids must be 1..{len(ids)} without gaps, "
                                              f"got {ids}")
        readers_raw = data.get("readers", [])
        if not isinstance(readers_raw, list):
            raise SettingsError("readers", "expected [[readers]] tables")
        readers = [parse_device("reader", t, f"readers[{i}]") for i, t in enumerate(readers_raw)]
        return Settings(
            csms=section("csms", CsmsSettings),
            identity=section("identity", IdentitySettings),
            storage=section("storage", StorageSettings),
            log=section("log", LogSettings),
            system=section("system", SystemSettings),
            connectors=sorted(connectors, key=lambda c: c.id),
            readers=[r for r in readers if r is not None],
            ocpp=_parse_ocpp_keys(data.get("ocpp", {})),
            source=source,
        )
    except SettingsError as exc:
        raise ConfigError(source, exc.key, exc.reason) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate `config.toml`; relative storage paths are relative to the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "(file)", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None
    settings = parse_settings(data, str(path))
    if not settings.storage.path:
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        settings.storage.path = str(Path(state_dir) / "chargepoint.db") if state_dir \
            else "var/chargepoint.db"
    storage = Path(settings.storage.path).expanduser()
    if not storage.is_absolute():
        settings.storage.path = str((path.parent / storage).resolve())
    return settings
