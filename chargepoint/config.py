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
from typing import Any, Callable, Literal, Optional, Sequence
from urllib.parse import urlparse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from chargepoint import __version__, tls_files
#: Where the database and other state live unless `[storage] path` says otherwise: what
#: the service's StateDirectory= makes, so that a run by hand uses the same files.
from chargepoint.paths import DEFAULT_STATE_DIR
from chargepoint.ocpp_keys import KEY_SPECS, KeyError_, find_spec, validate_value
from hal.factory import parse_device
from hal.gpio_settings import GpioSettings
from hal.gpio_settings import numbering as gpio_numbering
from hal.settings import SettingsError, parse_table



class ConfigError(Exception):
    """A bad configuration file: says which file, which key and why, for every problem
    found (`problems`); `key` and `reason` are the first one's."""

    def __init__(self, path: str, key: str, reason: str,
                 more: Sequence[tuple[str, str]] = ()):
        self.problems = [(key, reason), *more]
        super().__init__("\n".join(f"{path}: {k}: {r}" for k, r in self.problems))
        self.path = path
        self.key = key
        self.reason = reason

    @property
    def lines(self) -> list[str]:
        """One `FILE: KEY: REASON` line per problem."""
        return str(self).split("\n")


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
    #: The CSMS's wss:// URL once it raises the security profile from 0 or 1 to 2 or 3;
    #: "" = `url` with wss:// (same host and port).
    tls_url: str = ""
    #: SecurityEventNotifications to the CSMS: "auto" (once it speaks the security
    #: whitepaper), "on", "off" (chargepoint/model/security_events.py).
    security_events: str = "auto"
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
        if self.tls_url and (urlparse(self.tls_url).scheme != "wss"
                             or not urlparse(self.tls_url).netloc):
            raise ValueError(f"tls_url: must be a wss:// URL, got {self.tls_url!r}")
        if self.security_events not in ("auto", "on", "off"):
            raise ValueError(f"security_events: must be auto, on or off, got "
                             f"{self.security_events!r}")
        if self.security_profile not in (0, 1, 2, 3):
            raise ValueError(f"security_profile: must be 0, 1, 2 or 3, got {self.security_profile}")
        if self.security_profile in (2, 3) and parsed.scheme != "wss":
            raise ValueError(f"url: security profile {self.security_profile} needs a wss:// URL")
        if self.security_profile in (0, 1) and parsed.scheme != "ws":
            raise ValueError(f"url: security profile {self.security_profile} uses ws://; "
                             "use profile 2 or 3 for wss://")
        if self.security_profile == 3 and not (self.client_cert and self.client_key):
            raise ValueError("client_cert: security profile 3 needs client_cert and client_key")
        if self.crl_file and self.security_profile not in (2, 3):
            # What the files hold is checked after the table (chargepoint/tls_files.py).
            raise ValueError("crl_file: used only with TLS (security profile 2 or 3)")
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


@dataclass
class IdentitySettings:
    """What BootNotification tells the CSMS about this charger."""

    vendor: str = "OpenEVSE-Py"
    model: str = "AC-Wallbox"
    serial_number: str = ""          # chargePointSerialNumber
    charge_box_serial_number: str = ""
    #: "" = this release's version; "{version}" in it stands for that version, so that a
    #: maker's own name ("ACME-{version}") still tells the Central System releases apart.
    firmware_version: str = ""
    iccid: str = ""
    imsi: str = ""
    meter_type: str = ""
    meter_serial_number: str = ""

    def __post_init__(self):
        limits = {"vendor": 20, "model": 20, "serial_number": 25, "charge_box_serial_number": 25,
                  "iccid": 20, "imsi": 20, "meter_type": 25, "meter_serial_number": 25}
        for name, limit in limits.items():
            if len(getattr(self, name)) > limit:
                raise ValueError(f"{name}: at most {limit} characters (OCPP BootNotification)")
        reported = self.reported_firmware_version()        # what BootNotification carries
        if len(reported) > 50:
            raise ValueError("firmware_version: at most 50 characters (OCPP BootNotification), "
                             f"{reported!r} has {len(reported)}")
        if not self.vendor or not self.model:
            raise ValueError("vendor: vendor and model must not be empty")

    def reported_firmware_version(self, version: str = __version__) -> str:
        """BootNotification's firmwareVersion for the release `version`."""
        template = self.firmware_version or "{version}"
        braces = template.replace("{version}", "")
        if "{" in braces or "}" in braces:
            raise ValueError("firmware_version: {version} is the only text in braces it may "
                             f"hold, not {template!r}")
        return template.replace("{version}", version)

    @property
    def hides_the_release(self) -> bool:
        """A fixed firmware_version: every release reports the same string."""
        return bool(self.firmware_version) and "{version}" not in self.firmware_version


@dataclass
class StorageSettings:
    #: "" = chargepoint.db in the state directory: `--state-dir`, else $STATE_DIRECTORY
    #: (systemd's StateDirectory=), else DEFAULT_STATE_DIR. Relative: to the config file.
    path: str = ""


@dataclass
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: Log every OCPP frame in and out at info level (AuthorizationKey is never logged).
    frames: bool = False
    #: After the first failed connection to the CSMS is logged, further failures are
    #: summed up in one line at most this often (seconds).
    link_failures_every_s: float = 60.0
    #: Outside the journal, the log is also kept in `<state dir>/log/` for diagnostics, in
    #: two files of half this many kB each (0: no file).
    file_kb: int = 2048

    def __post_init__(self):
        if not 0 < self.link_failures_every_s < math.inf:
            raise ValueError("link_failures_every_s: must be a number of seconds greater than 0")
        if not 0 <= self.file_kb <= 1024 * 1024:
            raise ValueError("file_kb: must be 0 (no file) to 1048576 kB")


@dataclass
class TransfersSettings:
    """Downloads of firmware and uploads of diagnostics (chargepoint/transfers.py)."""

    #: Longest wait for a connection, an answer or the next bytes of a transfer.
    stall_timeout_s: float = 60.0
    #: CAs trusted for HTTPS and FTPS servers besides the system's ("" = none).
    ca_file: str = ""
    #: Free space (MiB) a download and the installation of a release must leave.
    min_free_mb: int = 64

    def __post_init__(self):
        if not 0 < self.stall_timeout_s < math.inf:
            raise ValueError("stall_timeout_s: must be a number of seconds greater than 0")
        if self.min_free_mb < 0:
            raise ValueError("min_free_mb: must be 0 or more")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ValueError(f"ca_file: {self.ca_file} is not a file")


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
        if len(os.fsencode(self.sim_socket)) > 107:
            raise ValueError(f"sim_socket: {len(os.fsencode(self.sim_socket))} bytes long; a "
                             "Unix socket's path holds at most 107: choose a shorter one")
        if not self.reboot_command or not all(self.reboot_command):
            raise ValueError("reboot_command: must name a program, e.g. "
                             '["systemctl", "reboot"]')


@dataclass
class ReleaseSettings:
    """How a release installed over the air is tried before it is kept
    (docs/firmware-update.md)."""

    #: Releases kept on the disk, the running one included; the oldest beyond go at a commit.
    keep: int = 3
    #: Seconds a release on trial has, from each of its starts, to reach the CSMS
    #: (BootNotification Accepted) and pass its self-test.
    trial_s: float = 600.0
    #: Starts a release on trial gets; at the next it is rolled back.
    trial_starts: int = 3
    #: Run by hand (no systemd): seconds without a watchdog ping from the main loop before
    #: the supervisor kills the release (under systemd, the unit's WatchdogSec=).
    watchdog_s: float = 30.0
    #: A SignedUpdateFirmware whose signing certificate names a CRL that cannot be had or
    #: does not verify: "soft" carries on (a warning in the log), "hard" answers
    #: InvalidCertificate, "off" fetches no CRL at all (chargepoint/model/firmware_revocation.py).
    revocation_check: str = "soft"

    def __post_init__(self):
        if not 2 <= self.keep <= 20:
            raise ValueError(f"keep: must be 2 to 20 (the running release and the one to "
                             f"come back to at least), got {self.keep}")
        if not 0 < self.trial_s <= 86400:
            raise ValueError(f"trial_s: must be a number of seconds above 0 and at most "
                             f"86400, got {self.trial_s}")
        if not 1 <= self.trial_starts <= 20:
            raise ValueError(f"trial_starts: must be 1 to 20, got {self.trial_starts}")
        if not 1 <= self.watchdog_s <= 3600:
            raise ValueError(f"watchdog_s: must be 1 to 3600 seconds, got {self.watchdog_s}")
        if self.revocation_check not in ("soft", "hard", "off"):
            raise ValueError(f"revocation_check: must be soft, hard or off, got "
                             f"{self.revocation_check!r}")


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
    transfers: TransfersSettings = field(default_factory=TransfersSettings)
    #: The state directory the defaults of `[storage] path` and the S0 meters' count
    #: files were placed in ("" when parse_settings alone made these settings).
    state_dir: str = ""
    releases: ReleaseSettings = field(default_factory=ReleaseSettings)
    #: The GPIO pin factory (docs/hardware.md, "GPIO on any Linux board").
    gpio: GpioSettings = field(default_factory=GpioSettings)


_DEVICES = {"meter": True, "contactor": True, "pilot": True, "lock": False, "indicator": False}
_SECTIONS = ("csms", "identity", "storage", "log", "system", "transfers", "releases", "gpio",
             "connectors",
             "readers", "ocpp")


class _Problems:
    """Every problem of one file, so that one start names them all, not only the first."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, key: str, reason: str) -> None:
        self.found.append((key, reason))

    def parse(self, parse: Callable[[Any], Any], table: Any, where: str) -> tuple[bool, Any]:
        """(True, parse(table)), or (False, None) once the problems are recorded. A key
        found bad is recorded and the table parsed again without it (its default), so
        that the other keys of the table are checked too."""
        table = dict(table) if isinstance(table, dict) else table
        seen: set[str] = set()
        while True:
            try:
                return not seen, parse(table)
            except SettingsError as exc:
                if exc.key in seen:             # e.g. a required key just taken out
                    return False, None
                seen.add(exc.key)
                self.add(exc.key, exc.reason)
                inner = exc.key[len(where) + 1:] if exc.key.startswith(where + ".") else ""
                name = re.split(r"[.\[]", inner)[0]
                if not isinstance(table, dict) or name in ("", "type") or name not in table:
                    return False, None
                del table[name]


def _connector_name(table: Any, position: int) -> str:
    """`connectors[id=2]`: a connector is named by its id, which says which one it is
    wherever its table stands in the file; by its place only when it has no usable id."""
    cid = table.get("id") if isinstance(table, dict) else None
    if isinstance(cid, int) and not isinstance(cid, bool):
        return f"connectors[id={cid}]"
    return f"connectors[table {position}]"


def _parse_connector(problems: _Problems, table: Any, where: str) -> Optional[ConnectorSettings]:
    if not isinstance(table, dict):
        problems.add(where, "expected a table")
        return None
    plain = {k: v for k, v in table.items() if k not in _DEVICES}
    ok, conn = problems.parse(lambda t: parse_table(ConnectorSettings, t, where), plain, where)
    devices = {}
    for kind, required in _DEVICES.items():
        key = f"{where}.{kind}"
        if kind in table:
            parsed, devices[kind] = problems.parse(
                lambda t, kind=kind, key=key: parse_device(kind, t, key), table[kind], key)
            ok = ok and parsed
        elif required:
            problems.add(key, 'required table is missing (e.g. type = "sim")')
            ok = False
    if not ok:
        return None
    for kind, device in devices.items():
        setattr(conn, kind, device)
    if conn.lock is not None and conn.fixed_cable:
        problems.add(f"{where}.lock", "a fixed cable has no connector lock; "
                                      "set fixed_cable = false or remove the lock")
        return None
    return conn


def _parse_ocpp_keys(problems: _Problems, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        problems.add("ocpp", "expected a table of OCPP configuration keys")
        return {}
    out = {}
    for name, value in table.items():
        spec = KEY_SPECS.get(name)
        if spec is None:
            # The CSMS may spell a key in any case (CiString50); this file spells each the
            # one way docs/configuration.md does, so that it reads and greps the same.
            other = find_spec(KEY_SPECS, name)
            problems.add(f"ocpp.{name}", "not an OCPP configuration key this firmware "
                                         "knows (see docs/configuration.md)"
                         if other is None else
                         f"not an OCPP configuration key as spelt: write {other.name}")
            continue
        text = str(value).lower() if isinstance(value, bool) else (
            ",".join(value) if isinstance(value, list) else str(value))
        try:
            # The canonical form: "True" must read as true, "a, b" as the items a and b.
            out[name] = validate_value(spec, text, measurands=None)
        except KeyError_ as exc:
            problems.add(f"ocpp.{name}", str(exc))
    return out


def parse_settings(data: dict, source: str = "<config>") -> Settings:
    """Validate a parsed TOML document. Raises ConfigError naming every bad key."""
    problems = _Problems()
    for name in sorted(set(data) - set(_SECTIONS)):
        problems.add(name, f"unknown section (known: {', '.join(sorted(_SECTIONS))})")

    def section(name: str, cls: type) -> Any:
        table = data.get(name, {})
        if not isinstance(table, dict):
            problems.add(name, "expected a table")
            return None
        return problems.parse(lambda t: parse_table(cls, t, name), table, name)[1]

    csms = section("csms", CsmsSettings)
    if csms is not None:
        for key, reason in tls_files.problems(csms):
            problems.add(key, reason)
    identity = section("identity", IdentitySettings)
    storage = section("storage", StorageSettings)
    log_settings = section("log", LogSettings)
    system = section("system", SystemSettings)
    transfers = section("transfers", TransfersSettings)
    releases = section("releases", ReleaseSettings)
    gpio = section("gpio", GpioSettings) or GpioSettings()

    connectors: list[ConnectorSettings] = []
    conns_raw = data.get("connectors")
    if not isinstance(conns_raw, list) or not conns_raw:
        problems.add("connectors", "at least one [[connectors]] table is required")
    else:
        for position, table in enumerate(conns_raw, 1):
            with gpio_numbering(gpio):      # BCM numbers on a Pi, a chip's lines elsewhere
                conn = _parse_connector(problems, table, _connector_name(table, position))
            if conn is not None:
                connectors.append(conn)
        ids = [t.get("id") if isinstance(t, dict) else None for t in conns_raw]
        if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) \
                and sorted(ids) != list(range(1, len(ids) + 1)):
            problems.add("connectors", f"connector ids must be 1..{len(ids)} without gaps, "
                                       f"got {ids}")
    readers: list[Any] = []
    readers_raw = data.get("readers", [])
    if not isinstance(readers_raw, list):
        problems.add("readers", "expected [[readers]] tables")
    else:
        for i, table in enumerate(readers_raw):
            where = f"readers[{i}]"
            reader = problems.parse(lambda t, where=where: parse_device("reader", t, where),
                                    table, where)[1]
            if reader is not None:
                readers.append(reader)
    ocpp = _parse_ocpp_keys(problems, data.get("ocpp", {}))
    if problems.found:
        (key, reason), *more = problems.found
        raise ConfigError(source, key, reason, more)
    return Settings(csms=csms, identity=identity, storage=storage, log=log_settings,
                    system=system, connectors=sorted(connectors, key=lambda c: c.id),
                    readers=readers, ocpp=ocpp, source=source, transfers=transfers,
                    releases=releases, gpio=gpio)


def state_directory(explicit: Optional[str] = None) -> str:
    """`--state-dir`, else the first of systemd's $STATE_DIRECTORY, else DEFAULT_STATE_DIR:
    a run by hand and the service find the same database."""
    chosen = explicit or os.environ.get("STATE_DIRECTORY", "").split(":")[0] \
        or DEFAULT_STATE_DIR
    return str(Path(chosen).expanduser().absolute())


def load_settings(path: str | Path, state_dir: Optional[str] = None) -> Settings:
    """Read and validate `config.toml`. The database defaults to the state directory
    (`state_directory(state_dir)`); a relative `[storage] path` is relative to the file."""
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
    place_state(settings, path.parent, state_directory(state_dir))
    return settings


def place_state(settings: Settings, config_dir: Path, state_dir: str) -> None:
    """Fill the paths of state left to their defaults into `state_dir`: the database and
    each S0 meter's pulse count."""
    settings.state_dir = state_dir
    if not settings.storage.path:
        settings.storage.path = str(Path(state_dir) / "chargepoint.db")
    storage = Path(settings.storage.path).expanduser()
    if not storage.is_absolute():
        storage = (config_dir / storage).resolve()
    settings.storage.path = str(storage)
    for conn in settings.connectors:
        if getattr(conn.meter, "state_file", None) == "":         # hal/meters/s0.py
            conn.meter.state_file = str(Path(state_dir) / f"s0-connector-{conn.id}.json")
